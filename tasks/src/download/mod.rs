//! The `download` task kind: a night's raw frames from an HTTP archive, or from a local directory.
//!
//! The archive publishes a listing beside the files: one line per file, `SHA256 SIZE NAME`
//! (`#` starts a comment), or JSON `{"files": [{"name", "size", "sha256"}]}`; each file is at the
//! listing's URL with its last path segment replaced by NAME. Several files download at once;
//! a file interrupted part-way resumes from where it stopped (an HTTP `Range` request) on the next
//! try, within the attempt and across attempts (partial files are kept in `cache_dir`); every
//! file is checked against its size and SHA-256 before it counts; failures are retried with
//! doubling waits. With `source: local`, the files of a directory are linked (or copied, across
//! file systems) instead.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};
use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

/// One file of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Parses a listing (text or JSON). Errors say which line and what was expected.
pub fn parse_listing(text: &str, origin: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    if text.trim_start().starts_with('{') {
        let v: J =
            serde_json::from_str(text).map_err(|e| format!("{origin}: not a JSON listing: {e}"))?;
        let files = v["files"]
            .as_array()
            .ok_or_else(|| format!("{origin}: a JSON listing needs a `files` array"))?;
        for (i, f) in files.iter().enumerate() {
            let e = Entry {
                name: f["name"].as_str().unwrap_or_default().to_owned(),
                size: f["size"].as_u64().ok_or_else(|| {
                    format!("{origin}: files[{i}]: `size` must be a whole number")
                })?,
                sha256: f["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            };
            check_entry(&e).map_err(|m| format!("{origin}: files[{i}]: {m}"))?;
            out.push(e);
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let e = match f.as_slice() {
                [sha, size, name] => Entry {
                    name: (*name).to_owned(),
                    size: size.parse().map_err(|_| {
                        format!("{origin}:{}: size `{size}` is not a whole number", n + 1)
                    })?,
                    sha256: sha.to_ascii_lowercase(),
                },
                _ => {
                    return Err(format!(
                        "{origin}:{}: expected `SHA256 SIZE NAME`, found `{line}`",
                        n + 1
                    ))
                }
            };
            check_entry(&e).map_err(|m| format!("{origin}:{}: {m}", n + 1))?;
            out.push(e);
        }
    }
    Ok(out)
}

fn check_entry(e: &Entry) -> Result<(), String> {
    if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{}`: the SHA-256 must be 64 hex digits", e.name));
    }
    let p = Path::new(&e.name);
    if e.name.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "`{}`: a file name must be a plain relative path",
            e.name
        ));
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// How to fetch.
pub struct Fetch {
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub parallel: usize,
}

/// The URL of a listed file: the listing's URL with its last segment replaced.
fn file_url(listing: &str, name: &str) -> String {
    match listing.rfind('/') {
        Some(i) => format!("{}/{}", &listing[..i], name),
        None => name.to_owned(),
    }
}

/// One try at one file: resumes `part` if it has bytes, then checks size and hash.
fn try_file(agent: &ureq::Agent, url: &str, e: &Entry, part: &Path) -> Result<(), String> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 && have < e.size {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req.call().map_err(|err| format!("{url}: {err}"))?;
    let status = resp.status().as_u16();
    let append = match status {
        206 if have > 0 => true,
        200 => false,
        s => return Err(format!("{url}: HTTP {s}")),
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|err| format!("{}: {err}", part.display()))?;
    let mut body = resp.body_mut().with_config().limit(e.size + 1).reader();
    let copied = std::io::copy(&mut body, &mut out);
    out.flush()
        .map_err(|err| format!("{}: {err}", part.display()))?;
    drop(out);
    copied.map_err(|err| format!("{url}: interrupted: {err}"))?;
    let got = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if got < e.size {
        return Err(format!("{url}: truncated: {got} of {} bytes", e.size));
    }
    let hash = sha256_file(part).map_err(|err| format!("{}: {err}", part.display()))?;
    if got != e.size || hash != e.sha256 {
        let _ = std::fs::remove_file(part);
        return Err(format!(
            "{url}: checksum mismatch ({got} bytes, sha256 {hash}; the listing says {} bytes, {})",
            e.size, e.sha256
        ));
    }
    Ok(())
}

/// Downloads every entry into `dest` (partial files under `partial`). Returns per-file log lines;
/// the error lists every file that could not be fetched.
pub fn fetch_all(
    listing_url: &str,
    entries: &[Entry],
    dest: &Path,
    partial: &Path,
    how: &Fetch,
    cancel: &AtomicBool,
) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(how.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let queue = Mutex::new(entries.iter().collect::<VecDeque<_>>());
    let log = Mutex::new(Vec::new());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..how.parallel.clamp(1, 16) {
            s.spawn(|| loop {
                let Some(e) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let url = file_url(listing_url, &e.name);
                let part = partial.join(format!("{}.part", e.sha256));
                let mut wait = how.backoff;
                let mut result = Err(String::new());
                for attempt in 0..=how.retries {
                    if cancel.load(Ordering::Relaxed) {
                        result = Err("cancelled".into());
                        break;
                    }
                    result = try_file(&agent, &url, e, &part);
                    match &result {
                        Ok(()) => break,
                        Err(m) => {
                            if let Ok(mut l) = log.lock() {
                                l.push(format!("download: {} try {}: {m}", e.name, attempt + 1));
                            }
                            if attempt < how.retries {
                                std::thread::sleep(wait);
                                wait *= 2;
                            }
                        }
                    }
                }
                let placed = result.and_then(|()| {
                    let to = dest.join(&e.name);
                    if let Some(d) = to.parent() {
                        std::fs::create_dir_all(d).map_err(|err| err.to_string())?;
                    }
                    std::fs::rename(&part, &to)
                        .or_else(|_| std::fs::copy(&part, &to).map(|_| ()))
                        .map_err(|err| format!("{}: {err}", to.display()))
                });
                match placed {
                    Ok(()) => {
                        if let Ok(mut l) = log.lock() {
                            l.push(format!("download: {} ok ({} bytes)", e.name, e.size));
                        }
                    }
                    Err(m) => {
                        if let Ok(mut f) = failed.lock() {
                            f.push(format!("{}: {m}", e.name));
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_default();
    let log = log.into_inner().unwrap_or_default();
    if failed.is_empty() {
        Ok(log)
    } else {
        Err(format!(
            "{} of {} files could not be fetched: {}",
            failed.len(),
            entries.len(),
            failed.join("; ")
        ))
    }
}

/// Links (or copies) every file of `dir` matching `pattern` into `dest`.
pub fn fetch_local(dir: &Path, pattern: &str, dest: &Path) -> Result<usize, String> {
    let pat = glob::Pattern::new(pattern).map_err(|e| format!("pattern `{pattern}`: {e}"))?;
    let mut n = 0;
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| pat.matches(f))
        })
        .collect();
    files.sort();
    for f in files {
        let to = dest.join(f.file_name().unwrap_or_default());
        std::fs::hard_link(&f, &to)
            .or_else(|_| std::fs::copy(&f, &to).map(|_| ()))
            .map_err(|e| format!("{} -> {}: {e}", f.display(), to.display()))?;
        n += 1;
    }
    Ok(n)
}

pub struct Download;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "source",
        ty: PType::Str,
        required: false,
        default: Some("http"),
        doc: "`http` (an archive's listing) or `local` (a directory).",
    },
    ParamSpec {
        name: "url",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "The listing's URL (source: http).",
    },
    ParamSpec {
        name: "dir",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "The directory to take files from (source: local).",
    },
    ParamSpec {
        name: "pattern",
        ty: PType::Str,
        required: false,
        default: Some("*"),
        doc: "Only files whose name matches this glob.",
    },
    ParamSpec {
        name: "parallel",
        ty: PType::Int,
        required: false,
        default: Some("4"),
        doc: "Files downloaded at once.",
    },
    ParamSpec {
        name: "retries",
        ty: PType::Int,
        required: false,
        default: Some("4"),
        doc: "Retries per file (waits 1 s, 2 s, 4 s, ...).",
    },
    ParamSpec {
        name: "timeout_secs",
        ty: PType::Float,
        required: false,
        default: Some("300"),
        doc: "Limit per request.",
    },
    ParamSpec {
        name: "cache_dir",
        ty: PType::Str,
        required: false,
        default: Some(""),
        doc: "Where partial files wait between tries [default: the system's temporary directory].",
    },
];

const OUTPUTS: &[PortSpec] = &[PortSpec {
    name: "frames",
    file: "frames",
    required: true,
    doc: "A directory with the night's files.",
}];

impl TaskKind for Download {
    fn name(&self) -> &'static str {
        "download"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Fetch a night's frames from an HTTP archive (listing with sizes and SHA-256; parallel, resumed, verified, retried) or a local directory."
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(&[])
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(OUTPUTS)
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        let s = |k: &str| params.get(k).and_then(J::as_str).unwrap_or_default();
        match s("source") {
            "" | "http" if s("url").is_empty() => {
                vec![("url", "source `http` needs `url`: the listing's URL".into())]
            }
            "local" if s("dir").is_empty() => vec![("dir", "source `local` needs `dir`".into())],
            "" | "http" | "local" => vec![],
            other => vec![("source", format!("`{other}`: expected `http` or `local`"))],
        }
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let dest = inv.output("frames")?;
        std::fs::create_dir_all(dest)?;
        let pattern = inv.str("pattern").unwrap_or("*");
        if inv.str("source") == Some("local") {
            let dir = Path::new(inv.str("dir").unwrap_or_default());
            let n = fetch_local(dir, pattern, dest).map_err(TaskError::BadInput)?;
            writeln!(log, "download: {n} files from {}", dir.display())?;
            return nearby_engine::task::write_metrics(inv.out_dir, &[("files", n as f64)]);
        }
        let url = inv.str("url").unwrap_or_default();
        let how = Fetch {
            timeout: Duration::from_secs_f64(inv.float("timeout_secs").unwrap_or(300.0).max(0.1)),
            retries: inv.int("retries").unwrap_or(4).clamp(0, 20) as u32,
            backoff: Duration::from_secs(1),
            parallel: inv.int("parallel").unwrap_or(4).clamp(1, 16) as usize,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(how.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let listing = fetch_text(&agent, url, how.retries)?;
        let pat = glob::Pattern::new(pattern)
            .map_err(|e| TaskError::BadInput(format!("pattern `{pattern}`: {e}")))?;
        let entries: Vec<Entry> = parse_listing(&listing, url)
            .map_err(TaskError::BadInput)?
            .into_iter()
            .filter(|e| pat.matches(&e.name))
            .collect();
        let cache = match inv.str("cache_dir") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => std::env::temp_dir().join("nearby-downloads"),
        };
        let partial = cache.join(blake3::hash(url.as_bytes()).to_hex().as_str());
        let lines = fetch_all(url, &entries, dest, &partial, &how, inv.cancel)
            .map_err(TaskError::Failed)?;
        for l in lines {
            writeln!(log, "{l}")?;
        }
        let bytes: u64 = entries.iter().map(|e| e.size).sum();
        writeln!(
            log,
            "download: {} files, {bytes} bytes from {url}",
            entries.len()
        )?;
        nearby_engine::task::write_metrics(
            inv.out_dir,
            &[("files", entries.len() as f64), ("bytes", bytes as f64)],
        )
    }
}

fn fetch_text(agent: &ureq::Agent, url: &str, retries: u32) -> Result<String, TaskError> {
    let mut wait = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 0..=retries {
        match agent.get(url).call() {
            Ok(mut r) if r.status().is_success() => {
                return r
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| TaskError::Failed(format!("{url}: reading the listing: {e}")))
            }
            Ok(r) if r.status().as_u16() == 404 => {
                return Err(TaskError::BadInput(format!(
                    "{url}: no listing there (HTTP 404)"
                )))
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
        if attempt < retries {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    Err(TaskError::Failed(format!(
        "{url}: the listing could not be fetched: {last}"
    )))
}
