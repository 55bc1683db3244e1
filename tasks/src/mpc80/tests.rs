//! Tests on the real reports in tasks/tests/data/mpc80 (see its PROVENANCE.md) and on lines
//! broken on purpose.

use std::path::PathBuf;

use super::*;
use crate::obs::{match_labels, MatchTolerance, Observation};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mpc80")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).expect("test data is readable")
}

const FIXTURES: [&str; 9] = [
    "astroquery_mpc_obs_12893.80col.txt",
    "euronear_oc_2011EU29-Stefan.txt",
    "euronear_oc_MPCReportExample.txt",
    "euronear_oc_MPC_single_asteroids_mba.txt",
    "euronear_oc_MPC_two_asteroids_mba_eu.txt",
    "layup_03666_tiny.txt",
    "layup_j4767_wise_excerpt.txt",
    "layup_newy6_tiny.txt",
    "layup_obs80_two_line_records.txt",
];

#[test]
fn packed_numbers_both_ways() {
    for (n, p) in [
        (1, "00001"),
        (433, "00433"),
        (99_999, "99999"),
        (100_000, "A0000"),
        (100_001, "A0001"),
        (356_656, "Z6656"),
        (366_656, "a6656"),
        (619_999, "z9999"),
        (620_000, "~0000"),
        (620_061, "~000z"),
        (3_140_113, "~AZaz"),
        (designation::MAX_NUMBER, "~zzzz"),
    ] {
        assert_eq!(pack_number(n).as_deref(), Ok(p), "{n}");
        assert_eq!(unpack_number(p), Ok(n), "{p}");
    }
    // Every packed form unpacks to the number it came from, across all three ranges.
    for n in (1..designation::MAX_NUMBER).step_by(9_973) {
        assert_eq!(unpack_number(&pack_number(n).expect("in range")), Ok(n));
    }
    assert!(pack_number(0).is_err());
    assert!(pack_number(designation::MAX_NUMBER + 1).is_err());
    for bad in ["0000", "00000", "A00x1", "~00-0", "#1234", "é1234"] {
        assert!(unpack_number(bad).is_err(), "{bad}");
    }
}

