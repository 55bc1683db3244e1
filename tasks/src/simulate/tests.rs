//! The simulator against its own promises: deterministic per seed, frames with the right shape
//! and headers, stars where the truth says, asteroids that move at their rates and span the
//! magnitudes down to S/N ~ 3, the artifacts the truth lists, and a task that writes it all.

use std::collections::BTreeMap;
use std::path::Path;

use nearby_engine::task::TaskKind;
use serde_json::{json, Map, Value as J};

use super::*;
use crate::fits;

/// A night small enough for unit tests: 2 CCDs of 256x512, 3 exposures.
fn tiny() -> SimConfig {
    let mut c = SimConfig::small();
    c.ccd.nx = 256;
    c.ccd.ny = 512;
    c.n_exposures = 3;
    c.n_bias = 1;
    c.n_flats = 1;
    c.star_density_per_deg2 = 40000.0;
    c
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The data area of a raw CCD image, overscan-subtracted, in electrons.
fn electrons(night: &Night, im: &fits::Image, k: usize) -> Vec<f32> {
    let c = &night.ccds[k];
    let pre = night.config.ccd.prescan;
    let nx = night.config.ccd.nx;
    let os: Vec<f32> = (0..im.height)
        .flat_map(|y| im.row(y)[pre + nx + 3..].to_vec())
        .collect();
    let bias = median(os);
    (0..im.height)
        .flat_map(|y| im.row(y)[pre..pre + nx].to_vec())
        .map(|v| (v - bias) * c.gain_e_per_adu as f32)
        .collect()
}

#[test]
fn presets_are_valid_and_bad_configs_say_why() {
    assert!(SimConfig::int_wfc().problems().is_empty());
    assert!(SimConfig::small().problems().is_empty());
    let mut c = SimConfig::small();
    c.n_ccds = 5;
    c.cadence_secs = 10.0;
    c.night = "2014-13-01".into();
    let p = plan(&c).unwrap_err();
    let fields: Vec<_> = p.iter().map(|(f, _)| *f).collect();
    assert_eq!(fields, ["n_ccds", "cadence_secs", "night"]);
    assert_eq!(p[0].1, "5: the INT WFC layout has 1 to 4 CCDs");
}

#[test]
fn the_same_seed_gives_the_same_frames_and_another_seed_does_not() {
    let cfg = tiny();
    let a = plan(&cfg).unwrap();
    let b = plan(&cfg).unwrap();
    let last = a.frames.len() - 1;
    let ra = render(&a, last);
    let rb = render(&b, last);
    assert_eq!(ra.ccds, rb.ccds);
    assert_eq!(ra.artifacts, rb.artifacts);
    assert_eq!(truth(&a, ra.artifacts.clone()), truth(&b, rb.artifacts));
    let other = plan(&SimConfig { seed: 2, ..cfg }).unwrap();
    assert_ne!(render(&other, last).ccds[0].data, ra.ccds[0].data);
}

#[test]
fn frames_have_the_raw_layout_and_the_headers_of_a_real_night() {
    let cfg = tiny();
    let night = plan(&cfg).unwrap();
    let kinds: Vec<_> = night.frames.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            FrameKind::Bias,
            FrameKind::Flat,
            FrameKind::Science,
            FrameKind::Science,
            FrameKind::Science
        ]
    );
    let sci = &night.frames[2];
    let r = render(&night, sci.index);
    assert_eq!(r.ccds.len(), 2);
    let p = &r.primary;
    assert_eq!(p.str("IMAGETYP").unwrap(), "object");
    assert_eq!(p.str("FILTER").unwrap(), "R");
    assert_eq!(p.f64("EXPTIME").unwrap(), 60.0);
    assert_eq!(p.str("DATE-OBS").unwrap(), "2014-07-11T00:15:00.000");
    assert_eq!(p.str("RA").unwrap(), "19:08:00.00");
    assert_eq!(p.str("DEC").unwrap(), "-20:00:00.0");
    assert!(p.f64("AIRMASS").unwrap() >= 1.0);
    for (k, im) in r.ccds.iter().enumerate() {
        assert_eq!((im.width, im.height), (16 + 256 + 32, 512));
        let h = &im.header;
        assert_eq!(h.str("EXTNAME").unwrap(), format!("CCD{}", k + 1));
        assert_eq!(h.i64("IMAGEID").unwrap(), k as i64 + 1);
        assert_eq!(h.section("TRIMSEC").unwrap().size(), (256, 512));
        assert_eq!(h.section("BIASSEC").unwrap().x2, 16 + 256 + 32);
        assert!(h.f64("GAIN").unwrap() > 2.0 && h.f64("SATURATE").unwrap() > 40000.0);
        assert_eq!(h.str("CTYPE1").unwrap(), "RA---TAN");
        assert_eq!(h.str("CTYPE2").unwrap(), "DEC--TAN");
        // Integers in the 16-bit range, as a raw frame.
        assert!(im
            .data
            .iter()
            .all(|v| v.fract() == 0.0 && (0.0..=65535.0).contains(v)));
    }
    // The header WCS is off by the pointing error, at most `pointing_error_arcmin` plus the
    // distortion, and at least 30% of it.
    let w = &sci.header_wcs[0];
    let sep = separation_deg(w.crval1, w.crval2, sci.camera.ra_deg, sci.camera.dec_deg) * 60.0;
    assert!(sep <= cfg.pointing_error_arcmin * 1.01 + 0.05, "{sep}");
    assert!(sep >= 0.3 * cfg.pointing_error_arcmin - 0.05, "{sep}");
}

