//! `nearby serve`: the survey's unattended service. It starts nightly runs on cron schedules and
//! when a night's data has arrived (a watched directory), one run per pipeline and night at a
//! time, each night in its own work directory ([`super::nights`]) and its own `nearby` process.
//!
//! Its state lives in the service work directory's store (whose lock also keeps a second service
//! off the same directory): the last time each schedule fired, the nights each trigger started,
//! and the runs in flight. After downtime, missed schedule times run once each, oldest first (or
//! only the latest, or none: `catch_up`); runs that were in flight when the service stopped (or
//! was killed) are resumed, so finished tasks are not redone. SIGTERM stops the runs cleanly
//! (they record their state) and the service exits; the next start resumes them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::cron::Cron;
use super::nights::{self, night_dir, night_name};
use super::webhook::{On, Webhook};
use crate::store::Store;

/// The service's configuration (config/serve.yaml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Nights that may run at once. Slot 0 is kept for the service, so backfills (which use
    /// slots 1..) never starve tonight's run.
    #[serde(default = "two")]
    pub slots: usize,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

fn two() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    /// Relative to the configuration file.
    pub pipeline: PathBuf,
    /// `minute hour day month weekday`, UTC.
    pub cron: String,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Extra params; `{night}` in a value becomes the night.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Every missed time runs once, oldest first.
    #[default]
    All,
    /// Only the most recent missed time runs.
    Latest,
    /// Missed times are skipped.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    pub pipeline: PathBuf,
    /// Watched directory: one subdirectory per night, named by its date (YYYY-MM-DD or YYYYMMDD).
    pub watch: PathBuf,
    pub complete: Complete,
    /// Extra params; `{night}` becomes the night and `{dir}` the night's directory.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// When a night's data is complete: a marker file appears, or nothing changed for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Complete {
    Marker(String),
    QuietSecs(f64),
}

/// Time as the service sees it. Real time by default; tests start it at a chosen moment and run
/// it faster, so a schedule a day away fires in seconds without sleeping for hours.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    real0: std::time::Instant,
    t0: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    pub fn real() -> Clock {
        Clock::new(Utc::now(), 1.0)
    }
    pub fn new(start: DateTime<Utc>, speed: f64) -> Clock {
        Clock {
            real0: std::time::Instant::now(),
            t0: start,
            speed: speed.max(1e-6),
        }
    }
    pub fn now(&self) -> DateTime<Utc> {
        let dt = self.real0.elapsed().as_secs_f64() * self.speed;
        self.t0 + chrono::Duration::microseconds((dt * 1e6) as i64)
    }
    /// Real time until clock time `t`.
    pub fn real_until(&self, t: DateTime<Utc>) -> Duration {
        let secs = (t - self.now()).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        Duration::from_secs_f64((secs / self.speed).clamp(0.0, 3600.0))
    }
}

/// One night to run.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    pipeline: PathBuf,
    night: String,
    set: BTreeMap<String, String>,
    origin: String,
    /// A missed night run after downtime: these run one after another, oldest first.
    catch_up: bool,
}

/// How to start a run: the `nearby` executable (the service runs each night as
/// `nearby run|resume ... --workdir WORKDIR/nights/NIGHT`).
pub struct Service {
    pub exe: PathBuf,
    pub workdir: PathBuf,
    pub config: ServeConfig,
    /// Directory of the configuration file (pipelines are relative to it).
    pub base: PathBuf,
    pub clock: Clock,
}

const ACTIVE: &str = "serve.active.";

fn render(template: &str, night: &str, dir: Option<&Path>) -> String {
    let s = template.replace("{night}", night);
    match dir {
        Some(d) => s.replace("{dir}", &d.display().to_string()),
        None => s,
    }
}

impl Service {
    /// Runs until SIGTERM or Ctrl-C (or `stop` is sent). Returns the number of runs that failed.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<usize, String> {
        let store = Store::open(&self.workdir).map_err(|e| e.to_string())?;
        let crons: Vec<(Schedule, Cron)> = self
            .config
            .schedules
            .iter()
            .map(|s| Cron::parse(&s.cron).map(|c| (s.clone(), c)))
            .collect::<Result<_, _>>()?;
        let mut queue: VecDeque<(Job, Option<String>)> = VecDeque::new();

