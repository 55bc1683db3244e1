//! One typed stream of run events. The scheduler emits them; sinks (the progress display, the
//! JSON-lines log of the run, tracing) consume them. Nothing else reads the scheduler's state.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::store::State;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: String,
        pipeline: String,
        mode: String,
    },
    /// A task template expanded into `instances` instances (fan-out, possibly at run time).
    Expanded {
        task: String,
        instances: usize,
    },
    Started {
        id: String,
        attempt: u32,
    },
    Retrying {
        id: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    Finished {
        id: String,
        state: State,
        attempts: u32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache: Option<String>,
    },
    RunFinished {
        run: String,
        state: String,
        succeeded: u64,
        cached: u64,
        failed: u64,
        skipped: u64,
        cancelled: u64,
    },
}

pub trait Sink: Send {
    fn event(&mut self, at: &str, e: &Event);
    fn finish(&mut self) {}
}

/// Writes one JSON object per line: `{"time": ..., "event": ..., ...}`.
pub struct JsonLines {
    out: std::io::BufWriter<std::fs::File>,
    flushed: std::time::Instant,
    /// The line being built (kept to save an allocation per event).
    line: Vec<u8>,
}

impl JsonLines {
    pub fn create(path: &Path) -> std::io::Result<JsonLines> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonLines {
            out: std::io::BufWriter::with_capacity(1 << 16, f),
            flushed: std::time::Instant::now(),
            line: Vec::with_capacity(256),
        })
    }
}

/// The two events a run emits per task instance, written by hand (serde's generic path took
/// about 3,500 instructions an event, a tenth of a 10,000-task rerun); the same bytes as
/// `serde_json` would write after the `time` field (a unit test compares them).
fn write_frequent(line: &mut Vec<u8>, at: &str, e: &Event) -> bool {
    use crate::cache::{json_str, json_u64};
    match e {
        Event::Finished {
            id,
            state,
            attempts,
            duration_ms,
            error,
            cache,
        } => {
            line.extend_from_slice(b"{\"time\":");
            json_str(line, at);
            line.extend_from_slice(b",\"event\":\"finished\",\"id\":");
            json_str(line, id);
            line.extend_from_slice(b",\"state\":\"");
            line.extend_from_slice(state.name().as_bytes());
            line.extend_from_slice(b"\",\"attempts\":");
            json_u64(line, u64::from(*attempts));
            line.extend_from_slice(b",\"duration_ms\":");
            json_u64(line, *duration_ms);
            if let Some(error) = error {
                line.extend_from_slice(b",\"error\":");
                json_str(line, error);
            }
            if let Some(cache) = cache {
                line.extend_from_slice(b",\"cache\":");
                json_str(line, cache);
            }
            line.push(b'}');
            true
        }
        Event::Expanded { task, instances } => {
            line.extend_from_slice(b"{\"time\":");
            json_str(line, at);
            line.extend_from_slice(b",\"event\":\"expanded\",\"task\":");
            json_str(line, task);
            line.extend_from_slice(b",\"instances\":");
            json_u64(line, *instances as u64);
            line.push(b'}');
            true
        }
        _ => false,
    }
}

/// One event as a line of JSON: `{"time":"...","event":...}` (without the newline).
fn event_line(line: &mut Vec<u8>, at: &str, e: &Event) -> bool {
    line.clear();
    if write_frequent(line, at, e) {
        return true;
    }
    // `{"event":...}` becomes `{"time":"...","event":...}` without building a JSON tree.
    let mut body = Vec::new();
    if serde_json::to_writer(&mut body, e).is_err() || body.is_empty() {
        return false;
    }
    let _ = write!(line, "{{\"time\":\"{at}\",");
    line.extend_from_slice(&body[1..]);
    true
}

impl Sink for JsonLines {
    fn event(&mut self, at: &str, e: &Event) {
        if !event_line(&mut self.line, at, e) {
            return;
        }
        // The event log is a convenience copy of what the store holds; a full disk must not
        // stop the run.
        let _ = self.out.write_all(&self.line);
        let _ = self.out.write_all(b"\n");
        // Readable while the run goes (`tail -f`), without a write per event.
        if self.flushed.elapsed() > std::time::Duration::from_millis(200) {
            let _ = self.out.flush();
            self.flushed = std::time::Instant::now();
        }
    }
    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

/// Sends events to tracing (visible with RUST_LOG=nearby=debug).
pub struct Tracing;

impl Sink for Tracing {
    fn event(&mut self, _at: &str, e: &Event) {
        match e {
            Event::Finished {
                id,
                state: State::Failed,
                error,
                ..
            } => tracing::warn!(target: "nearby::run", task = %id, error = ?error, "failed"),
            other => tracing::debug!(target: "nearby::run", event = ?other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written lines are what serde_json writes for the same events.
    #[test]
    fn frequent_events_are_written_as_serde_would() {
        let at = "2026-11-28T04:00:00.123Z";
        let odd = "quote \" back\\ tab\t ctl\u{1} é";
        let events = [
            Event::Finished {
                id: "fan[7]".into(),
                state: State::Cached,
                attempts: 0,
                duration_ms: 0,
                error: None,
                cache: Some("hit: recorded by run 20261128-035731-944-2429".into()),
            },
            Event::Finished {
                id: odd.into(),
                state: State::Failed,
                attempts: u32::MAX,
                duration_ms: u64::MAX,
                error: Some(odd.into()),
                cache: None,
            },
            Event::Expanded {
                task: odd.into(),
                instances: 100_000,
            },
        ];
        for e in &events {
            let mut ours = Vec::new();
            assert!(write_frequent(&mut ours, at, e));
            let serde = serde_json::to_string(e).unwrap();
            let want = format!("{{\"time\":\"{at}\",{}", &serde[1..]);
            assert_eq!(String::from_utf8(ours).unwrap(), want);
        }
        let mut line = Vec::new();
        let other = Event::RunStarted {
            run: "r".into(),
            pipeline: odd.into(),
            mode: "run".into(),
        };
        assert!(event_line(&mut line, at, &other));
        let serde = serde_json::to_string(&other).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            format!("{{\"time\":\"{at}\",{}", &serde[1..])
        );
    }
}