#[test]
fn stars_are_where_the_truth_says_with_the_flux_it_says() {
    // Only stars bright enough to measure to 1%, not so bright that they saturate.
    let mut cfg = tiny();
    cfg.star_mag_min = 15.5;
    cfg.star_mag_max = 18.0;
    cfg.star_density_per_deg2 = 8000.0;
    let night = plan(&cfg).unwrap();
    let fr = night
        .frames
        .iter()
        .find(|f| f.kind == FrameKind::Science)
        .unwrap();
    let r = render(&night, fr.index);
    let pre = night.config.ccd.prescan as f64;
    let (nx, ny) = (night.config.ccd.nx as f64, night.config.ccd.ny as f64);
    let fwhm = fr.seeing_fwhm_arcsec / fr.camera.scale_arcsec;
    let mut checked = 0;
    for s in &fr.stars {
        let k = s.ccd - 1;
        // Aperture of 2.5 FWHM, sky from an annulus around it; centroid from the aperture.
        let rad = 2.5 * fwhm;
        let h = (rad + 8.0).ceil();
        let (xd, yd) = (s.x - pre - 1.0, s.y - 1.0);
        let inside = xd > h + 1.0 && yd > h + 1.0 && xd < nx - h - 2.0 && yd < ny - h - 2.0;
        let alone = fr.stars.iter().all(|o| {
            o.star == s.star
                || o.ccd != s.ccd
                || (o.x - s.x).hypot(o.y - s.y) > 2.0 * h
                || o.flux_e < s.flux_e * 0.002
        });
        if !(inside && alone && s.flux_e > 2e4 && s.flux_e < 1e6) {
            continue;
        }
        let e = electrons(&night, &r.ccds[k], k);
        let (mut sum, mut sx, mut sy, mut sky) = (0.0, 0.0, 0.0, Vec::new());
        let (mut n, mut px, mut py) = (0.0, 0.0, 0.0);
        for y in (yd - h) as usize..=(yd + h) as usize {
            for x in (xd - h) as usize..=(xd + h) as usize {
                let d = (x as f64 - xd).hypot(y as f64 - yd);
                let v = e[y * night.config.ccd.nx + x] as f64;
                if d < rad {
                    sum += v;
                    sx += v * x as f64;
                    sy += v * y as f64;
                    n += 1.0;
                    px += x as f64;
                    py += y as f64;
                } else if d > rad + 2.0 && d < h {
                    sky.push(v as f32);
                }
            }
        }
        let b = median(sky) as f64;
        let flux = sum - n * b;
        let (cx, cy) = ((sx - b * px) / flux, (sy - b * py) / flux);
        // The flat field (vignetting up to 12%, pixel response 1%) and the aperture (98% of a
        // Moffat beta = 3) take their share.
        let ratio = flux / s.flux_e;
        assert!(
            (0.8..1.02).contains(&ratio),
            "star {}: {flux:.0} e- measured, {:.0} e- true",
            s.star,
            s.flux_e
        );
        assert!(
            (cx - xd).abs() < 0.1 && (cy - yd).abs() < 0.1,
            "star {}: centroid ({cx:.2}, {cy:.2}) vs ({xd:.2}, {yd:.2})",
            s.star
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} stars were checkable");
}

#[test]
fn asteroids_move_at_their_rates_and_span_bright_to_snr_3() {
    let mut cfg = tiny();
    cfg.n_asteroids = 12;
    let night = plan(&cfg).unwrap();
    assert_eq!(night.asteroids.len(), 12);
    let mut snrs = Vec::new();
    let mut rates = Vec::new();
    for a in &night.asteroids {
        assert_eq!(a.positions.len(), 3);
        let (p, q) = (&a.positions[0], &a.positions[2]);
        let minutes = (q.mjd_mid - p.mjd_mid) * 1440.0;
        let moved = separation_deg(p.ra_deg, p.dec_deg, q.ra_deg, q.dec_deg) * 3600.0;
        assert!((moved / minutes / a.rate_arcsec_per_min - 1.0).abs() < 1e-6);
        // The middle exposure puts it on a CCD.
        assert!(a.positions[1].ccd.is_some(), "{}", a.name);
        let longer_than_seeing = a.positions.iter().any(|p| {
            let fr = &night.frames[p.frame];
            p.trail_px > fr.seeing_fwhm_arcsec / fr.camera.scale_arcsec
        });
        assert_eq!(a.trailed, longer_than_seeing, "{}", a.name);
        snrs.push(a.positions[1].snr);
        rates.push(a.rate_arcsec_per_min);
    }
    let (lo, hi) = snrs
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &s| (a.min(s), b.max(s)));
    assert!(hi > 100.0, "the brightest has S/N {hi}");
    assert!(lo < 6.0, "the faintest has S/N {lo}");
    assert!(rates.iter().all(|&r| (0.1..=100.0).contains(&r)));
    assert!(night.asteroids.iter().any(|a| a.trailed));
}

