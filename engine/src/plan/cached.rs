//! Compiled pipelines kept in the workdir's store, so that a rerun does not parse its YAML again.
//!
//! Parsing and validating a pipeline costs about 40 µs per task (serde-saphyr keeps a position
//! for every value): 0.4 s for a generated pipeline of 10,000 tasks, four times the whole
//! "nothing to do" rerun it precedes. The compiled [`Plan`] depends only on
//! - the text of the pipeline file and of every file it imports,
//! - the `--set` values (and the current directory, against which `path` values resolve),
//! - the directory the pipeline's relative paths resolve against,
//! - the task kinds compiled into the binary (their params, defaults and ports),
//!
//! so `nearby run` and `nearby plan` keep it in the store, one per pipeline file, under a key
//! that hashes all of these (the binary is named by the caller's `build` string: its version and
//! its file's size and modification time). Imported files are named by the kept plan and hashed
//! again when it is read. Any difference is a miss, and a miss compiles from the YAML as before,
//! with every diagnostic. `nearby validate` always compiles.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};

use super::{stable_topo, Foreach, InputSource, Param, Plan, TaskTemplate};
use crate::model::{RawPipeline, Resources, Retries};
use crate::store::Store;
use crate::task::{Registry, TaskKind};

/// Bumped whenever [`Snapshot`] or the meaning of a compiled plan changes.
const FORMAT: u32 = 1;

/// What a compiled plan is a function of (everything but the imported files, which the
/// snapshot lists).
pub struct Inputs<'a> {
    /// The pipeline file, as an absolute path.
    pub path: &'a Path,
    pub text: &'a str,
    pub base_dir: &'a Path,
    pub overrides: &'a BTreeMap<String, String>,
    /// Names the binary's task kinds, e.g. its version and its file's size and mtime.
    pub build: &'a str,
}

impl Inputs<'_> {
    fn slot(&self) -> Vec<u8> {
        self.path.as_os_str().as_encoded_bytes().to_vec()
    }

    fn key(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(&FORMAT.to_le_bytes());
        field(self.build.as_bytes());
        field(self.path.as_os_str().as_encoded_bytes());
        field(self.text.as_bytes());
        field(self.base_dir.as_os_str().as_encoded_bytes());
        let cwd = std::env::current_dir().unwrap_or_default();
        field(cwd.as_os_str().as_encoded_bytes());
        for (k, v) in self.overrides {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        *h.finalize().as_bytes()
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// blake3 of [`Inputs`], hex.
    key: String,
    /// Imported files and the blake3 of their text, hex.
    imports: Vec<(PathBuf, String)>,
    name: String,
    description: Option<String>,
    base_dir: PathBuf,
    params: Vec<Param>,
    tasks: Vec<Template>,
}

/// A [`TaskTemplate`] with its kind by name; fields at their defaults are left out (a generated
/// pipeline's tasks are mostly defaults, and a rerun decodes every one of them).
#[derive(Serialize, Deserialize)]
struct Template {
    name: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    with: Map<String, J>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<(String, InputSource)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    foreach: Option<Foreach>,
    #[serde(default, skip_serializing_if = "is_default")]
    retries: Retries,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "is_default")]
    resources: Resources,
    #[serde(default = "local", skip_serializing_if = "is_local")]
    executor: String,
    #[serde(default, skip_serializing_if = "is_default")]
    partial_inputs: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    upstream: Vec<usize>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn local() -> String {
    "local".to_owned()
}

fn is_local(s: &str) -> bool {
    s == "local"
}

fn hash_hex(text: &[u8]) -> String {
    blake3::hash(text).to_hex().to_string()
}

