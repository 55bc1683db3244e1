//! The task contract: what a task kind declares (name, version, params, ports) and how it runs.
//!
//! A kind's `run` reads only the inputs it is handed and writes only under its output directory;
//! the engine does templating, hashing, caching, recording and retries. Kinds that run an external
//! program return [`Action::Process`] and the executor runs it (with timeouts that kill the whole
//! process group); other kinds run in-process on a blocking thread.

pub mod builtin;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{Map, Value as J};

/// The type of a task-kind param.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PType {
    Str,
    Int,
    Float,
    Bool,
    /// A list of strings (argv, file lists).
    StrList,
    /// A mapping of string to string (environment variables).
    StrMap,
}

impl PType {
    pub fn describe(self) -> &'static str {
        match self {
            PType::Str => "a string",
            PType::Int => "an integer",
            PType::Float => "a number",
            PType::Bool => "true or false",
            PType::StrList => "a list of strings",
            PType::StrMap => "a mapping of strings",
        }
    }

    /// Whether a JSON value fits (strings are accepted anywhere a template may produce a value).
    pub fn accepts(self, v: &J) -> bool {
        match self {
            PType::Str => v.is_string() || v.is_number() || v.is_boolean(),
            PType::Int => v.is_i64() || is_template(v),
            PType::Float => v.is_number() || is_template(v),
            PType::Bool => v.is_boolean() || is_template(v),
            PType::StrList => v.as_array().is_some_and(|a| {
                a.iter()
                    .all(|x| x.is_string() || x.is_number() || x.is_boolean())
            }),
            PType::StrMap => v.as_object().is_some_and(|m| {
                m.values()
                    .all(|x| x.is_string() || x.is_number() || x.is_boolean())
            }),
        }
    }
}

fn is_template(v: &J) -> bool {
    v.as_str().is_some_and(|s| s.contains("${"))
}

/// One param of a task kind. Names carry their units (`radius_arcsec`, `timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: PType,
    pub required: bool,
    /// The default as JSON text, shown in docs and used when the author omits the param.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// A named input or output port.
#[derive(Debug, Clone, Copy)]
pub struct PortSpec {
    pub name: &'static str,
    /// For outputs: the file name written in the task's output directory.
    pub file: &'static str,
    pub required: bool,
    pub doc: &'static str,
}

/// Ports are either fixed by the kind or declared by the pipeline author (`command`, `noop`).
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    Fixed(&'static [PortSpec]),
    Declared,
}

/// What a kind asks the executor to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Call [`TaskKind::run`] on a blocking thread.
    InProcess,
    /// Run an external program.
    Process(ProcessSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Write the program's stdout to this file (else to the task log).
    pub stdout: Option<PathBuf>,
}

/// Everything a task instance gets: resolved params, input paths, output paths.
pub struct Invocation<'a> {
    /// The instance id, e.g. `extract[r1234_ccd2]`.
    pub id: &'a str,
    pub params: &'a Map<String, J>,
    pub inputs: &'a BTreeMap<String, Vec<PathBuf>>,
    /// Where each output must be written (inside `out_dir`).
    pub outputs: &'a BTreeMap<String, PathBuf>,
    pub out_dir: &'a Path,
    pub item: Option<&'a str>,
    /// Set when the run is cancelled or the task timed out; long tasks should poll it.
    pub cancel: &'a AtomicBool,
}

