#!/usr/bin/env bash
# `known` at catalogue scale: the demo night's tracklets matched against 10^5 and 10^6 orbits
# (synthetic MPCORB lines: the 14 real orbits of pipelines/demo-data/known.mpcorb repeated with
# random mean anomaly and node, so objects spread over the sky), with DE421. Prints the wall
# and CPU time of `nearby task known` and of the same run with no tracklets (reading and parsing
# the file only), and the task's log line (objects kept by the two-body prefilter).
#
#   bench/known_scale.sh                  # needs .cache/de421.bsp (.ci/fetch-de421.sh)
#   SIZES="100000 1000000" NEARBY=target/release/nearby bench/known_scale.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
nearby="${NEARBY:-${CARGO_TARGET_DIR:-$root/target}/release/nearby}"
[ -x "$nearby" ] || (cd "$root" && cargo build -q --release -p nearby)
spk="${NEARBY_SPK:-$root/.cache/de421.bsp}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$nearby" demo --workdir "$work/demo" -q >/dev/null
link="$work/demo/out/link"
python3 - "$link/tracklets.json" "$work/empty.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); t["tracklets"] = []; json.dump(t, open(sys.argv[2], "w"))
PY
for n in ${SIZES:-100000 1000000}; do
    python3 - "$root/pipelines/demo-data/known.mpcorb" "$work/orbits.mpcorb" "$n" <<'PY'
import random, sys
random.seed(1)
base = [l.rstrip("\n") for l in open(sys.argv[1]) if l[:1].strip() and l[:1] not in "-M"]
with open(sys.argv[2], "w") as f:
    for i in range(int(sys.argv[3])):
        l = base[i % len(base)]
        # MPCORB columns 27-35: mean anomaly; 49-57: longitude of the ascending node.
        l = l[:26] + f"{random.uniform(0, 360):9.5f}" + l[35:48] + f"{random.uniform(0, 360):9.5f}" + l[57:]
        f.write(l + "\n")
PY
    for tracklets in "$link/tracklets.json" "$work/empty.json"; do
        rm -rf "$work/out"
        what=$([ "$tracklets" = "$work/empty.json" ] && echo "read+parse only" || echo "match")
        /usr/bin/time -f "$n orbits, $what: %e s wall, %U s user, %M KB max RSS" \
            "$nearby" task known --input tracklets="$tracklets" --input observations="$link/observations.json" \
            --input elements="$work/orbits.mpcorb" --input spk="$spk" --out "$work/out" 2>&1 \
            | grep -v '^known\s\|^observations\s'
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
