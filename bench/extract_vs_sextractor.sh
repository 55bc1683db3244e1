#!/usr/bin/env bash
# Compare nearby's extractor with SExtractor (source-extractor) on the same frames, with the same
# thresholds: fraction of SExtractor's clean sources (FLAGS=0, S/N>10) that we find within 1 px,
# median FLUX_AUTO ratio (ours / SExtractor), and speed (median of several runs, one thread and
# all threads). Then completeness per S/N bin of both on a synthetic star field with a truth list,
# and (bench/extract_vs_sextractor_sim.sh; SIM=0 skips it) completeness, purity and centroids of
# both on the simulated demo night's calibrated frames against the simulator's truth.
#
#   bench/extract_vs_sextractor.sh [FRAME.fits ...]
#
# Needs: source-extractor (apt-get install -y source-extractor). Builds the extract_fits example
# in release mode (CARGO_TARGET_DIR, default /work/targets/extract).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fixtures="${FIXTURES:-$root/../shared/fixtures/images}"
[ -d "$fixtures" ] || fixtures=/work/shared/fixtures/images
runs="${RUNS:-7}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/extract}"

if [ "$#" -gt 0 ]; then
  frames=("$@")
else
  frames=(
    "$fixtures/eso_ntt_emmi_galaxies.fits"
    "$fixtures/panoptes_kic8462852_20160909_unsolved.fits"
    "$fixtures/dss_poss1_m67_M6707HH.fits"
  )
fi

sex="$(command -v source-extractor || command -v sex || true)"
if [ -z "$sex" ]; then
  echo "source-extractor not found: apt-get install -y source-extractor" >&2
  exit 1
fi
share=/usr/share/source-extractor
[ -d "$share" ] || share=/usr/share/sextractor

(cd "$root" && cargo build -q --release -p nearby-tasks --example extract_fits)
ours="$CARGO_TARGET_DIR/release/examples/extract_fits"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/cat.param" <<'EOF'
NUMBER
X_IMAGE
Y_IMAGE
XWIN_IMAGE
YWIN_IMAGE
FLUX_AUTO
FLUXERR_AUTO
FLUX_APER(1)
FWHM_IMAGE
ELONGATION
FLAGS
EOF

# The same settings on both sides (SExtractor's defaults, DETECT_MINAREA 5).
sexargs=(-c /dev/null -PARAMETERS_NAME "$work/cat.param" -CATALOG_TYPE ASCII_HEAD
  -DETECT_THRESH 1.5 -ANALYSIS_THRESH 1.5 -DETECT_MINAREA 5 -FILTER Y
  -FILTER_NAME "$share/default.conv" -DEBLEND_NTHRESH 32 -DEBLEND_MINCONT 0.005
  -CLEAN Y -CLEAN_PARAM 1.0 -MASK_TYPE CORRECT -PHOT_APERTURES 5 -PHOT_AUTOPARAMS 2.5,3.5
  -SATUR_LEVEL 50000 -GAIN 0 -BACK_SIZE 64 -BACK_FILTERSIZE 3 -BACKPHOTO_TYPE GLOBAL
  -STARNNW_NAME "$share/default.nnw" -CHECKIMAGE_TYPE NONE -VERBOSE_TYPE QUIET
  -WRITE_XML N)

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Seconds of a command, median of $runs runs: CPU time (task-clock, from perf) when $1 is "cpu"
# and perf is there, wall-clock otherwise. CPU time is what a one-thread comparison needs on a
# busy machine; wall-clock is what the all-threads comparison needs.
time_cmd() {
  local kind="$1"; shift
  for _ in $(seq "$runs"); do
    if [ "$kind" = cpu ] && command -v perf >/dev/null; then
      perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ {print $1 / 1000}'
    else
      local t0 t1
      t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
      echo "$t1 - $t0" | bc -l
    fi
  done | median
}

ncpu="$(nproc)"
printf '%-45s %8s %8s %8s %9s | %9s %9s %6s | %9s %9s %6s | %9s\n' frame sex ours clean matched \
  "sex_1t_cpu" "our_1t_cpu" "x1t" "sex_${ncpu}t_wall" "our_${ncpu}t_wall" "x${ncpu}t" "our_alg_1t"
for f in "${frames[@]}"; do
  name="$(basename "$f")"
  "$sex" "$f" "${sexargs[@]}" -CATALOG_NAME "$work/sex.cat" -NTHREADS 1
  "$ours" run "$f" --threads 1 --param "$work/cat.param" --out "$work/ours.cat" > "$work/run.txt"
  cmp="$("$ours" compare "$work/ours.cat" "$work/sex.cat" --snr 10 --radius 1)"
  echo "$cmp" | sed "s|^|  $name: |" >&2
  nsex=$(echo "$cmp" | sed -n 's/.*sextractor=\([0-9]*\).*/\1/p')
  nours=$(echo "$cmp" | sed -n 's/^ours=\([0-9]*\).*/\1/p')
  clean=$(echo "$cmp" | sed -n 's/.*snr>10=\([0-9]*\).*/\1/p')
  frac=$(echo "$cmp" | sed -n 's/.*fraction=\([0-9.]*\).*/\1/p')
  # Speed: whole process (read FITS, extract, write the same catalog columns), median of $runs
# runs: one thread in CPU seconds, all threads in wall seconds.
  s1=$(time_cmd cpu "$sex" "$f" "${sexargs[@]}" -CATALOG_NAME "$work/s.cat" -NTHREADS 1)
  o1=$(time_cmd cpu "$ours" run "$f" --threads 1 --param "$work/cat.param" --out "$work/o.cat")
  sn=$(time_cmd wall "$sex" "$f" "${sexargs[@]}" -CATALOG_NAME "$work/s.cat" -NTHREADS "$ncpu")
  on=$(time_cmd wall "$ours" run "$f" --threads "$ncpu" --param "$work/cat.param" --out "$work/o.cat")
  alg=$("$ours" run "$f" --threads 1 --repeat "$runs" | sed -n 's/.*extract_s_median=\([0-9.]*\).*/\1/p')
  printf '%-45s %8s %8s %8s %9s | %9.4f %9.4f %6.2f | %9.4f %9.4f %6.2f | %9.4f\n' "$name" "$nsex" "$nours" \
    "$clean" "$frac" "$s1" "$o1" "$(echo "$s1 / $o1" | bc -l)" "$sn" "$on" "$(echo "$sn / $on" | bc -l)" "$alg"
done

echo
echo "Completeness on a synthetic 1024x1024 star field (Gaussian PSF sigma 1.3 px, sky noise 10 ADU;"
echo "S/N = flux / (noise sqrt(4 pi sigma^2)), matched within 1.5 px):"
"$ours" simulate "$work/sim.fits" "$work/truth.txt" --seed 7 >/dev/null
"$sex" "$work/sim.fits" "${sexargs[@]}" -CATALOG_NAME "$work/sex_sim.cat" -NTHREADS 1
"$ours" run "$work/sim.fits" --threads 1 --out "$work/nearby_sim.cat" >/dev/null
"$ours" completeness "$work/truth.txt" "$work/nearby_sim.cat" "$work/sex_sim.cat"

# The demo night's calibrated frames against the simulator's truth (SIM=0 skips it).
if [ "${SIM:-1}" != 0 ]; then
  echo
  "$root/bench/extract_vs_sextractor_sim.sh"
fi
