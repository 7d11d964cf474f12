"""Fused ops used by every vidm model: `attention` and `group_norm` (+ scale/shift, per sample or
per position, + SiLU).

Each op lives in one file (kernels/attention.py, kernels/group_norm.py) with its Triton
kernels, a pure-torch reference, an autograd.Function and its dispatch. The dispatch picks the
Triton kernel for CUDA tensors it supports, else xformers (attention, if installed) or torch
(SDPA / torch's group_norm). VIDM_KERNELS=torch|triton|auto overrides the choice; `triton` on a
machine without a GPU runs Triton's interpreter (slow; for tests). Without Triton installed
(non-Linux) only the torch paths exist. Benchmark: `python -m kernels.bench` / `vidm bench kernels`.

Note: the functions `kernels.attention` and `kernels.group_norm` shadow the submodules of the
same name as attributes of this package; reach the modules with
`from kernels.attention import ...` or `importlib.import_module("kernels.attention")`.
"""

from __future__ import annotations

from kernels._common import HAS_TRITON, INTERPRET, kernel_mode, poison_outputs
from kernels.attention import (attention, attention_provider, attention_reference, attention_torch,
                               attention_triton)
from kernels.group_norm import (group_norm, group_norm_provider, group_norm_reference, group_norm_torch,
                                group_norm_triton)

__all__ = [
    "attention", "group_norm",
    "attention_provider", "group_norm_provider",
    "attention_reference", "group_norm_reference",
    "attention_torch", "group_norm_torch",
    "attention_triton", "group_norm_triton",
    "HAS_TRITON", "INTERPRET", "kernel_mode", "poison_outputs",
]
