//! Level 3: the execution graph and the scheduler.
//!
//! The walker expands task templates into instances (night x field x CCD ..., one per fan-out
//! item) as soon as what they depend on is known: static fan-outs at the start, fan-outs over an
//! upstream task's output when that output exists. Ready instances are handed to executors,
//! bounded by `--jobs` CPU slots and a memory budget. A failed instance stops only its dependents
//! (or everything with fail-fast); retries back off exponentially; timeouts and Ctrl-C kill the
//! task's whole process group. Every state change is recorded in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as J};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::{self, CacheKey, SealedKey, CACHE_SCHEMA};
use crate::events::{Event, Sink};
use crate::exec::{self, Outcome};
use crate::plan::{Foreach, InputSource, Plan};
use crate::store::{
    fingerprint_bytes, CacheEntry, ContentHash, Durable, InstanceRecord, OutputRecord, Outputs,
    Pack, PackSource, RunRecord, State, Store, StoreError, TaskCache, Writer,
};
use crate::task::{Action, Invocation, TaskError};
use crate::template::{self, Ref, Scope};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// CPU slots (default: the number of cores).
    pub jobs: usize,
    /// Memory budget for `resources.memory_mb` (0: unlimited).
    pub memory_mb: u64,
    /// Stop everything at the first failure instead of only its dependents.
    pub fail_fast: bool,
    /// Task templates whose instances ignore the cache (rerun --from).
    pub force: BTreeSet<usize>,
    /// Walk the plan without running or recording anything (`nearby plan`).
    pub dry_run: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_mb: 0,
            fail_fast: false,
            force: BTreeSet::new(),
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub counts: BTreeMap<State, u64>,
    pub state: String,
    /// For a dry run: (instance id, what would happen, why), in walk order.
    pub dry_run: Vec<(String, String, String)>,
}

impl Summary {
    pub fn count(&self, s: State) -> u64 {
        self.counts.get(&s).copied().unwrap_or(0)
    }
}

pub fn now() -> String {
    timestamp(unix_us())
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

/// RFC 3339 (UTC, milliseconds) of a time in microseconds since the Unix epoch. A run stamps
/// every instance several times, so the text up to the seconds is kept for the current second.
fn timestamp(us: u64) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let (secs, ms) = (us / 1_000_000, (us / 1000) % 1000);
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            let text = chrono::DateTime::from_timestamp(secs as i64, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            *cell = (secs, text);
        }
        let mut out = String::with_capacity(cell.1.len() + 5);
        out.push_str(&cell.1);
        out.push('.');
        for d in [ms / 100, ms / 10 % 10, ms % 10] {
            out.push(char::from(b'0' + d as u8));
        }
        out.push('Z');
        out
    })
}

/// A sortable, unique run id: `YYYYMMDD-HHMMSS-mmm-xxxx` (UTC, milliseconds, 16 random bits).
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let noise = now.timestamp_subsec_nanos() ^ std::process::id().wrapping_mul(0x9e37_79b9);
    format!(
        "{}-{:04x}",
        now.format("%Y%m%d-%H%M%S-%3f"),
        (noise ^ (noise >> 16)) & 0xffff
    )
}

/// Paths under the working directory.
pub fn out_dir(workdir: &Path, task: &str, key: Option<&str>) -> PathBuf {
    match key {
        Some(k) => workdir.join("out").join(task).join(k),
        None => workdir.join("out").join(task),
    }
}

/// A private directory for one attempt. The process id keeps a task left running by a killed
/// `nearby` from writing into the directory of the attempt that replaces it.
fn staging_dir(workdir: &Path, run: &str, id: &str, attempt: u32) -> PathBuf {
    workdir.join("out").join(".staging").join(run).join(format!(
        "{}.{attempt}.{}",
        sanitize(id),
        std::process::id()
    ))
}

pub fn log_path(workdir: &Path, run: &str, id: &str) -> PathBuf {
    workdir
        .join("logs")
        .join(run)
        .join(format!("{}.log", sanitize(id)))
}

/// A file-name-safe version of a key or id.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '[' | ']') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    if out.is_empty() || out.starts_with('.') {
        format!("_{out}")
    } else {
        out
    }
}

/// The instance key of a fan-out item: a path's file name, else the item, made file-name safe.
fn key_of(item: &str) -> String {
    let base = if item.contains('/') {
        Path::new(item)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| item.to_owned())
    } else {
        item.to_owned()
    };
    let s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Finished records are written to the store in groups of at most this many.
const WRITE_BATCH: usize = 256;

/// Fan-out items: (instance key, item).
type Items = Vec<(Option<String>, Option<String>)>;

/// A task instance as the walker holds it: about 120 bytes, for each of a night's (or a
/// benchmark's 100,000) instances. Its id is not kept: it is the task's name and the key
/// ([`Scheduler::id`]).
struct Inst {
    template: u32,
    waiting: u32,
    attempts: u32,
    state: State,
    upstream_failed: bool,
    /// The fan-out item is the key itself (a range, a list of plain names): kept once.
    item_is_key: bool,
    key: Option<Box<str>>,
    /// The fan-out item, when it is not the key.
    item: Option<Box<str>>,
    deps: Box<[u32]>,
    dependents: Vec<u32>,
    outputs: Outputs,
    /// When the first attempt started (microseconds since the Unix epoch; 0 = not started).
    started_us: u64,
}

impl Inst {
    fn item(&self) -> Option<&str> {
        if self.item_is_key {
            self.key.as_deref()
        } else {
            self.item.as_deref()
        }
    }
}

/// The instances of one template, once it is expanded.
#[derive(Default)]
struct Tpl {
    expanded: bool,
    /// Its instances are `first..first + len` in `insts` (a template's are made together).
    first: u32,
    len: u32,
    /// Its keyed instances, sorted by key (to pair instances of one fan-out domain).
    by_key: Box<[u32]>,
}

impl Tpl {
    fn instances(&self) -> std::ops::Range<u32> {
        self.first..self.first + self.len
    }
}

/// Where an instance's cache entry is, for the pipeline's next pack.
#[derive(Debug, Clone, Copy)]
enum PackFrom {
    /// Made by this run (its outputs are the instance's).
    Made,
    /// Found in the pack the run started with.
    Pack,
    /// Found in the `cache` tree.
    Cache,
}

/// What a finished job reports back to the walker.
enum JobDone {
    Ran(Box<Ran>),
    Requeue(u32),
    /// A batch of finished instances whose outputs are now synced to disk.
    Synced(Vec<Durable>),
}

struct Ran {
    inst: u32,
    outcome: Outcome,
    outputs: Vec<OutputRecord>,
    /// Files and directories to sync before the outputs are recorded.
    sync: Vec<PathBuf>,
    key: SealedKey,
    cache: String,
    log: Option<String>,
}

/// What is known of an instance that just finished, besides its state.
#[derive(Default)]
struct Finished {
    error: Option<String>,
    /// The instance's cache key; its parts are kept in the record of work that ran.
    key: Option<SealedKey>,
    /// Only the fingerprint (a cache hit needs no more).
    fingerprint: Option<String>,
    /// Why the cache hit or missed.
    cache: Option<String>,
    log: Option<String>,
    /// The hit came from the pipeline's pack.
    from_pack: bool,
}

impl Finished {
    fn error(e: String) -> Finished {
        Finished {
            error: Some(e),
            ..Finished::default()
        }
    }
}

/// A fan-out at least this wide reads its task's cache entries in one scan.
const CACHE_SCAN_MIN: usize = 64;