impl Invocation<'_> {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(J::as_str)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        let v = self.params.get(name)?;
        v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())
    }
    pub fn float(&self, name: &str) -> Option<f64> {
        let v = self.params.get(name)?;
        v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
    }
    pub fn bool(&self, name: &str) -> Option<bool> {
        let v = self.params.get(name)?;
        v.as_bool().or_else(|| v.as_str()?.trim().parse().ok())
    }
    pub fn input(&self, name: &str) -> Result<&Path, TaskError> {
        self.inputs
            .get(name)
            .and_then(|v| v.first())
            .map(PathBuf::as_path)
            .ok_or_else(|| TaskError::Failed(format!("input `{name}` was not given")))
    }
    pub fn output(&self, name: &str) -> Result<&Path, TaskError> {
        self.outputs
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| TaskError::Failed(format!("output `{name}` is not declared")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task failed; it may be retried.
    #[error("{0}")]
    Failed(String),
    /// The input is bad (e.g. a corrupt frame): retrying will not help, quarantine it.
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TaskError {
    /// Params a kind's own checks rejected (`[(param, what is wrong)]`), as one failure.
    pub fn params(problems: &[(&str, String)]) -> TaskError {
        TaskError::Failed(
            problems
                .iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

pub trait TaskKind: Send + Sync + 'static {
    /// The verb used in YAML `uses:`.
    fn name(&self) -> &'static str;
    /// Part of the cache key: bump it when the computation changes.
    fn version(&self) -> u32;
    fn summary(&self) -> &'static str;
    fn params(&self) -> &'static [ParamSpec];
    fn inputs(&self) -> Ports;
    fn outputs(&self) -> Ports;
    /// Semantic checks on params beyond their types, as `(param, message)`. Pure.
    fn validate(&self, _params: &Map<String, J>) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// How to run an instance; the default runs [`TaskKind::run`] in-process.
    fn action(&self, _inv: &Invocation) -> Result<Action, TaskError> {
        Ok(Action::InProcess)
    }
    /// Whether an instance with these params is so cheap (microseconds, no outputs) that it runs
    /// inline on the scheduler's thread instead of a blocking thread.
    fn inline(&self, _params: &Map<String, J>) -> bool {
        false
    }
    /// The in-process computation. `log` is the instance's log file.
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError>;
}

/// The one list of task kinds a pipeline may use.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: Vec<Arc<dyn TaskKind>>,
}

impl Registry {
    pub fn new(kinds: Vec<Arc<dyn TaskKind>>) -> Registry {
        Registry { kinds }
    }
    /// The engine's own kinds: `command` and `noop`.
    pub fn builtin() -> Registry {
        Registry::new(builtin::kinds())
    }
    pub fn extend(mut self, kinds: Vec<Arc<dyn TaskKind>>) -> Registry {
        self.kinds.extend(kinds);
        self
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn TaskKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.iter().map(|k| k.name())
    }
    pub fn kinds(&self) -> &[Arc<dyn TaskKind>] {
        &self.kinds
    }
}

/// Fills in defaults of a kind's params (as JSON) where the author gave none.
pub fn with_defaults(kind: &dyn TaskKind, mut params: Map<String, J>) -> Map<String, J> {
    for spec in kind.params() {
        if !params.contains_key(spec.name) {
            if let Some(d) = spec.default {
                if let Ok(v) = serde_json::from_str(d) {
                    params.insert(spec.name.to_owned(), v);
                }
            }
        }
    }
    params
}

/// The file in a task instance's output directory that holds its science numbers (sources found,
/// tracklets linked, ...): a flat JSON object of numbers. Run reports and `nearby nights` add them
/// up per run; cached instances keep theirs, since the file travels with the outputs.
pub const METRICS_FILE: &str = "metrics.json";

/// Writes an instance's science numbers into its output directory (see [`METRICS_FILE`]).
pub fn write_metrics(out_dir: &Path, metrics: &[(&str, f64)]) -> Result<(), TaskError> {
    let map: Map<String, J> = metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| ((*k).to_owned(), J::from(*v)))
        .collect();
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(
        out_dir.join(METRICS_FILE),
        serde_json::to_vec_pretty(&J::Object(map)).unwrap_or_default(),
    )?;
    Ok(())
}

/// Reads the science numbers of an instance from its output directory (none if absent or bad).
pub fn read_metrics(out_dir: &Path) -> BTreeMap<String, f64> {
    std::fs::read(out_dir.join(METRICS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, J>>(&b).ok())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k, v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The files a kind with fixed output ports writes in `out_dir` (none for a kind whose outputs
/// the pipeline declares).
pub fn port_files(kind: &dyn TaskKind, out_dir: &Path) -> BTreeMap<String, PathBuf> {
    match kind.outputs() {
        Ports::Fixed(ports) => ports
            .iter()
            .map(|p| (p.name.to_owned(), out_dir.join(p.file)))
            .collect(),
        Ports::Declared => BTreeMap::new(),
    }
}

/// One instance of a kind run on its own in this process, outside any pipeline (nothing is
/// cached or recorded): what tests of a single kind need.
pub struct Alone {
    pub result: Result<(), TaskError>,
    /// Where each output was to be written ([`port_files`]).
    pub outputs: BTreeMap<String, PathBuf>,
    /// What the kind wrote to its log.
    pub log: String,
}

/// Runs `kind` once in this process with `params` completed by its defaults (params its own
/// checks reject fail the run, unrun), reading `inputs`, writing its ports' files in `out_dir`
/// and its log to `log`; returns where the outputs are. For work that calls one kind directly
/// (CERES makes its training nights this way) and for tests.
pub fn run_alone_to(
    kind: &dyn TaskKind,
    params: Map<String, J>,
    inputs: BTreeMap<String, Vec<PathBuf>>,
    out_dir: &Path,
    log: &mut dyn Write,
) -> Result<BTreeMap<String, PathBuf>, TaskError> {
    let params = with_defaults(kind, params);
    let problems = kind.validate(&params);
    if !problems.is_empty() {
        return Err(TaskError::params(&problems));
    }
    std::fs::create_dir_all(out_dir)?;
    let outputs = port_files(kind, out_dir);
    let cancel = AtomicBool::new(false);
    let inv = Invocation {
        id: kind.name(),
        params: &params,
        inputs: &inputs,
        outputs: &outputs,
        out_dir,
        item: None,
        cancel: &cancel,
    };
    kind.run(&inv, log)?;
    Ok(outputs)
}

/// [`run_alone_to`] with its log kept in memory.
pub fn run_alone(
    kind: &dyn TaskKind,
    params: Map<String, J>,
    inputs: BTreeMap<String, Vec<PathBuf>>,
    out_dir: &Path,
) -> Alone {
    let mut log = Vec::new();
    let result = run_alone_to(kind, params, inputs, out_dir, &mut log).map(|_| ());
    Alone {
        result,
        outputs: port_files(kind, out_dir),
        log: String::from_utf8_lossy(&log).into_owned(),
    }
}
