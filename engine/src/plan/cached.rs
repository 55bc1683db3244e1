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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};

use super::{Foreach, InputSource, Interner, Param, Plan, Settings, TaskTemplate};
use crate::binary::{put_f64, put_str, put_u32, put_u64, Reader};
use crate::model::{RawPipeline, Resources, Retries};
use crate::store::Store;
use crate::task::{with_defaults, Registry, TaskKind};

/// Bumped whenever the kept encoding ([`Header`], [`put_task`]) or the meaning of a compiled
/// plan changes.
const FORMAT: u32 = 2;

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

/// What is kept besides the tasks: JSON, since it is small and holds JSON values (param
/// values). The snapshot is `u32 length, this header, the tasks` (see [`put_task`]).
#[derive(Serialize, Deserialize)]
struct Header {
    /// blake3 of [`Inputs`], hex.
    key: String,
    /// Imported files and the blake3 of their text, hex.
    imports: Vec<(PathBuf, String)>,
    name: String,
    description: Option<String>,
    base_dir: PathBuf,
    params: Vec<Param>,
}

/// One task template in the binary encoding (a rerun of a generated 10,000-task chain decoded
/// JSON templates in 22 ms, most of its budget). `with` is kept as JSON less the entries at the
/// kind's defaults (the build, part of the key, fixes those); paths must be UTF-8, or the plan
/// is not kept.
fn put_task(b: &mut Vec<u8>, t: &TaskTemplate) -> Option<()> {
    put_str(b, &t.name);
    put_str(b, t.kind.name());
    let with = without_defaults(t.kind.as_ref(), &t.with);
    let with = if with.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&with).ok()?
    };
    put_str(b, &with);
    put_u32(b, t.inputs.len() as u32);
    for (name, src) in &t.inputs {
        put_str(b, name);
        match src {
            InputSource::Task { task, output } => {
                b.push(0);
                put_u32(b, *task as u32);
                put_str(b, output);
            }
            InputSource::File(p) => {
                b.push(1);
                put_str(b, p.to_str()?);
            }
            InputSource::Glob(g) => {
                b.push(2);
                put_str(b, g);
            }
        }
    }
    put_u32(b, t.outputs.len() as u32);
    for (name, path) in t.outputs.iter() {
        put_str(b, name);
        put_str(b, path);
    }
    match t.foreach.as_deref() {
        None => b.push(0),
        Some(Foreach::Items(items)) => {
            b.push(1);
            put_u32(b, items.len() as u32);
            for i in items {
                put_str(b, i);
            }
        }
        Some(Foreach::Glob(g)) => {
            b.push(2);
            put_str(b, g);
        }
        Some(Foreach::Range(from, to)) => {
            b.push(3);
            put_u64(b, *from as u64);
            put_u64(b, *to as u64);
        }
        Some(Foreach::From { task, output }) => {
            b.push(4);
            put_u32(b, *task as u32);
            put_str(b, output);
        }
    }
    put_settings(b, &t.settings);
    put_u32(b, t.upstream.len() as u32);
    for &u in &t.upstream {
        put_u32(b, u);
    }
    Some(())
}

/// A task's [`Settings`], as [`put_task`] keeps them; also what tells settings apart in a
/// [`Interner`].
pub(super) fn put_settings(b: &mut Vec<u8>, s: &Settings) {
    put_u32(b, s.retries.count);
    put_f64(b, s.retries.backoff_secs);
    put_f64(b, s.retries.factor);
    b.push(s.timeout_secs.is_some() as u8);
    put_f64(b, s.timeout_secs.unwrap_or(0.0));
    put_u32(b, s.resources.cpus);
    put_u64(b, s.resources.memory_mb);
    put_str(b, &s.executor);
    b.push(s.partial_inputs as u8);
    b.push(s.description.is_some() as u8);
    put_str(b, s.description.as_deref().unwrap_or(""));
}

/// Reads what [`put_settings`] wrote, shared with the equal settings read before.
fn read_settings(r: &mut Reader, shared: &mut Interner) -> Option<Arc<Settings>> {
    let start = r.0;
    let retries = Retries {
        count: r.u32()?,
        backoff_secs: r.f64()?,
        factor: r.f64()?,
    };
    let has_timeout = r.u8()? == 1;
    let timeout = r.f64()?;
    let resources = Resources {
        cpus: r.u32()?,
        memory_mb: r.u64()?,
    };
    let executor = r.str_ref()?;
    let partial_inputs = r.u8()? == 1;
    let has_description = r.u8()? == 1;
    let description = r.str_ref()?;
    let encoded = &start[..start.len() - r.0.len()];
    Some(shared.settings_encoded(encoded, || Settings {
        retries,
        timeout_secs: has_timeout.then_some(timeout),
        resources,
        executor: executor.to_owned(),
        partial_inputs,
        description: has_description.then(|| description.to_owned()),
    }))
}

