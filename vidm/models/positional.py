"""Positional group normalisation (PosGN; VIDM, Mei & Patel, AAAI 2023): a ResBlock's norms are
modulated per position, by a small MLP of where the position is in space, time and noise,
instead of per sample by a noise embedding (`model.modulation: positional`).

Each position of a frame gets four coordinates, each scaled to about [-1, 1]:

    noise  c_noise = ln(sigma) / 4, mapped linearly so that EDM's sigma range [0.002, 80] spans
           [-1, 1] (beyond it the map extends linearly; known frames, sigma floored at 0.002 by
           the Denoiser, sit at -1)
    time   the window's real frame times, scaled per window from [min, max] to [-1, 1], so any
           window length and spacing fits (0 for a one-frame window and for the content model)
    y, x   pixel centres of the block's own resolution, (i + 0.5) / H * 2 - 1, so every level
           and every latent size shares one frame of reference

and the MLP Linear(4, C) -> sin -> Linear(C, 2C) -> SiLU -> Linear(2C, 2 * sum(channels)) gives
a scale and a shift per position for each norm it serves: SiLU(GN(h) * (1 + scale) + shift),
fused in `kernels.group_norm`. C is the block's output width. The MLP runs as matmuls over the
channel axis of (N, C, H*W) tensors, so scale and shift come out as NCHW slices of one tensor,
the layout of the feature maps they modulate (no transposes on the way to the kernel).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidm.errors import ShapeError

# EDM's sigma range (Karras et al. 2022), in c_noise = ln(sigma) / 4 units: mapped onto [-1, 1].
C_NOISE_RANGE = (math.log(0.002) / 4, math.log(80.0) / 4)


def frame_coordinates(c_noise: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame (noise, time) coordinates (N, 2), float32.

    c_noise (N,) for frames, or (B, T) with times (B, T) for windows (N = B*T, frames of a
    window consecutive); times None (content model): time 0 for every frame.
    """
    lo, hi = C_NOISE_RANGE
    noise = (c_noise.float() - lo) / (hi - lo) * 2 - 1
    if times is None:
        return torch.stack([noise.reshape(-1), torch.zeros_like(noise.reshape(-1))], dim=-1)
    if times.shape != c_noise.shape or times.ndim != 2:
        raise ShapeError(f"frame_coordinates: times must be (B, T) like c_noise {tuple(c_noise.shape)}, "
                         f"got {tuple(times.shape)}")
    t = times.float()
    t0, t1 = t.amin(1, keepdim=True), t.amax(1, keepdim=True)
    span = t1 - t0
    # A window whose frames share one time (T = 1) sits at 0, like the content model.
    time = torch.where(span > 0, (t - t0) / span.clamp_min(1e-12) * 2 - 1, torch.zeros_like(t))
    return torch.stack([noise.reshape(-1), time.reshape(-1)], dim=-1)


def pixel_centres(n: int, device: torch.device) -> torch.Tensor:
    """(n,) centres of n pixels across [-1, 1]."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * 2 - 1


def _channel_linear(lin: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """`lin` applied along dim 1: (N, in, S) -> (N, out, S), contiguous."""
    out = torch.matmul(lin.weight, h)  # autocast casts both operands alike
    return out + lin.bias.to(out.dtype)[:, None]


class PositionalModulation(nn.Module):
    """The coordinate MLP of one ResBlock: per-frame coordinates (N, 2) and the block's
    resolution (H, W) -> a (scale, shift) pair, each (N, C_i, H, W), for each norm i.

    channels: the norms' channel counts, e.g. (in_ch, out_ch); hidden: the MLP width C.
    `out` is the last layer: at zero, every scale and shift is exactly 0.
    """

    def __init__(self, hidden: int, channels: tuple[int, ...]):
        super().__init__()
        self.channels = tuple(channels)
        self.embed = nn.Linear(4, hidden)  # columns: noise, time, y, x
        self.hidden = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(2 * hidden, 2 * sum(self.channels))

    def forward(self, frame_coords: torch.Tensor, H: int, W: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        N = frame_coords.shape[0]
        if frame_coords.shape != (N, 2):
            raise ShapeError(f"PositionalModulation: frame coordinates must be (N, 2), got {tuple(frame_coords.shape)}")
        w, dev, fc = self.embed.weight.float(), frame_coords.device, frame_coords.float()
        # Linear(4, C) of (noise, time, y, x) = a per-frame part + a per-row part + a per-column
        # part, summed by broadcasting instead of building an (N, H, W, 4) input. Element-wise
        # products, not a matmul, so autocast leaves them in fp32: the sin's phases want it.
        frame = fc[:, 0:1] * w[:, 0] + fc[:, 1:2] * w[:, 1] + self.embed.bias.float()  # (N, C)
        row = w[:, 2:3] * pixel_centres(H, dev)  # (C, H)
        col = w[:, 3:4] * pixel_centres(W, dev)  # (C, W)
        h = torch.sin(frame[:, :, None, None] + row[None, :, :, None] + col[None, :, None, :])  # (N, C, H, W)
        h = F.silu(_channel_linear(self.hidden, h.flatten(2).to(self.hidden.weight.dtype)))  # (N, 2C, H*W)
        mod = _channel_linear(self.out, h).view(N, -1, H, W)  # (N, 2 * sum(channels), H, W)
        parts = mod.split([c for c in self.channels for _ in range(2)], dim=1)
        return [(parts[2 * i], parts[2 * i + 1]) for i in range(len(self.channels))]


__all__ = ["C_NOISE_RANGE", "frame_coordinates", "pixel_centres", "PositionalModulation"]
