//! One function per subcommand. Each returns the process exit code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nearby_engine::diag::did_you_mean;
use nearby_engine::events::{JsonLines, Sink, Tracing};
use nearby_engine::plan::{self, Plan};
use nearby_engine::sched::{self, RunOptions, Scheduler};
use nearby_engine::store::{InstanceRecord, KeyAt, RunRecord, State, Store};
use nearby_engine::task::{Invocation, Ports, Registry};
use nearby_engine::{cache, model};
use serde_json::json;

use crate::{ExecArgs, GraphFormat, PipelineArgs, Workdir};

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const INVALID: u8 = 2;
const CANCELLED: u8 = 130;

/// `nearby plan` lists instances one by one up to this many, then per task.
const PLAN_DETAIL_LIMIT: usize = 200;

/// The built-in demo pipeline, shipped inside the binary.
const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.yaml");
/// The demo's small CERES model (trained by pipelines/ceres-train.yaml), written beside it.
const DEMO_MODEL: &[u8] = include_bytes!("../pipelines/ceres-model/model.safetensors");
const DEMO_MODEL_CARD: &str = include_str!("../pipelines/ceres-model/model.json");
/// The demo's known objects (real elements) and the few days of DE421 they need, written beside
/// it (pipelines/demo-data/PROVENANCE.md).
const DEMO_DATA: [(&str, &[u8]); 3] = [
    (
        "known.mpcorb",
        include_bytes!("../pipelines/demo-data/known.mpcorb"),
    ),
    (
        "de421-2017-07-19-to-23.bsp",
        include_bytes!("../pipelines/demo-data/de421-2017-07-19-to-23.bsp"),
    ),
    (
        "PROVENANCE.md",
        include_bytes!("../pipelines/demo-data/PROVENANCE.md"),
    ),
];

fn registry() -> Registry {
    nearby_tasks::registry().extend(nearby_ceres::kinds())
}

pub fn err(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    INVALID
}

pub fn parse_pairs(
    args: &[String],
    flag: &str,
    what: &str,
) -> Result<BTreeMap<String, String>, u8> {
    let mut out = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                if out.insert(k.trim().to_owned(), v.to_owned()).is_some() {
                    return Err(err(format!("{flag} {a}: `{}` is given twice", k.trim())));
                }
            }
            _ => return Err(err(format!("{flag} {a}: expected {what}"))),
        }
    }
    Ok(out)
}

/// `--input NAME=PATH` arguments; a name may be given several times (a reference catalog in
/// several files), its paths kept in order.
fn parse_inputs(args: &[String]) -> Result<BTreeMap<String, Vec<String>>, u8> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out
                .entry(k.trim().to_owned())
                .or_default()
                .push(v.to_owned()),
            _ => return Err(err(format!("--input {a}: expected NAME=PATH"))),
        }
    }
    Ok(out)
}

/// Loads and compiles a pipeline from a file, printing diagnostics.
pub fn compile_file(
    path: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<(Plan, String, PathBuf), u8> {
    let (text, abs, base) = read_pipeline(path)?;
    let plan = compile_text(&path.display().to_string(), text.clone(), &base, overrides)?;
    Ok((plan, text.to_string(), abs))
}

/// A pipeline file's text, its absolute path, and the directory its relative paths resolve in.
/// The text is shared with the loaded pipeline's diagnostics rather than copied (7.8 MB for a
/// generated pipeline of 100,000 tasks, at the peak of compiling it).
fn read_pipeline(path: &Path) -> Result<(Arc<str>, PathBuf, PathBuf), u8> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read pipeline {}: {e}", path.display())))?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((text.into(), abs, base))
}

