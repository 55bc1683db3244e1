//! Cutouts: the window's WCS against the parent's, pixels, edge flags, the task's files and
//! index, zscale on a star field, the PNG encoding, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nearby_engine::task::{TaskError, TaskKind};
use serde_json::{json, Value as J};

use super::preview::{encode_png, zscale};
use super::*;
use crate::fits::{read_cube, read_header, write_mef, write_tables, Image, Pixel, Table};
use crate::wcs::TanWcs;

fn parent(w: usize, h: usize) -> Image {
    let data = (0..w * h)
        .map(|i| (i % w) as f32 + 1000.0 * (i / w) as f32)
        .collect();
    let mut im = Image::new(w, h, data);
    let wcs = TanWcs {
        crpix: [130.25, 90.75],
        crval: [287.1, -20.3],
        cd: [[-9.1e-5, 1.3e-6], [1.1e-6, 9.2e-5]],
        sip: None,
    };
    wcs.write(&mut im.header);
    im.header.set("EXTNAME", "CCD1", "");
    im
}

#[test]
fn cutout_wcs_agrees_with_the_parent_to_a_nano_degree() {
    let im = parent(300, 250);
    let pw = TanWcs::from_header(&im.header).unwrap();
    for (x, y, size, edge) in [
        (150.2, 120.7, 200, false),
        (20.4, 240.0, 200, true),
        (77.0, 77.0, 51, false),
    ] {
        let w = cut(&im, x, y, size);
        assert_eq!(w.edge, edge, "{x},{y}");
        let cw = TanWcs::from_header(&window_wcs(&im.header, w.dx, w.dy)).unwrap();
        let mut worst = 0.0f64;
        for (i, j) in [
            (1.0, 1.0),
            (size as f64, 1.0),
            (33.3, 47.9),
            (size as f64, size as f64),
        ] {
            let (ra, dec) = cw.pix_to_sky(i, j);
            let (ra2, dec2) = pw.pix_to_sky(i + w.dx as f64, j + w.dy as f64);
            worst = worst.max((ra - ra2).abs()).max((dec - dec2).abs());
        }
        assert!(worst < 1e-9, "{worst}");
        // The target lands on the window's centre pixel, and pixels are the parent's.
        let (tx, ty) = cw
            .sky_to_pix(pw.pix_to_sky(x, y).0, pw.pix_to_sky(x, y).1)
            .unwrap();
        let c = (size / 2) as f64 + (size % 2) as f64;
        assert!(
            (tx - c).abs() <= 0.5 && (ty - c).abs() <= 0.5,
            "{tx},{ty} vs {c}"
        );
        for (i, j) in [(0usize, 0usize), (size - 1, size - 1), (size / 2, 3)] {
            let (px, py) = (i as i64 + w.dx, j as i64 + w.dy);
            let v = w.data[j * size + i];
            if px >= 0 && py >= 0 && px < 300 && py < 250 {
                assert_eq!(v, im.at(px as usize, py as usize));
            } else {
                assert!(v.is_nan());
            }
        }
    }
}

#[test]
fn zscale_ignores_bright_stars_and_png_is_well_formed() {
    // Sky 100 +- 10 with 1% of the pixels in bright stars.
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let noise = rand_distr::Normal::new(100.0f32, 10.0).unwrap();
    let n = 200 * 200;
    let mut v: Vec<f32> = (0..n).map(|_| noise.sample(&mut rng)).collect();
    for i in (0..n).step_by(97) {
        v[i] = 30_000.0;
    }
    let (z1, z2) = zscale(&v, 0.25).unwrap();
    println!("zscale: {z1:.1} .. {z2:.1}");
    // astropy's ZScaleInterval(n_samples=1000) gives 68.4 .. 160.2 on these values.
    assert!(
        (z1 - 68.4).abs() < 2.0 && (z2 - 160.2).abs() < 4.0,
        "{z1} {z2}"
    );
    assert!(zscale(&[f32::NAN; 10], 0.25).is_none());
    let png = encode_png(3, 2, &[0, 128, 255, 1, 2, 3]);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 3);
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    // IEND's CRC is the well-known constant.
    assert_eq!(&png[png.len() - 4..], &[0xAE, 0x42, 0x60, 0x82]);
}

