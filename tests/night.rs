//! The astronomy chain through the real binary: the demo night, science against the simulator's
//! truth (completeness and purity of the catalogs), a known asteroid put into a night and named
//! by `known` (needs DE421, as tests/ephem.rs), and a truncated frame quarantined.
//! Each test simulates and processes a small night: a few seconds in release, ~10-30 s in debug.

mod common;

use std::path::{Path, PathBuf};

use common::{de421, instance, states, Nearby};
use nearby_tasks::calibrate::parse_section;
use nearby_tasks::fits::{read_table, HduRef};
use nearby_tasks::simulate::{effective_pixels, Artifact, Moffat, Truth};

fn catalogs(work: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(work.join("out/extract"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("catalog.fits")))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn simulate(n: &Nearby, seed: u64) -> PathBuf {
    let out = n.path("sim");
    let r = std::process::Command::new(common::bin())
        .args([
            "simulate",
            "--preset",
            "small",
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn demo_night_makes_catalogs() {
    let n = Nearby::new();
    let t = std::time::Instant::now();
    let r = n.run(&["demo", "-q"]);
    eprintln!("demo took {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // The night's exposures stacked on their solved WCS, its tracklets cut out and reported.
    let stack =
        nearby_tasks::fits::read_image(&n.workdir().join("out/stack/stack.fits"), 0).unwrap();
    assert!(nearby_tasks::wcs::TanWcs::from_header(&stack.header).is_some());
    let report = std::fs::read_to_string(n.workdir().join("out/report/report.txt")).unwrap();
    assert!(report.starts_with("COD 950"), "{report}");
    assert!(
        report.lines().any(|l| l.len() == 80 && l.ends_with("950")),
        "{report}"
    );
    let cats = catalogs(&n.workdir());
    assert_eq!(cats.len(), 4, "{cats:?}");
    let t = read_table(&cats[0], HduRef::Index(1)).unwrap();
    assert!(t.nrows() > 10, "{} sources", t.nrows());
    assert!(t.column("ALPHA_J2000").is_ok() && t.column("X_IMAGE").is_ok());
    let list = std::fs::read_to_string(n.workdir().join("out/catalogs/catalogs.txt")).unwrap();
    assert_eq!(list.lines().count(), 4, "{list}");
    // Every exposure went through astrometry, and most CCDs were solved.
    let mut solved = 0;
    for line in list.lines() {
        let wcs = Path::new(line.trim()).with_file_name("wcs.fits");
        for (name, w) in nearby_tasks::astrometry::task::read_wcs_file(&wcs).unwrap() {
            assert!(name.starts_with("CCD"), "{name}");
            solved += usize::from(w.is_some_and(|w| w.sip.is_some()));
        }
    }
    assert!(solved >= 6, "{solved} of 8 CCDs solved");
    // CERES classified every detection that has all 4 exposures: scores in [0, 1], and the
    // catalogs copied with the scores (-1 only where no stack was made).
    let scores = std::fs::read_to_string(n.workdir().join("out/ceres/scores.csv")).unwrap();
    let rows: Vec<&str> = scores.lines().skip(1).collect();
    assert!(rows.len() > 100, "{} scored stacks", rows.len());
    let asteroids = rows.iter().filter(|r| r.ends_with(",1")).count();
    assert!(
        asteroids > 0 && asteroids < rows.len() / 4,
        "{asteroids} of {} called asteroids",
        rows.len()
    );
    let scored = std::fs::read_dir(n.workdir().join("out/ceres/catalogs"))
        .unwrap()
        .count();
    assert_eq!(scored, 4);
    // The known asteroid the demo's field is pointed at is named, offline, and reported under
    // its packed number; the synthetic movers keep temporary designations.
    let known = known_file(&n.workdir());
    let named: Vec<_> = known
        .matches
        .iter()
        .filter(|m| m.object.is_some())
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].object.as_deref(), Some("(6522) Aci"));
    assert!(
        report.lines().filter(|l| l.starts_with("06522 ")).count() >= 3,
        "{report}"
    );
    assert!(report.lines().any(|l| l.starts_with("     NB")), "{report}");
}

fn known_file(work: &Path) -> nearby_tasks::known::KnownFile {
    let text = std::fs::read_to_string(work.join("out/known/known.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Issue 5, item 5: the demo chain on another night and seed, with the whole DE421 (21 days
/// from the elements' epoch): the simulator puts (6522) Aci where the ephemeris predicts it,
/// `known` finds exactly that tracklet at a small offset, and every synthetic mover stays new.
#[test]
fn a_known_asteroid_put_in_a_night_is_named_and_the_synthetic_movers_stay_new() {
    let n = Nearby::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = root.join("pipelines/demo.yaml");
    let orbits = root.join("tasks/tests/data/ephem/horizons_objects.mpcorb");
    let set = |k: &str, v: &str| ["--set".to_owned(), format!("{k}={v}")];
    let mut args = vec![
        "run".to_owned(),
        pipeline.display().to_string(),
        "-q".into(),
    ];
    for (k, v) in [
        ("seed", "11".to_owned()),
        ("night", "2017-08-10".into()),
        ("target", "Aci".into()),
        ("orbits", orbits.display().to_string()),
        ("spk", de421().display().to_string()),
    ] {
        args.extend(set(k, &v));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = n.run(&args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let work = n.workdir();
    let truth = Truth::load(&work.join("out/simulate/truth.json")).unwrap();
    let known: Vec<_> = truth
        .asteroids
        .iter()
        .filter(|a| a.known.is_some())
        .collect();
    assert_eq!(known.len(), 1, "{known:?}");
    let aci = known[0];
    assert_eq!(aci.known.as_deref(), Some("(6522) Aci"));
    assert!(aci.positions.iter().all(|p| p.ccd == Some(1)), "{aci:?}");

    let tracklets =
        nearby_tasks::link::task::TrackletsFile::load(&work.join("out/link/tracklets.json"))
            .unwrap()
            .tracklets;
    // A tracklet's mover: the asteroid whose true position every detection lies within 1" of.
    let mover = |t: &nearby_tasks::link::task::TrackletOut| {
        truth.asteroids.iter().find(|a| {
            t.detections.iter().all(|d| {
                a.positions.iter().any(|p| {
                    (p.mjd_mid - d.mjd).abs() < 1e-5
                        && nearby_tasks::simulate::separation_deg(
                            p.ra_deg, p.dec_deg, d.ra_deg, d.dec_deg,
                        ) * 3600.0
                            < 1.0
                })
            })
        })
    };
    let matches = known_file(&work).matches;
    assert_eq!(matches.len(), tracklets.len());
    let (mut named, mut synthetic_new) = (Vec::new(), 0);
    for (m, t) in matches.iter().zip(&tracklets) {
        assert_eq!(m.tracklet, t.id);
        let truth_of = mover(t).map(|a| a.name.as_str());
        match &m.object {
            Some(object) => {
                assert_eq!(truth_of, Some("(6522) Aci"), "{m:?} is {truth_of:?}");
                assert_eq!(object, "(6522) Aci");
                assert_eq!(m.source.as_deref(), Some("ephemeris"));
                named.push(m.separation_arcsec.unwrap());
            }
            None => {
                assert_ne!(truth_of, Some("(6522) Aci"), "{m:?}");
                synthetic_new += usize::from(truth_of.is_some_and(|n| n.starts_with("SIM")));
            }
        }
    }
    eprintln!(
        "known: (6522) Aci matched {} tracklet(s), prediction - measured {named:.3?} arcsec; {synthetic_new} synthetic movers' tracklets left new",
        named.len()
    );
    assert_eq!(named.len(), 1, "{matches:?}");
    // The astrometric chain (solve, centroid of a trailed image, link) and the ephemeris agree
    // to well under the 5" match radius.
    assert!(named[0] < 0.5, "{named:?}");
    assert!(
        synthetic_new >= 3,
        "{synthetic_new} synthetic tracklets left new"
    );
    let report = std::fs::read_to_string(work.join("out/report/report.txt")).unwrap();
    let aci_lines = report.lines().filter(|l| l.starts_with("06522 ")).count();
    let aci_detections: usize = matches
        .iter()
        .zip(&tracklets)
        .filter(|(m, _)| m.object.is_some())
        .map(|(_, t)| t.detections.len())
        .sum();
    assert_eq!(aci_lines, aci_detections, "{report}");
}

fn dist_to_segment(px: f64, py: f64, (x0, y0): (f64, f64), (x1, y1): (f64, f64)) -> f64 {
    let (dx, dy) = (x1 - x0, y1 - y0);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 {
        (((px - x0) * dx + (py - y0) * dy) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (px - x0 - t * dx).hypot(py - y0 - t * dy)
}

#[test]
fn catalogs_match_the_truth() {
    let n = Nearby::new();
    // NEARBY_TEST_SEED tries other nights.
    let seed = std::env::var("NEARBY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let sim = simulate(&n, seed);
    let r = common::run_nightly(&n, &sim.join("raw"), &sim.join("calib"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let truth = Truth::load(&sim.join("truth.json")).unwrap();
    let cats = catalogs(&n.workdir());
    assert_eq!(
        cats.len(),
        truth.frames.iter().filter(|f| !f.stars.is_empty()).count()
    );
    let rn2 = |ccd: usize| truth.ccds[ccd - 1].read_noise_e.powi(2);
    let (mut want, mut found, mut clean, mut real) = (0usize, 0usize, 0usize, 0usize);
    for cat in &cats {
        for c in &truth.ccds {
            let t = read_table(cat, HduRef::Name(&c.extname)).unwrap();
            let date = t.header.str("DATE-OBS").unwrap();
            let fr = truth.frames.iter().find(|f| f.date_obs == date).unwrap();
            let sec = parse_section(&c.datasec).unwrap();
            let (ox, oy) = (sec.x0 as f64, sec.y0 as f64);
            let (w, h) = (sec.width() as f64, sec.height() as f64);
            let xs = t.f64s("X_IMAGE").unwrap();
            let ys = t.f64s("Y_IMAGE").unwrap();
            let flags = t.f64s("FLAGS").unwrap();
            let flux = t.f64s("FLUX_AUTO").unwrap();
            let ferr = t.f64s("FLUXERR_AUTO").unwrap();
            let near =
                |x: f64, y: f64, r: f64| xs.iter().zip(&ys).any(|(a, b)| (a - x).hypot(b - y) <= r);
            // Completeness: stars of S/N >= 10 (optimal S/N for a Gaussian of the seeing),
            // away from the edges.
            let fwhm_px = fr.seeing_fwhm_arcsec / truth.config.pixel_scale_arcsec;
            // The optimal S/N of a star, as the simulator computes the asteroids' `snr`.
            let n_eff =
                effective_pixels(&Moffat::from_fwhm(fwhm_px, truth.config.moffat_beta), 0.0);
            let b = fr.sky_e_per_px + rn2(c.id);
            // Stars under a satellite trail merge into it: they are not counted.
            let trails: Vec<_> = truth
                .artifacts
                .iter()
                .filter_map(|a| match a {
                    Artifact::Satellite {
                        frame, segments, ..
                    } if *frame == fr.index => Some(segments),
                    _ => None,
                })
                .flatten()
                .filter(|s| s.ccd == c.id)
                .map(|s| ((s.x0 - ox, s.y0 - oy), (s.x1 - ox, s.y1 - oy)))
                .collect();
            let mut stars = Vec::new();
            for s in fr.stars.iter().filter(|s| s.ccd == c.id) {
                let (x, y) = (s.x - ox, s.y - oy);
                stars.push((x, y));
                let snr = s.flux_e / (s.flux_e + n_eff * b).sqrt();
                let on_trail = trails
                    .iter()
                    .any(|(a, b)| dist_to_segment(x, y, *a, *b) < 5.0);
                // A star with a brighter one within 2 FWHM is an unresolved blend: not counted.
                let blended = fr.stars.iter().any(|o| {
                    o.ccd == c.id
                        && o.star != s.star
                        && o.flux_e >= s.flux_e
                        && (o.x - s.x).hypot(o.y - s.y) < 2.0 * fwhm_px
                });
                if snr >= 10.0
                    && !on_trail
                    && !blended
                    && x > 5.0
                    && y > 5.0
                    && x < w - 5.0
                    && y < h - 5.0
                {
                    want += 1;
                    if near(x, y, 1.5) {
                        found += 1;
                    } else {
                        let d = xs
                            .iter()
                            .zip(&ys)
                            .map(|(a, b)| (a - x).hypot(b - y))
                            .fold(f64::INFINITY, f64::min);
                        eprintln!("missed star {} frame {} ccd {} at {x:.1},{y:.1} S/N {snr:.1}, nearest detection {d:.2} px", s.star, fr.index, c.id);
                    }
                }
            }
            // Purity: clean S/N > 10 detections that are a star, an asteroid or an artifact.
            let mut segments: Vec<((f64, f64), (f64, f64))> = Vec::new();
            for a in &truth.asteroids {
                for p in a
                    .positions
                    .iter()
                    .filter(|p| p.frame == fr.index && p.ccd == Some(c.id))
                {
                    let mid = (p.x.unwrap() - ox, p.y.unwrap() - oy);
                    let s = p
                        .x_start
                        .zip(p.y_start)
                        .map_or(mid, |(x, y)| (x - ox, y - oy));
                    let e = p.x_end.zip(p.y_end).map_or(mid, |(x, y)| (x - ox, y - oy));
                    segments.push((s, mid));
                    segments.push((mid, e));
                }
            }
            let mut boxes: Vec<(f64, f64, f64, f64)> = Vec::new();
            for art in &truth.artifacts {
                match art {
                    Artifact::HotPixel { ccd, x, y, .. } if *ccd == c.id => {
                        let p = (*x as f64 - ox, *y as f64 - oy);
                        segments.push((p, p));
                    }
                    Artifact::BadColumn { ccd, x, y0, y1, .. } if *ccd == c.id => {
                        let xx = *x as f64 - ox;
                        segments.push(((xx, *y0 as f64 - oy), (xx, *y1 as f64 - oy)));
                    }
                    Artifact::DustRing {
                        ccd,
                        x,
                        y,
                        r_outer_px,
                        ..
                    } if *ccd == c.id => {
                        let (cx, cy) = (x - ox, y - oy);
                        boxes.push((
                            cx - r_outer_px,
                            cy - r_outer_px,
                            cx + r_outer_px,
                            cy + r_outer_px,
                        ));
                    }
                    Artifact::CosmicRay {
                        frame,
                        ccd,
                        x,
                        y,
                        length_px,
                        angle_deg,
                        ..
                    } if *frame == fr.index && *ccd == c.id => {
                        let (dx, dy) = (
                            0.5 * length_px * angle_deg.to_radians().cos(),
                            0.5 * length_px * angle_deg.to_radians().sin(),
                        );
                        let (cx, cy) = (x - ox, y - oy);
                        segments.push(((cx - dx, cy - dy), (cx + dx, cy + dy)));
                    }
                    Artifact::Satellite {
                        frame,
                        segments: segs,
                        ..
                    } if *frame == fr.index => {
                        for s in segs.iter().filter(|s| s.ccd == c.id) {
                            segments.push(((s.x0 - ox, s.y0 - oy), (s.x1 - ox, s.y1 - oy)));
                        }
                    }
                    Artifact::Bleed {
                        frame,
                        ccd,
                        x0,
                        x1,
                        y0,
                        y1,
                    } if *frame == fr.index && *ccd == c.id => {
                        boxes.push((
                            *x0 as f64 - ox,
                            *y0 as f64 - oy,
                            *x1 as f64 - ox,
                            *y1 as f64 - oy,
                        ));
                    }
                    _ => {}
                }
            }
            for i in 0..xs.len() {
                if flags[i] != 0.0
                    || ferr[i].is_nan()
                    || ferr[i] <= 0.0
                    || flux[i] / ferr[i] <= 10.0
                {
                    continue;
                }
                clean += 1;
                let (x, y) = (xs[i], ys[i]);
                let ok = stars.iter().any(|s| (s.0 - x).hypot(s.1 - y) <= 1.5)
                    || segments
                        .iter()
                        .any(|(a, b)| dist_to_segment(x, y, *a, *b) <= 1.5)
                    || boxes.iter().any(|b| {
                        x >= b.0 - 1.5 && x <= b.2 + 1.5 && y >= b.1 - 1.5 && y <= b.3 + 1.5
                    });
                if ok {
                    real += 1;
                }
            }
        }
    }
    let completeness = found as f64 / want.max(1) as f64;
    let purity = real as f64 / clean.max(1) as f64;
    eprintln!(
        "completeness {completeness:.4} ({found}/{want} stars of S/N >= 10), purity {purity:.4} \
         ({real}/{clean} clean detections of S/N > 10)"
    );
    assert!(want > 50, "too few stars to judge: {want}");
    assert!(completeness >= 0.98, "completeness {completeness}");
    assert!(purity >= 0.9, "purity {purity}");
}

#[test]
fn a_truncated_frame_is_quarantined_and_the_rest_of_the_night_goes_on() {
    let n = Nearby::new();
    let sim = simulate(&n, 3);
    let raw = n.path("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(sim.join("raw")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, raw.join(p.file_name().unwrap())).unwrap();
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    let bad = raw.join(&names[1]);
    let len = std::fs::metadata(&bad).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();
    let r = common::run_nightly(&n, &raw, &sim.join("calib"));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let s = n.status(&r.run_id);
    let st = states(&s);
    let bad_cal = st
        .keys()
        .find(|k| k.starts_with("calibrate[") && k.contains(names[1].trim_end_matches(".fits")))
        .unwrap_or_else(|| panic!("no calibrate instance for {}: {st:?}", names[1]))
        .clone();
    let i = instance(&s, &bad_cal);
    assert_eq!(i["state"], "failed", "{i:#}");
    assert_eq!(i["quarantined"], true, "{i:#}");
    let err = i["error"].as_str().unwrap();
    assert!(err.contains(&names[1]) && err.contains("HDU"), "{err}");
    let bad_ext = bad_cal.replace("calibrate[", "extract[");
    assert_eq!(st[&bad_ext], "skipped", "{st:?}");
    assert_eq!(st["catalogs"], "succeeded", "{st:?}");
    assert_eq!(catalogs(&n.workdir()).len(), names.len() - 1);
    let list = std::fs::read_to_string(n.workdir().join("out/catalogs/catalogs.txt")).unwrap();
    assert_eq!(list.lines().count(), names.len() - 1, "{list}");
}