#[test]
fn a_bright_asteroid_is_in_the_pixels_and_gone_from_its_old_place() {
    let mut cfg = tiny();
    cfg.n_asteroids = 6;
    cfg.asteroid_rate_min_arcsec_per_min = 10.0;
    cfg.asteroid_rate_max_arcsec_per_min = 20.0;
    cfg.asteroid_mag_bright = 15.0;
    cfg.star_density_per_deg2 = 0.0;
    let night = plan(&cfg).unwrap();
    let a = night
        .asteroids
        .iter()
        .filter(|a| a.positions[0].ccd.is_some() && a.positions[1].ccd.is_some())
        .min_by(|a, b| a.mag.total_cmp(&b.mag))
        .expect("an asteroid on the mosaic in the first two exposures");
    let (p0, p1) = (&a.positions[0], &a.positions[1]);
    let pre = cfg.ccd.prescan as f64;
    let value_at = |frame: usize, p: &AsteroidPosition| -> f32 {
        let r = render(&night, frame);
        let k = p.ccd.unwrap() - 1;
        let e = electrons(&night, &r.ccds[k], k);
        let (x, y) = (
            (p.x.unwrap() - pre - 1.0).round() as usize,
            (p.y.unwrap() - 1.0).round() as usize,
        );
        e[y * cfg.ccd.nx + x]
    };
    let sky = night.frames[p0.frame].sky_e_per_px as f32;
    let here = value_at(p0.frame, p0);
    assert!(
        here > sky + 20.0 * sky.sqrt(),
        "{here} e- at the asteroid, sky {sky}"
    );
    // One exposure later it has moved on by about 15 "/min x 1.7 min = 75 px.
    if p1.ccd == p0.ccd {
        let r = render(&night, p1.frame);
        let k = p0.ccd.unwrap() - 1;
        let e = electrons(&night, &r.ccds[k], k);
        let (x, y) = (
            (p0.x.unwrap() - pre - 1.0).round() as usize,
            (p0.y.unwrap() - 1.0).round() as usize,
        );
        assert!(e[y * cfg.ccd.nx + x] < sky + 8.0 * sky.sqrt());
    }
}

