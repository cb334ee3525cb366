"""``ricl run PRESET --plan``: print what the job will cost, write nothing."""

from __future__ import annotations

from rational_icl.errors import RiclError


def print_plan(specs, args) -> int:
    """Measure and print the plan of ``specs`` for the options of ``ricl run``."""
    import torch

    from rational_icl.training.plan import format_plan, plan_job

    device = args.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RiclError(f"--device {device!r}: CUDA is not available on this machine")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    plan = plan_job(
        specs,
        device,
        chains=args.chains,
        draws=args.draws,
    )
    print(f"plan for {args.spec} into {args.out} (nothing written)")
    print(format_plan(plan))
    return 0