#[test]
fn designations_both_ways() {
    for (unpacked, packed) in [
        ("433", "00433"),
        ("100001", "A0001"),
        ("2007 TE366", "K07Ta6E"),
        ("1998 QS55", "J98Q55S"),
        ("1995 XA", "J95X00A"),
        ("2004 SH36", "K04S36H"),
        ("2007 FV42", "K07F42V"),
        ("2007 AE30", "K07A30E"),
        ("2010 GG153", "K10GF3G"),
        ("1979 HP", "J79H00P"),
        ("2040 P-L", "PLS2040"),
        ("3138 T-1", "T1S3138"),
        ("1010 T-2", "T2S1010"),
        ("4101 T-3", "T3S4101"),
        ("1P", "0001P"),
        ("C/1995 O1", "CJ95O010"),
        ("D/1993 F2-B", "DJ93F02b"),
        ("P/2019 LD2", "PK19L02D"),
        ("S/2003 J 2", "SK03J020"),
    ] {
        assert_eq!(pack(unpacked).as_deref(), Ok(packed), "{unpacked}");
        assert_eq!(unpack(packed).as_deref(), Ok(unpacked), "{packed}");
    }
    // Temporary designations are none of the kinds; wrong ones of a kind are errors.
    assert_eq!(Designation::parse("EURM045"), Ok(None));
    assert_eq!(Designation::parse("DES0024"), Ok(None));
    for (bad, why) in [
        ("2007 IE366", "half-month"),
        ("2007 TI3", "second letter"),
        ("2007 TE620", "extended packed format"),
        ("0", "numbers run"),
        ("C/1995 I1", "comet designation"),
        ("S/2003 X 2", "satellite"),
    ] {
        let e = Designation::parse(bad).expect_err(bad);
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    for bad in [
        "K07Ta6", "K07Ia6E", "M07Ta6E", "K0xTa6E", "CJ95O01!", "SK03X020",
    ] {
        assert!(unpack(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    for name in FIXTURES {
        let text = read(name);
        let parsed = Report::parse(&text);
        assert!(
            parsed.errors.is_empty(),
            "{name}: {:?}",
            parsed
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        assert!(
            parsed
                .report
                .lines
                .iter()
                .all(|l| !matches!(l, Line::Unreadable(_))),
            "{name}"
        );
        assert_eq!(
            parsed.report.write().as_deref(),
            Ok(text.as_str()),
            "{name}"
        );
    }
}

#[test]
fn the_euronear_night_is_37_objects_10_known() {
    let parsed = Report::parse(&read("euronear_oc_2011EU29-Stefan.txt"));
    let obs: Vec<&ObsLine> = parsed.report.observations().collect();
    assert_eq!(obs.len(), 216);
    let mut names: Vec<String> = obs.iter().map(|o| o.object.designation()).collect();
    names.dedup();
    assert_eq!(names.len(), 37);
    let known = obs
        .iter()
        .filter(|o| o.object.temporary.is_none())
        .map(|o| o.object.designation())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(known.len(), 10);
    assert!(known.contains("106656") && known.contains("2007 AE30"));
    assert!(obs.iter().all(|o| o.code == "950" && o.band == 'R'));
}

#[test]
fn decoded_values() {
    let parsed = Report::parse(&read("euronear_oc_2011EU29-Stefan.txt"));
    let first = parsed
        .report
        .observations()
        .next()
        .expect("a line")
        .to_observation();
    assert_eq!(first.designation, "2007 AE30");
    assert!((first.mjd_utc - (56_848.0 + 0.18057)).abs() < 1e-9);
    let ra = (20.0 + 59.0 / 60.0 + 57.24 / 3600.0) * 15.0;
    let dec = -(13.0 + 24.0 / 60.0 + 55.3 / 3600.0);
    assert!((first.ra_deg - ra).abs() < 1e-12 && (first.dec_deg - dec).abs() < 1e-12);
    assert_eq!((first.mag, first.band.as_deref()), (Some(20.9), Some("R")));

    // layup's negative RA: -2h54m23.498s is 21h05m36.502s.
    let newy6 = Report::parse(&read("layup_newy6_tiny.txt"));
    let o = newy6
        .report
        .observations()
        .find(|o| o.ra.sign == Some('-'))
        .expect("a negative RA")
        .to_observation();
    assert!((o.ra_deg - (21.0 + 5.0 / 60.0 + 36.502 / 3600.0) * 15.0).abs() < 1e-9);
    assert!(o.discovery);

    // A satellite observation keeps its second line; a numbered object with a provisional one.
    let two = Report::parse(&read("layup_obs80_two_line_records.txt"));
    let recs: Vec<&Record> = two
        .report
        .lines
        .iter()
        .filter_map(|l| match l {
            Line::Record(r) => Some(&**r),
            _ => None,
        })
        .collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs.iter().filter(|r| r.second.is_some()).count(), 2);
    let holman = Report::parse(&read("layup_03666_tiny.txt"));
    let h = holman.report.observations().next().expect("a line");
    assert_eq!(h.object.number, Some(Designation::Number(3666)));
    assert_eq!(h.object.designation(), "3666");
    assert_eq!(
        h.object.provisional.map(|p| p.to_string()).as_deref(),
        Some("1979 HP")
    );
}

#[test]
fn headers_are_read() {
    let r = Report::parse(&read("euronear_oc_MPCReportExample.txt")).report;
    assert_eq!(r.header("COD"), ["511"]);
    assert_eq!(r.header("CON").len(), 2);
    assert_eq!(r.header("NET"), ["USNO-B1.0"]);
    let des = Report::parse(&read("layup_newy6_tiny.txt")).report;
    assert_eq!(des.header("ACK").len(), 1);
    assert_eq!(des.header("AC2"), ["pedrobe@physics.upenn.edu"]);
}

#[test]
fn writer_reproduces_euronear_lines_from_values() {
    // EURONEAR wrote 1e-5 day, 0.01 s, 0.1" and 0.1 mag: the writer at that precision must
    // give back every one of its 216 lines from the decoded values alone.
    let text = read("euronear_oc_2011EU29-Stefan.txt");
    let parsed = Report::parse(&text);
    let mut n = 0;
    for (line, obs) in text
        .lines()
        .filter(|l| l.len() == 80)
        .zip(parsed.report.observations())
    {
        let o = obs.to_observation();
        let again = ObsLine::from_observation(&o, Precision::default())
            .and_then(|l| l.format())
            .expect("writes");
        assert_eq!(again, line);
        n += 1;
    }
    assert_eq!(n, 216);
}

#[test]
fn writer_rounds_across_day_and_ra_boundaries() {
    let o = Observation {
        designation: "NEAR001".into(),
        mjd_utc: 56_848.999_999_9,
        ra_deg: 359.999_999_9,
        dec_deg: -0.000_001,
        mag: Some(9.46),
        band: Some("R".into()),
        code: "950".into(),
        discovery: true,
    };
    let line = ObsLine::from_observation(&o, Precision::default())
        .and_then(|l| l.format())
        .expect("writes");
    assert_eq!(
        line,
        "     NEAR001* C2014 07 11.00000 00 00 00.00 +00 00 00.0           9.5 R      950"
    );
    let back = ObsLine::parse(&line).expect("reads").to_observation();
    assert_eq!(back.designation, "NEAR001");
    assert!(back.discovery && back.mag == Some(9.5));
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let good = Observation {
        designation: "NEAR001".into(),
        mjd_utc: 56_848.5,
        ra_deg: 10.0,
        dec_deg: 10.0,
        mag: None,
        band: None,
        code: "950".into(),
        discovery: false,
    };
    let bad = |f: &dyn Fn(&mut Observation)| {
        let mut o = good.clone();
        f(&mut o);
        ObsLine::from_observation(&o, Precision::default()).expect_err("must fail")
    };
    assert!(bad(&|o| o.designation = "K07Ta6E".into()).contains("2007 TE366"));
    assert!(bad(&|o| o.designation = "TOOLONG1".into()).contains("1 to 7"));
    assert_eq!(check_temporary("NBY0001").as_deref(), Ok("NBY0001"));
    assert!(check_temporary("J98Q55S").is_err());
    assert!(bad(&|o| o.band = Some("Rc".into())).contains("one character"));
    assert!(bad(&|o| o.ra_deg = 360.0).contains("ra_deg"));
    assert!(bad(&|o| o.code = "95".into()).contains("code"));
    let p = Precision {
        ra_decimals: 4,
        ..Precision::default()
    };
    assert!(ObsLine::from_observation(&good, p)
        .expect_err("too many decimals")
        .contains("RA: 4 decimals"));
}

#[test]
fn bad_lines_are_located_and_the_rest_is_kept() {
    let good = "     K07A30E  C2014 07 10.18057 20 59 57.24 -13 24 55.3          20.9 R      950";
    let with = |cols: (usize, usize), text: &str| {
        let mut l = good.to_string();
        l.replace_range(cols.0 - 1..cols.1, text);
        l
    };
    let cases = [
        (with((33, 44), "25 00 00.00 "), "line 2, columns 33-44: RA `25 00 00.00`: hours must be 00-23; expected `HH MM SS.ss`"),
        (with((33, 44), "20h59m57.24 "), "line 2, columns 33-44: RA `20h59m57.24`: unreadable; expected `HH MM SS.ss`"),
        (with((45, 56), " 13 24 55.3 "), "line 2, columns 45-56: Dec ` 13 24 55.3`: unreadable; expected `sDD MM SS.s`"),
        (with((45, 56), "-91 00 00.0 "), "line 2, columns 45-56: Dec `-91 00 00.0`: beyond the pole; expected `sDD MM SS.s`"),
        (with((16, 32), "2014 02 30.18057 "), "line 2, columns 16-32: date `2014 02 30.18057`: no such day; expected `YYYY MM DD.ddddd`"),
        (with((66, 70), "2x.9 "), "line 2, columns 66-70: magnitude `2x.9`: expected a number such as `17.5`"),
        (with((13, 13), "x"), "line 2, column 13: `x`: expected `*` (discovery) or blank"),
        (with((1, 12), "            "), "line 2, columns 1-12: no designation: expected a packed number in 1-5 or a designation in 6-12"),
        (with((1, 5), "0000x"), "line 2, columns 1-5: designation `0000x`: expected five digits, a letter and four digits, or `~` and four base-62 digits"),
        (good[..79].to_string(), "line 2, columns 1-79: 79 characters: an observation line has 80"),
        (with((20, 20), "é"), "line 2, column 20: `é`: observation lines are ASCII"),
    ];
    for (bad, expected) in cases {
        let text = format!("COD 950\n{bad}\n{good}\n");
        let parsed = Report::parse(&text);
        let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors, [expected]);
        // The bad line is kept verbatim, the good one is read, and the text comes back whole.
        assert_eq!(parsed.report.observations().count(), 1);
        assert_eq!(parsed.report.write().as_deref(), Ok(text.as_str()));
    }
    // Several bad fields on one line are all reported.
    let two = with((33, 44), "25 00 00.00 ");
    let two = format!("{}2x.9 {}", &two[..65], &two[70..]);
    assert_eq!(Report::parse(&two).errors.len(), 2);
}

#[test]
fn two_line_records_must_pair() {
    let text = read("layup_obs80_two_line_records.txt");
    let lines: Vec<&str> = text.lines().collect();
    // The `s` line alone, then the `S` line without its `s`.
    let orphan = format!("{}\n", lines[3]);
    let p = Report::parse(&orphan);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0]
        .to_string()
        .starts_with("line 1: a second line (`s` in column 15)"));
    let lonely = format!("{}\n{}\n", lines[2], lines[0]);
    let p = Report::parse(&lonely);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].to_string().contains("starts a two-line record"));
    assert_eq!(p.report.observations().count(), 1);
    assert_eq!(p.report.write().as_deref(), Ok(lonely.as_str()));
}

