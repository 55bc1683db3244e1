//! The download client against a real HTTP server on 127.0.0.1 that misbehaves on purpose:
//! slow answers, truncated bodies, 503s, corrupt content, and Range requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// How a file misbehaves on its first requests.
#[derive(Clone, Copy, PartialEq)]
enum Trouble {
    None,
    /// The first answer stops half-way (the connection closes).
    Truncate,
    /// The first two answers are 503.
    Unavailable,
    /// The first answer waits longer than the client's timeout.
    Slow,
    /// Always served with one byte changed.
    Corrupt,
}

struct Archive {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn content(i: usize) -> Vec<u8> {
    (0..200_000 + i * 7919)
        .map(|k| ((k * 31 + i) % 251) as u8)
        .collect()
}

fn sha(d: &[u8]) -> String {
    Sha256::digest(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn archive(files: Vec<(String, Vec<u8>, Trouble)>) -> Archive {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/night/SHA256SUMS", listener.local_addr().unwrap());
    let mut listing = String::from("# sha256 size name\n");
    for (name, d, _) in &files {
        listing.push_str(&format!("{} {} {name}\n", sha(d), d.len()));
    }
    let files: HashMap<String, (Vec<u8>, Trouble)> = files
        .into_iter()
        .map(|(n, d, t)| (format!("/night/{n}"), (d, t)))
        .collect();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let files = Arc::new(files);
    let listing = Arc::new(listing);
    let count: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (files, listing, count, seen) =
                (files.clone(), listing.clone(), count.clone(), seen.clone());
            // One thread per connection, as a real server: a slow answer delays only itself.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let mut range = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse().unwrap_or(0);
                    }
                    line.clear();
                }
                seen.lock().unwrap().push(format!("{path} from {range}"));
                let n = {
                    let mut count = count.lock().unwrap();
                    let c = count.entry(path.clone()).or_insert(0);
                    *c += 1;
                    *c
                };
                let mut s = stream;
                if path == "/night/SHA256SUMS" {
                    let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{listing}",
                    listing.len()
                );
                    return;
                }
                let Some((data, trouble)) = files.get(&path) else {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    return;
                };
                match trouble {
                    Trouble::Unavailable if n <= 2 => {
                        let _ = write!(s, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    Trouble::Slow if n == 1 => std::thread::sleep(Duration::from_millis(1500)),
                    _ => {}
                }
                let mut body = data[range.min(data.len())..].to_vec();
                if *trouble == Trouble::Corrupt {
                    body[10] ^= 0xff;
                }
                let status = if range > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if *trouble == Trouble::Truncate && n == 1 {
                    let _ = s.write_all(&body[..body.len() / 2]);
                    return; // closes the connection early
                }
                let _ = s.write_all(&body);
            });
        }
    });
    Archive { url, requests }
}

/// Reads the archive's listing and fetches every file into `dir/frames` (partials in `dir/part`).
fn fetch_night(a: &Archive, dir: &Path) -> (usize, Result<Vec<String>, String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let entries = parse_listing(&fetch_text(&agent, &a.url, 0).unwrap(), &a.url).unwrap();
    let dest = dir.join("frames");
    std::fs::create_dir_all(&dest).unwrap();
    let got = fetch_all(
        &a.url,
        &entries,
        &dest,
        &dir.join("part"),
        &quick(),
        &AtomicBool::new(false),
    );
    (entries.len(), got)
}

fn quick() -> Fetch {
    Fetch {
        timeout: Duration::from_millis(800),
        retries: 3,
        backoff: Duration::from_millis(20),
        parallel: 3,
    }
}

#[test]
fn a_night_arrives_whole_through_truncation_503s_and_slow_answers() {
    let troubles = [
        Trouble::None,
        Trouble::Truncate,
        Trouble::Unavailable,
        Trouble::Slow,
        Trouble::None,
    ];
    let files: Vec<(String, Vec<u8>, Trouble)> = troubles
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("r{i}.fits"), content(i), *t))
        .collect();
    let a = archive(files.clone());
    let dir = tempfile::tempdir().unwrap();
    let (n, got) = fetch_night(&a, dir.path());
    assert_eq!(n, 5);
    let log = got.unwrap();
    let dest = dir.path().join("frames");
    for (name, data, _) in &files {
        assert_eq!(&std::fs::read(dest.join(name)).unwrap(), data, "{name}");
    }
    let log = log.join("\n");
    assert!(
        log.contains("r1.fits try 1: ")
            && (log.contains("truncated") || log.contains("interrupted")),
        "{log}"
    );
    assert!(
        log.contains("r2.fits try 2: ") && log.contains("HTTP 503"),
        "{log}"
    );
    assert!(
        log.contains("r3.fits try 1"),
        "the slow answer timed out: {log}"
    );
    // The truncated file resumed where it stopped instead of starting again.
    let reqs = a.requests.lock().unwrap().clone();
    let resumed = reqs
        .iter()
        .find(|r| r.starts_with("/night/r1.fits from ") && !r.ends_with(" from 0"));
    assert!(resumed.is_some(), "{reqs:?}");
}

#[test]
fn a_corrupt_file_fails_with_its_checksum_and_the_rest_still_arrive() {
    let a = archive(vec![
        ("good.fits".into(), content(1), Trouble::None),
        ("bad.fits".into(), content(2), Trouble::Corrupt),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_night(&a, dir.path()).1.unwrap_err();
    let dest = dir.path().join("frames");
    assert!(
        e.starts_with("1 of 2 files") && e.contains("bad.fits") && e.contains("checksum mismatch"),
        "{e}"
    );
    assert_eq!(std::fs::read(dest.join("good.fits")).unwrap(), content(1));
    assert!(!dest.join("bad.fits").exists(), "a bad file never lands");
}

#[test]
fn listings_are_checked_line_by_line() {
    let h = "a".repeat(64);
    assert_eq!(
        parse_listing(&format!("{h} 12 r1.fits\n"), "L").unwrap()[0].size,
        12
    );
    for (text, want) in [
        (format!("{h} twelve r1.fits"), "L:1: size `twelve`"),
        ("abc 12 r1.fits".to_owned(), "64 hex digits"),
        (format!("{h} 12 ../../etc/passwd"), "plain relative path"),
        (format!("{h} 12"), "expected `SHA256 SIZE NAME`"),
        (
            "{\"files\": [{\"name\": \"x\", \"size\": -1}]}".to_owned(),
            "files[0]: `size`",
        ),
    ] {
        let e = parse_listing(&text, "L").unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn local_source_links_matching_files() {
    let src = tempfile::tempdir().unwrap();
    for n in ["r1.fits", "r2.fits", "notes.txt"] {
        std::fs::write(src.path().join(n), n).unwrap();
    }
    let dest = tempfile::tempdir().unwrap();
    assert_eq!(fetch_local(src.path(), "*.fits", dest.path()).unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("r2.fits")).unwrap(),
        "r2.fits"
    );
    assert!(fetch_local(&src.path().join("missing"), "*", dest.path())
        .unwrap_err()
        .contains("missing"));
}
