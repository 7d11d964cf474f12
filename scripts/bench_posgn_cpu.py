"""CPU timings of per-position GroupNorm (PosGN): the torch fallback of `kernels.group_norm` with
full-shape scale/shift against the plain unfused chain it replaces,

    chain     silu(F.group_norm(x, G, w, b) * (1 + scale) + shift)
    fallback  kernels.group_norm_torch(x, G, w, b, scale, shift, "silu")   (in place where it can)
    dispatch  kernels.group_norm(...), what the models call (shape guards + provider choice first)

forward without autograd (sampling) and forward + backward (training), scale/shift laid out as
the positional MLP writes them (NCHW slices of one tensor).

    OMP_NUM_THREADS=1 python scripts/bench_posgn_cpu.py [--rounds 9] [--dtypes fp32,bf16]

The two run alternately, `--rounds` times; each round takes the median of `--calls` calls, and
the figure printed is the median over rounds (a shared machine's noise hits both alike).
Shapes: the tiny motion preset's ResBlock norms at its training batch (4 clips x 8 frames) and
three of the base preset's at 16 frames.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vidm import kernels
from vidm.kernels import group_norm_torch

SHAPES = [  # (label, N, C, H, W), 8 groups (tiny) / 32 (base)
    ("tiny C=32 16x16", 32, 32, 16, 16, 8), ("tiny C=96 16x16", 32, 96, 16, 16, 8),
    ("tiny C=64 8x8", 32, 64, 8, 8, 8), ("tiny C=128 4x4", 32, 128, 4, 4, 8),
    ("base C=128 32x32", 16, 128, 32, 32, 32), ("base C=256 16x16", 16, 256, 16, 16, 32),
    ("base C=512 4x4", 16, 512, 4, 4, 32),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def chain(x, G, w, b, sc, sh):
    return F.silu(F.group_norm(x, G, w.to(x.dtype), b.to(x.dtype)) * (1 + sc) + sh)


def fallback(x, G, w, b, sc, sh):
    return group_norm_torch(x, G, w, b, sc, sh, "silu")


def dispatch(x, G, w, b, sc, sh):
    return kernels.group_norm(x, G, w, b, sc, sh, "silu")


PROVIDERS = (("chain", chain), ("fallback", fallback), ("dispatch", dispatch))


def runner(fn, x, G, w, b, mod, C, backward: bool):
    if not backward:
        sc, sh = mod.split(C, dim=1)

        def fwd():
            with torch.no_grad():
                fn(x, G, w, b, sc, sh)
        return fwd
    leaves = [x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_(),
              mod.detach().requires_grad_()]
    dy = torch.randn_like(x)

    def fwd_bwd():
        sc, sh = leaves[3].split(C, dim=1)  # gradients flow back into the one MLP output tensor
        y = fn(leaves[0], G, leaves[1], leaves[2], sc, sh)
        torch.autograd.grad(y, leaves, dy)
    return fwd_bwd


def median_ms(call, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--dtypes", default="fp32,bf16")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median over {args.rounds} "
          f"alternating rounds of the median of {args.calls} calls")
    print(f"{'case':<18} {'dtype':<5} {'pass':<8} {'chain ms':>9} {'fallback ms':>12} {'dispatch ms':>12} "
          f"{'chain/fallback':>15} {'chain/dispatch':>15}")
    g = torch.Generator().manual_seed(0)
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        for label, N, C, H, W, G in SHAPES:
            x = torch.randn(N, C, H, W, generator=g).to(dtype)
            w, b = 1 + 0.1 * torch.randn(C, generator=g), 0.1 * torch.randn(C, generator=g)
            mod = (0.1 * torch.randn(N, 2 * C, H, W, generator=g)).to(dtype)
            for backward in (False, True):
                calls = {name: runner(fn, x, G, w, b, mod, C, backward) for name, fn in PROVIDERS}
                for call in calls.values():  # warm-up
                    call()
                rounds = {name: [] for name in calls}
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        rounds[name].append(median_ms(call, args.calls))
                ch, fb, dp = (statistics.median(rounds[k]) for k, _ in PROVIDERS)
                print(f"{label:<18} {dname:<5} {'fwd+bwd' if backward else 'fwd':<8} {ch:>9.3f} {fb:>12.3f} "
                      f"{dp:>12.3f} {ch / fb:>14.2f}x {ch / dp:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