fn compile_text(
    name: &str,
    text: impl Into<Arc<str>>,
    base: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Plan, u8> {
    compile_raw(name, text.into(), base, overrides, &registry()).map(|(_, plan)| plan)
}

fn compile_raw(
    name: &str,
    text: Arc<str>,
    base: &Path,
    overrides: &BTreeMap<String, String>,
    registry: &Registry,
) -> Result<(Imports, Plan), u8> {
    // Loading frees most of what it allocates: let it go back to the system at once.
    let _loading = crate::alloc::Loading::start();
    let raw = model::load_str(name, text, Some(base)).map_err(|d| {
        eprintln!("{d}");
        INVALID
    })?;
    let imports = plan::cached::imports(&raw);
    // The loaded pipeline goes as it is compiled: 55 MB for 100,000 tasks.
    let plan = plan::compile(raw, registry, overrides, base).map_err(|d| {
        eprintln!("{d}");
        INVALID
    })?;
    Ok((imports, plan))
}

/// The files a pipeline imports and their text's hash (what a kept plan is checked against).
type Imports = Vec<(PathBuf, String)>;

/// What a run needs: the plan, the pipeline's text and absolute path, the workdir and its store.
type Prepared = (Plan, String, PathBuf, PathBuf, Store);

/// Loads and compiles a pipeline for `run` or `plan` in a workdir, reusing the plan an earlier
/// run there compiled when nothing it depends on has changed ([`plan::cached`]): a generated
/// pipeline of 10,000 tasks takes 0.4 s to parse, four times a rerun with nothing to do.
fn compile_for_workdir(
    path: &Path,
    overrides: &BTreeMap<String, String>,
    w: &Workdir,
) -> Result<Prepared, u8> {
    let (text, abs, base) = read_pipeline(path)?;
    let name = path.display().to_string();
    let registry = registry();
    let build = build_id();
    let inputs = build.as_deref().map(|build| plan::cached::Inputs {
        path: &abs,
        text: &text,
        base_dir: &base,
        overrides,
        build,
    });
    // An existing workdir is opened first, to look for the kept plan; a new one is created
    // only once the pipeline is known to be valid.
    let (plan, dir, store) = if w.workdir.join("state").exists() {
        let (dir, store) = open_workdir(w)?;
        let kept = inputs
            .as_ref()
            .and_then(|i| plan::cached::load(&store, i, &registry));
        let plan = match kept {
            Some(plan) => {
                tracing::debug!("pipeline {name}: compiled plan reused from the store");
                plan
            }
            None => {
                let (imports, plan) =
                    compile_raw(&name, text.clone(), &base, overrides, &registry)?;
                if let Some(i) = &inputs {
                    plan::cached::save(&store, i, imports, &plan);
                }
                plan
            }
        };
        (plan, dir, store)
    } else {
        let (imports, plan) = compile_raw(&name, text.clone(), &base, overrides, &registry)?;
        let (dir, store) = open_workdir(w)?;
        if let Some(i) = &inputs {
            plan::cached::save(&store, i, imports, &plan);
        }
        (plan, dir, store)
    };
    Ok((plan, text.to_string(), abs, dir, store))
}

/// Names this binary for [`plan::cached`]: its version, and its file's size and modification
/// time (a rebuilt binary may compile pipelines differently). None: no plan is kept.
fn build_id() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{} {} {} {}",
        env!("CARGO_PKG_VERSION"),
        exe.display(),
        meta.len(),
        mtime.as_nanos()
    ))
}

fn open_workdir(w: &Workdir) -> Result<(PathBuf, Store), u8> {
    std::fs::create_dir_all(&w.workdir).map_err(|e| {
        err(format!(
            "cannot create workdir {}: {e}",
            w.workdir.display()
        ))
    })?;
    let dir = std::fs::canonicalize(&w.workdir).unwrap_or_else(|_| w.workdir.clone());
    let store = Store::open(&dir).map_err(err)?;
    Ok((dir, store))
}

pub fn open_existing(w: &Workdir) -> Result<(PathBuf, Store), u8> {
    if !w.workdir.join("state").exists() {
        return Err(err(format!(
            "no nearby state in {} (run a pipeline there first, or pass --workdir)",
            w.workdir.display()
        )));
    }
    open_workdir(w)
}

pub fn find_run(store: &Store, run: Option<&str>) -> Result<RunRecord, u8> {
    match run {
        Some(id) => match store.get_run(id).map_err(err)? {
            Some(r) => Ok(r),
            None => {
                let ids: Vec<String> = store
                    .runs()
                    .map_err(err)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let hint = did_you_mean(id, ids.iter().map(String::as_str))
                    .unwrap_or_else(|| "`nearby runs` lists them".into());
                Err(err(format!("no run `{id}` in this workdir; {hint}")))
            }
        },
        None => store
            .latest_run()
            .map_err(err)?
            .ok_or_else(|| err("no runs in this workdir yet")),
    }
}

