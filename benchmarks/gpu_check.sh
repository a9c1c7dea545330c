#!/usr/bin/env bash
# The GPU check (issue: feed a GPU): the CUDA-marked tests, then train samples/s and peak
# memory at 384 x 384 / batch 4 / bf16 for unet2d, convlstm, sgt and sgt_advect, the SGT's
# forecast latency and the loader (8 workers) against the train step's demand, written as
# a Markdown table (default gpu_check.md) for docs/benchmarks.md. Sized for <= 8 minutes
# on one CUDA GPU; on a CPU the same code runs at a tiny size and says so.
#
# usage: benchmarks/gpu_check.sh [OUT.md]      (from the repository root; or: make gpu-check)
set -euo pipefail
out="${1:-gpu_check.md}"
python="${PYTHON:-python}"
if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: CUDA GPU found: running the CUDA-marked tests"
  "$python" -m pytest -q -n 0 -m cuda -p no:cacheprovider tests/
else
  echo "gpu_check: no CUDA GPU: the CUDA-marked tests are skipped; the check runs in CPU mode"
fi
"$python" -m benchmarks.gpu_check --out "$out"
