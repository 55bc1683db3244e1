//! The HTTP side: one blocking GET per attempt with a timeout, retries with doubling waits when
//! asking again may help (timeouts, refused connections, HTTP 5xx and 429, empty answers), and
//! a disk cache.
//!
//! The cache holds each answer that was read successfully (objects or an empty field) in
//! `DIR/<blake3 of the request URL>.vot` (or `.txt`), written to a temporary file and renamed,
//! so a rerun of the same night asks SkyBoT nothing and an interrupted write leaves no half
//! answer. Errors are never cached. A cached answer that no longer parses is removed and asked
//! for again. Delete the directory to ask afresh.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{html_title, parse_answer, SkybotObject};
use super::query::ENDPOINT;
use super::{ConeQuery, SkybotError};

/// How to reach SkyBoT.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The cone-search address ([`ENDPOINT`]; a local server in tests).
    pub endpoint: String,
    /// For the whole of one attempt: connecting, asking, reading the answer.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub backoff: Duration,
    /// Where answers are cached; `None` for no cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Client {
    /// SkyBoT itself: 60 s per attempt (a wide field can take tens of seconds), 4 attempts,
    /// waits of 2, 4 and 8 s, no cache.
    fn default() -> Client {
        Client {
            endpoint: ENDPOINT.to_string(),
            timeout: Duration::from_secs(60),
            attempts: 4,
            backoff: Duration::from_secs(2),
            cache_dir: None,
        }
    }
}

/// The objects of a field and whether they came from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct ConeAnswer {
    pub objects: Vec<SkybotObject>,
    pub from_cache: bool,
    /// The request as sent (or as it would have been).
    pub url: String,
}

/// What one attempt got.
enum Attempt {
    Answer(Vec<SkybotObject>, String),
    Failed(SkybotError),
}

impl Client {
    /// The cache file of a request.
    pub fn cache_path(&self, q: &ConeQuery) -> Option<PathBuf> {
        let url = q.url(&self.endpoint);
        let key = blake3::hash(url.as_bytes()).to_hex();
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.{}", q.mime.extension())))
    }

    /// The known objects in a field. Retries what may pass; returns the last error otherwise.
    pub fn cone_search(&self, q: &ConeQuery) -> Result<ConeAnswer, SkybotError> {
        q.check()?;
        let url = q.url(&self.endpoint);
        let cache = self.cache_path(q);
        if let Some(path) = &cache {
            if let Ok(body) = std::fs::read_to_string(path) {
                match parse_answer(&body, q.mime) {
                    Ok(objects) => {
                        return Ok(ConeAnswer {
                            objects,
                            from_cache: true,
                            url,
                        })
                    }
                    // A damaged cache entry: forget it and ask again.
                    Err(_) => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let attempts = self.attempts.max(1);
        let mut wait = self.backoff;
        let mut last = SkybotError::Empty { attempts: 0 };
        let mut made = 0;
        for attempt in 1..=attempts {
            made = attempt;
            match self.attempt(&agent, &url, q) {
                Attempt::Answer(objects, body) => {
                    if let Some(path) = &cache {
                        store(path, &body)?;
                    }
                    return Ok(ConeAnswer {
                        objects,
                        from_cache: false,
                        url,
                    });
                }
                Attempt::Failed(e) if e.is_transient() && attempt < attempts => {
                    std::thread::sleep(wait);
                    wait *= 2;
                    last = e;
                }
                Attempt::Failed(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(with_attempts(last, made))
    }

    fn attempt(&self, agent: &ureq::Agent, url: &str, q: &ConeQuery) -> Attempt {
        let timeout_err = || SkybotError::Timeout {
            timeout_secs: self.timeout.as_secs_f64(),
            attempts: 1,
        };
        let mut resp = match agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Attempt::Failed(timeout_err()),
            Err(ureq::Error::Io(e)) if is_timeout(&e) => return Attempt::Failed(timeout_err()),
            Err(e) => {
                return Attempt::Failed(SkybotError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                    attempts: 1,
                })
            }
        };
        let status = resp.status().as_u16();
        let mut body = String::new();
        let read = resp.body_mut().as_reader().read_to_string(&mut body);
        if let Err(e) = read {
            return Attempt::Failed(if is_timeout(&e) || e.to_string().contains("timeout") {
                timeout_err()
            } else {
                SkybotError::Unreachable {
                    url: url.to_string(),
                    reason: format!("reading the answer: {e}"),
                    attempts: 1,
                }
            });
        }
        if status != 200 {
            return Attempt::Failed(match html_title(&body) {
                Some(title) => SkybotError::HtmlPage {
                    status,
                    title,
                    expected: q.mime.describe(),
                },
                None => SkybotError::Http {
                    status,
                    attempts: 1,
                    excerpt: body
                        .chars()
                        .take(200)
                        .collect::<String>()
                        .trim()
                        .to_string(),
                },
            });
        }
        match parse_answer(&body, q.mime) {
            Ok(objects) => Attempt::Answer(objects, body),
            Err(e) => Attempt::Failed(e),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn with_attempts(e: SkybotError, n: u32) -> SkybotError {
    match e {
        SkybotError::Timeout { timeout_secs, .. } => SkybotError::Timeout {
            timeout_secs,
            attempts: n,
        },
        SkybotError::Http {
            status, excerpt, ..
        } => SkybotError::Http {
            status,
            excerpt,
            attempts: n,
        },
        SkybotError::Unreachable { url, reason, .. } => SkybotError::Unreachable {
            url,
            reason,
            attempts: n,
        },
        SkybotError::Empty { .. } => SkybotError::Empty { attempts: n },
        other => other,
    }
}

/// Writes a cache entry atomically (temporary file, then rename).
fn store(path: &Path, body: &str) -> Result<(), SkybotError> {
    let err = |e: std::io::Error| SkybotError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
