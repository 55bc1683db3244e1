//! Executors: in-process (a blocking thread) and local process (an external program in its own
//! process group, so that a timeout or a cancel kills it and every child it started).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::task::ProcessSpec;

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    Failed(String),
    /// Bad input: do not retry.
    BadInput(String),
    TimedOut(f64),
    Cancelled,
}

impl Outcome {
    /// The outcome in words, as recorded in a failed instance's `error`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok => "succeeded".into(),
            Outcome::Failed(e) => e.clone(),
            Outcome::BadInput(e) => format!("bad input: {e}"),
            Outcome::TimedOut(s) => format!("timed out after {s} s"),
            Outcome::Cancelled => "cancelled".into(),
        }
    }
}

/// Grace between SIGTERM and SIGKILL when a process group is stopped.
const KILL_GRACE: Duration = Duration::from_secs(2);

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: killpg only sends a signal; a stale pgid at worst returns ESRCH.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// Waits until `rx` says the run is cancelled.
pub async fn cancelled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: the run is over, never cancel.
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a program with stdout/stderr to `log` (or stdout to `spec.stdout`).
pub async fn run_process(
    spec: &ProcessSpec,
    log: &Path,
    timeout: Option<Duration>,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    };
    let (stderr, stdout) = match (open_log(), &spec.stdout) {
        (Ok(err), Some(path)) => match std::fs::File::create(path) {
            Ok(out) => (err, out),
            Err(e) => return Outcome::Failed(format!("cannot create {}: {e}", path.display())),
        },
        (Ok(err), None) => match err.try_clone() {
            Ok(out) => (err, out),
            Err(e) => return Outcome::Failed(format!("cannot open log {}: {e}", log.display())),
        },
        (Err(e), _) => return Outcome::Failed(format!("cannot open log {}: {e}", log.display())),
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return Outcome::Failed("argv is empty".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (not found on PATH)"
            } else {
                ""
            };
            return Outcome::Failed(format!("cannot start `{program}`{hint}: {e}"));
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let sleep = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        status = child.wait() => {
            return match status {
                Ok(s) if s.success() => Outcome::Ok,
                Ok(s) => Outcome::Failed(describe_status(program, s)),
                Err(e) => Outcome::Failed(format!("waiting for `{program}`: {e}")),
            };
        }
        _ = sleep => Outcome::TimedOut(timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)),
        _ = cancelled(&mut cancel) => Outcome::Cancelled,
    };
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        kill_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that ignored SIGTERM while the leader exited: make sure the group is gone.
    kill_group(pgid, libc::SIGKILL);
    stop
}

fn describe_status(program: &str, s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("`{program}` exited with status {c}"),
        (None, Some(sig)) => format!("`{program}` was killed by signal {sig}"),
        _ => format!("`{program}` failed"),
    }
}

/// Runs an in-process computation on the blocking pool; a timeout or cancel sets `flag` (the task
/// should poll it) and returns at once. The thread's late writes land in its own staging
/// directory, which is discarded.
pub async fn run_blocking<F>(
    f: F,
    flag: Arc<AtomicBool>,
    timeout: Option<Duration>,
    mut cancel: watch::Receiver<bool>,
) -> Outcome
where
    F: FnOnce() -> Outcome + Send + 'static,
{
    let handle = tokio::task::spawn_blocking(f);
    let sleep = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = handle => r.unwrap_or_else(|e| Outcome::Failed(format!("task panicked: {e}"))),
        _ = sleep => {
            flag.store(true, Ordering::Relaxed);
            Outcome::TimedOut(timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0))
        }
        _ = cancelled(&mut cancel) => {
            flag.store(true, Ordering::Relaxed);
            Outcome::Cancelled
        }
    }
}
