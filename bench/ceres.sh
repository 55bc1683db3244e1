#!/usr/bin/env bash
# CERES speed on CPU: inference (the issue's target: >= 500 stacks/s on 2 cores for the default
# model) and training steps, in candle and, when `import torch` works, the same network in
# PyTorch on the same weights and stacks (the scores are checked to agree), with 1 and 2
# threads; prints the candle / PyTorch ratios. Without PyTorch the comparison is skipped with a
# message.
# Usage: bench/ceres.sh [MODEL_DIR]   (default: pipelines/ceres-model, the demo model; "-" for
#        fresh default weights). PYTHON=/path/to/python picks the interpreter (default python3);
#        N=stacks (default 4096), STEPS=training steps (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-pipelines/ceres-model}"
py="${PYTHON:-python3}"
n="${N:-4096}"
steps="${STEPS:-20}"
cargo build --release -q -p nearby-ceres --examples
bin="${CARGO_TARGET_DIR:-target}/release/examples/ceres_bench"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
have_torch=0
if "$py" -c "import torch, numpy" 2>/dev/null; then have_torch=1; fi
for threads in 1 2; do
  cores=0
  [ "$threads" = 2 ] && cores=0,1
  if command -v taskset >/dev/null; then pin=(taskset -c "$cores"); else pin=(); fi
  RAYON_NUM_THREADS=$threads "${pin[@]}" "$bin" "$model" "$n" --train-steps "$steps" \
    --dump "$work/d" | tee "$work/candle-$threads.txt"
  if [ "$have_torch" = 1 ]; then
    OMP_NUM_THREADS=$threads "${pin[@]}" "$py" bench/ceres_torch.py "$model" "$n" "$work/d" \
      "$threads" "$steps" | tee "$work/torch-$threads.txt"
  fi
done
if [ "$have_torch" = 0 ]; then
  echo "PyTorch is not importable by $py: skipping the PyTorch comparison (pip install torch numpy;"
  echo "the PyPI wheel pulls ~3 GB of CUDA libraries but runs on CPU; PYTHON= picks a venv)"
  exit 0
fi
python3 - "$work" <<'PY'
import re, sys
w = sys.argv[1]
def speed(f, what):
    m = re.search(what + r".*= (\d+) stacks/s", open(f"{w}/{f}").read())
    return float(m.group(1))
for t in (1, 2):
    for what in ("inference", "training"):
        c, p = speed(f"candle-{t}.txt", what), speed(f"torch-{t}.txt", what)
        print(f"{what}, {t} thread(s): candle {c:.0f}, PyTorch {p:.0f} stacks/s "
              f"({c / t:.0f} and {p / t:.0f} per core): PyTorch / candle = {p / c:.2f}")
PY
