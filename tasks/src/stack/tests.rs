//! Stacking against truth: grid round trip, flux conservation of both kernels on a simulated
//! star field, the combine methods, synthetic tracking of a faint mover, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nearby_engine::task::{TaskError, TaskKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Map, Value as J};

use super::combine::combine_pixel;
use super::*;
use crate::fits::{read_image, write_mef, Header, Image, Pixel};
use crate::simulate::{Canvas, Moffat};
use crate::wcs::TanWcs;

const RA0: f64 = 150.0;
const DEC0: f64 = 2.0;
const SCALE: f64 = 0.33 / 3600.0;

/// A TAN WCS rotated by `rot_deg`, reference pixel at the frame centre shifted by `shift`.
fn frame_wcs(w: usize, h: usize, scale: f64, rot_deg: f64, shift: (f64, f64)) -> TanWcs {
    let (s, c) = rot_deg.to_radians().sin_cos();
    TanWcs {
        crpix: [
            (w as f64 + 1.0) / 2.0 + shift.0,
            (h as f64 + 1.0) / 2.0 + shift.1,
        ],
        crval: [RA0, DEC0],
        cd: [[-scale * c, scale * s], [scale * s, scale * c]],
        sip: None,
    }
}

/// Moffat stars (FWHM 3.5 px, beta 3) at sky positions, noiseless, no sky.
fn draw(w: usize, h: usize, wcs: &TanWcs, stars: &[(f64, f64, f64)]) -> Vec<f32> {
    let mut data = vec![0f32; w * h];
    let psf = Moffat::from_fwhm(3.5, 3.0);
    let mut c = Canvas {
        data: &mut data,
        width: w,
        height: h,
    };
    for &(ra, dec, flux) in stars {
        let (x, y) = wcs.sky_to_pix(ra, dec).unwrap();
        c.add_psf(&psf, x - 1.0, y - 1.0, flux);
    }
    data
}

/// Stars on a regular lattice inside the central part of a frame.
fn lattice(wcs: &TanWcs, w: usize, h: usize, n: usize) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let x = 40.0 + (w as f64 - 80.0) * (i as f64 + 0.37) / n as f64;
            let y = 40.0 + (h as f64 - 80.0) * (j as f64 + 0.61) / n as f64;
            let (ra, dec) = wcs.pix_to_sky(x, y);
            out.push((ra, dec, 1e4 * (1.0 + (i * n + j) as f64)));
        }
    }
    out
}

/// Sum of finite pixels within `r` pixels of FITS position (x, y).
fn aperture(data: &[f32], w: usize, x: f64, y: f64, r: f64) -> f64 {
    let h = data.len() / w;
    let mut s = 0.0;
    for py in (y - r).floor().max(1.0) as usize..=((y + r).ceil() as usize).min(h) {
        for px in (x - r).floor().max(1.0) as usize..=((x + r).ceil() as usize).min(w) {
            let d2 = (px as f64 - x).powi(2) + (py as f64 - y).powi(2);
            let v = data[(py - 1) * w + px - 1];
            if d2 <= r * r && v.is_finite() {
                s += v as f64;
            }
        }
    }
    s
}

