//! Run state and the cache, kept in sled. This is the only module that names sled.
//!
//! Trees:
//! - `meta`: `schema` -> the store schema version (u32, big endian).
//! - `cache`: fingerprint (32 bytes) -> [`CacheEntry`] (JSON).
//! - `runs`: run id -> [`RunRecord`] (JSON). Run ids sort by start time.
//! - `log`: `run id \0 sequence (u64, big endian)` -> a JSON array of [`InstanceRecord`]s: the
//!   run's instance records, appended in groups (one insert per group of finished instances, not
//!   one per instance). Reading a run folds its groups in order; the last record of an id wins.
//!   The records of instances that ran carry their cache key's parts (for `cache explain`).
//! - `filehash`: absolute path -> [`FileStamp`] (JSON): content hashes of source files, reused
//!   while size and mtime are unchanged.
//! - Schema 1 only, still read: `instances` (`run id \0 instance id` -> one [`InstanceRecord`])
//!   and `keys` (fingerprint -> the key's parts).
//!
//! Records are JSON with `#[serde(default)]` on every field added after schema 1, so old stores
//! keep loading (tests/fixtures/store-v1 is a store written by schema 1 that must always open).
//!
//! Schema history:
//! - 1: first version: one `instances` entry and one `keys` entry per instance.
//! - 2: instance records appended in groups to `log`, keys inside the records of instances that
//!   ran; cache entries name the instance that made them. Opening a schema 1 store migrates it by
//!   raising the number: schema 1 trees are read as they are, new records go to `log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

pub const SCHEMA: u32 = 2;

/// Size of one group of instance records in the `log` tree. sled copies a whole leaf (up to 16
/// entries) on every insert and writes leaves over 128 KB as separate blob files: groups of a
/// few KB keep both cheap.
const GROUP_BYTES: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the state store at {path} is held by another nearby process (a run in progress?); try again when it ends")]
    Locked { path: PathBuf },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt cache entry {0} in the state store")]
    CorruptEntry(String),
    #[error("corrupt record in the state store ({what}): {source}")]
    Corrupt {
        what: String,
        source: serde_json::Error,
    },
    #[error("the state store at {path} has schema {found}, newer than this nearby understands ({SCHEMA}); upgrade nearby")]
    TooNew { path: PathBuf, found: u32 },
}

/// The state of a task instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Cached,
    Failed,
    Skipped,
    Cancelled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Cached => "cached",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::Cancelled => "cancelled",
        }
    }
    pub fn is_done_ok(self) -> bool {
        matches!(self, State::Succeeded | State::Cached)
    }
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }
}

/// One output file (or directory) of a finished task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub name: String,
    /// Absolute path.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    /// blake3, hex.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub fingerprint: String,
    pub task: String,
    pub kind: String,
    pub created_at: String,
    pub run: String,
    /// The instance (of `run`) that made this entry; its record holds the key's parts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    pub outputs: Vec<OutputRecord>,
    /// The key's parts. Written by schema 1 before the `keys` tree existed; now empty.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub key: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline_name: String,
    /// The pipeline file as given (for display) and its text (so resume/rerun replan the same).
    pub pipeline_path: String,
    pub pipeline_text: String,
    pub overrides: BTreeMap<String, String>,
    pub params: serde_json::Value,
    /// running, succeeded, failed, cancelled
    pub state: String,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    /// run, rerun, resume
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub force_from: Option<String>,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default)]
    pub log_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub task: String,
    pub kind: String,
    pub state: State,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub outputs: Vec<OutputRecord>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The cache key's parts, as JSON (instances that ran; early schema 1 records too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Box<RawValue>>,
    /// Why it hit or missed the cache.
    #[serde(default)]
    pub cache: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the failure was bad input (quarantined: not retried).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub hash: String,
}

/// Where the parts of a cache key are kept: in the store itself (schema 1), or in the record of
/// the instance that made the cache entry (read it with [`Store::instances`] of that run).
#[derive(Debug)]
pub enum KeyAt {
    Here(Box<RawValue>),
    Record { run: String, instance: String },
}