#[test]
fn artifacts_listed_in_the_truth_are_in_the_pixels() {
    let mut cfg = tiny();
    cfg.cosmic_rays_per_cm2_per_min = 50.0;
    cfg.hot_pixels_per_ccd = 30;
    cfg.bad_columns_per_ccd = 2;
    cfg.satellite_probability = 1.0;
    cfg.star_mag_min = 9.0;
    let night = plan(&cfg).unwrap();
    let fr = night
        .frames
        .iter()
        .find(|f| f.kind == FrameKind::Science)
        .unwrap();
    let r = render(&night, fr.index);
    let pre = cfg.ccd.prescan;
    let nx = cfg.ccd.nx;
    let es: Vec<Vec<f32>> = (0..2).map(|k| electrons(&night, &r.ccds[k], k)).collect();
    let at = |ccd: usize, x: usize, y: usize| es[ccd - 1][(y - 1) * nx + (x - pre - 1)];
    // The local background: median of the ring 6 to 10 px around (x, y).
    let bg = |ccd: usize, x: usize, y: usize| {
        let mut ring = Vec::new();
        for yy in y.saturating_sub(10).max(1)..=(y + 10).min(cfg.ccd.ny) {
            for xx in x.saturating_sub(10).max(pre + 1)..=(x + 10).min(pre + nx) {
                let d = (xx as f64 - x as f64).hypot(yy as f64 - y as f64);
                if (6.0..=10.0).contains(&d) {
                    ring.push(at(ccd, xx, yy));
                }
            }
        }
        median(ring)
    };
    let hot: Vec<_> = night
        .fixed
        .iter()
        .filter_map(|a| match *a {
            Artifact::HotPixel {
                ccd,
                x,
                y,
                dark_e_per_s,
            } if dark_e_per_s * 60.0 > 2000.0 => Some((ccd, x, y, dark_e_per_s)),
            _ => None,
        })
        .collect();
    assert!(!hot.is_empty());
    for (ccd, x, y, d) in hot {
        let v = at(ccd, x, y) - bg(ccd, x, y);
        assert!(v > 0.5 * (d * 60.0) as f32, "hot pixel ({x}, {y}) {v}");
    }
    // Cosmic rays: sharp deposits the truth lists.
    let crs: Vec<_> = r
        .artifacts
        .iter()
        .filter_map(|a| match *a {
            Artifact::CosmicRay {
                ccd,
                x,
                y,
                energy_e,
                length_px,
                ..
            } if length_px < 2.0 => Some((ccd, x, y, energy_e)),
            _ => None,
        })
        .collect();
    assert!(crs.len() > 5, "{} short cosmic rays", crs.len());
    for (ccd, x, y, energy) in crs {
        let (xi, yi) = (x.round() as usize, y.round() as usize);
        let b = bg(ccd, xi, yi);
        let mut sum = 0.0;
        for yy in yi.saturating_sub(3).max(1)..=(yi + 3).min(cfg.ccd.ny) {
            for xx in xi.saturating_sub(3).max(pre + 1)..=(xi + 3).min(pre + nx) {
                sum += at(ccd, xx, yy) - b;
            }
        }
        assert!(
            sum > 0.5 * energy as f32,
            "cosmic ray at ({x:.1}, {y:.1}): {sum} of {energy}"
        );
    }
    // A satellite crosses; the truth gives where.
    let sat = night
        .satellites
        .iter()
        .find(|s| matches!(s, Artifact::Satellite { frame, .. } if *frame == fr.index));
    let Some(Artifact::Satellite {
        segments, e_per_px, ..
    }) = sat
    else {
        panic!("satellite_probability = 1 gives every science frame a satellite");
    };
    if let Some(s) = segments
        .iter()
        .find(|s| (s.x1 - s.x0).hypot(s.y1 - s.y0) > 100.0)
    {
        let (x, y) = ((s.x0 + s.x1) / 2.0, (s.y0 + s.y1) / 2.0);
        let (xi, yi) = (x.round() as usize, y.round() as usize);
        let v = at(s.ccd, xi, yi) - bg(s.ccd, xi, yi);
        assert!(
            v > 0.05 * *e_per_px as f32,
            "satellite at ({x:.0}, {y:.0}): {v}"
        );
    }
}

