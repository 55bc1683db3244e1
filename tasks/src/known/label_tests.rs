//! Labels from astronomers: a report written from a tracklet's own detections validates that
//! tracklet and no other; a line a degree away, a report from another night and a spoiled line
//! validate nothing (the spoiled one is logged with its file and line); the real EURONEAR report
//! (tasks/tests/data/mpc80, see its PROVENANCE.md) is read with the right line numbers and
//! validates the tracklet made from its own detections.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::labels::{read_labels, validate};
use super::tests::{run_known_on, tracklet};
use super::*;
use crate::mpc80::{read_numbered_observations, write_submission, Header, ObsLine, Precision};
use crate::obs::{MatchTolerance, Observation};

fn mpc80(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mpc80")
        .join(name)
}

const TWO_ASTEROIDS: &str = "euronear_oc_MPC_two_asteroids_mba_eu.txt";

fn header() -> Header {
    Header {
        cod: "950".into(),
        con: vec!["nearby tests [nearby@example.org]".into()],
        obs: "A. Astronomer".into(),
        mea: "A. Astronomer".into(),
        tel: "2.5-m f/3.3 reflector + CCD".into(),
        net: "Gaia DR3".into(),
        ..Header::default()
    }
}

/// Runs the kind on tracklets and label files; returns known.json, the log and the metrics.
fn run_known(
    dir: &Path,
    tracklets: &[TrackletOut],
    labels: Vec<PathBuf>,
) -> (KnownFile, String, BTreeMap<String, f64>) {
    let file = TrackletsFile {
        format: "nearby-tracklets/1".into(),
        params: serde_json::json!({}),
        visits: vec![],
        tracklets: tracklets.to_vec(),
        skipped: vec![],
    };
    let tpath = dir.join("tracklets.json");
    std::fs::write(&tpath, serde_json::to_string(&file).unwrap()).unwrap();
    let opath = dir.join("observations.json");
    let list = ObservationList::new(crate::link::task::observations(tracklets, "950"));
    std::fs::write(&opath, serde_json::to_string(&list).unwrap()).unwrap();
    let mut inputs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    inputs.insert("tracklets".into(), vec![tpath]);
    inputs.insert("observations".into(), vec![opath]);
    inputs.insert("labels".into(), labels);
    run_known_on(dir, inputs)
}

#[test]
fn a_report_of_a_tracklets_detections_marks_it_valid_and_nothing_else() {
    // Two movers seen in four exposures 3 minutes apart, 40" apart on the sky.
    let mjds: Vec<f64> = (0..4).map(|k| 60_000.1 + k as f64 * 3.0 / 1440.0).collect();
    let mover = |ra0: f64, dec0: f64| -> Vec<(f64, f64, f64)> {
        mjds.iter()
            .enumerate()
            .map(|(k, &m)| (m, ra0 + k as f64 * 2e-4, dec0 - k as f64 * 1e-4))
            .collect()
    };
    let tracklets = vec![
        tracklet("T0001", "F1", &mover(150.0, 10.0)),
        tracklet("T0002", "F1", &mover(150.0, 10.0 + 40.0 / 3600.0)),
    ];
    // The astronomer measured T0002 (0.3" off, as a second pipeline would), plus an object a
    // degree away at the same times, and one line of the report is spoiled.
    let mut observations: Vec<Observation> = tracklets[1]
        .detections
        .iter()
        .map(|d| Observation {
            designation: "NEAR001".into(),
            mjd_utc: d.mjd,
            ra_deg: d.ra_deg,
            dec_deg: d.dec_deg + 0.3 / 3600.0,
            mag: Some(20.1),
            band: Some("R".into()),
            code: "950".into(),
            discovery: false,
        })
        .collect();
    let mut far = observations[1].clone();
    far.designation = "NEAR002".into();
    far.dec_deg += 1.0;
    observations.push(far);
    let text = write_submission(&header(), &observations, Precision::default()).unwrap();
    let good = text.lines().nth(6).unwrap();
    assert!(good.contains("NEAR001"), "{text}");
    let spoiled = format!("{}xx{}", &good[..32], &good[34..]);
    let text = format!("{text}{spoiled}\n");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("validated.txt");
    std::fs::write(&report, &text).unwrap();

    // A second report, from another night (2017): matches nothing.
    let (known, log, metrics) =
        run_known(dir.path(), &tracklets, vec![report, mpc80(TWO_ASTEROIDS)]);
    assert_eq!(known.matches[0].label, None, "{log}");
    assert!(known.matches[0].validated_by.is_empty());
    let m = &known.matches[1];
    assert_eq!(m.label.as_deref(), Some("valid"), "{log}");
    let lines: Vec<usize> = m.validated_by.iter().map(|v| v.line).collect();
    assert_eq!(lines, [7, 8, 9, 10], "header lines 1-6, then T0002's four");
    let detections: Vec<usize> = m.validated_by.iter().map(|v| v.detection).collect();
    assert_eq!(detections, [0, 1, 2, 3]);
    for v in &m.validated_by {
        assert_eq!(v.designation, "NEAR001");
        assert!(v.file.ends_with("validated.txt"));
        // 0.3" plus the report's rounding (0.15" in RA, 0.05" in Dec).
        assert!(v.separation_arcsec < 0.5, "{v:?}");
        assert!(v.dt_secs.abs() <= 0.44, "{v:?}");
    }
    // The spoiled line is line 12 (after the far one at 11), columns 33-44, logged and skipped.
    assert!(
        log.contains("validated.txt: skipped line 12, columns 33-44"),
        "{log}"
    );
    assert!(
        log.contains(
            "15 validated observations are detections of 1 tracklets; 11 match no tracklet"
        ),
        "5 + 10 from the 2017 report, 4 of them T0002's: {log}"
    );
    assert_eq!(metrics["validated"], 1.0);
    assert_eq!((metrics["known"], metrics["unknown"]), (0.0, 2.0));
    // Labels are kept apart from the object names: nothing here is a known object.
    assert!(known.matches.iter().all(|m| m.object.is_none()));
}