pub struct Scheduler {
    plan: Arc<Plan>,
    store: Store,
    workdir: PathBuf,
    run: RunRecord,
    opts: RunOptions,
    sinks: Vec<Box<dyn Sink>>,
    cancel_rx: watch::Receiver<bool>,
    /// Tells running jobs to stop (Ctrl-C, SIGTERM or fail-fast).
    stop_tx: watch::Sender<bool>,
    /// Records of a run being resumed: instances that succeeded are not run again.
    previous: HashMap<String, InstanceRecord>,
    insts: Vec<Inst>,
    tpls: Vec<Tpl>,
    /// Set to stop a running task that is not run inline (timeout or cancel).
    flags: HashMap<u32, Arc<AtomicBool>>,
    ready: VecDeque<u32>,
    running: usize,
    cpus_used: usize,
    mem_used: u64,
    stopping: bool,
    cancelled: bool,
    dry_lines: Vec<(String, String, String)>,
    would_run: BTreeSet<u32>,
    /// Records waiting to be written (batched).
    unwritten: Vec<Durable>,
    /// Records waiting for their outputs to be synced, with the paths to sync.
    unsynced: Vec<(Durable, Vec<PathBuf>)>,
    /// Paths to sync per instance that just finished running.
    to_sync: HashMap<u32, Vec<PathBuf>>,
    syncing: bool,
    /// Templates not expanded yet.
    unexpanded: usize,
    /// Persists finished work beside the walker (not in dry runs).
    writer: Option<Writer>,
    /// Cache entries of wide fan-outs, per template, read in one scan each.
    task_caches: HashMap<usize, TaskCache>,
    /// The cache entries this pipeline's last run used, read in one go (looked up first).
    pack: Option<Pack>,
    /// Every instance that ended with a cache entry, its fingerprint and where its entry is
    /// (see [`Scheduler::write_pack`]), for the next pack.
    pack_keys: Vec<(u32, [u8; 32], PackFrom)>,
    /// Whether some instance's entry did not come from the pack (the pack is then rewritten).
    pack_stale: bool,
    /// The workdir's `out/`, open, to check recorded outputs under it quickly.
    out_dir: Option<cache::OutputDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
}

impl Scheduler {
    pub fn new(
        plan: Arc<Plan>,
        store: Store,
        workdir: PathBuf,
        run: RunRecord,
        opts: RunOptions,
        sinks: Vec<Box<dyn Sink>>,
        cancel_rx: watch::Receiver<bool>,
    ) -> Result<Scheduler, RunError> {
        let previous = if run.mode == "resume" {
            store
                .instances(&run.id)?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect()
        } else {
            HashMap::new()
        };
        let n = plan.tasks.len();
        let out_dir = cache::OutputDir::open(&workdir.join("out"));
        // A pack that cannot be read is only a slower rerun.
        let pack = store
            .pack(&run.pipeline_name)
            .unwrap_or(None)
            .filter(|p| !p.is_empty());
        Ok(Scheduler {
            plan,
            store,
            workdir,
            run,
            opts,
            sinks,
            cancel_rx,
            stop_tx: watch::channel(false).0,
            previous,
            insts: Vec::new(),
            tpls: (0..n).map(|_| Tpl::default()).collect(),
            flags: HashMap::new(),
            ready: VecDeque::new(),
            running: 0,
            cpus_used: 0,
            mem_used: 0,
            stopping: false,
            cancelled: false,
            dry_lines: Vec::new(),
            would_run: BTreeSet::new(),
            unwritten: Vec::new(),
            unsynced: Vec::new(),
            to_sync: HashMap::new(),
            syncing: false,
            unexpanded: n,
            writer: None,
            task_caches: HashMap::new(),
            pack_stale: pack.is_none(),
            pack,
            pack_keys: Vec::new(),
            out_dir,
        })
    }

    fn emit(&mut self, e: Event) {
        if self.sinks.is_empty() {
            return;
        }
        let at = now();
        for s in &mut self.sinks {
            s.event(&at, &e);
        }
    }

    /// Runs the plan to the end (or until cancelled). The run record is updated as it goes.
    pub async fn run(mut self) -> Result<Summary, RunError> {
        self.run.state = "running".into();
        let dry = self.opts.dry_run;
        if !dry {
            // Durable before anyone is told the run id, so that `resume RUN` always finds it.
            self.store.keep_text(&mut self.run)?;
            self.store.put_run(&self.run)?;
            self.store.flush()?;
            self.writer = Some(self.store.writer(&self.run.id));
        }
        self.emit(Event::RunStarted {
            run: self.run.id.clone(),
            pipeline: self.run.pipeline_name.clone(),
            mode: self.run.mode.clone(),
        });
        let mut jobs: JoinSet<JobDone> = JoinSet::new();
        self.expand_all();
        if !dry {
            // Exactly (fan-outs that expand later add to it): one key per instance.
            self.pack_keys.reserve_exact(self.insts.len());
        }
        let mut cancel_rx = self.cancel_rx.clone();
        loop {
            if !self.stopping {
                self.dispatch(&mut jobs);
            }
            self.write_records()?;
            self.start_sync(&mut jobs);
            if self.stopping && self.running == 0 && !self.syncing {
                // Only retry timers can be left: their instances end as cancelled.
                jobs.abort_all();
                break;
            }
            if jobs.is_empty() {
                if self.ready.is_empty() {
                    break;
                }
                continue;
            }
            tokio::select! {
                done = jobs.join_next() => {
                    match done {
                        Some(Ok(d)) => self.complete(d, &mut jobs)?,
                        Some(Err(e)) => return Err(RunError::Io(format!("a task job crashed: {e}"))),
                        None => {}
                    }
                }
                _ = exec::cancelled(&mut cancel_rx), if !self.cancelled => {
                    self.cancelled = true;
                    self.stop();
                }
            }
        }
        // Finished work not yet recorded: sync its outputs here, then record it.
        let unsynced = std::mem::take(&mut self.unsynced);
        sync_paths(unsynced.iter().flat_map(|(_, p)| p.iter()));
        self.unwritten.extend(unsynced.into_iter().map(|(d, _)| d));
        if !dry {
            self.write_records()?;
        }
        // Whatever never ran was cancelled (Ctrl-C or fail-fast).
        let mut leftover = Vec::new();
        for i in 0..self.insts.len() {
            if !self.insts[i].state.is_final() {
                self.insts[i].state = State::Cancelled;
                leftover.push(self.record(i as u32, None, None, None));
            }
        }
        for r in &leftover {
            self.emit(Event::Finished {
                id: r.id.clone(),
                state: State::Cancelled,
                attempts: r.attempts,
                duration_ms: 0,
                error: None,
                cache: None,
            });
        }
        if let Some(mut w) = self.writer.take() {
            w.send(
                leftover
                    .into_iter()
                    .map(|record| Durable {
                        record,
                        cache: None,
                    })
                    .collect(),
            )?;
            w.finish()?;
        }
        let mut summary = Summary {
            dry_run: std::mem::take(&mut self.dry_lines),
            ..Summary::default()
        };
        for i in &self.insts {
            *summary.counts.entry(i.state).or_default() += 1;
        }
        if self.pack_stale && !dry {
            self.write_pack();
            // A run that did work frees its instances here, not beside the caller: the CLI
            // reopens the store next (`Store::settle`), and sled's recovery then reuses this
            // memory instead of adding to the run's peak.
            self.insts = Vec::new();
            self.tpls = Vec::new();
        }
        summary.state = if self.cancelled {
            "cancelled"
        } else if summary.count(State::Failed)
            + summary.count(State::Skipped)
            + summary.count(State::Cancelled)
            > 0
        {
            "failed"
        } else {
            "succeeded"
        }
        .into();
        self.run.state = summary.state.clone();
        self.run.finished_at = Some(now());
        self.run.counts = summary
            .counts
            .iter()
            .map(|(k, v)| (k.name().to_owned(), *v))
            .collect();
        if !dry {
            self.store.put_run(&self.run)?;
            self.store.flush()?;
        }
        let c = |s| summary.count(s);
        self.emit(Event::RunFinished {
            run: self.run.id.clone(),
            state: summary.state.clone(),
            succeeded: c(State::Succeeded),
            cached: c(State::Cached),
            failed: c(State::Failed),
            skipped: c(State::Skipped),
            cancelled: c(State::Cancelled),
        });
        for s in &mut self.sinks {
            s.finish();
        }
        let _ =
            std::fs::remove_dir_all(self.workdir.join("out").join(".staging").join(&self.run.id));
        // Freeing a large night's instances takes a noticeable part of a "nothing to do" run: do
        // it beside the caller (a CLI that exits does not wait for it; a service frees it anyway).
        let insts = std::mem::take(&mut self.insts);
        let tpls = std::mem::take(&mut self.tpls);
        if insts.len() > 10_000 {
            std::thread::spawn(move || drop((insts, tpls)));
        }
        Ok(summary)
    }

