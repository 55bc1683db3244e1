//! Linking against the simulator's truth, through the binary: simulated nights (small preset,
//! 40 asteroids) run through pipelines/nightly.yaml (calibrate, extract, link), then every
//! tracklet is compared with the asteroids' true trails.
//!
//! Completeness, the fraction of asteroids that a pure tracklet holds, is given two ways: of all
//! asteroids inserted, and of those the extractor detected (a catalog source within 3 px of the
//! true trail, not on a true star at least half as bright) in at least 3 exposures of one CCD and
//! that move at least 2" over them (slower ones cannot be told from stars). The second is what
//! linking can reach and what the bounds below guard. Purity: tracklets whose detections all lie
//! on one asteroid's trail (a detection where two trails cross lies on both). Completeness is printed by rate and S/N bin, and every missed
//! detected asteroid with the sources on its trail per exposure.
//!
//! `NEARBY_TEST_SEEDS=1,2,3` tries other nights. `NEARBY_TEST_KEEP=DIR` keeps each night's
//! simulation and workdir in `DIR/seed-N`; a later run with the same DIR reruns only `link` on
//! the kept catalogs (`nearby rerun --from link`), for quick turns while working on the linker;
//! `NEARBY_TEST_RERUN_FROM=extract` reruns from that task instead (for work on extraction).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::Nearby;
use nearby_tasks::calibrate::parse_section;
use nearby_tasks::fits::{read_headers, read_table};
use nearby_tasks::link::task::TrackletsFile;
use nearby_tasks::simulate::{asteroid_at, Asteroid, AsteroidPosition, Truth};

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

/// One inserted asteroid as the test sees it.
struct Outcome {
    rate: f64,
    /// Median expected S/N over its exposures.
    snr: f64,
    /// Detected in >= 3 exposures of one CCD.
    detected: bool,
    /// ... and moving >= 2" between the first and last of them.
    moving: bool,
    /// A pure tracklet holds it.
    found: bool,
}

/// Simulates the night `seed` and runs the nightly pipeline on it; returns the simulation and
/// work directories (and the temporary directory holding them, unless kept).
fn simulate_and_run(seed: u64) -> (std::path::PathBuf, std::path::PathBuf, Option<Nearby>) {
    let keep = std::env::var_os("NEARBY_TEST_KEEP").map(std::path::PathBuf::from);
    let n = Nearby::new();
    let base = match &keep {
        Some(k) => k.join(format!("seed-{seed}")),
        None => n.path(""),
    };
    let (sim, work) = (base.join("sim"), base.join("work"));
    let run_id = base.join("run-id");
    if let (true, Ok(id)) = (keep.is_some(), std::fs::read_to_string(&run_id)) {
        let from = std::env::var("NEARBY_TEST_RERUN_FROM").unwrap_or_else(|_| "link".to_string());
        let r = std::process::Command::new(common::bin())
            .args(["rerun", id.trim(), "--from", &from, "-q", "--workdir"])
            .arg(&work)
            .output()
            .unwrap();
        // Tasks beside the linker may rerun too (`ceres` needs a model that the test does not
        // provide, and a failed task reruns): only extract's and link's failures count.
        let err = String::from_utf8_lossy(&r.stderr);
        let ours_failed = err
            .lines()
            .any(|l| l.starts_with("FAILED extract") || l.starts_with("FAILED link"));
        assert!(r.status.success() || !ours_failed, "{err}");
        return (sim, work, None);
    }
    let r = std::process::Command::new(common::bin())
        .args(["simulate", "--preset", "small", "--n-asteroids", "40"])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(&sim)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nightly.yaml");
    let r = std::process::Command::new(common::bin())
        .arg("run")
        .arg(&pipeline)
        .args(["-q", "--set"])
        .arg(format!("raw_dir={}", sim.join("raw").display()))
        .arg("--set")
        .arg(format!("calib_dir={}", sim.join("calib").display()))
        // Extraction's faint trail search, off by default (its cost on crowded fields).
        .args(["--set", "trail_snr=10"])
        .arg("--workdir")
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    if keep.is_some() {
        std::fs::write(&run_id, stdout.lines().next().unwrap_or_default()).unwrap();
        return (sim, work, None);
    }
    (sim, work, Some(n))
}

