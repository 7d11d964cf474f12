"""Session setup shared by the test suite (keep it minimal)."""

import os

import torch

# Triton decides between compiling and interpreting when `triton` is first imported (its
# language helpers are decorated then), so on a machine without a GPU the interpreter must be
# requested before any test module imports triton, directly or through another library.
# kernels/_common.py does the same, but only if it is the first to import triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The suite's models are tiny: one thread is as fast as two on an idle machine and avoids
# OpenMP threads spinning against each other (measured 50x slower) when the CPU is shared.
torch.set_num_threads(1)
