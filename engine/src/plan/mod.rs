//! Level 2: the validated, sealed plan.
//!
//! [`compile`] checks a [`RawPipeline`] against the task registry and collects *every* error in one
//! pass: unknown task kinds and params, wrong types, missing params and inputs, references to
//! missing tasks or outputs, outputs written twice, bad templates and cycles (with the whole chain).
//! Only a [`Plan`] can be run; it holds a DAG of task templates whose edges (each template's
//! `upstream`) come from declared inputs, never from YAML order.

pub mod cached;
pub mod graph;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value as J};

use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Where};
use crate::model::{
    At, Node, ParamType, RawForeach, RawInput, RawPipeline, RawTask, Resources, Retries, Sp, Text,
    Value,
};
use crate::task::{with_defaults, PType, Ports, Registry, TaskKind};
use crate::template::{self, Ref, Segment};

/// Executors a task may name.
pub const EXECUTORS: &[&str] = &["local"];

/// A resolved pipeline param.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub value: J,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum InputSource {
    /// An output of another task (index into `Plan::tasks`).
    Task { task: usize, output: Box<str> },
    /// A file path (absolute after planning).
    File(Box<Path>),
    /// A glob pattern (absolute after planning), expanded when the task is expanded.
    Glob(Box<str>),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Foreach {
    /// A literal list or a list param.
    Items(Vec<String>),
    Glob(String),
    Range(i64, i64),
    /// One instance per upstream instance (if that task fans out) or per line of its output.
    From {
        task: usize,
        output: String,
    },
}

/// A task's outputs: name -> path relative to the instance's output directory (may use
/// `${item}`). Shared between the templates that declare the same list (every task of a kind
/// with fixed outputs, and most tasks of a generated pipeline).
pub type Outputs = Arc<[(Box<str>, Box<str>)]>;

/// The settings most tasks leave at their defaults. Shared by `Arc` between the templates whose
/// settings are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub retries: Retries,
    pub timeout_secs: Option<f64>,
    pub resources: Resources,
    pub executor: String,
    pub partial_inputs: bool,
    pub description: Option<String>,
}

/// A task template: one task of the pipeline, before fan-out.
///
/// A generated pipeline has 100,000 of them, so it is kept small (104 bytes, and about 70 bytes of
/// heap for a task with one input): what most tasks share is shared (`with`, `outputs`,
/// `settings`), what is rare is boxed (`foreach`), and lists that never grow are boxed slices.
#[derive(Clone)]
pub struct TaskTemplate {
    pub name: Box<str>,
    pub kind: Arc<dyn TaskKind>,
    /// Params with defaults filled and `${params.*}` resolved; other templates remain. Shared
    /// between the templates whose params are all their kind's defaults (a pipeline of 100k
    /// tasks held 100k copies of the same map: 78 of a nothing-to-do run's 297 MB).
    pub with: Arc<Map<String, J>>,
    pub inputs: Box<[(Box<str>, InputSource)]>,
    pub outputs: Outputs,
    pub foreach: Option<Box<Foreach>>,
    pub settings: Arc<Settings>,
    /// Templates this one reads from (inputs and foreach), deduplicated, in declaration order.
    pub upstream: Box<[u32]>,
}

impl TaskTemplate {
    pub fn fans_out(&self) -> bool {
        self.foreach.is_some()
    }

    /// The path of output `name`, relative to the instance's output directory.
    pub fn output_path(&self, name: &str) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, p)| &**p)
    }
}

/// Hands out one `Arc` per distinct [`Settings`] and [`Outputs`], so that the templates with
/// equal ones share them (while compiling, and while reading a kept plan). Settings are told
/// apart by their kept encoding (they hold floats, which are not `Eq`).
#[derive(Default)]
struct Interner {
    settings: HashMap<Vec<u8>, Arc<Settings>>,
    outputs: HashSet<Outputs>,
}

impl Interner {
    fn settings(&mut self, s: Settings) -> Arc<Settings> {
        let mut encoded = Vec::new();
        cached::put_settings(&mut encoded, &s);
        self.settings_encoded(&encoded, || s)
    }

    /// The settings whose kept encoding is `encoded`, made by `make` if not seen yet.
    fn settings_encoded(
        &mut self,
        encoded: &[u8],
        make: impl FnOnce() -> Settings,
    ) -> Arc<Settings> {
        if let Some(s) = self.settings.get(encoded) {
            return Arc::clone(s);
        }
        let s = Arc::new(make());
        self.settings.insert(encoded.to_vec(), Arc::clone(&s));
        s
    }

    fn outputs(&mut self, outputs: Vec<(Box<str>, Box<str>)>) -> Outputs {
        if let Some(shared) = self.outputs.get(&outputs[..]) {
            return Arc::clone(shared);
        }
        let outputs: Outputs = outputs.into();
        self.outputs.insert(Arc::clone(&outputs));
        outputs
    }
}

/// A validated pipeline, ready to expand and run.
#[derive(Clone)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    /// Directory against which relative paths in the pipeline resolve.
    pub base_dir: PathBuf,
    pub params: Vec<Param>,
    pub tasks: Vec<TaskTemplate>,
    /// Task indices in a topological order (ties broken by YAML order, for stable output).
    pub order: Vec<usize>,
    /// Per task, whether another task reads from it. The edges themselves are the templates'
    /// `upstream` lists (a petgraph graph of them cost 42 bytes a task).
    read: Vec<bool>,
}

impl Plan {
    /// A plan of these templates, whose `upstream` lists are the edges (acyclic: the compiler
    /// checks).
    pub fn new(
        name: String,
        description: Option<String>,
        base_dir: PathBuf,
        params: Vec<Param>,
        tasks: Vec<TaskTemplate>,
    ) -> Plan {
        let upstream: Vec<&[u32]> = tasks.iter().map(|t| &*t.upstream).collect();
        let order = stable_topo(&upstream);
        Plan::ordered(name, description, base_dir, params, tasks, order)
    }

