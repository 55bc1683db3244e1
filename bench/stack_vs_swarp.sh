#!/usr/bin/env bash
# The `stack` task kind against SWarp (Debian `swarp`, /usr/bin/SWarp) on the same simulated
# calibrated frames and the same output grid: N dithered, slightly rotated SIZE x SIZE frames
# with weight maps (bench/stack_vs_swarp.py make). nearby stacks first (grid from the
# footprints); SWarp gets that grid as coadd.head, RESAMPLING_TYPE LANCZOS3, SUBTRACT_BACK N,
# MAP_WEIGHT weights, and COMBINE_TYPE MEDIAN or WEIGHTED (nearby: median, weighted_mean,
# subtract_sky false). Prints the aperture-flux ratio nearby/SWarp on the stars and against the
# truth, the wall and CPU (user + system) time per stack (median of $RUNS, whole process: read,
# resample, combine, write) and the speed ratios. Both use every core; on a shared machine the
# CPU time is the steadier measure.
#
#   bench/stack_vs_swarp.sh          # N=5 SIZE=2048 RUNS=3; builds nearby in release
#                                    # (CARGO_TARGET_DIR, default /work/targets/perf)
#   NEARBY=path/to/nearby SIZE=1024 bench/stack_vs_swarp.sh    # a given binary, smaller frames
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${RUNS:-3}"
n="${N:-5}"
size="${SIZE:-2048}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/perf}"
if [ -z "${NEARBY:-}" ]; then
  (cd "$root" && cargo build -q --release -p nearby)
fi
nearby="${NEARBY:-$CARGO_TARGET_DIR/release/nearby}"
swarp="${SWARP:-/usr/bin/SWarp}"
py=/usr/bin/python3

work="${WORK:-$(mktemp -d)}"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images" "$work/weights"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "making $n frames of ${size}x${size} in $work ..." >&2
[ -e "$work/truth.txt" ] || "$py" "$root/bench/stack_vs_swarp.py" make "$work" "$n" "$size"
images=$(ls "$work"/images/*.fits | paste -sd, -)
weights=$(ls "$work"/weights/*.fits | paste -sd, -)

echo "cores: $(nproc); SWarp: $("$swarp" -v 2>&1 | head -1)"
for combine in median weighted; do
  ours=$([ "$combine" = median ] && echo median || echo weighted_mean)
  theirs=$([ "$combine" = median ] && echo MEDIAN || echo WEIGHTED)
  t_n=(); t_s=(); c_n=(); c_s=()
  for r in $(seq "$runs"); do
    rm -rf "$work/nearby_$combine" "$work/swarp_$combine"
    mkdir -p "$work/swarp_$combine/tmp"
    /usr/bin/time -f "%e %U %S" -o "$work/time_n" \
    "$nearby" task stack --input "images=$work/images" --input "weights=$work/weights" \
      --with combine="$ours" --with kernel=lanczos3 --with subtract_sky=false \
      --out "$work/nearby_$combine" >/dev/null 2>"$work/nearby_$combine.log"
    "$py" "$root/bench/stack_vs_swarp.py" head "$work/nearby_$combine/stack.fits" \
      "$work/swarp_$combine/coadd.head"
    (cd "$work/swarp_$combine" && /usr/bin/time -f "%e %U %S" -o "$work/time_s" "$swarp" $(echo "$images" | tr , ' ') \
      -IMAGEOUT_NAME coadd.fits -WEIGHTOUT_NAME coadd.weight.fits \
      -WEIGHT_TYPE MAP_WEIGHT -WEIGHT_IMAGE "$weights" \
      -RESAMPLING_TYPE LANCZOS3 -COMBINE_TYPE "$theirs" -SUBTRACT_BACK N \
      -RESAMPLE_DIR tmp -DELETE_TMPFILES Y -NTHREADS 0 \
      -WRITE_XML N -VERBOSE_TYPE QUIET >/dev/null 2>"$work/swarp_$combine.log")
    read -r w u s < "$work/time_n"; t_n+=("$w"); c_n+=("$(echo "$u + $s" | bc -l)")
    read -r w u s < "$work/time_s"; t_s+=("$w"); c_s+=("$(echo "$u + $s" | bc -l)")
  done
  tn=$(printf '%s\n' "${t_n[@]}" | median); ts=$(printf '%s\n' "${t_s[@]}" | median)
  cn=$(printf '%s\n' "${c_n[@]}" | median); cs=$(printf '%s\n' "${c_s[@]}" | median)
  echo "== $combine (nearby $ours vs SWarp $theirs), $n frames of ${size}x${size}"
  "$py" "$root/bench/stack_vs_swarp.py" flux "$work/truth.txt" \
    "$work/nearby_$combine/stack.fits" "$work/swarp_$combine/coadd.fits" \
    | sed 's|A/B|nearby/SWarp|; s|A/truth|nearby/truth|; s|B/truth|SWarp/truth|'
  printf 'wall per stack (median of %s): nearby %.2f s, SWarp %.2f s, SWarp/nearby %.2fx\n' \
    "$runs" "$tn" "$ts" "$(echo "$ts / $tn" | bc -l)"
  printf 'CPU per stack (median of %s): nearby %.2f s, SWarp %.2f s, SWarp/nearby %.2fx\n' \
    "$runs" "$cn" "$cs" "$(echo "$cs / $cn" | bc -l)"
done