    /// An instance's id: its task's name, and for a fan-out, the key in brackets.
    fn id(&self, i: u32) -> String {
        let inst = &self.insts[i as usize];
        let name = &self.plan.tasks[inst.template as usize].name;
        match &inst.key {
            Some(k) => format!("{name}[{k}]"),
            None => name.to_string(),
        }
    }

    /// The instance of template `t` with this key.
    fn by_key(&self, t: usize, key: &str) -> Option<u32> {
        let sorted = &self.tpls[t].by_key;
        let at = sorted
            .binary_search_by(|&i| self.insts[i as usize].key.as_deref().cmp(&Some(key)))
            .ok()?;
        Some(sorted[at])
    }

    /// An instance's recorded outputs.
    fn outputs(&self, i: u32) -> Result<Vec<OutputRecord>, String> {
        self.store
            .outputs(&self.insts[i as usize].outputs, self.pack.as_ref())
            .map_err(|e| format!("the outputs of `{}`: {e}", self.id(i)))
    }

    /// An instance's recorded output of this name.
    fn output(&self, i: u32, name: &str) -> Result<Option<OutputRecord>, String> {
        Ok(self.outputs(i)?.into_iter().find(|o| o.name == name))
    }

    // ---- expansion ----

    fn can_expand(&self, t: usize) -> bool {
        let tpl = &self.plan.tasks[t];
        if !tpl.upstream.iter().all(|&u| self.tpls[u as usize].expanded) {
            return false;
        }
        if let Some(Foreach::From { task, .. }) = tpl.foreach.as_deref() {
            if !self.plan.tasks[*task].fans_out() {
                return self.tpls[*task]
                    .instances()
                    .all(|i| self.insts[i as usize].state.is_final());
            }
        }
        true
    }

