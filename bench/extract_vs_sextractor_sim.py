#!/usr/bin/python3
"""Score nearby's extractor and SExtractor against the simulator's truth.

    extract_vs_sextractor_sim.py SEX SEX_SHARE EXTRACT_FITS WORK RUNDIR...

Each RUNDIR is the workdir of a `nearby demo`-style run (out/simulate/truth.json and
out/calibrate/KEY/{image,weight}.fits). Every CCD of every calibrated frame is split into a
single-HDU FITS file and run through source-extractor and nearby's extractor (the extract_fits
example) with the same settings, unweighted and with the calibrated inverse-variance map, then:

- completeness per truth S/N bin (a truth star counts as found when a detection lies within
  1.5 px; stars within 5 px of an edge or with a brighter star within 2 FWHM are left out, as in
  tests/night.rs; the truth S/N is the optimal one, flux / sqrt(flux + n_eff (sky + rn^2)), with
  n_eff the effective pixel count of the frame's pixelised Moffat PSF, as tests/night.rs does);
- purity: the fraction of clean (FLAGS=0, FLUX_AUTO/FLUXERR_AUTO > 10) detections within 1.5 px
  of a truth star or of an asteroid's trail; the calibrated frames keep their hot pixels and
  cosmic rays, which both extractors detect, so this is well below 1 for both. "+artifacts" also
  counts detections of the truth's artifacts as real, as tests/night.rs does;
- centroid RMS (per axis, X_IMAGE/Y_IMAGE and XWIN/YWIN) against the truth at S/N >= 50;
- the fraction of SExtractor's clean sources that nearby has within 1 px, and the median
  FLUX_AUTO ratio (nearby / SExtractor) over those pairs.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
from astropy.io import fits

BINS = [(3, 5), (5, 7), (7, 10), (10, 20), (20, 50), (50, math.inf)]
PARAMS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "FLUX_AUTO",
          "FLUXERR_AUTO", "FLAGS"]


def sex_args(share, param):
    # The same settings as bench/extract_vs_sextractor.sh. GAIN and SATURATE come from the
    # header (SExtractor's GAIN_KEY/SATUR_KEY win over GAIN/SATUR_LEVEL; extract_fits reads the
    # same keys).
    return ["-c", "/dev/null", "-PARAMETERS_NAME", param, "-CATALOG_TYPE", "ASCII_HEAD",
            "-DETECT_THRESH", "1.5", "-ANALYSIS_THRESH", "1.5", "-DETECT_MINAREA", "5",
            "-FILTER", "Y", "-FILTER_NAME", f"{share}/default.conv", "-DEBLEND_NTHRESH", "32",
            "-DEBLEND_MINCONT", "0.005", "-CLEAN", "Y", "-CLEAN_PARAM", "1.0",
            "-MASK_TYPE", "CORRECT", "-PHOT_APERTURES", "5", "-PHOT_AUTOPARAMS", "2.5,3.5",
            "-SATUR_LEVEL", "50000", "-GAIN", "0", "-BACK_SIZE", "64", "-BACK_FILTERSIZE", "3",
            "-BACKPHOTO_TYPE", "GLOBAL", "-STARNNW_NAME", f"{share}/default.nnw",
            "-CHECKIMAGE_TYPE", "NONE", "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N",
            "-NTHREADS", "1"]


def read_ascii(path):
    names, rows = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                p = line[1:].split()
                if len(p) >= 2 and p[0].isdigit():
                    names.append((int(p[0]), p[1]))
            elif line.strip():
                rows.append([float(v) for v in line.split()])
    a = np.array(rows, dtype=float).reshape(len(rows), -1) if rows else np.zeros((0, 64))
    return {n: (a[:, i - 1] if a.shape[0] else np.zeros(0)) for i, n in names}


def moffat_neff(fwhm, beta, sub=5):
    """1 / sum(p^2) of a Moffat sampled on pixels (sub x sub points per pixel)."""
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    half = int(math.ceil(4 * fwhm)) + 2
    o = (np.arange(sub) + 0.5) / sub - 0.5
    c = np.arange(-half, half + 1)
    xs = (c[:, None] + o[None, :]).ravel()
    r2 = xs[:, None] ** 2 + xs[None, :] ** 2
    p = (1 + r2 / alpha**2) ** (-beta)
    n = 2 * half + 1
    p = p.reshape(n, sub, n, sub).sum(axis=(1, 3))
    p /= p.sum()
    return 1.0 / (p**2).sum()


def seg_dist(px, py, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    l2 = dx * dx + dy * dy
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / l2, 0, 1) if l2 > 0 else 0.0
    return np.hypot(px - x0 - t * dx, py - y0 - t * dy)


def nearest(xs, ys, x, y):
    if len(xs) == 0:
        return -1, math.inf
    d = np.hypot(xs - x, ys - y)
    i = int(np.argmin(d))
    return i, float(d[i])


def main():
    sex, share, ours, work = sys.argv[1:5]
    rundirs = sys.argv[5:]
    param = os.path.join(work, "sim.param")
    with open(param, "w") as f:
        f.write("\n".join(PARAMS) + "\n")
    sargs = sex_args(share, param)
    modes = ["unweighted", "weighted"]
    tools = ["sex", "nearby"]
    # Per mode and tool: per-bin [want, found]; purity [clean, real]; centroid residuals.
    comp = {(m, t): [[0, 0] for _ in BINS] for m in modes for t in tools}
    pur = {(m, t): [0, 0, 0] for m in modes for t in tools}
    cen = {(m, t, k): [] for m in modes for t in tools for k in ("iso", "win")}
    cross = {m: [0, 0, []] for m in modes}  # sex clean, matched by nearby within 1 px, ratios
    counts = {(m, t): 0 for m in modes for t in tools}
    nimages = 0
    for rd in rundirs:
        truth = json.load(open(os.path.join(rd, "out/simulate/truth.json")))
        cfg = truth["config"]
        frames_by_date = {fr["date_obs"]: fr for fr in truth["frames"]}
        caldir = os.path.join(rd, "out/calibrate")
        for key in sorted(os.listdir(caldir)):
            img = fits.open(os.path.join(caldir, key, "image.fits"))
            wgt = fits.open(os.path.join(caldir, key, "weight.fits"))
            for hdu in img[1:]:
                h = hdu.header
                ccd_id = int(h["IMAGEID"])
                ccd = truth["ccds"][ccd_id - 1]
                date = h["DATE-OBS"]
                fr = next(f for k, f in frames_by_date.items() if k.startswith(date[:19]))
                ltv1, ltv2 = float(h.get("LTV1", 0)), float(h.get("LTV2", 0))
                nx, ny = h["NAXIS1"], h["NAXIS2"]
                base = os.path.join(work, f"{os.path.basename(rd)}_{key}_{h['EXTNAME']}")
                fits.PrimaryHDU(hdu.data, h).writeto(base + ".fits", overwrite=True)
                fits.PrimaryHDU(wgt[h["EXTNAME"]].data).writeto(base + ".w.fits", overwrite=True)
                nimages += 1
                cats = {}
                for m in modes:
                    ws = ["-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", base + ".w.fits"] \
                        if m == "weighted" else ["-WEIGHT_TYPE", "NONE"]
                    subprocess.run([sex, base + ".fits", *sargs, *ws, "-CATALOG_NAME",
                                    f"{base}.{m}.sex.cat"], check=True)
                    ow = ["--weight", base + ".w.fits"] if m == "weighted" else []
                    subprocess.run([ours, "run", base + ".fits", "--threads", "1", "--param",
                                    param, "--out", f"{base}.{m}.nearby.cat", *ow],
                                   check=True, stdout=subprocess.DEVNULL)
                    for t in tools:
                        cats[(m, t)] = read_ascii(f"{base}.{m}.{t}.cat")
                        counts[(m, t)] += len(cats[(m, t)]["X_IMAGE"])
                # Truth in calibrated pixels.
                fwhm = fr["seeing_fwhm_arcsec"] / cfg["pixel_scale_arcsec"]
                neff = moffat_neff(fwhm, cfg["moffat_beta"])
                b = fr["sky_e_per_px"] + ccd["read_noise_e"] ** 2
                stars = [s for s in fr["stars"] if s["ccd"] == ccd_id]
                sx = np.array([s["x"] + ltv1 for s in stars])
                sy = np.array([s["y"] + ltv2 for s in stars])
                sf = np.array([s["flux_e"] for s in stars])
                snr = sf / np.sqrt(sf + neff * b)
                segs = []
                for a in truth["asteroids"]:
                    for p in a["positions"]:
                        if p["frame"] != fr["index"] or p["ccd"] != ccd_id:
                            continue
                        mid = (p["x"] + ltv1, p["y"] + ltv2)
                        s0 = (p["x_start"] + ltv1, p["y_start"] + ltv2) \
                            if p.get("x_start") is not None else mid
                        s1 = (p["x_end"] + ltv1, p["y_end"] + ltv2) \
                            if p.get("x_end") is not None else mid
                        segs += [(*s0, *mid), (*mid, *s1)]
                # Artifacts, as tests/night.rs counts them for its purity: segments and boxes.
                asegs, boxes = [], []
                for art in truth["artifacts"]:
                    k = art["kind"]
                    if art.get("ccd", ccd_id) != ccd_id or \
                            art.get("frame", fr["index"]) != fr["index"]:
                        continue
                    if k == "hot_pixel":
                        asegs.append((art["x"] + ltv1, art["y"] + ltv2) * 2)
                    elif k == "bad_column":
                        asegs.append((art["x"] + ltv1, art["y0"] + ltv2,
                                      art["x"] + ltv1, art["y1"] + ltv2))
                    elif k == "dust_ring":
                        r = art["r_outer_px"]
                        boxes.append((art["x"] + ltv1 - r, art["y"] + ltv2 - r,
                                      art["x"] + ltv1 + r, art["y"] + ltv2 + r))
                    elif k == "cosmic_ray":
                        a = math.radians(art["angle_deg"])
                        dx, dy = 0.5 * art["length_px"] * math.cos(a), \
                            0.5 * art["length_px"] * math.sin(a)
                        cx, cy = art["x"] + ltv1, art["y"] + ltv2
                        asegs.append((cx - dx, cy - dy, cx + dx, cy + dy))
                    elif k == "satellite":
                        asegs += [(g["x0"] + ltv1, g["y0"] + ltv2, g["x1"] + ltv1, g["y1"] + ltv2)
                                  for g in art["segments"] if g["ccd"] == ccd_id]
                    elif k == "bleed":
                        boxes.append((art["x0"] + ltv1, art["y0"] + ltv2, art["x1"] + ltv1,
                                      art["y1"] + ltv2))
                trails = []
                for art in truth["artifacts"]:
                    if art["kind"] == "satellite" and art["frame"] == fr["index"]:
                        trails += [(g["x0"] + ltv1, g["y0"] + ltv2, g["x1"] + ltv1, g["y1"] + ltv2)
                                   for g in art["segments"] if g["ccd"] == ccd_id]
                for m in modes:
                    for t in tools:
                        c = cats[(m, t)]
                        xs, ys = c["X_IMAGE"], c["Y_IMAGE"]
                        for i in range(len(stars)):
                            x, y = sx[i], sy[i]
                            if not (5 < x < nx - 5 and 5 < y < ny - 5):
                                continue
                            if any(seg_dist(x, y, *g) < 5 for g in trails):
                                continue
                            if np.any((np.hypot(sx - x, sy - y) < 2 * fwhm) & (sf >= sf[i])
                                      & (np.arange(len(stars)) != i)):
                                continue
                            j, d = nearest(xs, ys, x, y)
                            for k, (lo, hi) in enumerate(BINS):
                                if lo <= snr[i] < hi:
                                    comp[(m, t)][k][0] += 1
                                    comp[(m, t)][k][1] += d <= 1.5
                            if snr[i] >= 50 and d <= 1.5:
                                cen[(m, t, "iso")].append((xs[j] - x, ys[j] - y))
                                cen[(m, t, "win")].append((c["XWIN_IMAGE"][j] - x,
                                                           c["YWIN_IMAGE"][j] - y))
                        sn = c["FLUX_AUTO"] / np.where(c["FLUXERR_AUTO"] > 0,
                                                       c["FLUXERR_AUTO"], np.inf)
                        clean = (c["FLAGS"] == 0) & (sn > 10)
                        for x, y in zip(xs[clean], ys[clean]):
                            pur[(m, t)][0] += 1
                            real = len(sx) and np.min(np.hypot(sx - x, sy - y)) <= 1.5
                            real = real or any(seg_dist(x, y, *g) <= 1.5 for g in segs)
                            pur[(m, t)][1] += bool(real)
                            real = real or any(seg_dist(x, y, *g) <= 1.5 for g in asegs) or any(
                                b[0] - 1.5 <= x <= b[2] + 1.5 and b[1] - 1.5 <= y <= b[3] + 1.5
                                for b in boxes)
                            pur[(m, t)][2] += bool(real)
                    s, o = cats[(m, "sex")], cats[(m, "nearby")]
                    sn = s["FLUX_AUTO"] / np.where(s["FLUXERR_AUTO"] > 0, s["FLUXERR_AUTO"],
                                                   np.inf)
                    for i in np.nonzero((s["FLAGS"] == 0) & (sn > 10))[0]:
                        cross[m][0] += 1
                        j, d = nearest(o["X_IMAGE"], o["Y_IMAGE"], s["X_IMAGE"][i],
                                       s["Y_IMAGE"][i])
                        if d <= 1.0:
                            cross[m][1] += 1
                            if s["FLUX_AUTO"][i] > 0:
                                cross[m][2].append(o["FLUX_AUTO"][j] / s["FLUX_AUTO"][i])

    def rms(v):
        if not v:
            return float("nan")
        a = np.array(v)
        return float(np.sqrt(np.mean(a**2) / 2))  # per axis

    print(f"{len(rundirs)} simulated nights, {nimages} calibrated CCD images "
          f"(seeds: {' '.join(os.path.basename(r) for r in rundirs)})")
    binhdr = " ".join(f"{(f'{lo}-{hi}' if hi < math.inf else f'{lo}+'):>13}" for lo, hi in BINS)
    bad = []
    for m in modes:
        print()
        print(f"== {m} (SExtractor {'MAP_WEIGHT' if m == 'weighted' else 'no weight'}, "
              f"extract_fits {'--weight' if m == 'weighted' else 'no weight'}) ==")
        print(f"completeness by truth S/N (found/want within 1.5 px):")
        print(f"{'':8} {binhdr}")
        for t in tools:
            cells = []
            for want, found in comp[(m, t)]:
                cells.append(f"{found / want if want else float('nan'):.3f} ({found:>4}/{want:<4})"
                             if want else f"{'-':>13}")
            print(f"{t:8} " + " ".join(f"{c:>13}" for c in cells))
        for k, (lo, hi) in enumerate(BINS):
            (ws, fs), (wo, fo) = comp[(m, "sex")][k], comp[(m, "nearby")][k]
            if ws and fo / wo < fs / ws:
                bad.append(f"{m}: S/N {lo}-{hi}: nearby {fo}/{wo} = {fo / wo:.3f} < "
                           f"SExtractor {fs}/{ws} = {fs / ws:.3f}")
        print(f"{'':8} {'sources':>8} {'purity(clean S/N>10)':>24} {'+artifacts':>24} "
              f"{'cen_rms_iso':>12} "
              f"{'cen_rms_win':>12} {'n(S/N>=50)':>10}")
        for t in tools:
            c, r, ra = pur[(m, t)]
            print(f"{t:8} {counts[(m, t)]:>8} {f'{r / c if c else math.nan:.4f} ({r}/{c})':>24} "
                  f"{f'{ra / c if c else math.nan:.4f} ({ra}/{c})':>24} "
                  f"{rms(cen[(m, t, 'iso')]):>12.4f} {rms(cen[(m, t, 'win')]):>12.4f} "
                  f"{len(cen[(m, t, 'iso')]):>10}")
        n, k, ratios = cross[m]
        print(f"SExtractor clean sources (FLAGS=0, S/N>10) nearby has within 1 px: "
              f"{k}/{n} = {k / n if n else math.nan:.4f}; median FLUX_AUTO ratio (nearby/sex) "
              f"{np.median(ratios) if ratios else math.nan:.4f}")
    print()
    if bad:
        print("NEARBY COMPLETENESS BELOW SEXTRACTOR'S:")
        for b_ in bad:
            print("  " + b_)
    else:
        print("nearby's completeness >= SExtractor's in every S/N bin, both modes")


if __name__ == "__main__":
    main()
