"""UNet / autoencoder building blocks.

Every GroupNorm(+scale/shift+SiLU) goes through `kernels.group_norm` and every attention through
`kernels.attention` (q, k, v as (B, heads, N, head_dim)), so the Triton path replaces them without
touching the models. Output layers (second conv of a ResBlock, attention output projections,
final convs) start at zero.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from vidm import kernels
from vidm.errors import ConfigError, ShapeError
from vidm.models.configs import MODULATIONS, SUPPORTED_HEAD_DIMS
from vidm.models.embeddings import FrameTimeEncoding, sinusoidal, zero_module
from vidm.models.positional import PositionalModulation
from vidm.models.temporal_maps import TemporalMaps, apply_maps, attention_maps


class GroupNorm(nn.Module):
    """GroupNorm with an optional per-sample scale/shift and SiLU, fused in `kernels.group_norm`."""

    def __init__(self, channels: int, num_groups: int, act: str | None = None, eps: float = 1e-5):
        super().__init__()
        if channels % num_groups:
            raise ConfigError(f"GroupNorm: {channels} channels not divisible by num_groups={num_groups}")
        self.num_groups, self.act, self.eps = num_groups, act, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        # x (N, C, *spatial); scale/shift (N, C) or x's shape (per position)
        return kernels.group_norm(x, self.num_groups, self.weight, self.bias, scale, shift,
                                  act=self.act, eps=self.eps)


class ResBlock(nn.Module):
    """(GroupNorm -> scale/shift -> SiLU -> conv) x 2, plus skip.

    modulation "embedding": per-sample scale/shift from the embedding (N, emb_dim); with
    emb_dim=None (the autoencoder) the norms have no scale/shift. "positional" (PosGN,
    vidm.models.positional): per-position scale/shift from a coordinate MLP; `emb` is then the
    per-frame (noise, time) coordinates (N, 2) and emb_dim is unused. The skip is a 1x1 conv
    when the channel count changes. The second conv starts at zero, so the block starts as
    its skip path.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, num_groups: int, dropout: float = 0.0,
                 modulation: str = "embedding"):
        super().__init__()
        if modulation not in MODULATIONS:
            raise ConfigError(f"ResBlock: modulation must be one of {MODULATIONS}, got {modulation!r}")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.norm1 = GroupNorm(in_ch, num_groups, act="silu")
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = GroupNorm(out_ch, num_groups, act="silu")
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # One linear (one MLP, positional) gives (scale1, shift1, scale2, shift2).
        self.emb_proj = (nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * in_ch + 2 * out_ch))
                         if emb_dim is not None and modulation == "embedding" else None)
        self.pos_mod = PositionalModulation(out_ch, (in_ch, out_ch)) if modulation == "positional" else None
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # x (N, in_ch, H, W), emb (N, emb_dim) or, positional, (N, 2) -> (N, out_ch, H, W)
        s1 = b1 = s2 = b2 = None
        if self.emb_proj is not None:
            s1, b1, s2, b2 = self.emb_proj(emb).split([self.in_ch, self.in_ch, self.out_ch, self.out_ch], dim=1)
        elif self.pos_mod is not None:  # each (N, C, H, W)
            (s1, b1), (s2, b2) = self.pos_mod(emb, *x.shape[-2:])
        h = self.conv1(self.norm1(x, s1, b1))
        h = self.conv2(self.dropout(self.norm2(h, s2, b2)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided 3x3 conv, halves H and W."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv (no checkerboard artefacts of transposed convs)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _num_heads(channels: int, head_dim: int, where: str) -> int:
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ConfigError(f"{where}: head_dim must be one of {SUPPORTED_HEAD_DIMS}, got {head_dim}")
    if channels % head_dim:
        raise ConfigError(f"{where}: {channels} channels not divisible by head_dim={head_dim}")
    return channels // head_dim


def _video_dims(x: torch.Tensor, times: torch.Tensor, where: str) -> tuple[int, int, int, int]:
    """(B, T, H, W) of x (B*T, C, H, W), the frames of each video consecutive; times (B, T)."""
    B, T = times.shape
    if x.shape[0] != B * T:
        raise ShapeError(f"{where}: x has {x.shape[0]} frames, times says B*T = {B}*{T}")
    return B, T, *x.shape[-2:]


class SpatialAttention(nn.Module):
    """Self-attention over the H*W positions of each frame (residual, pre-norm)."""

    def __init__(self, channels: int, head_dim: int, num_groups: int):
        super().__init__()
        self.heads = _num_heads(channels, head_dim, "SpatialAttention")
        self.norm = GroupNorm(channels, num_groups)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (N, C, H, W)
        H, W = x.shape[-2:]
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")
        q, k, v = rearrange(self.to_qkv(tokens), "n l (three heads d) -> three n heads l d",
                            three=3, heads=self.heads)
        out = kernels.attention(q, k, v)  # (N, heads, H*W, d)
        out = self.to_out(rearrange(out, "n heads l d -> n l (heads d)"))
        return x + rearrange(out, "n (h w) c -> n c h w", h=H, w=W)


# processor(module, q, k, v) -> out, all (B*h*w, heads, T, d): lets a caller replace a temporal
# attention layer's attention without editing this file. None = kernels.attention. To record a
# model's maps or feed it given ones (dual-directional sampling, the backward fine-tune), pass
# a `TemporalMaps` to the model's forward instead (vidm.models.temporal_maps).
AttentionProcessor = Callable[["TemporalAttention", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class TemporalAttention(nn.Module):
    """Self-attention across the T frames at each spatial position (residual, pre-norm).

    Tokens are laid out (B*h*w, heads, T, d). Each frame's token gets a positional encoding of its
    real-valued time (B, T) added before the projections, so the block sees frame spacing and is
    equivariant to permuting frames together with their times. q/k/v/out are separate layers so
    a fine-tune can train only some of them (e.g. to_v and to_out).

    forward(x, times, maps=None): without `maps` the fused kernel (or `processor`) runs. With a
    `vidm.models.temporal_maps.TemporalMaps` the layer records its explicit maps
    (B*h*w, heads, T, T) under `map_key` ("record") or uses the given ones instead of
    softmax(q k^T) ("replace"; its own to_v and to_out applied). `map_key` is the layer's name
    in the UNet body, set when the body is built.
    """

    def __init__(self, channels: int, head_dim: int, num_groups: int, max_period: float = 10000.0):
        super().__init__()
        self.heads = _num_heads(channels, head_dim, "TemporalAttention")
        self.norm = GroupNorm(channels, num_groups)
        self.time_enc = FrameTimeEncoding(channels, max_period)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = zero_module(nn.Linear(channels, channels))
        self.processor: AttentionProcessor | None = None
        self.map_key = ""  # name in the UNet body (UNetBody sets it): the key of its TemporalMaps entry

    def forward(self, x: torch.Tensor, times: torch.Tensor, maps: TemporalMaps | None = None) -> torch.Tensor:
        # x (B*T, C, H, W), times (B, T) -> (B*T, C, H, W)
        B, T, H, W = _video_dims(x, times, "TemporalAttention")
        tokens = rearrange(self.norm(x), "(b t) c h w -> b (h w) t c", b=B, t=T)
        tokens = tokens + self.time_enc(times).to(tokens.dtype)[:, None]  # (B, 1, T, C) broadcast over h*w
        if maps is None:
            q, k, v = (rearrange(proj(tokens), "b l t (heads d) -> (b l) heads t d", heads=self.heads)
                       for proj in (self.to_q, self.to_k, self.to_v))
            out = (self.processor(self, q, k, v) if self.processor is not None
                   else kernels.attention(q, k, v))  # (B*h*w, heads, T, d)
        else:
            out = self._with_maps(tokens, maps)
        out = self.to_out(rearrange(out, "(b l) heads t d -> b l t (heads d)", b=B))
        return x + rearrange(out, "b (h w) t c -> (b t) c h w", h=H, w=W)

    def _with_maps(self, tokens: torch.Tensor, maps: TemporalMaps) -> torch.Tensor:
        """Attention through explicit maps: tokens (B, h*w, T, C) -> (B*h*w, heads, T, d)."""
        if self.processor is not None:
            raise ConfigError(f"TemporalAttention {self.map_key!r}: a processor and TemporalMaps cannot both "
                              f"replace the attention")
        heads = self.heads
        v = rearrange(self.to_v(tokens), "b l t (heads d) -> (b l) heads t d", heads=heads)
        N, T = v.shape[0], v.shape[2]
        if maps.mode == "replace":
            return apply_maps(maps.lookup(self.map_key, (N, heads, T, T)), v)
        q, k = (rearrange(proj(tokens), "b l t (heads d) -> (b l) heads t d", heads=heads)
                for proj in (self.to_q, self.to_k))
        p = attention_maps(q, k)  # (B*h*w, heads, T, T) float32
        maps.store(self.map_key, p)
        return apply_maps(p, v)


def temporal_layers(net: nn.Module) -> list[tuple[str, TemporalAttention]]:
    """(name, module) of every TemporalAttention layer of a model (a MotionUNet), in module order:
    the layers a TemporalMaps reaches."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, TemporalAttention)]


class SpaceTimeAttention(nn.Module):
    """Self-attention over all T*h*w positions of a video's window (residual, pre-norm).

    Factorised attention moves information across time only at a fixed pixel and across space
    only within a frame, so an object at p in one frame reaches position q in another only over
    two hops. Here a token of an in-between frame sees every position of every other frame in
    one step: it can find the object in the known frames and copy it to where it belongs. Each
    token gets its frame time's encoding plus a Fourier encoding of its position in the frame
    (normalised to [-1, 1], so the code does not depend on the resolution). Used at the coarse
    levels only: the cost grows with (T*h*w)^2.
    """

    def __init__(self, channels: int, head_dim: int, num_groups: int, max_period: float = 10000.0,
                 num_freqs: int = 8):
        super().__init__()
        self.heads = _num_heads(channels, head_dim, "SpaceTimeAttention")
        self.norm = GroupNorm(channels, num_groups)
        self.time_enc = FrameTimeEncoding(channels, max_period)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32),
                             persistent=False)
        self.pos_proj = nn.Linear(4 * num_freqs, channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = zero_module(nn.Linear(channels, channels))

    def position_encoding(self, H: int, W: int) -> torch.Tensor:
        """(H*W, 4 * num_freqs) sin/cos codes of pixel centres in [-1, 1] x [-1, 1], rows first."""
        dev = self.freqs.device
        y = (torch.arange(H, device=dev, dtype=torch.float32) + 0.5) / H * 2 - 1
        x = (torch.arange(W, device=dev, dtype=torch.float32) + 0.5) / W * 2 - 1
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        return torch.cat([sinusoidal(yy.reshape(-1), 2 * len(self.freqs), self.freqs),
                          sinusoidal(xx.reshape(-1), 2 * len(self.freqs), self.freqs)], dim=-1)

    def forward(self, x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        B, T, H, W = _video_dims(x, times, "SpaceTimeAttention")
        tokens = rearrange(self.norm(x), "(b t) c h w -> b t (h w) c", b=B, t=T)
        pos = self.pos_proj(self.position_encoding(H, W).to(self.pos_proj.weight.dtype))  # (h*w, C)
        tokens = tokens + self.time_enc(times).to(tokens.dtype)[:, :, None] + pos.to(tokens.dtype)
        q, k, v = rearrange(self.to_qkv(tokens), "b t l (three heads d) -> three b heads (t l) d",
                            three=3, heads=self.heads)
        out = kernels.attention(q, k, v)  # (B, heads, T*h*w, d)
        out = self.to_out(rearrange(out, "b heads n d -> b n (heads d)"))
        return x + rearrange(out, "b (t h w) c -> (b t) c h w", t=T, h=H, w=W)


__all__ = ["GroupNorm", "ResBlock", "Downsample", "Upsample", "SpatialAttention", "TemporalAttention",
           "temporal_layers", "SpaceTimeAttention", "AttentionProcessor"]
