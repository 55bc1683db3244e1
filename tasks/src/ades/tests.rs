//! Tests on layup's real PSV files (tasks/tests/data/ades, see its PROVENANCE.md), on documents
//! written here and on documents broken on purpose.

use std::path::PathBuf;

use super::*;
use crate::mpc80::{ObsLine, Report};

fn read(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read_to_string(p).expect("test data is readable")
}

#[test]
fn both_layouts_round_trip_byte_for_byte() {
    for name in ["layup_example.psv", "layup_example_no_whitespace.psv"] {
        let text = read(&format!("ades/{name}"));
        let psv = Psv::parse(&text).expect("parses");
        assert_eq!(psv.write(), text, "{name}");
    }
}

#[test]
fn padded_and_unpadded_hold_the_same_values() {
    let padded = Psv::parse(&read("ades/layup_example.psv")).expect("parses");
    let bare = Psv::parse(&read("ades/layup_example_no_whitespace.psv")).expect("parses");
    let (p, b) = (&padded.blocks[0], &bare.blocks[0]);
    assert_eq!(p.fields.len(), 35);
    assert_eq!(p.rows.len(), 27);
    assert_eq!((&p.fields, &p.rows), (&b.fields, &b.rows));
    assert_eq!(b.layout, Layout::Unpadded);
    let Layout::Padded(cols) = &p.layout else {
        panic!("the padded file is padded")
    };
    // RA and Dec are aligned on the decimal point, the identifiers as layup wrote them.
    let col = |name: &str| cols[p.fields.iter().position(|f| f == name).expect("field")];
    assert_eq!(col("ra"), (12, Align::Decimal(3)));
    assert_eq!(col("dec"), (12, Align::Decimal(3)));
    assert_eq!(col("provID"), (7, Align::Right));
    assert_eq!(col("permID").1, Align::Left);
    assert_eq!(padded.version(), Some("2022"));
    assert_eq!(bare.version(), None);
}

#[test]
fn layup_rows_read_as_observations_but_are_no_submission() {
    let psv = Psv::parse(&read("ades/layup_example.psv")).expect("parses");
    let obs: Vec<Observation> = psv
        .observations()
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every row is an observation");
    assert_eq!(obs.len(), 27);
    // layup's file puts the number under provID; the first identifier present names the object.
    assert_eq!(obs[0].designation, "1938 WQ");
    assert_eq!(obs[0].code, "024");
    assert!((obs[0].ra_deg - 72.51275).abs() < 1e-12);
    let t = (23.0 * 3600.0 + 19.0 * 60.0 + 29.568) / 86_400.0;
    assert!((obs[0].mjd_utc - (mjd_of_date(1938, 11, 28).expect("date") as f64 + t)).abs() < 1e-9);
    assert!(obs[1].discovery && obs[1].mag == Some(14.7) && obs[1].band.as_deref() == Some("B"));
    // No observatory, submitter, measurers or telescope in its context.
    let errors = psv.validate();
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "line 3: the context has no `# observatory` with `! mpcCode ...`"
    );
}

fn int_context() -> AdesContext {
    AdesContext {
        mpc_code: "950".into(),
        submitter: "O. Vaduvescu".into(),
        observers: vec!["P. Short".into(), "O. Vaduvescu".into()],
        measurers: vec!["A. Tudorica".into()],
        telescope_design: "Reflector".into(),
        telescope_aperture_m: 2.54,
        telescope_detector: "CCD".into(),
        ast_cat: "Gaia3".into(),
    }
}

