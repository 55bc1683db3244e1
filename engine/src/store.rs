//! Run state and the cache, kept in sled. This is the only module that names sled.
//!
//! Trees:
//! - `meta`: `schema` -> the store schema version (u32, big endian).
//! - `cache`: fingerprint (32 bytes) -> [`CacheEntry`] (JSON).
//! - `runs`: run id -> [`RunRecord`] (JSON). Run ids sort by start time.
//! - `instances`: `run id \0 instance id` -> [`InstanceRecord`] (JSON).
//! - `filehash`: absolute path -> [`FileStamp`] (JSON): content hashes of source files, reused
//!   while size and mtime are unchanged.
//! - `keys`: fingerprint -> the cache key's parts (JSON), for `nearby cache explain`. Kept apart
//!   so that cache lookups and instance records stay small.
//!
//! Records are JSON with `#[serde(default)]` on every field added after schema 1, so old stores
//! keep loading (tests/fixtures/store-v1 is a store written by schema 1 that must always open).
//!
//! Schema history:
//! - 1: first version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
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
    /// The key's parts (early schema-1 records only; now in the `keys` tree by fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Value>,
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

/// What a finished instance writes: its record, and for work that ran, its cache entry and key.
#[derive(Debug, Clone)]
pub struct Durable {
    pub record: InstanceRecord,
    pub cache: Option<CacheEntry>,
    /// (fingerprint, the key's JSON bytes)
    pub key: Option<(String, Vec<u8>)>,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    cache: sled::Tree,
    runs: sled::Tree,
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

impl Store {
    /// Opens (or creates) the store under `workdir/state`.
    pub fn open(workdir: &Path) -> Result<Store, StoreError> {
        let path = workdir.join("state");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let store = Store {
            meta: db.open_tree("meta")?,
            cache: db.open_tree("cache")?,
            runs: db.open_tree("runs")?,
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
                // Migrations from older schemas go here, one step at a time.
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

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn cache_get(&self, fingerprint: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.cache
            .get(fingerprint.as_bytes())?
            .map(|v| decode("cache entry", &v))
            .transpose()
    }

    pub fn cache_put(&self, e: &CacheEntry) -> Result<(), StoreError> {
        self.cache.insert(e.fingerprint.as_bytes(), encode(e))?;
        Ok(())
    }

    pub fn cache_remove(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.cache.remove(fingerprint.as_bytes())?;
        Ok(())
    }

    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        self.cache
            .iter()
            .values()
            .map(|v| decode("cache entry", &v?))
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
        for k in self.instances.scan_prefix(instance_key(id, "")).keys() {
            self.instances.remove(k?)?;
        }
        self.runs.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn put_instance(&self, run: &str, r: &InstanceRecord) -> Result<(), StoreError> {
        self.instances.insert(instance_key(run, &r.id), encode(r))?;
        Ok(())
    }

    /// Writes many instance records.
    pub fn put_instances(&self, run: &str, rs: &[InstanceRecord]) -> Result<(), StoreError> {
        for r in rs {
            self.instances.insert(instance_key(run, &r.id), encode(r))?;
        }
        Ok(())
    }

    pub fn get_instance(&self, run: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.instances
            .get(instance_key(run, id))?
            .map(|v| decode("task instance", &v))
            .transpose()
    }

    /// Every instance of a run, in id order.
    pub fn instances(&self, run: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        self.instances
            .scan_prefix(instance_key(run, ""))
            .values()
            .map(|v| decode("task instance", &v?))
            .collect()
    }

    pub fn put_key(&self, fingerprint: &str, key: &serde_json::Value) -> Result<(), StoreError> {
        self.keys.insert(fingerprint.as_bytes(), encode(key))?;
        Ok(())
    }

    pub fn get_key(&self, fingerprint: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.keys
            .get(fingerprint.as_bytes())?
            .map(|v| decode("cache key", &v))
            .transpose()
    }

    /// Writes finished work in order: cache entries and keys first, then instance records, so
    /// that a record never claims more than the store holds. Plain inserts, not a sled `Batch`:
    /// applying a batch seals and writes sled's log buffer each time, which costs a disk write
    /// per call; single inserts stay in memory until sled's periodic flush, in order.
    pub fn persist(&self, run: &str, batch: &[Durable]) -> Result<(), StoreError> {
        for d in batch {
            if let Some(c) = &d.cache {
                self.cache.insert(c.fingerprint.as_bytes(), encode(c))?;
            }
            if let Some((fp, k)) = &d.key {
                self.keys.insert(fp.as_bytes(), k.as_slice())?;
            }
        }
        for d in batch {
            self.instances
                .insert(instance_key(run, &d.record.id), encode(&d.record))?;
        }
        Ok(())
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
}
