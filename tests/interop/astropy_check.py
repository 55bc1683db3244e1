#!/usr/bin/python3
"""Opens a simulated night with astropy, as an astronomer would, and checks what nearby wrote.

Usage: /usr/bin/python3 tests/interop/astropy_check.py SIMULATE_OUTPUT_DIR

Checks: every science frame opens as a multi-extension file (empty primary, one uint16 image
HDU per CCD, tile-compressed or not); the headers have the keys a real night has and they parse
(DATE-OBS as a time that matches MJD-OBS, RA/DEC as sexagesimal); each CCD's WCS loads in
astropy.wcs without warnings and puts the truth's stars within the pointing error of where they
are, the same offset for all of them (distortion aside); the reference catalog reads as a table
with units. Exits non-zero with a message on the first failure.
"""
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
import astropy.units as u
from astropy.wcs import WCS


def fail(msg):
    print(f"astropy check FAILED: {msg}")
    sys.exit(1)


def star_at(s, epoch, ref_epoch):
    dt = epoch - ref_epoch
    dec = s["dec_deg"] + s["pmdec_mas_per_yr"] * dt / 3.6e6
    ra = s["ra_deg"] + s["pmra_mas_per_yr"] * dt / 3.6e6 / math.cos(math.radians(s["dec_deg"]))
    return ra % 360.0, dec


def main(out):
    truth = json.loads((out / "truth.json").read_text())
    cfg = truth["config"]
    stars = {s["id"]: s for s in truth["stars"]}
    frames = [l for l in (out / "frames.txt").read_text().splitlines() if l.strip()]
    science = [f for f in truth["frames"] if f["kind"] == "science"]
    if len(frames) != len(science):
        fail(f"frames.txt lists {len(frames)} frames, the truth {len(science)}")
    n_ccds = cfg["n_ccds"]
    checked_stars = 0
    for name, fr in zip(frames, science):
        path = out / name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hdul = fits.open(path)
            hdul.verify("exception")
        if len(hdul) != 1 + n_ccds:
            fail(f"{name}: {len(hdul)} HDUs, expected 1 + {n_ccds}")
        p = hdul[0].header
        if hdul[0].data is not None:
            fail(f"{name}: the primary HDU holds data")
        for key in ["DATE-OBS", "EXPTIME", "IMAGETYP", "FILTER", "OBJECT", "RA", "DEC", "MJD-OBS"]:
            if key not in p:
                fail(f"{name}: primary header lacks {key}")
        t = Time(p["DATE-OBS"], format="isot", scale="utc")
        if abs(t.mjd - p["MJD-OBS"]) > 1e-6:
            fail(f"{name}: DATE-OBS {p['DATE-OBS']} is not MJD-OBS {p['MJD-OBS']}")
        if p["IMAGETYP"] != "object" or p["EXPTIME"] != cfg["exptime_secs"]:
            fail(f"{name}: IMAGETYP {p['IMAGETYP']!r} EXPTIME {p['EXPTIME']}")
        pointing = SkyCoord(p["RA"], p["DEC"], unit=(u.hourangle, u.deg))
        epoch = 2000.0 + (fr["mjd_start"] + fr["exptime_secs"] / 172800.0 - 51544.5) / 365.25
        for k in range(1, n_ccds + 1):
            h = hdul[k]
            hd = h.header
            if hd["EXTNAME"] != f"CCD{k}" or hd["IMAGEID"] != k:
                fail(f"{name}[{k}]: EXTNAME {hd['EXTNAME']} IMAGEID {hd['IMAGEID']}")
            data = h.data
            if data.dtype != np.uint16:
                fail(f"{name}[{k}]: data type {data.dtype}, expected uint16 (BZERO 32768)")
            ccd = truth["ccds"][k - 1]
            if data.shape != (ccd["raw_height"], ccd["raw_width"]):
                fail(f"{name}[{k}]: shape {data.shape}")
            for key in ["GAIN", "RDNOISE", "SATURATE", "BIASSEC", "TRIMSEC", "DATASEC", "CCDNAME"]:
                if key not in hd:
                    fail(f"{name}[{k}]: lacks {key}")
            # Overscan holds the bias: close to the truth's level.
            x1, x2 = [int(v) for v in hd["BIASSEC"].strip("[]").split(",")[0].split(":")]
            level = np.median(data[:, x1 - 1:x2])
            if abs(level - ccd["bias_adu"]) > 10:
                fail(f"{name}[{k}]: overscan median {level}, bias {ccd['bias_adu']}")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                w = WCS(hd)
            if not w.has_celestial or list(w.wcs.ctype) != ["RA---TAN", "DEC--TAN"]:
                fail(f"{name}[{k}]: WCS {w.wcs.ctype}")
            on = [s for s in fr["stars"] if s["ccd"] == k]
            if not on:
                continue
            xy = np.array([[s["x"], s["y"]] for s in on])
            world = w.all_pix2world(xy, 1)
            true = np.array([star_at(stars[s["star"]], epoch, cfg["refcat_epoch"]) for s in on])
            c_hdr = SkyCoord(world[:, 0], world[:, 1], unit="deg")
            c_true = SkyCoord(true[:, 0], true[:, 1], unit="deg")
            dra, ddec = c_true.spherical_offsets_to(c_hdr)
            off = np.hypot(np.median(dra.arcsec), np.median(ddec.arcsec))
            # The header pointing is off by the pointing error, at most pointing_error_arcmin.
            if off > cfg["pointing_error_arcmin"] * 60.0 * 1.05 + 5.0:
                fail(f"{name}[{k}]: header WCS off by {off:.1} arcsec")
            # After the offset only distortion, rotation and scale remain: under 1% of the
            # distance from the optical axis, at most a few tens of arcsec.
            resid = np.hypot(dra.arcsec - np.median(dra.arcsec), ddec.arcsec - np.median(ddec.arcsec))
            if resid.max() > 60.0:
                fail(f"{name}[{k}]: residuals up to {resid.max():.1f} arcsec")
            checked_stars += len(on)
        if pointing.separation(SkyCoord(hdul[1].header["CRVAL1"], hdul[1].header["CRVAL2"], unit="deg")).arcsec > 1.0:
            fail(f"{name}: RA/DEC and CRVAL disagree")
        hdul.close()
    ref = Table.read(out / "refcat.fits", hdu="REFCAT")
    for col, unit in [("RA", u.deg), ("DEC", u.deg), ("PMRA", u.mas / u.yr), ("PMDEC", u.mas / u.yr), ("MAG", u.mag)]:
        if col not in ref.colnames or ref[col].unit != unit:
            fail(f"refcat column {col}: {ref[col].unit if col in ref.colnames else 'missing'}")
    n_ref = sum(1 for s in truth["stars"] if s["in_refcat"])
    if len(ref) != n_ref:
        fail(f"refcat has {len(ref)} rows, the truth {n_ref} reference stars")
    if float(ref.meta.get("EPOCH", 0)) != cfg["refcat_epoch"]:
        fail(f"refcat EPOCH {ref.meta.get('EPOCH')}")
    print(f"astropy check OK: {len(frames)} frames x {n_ccds} CCDs, {checked_stars} star "
          f"positions through the header WCS, {len(ref)} reference stars")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    main(Path(sys.argv[1]))