#[test]
fn grid_pixel_sky_pixel_round_trip_below_a_micro_pixel() {
    let frames: Vec<(TanWcs, usize, usize)> = (0..4)
        .map(|k| {
            let w = frame_wcs(2048, 4100, SCALE, 1.5 * k as f64, (700.0 * k as f64, -90.0));
            (w, 2048, 4100)
        })
        .collect();
    let grid = Grid::covering(&frames, None).unwrap();
    assert!((grid.scale_deg() - SCALE).abs() < 1e-12);
    // Every frame corner lies inside the grid.
    for (w, nx, ny) in &frames {
        for (x, y) in [(0.5, 0.5), (*nx as f64 + 0.5, *ny as f64 + 0.5)] {
            let (ra, dec) = w.pix_to_sky(x, y);
            let (gx, gy) = grid.wcs.sky_to_pix(ra, dec).unwrap();
            assert!(gx >= 0.499 && gy >= 0.499, "{gx} {gy}");
            assert!(gx <= grid.width as f64 + 0.501 && gy <= grid.height as f64 + 0.501);
        }
    }
    // The header written for the grid reads back as the same WCS.
    let back = TanWcs::from_header(&grid.header()).unwrap();
    assert_eq!(back, grid.wcs);
    let mut worst = 0.0f64;
    for i in 0..=20 {
        for j in 0..=20 {
            let x = 1.0 + (grid.width as f64 - 1.0) * i as f64 / 20.0;
            let y = 1.0 + (grid.height as f64 - 1.0) * j as f64 / 20.0;
            let (ra, dec) = back.pix_to_sky(x, y);
            let (x2, y2) = back.sky_to_pix(ra, dec).unwrap();
            worst = worst.max((x2 - x).abs()).max((y2 - y).abs());
        }
    }
    println!(
        "grid {}x{}: worst round trip {worst:.2e} px",
        grid.width, grid.height
    );
    assert!(worst < 1e-6, "{worst}");
}

#[test]
fn resampling_conserves_flux_with_both_kernels() {
    let (w, h) = (300, 260);
    let wcs = frame_wcs(w, h, SCALE, 17.0, (3.3, -4.1));
    let stars = lattice(&wcs, w, h, 4);
    let data = draw(w, h, &wcs, &stars);
    let total_in: f64 = data.iter().map(|&v| v as f64).sum();
    // Coarser output pixels (0.4"), north up: pixel areas differ by 1.47x.
    let grid = Grid::covering(&[(wcs.clone(), w, h)], Some(0.4 / 3600.0)).unwrap();
    for kernel in [Kernel::Lanczos3, Kernel::Bilinear] {
        let mut layer = Layer::empty(grid.width, grid.height);
        let src = Source {
            plane: resample::Plane::new(&data, None, w, h, 0.0),
            wcs: &wcs,
        };
        let written = resample(&src, &grid, kernel, &mut layer);
        assert!(written > w * h / 2);
        let total_out: f64 = layer
            .value
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| v as f64)
            .sum();
        let mut worst = (total_out / total_in - 1.0).abs();
        for &(ra, dec, flux) in &stars {
            // 6" apertures: the same sky area on both grids.
            let (x, y) = grid.wcs.sky_to_pix(ra, dec).unwrap();
            let f_out = aperture(&layer.value, grid.width, x, y, 6.0 / 0.4);
            let (xi, yi) = wcs.sky_to_pix(ra, dec).unwrap();
            let f_in = aperture(&data, w, xi, yi, 6.0 / 0.33);
            worst = worst.max((f_out / f_in - 1.0).abs());
            assert!(
                (f_in / flux - 1.0).abs() < 0.01,
                "input aperture {f_in} vs {flux}"
            );
        }
        println!(
            "{}: total flux ratio {:.5}, worst aperture ratio error {worst:.2e}",
            kernel.name(),
            total_out / total_in
        );
        assert!(worst < 0.01, "{}: {worst}", kernel.name());
    }
}

#[test]
fn combine_methods_on_one_pixel() {
    let px = || {
        vec![
            (10.0f32, 1.0f32),
            (11.0, 1.0),
            (9.0, 1.0),
            (10.5, 2.0),
            (500.0, 1.0),
        ]
    };
    let (v, w, n) = combine_pixel(&mut px(), Combine::Median).unwrap();
    assert_eq!((v, n), (10.5, 5));
    assert!((w - 6.0 * 2.0 / std::f32::consts::PI).abs() < 1e-5);
    let (v, w, n) = combine_pixel(&mut px(), Combine::WeightedMean).unwrap();
    assert!((v - (10.0 + 11.0 + 9.0 + 21.0 + 500.0) / 6.0).abs() < 1e-4);
    assert_eq!((w, n), (6.0, 5));
    // Clipping (3 sigma of unit noise, no amplitude term) drops the cosmic ray only.
    let clip = Combine::ClippedMean {
        sigma: 3.0,
        ampfrac: 0.0,
    };
    let (v, w, n) = combine_pixel(&mut px(), clip).unwrap();
    assert!((v - (10.0 + 11.0 + 9.0 + 21.0) / 5.0).abs() < 1e-5, "{v}");
    assert_eq!((w, n), (5.0, 4));
    assert!(combine_pixel(&mut [], Combine::Median).is_none());
}

