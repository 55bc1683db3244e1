//! The parsers on real recorded answers (tasks/tests/data/skybot, see its PROVENANCE.md), and
//! the client against a local HTTP server on 127.0.0.1 that serves them, error pages, slow and
//! empty answers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

fn data(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/skybot")
        .join(name);
    std::fs::read_to_string(p).expect("test data is readable")
}

#[test]
fn the_recorded_votable() {
    let objs = parse_votable(&data("astroquery_skybot_query.vot")).expect("parses");
    assert_eq!(objs.len(), 4);
    let g = &objs[0];
    assert_eq!(g.number, Some(229_762));
    assert_eq!(g.name, "G!kun||'homdima");
    assert_eq!(g.class, "KBO>Detached");
    assert!((g.ra_deg - 81.303_190_599_627_36).abs() < 1e-12);
    assert!((g.dec_deg - 4.490_300_172_328_435_5).abs() < 1e-12);
    assert_eq!(g.mag_v, Some(19.6));
    assert_eq!(g.error_arcsec, Some(0.025));
    assert_eq!(g.centre_distance_arcsec, Some(71.942));
    assert_eq!(g.dra_cosdec_arcsec_per_h, Some(-2.9183));
    assert_eq!(g.ddec_arcsec_per_h, Some(0.419));
    assert_eq!(g.geocentric_au, Some(39.584_007_991));
    assert_eq!(g.heliocentric_au, Some(40.458_336_172));
    assert_eq!(objs[2].number, None);
    assert_eq!(objs[2].name, "2019 RB21");
    assert_eq!(objs[3].name, "2007 TE366");
    // The hidden degree columns agree with the sexagesimal ones (05 25 12.7657, +04 29 25.081).
    let ra_hms = (5.0 + 25.0 / 60.0 + 12.7657 / 3600.0) * 15.0;
    let dec_dms = 4.0 + 29.0 / 60.0 + 25.081 / 3600.0;
    assert!((g.ra_deg - ra_hms).abs() * 3600.0 < 0.01);
    assert!((g.dec_deg - dec_dms).abs() * 3600.0 < 0.01);
}

#[test]
fn the_recorded_text_answer() {
    let objs = parse_text(&data("astroquery_skybot_query_excerpt.txt")).expect("parses");
    assert_eq!(objs.len(), 5);
    assert_eq!(
        (objs[0].number, objs[0].name.as_str()),
        (Some(299_383), "2005 VC73")
    );
    let ra = (23.0 + 59.0 / 60.0 + 45.7861 / 3600.0) * 15.0;
    let dec = -(50.055 / 3600.0);
    assert!((objs[0].ra_deg - ra).abs() < 1e-9 && (objs[0].dec_deg - dec).abs() < 1e-9);
    // Unpadded seconds (`-00 03 9.385`), an en dash for no number, a quote in a name.
    assert!((objs[1].dec_deg + (3.0 / 60.0 + 9.385 / 3600.0)).abs() < 1e-9);
    assert_eq!((objs[3].number, objs[3].name.as_str()), (None, "2008 GA35"));
    assert_eq!(
        (objs[4].number, objs[4].name.as_str()),
        (Some(4004), "List'ev")
    );
    assert_eq!(objs[4].mag_v, Some(17.2));
    assert_eq!(objs[4].dra_cosdec_arcsec_per_h, Some(52.0542));
}

#[test]
fn text_names_with_pipes_keep_their_columns() {
    // The VOTable's first object written as the text format would, and a name holding ` | `:
    // the row has one piece too many, which goes back into the name.
    let text = "# Flag: 1\n# Ticket: 1\n\
        # Num | Name | RA(h) | DE(deg) | Class | Mv | Err(arcsec) | d(arcsec)\n\
        229762 | G!kun||'homdima | 05 25 12.7657 | +04 29 25.081 | KBO>Detached | 19.6 | 0.025 | 71.942\n\
        - | Odd | \"Name\" | 05 25 5.8105 | +04 31 3.866 | KBO>Classical>Main | 22.1 | 0.070 | 95.597\n";
    let objs = parse_text(text).expect("parses");
    assert_eq!(objs[0].name, "G!kun||'homdima");
    assert_eq!(objs[1].name, "Odd | \"Name\"");
    assert_eq!(objs[1].class, "KBO>Classical>Main");
    assert_eq!(objs[1].error_arcsec, Some(0.07));
}

