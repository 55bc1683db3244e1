#!/usr/bin/env bash
# nearby's extractor against SExtractor (source-extractor) on SIMULATED frames with truth: runs
# the demo night (simulate -> masters -> calibrate -> extract, pipelines/demo.yaml) for a few fixed
# seeds, splits every calibrated CCD into its own FITS file, runs both extractors on it with the
# same settings (as bench/extract_vs_sextractor.sh; unweighted, then with the calibrated
# inverse-variance map) and scores both against the simulator's truth: completeness per truth S/N
# bin, purity of clean S/N>10 detections, centroid RMS at S/N>=50, the fraction of SExtractor's
# clean sources nearby has within 1 px, and the median FLUX_AUTO ratio
# (bench/extract_vs_sextractor_sim.py does the scoring).
#
#   bench/extract_vs_sextractor_sim.sh            # SEEDS="42 43 44 45 46 47 48 49" by default
#
# Needs: source-extractor, /usr/bin/python3 with numpy and astropy. Builds `nearby` and the
# extract_fits example in release mode (CARGO_TARGET_DIR, default /work/targets/extract).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/extract}"
seeds=(${SEEDS:-42 43 44 45 46 47 48 49})
python="${PYTHON:-/usr/bin/python3}"

sex="$(command -v source-extractor || command -v sex || true)"
if [ -z "$sex" ]; then
  echo "source-extractor not found: apt-get install -y source-extractor" >&2
  exit 1
fi
share=/usr/share/source-extractor
[ -d "$share" ] || share=/usr/share/sextractor

(cd "$root" && cargo build -q --release --bin nearby &&
  cargo build -q --release -p nearby-tasks --example extract_fits)
nearby="$CARGO_TARGET_DIR/release/nearby"
ours="$CARGO_TARGET_DIR/release/examples/extract_fits"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
runs=()
for s in "${seeds[@]}"; do
  "$nearby" run "$root/pipelines/demo.yaml" --set "seed=$s" --workdir "$work/seed$s" -q \
    >"$work/seed$s.log" 2>&1 || { cat "$work/seed$s.log" >&2; exit 1; }
  runs+=("$work/seed$s")
done
mkdir -p "$work/split"
"$python" "$root/bench/extract_vs_sextractor_sim.py" "$sex" "$share" "$ours" "$work/split" "${runs[@]}"
