"""Motion-compensated in-betweens of two latent frames: global matching + forward splatting.

The sampler's starting point for interpolation (`PipelineConfig.infill_init = "splat"`): instead
of pure noise at sigma_max, an in-between window starts at m + sigma_start * noise, where m moves
what is in the end frames to where it should be at time t, and the motion model only refines.

    d_ab(p) = sum_q softmax_q(-|a_p - b_q|^2 / temperature) q  -  p      (soft global match a -> b)
    c_ab(p) = exp(-(|d_ab(p) + d_ba(p + d_ab(p))| / consistency)^2)     (forward-backward check)
    m_t     = [splat(a at p + t d_ab, weight (1-t) c_ab) + splat(b at q + (1-t) d_ba, weight t c_ba)
               + stay ((1-t)(1-c_ab) a + t (1-c_ba) b) + fallback ((1-t) a + t b)] / [sum of the weights]

Matching is over the whole frame (every position against every other), so it follows motion of
any size, where local optical flow (OpenCV DIS) loses small fast objects. Content that fails the
forward-backward check (what an object uncovers or covers, ambiguous flat areas) stays where it is
with weight `stay`: background uncovered in one end frame fills the hole an object leaves, where a
cross-fade would leave the object's ghost; the cross-fade, at the small weight `fallback`, only
fills what nothing else reaches. Splatting is bilinear: each source position adds its latent to the
4 positions around its target. There is no depth order: where a moving object lands on background
that stays, the two are averaged (weighting what moves more, as a foreground cue, placed objects
better but lowered PSNR on synthetic validation clips); the motion model's refinement from
infill_sigma sorts that out.

Cost: an (N, N) similarity per frame pair, N = h * w latent positions (256 at 16x16; 16 M entries,
64 MB in float32, at 64x64). Positions are in latent pixels, (x, y) = (column, row).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from vidm.diffusion.prior import nearest_known
from vidm.errors import ConfigError, ShapeError

DEFAULT_TEMPERATURE = 0.05  # squared latent distance (latents have about unit std)
DEFAULT_CONSISTENCY = 1.0  # latent pixels
DEFAULT_FALLBACK = 0.05  # weight of the cross-fade where nothing lands
DEFAULT_STAY = 0.2  # weight of unmatched content staying where it is (chosen on validation clips)


def _grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """(N, 2) (x, y) of every latent position, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2)


def match_displacements(src: torch.Tensor, dst: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
                        ) -> torch.Tensor:
    """Soft global match: src, dst (B, C, h, w) -> displacement (B, N, 2) (x, y) from each src
    position to the softmax-weighted position of the dst features most like it."""
    B, C, h, w = src.shape
    a = src.reshape(B, C, h * w).transpose(1, 2)  # (B, N, C)
    b = dst.reshape(B, C, h * w).transpose(1, 2)
    d2 = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()  # (B, N, N), exact
    pos = _grid(h, w, src.device, src.dtype)
    return torch.softmax(-d2 / temperature, dim=-1) @ pos - pos


def _consistency(d_ab: torch.Tensor, d_ba: torch.Tensor, h: int, w: int, scale: float) -> torch.Tensor:
    """(B, N) in (0, 1]: 1 where going a -> b -> a comes back to the start."""
    pos = _grid(h, w, d_ab.device, d_ab.dtype)
    tgt = pos + d_ab  # (B, N, 2)
    tx = tgt[..., 0].round().clamp(0, w - 1)
    ty = tgt[..., 1].round().clamp(0, h - 1)
    idx = (ty * w + tx).long()  # (B, N)
    back = torch.gather(d_ba, 1, idx[..., None].expand(-1, -1, 2))
    return torch.exp(-((d_ab + back).norm(dim=-1) / scale).square())


