//! Level 1: the pipeline as the author wrote it.
//!
//! [`load`] reads a YAML file (and its imports) into a [`RawPipeline`] whose every value keeps its
//! source position. It checks shape only (known keys, value types); meaning (task kinds, params,
//! references, cycles) is checked by [`crate::plan`]. All errors of a file are collected.

pub mod node;
pub mod text;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use node::{Key, Node, Value};
pub use text::Text;

use crate::diag::{did_you_mean, Diagnostic, Diagnostics, Pos, Source, Where};

/// A value with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    pub value: T,
    pub at: At,
}

/// A position in a given source (what diagnostics need).
#[derive(Debug, Clone)]
pub struct At {
    pub source: Arc<Source>,
    pub pos: Pos,
    pub len: u32,
}

impl PartialEq for At {
    fn eq(&self, other: &Self) -> bool {
        self.source.path == other.source.path && self.pos == other.pos
    }
}

impl At {
    pub fn whence(&self) -> Where {
        Where::File {
            source: self.source.clone(),
            pos: self.pos,
            len: self.len,
        }
    }

    /// A position `offset` characters further on the same line (inside a scalar).
    pub fn shifted(&self, offset: u32, len: u32) -> At {
        At {
            source: self.source.clone(),
            pos: Pos {
                line: self.pos.line,
                col: self.pos.col + offset,
            },
            len,
        }
    }

    pub fn error(&self, code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, self.whence(), message)
    }
}

/// The declared type of a pipeline param.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    Path,
    List,
}

impl ParamType {
    pub const ALL: [(&'static str, ParamType); 6] = [
        ("string", ParamType::String),
        ("int", ParamType::Int),
        ("float", ParamType::Float),
        ("bool", ParamType::Bool),
        ("path", ParamType::Path),
        ("list", ParamType::List),
    ];

    pub fn name(self) -> &'static str {
        ParamType::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("string")
    }