/// A task kind and its params' defaults, parsed once per kind rather than once per task.
struct Kind<'a> {
    kind: &'a Arc<dyn TaskKind>,
    /// Shared by every task of this kind that sets no param of its own.
    defaults: Arc<Map<String, J>>,
}

/// Reads what [`put_task`] wrote; `None` on anything unexpected (the caller compiles instead).
fn read_task(
    r: &mut Reader,
    kinds: &HashMap<&str, Kind>,
    shared: &mut Interner,
) -> Option<TaskTemplate> {
    let name = r.str_ref()?.into();
    let Kind { kind, defaults } = kinds.get(r.str_ref()?)?;
    let kind = Arc::clone(kind);
    let with_json = r.str_ref()?;
    let with = if with_json.is_empty() {
        Arc::clone(defaults)
    } else {
        let mut with: Map<String, J> = serde_json::from_str(with_json).ok()?;
        for (k, v) in defaults.iter() {
            if !with.contains_key(k) {
                with.insert(k.clone(), v.clone());
            }
        }
        Arc::new(with)
    };
    let n = r.u32()?;
    let mut inputs = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let name = r.str_ref()?.into();
        let src = match r.u8()? {
            0 => InputSource::Task {
                task: r.u32()? as usize,
                output: r.str_ref()?.into(),
            },
            1 => InputSource::File(Path::new(r.str_ref()?).into()),
            2 => InputSource::Glob(r.str_ref()?.into()),
            _ => return None,
        };
        inputs.push((name, src));
    }
    let n = r.u32()?;
    let mut outputs = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        outputs.push((r.str_ref()?.into(), r.str_ref()?.into()));
    }
    let foreach = match r.u8()? {
        0 => None,
        1 => {
            let n = r.u32()?;
            let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
            for _ in 0..n {
                items.push(r.str()?);
            }
            Some(Foreach::Items(items))
        }
        2 => Some(Foreach::Glob(r.str()?)),
        3 => Some(Foreach::Range(r.u64()? as i64, r.u64()? as i64)),
        4 => Some(Foreach::From {
            task: r.u32()? as usize,
            output: r.str()?,
        }),
        _ => return None,
    };
    let settings = read_settings(r, shared)?;
    let n = r.u32()?;
    let mut upstream = Vec::with_capacity(n.min(1 << 16) as usize);
    for _ in 0..n {
        upstream.push(r.u32()?);
    }
    Some(TaskTemplate {
        with,
        kind,
        name,
        inputs: inputs.into(),
        outputs: shared.outputs(outputs),
        foreach: foreach.map(Box::new),
        settings,
        upstream: upstream.into(),
    })
}

/// `with` less the entries equal to the kind's defaults, which [`read_task`] puts back.
fn without_defaults(kind: &dyn TaskKind, with: &Map<String, J>) -> Map<String, J> {
    let mut kept = with.clone();
    for spec in kind.params() {
        let default = spec.default.and_then(|d| serde_json::from_str::<J>(d).ok());
        if default.is_some() && kept.get(spec.name) == default.as_ref() {
            kept.remove(spec.name);
        }
    }
    kept
}

fn hash_hex(text: &[u8]) -> String {
    blake3::hash(text).to_hex().to_string()
}

/// The plan kept for these inputs, if it is still what compiling them would give.
/// Any store or decoding problem is a miss (the caller compiles).
pub fn load(store: &Store, inputs: &Inputs, registry: &Registry) -> Option<Plan> {
    let bytes = store.plan_get(&inputs.slot()).ok()??;
    let mut r = Reader(&bytes);
    let header_len = r.u32()? as usize;
    let header: Header = serde_json::from_slice(r.take(header_len)?).ok()?;
    if header.key != blake3::Hash::from(inputs.key()).to_hex().as_str() {
        return None;
    }
    for (path, hash) in &header.imports {
        let text = std::fs::read(path).ok()?;
        if hash_hex(&text) != *hash {
            return None;
        }
    }
    let kinds: HashMap<&str, Kind> = registry
        .kinds()
        .iter()
        .map(|kind| {
            let defaults = Arc::new(with_defaults(kind.as_ref(), Map::new()));
            (kind.name(), Kind { kind, defaults })
        })
        .collect();
    let n = r.u32()? as usize;
    let mut tasks = Vec::with_capacity(n.min(1 << 20));
    let mut shared = Interner::default();
    for _ in 0..n {
        let t = read_task(&mut r, &kinds, &mut shared)?;
        if t.upstream.iter().any(|&u| u as usize >= n) {
            return None;
        }
        tasks.push(t);
    }
    if !r.is_empty() {
        return None;
    }
    Some(Plan::new(
        header.name,
        header.description,
        header.base_dir,
        header.params,
        tasks,
    ))
}

