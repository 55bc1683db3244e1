//! The solver against the simulator's true cameras (radial distortion, pointing errors, proper
//! motions), without pixels: sources are the truth's star positions with centroid noise of the
//! stars' signal-to-noise, plus spurious sources. The pixel-level chain (simulate, calibrate,
//! extract, astrometry) is measured by bench/astrometry_vs_scamp.sh and run by the demo.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::refcat::{RefCatalog, RefStar};
use super::*;
use crate::simulate::{plan, star_at, FrameKind, Night, SimConfig};

fn julian_year(mjd: f64) -> f64 {
    2000.0 + (mjd - 51544.5) / 365.25
}

/// One CCD of a planned night, as the solver would see it after calibration (trimmed pixels).
struct Field {
    night: Night,
    frame: usize,
    ccd: usize,
    width: usize,
    height: usize,
    hint: TanWcs,
    sources: Vec<Source>,
    epoch: f64,
}

fn field(cfg: &SimConfig, ccd: usize, spurious: usize) -> Field {
    let night = plan(cfg).unwrap();
    let frame = night
        .frames
        .iter()
        .position(|f| f.kind == FrameKind::Science)
        .unwrap();
    let fr = &night.frames[frame];
    let prescan = cfg.ccd.prescan as f64;
    let hw = &fr.header_wcs[ccd - 1];
    let hint = TanWcs::new(
        [hw.crpix1 - prescan, hw.crpix2],
        [hw.crval1, hw.crval2],
        hw.cd,
    );
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let fwhm = fr.seeing_fwhm_arcsec / cfg.pixel_scale_arcsec;
    let b = fr.sky_e_per_px + 40.0;
    let mut sources: Vec<Source> = fr
        .stars
        .iter()
        .filter(|s| s.ccd == ccd)
        .filter_map(|s| {
            let snr = s.flux_e / (s.flux_e + 4.0 * fwhm * fwhm * b).sqrt();
            let sigma = fwhm / 2.35 / snr;
            let (x, y) = (s.x - prescan, s.y);
            let inside = x >= 0.5
                && y >= 0.5
                && x <= cfg.ccd.nx as f64 + 0.5
                && y <= cfg.ccd.ny as f64 + 0.5;
            (snr > 5.0 && inside).then(|| {
                let gx: f64 = StandardNormal.sample(&mut r);
                let gy: f64 = StandardNormal.sample(&mut r);
                Source {
                    x: x + sigma * gx,
                    y: y + sigma * gy,
                    sigma_px: sigma,
                    flux: s.flux_e,
                    clean: true,
                }
            })
        })
        .collect();
    // Asteroids, cosmic rays and galaxies: sources no reference star explains.
    let fluxes: Vec<f64> = sources.iter().map(|s| s.flux).collect();
    for _ in 0..spurious {
        sources.push(Source {
            x: r.random_range(1.0..cfg.ccd.nx as f64),
            y: r.random_range(1.0..cfg.ccd.ny as f64),
            sigma_px: 0.1,
            flux: fluxes[r.random_range(0..fluxes.len())],
            clean: true,
        });
    }
    let epoch = julian_year(fr.mjd_start + fr.exptime_secs / 2.0 / 86400.0);
    Field {
        width: cfg.ccd.nx,
        height: cfg.ccd.ny,
        night,
        frame,
        ccd,
        hint,
        sources,
        epoch,
    }
}

fn refcat(night: &Night) -> RefCatalog {
    RefCatalog::new(
        night
            .stars
            .iter()
            .filter(|s| s.in_refcat)
            .map(|s| RefStar {
                ra_deg: s.ra_deg,
                dec_deg: s.dec_deg,
                pmra_mas_per_yr: s.pmra_mas_per_yr,
                pmdec_mas_per_yr: s.pmdec_mas_per_yr,
                epoch_jyr: night.config.refcat_epoch,
                mag: s.mag,
            })
            .collect(),
    )
}

fn refs_for(f: &Field, cat: &RefCatalog, cfg: &SolveConfig) -> Vec<SkyStar> {
    let (ra, dec, r) = search_cone(&f.hint, f.width, f.height, cfg);
    cat.cone(ra, dec, r)
        .iter()
        .map(|s| {
            let (ra_deg, dec_deg) = s.at(f.epoch);
            SkyStar {
                ra_deg,
                dec_deg,
                mag: s.mag,
            }
        })
        .collect()
}

