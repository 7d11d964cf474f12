"""Session setup shared by the test suite (keep it minimal)."""

import os
import sys

import pytest
import torch

# Triton decides between compiling and interpreting when `triton` is first imported (its
# language helpers are decorated then), so on a machine without a GPU the interpreter must be
# requested before any test module imports triton, directly or through another library (torch
# imports it lazily, not at `import torch`). The test configuration is the one place that sets
# it: vidm.kernels changes no environment variable (tests/test_structure.py checks that).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The suite's models are tiny: one thread is as fast as two on an idle machine and avoids
# OpenMP threads spinning against each other (measured 50x slower) when the CPU is shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _forget_kernel_settings():
    """vidm.kernels reads VIDM_KERNELS once; a test that changed it (monkeypatch, then
    kernel_helpers.use_kernels) must not leave its value remembered for the next test."""
    yield
    common = sys.modules.get("vidm.kernels._common")
    if common is not None:
        common.reset_settings()