/// Per night: every inserted asteroid's outcome, tracklets, pure tracklets.
fn night(seed: u64) -> (Vec<Outcome>, usize, usize) {
    let (sim, work, _tmp) = simulate_and_run(seed);
    let truth = Truth::load(&sim.join("truth.json")).unwrap();
    let tracklets = TrackletsFile::load(&work.join("out/link/tracklets.json")).unwrap();
    // Catalog positions by (DATE-OBS, CCDNAME).
    let mut cats: HashMap<(String, String), Vec<Point>> = HashMap::new();
    // Sources of the faint trail search (FLAGS 256): (DATE-OBS, CCDNAME, x, y).
    let mut searched: Vec<(String, String, f64, f64)> = Vec::new();
    for d in std::fs::read_dir(work.join("out/extract")).unwrap() {
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
                .collect::<Vec<Point>>();
            let flags = t.f64s("FLAGS").unwrap();
            for (f, (x, y, _)) in flags.iter().zip(&xy) {
                if (*f as i64) & i64::from(nearby_tasks::extract::FLAG_TRAIL_SEARCH) != 0 {
                    searched.push((key.0.clone(), key.1.clone(), *x, *y));
                }
            }
            cats.insert(key, xy);
        }
    }
    let frames: HashMap<usize, &_> = truth.frames.iter().map(|f| (f.index, f)).collect();
    let ccd = |id: usize| &truth.ccds[id - 1];
    // A true trail on CCD `c` in calibrated pixels (the catalogs are trimmed to DATASEC), also
    // where the mid-exposure position lies on another CCD or off the mosaic (a trail cut at the
    // edge): the ends at exposure start and end, mapped as the simulator maps them.
    let trail = |p: &AsteroidPosition, a: &Asteroid, c: usize| {
        let fr = frames[&p.frame];
        let c = ccd(c);
        let sec = parse_section(&c.datasec).unwrap();
        let half = fr.exptime_secs / 2.0 / 86400.0;
        let at = |mjd: f64| {
            let (ra, dec) = asteroid_at(
                p.ra_deg,
                p.dec_deg,
                p.mjd_mid,
                a.rate_arcsec_per_min,
                a.pa_deg,
                mjd,
            );
            let (u, v) = fr.camera.sky_to_focal(ra, dec)?;
            let (xd, yd) = c.placement.from_focal(u, v);
            // Raw pixels as the simulator writes them, then trimmed like the stars below.
            let (x, y) = (xd + truth.config.ccd.prescan as f64 + 1.0, yd + 1.0);
            Some((x - sec.x0 as f64, y - sec.y0 as f64))
        };
        Some((at(p.mjd_mid - half)?, at(p.mjd_mid + half)?))
    };
    let on_trail = |x: f64, y: f64, p: &AsteroidPosition, a: &Asteroid, c: usize| {
        trail(p, a, c).is_some_and(|(s, e)| dist_to_segment(x, y, s, e) <= 3.0)
    };
    // The mapping agrees with the simulator's own trail ends where it gives them.
    let mut worst_px: f64 = 0.0;
    for a in &truth.asteroids {
        for p in &a.positions {
            if let (Some(c), Some(xs), Some(ye)) = (p.ccd, p.x_start, p.y_end) {
                let sec = parse_section(&ccd(c).datasec).unwrap();
                let ((x0, _), (_, y1)) = trail(p, a, c).unwrap();
                worst_px = worst_px
                    .max((x0 - (xs - sec.x0 as f64)).abs())
                    .max((y1 - (ye - sec.y0 as f64)).abs());
            }
        }
    }
    assert!(worst_px < 0.1, "trail ends off by {worst_px} px");
    let ccd_id = |name: &str| truth.ccds.iter().find(|c| c.ccdname == name).unwrap().id;
    // Which asteroids' trails a tracklet detection lies on: a fast mover's long trail can cross
    // another asteroid, and a detection there is on both.
    let owners = |ccdname: &str, mjd: f64, x: f64, y: f64| -> Vec<usize> {
        truth
            .asteroids
            .iter()
            .filter(|a| {
                a.positions.iter().any(|p| {
                    (p.mjd_mid - mjd).abs() * 86400.0 < 1.0 && on_trail(x, y, p, a, ccd_id(ccdname))
                })
            })
            .map(|a| a.id)
            .collect()
    };
    // Trails of the search that lie on a true asteroid trail (their purity against truth).
    let true_trails = searched
        .iter()
        .filter(|(date, ccdname, x, y)| {
            let Some(fr) = truth.frames.iter().find(|f| &f.date_obs == date) else {
                return false;
            };
            truth.asteroids.iter().any(|a| {
                a.positions
                    .iter()
                    .any(|p| p.frame == fr.index && on_trail(*x, *y, p, a, ccd_id(ccdname)))
            })
        })
        .count();
    eprintln!(
        "seed {seed}: faint trail search found {} trails, {true_trails} on a true trail",
        searched.len()
    );
    let mut found: HashSet<usize> = HashSet::new();
    let mut pure = 0;
    for t in &tracklets.tracklets {
        let on: Vec<Vec<usize>> = t
            .detections
            .iter()
            .map(|d| owners(&t.ccd, d.mjd, d.x, d.y))
            .collect();
        // Pure: one asteroid's trail holds every detection.
        match on[0].iter().find(|a| on.iter().all(|o| o.contains(a))) {
            Some(&a) => {
                pure += 1;
                found.insert(a);
            }
            None => eprintln!(
                "seed {seed}: impure tracklet {} ({:.2}\"/min): {on:?}",
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
            for a in owners(&t.ccd, d.mjd, d.x, d.y) {
                *touched.entry(a).or_default() += 1;
            }
        }
    }
    let mut outcomes = Vec::new();
    for a in &truth.asteroids {
        let mut snrs: Vec<f64> = a.positions.iter().map(|p| p.snr).collect();
        snrs.sort_by(f64::total_cmp);
        let mut outcome = Outcome {
            rate: a.rate_arcsec_per_min,
            snr: snrs.get(snrs.len() / 2).copied().unwrap_or(0.0),
            detected: false,
            moving: false,
            found: found.contains(&a.id),
        };
        // Detected positions per CCD: a catalog source on the trail that is not a star at least
        // half as bright as the asteroid (that source would be the star's).
        let mut per_ccd: BTreeMap<usize, Vec<&AsteroidPosition>> = BTreeMap::new();
        let mut pieces: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (p, c) in a
            .positions
            .iter()
            .flat_map(|p| truth.ccds.iter().map(move |c| (p, c.id)))
        {
            let fr = frames[&p.frame];
            let key = (fr.date_obs.clone(), ccd(c).ccdname.clone());
            let near_star = |x: f64, y: f64| {
                stars.get(&(p.frame, c)).is_some_and(|v| {
                    v.iter()
                        .any(|s| s.2 >= 0.5 * p.flux_e && (s.0 - x).hypot(s.1 - y) <= 2.0)
                })
            };
            let on: Vec<&(f64, f64, f64)> = cats
                .get(&key)
                .map(|xy| {
                    xy.iter()
                        .filter(|&&(x, y, _)| on_trail(x, y, p, a, c) && !near_star(x, y))
                        .collect()
                })
                .unwrap_or_default();
            // Where the trail's middle lies (calibrated pixels, 1-based as the catalogs).
            let mid = trail(p, a, c).map_or(String::new(), |((x0, y0), (x1, y1))| {
                format!("@{:.0},{:.0}", 0.5 * (x0 + x1), 0.5 * (y0 + y1))
            });
            pieces.entry(c).or_default().push(format!(
                "e{}{mid}:{}[{}]",
                p.exposure,
                on.len(),
                on.iter()
                    .map(|s| format!("{:.1}", s.2))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            if !on.is_empty() {
                per_ccd.entry(c).or_default().push(p);
            }
        }
        if let Some((best_ccd, best)) = per_ccd.iter().max_by_key(|v| v.1.len()) {
            let span_min = (best[best.len() - 1].mjd_mid - best[0].mjd_mid) * 1440.0;
            outcome.detected = best.len() >= 3;
            outcome.moving = a.rate_arcsec_per_min * span_min >= 2.0;
            if outcome.detected && outcome.moving && !outcome.found {
                let snr = best.iter().map(|p| p.snr).fold(f64::INFINITY, f64::min);
                eprintln!(
                    "seed {seed}: missed {} {:.2}\"/min mag {:.1} S/N {snr:.0} trail {:.0}px, \
                     {} detections in tracklets; on {}, sources on trail (elongation): {}",
                    a.name,
                    a.rate_arcsec_per_min,
                    a.mag,
                    best[0].trail_px,
                    touched.get(&a.id).copied().unwrap_or(0),
                    ccd(*best_ccd).ccdname,
                    pieces[best_ccd].join(" ")
                );
            }
        }
        outcomes.push(outcome);
    }
    (outcomes, tracklets.tracklets.len(), pure)
}

/// "found/total (percent)" of `v`.
fn fraction(v: &[&Outcome]) -> String {
    let f = v.iter().filter(|x| x.found).count();
    format!(
        "{f}/{} ({:.0}%)",
        v.len(),
        100.0 * f as f64 / v.len().max(1) as f64
    )
}

/// Completeness of `v` overall, by rate and by S/N, as one table.
fn completeness_table(title: &str, v: &[&Outcome]) {
    eprintln!("completeness of {title}: {}", fraction(v));
    for (lo, hi) in [(0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 100.0)] {
        let bin: Vec<_> = v
            .iter()
            .copied()
            .filter(|x| x.rate >= lo && x.rate < hi)
            .collect();
        eprintln!("  rate {lo:>4}-{hi:<4} \"/min: {}", fraction(&bin));
    }
    for (lo, hi) in [
        (0.0, 10.0),
        (10.0, 30.0),
        (30.0, 100.0),
        (100.0, f64::INFINITY),
    ] {
        let bin: Vec<_> = v
            .iter()
            .copied()
            .filter(|x| x.snr >= lo && x.snr < hi)
            .collect();
        eprintln!("  S/N  {lo:>4}-{hi:<4}: {}", fraction(&bin));
    }
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
    let every: Vec<&Outcome> = all.iter().collect();
    completeness_table("all asteroids inserted", &every);
    let detected: Vec<&Outcome> = all.iter().filter(|x| x.detected).collect();
    completeness_table("asteroids detected in >= 3 exposures", &detected);
    let linkable: Vec<&Outcome> = detected.iter().copied().filter(|x| x.moving).collect();
    completeness_table(
        "asteroids detected in >= 3 exposures and moving >= 2\"",
        &linkable,
    );
    let purity = n_pure as f64 / n_tracklets.max(1) as f64;
    eprintln!("purity {n_pure}/{n_tracklets} ({:.1}%)", 100.0 * purity);
    let completeness =
        linkable.iter().filter(|x| x.found).count() as f64 / linkable.len().max(1) as f64;
    assert!(
        linkable.len() >= 20,
        "too few linkable asteroids to judge: {}",
        linkable.len()
    );
    // Measured: see docs/tasks.md and bench/RESULTS-link.md (with extract's faint trail search,
    // seeds 7 and 8: 44/46 = 96% of those detected >= 3 times and moving >= 2", purity 48/49;
    // before it 42/46, purity 47/47). These bounds guard against regressions; the completeness target
    // (98%) is not reached, its purity target (97%) is.
    let detected_found =
        detected.iter().filter(|x| x.found).count() as f64 / detected.len().max(1) as f64;
    assert!(completeness >= 0.89, "completeness {completeness:.3}");
    assert!(
        detected_found >= 0.75,
        "completeness of all detected {detected_found:.3}"
    );
    assert!(purity >= 0.97, "purity {purity:.3}");
}