#[test]
fn saturated_stars_bleed_along_columns() {
    let mut e = vec![0f32; 5 * 20];
    e[10 * 5 + 2] = 5000.0;
    e[11 * 5 + 2] = 1500.0;
    let bled = render::bleed(&mut e, 5, 20, 1000.0);
    assert_eq!(bled, vec![(2, 2, 7, 14)]);
    let col: Vec<f32> = (0..20).map(|y| e[y * 5 + 2]).collect();
    assert!(col.iter().all(|&v| v <= 1000.0));
    assert!(
        (col.iter().sum::<f32>() - 6500.0).abs() < 1e-3,
        "charge is conserved"
    );
}

#[test]
fn flats_show_vignetting_and_biases_are_flat() {
    let night = plan(&tiny()).unwrap();
    let bias = render(&night, 0);
    let flat = render(&night, 1);
    assert_eq!(bias.primary.str("IMAGETYP").unwrap(), "bias");
    assert_eq!(flat.primary.str("IMAGETYP").unwrap(), "flat");
    let c = &night.ccds[0];
    let data = |im: &fits::Image| -> Vec<f32> {
        let pre = night.config.ccd.prescan;
        (0..im.height)
            .flat_map(|y| im.row(y)[pre..pre + 256].to_vec())
            .collect()
    };
    let b = data(&bias.ccds[0]);
    let m = median(b.clone());
    assert!(
        (m - c.bias_adu as f32).abs() < 10.0,
        "bias level {m} vs {}",
        c.bias_adu
    );
    let f = data(&flat.ccds[0]);
    let level = (median(f.clone()) - m) * c.gain_e_per_adu as f32;
    let expected = night.frames[1].sky_e_per_px as f32;
    assert!(
        (level / expected - 0.97).abs() < 0.05,
        "flat level {level} vs {expected}"
    );
    // CCD2 lies off the optical axis: vignetting (12% at the mosaic's corner, quadratic) dims
    // it by 4% against CCD1 on average; the twilight gradient adds up to 1% either way.
    let off_axis = median(electrons(&night, &flat.ccds[1], 1));
    let on_axis = median(electrons(&night, &flat.ccds[0], 0));
    let ratio = off_axis / on_axis;
    assert!((0.935..0.975).contains(&ratio), "CCD2 / CCD1 = {ratio}");
}

fn invocation_run(dir: &Path, params: J) -> Result<(), String> {
    let params: Map<String, J> = params.as_object().cloned().unwrap_or_default();
    let kind = task::Simulate;
    let problems = kind.validate(&params);
    if !problems.is_empty() {
        return Err(format!("{problems:?}"));
    }
    let run = nearby_engine::task::run_alone(&kind, params, BTreeMap::new(), dir);
    run.result.map_err(|e| e.to_string())?;
    assert!(run.log.starts_with("simulate: "), "{}", run.log);
    Ok(())
}