    /// Expands every template that can be expanded now (in plan order, repeatedly).
    fn expand_all(&mut self) {
        loop {
            let mut progressed = false;
            for oi in 0..self.plan.order.len() {
                let t = self.plan.order[oi];
                if !self.tpls[t].expanded && self.can_expand(t) {
                    self.expand(t);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// The fan-out items of a template: (key, item), or an error that fails the task.
    fn items(&self, t: usize) -> Result<Items, String> {
        let plan = &self.plan;
        Ok(match plan.tasks[t].foreach.as_deref() {
            None => vec![(None, None)],
            Some(Foreach::Items(items)) => items
                .iter()
                .map(|s| (Some(key_of(s)), Some(s.clone())))
                .collect(),
            Some(Foreach::Range(a, b)) => (*a..*b)
                .map(|n| (Some(n.to_string()), Some(n.to_string())))
                .collect(),
            Some(Foreach::Glob(pattern)) => {
                let paths =
                    glob::glob(pattern).map_err(|e| format!("bad glob `{pattern}`: {e}"))?;
                let mut files: Vec<String> = paths
                    .filter_map(Result::ok)
                    .map(|p| p.display().to_string())
                    .collect();
                files.sort();
                files
                    .into_iter()
                    .map(|p| (Some(key_of(&p)), Some(p)))
                    .collect()
            }
            Some(Foreach::From { task, output }) if plan.tasks[*task].fans_out() => self.tpls
                [*task]
                .instances()
                .map(|i| {
                    let inst = &self.insts[i as usize];
                    let path = self.expected_output(*task, inst, output);
                    (inst.key.as_deref().map(str::to_owned), path)
                })
                .collect(),
            Some(Foreach::From { task, output }) => {
                let Some(u) = self.tpls[*task].instances().next() else {
                    return Ok(vec![]);
                };
                let up = &self.insts[u as usize];
                if !up.state.is_done_ok() {
                    return Err(format!("upstream `{}` did not succeed", self.id(u)));
                }
                let Some(o) = self.output(u, output)? else {
                    return Err(format!(
                        "upstream `{}` recorded no output `{output}`",
                        self.id(u)
                    ));
                };
                let text = std::fs::read_to_string(&o.path)
                    .map_err(|e| format!("cannot read {}: {e}", o.path))?;
                // A line naming a file beside the list (a relative path) becomes that file's
                // absolute path: outputs move when they are committed, so tasks write their lists
                // relative to themselves.
                let dir = Path::new(&o.path).parent().unwrap_or(Path::new("/"));
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| {
                        let beside = dir.join(l);
                        let item = if Path::new(l).is_relative() && beside.exists() {
                            beside.display().to_string()
                        } else {
                            l.to_owned()
                        };
                        (Some(key_of(&item)), Some(item))
                    })
                    .collect()
            }
        })
    }

    /// Where an instance's output will be (known before it runs).
    fn expected_output(&self, t: usize, inst: &Inst, output: &str) -> Option<String> {
        let tpl = &self.plan.tasks[t];
        let rel = tpl.output_path(output)?;
        let rel = template::render(rel, &ItemScope(inst.item()));
        Some(
            out_dir(&self.workdir, &tpl.name, inst.key.as_deref())
                .join(rel)
                .display()
                .to_string(),
        )
    }

    fn expand(&mut self, t: usize) {
        self.tpls[t].expanded = true;
        self.unexpanded -= 1;
        let plan = self.plan.clone();
        let tpl = &plan.tasks[t];
        let (items, error) = match self.items(t) {
            Ok(items) => (items, None),
            Err(e) => (vec![(None, None)], Some(e)),
        };
        let domain = plan.domain(t);
        let mut seen: HashMap<String, u32> = HashMap::new();
        let first = self.insts.len();
        // Exactly: a doubling Vec of a 100k-instance fan-out wastes a third of the engine's memory.
        self.insts.reserve_exact(items.len());
        for (key, item) in items {
            let key = key.map(|k| {
                let n = seen.entry(k.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    k
                } else {
                    format!("{k}~{n}")
                }
            });
            let item_is_key = item.is_some() && item == key;
            let mut deps: Vec<u32> = Vec::new();
            let push_dep = |deps: &mut Vec<u32>, u: usize| {
                let keyed = domain.is_some() && plan.domain(u) == domain;
                match key.as_deref().and_then(|k| self.by_key(u, k)) {
                    Some(d) if keyed => deps.push(d),
                    // No instance to pair with (an upstream fan-out that could not expand left a
                    // single placeholder): depend on all of them, so a failure propagates.
                    _ => deps.extend(self.tpls[u].instances()),
                }
            };
            for (_, src) in &tpl.inputs {
                if let InputSource::Task { task, .. } = src {
                    push_dep(&mut deps, *task);
                }
            }
            if let Some(Foreach::From { task, .. }) = tpl.foreach.as_deref() {
                push_dep(&mut deps, *task);
            }
            deps.sort_unstable();
            deps.dedup();
            let idx = self.insts.len() as u32;
            let mut waiting = 0;
            let mut upstream_failed = false;
            for &d in &deps {
                let dep = &mut self.insts[d as usize];
                if dep.state.is_final() {
                    upstream_failed |= !dep.state.is_done_ok();
                } else {
                    waiting += 1;
                    if dep.dependents.is_empty() {
                        // Most instances have one dependent: room for one, not a push's four.
                        dep.dependents.reserve_exact(1);
                    }
                    dep.dependents.push(idx);
                }
            }
            self.insts.push(Inst {
                template: t as u32,
                waiting,
                attempts: 0,
                state: State::Pending,
                upstream_failed: upstream_failed || error.is_some(),
                item_is_key,
                key: key.map(Into::into),
                item: if item_is_key {
                    None
                } else {
                    item.map(Into::into)
                },
                deps: deps.into_boxed_slice(),
                dependents: Vec::new(),
                outputs: Outputs::None,
                started_us: 0,
            });
        }
        let n = self.insts.len() - first;
        let mut by_key: Vec<u32> = (first as u32..self.insts.len() as u32)
            .filter(|&i| self.insts[i as usize].key.is_some())
            .collect();
        by_key
            .sort_unstable_by(|&a, &b| self.insts[a as usize].key.cmp(&self.insts[b as usize].key));
        self.tpls[t] = Tpl {
            expanded: true,
            first: first as u32,
            len: n as u32,
            by_key: by_key.into_boxed_slice(),
        };
        if n >= CACHE_SCAN_MIN && !self.opts.force.contains(&t) && self.pack.is_none() {
            // A failed scan only means looking each key up alone.
            if let Ok(c) = self.store.task_cache(&tpl.name, n) {
                self.task_caches.insert(t, c);
            }
        }
        self.emit(Event::Expanded {
            task: tpl.name.to_string(),
            instances: n,
        });
        for i in first..self.insts.len() {
            if self.insts[i].waiting == 0 {
                self.ready.push_back(i as u32);
            }
        }
    }

    // ---- dispatch ----

    fn fits(&self, i: u32) -> bool {
        let r = &self.plan.tasks[self.insts[i as usize].template as usize]
            .settings
            .resources;
        let cpus = (r.cpus as usize).clamp(1, self.opts.jobs.max(1));
        if self.running > 0 && self.cpus_used + cpus > self.opts.jobs {
            return false;
        }
        self.opts.memory_mb == 0
            || self.running == 0
            || self.mem_used + r.memory_mb <= self.opts.memory_mb
    }

    fn dispatch(&mut self, jobs: &mut JoinSet<JobDone>) {
        while let Some(&i) = self.ready.front() {
            if self.stopping {
                return;
            }
            if !self.fits(i) {
                return;
            }
            self.ready.pop_front();
            let inst = &self.insts[i as usize];
            let partial = self.plan.tasks[inst.template as usize]
                .settings
                .partial_inputs;
            if self.opts.dry_run && inst.upstream_failed {
                let why = if self.plan.tasks[inst.template as usize].fans_out() {
                    "fan-out expands at run time, after its upstream runs"
                } else {
                    "after an upstream fan-out that expands at run time"
                };
                let line = (self.id(i), "run".to_owned(), why.to_owned());
                self.dry_lines.push(line);
                self.insts[i as usize].state = State::Skipped;
                self.finish(i, State::Skipped, Finished::default());
                continue;
            }
            if inst.upstream_failed && !(partial && self.keyed_deps_ok(i)) {
                let err = self.upstream_error(i);
                self.finish(i, State::Skipped, Finished::error(err));
                continue;
            }
            // Started = when the walker took it up, also for instances the cache answers.
            let inst = &mut self.insts[i as usize];
            if inst.started_us == 0 {
                inst.started_us = unix_us();
            }
            match self.prepare(i) {
                Ok(Prepared::Reuse {
                    state,
                    outputs,
                    fingerprint,
                    cache,
                    from_pack,
                }) => {
                    self.insts[i as usize].outputs = outputs;
                    if self.opts.dry_run {
                        self.dry_lines
                            .push((self.id(i), "cached".into(), cache.clone()));
                    }
                    let done = Finished {
                        fingerprint: Some(fingerprint),
                        cache: Some(cache),
                        from_pack,
                        ..Finished::default()
                    };
                    self.finish(i, state, done);
                }
                Ok(Prepared::Kept(prev)) => {
                    let prev = *prev;
                    self.pack_stale = true;
                    self.keep_for_pack(i, prev.fingerprint.as_deref(), PackFrom::Cache);
                    if self.opts.dry_run {
                        let line = (
                            prev.id.clone(),
                            "cached".into(),
                            "finished earlier in this run".into(),
                        );
                        self.dry_lines.push(line);
                    }
                    let outputs = self.store.keep_outputs(&prev.outputs);
                    let inst = &mut self.insts[i as usize];
                    inst.outputs = outputs;
                    inst.attempts = prev.attempts;
                    inst.state = prev.state;
                    self.emit(Event::Finished {
                        id: prev.id,
                        state: prev.state,
                        attempts: prev.attempts,
                        duration_ms: prev.duration_ms.unwrap_or(0),
                        error: None,
                        cache: Some("resumed: finished earlier in this run".into()),
                    });
                    self.wake_dependents(i, prev.state);
                }
                Ok(Prepared::Run(job)) if self.opts.dry_run => {
                    let inst = &self.insts[i as usize];
                    let upstream = inst
                        .deps
                        .iter()
                        .find(|d| self.would_run.contains(d))
                        .map(|&d| self.id(d));
                    let why = match upstream {
                        Some(u) => format!("upstream `{u}` will run"),
                        None => job.cache.clone(),
                    };
                    self.dry_lines.push((self.id(i), "run".into(), why));
                    self.would_run.insert(i);
                    let t = inst.template as usize;
                    let fake: Vec<OutputRecord> = self.plan.tasks[t]
                        .outputs
                        .iter()
                        .filter_map(|(n, _)| {
                            let path = self.expected_output(t, &self.insts[i as usize], n)?;
                            Some(OutputRecord {
                                name: n.to_string(),
                                path,
                                size: 0,
                                mtime_ns: 0,
                                hash: ContentHash::Text(
                                    format!("will be produced by {}", self.id(i)).into(),
                                ),
                            })
                        })
                        .collect();
                    self.insts[i as usize].outputs = self.store.keep_outputs(&fake);
                    self.finish(i, State::Succeeded, Finished::default());
                }
                Ok(Prepared::Run(job)) => self.start(i, *job, jobs),
                Err(e) if self.opts.dry_run => {
                    self.dry_lines.push((self.id(i), "fail".into(), e));
                    self.finish(i, State::Failed, Finished::default());
                }
                Err(e) => {
                    self.insts[i as usize].attempts += 1;
                    self.finish(i, State::Failed, Finished::error(e));
                }
            }
        }
    }

    /// With `partial_inputs`, a gather may run on the instances that succeeded, but an instance
    /// paired by key with a failed one may not.
    fn keyed_deps_ok(&self, i: u32) -> bool {
        let inst = &self.insts[i as usize];
        let domain = self.plan.domain(inst.template as usize);
        inst.deps.iter().all(|&d| {
            let dep = &self.insts[d as usize];
            dep.state.is_done_ok()
                || domain.is_none()
                || self.plan.domain(dep.template as usize) != domain
        })
    }

    fn upstream_error(&self, i: u32) -> String {
        let inst = &self.insts[i as usize];
        let failed: Vec<String> = inst
            .deps
            .iter()
            .filter(|&&d| {
                let dep = &self.insts[d as usize];
                dep.state.is_final() && !dep.state.is_done_ok()
            })
            .map(|&d| self.id(d))
            .take(5)
            .collect();
        if failed.is_empty() {
            "its fan-out could not be expanded because an upstream task failed".into()
        } else {
            format!("upstream failed: {}", failed.join(", "))
        }
    }

    /// The records of output `output` of the instances of `task` that instance `i` reads, in
    /// order: all of them, or (in one fan-out domain) the one with its key.
    fn dep_outputs<'s>(
        &'s self,
        i: u32,
        task: usize,
        output: &'s str,
        domain: Option<usize>,
    ) -> impl Iterator<Item = Result<OutputRecord, String>> + 's {
        let inst = &self.insts[i as usize];
        let keyed = domain.is_some() && self.plan.domain(task) == domain;
        inst.deps.iter().filter_map(move |&d| {
            let dep = &self.insts[d as usize];
            if dep.template as usize != task || !dep.state.is_done_ok() {
                return None;
            }
            if keyed && dep.key != inst.key {
                return None;
            }
            Some(self.output(d, output).and_then(|o| {
                o.ok_or_else(|| format!("`{}` recorded no output `{output}`", self.id(d)))
            }))
        })
    }

    /// Resolves inputs and params, computes the cache key, and checks the cache.
    fn prepare(&mut self, i: u32) -> Result<Prepared, String> {
        let inst = &self.insts[i as usize];
        let t = inst.template as usize;
        let tpl = &self.plan.tasks[t];
        let item = inst.item();
        let domain = self.plan.domain(t);
        // Inputs: paths and content hashes.
        let mut inputs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut hashes: BTreeMap<String, Vec<ContentHash>> = BTreeMap::new();
        for (name, src) in &tpl.inputs {
            let mut paths: Vec<PathBuf> = Vec::new();
            let mut hs: Vec<ContentHash> = Vec::new();
            match src {
                InputSource::Task { task, output } => {
                    hs.reserve_exact(inst.deps.len());
                    // Only the hashes: the paths are wanted only if the task runs (a gather's
                    // 100,000 paths were built for every rerun that found it cached).
                    for o in self.dep_outputs(i, *task, output, domain) {
                        hs.push(o.map_err(|e| format!("input `{name}`: {e}"))?.hash);
                    }
                }
                InputSource::File(p) => {
                    let p = self
                        .plan
                        .base_dir
                        .join(template::render(&p.display().to_string(), &ItemScope(item)));
                    let h = cache::source_hash(Some(&self.store), &p)
                        .map_err(|e| format!("input `{name}`: cannot read {}: {e}", p.display()))?;
                    paths.push(p);
                    hs.push(ContentHash::parse(&h));
                }
                InputSource::Glob(g) => {
                    let g = self
                        .plan
                        .base_dir
                        .join(template::render(g, &ItemScope(item)))
                        .display()
                        .to_string();
                    let mut found: Vec<PathBuf> = glob::glob(&g)
                        .map_err(|e| format!("input `{name}`: bad glob `{g}`: {e}"))?
                        .filter_map(Result::ok)
                        .collect();
                    found.sort();
                    for p in found {
                        let h = cache::source_hash(Some(&self.store), &p).map_err(|e| {
                            format!("input `{name}`: cannot read {}: {e}", p.display())
                        })?;
                        paths.push(p);
                        hs.push(ContentHash::parse(&h));
                    }
                }
            }
            inputs.entry(name.to_string()).or_default().extend(paths);
            hashes.entry(name.to_string()).or_default().extend(hs);
        }
        // Params with the item resolved (the cache key's params).
        let params = template::render_map(&tpl.with, &ItemScope(item));
        let outputs_rel: BTreeMap<String, String> = tpl
            .outputs
            .iter()
            .map(|(n, p)| (n.to_string(), template::render(p, &ItemScope(item))))
            .collect();
        let key = CacheKey {
            schema: CACHE_SCHEMA,
            task: tpl.name.to_string(),
            kind: tpl.kind.name().to_owned(),
            version: tpl.kind.version(),
            params: J::Object(params),
            item: item.map(str::to_owned),
            inputs: hashes,
            outputs: outputs_rel,
        };
        // A hit needs only the fingerprint; the key's JSON is for the records of what runs.
        let fp = key.fingerprint();
        let forced = self.opts.force.contains(&t);
        // A resumed run keeps what it already finished.
        // Only a resumed run has earlier records (and only it pays for the instance's id).
        let prev = match self.previous.is_empty() {
            true => None,
            false => self.previous.get(&self.id(i)),
        };
        if let Some(prev) = prev {
            if prev.state.is_done_ok()
                && prev.fingerprint.as_deref() == Some(fp.as_str())
                && !forced
                && cache::check_outputs_in(&prev.outputs, self.out_dir.as_ref()).is_ok()
            {
                return Ok(Prepared::Kept(Box::new(prev.clone())));
            }
        }
        if !forced {
            if let Some((run, outputs, kept)) =
                self.pack.as_ref().and_then(|p| p.hit(&tpl.name, &fp))
            {
                if cache::check_outputs_in(&outputs, self.out_dir.as_ref()).is_ok() {
                    return Ok(Prepared::hit(kept, &run, fp, true));
                }
            }
        }
        let miss = if forced {
            "forced (rerun --from)".to_owned()
        } else {
            let entry = match self.task_caches.get_mut(&t) {
                Some(c) => c.take(&self.store, &fp),
                None => self.store.cache_get(&tpl.name, &fp),
            };
            match entry {
                Ok(Some(entry)) => {
                    match cache::check_outputs_in(&entry.outputs, self.out_dir.as_ref()) {
                        Ok(()) => {
                            let kept = self.store.keep_outputs(&entry.outputs);
                            return Ok(Prepared::hit(kept, &entry.run, fp, false));
                        }
                        Err(why) => format!("miss: {why}"),
                    }
                }
                Ok(None) => "miss: no cache entry for this key".to_owned(),
                Err(e) => format!("miss: cache unreadable ({e})"),
            }
        };
        let final_dir = out_dir(&self.workdir, &tpl.name, inst.key.as_deref());
        let sealed = key.seal();
        let CacheKey {
            params,
            outputs: outputs_rel,
            inputs: hashes,
            ..
        } = key;
        drop(hashes);
        // The paths of upstream outputs after the key is sealed and its hashes dropped: a
        // gather's 100,000 hashes, its key's JSON and its input paths were held at once.
        for (name, src) in &tpl.inputs {
            if let InputSource::Task { task, output } = src {
                let paths = inputs.entry(name.to_string()).or_default();
                for o in self.dep_outputs(i, *task, output, domain) {
                    let o = o.map_err(|e| format!("input `{name}`: {e}"))?;
                    paths.push(PathBuf::from(o.path));
                }
            }
        }
        let params = match params {
            J::Object(m) => m,
            _ => Map::new(),
        };
        Ok(Prepared::Run(Box::new(Job {
            kind: tpl.kind.clone(),
            id: self.id(i),
            run: self.run.id.clone(),
            workdir: self.workdir.clone(),
            params,
            inputs,
            outputs_rel,
            final_dir,
            item: item.map(str::to_owned),
            key: sealed,
            cache: miss,
            timeout: tpl.settings.timeout_secs.map(Duration::from_secs_f64),
            attempt: 0,
        })))
    }

    fn start(&mut self, i: u32, mut job: Job, jobs: &mut JoinSet<JobDone>) {
        let t = self.insts[i as usize].template as usize;
        let r = self.plan.tasks[t].settings.resources;
        let cpus = (r.cpus as usize).clamp(1, self.opts.jobs.max(1));
        self.running += 1;
        self.cpus_used += cpus;
        self.mem_used += r.memory_mb;
        let inst = &mut self.insts[i as usize];
        inst.attempts += 1;
        inst.state = State::Running;
        if inst.started_us == 0 {
            inst.started_us = unix_us();
        }
        job.attempt = inst.attempts;
        let attempt = inst.attempts;
        let cheap = job.is_cheap();
        if !cheap {
            let record = self.record(
                i,
                Some(job.key.fingerprint.clone()),
                Some(job.cache.clone()),
                None,
            );
            self.unwritten.push(Durable {
                record,
                cache: None,
            });
            // A failed state write is not fatal here: the final record is written on completion.
            if let Err(e) = self.write_records() {
                tracing::error!("cannot record the start of {}: {e}", self.id(i));
            }
            self.emit(Event::Started {
                id: self.id(i),
                attempt,
            });
        }
        let flag = Arc::new(AtomicBool::new(false));
        if cheap {
            // Microseconds of work: run it here rather than pay for a task and a thread hop.
            let done = job.run_inline(i, &flag);
            if let Err(e) = self.complete(done, jobs) {
                tracing::error!("cannot record {}: {e}", self.id(i));
            }
            return;
        }
        self.flags.insert(i, flag.clone());
        let stop = self.stop_tx.subscribe();
        jobs.spawn(job.execute(i, flag, stop));
    }

    // ---- completion ----

    fn complete(&mut self, d: JobDone, jobs: &mut JoinSet<JobDone>) -> Result<(), RunError> {
        let (i, outcome, outputs, key, cache, log) = match d {
            JobDone::Requeue(i) => {
                if self.stopping {
                    self.insts[i as usize].state = State::Cancelled;
                    let record = self.record(i, None, None, None);
                    self.unwritten.push(Durable {
                        record,
                        cache: None,
                    });
                    self.write_records()?;
                } else {
                    self.ready.push_front(i);
                }
                return Ok(());
            }
            JobDone::Synced(batch) => {
                self.syncing = false;
                self.unwritten.extend(batch);
                return Ok(());
            }
            JobDone::Ran(r) => {
                let r = *r;
                if !r.sync.is_empty() {
                    self.to_sync.insert(r.inst, r.sync);
                }
                (
                    r.inst,
                    r.outcome,
                    r.outputs,
                    Some(r.key),
                    Some(r.cache),
                    r.log,
                )
            }
        };
        let t = self.insts[i as usize].template as usize;
        let r = self.plan.tasks[t].settings.resources;
        self.running -= 1;
        self.cpus_used -= (r.cpus as usize).clamp(1, self.opts.jobs.max(1));
        self.mem_used -= r.memory_mb;
        self.flags.remove(&i);
        let done = |error: Option<String>| Finished {
            error,
            key,
            fingerprint: None,
            cache,
            log,
            from_pack: false,
        };
        match outcome {
            Outcome::Ok => {
                self.insts[i as usize].outputs = self.store.keep_outputs(&outputs);
                self.finish(i, State::Succeeded, done(None));
            }
            Outcome::Cancelled => {
                self.finish(i, State::Cancelled, done(Some("cancelled".into())));
            }
            Outcome::BadInput(e) => {
                self.quarantine(i);
                let e = format!("bad input (quarantined): {e}");
                self.finish(i, State::Failed, done(Some(e)));
            }
            Outcome::Failed(_) | Outcome::TimedOut(_) => {
                let e = outcome.describe();
                let retries = self.plan.tasks[t].settings.retries;
                let attempts = self.insts[i as usize].attempts;
                if attempts <= retries.count && !self.stopping {
                    let delay = retries.backoff_secs * retries.factor.powi(attempts as i32 - 1);
                    let delay = Duration::from_secs_f64(delay.min(3600.0));
                    let id = self.id(i);
                    self.emit(Event::Retrying {
                        id,
                        attempt: attempts,
                        delay_ms: delay.as_millis() as u64,
                        error: e,
                    });
                    jobs.spawn(async move {
                        tokio::time::sleep(delay).await;
                        JobDone::Requeue(i)
                    });
                    return Ok(());
                }
                self.finish(i, State::Failed, done(Some(e)));
            }
        }
        Ok(())
    }

    /// Writes a `.quarantine` note for a bad input so that astronomers can find it.
    fn quarantine(&self, i: u32) {
        let inst = &self.insts[i as usize];
        let dir = self.workdir.join("quarantine").join(&self.run.id);
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(
                dir.join(format!("{}.txt", sanitize(&self.id(i)))),
                format!("{}\n", inst.item().unwrap_or("")),
            );
        }
    }

