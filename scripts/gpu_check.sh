#!/usr/bin/env bash
# One prepared GPU check (issue 17): environment, kernel correctness on the real compiler, kernel
# speed against SDPA / xformers / torch.compile, and short end-to-end training and sampling runs,
# each part under a hard time limit (470 s in all on a GPU), with OUT/report.json and
# OUT/report.md rewritten after every part.
#
#   bash scripts/gpu_check.sh                # on a CUDA machine; report in $OUT, else gpu_check_report/
#   bash scripts/gpu_check.sh --dry-run      # the whole script on the CPU, tiny shapes (CI, < 2 min)
#   bash scripts/gpu_check.sh --list         # the parts and their time limits
#   bash scripts/gpu_check.sh --only bench,train --limit train=240 --out DIR
#
# The same as `python -m vidm.gpucheck ...` from the repository root (no install needed: the
# repository is put first on PYTHONPATH; the install part pip-installs what is missing).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$(command -v python || command -v python3)}
exec "$PY" -m vidm.gpucheck "$@"