    fn infer(v: &Value) -> Option<ParamType> {
        Some(match v {
            Value::Bool(_) => ParamType::Bool,
            Value::Int(_) => ParamType::Int,
            Value::Float(_) => ParamType::Float,
            Value::Str(_) => ParamType::String,
            Value::Seq(_) => ParamType::List,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RawParam {
    pub name: Sp<Text>,
    pub ty: ParamType,
    pub default: Option<Node>,
    pub description: Option<String>,
}

/// Where a task input comes from.
#[derive(Debug, Clone)]
pub enum RawInput {
    /// `task.output`
    Output {
        task: Sp<Text>,
        output: Sp<Text>,
    },
    File(Sp<Text>),
    Glob(Sp<Text>),
}

#[derive(Debug, Clone)]
pub enum RawForeach {
    List(Box<[Node]>),
    /// A `${params.x}` string naming a list param.
    Param(Sp<Text>),
    Glob(Sp<Text>),
    From {
        task: Sp<Text>,
        output: Sp<Text>,
    },
    Range {
        start: i64,
        end: i64,
        at: At,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Retries {
    pub count: u32,
    pub backoff_secs: f64,
    pub factor: f64,
}

impl Retries {
    const DEFAULT: Retries = Retries {
        count: 0,
        backoff_secs: 1.0,
        factor: 2.0,
    };
}

impl Default for Retries {
    fn default() -> Self {
        Retries::DEFAULT
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub memory_mb: u64,
}

/// A task as written. What most tasks leave out is boxed, and absent when all of it is left
/// out: a generated pipeline has 100,000 tasks, all loaded before the first is compiled.
#[derive(Debug, Clone)]
pub struct RawTask {
    pub name: Sp<Text>,
    pub uses: Sp<Text>,
    pub with: Box<[(Sp<Text>, Node)]>,
    pub inputs: Box<[(Sp<Text>, RawInput)]>,
    pub outputs: Box<[(Sp<Text>, Sp<Text>)]>,
    pub outputs_at: Option<At>,
    pub foreach: Option<Box<RawForeach>>,
    settings: Option<Box<RawSettings>>,
}

/// A task's settings (all have defaults).
#[derive(Debug, Clone)]
pub struct RawSettings {
    pub description: Option<String>,
    pub retries: Retries,
    pub timeout_secs: Option<f64>,
    pub resources: Resources,
    pub executor: Option<Sp<Text>>,
    pub partial_inputs: bool,
}

impl RawSettings {
    const DEFAULT: RawSettings = RawSettings {
        description: None,
        retries: Retries::DEFAULT,
        timeout_secs: None,
        resources: Resources {
            cpus: 0,
            memory_mb: 0,
        },
        executor: None,
        partial_inputs: false,
    };
}

impl RawTask {
    pub fn settings(&self) -> &RawSettings {
        self.settings.as_deref().unwrap_or(&RawSettings::DEFAULT)
    }

    fn settings_mut(&mut self) -> &mut RawSettings {
        self.settings
            .get_or_insert_with(|| Box::new(RawSettings::DEFAULT))
    }
}

#[derive(Debug, Clone)]
pub struct RawPipeline {
    pub name: Sp<Text>,
    pub description: Option<String>,
    pub params: Vec<RawParam>,
    pub tasks: Vec<RawTask>,
    /// The root file and every imported file, in load order.
    pub sources: Vec<Arc<Source>>,
    /// The paths the imported files were read from (`sources[1..]`, same order).
    pub import_paths: Vec<PathBuf>,
}

/// Loads a pipeline file and its imports. Returns every shape error found.
pub fn load(path: &Path) -> Result<RawPipeline, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::new(
            "io",
            Where::CommandLine(path.display().to_string()),
            format!("cannot read pipeline: {e}"),
        )])
    })?;
    load_str(&path.display().to_string(), text, path.parent())
}

/// Loads a pipeline from text; `base` is where `imports` are resolved (None: imports rejected).
pub fn load_str(
    name: &str,
    text: impl Into<Arc<str>>,
    base: Option<&Path>,
) -> Result<RawPipeline, Diagnostics> {
    let mut cx = Loader {
        diags: Diagnostics::default(),
        seen: BTreeSet::new(),
    };
    if let Some(base) = base {
        // The root file counts as imported already, so that a file importing itself is caught
        // at its own `imports:` line (not one level down, in a second copy of itself).
        if let Some(file) = Path::new(name).file_name() {
            let root = base.join(file);
            cx.seen.insert(root.canonicalize().unwrap_or(root));
        }
    }
    let source = Source::new(name, text);
    let pipeline = cx.file(source, base, true);
    match pipeline {
        Some(p) if cx.diags.is_empty() => Ok(p),
        _ => Err(cx.diags.sorted()),
    }
}

struct Loader {
    diags: Diagnostics,
    seen: BTreeSet<PathBuf>,
}

fn at(source: &Arc<Source>, node: &Node) -> At {
    At {
        source: source.clone(),
        pos: node.pos,
        len: node.len,
    }
}

fn key_at(source: &Arc<Source>, key: &Key) -> At {
    At {
        source: source.clone(),
        pos: key.pos,
        len: key.name.chars().count() as u32,
    }
}

/// Reads a mapping, reporting keys outside `allowed`.
fn entries<'n>(
    diags: &mut Diagnostics,
    source: &Arc<Source>,
    node: &'n Node,
    what: &str,
    allowed: &[&str],
) -> Option<&'n [(Key, Node)]> {
    let Value::Map(entries) = &node.value else {
        diags.push(
            at(source, node)
                .error(
                    "wrong-type",
                    format!(
                        "{what}: expected a mapping, found {}",
                        node.value.describe()
                    ),
                )
                .help(format!("allowed keys: {}", allowed.join(", "))),
        );
        return None;
    };
    for (k, _) in entries {
        if !allowed.contains(&k.name.as_str()) {
            diags.push(
                key_at(source, k)
                    .error("unknown-key", format!("unknown key `{}` in {what}", k.name))
                    .help(
                        did_you_mean(&k.name, allowed.iter().copied())
                            .unwrap_or_else(|| format!("allowed keys: {}", allowed.join(", "))),
                    ),
            );
        }
    }
    Some(entries)
}

fn get<'n>(entries: &'n [(Key, Node)], key: &str) -> Option<(&'n Key, &'n Node)> {
    entries
        .iter()
        .find(|(k, _)| k.name == key)
        .map(|(k, v)| (k, v))
}

fn string(
    diags: &mut Diagnostics,
    source: &Arc<Source>,
    node: &Node,
    what: &str,
) -> Option<Sp<Text>> {
    match &node.value {
        Value::Str(s) => Some(Sp {
            value: s.clone(),
            at: at(source, node),
        }),
        other => {
            diags.push(at(source, node).error(
                "wrong-type",
                format!("{what}: expected a string, found {}", other.describe()),
            ));
            None
        }
    }
}

fn number(
    diags: &mut Diagnostics,
    source: &Arc<Source>,
    node: &Node,
    what: &str,
    min: f64,
) -> Option<f64> {
    let x = match node.value {
        Value::Int(i) => i as f64,
        Value::Float(x) => x,
        ref other => {
            diags.push(
                at(source, node)
                    .error(
                        "wrong-type",
                        format!("{what}: expected a number, found {}", other.describe()),
                    )
                    .help_opt(unquote_help(other, what, |s| s.parse::<f64>().is_ok())),
            );
            return None;
        }
    };
    if !x.is_finite() || x < min {
        diags.push(at(source, node).error(
            "bad-value",
            format!("{what}: expected a number >= {min}, found {x}"),
        ));
        return None;
    }
    Some(x)
}

