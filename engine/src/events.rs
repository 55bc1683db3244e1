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

impl Sink for JsonLines {
    fn event(&mut self, at: &str, e: &Event) {
        // `{"event":...}` becomes `{"time":"...","event":...}` without building a JSON tree.
        self.line.clear();
        if serde_json::to_writer(&mut self.line, e).is_err() || self.line.is_empty() {
            return;
        }
        // The event log is a convenience copy of what the store holds; a full disk must not
        // stop the run.
        let _ = write!(self.out, "{{\"time\":\"{at}\",");
        let _ = self.out.write_all(&self.line[1..]);
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
