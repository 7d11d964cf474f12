"""Fused GroupNorm with a modulation and SiLU:

    y = act(GroupNorm(x) * (1 + scale) + shift),   act in {None, "silu"}

x (B, C, *spatial) in NCHW, channels-last or any strides whose spatial dims merge into one
(e.g. (B, C, H, W) or (B, C, T, H, W)); weight, bias (C,) or None. scale and shift, each on its
own, are None, (B, C) (per sample and channel: the noise embedding's modulation, broadcast over
the positions) or x's full shape (B, C, *spatial) (per position: VIDM's positional GroupNorm,
PosGN). No other shape is broadcast: expand a map shared across the batch or a per-channel
(B, C, 1, 1) to x's shape first (`expand` is a free view; its stride-0 dims are read as such,
and autograd sums the gradient back). Full-shape scale/shift may have any strides whose
spatial dims merge (e.g. NCHW-strided slices of one larger tensor, as a per-position MLP writes
them), independently of x's layout.

The torch chain reads and writes the tensor four to five times (group_norm, mul, add, silu);
here one program owns one (sample, group): where the group fits on chip it is read once, its
fp32 mean and variance are taken from registers and the normalised, modulated, activated
result is written once (with full-shape scale/shift, those are read once too). Larger groups
loop over the spatial axis: a first sweep merges per-chunk statistics (Chan et al.'s parallel
variance, stable where E[x^2] - E[x]^2 is not), a second sweep writes. The backward recomputes
everything from x and the saved (mean, rstd) and returns dx, dweight, dbias, dscale and dshift
(full-shape ones written element by element, per-channel ones reduced over the positions).

Contents: Triton kernels; `group_norm_reference` (plain torch, float64 for tests);
`group_norm_torch` (the torch-op fallback, also the "eager" benchmark provider);
`TritonGroupNorm` (autograd.Function, shape guards raise ShapeError); `group_norm_provider`
(dispatch predicate) and `group_norm` (the entry point vidm's models use).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import (HAS_TRITON, choose_provider, int32_addressable, jit, kernel_mode,
                      new_output, new_output_like, next_pow2, require_triton, tl, triton_runs_on)
from vidm.errors import ConfigError, ShapeError

ACTS = (None, "silu")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Tile budgets in elements (fp32 registers): a group up to FUSED_MAX (forward) or
# FUSED_MAX_BWD (backward, which holds x, dy and their products) is done in one read;
# larger groups are swept in chunks of CHUNK / CHUNK_BWD elements. With the warp counts of
# `_tile` (about 16 fp32 elements per thread forward, 8 backward) none of the kernels spills
# registers on sm_90 (checked with Triton's sm_90 backend and `ptxas -v`; 16384-element tiles
# did spill). On a GPU a group swept twice is mostly re-read from L2, not from memory.
# Module constants so tests can shrink them to exercise the looped path on small tensors.
FUSED_MAX = 8192
FUSED_MAX_BWD = 4096
CHUNK = 4096
CHUNK_BWD = 2048


# =============================================================================================
# Triton kernels. One program per (sample b, group g); the group's CG channels are the rows of
# a (BLOCK_C, BLOCK_S) tile, the merged spatial axis its columns. x is addressed as a
# (B, C, S) view through strides, so NCHW (spatial stride 1) and channels-last (channel stride
# 1) use the same code; Triton specialises unit strides, so either layout loads coalesced.
# Per-channel vectors (w, b, and scale/shift when they are (B, C), contiguous) are
# (BLOCK_C,); full-shape scale/shift (SCALE_FULL / SHIFT_FULL) are (B, C, S) views with their
# own strides, loaded as tiles beside x.
# =============================================================================================

@jit
def _full_tile(PTR, b, ch, s, mask, sb, sc, ss):
    """(BLOCK_C, BLOCK_S) fp32 tile of a full-shape (B, C, S) operand; 0 outside the mask."""
    return tl.load(PTR + b * sb + ch[:, None] * sc + s[None, :] * ss, mask=mask, other=0.0).to(tl.float32)


@jit
def _gn_fwd_kernel(X, Y, W, BIAS, SCALE, SHIFT, MEAN, RSTD,
                   C, S, G, CG, sxb, sxc, sxs, syb, syc, sys, ssb, ssc, sss, shb, shc, shs, inv_n, eps,
                   HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr,
                   HAS_SHIFT: tl.constexpr, SCALE_FULL: tl.constexpr, SHIFT_FULL: tl.constexpr,
                   SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ONE_PASS: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // G
    g = pid % G
    c = tl.arange(0, BLOCK_C)
    c_ok = c < CG
    ch = g * CG + c  # channel index in [0, C)
    s0 = tl.arange(0, BLOCK_S)
    x_rows = X + b * sxb + ch[:, None] * sxc  # (BLOCK_C, 1) row pointers
    y_rows = Y + b * syb + ch[:, None] * syc

    # --- statistics over the group's CG * S elements, in fp32
    if ONE_PASS:  # the whole group is this one tile, kept in registers for the write below
        mask = c_ok[:, None] & (s0[None, :] < S)
        x = tl.load(x_rows + s0[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x) * inv_n
        xc = tl.where(mask, x - mean, 0.0)
        var = tl.sum(xc * xc) * inv_n
    else:
        # Per-channel running (count, mean, M2), merged chunk by chunk (Chan et al. 1979),
        # then merged across channels. Carried as (BLOCK_C,) vectors.
        cnt = tl.full([BLOCK_C], 0.0, tl.float32)
        mu = tl.full([BLOCK_C], 0.0, tl.float32)
        m2 = tl.full([BLOCK_C], 0.0, tl.float32)
        for start in range(0, S, BLOCK_S):
            s = start + s0
            mask = c_ok[:, None] & (s[None, :] < S)
            x = tl.load(x_rows + s[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            k = tl.where(c_ok, tl.minimum(S - start, BLOCK_S), 0).to(tl.float32)  # per channel
            mu_k = tl.sum(x, 1) / tl.maximum(k, 1.0)
            xc = tl.where(mask, x - mu_k[:, None], 0.0)
            m2_k = tl.sum(xc * xc, 1)
            tot = cnt + k
            delta = mu_k - mu
            mu = mu + delta * (k / tl.maximum(tot, 1.0))
            m2 = m2 + m2_k + delta * delta * (cnt * k / tl.maximum(tot, 1.0))
            cnt = tot
        mean = tl.sum(cnt * mu) * inv_n  # invalid channels have cnt = 0
        dev = mu - mean
        var = tl.sum(tl.where(c_ok, m2 + cnt * dev * dev, 0.0)) * inv_n
    rstd = tl.rsqrt(var + eps)
    tl.store(MEAN + pid, mean)
    tl.store(RSTD + pid, rstd)

    # --- fold weight, bias and the per-channel modulation into one per-channel gain and offset:
    # y = act((x - mean) * rstd * gain + beta), gain = w (1 + scale), beta = bias (1 + scale) + shift.
    # A full-shape scale cannot be folded: then gain = w, beta = bias, and the tile is scaled
    # element by element (a per-channel shift, `shift_c`, comes after that scale).
    one_plus = tl.full([BLOCK_C], 1.0, tl.float32)
    if HAS_SCALE:
        if not SCALE_FULL:
            one_plus += tl.load(SCALE + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)
    gain = one_plus
    if HAS_W:
        gain = gain * tl.load(W + ch, mask=c_ok, other=1.0).to(tl.float32)
    beta = tl.full([BLOCK_C], 0.0, tl.float32)
    if HAS_B:
        beta = tl.load(BIAS + ch, mask=c_ok, other=0.0).to(tl.float32) * one_plus
    shift_c = tl.full([BLOCK_C], 0.0, tl.float32)
    if HAS_SHIFT:
        if not SHIFT_FULL:
            if SCALE_FULL:
                shift_c = tl.load(SHIFT + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)
            else:
                beta += tl.load(SHIFT + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)
    gain = gain * rstd

    if ONE_PASS:
        z = (x - mean) * gain[:, None] + beta[:, None]
        if SCALE_FULL:
            z = z * (1.0 + _full_tile(SCALE, b, ch, s0, mask, ssb, ssc, sss)) + shift_c[:, None]
        if SHIFT_FULL:
            z += _full_tile(SHIFT, b, ch, s0, mask, shb, shc, shs)
        if SILU:
            z = z * 1.0 / (1.0 + tl.exp(-z))
        tl.store(y_rows + s0[None, :] * sys, z.to(Y.dtype.element_ty), mask=mask)
    else:
        for start in range(0, S, BLOCK_S):
            s = start + s0
            mask = c_ok[:, None] & (s[None, :] < S)
            x = tl.load(x_rows + s[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            z = (x - mean) * gain[:, None] + beta[:, None]
            if SCALE_FULL:
                z = z * (1.0 + _full_tile(SCALE, b, ch, s, mask, ssb, ssc, sss)) + shift_c[:, None]
            if SHIFT_FULL:
                z += _full_tile(SHIFT, b, ch, s, mask, shb, shc, shs)
            if SILU:
                z = z * 1.0 / (1.0 + tl.exp(-z))
            tl.store(y_rows + s[None, :] * sys, z.to(Y.dtype.element_ty), mask=mask)


@jit
def _gn_bwd_tile(x, dy, mask, mean, rstd, w, bias, gain, beta, shift_c, SCALE, SHIFT, b, ch, s,
                 ssb, ssc, sss, shb, shc, shs,
                 SCALE_FULL: tl.constexpr, SHIFT_FULL: tl.constexpr, SILU: tl.constexpr):
    """One tile of the backward: (xhat, dz, du, u) with dz = dL/dz (z before the activation),
    du = dL/du (u = xhat w + bias, GroupNorm's output; du = dz (1 + scale)), all 0 outside the
    mask. u is only computed (and only meaningful) with a full-shape scale, for its dscale."""
    xhat = (x - mean) * rstd
    if SCALE_FULL:
        u = xhat * w[:, None] + bias[:, None]
        one_plus = 1.0 + _full_tile(SCALE, b, ch, s, mask, ssb, ssc, sss)
    else:
        u = xhat
    dz = dy
    if SILU:  # silu'(z) = sig(z) (1 + z (1 - sig(z))); z recomputed as in the forward
        if SCALE_FULL:
            z = u * one_plus + shift_c[:, None]
        else:
            z = xhat * gain[:, None] + beta[:, None]
        if SHIFT_FULL:
            z += _full_tile(SHIFT, b, ch, s, mask, shb, shc, shs)
        sig = 1.0 / (1.0 + tl.exp(-z))
        dz = dz * sig * (1.0 + z * (1.0 - sig))
    dz = tl.where(mask, dz, 0.0)
    if SCALE_FULL:
        du = dz * one_plus
    else:
        du = dz
    return xhat, dz, du, u


@jit
def _gn_bwd_kernel(X, DY, DX, W, BIAS, SCALE, SHIFT, MEAN, RSTD, DSCALE, DSHIFT, DW_PART, DB_PART,
                   C, S, G, CG, sxb, sxc, sxs, sdyb, sdyc, sdys, sdxb, sdxc, sdxs,
                   ssb, ssc, sss, shb, shc, shs, sdsb, sdsc, sdss, sdhb, sdhc, sdhs, inv_n,
                   HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_SCALE: tl.constexpr,
                   HAS_SHIFT: tl.constexpr, SCALE_FULL: tl.constexpr, SHIFT_FULL: tl.constexpr,
                   SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, ONE_PASS: tl.constexpr):
    # Notation: xhat = (x - mean) rstd, u = xhat w + bias (GroupNorm's output),
    # z = u (1 + scale) + shift, y = act(z); dz = dy act'(z), du = dz (1 + scale). Per channel c
    # of sample b, with sums over its positions s:
    #   A_c = sum_s du xhat, B_c = sum_s du;  dweight_b = A_c, dbias_b = B_c (summed over b later)
    #   dx = rstd (w du - mean_g(w du) - xhat mean_g(w du xhat))
    #   full-shape: dshift = dz, dscale = dz u (element-wise)
    #   per-channel: dshift = sum_s dz, dscale = sum_s dz u = w sum_s dz xhat + bias sum_s dz
    # With a per-channel scale, (1 + scale) is constant over s: the sweeps sum dz (not du) and
    # the factor is applied to the sums, with gain = w (1 + scale) in dx.
    pid = tl.program_id(0)
    b = pid // G
    g = pid % G
    c = tl.arange(0, BLOCK_C)
    c_ok = c < CG
    ch = g * CG + c
    s0 = tl.arange(0, BLOCK_S)
    x_rows = X + b * sxb + ch[:, None] * sxc
    dy_rows = DY + b * sdyb + ch[:, None] * sdyc
    dx_rows = DX + b * sdxb + ch[:, None] * sdxc
    mean = tl.load(MEAN + pid)
    rstd = tl.load(RSTD + pid)

    one_plus = tl.full([BLOCK_C], 1.0, tl.float32)  # per-channel scale only (else 1)
    if HAS_SCALE:
        if not SCALE_FULL:
            one_plus += tl.load(SCALE + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)
    w = tl.full([BLOCK_C], 1.0, tl.float32)
    if HAS_W:
        w = tl.load(W + ch, mask=c_ok, other=1.0).to(tl.float32)
    bias = tl.full([BLOCK_C], 0.0, tl.float32)
    if HAS_B:
        bias = tl.load(BIAS + ch, mask=c_ok, other=0.0).to(tl.float32)
    gain = w * one_plus
    beta = bias * one_plus
    shift_c = tl.full([BLOCK_C], 0.0, tl.float32)
    if HAS_SHIFT:
        if not SHIFT_FULL:
            if SCALE_FULL:
                shift_c = tl.load(SHIFT + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)
            else:
                beta += tl.load(SHIFT + b * C + ch, mask=c_ok, other=0.0).to(tl.float32)

    # --- sweep 1: per-channel sums a_c = sum du xhat, b_c = sum du (d_c = sum dz: the
    # per-channel dshift beside a full-shape scale)
    d_c = tl.full([BLOCK_C], 0.0, tl.float32)
    if ONE_PASS:
        mask = c_ok[:, None] & (s0[None, :] < S)
        x = tl.load(x_rows + s0[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_rows + s0[None, :] * sdys, mask=mask, other=0.0).to(tl.float32)
        xhat, dz, du, u = _gn_bwd_tile(x, dy, mask, mean, rstd, w, bias, gain, beta, shift_c, SCALE, SHIFT,
                                       b, ch, s0, ssb, ssc, sss, shb, shc, shs, SCALE_FULL, SHIFT_FULL, SILU)
        a_c = tl.sum(du * xhat, 1)
        b_c = tl.sum(du, 1)
        if SCALE_FULL:
            d_c = tl.sum(dz, 1)
    else:
        a_c = tl.full([BLOCK_C], 0.0, tl.float32)
        b_c = tl.full([BLOCK_C], 0.0, tl.float32)
        for start in range(0, S, BLOCK_S):
            s = start + s0
            mask = c_ok[:, None] & (s[None, :] < S)
            x = tl.load(x_rows + s[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_rows + s[None, :] * sdys, mask=mask, other=0.0).to(tl.float32)
            xhat, dz, du, u = _gn_bwd_tile(x, dy, mask, mean, rstd, w, bias, gain, beta, shift_c, SCALE, SHIFT,
                                           b, ch, s, ssb, ssc, sss, shb, shc, shs, SCALE_FULL, SHIFT_FULL, SILU)
            a_c += tl.sum(du * xhat, 1)
            b_c += tl.sum(du, 1)
            if SCALE_FULL:
                d_c += tl.sum(dz, 1)

    # --- group means for dx (padding channels have a_c = b_c = 0)
    c1 = tl.sum(gain * b_c) * inv_n
    c2 = tl.sum(gain * a_c) * inv_n

    # --- sweep 2: dx (and the full-shape dscale, dshift)
    if ONE_PASS:
        dx = (gain[:, None] * du - c1 - xhat * c2) * rstd
        tl.store(dx_rows + s0[None, :] * sdxs, dx.to(DX.dtype.element_ty), mask=mask)
        if SCALE_FULL:
            ds = dz * u
            tl.store(DSCALE + b * sdsb + ch[:, None] * sdsc + s0[None, :] * sdss, ds.to(DSCALE.dtype.element_ty),
                     mask=mask)
        if SHIFT_FULL:
            tl.store(DSHIFT + b * sdhb + ch[:, None] * sdhc + s0[None, :] * sdhs, dz.to(DSHIFT.dtype.element_ty),
                     mask=mask)
    else:
        for start in range(0, S, BLOCK_S):
            s = start + s0
            mask = c_ok[:, None] & (s[None, :] < S)
            x = tl.load(x_rows + s[None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_rows + s[None, :] * sdys, mask=mask, other=0.0).to(tl.float32)
            xhat, dz, du, u = _gn_bwd_tile(x, dy, mask, mean, rstd, w, bias, gain, beta, shift_c, SCALE, SHIFT,
                                           b, ch, s, ssb, ssc, sss, shb, shc, shs, SCALE_FULL, SHIFT_FULL, SILU)
            dx = (gain[:, None] * du - c1 - xhat * c2) * rstd
            tl.store(dx_rows + s[None, :] * sdxs, dx.to(DX.dtype.element_ty), mask=mask)
            if SCALE_FULL:
                ds = dz * u
                tl.store(DSCALE + b * sdsb + ch[:, None] * sdsc + s[None, :] * sdss,
                         ds.to(DSCALE.dtype.element_ty), mask=mask)
            if SHIFT_FULL:
                tl.store(DSHIFT + b * sdhb + ch[:, None] * sdhc + s[None, :] * sdhs,
                         dz.to(DSHIFT.dtype.element_ty), mask=mask)

    # --- per-(b, c) parameter gradients (fp32, (B, C) contiguous)
    if HAS_SHIFT:
        if not SHIFT_FULL:
            if SCALE_FULL:
                tl.store(DSHIFT + b * C + ch, d_c, mask=c_ok)
            else:
                tl.store(DSHIFT + b * C + ch, b_c, mask=c_ok)
    if HAS_SCALE:
        if not SCALE_FULL:
            tl.store(DSCALE + b * C + ch, w * a_c + bias * b_c, mask=c_ok)
    if HAS_W:
        tl.store(DW_PART + b * C + ch, one_plus * a_c, mask=c_ok)
    if HAS_B:
        tl.store(DB_PART + b * C + ch, one_plus * b_c, mask=c_ok)


# =============================================================================================
# Launch helpers
# =============================================================================================

def _as_bcs(t: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B, C, S) without a copy where the spatial strides merge (NCHW,
    channels-last, expanded gradients); a contiguous copy otherwise."""
    B, C = t.shape[:2]
    S = math.prod(t.shape[2:])
    try:
        return t.view(B, C, S)
    except RuntimeError:
        return t.contiguous().view(B, C, S)


def _new_output_bcs(x: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An output shaped like x (same memory format where possible) and its (B, C, S) view."""
    out = new_output_like(x, dtype)
    try:
        return out, out.view(*x.shape[:2], -1)
    except RuntimeError:  # a layout whose spatial dims do not merge: write a contiguous output
        out = new_output(x.shape, dtype or x.dtype, x.device)
        return out, out.view(*x.shape[:2], -1)


def _tile(cg: int, s: int, backward: bool, full: bool = False) -> tuple[int, int, bool, int]:
    """(BLOCK_C, BLOCK_S, ONE_PASS, num_warps) for groups of cg channels x s positions; full:
    with full-shape scale/shift (their tiles and pointers are live beside x's: up to four times
    the warps for the same tile, so that no variant spills registers on sm_80 / sm_90 in any
    dtype; `python -m vidm.kernels.compile_check`)."""
    fused_max, chunk = (FUSED_MAX_BWD, CHUNK_BWD) if backward else (FUSED_MAX, CHUNK)
    block_c = next_pow2(cg)
    if block_c * next_pow2(s) <= fused_max:
        block_s, one_pass = next_pow2(s), True
    else:
        block_s, one_pass = max(1, chunk // block_c), False
    per_thread = (8 if backward else 16) // (4 if full else 1)  # fp32 elements of a tile per thread
    warps = min(16, max(4, block_c * block_s // (32 * per_thread)))
    return block_c, block_s, one_pass, warps


def _dummy(x: torch.Tensor) -> torch.Tensor:
    return x  # pointer for an absent optional input; the kernel never reads it (constexpr flag)


def _is_full(t: torch.Tensor | None, x: torch.Tensor) -> bool:
    """Is this scale/shift per position (x's full shape) rather than per (sample, channel)?"""
    return t is not None and t.ndim == x.ndim and x.ndim > 2


def _mod_args(t: torch.Tensor | None, x: torch.Tensor):
    """(pointer operand, (b, c, s) strides) of a scale/shift: its (B, C, S) view when full-shape;
    else the contiguous (B, C) tensor (strides unused) or a dummy."""
    if _is_full(t, x):
        t3 = _as_bcs(t)
        return t3, t3.stride()
    return (t if t is not None else _dummy(x)), (0, 0, 0)


def _forward(x, num_groups, weight, bias, scale, shift, silu: bool, eps: float):
    B, C = x.shape[:2]
    G = num_groups
    x3 = _as_bcs(x)  # (B, C, S)
    S = x3.shape[2]
    y, y3 = _new_output_bcs(x)
    mean = new_output((B * G,), torch.float32, x.device)
    rstd = new_output((B * G,), torch.float32, x.device)
    (sc, sc_st), (sh, sh_st) = _mod_args(scale, x), _mod_args(shift, x)
    block_c, block_s, one_pass, warps = _tile(C // G, S, False, _is_full(scale, x) or _is_full(shift, x))
    _gn_fwd_kernel[(B * G,)](
        x3, y3, weight if weight is not None else _dummy(x), bias if bias is not None else _dummy(x), sc, sh,
        mean, rstd, C, S, G, C // G, *x3.stride(), *y3.stride(), *sc_st, *sh_st, 1.0 / (C // G * S), eps,
        HAS_W=weight is not None, HAS_B=bias is not None, HAS_SCALE=scale is not None,
        HAS_SHIFT=shift is not None, SCALE_FULL=_is_full(scale, x), SHIFT_FULL=_is_full(shift, x),
        SILU=silu, BLOCK_C=block_c, BLOCK_S=block_s, ONE_PASS=one_pass, num_warps=warps)
    return y, mean, rstd


def _backward(dy, x, num_groups, weight, bias, scale, shift, mean, rstd, silu: bool):
    B, C = x.shape[:2]
    G = num_groups
    x3 = _as_bcs(x)
    S = x3.shape[2]
    dy3 = _as_bcs(dy)
    dx, dx3 = _new_output_bcs(x)
    (sc, sc_st), (sh, sh_st) = _mod_args(scale, x), _mod_args(shift, x)

    def grad_of(t):  # (full output, its (B, C, S) view) in t's dtype, or fp32 (B, C) sums, or a dummy
        if t is None:
            return None, _dummy(x)
        if _is_full(t, x):
            return _new_output_bcs(t)
        g = new_output((B, C), torch.float32, x.device)
        return g, g

    dscale, ds3 = grad_of(scale)
    dshift, dh3 = grad_of(shift)
    need = lambda t: new_output((B, C), torch.float32, x.device) if t is not None else _dummy(x)  # noqa: E731
    dw_part, db_part = need(weight), need(bias)
    ds_st = ds3.stride() if _is_full(scale, x) else (0, 0, 0)
    dh_st = dh3.stride() if _is_full(shift, x) else (0, 0, 0)
    block_c, block_s, one_pass, warps = _tile(C // G, S, True, _is_full(scale, x) or _is_full(shift, x))
    _gn_bwd_kernel[(B * G,)](
        x3, dy3, dx3, weight if weight is not None else _dummy(x), bias if bias is not None else _dummy(x), sc, sh,
        mean, rstd, ds3, dh3, dw_part, db_part,
        C, S, G, C // G, *x3.stride(), *dy3.stride(), *dx3.stride(), *sc_st, *sh_st, *ds_st, *dh_st,
        1.0 / (C // G * S),
        HAS_W=weight is not None, HAS_B=bias is not None, HAS_SCALE=scale is not None,
        HAS_SHIFT=shift is not None, SCALE_FULL=_is_full(scale, x), SHIFT_FULL=_is_full(shift, x),
        SILU=silu, BLOCK_C=block_c, BLOCK_S=block_s, ONE_PASS=one_pass, num_warps=warps)
    dweight = dw_part.sum(0).to(weight.dtype) if weight is not None else None
    dbias = db_part.sum(0).to(bias.dtype) if bias is not None else None
    # per-channel sums were taken in fp32; full-shape gradients were written in their own dtype
    dscale = dscale.to(scale.dtype) if scale is not None else None
    dshift = dshift.to(shift.dtype) if shift is not None else None
    return dx, dweight, dbias, dscale, dshift


# =============================================================================================
# Torch versions: the reference (tests) and the fallback (also the "eager" benchmark provider)
# =============================================================================================

def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    # (C,) or (B, C) -> broadcastable against (B, C, *spatial); a full-shape tensor is unchanged
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def group_norm_reference(x, num_groups, weight=None, bias=None, scale=None, shift=None, act=None,
                         eps: float = 1e-5, compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The definition, written out in plain torch ops in `compute_dtype` (float64 for tests)."""
    B, C = x.shape[:2]
    cast = lambda t: None if t is None else t.to(compute_dtype)  # noqa: E731
    x, weight, bias, scale, shift = map(cast, (x, weight, bias, scale, shift))
    xg = x.reshape(B, num_groups, -1)  # (B, G, C/G * S)
    mean = xg.mean(-1, keepdim=True)
    var = xg.var(-1, unbiased=False, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * _per_channel(weight, x.ndim - 1)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim - 1)
    if scale is not None:
        y = y * (1 + _per_channel(scale, x.ndim))
    if shift is not None:
        y = y + _per_channel(shift, x.ndim)
    return F.silu(y) if act == "silu" else y


def _as_operand(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    t = t if t.ndim == y.ndim else _per_channel(t, y.ndim)
    return t if t.dtype == y.dtype else t.to(y.dtype)


def group_norm_torch(x, num_groups, weight=None, bias=None, scale=None, shift=None, act=None,
                     eps: float = 1e-5) -> torch.Tensor:
    """The fallback: torch's group_norm, then the modulation and activation as separate ops,
    each working in place on a tensor this function made where autograd allows it (on a CPU
    the allocations cost as much as the arithmetic). It computes the plain chain
    `silu(group_norm(x) * (1 + scale) + shift)` bit for bit, except for a full-shape scale
    without autograd: y + y * scale there, one pass and one full-size temporary fewer than
    y * (1 + scale) (equal to rounding; exact for scale 0)."""
    # Parameters follow x's dtype: torch's CUDA group_norm wants one dtype for all three.
    if weight is not None and weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    y = F.group_norm(x, num_groups, weight, bias, eps)
    # (B, C) -> (B, C, 1, ...); a full-shape one as it is (no extra autograd node on the way)
    scale, shift = (t if t is None else _as_operand(t, y) for t in (scale, shift))
    if not torch.is_grad_enabled() or not (y.requires_grad or (scale is not None and scale.requires_grad)
                                           or (shift is not None and shift.requires_grad)):
        if scale is not None and scale.shape == y.shape:
            y.addcmul_(y, scale)
        elif scale is not None:  # (B, C, 1, ...): 1 + scale is small; the same op as the chain's
            y.mul_(1 + scale)
        if shift is not None:
            y.add_(shift)
        return F.silu(y, inplace=True) if act == "silu" else y
    # With autograd: mul saves y (for dscale), so it writes a new tensor; add saves nothing, so
    # it works in place on mul's result. silu saves its input: a new tensor.
    if scale is not None:
        y = y * (1 + scale)
        if shift is not None:
            y.add_(shift)
    elif shift is not None:
        y = y + shift
    return F.silu(y) if act == "silu" else y


# =============================================================================================
# Shape guards, autograd.Function, dispatch
# =============================================================================================

def check_group_norm_inputs(x, num_groups, weight, bias, scale, shift, act) -> None:
    """Guards every provider shares: ShapeError for tensors, ConfigError for `act`.

    Shapes: weight, bias (C,); scale, shift each (B, C) or x's full shape (module docstring)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"group_norm: x must be (B, C, *spatial), got {shape}")
    if not x.is_floating_point():
        raise ShapeError(f"group_norm: x must be floating point, got {x.dtype}")
    B, C = x.shape[:2]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups <= 0:
        raise ShapeError(f"group_norm: num_groups must be a positive int, got {num_groups!r}")
    if C % num_groups:
        raise ShapeError(f"group_norm: channels C={C} are not divisible by num_groups={num_groups}")
    full = tuple(x.shape)
    for name, t, shapes in (("weight", weight, [(C,)]), ("bias", bias, [(C,)]),
                            ("scale", scale, [(B, C), full]), ("shift", shift, [(B, C), full])):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) not in shapes:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            want = f"{shapes[0]}" if len(shapes) == 1 else f"(B, C) = {shapes[0]} or x's shape {full}"
            raise ShapeError(f"group_norm: {name} must have shape {want}, got {got}")
        if not t.is_floating_point():
            raise ShapeError(f"group_norm: {name} must be floating point, got {t.dtype}")
        if t.device != x.device:
            raise ShapeError(f"group_norm: {name} is on {t.device}, x on {x.device}")
    if act not in ACTS:
        raise ConfigError(f"group_norm: act must be None or 'silu', got {act!r}")


def triton_unsupported(x, scale=None, shift=None) -> str | None:
    """Why the Triton kernel cannot take this (valid) input, or None if it can."""
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} is not fp16, bf16 or fp32"
    if x.numel() == 0:
        return "empty tensor"
    if not int32_addressable(x) or x.numel() >= 2**31:
        return "tensor too large for int32 offsets"
    for name, t in (("scale", scale), ("shift", shift)):
        if _is_full(t, x):
            if t.dtype not in DTYPES:
                return f"full-shape {name} of dtype {t.dtype} is not fp16, bf16 or fp32"
            if not int32_addressable(t):
                return f"full-shape {name} too large for int32 offsets"
    return None


class TritonGroupNorm(torch.autograd.Function):
    """Fused GroupNorm + modulation + activation, forward and backward."""

    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, scale, shift, act, eps):
        check_group_norm_inputs(x, num_groups, weight, bias, scale, shift, act)
        why = triton_unsupported(x, scale, shift)
        if why is not None:
            raise ShapeError(f"group_norm (triton): {why}")
        require_triton("group_norm", x.device)
        # Small per-channel inputs: make them contiguous so the kernel can index b * C + c.
        # Full-shape scale/shift keep their strides (the kernel reads them through strides).
        weight, bias = (None if t is None else t.contiguous() for t in (weight, bias))
        scale, shift = (t if t is None or _is_full(t, x) else t.contiguous() for t in (scale, shift))
        y, mean, rstd = _forward(x, num_groups, weight, bias, scale, shift, act == "silu", float(eps))
        ctx.save_for_backward(x, weight, bias, scale, shift, mean, rstd)
        ctx.num_groups, ctx.silu = num_groups, act == "silu"
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, scale, shift, mean, rstd = ctx.saved_tensors
        dx, dweight, dbias, dscale, dshift = _backward(dy, x, ctx.num_groups, weight, bias, scale, shift,
                                                       mean, rstd, ctx.silu)
        return dx, None, dweight, dbias, dscale, dshift, None, None


def group_norm_triton(x, num_groups, weight=None, bias=None, scale=None, shift=None, act=None,
                      eps: float = 1e-5) -> torch.Tensor:
    """The Triton kernels directly (no dispatch)."""
    return TritonGroupNorm.apply(x, num_groups, weight, bias, scale, shift, act, eps)


def group_norm_provider(x, scale=None, shift=None) -> str:
    """Which implementation `group_norm` will use: "triton" or "torch".

    VIDM_KERNELS=torch -> torch; =triton -> triton (raises where it cannot run); =auto (default)
    -> triton for CUDA tensors Triton supports, else torch.
    """
    return choose_provider(kernel_mode(), is_cuda=x.device.type == "cuda",
                           triton_ok=HAS_TRITON and triton_runs_on(x.device),
                           shape_ok=triton_unsupported(x, scale, shift) is None, fallbacks=("torch",))


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
               scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
               act: str | None = None, eps: float = 1e-5) -> torch.Tensor:
    """y = act(GroupNorm(x) * (1 + scale) + shift).

    x: (B, C, *spatial), e.g. (B, C, H, W) or (B, C, T, H, W), any memory format; weight, bias:
    (C,) or None; scale, shift: each None, (B, C) (per sample) or x's full shape (per position;
    no other broadcasting: see the module docstring); act: None or "silu". The implementation
    is picked by `group_norm_provider`.
    """
    check_group_norm_inputs(x, num_groups, weight, bias, scale, shift, act)
    if group_norm_provider(x, scale, shift) == "triton":
        return group_norm_triton(x, num_groups, weight, bias, scale, shift, act, eps)
    return group_norm_torch(x, num_groups, weight, bias, scale, shift, act, eps)