fn run_cutout(
    params: J,
    targets: &Path,
    frames: &[PathBuf],
    out: &Path,
) -> (Result<(), TaskError>, String) {
    let inputs: BTreeMap<String, Vec<PathBuf>> = [
        ("targets".to_owned(), vec![targets.to_owned()]),
        ("frames".to_owned(), frames.to_vec()),
    ]
    .into_iter()
    .collect();
    let params = params.as_object().unwrap().clone();
    let run = nearby_engine::task::run_alone(&task::Cutout, params, inputs, out);
    (run.result, run.log)
}

/// Two exposures of two CCDs side by side (the second exposure dithered by 5 px), plus a
/// frame without WCS.
fn frames(dir: &Path) -> (Vec<PathBuf>, TanWcs) {
    let mut files = Vec::new();
    let mut first = None;
    for k in 0..2 {
        let mut primary = crate::fits::Header::new();
        primary
            .set("MJD-OBS", 57000.0 + 0.01 * k as f64, "")
            .set("EXPTIME", 120.0, "");
        let ccds: Vec<Image> = (0..2)
            .map(|c| {
                let mut im = parent(300, 250);
                let mut wcs = TanWcs::from_header(&im.header).unwrap();
                wcs.crpix[0] += 5.0 * k as f64 - 310.0 * c as f64;
                wcs.write(&mut im.header);
                im.header.set("EXTNAME", format!("CCD{}", c + 1), "").set(
                    "CCDNAME",
                    format!("A{c}"),
                    "",
                );
                if k == 0 && c == 0 {
                    first = Some(wcs);
                }
                im
            })
            .collect();
        let f = dir.join(format!("exp{k}.fits"));
        write_mef(&f, &primary, &ccds, Pixel::F32).unwrap();
        files.push(f);
    }
    (files, first.unwrap())
}

