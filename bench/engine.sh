#!/usr/bin/env bash
# The engine benchmark: nearby's own overhead on N trivial tasks, next to Snakemake's.
#
# What it measures, for each shape (see bench/gen.py for the exact pipelines) and each N:
#   - `nearby plan` time (dry run on an empty workdir),
#   - `nearby run -q` time (first run on an empty workdir: the YAML is parsed and compiled, and
#     everything runs) and its peak RSS,
#   - the second, identical `nearby run -q` ("nothing to do": all cache hits) and its peak RSS,
#   - per-task overhead: run time / N, and the marginal (run(N) - run(1)) / (N - 1),
#   - memory per task instance: (peak RSS at N - peak RSS of a 1-task run) / (N - 1),
#   - the same shape run by Snakemake (pip-installed into bench/.venv): first run and
#     "Nothing to be done" run, and the ratio Snakemake / nearby.
# Shapes: fanout (N noop instances, no outputs: the in-process floor), gather (N noop instances
# with one output file each + one gather task), chain (N noop tasks, each reading the previous
# one's output file), command (N `command` instances running `true`: the fork+exec floor).
#
# Targets (from the issue): in-process overhead <= 10 us per task; `command` tasks near the
# fork+exec floor (2-3 ms); nothing-to-do < 0.1 s at 10k and < 1 s at 100k tasks; < 1 KB of
# memory per task instance.
#
# Run from anywhere:
#   bench/engine.sh                 # N = 1000 10000 100000, 3 repetitions, Snakemake up to 10000
#   bench/engine.sh --quick         # N = 1000 10000
#   bench/engine.sh --ns "1000 5000" --reps 5 --shapes "fanout chain"
#   bench/engine.sh --snakemake-max 100000   # include Snakemake at 100k (can take very long)
#   bench/engine.sh --no-snakemake
#   bench/engine.sh --snakemake-reps 1        # fewer Snakemake repetitions (default: --reps)
#   bench/engine.sh --snakemake-args "--scheduler greedy"   # extra Snakemake arguments
#   bench/engine.sh --command-ns "1000 10000" # command shape at more N (default: 1000 only)
#   bench/engine.sh --jobs 2                  # nearby --jobs and Snakemake --cores (default: nproc)
#   bench/engine.sh --timeout 900             # per-command limit in seconds (default 600)
#   bench/engine.sh --nearby /path/to/nearby  # use this binary instead of building one
# Results: the table on stdout and in bench/out/results.md; raw measurements in
# bench/out/raw.tsv; scratch work directories under bench/out/work (deleted at the end unless
# --keep). Medians of --reps repetitions; every measurement is a whole process (start-up included).
# Wall time is taken with `date +%s%N` around `/usr/bin/time` (about 1 ms of its own).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$HERE/out"
WORK="$OUT/work"

NS="1000 10000 100000"
COMMAND_NS="1000"
SHAPES="fanout gather chain command"
REPS=3
SM_REPS=""
SM_MAX=10000
SM_ARGS=""
SNAKEMAKE=1
JOBS="$(nproc)"
TIMEOUT=600
KEEP=0
NEARBY=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) NS="1000 10000" ;;
    --ns) NS="$2"; shift ;;
    --command-ns) COMMAND_NS="$2"; shift ;;
    --shapes) SHAPES="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --snakemake-max) SM_MAX="$2"; shift ;;
    --snakemake-reps) SM_REPS="$2"; shift ;;
    --snakemake-args) SM_ARGS="$2"; shift ;;
    --no-snakemake) SNAKEMAKE=0 ;;
    --jobs) JOBS="$2"; shift ;;
    --timeout) TIMEOUT="$2"; shift ;;
    --keep) KEEP=1 ;;
    --nearby) NEARBY="$2"; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done

SM_REPS="${SM_REPS:-$REPS}"

log() { echo "bench: $*" >&2; }

# ---- setup ----

if [ -z "$NEARBY" ]; then
  log "building nearby (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin nearby)
  NEARBY="${CARGO_TARGET_DIR:-$ROOT/target}/release/nearby"
fi

if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (for peak RSS)"
  apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }
fi

SM=""
if [ "$SNAKEMAKE" = 1 ]; then
  if [ ! -x "$HERE/.venv/bin/snakemake" ]; then
    log "installing Snakemake into bench/.venv"
    if ! { python3 -m venv "$HERE/.venv" &&
           "$HERE/.venv/bin/pip" install -q --disable-pip-version-check snakemake; }; then
      log "cannot install Snakemake (no venv module, or pip cannot reach the registry):" \
          "skipping the Snakemake columns"
    fi
  fi
  if [ -x "$HERE/.venv/bin/snakemake" ]; then
    SM="$HERE/.venv/bin/snakemake"
  fi
fi

mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
RAW="$OUT/raw.tsv"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"; [ "$KEEP" = 1 ] || rm -rf "$WORK"' EXIT

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ); $(nproc) cores; $(uname -sr); nearby $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
  echo "# nearby binary $NEARBY ($(stat -c %y "$NEARBY" | cut -d. -f1)); --jobs $JOBS; $REPS repetitions (median); per-command limit ${TIMEOUT} s"
  if [ -n "$SM" ]; then
    echo "# Snakemake $("$SM" --version) --cores $JOBS, up to N = $SM_MAX, $SM_REPS repetitions${SM_ARGS:+, extra arguments: $SM_ARGS}"
  else
    echo "# Snakemake: not run"
  fi
} > "$RAW"

# ---- measuring ----

# measure TOOL SHAPE N PHASE REP EXPECT -- CMD...: runs CMD (stdout discarded, stderr kept),
# appends one row (wall s, peak RSS KB, status) to $RAW. EXPECT, if not empty, is an extended
# regex that stderr must match (e.g. " 0 ran," for nothing-to-do): else the status is "wrong".
measure() {
  local tool=$1 shape=$2 n=$3 phase=$4 rep=$5 expect=$6; shift 7
  local t0 t1 status=ok rc=0
  t0=$(date +%s%N)
  timeout "$TIMEOUT" /usr/bin/time -f '%M' -o "$TMP/rss" "$@" >/dev/null 2>"$TMP/err" || rc=$?
  t1=$(date +%s%N)
  if [ "$rc" = 124 ]; then
    status="timeout>${TIMEOUT}s"
  elif [ "$rc" != 0 ]; then
    status="failed"
    log "$tool $shape $n $phase failed (exit $rc):"
    tail -5 "$TMP/err" | sed 's/^/    /' >&2
  elif [ -n "$expect" ] && ! grep -Eq -- "$expect" "$TMP/err"; then
    status="wrong"
    log "$tool $shape $n $phase: output does not match /$expect/:"
    tail -3 "$TMP/err" | sed 's/^/    /' >&2
  fi
  local wall rss
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
  rss=$(tail -1 "$TMP/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$shape" "$n" "$phase" "$rep" "$wall" "$rss" "$status" >> "$RAW"
  log "$(printf '%-9s %-7s %7s %-4s rep %s: %8ss %7s KB %s' "$tool" "$shape" "$n" "$phase" "$rep" "$wall" "$rss" "$status")"
  [ "$status" = ok ]
}

# nearby: plan on an empty workdir, first run (on another empty workdir, so that it parses and
# compiles the YAML itself rather than reuse the plan `nearby plan` kept), second run (must be
# all cached).
bench_nearby() {
  local shape=$1 n=$2 dir=$3 rep wd
  for rep in $(seq "$REPS"); do
    wd="$dir/nearby-work"
    rm -rf "$wd" "$wd-plan"
    measure nearby "$shape" "$n" plan "$rep" "" -- \
      "$NEARBY" plan "$dir/pipeline.yaml" --workdir "$wd-plan" || return 0
    rm -rf "$wd-plan"
    measure nearby "$shape" "$n" run "$rep" "succeeded" -- \
      "$NEARBY" run "$dir/pipeline.yaml" --workdir "$wd" -q -j "$JOBS" || return 0
    measure nearby "$shape" "$n" ntd "$rep" " 0 ran, [0-9]+ cached, 0 failed" -- \
      "$NEARBY" run "$dir/pipeline.yaml" --workdir "$wd" -q -j "$JOBS" || return 0
  done
  rm -rf "$dir/nearby-work"
}

# Snakemake: first run, second run ("Nothing to be done").
bench_snakemake() {
  local shape=$1 n=$2 dir=$3 rep wd
  for rep in $(seq "$SM_REPS"); do
    wd="$dir/snakemake-work"
    rm -rf "$wd"
    mkdir -p "$wd"
    measure snakemake "$shape" "$n" run "$rep" "" -- \
      "$SM" --snakefile "$dir/Snakefile" --directory "$wd" --cores "$JOBS" --quiet all $SM_ARGS || return 0
    measure snakemake "$shape" "$n" ntd "$rep" "" -- \
      "$SM" --snakefile "$dir/Snakefile" --directory "$wd" --cores "$JOBS" --quiet all $SM_ARGS || return 0
  done
  rm -rf "$dir/snakemake-work"
}

for shape in $SHAPES; do
  ns="$NS"
  [ "$shape" = command ] && ns="$COMMAND_NS"
  # N = 1: the baseline for the marginal per-task time and the per-task memory.
  for n in 1 $ns; do
    dir="$WORK/$shape-$n"
    python3 "$HERE/gen.py" pipeline "$shape" "$n" "$dir"
    bench_nearby "$shape" "$n" "$dir"
    if [ -n "$SM" ] && [ "$n" -gt 1 ] && [ "$n" -le "$SM_MAX" ]; then
      bench_snakemake "$shape" "$n" "$dir"
    fi
    rm -rf "$dir"
  done
done

python3 "$HERE/gen.py" table "$RAW" "$OUT/results.md"
log "table written to bench/out/results.md (raw rows: bench/out/raw.tsv)"