def forward_splat(values: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, h: int, w: int):
    """Bilinear forward splatting. values (B, C, N) land at targets (B, N, 2) (x, y) with weights
    (B, N) -> (weighted sum (B, C, h*w), summed weight (B, h*w)); targets off the grid drop out."""
    B, C, N = values.shape
    acc = values.new_zeros(B * (h * w), C)
    wsum = values.new_zeros(B * (h * w))
    offset = (torch.arange(B, device=values.device) * (h * w))[:, None]  # (B, 1)
    x0, y0 = targets[..., 0].floor(), targets[..., 1].floor()
    flat_vals = values.transpose(1, 2).reshape(B * N, C)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            bw = (1 - (targets[..., 0] - xi).abs()) * (1 - (targets[..., 1] - yi).abs()) * weights
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            bw = torch.where(inside, bw, torch.zeros_like(bw)).reshape(-1)
            idx = ((yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long() + offset).reshape(-1)
            acc.index_add_(0, idx, flat_vals * bw[:, None])
            wsum.index_add_(0, idx, bw)
    return acc.reshape(B, h * w, C).transpose(1, 2), wsum.reshape(B, h * w)


def splat_inbetweens(z_a: torch.Tensor, z_b: torch.Tensor, fractions: Sequence[float] | torch.Tensor,
                     temperature: float = DEFAULT_TEMPERATURE, consistency: float = DEFAULT_CONSISTENCY,
                     fallback: float = DEFAULT_FALLBACK, stay: float = DEFAULT_STAY) -> torch.Tensor:
    """z_a, z_b (B, C, h, w) at times 0 and 1 -> m (B, K, C, h, w) at the K `fractions` (see the
    module docstring). Computed in float32 (float64 stays float64)."""
    if z_a.ndim != 4 or z_a.shape != z_b.shape:
        raise ShapeError(f"splat_inbetweens: need two (B, C, h, w) latents of one shape, got "
                         f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if not (temperature > 0 and consistency > 0 and fallback > 0 and stay >= 0):
        raise ConfigError(f"splat_inbetweens: temperature, consistency, fallback must be > 0 and stay >= 0, "
                          f"got {temperature}, {consistency}, {fallback}, {stay}")
    dtype = torch.float64 if z_a.dtype == torch.float64 else torch.float32
    a, b = z_a.to(dtype), z_b.to(dtype)
    B, C, h, w = a.shape
    d_ab, d_ba = match_displacements(a, b, temperature), match_displacements(b, a, temperature)
    c_ab, c_ba = _consistency(d_ab, d_ba, h, w, consistency), _consistency(d_ba, d_ab, h, w, consistency)
    pos = _grid(h, w, a.device, dtype)
    fa, fb = a.reshape(B, C, h * w), b.reshape(B, C, h * w)
    out = []
    for t in torch.as_tensor(fractions, dtype=dtype).reshape(-1).tolist():
        acc_a, w_a = forward_splat(fa, pos + t * d_ab, (1 - t) * c_ab, h, w)
        acc_b, w_b = forward_splat(fb, pos + (1 - t) * d_ba, t * c_ba, h, w)
        s_a, s_b = stay * (1 - t) * (1 - c_ab), stay * t * (1 - c_ba)  # (B, N): unmatched stays put
        num = acc_a + acc_b + s_a[:, None] * fa + s_b[:, None] * fb + fallback * ((1 - t) * fa + t * fb)
        m = num / (w_a + w_b + s_a + s_b + fallback)[:, None]
        out.append(m.reshape(B, C, h, w))
    return torch.stack(out, 1)


def brackets(known: torch.Tensor, times: torch.Tensor) -> list[tuple[int, int, int, float]] | None:
    """For every unknown frame i of a window (known (T,) bool, times (T,)): (i, j_before, j_after,
    fraction of the way from j_before to j_after); None when some unknown frame lacks a known frame
    on either side in time (prediction, generation: nothing to interpolate between)."""
    known, times = torch.as_tensor(known).bool().cpu(), torch.as_tensor(times).double().cpu()
    if known.ndim != 1 or times.shape != known.shape:
        raise ShapeError(f"brackets: need known and times of shape (T,), got {tuple(known.shape)} and "
                         f"{tuple(times.shape)}")
    j_before, j_after, d_before, d_after = (v[0] for v in nearest_known(known[None], times[None]))
    out = []
    for i in torch.nonzero(~known).flatten().tolist():
        db, da = float(d_before[i]), float(d_after[i])
        if math.isinf(db) or math.isinf(da):
            return None
        out.append((i, int(j_before[i]), int(j_after[i]), 0.0 if db + da == 0 else db / (db + da)))
    return out


def splat_window_mean(x: torch.Tensor, known: torch.Tensor, times: torch.Tensor, **kwargs) -> torch.Tensor:
    """x (B, T, C, h, w) with the known frames in place, known (T,) bool and times (T,) shared by
    the batch -> m (B, T, C, h, w): each unknown frame splatted between its nearest known frames
    before and after; known frames as given. Raises ConfigError when an unknown frame lacks a
    known frame on one side (check with `brackets` first)."""
    if x.ndim != 5:
        raise ShapeError(f"splat_window_mean: need x (B, T, C, h, w), got {tuple(x.shape)}")
    plan = brackets(known, times)
    if plan is None:
        raise ConfigError("splat_window_mean: every unknown frame needs known frames before and after it")
    m = x.clone()
    pairs: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for i, jb, ja, frac in plan:
        pairs.setdefault((jb, ja), []).append((i, frac))
    for (jb, ja), items in pairs.items():  # one match per pair of known frames
        mids = splat_inbetweens(x[:, jb], x[:, ja], [f for _, f in items], **kwargs)
        for k, (i, _) in enumerate(items):
            m[:, i] = mids[:, k].to(m.dtype)
    return m


__all__ = ["match_displacements", "forward_splat", "splat_inbetweens", "brackets", "splat_window_mean"]