/// Writes an exposure: an empty primary with the time keys and one HDU per CCD.
fn write_exposure(path: &Path, mjd: f64, ccds: Vec<(Vec<f32>, usize, usize, Option<TanWcs>)>) {
    let mut primary = Header::new();
    primary.set("MJD-OBS", mjd, "").set("EXPTIME", 60.0, "");
    let images: Vec<Image> = ccds
        .into_iter()
        .enumerate()
        .map(|(k, (d, w, h, wcs))| {
            let mut im = Image::new(w, h, d);
            im.header.set("EXTNAME", format!("CCD{}", k + 1), "");
            if let Some(wcs) = wcs {
                wcs.write(&mut im.header);
            }
            im
        })
        .collect();
    write_mef(path, &primary, &images, Pixel::F32).unwrap();
}

fn run_stack(
    params: J,
    images: &[PathBuf],
    weights: &[PathBuf],
    out: &Path,
) -> (Result<(), TaskError>, String) {
    let mut inputs = BTreeMap::new();
    inputs.insert("images".to_owned(), images.to_vec());
    if !weights.is_empty() {
        inputs.insert("weights".to_owned(), weights.to_vec());
    }
    let params = params.as_object().unwrap().clone();
    let run = nearby_engine::task::run_alone(&task::Stack, params, inputs, out);
    (run.result, run.log)
}

#[test]
fn stack_task_recovers_star_fluxes_from_dithered_two_ccd_exposures() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (160, 200);
    let sky = frame_wcs(2 * w, h, SCALE, 0.0, (0.0, 0.0));
    let stars = lattice(&sky, 2 * w, h, 5);
    let mut files = Vec::new();
    for k in 0..3 {
        let dither = (7.3 * k as f64, -5.1 * k as f64);
        let ccds = (0..2)
            .map(|c| {
                // CCD c covers the left or right half of the field, rotated by 0.3 deg.
                let wcs = frame_wcs(
                    w,
                    h,
                    SCALE,
                    0.3,
                    (dither.0 + (1.0 - 2.0 * c as f64) * w as f64 / 2.0, dither.1),
                );
                (
                    draw(w, h, &wcs, &stars)
                        .into_iter()
                        .map(|v| v + 100.0)
                        .collect(),
                    w,
                    h,
                    Some(wcs),
                )
            })
            .collect();
        let f = dir.path().join(format!("e{k}.fits"));
        write_exposure(&f, 57000.0 + k as f64 * 0.002, ccds);
        files.push(f);
    }
    for method in ["median", "clipped_mean", "weighted_mean"] {
        // The truth: the same stars drawn directly on the output grid (the lattice is tight,
        // so apertures hold some of the neighbours' wings, on both sides alike).
        let out = dir.path().join(method);
        let (r, log) = run_stack(json!({"combine": method}), &files, &[], &out);
        r.unwrap_or_else(|e| panic!("{e}\n{log}"));
        let img = read_image(&out.join("stack.fits"), 0).unwrap();
        let wcs = TanWcs::from_header(&img.header).unwrap();
        assert_eq!(img.header.i64("NCOMBINE").unwrap(), 3);
        let truth = draw(img.width, img.height, &wcs, &stars);
        let mut worst = 0.0f64;
        let mut n = 0;
        for &(ra, dec, flux) in &stars {
            let (x, y) = wcs.sky_to_pix(ra, dec).unwrap();
            // Stars clear of the CCD gap and edges, where every exposure covers them.
            let (x0, y0) = sky.sky_to_pix(ra, dec).unwrap();
            if (x0 - w as f64).abs() < 40.0
                || x0 < 40.0
                || y0 < 40.0
                || x0 > 2.0 * w as f64 - 40.0
                || y0 > h as f64 - 40.0
            {
                continue;
            }
            let f = aperture(&img.data, img.width, x, y, 18.0);
            let t = aperture(&truth, img.width, x, y, 18.0);
            assert!(t > flux && t < 1.03 * flux);
            worst = worst.max((f / t - 1.0).abs());
            n += 1;
        }
        println!("{method}: {n} stars, worst flux error {worst:.2e}");
        assert!(
            n >= 8 && worst < 0.01,
            "{method}: {worst} over {n} stars\n{log}"
        );
        let wt = read_image(&out.join("stack.weight.fits"), 0).unwrap();
        assert!(wt.data.iter().any(|&v| v > 0.0));
    }
}