#[test]
fn a_submission_validates_and_parses_back() {
    let report = Report::parse(&read("mpc80/euronear_oc_2011EU29-Stefan.txt")).report;
    let obs: Vec<Observation> = report.observations().map(ObsLine::to_observation).collect();
    let text = write_submission(&int_context(), &obs).expect("writes");
    let psv = Psv::parse(&text).expect("parses");
    assert!(psv.validate().is_empty(), "{:?}", psv.validate());
    assert_eq!(psv.write(), text, "our own layout round-trips too");
    assert_eq!(psv.version(), Some("2017"));
    let b = &psv.blocks[0];
    assert_eq!(b.context_value("observatory", "mpcCode"), Some("950"));
    assert_eq!(b.context_value("telescope", "aperture"), Some("2.54"));
    let back: Vec<Observation> = psv
        .observations()
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(back.len(), obs.len());
    for (a, o) in back.iter().zip(&obs) {
        assert_eq!(
            (&a.designation, &a.code, &a.band, a.mag),
            (&o.designation, &o.code, &o.band, o.mag)
        );
        assert!((a.mjd_utc - o.mjd_utc).abs() * 86_400.0 < 0.0006);
        assert!((a.ra_deg - o.ra_deg).abs() < 6e-7 && (a.dec_deg - o.dec_deg).abs() < 6e-7);
    }
    // Numbers go to permID, provisional designations to provID, temporary ones to trkSub.
    let ids: Vec<(&str, &str, &str)> = b
        .rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert!(ids.contains(&("", "2007 AE30", "")));
    assert!(ids.contains(&("106656", "", "")));
    assert!(ids.contains(&("", "", "EURM045")));
    let first_row = text.lines().find(|l| l.contains("2007 AE30")).expect("row");
    assert!(
        first_row.contains("|2014-07-10T04:20:01.248Z|314.988500|-13.415361|Gaia3 |"),
        "{first_row}"
    );
}

#[test]
fn submission_problems_are_all_reported() {
    let o = Observation {
        designation: "NEAR001".into(),
        mjd_utc: 56_848.5,
        ra_deg: 10.0,
        dec_deg: 10.0,
        mag: Some(20.0),
        band: None,
        code: "950".into(),
        discovery: false,
    };
    let mut other = o.clone();
    other.code = "511".into();
    let mut ctx = int_context();
    ctx.submitter.clear();
    let problems = write_submission(&ctx, &[o, other]).expect_err("bad");
    let text = problems.join("\n");
    assert!(
        text.contains("observation 1 (NEAR001): code 511 differs"),
        "{text}"
    );
    assert!(text.contains("mag without band"), "{text}");
    assert!(text.contains("`# submitter` with `! name"), "{text}");
}

#[test]
fn broken_documents_say_where() {
    let good = read("ades/layup_example_no_whitespace.psv");
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    lines[3] = lines[3].replacen("|UNK|", "|", 1);
    let e = Psv::parse(&(lines.join("\n") + "\n")).expect_err("short row");
    assert_eq!(
        e[0].to_string(),
        "line 4: 34 values, but the field names (line 1) are 35"
    );

    let e = Psv::parse("! mpcCode 950\nra|dec\n1|2\n").expect_err("entry first");
    assert!(e[0]
        .to_string()
        .starts_with("line 1: a `!` entry must follow"));
    assert!(Psv::parse("# version=2017\n").is_err());
    assert!(Psv::parse("").is_err());

    let bad_values = "# version=2017\npermID|mode|stn|obsTime|ra|dec|astCat|mag|band\n\
                      433|CCD|950|2014-07-10 04:20:01Z|400|-13|Gaia3|20.1|\n";
    let psv = Psv::parse(bad_values).expect("parses");
    let rows = psv.observations();
    let e = rows[0].as_ref().expect_err("bad row");
    assert_eq!(e.line, 3);
    assert!(
        e.message
            .contains("obsTime `2014-07-10 04:20:01Z`: expected ISO 8601"),
        "{e}"
    );
    assert!(
        e.message.contains("ra `400`: expected degrees 0 to 360"),
        "{e}"
    );
    assert!(e.message.contains("mag without band"), "{e}");
}

#[test]
fn times() {
    assert_eq!(parse_time("1858-11-17T00:00:00Z"), Some(0.0));
    let t = parse_time("2014-07-10T04:20:01.248Z").expect("time");
    assert_eq!(format_time(t), "2014-07-10T04:20:01.248Z");
    assert_eq!(
        format_time(56_848.999_999_999_9),
        "2014-07-11T00:00:00.000Z"
    );
    for bad in [
        "2014-07-10T04:20:01.248",
        "2014-02-30T00:00:00Z",
        "2014-07-10T24:00:00Z",
        "14-07-10T04:20:01Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}
