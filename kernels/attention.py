"""Fused attention o = softmax(q k^T * scale) v for q, k, v of shape (B, H, N, D).

FlashAttention-2 (Dao, 2023) in Triton: the N x N score matrix never reaches memory. Each
program owns a block of query rows, streams key/value blocks through on-chip memory and keeps
an online softmax in fp32 (running max m, running sum l, rescaled accumulator). The forward
saves the per-row log-sum-exp, so the backward can rebuild P = exp(S - lse) block by block
and compute dq, dk, dv without storing P. Unlike the Triton tutorial, the backward works for
non-causal attention and any sequence length (tails are masked, not required to be block
multiples).

A second pair of kernels serves short sequences (N <= 32: temporal attention over frames, with
B*H = batch x height x width x heads in the hundreds of thousands). A sequence of 16 frames
would fill a quarter of a 64-row tile; instead several sequences are packed densely into one
tile and a block-diagonal mask keeps them apart. The wasted dot products are cheap: this case
is bound by memory traffic, not by tensor-core FLOPs.

Contents: Triton kernels; `attention_reference` (pure torch, any compute dtype);
`attention_torch` (SDPA) and `attention_xformers` fallbacks; `TritonAttention`
(autograd.Function, shape guards raise ShapeError); `attention_provider` (dispatch predicate)
and `attention` (the entry point vidm's models use). Benchmark: `vidm bench kernels`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ._common import (HAS_TRITON, INTERPRET, cdiv, choose_provider, has_xformers, int32_addressable,
                      jit, kernel_mode, new_output, require_triton, tl, triton_runs_on)
from vidm.errors import ShapeError

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SHORT_MAX = 32  # sequences up to this length take the packed short-sequence kernels
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the cheaper instruction


# =============================================================================================
# Triton kernels. Conventions: one (batch, head) pair is `bh` = b * H + h; q/k/v/o/do rows
# are addressed through their batch, head and sequence strides (the head dim is contiguous);
# LSE and DELTA are contiguous (B*H, N) fp32. LSE is stored in base 2: lse2 = log2(sum_j
# exp2(s_ij * scale * log2 e)), so P = exp2(s * qk_scale - lse2) with qk_scale = scale * log2 e.
# =============================================================================================

@jit
def _attn_fwd_kernel(Q, K, V, O, LSE, qk_scale, H, N_Q, N_KV,
                     sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    # grid: (cdiv(N_Q, BLOCK_M) * B * H,). One program = BLOCK_M query rows of one (b, h).
    # A 1-D grid (a 2-D one caps B*H at 65535) with the query blocks of one (b, h) adjacent,
    # so programs running together share that head's k and v in L2.
    num_m = (N_Q + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0) % num_m
    bh = tl.program_id(0) // num_m
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols0 = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    row_ok = rows < N_Q  # masked tail: the last block may run past N_Q
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max (base-2 units)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)  # running row sum of exp2(s - m_i)
    acc = tl.full([BLOCK_M, HEAD_DIM], 0.0, tl.float32)  # running un-normalised output
    hi = N_KV
    if CAUSAL:  # key blocks entirely right of this block's last row contribute nothing
        hi = tl.minimum(N_KV, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + cols0
        col_ok = cols < N_KV
        kT = tl.load(k_base + cols[None, :] * skn + d[:, None], mask=col_ok[None, :], other=0.0)  # (D, BLOCK_N)
        s = tl.dot(q, kT, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) fp32
        ok = col_ok[None, :]
        if CAUSAL:
            ok = ok & (cols[None, :] <= rows[:, None])
        s = tl.where(ok, s, float("-inf"))
        # Every row sees at least key 0 in the first block, so m_new is finite from then on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old max
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * svn + d[None, :], mask=col_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + rows[:, None] * son + d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + bh * N_Q + rows, m_i + tl.log2(l_i), mask=row_ok)


@jit
def _attn_bwd_delta_kernel(O, DO, DELTA, H, N_Q, sob, soh, son, sdb, sdh, sdn,
                           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = sum_d o_id * do_id = sum_j P_ij dP_ij: the softmax backward's row term.
    # grid: (cdiv(N_Q, BLOCK_M) * B * H,), laid out as in the forward.
    num_m = (N_Q + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0) % num_m
    bh = tl.program_id(0) // num_m
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    row_ok = rows < N_Q
    o = tl.load(O + b * sob + h * soh + rows[:, None] * son + d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdn + d[None, :], mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * N_Q + rows, delta, mask=row_ok)


@jit
def _attn_bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, qk_scale, sm_scale, H, N_Q, N_KV,
                          sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                          sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
                          HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    # grid: (cdiv(N_KV, BLOCK_N) * B * H,). One program owns BLOCK_N keys and sweeps all query
    # blocks, so dk and dv are summed on chip and written once (no atomics).
    num_n = (N_KV + BLOCK_N - 1) // BLOCK_N
    pid_n = tl.program_id(0) % num_n
    bh = tl.program_id(0) // num_n
    b = bh // H
    h = bh % H
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows0 = tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    col_ok = cols < N_KV
    k = tl.load(K + b * skb + h * skh + cols[:, None] * skn + d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + cols[:, None] * svn + d[None, :], mask=col_ok[:, None], other=0.0)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    dk = tl.full([BLOCK_N, HEAD_DIM], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, HEAD_DIM], 0.0, tl.float32)
    lo = 0
    if CAUSAL:  # query rows above this block's first key never see it
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start_m in range(lo, N_Q, BLOCK_M):
        rows = start_m + rows0
        row_ok = rows < N_Q
        q = tl.load(q_base + rows[:, None] * sqn + d[None, :], mask=row_ok[:, None], other=0.0)
        do = tl.load(do_base + rows[:, None] * sdn + d[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(LSE + bh * N_Q + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * N_Q + rows, mask=row_ok, other=0.0)
        # Work with transposed scores sT = k q^T (BLOCK_N, BLOCK_M) so that dv = pT do and
        # dk = dsT q are plain dots.
        sT = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        ok = col_ok[:, None] & row_ok[None, :]
        if CAUSAL:
            ok = ok & (cols[:, None] <= rows[None, :])
        pT = tl.where(ok, tl.exp2(sT - lse[None, :]), 0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])  # softmax backward: dS = P * (dP - delta)
        dk += tl.dot(dsT.to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale  # S = scale * q k^T
    tl.store(DK + b * sdkb + h * sdkh + cols[:, None] * sdkn + d[None, :], dk.to(DK.dtype.element_ty),
             mask=col_ok[:, None])
    tl.store(DV + b * sdvb + h * sdvh + cols[:, None] * sdvn + d[None, :], dv.to(DV.dtype.element_ty),
             mask=col_ok[:, None])


@jit
def _attn_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, qk_scale, sm_scale, H, N_Q, N_KV,
                        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sdqb, sdqh, sdqn,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    # grid: (cdiv(N_Q, BLOCK_M) * B * H,). One program owns BLOCK_M query rows and sweeps the
    # keys, recomputing P from the saved lse.
    num_m = (N_Q + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0) % num_m
    bh = tl.program_id(0) // num_m
    b = bh // H
    h = bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols0 = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    row_ok = rows < N_Q
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sdn + d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * N_Q + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * N_Q + rows, mask=row_ok, other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    dq = tl.full([BLOCK_M, HEAD_DIM], 0.0, tl.float32)
    hi = N_KV
    if CAUSAL:
        hi = tl.minimum(N_KV, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + cols0
        col_ok = cols < N_KV
        k = tl.load(k_base + cols[:, None] * skn + d[None, :], mask=col_ok[:, None], other=0.0)
        v = tl.load(v_base + cols[:, None] * svn + d[None, :], mask=col_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        ok = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            ok = ok & (cols[None, :] <= rows[:, None])
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + b * sdqb + h * sdqh + rows[:, None] * sdqn + d[None, :], dq.to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


@jit
def _attn_short_fwd_kernel(Q, K, V, O, LSE, qk_scale, H, BH, N, SEQS,
                           sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                           HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, CAUSAL: tl.constexpr,
                           PRECISION: tl.constexpr):
    # grid: (cdiv(B * H, SEQS),). One program = SEQS whole sequences of length N <= BLOCK,
    # packed densely: tile row r is position r % N of the program's sequence r // N. Rows of
    # contiguous inputs are then contiguous in memory too, so the loads stay coalesced.
    r = tl.arange(0, BLOCK)
    seq = r // N
    pos = r % N
    bh = tl.program_id(0) * SEQS + seq
    row_ok = (seq < SEQS) & (bh < BH)
    b = bh // H
    h = bh % H
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + (b * sqb + h * sqh + pos * sqn)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    k = tl.load(K + (b * skb + h * skh + pos * skn)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    v = tl.load(V + (b * svb + h * svh + pos * svn)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # all row pairs of the tile
    ok = (seq[:, None] == seq[None, :]) & row_ok[None, :]  # block-diagonal: same sequence only
    if CAUSAL:
        ok = ok & (pos[None, :] <= pos[:, None])
    s = tl.where(ok, s, float("-inf"))
    # The whole sequence is in the tile: an exact softmax, no online rescaling. Padding rows
    # see no key at all; give them m = 0, l = 1 so they stay finite (they are not stored).
    m = tl.where(row_ok, tl.max(s, 1), 0.0)
    p = tl.exp2(s - m[:, None])
    l = tl.where(row_ok, tl.sum(p, 1), 1.0)
    o = tl.dot(p.to(v.dtype), v, input_precision=PRECISION) / l[:, None]
    tl.store(O + (b * sob + h * soh + pos * son)[:, None] + d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + bh * N + pos, m + tl.log2(l), mask=row_ok)


@jit
def _attn_short_bwd_kernel(Q, K, V, O, DO, LSE, DQ, DK, DV, qk_scale, sm_scale, H, BH, N, SEQS,
                           sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdb, sdh, sdn,
                           sgb, sgh, sgn,
                           HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, CAUSAL: tl.constexpr,
                           PRECISION: tl.constexpr):
    # Same packing as the forward; every gradient of a packed sequence is finished inside the
    # program (dq, dk and dv are each written once, no atomics, delta computed in place).
    # dq, dk, dv are freshly allocated contiguous tensors and share the strides sg*.
    r = tl.arange(0, BLOCK)
    seq = r // N
    pos = r % N
    bh = tl.program_id(0) * SEQS + seq
    row_ok = (seq < SEQS) & (bh < BH)
    b = bh // H
    h = bh % H
    d = tl.arange(0, HEAD_DIM)
    q_off = (b * sqb + h * sqh + pos * sqn)[:, None] + d[None, :]
    k_off = (b * skb + h * skh + pos * skn)[:, None] + d[None, :]
    v_off = (b * svb + h * svh + pos * svn)[:, None] + d[None, :]
    q = tl.load(Q + q_off, mask=row_ok[:, None], other=0.0)
    k = tl.load(K + k_off, mask=row_ok[:, None], other=0.0)
    v = tl.load(V + v_off, mask=row_ok[:, None], other=0.0)
    o = tl.load(O + (b * sob + h * soh + pos * son)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + (b * sdb + h * sdh + pos * sdn)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * N + pos, mask=row_ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)

    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    ok = (seq[:, None] == seq[None, :]) & row_ok[None, :] & row_ok[:, None]
    if CAUSAL:
        ok = ok & (pos[None, :] <= pos[:, None])
    p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
    dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = p * (dp - delta[:, None])
    dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION) * sm_scale
    dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION) * sm_scale
    g_off = (b * sgb + h * sgh + pos * sgn)[:, None] + d[None, :]
    tl.store(DQ + g_off, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=row_ok[:, None])
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=row_ok[:, None])


# =============================================================================================
# Launch helpers
# =============================================================================================

def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs get exact fp32 dots ("ieee", what the interpreter does too) rather than TF32,
    # whose 10-bit mantissa would break the fp32 accuracy a caller asked for by passing fp32.
    return "ieee" if dtype == torch.float32 else "tf32"


# Launch configurations, fixed rather than autotuned (no hardware to tune on when they were
# written). Chosen so that the kernels do not spill registers on sm_90 (H100) and sm_80
# (A100): every variant was compiled with Triton's backend for each and checked with
# `ptxas -v`, which needs no GPU. (Exceptions: a few fp32 variants spill 4-1128 bytes.)
# fp32 inputs use exact fp32 dots (no tensor cores), which need smaller tiles; `arch` is the
# CUDA compute capability as major * 10 + minor.

def _general_config(head_dim: int, dtype: torch.dtype, backward: bool, arch: int = 90) -> dict:
    """(BLOCK_M, BLOCK_N, num_warps) of the online-softmax kernels."""
    if dtype == torch.float32:
        if backward:
            return dict(BLOCK_M=32, BLOCK_N=32 if head_dim <= 64 else 16, num_warps=8)
        if arch < 90 and head_dim > 64:
            return dict(BLOCK_M=32, BLOCK_N=32, num_warps=8)
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4 if head_dim <= 32 else 8)
    if backward:
        if arch < 90 and 32 <= head_dim <= 64:
            return dict(BLOCK_M=64, BLOCK_N=32, num_warps=8)
        return dict(BLOCK_M=64, BLOCK_N=64 if head_dim <= 64 else 32, num_warps=4 if head_dim <= 32 else 8)
    return dict(BLOCK_M=128, BLOCK_N=64 if head_dim <= 64 else 32, num_warps=4 if head_dim <= 32 else 8)


def _short_configs(head_dim: int, dtype: torch.dtype, backward: bool, arch: int = 90) -> tuple:
    """Candidate (BLOCK, num_warps) of the packed short-sequence kernels; () = no short path
    for this head dim / dtype (its register footprint would spill: the general kernels run)."""
    if dtype == torch.float32:
        if backward:
            return ((32, 4),) if head_dim <= 32 else ()
        return ((64, 4 if arch >= 90 else 8),) if head_dim <= 32 else ()
    if backward:
        if head_dim > 64:
            return ()
        if arch < 90 and head_dim == 64:
            return ((32, 4),)
        return ((64, 4 if head_dim <= 32 else 8),)
    if head_dim <= 32:
        return ((64, 4), (128, 8))
    return ((64, 4 if arch >= 90 else 8),) if head_dim <= 64 else ((32, 8),)


def _short_config(n: int, head_dim: int, dtype: torch.dtype, backward: bool, arch: int = 90):
    """The candidate (BLOCK, num_warps) that wastes the fewest tile rows on N-row sequences
    (smaller on ties), or None."""
    fits = [c for c in _short_configs(head_dim, dtype, backward, arch) if c[0] >= n]
    if not fits:
        return None
    return max(fits, key=lambda c: ((c[0] // n) * n / c[0], -c[0]))


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return major * 10 + minor


def _arch(t: torch.Tensor) -> int:
    return _cuda_arch(t.device.index or 0) if t.device.type == "cuda" else 90  # interpreter: any


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _use_short(n_q: int, n_kv: int, head_dim: int, dtype: torch.dtype, backward: bool,
               short: bool | None, arch: int) -> tuple[int, int] | None:
    """(BLOCK, num_warps) of the packed path, or None for the general kernels.
    short: None = automatic; True = packed path even where it is not the fast choice (tests);
    False = never."""
    if short is False:
        return None
    if n_q != n_kv or n_q > SHORT_MAX:
        if short:
            raise ShapeError(f"attention: the short-sequence path needs N_q == N_kv <= {SHORT_MAX}, "
                             f"got {n_q} and {n_kv}")
        return None
    cfg = _short_config(n_q, head_dim, dtype, backward, arch)
    if cfg is None and short:  # forced: the smallest tile that holds the sequence
        cfg = (32 if n_q <= 32 and dtype == torch.float32 else 64, 4)
    return cfg


def _forward(q, k, v, scale: float, causal: bool, short: bool | None):
    B, H, N_Q, D = q.shape
    N_KV = k.shape[2]
    o = new_output((B, H, N_Q, D), q.dtype, q.device)
    lse = new_output((B * H, N_Q), torch.float32, q.device)
    common = dict(HEAD_DIM=D, CAUSAL=causal, PRECISION=_precision(q.dtype))
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(o))
    arch = _arch(q)
    cfg = _use_short(N_Q, N_KV, D, q.dtype, False, short, arch)
    if cfg is not None:
        block, warps = cfg
        seqs = block // N_Q  # whole sequences per program
        _attn_short_fwd_kernel[(cdiv(B * H, seqs),)](
            q, k, v, o, lse, scale * LOG2E, H, B * H, N_Q, seqs, *strides,
            BLOCK=block, num_warps=warps, **common)
    else:
        cfg = _general_config(D, q.dtype, backward=False, arch=arch)
        grid = (cdiv(N_Q, cfg["BLOCK_M"]) * B * H,)
        _attn_fwd_kernel[grid](q, k, v, o, lse, scale * LOG2E, H, N_Q, N_KV, *strides, **cfg, **common)
    return o, lse


def _backward(q, k, v, o, lse, do, scale: float, causal: bool, short: bool | None):
    B, H, N_Q, D = q.shape
    N_KV = k.shape[2]
    dq = new_output(q.shape, q.dtype, q.device)  # contiguous (B, H, N, D)
    dk = new_output(k.shape, k.dtype, k.device)
    dv = new_output(v.shape, v.dtype, v.device)
    common = dict(HEAD_DIM=D, CAUSAL=causal, PRECISION=_precision(q.dtype))
    arch = _arch(q)
    cfg = _use_short(N_Q, N_KV, D, q.dtype, True, short, arch)
    if cfg is not None:
        # The packing is free to differ from the forward's: lse is stored per (b, h, position).
        block, warps = cfg
        seqs = block // N_Q
        _attn_short_bwd_kernel[(cdiv(B * H, seqs),)](
            q, k, v, o, do, lse, dq, dk, dv, scale * LOG2E, scale, H, B * H, N_Q, seqs,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o), *_strides(do), *_strides(dq),
            BLOCK=block, num_warps=warps, **common)
        return dq, dk, dv
    delta = new_output((B * H, N_Q), torch.float32, q.device)
    _attn_bwd_delta_kernel[(cdiv(N_Q, 32) * B * H,)](o, do, delta, H, N_Q, *_strides(o), *_strides(do),
                                                  HEAD_DIM=D, BLOCK_M=32)
    cfg = _general_config(D, q.dtype, backward=True, arch=arch)
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    _attn_bwd_dkdv_kernel[(cdiv(N_KV, cfg["BLOCK_N"]) * B * H,)](
        q, k, v, do, lse, delta, dk, dv, scale * LOG2E, scale, H, N_Q, N_KV, *strides,
        *_strides(dk), *_strides(dv), **cfg, **common)
    _attn_bwd_dq_kernel[(cdiv(N_Q, cfg["BLOCK_M"]) * B * H,)](
        q, k, v, do, lse, delta, dq, scale * LOG2E, scale, H, N_Q, N_KV, *strides, *_strides(dq),
        **cfg, **common)
    return dq, dk, dv


# =============================================================================================
# Torch versions: the reference (tests, eager benchmark) and the fallbacks
# =============================================================================================

def attention_reference(q, k, v, scale: float | None = None, causal: bool = False,
                        compute_dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """softmax(q k^T * scale) v written out in plain torch ops, in `compute_dtype` (float64 for
    tests; None = the inputs' dtype, the "eager" benchmark provider). Returns compute_dtype."""
    if compute_dtype is not None:
        q, k, v = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * scale  # (B, H, N_q, N_kv)
    if causal:  # top-left aligned, as SDPA's is_causal: row i sees keys 0..i
        keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def attention_torch(q, k, v, scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """The fallback: torch's SDPA (flash / memory-efficient / math backend, torch's choice)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def attention_xformers(q, k, v, scale: float | None = None, causal: bool = False) -> torch.Tensor:
    """xformers' memory-efficient attention; it wants (B, N, H, D)."""
    import xformers.ops as xops

    bias = xops.LowerTriangularMask() if causal else None
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          attn_bias=bias, scale=scale)
    return out.transpose(1, 2)


# =============================================================================================
# Shape guards, autograd.Function, dispatch
# =============================================================================================

def check_attention_inputs(q, k, v) -> None:
    """Guards every provider shares: raise ShapeError on inputs no attention can take."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ShapeError(f"attention: {name} must be a 4-D tensor (B, H, N, D), got {shape}")
        if not t.is_floating_point():
            raise ShapeError(f"attention: {name} must be floating point, got {t.dtype}")
    if k.shape != v.shape:
        raise ShapeError(f"attention: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ShapeError(f"attention: q {tuple(q.shape)} and k {tuple(k.shape)} must agree in B, H and D")
    if not (q.dtype == k.dtype == v.dtype):
        raise ShapeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if not (q.device == k.device == v.device):
        raise ShapeError(f"attention: q, k, v devices differ ({q.device}, {k.device}, {v.device})")


def triton_unsupported(q, k, v) -> str | None:
    """Why the Triton kernel cannot take these (valid) inputs, or None if it can."""
    D = q.shape[-1]
    if D not in HEAD_DIMS:
        return f"head dim {D} is not one of {HEAD_DIMS}"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not fp16, bf16 or fp32"
    if q.dtype == torch.bfloat16 and INTERPRET and q.device.type != "cuda":
        return "bf16 needs a GPU (Triton's interpreter stores bf16 as uint16 and its dots come out wrong)"
    if q.numel() == 0 or k.shape[2] == 0:
        return "empty sequence"
    if not int32_addressable(q, k, v):
        return "tensors too large for int32 offsets"
    return None


def _head_contiguous(t: torch.Tensor) -> torch.Tensor:
    # The kernels address rows through strides but assume the head dim is contiguous.
    return t if t.stride(-1) == 1 else t.contiguous()


class TritonAttention(torch.autograd.Function):
    """Triton FlashAttention-2 forward and backward. Raises ShapeError on unsupported input."""

    @staticmethod
    def forward(ctx, q, k, v, scale, causal, short):
        check_attention_inputs(q, k, v)
        why = triton_unsupported(q, k, v)
        if why is not None:
            raise ShapeError(f"attention (triton): {why}")
        require_triton("attention", q.device)
        q, k, v = _head_contiguous(q), _head_contiguous(k), _head_contiguous(v)
        o, lse = _forward(q, k, v, scale, causal, short)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.scale, ctx.causal, ctx.short = scale, causal, short
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, _head_contiguous(do.to(o.dtype)), ctx.scale, ctx.causal,
                               ctx.short)
        return dq, dk, dv, None, None, None


def attention_triton(q, k, v, scale: float | None = None, causal: bool = False,
                     short: bool | None = None) -> torch.Tensor:
    """The Triton kernels directly (no dispatch). short: None = packed short-sequence path when
    N_q == N_kv <= 32; True/False force it (tests use this to cover both paths)."""
    check_attention_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return TritonAttention.apply(q, k, v, scale, bool(causal), short)


def attention_provider(q, k, v) -> str:
    """Which implementation `attention` will use: "triton", "xformers" or "sdpa".

    VIDM_KERNELS=torch -> sdpa; =triton -> triton (raises where it cannot run); =auto (default)
    -> triton for CUDA tensors Triton supports, else xformers (installed, CUDA), else sdpa.
    """
    is_cuda = q.device.type == "cuda"
    fallbacks = (("xformers",) if is_cuda and has_xformers() else ()) + ("sdpa",)
    return choose_provider(kernel_mode(), is_cuda=is_cuda, triton_ok=HAS_TRITON and triton_runs_on(q.device),
                           shape_ok=triton_unsupported(q, k, v) is None, fallbacks=fallbacks)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              causal: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale) v for q (B, H, N_q, D), k, v (B, H, N_kv, D) -> (B, H, N_q, D).

    scale defaults to 1/sqrt(D); causal masks keys after the query's position (top-left
    aligned). The implementation is picked by `attention_provider`.
    """
    check_attention_inputs(q, k, v)
    provider = attention_provider(q, k, v)
    if provider == "triton":
        return attention_triton(q, k, v, scale, causal)
    if provider == "xformers":
        try:
            return attention_xformers(q, k, v, scale, causal)
        except (NotImplementedError, ValueError):  # a shape/dtype xformers has no kernel for
            pass
    return attention_torch(q, k, v, scale, causal)