fn integer(
    diags: &mut Diagnostics,
    source: &Arc<Source>,
    node: &Node,
    what: &str,
    min: i64,
) -> Option<i64> {
    match node.value {
        Value::Int(i) if i >= min => Some(i),
        Value::Int(i) => {
            diags.push(at(source, node).error(
                "bad-value",
                format!("{what}: expected an integer >= {min}, found {i}"),
            ));
            None
        }
        ref other => {
            diags.push(
                at(source, node)
                    .error(
                        "wrong-type",
                        format!("{what}: expected an integer, found {}", other.describe()),
                    )
                    .help_opt(unquote_help(other, what, |s| s.parse::<i64>().is_ok())),
            );
            None
        }
    }
}

/// For a quoted number (`"60"`), a help that says to drop the quotes.
fn unquote_help(v: &Value, what: &str, parses: impl Fn(&str) -> bool) -> Option<String> {
    let key = what.rsplit('.').next().unwrap_or(what);
    match v {
        Value::Str(s) if parses(s.trim()) => Some(format!(
            "remove the quotes: `{key}: {}` is a number, `\"{s}\"` is a string",
            s.trim()
        )),
        _ => None,
    }
}

fn boolean(diags: &mut Diagnostics, source: &Arc<Source>, node: &Node, what: &str) -> Option<bool> {
    match node.value {
        Value::Bool(b) => Some(b),
        ref other => {
            diags.push(at(source, node).error(
                "wrong-type",
                format!("{what}: expected true or false, found {}", other.describe()),
            ));
            None
        }
    }
}

/// Splits `task.output` into its two parts.
fn reference(diags: &mut Diagnostics, s: &Sp<Text>, what: &str) -> Option<(Sp<Text>, Sp<Text>)> {
    match s.value.split_once('.') {
        Some((t, o)) if !t.is_empty() && !o.is_empty() && !o.contains('.') => {
            let tlen = t.chars().count() as u32;
            let quote = u32::from(s.at.len as usize > s.value.chars().count());
            Some((
                Sp {
                    value: Text::from(t),
                    at: s.at.shifted(quote, tlen),
                },
                Sp {
                    value: Text::from(o),
                    at: s.at.shifted(quote + tlen + 1, o.chars().count() as u32),
                },
            ))
        }
        _ => {
            diags.push(
                s.at.error(
                    "bad-reference",
                    format!("{what}: expected `TASK.OUTPUT`, found `{}`", s.value),
                )
                .help("name an output of another task, e.g. `calibrate.frame`, or use `{file: PATH}` / `{glob: PATTERN}` for files"),
            );
            None
        }
    }
}

const PIPELINE_KEYS: &[&str] = &["name", "description", "imports", "params", "tasks"];
const PARAM_KEYS: &[&str] = &["type", "default", "description"];
const TASK_KEYS: &[&str] = &[
    "uses",
    "description",
    "with",
    "inputs",
    "outputs",
    "foreach",
    "retries",
    "timeout_secs",
    "resources",
    "executor",
    "partial_inputs",
];

