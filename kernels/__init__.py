"""Fused ops used by every vidm model. Models call only these two functions; the dispatch
picks a Triton kernel on CUDA, else xformers/SDPA (attention) or torch ops (GroupNorm).

PLACEHOLDER: torch-only implementations until the Triton kernels land (issue 6); the
signatures are the contract and must not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              causal: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale) v for q, k, v of shape (B, H, N, D) -> (B, H, N, D)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
               scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
               act: str | None = None, eps: float = 1e-5) -> torch.Tensor:
    """y = act(GroupNorm(x) * (1 + scale) + shift).

    x: (B, C, *spatial) (any number of spatial dims, e.g. (B, C, H, W) or (B, C, T, H, W));
    weight, bias: (C,) or None; scale, shift: (B, C) or None; act: None or "silu".
    """
    y = F.group_norm(x, num_groups, weight, bias, eps)
    extra = (1,) * (x.ndim - 2)
    if scale is not None:
        y = y * (1 + scale.reshape(*scale.shape, *extra))
    if shift is not None:
        y = y + shift.reshape(*shift.shape, *extra)
    if act == "silu":
        y = F.silu(y)
    elif act is not None:
        raise ValueError(f"group_norm: act must be None or 'silu', got {act!r}")
    return y


__all__ = ["attention", "group_norm"]
