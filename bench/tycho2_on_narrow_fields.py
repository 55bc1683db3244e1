#!/usr/bin/python3
"""How many Tycho-2 stars fall on the narrow real frames, i.e. whether a real offline reference exists.

    bench/tycho2_on_narrow_fields.py [FIXTURES_DIR]   # default ../shared/fixtures/images

For the LCO 0.4 m BANZAI frame, the DSS POSS-I M67 plate and the SAAO streak frame: reads each
frame's header WCS (for LCO it is marked failed, WCSERR=4, so its footprint is only roughly
right), queries every Debian Tycho-2 index file in /usr/share/astrometry with astrometry.net's
query-starkd in a cone around the frame's centre, merges the files' stars (the same star is in
several scale bands; duplicates within 1" are dropped; the cone is the frame's half-diagonal
plus 5%) and counts those whose pixel position
through the header WCS lies on the frame, with the V_T magnitude range. These are the only real
reference stars offline; a solve or a check of the published WCS needs them.
"""
import glob
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

warnings.simplefilter("ignore")

FRAMES = ["lco0m4_kb29_20160625_2010NY65_banzai.fits.fz", "dss_poss1_m67_M6707HH.fits",
          "ystar_saao_streak_long.fits"]


def image_hdu(path):
    for h in fits.open(path):
        if h.header.get("NAXIS", 0) == 2 and h.data is not None and h.data.ndim == 2:
            return h
    raise SystemExit(f"{path}: no 2-D image HDU")


def tycho2_cone(ra, dec, radius, work):
    ras, decs, mags = [], [], []
    for i, index in enumerate(sorted(glob.glob("/usr/share/astrometry/index-tycho2-*.fits"))):
        out = os.path.join(work, f"q{i}.fits")
        subprocess.run(["query-starkd", "-r", str(ra), "-d", str(dec), "-R", str(radius), "-T",
                        "-o", out, index], check=True, capture_output=True)
        if not os.path.exists(out):
            continue  # no star of this file in the cone
        d = fits.open(out)[1].data
        ras.append(d["RA"]), decs.append(d["DEC"]), mags.append(d["MAG_VT"])
    if not ras:
        return np.empty(0), np.empty(0), np.empty(0)
    ra, dec, mag = np.concatenate(ras), np.concatenate(decs), np.concatenate(mags)
    keep = []
    for k in range(len(ra)):
        sep = np.hypot((ra[keep] - ra[k]) * np.cos(np.radians(dec[k])), dec[keep] - dec[k])
        if not np.any(sep < 1 / 3600):
            keep.append(k)
    return ra[keep], dec[keep], mag[keep]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "images")
    print(f"{'frame':46s} {'size px':>10s} {'arcsec/px':>10s} {'field':>12s} "
          f"{'in cone':>8s} {'on frame':>9s} {'V_T range':>10s}")
    for name in FRAMES:
        h = image_hdu(os.path.join(root, name))
        w = WCS(h.header)
        ny, nx = h.data.shape
        ra, dec = w.all_pix2world([[(nx + 1) / 2, (ny + 1) / 2]], 1)[0]
        scale = np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600
        radius = np.hypot(nx, ny) / 2 * scale / 3600 * 1.05
        with tempfile.TemporaryDirectory() as work:
            sra, sdec, mag = tycho2_cone(ra, dec, radius, work)
        n, rng = 0, "-"
        if len(sra):
            px = w.all_world2pix(np.c_[sra, sdec], 1, quiet=True)
            on = (px[:, 0] > 0.5) & (px[:, 1] > 0.5) & (px[:, 0] < nx + 0.5) & (px[:, 1] < ny + 0.5)
            n = int(on.sum())
            if n:
                rng = f"{mag[on].min():.1f}-{mag[on].max():.1f}"
        field = f"{nx * scale / 60:.1f}'x{ny * scale / 60:.1f}'"
        print(f"{name:46s} {f'{nx}x{ny}':>10s} {scale:>10.2f} {field:>12s} {len(sra):>8d} {n:>9d} "
              f"{rng:>10s}")


if __name__ == "__main__":
    main()
