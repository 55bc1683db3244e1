//! Matching tracklets to known objects, offline: a tracklet placed where the n-body ephemeris
//! puts a real object (JPL elements from the Horizons fixtures, DE421) is found within a fraction
//! of an arcsecond; one a minute of arc away is not; the two-body prefilter keeps the object.

use std::path::PathBuf;

use super::*;
use crate::link::task::DetectionOut;

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ephem")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn de421() -> Spk {
    let path = std::env::var_os("NEARBY_SPK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/de421.bsp"));
    assert!(
        path.exists(),
        "DE421 not found at {}: run .ci/fetch-de421.sh",
        path.display()
    );
    Spk::open(&path).unwrap()
}

pub(super) fn tracklet(id: &str, field: &str, points: &[(f64, f64, f64)]) -> TrackletOut {
    TrackletOut {
        id: id.into(),
        field: field.into(),
        ccd: "CCD1".into(),
        rate_arcsec_per_min: 1.0,
        pa_deg: 0.0,
        rms_arcsec: 0.1,
        trailed: false,
        mag_median: 20.0,
        detections: points
            .iter()
            .enumerate()
            .map(|(k, &(mjd, ra, dec))| DetectionOut {
                exposure: k,
                mjd,
                ra_deg: ra,
                dec_deg: dec,
                x: 0.0,
                y: 0.0,
                number: k as i64,
                mag: 20.0,
                magerr: 0.05,
                flux: 1.0,
                elongation: 1.0,
                residual_arcsec: 0.1,
                pieces: Vec::new(),
            })
            .collect(),
    }
}

#[test]
fn a_tracklet_on_a_known_orbit_is_matched_and_a_stranger_is_not() {
    let parsed = elements::parse("horizons_objects.mpcorb", &data("horizons_objects.mpcorb"));
    assert!(parsed.elements.len() > 3);
    let spk = de421();
    let sites = observer::parse_obscodes("built-in", observer::BUILTIN_OBSCODES).unwrap();
    let site = &sites["950"];
    let target = &parsed.elements[1];
    // Four exposures 3 minutes apart, 40 days after the elements' epoch.
    let mjds: Vec<f64> = (0..4)
        .map(|k| target.epoch_mjd + 40.0 + k as f64 * 3.0 / 1440.0)
        .collect();
    let times: Vec<Instant> = mjds
        .iter()
        .map(|&m| Instant::from_utc_mjd(m).unwrap())
        .collect();
    let truth = ephem::predict(&spk, target, site, &times, Propagation::NBody).unwrap();
    let on: Vec<(f64, f64, f64)> = mjds
        .iter()
        .zip(&truth)
        .map(|(&m, p)| (m, p.ra_deg, p.dec_deg + 0.3 / 3600.0))
        .collect();
    let off: Vec<(f64, f64, f64)> = on
        .iter()
        .map(|&(m, ra, dec)| (m, ra, dec + 60.0 / 3600.0))
        .collect();
    let tracklets = vec![tracklet("T0001", "F1", &on), tracklet("T0002", "F1", &off)];
    let mut log = Vec::new();
    let hits = match_ephemeris(
        &tracklets,
        &parsed.elements,
        &spk,
        site,
        5.0,
        30.0,
        &mut log,
    )
    .unwrap();
    let log = String::from_utf8(log).unwrap();
    let (name, sep, _) = hits[0].clone().unwrap_or_else(|| panic!("no match: {log}"));
    assert_eq!(name, target.designation);
    assert!(
        (sep - 0.3).abs() < 0.1,
        "{sep}\" (the tracklet is 0.3\" off the prediction)"
    );
    assert!(
        hits[1].is_none(),
        "a minute of arc away is another object: {:?}",
        hits[1]
    );
    assert!(log.contains("1 tracklets matched"), "{log}");
}

#[test]
fn designations_for_the_report() {
    assert_eq!(report_designation("(433) Eros"), "433");
    assert_eq!(report_designation("2007 TE366"), "2007 TE366");
    assert!((separation_arcsec(10.0, 20.0, 10.0, 20.0 + 1.0 / 3600.0) - 1.0).abs() < 1e-6);
}

