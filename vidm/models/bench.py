"""Parameter counts and forward time per frame of the model presets.

    python -m vidm.models.bench                         # tiny + base, fp32 + bf16 autocast, CPU
    python -m vidm.models.bench --presets tiny --dtypes fp32 --repeats 5
    python -m vidm.models.bench --device cuda

Times are medians (and minima) over `--repeats` timed calls after one warm-up call, divided by the number of
frames in the batch (autoencoder: encode + decode of a frame; content: one latent frame;
motion: one frame of a T-frame window). A configuration whose first call takes longer than
`--slow-s` is reported from that call alone (e.g. bf16 on CPUs without bf16 hardware).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from vidm.models import build_model, get_preset
from vidm.models.precision import cpu_has_fast_bf16

# (batch, frames) and pixel size per preset; latents follow from the AE preset's factor.
SHAPES = {
    "tiny": {"pixels": 64, "ae_batch": 4, "content_batch": 8, "motion_batch": 2, "frames": 8},
    "base": {"pixels": 256, "ae_batch": 1, "content_batch": 2, "motion_batch": 1, "frames": 4},
}


def _inputs(kind: str, preset: str, device: torch.device):
    s = SHAPES[preset]
    ae_cfg = get_preset("autoencoder", preset)
    lat = s["pixels"] // ae_cfg.downsample_factor
    C = ae_cfg.latent_channels
    g = torch.Generator().manual_seed(0)
    if kind == "autoencoder":
        x = torch.rand(s["ae_batch"], 3, s["pixels"], s["pixels"], generator=g) * 2 - 1
        return (x.to(device),), {}, s["ae_batch"], f"{tuple(x.shape)}"
    if kind == "content":
        x = torch.randn(s["content_batch"], C, lat, lat, generator=g)
        return (x.to(device), torch.zeros(x.shape[0], device=device)), {}, x.shape[0], f"{tuple(x.shape)}"
    B, T = s["motion_batch"], s["frames"]
    x = torch.randn(B, T, C, lat, lat, generator=g).to(device)
    known = torch.zeros(B, T, dtype=torch.bool, device=device)
    known[:, 0] = True
    kw = dict(known=known, times=torch.arange(T, dtype=torch.float32, device=device).expand(B, T),
              anchor=x[:, 0])
    return (x, torch.zeros(B, T, device=device)), kw, B * T, f"{tuple(x.shape)}"


def _call(model, kind, args, kw):
    if kind == "autoencoder":
        return model.decode(model.encode(*args).mean.to(args[0].dtype))
    return model(*args, **kw)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_forward(model, kind, args, kw, device, dtype, repeats: int, slow_s: float) -> tuple[float, float, int]:
    """(median, min) seconds per call and the number of timed calls."""
    ctx = (torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False))
    times = []
    with torch.no_grad(), ctx:
        _sync(device)
        t = time.perf_counter()
        _call(model, kind, args, kw)  # warm-up (allocations, kernel selection)
        _sync(device)
        first = time.perf_counter() - t
        if first > slow_s:
            return first, first, 1
        for _ in range(repeats):
            t = time.perf_counter()
            _call(model, kind, args, kw)
            _sync(device)
            times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), len(times)


def main(argv: list[str] | None = None) -> int:
    from vidm.args import Parser

    p = Parser(prog="python -m vidm.models.bench", description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="tiny,base")
    p.add_argument("--kinds", default="autoencoder,content,motion")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--force-bf16", action="store_true", help="also time base presets in emulated bf16 on CPU")
    p.add_argument("--slow-s", type=float, default=30.0, help="report a slower first call alone")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    unknown = [d for d in a.dtypes.split(",") if d not in dtypes]
    if unknown:
        p.error(f"--dtypes: unknown {', '.join(unknown)} (choose from fp32, bf16)")
    emulated_bf16 = device.type == "cpu" and not cpu_has_fast_bf16()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load avg {load:.1f}, cpu {platform.processor() or platform.machine()}, "
          f"cpu fast bf16: {cpu_has_fast_bf16()}")
    hdr = f"{'model':<12}{'preset':<7}{'params':>10}  {'input':<22}" + "".join(
        f"{d + ' ms/frame med (min)':>28}" for d in a.dtypes.split(","))
    print(hdr)
    for preset in a.presets.split(","):
        for kind in a.kinds.split(","):
            torch.manual_seed(0)
            model = build_model(kind, preset).to(device).eval()
            n = model.num_parameters()
            args, kw, frames, shape = _inputs(kind, preset, device)
            row = f"{kind:<12}{preset:<7}{n / 1e6:>9.2f}M  {shape:<22}"
            for d in a.dtypes.split(","):
                if d == "bf16" and emulated_bf16 and preset != "tiny" and not a.force_bf16:
                    row += f"{'skipped [2]':>28}"
                    continue
                med, best, runs = time_forward(model, kind, args, kw, device, dtypes[d], a.repeats, a.slow_s)
                cell = f"{med / frames * 1e3:.1f} ({best / frames * 1e3:.1f})" + (" [1]" if runs == 1 else "")
                row += f"{cell:>28}"
            print(row, flush=True)
            del model
    print("# [1] = single call: the first call exceeded --slow-s and was not repeated")
    if emulated_bf16:
        print("# [2] = this CPU has no bf16 hardware (PyTorch emulates it, see the tiny rows): base presets "
              "in bf16 would take minutes per frame; --force-bf16 runs them anyway")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