impl Loader {
    fn file(
        &mut self,
        source: Arc<Source>,
        base: Option<&Path>,
        root: bool,
    ) -> Option<RawPipeline> {
        let mut node = match node::parse(&source) {
            Ok((n, duplicates)) => {
                self.diags.0.extend(duplicates);
                n
            }
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        if node.value == Value::Null {
            // An empty file (or one with only comments): "expected a mapping, found nothing"
            // would point past the end of the file.
            self.diags.push(
                At {
                    source: source.clone(),
                    pos: Pos { line: 1, col: 1 },
                    len: 1,
                }
                .error("empty-file", "the pipeline file is empty")
                .help(if root {
                    "a pipeline needs at least `name:` and `tasks:`"
                } else {
                    "an imported file holds `params:` and/or `tasks:`"
                }),
            );
            return None;
        }
        // The tasks are taken out of the tree, and each task's nodes are dropped as soon as it
        // is read: a generated pipeline of 100,000 tasks held all of both at once.
        let tasks = take_value(&mut node, "tasks");
        let entries = entries(
            &mut self.diags,
            &source,
            &node,
            "the pipeline",
            PIPELINE_KEYS,
        )?;
        let mut pipeline = RawPipeline {
            name: Sp {
                value: Text::from(""),
                at: at(&source, &node),
            },
            description: None,
            params: Vec::new(),
            tasks: Vec::new(),
            sources: vec![source.clone()],
            import_paths: Vec::new(),
        };
        match get(entries, "name") {
            Some((_, v)) => {
                if let Some(s) = string(&mut self.diags, &source, v, "name") {
                    pipeline.name = s;
                }
            }
            None if root => self.diags.push(
                At {
                    source: source.clone(),
                    pos: node.pos,
                    len: 1,
                }
                .error("missing-key", "the pipeline has no `name`")
                .help("add `name: my-pipeline` at the top of the file"),
            ),
            None => {}
        }
        if let Some((_, v)) = get(entries, "description") {
            pipeline.description =
                string(&mut self.diags, &source, v, "description").map(|s| s.value.into());
        }
        if let Some((_, v)) = get(entries, "params") {
            if let Some(ps) = entries_any(&mut self.diags, &source, v, "params") {
                for (k, v) in ps {
                    if let Some(p) = self.param(&source, k, v) {
                        pipeline.params.push(p);
                    }
                }
            }
        }
        match tasks {
            Some(Node {
                value: Value::Map(ts),
                ..
            }) => {
                // Exactly: a generated pipeline of 100k tasks grown by doubling held 1.5 times
                // its tasks while the vector was copied.
                pipeline.tasks.reserve_exact(ts.len());
                for (k, v) in ts {
                    if let Some(t) = self.task(&source, &k, &v) {
                        pipeline.tasks.push(t);
                    }
                }
            }
            Some(v) => {
                // Not a mapping: an error, or nothing (an empty `tasks:`).
                entries_any(&mut self.diags, &source, &v, "tasks");
            }
            None if root => self.diags.push(
                At {
                    source: source.clone(),
                    pos: node.pos,
                    len: 1,
                }
                .error("missing-key", "the pipeline has no `tasks`")
                .help("add a `tasks:` mapping from task names to task definitions"),
            ),
            None => {}
        }
        // Imports come after this file's own params and tasks, so that a name defined twice is
        // reported in the imported file, not in the file the author is editing.
        let own_tasks = pipeline.tasks.len();
        if let Some((_, v)) = get(entries, "imports") {
            self.imports(&source, v, base, &mut pipeline);
        }
        if root && own_tasks == 0 && pipeline.tasks.is_empty() {
            if let Some((k, _)) = get(entries, "tasks") {
                self.diags.push(
                    key_at(&source, k)
                        .error("no-tasks", "the pipeline has no tasks")
                        .help("define at least one task under `tasks:`"),
                );
            }
        }
        Some(pipeline)
    }

    fn imports(
        &mut self,
        source: &Arc<Source>,
        v: &Node,
        base: Option<&Path>,
        into: &mut RawPipeline,
    ) {
        let Value::Seq(items) = &v.value else {
            self.diags.push(at(source, v).error(
                "wrong-type",
                format!(
                    "imports: expected a list of file paths, found {}",
                    v.value.describe()
                ),
            ));
            return;
        };
        for item in items {
            let Some(rel) = string(&mut self.diags, source, item, "imports") else {
                continue;
            };
            let Some(base) = base else {
                self.diags.push(rel.at.error(
                    "bad-import",
                    "imports are not allowed in a built-in pipeline",
                ));
                continue;
            };
            let path = base.join(&rel.value);
            // Shown to the author: relative to the importing file as the author named it, like
            // the root file's path, never the absolute path the loader reads.
            let shown = display_import_path(&source.path, &rel.value);
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            let is_self = Path::new(&source.path)
                .file_name()
                .map(|f| base.join(f))
                .and_then(|p| p.canonicalize().ok())
                .is_some_and(|p| p == canonical);
            if !self.seen.insert(canonical) {
                let message = if is_self {
                    format!("`{}` imports itself", source.path)
                } else {
                    format!("`{shown}` is imported more than once")
                };
                self.diags.push(
                    rel.at
                        .error("bad-import", message)
                        .help("each file may be imported once; remove this import"),
                );
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    let reason = match e.kind() {
                        std::io::ErrorKind::NotFound => "no such file".to_owned(),
                        _ => e.to_string(),
                    };
                    self.diags.push(
                        rel.at
                            .error(
                                "bad-import",
                                format!("cannot read imported file `{shown}`: {reason}"),
                            )
                            .help("imports are resolved relative to the importing file"),
                    );
                    continue;
                }
            };
            let sub = Source::new(shown, text);
            if let Some(p) = self.file(sub, path.parent(), false) {
                into.params.extend(p.params);
                into.tasks.extend(p.tasks);
                into.sources.extend(p.sources);
                into.import_paths.push(path);
                into.import_paths.extend(p.import_paths);
            }
        }
    }