pub fn validate(p: &PipelineArgs) -> u8 {
    let overrides = match parse_pairs(&p.set, "--set", "KEY=VALUE") {
        Ok(o) => o,
        Err(c) => return c,
    };
    match compile_file(&p.pipeline, &overrides) {
        Ok((plan, _, _)) => {
            println!(
                "ok: pipeline `{}` ({}): {} tasks",
                plan.name,
                p.pipeline.display(),
                plan.tasks.len()
            );
            OK
        }
        Err(c) => c,
    }
}

pub fn graph(p: &PipelineArgs, format: GraphFormat) -> u8 {
    let overrides = match parse_pairs(&p.set, "--set", "KEY=VALUE") {
        Ok(o) => o,
        Err(c) => return c,
    };
    match compile_file(&p.pipeline, &overrides) {
        Ok((plan, _, _)) => {
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => plan::graph::dot(&plan),
                    GraphFormat::Mermaid => plan::graph::mermaid(&plan),
                }
            );
            OK
        }
        Err(c) => c,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime (threads, epoll): {e}");
            std::process::exit(FAILED as i32);
        }
    }
}

pub fn plan(p: &PipelineArgs, w: &Workdir) -> u8 {
    let overrides = match parse_pairs(&p.set, "--set", "KEY=VALUE") {
        Ok(o) => o,
        Err(c) => return c,
    };
    let (plan, text, abs, dir, store) = match compile_for_workdir(&p.pipeline, &overrides, w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = new_record(&plan, &abs, text, &overrides, "plan", None);
    let opts = RunOptions {
        dry_run: true,
        ..RunOptions::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let plan = Arc::new(plan);
    let summary = match Scheduler::new(Arc::clone(&plan), store, dir, record, opts, vec![], rx) {
        Ok(s) => runtime().block_on(s.run()),
        Err(e) => return err(e),
    };
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    println!("pipeline `{}`: {} tasks", plan.name, plan.tasks.len());
    let (mut run, mut cached) = (0, 0);
    for (_, what, _) in &summary.dry_run {
        match what.as_str() {
            "cached" => cached += 1,
            _ => run += 1,
        }
    }
    if summary.dry_run.len() <= PLAN_DETAIL_LIMIT {
        for (id, what, why) in &summary.dry_run {
            println!("  {what:<6} {id:<40} {why}");
        }
    } else {
        // Large plans: one line per task, what and why, with counts.
        let mut groups: Vec<((String, String, String), usize)> = Vec::new();
        let mut index: std::collections::HashMap<(String, String, String), usize> =
            Default::default();
        for (id, what, why) in &summary.dry_run {
            let task = id.split('[').next().unwrap_or(id).to_owned();
            let why = if why.starts_with("upstream `") {
                "upstream will run".to_owned()
            } else {
                why.clone()
            };
            let key = (task, what.clone(), why);
            match index.get(&key) {
                Some(&g) => groups[g].1 += 1,
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, 1));
                }
            }
        }
        for ((task, what, why), n) in groups {
            println!("  {what:<6} {task:<30} x{n:<8} {why}");
        }
    }
    println!("{run} to run, {cached} cached");
    OK
}

fn new_record(
    plan: &Plan,
    path: &Path,
    text: String,
    overrides: &BTreeMap<String, String>,
    mode: &str,
    parent: Option<String>,
) -> RunRecord {
    RunRecord {
        id: sched::new_run_id(),
        pipeline_name: plan.name.clone(),
        pipeline_path: path.display().to_string(),
        pipeline_text: text,
        pipeline_text_hash: None,
        overrides: overrides.clone(),
        params: plan
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        state: "pending".into(),
        started_at: sched::now(),
        finished_at: None,
        parent,
        mode: mode.to_owned(),
        force_from: None,
        counts: BTreeMap::new(),
        log_path: String::new(),
    }
}