    fn finish(&mut self, i: u32, state: State, done: Finished) {
        self.insts[i as usize].state = state;
        if self.opts.dry_run {
            self.wake_dependents(i, state);
            return;
        }
        let Finished {
            error,
            key,
            fingerprint,
            cache,
            log,
            from_pack,
        } = done;
        let fingerprint = fingerprint.or_else(|| key.as_ref().map(|k| k.fingerprint.clone()));
        let mut rec = self.record(i, fingerprint.clone(), cache.clone(), log);
        rec.error = error.clone();
        rec.quarantined = error.as_deref().is_some_and(|e| e.starts_with("bad input"));
        if matches!(state, State::Succeeded | State::Failed) {
            rec.key = key.and_then(|k| serde_json::value::RawValue::from_string(k.json).ok());
        }
        let cache_entry = match (state, fingerprint) {
            (State::Succeeded, Some(fp)) if rec.key.is_some() => Some(CacheEntry {
                fingerprint: fp,
                task: rec.task.clone(),
                kind: rec.kind.clone(),
                created_at: now(),
                run: self.run.id.clone(),
                instance: rec.id.clone(),
                outputs: rec.outputs.clone(),
                key: J::Null,
            }),
            _ => None,
        };
        if state.is_done_ok() {
            self.pack_stale |= !from_pack;
            let from = match (&cache_entry, from_pack) {
                (Some(_), _) => Some(PackFrom::Made),
                (None, true) => Some(PackFrom::Pack),
                (None, false) if state == State::Cached => Some(PackFrom::Cache),
                // Ran without a cache entry: nothing to pack.
                (None, false) => None,
            };
            if let Some(from) = from {
                self.keep_for_pack(i, rec.fingerprint.as_deref(), from);
            }
        }
        let duration_ms = rec.duration_ms.unwrap_or(0);
        let event = Event::Finished {
            id: rec.id.clone(),
            state,
            attempts: rec.attempts,
            duration_ms,
            error,
            cache,
        };
        let durable = Durable {
            record: rec,
            cache: cache_entry,
        };
        // Outputs must be on disk before any record claims them: those wait for a sync.
        match self.to_sync.remove(&i) {
            Some(paths) if state == State::Succeeded => self.unsynced.push((durable, paths)),
            _ => self.unwritten.push(durable),
        }
        if self.unwritten.len() >= WRITE_BATCH {
            // Bounded memory: a wide fan-out of inline tasks finishes thousands per pass.
            if let Err(e) = self.write_records() {
                tracing::error!("cannot write task records: {e}");
            }
        }
        self.emit(event);
        if state == State::Failed && self.opts.fail_fast {
            self.stop();
        }
        self.wake_dependents(i, state);
    }