#[test]
fn the_task_writes_frames_refcat_truth_and_the_frame_list() {
    let dir = tempfile::tempdir().unwrap();
    invocation_run(
        dir.path(),
        json!({"preset": "small", "seed": 7, "n_ccds": 4, "n_exposures": 4, "compress": true}),
    )
    .unwrap();
    let list = std::fs::read_to_string(dir.path().join("frames.txt")).unwrap();
    let frames: Vec<&str> = list.lines().collect();
    assert_eq!(frames.len(), 4);
    assert!(frames
        .iter()
        .all(|f| f.starts_with("raw/r") && f.ends_with(".fits.fz")));
    for f in &frames {
        let ims = fits::read_all_images(&dir.path().join(f)).unwrap();
        assert_eq!(ims.len(), 4);
        assert_eq!(ims[3].header.str("EXTNAME").unwrap(), "CCD4");
        assert_eq!(ims[0].header.i64("BITPIX").unwrap(), 16);
    }
    let calib: Vec<_> = std::fs::read_dir(dir.path().join("calib"))
        .unwrap()
        .collect();
    assert_eq!(calib.len(), 4, "2 biases and 2 flats");

    let truth = Truth::load(&dir.path().join("truth.json")).unwrap();
    assert_eq!(truth.config.seed, 7);
    assert_eq!(truth.config.n_ccds, 4);
    assert_eq!(truth.frames.len(), 8);
    let refcat = fits::read_table(&dir.path().join("refcat.fits"), "REFCAT").unwrap();
    let in_refcat = truth.stars.iter().filter(|s| s.in_refcat).count();
    assert_eq!(refcat.nrows(), in_refcat);
    assert!(in_refcat > 20, "{in_refcat} reference stars");
    assert_eq!(refcat.column("PMRA").unwrap().unit, "mas/yr");
    assert_eq!(refcat.header.f64("EPOCH").unwrap(), 2016.0);
    let mags = refcat.f64s("MAG").unwrap();
    assert!(mags.iter().all(|&m| m <= truth.config.refcat_mag_max));
    // The rotated fourth CCD's header WCS has the off-diagonal CD terms.
    let sci = truth
        .frames
        .iter()
        .find(|f| f.kind == FrameKind::Science)
        .unwrap();
    let h = fits::read_header(&dir.path().join(&sci.file), 4).unwrap();
    assert_eq!(h.f64("CD1_1").unwrap(), 0.0);
    assert!(h.f64("CD1_2").unwrap() < 0.0);
}

#[test]
fn satellite_trails_stay_within_the_brightness_asked_for() {
    let mut cfg = tiny();
    cfg.satellite_probability = 1.0;
    cfg.satellite_e_per_px_max = 600.0;
    let night = plan(&cfg).unwrap();
    let science = night
        .frames
        .iter()
        .filter(|f| f.kind == FrameKind::Science)
        .count();
    assert_eq!(night.satellites.len(), science);
    for s in &night.satellites {
        let Artifact::Satellite { e_per_px, .. } = s else {
            panic!("not a satellite: {s:?}");
        };
        assert!((300.0..=600.0).contains(e_per_px), "{e_per_px} e/px");
    }
}

#[test]
fn the_task_rejects_bad_params_before_running() {
    let kind = task::Simulate;
    let p = |v: J| kind.validate(v.as_object().unwrap());
    assert_eq!(
        p(json!({"preset": "hst"})),
        vec![(
            "preset",
            "unknown preset `hst`; presets are: small, int_wfc".to_owned()
        )]
    );
    assert_eq!(
        p(json!({"n_ccds": 9})),
        vec![("n_ccds", "9: the INT WFC layout has 1 to 4 CCDs".to_owned())]
    );
    assert_eq!(
        p(json!({"n_exposures": -1})),
        vec![("n_exposures", "-1: expected a count (0 or more)".to_owned())]
    );
    assert!(
        p(json!({"n_exposures": "${params.n}"})).is_empty(),
        "templates are checked at run time"
    );
    assert!(p(json!({"preset": "int_wfc", "n_exposures": 6, "exptime_secs": 300.0})).is_empty());
    assert_eq!(
        p(json!({"night_offset_days": "two"})),
        vec![(
            "night_offset_days",
            "\"two\": expected a whole number of days".to_owned()
        )]
    );
    assert!(p(json!({"night": "2014-06-30", "night_offset_days": 40})).is_empty());
    assert_eq!(
        p(json!({"satellite_probability": 1.5})),
        vec![(
            "satellite_probability",
            "1.5: expected a probability, 0 to 1".to_owned()
        )]
    );
    assert_eq!(
        p(json!({"satellite_e_per_px_max": 100})),
        vec![(
            "satellite_e_per_px_max",
            "100: expected at least the faintest trail's 300 e/px".to_owned()
        )]
    );
}