    /// A plan whose tasks are in this topological order (all of them).
    fn ordered(
        name: String,
        description: Option<String>,
        base_dir: PathBuf,
        params: Vec<Param>,
        tasks: Vec<TaskTemplate>,
        order: Vec<usize>,
    ) -> Plan {
        let mut read = vec![false; tasks.len()];
        for t in &tasks {
            for &u in &t.upstream {
                read[u as usize] = true;
            }
        }
        Plan {
            name,
            description,
            base_dir,
            params,
            tasks,
            order,
            read,
        }
    }

    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| *t.name == *name)
    }

    /// Whether some task reads from task `t`.
    pub fn is_read(&self, t: usize) -> bool {
        self.read[t]
    }

    /// Task indices downstream of `start` (inclusive).
    pub fn downstream(&self, start: usize) -> BTreeSet<usize> {
        let upstream: Vec<&[u32]> = self.tasks.iter().map(|t| &*t.upstream).collect();
        let readers = readers(&upstream);
        let mut seen = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(t) = stack.pop() {
            for &n in &readers[t] {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        seen
    }

    /// The fan-out domain of a task: tasks in the same domain pair their instances by key.
    pub fn domain(&self, t: usize) -> Option<usize> {
        match self.tasks[t].foreach.as_deref() {
            None => None,
            Some(Foreach::From { task, .. }) if self.tasks[*task].fans_out() => self.domain(*task),
            Some(_) => Some(t),
        }
    }
}

/// Per task, the tasks that read from it (the edges reversed), in task order.
fn readers<U: AsRef<[u32]>>(upstream: &[U]) -> Vec<Vec<usize>> {
    let mut readers = vec![Vec::new(); upstream.len()];
    for (t, up) in upstream.iter().enumerate() {
        for &u in up.as_ref() {
            readers[u as usize].push(t);
        }
    }
    readers
}

/// Compiles a raw pipeline with `--set` overrides into a plan, or every error found.
pub fn compile(
    mut raw: RawPipeline,
    registry: &Registry,
    overrides: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<Plan, Diagnostics> {
    let loaded = std::mem::take(&mut raw.tasks);
    let mut cx = Compiler {
        raw: &raw,
        registry,
        diags: Diagnostics::default(),
        base_dir,
        defaults: HashMap::new(),
        shared: Interner::default(),
    };
    let params = cx.params(overrides);
    let plan = cx.tasks(loaded, &params);
    if cx.diags.is_empty() {
        plan.ok_or(cx.diags)
    } else {
        Err(cx.diags.sorted())
    }
}

/// The pipeline's task names in YAML order, and their order by name for lookups (4 bytes a task,
/// where a map took about 30).
struct Names {
    names: Vec<Sp<Text>>,
    by_name: Vec<u32>,
}

impl Names {
    fn new(names: Vec<Sp<Text>>) -> Names {
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| names[a as usize].value.cmp(&names[b as usize].value));
        Names { names, by_name }
    }

    /// The index of the task with this name.
    fn get(&self, name: &str) -> Option<usize> {
        let at = self
            .by_name
            .binary_search_by(|&i| self.names[i as usize].value.as_str().cmp(name))
            .ok()?;
        Some(self.by_name[at] as usize)
    }

    /// The names in YAML order.
    fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| n.value.as_str())
    }
}

struct Compiler<'a> {
    raw: &'a RawPipeline,
    registry: &'a Registry,
    diags: Diagnostics,
    base_dir: &'a Path,
    /// Per task kind, its params with nothing but the defaults, shared by the tasks that set none.
    defaults: HashMap<&'static str, Arc<Map<String, J>>>,
    /// Settings and output lists, one `Arc` per distinct value.
    shared: Interner,
}

/// Converts a YAML node to a param value of the declared type.
fn param_value(ty: ParamType, node: &Node) -> Result<J, String> {
    let v = node.to_json();
    let ok = match ty {
        ParamType::String | ParamType::Path => v.is_string(),
        ParamType::Int => v.is_i64(),
        ParamType::Float => v.is_number(),
        ParamType::Bool => v.is_boolean(),
        ParamType::List => v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| !x.is_array() && !x.is_object())),
    };
    if ok {
        Ok(if ty == ParamType::Float {
            J::from(v.as_f64().unwrap_or(0.0))
        } else {
            v
        })
    } else {
        Err(format!(
            "expected {}, found {}",
            type_words(ty),
            node.value.describe()
        ))
    }
}

fn type_words(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "a string",
        ParamType::Path => "a path (string)",
        ParamType::Int => "an integer",
        ParamType::Float => "a number",
        ParamType::Bool => "true or false",
        ParamType::List => "a list of scalars",
    }
}

/// Parses a `--set` value as the param's type.
fn parse_override(ty: ParamType, s: &str) -> Result<J, String> {
    match ty {
        ParamType::String => Ok(J::from(s)),
        ParamType::Path => {
            let p = Path::new(s);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map(|d| d.join(p))
                    .unwrap_or_else(|_| p.to_path_buf())
            };
            Ok(J::from(abs.display().to_string()))
        }
        ParamType::Int => s
            .trim()
            .parse::<i64>()
            .map(J::from)
            .map_err(|_| format!("expected an integer, found `{s}`")),
        ParamType::Float => s
            .trim()
            .parse::<f64>()
            .map(J::from)
            .map_err(|_| format!("expected a number, found `{s}`")),
        ParamType::Bool => match s.trim() {
            "true" | "yes" | "1" => Ok(J::Bool(true)),
            "false" | "no" | "0" => Ok(J::Bool(false)),
            _ => Err(format!("expected true or false, found `{s}`")),
        },
        ParamType::List => Ok(J::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(J::from)
                .collect(),
        )),
    }
}

/// A scalar JSON value as template text.
pub fn scalar_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Array(a) => a.iter().map(scalar_text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

struct ParamScope<'p>(&'p [Param]);

impl template::Scope for ParamScope<'_> {
    fn lookup(&self, r: &Ref) -> Option<Vec<String>> {
        let Ref::Param(n) = r else { return None };
        let p = self.0.iter().find(|p| &p.name == n)?;
        Some(match &p.value {
            J::Array(a) => a.iter().map(scalar_text).collect(),
            v => vec![scalar_text(v)],
        })
    }
}

/// What a template may reference in one task.
struct RefRules<'r> {
    params: &'r [Param],
    fans_out: bool,
    inputs: Vec<&'r str>,
    outputs: Vec<&'r str>,
    /// Inputs/outputs are not allowed (e.g. in output paths or foreach).
    params_only: bool,
}