    /// Notes an instance that ended well for the pipeline's next pack.
    fn keep_for_pack(&mut self, i: u32, fingerprint: Option<&str>, from: PackFrom) {
        if self.opts.dry_run {
            return;
        }
        if let Some(fp) = fingerprint.and_then(fingerprint_bytes) {
            self.pack_keys.push((i, fp, from));
        }
    }

    /// Keeps the entries this run used as the pipeline's pack, when they differ from the pack
    /// it started with (after the writer is done, so that new entries are in the store).
    fn write_pack(&mut self) {
        let mut keys = std::mem::take(&mut self.pack_keys);
        keys.sort_unstable_by_key(|k| k.1);
        let (plan, insts, run) = (&self.plan, &self.insts, self.run.id.as_str());
        let named = keys.iter().map(|&(i, fp, from)| {
            let inst = &insts[i as usize];
            let source = match from {
                PackFrom::Pack => PackSource::Old,
                PackFrom::Cache => PackSource::Cache,
                PackFrom::Made => PackSource::Made {
                    run,
                    outputs: &inst.outputs,
                },
            };
            (&*plan.tasks[inst.template as usize].name, fp, source)
        });
        match self
            .store
            .put_pack(&self.run.pipeline_name, self.pack.as_ref(), named)
        {
            Ok(n) => tracing::debug!("cache pack of `{}`: {n} entries", self.run.pipeline_name),
            Err(e) => tracing::warn!(
                "cannot keep the cache pack (reruns look entries up one by one): {e}"
            ),
        }
    }

