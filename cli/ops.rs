//! Night-level commands (`nights`, `backfill`, `rerun --night`), run reports, notifications
//! and `serve`. The work is in nearby_engine::ops; this is argument handling and printing.

use std::path::{Path, PathBuf};
use std::process::Command;

use nearby_engine::ops::nights::{self, night_dir};
use nearby_engine::ops::report::{self, RunSummary};
use nearby_engine::ops::serve::{Clock, ServeConfig, Service};
use nearby_engine::ops::webhook::{self, On, Webhook};
use nearby_engine::store::{Store, StoreError};

use crate::commands::{self, err, FAILED, OK};
use crate::{ExecArgs, PipelineArgs, Workdir};

/// Runs with more task instances than this get their HTML report on demand (`nearby report`)
/// rather than at the end of the run: reading back 100k records would double the time of a
/// "nothing to do" rerun. A night is a few thousand.
const AUTO_REPORT_MAX: u64 = 20_000;

/// After every run that did something (ran, failed or skipped a task instance): its HTML report
/// beside its event log. After every run: the webhooks it was given.
pub fn after_run(store: &Store, workdir: &Path, run: &str, x: &ExecArgs) {
    let Ok(Some(record)) = store.get_run_without_text(run) else {
        return;
    };
    let instances: u64 = record.counts.values().sum();
    let hooks = !(x.notify.is_empty() && x.notify_failures.is_empty());
    if instances > AUTO_REPORT_MAX && !hooks {
        tracing::info!("{instances} task instances: `nearby report {run}` writes the HTML report");
        return;
    }
    let cached = record.counts.get("cached").copied().unwrap_or(0);
    if cached == instances && !hooks {
        // Nothing ran: the report of the run that did the work still stands.
        tracing::info!("nothing ran: `nearby report {run}` writes the HTML report");
        return;
    }
    let summary = match report::summarise(store, workdir, &record) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: cannot summarise run {run}: {e}");
            return;
        }
    };
    let path = report_path(workdir, run);
    let written = write_report(&summary, &path);
    let hooks: Vec<Webhook> = x
        .notify
        .iter()
        .map(|u| (u, vec![On::Failure, On::Success]))
        .chain(x.notify_failures.iter().map(|u| (u, vec![On::Failure])))
        .map(|(url, on)| Webhook {
            url: url.clone(),
            on,
        })
        .collect();
    if !hooks.is_empty() {
        webhook::notify(
            &hooks,
            &summary,
            written.then(|| path.display().to_string()),
        );
    }
}

fn report_path(workdir: &Path, run: &str) -> PathBuf {
    workdir.join("logs").join(run).join("report.html")
}

fn write_report(summary: &RunSummary, path: &Path) -> bool {
    let ok = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(path, report::html(summary)))
        .map_err(|e| eprintln!("warning: cannot write {}: {e}", path.display()))
        .is_ok();
    ok
}

pub fn report(run: Option<&str>, w: &Workdir, out: Option<&Path>) -> u8 {
    let (dir, store) = match commands::open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = match commands::find_run(&store, run) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let summary = match report::summarise(&store, &dir, &record) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| report_path(&dir, &record.id));
    if !write_report(&summary, &path) {
        return FAILED;
    }
    println!("{}", path.display());
    OK
}

/// The science numbers a night table shows, in order, with their column titles.
const NIGHT_COLUMNS: [(&str, &str); 5] = [
    ("frames", "frames"),
    ("sources", "sources"),
    ("tracklets", "tracklets"),
    ("known", "known"),
    ("real", "real"),
];