/// RMS and largest distance (pixels) between where the solution puts every true star of the
/// CCD (at the epoch) and its true pixel position.
fn error_vs_truth(f: &Field, wcs: &TanWcs) -> (f64, f64, usize) {
    let cfg = &f.night.config;
    let fr = &f.night.frames[f.frame];
    let mut d2 = Vec::new();
    for s in fr.stars.iter().filter(|s| s.ccd == f.ccd) {
        let (x, y) = (s.x - cfg.ccd.prescan as f64, s.y);
        if x < 0.5 || y < 0.5 || x > f.width as f64 + 0.5 || y > f.height as f64 + 0.5 {
            continue;
        }
        let star = &f.night.stars[s.star - 1];
        let (ra, dec) = star_at(star, f.epoch, cfg.refcat_epoch);
        let (px, py) = wcs.sky_to_pix(ra, dec).unwrap();
        d2.push((px - x).powi(2) + (py - y).powi(2));
    }
    let rms = (d2.iter().sum::<f64>() / d2.len() as f64).sqrt();
    let max = d2.iter().copied().fold(0.0, f64::max).sqrt();
    (rms, max, d2.len())
}

fn wfc(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        n_exposures: 1,
        ..SimConfig::int_wfc()
    }
}

#[test]
fn int_wfc_ccds_solve_to_a_hundredth_of_a_pixel() {
    let cfg = SolveConfig::default();
    for (seed, ccd) in [(1, 1), (2, 4), (3, 3)] {
        let f = field(&wfc(seed), ccd, 40);
        let cat = refcat(&f.night);
        let refs = refs_for(&f, &cat, &cfg);
        let s = solve(&f.sources, f.width, f.height, &f.hint, &refs, &cfg).unwrap();
        let (rms, max, n) = error_vs_truth(&f, &s.wcs);
        println!(
            "seed {seed} CCD{ccd}: {} matches, fit RMS {:.4} px, vs truth RMS {rms:.4} px (max \
             {max:.4}) over {n} stars, order {}, inverse {:.1e} px",
            s.n_used, s.rms_px, s.order, s.inverse_err_px
        );
        assert!(s.n_used >= 60 && s.order == 3, "{} matches", s.n_used);
        assert!(rms < 0.04 && max < 0.25, "RMS {rms} px, max {max} px");
        assert!(s.inverse_err_px < 0.01);
        // Pixel -> sky -> pixel closes below 1e-6 px over the CCD and beyond its edges.
        let mut worst: f64 = 0.0;
        for i in 0..=16 {
            for j in 0..=16 {
                let x = -100.0 + i as f64 * (f.width as f64 + 200.0) / 16.0;
                let y = -100.0 + j as f64 * (f.height as f64 + 200.0) / 16.0;
                let (ra, dec) = s.wcs.pix_to_sky(x, y);
                let (x2, y2) = s.wcs.sky_to_pix(ra, dec).unwrap();
                worst = worst.max((x2 - x).hypot(y2 - y));
            }
        }
        assert!(worst < 1e-6, "round trip {worst} px");
    }
}

#[test]
fn unknown_rotation_and_parity_are_found() {
    let cfg = SolveConfig::default();
    let f = field(&wfc(4), 2, 20);
    let cat = refcat(&f.night);
    let refs = refs_for(&f, &cat, &cfg);
    // A poor header: rotated by 90 degrees and mirrored, about the image centre.
    for m in [
        [[0.0, 1.0], [1.0, 0.0]],
        [[0.0, -1.0], [1.0, 0.0]],
        [[1.0, 0.0], [0.0, -1.0]],
    ] {
        let mut hint = f.hint.clone();
        let cd = hint.cd;
        for (i, row) in hint.cd.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = cd[i][0] * m[0][j] + cd[i][1] * m[1][j];
            }
        }
        let c = [(f.width as f64 + 1.0) / 2.0, (f.height as f64 + 1.0) / 2.0];
        let (ra, dec) = f.hint.pix_to_sky(c[0], c[1]);
        hint.crpix = c;
        hint.crval = [ra, dec];
        let s = solve(&f.sources, f.width, f.height, &hint, &refs, &cfg).unwrap();
        let (rms, _, _) = error_vs_truth(&f, &s.wcs);
        assert!(rms < 0.05, "header matrix {m:?}: RMS {rms} px");
    }
}