    /// Hands buffered records to the writer.
    fn write_records(&mut self) -> Result<(), RunError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.unwritten);
        match &mut self.writer {
            Some(w) => w.send(batch)?,
            None => self.store.persist(&self.run.id, batch)?,
        }
        Ok(())
    }

    /// Starts syncing the outputs of finished instances, off the walker: dependents go on at once,
    /// their records are written when the sync is done.
    fn start_sync(&mut self, jobs: &mut JoinSet<JobDone>) {
        if self.syncing || self.unsynced.is_empty() {
            return;
        }
        self.syncing = true;
        let batch = std::mem::take(&mut self.unsynced);
        jobs.spawn(async move {
            let batch = tokio::task::spawn_blocking(move || {
                sync_paths(batch.iter().flat_map(|(_, p)| p.iter()));
                batch.into_iter().map(|(d, _)| d).collect()
            })
            .await
            .unwrap_or_default();
            JobDone::Synced(batch)
        });
    }

    fn wake_dependents(&mut self, i: u32, state: State) {
        let ok = state.is_done_ok();
        // An instance finishes once: its list of dependents is done with (and its memory goes).
        let dependents = std::mem::take(&mut self.insts[i as usize].dependents);
        for &d in &dependents {
            let dep = &mut self.insts[d as usize];
            dep.waiting -= 1;
            dep.upstream_failed |= !ok;
            if dep.waiting == 0 {
                self.ready.push_back(d);
            }
        }
        // Dynamic fan-outs may now be expandable.
        let t = self.insts[i as usize].template as usize;
        if self.plan.is_read(t) && self.unexpanded > 0 {
            self.expand_all();
        }
    }

    /// Stops dispatching and tells every running job to stop.
    fn stop(&mut self) {
        self.stopping = true;
        let _ = self.stop_tx.send(true);
        for f in self.flags.values() {
            f.store(true, Ordering::Relaxed);
        }
    }

    fn record(
        &self,
        i: u32,
        fingerprint: Option<String>,
        cache: Option<String>,
        log: Option<String>,
    ) -> InstanceRecord {
        let inst = &self.insts[i as usize];
        let tpl = &self.plan.tasks[inst.template as usize];
        let final_state = inst.state.is_final();
        let outputs = self.outputs(i).unwrap_or_else(|e| {
            tracing::error!("{e}");
            Vec::new()
        });
        InstanceRecord {
            id: self.id(i),
            task: tpl.name.to_string(),
            kind: tpl.kind.name().to_owned(),
            state: inst.state,
            attempts: inst.attempts,
            item: inst.item().map(str::to_owned),
            started_at: (inst.started_us > 0).then(|| timestamp(inst.started_us)),
            finished_at: final_state.then(now),
            duration_ms: if final_state {
                (inst.started_us > 0).then(|| unix_us().saturating_sub(inst.started_us) / 1000)
            } else {
                None
            },
            outputs,
            fingerprint,
            key: None,
            cache,
            log,
            error: None,
            quarantined: false,
        }
    }
}

enum Prepared {
    Reuse {
        state: State,
        outputs: Outputs,
        fingerprint: String,
        cache: String,
        /// Found in the pipeline's pack (else in the `cache` tree).
        from_pack: bool,
    },
    Run(Box<Job>),
    /// Resume: finished earlier in this run; its record stays as it was.
    Kept(Box<InstanceRecord>),
}

impl Prepared {
    /// A cache hit whose outputs checked: an entry recorded by `run`.
    fn hit(outputs: Outputs, run: &str, fingerprint: String, from_pack: bool) -> Self {
        Prepared::Reuse {
            state: State::Cached,
            outputs,
            fingerprint,
            cache: format!("hit: recorded by run {run}"),
            from_pack,
        }
    }
}

/// Resolves `${item}` only.
struct ItemScope<'a>(Option<&'a str>);

impl Scope for ItemScope<'_> {
    fn lookup(&self, r: &Ref) -> Option<Vec<String>> {
        match r {
            Ref::Item => self.0.map(|s| vec![s.to_owned()]),
            _ => None,
        }
    }
}

/// Resolves input and output paths and the output directory at run time.
pub struct PathScope<'a> {
    pub inputs: &'a BTreeMap<String, Vec<PathBuf>>,
    pub outputs: &'a BTreeMap<String, PathBuf>,
    pub out_dir: &'a Path,
}

impl Scope for PathScope<'_> {
    fn lookup(&self, r: &Ref) -> Option<Vec<String>> {
        match r {
            Ref::Input(n) => self
                .inputs
                .get(n)
                .map(|v| v.iter().map(|p| p.display().to_string()).collect()),
            Ref::Output(n) => self.outputs.get(n).map(|p| vec![p.display().to_string()]),
            Ref::OutDir => Some(vec![self.out_dir.display().to_string()]),
            _ => None,
        }
    }
}

/// Everything needed to execute one attempt of an instance, off the walker.
struct Job {
    kind: Arc<dyn crate::task::TaskKind>,
    id: String,
    run: String,
    workdir: PathBuf,
    params: Map<String, J>,
    inputs: BTreeMap<String, Vec<PathBuf>>,
    outputs_rel: BTreeMap<String, String>,
    final_dir: PathBuf,
    item: Option<String>,
    key: SealedKey,
    cache: String,
    timeout: Option<Duration>,
    attempt: u32,
}

impl Job {
    /// A trivial in-process job (noop without sleep or outputs) runs inline on the walker's
    /// thread: spawning a blocking thread would cost more than the task.
    fn is_cheap(&self) -> bool {
        self.outputs_rel.is_empty() && self.kind.inline(&self.params)
    }

    async fn execute(
        mut self,
        inst: u32,
        flag: Arc<AtomicBool>,
        cancel: watch::Receiver<bool>,
    ) -> JobDone {
        // Taken, not cloned: a gather's key holds every input's hash (megabytes at 100k inputs).
        let store_key = std::mem::take(&mut self.key);
        let cache = std::mem::take(&mut self.cache);
        let log = log_path(&self.workdir, &self.run, &self.id);
        let (outcome, outputs, sync) = self.attempt(&flag, cancel).await;
        let log = log.exists().then(|| log.display().to_string());
        JobDone::Ran(Box::new(Ran {
            inst,
            outcome,
            outputs,
            sync,
            key: store_key,
            cache,
            log,
        }))
    }