        // Runs in flight when the service last stopped: resume them first.
        for (key, value) in store.meta_with_prefix(ACTIVE).map_err(|e| e.to_string())? {
            let night = key.trim_start_matches(ACTIVE).to_owned();
            if let Ok(job) = serde_json::from_str::<serde_json::Value>(&value) {
                let pipeline = PathBuf::from(job["pipeline"].as_str().unwrap_or_default());
                let set = serde_json::from_value(job["set"].clone()).unwrap_or_default();
                let origin = job["origin"].as_str().unwrap_or("resume").to_owned();
                eprintln!(
                    "serve: night {night} was in flight when the service stopped: resuming it"
                );
                queue.push_back((
                    Job {
                        pipeline,
                        night,
                        set,
                        origin,
                        catch_up: false,
                    },
                    Some("resume".into()),
                ));
            }
        }

        // Missed schedule times.
        let now = self.clock.now();
        for (s, cron) in &crons {
            let key = format!("serve.schedule.{}", s.name);
            let last = store
                .get_meta(&key)
                .map_err(|e| e.to_string())?
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(last) = last {
                let missed = cron.between(last, now);
                let picked: Vec<DateTime<Utc>> = match s.catch_up {
                    CatchUp::All => missed,
                    CatchUp::Latest => missed.into_iter().last().into_iter().collect(),
                    CatchUp::None => Vec::new(),
                };
                for t in picked {
                    let night = night_name(nights::night_before(t));
                    eprintln!(
                        "serve: schedule `{}` missed {t}: running night {night}",
                        s.name
                    );
                    let mut job = self.scheduled_job(s, &night);
                    job.catch_up = true;
                    queue.push_back((job, None));
                }
            }
            store
                .put_meta(&key, &now.to_rfc3339())
                .map_err(|e| e.to_string())?;
        }
        store.flush().map_err(|e| e.to_string())?;