#[test]
fn a_pointing_off_by_five_arcminutes_is_found() {
    let cfg = SolveConfig::default();
    let f = field(&wfc(5), 1, 0);
    let mut hint = f.hint.clone();
    hint.crval = [
        hint.crval[0] + 4.0 / 60.0 / hint.crval[1].to_radians().cos(),
        hint.crval[1] - 3.0 / 60.0,
    ];
    let cat = refcat(&f.night);
    let (ra, dec, r) = search_cone(&hint, f.width, f.height, &cfg);
    let refs: Vec<SkyStar> = cat
        .cone(ra, dec, r)
        .iter()
        .map(|s| {
            let (ra_deg, dec_deg) = s.at(f.epoch);
            SkyStar {
                ra_deg,
                dec_deg,
                mag: s.mag,
            }
        })
        .collect();
    let s = solve(&f.sources, f.width, f.height, &hint, &refs, &cfg).unwrap();
    let (rms, _, _) = error_vs_truth(&f, &s.wcs);
    assert!(rms < 0.05, "RMS {rms} px");
}

#[test]
fn a_field_with_three_stars_says_so() {
    let cfg = SolveConfig::default();
    let f = field(&wfc(6), 1, 0);
    let refs = refs_for(&f, &refcat(&f.night), &cfg);
    let e = solve(&f.sources[..3], f.width, f.height, &f.hint, &refs, &cfg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "too few sources: 3 usable of 3 (0 without a finite position and positive flux on the \
         image, 0 flagged or not star-like); at least 8 are needed"
    );
    // NaN positions and fluxes are not sources.
    let mut nan = f.sources.clone();
    for s in nan.iter_mut().skip(3) {
        s.x = f64::NAN;
    }
    nan[0].flux = f64::NAN;
    let e = solve(&nan, f.width, f.height, &f.hint, &refs, &cfg).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("too few sources: 2 usable of {}", nan.len())),
        "{e}"
    );
    // With most positions NaN but enough left, it still solves.
    let mut some = f.sources.clone();
    for s in some.iter_mut().step_by(3) {
        s.y = f64::NAN;
    }
    let s = solve(&some, f.width, f.height, &f.hint, &refs, &cfg).unwrap();
    assert!(error_vs_truth(&f, &s.wcs).0 < 0.05);
}

#[test]
fn the_wrong_sky_gives_no_solution() {
    let cfg = SolveConfig::default();
    let f = field(&wfc(7), 1, 0);
    // Reference stars of another seed's sky at the same place: the same density, other stars.
    let other = plan(&wfc(8)).unwrap();
    let refs = refs_for(&f, &refcat(&other), &cfg);
    assert!(refs.len() > 100);
    match solve(&f.sources, f.width, f.height, &f.hint, &refs, &cfg) {
        Err(AstrometryError::NoMatch(_) | AstrometryError::Rejected(_)) => {}
        other => panic!("expected no solution, got {other:?}"),
    }
    let e = solve(&f.sources, f.width, f.height, &f.hint, &[], &cfg).unwrap_err();
    assert!(e.to_string().starts_with("0 reference stars within"), "{e}");
}

#[test]
fn proper_motions_move_stars_as_the_simulator_does() {
    let night = plan(&wfc(9)).unwrap();
    let cat = refcat(&night);
    let fast = night
        .stars
        .iter()
        .filter(|s| s.in_refcat)
        .max_by(|a, b| a.pmra_mas_per_yr.abs().total_cmp(&b.pmra_mas_per_yr.abs()))
        .unwrap();
    let r = cat.cone(fast.ra_deg, fast.dec_deg, 1e-6);
    assert_eq!(r.len(), 1);
    for epoch in [2014.5, 2016.0, 2030.0] {
        let (ra, dec) = r[0].at(epoch);
        let (ra2, dec2) = star_at(fast, epoch, night.config.refcat_epoch);
        let sep = crate::simulate::separation_deg(ra, dec, ra2, dec2) * 3.6e6;
        assert!(sep < 0.01, "{epoch}: {sep} mas apart");
    }
    // The cone holds exactly the stars within its radius.
    let (ra0, dec0) = (
        night.frames[10].camera.ra_deg,
        night.frames[10].camera.dec_deg,
    );
    let got = cat.cone(ra0, dec0, 0.1).len();
    let want = cat
        .stars
        .iter()
        .filter(|s| crate::simulate::separation_deg(ra0, dec0, s.ra_deg, s.dec_deg) <= 0.1)
        .count();
    assert_eq!(got, want);
    assert!(got > 50);
}

