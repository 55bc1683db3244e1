//! Linking against the simulator's truth, through the binary: simulated nights (small preset,
//! 40 asteroids) run through pipelines/nightly.yaml (calibrate, extract, link), then every
//! tracklet is compared with the asteroids' true trails.
//!
//! Completeness: of the asteroids detected (a catalog source within 3 px of the true trail, not
//! on a true star at least half as bright) in at least 3 exposures on one CCD and moving at least 2" over them, the fraction that a pure
//! tracklet holds. Purity: tracklets whose detections all lie on one asteroid's trail. Both are
//! printed by rate and S/N bin, and every missed asteroid with the sources on its trail per
//! exposure. `NEARBY_TEST_SEEDS=1,2,3` tries other nights.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::Nearby;
use nearby_tasks::calibrate::parse_section;
use nearby_tasks::fits::{read_headers, read_table};
use nearby_tasks::link::task::TrackletsFile;
use nearby_tasks::simulate::Truth;

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

/// A catalog source (x, y, elongation) or a true star (x, y, electrons), calibrated pixels.
type Point = (f64, f64, f64);

/// Per night: (linkable asteroids as (rate, min S/N, found), tracklets, pure tracklets).
fn night(seed: u64) -> (Vec<(f64, f64, bool)>, usize, usize) {
    let n = Nearby::new();
    let sim = n.path("sim");
    let r = std::process::Command::new(common::bin())
        .args(["simulate", "--preset", "small", "--n-asteroids", "40"])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(&sim)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = common::run_nightly(&n, &sim.join("raw"), &sim.join("calib"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let truth = Truth::load(&sim.join("truth.json")).unwrap();
    let tracklets = TrackletsFile::load(&n.workdir().join("out/link/tracklets.json")).unwrap();
    // Catalog positions by (DATE-OBS, CCDNAME).
    let mut cats: HashMap<(String, String), Vec<Point>> = HashMap::new();
    for d in std::fs::read_dir(n.workdir().join("out/extract")).unwrap() {
        let f = d.unwrap().path().join("catalog.fits");
        for hdu in 1..read_headers(&f).unwrap().len() {
            let t = read_table(&f, hdu).unwrap();
            let key = (
                t.header.str("DATE-OBS").unwrap(),
                t.header.str("CCDNAME").unwrap(),
            );
            let xy = t
                .f64s("X_IMAGE")
                .unwrap()
                .into_iter()
                .zip(t.f64s("Y_IMAGE").unwrap())
                .zip(t.f64s("ELONGATION").unwrap())
                .map(|((x, y), e)| (x, y, e))
                .collect();
            cats.insert(key, xy);
        }
    }
    let frames: HashMap<usize, &_> = truth.frames.iter().map(|f| (f.index, f)).collect();
    let ccd = |id: usize| &truth.ccds[id - 1];
    // A true trail in calibrated pixels (the catalogs are trimmed to DATASEC).
    let trail = |p: &nearby_tasks::simulate::AsteroidPosition| {
        let c = ccd(p.ccd.unwrap());
        let sec = parse_section(&c.datasec).unwrap();
        let (ox, oy) = (sec.x0 as f64, sec.y0 as f64);
        (
            (p.x_start.unwrap() - ox, p.y_start.unwrap() - oy),
            (p.x_end.unwrap() - ox, p.y_end.unwrap() - oy),
        )
    };
    let on_trail = |x: f64, y: f64, p: &nearby_tasks::simulate::AsteroidPosition| {
        let (a, b) = trail(p);
        dist_to_segment(x, y, a, b) <= 3.0
    };
    // Which asteroid a tracklet detection lies on.
    let owner = |ccdname: &str, mjd: f64, x: f64, y: f64| -> Option<usize> {
        truth.asteroids.iter().find_map(|a| {
            a.positions
                .iter()
                .find(|p| {
                    p.ccd.is_some_and(|c| ccd(c).ccdname == ccdname)
                        && (p.mjd_mid - mjd).abs() * 86400.0 < 1.0
                        && on_trail(x, y, p)
                })
                .map(|_| a.id)
        })
    };
    let mut found: HashSet<usize> = HashSet::new();
    let mut pure = 0;
    for t in &tracklets.tracklets {
        let owners: Vec<Option<usize>> = t
            .detections
            .iter()
            .map(|d| owner(&t.ccd, d.mjd, d.x, d.y))
            .collect();
        match owners[0] {
            Some(a) if owners.iter().all(|o| *o == Some(a)) => {
                pure += 1;
                found.insert(a);
            }
            _ => eprintln!(
                "seed {seed}: impure tracklet {} ({:.2}\"/min): {owners:?}",
                t.id, t.rate_arcsec_per_min
            ),
        }
    }
    // True stars per (frame, CCD), calibrated pixels and electrons.
    let mut stars: HashMap<(usize, usize), Vec<Point>> = HashMap::new();
    for fr in &truth.frames {
        for s in &fr.stars {
            let sec = parse_section(&ccd(s.ccd).datasec).unwrap();
            stars.entry((fr.index, s.ccd)).or_default().push((
                s.x - sec.x0 as f64,
                s.y - sec.y0 as f64,
                s.flux_e,
            ));
        }
    }
    // Tracklet detections per asteroid (any tracklet), to tell "never linked" from "linked
    // into an impure tracklet".
    let mut touched: HashMap<usize, usize> = HashMap::new();
    for t in &tracklets.tracklets {
        for d in &t.detections {
            if let Some(a) = owner(&t.ccd, d.mjd, d.x, d.y) {
                *touched.entry(a).or_default() += 1;
            }
        }
    }
    let mut linkable = Vec::new();
    for a in &truth.asteroids {
        // Detected positions per CCD: a catalog source on the trail that is not a star at least
        // half as bright as the asteroid (that source would be the star's).
        let mut per_ccd: BTreeMap<usize, Vec<&nearby_tasks::simulate::AsteroidPosition>> =
            BTreeMap::new();
        let mut pieces: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for p in a.positions.iter().filter(|p| p.ccd.is_some()) {
            let fr = frames[&p.frame];
            let key = (fr.date_obs.clone(), ccd(p.ccd.unwrap()).ccdname.clone());
            let near_star = |x: f64, y: f64| {
                stars.get(&(p.frame, p.ccd.unwrap())).is_some_and(|v| {
                    v.iter()
                        .any(|s| s.2 >= 0.5 * p.flux_e && (s.0 - x).hypot(s.1 - y) <= 2.0)
                })
            };
            let on: Vec<&(f64, f64, f64)> = cats
                .get(&key)
                .map(|xy| {
                    xy.iter()
                        .filter(|&&(x, y, _)| on_trail(x, y, p) && !near_star(x, y))
                        .collect()
                })
                .unwrap_or_default();
            pieces.entry(p.ccd.unwrap()).or_default().push(format!(
                "e{}:{}[{}]",
                p.exposure,
                on.len(),
                on.iter()
                    .map(|s| format!("{:.1}", s.2))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            if !on.is_empty() {
                per_ccd.entry(p.ccd.unwrap()).or_default().push(p);
            }
        }
        let Some((best_ccd, best)) = per_ccd.iter().max_by_key(|v| v.1.len()) else {
            continue;
        };
        let span_min = (best[best.len() - 1].mjd_mid - best[0].mjd_mid) * 1440.0;
        if best.len() >= 3 && a.rate_arcsec_per_min * span_min >= 2.0 {
            let snr = best.iter().map(|p| p.snr).fold(f64::INFINITY, f64::min);
            let hit = found.contains(&a.id);
            if !hit {
                eprintln!(
                    "seed {seed}: missed {} {:.2}\"/min mag {:.1} S/N {snr:.0} trail {:.0}px, \
                     {} detections in tracklets; sources on trail (elongation): {}",
                    a.name,
                    a.rate_arcsec_per_min,
                    a.mag,
                    best[0].trail_px,
                    touched.get(&a.id).copied().unwrap_or(0),
                    pieces[best_ccd].join(" ")
                );
            }
            linkable.push((a.rate_arcsec_per_min, snr, hit));
        }
    }
    (linkable, tracklets.tracklets.len(), pure)
}

fn fraction(v: &[&(f64, f64, bool)]) -> String {
    let f = v.iter().filter(|x| x.2).count();
    format!(
        "{f}/{} ({:.0}%)",
        v.len(),
        100.0 * f as f64 / v.len().max(1) as f64
    )
}

#[test]
fn tracklets_match_the_truth() {
    let seeds: Vec<u64> = std::env::var("NEARBY_TEST_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![7, 8]);
    let (mut all, mut n_tracklets, mut n_pure) = (Vec::new(), 0, 0);
    for s in seeds {
        let (l, t, p) = night(s);
        all.extend(l);
        n_tracklets += t;
        n_pure += p;
    }
    let refs: Vec<&(f64, f64, bool)> = all.iter().collect();
    eprintln!(
        "completeness {} of asteroids detected >= 3 times and moving >= 2\"",
        fraction(&refs)
    );
    for (lo, hi) in [(0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 100.0)] {
        let bin: Vec<_> = refs
            .iter()
            .copied()
            .filter(|x| x.0 >= lo && x.0 < hi)
            .collect();
        eprintln!("  rate {lo:>4}-{hi:<4} \"/min: {}", fraction(&bin));
    }
    for (lo, hi) in [
        (0.0, 10.0),
        (10.0, 30.0),
        (30.0, 100.0),
        (100.0, f64::INFINITY),
    ] {
        let bin: Vec<_> = refs
            .iter()
            .copied()
            .filter(|x| x.1 >= lo && x.1 < hi)
            .collect();
        eprintln!("  S/N  {lo:>4}-{hi:<4}: {}", fraction(&bin));
    }
    let purity = n_pure as f64 / n_tracklets.max(1) as f64;
    eprintln!("purity {n_pure}/{n_tracklets} ({:.1}%)", 100.0 * purity);
    let completeness = all.iter().filter(|x| x.2).count() as f64 / all.len().max(1) as f64;
    assert!(
        all.len() >= 20,
        "too few linkable asteroids to judge: {}",
        all.len()
    );
    // Measured: see docs/tasks.md (link; seeds 7 and 8: 89% / 93.6%). These bounds guard
    // against regressions; the targets (98% / 97%) are not reached yet.
    assert!(completeness >= 0.85, "completeness {completeness:.3}");
    assert!(purity >= 0.9, "purity {purity:.3}");
}
