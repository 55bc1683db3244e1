//! What a run did, for people: per task counts and durations, cache hits, failures with the end
//! of their logs, the science numbers the tasks recorded ([`crate::task::METRICS_FILE`]), as one
//! self-contained HTML page and as the JSON a webhook posts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sched;
use crate::store::{InstanceRecord, RunRecord, State, Store, StoreError};

/// How many log lines a failure shows.
const LOG_TAIL: usize = 15;

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run: String,
    pub pipeline: String,
    /// The run's `night` param, when the pipeline has one.
    pub night: Option<String>,
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub counts: BTreeMap<String, u64>,
    /// Sums of every finished instance's science numbers (frames, sources, tracklets, ...).
    pub metrics: BTreeMap<String, f64>,
    pub tasks: Vec<TaskRow>,
    pub failures: Vec<Failure>,
    #[serde(skip)]
    pub timeline: Vec<Bar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub kind: String,
    pub counts: BTreeMap<String, u64>,
    /// Sum and maximum of the durations of the instances that ran, in seconds.
    pub total_s: f64,
    pub max_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub id: String,
    pub error: String,
    pub quarantined: bool,
    pub log: Option<String>,
    pub log_tail: Vec<String>,
}

/// One instance on the timeline: start and end in seconds from the run's start.
#[derive(Debug, Clone)]
pub struct Bar {
    pub id: String,
    pub state: State,
    pub start: f64,
    pub end: f64,
}