#[test]
fn reads_csv_with_gaia_names_and_skips_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gaia.csv");
    std::fs::write(
        &p,
        "# a Gaia DR3 extract\nsource_id,ra,dec,pmra,pmdec,phot_g_mean_mag,ref_epoch\n\
         1,287.0,-20.0,10.0,-5.0,15.1,2016.0\n\
         2,,-20.1,,,16.0,2016.0\n\
         3,287.1,-20.2,,,,2016.0\n\
         4,287.2,95.0,0,0,17,2016.0\n",
    )
    .unwrap();
    let cat = RefCatalog::read(&[&p]).unwrap();
    assert_eq!(cat.stars.len(), 2);
    assert_eq!(cat.skipped, 2);
    let first = cat.first_skipped.clone().unwrap();
    assert!(
        first.ends_with("line 4: RA NaN, Dec -20.1: expected finite degrees, |Dec| <= 90"),
        "{first}"
    );
    // A two-parameter solution has no proper motion and, here, no magnitude.
    assert_eq!(cat.stars[1].pmra_mas_per_yr, 0.0);
    assert!(cat.stars[1].mag.is_infinite());
    assert_eq!(cat.stars[0].epoch_jyr, 2016.0);
    // Proper motions without an epoch are refused, naming the fix.
    std::fs::write(&p, "ra,dec,pmra,pmdec\n1,2,3,4\n").unwrap();
    let e = RefCatalog::read(&[&p]).unwrap_err().to_string();
    assert!(e.contains("proper motions without an epoch"), "{e}");
    std::fs::write(&p, "ra,dec\n1,x\n").unwrap();
    let e = RefCatalog::read(&[&p]).unwrap_err().to_string();
    assert!(
        e.ends_with("line 2, column dec: `x` is not a number"),
        "{e}"
    );
    std::fs::write(&p, "alpha,delta\n1,2\n").unwrap();
    let e = RefCatalog::read(&[&p]).unwrap_err().to_string();
    assert!(e.contains("no RA column (looked for RA, RA_ICRS, RAJ2000, ALPHA_J2000); the columns are: alpha, delta"), "{e}");
}

#[test]
fn reads_the_simulators_fits_refcat() {
    let night = plan(&wfc(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("refcat.fits");
    crate::fits::write_tables(
        &p,
        &crate::fits::Header::new(),
        &[crate::simulate::refcat_table(&night)],
    )
    .unwrap();
    let cat = RefCatalog::read(&[&p]).unwrap();
    assert_eq!(
        cat.stars.len(),
        night.stars.iter().filter(|s| s.in_refcat).count()
    );
    assert_eq!(cat.stars, refcat(&night).stars);
}

/// Runs the task on a catalog of `field`'s sources written as extract writes them, with `edit`
/// applied to the table's header; returns the error it fails with, if it does.
fn run_task(f: &Field, edit: impl Fn(&mut crate::fits::Header)) -> Result<(), String> {
    use nearby_engine::task::{Invocation, TaskKind};
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    let dir = tempfile::tempdir().unwrap();
    let col = |g: fn(&Source) -> f64| f.sources.iter().map(g).collect::<Vec<f64>>();
    let mut t = crate::fits::Table::new("CCD1")
        .with("XWIN_IMAGE", "pixel", col(|s| s.x))
        .with("YWIN_IMAGE", "pixel", col(|s| s.y))
        .with("FLUX_AUTO", "count", col(|s| s.flux))
        .with("FLAGS", "", vec![0i16; f.sources.len()]);
    let fr = &f.night.frames[f.frame];
    t.header
        .set("SEXIMASX", f.width as i64, "")
        .set("SEXIMASY", f.height as i64, "")
        .set("MJD-OBS", fr.mjd_start, "")
        .set("EXPTIME", fr.exptime_secs, "");
    f.hint.write(&mut t.header);
    edit(&mut t.header);
    let cat = dir.path().join("catalog.fits");
    crate::fits::write_tables(&cat, &crate::fits::Header::new(), &[t]).unwrap();
    let refcat = dir.path().join("refcat.fits");
    crate::fits::write_tables(
        &refcat,
        &crate::fits::Header::new(),
        &[crate::simulate::refcat_table(&f.night)],
    )
    .unwrap();
    let inputs: BTreeMap<String, Vec<PathBuf>> = [("catalog", cat), ("refcat", refcat)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v]))
        .collect();
    let outputs: BTreeMap<String, PathBuf> = [("wcs", "wcs.fits"), ("catalog", "solved.fits")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), dir.path().join(v)))
        .collect();
    let params = serde_json::Map::new();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let inv = Invocation {
        id: "astrometry",
        params: &params,
        inputs: &inputs,
        outputs: &outputs,
        out_dir: dir.path(),
        item: None,
        cancel: &cancel,
    };
    let mut log = Vec::new();
    task::Astrometry
        .run(&inv, &mut log)
        .map_err(|e| e.to_string())?;
    let solved = task::read_wcs_file(&outputs["wcs"]).unwrap();
    assert_eq!(solved.len(), 1);
    let wcs = solved[0].1.clone().expect("a solved WCS");
    assert!(error_vs_truth(f, &wcs).0 < 0.05);
    let t = crate::fits::read_table(&outputs["catalog"], 1).unwrap();
    let ra = t.f64s("ALPHAWIN_J2000").unwrap();
    let (ra0, _) = wcs.pix_to_sky(f.sources[0].x, f.sources[0].y);
    assert_eq!(ra[0], ra0);
    Ok(())
}