pub fn nights(w: &Workdir) -> u8 {
    let all = nights::nights(&w.workdir);
    if all.is_empty() {
        println!(
            "no nights under {} (nights are made by `nearby serve` and `nearby backfill`)",
            w.workdir.join("nights").display()
        );
        return OK;
    }
    print!(
        "{:<11} {:<14} {:<10} {:>4}",
        "night", "pipeline", "state", "runs"
    );
    for (_, title) in NIGHT_COLUMNS {
        print!(" {title:>9}");
    }
    println!(" {:>8}  latest run", "failures");
    for night in all {
        let dir = night_dir(&w.workdir, &night);
        let store = match Store::try_open(&dir) {
            Ok(s) => s,
            Err(StoreError::Locked { .. }) => {
                println!("{night:<11} {:<14} {:<10}", "-", "running");
                continue;
            }
            Err(e) => {
                println!("{night:<11} {:<14} unreadable: {e}", "-");
                continue;
            }
        };
        let runs = store.runs().unwrap_or_default();
        let Some(last) = runs.last() else {
            println!("{night:<11} {:<14} {:<10}", "-", "no runs");
            continue;
        };
        let summary = report::summarise(&store, &dir, last).ok();
        print!(
            "{night:<11} {:<14} {:<10} {:>4}",
            truncate(&last.pipeline_name, 14),
            last.state,
            runs.len()
        );
        for (key, _) in NIGHT_COLUMNS {
            match summary.as_ref().and_then(|s| s.metrics.get(key)) {
                Some(v) => print!(" {:>9}", *v as i64),
                None => print!(" {:>9}", "-"),
            }
        }
        let failures = summary.map(|s| s.failures.len()).unwrap_or(0);
        println!(" {failures:>8}  {}", last.id);
    }
    OK
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

pub fn rerun_night(night: &str, w: &Workdir, from: Option<&str>, x: &ExecArgs) -> u8 {
    let night = match nights::parse_night(night) {
        Ok(d) => nights::night_name(d),
        Err(e) => return err(e),
    };
    let dir = night_dir(&w.workdir, &night);
    if !dir.join("state").exists() {
        return err(format!(
            "night {night} has never run here (no {})",
            dir.display()
        ));
    }
    let latest = match Store::open(&dir).map(|s| s.latest_run()) {
        Ok(Ok(Some(r))) => r.id,
        Ok(Ok(None)) => return err(format!("night {night} has no runs")),
        Ok(Err(e)) => return err(e),
        Err(e) => return err(format!("night {night}: {e} (is it running?)")),
    };
    eprintln!("night {night}: rerunning run {latest}");
    commands::rerun(&latest, &Workdir { workdir: dir }, from, x)
}

/// Each night is a child `nearby run` in its own directory, so nights run in parallel and one
/// crashing night cannot take the others with it.
pub fn backfill(
    p: &PipelineArgs,
    w: &Workdir,
    from: &str,
    to: &str,
    parallel: usize,
    slots: usize,
    x: &ExecArgs,
) -> u8 {
    let (from_d, to_d) = match (nights::parse_night(from), nights::parse_night(to)) {
        (Ok(a), Ok(b)) if a <= b => (a, b),
        (Ok(_), Ok(_)) => return err(format!("--from {from} is after --to {to}")),
        (Err(e), _) | (_, Err(e)) => return err(e),
    };
    // The pipeline must be valid (and take a `night` param) before any night starts.
    let mut overrides = match commands::parse_pairs(&p.set, "--set", "KEY=VALUE") {
        Ok(o) => o,
        Err(c) => return c,
    };
    overrides.insert("night".into(), nights::night_name(from_d));
    if let Err(c) = commands::compile_file(&p.pipeline, &overrides) {
        return c;
    }
    let pipeline = std::fs::canonicalize(&p.pipeline).unwrap_or_else(|_| p.pipeline.clone());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return err(format!("cannot find the nearby executable: {e}")),
    };
    let backfill_slots: Vec<usize> = (1..slots.max(2)).collect();
    let parallel = parallel.clamp(1, backfill_slots.len());
    let todo = nights::range(from_d, to_d);
    eprintln!(
        "backfill: {} nights, {parallel} at a time (slot 0 is kept for scheduled runs)",
        todo.len()
    );
    let mut queue: std::collections::VecDeque<String> = todo.into();
    let mut running: Vec<(String, std::process::Child, nights::Slot)> = Vec::new();
    let mut results: Vec<(String, i32)> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < parallel && !queue.is_empty() {
            let slot = match nights::try_slot(&w.workdir, backfill_slots.iter().copied()) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return err(format!("cannot take a run slot: {e}")),
            };
            let Some(night) = queue.pop_front() else {
                break;
            };
            let mut cmd = Command::new(&exe);
            cmd.arg("run")
                .arg(&pipeline)
                .arg("--workdir")
                .arg(night_dir(&w.workdir, &night))
                .arg("--set")
                .arg(format!("night={night}"))
                .arg("-q");
            for s in &p.set {
                cmd.arg("--set").arg(s);
            }
            if let Some(j) = x.jobs {
                cmd.arg("--jobs").arg(j.to_string());
            }
            for u in &x.notify {
                cmd.arg("--notify").arg(u);
            }
            for u in &x.notify_failures {
                cmd.arg("--notify-failures").arg(u);
            }
            cmd.stdout(std::process::Stdio::null());
            match cmd.spawn() {
                Ok(child) => {
                    eprintln!("backfill: night {night} started");
                    running.push((night, child, slot));
                }
                Err(e) => return err(format!("cannot start {}: {e}", exe.display())),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (night, _, _) = running.remove(i);
                    let code = status.code().unwrap_or(-1);
                    eprintln!(
                        "backfill: night {night} {}",
                        if code == 0 {
                            "succeeded".to_owned()
                        } else {
                            format!("FAILED (exit {code})")
                        }
                    );
                    results.push((night, code));
                }
                _ => i += 1,
            }
        }
    }
    results.sort();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, c)| *c != 0)
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "backfill: {} nights, {} succeeded, {} failed{}",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " ({}; redo one with `nearby rerun --night NIGHT`)",
                failed.join(", ")
            )
        }
    );
    if failed.is_empty() {
        OK
    } else {
        FAILED
    }
}