fn int_header() -> Header {
    Header {
        cod: "950".into(),
        con: vec![
            "O. Vaduvescu, Isaac Newton Group, Santa Cruz de La Palma".into(),
            "[ovidiu.vaduvescu@gmail.com]".into(),
        ],
        obs: "P. Short, O. Vaduvescu".into(),
        mea: "A. Tudorica, O. Vaduvescu".into(),
        tel: "2.5-m f/3.3 reflector + CCD".into(),
        net: "Gaia DR3".into(),
        bnd: Some("R".into()),
        ack: Some("NEARBY 2014-07-10".into()),
        ..Header::default()
    }
}

#[test]
fn a_submission_parses_back() {
    let report = Report::parse(&read("euronear_oc_2011EU29-Stefan.txt")).report;
    let obs: Vec<Observation> = report.observations().map(ObsLine::to_observation).collect();
    let text = write_submission(&int_header(), &obs, Precision::default()).expect("writes");
    let back = Report::parse(&text);
    assert!(back.errors.is_empty());
    assert_eq!(back.report.header("COD"), ["950"]);
    assert_eq!(back.report.header("TEL"), ["2.5-m f/3.3 reflector + CCD"]);
    assert_eq!(back.report.header("BND"), ["R"]);
    let again: Vec<Observation> = back
        .report
        .observations()
        .map(ObsLine::to_observation)
        .collect();
    assert_eq!(again, obs);
    assert!(text.starts_with("COD 950\nCON O. Vaduvescu"));

    let mut wrong = obs[..2].to_vec();
    wrong[1].code = "511".into();
    let mut h = int_header();
    h.obs.clear();
    let problems = write_submission(&h, &wrong, Precision::default()).expect_err("bad");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("OBS is required"));
    assert!(problems[1].contains("observation 1 (2007 AE30): code 511 differs from COD 950"));
}