#[test]
fn the_task_solves_a_catalog_and_says_when_there_is_no_wcs_hint() {
    let f = field(&wfc(11), 1, 10);
    run_task(&f, |_| {}).unwrap();
    let e = run_task(&f, |h| {
        for k in ["CTYPE1", "CTYPE2"] {
            h.remove(k);
        }
    })
    .unwrap_err();
    assert!(
        e.contains("CCD1: no WCS hint: the header has no TAN WCS (CTYPE1/2 = RA---TAN/DEC--TAN, CRVAL, CRPIX, CD) and no RA/DEC keys; give the params ra_deg, dec_deg and pixel_scale_arcsec"),
        "{e}"
    );
    // RA/DEC keys and a pixel scale are enough.
    run_task(&f, |h| {
        let (ra, dec) = (h.f64("CRVAL1").unwrap(), h.f64("CRVAL2").unwrap());
        for k in ["CTYPE1", "CTYPE2"] {
            h.remove(k);
        }
        let hours = ra / 15.0;
        let (hh, mm) = (hours.floor(), (hours.fract() * 60.0).floor());
        let ss = (hours * 60.0 - hh * 60.0 - mm) * 60.0;
        h.set("RA", format!("{hh:02}:{mm:02}:{ss:06.3}").as_str(), "");
        h.set("DEC", dec, "").set("PIXSCALE", 0.33, "");
    })
    .unwrap();
    let e = run_task(&f, |h| {
        h.remove("MJD-OBS");
    })
    .unwrap_err();
    assert!(
        e.contains("no time: the headers have neither MJD-OBS nor DATE-OBS"),
        "{e}"
    );
    // A DATE-OBS that does not read is named with its value, not taken for a missing one.
    let e = run_task(&f, |h| {
        h.remove("MJD-OBS");
        h.set("DATE-OBS", "yesterday", "");
    })
    .unwrap_err();
    assert!(
        e.contains("key DATE-OBS") && e.contains("`yesterday`"),
        "{e}"
    );
}

/// Debian's smallest Tycho-2 index file, when installed: every star a unit vector turned into
/// RA/Dec, one magnitude per star from the tag-along table, as many stars as NSTARS says.
#[test]
fn tycho2_index_file_reads_as_reference_stars() {
    let path = std::path::Path::new("/usr/share/astrometry/index-tycho2-19.littleendian.fits");
    if !path.exists() {
        println!(
            "skipped: {} is not installed (apt-get install \
             astrometry-data-tycho2-10-19-littleendian)",
            path.display()
        );
        return;
    }
    let nstars = crate::fits::read_header(path, 0)
        .unwrap()
        .i64("NSTARS")
        .unwrap();
    let cat = RefCatalog::read(&[path]).unwrap();
    assert_eq!(cat.stars.len() as i64, nstars);
    for s in &cat.stars {
        assert!((0.0..360.0).contains(&s.ra_deg) && (-90.0..=90.0).contains(&s.dec_deg));
        assert!((-2.0..13.0).contains(&s.mag), "V_T {}", s.mag);
    }
    // The coarsest index holds the brightest star of each large cell: all sky, bright.
    let north = cat.stars.iter().filter(|s| s.dec_deg > 0.0).count();
    assert!(north * 3 > cat.stars.len() && north * 3 < 2 * cat.stars.len());
}

/// A file that says it is an astrometry.net index but has no star k-d tree: the error says so.
#[test]
fn index_file_without_star_tree_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index-broken.fits");
    let mut primary = crate::fits::Header::new();
    primary.set("AN_FILE", "QUAD", "");
    crate::fits::write_headers(&path, &primary, &[crate::fits::Header::new()]).unwrap();
    let e = RefCatalog::read(&[&path]).unwrap_err().to_string();
    assert!(
        e.contains("index-broken.fits") && e.contains("kdtree_header_stars"),
        "{e}"
    );
}