#[test]
fn the_kind_renames_known_objects_in_the_observations() {
    let parsed = elements::parse("horizons_objects.mpcorb", &data("horizons_objects.mpcorb"));
    let spk = de421();
    let sites = observer::parse_obscodes("built-in", observer::BUILTIN_OBSCODES).unwrap();
    let target = &parsed.elements[1];
    let mjds: Vec<f64> = (0..4)
        .map(|k| target.epoch_mjd + 40.0 + k as f64 * 3.0 / 1440.0)
        .collect();
    let times: Vec<Instant> = mjds
        .iter()
        .map(|&m| Instant::from_utc_mjd(m).unwrap())
        .collect();
    let truth = ephem::predict(&spk, target, &sites["950"], &times, Propagation::NBody).unwrap();
    let on: Vec<(f64, f64, f64)> = mjds
        .iter()
        .zip(&truth)
        .map(|(&m, p)| (m, p.ra_deg, p.dec_deg))
        .collect();
    let off: Vec<(f64, f64, f64)> = on.iter().map(|&(m, ra, dec)| (m, ra + 0.05, dec)).collect();
    let tracklets = vec![tracklet("T0001", "F1", &off), tracklet("T0002", "F1", &on)];
    let dir = tempfile::tempdir().unwrap();
    let file = TrackletsFile {
        format: "nearby-tracklets/1".into(),
        params: serde_json::json!({}),
        visits: vec![],
        tracklets: tracklets.clone(),
        skipped: vec![],
    };
    let tpath = dir.path().join("tracklets.json");
    std::fs::write(&tpath, serde_json::to_string(&file).unwrap()).unwrap();
    let opath = dir.path().join("observations.json");
    let list = ObservationList::new(crate::link::task::observations(&tracklets, "950"));
    std::fs::write(&opath, serde_json::to_string(&list).unwrap()).unwrap();
    let epath =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ephem/horizons_objects.mpcorb");
    let spk_path = std::env::var_os("NEARBY_SPK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/de421.bsp"));
    let inputs: std::collections::BTreeMap<String, Vec<PathBuf>> = [
        ("tracklets", tpath),
        ("observations", opath),
        ("elements", epath),
        ("spk", spk_path),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), vec![v]))
    .collect();
    let (known, _, _) = run_known_on(dir.path(), inputs);
    let out = dir.path().join("out");
    assert_eq!(known.matches[0].object, None);
    assert_eq!(
        known.matches[1].object.as_deref(),
        Some(target.designation.as_str())
    );
    let obs = ObservationList::load(&out.join("observations.json")).unwrap();
    let names: std::collections::BTreeSet<&str> = obs
        .observations
        .iter()
        .map(|o| o.designation.as_str())
        .collect();
    assert!(
        names.contains("NB00001"),
        "the stranger keeps its temporary designation: {names:?}"
    );
    assert!(
        !names.contains("NB00002"),
        "the known object is renamed: {names:?}"
    );
    let metrics = nearby_engine::task::read_metrics(&out);
    assert_eq!((metrics["known"], metrics["unknown"]), (1.0, 1.0));
}

/// Runs the `known` kind on these inputs in `dir/out`: known.json, the log and the metrics.
pub(super) fn run_known_on(
    dir: &std::path::Path,
    inputs: std::collections::BTreeMap<String, Vec<PathBuf>>,
) -> (KnownFile, String, std::collections::BTreeMap<String, f64>) {
    let out = dir.join("out");
    let run = nearby_engine::task::run_alone(&Known, serde_json::Map::new(), inputs, &out);
    run.result.unwrap();
    let known: KnownFile =
        serde_json::from_str(&std::fs::read_to_string(out.join("known.json")).unwrap()).unwrap();
    let metrics = nearby_engine::task::read_metrics(&out)
        .into_iter()
        .collect();
    (known, run.log, metrics)
}
