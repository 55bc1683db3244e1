//! A client of IMCCE's SkyBoT cone search: which known solar-system objects are in a field at
//! an epoch, as seen from an observatory. NEARBY identified known objects this way (within 5").
//!
//! - [`query`]: the request (epoch, field centre, radius, observatory code, answer format).
//! - [`parse`]: the two answer formats, VOTable and text, into [`SkybotObject`]s. A field with
//!   no known object is an answer (an empty list), not an error; the service's own error flag,
//!   an HTML page where a table was expected, and an unreadable answer are errors.
//! - [`client`]: HTTP with a timeout per attempt, retries with doubling waits on timeouts,
//!   refused connections, 5xx/429 and empty answers, and a disk cache keyed by the request.
//!
//! Object names may contain `|` and quotes (`G!kun||'homdima`), so the text format is split on
//! ` | ` by its known column count, never naively.

pub mod client;
pub mod parse;
pub mod query;
#[cfg(test)]
mod tests;

pub use client::{Client, ConeAnswer};
pub use parse::{parse_answer, parse_text, parse_votable, SkybotObject};
pub use query::{ConeQuery, Mime, Output};

/// Why a cone search gave no list of objects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SkybotError {
    #[error("SkyBoT query: {0}")]
    BadQuery(String),
    /// The service answered with its error flag (`# Flag: -1`, `QUERY_STATUS` `ERROR`).
    #[error("SkyBoT reported an error: {0}")]
    Service(String),
    #[error("SkyBoT answered HTTP {status} with an HTML page (`{title}`), not a {expected}")]
    HtmlPage {
        status: u16,
        title: String,
        expected: &'static str,
    },
    #[error("SkyBoT gave no answer within {timeout_secs} s, {attempts} attempt(s)")]
    Timeout { timeout_secs: f64, attempts: u32 },
    #[error("SkyBoT answered HTTP {status} after {attempts} attempt(s): {excerpt}")]
    Http {
        status: u16,
        attempts: u32,
        excerpt: String,
    },
    #[error("cannot reach SkyBoT at {url} after {attempts} attempt(s): {reason}")]
    Unreachable {
        url: String,
        reason: String,
        attempts: u32,
    },
    /// An empty body where an answer was expected (a dropped connection, an overloaded server).
    #[error("SkyBoT sent an empty answer ({attempts} attempt(s))")]
    Empty { attempts: u32 },
    #[error("SkyBoT's answer is not a readable {format}: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("SkyBoT cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

impl SkybotError {
    /// Whether asking again may give an answer.
    pub fn is_transient(&self) -> bool {
        match self {
            SkybotError::Timeout { .. }
            | SkybotError::Unreachable { .. }
            | SkybotError::Empty { .. } => true,
            SkybotError::Http { status, .. } => *status >= 500 || *status == 429,
            SkybotError::HtmlPage { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
