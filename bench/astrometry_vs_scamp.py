#!/usr/bin/python3
"""nearby's astrometry against SCAMP on simulated frames, scored against the simulator's truth.

    astrometry_vs_scamp.py NEARBY SEX SEX_SHARE SCAMP WORK RUNDIR...

Set ANET=0 in the environment to leave astrometry.net out.

Each RUNDIR holds sim/ (`nearby simulate` output: truth.json, refcat.fits) and run/ (a
pipelines/nightly.yaml run over it: out/calibrate/KEY/image.fits, out/extract/KEY/catalog.fits).
For every calibrated frame:

- source-extractor writes a FITS_LDAC catalog of the frame (one LDAC_IMHEAD/LDAC_OBJECTS pair per
  CCD, windowed centroids);
- SCAMP solves it against a reference LDAC catalog written from the simulator's refcat, moved to
  the frame's epoch by the proper motions (ASTREF_CATALOG FILE, DISTORT_DEGREES 3, one thread,
  POSITION_MAXERR 6' as nearby's search radius);
- nearby's `astrometry` task solves the same LDAC catalog (and, separately, nearby's own extract
  catalog) against refcat.fits (it applies the proper motions itself), SIP order 3;
- astrometry.net (solve-field 0.93) solves each CCD of the same LDAC catalog (XWIN/YWIN, sorted
  by FLUX_AUTO, brightest first) against index files built by build-astrometry-index from the
  same reference stars SCAMP gets (the refcat at the frame's epoch), scale bands -P 0 to 6
  (quads of 2' to 22'; the CCD is 11.3' x 22.5', astrometry.net wants quads of 10% to 100% of
  the field), with a config naming only those indexes, --tweak-order 3 (SIP), and the hints
  nearby gets: the header's pointing at the CCD's centre within 6' and its scale within 5%.
  Building the indexes is timed apart (once per frame, as SCAMP's reference file is written).

Each solution is scored on every true star of the CCD: the distance (pixels) between the star's
true pixel position and where the solved WCS puts its true sky position at the epoch (astropy's
all_world2pix; SCAMP's TPV and nearby's SIP alike). A CCD counts as solved when a WCS is written,
and as wrong when that WCS is more than 1 px off on average. Time per frame is the wall time of
the solver's process (reading the catalogs and the reference catalog included; for
astrometry.net the sum of its four solve-field processes, one per CCD). Medians over
CCDs and frames are printed.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

warnings.simplefilter("ignore")

PARAMS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE",
          "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE", "ERRX2WIN_IMAGE", "ERRY2WIN_IMAGE", "FLUX_AUTO",
          "FLUXERR_AUTO", "MAG_AUTO", "MAGERR_AUTO", "FLAGS", "FWHM_IMAGE", "ELONGATION",
          "ALPHA_J2000", "DELTA_J2000"]


def sex_ldac(sex, share, image, out, work):
    param = os.path.join(work, "ldac.param")
    with open(param, "w") as f:
        f.write("\n".join(PARAMS) + "\n")
    subprocess.run([sex, image, "-c", "/dev/null", "-PARAMETERS_NAME", param,
                    "-CATALOG_TYPE", "FITS_LDAC", "-CATALOG_NAME", out,
                    "-DETECT_THRESH", "1.5", "-ANALYSIS_THRESH", "1.5", "-DETECT_MINAREA", "5",
                    "-FILTER", "Y", "-FILTER_NAME", f"{share}/default.conv",
                    "-STARNNW_NAME", f"{share}/default.nnw", "-SATUR_KEY", "SATURATE",
                    "-GAIN_KEY", "GAIN", "-CHECKIMAGE_TYPE", "NONE", "-VERBOSE_TYPE", "QUIET",
                    "-WRITE_XML", "N", "-NTHREADS", "1"], check=True)


def epoch_of(h):
    mid = h["MJD-OBS"] + h.get("EXPTIME", 0) / 2 / 86400
    return 2000 + (mid - 51544.5) / 365.25


def at_epoch(ra, dec, pmra, pmdec, dt):
    # The simulator's (and, to 1e-5 mas here, nearby's) proper-motion model.
    return ra + pmra * dt / 3.6e6 / np.cos(np.radians(dec)), dec + pmdec * dt / 3.6e6


def write_ref_ldac(refcat, epoch, out):
    t = fits.open(refcat)[1]
    dt = epoch - t.header["EPOCH"]
    d = t.data
    ra, dec = at_epoch(d["RA"], d["DEC"], d["PMRA"], d["PMDEC"], dt)
    n = len(ra)
    err = np.full(n, 1e-6)  # 3.6 mas, degrees
    cols = [fits.Column(name="X_WORLD", format="1D", unit="deg", array=ra),
            fits.Column(name="Y_WORLD", format="1D", unit="deg", array=dec),
            fits.Column(name="ERRA_WORLD", format="1E", unit="deg", array=err),
            fits.Column(name="ERRB_WORLD", format="1E", unit="deg", array=err),
            fits.Column(name="ERRTHETA_WORLD", format="1E", unit="deg", array=np.zeros(n)),
            fits.Column(name="MAG", format="1E", unit="mag", array=d["MAG"]),
            fits.Column(name="MAGERR", format="1E", unit="mag", array=np.full(n, 0.01)),
            fits.Column(name="OBSDATE", format="1D", unit="yr", array=np.full(n, epoch))]
    head = fits.Header()
    head["NAXIS"] = 2
    head["NAXIS1"] = 1
    head["NAXIS2"] = 1
    text = head.tostring(endcard=True)
    imhead = fits.BinTableHDU.from_columns(
        [fits.Column(name="Field Header Card", format=f"{len(text)}A", array=[text])])
    imhead.header["EXTNAME"] = "LDAC_IMHEAD"
    imhead.header["TDIM1"] = f"(80, {len(text) // 80})"
    obj = fits.BinTableHDU.from_columns(cols)
    obj.header["EXTNAME"] = "LDAC_OBJECTS"
    fits.HDUList([fits.PrimaryHDU(), imhead, obj]).writeto(out, overwrite=True)


def run_scamp(scamp, ldac, ref, work):
    t0 = time.perf_counter()
    r = subprocess.run([scamp, ldac, "-c", "/dev/null", "-ASTREF_CATALOG", "FILE",
                        "-ASTREFCAT_NAME", ref,
                        "-DISTORT_DEGREES", "3", "-POSITION_MAXERR", "6.0",
                        "-PIXSCALE_MAXERR", "1.2", "-POSANGLE_MAXERR", "5.0",
                        "-CROSSID_RADIUS", "2.0", "-SOLVE_PHOTOM", "N", "-MOSAIC_TYPE", "UNCHANGED",
                        "-SN_THRESHOLDS", "10.0,100.0", "-CHECKPLOT_TYPE", "NONE",
                        "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", "-NTHREADS", "1",
                        "-AHEADER_GLOBAL", "/dev/null"],
                       cwd=work, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    head = ldac[:-len(".ldac")] + ".head"
    if r.returncode != 0 or not os.path.exists(head):
        return None, dt
    blocks = open(head, encoding="latin-1").read().split("\nEND")
    out = []
    for b in blocks:
        # SCAMP's COMMENT cards carry non-ASCII characters; the WCS keys are plain.
        lines = [ln for ln in b.strip("\n").split("\n") if ln.strip() and ln.isascii()
                 and not ln.startswith(("COMMENT", "HISTORY"))]
        if not lines:
            continue
        h = fits.Header.fromstring("\n".join(lines), sep="\n")
        if "CRVAL1" not in h:
            continue
        h["CTYPE1"], h["CTYPE2"] = "RA---TPV", "DEC--TPV"
        out.append(h)
    return out, dt


ANET_SCALES = range(0, 7)  # -P 0..6: quads of 2.0' to 22' (see the module's doc)


def build_anet_indexes(refcat, epoch, work):
    """astrometry.net index files from the refcat at the epoch; returns (paths, seconds)."""
    t = fits.open(refcat)[1]
    d = t.data
    ra, dec = at_epoch(d["RA"], d["DEC"], d["PMRA"], d["PMDEC"], epoch - t.header["EPOCH"])
    cat = os.path.join(work, "anet_ref.fits")
    fits.BinTableHDU.from_columns(
        [fits.Column(name="RA", format="1D", array=ra),
         fits.Column(name="DEC", format="1D", array=dec),
         fits.Column(name="MAG", format="1E", array=d["MAG"])]).writeto(cat, overwrite=True)
    t0 = time.perf_counter()
    paths = []
    for p in ANET_SCALES:
        out = os.path.join(work, f"anet_index_{p:02d}.fits")
        subprocess.run(["build-astrometry-index", "-i", cat, "-o", out, "-P", str(p), "-S", "MAG",
                        "-A", "RA", "-D", "DEC", "-E", "-I", str(9000 + p), "-t", work],
                       check=True, capture_output=True)
        paths.append(out)
    return paths, time.perf_counter() - t0


def run_anet(ldac, ccds, indexes, work):
    """solve-field on every CCD of the LDAC catalog; returns (headers or None, summed seconds)."""
    cfg = os.path.join(work, "anet.cfg")
    with open(cfg, "w") as f:
        f.write("cpulimit 300\n" + "".join(f"index {p}\n" for p in indexes))
    heads, total = [], 0.0
    for k, (_, h) in enumerate(ccds):
        w = WCS(h)
        nx, ny = h["NAXIS1"], h["NAXIS2"]
        ra, dec = w.all_pix2world([[(nx + 1) / 2, (ny + 1) / 2]], 1)[0]
        scale = np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix))) * 3600
        out = os.path.join(work, f"anet_ccd{k + 1}")
        os.makedirs(out, exist_ok=True)
        wcs = os.path.join(out, "solved.wcs")
        t0 = time.perf_counter()
        r = subprocess.run(["solve-field", ldac, "--extension", str(2 + 2 * k),
                            "--x-column", "XWIN_IMAGE", "--y-column", "YWIN_IMAGE",
                            "--sort-column", "FLUX_AUTO", "--width", str(nx), "--height", str(ny),
                            "--config", cfg, "--tweak-order", "3", "--ra", f"{ra:.6f}",
                            "--dec", f"{dec:.6f}", "--radius", "0.1",
                            "--scale-units", "arcsecperpix", "--scale-low", f"{scale * 0.95:.5f}",
                            "--scale-high", f"{scale * 1.05:.5f}", "--dir", out, "--wcs", wcs,
                            "--overwrite", "--no-plots", "--new-fits", "none", "--rdls", "none",
                            "--corr", "none", "--match", "none", "--index-xyls", "none",
                            "--temp-axy", "--no-remove-lines", "--uniformize", "0"],
                           capture_output=True, text=True)
        total += time.perf_counter() - t0
        if os.path.exists(wcs):
            heads.append(fits.Header.fromfile(wcs))
        else:
            if r.returncode != 0:
                sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
            heads.append(None)
    return heads, total


def run_nearby(nearby, catalog, image, refcat, outdir):
    t0 = time.perf_counter()
    r = subprocess.run([nearby, "task", "astrometry", "--input", f"catalog={catalog}",
                        "--input", f"image={image}", "--input", f"refcat={refcat}",
                        "--out", outdir], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    wcs = os.path.join(outdir, "wcs.fits")
    if not os.path.exists(wcs):
        sys.stderr.write(r.stdout + r.stderr)
        return None, dt
    heads = [h.header for h in fits.open(wcs)[1:]]
    return [h if h.get("ASTROK") else None for h in heads], dt


def score(h, truth, stars, frame, ccd, ltv, size, epoch):
    """RMS (px) over the CCD's true stars of solved-vs-true position, or None."""
    if h is None:
        return None
    w = WCS(h)
    ss = [s for s in frame["stars"] if s["ccd"] == ccd]
    x = np.array([s["x"] for s in ss]) + ltv[0]
    y = np.array([s["y"] for s in ss]) + ltv[1]
    ok = (x > 0.5) & (y > 0.5) & (x < size[0] + 0.5) & (y < size[1] + 0.5)
    st = [stars[s["star"]] for s in ss]
    dt = epoch - truth["config"]["refcat_epoch"]
    ra, dec = at_epoch(np.array([s["ra_deg"] for s in st]), np.array([s["dec_deg"] for s in st]),
                       np.array([s["pmra_mas_per_yr"] for s in st]),
                       np.array([s["pmdec_mas_per_yr"] for s in st]), dt)
    px = w.all_world2pix(np.c_[ra, dec], 1, tolerance=1e-8, maxiter=50, quiet=True)
    d = np.hypot(px[:, 0] - x, px[:, 1] - y)[ok]
    return float(np.sqrt(np.mean(d ** 2)))


