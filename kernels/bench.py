"""Microbenchmark of the fused kernels: `vidm bench kernels [--quick] [--out FILE.json]` (also
`python -m vidm.kernels.bench`). This module owns the benchmark's options (`add_arguments`,
`build_parser`); `vidm bench kernels` hands its words to `build_parser`/`run_from_args`.

For each op over the shapes a video UNet produces (spatial attention over 16x16..64x64 tokens,
temporal attention over 8..25 frames with batch B*h*w, GroupNorm+scale/shift+SiLU over
(B*T, C, H, W) with 32 groups, per-sample (`group_norm`) and per-position (`group_norm_pos`,
PosGN: scale/shift of x's full shape, NCHW slices of one tensor as the positional MLP writes
them, at the base motion preset's ResBlock shapes)), each provider (triton, sdpa, xformers,
eager torch; for group_norm_pos also `chain`, the plain unfused torch ops the fallback
replaces), forward and forward+backward: median milliseconds, TFLOP/s (attention) or GB/s
(GroupNorm, each tensor read or written once), and the fraction of this device's peak,
measured in the same run (copy bandwidth; matmul rate in the benchmark dtype, bf16 by default
on a GPU). Each provider's forward output is also compared with the baseline's (SDPA / fp32
torch GroupNorm), so a GPU run checks the compiled kernels too. Issue 6's GPU targets are
checked at the end where Triton rows exist.

On a GPU, SDPA is timed three ways: torch's own backend choice (`sdpa`, the baseline of
`speedup`) and pinned to its flash (`sdpa_flash`) and memory-efficient (`sdpa_efficient`)
backends. `--compile [BACKEND]` adds `compiled`: torch.compile of the eager chain (one compile
per case, timed as `first_call_s`); group_norm_pos has it by default on a GPU (inductor: the
third provider beside triton and torch; on a CPU only with --compile, as inductor needs a C++
toolchain there and compiles slowly). `--shapes FILE.json` replaces the preset's shapes:
{"attention": [[label, B, H, N, D], ...], "group_norm": [[label, B*T, C, H, W(, groups)], ...],
"group_norm_pos": [same as group_norm]} (the GPU check, `python -m vidm.gpucheck`, passes the
shapes of the base model presets).

On a CPU the torch providers run; Triton would only run in its interpreter there, whose
timings mean nothing, so it is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from vidm.errors import ConfigError, VidmError

from ._common import HAS_TRITON, INTERPRET, has_xformers
from .attention import attention_reference, attention_torch, attention_triton, attention_xformers
from .group_norm import group_norm_torch, group_norm_triton

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# (label, B, H, N, D): attention over (B, H, N, D). Spatial: B = batch x frames, N = h x w
# tokens. Temporal: B = batch x h x w positions, N = frames.
ATTENTION_SHAPES = {
    "full": [("spatial 16x16", 16, 8, 256, 64), ("spatial 32x32", 16, 8, 1024, 64),
             ("spatial 64x64", 16, 8, 4096, 64),
             ("temporal T=8", 2048, 8, 8, 64), ("temporal T=16", 2048, 8, 16, 64),
             ("temporal T=25", 2048, 8, 25, 64)],
    "quick": [("spatial 16x16", 2, 4, 256, 64), ("spatial 32x32", 1, 4, 1024, 64),
              ("temporal T=8", 512, 4, 8, 64), ("temporal T=16", 512, 4, 16, 64),
              ("temporal T=25", 512, 4, 25, 64)],
    "tiny": [("spatial 8x8", 1, 2, 64, 32), ("temporal T=8", 16, 2, 8, 32)],
}
# (label, B*T, C, H, W), 32 groups, weight/bias, per-sample scale/shift, SiLU: the UNet's
# ResNet-block norm.
GROUP_NORM_SHAPES = {
    "full": [("C=64 64x64", 16, 64, 64, 64), ("C=320 64x64", 16, 320, 64, 64),
             ("C=640 32x32", 16, 640, 32, 32), ("C=1280 16x16", 16, 1280, 16, 16),
             ("C=1280 8x8", 16, 1280, 8, 8)],
    "quick": [("C=64 32x32", 4, 64, 32, 32), ("C=320 16x16", 4, 320, 16, 16),
              ("C=1280 8x8", 4, 1280, 8, 8)],
    "tiny": [("C=64 8x8", 2, 64, 8, 8)],
}
# Per-position modulation (PosGN): the base motion preset's most frequent ResBlock norms
# (vidm.gpucheck.shapes.capture("base"); tests/test_posgn.py checks they are there) at its
# training batch, 8 clips x 16 frames (quick: 16 frames).
GROUP_NORM_POS_SHAPES = {
    "full": [("pos C=128 32x32", 128, 128, 32, 32), ("pos C=256 32x32", 128, 256, 32, 32),
             ("pos C=256 16x16", 128, 256, 16, 16), ("pos C=384 8x8", 128, 384, 8, 8),
             ("pos C=512 4x4", 128, 512, 4, 4)],
    "quick": [("pos C=128 32x32", 16, 128, 32, 32), ("pos C=256 16x16", 16, 256, 16, 16),
              ("pos C=512 4x4", 16, 512, 4, 4)],
    "tiny": [("pos C=64 8x8", 2, 64, 8, 8)],
}
OPS = ("attention", "group_norm", "group_norm_pos")
GROUPS = 32
REPS = {"full": (3, 20), "quick": (1, 5), "tiny": (0, 1)}  # (warm-up, min timed) per case; GPU >= (3, 10)
TRITON_NOTE = ("Triton timings need a GPU: without one Triton runs only in its interpreter "
               "(numpy on the host), whose timings mean nothing; torch providers only.")


# ---------------------------------------------------------------------------------------------
# Timing

class Timer:
    """Median wall time of a callable: CUDA events around each call after warm-up (and an L2
    flush before it, so memory-bound kernels are not timed out of cache); perf_counter on CPU."""

    def __init__(self, device: torch.device, warmup: int, reps: int):
        self.device, self.warmup, self.reps = device, warmup, reps
        self.cuda = device.type == "cuda"
        # Larger than any GPU's L2 (H100: 50 MB).
        self._flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device) if self.cuda else None

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):  # the first call of a Triton kernel compiles it
            fn()
        if not self.cuda:
            # At least `reps` calls, more (up to 100) until 0.2 s has been spent: short CPU
            # calls are noisy (thread wake-ups, other processes), the median of many is not.
            times = []
            while len(times) < self.reps or (sum(times) < 200 and len(times) < 100):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
        torch.cuda.synchronize(self.device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(self.reps)]
        for start, end in events:
            self._flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return statistics.median(s.elapsed_time(e) for s, e in events)


def measure_peaks(device: torch.device, preset: str, dtype: torch.dtype) -> dict:
    """This device's copy bandwidth (GB/s, bytes read + written) and matmul rate (TFLOP/s) in the
    benchmark's dtype (bf16 by default on a GPU; on a CPU the fp32 default, since CPUs without
    bf16 units run bf16 matmuls far below their fp32 rate)."""
    cuda = device.type == "cuda"
    copy_bytes = {"full": 2**30 if cuda else 2**28, "quick": 2**28 if cuda else 2**26, "tiny": 2**22}[preset]
    n = {"full": 8192 if cuda else 2048, "quick": 4096 if cuda else 1024, "tiny": 256}[preset]
    timer = Timer(device, warmup=2 if preset != "tiny" else 1, reps=10 if cuda else 3)
    src = torch.ones(copy_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_ms = timer(lambda: dst.copy_(src))
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm_ms = timer(lambda: a @ b)
    del src, dst, a, b
    return {"copy_GBps": 2 * copy_bytes / copy_ms / 1e6, "matmul_TFLOPs": 2 * n**3 / mm_ms / 1e9,
            "matmul_dtype": str(dtype).replace("torch.", ""), "copy_bytes": copy_bytes, "matmul_n": n}


# ---------------------------------------------------------------------------------------------
# Cases

def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()


def _fwd_bwd(fn, inputs: list[torch.Tensor], grad_out: torch.Tensor):
    """A callable running forward + backward (torch.autograd.grad: no .grad accumulation)."""
    leaves = [t.detach().requires_grad_() for t in inputs]

    def run():
        out = fn(*leaves)
        torch.autograd.grad(out, leaves, grad_out)

    return run


def _time_case(record: dict, fn, inputs, grad_out, timer: Timer, work: dict, peak: float, rate_key: str):
    """Fill `record` with the forward and forward+backward timings and rates."""
    for pass_name, call, scale in (("fwd", lambda: fn(*inputs), 1.0),
                                   ("fwd+bwd", _fwd_bwd(fn, inputs, grad_out), work["bwd_factor"])):
        if isinstance(fn, _Compiled):  # its first call of each pass compiles: not timed
            t0 = time.perf_counter()
            call()
            if timer.cuda:
                torch.cuda.synchronize(timer.device)
            first = time.perf_counter() - t0
        ms = timer(call)
        amount = work["amount"] * scale  # FLOPs or bytes of this pass
        # FLOPs / ms / 1e9 = TFLOP/s; bytes / ms / 1e6 = GB/s
        rate = amount / ms / (1e9 if rate_key == "TFLOPs" else 1e6)
        record[pass_name] = {"ms": ms, rate_key: rate, "peak_fraction": rate / peak if peak else None}
        if isinstance(fn, _Compiled):
            record[pass_name]["first_call_s"] = first


def _sdpa_pinned(backend: str):
    """SDPA restricted to one of its backends ("flash" / "efficient"), or None where this torch
    cannot pin one (torch < 2.3). The backward runs the backend its forward chose."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - old torch
        return None
    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]

    def fn(q, k, v):
        with sdpa_kernel([chosen]):
            return attention_torch(q, k, v)

    return fn


