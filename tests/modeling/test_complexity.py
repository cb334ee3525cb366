"""K_Q: compressed source plus compressed parameters, in bits."""

import os

from rational_icl.data import CategoricalSequence, Classification, LinearRegression, generator
from rational_icl.data.settings.categorical import categorical_memorizing
from rational_icl.modeling import strategy_complexity
from rational_icl.modeling.complexity import compressed_bits, stripped_source


def test_stripped_source_has_no_comments_or_docstrings():
    text = stripped_source(categorical_memorizing)
    assert "#" not in text and '"""' not in text and "Posterior-weighted" not in text
    assert text.startswith("def categorical_memorizing(")


def test_compressed_bits_is_the_best_compressor():
    random_bytes = os.urandom(4096)
    assert 8 * 4096 <= compressed_bits(random_bytes) <= 8 * (4096 + 200)
    assert compressed_bits(b"a" * 4096) < 8 * 100


def test_memorizing_complexity_grows_with_num_tasks_and_generalizing_does_not():
    settings = [
        CategoricalSequence(num_dims=8, context_length=16),
        LinearRegression(num_dims=8, context_length=16, noise_variance=8 / 256),
        Classification(num_dims=8, context_length=16, within_class_variance=0.5),
    ]
    for setting in settings:
        complexities = []
        for num_tasks in (2, 16, 128, 1024):
            tasks = setting.sample_tasks(num_tasks, generator(0, "t", num_tasks))
            complexities.append(
                [strategy_complexity(setting, tasks, q) for q in ("memorizing", "generalizing")]
            )
        memorizing = [m for m, _ in complexities]
        generalizing = {g for _, g in complexities}
        assert memorizing == sorted(memorizing) and memorizing[-1] > 10 * memorizing[0]
        assert len(generalizing) == 1
        # Random float64 task tables barely compress: about 64 bits per stored number.
        stored = 1024 * (setting.num_dims + (setting.name == "classification"))
        assert memorizing[-1] > 0.7 * 64 * stored