/// The imported files of a loaded pipeline and the blake3 of their text, hex: what [`save`]
/// needs of the [`RawPipeline`] (which can then be dropped before the plan is written: a
/// generated pipeline of 100,000 tasks holds 100 MB of it).
pub fn imports(raw: &RawPipeline) -> Vec<(PathBuf, String)> {
    raw.import_paths
        .iter()
        .zip(raw.sources.iter().skip(1))
        .map(|(path, source)| (path.clone(), hash_hex(source.text.as_bytes())))
        .collect()
}

/// Keeps `plan`, compiled from `inputs` and these [`imports`], streamed to the store.
pub fn save(store: &Store, inputs: &Inputs, imports: Vec<(PathBuf, String)>, plan: &Plan) {
    let header = Header {
        key: blake3::Hash::from(inputs.key()).to_hex().to_string(),
        imports,
        name: plan.name.clone(),
        description: plan.description.clone(),
        base_dir: plan.base_dir.clone(),
        params: plan.params.clone(),
    };
    let Ok(header) = serde_json::to_vec(&header) else {
        tracing::warn!("cannot encode the compiled pipeline");
        return;
    };
    let kept = store.plan_put_with(&inputs.slot(), |out| {
        let mut bytes = Vec::with_capacity(header.len() + 8);
        put_u32(&mut bytes, header.len() as u32);
        bytes.extend_from_slice(&header);
        put_u32(&mut bytes, plan.tasks.len() as u32);
        for t in &plan.tasks {
            if put_task(&mut bytes, t).is_none() {
                tracing::debug!(
                    "task `{}` has a path that is not UTF-8: plan not kept",
                    t.name
                );
                return None;
            }
            if bytes.len() >= 64 << 10 {
                if let Err(e) = out.write_all(&bytes) {
                    return Some(Err(e));
                }
                bytes.clear();
            }
        }
        Some(out.write_all(&bytes))
    });
    if let Err(e) = kept {
        tracing::warn!("cannot keep the compiled pipeline: {e}");
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
        gather:\n    uses: noop\n    inputs: {all: fan.o}\n    timeout_secs: 5\n  \
        files:\n    uses: noop\n    description: reads files\n    foreach: {range: [1, 4]}\n    \
        inputs: {one: {file: kept.yaml}, many: {glob: \"*.yaml\"}}\n    partial_inputs: true\n  \
        lines:\n    uses: noop\n    foreach: {from: list.ids}\n    with: {message: hi}\n  \
        globbed:\n    uses: noop\n    foreach: {glob: \"raw/*.fits\"}\n";

    fn summary(p: &Plan) -> String {
        let tasks: Vec<String> = p
            .tasks
            .iter()
            .map(|t| {
                format!(
                    "{} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                    t.name,
                    t.kind.name(),
                    t.with,
                    t.inputs,
                    t.outputs,
                    t.foreach,
                    t.settings,
                    t.upstream
                )
            })
            .collect();
        let params: Vec<String> = p.params.iter().map(|x| format!("{x:?}")).collect();
        let read: Vec<bool> = (0..p.tasks.len()).map(|t| p.is_read(t)).collect();
        format!(
            "{} {:?} {:?} {params:?} {tasks:?} {:?} read {read:?}",
            p.name, p.description, p.base_dir, p.order,
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
        let imported = imports(&raw);
        let plan = compile(raw, &registry, &overrides, dir.path()).unwrap();
        save(&store, &inputs, imported.clone(), &plan);
        let kept = load(&store, &inputs, &registry).expect("kept plan");
        assert_eq!(summary(&kept), summary(&plan));
        // `lines` and `globbed` set none of the settings: they share them, as when compiled.
        let (lines, globbed) = (&kept.tasks[4], &kept.tasks[5]);
        assert!(Arc::ptr_eq(&lines.settings, &globbed.settings));
        assert!(!Arc::ptr_eq(&lines.settings, &kept.tasks[3].settings));

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
        // So is one cut short anywhere, or with bytes after the last task.
        save(&store, &inputs, imported, &plan);
        let whole = store.plan_get(&inputs.slot()).unwrap().unwrap();
        for cut in [5, whole.len() / 2, whole.len() - 1] {
            store.plan_put(&inputs.slot(), &whole[..cut]).unwrap();
            assert!(load(&store, &inputs, &registry).is_none(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        store.plan_put(&inputs.slot(), &longer).unwrap();
        assert!(load(&store, &inputs, &registry).is_none());
    }
}