class _Compiled:
    """torch.compile of an eager chain, compiled afresh for each case (dynamo's cache is reset
    first, so its recompile limit never silently falls back to eager over many shapes)."""

    def __init__(self, fn, backend: str):
        self.fn, self.backend, self.compiled = fn, backend, None

    def reset(self) -> None:
        torch._dynamo.reset()
        self.compiled = torch.compile(self.fn, backend=self.backend, dynamic=False)

    def __call__(self, *args):
        return self.compiled(*args)


def _attention_eager(q, k, v):
    return attention_reference(q, k, v, compute_dtype=None)


def attention_providers(device: torch.device, compile_backend: str | None = None) -> dict:
    cuda = device.type == "cuda"
    return {
        "triton": (lambda q, k, v: attention_triton(q, k, v)) if cuda and HAS_TRITON and not INTERPRET else None,
        "sdpa": lambda q, k, v: attention_torch(q, k, v),
        **({"sdpa_flash": _sdpa_pinned("flash"), "sdpa_efficient": _sdpa_pinned("efficient")} if cuda else {}),
        "xformers": (lambda q, k, v: attention_xformers(q, k, v)) if cuda and has_xformers() else None,
        "eager": _attention_eager,
        **({"compiled": _Compiled(_attention_eager, compile_backend)} if compile_backend else {}),
    }


