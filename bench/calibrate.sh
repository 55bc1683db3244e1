#!/usr/bin/env bash
# Throughput of the `calibrate` task kind on a full INT WFC field (4 CCDs of 2048x4100 raw
# pixels): simulate a night with `nearby simulate --preset int_wfc`, build the master bias and
# flat with `nearby task masters`, then time `nearby task calibrate` on one raw frame (whole
# process: read the MEF, overscan, trim, bias, flat, weight, write two MEFs). Reports MB/s of raw
# pixels (raw pixel bytes, BITPIX/8 each, over wall seconds; median of $RUNS runs) and Mpix/s,
# then the pure-algorithm criterion number (tasks/benches/calibrate.rs).
#
#   bench/calibrate.sh            # RUNS=3, builds nearby in release (CARGO_TARGET_DIR,
#                                 # default /work/targets/perf)
#   NO_CRITERION=1 bench/calibrate.sh
#   NEARBY=path/to/nearby bench/calibrate.sh   # time that binary instead of building one
#
# The frame, the masters and the outputs are in the page cache after the first run (the
# machine has the memory): the seconds are those of decoding, calibrating and encoding, not of
# a disk. Outputs are written but not synced, as a task's are (the engine syncs them later).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/perf}"
if [ -n "${NEARBY:-}" ]; then
  nearby="$NEARBY"   # a binary built already (another profile, or another commit to compare)
else
  (cd "$root" && cargo build -q --release -p nearby)
  nearby="$CARGO_TARGET_DIR/release/nearby"
fi

work="${WORK:-$(mktemp -d)}"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

echo "simulating an INT WFC night in $work/sim ..." >&2
[ -d "$work/sim/raw" ] || "$nearby" simulate --preset int_wfc --out "$work/sim" --n-exposures 2 >/dev/null
# The simulator writes calibration frames under calib/ and science frames under raw/.
science=()
while IFS= read -r f; do science+=("$f"); done < <(find "$work/sim/raw" -name '*.fits' | sort)
[ "${#science[@]}" -gt 0 ] || { echo "no science frame found under $work/sim/raw" >&2; exit 1; }
echo "masters from $(find "$work/sim/calib" -name '*.fits' | wc -l) calibration frames ..." >&2
"$nearby" task masters --input "calib=$work/sim/calib" --out "$work/masters" >/dev/null 2>"$work/masters.log"

frame="${science[0]}"
# Raw pixel bytes of the frame: sum over image HDUs of NAXIS1 * NAXIS2 * |BITPIX| / 8.
bytes=$(python3 - "$frame" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
pos, total, pix = 0, 0, 0
while pos < len(data):
    keys = {}
    while True:
        block = data[pos:pos + 2880]; pos += 2880
        cards = [block[i:i + 80].decode("ascii", "replace") for i in range(0, 2880, 80)]
        for c in cards:
            if c[8:10] == "= ":
                keys.setdefault(c[:8].strip(), c[10:].split("/")[0].strip())
        if any(c.startswith("END     ") or c.rstrip() == "END" for c in cards):
            break
    naxis = int(keys.get("NAXIS", 0))
    n = 1
    for i in range(1, naxis + 1):
        n *= int(keys["NAXIS%d" % i])
    n = n if naxis > 0 else 0
    b = abs(int(keys["BITPIX"])) // 8
    total += n * b; pix += n
    pos += -(-n * b // 2880) * 2880
print(total, pix)
EOF
)
read -r nbytes npix <<<"$bytes"

# CPU seconds (user + sys) and minor page faults of each run too, from GNU time when there is
# one: on a shared machine whose other work takes the cores, wall seconds measure the load.
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%U %S %R" -o "$work/time.txt")
times=() cpus=() faults=()
for i in $(seq "$runs"); do
  rm -rf "$work/cal"
  t0=$(now)
  "${timer[@]}" "$nearby" task calibrate --input "frame=$frame" \
    --input "bias=$work/masters/master_bias.fits" \
    --input "flat=$work/masters/master_flat.fits" --out "$work/cal" >/dev/null 2>"$work/task.log"
  t1=$(now)
  times+=("$(echo "$t1 - $t0" | bc -l)")
  if [ -n "${timer[*]}" ]; then
    read -r u s r <"$work/time.txt"
    cpus+=("$(echo "$u + $s" | bc -l)") faults+=("$r")
  fi
done
t=$(printf '%s\n' "${times[@]}" | median)
echo "frame: $(basename "$frame"): $npix raw pixels, $nbytes raw pixel bytes"
echo "nearby task calibrate, wall seconds per run: ${times[*]} (median $t)"
awk -v b="$nbytes" -v p="$npix" -v t="$t" 'BEGIN {
  printf "calibrate task: %.0f MB/s of raw pixels (%.0f MiB/s), %.1f Mpix/s, %.2f frames/s (median of runs)\n",
    b / t / 1e6, b / t / 1048576, p / t / 1e6, 1 / t }'
if [ "${#cpus[@]}" -gt 0 ]; then
  c=$(printf '%s\n' "${cpus[@]}" | median)
  echo "CPU seconds (user + sys) per run: ${cpus[*]} (median $c); minor page faults: ${faults[*]}"
  awk -v b="$nbytes" -v c="$c" 'BEGIN { printf "calibrate task: %.0f MB of raw pixels per CPU second\n", b / c / 1e6 }'
fi
echo "machine: $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -z "${NO_CRITERION:-}" ]; then
  echo
  echo "pure algorithm (criterion, tasks/benches/calibrate.rs):"
  (cd "$root" && cargo bench -q -p nearby-tasks --bench calibrate -- --warm-up-time 1 \
    --measurement-time 3 2>&1 | grep -E "time:|thrpt:|^[a-z_/]+" | grep -v "^Benchmarking" || true)
fi
