"""What to trust in a fit: the parameter summary, NUTS diagnostics and their warnings,
PSIS-LOO with its reliability checks, and the comparison of fits (arviz-stats).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz_stats as azs
import numpy as np
import scipy.special
import scipy.stats
import xarray as xr

from rational_icl.errors import RiclError
from rational_icl.fits.tree import parameter_names
from rational_icl.vocabulary import SAMPLE_DIMS

RHAT_MAX = 1.01


ESS_MIN = 400


BFMI_MIN = 0.3


SUMMARY_INTERVAL = 0.9  # the report's intervals (ArviZ's default is 0.89)
# Its ends and the median, as the summaries' ``statistic`` low, median, high (``_quantiles``)
INTERVAL_QUANTILES = (0.05, 0.5, 0.95)


def summary(tree: xr.DataTree):
    """Summary table of the parameters (pandas DataFrame from ``arviz_stats.summary``):
    mean, sd, 90% equal-tailed interval and, for NUTS, R-hat, bulk/tail ESS and MCSE."""
    kind = "all" if tree.attrs.get("inference_method") == "nuts" else "stats"
    names = parameter_names(tree, per_run=False)
    return azs.summary(tree, var_names=names, kind=kind, ci_prob=SUMMARY_INTERVAL, ci_kind="eti")


def run_offsets(tree: xr.DataTree) -> xr.Dataset | None:
    """The offset models' per-run shifts; None for a model without them.

    Returns
    -------
    xr.Dataset
        ``run_offset``: each run's posterior mean offset, in log odds against generalizing
        (dims: the configuration dims, ``num_tasks`` and, with three strategies,
        ``offset_strategy``); ``offset_scale``: their fitted spread's 5%, 50% and 95%
        posterior quantiles (dim ``statistic``: ``low``, ``median``, ``high``).
    """
    posterior = tree.posterior
    if "run_offset" not in posterior:
        return None
    mean = posterior["run_offset"].mean(SAMPLE_DIMS)
    if mean.sizes["offset_strategy"] == 1:  # memorizing (or contextual) against G only
        mean = mean.isel(offset_strategy=0, drop=True)
    scale = posterior["offset_scale"]
    scale = _quantiles(scale, INTERVAL_QUANTILES, scale.dims)
    return xr.Dataset({"run_offset": mean, "offset_scale": scale})


def diagnostics(tree: xr.DataTree) -> xr.Dataset:
    """R-hat, bulk and tail ESS per parameter, divergences and E-BFMI per chain (NUTS)."""
    names = parameter_names(tree)
    result = xr.Dataset()
    for name in names:
        result[f"{name}_r_hat"] = azs.rhat(tree, var_names=[name])[name]
        result[f"{name}_ess_bulk"] = azs.ess(tree, var_names=[name], method="bulk")[name]
        result[f"{name}_ess_tail"] = azs.ess(tree, var_names=[name], method="tail")[name]
    stats = tree.sample_stats
    if "diverging" in stats:
        result["divergences"] = stats.diverging.sum("draw")
    if "energy" in stats:
        result["e_bfmi"] = azs.bfmi(tree)["energy"].variable  # per chain
    return result


@dataclass(frozen=True)
class Diagnostic:
    """One problem a fit's diagnostics found: its ``kind`` (``r-hat``, ``ess``,
    ``divergences``, ``e-bfmi`` or ``optimizer``) and a short text that names the numbers."""

    kind: str
    text: str

    @property
    def line(self) -> str:
        return f"warning: {self.text}"


def diagnostic_warnings(tree: xr.DataTree) -> list[Diagnostic]:
    """One Diagnostic per problem: R-hat > 1.01, ESS < 400, any divergence, E-BFMI < 0.3.

    Only for NUTS (MAP: whether the optimiser converged; SVI: nothing).
    """
    if tree.attrs.get("inference_method") == "map":
        if not bool(tree.sample_stats.optimizer_success):
            text = "the optimiser did not report convergence; try --method nuts"
            return [Diagnostic("optimizer", text)]
        return []
    if tree.attrs.get("inference_method") != "nuts":
        return []
    found = diagnostics(tree)
    problems = []
    for name in parameter_names(tree):
        worst_rhat = float(found[f"{name}_r_hat"].max())
        if worst_rhat > RHAT_MAX:
            problems.append(Diagnostic("r-hat", f"{name}: R-hat {worst_rhat:.3f} > {RHAT_MAX}"))
        for kind in ("bulk", "tail"):
            ess = float(found[f"{name}_ess_{kind}"].min())
            if ess < ESS_MIN:
                problems.append(Diagnostic("ess", f"{name}: {kind} ESS {ess:.0f} < {ESS_MIN}"))
    divergences = int(found["divergences"].sum()) if "divergences" in found else 0
    if divergences:
        text = f"{divergences} divergent transition(s) after warm-up"
        problems.append(Diagnostic("divergences", text))
    if "e_bfmi" in found and float(found.e_bfmi.min()) < BFMI_MIN:
        text = f"E-BFMI {float(found.e_bfmi.min()):.2f} < {BFMI_MIN} in a chain"
        problems.append(Diagnostic("e-bfmi", text))
    return problems


# PSIS fits a Pareto tail to the largest min(S/5, 3 sqrt(S)) importance ratios and needs 5.
LOO_MIN_DRAWS = 25


def loo(tree: xr.DataTree):
    """PSIS-LOO over the fitted cells (``arviz_stats.loo``, pointwise, with Pareto k).

    Cells whose log likelihood is (nearly) the same in every draw (a saturated weight
    observed at exactly 0 or 1) have uniform importance weights; arviz-stats refuses
    constant tails, so those cells get a jitter of at most 1e-10 (a ramp over the draws),
    which changes ELPD by ~1e-10.
    A log likelihood on thinned draws (``outputs`` fits) is matched by the same draws of
    the posterior, whose effective sample size sets the relative efficiency.
    """
    if "log_likelihood" not in tree.children:
        if tree.attrs.get("observation_model") == "outputs":
            raise RiclError(
                "the fit has no log_likelihood group: context-dependent outputs fits have no "
                "pointwise log likelihood; compare fits made without --context-dependent"
            )
        raise RiclError(
            f"the fit has no log_likelihood group (observation model "
            f"{tree.attrs.get('observation_model')!r})"
        )
    log_lik = tree.log_likelihood.ds.copy()
    (name,) = log_lik.data_vars
    values = log_lik[name]
    draws = values.sizes["chain"] * values.sizes["draw"]
    if draws < LOO_MIN_DRAWS:
        raise RiclError(
            f"PSIS-LOO needs at least {LOO_MIN_DRAWS} draws of the log likelihood (its Pareto "
            f"tail takes a fifth of them, at least 5); this fit has {draws}: refit with more "
            "--draws (and --pointwise-draws)"
        )
    constant = (values.max(SAMPLE_DIMS) - values.min(SAMPLE_DIMS)) < 1e-8
    if bool(constant.any()):  # a deterministic ramp over the draws: no random numbers
        ramp = np.linspace(-1.0, 1.0, values.sizes["chain"] * values.sizes["draw"])
        ramp = xr.DataArray(ramp.reshape(values.sizes["chain"], -1), dims=SAMPLE_DIMS)
        log_lik[name] = values + (1e-10 * ramp).where(constant, 0.0)
    tree = tree.copy()
    tree["log_likelihood"] = xr.DataTree(log_lik)
    if "thinned_from" in log_lik.attrs:
        tree["posterior"] = xr.DataTree(tree.posterior.ds.sel(draw=log_lik.draw.values))
    with warnings.catch_warnings():
        # arviz-stats warns about Pareto k on stderr; loo_problem says it in one line instead
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # k of degenerate weights: NaN
        return azs.loo(tree, pointwise=True)


# PSIS-LOO is trusted only where the importance weights are: a cell's estimate is
# unreliable when its Pareto k is above min(1 - 1/log10(S), 0.7) (arviz-stats' good_k,
# Vehtari et al. 2024). A few such cells are reported beside the ELPD; beyond this share of
# cells, or when p_loo (the effective number of parameters) exceeds the model's parameter
# count by this factor, the draws are far outside the LOO posteriors (typically Laplace or
# SVI draws of a poorly identified posterior) and the ELPD means nothing.
BAD_PARETO_K_SHARE = 0.1


P_LOO_FACTOR = 3


def num_parameters(tree: xr.DataTree) -> int:
    """Number of free scalar parameters (elements of the posterior's parameters that vary)."""
    posterior = tree.posterior.ds
    count = 0
    for name in parameter_names(tree):
        values = posterior[name]
        spread = values.max(SAMPLE_DIMS) - values.min(SAMPLE_DIMS)
        count += int((spread > 0).sum())  # an ablation's fixed parameter is not free
    return count


def loo_problem(tree: xr.DataTree, result) -> str | None:
    """Why the PSIS-LOO ``result`` of ``tree`` cannot be reported, or None when it can.

    Reasons: more than 10% of the fitted cells with Pareto k above ``result.good_k`` (or not
    finite), or p_loo more than 3 times the number of free parameters.
    """
    k = np.asarray(result.pareto_k, dtype=float).ravel()
    bad = int((~(k <= result.good_k)).sum())  # NaN counts as bad
    method = tree.attrs.get("inference_method", "?")
    advice = "" if method == "nuts" else f" (the {method} draws); refit with --method nuts"
    if bad > BAD_PARETO_K_SHARE * k.size:
        return (
            f"PSIS-LOO not reported: {bad} of {k.size} fitted cells have Pareto k above "
            f"{result.good_k:.2f}, so the importance weights are unreliable{advice}"
        )
    count = num_parameters(tree)
    if not np.isfinite(result.p) or result.p > P_LOO_FACTOR * count:
        return (
            f"PSIS-LOO not reported: p_loo exceeds {P_LOO_FACTOR} times the model's {count} "
            f"free parameters, so the importance weights are unreliable{advice}"
        )
    return None


def compare(fits: dict[str, xr.DataTree]):
    """Rank fits by ELPD (PSIS-LOO), best first (``arviz_stats.compare``, a DataFrame).

    Only fits whose LOO can be reported (``loo_problem``) are ranked; the others are left
    out, with the reason, in ``table.attrs["not_ranked"]`` (name -> reason). Raises
    RiclError when fewer than two fits remain.
    """
    if len(fits) < 2:
        raise RiclError("compare needs at least two fits")
    models = {name: tree.attrs.get("observation_model") for name, tree in fits.items()}
    if len(set(models.values())) > 1:
        found = ", ".join(f"{name}: {model}" for name, model in models.items())
        raise RiclError(
            f"compare needs fits of one observation model (their log likelihoods score "
            f"different data); got {found}"
        )
    results, not_ranked = {}, {}
    for name, tree in fits.items():
        try:
            result = loo(tree)
        except RiclError as err:  # too few draws for PSIS
            not_ranked[name] = str(err)
            continue
        problem = loo_problem(tree, result)
        if problem is None:
            results[name] = result
        else:
            not_ranked[name] = problem
    if len(results) < 2:
        reasons = "; ".join(f"{name}: {why}" for name, why in not_ranked.items())
        raise RiclError(f"fewer than two fits have a reliable PSIS-LOO, nothing to rank; {reasons}")
    table = azs.compare(results)
    table.attrs["not_ranked"] = not_ranked
    return table


# Evenly spaced normal quantiles: the population's spread for a new configuration, drawn
# without a random generator (the same numbers every time).
_POPULATION_NODES = 64
_POPULATION_LINKS = {"alpha": "logit", "beta": "log", "gamma": "log"}


def population_summary(tree: xr.DataTree) -> xr.Dataset:
    """alpha, beta, gamma of a partially pooled fit: the population, a new configuration
    (a new training seed, say) and each fitted configuration.

    Returns
    -------
    xr.Dataset
        One variable per pooled parameter, dims (quantity, statistic, config...):
        quantity ``population`` (the population median, link^-1(loc): 5%, 50%, 95% over
        draws), ``new_configuration`` (link^-1(loc + scale z), z ~ N(0, 1) integrated on
        evenly spaced quantiles: 2.5%, 50%, 97.5%, the population's 95% range) and
        ``configuration`` (each fitted configuration's value: 5%, 50%, 95%); statistic
        ``low``, ``median``, ``high``. Empty for a fit without partial pooling.
    """
    posterior = tree.posterior
    nodes = xr.DataArray(
        scipy.stats.norm.ppf((np.arange(_POPULATION_NODES) + 0.5) / _POPULATION_NODES),
        dims="node",
    )
    out = {}
    for name, link in _POPULATION_LINKS.items():
        if f"{name}_loc" not in posterior or f"{name}_scale" not in posterior:
            continue
        inverse = scipy.special.expit if link == "logit" else np.exp
        loc, scale = posterior[f"{name}_loc"], posterior[f"{name}_scale"]
        rows = {
            "population": _quantiles(inverse(loc), INTERVAL_QUANTILES, SAMPLE_DIMS),
            "new_configuration": _quantiles(
                inverse(loc + scale * nodes), (0.025, 0.5, 0.975), (*SAMPLE_DIMS, "node")
            ),
            "configuration": _quantiles(posterior[name], INTERVAL_QUANTILES, SAMPLE_DIMS),
        }
        out[name] = xr.concat(
            [v.broadcast_like(rows["configuration"]) for v in rows.values()], dim="quantity"
        ).assign_coords(quantity=list(rows))
    return xr.Dataset(out)


def _quantiles(values: xr.DataArray, levels, dims) -> xr.DataArray:
    found = values.quantile(list(levels), dim=list(dims))
    return found.rename(quantile="statistic").assign_coords(statistic=["low", "median", "high"])