    fn param(&mut self, source: &Arc<Source>, k: &Key, v: &Node) -> Option<RawParam> {
        let name = Sp {
            value: k.name.clone(),
            at: key_at(source, k),
        };
        // `${params.NAME}` could not name it otherwise.
        check_name(&mut self.diags, &name, "param");
        let is_full =
            matches!(&v.value, Value::Map(es) if es.iter().any(|(k, _)| k.name == "type"));
        if !is_full {
            let Some(ty) = ParamType::infer(&v.value) else {
                self.diags.push(
                    at(source, v)
                        .error(
                            "wrong-type",
                            format!(
                                "param `{}`: cannot infer a type from {}",
                                k.name,
                                v.value.describe()
                            ),
                        )
                        .help("write `{type: string|int|float|bool|path|list, default: ...}`"),
                );
                return None;
            };
            return Some(RawParam {
                name,
                ty,
                default: Some(v.clone()),
                description: None,
            });
        }
        let es = entries(
            &mut self.diags,
            source,
            v,
            &format!("param `{}`", k.name),
            PARAM_KEYS,
        )?;
        let (_, tnode) = get(es, "type")?;
        let tname = string(&mut self.diags, source, tnode, "type")?;
        let Some(ty) = ParamType::ALL
            .iter()
            .find(|(n, _)| *n == tname.value)
            .map(|(_, t)| *t)
        else {
            self.diags.push(
                tname
                    .at
                    .error(
                        "unknown-type",
                        format!("unknown param type `{}`", tname.value),
                    )
                    .help(
                        did_you_mean(&tname.value, ParamType::ALL.iter().map(|(n, _)| *n))
                            .unwrap_or_else(|| {
                                "types are string, int, float, bool, path, list".into()
                            }),
                    ),
            );
            return None;
        };
        let default = get(es, "default").map(|(_, d)| d.clone());
        let description = get(es, "description")
            .and_then(|(_, d)| string(&mut self.diags, source, d, "description"))
            .map(|s| s.value.into());
        Some(RawParam {
            name,
            ty,
            default,
            description,
        })
    }

    fn task(&mut self, source: &Arc<Source>, k: &Key, v: &Node) -> Option<RawTask> {
        let what = format!("task `{}`", k.name);
        let name = Sp {
            value: k.name.clone(),
            at: key_at(source, k),
        };
        if !valid_name(&k.name) {
            self.diags.push(
                name.at
                    .error(
                        "bad-name",
                        format!("task name `{}` is not a valid name", k.name),
                    )
                    .help("task names use letters, digits, `_` and `-`, and start with a letter"),
            );
        }
        let es = entries(&mut self.diags, source, v, &what, TASK_KEYS)?;
        let uses = match get(es, "uses") {
            Some((_, u)) => string(&mut self.diags, source, u, "uses")?,
            None => {
                self.diags.push(
                    name.at
                        .error("missing-key", format!("{what} has no `uses`"))
                        .help("say which task kind runs it, e.g. `uses: command`"),
                );
                return None;
            }
        };
        let mut task = RawTask {
            name,
            uses,
            with: Box::default(),
            inputs: Box::default(),
            outputs: Box::default(),
            outputs_at: None,
            foreach: None,
            settings: None,
        };
        for (key, val) in es {
            match key.name.as_str() {
                "description" => {
                    task.settings_mut().description =
                        string(&mut self.diags, source, val, "description").map(|s| s.value.into())
                }
                "with" => {
                    if let Some(ws) = entries_any(&mut self.diags, source, val, "with") {
                        task.with = ws
                            .iter()
                            .map(|(k, v)| {
                                (
                                    Sp {
                                        value: k.name.clone(),
                                        at: key_at(source, k),
                                    },
                                    v.clone(),
                                )
                            })
                            .collect();
                    }
                }
                "inputs" => {
                    if let Some(is) = entries_any(&mut self.diags, source, val, "inputs") {
                        let mut inputs = Vec::with_capacity(is.len());
                        for (k, v) in is {
                            // `${inputs.NAME}` could not name it otherwise.
                            check_name(
                                &mut self.diags,
                                &Sp {
                                    value: k.name.clone(),
                                    at: key_at(source, k),
                                },
                                "input",
                            );
                            if let Some(i) = self.input(source, v) {
                                inputs.push((
                                    Sp {
                                        value: k.name.clone(),
                                        at: key_at(source, k),
                                    },
                                    i,
                                ));
                            }
                        }
                        task.inputs = inputs.into_boxed_slice();
                    }
                }
                "outputs" => {
                    task.outputs_at = Some(key_at(source, key));
                    if let Some(os) = entries_any(&mut self.diags, source, val, "outputs") {
                        let mut outputs = Vec::with_capacity(os.len());
                        for (k, v) in os {
                            if let Some(p) =
                                string(&mut self.diags, source, v, &format!("output `{}`", k.name))
                            {
                                outputs.push((
                                    Sp {
                                        value: k.name.clone(),
                                        at: key_at(source, k),
                                    },
                                    p,
                                ));
                            }
                        }
                        task.outputs = outputs.into_boxed_slice();
                    }
                }
                "foreach" => task.foreach = self.foreach(source, val).map(Box::new),
                "retries" => {
                    if let Some(r) = self.retries(source, val) {
                        task.settings_mut().retries = r;
                    }
                }
                "timeout_secs" => {
                    task.settings_mut().timeout_secs =
                        number(&mut self.diags, source, val, "timeout_secs", 0.001)
                }
                "resources" => {
                    if let Some(rs) = entries(
                        &mut self.diags,
                        source,
                        val,
                        "resources",
                        &["cpus", "memory_mb"],
                    ) {
                        if let Some((_, c)) = get(rs, "cpus") {
                            task.settings_mut().resources.cpus =
                                integer(&mut self.diags, source, c, "resources.cpus", 1)
                                    .unwrap_or(1) as u32;
                        }
                        if let Some((_, m)) = get(rs, "memory_mb") {
                            task.settings_mut().resources.memory_mb =
                                integer(&mut self.diags, source, m, "resources.memory_mb", 0)
                                    .unwrap_or(0) as u64;
                        }
                    }
                }
                "executor" => {
                    task.settings_mut().executor = string(&mut self.diags, source, val, "executor")
                }
                "partial_inputs" => {
                    task.settings_mut().partial_inputs =
                        boolean(&mut self.diags, source, val, "partial_inputs").unwrap_or(false)
                }
                _ => {}
            }
        }
        Some(task)
    }