def group_norm_providers(device: torch.device, compile_backend: str | None = None, groups: int = GROUPS,
                         per_position: bool = False) -> dict:
    """per_position: also `chain` (the plain unfused torch ops, what the fallback replaces and
    what `compiled` compiles), and `compiled` by default on a GPU (see the module docstring)."""
    cuda = device.type == "cuda"
    triton = (lambda x, w, b, sc, sh: group_norm_triton(x, groups, w, b, sc, sh, "silu")) \
        if cuda and HAS_TRITON and not INTERPRET else None

    def eager(x, w, b, sc, sh):
        return group_norm_torch(x, groups, w, b, sc, sh, "silu")

    def chain(x, w, b, sc, sh):
        return F.silu(F.group_norm(x, groups, w.to(x.dtype), b.to(x.dtype)) * (1 + sc) + sh)

    if not per_position:
        return {"triton": triton, "eager": eager,
                **({"compiled": _Compiled(eager, compile_backend)} if compile_backend else {})}
    backend = compile_backend or ("inductor" if cuda else None)
    return {"triton": triton, "eager": eager, "chain": chain,
            "compiled": _Compiled(chain, backend) if backend else None}


def _first_call(rec: dict, name: str, fn, *inputs):
    """The provider's first call (a compiled one compiles here: its time is recorded)."""
    if isinstance(fn, _Compiled):
        fn.reset()
        t0 = time.perf_counter()
        out = fn(*inputs)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        rec["first_call_s"] = time.perf_counter() - t0
        return out
    return fn(*inputs)


