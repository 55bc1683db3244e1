//! `nearby ephem` through the real binary: predictions from MPCORB and SBDB JSON files against
//! JPL Horizons, and bad input (unknown observatory, bad time, no ephemeris, bad elements).
//! Needs DE421: `.ci/fetch-de421.sh` puts it in `.cache/de421.bsp` (or set NEARBY_SPK).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::de421;

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tasks/tests/data/ephem")
        .join(name)
        .display()
        .to_string()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ephem(args: &[&str]) -> Out {
    let out = Command::new(common::bin())
        .arg("ephem")
        .args(args)
        .env_remove("NEARBY_SPK")
        .output()
        .expect("run nearby");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// RA, Dec (degrees) and V of one output row.
type Row = (f64, f64, f64);

/// (object header, rows) per object block of the output.
fn rows(stdout: &str) -> Vec<(String, Vec<Row>)> {
    let mut out: Vec<(String, Vec<Row>)> = Vec::new();
    for line in stdout.lines().skip(2) {
        if let Some(header) = line.strip_prefix("# ") {
            out.push((header.to_owned(), vec![]));
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f[i].parse::<f64>().unwrap();
            out.last_mut().unwrap().1.push((num(7), num(8), num(15)));
        }
    }
    out
}

/// Horizons rows (ISO UTC, RA, Dec, V) of one object from the test data.
fn horizons(key: &str) -> Vec<(String, f64, f64, f64)> {
    let text = std::fs::read_to_string(data("horizons_ephemeris_x05.csv")).unwrap();
    text.lines()
        .filter(|l| l.contains(key))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let mjd: f64 = f[1].parse().unwrap();
            let ms = (mjd.fract() * 86_400_000.0).round() as i64;
            let (y, m, d) = nearby_tasks::ephem::time::civil_from_mjd(mjd.floor() as i64);
            let iso = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                ms / 3_600_000,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            );
            (
                iso,
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[8].parse().unwrap(),
            )
        })
        .collect()
}

fn separation_arcsec(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let dra = (ra1 - ra2).to_radians() * dec1.to_radians().cos();
    let ddec = (dec1 - dec2).to_radians();
    dra.hypot(ddec).to_degrees() * 3600.0
}

#[test]
fn ephem_from_mpcorb_and_sbdb_json_matches_horizons() {
    let spk = de421().display().to_string();
    // An NEA, a main-belt asteroid, a Trojan and the TNO, 3 times each, from both formats.
    for (id, key) in [
        ("3908", "(1980 PA)"),
        ("Pallas", "(A802 FA)"),
        ("911", "(A919 FB)"),
        ("15760", "(1992 QB1)"),
    ] {
        let truth: Vec<_> = horizons(key).into_iter().step_by(12).collect();
        for file in ["horizons_objects.mpcorb", "horizons_objects.sbdb.json"] {
            let mut args = vec![
                "--elements".to_owned(),
                data(file),
                "--object".into(),
                id.into(),
            ];
            args.extend(["--observatory", "X05", "--spk", &spk].map(String::from));
            for (iso, ..) in &truth {
                args.extend(["--time".to_owned(), iso.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = ephem(&args);
            assert_eq!(out.code, 0, "{}", out.stderr);
            let blocks = rows(&out.stdout);
            assert_eq!(blocks.len(), 1, "{}", out.stdout);
            for ((ra, dec, v), (iso, t_ra, t_dec, t_v)) in blocks[0].1.iter().zip(&truth) {
                let sep = separation_arcsec(*ra, *dec, *t_ra, *t_dec);
                // MPCORB rounds the angles to 1e-5 deg: 0.2" is its budget; JSON is exact.
                let bound = if file.ends_with("mpcorb") { 0.2 } else { 0.05 };
                assert!(sep < bound, "{id} {file} {iso}: {sep:.3}\" off Horizons");
                assert!((v - t_v).abs() < 0.011, "{id} {iso}: V {v} vs {t_v}");
            }
        }
    }
}

#[test]
fn ephem_without_object_predicts_every_object_and_skips_bad_lines() {
    let spk = de421().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("horizons_objects.mpcorb")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let good = lines[3];
    let negative_e = format!("{}-0.176957{}", &good[..70], &good[79..]);
    let no_epoch = format!("{}     {}", &good[..20], &good[25..]);
    let path = dir.path().join("mixed.mpcorb");
    std::fs::write(&path, [good, &negative_e, &no_epoch, lines[10]].join("\n")).unwrap();
    let path = path.display().to_string();
    let out = ephem(&[
        "--elements",
        &path,
        "--observatory",
        "950",
        "--time",
        "2020-08-01T00:00:00Z",
        "--spk",
        &spk,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let names: Vec<String> = rows(&out.stdout).into_iter().map(|(h, _)| h).collect();
    assert_eq!(names.len(), 2, "{}", out.stdout);
    assert!(names[0].starts_with("(594913) 'Aylo'chaxnim") && names[1].starts_with("(2) Pallas"));
    assert_eq!(
        out.stderr,
        format!(
            "warning: skipped {path}:2 ((594913) 'Aylo'chaxnim): eccentricity -0.176957 is negative (expected e >= 0)\n\
             warning: skipped {path}:3 ((594913) 'Aylo'chaxnim): no epoch\n"
        )
    );
}

#[test]
fn ephem_bad_input_exits_2_with_a_clear_message() {
    let spk = de421().display().to_string();
    let elements = data("horizons_objects.mpcorb");
    let base = ["--elements", elements.as_str(), "--spk", spk.as_str()];
    let cases: [(&[&str], &str); 5] = [
        (&["--observatory", "95O", "--time", "2020-08-01"], "error: --observatory 95O: no such code with a site on the Earth; did you mean `950`?\n"),
        (&["--observatory", "950", "--time", "2020-02-30x"], "error: --time `2020-02-30x`: bad day (expected an ISO UTC time like 2020-08-01T00:28:50.8Z)\n"),
        (&["--observatory", "950", "--time", "2020-08-01", "--object", "Erros"], "not among the readable objects"),
        (&["--observatory", "950", "--time", "2120-08-01", "--object", "Amor"], "error: (1221) Amor: "),
        (&["--observatory", "950", "--time", "1960-08-01"], "before 1972"),
    ];
    for (extra, want) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = ephem(&args);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{extra:?}: {}", out.stderr);
    }
    let out = ephem(&[
        "--elements",
        &elements,
        "--observatory",
        "950",
        "--time",
        "2020-08-01",
        "--spk",
        "missing.bsp",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("error: missing.bsp: cannot read"),
        "{}",
        out.stderr
    );
    let out = ephem(&[
        "--elements",
        &elements,
        "--observatory",
        "950",
        "--time",
        "2020-08-01",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("no planetary ephemeris: give --spk FILE"),
        "{}",
        out.stderr
    );
    let out = ephem(&[
        "--elements",
        "nope.txt",
        "--observatory",
        "950",
        "--time",
        "2020-08-01",
        "--spk",
        &spk,
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: cannot read elements nope.txt"),
        "{}",
        out.stderr
    );
}