    fn input(&mut self, source: &Arc<Source>, v: &Node) -> Option<RawInput> {
        match &v.value {
            Value::Str(_) => {
                let s = string(&mut self.diags, source, v, "input")?;
                let (task, output) = reference(&mut self.diags, &s, "input")?;
                Some(RawInput::Output { task, output })
            }
            Value::Map(_) => {
                let es = entries(
                    &mut self.diags,
                    source,
                    v,
                    "input",
                    &["file", "glob", "from"],
                )?;
                if es.len() != 1 {
                    // Say what was found, not only what is expected.
                    let found = if es.is_empty() {
                        "none".to_owned()
                    } else {
                        es.iter()
                            .map(|(k, _)| format!("`{}`", k.name))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    };
                    self.diags.push(
                        at(source, v)
                            .error(
                                "bad-input",
                                format!(
                                    "an input has exactly one of `from`, `file` or `glob`; found {found}"
                                ),
                            )
                            .help("write one input per source, each under its own name"),
                    );
                    return None;
                }
                let (k, n) = &es[0];
                let s = string(&mut self.diags, source, n, &k.name)?;
                match k.name.as_str() {
                    "file" => Some(RawInput::File(s)),
                    "glob" => Some(RawInput::Glob(s)),
                    "from" => {
                        let (task, output) = reference(&mut self.diags, &s, "input")?;
                        Some(RawInput::Output { task, output })
                    }
                    _ => None,
                }
            }
            other => {
                self.diags.push(
                    at(source, v)
                        .error(
                            "wrong-type",
                            format!(
                                "input: expected `TASK.OUTPUT` or a mapping, found {}",
                                other.describe()
                            ),
                        )
                        .help("write `TASK.OUTPUT`, `{file: PATH}` or `{glob: PATTERN}`"),
                );
                None
            }
        }
    }

