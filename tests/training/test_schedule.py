import numpy as np
import pytest

from rational_icl.training.schedule import learning_rate, log_interval


def test_log_interval_gives_a_few_hundred_logs():
    assert log_interval(100) == 1
    assert log_interval(100_000) == 200


@pytest.mark.parametrize("schedule", ["constant", "cosine", "inverse-sqrt"])
def test_warmup_is_linear_to_the_peak(schedule):
    rates = [learning_rate(s, 1e-3, 100, schedule, 1000) for s in (1, 50, 100)]
    np.testing.assert_allclose(rates, [1e-5, 5e-4, 1e-3])


def test_schedules_after_warmup():
    assert learning_rate(700, 1e-3, 100, "constant", 1000) == 1e-3
    # cosine: half way through the decay is half the peak, zero at the end
    assert learning_rate(550, 1e-3, 100, "cosine", 1000) == pytest.approx(5e-4)
    assert learning_rate(1000, 1e-3, 100, "cosine", 1000) == pytest.approx(0.0, abs=1e-15)
    assert learning_rate(400, 1e-3, 100, "inverse-sqrt", 1000) == pytest.approx(5e-4)
    assert learning_rate(5, 1e-3, 0, "constant", 1000) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(5, 1e-3, 0, "triangle", 1000)
