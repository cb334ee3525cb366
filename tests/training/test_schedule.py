import math

import numpy as np
import pytest

from rational_icl.training.schedule import checkpoint_steps, learning_rate, log_interval


def test_checkpoints_are_evenly_spaced_in_sqrt_step_from_20_to_the_last_step():
    steps = checkpoint_steps(4000, 40)
    assert steps[0] == 20 and steps[-1] == 4000
    assert len(steps) == 40
    assert np.all(np.diff(steps) > 0)
    gaps = np.diff(np.sqrt(steps))
    expected = (math.sqrt(4000) - math.sqrt(20)) / 39
    np.testing.assert_allclose(gaps, expected, atol=0.1)  # rounding to whole steps


def test_checkpoints_merge_when_steps_are_few_and_always_include_the_last():
    steps = checkpoint_steps(30, 20)
    assert steps.tolist() == sorted(set(steps.tolist()))
    assert steps[0] == 20 and steps[-1] == 30
    assert checkpoint_steps(10, 5).tolist() == [10]
    assert checkpoint_steps(1000, 1).tolist() == [1000]


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