#[test]
fn a_missing_report_is_an_error_naming_it() {
    let mut log = Vec::new();
    let err = read_labels(Path::new("/nonexistent/validated.txt"), &mut log).unwrap_err();
    assert!(
        err.to_string()
            .contains("labels /nonexistent/validated.txt: cannot read"),
        "{err}"
    );
}

#[test]
fn the_real_euronear_report_validates_its_own_detections() {
    let text = std::fs::read_to_string(mpc80(TWO_ASTEROIDS)).unwrap();
    let (numbered, errors) = read_numbered_observations(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let lines: Vec<usize> = numbered.iter().map(|n| n.0).collect();
    assert_eq!(lines, [9, 10, 11, 12, 13, 15, 16, 17, 18, 19]);
    // Each number points at the line the observation was read from.
    let raw: Vec<&str> = text.lines().collect();
    for (n, o) in &numbered {
        let again = ObsLine::parse(raw[n - 1]).unwrap().to_observation();
        assert_eq!(&again, o, "line {n}");
    }
    let mut log = Vec::new();
    let labels = read_labels(&mpc80(TWO_ASTEROIDS), &mut log).unwrap();
    assert_eq!(labels.len(), 10);
    // The survey's detections of (12471): re-measured 0.4" and 0.5 s off; those of 2004 SH36
    // 10" off (another source), which the report must not validate.
    let points = |designation: &str, offset_arcsec: f64| -> Vec<(f64, f64, f64)> {
        labels
            .iter()
            .filter(|l| l.observation.designation == designation)
            .map(|l| {
                let o = &l.observation;
                (
                    o.mjd_utc + 0.5 / 86_400.0,
                    o.ra_deg,
                    o.dec_deg + offset_arcsec / 3600.0,
                )
            })
            .collect()
    };
    let designations: std::collections::BTreeSet<&str> = labels
        .iter()
        .map(|l| l.observation.designation.as_str())
        .collect();
    assert_eq!(designations.len(), 2, "{designations:?}");
    assert!(designations.contains("12471"), "{designations:?}");
    let other = *designations.iter().find(|d| **d != "12471").unwrap();
    let tracklets = vec![
        tracklet("T0001", "F1", &points(other, 10.0)),
        tracklet("T0002", "F1", &points("12471", 0.4)),
    ];
    assert_eq!(tracklets[0].detections.len(), 5);
    let (v, unmatched) = validate(&tracklets, "950", &labels, MatchTolerance::default());
    assert!(v[0].is_empty(), "{:?}", v[0]);
    assert_eq!(v[1].len(), 5);
    assert_eq!(
        v[1].iter().map(|x| x.line).collect::<Vec<_>>(),
        [15, 16, 17, 18, 19]
    );
    for x in &v[1] {
        assert_eq!(x.designation, "12471");
        assert!((x.separation_arcsec - 0.4).abs() < 1e-3, "{x:?}");
        assert!((x.dt_secs - 0.5).abs() < 1e-3, "{x:?}");
    }
    assert_eq!(unmatched, 5);
    // Detections from another observatory are other measurements.
    let (v, unmatched) = validate(&tracklets, "511", &labels, MatchTolerance::default());
    assert!(v.iter().all(Vec::is_empty));
    assert_eq!(unmatched, 10);
}