#[test]
fn labels_from_a_report_match_detections() {
    // An astronomer's report with one line spoiled: that line is lost, not the night.
    let text = read("euronear_oc_2011EU29-Stefan.txt").replacen("20 59 57.24", "20 59 5x.24", 1);
    let (labels, errors) = read_observations(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0]
        .to_string()
        .starts_with("line 1, columns 33-44: RA `20 59 5x.24`"));
    assert_eq!(labels.len(), 215);
    // The survey's own detections: re-measured (0.4" and 0.5 s off), in another order, and
    // with a spurious detection 1" from every real one that must not steal its label.
    let mut detections = Vec::new();
    for l in labels.iter().rev() {
        let mut d = l.clone();
        d.designation = "tracklet".into();
        d.mjd_utc += 0.5 / 86_400.0;
        d.dec_deg += 0.4 / 3600.0;
        let mut decoy = d.clone();
        decoy.dec_deg += 1.0 / 3600.0;
        detections.push(decoy);
        detections.push(d);
    }
    let m = match_labels(&labels, &detections, MatchTolerance::default());
    assert!(m.unmatched_labels.is_empty());
    assert_eq!(m.matches.len(), labels.len());
    for mt in &m.matches {
        let d = &detections[mt.detection];
        assert!((mt.separation_arcsec - 0.4).abs() < 1e-3, "{mt:?}");
        assert!((mt.dt_secs - 0.5).abs() < 1e-3);
        assert!((d.mjd_utc - labels[mt.label].mjd_utc).abs() < 1e-5);
    }
    // Beyond the radius or the time window, or from another observatory: no label.
    let far = MatchTolerance {
        radius_arcsec: 0.3,
        ..MatchTolerance::default()
    };
    assert_eq!(match_labels(&labels, &detections, far).matches.len(), 0);
    let quick = MatchTolerance {
        time_secs: 0.2,
        ..MatchTolerance::default()
    };
    assert_eq!(
        match_labels(&labels, &detections, quick)
            .unmatched_labels
            .len(),
        215
    );
    let mut elsewhere = detections.clone();
    elsewhere.iter_mut().for_each(|d| d.code = "511".into());
    assert!(match_labels(&labels, &elsewhere, MatchTolerance::default())
        .matches
        .is_empty());
}

#[test]
fn observations_are_numbered_by_the_line_they_were_read_from() {
    let mut two_line = 0;
    for name in FIXTURES {
        let text = read(name);
        let raw: Vec<&str> = text.lines().collect();
        let (numbered, _) = read_numbered_observations(&text);
        let (plain, _) = read_observations(&text);
        assert_eq!(numbered.len(), plain.len(), "{name}");
        for ((n, o), p) in numbered.iter().zip(&plain) {
            let again = ObsLine::parse(raw[n - 1])
                .unwrap_or_else(|e| panic!("{name} line {n}: {e:?}"))
                .to_observation();
            assert_eq!((&again, &again), (o, p), "{name} line {n}");
        }
        two_line += numbered
            .windows(2)
            .filter(|w| {
                // The line between is a second line (`s`, `v`, `r` in column 15).
                w[1].0 == w[0].0 + 2
                    && raw[w[0].0]
                        .as_bytes()
                        .get(14)
                        .is_some_and(|b| b"svr".contains(b))
            })
            .count();
    }
    assert!(two_line > 0, "the two-line records shift the numbering");
}