/// The night a run is for: its `night` param, if any.
pub fn night_of(run: &RunRecord) -> Option<String> {
    match run.params.get("night")? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// The output directory of a recorded instance (where its metrics file is).
fn instance_dir(workdir: &Path, r: &InstanceRecord) -> PathBuf {
    let key =
        r.id.strip_prefix(r.task.as_str())
            .and_then(|k| k.strip_prefix('['))
            .and_then(|k| k.strip_suffix(']'));
    sched::out_dir(workdir, &r.task, key)
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub fn summarise(store: &Store, workdir: &Path, run: &RunRecord) -> Result<RunSummary, StoreError> {
    let instances = store.instances(&run.id)?;
    let t0 = parse_time(&run.started_at);
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    let mut tasks: BTreeMap<String, TaskRow> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut timeline = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for r in &instances {
        *counts.entry(r.state.name().to_owned()).or_default() += 1;
        let row = tasks.entry(r.task.clone()).or_insert_with(|| TaskRow {
            task: r.task.clone(),
            kind: r.kind.clone(),
            counts: BTreeMap::new(),
            total_s: 0.0,
            max_s: 0.0,
        });
        *row.counts.entry(r.state.name().to_owned()).or_default() += 1;
        if matches!(r.state, State::Succeeded | State::Failed) {
            let s = r.duration_ms.unwrap_or(0) as f64 / 1000.0;
            row.total_s += s;
            row.max_s = row.max_s.max(s);
        }
        if r.state.is_done_ok() && !r.outputs.is_empty() {
            for (k, v) in crate::task::read_metrics(&instance_dir(workdir, r)) {
                *metrics.entry(k).or_default() += v;
            }
        }
        if r.state == State::Failed {
            let log_tail = r
                .log
                .as_deref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|text| {
                    let lines: Vec<&str> = text.lines().collect();
                    let from = lines.len().saturating_sub(LOG_TAIL);
                    lines[from..].iter().map(|l| l.to_string()).collect()
                })
                .unwrap_or_default();
            failures.push(Failure {
                id: r.id.clone(),
                error: r.error.clone().unwrap_or_default(),
                quarantined: r.quarantined,
                log: r.log.clone(),
                log_tail,
            });
        }
        if let (Some(t0), Some(s), Some(f)) = (
            t0,
            r.started_at.as_deref().and_then(parse_time),
            r.finished_at.as_deref().and_then(parse_time),
        ) {
            let secs =
                |t: chrono::DateTime<chrono::Utc>| (t - t0).num_milliseconds() as f64 / 1000.0;
            timeline.push(Bar {
                id: r.id.clone(),
                state: r.state,
                start: secs(s).max(0.0),
                end: secs(f).max(0.0),
            });
        }
    }
    timeline.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok(RunSummary {
        run: run.id.clone(),
        pipeline: run.pipeline_name.clone(),
        night: night_of(run),
        state: run.state.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        counts,
        metrics,
        tasks: tasks.into_values().collect(),
        failures,
        timeline,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(s: State) -> &'static str {
    match s {
        State::Succeeded => "#2e7d32",
        State::Cached => "#90a4ae",
        State::Failed => "#c62828",
        State::Skipped | State::Cancelled => "#f9a825",
        State::Pending | State::Running => "#1565c0",
    }
}

/// The run as one HTML page (no scripts, no external files).
pub fn html(s: &RunSummary) -> String {
    let mut h = String::new();
    let title = match &s.night {
        Some(n) => format!("{} — night {n} — run {}", s.pipeline, s.run),
        None => format!("{} — run {}", s.pipeline, s.run),
    };
    h.push_str(&format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         pre{{background:#f4f4f4;padding:.5em;overflow-x:auto}}.state{{font-weight:bold}}</style></head><body>\n",
        esc(&title)
    ));
    h.push_str(&format!("<h1>{}</h1>\n", esc(&title)));
    h.push_str(&format!(
        "<p class=\"state\">{} · started {} · finished {}</p>\n<p>{}</p>\n",
        esc(&s.state),
        esc(&s.started_at),
        esc(s.finished_at.as_deref().unwrap_or("-")),
        s.counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    h.push_str("<h2>Science summary</h2>\n");
    if s.metrics.is_empty() {
        h.push_str("<p>No task recorded science numbers.</p>\n");
    } else {
        h.push_str("<table><tr><th>quantity</th><th>value</th></tr>\n");
        for (k, v) in &s.metrics {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(k),
                fmt_num(*v)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Tasks</h2>\n<table><tr><th>task</th><th>kind</th><th>succeeded</th><th>cached</th><th>failed</th><th>skipped</th><th>cancelled</th><th>total s</th><th>max s</th></tr>\n");
    for t in &s.tasks {
        let c = |k: &str| t.counts.get(k).copied().unwrap_or(0);
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>\n",
            esc(&t.task), esc(&t.kind), c("succeeded"), c("cached"), c("failed"), c("skipped"), c("cancelled"), t.total_s, t.max_s
        ));
    }
    h.push_str("</table>\n");
    h.push_str(&format!("<h2>Failures ({})</h2>\n", s.failures.len()));
    for f in &s.failures {
        h.push_str(&format!(
            "<h3>{}{}</h3>\n<p>{}</p>\n",
            esc(&f.id),
            if f.quarantined {
                " (quarantined: bad input)"
            } else {
                ""
            },
            esc(&f.error)
        ));
        if !f.log_tail.is_empty() {
            h.push_str(&format!(
                "<p>last lines of {}:</p><pre>{}</pre>\n",
                esc(f.log.as_deref().unwrap_or("the log")),
                esc(&f.log_tail.join("\n"))
            ));
        }
    }
    h.push_str(&timeline_svg(&s.timeline));
    h.push_str("</body></html>\n");
    h
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// Instances that ran as bars against time (cached ones take no time and are left out). At most
/// 2,000 bars: a big night's report stays small.
fn timeline_svg(bars: &[Bar]) -> String {
    let ran: Vec<&Bar> = bars
        .iter()
        .filter(|b| b.state != State::Cached)
        .take(2000)
        .collect();
    if ran.is_empty() {
        return "<h2>Timeline</h2>\n<p>Nothing ran (everything was cached).</p>\n".into();
    }
    let end = ran.iter().map(|b| b.end).fold(0.0_f64, f64::max).max(1e-3);
    let (w, row) = (900.0, 12.0);
    let height = row * ran.len() as f64 + 20.0;
    let mut s = format!(
        "<h2>Timeline</h2>\n<p>{} instances that ran, over {:.1} s.</p>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-size=\"9\">\n",
        ran.len(),
        end,
        w + 260.0
    );
    for (i, b) in ran.iter().enumerate() {
        let y = i as f64 * row;
        let x = 250.0 + b.start / end * w;
        let bw = ((b.end - b.start) / end * w).max(1.0);
        s.push_str(&format!(
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{}\"><title>{} {:.2}-{:.2} s</title></rect>\n",
            y + 9.0,
            esc(&b.id),
            row - 2.0,
            colour(b.state),
            esc(&b.id),
            b.start,
            b.end
        ));
    }
    s.push_str("</svg>\n");
    s
}
