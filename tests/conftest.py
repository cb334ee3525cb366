"""Test-wide settings: one compute thread per process.

Tests use small tensors, where a second thread only adds synchronisation, and on a busy
2-core machine idle-waiting threads slow small steps down by two orders of magnitude.
Subprocesses started by tests inherit the environment variables.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import numpyro  # noqa: E402

# the test session is a program's edge, like the CLI: JAX computes in float64 from the start
numpyro.enable_x64()


import pytest  # noqa: E402


@pytest.fixture
def coin_setting():
    """The toy setting of tests/coin.py, registered for one test and removed after it, so
    that every other test sees the built-in settings only."""
    from rational_icl.data import SETTINGS
    from tests import coin  # registers Coin on its first import

    SETTINGS[coin.Coin.name] = coin.Coin
    yield coin.Coin
    SETTINGS.pop(coin.Coin.name)
