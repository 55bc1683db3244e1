//! The kind run in-process on the EURONEAR night (tasks/tests/data/mpc80) and on bad input;
//! its outputs are read back with this crate's own readers, no binary involved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::mpc80::ObsLine;

fn euronear() -> (String, Vec<Observation>) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mpc80/euronear_oc_2011EU29-Stefan.txt");
    let text = std::fs::read_to_string(p).expect("test data is readable");
    let obs = Mpc80Report::parse(&text)
        .report
        .observations()
        .map(ObsLine::to_observation)
        .collect();
    (text, obs)
}

fn params() -> Map<String, J> {
    json!({
        "con": ["O. Vaduvescu, Isaac Newton Group, Apartado 321, Santa Cruz de La Palma", "[ovidiu.vaduvescu@gmail.com]"],
        "obs": "O. Vaduvescu, S. Stefan",
        "mea": "S. Stefan, O. Vaduvescu",
        "bnd": "R",
        "ack": "NEARBY 2014-07-10",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn run(dir: &Path, params: Map<String, J>, inputs: Vec<PathBuf>) -> Result<String, TaskError> {
    let inputs = BTreeMap::from([("observations".to_string(), inputs)]);
    let run = nearby_engine::task::run_alone(&Report, params, inputs, dir);
    run.result.map(|()| run.log)
}

fn write_list(dir: &Path, name: &str, obs: Vec<Observation>) -> PathBuf {
    let path = dir.join(name);
    let json = serde_json::to_string_pretty(&ObservationList::new(obs)).expect("serialises");
    std::fs::write(&path, json).expect("writes");
    path
}

#[test]
fn the_euronear_night_reported_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (original, obs) = euronear();
    // Two input files, in reverse order: the report groups objects and orders them in time.
    let (a, b) = obs.split_at(100);
    let inputs = vec![
        write_list(dir.path(), "b.json", b.iter().rev().cloned().collect()),
        write_list(dir.path(), "a.json", a.to_vec()),
    ];
    let log = run(dir.path(), params(), inputs).expect("runs");
    assert_eq!(
        log.trim(),
        "report: 216 observations of 37 objects (7 numbered, 3 provisional, 27 new with temporary designations) from 950"
    );

    let mpc = std::fs::read_to_string(dir.path().join("report.txt")).expect("report.txt");
    let parsed = Mpc80Report::parse(&mpc);
    assert!(parsed.errors.is_empty());
    let r = parsed.report;
    assert_eq!(r.header("COD"), ["950"]);
    assert_eq!(r.header("CON").len(), 2);
    assert_eq!(r.header("TEL"), ["2.5-m f/3.3 reflector + CCD"]);
    assert_eq!(r.header("NET"), ["Gaia DR3"]);
    assert_eq!(r.header("BND"), ["R"]);
    assert_eq!(r.header("ACK"), ["NEARBY 2014-07-10"]);
    // At EURONEAR's precision every line is one of EURONEAR's own lines.
    let lines: Vec<&str> = mpc.lines().filter(|l| l.len() == 80).collect();
    assert_eq!(lines.len(), 216);
    assert!(lines.iter().all(|l| original.lines().any(|o| o == *l)));
    let back: Vec<Observation> = r.observations().map(ObsLine::to_observation).collect();
    let mut expected = obs.clone();
    expected.sort_by(|x, y| {
        x.designation
            .cmp(&y.designation)
            .then(x.mjd_utc.total_cmp(&y.mjd_utc))
    });
    assert_eq!(back, expected);

    let psv = std::fs::read_to_string(dir.path().join("report.psv")).expect("report.psv");
    let doc = Psv::parse(&psv).expect("parses");
    assert!(doc.validate().is_empty(), "{:?}", doc.validate());
    let b = &doc.blocks[0];
    assert_eq!(b.context_value("submitter", "name"), Some("O. Vaduvescu"));
    assert_eq!(b.context_value("telescope", "aperture"), Some("2.54"));
    let rows: Vec<Observation> = doc
        .observations()
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows.len(), 216);
    for (x, y) in rows.iter().zip(&expected) {
        assert_eq!(x.designation, y.designation);
        assert!((x.ra_deg - y.ra_deg).abs() < 6e-7 && (x.mjd_utc - y.mjd_utc).abs() < 1e-8);
    }
}

#[test]
fn bad_observations_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, obs) = euronear();
    let mut bad = obs[..3].to_vec();
    bad[1].ra_deg = 400.0;
    bad[2].designation = "K07Ta6E".into();
    let inputs = vec![write_list(dir.path(), "bad.json", bad), {
        let p = dir.path().join("other.json");
        std::fs::write(&p, r#"{"format": "something-else/2", "observations": []}"#).expect("w");
        p
    }];
    let e = run(dir.path(), params(), inputs.clone()).expect_err("bad input");
    let TaskError::BadInput(msg) = e else {
        panic!("expected a bad-input error, got {e}")
    };
    assert!(
        msg.contains("bad.json: observation 1 (2007 AE30): ra_deg 400"),
        "{msg}"
    );
    assert!(
        msg.contains("other.json: format `something-else/2`"),
        "{msg}"
    );
    assert!(!dir.path().join("report.txt").exists());

    // With the lists readable, the designation that would read back as another object is named.
    let fixed = write_list(dir.path(), "bad.json", {
        let mut b = obs[..3].to_vec();
        b[2].designation = "K07Ta6E".into();
        b
    });
    let e = run(dir.path(), params(), vec![fixed]).expect_err("bad designation");
    assert!(
        e.to_string()
            .contains("`K07Ta6E` would be read back as the packed designation 2007 TE366"),
        "{e}"
    );
}

#[test]
fn params_are_checked_before_running() {
    let kind = Report;
    let mut p = params();
    p.remove("con");
    p.insert("obs".into(), json!(" "));
    p.insert("ra_decimals".into(), json!(4));
    p.insert("telescope_aperture_m".into(), json!(-1));
    p.insert("cod".into(), json!("95"));
    let problems = kind.validate(&nearby_engine::task::with_defaults(&kind, p));
    // `con` left out is reported by the engine as a missing required param, not again here.
    let names: Vec<&str> = problems.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["ra_decimals", "obs", "cod", "telescope_aperture_m"],
        "{problems:?}"
    );
    assert_eq!(
        problems[0].1,
        "RA: 4 decimals do not fit the columns (at most 3)"
    );
    assert!(kind
        .validate(&nearby_engine::task::with_defaults(&kind, params()))
        .is_empty());
}