def bench_attention(device, dtype, preset, timer, peaks, shapes=None, compile_backend=None) -> list[dict]:
    results = []
    providers = attention_providers(device, compile_backend)
    gen = torch.Generator(device=device).manual_seed(0)
    for label, B, H, N, D in (ATTENTION_SHAPES[preset] if shapes is None else shapes):
        q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, generator=gen) for _ in range(3))
        do = torch.randn(B, H, N, D, device=device, dtype=dtype, generator=gen)
        esize = q.element_size()
        # FLOPs: QK^T and PV, 2 N^2 D each, multiply-add = 2; backward has 5 such products.
        work = {"amount": 4 * B * H * N * N * D, "bwd_factor": 3.5}
        ref = attention_torch(q, k, v)
        for name, fn in providers.items():
            rec = {"op": "attention", "case": label, "shape": [B, H, N, D], "provider": name,
                   "dtype": str(dtype).replace("torch.", ""), "flops_fwd": work["amount"],
                   "bytes_fwd": 4 * B * H * N * D * esize}
            if fn is None:
                rec["skipped"] = "needs a GPU" if name == "triton" else "not installed or needs a GPU"
            else:
                try:
                    rec["rel_err_vs_sdpa"] = _rel_err(_first_call(rec, name, fn, q, k, v), ref)
                    _time_case(rec, fn, [q, k, v], do, timer, work, peaks["matmul_TFLOPs"], "TFLOPs")
                except Exception as e:  # OOM, a shape a provider lacks, a compile error: record, go on
                    rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            results.append(rec)
    return results