#[test]
fn flags_and_statuses() {
    assert_eq!(
        parse_text(
            "# Flag: 0\n# Ticket: 1\nNo solar system object was found in the requested FOV\n"
        ),
        Ok(vec![])
    );
    assert_eq!(
        parse_text("# Flag: -1\n# Ticket: 1\nERROR: the epoch is out of range\n"),
        Err(SkybotError::Service(
            "ERROR: the epoch is out of range".into()
        ))
    );
    let vot = |status: &str, msg: &str| {
        format!(
            "<?xml version=\"1.0\"?><VOTABLE xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\"><RESOURCE>\
             <INFO name=\"QUERY_STATUS\" value=\"{status}\">{msg}</INFO></RESOURCE></VOTABLE>"
        )
    };
    assert_eq!(
        parse_votable(&vot(
            "ERROR",
            "No solar system object was found in the requested FOV"
        )),
        Ok(vec![])
    );
    assert_eq!(
        parse_votable(&vot("ERROR", "Bad epoch &amp; position")),
        Err(SkybotError::Service("Bad epoch & position".into()))
    );
    let e = parse_votable(&vot("OK", "")).expect_err("no table");
    assert!(e.to_string().contains("no FIELD"), "{e}");
    let e = parse_votable("<VOTABLE><RESOURCE><TABLE><FIELD name=\"Name\"/>").expect_err("no RA");
    assert!(e.to_string().contains("no RA column"), "{e}");
    let truncated = &data("astroquery_skybot_query.vot")[..6000];
    assert!(matches!(
        parse_votable(truncated),
        Err(SkybotError::Malformed { .. })
    ));
    let e = parse_answer(
        "<!DOCTYPE html><html><head><title>Maintenance</title>",
        Mime::Votable,
    )
    .expect_err("html");
    assert_eq!(
        e.to_string(),
        "SkyBoT answered HTTP 200 with an HTML page (`Maintenance`), not a VOTable"
    );
    let e = parse_text("Ceres | 1 | 2\n").expect_err("no flag");
    assert!(e.to_string().contains("expected `# Flag: ...`"), "{e}");
    let e = parse_text(
        "# Flag: 1\n# Num | Name | RA(h) | DE(deg)\n1 | Ceres | 25 61 00.0 | +00 00 00\n",
    )
    .expect_err("bad RA");
    assert!(e.to_string().contains("row 1: RA `25 61 00.0`"), "{e}");
}

#[test]
fn query_urls_and_checks() {
    let q = ConeQuery::new(56_848.180_57, 314.9885, -13.4153611, 0.33, "950");
    assert_eq!(
        q.url("https://example.org/cs.php"),
        "https://example.org/cs.php?-ep=2456848.680570&-ra=314.9885000&-dec=-13.4153611&-rd=0.3300000\
         &-mime=votable&-output=basic&-loc=950&-filter=0&-objFilter=111&-refsys=EQJ2000&-from=nearby"
    );
    assert!(q.check().is_ok());
    let mut bad = q.clone();
    bad.ra_deg = 400.0;
    bad.radius_deg = 0.0;
    bad.observer = "95".into();
    let e = bad.check().expect_err("bad").to_string();
    assert!(
        e.contains("RA 400") && e.contains("radius 0") && e.contains("observer `95`"),
        "{e}"
    );
}

/// One scripted answer of the local server.
struct Reply {
    delay: Duration,
    status: u16,
    body: String,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        delay: Duration::ZERO,
        status,
        body: body.to_string(),
    }
}

/// A server on 127.0.0.1 giving `replies` in order, one per connection; returns its endpoint
/// and the request lines it has seen.
fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let endpoint = format!(
        "http://{}/skybot/conesearch.php",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for r in replies {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let first = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            log.lock().expect("log").push(first);
            std::thread::sleep(r.delay);
            let kind = if r.body.starts_with("<!DOCTYPE") {
                "text/html"
            } else {
                "text/xml"
            };
            let msg = format!(
                "HTTP/1.1 {} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                r.status,
                r.body.len(),
                r.body
            );
            let _ = conn.write_all(msg.as_bytes());
        }
    });
    (endpoint, seen)
}

