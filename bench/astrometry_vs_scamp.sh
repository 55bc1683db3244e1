#!/usr/bin/env bash
# nearby's astrometric solver against SCAMP on SIMULATED INT WFC frames with truth: for each seed,
# `nearby simulate --preset int_wfc` (4 CCDs of 2048x4100, header pointing off by up to 3', radial
# distortion 1% at 24'), pipelines/nightly.yaml (masters -> calibrate -> extract), then
# bench/astrometry_vs_scamp.py runs source-extractor (FITS_LDAC), SCAMP, astrometry.net's
# solve-field (against index files built from the same reference stars) and `nearby task
# astrometry` on every frame and prints RMS of solved vs true positions, solve rate and time per
# frame for each (medians), and the speed ratios.
#
#   bench/astrometry_vs_scamp.sh              # SEEDS="1 2 3", N_EXPOSURES=2 by default
#   SEEDS="1 2" N_EXPOSURES=1 KEEP=/tmp/astro bench/astrometry_vs_scamp.sh   # keep the work files
#
# Needs: source-extractor, scamp, /usr/bin/python3 with numpy and astropy; solve-field and
# build-astrometry-index (Debian astrometry.net; without them, or with ANET=0, it is left out). Builds `nearby` with
# the dev profile (nearby-tasks is optimised at opt-level 2 there; PROFILE=release for release).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/astro}"
seeds=(${SEEDS:-1 2 3})
profile="${PROFILE:-dev}"
python="${PYTHON:-/usr/bin/python3}"
for tool in source-extractor scamp; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y $tool" >&2; exit 1; }
done
if ! command -v solve-field >/dev/null || ! command -v build-astrometry-index >/dev/null; then
  echo "astrometry.net not found (apt-get install -y astrometry.net): left out" >&2
  export ANET=0
fi
share=/usr/share/source-extractor
[ -d "$share" ] || share=/usr/share/sextractor

(cd "$root" && cargo build -q --profile "$profile" --bin nearby)
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
nearby="$CARGO_TARGET_DIR/$dir/nearby"

if [ -n "${KEEP:-}" ]; then
  work="$KEEP"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
runs=()
for s in "${seeds[@]}"; do
  "$nearby" simulate --preset int_wfc --seed "$s" --n-exposures "${N_EXPOSURES:-2}" \
    --out "$work/seed$s/sim" >/dev/null
  "$nearby" run "$root/pipelines/nightly.yaml" --workdir "$work/seed$s/run" -q \
    --set "raw_dir=$work/seed$s/sim/raw" --set "calib_dir=$work/seed$s/sim/calib" \
    >"$work/seed$s.log" 2>&1 || { cat "$work/seed$s.log" >&2; exit 1; }
  runs+=("$work/seed$s")
done
mkdir -p "$work/solve"
"$python" "$root/bench/astrometry_vs_scamp.py" "$nearby" "$(command -v source-extractor)" "$share" \
  "$(command -v scamp)" "$work/solve" "${runs[@]}"