#[test]
fn cutout_task_writes_cubes_with_per_exposure_wcs_previews_and_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let (files, w0) = frames(dir.path());
    let (ra_a, dec_a) = w0.pix_to_sky(150.0, 125.0);
    let (ra_e, dec_e) = w0.pix_to_sky(297.0, 10.0);
    let targets = dir.path().join("t.json");
    std::fs::write(
        &targets,
        json!([
            {"id": "a/1", "ra": ra_a, "dec": dec_a},
            {"id": "edge", "ra_deg": ra_e, "dec_deg": dec_e},
            {"id": "far", "ra": 10.0, "dec": 10.0},
            {"id": "bad", "ra": 1.0, "dec": 95.0},
        ])
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("o");
    let (r, log) = run_cutout(
        json!({"size_px": 64, "stretch": "asinh"}),
        &targets,
        &files,
        &out,
    );
    r.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(
        log.contains("far") && log.contains("none of the 2 exposures"),
        "{log}"
    );
    assert!(log.contains("Dec 95"), "{log}");
    let index: J =
        serde_json::from_slice(&std::fs::read(out.join("cutouts.json")).unwrap()).unwrap();
    assert_eq!(index["targets"].as_array().unwrap().len(), 2);
    assert_eq!(index["off_frame"][0]["id"], "far");
    let a = &index["targets"][0];
    assert_eq!(a["fits"], "a_1.fits");
    let fits = out.join("cutouts/a_1.fits");
    let cube = read_cube(&fits, 0).unwrap();
    assert_eq!((cube.width, cube.height, cube.planes), (64, 64, 2));
    for (k, file) in files.iter().enumerate() {
        let h = read_header(&fits, k + 1).unwrap();
        assert_eq!(h.str("EXTNAME").unwrap(), format!("EXP{:03}", k + 1));
        assert!(h.bool("ONFRAME").unwrap() && !h.bool("EDGE").unwrap());
        let cw = TanWcs::from_header(&h).unwrap();
        let pw = TanWcs::from_header(&crate::fits::read_image(file, 1).unwrap().header).unwrap();
        let (dx, dy) = (
            h.i64("CUTX0").unwrap() as f64,
            h.i64("CUTY0").unwrap() as f64,
        );
        let (ra, dec) = cw.pix_to_sky(10.0, 20.0);
        let (ra2, dec2) = pw.pix_to_sky(10.0 + dx, 20.0 + dy);
        assert!((ra - ra2).abs() < 1e-9 && (dec - dec2).abs() < 1e-9);
        // The plane holds the parent's pixels: value = x0 + 1000 y0 (0-based parent).
        let v = cube.plane(k)[19 * 64 + 9];
        assert_eq!(v as f64, (9.0 + dx) + 1000.0 * (19.0 + dy));
        assert!(
            (h.f64("MJD-MID").unwrap() - (57000.0 + 0.01 * k as f64 + 60.0 / 86400.0)).abs() < 1e-9
        );
    }
    // Exposure 1 is dithered by 5 px: the target sits 5 px further right in its parent.
    assert_eq!(
        a["exposures"][1]["x0"].as_i64().unwrap() - a["exposures"][0]["x0"].as_i64().unwrap(),
        5
    );
    let e = &index["targets"][1];
    assert_eq!(e["exposures"][0]["edge"], true);
    let png = std::fs::read(out.join("cutouts/edge.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        2 * 64 + 2
    );
}

#[test]
fn catalog_tables_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (files, w0) = frames(dir.path());
    // A SExtractor-like table: NUMBER, ALPHA_J2000, DELTA_J2000.
    let (ra, dec) = w0.pix_to_sky(100.0, 100.0);
    let cat = dir.path().join("cat.fits");
    let t = Table::new("CCD1")
        .with("NUMBER", "", vec![7i32, 8])
        .with("ALPHA_J2000", "deg", vec![ra, f64::NAN])
        .with("DELTA_J2000", "deg", vec![dec, 0.0]);
    write_tables(&cat, &crate::fits::Header::new(), &[t]).unwrap();
    let (targets, notes) = read_targets(&cat).unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].id, "CCD1_7");
    assert!(
        notes[0].contains("row 2") && notes[0].contains("not finite"),
        "{notes:?}"
    );
    // Tracklets: one target at the mean of the detections.
    let tr = dir.path().join("tracklets.json");
    std::fs::write(&tr, json!({"tracklets": [{"id": "T1", "detections": [{"ra": ra, "dec": dec - 1e-4}, {"ra": ra, "dec": dec + 1e-4}]}]}).to_string()).unwrap();
    let (t, _) = read_targets(&tr).unwrap();
    assert!((t[0].dec_deg - dec).abs() < 1e-9 && t[0].id == "T1");
    // Every target off the frames: a bad-input error that says so.
    let far = dir.path().join("far.json");
    std::fs::write(&far, r#"[{"id": "x", "ra": 10.0, "dec": 10.0}]"#).unwrap();
    match run_cutout(json!({}), &far, &files, &dir.path().join("o1")).0 {
        Err(TaskError::BadInput(m)) => assert!(
            m.contains("none of the 1 targets lies on any of the 2 exposures"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // A frame without WCS is skipped; with no usable frame, the error names it.
    let nowcs = dir.path().join("nowcs.fits");
    write_mef(
        &nowcs,
        &crate::fits::Header::new(),
        &[Image::new(10, 10, vec![1.0; 100])],
        Pixel::F32,
    )
    .unwrap();
    let (r, log) = run_cutout(
        json!({}),
        &cat,
        &[nowcs.clone(), files[0].clone()],
        &dir.path().join("o2"),
    );
    r.unwrap();
    assert!(
        log.contains("nowcs.fits, HDU 1") && log.contains("no celestial WCS"),
        "{log}"
    );
    match run_cutout(json!({}), &cat, &[nowcs], &dir.path().join("o3")).0 {
        Err(TaskError::BadInput(m)) => assert!(
            m.contains("nowcs.fits") && m.contains("no CCD with usable pixels and a celestial WCS"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Not a catalog at all.
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "hello").unwrap();
    match read_targets(&junk) {
        Err(m) => assert!(
            m.contains("junk.txt") && m.contains("expected a FITS table"),
            "{m}"
        ),
        Ok(t) => panic!("{t:?}"),
    }
    let badjson = dir.path().join("bad.json");
    std::fs::write(&badjson, "[{\"ra\": 1,").unwrap();
    assert!(read_targets(&badjson)
        .unwrap_err()
        .contains("not valid JSON"));
    assert!(!task::Cutout
        .validate(json!({"size_px": 0, "stretch": "log"}).as_object().unwrap())
        .is_empty());
}