fn client(endpoint: &str, attempts: u32) -> Client {
    Client {
        endpoint: endpoint.to_string(),
        timeout: Duration::from_millis(500),
        attempts,
        backoff: Duration::from_millis(20),
        cache_dir: None,
    }
}

fn field() -> ConeQuery {
    ConeQuery::new(60_677.0, 81.2833, 4.49278, 0.2, "500")
}

#[test]
fn served_votable_is_read_and_cached() {
    let vot = data("astroquery_skybot_query.vot");
    let (endpoint, seen) = serve(vec![reply(200, &vot), reply(200, &vot)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Client {
        cache_dir: Some(dir.path().join("skybot")),
        ..client(&endpoint, 3)
    };
    let a = c.cone_search(&field()).expect("answer");
    assert_eq!(a.objects.len(), 4);
    assert!(!a.from_cache);
    let requests = seen.lock().expect("log").clone();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with("GET /skybot/conesearch.php?-ep=2460677.500000&-ra=81.2833000"));
    assert!(requests[0].contains("&-loc=500&") && requests[0].contains("&-from=nearby"));
    // The rerun asks nothing: the answer comes from disk.
    let again = c.cone_search(&field()).expect("cached");
    assert!(again.from_cache);
    assert_eq!(again.objects, a.objects);
    assert_eq!(seen.lock().expect("log").len(), 1);
    let path = c.cache_path(&field()).expect("cache path");
    assert_eq!(std::fs::read_to_string(&path).expect("cache file"), vot);
    // A damaged entry is dropped and asked for again.
    std::fs::write(&path, "<VOTABLE><truncated").expect("damage");
    let fresh = c.cone_search(&field()).expect("refetched");
    assert!(!fresh.from_cache && fresh.objects.len() == 4);
    assert_eq!(seen.lock().expect("log").len(), 2);
    assert_eq!(std::fs::read_to_string(&path).expect("cache file"), vot);
}

#[test]
fn a_503_then_the_answer() {
    let busy = "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head></html>";
    let (endpoint, seen) = serve(vec![
        reply(503, busy),
        reply(200, &data("astroquery_skybot_query.vot")),
    ]);
    let a = client(&endpoint, 3)
        .cone_search(&field())
        .expect("second attempt answers");
    assert_eq!(a.objects.len(), 4);
    assert_eq!(seen.lock().expect("log").len(), 2);
}

#[test]
fn errors_that_retrying_cannot_fix_are_not_retried() {
    let page = "<!DOCTYPE html><html><head><title>SkyBoT - Error</title></head><body>Bad request</body></html>";
    let (endpoint, seen) = serve(vec![reply(200, page), reply(200, page)]);
    let e = client(&endpoint, 3)
        .cone_search(&field())
        .expect_err("html");
    assert_eq!(
        e,
        SkybotError::HtmlPage {
            status: 200,
            title: "SkyBoT - Error".into(),
            expected: "VOTable"
        }
    );
    assert_eq!(seen.lock().expect("log").len(), 1);

    let (endpoint, seen) = serve(vec![reply(404, "not here"), reply(404, "not here")]);
    let e = client(&endpoint, 3).cone_search(&field()).expect_err("404");
    assert_eq!(
        e.to_string(),
        "SkyBoT answered HTTP 404 after 1 attempt(s): not here"
    );
    assert_eq!(seen.lock().expect("log").len(), 1);

    let flag = "# Flag: -1\n# Ticket: 7\nEpoch out of range\n";
    let (endpoint, _) = serve(vec![reply(200, flag)]);
    let mut q = field();
    q.mime = Mime::Text;
    let e = client(&endpoint, 3).cone_search(&q).expect_err("flag");
    assert_eq!(e, SkybotError::Service("Epoch out of range".into()));
}

#[test]
fn slow_answers_time_out_after_every_attempt() {
    let slow = Reply {
        delay: Duration::from_secs(3),
        status: 200,
        body: data("astroquery_skybot_query.vot"),
    };
    let slow2 = Reply {
        delay: Duration::from_secs(3),
        ..reply(200, "")
    };
    let (endpoint, _) = serve(vec![slow, slow2]);
    let e = client(&endpoint, 2)
        .cone_search(&field())
        .expect_err("timeout");
    assert_eq!(
        e,
        SkybotError::Timeout {
            timeout_secs: 0.5,
            attempts: 2
        }
    );
    assert!(e.is_transient());
}

#[test]
fn empty_answers_are_retried_then_reported() {
    let (endpoint, seen) = serve(vec![reply(200, ""), reply(200, "  \n")]);
    let e = client(&endpoint, 2)
        .cone_search(&field())
        .expect_err("empty");
    assert_eq!(e, SkybotError::Empty { attempts: 2 });
    assert_eq!(seen.lock().expect("log").len(), 2);
    let (endpoint, _) = serve(vec![
        reply(200, ""),
        reply(200, &data("astroquery_skybot_query.vot")),
    ]);
    assert_eq!(
        client(&endpoint, 2)
            .cone_search(&field())
            .expect("answer")
            .objects
            .len(),
        4
    );
}

#[test]
fn an_empty_field_is_an_answer_and_is_cached() {
    let none = "<?xml version=\"1.0\"?><vot:VOTABLE xmlns:vot=\"http://www.ivoa.net/xml/VOTable/v1.3\">\
        <vot:INFO name=\"QUERY_STATUS\" value=\"ERROR\">No solar system object was found in the requested FOV</vot:INFO>\
        </vot:VOTABLE>";
    let (endpoint, _) = serve(vec![reply(200, none)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Client {
        cache_dir: Some(dir.path().to_path_buf()),
        ..client(&endpoint, 2)
    };
    assert!(c.cone_search(&field()).expect("answer").objects.is_empty());
    assert!(c.cone_search(&field()).expect("cached").from_cache);
}

#[test]
fn nobody_listening() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}/cs.php");
    let e = client(&endpoint, 2)
        .cone_search(&field())
        .expect_err("refused");
    assert!(
        matches!(&e, SkybotError::Unreachable { attempts: 2, url, .. } if url.starts_with(&endpoint)),
        "{e}"
    );
}

#[test]
fn the_known_task_matches_tracklets_to_a_served_field() {
    use crate::link::task::{DetectionOut, TrackletOut};
    let (endpoint, _) = serve(vec![reply(200, &data("astroquery_skybot_query.vot"))]);
    let objs = parse_votable(&data("astroquery_skybot_query.vot")).expect("parses");
    let g = &objs[0];
    let tracklet = |id: &str, dra_arcsec: f64| TrackletOut {
        id: id.into(),
        field: "F".into(),
        ccd: "CCD1".into(),
        rate_arcsec_per_min: 0.05,
        pa_deg: 0.0,
        rms_arcsec: 0.1,
        trailed: false,
        mag_median: 19.6,
        detections: (0..3)
            .map(|k| DetectionOut {
                exposure: k,
                mjd: 60_677.0,
                ra_deg: g.ra_deg + dra_arcsec / 3600.0 / g.dec_deg.to_radians().cos(),
                dec_deg: g.dec_deg,
                x: 0.0,
                y: 0.0,
                number: k as i64,
                mag: 19.6,
                magerr: 0.1,
                flux: 1.0,
                elongation: 1.0,
                residual_arcsec: 0.1,
                pieces: Vec::new(),
            })
            .collect(),
    };
    let tracklets = vec![tracklet("T0001", 1.0), tracklet("T0002", 180.0)];
    let mut log = Vec::new();
    let hits = crate::known::match_skybot(&tracklets, &client(&endpoint, 1), "950", 5.0, &mut log)
        .expect("answers");
    let (name, sep, v) = hits[0].clone().expect("the KBO is matched");
    assert_eq!(name, "(229762) G!kun||'homdima");
    assert!((sep - 1.0).abs() < 0.01, "{sep}");
    assert_eq!(v, Some(19.6));
    assert!(hits[1].is_none(), "3' away is not the KBO");
}