def bench_group_norm(device, dtype, preset, timer, peaks, shapes=None, compile_backend=None,
                     per_position: bool = False) -> list[dict]:
    """GroupNorm + scale/shift + SiLU; per_position: scale/shift of x's shape (op group_norm_pos)."""
    results = []
    op = "group_norm_pos" if per_position else "group_norm"
    gen = torch.Generator(device=device).manual_seed(0)
    default = (GROUP_NORM_POS_SHAPES if per_position else GROUP_NORM_SHAPES)[preset]
    for label, BT, C, Hs, Ws, *rest in (default if shapes is None else shapes):
        groups = int(rest[0]) if rest else GROUPS
        providers = group_norm_providers(device, compile_backend, groups, per_position)
        x = torch.randn(BT, C, Hs, Ws, device=device, dtype=dtype, generator=gen)
        w = 1 + 0.1 * torch.randn(C, device=device, generator=gen)
        b = 0.1 * torch.randn(C, device=device, generator=gen)
        if per_position:  # NCHW slices of one (BT, 2C, H, W) tensor, in x's dtype, as the MLP writes them
            sc, sh = (0.1 * torch.randn(BT, 2 * C, Hs, Ws, device=device, generator=gen)).to(dtype).split(C, dim=1)
        else:
            sc = 0.1 * torch.randn(BT, C, device=device, generator=gen)
            sh = 0.1 * torch.randn(BT, C, device=device, generator=gen)
        dy = torch.randn_like(x)
        # Bytes: forward reads x, writes y; backward reads x and dy, writes dx (params negligible).
        # Per position also: forward reads scale, shift; backward reads them, writes their grads.
        tensors_fwd, tensors_all = (4, 11) if per_position else (2, 5)
        work = {"amount": tensors_fwd * x.numel() * x.element_size(), "bwd_factor": tensors_all / tensors_fwd}
        ref = group_norm_torch(x.float(), groups, w, b, sc.float(), sh.float(), "silu")
        for name, fn in providers.items():
            rec = {"op": op, "case": label, "shape": [BT, C, Hs, Ws], "groups": groups,
                   "provider": name, "dtype": str(dtype).replace("torch.", ""), "bytes_fwd": work["amount"],
                   "bytes_fwd_bwd": work["amount"] * work["bwd_factor"],
                   "flops_fwd_approx": 12 * x.numel()}  # normalise, affine, modulate, SiLU
            if fn is None:
                rec["skipped"] = ("needs a GPU" if name == "triton" else
                                  "CPU: pass --compile to time torch.compile (inductor needs a C++ toolchain here)")
            else:
                try:
                    rec["rel_err_vs_fp32_torch"] = _rel_err(_first_call(rec, name, fn, x, w, b, sc, sh), ref)
                    _time_case(rec, fn, [x, w, b, sc, sh], dy, timer, work, peaks["copy_GBps"], "GBps")
                except Exception as e:  # OOM, a shape a provider lacks, a compile error: record, go on
                    rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            results.append(rec)
    return results


# ---------------------------------------------------------------------------------------------
# Report

# The `speedup` baseline per op: SDPA; the eager torch GroupNorm; for per-position modulation
# the plain unfused chain (so the fallback's own row says what its in-place ops gain).
BASELINES = {"attention": "sdpa", "group_norm": "eager", "group_norm_pos": "chain"}


def _speedups(results: list[dict]) -> None:
    """Add `speedup` (baseline time / this time) per pass, against BASELINES."""
    base = {}
    for r in results:
        if r["provider"] == BASELINES[r["op"]]:
            base[(r["op"], r["case"])] = r
    for r in results:
        b = base.get((r["op"], r["case"]))
        for p in ("fwd", "fwd+bwd"):
            if b and p in r and p in b:
                r[p]["speedup"] = b[p]["ms"] / r[p]["ms"]


def format_table(results: list[dict]) -> str:
    head = f"{'op':<14} {'case':<22} {'shape':<20} {'provider':<14} {'pass':<8} {'ms':>9} " \
           f"{'rate':>16} {'% peak':>7} {'speedup':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        shape = "x".join(map(str, r["shape"]))
        if "skipped" in r or "error" in r:
            lines.append(f"{r['op']:<14} {r['case']:<22} {shape:<20} {r['provider']:<14} "
                         f"{'-':<8} {r.get('skipped') or r.get('error')}")
            continue
        for p in ("fwd", "fwd+bwd"):
            t = r[p]
            rate = f"{t['TFLOPs']:.3g} TFLOP/s" if "TFLOPs" in t else f"{t['GBps']:.1f} GB/s"
            frac = f"{100 * t['peak_fraction']:.1f}" if t["peak_fraction"] is not None else "-"
            lines.append(f"{r['op']:<14} {r['case']:<22} {shape:<20} {r['provider']:<14} {p:<8} "
                         f"{t['ms']:>9.3f} {rate:>16} {frac:>7} {t.get('speedup', float('nan')):>8.2f}")
    return "\n".join(lines)


