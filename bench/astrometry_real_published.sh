#!/usr/bin/env bash
# The narrow real frames (the DSS POSS-I M67 plate, the SAAO streak frame) solved by `nearby task
# astrometry` from a degraded pointing, with a reference catalogue built from each frame's own
# published solution (the DSS plate polynomial, the SAAO header's TAN WCS), and the solved
# TAN-SIP compared with the published mapping across the field. See
# bench/astrometry_real_published.py for what it does and what it proves (and does not).
#
#   bench/astrometry_real_published.sh                    # dev build, orders 1,2,3, 4' offset
#   NEARBY=target/release/nearby bench/astrometry_real_published.sh
#   ORDERS=3 OFFSET_ARCMIN=5 KEEP=/tmp/published bench/astrometry_real_published.sh
#
# Needs /usr/bin/python3 with numpy and astropy. The frames are those in tests/data
# (FIXTURES=DIR to point elsewhere; provenance in tests/data/PROVENANCE.md).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-/usr/bin/python3}"
fixtures="${FIXTURES:-$root/tests/data}"
if [ -z "${NEARBY:-}" ]; then
  profile="${PROFILE:-dev}"
  (cd "$root" && cargo build -q --profile "$profile" --bin nearby)
  dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
  NEARBY="${CARGO_TARGET_DIR:-$root/target}/$dir/nearby"
fi
if [ -n "${KEEP:-}" ]; then
  work="$KEEP"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
"$python" "$root/bench/astrometry_real_published.py" --nearby "$NEARBY" --fixtures "$fixtures" \
  --work "$work" --orders "${ORDERS:-1,2,3}" --offset-arcmin "${OFFSET_ARCMIN:-4}" \
  --noise-arcsec "${NOISE_ARCSEC:-0.3}"
