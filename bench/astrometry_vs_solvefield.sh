#!/usr/bin/env bash
# nearby's astrometry against astrometry.net's solve-field, on a real frame and real Tycho-2 stars.
#
# The frame is the PANOPTES one in tests/data (700x700, 10.3"/px; provenance in tests/data/
# PROVENANCE.md); the reference stars are Debian's Tycho-2 index files, which both tools read
# (apt-get install astrometry.net astrometry-data-tycho2-09-littleendian
# astrometry-data-tycho2-10-19-littleendian). Both get the same hint: a pointing within 1 degree
# and the scale within 10%. nearby's time is `nearby task extract` plus `nearby task astrometry`
# (solve-field finds its own sources). Prints the median wall time of RUNS runs of each and the
# ratio; whole processes, start-up included.
#
#   bench/astrometry_vs_solvefield.sh                  # builds nearby (release), RUNS=5
#   NEARBY=target/release/nearby RUNS=3 bench/astrometry_vs_solvefield.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUNS="${RUNS:-5}"
INDEX_DIR=/usr/share/astrometry
FRAME="$ROOT/tests/data/panoptes_kic8462852_20160909_solved.fits"

if ! command -v solve-field >/dev/null || ! ls "$INDEX_DIR"/index-tycho2-*.fits >/dev/null 2>&1; then
  echo "skipped: needs solve-field and the Tycho-2 index files in $INDEX_DIR" >&2
  exit 0
fi
if [ -z "${NEARBY:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet --bin nearby)
  NEARBY="${CARGO_TARGET_DIR:-$ROOT/target}/release/nearby"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
REFS=()
for f in "$INDEX_DIR"/index-tycho2-*.fits; do REFS+=(--input "refcat=$f"); done

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for i in $(seq "$RUNS"); do
  rm -rf "$TMP/n" "$TMP/sf"
  t0=$(now)
  "$NEARBY" task extract --input "image=$FRAME" --out "$TMP/n/ex" >/dev/null 2>"$TMP/n.log"
  "$NEARBY" task astrometry --with search_radius_arcmin=60 --with scale_tolerance=0.1 \
    --with ref_sigma_arcsec=0.3 --input "catalog=$TMP/n/ex/catalog.fits" \
    --input "image=$FRAME" "${REFS[@]}" --out "$TMP/n/as" >/dev/null 2>>"$TMP/n.log"
  t1=$(now)
  mkdir -p "$TMP/sf"
  solve-field --overwrite --no-plots --no-verify --ra 303.2 --dec 46.0 --radius 1 \
    --scale-units arcsecperpix --scale-low 9.3 --scale-high 11.3 --dir "$TMP/sf" "$FRAME" \
    >"$TMP/sf.log" 2>&1
  t2=$(now)
  grep -q "solved with index" "$TMP/sf.log" || { echo "solve-field did not solve" >&2; exit 1; }
  grep -q "HDU0: solved" "$TMP/n.log" || { cat "$TMP/n.log" >&2; echo "nearby did not solve" >&2; exit 1; }
  echo "$t0 $t1 $t2" | awk '{printf "%.3f %.3f\n", $2-$1, $3-$2}' >> "$TMP/times"
done

n=$(cut -d' ' -f1 "$TMP/times" | median)
s=$(cut -d' ' -f2 "$TMP/times" | median)
grep "HDU0: solved" "$TMP/n.log" | cut -c1-160
echo "median of $RUNS runs: nearby (extract + astrometry) ${n} s, solve-field ${s} s," \
  "solve-field / nearby = $(awk -v a="$s" -v b="$n" 'BEGIN {printf "%.1f", a / b}')x"