def check_targets(results: list[dict]) -> list[dict]:
    """Issue 6's GPU targets, where the Triton rows exist. Spatial attention is held against
    SDPA's flash backend where that was timed (`sdpa_flash`), else SDPA's own choice."""
    rows = {(r["op"], r["case"], r["provider"]): r for r in results if "fwd" in r}
    targets = []
    for (op, case, prov), r in rows.items():
        if prov != "triton":
            continue
        fwd = r["fwd"]
        if op == "attention" and case.startswith("spatial") and r["shape"][2] >= 1024:
            flash = rows.get((op, case, "sdpa_flash"))
            value = flash["fwd"]["ms"] / fwd["ms"] if flash else fwd.get("speedup")
            targets.append({"target": f"attention fwd {case} >= 0.9x SDPA{' flash' if flash else ''}",
                            "value": value, "ok": (value or 0) >= 0.9})
        if op == "attention" and case.startswith("temporal") and r["shape"][2] == 16:
            targets.append({"target": f"temporal attention fwd {case} >= 1.5x SDPA", "value": fwd.get("speedup"),
                            "ok": (fwd.get("speedup") or 0) >= 1.5})
        if op == "group_norm":
            targets.append({"target": f"GroupNorm+scale/shift+SiLU fwd {case} >= 2x eager",
                            "value": fwd.get("speedup"), "ok": (fwd.get("speedup") or 0) >= 2})
            targets.append({"target": f"GroupNorm+scale/shift+SiLU fwd {case} >= 70% copy bandwidth",
                            "value": fwd["peak_fraction"], "ok": (fwd["peak_fraction"] or 0) >= 0.7})
    return targets


# ---------------------------------------------------------------------------------------------
# Entry points