        // Data-arrival triggers: a watcher per trigger; events name the night's directory.
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(usize, String)>();
        let mut watchers = Vec::new();
        let mut arrivals: HashMap<(usize, String), DateTime<Utc>> = HashMap::new();
        for (i, t) in self.config.triggers.iter().enumerate() {
            let watch = self.base.join(&t.watch);
            std::fs::create_dir_all(&watch).map_err(|e| {
                format!(
                    "trigger `{}`: cannot create {}: {e}",
                    t.name,
                    watch.display()
                )
            })?;
            // Events name absolute paths.
            let watch = std::fs::canonicalize(&watch).unwrap_or(watch);
            let tx = ev_tx.clone();
            let root = watch.clone();
            let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    for p in ev.paths {
                        if let Some(n) = p
                            .strip_prefix(&root)
                            .ok()
                            .and_then(|r| r.components().next())
                            .and_then(|c| c.as_os_str().to_str())
                        {
                            let _ = tx.send((i, n.to_owned()));
                        }
                    }
                }
            })
            .map_err(|e| {
                format!(
                    "trigger `{}`: cannot watch {}: {e}",
                    t.name,
                    watch.display()
                )
            })?;
            notify::Watcher::watch(&mut w, &watch, notify::RecursiveMode::Recursive).map_err(
                |e| {
                    format!(
                        "trigger `{}`: cannot watch {}: {e}",
                        t.name,
                        watch.display()
                    )
                },
            )?;
            watchers.push(w);
            // Data that arrived while the service was down.
            for night in std::fs::read_dir(&watch).into_iter().flatten().flatten() {
                if let Some(n) = night.file_name().to_str() {
                    arrivals.insert((i, n.to_owned()), now);
                }
            }
        }
        drop(ev_tx);

        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, i32)>();
        let mut running: HashMap<String, (Job, nights::Slot, u32)> = HashMap::new();
        let mut failed = 0;
        let mut stopping = false;
        loop {
            // Start what can start: one run per night, one slot per run.
            let mut waiting = VecDeque::new();
            while let Some((job, mode)) = queue.pop_front() {
                if stopping {
                    break;
                }
                let catching_up = running.values().any(|(j, _, _)| j.catch_up);
                if running.contains_key(&job.night) || (job.catch_up && catching_up) {
                    waiting.push_back((job, mode));
                    continue;
                }
                let slot = match nights::try_slot(&self.workdir, 0..self.config.slots.max(1)) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        waiting.push_back((job, mode));
                        continue;
                    }
                    Err(e) => return Err(format!("cannot take a run slot: {e}")),
                };
                match self.launch(&store, &job, mode.as_deref(), done_tx.clone()) {
                    Ok(pid) => {
                        running.insert(job.night.clone(), (job, slot, pid));
                    }
                    Err(e) => {
                        eprintln!("serve: cannot start night {}: {e}", job.night);
                        failed += 1;
                    }
                }
            }
            queue.extend(waiting);
            if stopping && running.is_empty() {
                break;
            }

            let next_fire = crons
                .iter()
                .filter_map(|(s, c)| c.next_after(self.clock.now()).map(|t| (t, s)))
                .min_by_key(|(t, _)| *t);
            let sleep = next_fire
                .as_ref()
                .map(|(t, _)| self.clock.real_until(*t))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_millis(500));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                ev = ev_rx.recv(), if !self.config.triggers.is_empty() => {
                    if let Some((i, n)) = ev {
                        arrivals.insert((i, n), self.clock.now());
                    }
                }
                done = done_rx.recv() => {
                    if let Some((night, code)) = done {
                        if let Some((job, _slot, _)) = running.remove(&night) {
                            let _ = store.remove_meta(&format!("{ACTIVE}{night}"));
                            let _ = store.flush();
                            if stopping {
                                // Cancelled by SIGTERM: stays recorded for the next start.
                                let _ = store.put_meta(&format!("{ACTIVE}{night}"), &job_json(&job));
                                let _ = store.flush();
                            } else if code != 0 {
                                failed += 1;
                            }
                            eprintln!("serve: night {night} ({}) finished with exit code {code}", job.origin);
                        }
                    }
                }
                _ = stop.changed() => {
                    if !stopping {
                        stopping = true;
                        eprintln!("serve: stopping: cancelling {} run(s)", running.len());
                        for (_, _, pid) in running.values() {
                            // SAFETY: signals a child process this service started.
                            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
                        }
                    }
                }
            }
            if stopping {
                continue;
            }
            // Schedules that came due.
            let now = self.clock.now();
            for (s, cron) in &crons {
                let key = format!("serve.schedule.{}", s.name);
                let last = store
                    .get_meta(&key)
                    .ok()
                    .flatten()
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(now);
                for t in cron.between(last, now) {
                    let night = night_name(nights::night_before(t));
                    eprintln!("serve: schedule `{}` fired at {t}: night {night}", s.name);
                    queue.push_back((self.scheduled_job(s, &night), None));
                }
                let _ = store.put_meta(&key, &now.to_rfc3339());
            }
            // Nights whose data is complete.
            let mut ready = Vec::new();
            for ((i, n), last) in &arrivals {
                let t = &self.config.triggers[*i];
                let dir = self.base.join(&t.watch).join(n);
                let Ok(date) = nights::parse_night(n) else {
                    continue;
                };
                let complete = match &t.complete {
                    Complete::Marker(m) => dir.join(m).exists(),
                    Complete::QuietSecs(q) => {
                        (now - *last).num_milliseconds() as f64 / 1000.0 >= *q
                    }
                };
                if complete && dir.is_dir() {
                    ready.push((*i, n.clone(), night_name(date), dir));
                }
            }
            for (i, n, night, dir) in ready {
                arrivals.remove(&(i, n.clone()));
                let t = &self.config.triggers[i];
                let key = format!("serve.trigger.{}.{night}", t.name);
                if store.get_meta(&key).ok().flatten().is_some() {
                    continue; // already started once; `nearby rerun --night` redoes a night
                }
                let _ = store.put_meta(&key, &now.to_rfc3339());
                let set = t
                    .set
                    .iter()
                    .map(|(k, v)| (k.clone(), render(v, &night, Some(&dir))))
                    .collect();
                eprintln!(
                    "serve: trigger `{}`: data for night {night} is complete",
                    t.name
                );
                queue.push_back((
                    Job {
                        pipeline: self.base.join(&t.pipeline),
                        night,
                        set,
                        origin: format!("trigger {}", t.name),
                        catch_up: false,
                    },
                    None,
                ));
            }
            let _ = store.flush();
        }
        drop(watchers);
        let _ = store.flush();
        Ok(failed)
    }

    fn scheduled_job(&self, s: &Schedule, night: &str) -> Job {
        Job {
            pipeline: self.base.join(&s.pipeline),
            night: night.to_owned(),
            set: s
                .set
                .iter()
                .map(|(k, v)| (k.clone(), render(v, night, None)))
                .collect(),
            origin: format!("schedule {}", s.name),
            catch_up: false,
        }
    }

    /// Starts `nearby run` (or `resume` of the night's latest run) for a job, in a child process
    /// that dies with the service (so a killed service leaves no orphan holding the night).
    fn launch(
        &self,
        store: &Store,
        job: &Job,
        mode: Option<&str>,
        done: mpsc::UnboundedSender<(String, i32)>,
    ) -> Result<u32, String> {
        let dir = night_dir(&self.workdir, &job.night);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        let resume_id = match mode {
            Some("resume") => latest_unfinished_run(&dir),
            _ => None,
        };
        match &resume_id {
            Some(id) => {
                cmd.arg("resume").arg(id);
            }
            None => {
                cmd.arg("run").arg(&job.pipeline);
                cmd.arg("--set").arg(format!("night={}", job.night));
                for (k, v) in &job.set {
                    cmd.arg("--set").arg(format!("{k}={v}"));
                }
            }
        }
        cmd.arg("--workdir").arg(&dir).arg("-q");
        for h in &self.config.webhooks {
            let flag = if h.on.contains(&On::Success) {
                "--notify"
            } else {
                "--notify-failures"
            };
            if h.on.contains(&On::Failure) || h.on.contains(&On::Success) {
                cmd.arg(flag).arg(&h.url);
            }
        }
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.stdin(std::process::Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id().unwrap_or(0);
        store
            .put_meta(&format!("{ACTIVE}{}", job.night), &job_json(job))
            .map_err(|e| e.to_string())?;
        store.flush().map_err(|e| e.to_string())?;
        eprintln!(
            "serve: night {} ({}): {} {}",
            job.night,
            job.origin,
            if resume_id.is_some() {
                "resuming run"
            } else {
                "starting"
            },
            resume_id.unwrap_or_else(|| job.pipeline.display().to_string())
        );
        let night = job.night.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(s) => s.code().unwrap_or(-1),
                Err(_) => -1,
            };
            let _ = done.send((night, code));
        });
        Ok(pid)
    }
}

fn job_json(job: &Job) -> String {
    serde_json::json!({
        "pipeline": job.pipeline.display().to_string(),
        "set": job.set,
        "origin": job.origin,
    })
    .to_string()
}

/// The id of the night's latest run if it did not finish (killed or cancelled).
fn latest_unfinished_run(dir: &Path) -> Option<String> {
    let store = Store::open(dir).ok()?;
    let run = store.latest_run().ok()??;
    (run.state == "running" || run.state == "cancelled" || run.state == "pending").then_some(run.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/serve.yaml");
        let cfg: ServeConfig =
            serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(cfg.slots, 2);
        assert_eq!(cfg.schedules[0].catch_up, CatchUp::All);
        Cron::parse(&cfg.schedules[0].cron).unwrap();
        assert!(matches!(cfg.triggers[0].complete, Complete::Marker(ref m) if m == "DONE"));
        assert_eq!(cfg.webhooks[0].on, vec![On::Failure]);
    }

    #[test]
    fn a_fast_clock_runs_ahead() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T07:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Clock::new(t0, 3600.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.now() - t0 >= chrono::Duration::seconds(60));
        assert!(c.real_until(t0 + chrono::Duration::hours(1)) <= Duration::from_secs(1));
    }
}
