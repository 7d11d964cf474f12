"""Sampling speed of a pipeline: interpolation and generation, fp32 vs bf16 autocast.

    python scripts/bench_pipeline.py [--model DIR] [--repeats 5] [--dtypes fp32 bf16] [--sizes 64 256]

Jobs, each timed `--repeats` times per dtype, the dtypes interleaved round by round so
both see the same machine load (this CPU is shared and noisy):
- interpolate: 7 in-between frames between two frames of each `--sizes` side (default 64 and
  256; the diffusion runs at the model's size, a reference decoder builds the output at the
  input's), `--steps` solver steps (default: the model's) with its guidance on the input frames, s/video;
- flow: the OpenCV DIS optical-flow baseline on the same frames (no dtype), s/video;
- generate: a `--frames`-frame video (default 32) from nothing, seconds per video.
Prints the median and min per job and dtype and the median ratio bf16 / fp32. A 2-step call
per job and dtype warms up first and is not counted. On CPUs without bf16 hardware (AVX2 only)
PyTorch emulates bf16, which is expected to be much slower; the script says which case this is.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _frames(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of a disc moving across a grey background (deterministic)."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for cx in (0.25 * size, 0.75 * size):
        img = np.full((size, size, 3), 90, np.uint8)
        img[(yy - size / 2) ** 2 + (xx - cx) ** 2 < (size / 8) ** 2] = (230, 60, 40)
        out.append(img)
    return out[0], out[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per job and dtype (after one warm-up)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=None, help="solver steps per window (default: the model's)")
    p.add_argument("--frames", type=int, default=32, help="frames per generated video")
    p.add_argument("--inbetweens", type=int, default=7, help="in-between frames per interpolated video")
    p.add_argument("--jobs", nargs="+", default=["interpolate", "flow", "generate"],
                   choices=["interpolate", "flow", "generate"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 256], help="input frame sides for interpolate/flow")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vidm import VideoPipeline
    from vidm.models.precision import cpu_has_fast_bf16

    pipes = {d: VideoPipeline.from_pretrained(args.model, device="cpu", dtype=d) for d in args.dtypes}
    cfg = next(iter(pipes.values())).config
    frames = {s: _frames(s) for s in args.sizes}
    jobs, what = {}, {}
    for s in args.sizes:
        a, b = frames[s]
        if "interpolate" in args.jobs:
            jobs[f"interpolate {s}x{s}"] = (lambda a, b: lambda pipe, steps: pipe.interpolate(
                a, b, num_frames=args.inbetweens, steps=steps, seed=0))(a, b)
            what[f"interpolate {s}x{s}"] = f"{args.inbetweens} in-betweens"
        if "flow" in args.jobs:
            from vidm.eval.baselines import get_baseline

            flow = get_baseline("flow")
            jobs[f"flow {s}x{s}"] = (lambda a, b: lambda pipe, steps: flow(a, b, args.inbetweens))(a, b)
            what[f"flow {s}x{s}"] = f"{args.inbetweens} in-betweens, DIS baseline"
    if "generate" in args.jobs:
        jobs["generate"] = lambda pipe, steps: pipe.generate(num_frames=args.frames, steps=steps, seed=0)
        what["generate"] = f"{args.frames} frames"
    pipe0 = next(iter(pipes.values()))
    if args.steps is None:
        args.steps = cfg.steps
    print(f"CPU threads {torch.get_num_threads()}; bf16 hardware (oneDNN): {cpu_has_fast_bf16()}; "
          f"model size {cfg.size}, window {cfg.window}, guidance {cfg.guidance}, sampler {cfg.sampler}, "
          f"{args.steps} steps; reference decoder: {pipe0.uses_references}", flush=True)
    times: dict[tuple[str, str], list[float]] = {}
    for job, fn in jobs.items():
        runs = {"-": pipe0} if job.startswith("flow") else pipes
        for d, pipe in runs.items():  # warm-up: same shapes, 2 steps (bf16 emulation is slow)
            fn(pipe, 2)
        for r in range(args.repeats):
            for d, pipe in runs.items():
                t0 = time.perf_counter()
                fn(pipe, args.steps)
                times.setdefault((job, d), []).append(time.perf_counter() - t0)
            print(f"  {job} round {r + 1}/{args.repeats}: " +
                  ", ".join(f"{d} {times[(job, d)][-1]:.2f} s" for d in runs), flush=True)

    print("\n| job | dtype | median s/video | min s/video |\n|---|---|---|---|")
    for (job, d), ts in times.items():
        print(f"| {job} ({what[job]}) | {d} | {statistics.median(ts):.2f} | {min(ts):.2f} |")
    if "fp32" in pipes and "bf16" in pipes:
        for job in jobs:
            if (job, "bf16") in times and (job, "fp32") in times:
                ratio = statistics.median([x / y for x, y in zip(times[(job, "bf16")], times[(job, "fp32")])])
                print(f"{job}: bf16 / fp32 time ratio (median of paired rounds) {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