def main():
    nearby, sex, share, scamp, work = sys.argv[1:6]
    runs = sys.argv[6:]
    res = {k: {"rms": [], "solved": 0, "wrong": 0, "n": 0, "time": []}
           for k in ("scamp", "anet", "nearby_ldac", "nearby_own")}
    anet = os.environ.get("ANET", "1") != "0"
    if not anet:
        del res["anet"]
    index_time = []
    for run in runs:
        truth = json.load(open(os.path.join(run, "sim", "truth.json")))
        stars = {s["id"]: s for s in truth["stars"]}
        refcat = os.path.join(run, "sim", "refcat.fits")
        for key in sorted(os.listdir(os.path.join(run, "run", "out", "calibrate"))):
            image = os.path.join(run, "run", "out", "calibrate", key, "image.fits")
            own = os.path.join(run, "run", "out", "extract", key, "catalog.fits")
            hdul = fits.open(image)
            frame = [f for f in truth["frames"] if f["date_obs"] == hdul[0].header["DATE-OBS"]][0]
            ccds = [(i, h.header) for i, h in enumerate(hdul) if h.header.get("NAXIS", 0) == 2]
            epoch = epoch_of(ccds[0][1])
            fw = os.path.join(work, os.path.basename(run) + "_" + key)
            os.makedirs(fw, exist_ok=True)
            ldac = os.path.join(fw, "frame.ldac")
            sex_ldac(sex, share, image, ldac, fw)
            ref = os.path.join(fw, "ref.ldac")
            write_ref_ldac(refcat, epoch, ref)
            sols = {
                "scamp": run_scamp(scamp, ldac, ref, fw),
                "nearby_ldac": run_nearby(nearby, ldac, image, refcat, os.path.join(fw, "n_ldac")),
                "nearby_own": run_nearby(nearby, own, image, refcat, os.path.join(fw, "n_own")),
            }
            if anet:
                indexes, dt = build_anet_indexes(refcat, epoch, fw)
                index_time.append(dt)
                sols["anet"] = run_anet(ldac, ccds, indexes, fw)
            for name, (heads, dt) in sols.items():
                r = res[name]
                r["time"].append(dt)
                for k, (i, h) in enumerate(ccds):
                    r["n"] += 1
                    sol = heads[k] if heads and k < len(heads) else None
                    rms = score(sol, truth, stars, frame, h["IMAGEID"],
                                (h.get("LTV1", 0), h.get("LTV2", 0)),
                                (h["NAXIS1"], h["NAXIS2"]), epoch)
                    if rms is None:
                        continue
                    r["solved"] += 1
                    if rms > 1.0:
                        r["wrong"] += 1
                    else:
                        r["rms"].append(rms)
                    print(f"{os.path.basename(run)} {key} CCD{h['IMAGEID']} {name:12s} "
                          f"RMS vs truth {rms:.4f} px", flush=True)
    print()
    print(f"{'solver':28s} {'CCDs solved':>12s} {'wrong':>6s} {'median RMS px':>14s} "
          f"{'p90 RMS px':>11s} {'median s/frame':>15s}")
    label = {"scamp": "SCAMP 2.10 (SExtractor LDAC)", "anet": "astrometry.net 0.93 (LDAC)",
             "nearby_ldac": "nearby (SExtractor LDAC)",
             "nearby_own": "nearby (nearby extract)"}
    for name, r in res.items():
        rms = sorted(r["rms"])
        p90 = rms[int(0.9 * (len(rms) - 1))] if rms else float("nan")
        print(f"{label[name]:28s} {r['solved']:>5d} of {r['n']:<4d} {r['wrong']:>6d} "
              f"{statistics.median(rms) if rms else float('nan'):>14.4f} {p90:>11.4f} "
              f"{statistics.median(r['time']):>15.3f}")
    ts, tn = statistics.median(res["scamp"]["time"]), statistics.median(res["nearby_ldac"]["time"])
    print(f"\nspeed: nearby is {ts / tn:.1f}x faster than SCAMP per frame (median, same LDAC catalogs)")
    if anet:
        ta = statistics.median(res["anet"]["time"])
        print(f"speed: nearby is {ta / tn:.1f}x faster than astrometry.net per frame (median, same "
              f"LDAC catalogs); building its {len(ANET_SCALES)} index files took "
              f"{statistics.median(index_time):.2f} s per frame (median, not in its time)")


if __name__ == "__main__":
    main()
