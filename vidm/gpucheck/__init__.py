"""One prepared GPU check: `python -m vidm.gpucheck [--out DIR] [--dry-run]` (or
`scripts/gpu_check.sh`).

Spends a short GPU window only on what needs a GPU, in parts run one after another, each in its
own process under a hard time limit (the sum of the GPU limits is 470 s; `--budget`, 475 s by
default, caps the whole run). A part that fails or runs out of time is recorded as such and the
next one starts. After every part starts and ends, OUT/report.json and OUT/report.md are
rewritten (OUT/log.txt holds every part's output), so a run cut off anywhere still reports
what it did.

Parts (GPU limit / dry-run limit, seconds):
    install        25 / 20  pip install -e ".[gpu]" pytest when something is missing (torch pinned)
    env            20 / 20  GPU, memory, driver/CUDA, torch, Triton, xformers, accelerate versions
    kernel_tests   80 / 45  tests/test_kernels_{attention,group_norm}.py on the real compiler
    sweep          35 / 30  random dtype/batch/layout over the base presets' real shapes vs float64
    bench          45 / 30  `vidm bench kernels --shapes` of the base presets; targets met / MISSED
    bench_compile  35 / 30  the same with torch.compile of the eager chains
    data           20 / 20  `vidm data synth` + `vidm data cache-latents` (bundled autoencoder)
    train         165 / 90  `accelerate launch -m vidm.train.<stage>`, base width, bf16, triton vs torch
    sample         45 / 45  `vidm generate` / `vidm interpolate` at 64 and 256 px, same-seed bytes

`--dry-run` runs every part on the CPU (CUDA hidden) with the tiny presets, Triton's
interpreter and a few steps, so CI proves the script itself works. Without a GPU and without
--dry-run the GPU-only parts are recorded as "skipped: no GPU".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    limit: float  # seconds on a GPU machine
    dry_limit: float  # seconds in --dry-run
    gpu_only: bool = True


PARTS = (
    Part("install", "1. Install: the project, its gpu extra and pytest, where missing", 25, 20, gpu_only=False),
    Part("env", "1. Environment: GPU, driver/CUDA, torch, Triton, xformers", 20, 20, gpu_only=False),
    Part("kernel_tests", "2. Kernel tests on the real GPU compiler", 80, 45),
    Part("sweep", "2. Randomised sweep of the presets' shapes vs float64", 35, 30),
    Part("bench", "3. Kernel speed: vidm bench kernels on the presets' shapes", 45, 30),
    Part("bench_compile", "3. Kernel speed: torch.compile of the eager chains", 35, 30),
    Part("data", "4. Data for the end-to-end parts (synthetic videos, latent cache)", 20, 20),
    Part("train", "4. Training: accelerate launch, each stage, triton vs torch", 165, 90),
    Part("sample", "4. Sampling: vidm generate / interpolate, same seed same bytes", 45, 45),
)

__all__ = ["PARTS", "Part"]
