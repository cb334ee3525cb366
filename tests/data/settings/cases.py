"""Small seeded cases of each built-in setting, shared by the setting tests:
``(setting, tasks, batch)`` drawn from one stream, and the numbers their golden K_Q tests pin."""

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator
from rational_icl.modeling.complexity import compressed_bits, strategy_complexity, stripped_source


def categorical(seed, num_tasks=5, batch=3, length=9):
    setting = CategoricalSequence(num_dims=4, context_length=length)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def regression(seed, num_tasks=5, batch=3, length=7):
    setting = LinearRegression(num_dims=3, context_length=length, noise_variance=0.25)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


def classification(seed, num_tasks=6, batch=4, length=8):
    setting = Classification(num_dims=4, context_length=length, within_class_variance=0.5)
    gen = generator(seed, "test")
    tasks = setting.sample_tasks(num_tasks, gen)
    return setting, tasks, setting.sample_batch(tasks, batch, gen)


# Golden K_Q: each setting's test pins these numbers to the values the code gave when it was
# written. K_Q measures the strategies' source text, helper names included (closed_forms.py),
# so a renamed helper or an edited closed form changes them; when that is meant, paste the
# new values and say so in the commit. Tasks are drawn as those of a run of seed 1.
GOLDEN_NUM_TASKS = (2, 16, 128)


def source_bits_and_complexities(setting) -> dict[str, tuple[int, list[float]]]:
    """Per strategy the setting declares: the compressed size of its stripped source (bits)
    and K_Q (bits) at each of ``GOLDEN_NUM_TASKS``."""
    out = {}
    for q in setting.strategies:
        code = "\n".join(stripped_source(f) for f in setting.strategy_sources[q])
        complexities = [
            strategy_complexity(setting, setting.sample_tasks(d, generator(1, "tasks", d)), q)
            for d in GOLDEN_NUM_TASKS
        ]
        out[q] = (compressed_bits(code.encode()), complexities)
    return out