/// What a finished instance writes: its record, and for work that succeeded, its cache entry.
#[derive(Debug, Clone)]
pub struct Durable {
    pub record: InstanceRecord,
    pub cache: Option<CacheEntry>,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    cache: sled::Tree,
    runs: sled::Tree,
    log: sled::Tree,
    instances: sled::Tree,
    filehash: sled::Tree,
    keys: sled::Tree,
    path: PathBuf,
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        what: what.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and maps: serialization cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn instance_key(run: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.len() + 1 + id.len());
    k.extend_from_slice(run.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn log_key(run: &str, seq: u64) -> Vec<u8> {
    let mut k = instance_key(run, "");
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Opens (or creates) the store under `workdir/state`. One process at a time holds a store:
    /// if another does (a `status` reading it, a run starting), this waits for it up to 10 s.
    pub fn open(workdir: &Path) -> Result<Store, StoreError> {
        let t0 = std::time::Instant::now();
        loop {
            match Store::open_once(workdir) {
                Err(StoreError::Open { source, .. })
                    if source.to_string().contains("could not acquire lock")
                        && t0.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(StoreError::Open { path, source })
                    if source.to_string().contains("could not acquire lock") =>
                {
                    return Err(StoreError::Locked { path });
                }
                other => return other,
            }
        }
    }

    /// Opens the store without waiting: [`StoreError::Locked`] if another process holds it.
    pub fn try_open(workdir: &Path) -> Result<Store, StoreError> {
        match Store::open_once(workdir) {
            Err(StoreError::Open { path, source })
                if source.to_string().contains("could not acquire lock") =>
            {
                Err(StoreError::Locked { path })
            }
            other => other,
        }
    }

    fn open_once(workdir: &Path) -> Result<Store, StoreError> {
        let path = workdir.join("state");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(200))
            // sled's page cache defaults to 1 GB and keeps what was written: a night's records
            // need far less, and the rest is only memory taken from the tasks.
            .cache_capacity(64 << 20)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let store = Store {
            meta: db.open_tree("meta")?,
            cache: db.open_tree("cache")?,
            runs: db.open_tree("runs")?,
            log: db.open_tree("log")?,
            instances: db.open_tree("instances")?,
            filehash: db.open_tree("filehash")?,
            keys: db.open_tree("keys")?,
            db,
            path,
        };
        match store.meta.get("schema")? {
            None => {
                store.meta.insert("schema", &SCHEMA.to_be_bytes())?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
                if found > SCHEMA {
                    return Err(StoreError::TooNew {
                        path: store.path.clone(),
                        found,
                    });
                }
                // Migrations from older schemas, one step at a time.
                if found < 2 {
                    // 1 -> 2: nothing to convert (schema 1 trees stay readable).
                    store.meta.insert("schema", &2u32.to_be_bytes())?;
                }
            }
        }
        Ok(store)
    }

    pub fn schema(&self) -> Result<u32, StoreError> {
        Ok(self
            .meta
            .get("schema")?
            .map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])))
            .unwrap_or(0))
    }

    /// A small named value kept with the store (the service's schedule state, for one).
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(format!("user:{key}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(format!("user:{key}"), value.as_bytes())?;
        Ok(())
    }

    pub fn remove_meta(&self, key: &str) -> Result<(), StoreError> {
        self.meta.remove(format!("user:{key}"))?;
        Ok(())
    }

    /// Named values whose names start with `prefix`.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.meta
            .scan_prefix(format!("user:{prefix}"))
            .map(|kv| {
                let (k, v) = kv?;
                let k = String::from_utf8_lossy(&k);
                Ok((
                    k.trim_start_matches("user:").to_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn cache_get(&self, fingerprint: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.cache
            .get(fingerprint.as_bytes())?
            .map(|v| entry::decode(fingerprint, &v))
            .transpose()
    }

    pub fn cache_put(&self, e: &CacheEntry) -> Result<(), StoreError> {
        self.cache
            .insert(e.fingerprint.as_bytes(), entry::encode(e))?;
        Ok(())
    }

    pub fn cache_remove(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.cache.remove(fingerprint.as_bytes())?;
        Ok(())
    }

    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        self.cache
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                entry::decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    pub fn put_run(&self, r: &RunRecord) -> Result<(), StoreError> {
        self.runs.insert(r.id.as_bytes(), encode(r))?;
        Ok(())
    }

    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.runs
            .get(id.as_bytes())?
            .map(|v| decode("run", &v))
            .transpose()
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs
            .iter()
            .values()
            .map(|v| decode("run", &v?))
            .collect()
    }

    pub fn latest_run(&self) -> Result<Option<RunRecord>, StoreError> {
        self.runs
            .last()?
            .map(|(_, v)| decode("run", &v))
            .transpose()
    }

    pub fn delete_run(&self, id: &str) -> Result<(), StoreError> {
        for tree in [&self.instances, &self.log] {
            for k in tree.scan_prefix(instance_key(id, "")).keys() {
                tree.remove(k?)?;
            }
        }
        self.runs.remove(id.as_bytes())?;
        Ok(())
    }

    /// Appends records to the run's log, in groups of about [`GROUP_BYTES`] each.
    fn append(&self, run: &str, records: &[&InstanceRecord]) -> Result<(), StoreError> {
        let mut group = Vec::with_capacity(GROUP_BYTES + 1024);
        for (n, r) in records.iter().enumerate() {
            group.push(if group.is_empty() { b'[' } else { b',' });
            // Records are plain structs of strings and numbers: serialization cannot fail.
            let _ = serde_json::to_writer(&mut group, r);
            if group.len() >= GROUP_BYTES || n + 1 == records.len() {
                group.push(b']');
                let seq = self.db.generate_id()?;
                self.log.insert(log_key(run, seq), group.as_slice())?;
                group.clear();
            }
        }
        Ok(())
    }

    pub fn put_instance(&self, run: &str, r: &InstanceRecord) -> Result<(), StoreError> {
        self.append(run, &[r])
    }

    /// Writes many instance records.
    pub fn put_instances(&self, run: &str, rs: &[InstanceRecord]) -> Result<(), StoreError> {
        self.append(run, &rs.iter().collect::<Vec<_>>())
    }

    pub fn get_instance(&self, run: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self.instances(run)?.into_iter().find(|r| r.id == id))
    }

    /// Every instance of a run, in id order: the latest record of each.
    pub fn instances(&self, run: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let prefix = instance_key(run, "");
        let mut latest: BTreeMap<String, InstanceRecord> = BTreeMap::new();
        // Schema 1 records first: a schema 2 group written later for the same run supersedes them.
        for v in self.instances.scan_prefix(&prefix).values() {
            let r: InstanceRecord = decode("task instance", &v?)?;
            latest.insert(r.id.clone(), r);
        }
        for v in self.log.scan_prefix(&prefix).values() {
            let group: Vec<InstanceRecord> = decode("task instance records", &v?)?;
            for r in group {
                latest.insert(r.id.clone(), r);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The parts of the cache key with this fingerprint, as JSON: from the record of the instance
    /// that made the cache entry (or, for schema 1 stores, from the `keys` tree).
    pub fn key_at(&self, fingerprint: &str) -> Result<Option<KeyAt>, StoreError> {
        if let Some(v) = self.keys.get(fingerprint.as_bytes())? {
            let text = String::from_utf8_lossy(&v).into_owned();
            return RawValue::from_string(text)
                .map(|raw| Some(KeyAt::Here(raw)))
                .map_err(|source| StoreError::Corrupt {
                    what: "cache key".into(),
                    source,
                });
        }
        Ok(self
            .cache_get(fingerprint)?
            .filter(|e| !e.instance.is_empty())
            .map(|e| KeyAt::Record {
                run: e.run,
                instance: e.instance,
            }))
    }

    /// Writes finished work in order: cache entries first, then the instance records (one group),
    /// so that a record never claims more than the store holds. Plain inserts, not a sled `Batch`:
    /// applying a batch seals and writes sled's log buffer each time, which costs a disk write
    /// per call; single inserts stay in memory until sled's periodic flush, in order.
    pub fn persist(&self, run: &str, batch: &[Durable]) -> Result<(), StoreError> {
        for d in batch {
            if let Some(c) = &d.cache {
                self.cache
                    .insert(c.fingerprint.as_bytes(), entry::encode(c))?;
            }
        }
        self.append(run, &batch.iter().map(|d| &d.record).collect::<Vec<_>>())
    }

    pub fn file_stamp(&self, path: &str) -> Result<Option<FileStamp>, StoreError> {
        self.filehash
            .get(path.as_bytes())?
            .map(|v| decode("file hash", &v))
            .transpose()
    }

    pub fn put_file_stamp(&self, path: &str, s: &FileStamp) -> Result<(), StoreError> {
        self.filehash.insert(path.as_bytes(), encode(s))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Cache entries, written in a compact binary form: a hit is the commonest read of a rerun, and
/// decoding JSON was a sixth of a "nothing to do" run. Schema 1 entries (JSON, starting with `{`)
/// are still read. Layout (version 2): the byte 2, then task, kind, created_at, run, instance as
/// strings (u32 length, little endian, then UTF-8), the number of outputs (u32), and per output
/// name, path, size (u64), mtime_ns (i128) and hash. The fingerprint is the sled key.
mod entry {
    use super::{CacheEntry, OutputRecord, StoreError};

    const VERSION: u8 = 2;

    pub fn encode(e: &CacheEntry) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + e.outputs.len() * 160);
        b.push(VERSION);
        for s in [&e.task, &e.kind, &e.created_at, &e.run, &e.instance] {
            put_str(&mut b, s);
        }
        b.extend_from_slice(&(e.outputs.len() as u32).to_le_bytes());
        for o in &e.outputs {
            put_str(&mut b, &o.name);
            put_str(&mut b, &o.path);
            b.extend_from_slice(&o.size.to_le_bytes());
            b.extend_from_slice(&o.mtime_ns.to_le_bytes());
            put_str(&mut b, &o.hash);
        }
        b
    }

    pub fn decode(fingerprint: &str, bytes: &[u8]) -> Result<CacheEntry, StoreError> {
        if bytes.first() == Some(&b'{') {
            return super::decode("cache entry", bytes);
        }
        let bad = || StoreError::CorruptEntry(fingerprint.to_owned());
        let mut r = Reader(bytes);
        if r.take(1).ok_or_else(bad)? != [VERSION] {
            return Err(bad());
        }
        let mut strs = [(); 5].map(|_| String::new());
        for s in &mut strs {
            *s = r.str().ok_or_else(bad)?;
        }
        let n = r.u32().ok_or_else(bad)?;
        let mut outputs = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let name = r.str().ok_or_else(bad)?;
            let path = r.str().ok_or_else(bad)?;
            let size = u64::from_le_bytes(r.array().ok_or_else(bad)?);
            let mtime_ns = i128::from_le_bytes(r.array().ok_or_else(bad)?);
            let hash = r.str().ok_or_else(bad)?;
            outputs.push(OutputRecord {
                name,
                path,
                size,
                mtime_ns,
                hash,
            });
        }
        let [task, kind, created_at, run, instance] = strs;
        Ok(CacheEntry {
            fingerprint: fingerprint.to_owned(),
            task,
            kind,
            created_at,
            run,
            instance,
            outputs,
            key: serde_json::Value::Null,
        })
    }

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.array()?))
        }
        fn str(&mut self) -> Option<String> {
            let n = self.u32()? as usize;
            String::from_utf8(self.take(n)?.to_vec()).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let r = InstanceRecord {
                id: "a[1]".into(),
                task: "a".into(),
                kind: "noop".into(),
                state: State::Succeeded,
                attempts: 1,
                item: Some("1".into()),
                started_at: None,
                finished_at: None,
                duration_ms: Some(3),
                outputs: vec![],
                fingerprint: None,
                key: None,
                cache: None,
                log: None,
                error: None,
                quarantined: false,
            };
            s.put_instance("run1", &r).unwrap();
            s.put_instance(
                "run10",
                &InstanceRecord {
                    id: "b".into(),
                    ..r.clone()
                },
            )
            .unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema().unwrap(), SCHEMA);
        let got = s.instances("run1").unwrap();
        assert_eq!(got.len(), 1, "prefix scan must not leak into run10");
        assert_eq!(got[0].state, State::Succeeded);
    }

    #[test]
    fn cache_entries_round_trip_and_truncation_is_an_error() {
        let e = CacheEntry {
            fingerprint: "ab".repeat(32),
            task: "calibrate".into(),
            kind: "calibrate".into(),
            created_at: "2026-11-27T00:00:00Z".into(),
            run: "r1".into(),
            instance: "calibrate[f1]".into(),
            outputs: vec![OutputRecord {
                name: "image".into(),
                path: "/w/out/image.fits".into(),
                size: 72 << 20,
                mtime_ns: -5,
                hash: "cd".repeat(32),
            }],
            key: serde_json::Value::Null,
        };
        let bytes = entry::encode(&e);
        let back = entry::decode(&e.fingerprint, &bytes).unwrap();
        assert_eq!(back.outputs, e.outputs);
        assert_eq!((back.run, back.instance), (e.run, e.instance));
        for cut in [1, 10, bytes.len() - 1] {
            assert!(entry::decode(&e.fingerprint, &bytes[..cut]).is_err());
        }
    }
}
