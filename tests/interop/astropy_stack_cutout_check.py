#!/usr/bin/python3
"""Opens what the `stack` and `cutout` kinds write with astropy and checks it against nearby.

Usage: /usr/bin/python3 tests/interop/astropy_stack_cutout_check.py DIR

DIR holds expected.json (written by tasks/tests/astropy_stack_cutout.rs: sky positions nearby
computes for some stack pixels, the parent frames), stack/stack.fits and cutout/. Checks: the
stack's WCS loads in astropy and agrees with nearby's to 1e-9 deg; each cutout file's primary HDU
is a float32 cube (exposures, size, size) and each EXP HDU's WCS maps cutout pixel (i, j) where
the parent frame's WCS maps (i + CUTX0, j + CUTY0), to 1e-9 deg, with the cube plane equal to the
parent's pixels; the PNG previews decode (zlib, chunk CRCs) to the stated size.
"""
import json
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def fail(msg):
    print(f"astropy check FAILED: {msg}")
    sys.exit(1)


def png_size(path):
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path}: not a PNG")
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            fail(f"{path}: bad CRC in chunk {kind}")
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    w, h = size
    if len(raw) != (w + 1) * h:
        fail(f"{path}: {len(raw)} bytes of scanlines, expected {(w + 1) * h}")
    return size


def main(d):
    exp = json.loads((d / "expected.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ws = WCS(fits.getheader(d / "stack" / "stack.fits"))
    for x, y, ra, dec in exp["stack_pixels"]:
        r, dd = ws.all_pix2world(x, y, 1)
        if abs(r - ra) > 1e-9 or abs(dd - dec) > 1e-9:
            fail(f"stack pixel ({x}, {y}): astropy {r}, {dd}; nearby {ra}, {dec}")
    parents = [fits.open(p) for p in exp["frames"]]
    n_checked = 0
    for t in json.loads((d / "cutout" / "cutouts.json").read_text())["targets"]:
        path = d / "cutout" / "cutouts" / t["fits"]
        with fits.open(path) as hdul:
            cube = hdul[0].data
            size = hdul[0].header["CUTSIZE"]
            if hdul[0].header["BITPIX"] != -32 or cube.shape != (len(parents), size, size):
                fail(f"{path}: cube {cube.shape}, expected ({len(parents)}, {size}, {size})")
            for k, parent in enumerate(parents):
                h = hdul[f"EXP{k + 1:03d}"].header
                if not h["ONFRAME"]:
                    continue
                ph = parent[h["PARHDU"]].header
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    wc, wp = WCS(h), WCS(ph)
                dx, dy = h["CUTX0"], h["CUTY0"]
                for i, j in [(1, 1), (size, size), (17.5, 40.25)]:
                    a = np.array(wc.all_pix2world(i, j, 1))
                    b = np.array(wp.all_pix2world(i + dx, j + dy, 1))
                    if np.max(np.abs(a - b)) > 1e-9:
                        fail(f"{path} EXP{k + 1}: pixel ({i}, {j}) at {a}, parent's ({i + dx}, {j + dy}) at {b}")
                pd = parent[h["PARHDU"]].data
                i, j = size // 2, size // 3
                if cube[k, j, i] != pd[j + dy, i + dx]:
                    fail(f"{path} EXP{k + 1}: plane pixel differs from the parent's")
                n_checked += 1
        w, hh = png_size(path.with_suffix(".png"))
        if (w, hh) != (len(parents) * size + (len(parents) - 1) * 2, size):
            fail(f"{path}: PNG {w}x{hh}")
    if n_checked == 0:
        fail("no cutout checked")
    print(f"astropy check OK: stack WCS, {n_checked} cutout planes and their previews")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