    /// Runs a cheap in-process job (no outputs) on the caller's thread.
    fn run_inline(self, inst: u32, flag: &AtomicBool) -> JobDone {
        let outputs = BTreeMap::new();
        let inv = Invocation {
            id: &self.id,
            params: &self.params,
            inputs: &self.inputs,
            outputs: &outputs,
            out_dir: &self.final_dir,
            item: self.item.as_deref(),
            cancel: flag,
        };
        let outcome = match self.kind.run(&inv, &mut std::io::sink()) {
            Ok(()) => Outcome::Ok,
            Err(e) => task_error(e),
        };
        JobDone::Ran(Box::new(Ran {
            inst,
            outcome,
            outputs: Vec::new(),
            sync: Vec::new(),
            key: self.key,
            cache: self.cache,
            log: None,
        }))
    }

    async fn attempt(
        mut self,
        flag: &Arc<AtomicBool>,
        cancel: watch::Receiver<bool>,
    ) -> (Outcome, Vec<OutputRecord>, Vec<PathBuf>) {
        let has_outputs = !self.outputs_rel.is_empty();
        let staging = staging_dir(&self.workdir, &self.run, &self.id, self.attempt);
        let log = log_path(&self.workdir, &self.run, &self.id);
        // Cheap jobs never get here (they run in `run_inline`): every job here has a log.
        if let Some(parent) = log.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                return (
                    Outcome::Failed(format!("cannot create {}: {e}", parent.display())),
                    vec![],
                    vec![],
                );
            }
        }
        let outputs: BTreeMap<String, PathBuf> = self
            .outputs_rel
            .iter()
            .map(|(n, rel)| (n.clone(), staging.join(rel)))
            .collect();
        let scope = PathScope {
            inputs: &self.inputs,
            outputs: &outputs,
            out_dir: &staging,
        };
        let params = template::render_map(&self.params, &scope);
        let inv = Invocation {
            id: &self.id,
            params: &params,
            inputs: &self.inputs,
            outputs: &outputs,
            out_dir: &staging,
            item: self.item.as_deref(),
            cancel: flag,
        };
        let action = match self.kind.action(&inv) {
            Ok(a) => a,
            Err(e) => return (task_error(e), vec![], vec![]),
        };
        let needs_dir = has_outputs || matches!(action, Action::Process(_));
        if needs_dir {
            let _ = std::fs::remove_dir_all(&staging);
            if let Err(e) = std::fs::create_dir_all(&staging) {
                return (
                    Outcome::Failed(format!("cannot create {}: {e}", staging.display())),
                    vec![],
                    vec![],
                );
            }
            for p in outputs.values() {
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
            }
        }
        let outcome = match action {
            Action::Process(spec) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log);
                if let Ok(f) = &mut f {
                    let _ = writeln!(f, "# attempt {}: {}", self.attempt, shell_words(&spec.argv));
                }
                exec::run_process(&spec, &log, self.timeout, cancel).await
            }
            Action::InProcess => {
                let kind = self.kind.clone();
                let id = self.id.clone();
                // Moved, not cloned: a gather's inputs are one path per upstream instance.
                let inputs = std::mem::take(&mut self.inputs);
                let outputs = outputs.clone();
                let staging = staging.clone();
                let item = self.item.clone();
                let flag2 = flag.clone();
                let log = log.clone();
                exec::run_blocking(
                    move || {
                        let mut w = LazyLog {
                            path: log,
                            file: None,
                        };
                        let inv = Invocation {
                            id: &id,
                            params: &params,
                            inputs: &inputs,
                            outputs: &outputs,
                            out_dir: &staging,
                            item: item.as_deref(),
                            cancel: &flag2,
                        };
                        match kind.run(&inv, &mut w) {
                            Ok(()) => Outcome::Ok,
                            Err(e) => task_error(e),
                        }
                    },
                    flag.clone(),
                    self.timeout,
                    cancel,
                )
                .await
            }
        };
        if outcome != Outcome::Ok {
            if needs_dir {
                let _ = std::fs::remove_dir_all(&staging);
            }
            return (outcome, vec![], vec![]);
        }
        if !needs_dir {
            return (Outcome::Ok, vec![], vec![]);
        }
        // Commit: check the outputs, move the staging directory into place, hash (the walker
        // syncs them before anything records them).
        let committed = tokio::task::spawn_blocking(move || {
            commit(&staging, &self.final_dir, &self.outputs_rel)
        })
        .await
        .unwrap_or_else(|e| Err(format!("commit panicked: {e}")));
        match committed {
            Ok((records, sync)) => (Outcome::Ok, records, sync),
            Err(e) => (Outcome::Failed(e), vec![], vec![]),
        }
    }
}

fn task_error(e: TaskError) -> Outcome {
    match e {
        TaskError::BadInput(m) => Outcome::BadInput(m),
        TaskError::Cancelled => Outcome::Cancelled,
        other => Outcome::Failed(other.to_string()),
    }
}

/// The argv as a copy-pasteable line for the log (display only; never executed by a shell).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A task log file created on first write (most tasks write nothing).
struct LazyLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Write for LazyLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            if let Some(p) = self.path.parent() {
                std::fs::create_dir_all(p)?;
            }
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Syncs files and directories to disk. A large batch is one `syncfs` of the filesystem that
/// holds them (group commit: one flush instead of thousands of fsyncs); a small one is fsynced
/// path by path. A path that vanished is skipped.
fn sync_paths<'a>(paths: impl Iterator<Item = &'a PathBuf>) {
    let unique: BTreeSet<&PathBuf> = paths.collect();
    if unique.len() > 16 {
        if let Some(f) = unique.iter().find_map(|p| std::fs::File::open(p).ok()) {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
            if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
                return;
            }
        }
    }
    for p in unique {
        if let Ok(f) = std::fs::File::open(p) {
            let _ = f.sync_all();
        }
    }
}

/// Every file and directory under `path` (inclusive), for syncing.
fn tree(path: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            tree(&e.path(), out);
        }
    }
    out.push(path.to_path_buf());
}

/// Moves a finished attempt into place and hashes its outputs: every declared output exists ->
/// rename staging to the final directory -> hash. Returns the records and the paths the walker
/// must sync (outputs, their directory and its parent) before it records them.
fn commit(
    staging: &Path,
    final_dir: &Path,
    outputs_rel: &BTreeMap<String, String>,
) -> Result<(Vec<OutputRecord>, Vec<PathBuf>), String> {
    for (name, rel) in outputs_rel {
        if !staging.join(rel).exists() {
            return Err(format!(
                "declared output `{name}` was not written (expected {})",
                staging.join(rel).display()
            ));
        }
    }
    if let Some(parent) = final_dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if final_dir.exists() {
        // Only this instance's own directory goes; other instances' stay.
        std::fs::remove_dir_all(final_dir)
            .map_err(|e| format!("cannot replace {}: {e}", final_dir.display()))?;
    }
    std::fs::rename(staging, final_dir)
        .map_err(|e| format!("cannot move outputs into {}: {e}", final_dir.display()))?;
    let mut records = Vec::with_capacity(outputs_rel.len());
    for (name, rel) in outputs_rel {
        let rec = cache::record_output(name, &final_dir.join(rel))
            .map_err(|e| format!("cannot hash output `{name}`: {e}"))?;
        records.push(rec);
    }
    let mut sync = Vec::new();
    tree(final_dir, &mut sync);
    if let Some(parent) = final_dir.parent() {
        sync.push(parent.to_path_buf());
    }
    Ok((records, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_stays_small() {
        // A night of 100,000 instances holds one each (see `Inst`).
        assert_eq!(std::mem::size_of::<Inst>(), 120);
        assert_eq!(std::mem::size_of::<Tpl>(), 32);
    }
}
