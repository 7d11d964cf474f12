"""Explicit temporal attention maps: record a MotionUNet's, or run one on given maps.

Generative Inbetweening (Wang et al. 2024) turns a forward-motion model into a backward-motion
one by feeding a copy of it the forward model's temporal self-attention maps rotated by 180
degrees (both axes of each T x T map reversed) in place of the copy's own, and fine-tuning only
the copy's value and output projections. The fused attention kernel (`vidm.kernels.attention`)
never materialises the maps, so this path computes them explicitly,

    P = softmax(q k^T / sqrt(d))    (B*h*w, heads, T, T), float32, rows summing to 1,

which is cheap here: T is a window of frames. One `TemporalMaps` object goes with one call of
a MotionUNet (`net(..., temporal_maps=maps)`), down to every TemporalAttention layer; without
one (the default) the layers run the fused kernel exactly as before. No per-call state lives
on the modules. Recorded maps are kept as computed (with their autograd graph when gradients
are on; record under torch.no_grad() to hold plain tensors).

    rec = TemporalMaps.record()
    forward_net(x, c_noise, known, times, anchor, temporal_maps=rec)    # rec.maps: {layer: P}
    backward_net(x_rev, c_rev, known_rev, times_rev, anchor_rev,
                 temporal_maps=rec.rotated())                           # each layer: P flipped, own v, to_out

Layers are keyed by their module name inside the UNet body ("down.1.1", "mid.2", "up.4.1"),
the same in a model and in any copy of it (the keys are assigned when the body is built), so a
recomputation under gradient checkpointing reads, or overwrites, the same entry.
"""

from __future__ import annotations

import math

import torch

from vidm.errors import ConfigError, ShapeError

MODES = ("record", "replace")


def attention_maps(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """P = softmax(q k^T / sqrt(d)) for q, k (N, heads, T, d) -> (N, heads, T, T) float32.

    Computed in float32 outside autocast, as the fused kernel accumulates."""
    with torch.autocast(q.device.type, enabled=False):
        scores = q.float() @ k.float().transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))
        return torch.softmax(scores, dim=-1)


def apply_maps(maps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out = P v for P (N, heads, T, T) and v (N, heads, T, d) -> (N, heads, T, d) in v's dtype
    (the product in float32 outside autocast, as the fused kernel accumulates)."""
    with torch.autocast(v.device.type, enabled=False):
        return (maps.float() @ v.float()).to(v.dtype)


def rotate_maps(maps: torch.Tensor) -> torch.Tensor:
    """A map (..., T, T) rotated by 180 degrees: both frame axes reversed, so
    out[..., i, j] = maps[..., T-1-i, T-1-j] (how frame T-1-i attended to frame T-1-j). For the
    time-reversed clip, whose frame i is the original frame T-1-i, that is the forward model's
    attention between the same two frames."""
    if maps.ndim < 2 or maps.shape[-1] != maps.shape[-2]:
        raise ShapeError(f"rotate_maps: expected square maps (..., T, T), got {tuple(maps.shape)}")
    return maps.flip((-2, -1))


class TemporalMaps:
    """What the temporal attention layers of one MotionUNet call do with their maps.

    mode "record" (`TemporalMaps.record()`): each layer computes its maps P explicitly (float32),
        uses them (out = P v; the output equals the fused path's within float tolerance) and stores
        them in `maps[key]`, (B*h*w, heads, T, T) with B*h*w ordered (b, y, x).
    mode "replace" (`TemporalMaps.replace(maps)`): each layer uses `maps[key]` in place of its own
        softmax(q k^T) (q and k are not computed), with its own to_v and to_out applied. A layer
        without an entry, or an entry of another shape, is a ShapeError naming the layer.
    """

    def __init__(self, mode: str, maps: dict[str, torch.Tensor] | None = None):
        if mode not in MODES:
            raise ConfigError(f"TemporalMaps: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.maps: dict[str, torch.Tensor] = dict(maps or {})

    @classmethod
    def record(cls) -> "TemporalMaps":
        return cls("record")

    @classmethod
    def replace(cls, maps: dict[str, torch.Tensor]) -> "TemporalMaps":
        return cls("replace", maps)

    def rotated(self) -> "TemporalMaps":
        """A "replace" TemporalMaps holding every map rotated by 180 degrees (`rotate_maps`)."""
        return TemporalMaps.replace({key: rotate_maps(m) for key, m in self.maps.items()})

    def store(self, key: str, maps: torch.Tensor) -> None:
        self.maps[key] = maps

    def lookup(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The given maps of layer `key`, checked to be `shape` (B*h*w, heads, T, T)."""
        if key not in self.maps:
            known = ", ".join(sorted(self.maps)) or "none"
            raise ShapeError(f"TemporalMaps: no maps given for temporal attention layer {key!r} (given: {known})")
        m = self.maps[key]
        if tuple(m.shape) != tuple(shape):
            raise ShapeError(f"TemporalMaps: maps of layer {key!r} must be (B*h*w, heads, T, T) = {tuple(shape)}, "
                             f"got {tuple(m.shape)}")
        return m

    def __repr__(self) -> str:
        return f"TemporalMaps({self.mode!r}, layers={sorted(self.maps)})"


__all__ = ["TemporalMaps", "attention_maps", "apply_maps", "rotate_maps"]
