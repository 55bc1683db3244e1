#!/usr/bin/python3
"""Frames for bench/stack_vs_swarp.sh, and the flux comparison of the two stacks.

  stack_vs_swarp.py make DIR N SIZE       N dithered SIZE x SIZE frames (DIR/images, DIR/weights)
                                          and DIR/truth.txt (RA, Dec, flux per star)
  stack_vs_swarp.py head STACK HEAD       the SWarp .head holding the grid of nearby's stack
  stack_vs_swarp.py flux TRUTH A B        aperture fluxes of the stars on stacks A and B

Frames: 0.33"/px TAN, dithered by up to 40 px and rotated by up to 0.2 deg, 400 Gaussian stars
(FWHM 3.5 px, 2e3 to 2e5 ADU, pixel-integrated by 5x5 sub-sampling), sky 500 ADU, Gaussian noise
of the sky's Poisson level, weight 1/variance with one dead column per frame (weight 0).
Needs numpy and astropy (Debian python3-astropy).
"""
import sys
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

RA0, DEC0, SCALE = 150.0, 2.0, 0.33 / 3600.0


def frame_wcs(size, dx, dy, rot_deg):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [(size + 1) / 2 + dx, (size + 1) / 2 + dy]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = [[-SCALE * c, SCALE * s], [SCALE * s, SCALE * c]]
    return w


def make(out, n, size):
    rng = np.random.default_rng(42)
    nstar = 400
    # Stars within the central 90% of the undithered field.
    w0 = frame_wcs(size, 0, 0, 0)
    xy = rng.uniform(0.05 * size, 0.95 * size, (nstar, 2))
    ra, dec = w0.all_pix2world(xy[:, 0], xy[:, 1], 1)
    flux = np.exp(rng.uniform(np.log(2e3), np.log(2e5), nstar))
    np.savetxt(f"{out}/truth.txt", np.c_[ra, dec, flux], fmt="%.10f %.10f %.3f")
    sigma = 3.5 / 2.3548
    sub = (np.arange(5) - 2) / 5.0
    for k in range(n):
        dx, dy = rng.uniform(-40, 40, 2)
        rot = rng.uniform(-0.2, 0.2)
        w = frame_wcs(size, dx, dy, rot)
        img = np.full((size, size), 500.0, dtype=np.float64)
        x, y = w.all_world2pix(ra, dec, 1)
        for xs, ys, f in zip(x - 1, y - 1, flux):
            ix, iy = int(round(xs)), int(round(ys))
            x0, x1, y0, y1 = max(ix - 10, 0), min(ix + 11, size), max(iy - 10, 0), min(iy + 11, size)
            if x0 >= x1 or y0 >= y1:
                continue
            gx = np.arange(x0, x1)[None, :, None] + sub[None, None, :] - xs
            gy = np.arange(y0, y1)[:, None, None] + sub[None, None, :] - ys
            px = np.exp(-0.5 * (gx / sigma) ** 2).mean(axis=2)
            py = np.exp(-0.5 * (gy / sigma) ** 2).mean(axis=2)
            img[y0:y1, x0:x1] += f * py * px / (2 * np.pi * sigma**2)
        var = img.copy()
        img += rng.normal(0.0, 1.0, img.shape) * np.sqrt(var)
        weight = (1.0 / var).astype(np.float32)
        bad = int(rng.uniform(0.1, 0.9) * size)
        weight[:, bad] = 0.0
        img[:, bad] = 60000.0
        hdr = w.to_header()
        hdr["EXPTIME"] = 60.0
        hdr["MJD-OBS"] = 57000.0 + 0.003 * k
        fits.PrimaryHDU(img.astype(np.float32), hdr).writeto(f"{out}/images/f{k:02d}.fits", overwrite=True)
        fits.PrimaryHDU(weight, w.to_header()).writeto(f"{out}/weights/f{k:02d}.fits", overwrite=True)


def head(stack, out):
    h = fits.getheader(stack)
    keys = ["NAXIS", "NAXIS1", "NAXIS2", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2",
            "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "RADESYS", "EQUINOX"]
    lines = [fits.Card(k, h[k]).image for k in keys] + ["END".ljust(80)]
    open(out, "w").write("\n".join(lines) + "\n")


def aperture(img, x, y, r=8.0, r_in=12.0, r_out=18.0):
    """Sum within r minus the annulus median, at 0-based (x, y); None near NaN or the edge."""
    ix, iy = int(round(x)), int(round(y))
    n = int(r_out) + 1
    if ix - n < 0 or iy - n < 0 or ix + n >= img.shape[1] or iy + n >= img.shape[0]:
        return None
    cut = img[iy - n:iy + n + 1, ix - n:ix + n + 1]
    yy, xx = np.mgrid[iy - n:iy + n + 1, ix - n:ix + n + 1]
    d = np.hypot(xx - x, yy - y)
    if not np.all(np.isfinite(cut[d <= r_out])):
        return None
    sky = np.median(cut[(d >= r_in) & (d <= r_out)])
    return float(np.sum(cut[d <= r] - sky))


def flux(truth, a, b):
    t = np.loadtxt(truth)
    ia, ib = fits.getdata(a).astype(np.float64), fits.getdata(b).astype(np.float64)
    wa = WCS(fits.getheader(a))
    ratios, ta, tb = [], [], []
    for ra, dec, f in t:
        if f < 2e4:
            continue
        x, y = (float(v) for v in wa.all_world2pix(ra, dec, 0))
        fa, fb = aperture(ia, x, y), aperture(ib, x, y)
        if fa is None or fb is None or fb <= 0:
            continue
        ratios.append(fa / fb)
        ta.append(fa / f)
        tb.append(fb / f)
    r = np.array(ratios)
    p16, p50, p84 = np.percentile(r, [16, 50, 84])
    print(f"stars {len(r)}: flux ratio A/B median {p50:.4f} (16-84%: {p16:.4f}-{p84:.4f}); "
          f"A/truth {np.median(ta):.4f}, B/truth {np.median(tb):.4f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "head":
        head(sys.argv[2], sys.argv[3])
    elif cmd == "flux":
        flux(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {cmd}")
