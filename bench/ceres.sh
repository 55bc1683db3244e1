#!/usr/bin/env bash
# CERES inference speed on 2 CPU cores (the issue's target: >= 500 stacks/s for the default
# model), and the same network in PyTorch when it is installed (skipped with a message if not).
# Usage: bench/ceres.sh [MODEL_DIR]   (default: pipelines/ceres-model, the demo model; "-" for fresh default weights)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-pipelines/ceres-model}"
cargo build --release -q -p nearby-ceres --example ceres_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/ceres_bench"
export RAYON_NUM_THREADS=2
if command -v taskset >/dev/null; then pin=(taskset -c 0,1); else pin=(); fi
"${pin[@]}" "$bin" "$model" 4096 | tee /tmp/ceres-bench-rust.txt
if python3 -c "import torch" 2>/dev/null; then
  "${pin[@]}" python3 bench/ceres_torch.py "$model" 4096 | tee /tmp/ceres-bench-torch.txt
  python3 - <<'PY'
import re
r = float(re.search(r"= (\d+) stacks/s", open("/tmp/ceres-bench-rust.txt").read()).group(1))
t = float(re.search(r"= (\d+) stacks/s", open("/tmp/ceres-bench-torch.txt").read()).group(1))
print(f"candle / PyTorch speed ratio: {r / t:.2f}")
PY
else
  echo "PyTorch is not installed: skipping the PyTorch comparison (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
fi
