#!/usr/bin/env bash
# Thread scaling of the extractor: the same frame extracted with 1 thread and with every core
# (rayon pool of N), in one process each, by the extract_fits harness
# (tasks/benches/support/extract_fits.rs). Prints the median extraction time of $REPEAT runs per
# thread count (reading and writing excluded) and the speed-up over one thread.
#
#   bench/extract_threads.sh                 # a simulated 4096 x 4096 star field, REPEAT=7
#   FRAME=path/to/image.fits bench/extract_threads.sh
#   SIZE=2048 REPEAT=11 bench/extract_threads.sh
# Builds the harness in release (CARGO_TARGET_DIR, default target/). On a shared machine the
# speed-up is bounded by what the other work leaves free: the load average is printed with it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build -q --release -p nearby-tasks --example extract_fits)
harness="$CARGO_TARGET_DIR/release/examples/extract_fits"
size="${SIZE:-4096}"
repeat="${REPEAT:-7}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
frame="${FRAME:-}"
if [ -z "$frame" ]; then
    frame="$work/field.fits"
    "$harness" simulate "$frame" "$work/truth.txt" --seed 3 --size "$size" >/dev/null
fi
cores="$(nproc)"
declare -A median
for n in 1 "$cores"; do
    line="$("$harness" run "$frame" --threads "$n" --repeat "$repeat" | grep -o 'extract_s_median=[0-9.]*')"
    median[$n]="${line#extract_s_median=}"
    echo "threads $n: extraction $(printf %.3f "${median[$n]}") s (median of $repeat)"
done
python3 -c "import sys; print(f'speed-up with {sys.argv[3]} threads: {float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" \
    "${median[1]}" "${median[$cores]}" "$cores"
echo "frame: $frame; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
