#!/usr/bin/env bash
# The whole tiny pipeline on the synthetic set, each stage for its configured steps:
#   vidm data synth -> autoencoder tiny -> cache latents -> content tiny -> motion tiny
#   -> vidm pack -> vidm interpolate (two frames of a held-out synthetic video)
# then loads the three model folders. Prints the wall time of each stage and in total.
# Usage: bash scripts/tiny_pipeline.sh [OUT_DIR (default runs-e2e)] [extra key=value for every stage]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs-e2e}
shift || true
mkdir -p "$OUT"
t_all=$(date +%s.%N)
stamp() { echo "[tiny_pipeline] $1: $(python -c "print(f'{$(date +%s.%N) - $2:.1f} s')")"; }

t=$(date +%s.%N)
vidm data synth --out "$OUT/data" --videos 64 --frames 24 --size 64 --seed 0 --quiet
stamp "synth" "$t"

t=$(date +%s.%N)
python -m train.autoencoder --config configs/autoencoder/tiny.yaml run.output_dir="$OUT/runs" \
    data.root="$OUT/data" run.progress=false "$@"
stamp "autoencoder" "$t"

t=$(date +%s.%N)
vidm data cache-latents --autoencoder "$OUT/runs/autoencoder-tiny/model" --data "$OUT/data" --out "$OUT/cache"
stamp "cache-latents" "$t"

for stage in content motion; do
    t=$(date +%s.%N)
    python -m train.$stage --config configs/$stage/tiny.yaml run.output_dir="$OUT/runs" \
        data.latents="$OUT/cache" data.autoencoder="$OUT/runs/autoencoder-tiny/model" run.progress=false "$@"
    stamp "$stage" "$t"
done

python - "$OUT" <<'PY'
import json, sys
from vidm.models import load_pretrained
out = sys.argv[1]
for stage in ("autoencoder", "content", "motion"):
    m = load_pretrained(f"{out}/runs/{stage}-tiny/model")
    losses = [json.loads(l) for l in open(f"{out}/runs/{stage}-tiny/metrics.jsonl")]
    train = [r for r in losses if "loss" in r]
    val = [r for r in losses if "val_loss" in r]
    print(f"[tiny_pipeline] {stage}: {type(m).__name__} {m.num_parameters() / 1e6:.2f} M params loads; "
          f"final loss {train[-1]['loss']:.4f} (mean of last 5 logs {sum(r['loss'] for r in train[-5:]) / len(train[-5:]):.4f}), "
          f"val {val[-1]['val_loss'] if val else float('nan'):.4f}, {train[-1]['samples_per_sec']:.2f} samples/s")
PY
t=$(date +%s.%N)
vidm pack --autoencoder "$OUT/runs/autoencoder-tiny" --content "$OUT/runs/content-tiny" \
    --motion "$OUT/runs/motion-tiny" -o "$OUT/pipeline"
vidm data synth --out "$OUT/heldout" --videos 1 --frames 24 --size 64 --seed 12345 --quiet
mkdir -p "$OUT/frames"
python - "$OUT" <<'PY'
import sys
from PIL import Image
from vidm.video import read_clip
out = sys.argv[1]
clip = read_clip(f"{out}/heldout/00000.mp4")
Image.fromarray(clip[0]).save(f"{out}/frames/a.png")
Image.fromarray(clip[4]).save(f"{out}/frames/b.png")
PY
vidm interpolate "$OUT/frames/a.png" "$OUT/frames/b.png" --frames 3 --model "$OUT/pipeline" \
    -o "$OUT/interpolated.mp4" --strip "$OUT/strip.png" --quiet
stamp "pack + interpolate" "$t"
stamp "total" "$t_all"