/// Runs a plan to the end with signal handling and the progress display.
fn execute(
    plan: Plan,
    mut record: RunRecord,
    store: Store,
    dir: PathBuf,
    x: &ExecArgs,
    force: BTreeSet<usize>,
) -> u8 {
    let events = dir.join("logs").join(&record.id).join("events.jsonl");
    let _ = std::fs::create_dir_all(events.parent().unwrap_or(&dir));
    record.log_path = events.display().to_string();
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(PrintRunId),
        Box::new(crate::progress::Progress::new(x.quiet)),
        Box::new(Tracing),
    ];
    match JsonLines::create(&events) {
        Ok(j) => sinks.push(Box::new(j)),
        Err(e) => eprintln!(
            "warning: cannot write the event log {}: {e}",
            events.display()
        ),
    }
    let mut opts = RunOptions {
        memory_mb: x.memory_mb,
        fail_fast: x.fail_fast,
        force,
        ..RunOptions::default()
    };
    if let Some(j) = x.jobs {
        opts.jobs = j.max(1);
    }
    let rt = runtime();
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        wait_for_signal().await;
        eprintln!("cancelling: stopping running tasks (again to exit at once)");
        let _ = tx.send(true);
        wait_for_signal().await;
        std::process::exit(CANCELLED as i32);
    });
    let run_id = record.id.clone();
    let kept = store.clone();
    let workdir = dir.clone();
    let sched = match Scheduler::new(Arc::new(plan), store, dir, record, opts, sinks, rx) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let result = rt.block_on(sched.run());
    crate::ops::after_run(&kept, &workdir, &run_id, x);
    let wrote = matches!(&result, Ok(s) if s.count(State::Succeeded) + s.count(State::Failed) > 0);
    if wrote {
        kept.settle();
    }
    match result {
        Ok(s) if s.state == "succeeded" => OK,
        Ok(s) if s.state == "cancelled" => CANCELLED,
        Ok(_) => FAILED,
        Err(e) => {
            eprintln!("error: {e}");
            FAILED
        }
    }
}

/// Prints the run id on stdout once the run is recorded (scripts and `resume` rely on it).
struct PrintRunId;

impl Sink for PrintRunId {
    fn event(&mut self, _at: &str, e: &nearby_engine::events::Event) {
        if let nearby_engine::events::Event::RunStarted { run, .. } = e {
            println!("{run}");
            let _ = std::io::stdout().flush();
        }
    }
}

pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match &mut term {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub fn run(p: &PipelineArgs, w: &Workdir, x: &ExecArgs) -> u8 {
    let overrides = match parse_pairs(&p.set, "--set", "KEY=VALUE") {
        Ok(o) => o,
        Err(c) => return c,
    };
    let (plan, text, abs, dir, store) = match compile_for_workdir(&p.pipeline, &overrides, w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = new_record(&plan, &abs, text, &overrides, "run", None);
    execute(plan, record, store, dir, x, BTreeSet::new())
}

pub fn demo(w: &Workdir, x: &ExecArgs) -> u8 {
    let (dir, store) = match open_workdir(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let path = dir.join("demo.yaml");
    if let Err(e) = std::fs::write(&path, DEMO_PIPELINE) {
        return err(format!("cannot write {}: {e}", path.display()));
    }
    let model = dir.join("ceres-model");
    let written = std::fs::create_dir_all(&model)
        .and_then(|_| std::fs::write(model.join("model.safetensors"), DEMO_MODEL))
        .and_then(|_| std::fs::write(model.join("model.json"), DEMO_MODEL_CARD));
    if let Err(e) = written {
        return err(format!("cannot write {}: {e}", model.display()));
    }
    let data = dir.join("demo-data");
    let written = std::fs::create_dir_all(&data).and_then(|_| {
        DEMO_DATA
            .iter()
            .try_for_each(|(name, bytes)| std::fs::write(data.join(name), bytes))
    });
    if let Err(e) = written {
        return err(format!("cannot write {}: {e}", data.display()));
    }
    let plan = match compile_text("pipelines/demo.yaml", DEMO_PIPELINE, &dir, &BTreeMap::new()) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let record = new_record(
        &plan,
        &path,
        DEMO_PIPELINE.to_owned(),
        &BTreeMap::new(),
        "run",
        None,
    );
    let code = execute(plan, record, store, dir.clone(), x, BTreeSet::new());
    if code == OK {
        eprintln!("outputs are under {}", dir.join("out").display());
    }
    code
}

/// Re-plans a past run's pipeline text with its params.
fn replan(record: &RunRecord) -> Result<Plan, u8> {
    let base = Path::new(&record.pipeline_path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    compile_text(
        &record.pipeline_path,
        record.pipeline_text.as_str(),
        &base,
        &record.overrides,
    )
}

pub fn rerun(run: &str, w: &Workdir, from: Option<&str>, x: &ExecArgs) -> u8 {
    let (dir, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let old = match find_run(&store, Some(run)) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let plan = match replan(&old) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let mut force = BTreeSet::new();
    if let Some(task) = from {
        match plan.task_index(task) {
            Some(t) => force = plan.downstream(t),
            None => {
                let hint =
                    did_you_mean(task, plan.tasks.iter().map(|t| &*t.name)).unwrap_or_default();
                return err(format!(
                    "--from {task}: the pipeline has no task `{task}` {hint}"
                ));
            }
        }
    }
    let mut record = new_record(
        &plan,
        Path::new(&old.pipeline_path),
        old.pipeline_text.clone(),
        &old.overrides,
        "rerun",
        Some(old.id.clone()),
    );
    record.force_from = from.map(str::to_owned);
    execute(plan, record, store, dir, x, force)
}

pub fn resume(run: &str, w: &Workdir, x: &ExecArgs) -> u8 {
    let (dir, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let mut record = match find_run(&store, Some(run)) {
        Ok(r) => r,
        Err(c) => return c,
    };
    if record.state == "succeeded" {
        eprintln!("run {} already succeeded: nothing to resume", record.id);
        return OK;
    }
    let plan = match replan(&record) {
        Ok(p) => p,
        Err(c) => return c,
    };
    record.mode = "resume".into();
    record.finished_at = None;
    execute(plan, record, store, dir, x, BTreeSet::new())
}

fn instance_json(r: &InstanceRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "task": r.task,
        "kind": r.kind,
        "state": r.state,
        "attempts": r.attempts,
        "item": r.item,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_ms": r.duration_ms,
        "outputs": r.outputs.iter().map(|o| (o.name.clone(), serde_json::Value::from(o.path.clone()))).collect::<serde_json::Map<_, _>>(),
        "fingerprint": r.fingerprint,
        "cache": r.cache,
        "error": r.error,
        "quarantined": r.quarantined,
        "log": r.log,
    })
}

pub fn status(run: Option<&str>, w: &Workdir, as_json: bool) -> u8 {
    let (_, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = match find_run(&store, run) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let instances = match store.instances(&record.id) {
        Ok(i) => i,
        Err(e) => return err(e),
    };
    if as_json {
        let out = json!({
            "run": {
                "id": record.id,
                "pipeline": record.pipeline_name,
                "pipeline_path": record.pipeline_path,
                "params": record.params,
                "state": record.state,
                "mode": record.mode,
                "parent": record.parent,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "counts": record.counts,
                "events": record.log_path,
            },
            "instances": instances.iter().map(instance_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return OK;
    }
    println!(
        "run {}  pipeline `{}`  {}  started {}",
        record.id, record.pipeline_name, record.state, record.started_at
    );
    let mut counts: BTreeMap<State, usize> = BTreeMap::new();
    let width = instances
        .iter()
        .map(|i| i.id.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    println!(
        "{:<width$}  {:<9}  {:>8}  {:>9}  note",
        "task", "state", "attempts", "time"
    );
    for i in &instances {
        *counts.entry(i.state).or_default() += 1;
        let time = i
            .duration_ms
            .map(|d| format!("{:.2}s", d as f64 / 1000.0))
            .unwrap_or_default();
        let note = i.error.clone().unwrap_or_default();
        println!(
            "{:<width$}  {:<9}  {:>8}  {:>9}  {}",
            i.id,
            i.state.name(),
            i.attempts,
            time,
            note
        );
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.name()))
        .collect();
    println!("{} instances: {}", instances.len(), parts.join(", "));
    OK
}

pub fn runs(w: &Workdir) -> u8 {
    let (_, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let runs = match store.runs() {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    println!(
        "{:<22}  {:<9}  {:<7}  {:<24}  {:<20}  counts",
        "run", "state", "mode", "started", "pipeline"
    );
    for r in runs {
        let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{:<22}  {:<9}  {:<7}  {:<24}  {:<20}  {}",
            r.id,
            r.state,
            r.mode,
            r.started_at,
            r.pipeline_name,
            counts.join(", ")
        );
    }
    OK
}

/// Instances of a run matching an instance id or a task name.
fn matching(store: &Store, run: &str, task: &str) -> Result<Vec<InstanceRecord>, u8> {
    let all = store.instances(run).map_err(err)?;
    let exact: Vec<_> = all.iter().filter(|i| i.id == task).cloned().collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    let by_task: Vec<_> = all.iter().filter(|i| i.task == task).cloned().collect();
    if by_task.is_empty() {
        let names: BTreeSet<&str> = all.iter().map(|i| i.task.as_str()).collect();
        let hint = did_you_mean(task, names.iter().copied()).unwrap_or_else(|| {
            format!(
                "tasks of this run: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        });
        return Err(err(format!(
            "run {run} has no task or instance `{task}`; {hint}"
        )));
    }
    Ok(by_task)
}

pub fn logs(run: &str, task: &str, w: &Workdir) -> u8 {
    let (dir, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = match find_run(&store, Some(run)) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let instances = match matching(&store, &record.id, task) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let many = instances.len() > 1;
    for i in instances {
        if many {
            println!("==> {} ({}) <==", i.id, i.state.name());
        }
        let path = i
            .log
            .map(PathBuf::from)
            .unwrap_or_else(|| sched::log_path(&dir, &record.id, &i.id));
        match std::fs::read_to_string(&path) {
            Ok(text) => print!("{text}"),
            Err(_) => println!(
                "(no log: {} wrote nothing{})",
                i.id,
                i.error.map(|e| format!("; error: {e}")).unwrap_or_default()
            ),
        }
    }
    OK
}

/// Runs' instance records, each run read once when first needed (a cache explain of a big
/// fan-out looks up thousands of keys in a few runs).
struct RunRecords<'a> {
    store: &'a Store,
    read: HashMap<String, Vec<InstanceRecord>>,
}

impl RunRecords<'_> {
    fn records(&mut self, run: &str) -> &[InstanceRecord] {
        let store = self.store;
        self.read
            .entry(run.to_owned())
            .or_insert_with(|| store.instances(run).unwrap_or_default())
    }

    /// The parts of an instance's cache key: its own, or those of the instance that made the
    /// cache entry it used.
    fn key_of(&mut self, r: &InstanceRecord) -> Option<cache::CacheKey> {
        let raw = match (&r.key, &r.fingerprint) {
            (Some(k), _) => k.clone(),
            (None, Some(fp)) => match self.store.key_at(&r.task, fp).ok()?? {
                KeyAt::Here(raw) => raw,
                KeyAt::Record { run, instance } => self
                    .records(&run)
                    .iter()
                    .find(|p| p.id == instance)?
                    .key
                    .clone()?,
            },
            (None, None) => return None,
        };
        serde_json::from_str(raw.get()).ok()
    }
}

pub fn explain(run: &str, task: &str, w: &Workdir) -> u8 {
    let (_, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let record = match find_run(&store, Some(run)) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let instances = match matching(&store, &record.id, task) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let earlier: Vec<RunRecord> = store
        .runs()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id < record.id)
        .collect();
    let mut runs = RunRecords {
        store: &store,
        read: HashMap::new(),
    };
    for i in instances {
        println!("{}  ({})", i.id, i.state.name());
        println!(
            "  fingerprint: {}",
            i.fingerprint
                .as_deref()
                .unwrap_or("(none: the task never reached the cache check)")
        );
        println!(
            "  cache:       {}",
            i.cache.as_deref().unwrap_or("(not checked)")
        );
        let Some(k) = runs.key_of(&i) else {
            if let Some(e) = &i.error {
                println!("  error:       {e}");
            }
            println!();
            continue;
        };
        println!("  key parts (blake3 over this, as JSON):");
        println!("    schema:  {}", k.schema);
        println!("    task:    {} (kind {} v{})", k.task, k.kind, k.version);
        println!("    params:  {}", k.params);
        if let Some(item) = &k.item {
            println!("    item:    {item}");
        }
        for (name, hashes) in &k.inputs {
            let short: Vec<String> = hashes
                .iter()
                .map(|h| h.to_string().chars().take(16).collect())
                .collect();
            println!("    input {name}: {}", short.join(" "));
        }
        for (name, path) in &k.outputs {
            println!("    output {name}: {path}");
        }
        // Compare with the newest earlier run that recorded this instance's key.
        let previous = earlier.iter().rev().find_map(|r| {
            let p = runs.records(&r.id).iter().find(|p| p.id == i.id).cloned()?;
            runs.key_of(&p).map(|old| (r.id.clone(), old))
        });
        match previous {
            Some((rid, old)) => {
                let d = k.diff(&old);
                if d.is_empty() {
                    println!("  since run {rid}: key unchanged");
                } else {
                    println!("  since run {rid}:");
                    for line in d {
                        println!("    - {line}");
                    }
                }
            }
            None => println!("  no earlier run recorded this instance"),
        }
        println!();
    }
    OK
}

pub fn gc(w: &Workdir, dry_run: bool) -> u8 {
    let (dir, store) = match open_existing(w) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let entries = match store.cache_entries() {
        Ok(e) => e,
        Err(e) => return err(e),
    };
    let mut dropped = 0;
    for e in &entries {
        if let Err(why) = cache::check_outputs(&e.outputs) {
            println!(
                "{} {} ({}): {why}",
                if dry_run { "would drop" } else { "drop" },
                &e.fingerprint[..16],
                e.task
            );
            dropped += 1;
            if !dry_run {
                if let Err(e) = store.cache_remove(&e.task, &e.fingerprint) {
                    return err(e);
                }
            }
        }
    }
    if dropped > 0 && !dry_run {
        // Packs copy entries; the dropped ones must not come back from them.
        if let Err(e) = store.clear_packs() {
            return err(e);
        }
    }
    let staging = dir.join("out").join(".staging");
    if staging.exists() && !dry_run {
        let _ = std::fs::remove_dir_all(&staging);
    }
    let _ = store.flush();
    println!(
        "{} cache entries, {dropped} {}",
        entries.len(),
        if dry_run {
            "would be dropped"
        } else {
            "dropped"
        }
    );
    OK
}

pub fn kinds() -> u8 {
    for k in registry().kinds() {
        println!("{} (v{}): {}", k.name(), k.version(), k.summary());
        for p in k.params() {
            let req = if p.required { "required" } else { "optional" };
            let def = p
                .default
                .map(|d| format!(", default {d}"))
                .unwrap_or_default();
            println!(
                "  with.{:<16} {} ({req}{def}): {}",
                p.name,
                p.ty.describe(),
                p.doc
            );
        }
        match k.inputs() {
            Ports::Fixed(ps) => ps
                .iter()
                .for_each(|p| println!("  input  {:<15} {}", p.name, p.doc)),
            Ports::Declared => println!("  inputs: declared by the pipeline"),
        }
        match k.outputs() {
            Ports::Fixed(ps) => ps
                .iter()
                .for_each(|p| println!("  output {:<15} {} ({})", p.name, p.doc, p.file)),
            Ports::Declared => println!("  outputs: declared by the pipeline"),
        }
        println!();
    }
    OK
}

/// `nearby task KIND`: one kind, outside a pipeline, writing into `out`.
pub fn task(kind: &str, with: &[String], input: &[String], output: &[String], out: &Path) -> u8 {
    let reg = registry();
    let Some(k) = reg.get(kind).cloned() else {
        let hint = did_you_mean(kind, reg.names()).unwrap_or_else(|| {
            format!(
                "task kinds are: {}",
                reg.names().collect::<Vec<_>>().join(", ")
            )
        });
        return err(format!("unknown task kind `{kind}`; {hint}"));
    };
    let (with, inputs, outputs) = match (
        parse_pairs(with, "--with", "KEY=VALUE"),
        parse_inputs(input),
        parse_pairs(output, "--output", "NAME=PATH"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(c), _, _) | (_, Err(c), _) | (_, _, Err(c)) => return c,
    };
    let mut params = serde_json::Map::new();
    let mut bad = 0;
    for (key, value) in &with {
        let Some(spec) = k.params().iter().find(|p| p.name == key) else {
            let hint = did_you_mean(key, k.params().iter().map(|p| p.name)).unwrap_or_else(|| {
                format!(
                    "params of `{kind}` are: {}",
                    k.params()
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            eprintln!("error: --with {key}: task kind `{kind}` has no param `{key}`; {hint}");
            bad += 1;
            continue;
        };
        // Values are read as YAML/JSON scalars or lists (`argv=["echo","hi"]`), else as text.
        let v: serde_json::Value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::from(value.clone()));
        let v = match (spec.ty, &v) {
            (
                nearby_engine::task::PType::Str,
                serde_json::Value::Number(_) | serde_json::Value::Bool(_),
            ) => serde_json::Value::from(value.clone()),
            _ => v,
        };
        if !spec.ty.accepts(&v) {
            eprintln!(
                "error: --with {key}={value}: expected {}",
                spec.ty.describe()
            );
            bad += 1;
            continue;
        }
        params.insert(key.clone(), v);
    }
    for spec in k.params().iter().filter(|p| p.required) {
        if !params.contains_key(spec.name) && !with.contains_key(spec.name) {
            eprintln!(
                "error: task kind `{kind}` needs --with {}=... ({})",
                spec.name, spec.doc
            );
            bad += 1;
        }
    }
    let params = nearby_engine::task::with_defaults(k.as_ref(), params);
    for (p, m) in k.validate(&params) {
        eprintln!("error: --with {p}: {m}");
        bad += 1;
    }
    let mut input_paths: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (name, path) in inputs
        .iter()
        .flat_map(|(n, ps)| ps.iter().map(move |p| (n, p)))
    {
        if let Ports::Fixed(ps) = k.inputs() {
            if !ps.iter().any(|p| p.name == name) {
                eprintln!("error: --input {name}: task kind `{kind}` has no input `{name}`");
                bad += 1;
            }
        }
        if !Path::new(path).exists() {
            eprintln!("error: --input {name}={path}: no such file");
            bad += 1;
        }
        input_paths
            .entry(name.clone())
            .or_default()
            .push(std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path)));
    }
    if let Ports::Fixed(ps) = k.inputs() {
        for p in ps
            .iter()
            .filter(|p| p.required && !inputs.contains_key(p.name))
        {
            eprintln!(
                "error: task kind `{kind}` needs --input {}=PATH ({})",
                p.name, p.doc
            );
            bad += 1;
        }
    }
    if bad > 0 {
        return INVALID;
    }
    if let Err(e) = std::fs::create_dir_all(out) {
        return err(format!("cannot create {}: {e}", out.display()));
    }
    let out = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let output_paths: BTreeMap<String, PathBuf> = match k.outputs() {
        Ports::Fixed(_) => nearby_engine::task::port_files(k.as_ref(), &out),
        Ports::Declared => outputs
            .iter()
            .map(|(n, p)| (n.clone(), out.join(p)))
            .collect(),
    };
    // Templates in params see the inputs, outputs and output directory.
    let scope = sched::PathScope {
        inputs: &input_paths,
        outputs: &output_paths,
        out_dir: &out,
    };
    let params =
        match nearby_engine::template::render_json(&serde_json::Value::Object(params), &scope) {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
    let flag = std::sync::atomic::AtomicBool::new(false);
    let inv = Invocation {
        id: kind,
        params: &params,
        inputs: &input_paths,
        outputs: &output_paths,
        out_dir: &out,
        item: None,
        cancel: &flag,
    };
    let result = match k.action(&inv) {
        Ok(nearby_engine::task::Action::InProcess) => k
            .run(&inv, &mut std::io::stderr())
            .map_err(|e| e.to_string()),
        Ok(nearby_engine::task::Action::Process(spec)) => {
            let log = out.join(format!("{kind}.log"));
            let (_tx, rx) = tokio::sync::watch::channel(false);
            match runtime().block_on(nearby_engine::exec::run_process(&spec, &log, None, rx)) {
                nearby_engine::exec::Outcome::Ok => Ok(()),
                other => Err(format!("{other:?} (log: {})", log.display())),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => {
            for (name, p) in &output_paths {
                println!("{name}\t{}", p.display());
            }
            OK
        }
        Err(e) => {
            eprintln!("error: {kind} failed: {e}");
            FAILED
        }
    }
}