impl<'a> Compiler<'a> {
    fn params(&mut self, overrides: &BTreeMap<String, String>) -> Vec<Param> {
        let mut out: Vec<Param> = Vec::new();
        let mut seen: BTreeMap<&str, &At> = BTreeMap::new();
        for p in &self.raw.params {
            if let Some(first) = seen.insert(&p.name.value, &p.name.at) {
                self.diags.push(
                    p.name
                        .at
                        .error(
                            "duplicate-param",
                            format!("param `{}` is defined twice", p.name.value),
                        )
                        .note(format!(
                            "first defined at {}:{}:{}",
                            first.source.path, first.pos.line, first.pos.col
                        ))
                        .help("param names are unique across the pipeline and its imports"),
                );
                continue;
            }
            let value = match (overrides.get(p.name.value.as_str()), &p.default) {
                (Some(s), _) => match parse_override(p.ty, s) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.diags.push(Diagnostic::new(
                            "bad-override",
                            Where::CommandLine(format!("--set {}={s}", p.name.value)),
                            format!("param `{}` (type {}): {e}", p.name.value, p.ty.name()),
                        ));
                        None
                    }
                },
                (None, Some(node)) => match param_value(p.ty, node) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.diags.push(
                            At {
                                source: p.name.at.source.clone(),
                                pos: node.pos,
                                len: node.len,
                            }
                            .error(
                                "wrong-type",
                                format!("default of param `{}`: {e}", p.name.value),
                            )
                            .help(format!(
                                "give a default of type {}, or change the param's `type:`",
                                p.ty.name()
                            )),
                        );
                        None
                    }
                },
                (None, None) => {
                    self.diags.push(
                        p.name
                            .at
                            .error(
                                "missing-param",
                                format!("param `{}` has no default and was not set", p.name.value),
                            )
                            .help(format!("pass `--set {}=VALUE`", p.name.value)),
                    );
                    None
                }
            };
            if let Some(mut value) = value {
                if p.ty == ParamType::Path && overrides.get(p.name.value.as_str()).is_none() {
                    if let Some(s) = value.as_str() {
                        value = J::from(self.base_dir.join(s).display().to_string());
                    }
                }
                out.push(Param {
                    name: p.name.value.to_string(),
                    ty: p.ty,
                    value,
                    description: p.description.clone(),
                });
            }
        }
        for (k, v) in overrides {
            if !self.raw.params.iter().any(|p| &p.name.value == k) {
                self.diags.push(
                    Diagnostic::new(
                        "unknown-param",
                        Where::CommandLine(format!("--set {k}={v}")),
                        format!("the pipeline has no param `{k}`"),
                    )
                    .help_opt(
                        did_you_mean(k, self.raw.params.iter().map(|p| p.name.value.as_str()))
                            .or_else(|| {
                                let names: Vec<_> = self
                                    .raw
                                    .params
                                    .iter()
                                    .map(|p| p.name.value.as_str())
                                    .collect();
                                Some(if names.is_empty() {
                                    "this pipeline has no params".into()
                                } else {
                                    format!("params are: {}", names.join(", "))
                                })
                            }),
                    ),
                );
            }
        }
        out
    }

    /// Checks every `${...}` in a string; reports at the exact column where possible.
    fn check_template(&mut self, s: &str, at: &At, rules: &RefRules) {
        // A quoted scalar starts one column before its text.
        let quote = u32::from(at.len as usize > s.chars().count() && !s.contains('\n'));
        let segs = match template::parse(s) {
            Ok(segs) => segs,
            Err(e) => {
                let text: String = s
                    .chars()
                    .skip(e.offset as usize)
                    .take(e.len as usize)
                    .collect();
                let help = match text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
                    Some(inner) => template_help(inner.trim(), rules),
                    None => "close it with `}`, or write `$${` for a literal `${`".to_owned(),
                };
                self.diags.push(
                    at.shifted(e.offset + quote, e.len)
                        .error("bad-template", e.message)
                        .help(help),
                );
                return;
            }
        };
        for seg in segs {
            let Segment::Ref { r, offset, len } = seg else {
                continue;
            };
            let here = if s.contains('\n') {
                at.clone()
            } else {
                at.shifted(offset + quote, len)
            };
            match &r {
                Ref::Param(n) => {
                    // Checked against the declared params, not the resolved ones: a param
                    // without a value (no default, or a bad one) is reported once, where it is
                    // declared, not again at each use.
                    let declared = || self.raw.params.iter().map(|p| p.name.value.as_str());
                    if !declared().any(|p| p == n) {
                        self.diags.push(
                            here.error(
                                "unknown-param",
                                format!("`${{params.{n}}}`: the pipeline has no param `{n}`"),
                            )
                            .help_opt(
                                did_you_mean(n, declared()).or_else(|| {
                                    Some(
                                        "declare it under `params:` at the top of the pipeline"
                                            .into(),
                                    )
                                }),
                            ),
                        );
                    }
                }
                Ref::Item => {
                    if !rules.fans_out {
                        self.diags.push(
                            here.error(
                                "bad-template",
                                "`${item}` is used but the task has no `foreach`",
                            )
                            .help("add `foreach:` to the task, or remove `${item}`"),
                        );
                    }
                }
                Ref::Input(n) | Ref::Output(n) if rules.params_only => {
                    let _ = n;
                    self.diags.push(here.error(
                        "bad-template",
                        "input and output paths cannot be used here; only `${params.NAME}` and `${item}`",
                    ));
                }
                Ref::Input(n) => {
                    if !rules.inputs.contains(&n.as_str()) {
                        self.diags.push(
                            here.error(
                                "unknown-input",
                                format!("`${{inputs.{n}}}`: the task has no input `{n}`"),
                            )
                            .help_opt(
                                did_you_mean(n, rules.inputs.iter().copied()).or_else(|| {
                                    Some(format!(
                                        "declare it under `inputs:`; inputs are: {}",
                                        list_or_none(&rules.inputs)
                                    ))
                                }),
                            ),
                        );
                    }
                }
                Ref::Output(n) => {
                    if !rules.outputs.contains(&n.as_str()) {
                        self.diags.push(
                            here.error(
                                "unknown-output",
                                format!("`${{outputs.{n}}}`: the task has no output `{n}`"),
                            )
                            .help_opt(
                                did_you_mean(n, rules.outputs.iter().copied()).or_else(|| {
                                    Some(format!(
                                        "declare it under `outputs:`; outputs are: {}",
                                        list_or_none(&rules.outputs)
                                    ))
                                }),
                            ),
                        );
                    }
                }
                Ref::OutDir => {}
            }
        }
    }

    fn check_node_templates(&mut self, node: &Node, at_source: &At, rules: &RefRules) {
        match &node.value {
            Value::Str(s) => {
                let at = At {
                    source: at_source.source.clone(),
                    pos: node.pos,
                    len: node.len,
                };
                self.check_template(s, &at, rules);
            }
            Value::Seq(items) => items
                .iter()
                .for_each(|n| self.check_node_templates(n, at_source, rules)),
            Value::Map(es) => es
                .iter()
                .for_each(|(_, n)| self.check_node_templates(n, at_source, rules)),
            _ => {}
        }
    }

    /// Resolves params in a path and makes it absolute against the pipeline's directory. A path
    /// that still holds `${item}` is left as it is: it is made absolute when the item is known.
    fn resolve_path(&self, s: &str, params: &[Param]) -> PathBuf {
        let s = template::render(s, &ParamScope(params));
        let p = Path::new(&s);
        if p.is_absolute() || s.contains("${") {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Compiles the loaded tasks, each let go of as soon as it is compiled: a generated
    /// pipeline's 100,000 loaded tasks (55 MB) and their templates were held at once.
    fn tasks(&mut self, mut loaded: Vec<RawTask>, params: &[Param]) -> Option<Plan> {
        // Names first, so references can be checked whatever the order.
        let mut first_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut duplicate = vec![false; loaded.len()];
        for (i, t) in loaded.iter().enumerate() {
            if let Some(&first) = first_of.get(t.name.value.as_str()) {
                let f = &loaded[first].name.at;
                self.diags.push(
                    t.name
                        .at
                        .error(
                            "duplicate-task",
                            format!("task `{}` is defined twice", t.name.value),
                        )
                        .note(format!(
                            "first defined at {}:{}:{}",
                            f.source.path, f.pos.line, f.pos.col
                        ))
                        .help("task names are unique across the pipeline and its imports"),
                );
                duplicate[i] = true;
                continue;
            }
            first_of.insert(&t.name.value, i);
        }
        drop(first_of);
        let mut at = 0;
        loaded.retain(|_| {
            at += 1;
            !duplicate[at - 1]
        });
        let names = Names::new(loaded.iter().map(|t| t.name.clone()).collect());

        // Declared output names per task (fixed by the kind, or by the author).
        let outputs_of = |t: &RawTask| -> Vec<String> {
            match self.registry.get(&t.uses.value).map(|k| k.outputs()) {
                Some(Ports::Fixed(ports)) => ports.iter().map(|p| p.name.to_owned()).collect(),
                _ => t.outputs.iter().map(|(n, _)| n.value.to_string()).collect(),
            }
        };
        let all_outputs: Vec<Vec<String>> = loaded.iter().map(outputs_of).collect();

        let n = loaded.len();
        // Both grow as the loaded tasks go (reserved whole, they were 14 MB of a 100,000-task
        // pipeline's peak, next to all of its loaded tasks).
        let mut templates = Vec::new();
        // Edges with where they are written (for cycle chains). A task's edges are pushed in
        // the order of its inputs, which is all their order means.
        let mut edges: Vec<(usize, usize, At)> = Vec::new();
        // From the last: the loaded tasks' vector shrinks as they go.
        while let Some(t) = loaded.pop() {
            let ti = loaded.len();
            if let Some(tpl) = self.task(ti, &t, params, &names, &all_outputs, &mut edges) {
                templates.push(tpl);
            }
            if loaded.len() < loaded.capacity() / 2 {
                loaded.shrink_to_fit();
            }
        }
        templates.reverse();
        templates.shrink_to_fit();
        edges.shrink_to_fit();
        // Each task's upstream tasks, once each, in the order its inputs name them (a task's
        // edges are together).
        let mut upstream: Vec<Vec<u32>> = vec![Vec::new(); n];
        for &(from, to, _) in &edges {
            if !upstream[to].contains(&(from as u32)) {
                upstream[to].push(from as u32);
            }
        }
        // The order also finds whether there is a cycle (some task never comes); finding the
        // cycles themselves (12 MB for a chain of 100,000 tasks) is left to when there is one.
        let order = stable_topo(&upstream);
        if order.len() < n {
            self.check_cycles(&names.names, &edges);
        }
        if !self.diags.is_empty() || templates.len() != n {
            return None;
        }
        for (t, up) in templates.iter_mut().zip(upstream) {
            t.upstream = up.into();
        }
        Some(Plan::ordered(
            self.raw.name.value.to_string(),
            self.raw.description.clone(),
            self.base_dir.to_path_buf(),
            params.to_vec(),
            templates,
            order,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn task(
        &mut self,
        ti: usize,
        t: &RawTask,
        params: &[Param],
        names: &Names,
        all_outputs: &[Vec<String>],
        edges: &mut Vec<(usize, usize, At)>,
    ) -> Option<TaskTemplate> {
        let kind = match self.registry.get(&t.uses.value) {
            Some(k) => k.clone(),
            None => {
                self.diags.push(
                    t.uses
                        .at
                        .error(
                            "unknown-task-kind",
                            format!("unknown task kind `{}`", t.uses.value),
                        )
                        .help(
                            did_you_mean(&t.uses.value, self.registry.names()).unwrap_or_else(
                                || {
                                    format!(
                                        "task kinds are: {}",
                                        self.registry.names().collect::<Vec<_>>().join(", ")
                                    )
                                },
                            ),
                        ),
                );
                // Still check references so that all errors show at once.
                self.references(ti, t, names, all_outputs, edges);
                return None;
            }
        };
        let executor = match &t.settings().executor {
            Some(e) if !EXECUTORS.contains(&e.value.as_str()) => {
                self.diags.push(
                    e.at.error(
                        "unknown-executor",
                        format!("unknown executor `{}`", e.value),
                    )
                    .help(
                        did_you_mean(&e.value, EXECUTORS.iter().copied())
                            .unwrap_or_else(|| format!("executors are: {}", EXECUTORS.join(", "))),
                    ),
                );
                "local".to_owned()
            }
            Some(e) => e.value.to_string(),
            None => "local".to_owned(),
        };

        // Ports.
        let input_names: Vec<&str> = t.inputs.iter().map(|(n, _)| n.value.as_str()).collect();
        if let Ports::Fixed(ports) = kind.inputs() {
            for (n, _) in &t.inputs {
                if !ports.iter().any(|p| p.name == n.value) {
                    self.diags.push(
                        n.at.error(
                            "unknown-input",
                            format!("task kind `{}` has no input `{}`", kind.name(), n.value),
                        )
                        .help(
                            did_you_mean(&n.value, ports.iter().map(|p| p.name)).unwrap_or_else(
                                || {
                                    format!(
                                        "inputs of `{}` are: {}",
                                        kind.name(),
                                        list_or_none(
                                            &ports.iter().map(|p| p.name).collect::<Vec<_>>()
                                        )
                                    )
                                },
                            ),
                        ),
                    );
                }
            }
            for p in ports.iter().filter(|p| p.required) {
                if !input_names.contains(&p.name) {
                    self.diags.push(
                        t.name
                            .at
                            .error(
                                "missing-input",
                                format!(
                                    "task `{}` needs input `{}` ({})",
                                    t.name.value, p.name, p.doc
                                ),
                            )
                            .help(format!("add `inputs: {{{}: TASK.OUTPUT}}`", p.name)),
                    );
                }
            }
        }
        let mut outputs: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(t.outputs.len());
        match kind.outputs() {
            Ports::Fixed(ports) => {
                if let Some(at) = &t.outputs_at {
                    self.diags.push(
                        at.error(
                            "fixed-outputs",
                            format!(
                                "task kind `{}` declares its own outputs; `outputs:` cannot be set",
                                kind.name()
                            ),
                        )
                        .help(format!(
                            "its outputs are: {}",
                            list_or_none(&ports.iter().map(|p| p.name).collect::<Vec<_>>())
                        )),
                    );
                }
                outputs = ports
                    .iter()
                    .map(|p| (p.name.into(), p.file.into()))
                    .collect();
            }
            Ports::Declared => {
                let mut paths: BTreeMap<String, &Sp<Text>> = BTreeMap::new();
                for (n, p) in &t.outputs {
                    if !crate::model::valid_name(&n.value) {
                        self.diags.push(n.at.error(
                            "bad-name",
                            format!("output name `{}` is not a valid name", n.value),
                        ));
                    }
                    let path = Path::new(&p.value);
                    if path.is_absolute()
                        || path
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir))
                        || p.value.is_empty()
                    {
                        self.diags.push(
                            p.at.error("bad-output-path", format!("output `{}`: `{}` must be a relative path inside the task's output directory", n.value, p.value))
                                .help("outputs are written under the task's own directory; downstream tasks read them by `TASK.OUTPUT`"),
                        );
                        continue;
                    }
                    let rules = RefRules {
                        params,
                        fans_out: t.foreach.is_some(),
                        inputs: vec![],
                        outputs: vec![],
                        params_only: true,
                    };
                    self.check_template(&p.value, &p.at, &rules);
                    let normal = normalize(&template::render(&p.value, &ParamScope(params)));
                    if let Some(first) = paths.insert(normal.clone(), n) {
                        self.diags.push(
                            p.at.error(
                                "duplicate-output",
                                format!(
                                    "outputs `{}` and `{}` are both written to `{normal}`",
                                    first.value, n.value
                                ),
                            )
                            .help("each output is produced once: give each its own path"),
                        );
                    }
                    outputs.push((n.value.as_str().into(), p.value.as_str().into()));
                }
            }
        }
        let output_names: Vec<&str> = outputs.iter().map(|(n, _)| &**n).collect();

        // Params of the kind.
        let specs = kind.params();
        let mut with = Map::new();
        let rules = RefRules {
            params,
            fans_out: t.foreach.is_some(),
            inputs: input_names.clone(),
            outputs: output_names.clone(),
            params_only: false,
        };
        for (k, v) in &t.with {
            let Some(spec) = specs.iter().find(|s| s.name == k.value) else {
                self.diags.push(
                    k.at.error(
                        "unknown-param",
                        format!("task kind `{}` has no param `{}`", kind.name(), k.value),
                    )
                    .help(
                        did_you_mean(&k.value, specs.iter().map(|s| s.name)).unwrap_or_else(|| {
                            format!(
                                "params of `{}` are: {}",
                                kind.name(),
                                list_or_none(&specs.iter().map(|s| s.name).collect::<Vec<_>>())
                            )
                        }),
                    ),
                );
                continue;
            };
            let json = v.to_json();
            if !spec.ty.accepts(&json) {
                self.diags.push(
                    At {
                        source: k.at.source.clone(),
                        pos: v.pos,
                        len: v.len,
                    }
                    .error(
                        "wrong-type",
                        format!(
                            "param `{}` of `{}`: expected {}, found {}",
                            k.value,
                            kind.name(),
                            spec.ty.describe(),
                            v.value.describe()
                        ),
                    )
                    .help_opt(kind_param_help(spec.ty, &k.value, v)),
                );
                continue;
            }
            self.check_node_templates(v, &k.at, &rules);
            with.insert(
                k.value.to_string(),
                template::render_json(&json, &ParamScope(params)),
            );
        }
        for spec in specs.iter().filter(|s| s.required) {
            if !with.contains_key(spec.name) && !t.with.iter().any(|(k, _)| k.value == spec.name) {
                self.diags.push(
                    t.uses
                        .at
                        .error(
                            "missing-param",
                            format!(
                                "task `{}` ({}) needs param `{}`",
                                t.name.value,
                                kind.name(),
                                spec.name
                            ),
                        )
                        .help(format!("add `with: {{{}: ...}}`: {}", spec.name, spec.doc)),
                );
            }
        }
        let with = with_defaults(kind.as_ref(), with);
        for (param, message) in kind.validate(&with) {
            let at = t
                .with
                .iter()
                .find(|(k, _)| k.value == param)
                .map(|(_, v)| At {
                    source: t.uses.at.source.clone(),
                    pos: v.pos,
                    len: v.len,
                })
                .unwrap_or_else(|| t.uses.at.clone());
            self.diags.push(at.error(
                "bad-param",
                format!("param `{param}` of `{}`: {message}", kind.name()),
            ));
        }
        if let Some(stdout) = with.get("stdout").and_then(J::as_str) {
            if matches!(kind.outputs(), Ports::Declared) && !output_names.contains(&stdout) {
                let at = t
                    .with
                    .iter()
                    .find(|(k, _)| k.value == "stdout")
                    .map(|(_, v)| At {
                        source: t.uses.at.source.clone(),
                        pos: v.pos,
                        len: v.len,
                    })
                    .unwrap_or_else(|| t.uses.at.clone());
                self.diags.push(
                    at.error(
                        "unknown-output",
                        format!(
                            "`stdout` names output `{stdout}`, which the task does not declare"
                        ),
                    )
                    .help("declare it under `outputs:`"),
                );
            }
        }

        let (inputs, foreach) = self.references(ti, t, names, all_outputs, edges);
        let foreach = self.foreach_value(t, params, foreach);
        let inputs = inputs
            .into_iter()
            .map(|(n, src)| {
                let src = match src {
                    InputSource::File(p) => InputSource::File(
                        self.resolve_path(&p.display().to_string(), params)
                            .into_boxed_path(),
                    ),
                    InputSource::Glob(g) => InputSource::Glob(
                        self.resolve_path(&g, params).display().to_string().into(),
                    ),
                    other => other,
                };
                (n, src)
            })
            .collect();
        let defaults = self
            .defaults
            .entry(kind.name())
            .or_insert_with(|| Arc::new(with_defaults(kind.as_ref(), Map::new())));
        let with = if with == **defaults {
            Arc::clone(defaults)
        } else {
            Arc::new(with)
        };
        let raw = t.settings();
        let settings = self.shared.settings(Settings {
            retries: raw.retries,
            timeout_secs: raw.timeout_secs,
            resources: Resources {
                cpus: raw.resources.cpus.max(1),
                memory_mb: raw.resources.memory_mb,
            },
            executor,
            partial_inputs: raw.partial_inputs,
            description: raw.description.clone(),
        });
        Some(TaskTemplate {
            name: t.name.value.as_str().into(),
            kind,
            with,
            inputs,
            outputs: self.shared.outputs(outputs),
            foreach: foreach.map(Box::new),
            settings,
            // Filled in once every edge is known (see `tasks`).
            upstream: Box::default(),
        })
    }

    /// Checks input and foreach references, records edges. Returns the inputs and the foreach
    /// source task (if `from`).
    #[allow(clippy::type_complexity)]
    fn references(
        &mut self,
        ti: usize,
        t: &RawTask,
        names: &Names,
        all_outputs: &[Vec<String>],
        edges: &mut Vec<(usize, usize, At)>,
    ) -> (Vec<(Box<str>, InputSource)>, Option<(usize, String)>) {
        let mut resolve = |diags: &mut Diagnostics,
                           task: &Sp<Text>,
                           output: &Sp<Text>|
         -> Option<usize> {
            let Some(ui) = names.get(&task.value) else {
                diags.push(
                    task.at
                        .error("unknown-task", format!("no task named `{}`", task.value))
                        .help(did_you_mean(&task.value, names.iter()).unwrap_or_else(|| {
                            format!("tasks are: {}", names.iter().collect::<Vec<_>>().join(", "))
                        })),
                );
                return None;
            };
            let outs = &all_outputs[ui];
            if !outs.iter().any(|o| o == &output.value) {
                diags.push(
                    output
                        .at
                        .error(
                            "unknown-output",
                            format!("task `{}` has no output `{}`", task.value, output.value),
                        )
                        .help(
                            did_you_mean(&output.value, outs.iter().map(String::as_str))
                                .unwrap_or_else(|| {
                                    format!(
                                        "outputs of `{}` are: {}",
                                        task.value,
                                        list_or_none(
                                            &outs.iter().map(String::as_str).collect::<Vec<_>>()
                                        )
                                    )
                                }),
                        ),
                );
                return None;
            }
            edges.push((ui, ti, task.at.clone()));
            Some(ui)
        };
        let mut inputs = Vec::with_capacity(t.inputs.len());
        for (n, src) in &t.inputs {
            match src {
                RawInput::Output { task, output } => {
                    if let Some(ui) = resolve(&mut self.diags, task, output) {
                        inputs.push((
                            n.value.as_str().into(),
                            InputSource::Task {
                                task: ui,
                                output: output.value.as_str().into(),
                            },
                        ));
                    }
                }
                RawInput::File(p) => inputs.push((
                    n.value.as_str().into(),
                    InputSource::File(Path::new(&p.value).into()),
                )),
                RawInput::Glob(g) => inputs.push((
                    n.value.as_str().into(),
                    InputSource::Glob(g.value.as_str().into()),
                )),
            }
        }
        let from = match t.foreach.as_deref() {
            Some(RawForeach::From { task, output }) => {
                resolve(&mut self.diags, task, output).map(|u| (u, output.value.to_string()))
            }
            _ => None,
        };
        (inputs, from)
    }

    fn foreach_value(
        &mut self,
        t: &RawTask,
        params: &[Param],
        from: Option<(usize, String)>,
    ) -> Option<Foreach> {
        let rules = RefRules {
            params,
            fans_out: false,
            inputs: vec![],
            outputs: vec![],
            params_only: true,
        };
        match t.foreach.as_deref()? {
            RawForeach::List(items) => {
                let mut out = Vec::new();
                for n in items {
                    match &n.value {
                        Value::Str(s) => {
                            let at = At {
                                source: t.name.at.source.clone(),
                                pos: n.pos,
                                len: n.len,
                            };
                            self.check_template(s, &at, &rules);
                            out.push(template::render(s, &ParamScope(params)));
                        }
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                            out.push(scalar_text(&n.to_json()))
                        }
                        other => self.diags.push(
                            At {
                                source: t.name.at.source.clone(),
                                pos: n.pos,
                                len: n.len,
                            }
                            .error(
                                "wrong-type",
                                format!(
                                    "foreach item: expected a scalar, found {}",
                                    other.describe()
                                ),
                            ),
                        ),
                    }
                }
                Some(Foreach::Items(out))
            }
            RawForeach::Param(s) => {
                let name = s
                    .value
                    .trim()
                    .strip_prefix("${params.")
                    .and_then(|x| x.strip_suffix('}'));
                let Some(name) = name else {
                    self.diags.push(s.at.error(
                        "bad-foreach",
                        format!(
                            "foreach: expected `${{params.NAME}}` naming a list param, found `{}`",
                            s.value
                        ),
                    ));
                    return None;
                };
                match params.iter().find(|p| p.name == name) {
                    Some(p) => match &p.value {
                        J::Array(a) => Some(Foreach::Items(a.iter().map(scalar_text).collect())),
                        _ => {
                            self.diags.push(
                                s.at.error(
                                    "bad-foreach",
                                    format!(
                                        "foreach: param `{name}` is of type {}, not a list",
                                        p.ty.name()
                                    ),
                                )
                                .help("declare it with `type: list`, or give it a list default such as `[a, b]`"),
                            );
                            None
                        }
                    },
                    None => {
                        self.check_template(&s.value, &s.at, &rules);
                        None
                    }
                }
            }
            RawForeach::Glob(g) => {
                self.check_template(&g.value, &g.at, &rules);
                Some(Foreach::Glob(
                    self.resolve_path(&g.value, params).display().to_string(),
                ))
            }
            RawForeach::Range { start, end, at } => {
                if end < start {
                    self.diags.push(
                        at.error(
                            "bad-foreach",
                            format!("range: end {end} is before start {start}"),
                        )
                        .help("write `{range: [START, END]}` with START <= END"),
                    );
                    return None;
                }
                Some(Foreach::Range(*start, *end))
            }
            RawForeach::From { .. } => from.map(|(task, output)| Foreach::From { task, output }),
        }
    }

    fn check_cycles(&mut self, tasks: &[Sp<Text>], edges: &[(usize, usize, At)]) {
        let mut g: DiGraph<usize, usize> = DiGraph::new();
        for i in 0..tasks.len() {
            g.add_node(i);
        }
        for (ei, (from, to, _)) in edges.iter().enumerate() {
            g.add_edge(NodeIndex::new(*from), NodeIndex::new(*to), ei);
        }
        // Kosaraju's algorithm is iterative in petgraph; its Tarjan recursion overflows the stack
        // on a chain of 100k tasks.
        let mut sccs = petgraph::algo::kosaraju_scc(&g);
        sccs.iter_mut().for_each(|c| c.sort());
        sccs.sort();
        let loops: BTreeSet<usize> = edges
            .iter()
            .filter(|(f, t, _)| f == t)
            .map(|(f, _, _)| *f)
            .collect();
        for scc in sccs {
            let self_loop = scc.len() == 1 && loops.contains(&scc[0].index());
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| n.index()).collect();
            // Walk the cycle from its first task (in YAML order), following edges inside the SCC.
            let start = *members.iter().next().unwrap_or(&0);
            let mut chain = vec![start];
            let mut chain_edges: Vec<&(usize, usize, At)> = Vec::new();
            let mut cur = start;
            let mut visited = BTreeSet::from([start]);
            loop {
                // Prefer the edge that closes the cycle, else the first unvisited member.
                let next = edges
                    .iter()
                    .filter(|(f, t, _)| *f == cur && members.contains(t))
                    .min_by_key(|(_, t, _)| (*t != start && visited.contains(t), *t != start, *t));
                let Some(e) = next else { break };
                chain_edges.push(e);
                chain.push(e.1);
                if e.1 == start || !visited.insert(e.1) {
                    break;
                }
                cur = e.1;
            }
            let names: Vec<&str> = chain.iter().map(|&i| tasks[i].value.as_str()).collect();
            let first_edge = chain_edges
                .first()
                .map(|e| e.2.clone())
                .unwrap_or_else(|| tasks[start].at.clone());
            // Point at the reference that closes the cycle into the first task.
            let closing = chain_edges
                .last()
                .map(|e| e.2.clone())
                .unwrap_or(first_edge);
            let mut d = closing.error(
                "cycle",
                format!(
                    "tasks depend on each other in a cycle: {}",
                    names.join(" -> ")
                ),
            );
            for e in &chain_edges {
                d = d.note(format!(
                    "`{}` reads from `{}` at {}:{}:{}",
                    tasks[e.1].value, tasks[e.0].value, e.2.source.path, e.2.pos.line, e.2.pos.col
                ));
            }
            self.diags.push(d.help("a task cannot depend on its own outputs; break the cycle by removing one of these inputs"));
        }
    }
}

