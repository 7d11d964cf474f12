"""Training throughput of the tiny presets: steps/s and samples/s per stage and precision.

    python scripts/bench_train.py --data DATA_DIR --cache CACHE_DIR [--steps 12] [--precisions no bf16]

Runs each stage's tiny config for a few steps (no previews, validation or checkpoints) in a
subprocess and reports the median step time after the first two steps (warm-up). Samples are
frames for the autoencoder, latent frames for content, T-frame windows for motion.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = {"autoencoder": lambda c: c["data"]["batch_size"] * c["data"]["num_frames"],
           "content": lambda c: c["data"]["batch_size"], "motion": lambda c: c["data"]["batch_size"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="video folder (autoencoder)")
    p.add_argument("--cache", required=True, help="latent cache (content, motion)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    p.add_argument("--stages", nargs="+", default=["autoencoder", "content", "motion"])
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = p.parse_args()
    import yaml

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for stage in args.stages:
            for mp in args.precisions:
                name = f"{stage}-{mp}"
                cmd = [sys.executable, "-m", f"train.{stage}", "--config", f"configs/{stage}/tiny.yaml",
                       "--name", name, f"run.output_dir={out}", f"run.steps={args.steps}",
                       f"run.mixed_precision={mp}", "run.sample_every=0", "run.val_every=0",
                       "run.checkpoint_every=0", "run.log_every=1", "run.progress=false",
                       f"data.root={args.data}", *([f"data.latents={args.cache}"] if stage != "autoencoder" else [])]
                t0 = time.time()
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{name}: timed out after {args.timeout:.0f} s", flush=True)
                    continue
                if proc.returncode != 0:
                    print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                run = Path(out) / name
                recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                times = [r["step_time"] for r in recs if "step_time" in r][2:]
                cfg = yaml.safe_load((run / "config.yaml").read_text())
                t = statistics.median(times)
                row = {"stage": stage, "precision": mp, "steps_per_s": 1 / t,
                       "samples_per_s": SAMPLES[stage](cfg) / t, "step_time_s": t,
                       "wall_s": time.time() - t0, "threads": os.environ.get("OMP_NUM_THREADS", "default")}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| stage | precision | steps/s | samples/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['precision']} | {r['steps_per_s']:.3f} | {r['samples_per_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