/// Aperture S/N at (x, y): the flux over the spread of the same aperture at empty places.
fn snr(data: &[f32], w: usize, x: f64, y: f64, r: f64, avoid: &[(f64, f64)]) -> (f64, f64) {
    let h = data.len() / w;
    let mut sums = Vec::new();
    for i in 0..12 {
        for j in 0..12 {
            let (px, py) = (
                15.0 + (w as f64 - 30.0) * i as f64 / 11.0,
                15.0 + (h as f64 - 30.0) * j as f64 / 11.0,
            );
            if avoid
                .iter()
                .any(|&(ax, ay)| (ax - px).hypot(ay - py) < 12.0)
            {
                continue;
            }
            let s = aperture(data, w, px, py, r);
            if s.is_finite() && s != 0.0 {
                sums.push(s);
            }
        }
    }
    let m = sums.iter().sum::<f64>() / sums.len() as f64;
    let sd = (sums.iter().map(|s| (s - m).powi(2)).sum::<f64>() / (sums.len() - 1) as f64).sqrt();
    (aperture(data, w, x, y, r), sd)
}

#[test]
fn shift_and_stack_recovers_a_faint_mover_with_a_sqrt_n_gain() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h, n) = (220, 220, 9);
    let wcs = frame_wcs(w, h, SCALE, 0.0, (0.0, 0.0));
    let sigma = 10.0f32;
    let (rate, pa) = (0.5, 60.0);
    let mjd0 = 58000.0;
    let mid = |k: usize| mjd0 + k as f64 * 3.0 / 1440.0 + 30.0 / 86400.0;
    let ref_mjd = (0..n).map(mid).sum::<f64>() / n as f64;
    let motion = Motion {
        rate_arcsec_per_min: rate,
        pa_deg: pa,
    };
    let (ra_m, dec_m) = wcs.pix_to_sky(110.0, 110.0);
    let stars = vec![(
        wcs.pix_to_sky(60.0, 170.0).0,
        wcs.pix_to_sky(60.0, 170.0).1,
        2e5,
    )];
    let mover_flux = 280.0;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let noise = Normal::new(0.0f32, sigma).unwrap();
    let mut files = Vec::new();
    let mut weights = Vec::new();
    let mut first = Vec::new();
    for k in 0..n {
        // The mover's sky position at this exposure's mid-time, along PA in the tangent plane.
        let dt = (mid(k) - ref_mjd) * 1440.0;
        let d = rate * dt / 3600.0;
        let (xi, eta) = (d * pa.to_radians().sin(), d * pa.to_radians().cos());
        let probe = TanWcs {
            crpix: [0.0, 0.0],
            crval: [ra_m, dec_m],
            cd: [[1.0, 0.0], [0.0, 1.0]],
            sip: None,
        };
        let (ra, dec) = probe.pix_to_sky(xi, eta);
        let mut src = stars.clone();
        src.push((ra, dec, mover_flux));
        let data: Vec<f32> = draw(w, h, &wcs, &src)
            .into_iter()
            .map(|v| v + 200.0 + noise.sample(&mut rng))
            .collect();
        if k == 0 {
            first = data.clone();
            first.iter_mut().for_each(|v| *v -= 200.0);
        }
        let sub = dir.path().join(format!("c{k}"));
        std::fs::create_dir_all(&sub).unwrap();
        let mut primary = Header::new();
        primary
            .set("MJD-OBS", mjd0 + k as f64 * 3.0 / 1440.0, "")
            .set("EXPTIME", 60.0, "");
        let mut im = Image::new(w, h, data);
        wcs.write(&mut im.header);
        write_mef(&sub.join("image.fits"), &primary, &[im], Pixel::F32).unwrap();
        let wt = Image::new(w, h, vec![1.0 / (sigma * sigma); w * h]);
        write_mef(&sub.join("weight.fits"), &Header::new(), &[wt], Pixel::F32).unwrap();
        files.push(sub.join("image.fits"));
        weights.push(sub.join("weight.fits"));
    }
    // The truth S/N of one exposure in a 3-pixel aperture: measured flux over aperture noise.
    let r = 3.0;
    let (f1, sd1) = snr(&first, w, 110.0, 110.0, r, &[(60.0, 170.0)]);
    let dt0 = (mid(0) - ref_mjd) * 1440.0;
    let (sx, sy) = motion.pixel_shift(
        &Grid {
            width: w,
            height: h,
            wcs: wcs.clone(),
        },
        dt0,
    );
    let (f1m, _) = snr(&first, w, 110.0 + sx, 110.0 + sy, r, &[(60.0, 170.0)]);
    println!("single exposure: flux {f1m:.0} (truth-position {f1:.0}) noise {sd1:.1}");
    let single_snr = aperture(
        &draw(w, h, &wcs, &[(ra_m, dec_m, mover_flux)]),
        w,
        110.0,
        110.0,
        r,
    ) / sd1;
    let params = json!({
        "rate_arcsec_per_min": rate, "pa_deg": pa, "combine": "weighted_mean",
        "ra_deg": wcs.crval[0], "dec_deg": wcs.crval[1], "width_px": w, "height_px": h,
        "pixel_scale_arcsec": 0.33,
    });
    let out = dir.path().join("track");
    let (res, log) = run_stack(params, &files, &weights, &out);
    res.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let img = read_image(&out.join("stack.fits"), 0).unwrap();
    let g = TanWcs::from_header(&img.header).unwrap();
    assert!((img.header.f64("TRKMJD").unwrap() - ref_mjd).abs() < 1e-9);
    let (gx, gy) = g.sky_to_pix(ra_m, dec_m).unwrap();
    let (fs, sds) = snr(&img.data, w, gx, gy, r, &[(60.0, 170.0)]);
    let stack_snr = fs / sds;
    let gain = stack_snr / single_snr;
    println!("tracked stack: flux {fs:.0} noise {sds:.1} S/N {stack_snr:.1}; single S/N {single_snr:.2}; gain {gain:.2} (sqrt N = {:.2})", (n as f64).sqrt());
    assert!(
        single_snr < 5.0,
        "the mover must be faint in one exposure: {single_snr}"
    );
    assert!(
        (gain / (n as f64).sqrt() - 1.0).abs() < 0.3,
        "gain {gain}\n{log}"
    );
    // The static star is gone from the tracked stack (median of unshifted exposures removed).
    let (gsx, gsy) = g.sky_to_pix(stars[0].0, stars[0].1).unwrap();
    assert!(aperture(&img.data, w, gsx, gsy, 6.0).abs() < 0.02 * 2e5);
    // Without tracking the mover smears over 12": far lower S/N at its reference position.
    let out = dir.path().join("plain");
    let (res, log) = run_stack(json!({"combine": "weighted_mean"}), &files, &weights, &out);
    res.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let img = read_image(&out.join("stack.fits"), 0).unwrap();
    let g = TanWcs::from_header(&img.header).unwrap();
    let (gx, gy) = g.sky_to_pix(ra_m, dec_m).unwrap();
    let (fp, sdp) = snr(&img.data, img.width, gx, gy, r, &[(60.0, 170.0)]);
    println!("untracked stack: S/N {:.1}", fp / sdp);
    assert!(fp / sdp < 0.5 * stack_snr);
}

