"""Sinusoidal embeddings of the noise level (c_noise) and of real-valued frame times."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def sinusoidal(x: torch.Tensor, dim: int, freqs: torch.Tensor) -> torch.Tensor:
    """[cos(x f), sin(x f)] for x of any shape -> (*x.shape, dim); freqs (dim // 2,).

    Computed in float32 whatever the autocast state: bf16 cannot resolve large x * f phases.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal: dim must be even, got {dim}")
    phase = x.float().unsqueeze(-1) * freqs.float()  # (*x.shape, dim // 2)
    return torch.cat([phase.cos(), phase.sin()], dim=-1)


def geometric_freqs(dim: int, lo: float, hi: float) -> torch.Tensor:
    """dim // 2 angular frequencies spaced geometrically from hi down to lo."""
    half = dim // 2
    if half == 1:
        return torch.tensor([hi])
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), half))


class NoiseEmbedding(nn.Module):
    """c_noise -> embedding vector (the EDM noise-conditioning input).

    c_noise = ln(sigma) / 4 spans about [-1.6, 1.1] for sigma in [0.002, 80]; frequencies from
    1 to `max_freq` radians per unit resolve both that whole range and small steps of sigma.
    The sinusoid goes through a 2-layer MLP, as in ADM / EDM.
    """

    def __init__(self, channels: int, emb_dim: int, max_freq: float = 200.0):
        super().__init__()
        self.channels = channels
        self.register_buffer("freqs", geometric_freqs(channels, 1.0, max_freq), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        # (N,) -> (N, emb_dim)
        return self.mlp(sinusoidal(c_noise, self.channels, self.freqs).to(self.mlp[0].weight.dtype))


class FrameTimeEncoding(nn.Module):
    """Positional encoding of each frame's real-valued time (B, T) -> (B, T, channels).

    Transformer-style sinusoid (periods from 2*pi up to `max_period` frames) of the time itself,
    not of the frame's index, so unevenly spaced or fractional times (temporal upsampling) get
    their own codes; followed by a learned linear map. Because the code of a frame depends only
    on that frame's time, temporal attention stays permutation-equivariant in frames when times
    are permuted along.
    """

    def __init__(self, channels: int, max_period: float = 10000.0):
        super().__init__()
        self.channels = channels
        self.register_buffer("freqs", geometric_freqs(channels, 1.0 / max_period, 1.0), persistent=False)
        self.proj = nn.Linear(channels, channels)

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        return self.proj(sinusoidal(times, self.channels, self.freqs).to(self.proj.weight.dtype))


def zero_module(m: nn.Module) -> nn.Module:
    """Zero a layer's parameters: output layers start at 0 so an untrained block is the identity
    on its residual path (and an untrained UNet outputs exactly 0)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


__all__ = ["sinusoidal", "geometric_freqs", "NoiseEmbedding", "FrameTimeEncoding", "zero_module"]