/// The plan kept for these inputs, if it is still what compiling them would give.
/// Any store or decoding problem is a miss (the caller compiles).
pub fn load(store: &Store, inputs: &Inputs, registry: &Registry) -> Option<Plan> {
    let bytes = store.plan_get(&inputs.slot()).ok()??;
    let snap: Snapshot = serde_json::from_slice(&bytes).ok()?;
    if snap.key != blake3::Hash::from(inputs.key()).to_hex().as_str() {
        return None;
    }
    for (path, hash) in &snap.imports {
        let text = std::fs::read(path).ok()?;
        if hash_hex(&text) != *hash {
            return None;
        }
    }
    let kinds: HashMap<&str, &Arc<dyn TaskKind>> =
        registry.kinds().iter().map(|k| (k.name(), k)).collect();
    let n = snap.tasks.len();
    let mut tasks = Vec::with_capacity(n);
    for t in snap.tasks {
        if t.upstream.iter().any(|&u| u >= n) {
            return None;
        }
        tasks.push(TaskTemplate {
            kind: Arc::clone(kinds.get(t.kind.as_str())?),
            name: t.name,
            with: t.with,
            inputs: t.inputs,
            outputs: t.outputs,
            foreach: t.foreach,
            retries: t.retries,
            timeout_secs: t.timeout_secs,
            resources: t.resources,
            executor: t.executor,
            partial_inputs: t.partial_inputs,
            description: t.description,
            upstream: t.upstream,
        });
    }
    let mut graph = DiGraph::new();
    for i in 0..n {
        graph.add_node(i);
    }
    for (to, t) in tasks.iter().enumerate() {
        for &from in &t.upstream {
            graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
    }
    let order = stable_topo(&graph);
    Some(Plan {
        name: snap.name,
        description: snap.description,
        base_dir: snap.base_dir,
        params: snap.params,
        tasks,
        graph,
        order,
    })
}

/// Keeps `plan`, compiled from `inputs` and the imports `raw` names, for the next run.
pub fn save(store: &Store, inputs: &Inputs, raw: &RawPipeline, plan: &Plan) {
    let imports = raw
        .import_paths
        .iter()
        .zip(raw.sources.iter().skip(1))
        .map(|(path, source)| (path.clone(), hash_hex(source.text.as_bytes())))
        .collect();
    let snap = Snapshot {
        key: blake3::Hash::from(inputs.key()).to_hex().to_string(),
        imports,
        name: plan.name.clone(),
        description: plan.description.clone(),
        base_dir: plan.base_dir.clone(),
        params: plan.params.clone(),
        tasks: plan
            .tasks
            .iter()
            .map(|t| Template {
                name: t.name.clone(),
                kind: t.kind.name().to_owned(),
                with: t.with.clone(),
                inputs: t.inputs.clone(),
                outputs: t.outputs.clone(),
                foreach: t.foreach.clone(),
                retries: t.retries,
                timeout_secs: t.timeout_secs,
                resources: t.resources,
                executor: t.executor.clone(),
                partial_inputs: t.partial_inputs,
                description: t.description.clone(),
                upstream: t.upstream.clone(),
            })
            .collect(),
    };
    match serde_json::to_vec(&snap) {
        Ok(bytes) => {
            if let Err(e) = store.plan_put(&inputs.slot(), &bytes) {
                tracing::warn!("cannot keep the compiled pipeline: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot encode the compiled pipeline: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load_str;
    use crate::plan::compile;

    const PIPELINE: &str = "name: kept\nparams:\n  fields: {type: list, default: [f1, f2]}\n\
        tasks:\n  list:\n    uses: command\n    with: {argv: [ls], stdout: ids}\n    \
        outputs: {ids: ids.txt}\n    retries: {count: 2, backoff_secs: 0.5}\n  \
        fan:\n    uses: noop\n    foreach: \"${params.fields}\"\n    inputs: {ids: list.ids}\n    \
        outputs: {o: \"${item}.txt\"}\n    resources: {cpus: 2}\n  \
        gather:\n    uses: noop\n    inputs: {all: fan.o}\n    timeout_secs: 5\n";

    fn summary(p: &Plan) -> String {
        let tasks: Vec<String> = p
            .tasks
            .iter()
            .map(|t| {
                format!(
                    "{} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {} {:?} {:?}",
                    t.name,
                    t.kind.name(),
                    t.with,
                    t.inputs,
                    t.outputs,
                    t.foreach,
                    t.retries,
                    t.timeout_secs,
                    t.resources,
                    t.executor,
                    t.partial_inputs,
                    t.description,
                    t.upstream
                )
            })
            .collect();
        let params: Vec<String> = p.params.iter().map(|x| format!("{x:?}")).collect();
        format!(
            "{} {:?} {:?} {params:?} {tasks:?} {:?} edges {}",
            p.name,
            p.description,
            p.base_dir,
            p.order,
            p.graph.edge_count()
        )
    }

    #[test]
    fn a_kept_plan_is_the_compiled_plan_and_any_change_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let registry = Registry::builtin();
        let path = dir.path().join("kept.yaml");
        let overrides = BTreeMap::new();
        let inputs = Inputs {
            path: &path,
            text: PIPELINE,
            base_dir: dir.path(),
            overrides: &overrides,
            build: "test 1",
        };
        assert!(load(&store, &inputs, &registry).is_none());
        let raw = load_str("kept.yaml", PIPELINE, Some(dir.path())).unwrap();
        let plan = compile(&raw, &registry, &overrides, dir.path()).unwrap();
        save(&store, &inputs, &raw, &plan);
        let kept = load(&store, &inputs, &registry).expect("kept plan");
        assert_eq!(summary(&kept), summary(&plan));

        // Another text, another binary, other overrides: misses.
        let edited = PIPELINE.replace("timeout_secs: 5", "timeout_secs: 6");
        let other_text = Inputs {
            text: &edited,
            ..inputs
        };
        assert!(load(&store, &other_text, &registry).is_none());
        let other_build = Inputs {
            build: "test 2",
            ..inputs
        };
        assert!(load(&store, &other_build, &registry).is_none());
        let set = BTreeMap::from([("fields".to_owned(), "f3".to_owned())]);
        let other_set = Inputs {
            overrides: &set,
            ..inputs
        };
        assert!(load(&store, &other_set, &registry).is_none());
        // A registry without the kinds the plan uses cannot rebuild it.
        assert!(load(&store, &inputs, &Registry::new(vec![])).is_none());
        // A damaged snapshot is a miss, not an error.
        store.plan_put(&inputs.slot(), b"{not json").unwrap();
        assert!(load(&store, &inputs, &registry).is_none());
    }
}