    fn foreach(&mut self, source: &Arc<Source>, v: &Node) -> Option<RawForeach> {
        match &v.value {
            Value::Seq(items) => Some(RawForeach::List(items.clone())),
            Value::Str(s) if s.trim_start().starts_with("${") => Some(RawForeach::Param(Sp {
                value: s.clone(),
                at: at(source, v),
            })),
            Value::Map(_) => {
                let es = entries(
                    &mut self.diags,
                    source,
                    v,
                    "foreach",
                    &["glob", "from", "range"],
                )?;
                if es.len() != 1 {
                    self.diags.push(at(source, v).error(
                        "bad-foreach",
                        "foreach has exactly one of `glob`, `from` or `range`",
                    ));
                    return None;
                }
                let (k, n) = &es[0];
                match k.name.as_str() {
                    "glob" => string(&mut self.diags, source, n, "glob").map(RawForeach::Glob),
                    "from" => {
                        let s = string(&mut self.diags, source, n, "from")?;
                        let (task, output) = reference(&mut self.diags, &s, "foreach")?;
                        Some(RawForeach::From { task, output })
                    }
                    "range" => {
                        let (start, end) = match &n.value {
                            Value::Int(_) => (0, integer(&mut self.diags, source, n, "range", 0)?),
                            Value::Seq(se) if se.len() == 2 => (
                                integer(&mut self.diags, source, &se[0], "range start", i64::MIN)?,
                                integer(&mut self.diags, source, &se[1], "range end", i64::MIN)?,
                            ),
                            other => {
                                self.diags.push(at(source, n).error(
                                    "wrong-type",
                                    format!(
                                        "range: expected a count or [start, end], found {}",
                                        other.describe()
                                    ),
                                ));
                                return None;
                            }
                        };
                        Some(RawForeach::Range {
                            start,
                            end,
                            at: at(source, n),
                        })
                    }
                    _ => None,
                }
            }
            other => {
                self.diags.push(
                    at(source, v)
                        .error(
                            "wrong-type",
                            format!("foreach: expected a list, a `${{params.NAME}}` list param or a mapping, found {}", other.describe()),
                        )
                        .help("write `[a, b]`, `${params.fields}`, `{glob: PATTERN}`, `{from: TASK.OUTPUT}` or `{range: N}`"),
                );
                None
            }
        }
    }

    fn retries(&mut self, source: &Arc<Source>, v: &Node) -> Option<Retries> {
        let mut r = Retries::default();
        match &v.value {
            Value::Int(_) => r.count = integer(&mut self.diags, source, v, "retries", 0)? as u32,
            Value::Map(_) => {
                let es = entries(
                    &mut self.diags,
                    source,
                    v,
                    "retries",
                    &["count", "backoff_secs", "factor"],
                )?;
                if let Some((_, n)) = get(es, "count") {
                    r.count = integer(&mut self.diags, source, n, "retries.count", 0)? as u32;
                }
                if let Some((_, n)) = get(es, "backoff_secs") {
                    r.backoff_secs =
                        number(&mut self.diags, source, n, "retries.backoff_secs", 0.0)?;
                }
                if let Some((_, n)) = get(es, "factor") {
                    r.factor = number(&mut self.diags, source, n, "retries.factor", 1.0)?;
                }
            }
            // Both forms are accepted, so the message names both (`entries` would say only
            // "expected a mapping").
            other => {
                self.diags.push(
                    at(source, v)
                        .error(
                            "wrong-type",
                            format!(
                                "retries: expected a count or a mapping, found {}",
                                other.describe()
                            ),
                        )
                        .help(
                            unquote_help(other, "retries", |s| s.parse::<u32>().is_ok())
                                .unwrap_or_else(|| {
                                    "write `retries: 3` or `retries: {count: 3, backoff_secs: 1, factor: 2}`"
                                        .to_owned()
                                }),
                        ),
                );
                return None;
            }
        }
        Some(r)
    }
}

/// The path of an imported file as shown in diagnostics: `rel` joined to the directory of the
/// importing file's shown path, with `.` and `dir/..` removed (`tests/a.yaml` importing
/// `lib/b.yaml` shows `tests/lib/b.yaml`).
fn display_import_path(importer: &str, rel: &str) -> String {
    use std::path::Component;
    let joined = Path::new(importer)
        .parent()
        .unwrap_or(Path::new(""))
        .join(rel);
    let mut out: Vec<Component> = Vec::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect::<PathBuf>().display().to_string()
}

/// Takes the value of `key` out of a mapping node, leaving an empty value (with its position)
/// in its place.
fn take_value(node: &mut Node, key: &str) -> Option<Node> {
    let Value::Map(entries) = &mut node.value else {
        return None;
    };
    let (_, v) = entries.iter_mut().find(|(k, _)| k.name == key)?;
    let empty = Node {
        value: Value::Null,
        pos: v.pos,
        len: v.len,
    };
    Some(std::mem::replace(v, empty))
}

/// A mapping with any keys (params, tasks, with, inputs, outputs).
fn entries_any<'n>(
    diags: &mut Diagnostics,
    source: &Arc<Source>,
    node: &'n Node,
    what: &str,
) -> Option<&'n [(Key, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        Value::Null => Some(&[]),
        other => {
            diags.push(at(source, node).error(
                "wrong-type",
                format!("{what}: expected a mapping, found {}", other.describe()),
            ));
            None
        }
    }
}

/// Reports a param or input name that templates could not refer to.
fn check_name(diags: &mut Diagnostics, name: &Sp<Text>, what: &str) {
    if !valid_name(&name.value) {
        diags.push(
            name.at
                .error(
                    "bad-name",
                    format!("{what} name `{}` is not a valid name", name.value),
                )
                .help(format!(
                    "{what} names use letters, digits, `_` and `-`, and start with a letter"
                )),
        );
    }
}

