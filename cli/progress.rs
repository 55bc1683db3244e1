//! What a person sees while a run goes: a progress bar on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nearby_engine::events::{Event, Sink};
use nearby_engine::store::State;

pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    total: u64,
    done: u64,
    running: u64,
    cached: u64,
    failed: u64,
    started: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        Progress {
            bar,
            quiet,
            total: 0,
            done: 0,
            running: 0,
            cached: 0,
            failed: 0,
            started: Instant::now(),
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    fn refresh(&self) {
        if let Some(b) = &self.bar {
            b.set_length(self.total);
            b.set_position(self.done);
            b.set_message(format!(
                "running {} · cached {} · failed {}",
                self.running, self.cached, self.failed
            ));
        }
    }
}

impl Sink for Progress {
    fn event(&mut self, _at: &str, e: &Event) {
        match e {
            Event::RunStarted {
                run,
                pipeline,
                mode,
            } => self.line(&format!("{mode} {run} of pipeline `{pipeline}`")),
            Event::Expanded { instances, .. } => self.total += *instances as u64,
            Event::Started { .. } => self.running += 1,
            Event::Retrying {
                id,
                attempt,
                delay_ms,
                error,
            } => {
                self.running = self.running.saturating_sub(1);
                self.line(&format!(
                    "retry  {id} (attempt {attempt} failed: {error}; next in {:.1} s)",
                    *delay_ms as f64 / 1000.0
                ));
            }
            Event::Finished {
                id,
                state,
                duration_ms,
                error,
                ..
            } => {
                self.done += 1;
                if matches!(state, State::Succeeded | State::Failed | State::Cancelled) {
                    self.running = self.running.saturating_sub(1);
                }
                match state {
                    State::Cached => self.cached += 1,
                    State::Failed => self.failed += 1,
                    _ => {}
                }
                let show = match state {
                    State::Failed | State::Skipped | State::Cancelled => true,
                    State::Succeeded => !self.quiet,
                    _ => false,
                };
                if show {
                    let word = match state {
                        State::Succeeded => "ok    ",
                        State::Failed => "FAILED",
                        State::Skipped => "skip  ",
                        _ => "cancel",
                    };
                    let mut s = format!("{word} {id}");
                    if *state == State::Succeeded {
                        s.push_str(&format!(" ({:.2} s)", *duration_ms as f64 / 1000.0));
                    }
                    if let Some(e) = error {
                        s.push_str(&format!(": {e}"));
                    }
                    self.line(&s);
                }
            }
            Event::RunFinished {
                run,
                state,
                succeeded,
                cached,
                failed,
                skipped,
                cancelled,
            } => {
                if let Some(b) = &self.bar {
                    b.finish_and_clear();
                }
                self.line(&format!(
                    "run {run} {state} in {:.2} s: {succeeded} ran, {cached} cached, {failed} failed, {skipped} skipped, {cancelled} cancelled",
                    self.started.elapsed().as_secs_f64()
                ));
                return;
            }
        }
        self.refresh();
    }
}
