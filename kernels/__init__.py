"""Fused ops used by every vidm model: `attention` and `group_norm` (+ scale/shift, per sample or
per position, + SiLU).

Installed as `vidm.kernels` (the checkout's kernels/ folder; see README "Layout"): import it as
`from vidm import kernels` / `from vidm.kernels import attention`. Inside this package imports
are relative, so the same files also run as the checkout's top-level `kernels` package.

Each op lives in one file (kernels/attention.py, kernels/group_norm.py) with its Triton
kernels, a pure-torch reference, an autograd.Function and its dispatch. The dispatch picks the
Triton kernel for CUDA tensors it supports, else xformers (attention, if installed) or torch
(SDPA / torch's group_norm). VIDM_KERNELS=torch|triton|auto overrides the choice (read once, at
the first dispatch; `reset_settings()` re-reads it); `triton` on a machine without a GPU needs
Triton's interpreter, TRITON_INTERPRET=1 set before triton is imported (slow; for tests).
Without Triton installed (non-Linux) only the torch paths exist. Benchmark: `vidm bench kernels`
(`python -m vidm.kernels.bench`).

Note: the functions `kernels.attention` and `kernels.group_norm` shadow the submodules of the
same name as attributes of this package; reach the modules with
`from vidm.kernels.attention import ...` or `importlib.import_module("vidm.kernels.attention")`.
"""

from __future__ import annotations

from ._common import HAS_TRITON, INTERPRET, kernel_mode, poison_outputs, reset_settings
from .attention import (attention, attention_provider, attention_reference, attention_torch,
                        attention_triton)
from .group_norm import (group_norm, group_norm_provider, group_norm_reference, group_norm_torch,
                         group_norm_triton)

__all__ = [
    "attention", "group_norm",
    "attention_provider", "group_norm_provider",
    "attention_reference", "group_norm_reference",
    "attention_torch", "group_norm_torch",
    "attention_triton", "group_norm_triton",
    "HAS_TRITON", "INTERPRET", "kernel_mode", "poison_outputs", "reset_settings",
]