/// The demo's orbit file and SPK excerpt (pipelines/demo-data): real elements, 2017-07-19..23.
fn demo_orbits() -> (
    Vec<crate::ephem::Elements>,
    crate::ephem::Spk,
    crate::ephem::Observatory,
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/demo-data");
    let text = std::fs::read_to_string(dir.join("known.mpcorb")).unwrap();
    let parsed = crate::ephem::elements::parse("known.mpcorb", &text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let spk = crate::ephem::Spk::open(&dir.join("de421-2017-07-19-to-23.bsp")).unwrap();
    let sites = crate::ephem::observer::parse_obscodes(
        "built-in",
        crate::ephem::observer::BUILTIN_OBSCODES,
    )
    .unwrap();
    (parsed.elements, spk, sites[SITE_CODE].clone())
}

#[test]
fn a_targeted_known_object_sits_on_ccd1_where_the_ephemeris_puts_it() {
    let (objects, spk, site) = demo_orbits();
    let k = known::KnownOrbits {
        objects: &objects,
        spk: &spk,
        site: &site,
    };
    let mut cfg = tiny();
    cfg.night = "2017-07-20".into();
    let pointed = known::point_at(&cfg, &k, "Aci").unwrap();
    let mut night = plan(&pointed).unwrap();
    let synthetic = night.asteroids.clone();
    known::add_known(&mut night, &k).unwrap();
    // The synthetic movers are untouched; the one known object follows them.
    assert_eq!(night.asteroids[..synthetic.len()], synthetic[..]);
    let added = &night.asteroids[synthetic.len()..];
    assert_eq!(added.len(), 1, "{added:?}");
    let aci = &added[0];
    assert_eq!(aci.known.as_deref(), Some("(6522) Aci"));
    assert_eq!(aci.id, synthetic.len() + 1);
    // In the middle exposure, at the centre of CCD 1 (raw pixels: prescan + 1-based).
    let mid = &aci.positions[aci.positions.len() / 2];
    assert_eq!(mid.ccd, Some(1));
    let (cx, cy) = (
        cfg.ccd.prescan as f64 + 1.0 + cfg.ccd.nx as f64 / 2.0,
        1.0 + cfg.ccd.ny as f64 / 2.0,
    );
    let (x, y) = (mid.x.unwrap(), mid.y.unwrap());
    assert!((x - cx).hypot(y - cy) < 0.05, "{x}, {y} vs {cx}, {cy}");
    // Each position is the ephemeris' at the exposure's middle; the trail runs along the
    // predicted motion (0.67"/min, V 16.6 on 2017-07-21, as `nearby ephem` prints).
    let elements = objects.iter().find(|o| o.is_named("6522")).unwrap();
    for p in &aci.positions {
        let t = crate::ephem::Instant::from_utc_mjd(p.mjd_mid).unwrap();
        let want = crate::ephem::predict(
            &spk,
            elements,
            &site,
            &[t],
            crate::ephem::Propagation::NBody,
        )
        .unwrap();
        assert!(
            separation_deg(p.ra_deg, p.dec_deg, want[0].ra_deg, want[0].dec_deg) * 3600.0 < 1e-6
        );
        let len =
            (p.x_end.unwrap() - p.x_start.unwrap()).hypot(p.y_end.unwrap() - p.y_start.unwrap());
        assert!(
            (len - p.trail_px).abs() < 0.01 * p.trail_px,
            "{len} vs {}",
            p.trail_px
        );
    }
    assert!(
        (aci.rate_arcsec_per_min - 0.672).abs() < 0.001,
        "{}",
        aci.rate_arcsec_per_min
    );
    assert!((aci.mag - 16.58).abs() < 0.01, "{}", aci.mag);
}

#[test]
fn known_objects_elsewhere_stay_out_and_an_unknown_target_is_named() {
    let (objects, spk, site) = demo_orbits();
    let k = known::KnownOrbits {
        objects: &objects,
        spk: &spk,
        site: &site,
    };
    let mut cfg = tiny();
    cfg.night = "2017-07-20".into();
    // The preset's field (19h08m -20 deg) holds none of the 14 objects that night.
    let mut night = plan(&cfg).unwrap();
    let n = night.asteroids.len();
    known::add_known(&mut night, &k).unwrap();
    assert_eq!(night.asteroids.len(), n);
    let e = known::point_at(&cfg, &k, "Ceres").unwrap_err();
    assert!(
        e.contains("target `Ceres` is not in the orbit file (14 objects"),
        "{e}"
    );
    // A night the excerpt does not cover says so.
    cfg.night = "2018-07-20".into();
    let e = known::point_at(&cfg, &k, "6522").unwrap_err();
    assert!(
        e.contains("target `6522`") && e.contains("not covered"),
        "{e}"
    );
}
