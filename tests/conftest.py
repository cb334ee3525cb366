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