#[test]
fn bad_input_is_reported_with_the_file_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (64, 64);
    let wcs = frame_wcs(w, h, SCALE, 0.0, (0.0, 0.0));
    let good = dir.path().join("good.fits");
    let stars = lattice(&wcs, w, h, 1);
    let img = draw(w, h, &wcs, &stars)
        .into_iter()
        .map(|v| v + 10.0)
        .collect();
    write_exposure(&good, 57000.0, vec![(img, w, h, Some(wcs.clone()))]);
    let nowcs = dir.path().join("nowcs.fits");
    write_exposure(&nowcs, 57000.0, vec![(vec![1.0; w * h], w, h, None)]);
    let nan = dir.path().join("nan.fits");
    write_exposure(
        &nan,
        57000.0,
        vec![(vec![f32::NAN; w * h], w, h, Some(wcs.clone()))],
    );
    // Only bad frames: a bad-input error that names each and says why.
    let (r, log) = run_stack(
        json!({}),
        &[nowcs.clone(), nan.clone()],
        &[],
        &dir.path().join("a"),
    );
    match r {
        Err(TaskError::BadInput(msg)) => {
            assert!(msg.contains("none of the 2 frames"), "{msg}");
            assert!(
                msg.contains("nowcs.fits") && msg.contains("nan.fits"),
                "{msg}"
            );
        }
        other => panic!("expected bad input, got {other:?}"),
    }
    assert!(
        log.contains("nowcs.fits, HDU 1") && log.contains("no celestial WCS"),
        "{log}"
    );
    assert!(log.contains("nan.fits") && log.contains("NaN"), "{log}");
    // One good frame among bad ones: stacked, the others skipped in the log.
    let (r, log) = run_stack(
        json!({}),
        &[good.clone(), nowcs, nan],
        &[],
        &dir.path().join("b"),
    );
    r.unwrap();
    assert!(
        log.contains("skipping") && log.contains("1 exposures"),
        "{log}"
    );
    // NaN pixels in a usable frame are holes, not NaN stacks.
    let holes = dir.path().join("holes.fits");
    let mut d = draw(w, h, &wcs, &stars);
    d.iter_mut().for_each(|v| *v += 10.0);
    d[32 * w + 32] = f32::NAN;
    write_exposure(&holes, 57000.0, vec![(d, w, h, Some(wcs.clone()))]);
    let (r, _) = run_stack(
        json!({"combine": "weighted_mean"}),
        &[good.clone(), holes],
        &[],
        &dir.path().join("c"),
    );
    r.unwrap();
    let s = read_image(&dir.path().join("c/stack.fits"), 0).unwrap();
    let inner = (8..h - 8).flat_map(|y| (8..w - 8).map(move |x| (x, y)));
    assert!(inner.clone().all(|(x, y)| s.at(x, y).is_finite()));
    // Shift-and-stack of frames without a time.
    let notime = dir.path().join("notime.fits");
    let mut im = Image::new(w, h, vec![5.0; w * h]);
    wcs.write(&mut im.header);
    write_mef(&notime, &Header::new(), &[im], Pixel::F32).unwrap();
    let (r, _) = run_stack(
        json!({"rate_arcsec_per_min": 1.0, "pa_deg": 0.0}),
        &[notime],
        &[],
        &dir.path().join("d"),
    );
    match r {
        Err(TaskError::BadInput(msg)) => assert!(
            msg.contains("notime.fits") && msg.contains("MJD-OBS or DATE-OBS"),
            "{msg}"
        ),
        other => panic!("expected bad input, got {other:?}"),
    }
    // Params: every problem at once.
    let p: Map<String, J> =
        json!({"kernel": "cubic", "combine": "mean", "rate_arcsec_per_min": 1.0, "width_px": 10})
            .as_object()
            .unwrap()
            .clone();
    let problems = task::Stack.validate(&p);
    let names: Vec<_> = problems.iter().map(|(k, _)| *k).collect();
    assert!(
        names.contains(&"kernel")
            && names.contains(&"combine")
            && names.contains(&"rate_arcsec_per_min")
            && names.contains(&"ra_deg"),
        "{problems:?}"
    );
}