def run(quick: bool = False, ops=OPS, dtype: str = "auto", device: str = "auto",
        reps: int | None = None, out: str | None = None, preset: str | None = None, log=print,
        shapes: dict | None = None, compile_backend: str | None = None) -> dict:
    """Run the benchmark, print the table (through `log`), optionally write JSON; returns the
    report dict. preset: "full", "quick" or "tiny" (tests); default from `quick`. It sets the
    repetitions, and the shapes unless `shapes` ({"attention": [...], "group_norm": [...],
    "group_norm_pos": [...]}, see the module docstring) gives them. compile_backend: also time
    torch.compile(eager chain)."""
    preset = preset or ("quick" if quick else "full")
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ConfigError(f"--ops: unknown op(s) {sorted(unknown)}; choose from {', '.join(OPS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    dev = torch.device(device)
    if dtype == "auto":
        dtype = "bf16" if dev.type == "cuda" else "fp32"
    tdtype = DTYPES[dtype]
    warmup, n_reps = REPS[preset]
    if dev.type == "cuda":
        warmup, n_reps = max(warmup, 3), max(n_reps, 10)
    n_reps = reps if reps is not None else n_reps
    if n_reps < 1:
        raise ConfigError(f"--reps must be at least 1, got {n_reps}")

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    notes = [] if dev.type == "cuda" and HAS_TRITON and not INTERPRET else [TRITON_NOTE]
    log(f"kernels.bench: {name}, {dtype}, preset {preset}, median of >= {n_reps} timed reps, torch {torch.__version__}")
    for note in notes:
        log(f"note: {note}")
    peaks = measure_peaks(dev, preset, tdtype)
    log(f"device peaks (measured): copy {peaks['copy_GBps']:.1f} GB/s, {dtype} matmul "
        f"{peaks['matmul_TFLOPs']:.4g} TFLOP/s")

    timer = Timer(dev, warmup, n_reps)
    results = []
    shapes = shapes or {}
    if "attention" in ops:
        results += bench_attention(dev, tdtype, preset, timer, peaks, shapes.get("attention"), compile_backend)
    if "group_norm" in ops:
        results += bench_group_norm(dev, tdtype, preset, timer, peaks, shapes.get("group_norm"), compile_backend)
    if "group_norm_pos" in ops:
        results += bench_group_norm(dev, tdtype, preset, timer, peaks, shapes.get("group_norm_pos"), compile_backend,
                                    per_position=True)
    _speedups(results)
    targets = check_targets(results)
    log(format_table(results))
    log(f"rate: attention TFLOP/s (% of the measured {dtype} matmul rate); GroupNorm GB/s, each tensor read/written once "
        "(group_norm_pos: x, scale, shift, y forward; + dy, dx, dscale, dshift backward) (% of copy bandwidth). "
        "speedup: vs sdpa (attention) / eager torch (group_norm) / the plain unfused chain (group_norm_pos).")
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        log(f"target {'met   ' if t['ok'] else 'MISSED'} {t['target']}: {value}")

    report = {
        "device": name, "device_type": dev.type, "dtype": dtype, "preset": preset, "reps": n_reps,
        "torch": torch.__version__, "triton_available": HAS_TRITON, "triton_interpreted": INTERPRET,
        "peaks": peaks, "results": results, "targets": targets, "notes": notes,
        "shapes": "preset" if not shapes else "given", "compile_backend": compile_backend,
    }
    if out:
        _write_json(out, report)
        log(f"wrote {out}")
    return report


def _write_json(path: str, report: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, allow_nan=True)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write ({e.strerror})") from e


def load_shapes(path: str) -> dict:
    """The --shapes file: {"attention": [[label, B, H, N, D], ...], "group_norm": [[label, BT, C,
    H, W(, groups)], ...], "group_norm_pos": [as group_norm]}; any key may be missing (that op
    then uses the preset's shapes)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--shapes {path}: cannot read ({e})") from e
    sizes = {"attention": (5,), "group_norm": (5, 6), "group_norm_pos": (5, 6)}
    if not isinstance(data, dict) or set(data) - set(sizes):
        raise ConfigError(f"--shapes {path}: expected an object with keys among {', '.join(sizes)}")
    for op, rows in data.items():
        for row in rows if isinstance(rows, list) else [None]:
            if (not isinstance(row, list) or len(row) not in sizes[op] or not isinstance(row[0], str)
                    or not all(isinstance(n, int) and n > 0 for n in row[1:])):
                raise ConfigError(f"--shapes {path}: {op}: each entry must be [label, "
                                  f"{'B, H, N, D' if op == 'attention' else 'B*T, C, H, W(, groups)'}] "
                                  f"with positive ints, got {row!r}")
    return data


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (`python -m vidm.kernels.bench` and `vidm bench kernels`)."""
    p.add_argument("--quick", action="store_true",
                   help="small shapes and few repetitions (CPU: about a minute)")
    p.add_argument("--ops", default="attention,group_norm,group_norm_pos",
                   help="comma-separated ops to time: attention, group_norm (per-sample scale/shift), "
                        "group_norm_pos (per-position scale/shift, PosGN) (default: all three)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="input dtype (auto: bf16 on a GPU, fp32 on a CPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="device to time on (auto: cuda if available)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per case (median is reported)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="also write the results as JSON here")
    p.add_argument("--shapes", default=None, metavar="FILE.json",
                   help='time these shapes instead of the preset\'s: {"attention": [[label, B, H, N, D], ...], '
                        '"group_norm": [[label, B*T, C, H, W(, groups)], ...], "group_norm_pos": [likewise]}')
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="also time torch.compile of the eager chain (backend default inductor; "
                        "'eager' traces without code generation); one compile per case "
                        "(group_norm_pos has it on a GPU without this flag)")


def build_parser(prog: str = "python -m vidm.kernels.bench",
                 parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's parser; `vidm bench kernels` passes its prog and vidm.args.Parser."""
    parser = parser_class(prog=prog, description="Median time, TFLOP/s or GB/s and the fraction of the measured "
                                                 "device peak for each kernel provider over video-UNet shapes.")
    add_arguments(parser)
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    shapes = load_shapes(args.shapes) if getattr(args, "shapes", None) else None
    run(quick=args.quick, ops=ops, dtype=args.dtype, device=args.device, reps=args.reps, out=args.out,
        shapes=shapes, compile_backend=getattr(args, "compile", None))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_from_args(args)
    except VidmError as e:
        print(f"kernels.bench: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