/// A help for a `${...}` that does not parse: the closest valid reference, if any.
fn template_help(inner: &str, rules: &RefRules) -> String {
    let guess = match inner.split_once('.') {
        Some((head, name)) => did_you_mean(head, ["params", "inputs", "outputs"]).map(|_| {
            let head = ["params", "inputs", "outputs"]
                .into_iter()
                .min_by_key(|c| crate::diag::levenshtein(head, c))
                .unwrap_or("params");
            format!("${{{head}.{name}}}")
        }),
        None => ["item", "out_dir"]
            .into_iter()
            .chain(rules.params.iter().map(|p| p.name.as_str()))
            .min_by_key(|c| crate::diag::levenshtein(inner, c))
            .filter(|c| did_you_mean(inner, [*c]).is_some())
            .map(|c| {
                if c == "item" || c == "out_dir" {
                    format!("${{{c}}}")
                } else {
                    format!("${{params.{c}}}")
                }
            }),
    };
    match guess {
        Some(g) => format!("did you mean `{g}`?"),
        None => "write `$${` for a literal `${`".into(),
    }
}

/// A help for a task-kind param of the wrong type, where the fix is clear.
fn kind_param_help(ty: PType, name: &str, v: &Node) -> Option<String> {
    let Value::Str(s) = &v.value else {
        return None;
    };
    match ty {
        // `argv: "echo hello"`: a shell string; show it as the list it should be.
        PType::StrList => Some(format!(
            "write a list, one item per argument: `{name}: [{}]`",
            s.split_whitespace().collect::<Vec<_>>().join(", ")
        )),
        PType::Int if s.trim().parse::<i64>().is_ok() => Some(format!(
            "remove the quotes: `{name}: {}` is a number",
            s.trim()
        )),
        PType::Float if s.trim().parse::<f64>().is_ok() => Some(format!(
            "remove the quotes: `{name}: {}` is a number",
            s.trim()
        )),
        PType::Bool if matches!(s.trim(), "true" | "false") => Some(format!(
            "remove the quotes: `{name}: {}` is a boolean",
            s.trim()
        )),
        _ => None,
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

fn normalize(p: &str) -> String {
    Path::new(p)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Kahn's algorithm, always taking the ready task that comes first in the YAML.
fn stable_topo<U: AsRef<[u32]>>(upstream: &[U]) -> Vec<usize> {
    let mut indeg: Vec<usize> = upstream.iter().map(|u| u.as_ref().len()).collect();
    let readers = readers(upstream);
    let mut ready: BTreeSet<usize> = (0..upstream.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(upstream.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &m in &readers[i] {
            indeg[m] -= 1;
            if indeg[m] == 0 {
                ready.insert(m);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load_str;

    #[test]
    fn the_order_leaves_out_tasks_on_cycles_and_self_loops_only() {
        // upstream[t]: the tasks t reads from.
        let ordered = |upstream: &[&[u32]]| stable_topo(upstream).len() == upstream.len();
        assert!(ordered(&[&[], &[0], &[1], &[2]]));
        assert!(ordered(&[&[], &[0], &[0], &[1, 2, 0]]));
        assert!(ordered(&[&[], &[], &[]]));
        assert!(!ordered(&[&[], &[0, 2], &[1], &[2]]));
        assert!(!ordered(&[&[], &[1]]));
        // A chain too long for a recursive search.
        let chain: Vec<Vec<u32>> = (0..200_001u32)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert_eq!(stable_topo(&chain), (0..200_001).collect::<Vec<_>>());
    }

    /// `code: message (help: ...)` of every error of a pipeline text.
    fn errors(text: &str) -> Vec<String> {
        let raw = load_str("p.yaml", text, None).expect("the pipeline loads");
        let e = compile(raw, &Registry::builtin(), &BTreeMap::new(), Path::new("/"))
            .err()
            .expect("the pipeline has errors");
        e.0.iter()
            .map(|d| {
                let mut s = format!("{}: {}", d.code, d.message);
                if let Some(h) = &d.help {
                    s += &format!(" (help: {h})");
                }
                s
            })
            .collect()
    }

    #[test]
    fn a_param_without_value_is_reported_once() {
        // Not again as "no param `night`" where it is used.
        let e = errors(
            "name: t\nparams:\n  night: {type: string}\n  n: {type: int, default: x}\ntasks:\n  a:\n    uses: noop\n    with: {message: \"${params.night} ${params.n}\"}\n",
        );
        let codes: Vec<_> = e.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(codes, ["missing-param", "wrong-type"], "{e:?}");
    }

    #[test]
    fn a_misspelt_template_gets_a_suggestion() {
        let e = errors(
            "name: t\nparams: {night: x}\ntasks:\n  a:\n    uses: noop\n    with: {message: \"${param.night} ${itme} ${params.x\"}\n",
        );
        assert_eq!(e.len(), 1, "parsing stops at the first bad template: {e:?}");
        assert!(
            e[0].ends_with("(help: did you mean `${params.night}`?)"),
            "{e:?}"
        );
        let rules = RefRules {
            params: &[],
            fans_out: false,
            inputs: vec![],
            outputs: vec![],
            params_only: false,
        };
        assert_eq!(template_help("itme", &rules), "did you mean `${item}`?");
        assert_eq!(
            template_help("outptus.x", &rules),
            "did you mean `${outputs.x}`?"
        );
        assert_eq!(
            template_help("zzz.q", &rules),
            "write `$${` for a literal `${`"
        );
    }

    #[test]
    fn a_shell_string_argv_is_shown_as_a_list() {
        let e =
            errors("name: t\ntasks:\n  a:\n    uses: command\n    with: {argv: \"ls -l /tmp\"}\n");
        assert_eq!(
            e,
            ["wrong-type: param `argv` of `command`: expected a list of strings, found a string (help: write a list, one item per argument: `argv: [ls, -l, /tmp]`)"]
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_template_stays_small() {
        // 100,000 tasks of a generated pipeline: every 8 bytes here is 0.8 MB.
        assert_eq!(std::mem::size_of::<TaskTemplate>(), 104);
    }

    #[test]
    fn templates_share_equal_settings_and_outputs() {
        let raw = load_str(
            "p.yaml",
            "name: t\ntasks:\n  \
             b:\n    uses: noop\n    inputs: {prev: a.o}\n    outputs: {o: o.txt}\n  \
             a:\n    uses: noop\n    outputs: {o: o.txt}\n  \
             c:\n    uses: noop\n    inputs: {prev: a.o}\n    outputs: {o: c.txt}\n    \
             retries: {count: 1}\n",
            None,
        )
        .unwrap();
        let plan = compile(raw, &Registry::builtin(), &BTreeMap::new(), Path::new("/")).unwrap();
        let [b, a, c] = &plan.tasks[..] else {
            panic!("three tasks")
        };
        assert!(Arc::ptr_eq(&a.settings, &b.settings));
        assert!(!Arc::ptr_eq(&a.settings, &c.settings));
        assert_eq!((a.settings.retries.count, c.settings.retries.count), (0, 1));
        assert!(Arc::ptr_eq(&a.outputs, &b.outputs));
        assert_eq!(
            (a.output_path("o"), c.output_path("o"), c.output_path("x")),
            (Some("o.txt"), Some("c.txt"), None)
        );
        // The edges: `a` is read by `b` and `c`, and comes first.
        assert_eq!(
            (&*b.upstream, &*a.upstream, &*c.upstream),
            (&[1][..], &[][..], &[1][..])
        );
        assert_eq!(plan.order, [1, 0, 2]);
        assert_eq!(
            (plan.is_read(0), plan.is_read(1), plan.is_read(2)),
            (false, true, false)
        );
        assert_eq!(plan.downstream(1), BTreeSet::from([0, 1, 2]));
        assert_eq!(plan.downstream(2), BTreeSet::from([2]));
    }

    #[test]
    fn unknown_override_shows_its_value() {
        let raw = load_str(
            "p.yaml",
            "name: t\nparams: {night: x}\ntasks: {a: {uses: noop}}\n",
            None,
        )
        .unwrap();
        let overrides = BTreeMap::from([("nigth".to_owned(), "2024".to_owned())]);
        let e = compile(raw, &Registry::builtin(), &overrides, Path::new("/"))
            .err()
            .unwrap();
        let Where::CommandLine(arg) = &e.0[0].at else {
            panic!("expected a command-line error: {e}")
        };
        assert_eq!(arg, "--set nigth=2024");
    }
}