pub fn serve(config: &Path, w: &Workdir, clock_start: Option<&str>, clock_speed: f64) -> u8 {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => return err(format!("cannot read {}: {e}", config.display())),
    };
    let cfg: ServeConfig = match serde_saphyr::from_str(&text) {
        Ok(c) => c,
        Err(e) => return err(format!("{}: {e}", config.display())),
    };
    for s in &cfg.schedules {
        if let Err(e) = nearby_engine::ops::cron::Cron::parse(&s.cron) {
            return err(format!("{}: schedule `{}`: {e}", config.display(), s.name));
        }
    }
    let clock = match clock_start {
        None => Clock::real(),
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Clock::new(t.with_timezone(&chrono::Utc), clock_speed),
            Err(e) => return err(format!("--clock-start {t}: {e}")),
        },
    };
    if let Err(e) = std::fs::create_dir_all(&w.workdir) {
        return err(format!("cannot create {}: {e}", w.workdir.display()));
    }
    let workdir = std::fs::canonicalize(&w.workdir).unwrap_or_else(|_| w.workdir.clone());
    let base = config
        .parent()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
        .unwrap_or_default();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return err(format!("cannot find the nearby executable: {e}")),
    };
    let service = Service {
        exe,
        workdir,
        config: cfg,
        base,
        clock,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return err(format!("cannot start the runtime: {e}")),
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        commands::wait_for_signal().await;
        eprintln!("serve: signal received: stopping");
        let _ = tx.send(true);
    });
    eprintln!("serve: started (config {})", config.display());
    match rt.block_on(service.run(rx)) {
        Ok(0) => OK,
        Ok(n) => {
            eprintln!("serve: {n} run(s) failed");
            OK
        }
        Err(e) => err(format!("serve: {e}")),
    }
}