/// Task, param and output names: a letter, then letters, digits, `_` or `-`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_small_pipeline() {
        let p = load_str(
            "p.yaml",
            "name: t\nparams:\n  n: 3\ntasks:\n  a:\n    uses: noop\n    foreach: {range: 3}\n  b:\n    uses: noop\n    inputs: {x: a.out}\n    retries: 2\n",
            None,
        )
        .unwrap();
        assert_eq!(p.name.value, "t");
        assert_eq!(p.params[0].ty, ParamType::Int);
        assert_eq!(p.tasks.len(), 2);
        assert_eq!(p.tasks[1].settings().retries.count, 2);
        let RawInput::Output { task, output } = &p.tasks[1].inputs[0].1 else {
            panic!()
        };
        assert_eq!((task.value.as_str(), output.value.as_str()), ("a", "out"));
        assert_eq!(output.at.pos, Pos { line: 10, col: 19 });
    }

    fn errors(text: &str, base: Option<&Path>) -> Vec<String> {
        load_str("p.yaml", text, base)
            .unwrap_err()
            .0
            .iter()
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
    fn retries_names_both_forms() {
        assert_eq!(
            errors("name: t\ntasks:\n  a:\n    uses: noop\n    retries: many\n", None),
            ["wrong-type: retries: expected a count or a mapping, found a string (help: write `retries: 3` or `retries: {count: 3, backoff_secs: 1, factor: 2}`)"]
        );
    }

    #[test]
    fn quoted_numbers_get_a_help() {
        assert_eq!(
            errors("name: t\ntasks:\n  a:\n    uses: noop\n    timeout_secs: \"60\"\n    resources: {cpus: \"2\"}\n", None),
            [
                "wrong-type: timeout_secs: expected a number, found a string (help: remove the quotes: `timeout_secs: 60` is a number, `\"60\"` is a string)",
                "wrong-type: resources.cpus: expected an integer, found a string (help: remove the quotes: `cpus: 2` is a number, `\"2\"` is a string)",
            ]
        );
    }

    #[test]
    fn empty_file_is_one_clear_error() {
        assert_eq!(
            errors("# nothing here\n", None),
            ["empty-file: the pipeline file is empty (help: a pipeline needs at least `name:` and `tasks:`)"]
        );
    }

    #[test]
    fn duplicate_keys_do_not_hide_other_errors() {
        assert_eq!(
            errors(
                "name: t\nname: u\ntasks:\n  a:\n    uses: noop\n    colour: red\n",
                None
            )
            .len(),
            2
        );
    }

    #[test]
    fn imported_paths_are_shown_relative_to_the_importer() {
        assert_eq!(
            display_import_path("tests/p.yaml", "lib/a.yaml"),
            "tests/lib/a.yaml"
        );
        assert_eq!(
            display_import_path("tests/p.yaml", "./../x/a.yaml"),
            "x/a.yaml"
        );
        assert_eq!(display_import_path("p.yaml", "a.yaml"), "a.yaml");
        assert_eq!(display_import_path("p.yaml", "../a.yaml"), "../a.yaml");
        assert_eq!(display_import_path("/abs/p.yaml", "a.yaml"), "/abs/a.yaml");
    }

    #[test]
    fn import_errors_name_files_as_the_author_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p.yaml");
        let text = "name: t\nimports: [missing.yaml, p.yaml]\ntasks: {a: {uses: noop}}\n";
        std::fs::write(&root, text).unwrap();
        let e = load_str("p.yaml", text, Some(dir.path())).unwrap_err();
        let msgs: Vec<_> = e.0.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "cannot read imported file `missing.yaml`: no such file",
                "`p.yaml` imports itself",
            ]
        );
    }

    #[test]
    fn param_and_input_names_must_be_referable() {
        assert_eq!(
            errors("name: t\nparams:\n  my night: x\ntasks:\n  a:\n    uses: noop\n    inputs:\n      raw.frame: {file: f}\n", None),
            [
                "bad-name: param name `my night` is not a valid name (help: param names use letters, digits, `_` and `-`, and start with a letter)",
                "bad-name: input name `raw.frame` is not a valid name (help: input names use letters, digits, `_` and `-`, and start with a letter)",
            ]
        );
    }

    #[test]
    fn collects_all_shape_errors() {
        let e = load_str(
            "p.yaml",
            "name: t\ntasks:\n  a:\n    uses: noop\n    retries: many\n    colour: red\n  b:\n    uses: noop\n    timeout_secs: -1\n",
            None,
        )
        .unwrap_err();
        let codes: Vec<_> = e.0.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["wrong-type", "unknown-key", "bad-value"]);
    }
}
