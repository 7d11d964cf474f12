"""Loss curves of training runs side by side, by step and by wall time.

    python scripts/compare_runs.py runs/A runs/B [--bin 250] [--at-seconds S]

Reads each run's `metrics.jsonl` (train lines every `run.log_every` steps, validation lines every
`run.val_every`) and prints one table per run: mean training loss over each `--bin` steps,
validation loss where one was logged in the bin, and the wall time of training steps up to the
bin's end (from the logged step rates: `log_every / steps_per_sec` per train line; evaluation and
checkpoint time are not counted, so runs that ran side by side compare fairly). `--at-seconds S`
also says which step each run had reached after S seconds of step time (for equal-wall-time
comparisons: pick the checkpoint nearest that step).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """-> (train lines, validation lines) of a run folder, each in step order."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"compare_runs: {path}: no such file")
    train, val = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if any(k.startswith("val") for k in rec):
            val.append(rec)
        if "loss" in rec and "steps_per_sec" in rec:
            train.append(rec)
    return sorted(train, key=lambda r: r["step"]), sorted(val, key=lambda r: r["step"])


def wall_times(train: list[dict]) -> list[float]:
    """Cumulative seconds of step time at each train line."""
    out, total, prev = [], 0.0, 0
    for rec in train:
        total += (rec["step"] - prev) / max(rec["steps_per_sec"], 1e-9)
        prev = rec["step"]
        out.append(total)
    return out


def val_loss(rec: dict) -> float | None:
    for key in ("val_loss", "val/loss"):
        if key in rec:
            return float(rec[key])
    vals = [v for k, v in rec.items() if k.startswith("val") and isinstance(v, (int, float))]
    return float(vals[0]) if vals else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (runs/NAME)")
    p.add_argument("--bin", type=int, default=250, help="steps per table row (default 250)")
    p.add_argument("--at-seconds", type=float, default=None, help="report each run's step after this much step time")
    args = p.parse_args(argv)
    if args.bin < 1:
        p.error("--bin must be >= 1")
    for run in args.runs:
        train, val = read_metrics(run)
        if not train:
            print(f"{run}: no training lines yet", file=sys.stderr)
            continue
        walls = wall_times(train)
        print(f"\n{run}: {train[-1]['step']} steps, {walls[-1] / 60:.1f} min of step time")
        print("| steps | mean train loss | val loss | step time (min) |\n|---|---|---|---|")
        for lo in range(0, train[-1]["step"], args.bin):
            hi = lo + args.bin
            rows = [(r, w) for r, w in zip(train, walls) if lo < r["step"] <= hi]
            if not rows:
                continue
            loss = sum(r["loss"] for r, _ in rows) / len(rows)
            vs = [val_loss(v) for v in val if lo < v["step"] <= hi]
            vs = [v for v in vs if v is not None and math.isfinite(v)]
            print(f"| {lo + 1}-{rows[-1][0]['step']} | {loss:.4f} | {vs[-1]:.4f} |" if vs else
                  f"| {lo + 1}-{rows[-1][0]['step']} | {loss:.4f} | |", f"{rows[-1][1] / 60:.1f} |")
        if args.at_seconds is not None:
            reached = [r["step"] for r, w in zip(train, walls) if w <= args.at_seconds]
            print(f"after {args.at_seconds:.0f} s of step time: step {reached[-1] if reached else 0}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
