//! Run state and the cache, kept in sled. This is the only module that names sled.
//!
//! Trees:
//! - `meta`: `schema` -> the store schema version (u32, big endian); `text <hash>` -> nothing,
//!   for each pipeline text kept in `texts`.
//! - `cache`: task tag (8 bytes: the start of blake3 of the task's name) then the fingerprint (32
//!   bytes) -> [`CacheEntry`] (compact binary, see `entry`). Keys sort by task, so the entries of
//!   one task are one range: a wide fan-out reads its task's entries in one scan
//!   ([`Store::task_cache`]) instead of one random lookup per instance.
//! - `runs`: run id -> [`RunRecord`] (JSON). Run ids sort by start time.
//! - `log`: `run id \0 sequence (u64, big endian)` -> a group of [`InstanceRecord`]s (compact
//!   binary, see `record`; schema 2 wrote JSON arrays, still read): the run's instance records,
//!   appended in groups (one insert per group of finished instances, not one per instance). Reading a run folds its groups in order; the last record of an id wins.
//!   The records of instances that ran carry their cache key's parts (for `cache explain`).
//! - `filehash`: absolute path -> [`FileStamp`] (JSON): content hashes of source files, reused
//!   while size and mtime are unchanged.
//!
//! Beside the trees, `state/packs/` holds one file per pipeline name: the cache entries its
//! last run used (see [`Pack`]), so that a rerun finds its entries with one read instead of one
//! tree lookup per instance. A hint only: an entry missing from the pack, or whose outputs no
//! longer check, is looked up in `cache`. Plain files, not a tree: a 100,000-instance pack would
//! be copied twice by sled and replayed from its log by the next open. Added without a schema
//! change (older binaries do not open schema 4 stores anyway, and a pack they left stale would
//! only be looked past).
//! - Schema 1 only, still read: `instances` (`run id \0 instance id` -> one [`InstanceRecord`])
//!   and `keys` (fingerprint -> the key's parts).
//!
//! `state/keys/<run>/` holds the cache keys of that run's records that are too large to keep in
//! sled (a gather's: one hash per input), one file each, named in the record (schema 6).
//!
//! `state/plans/` holds the compiled pipelines ([`Store::plan_get`]), one file per pipeline file,
//! for the same reason as the packs (a `plans` tree before; a store that has one drops it when
//! opened: its entries were only hints).
//!
//! Records are JSON with `#[serde(default)]` on every field added after schema 1, so old stores
//! keep loading (tests/fixtures/store-v1 is a store written by schema 1 that must always open).
//!
//! Schema history:
//! - 1: first version: one `instances` entry and one `keys` entry per instance.
//! - 2: instance records appended in groups to `log`, keys inside the records of instances that
//!   ran; cache entries name the instance that made them. Opening a schema 1 store migrates it by
//!   raising the number: schema 1 trees are read as they are, new records go to `log`.
//! - 3: cache entries keyed by task tag and raw fingerprint (were: the fingerprint in hex). Opening
//!   an older store moves its entries to the new keys. Instance records in binary groups (JSON
//!   groups of schema 2 are still read as they are).
//! - 4: run records name their pipeline text by hash (`texts`); records holding the text
//!   themselves are read as they are.
//! - 5: outputs in cache entries (version 3), record groups (tag 4) and packs (version 3) with the
//!   hash as its 32 bytes and a path under the workdir's `out/` relative to it (`entry::Form`):
//!   a third less per output record. Older entries and groups are read as they are.
//! - 6: record groups compressed with LZ4 (tag 5): a night's records repeat their task, kind,
//!   run and paths, and sled holds every group a run writes in memory until the run ends (a
//!   third of a 100,000-instance rerun's peak). Tag 4 groups are read as they are. A key of
//!   256 KB or more is kept in a file of its run's (`state/keys/`) and named in the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::binary::{put_str, Reader};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::value::RawValue;

pub const SCHEMA: u32 = 6;

/// Size of one group of instance records in the `log` tree. sled copies a whole leaf (up to 16
/// entries) on every insert and writes leaves over 128 KB as separate blob files: groups of a
/// few KB keep both cheap.
const GROUP_BYTES: usize = 16 << 10;

/// A record's key this long or longer (a gather's: 67 bytes per input) is kept in a file of its
/// run's (`state/keys/`) rather than in sled, which held a 100,000-input gather's 6.7 MB key
/// three times over while writing it.
const KEY_FILE_MIN: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the state store at {path} is held by another nearby process (a run in progress?); try again when it ends")]
    Locked { path: PathBuf },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("run {0}: its pipeline text is missing from the state store")]
    MissingText(String),
    #[error("corrupt cache entry {0} in the state store")]
    CorruptEntry(String),
    #[error("cannot write the cache pack {0}: {1}")]
    Pack(String, std::io::Error),
    #[error("cannot write or remove the task keys {0}: {1}")]
    Keys(String, std::io::Error),
    #[error("cannot read or write the compiled pipeline {0}: {1}")]
    Plan(String, std::io::Error),
    #[error("the record writer stopped: {0}")]
    Writer(String),
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
    /// blake3 (hex in JSON).
    pub hash: ContentHash,
}

/// A recorded content hash: blake3's 32 bytes (what nearby computes), or other text (a dry run's
/// placeholder; whatever an old record held). Hex text in JSON and on screen. 40 bytes in memory
/// rather than a 64-byte string on the heap besides: a rerun of a night holds one per output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentHash {
    Blake3([u8; 32]),
    Text(Box<str>),
}

impl ContentHash {
    /// 64 lower-case hex digits are a blake3 hash; anything else is kept as text (so that it
    /// reads back as it was written).
    pub fn parse(text: &str) -> ContentHash {
        let lower_hex = text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        match fingerprint_bytes(text).filter(|_| lower_hex) {
            Some(raw) => ContentHash::Blake3(raw),
            None => ContentHash::Text(text.into()),
        }
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ContentHash::Blake3(raw) => f.write_str(&hex(raw)),
            ContentHash::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(ContentHash::parse(&text))
    }
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

impl CacheEntry {
    /// What a cache hit needs of an entry: the run that recorded it and its outputs (the other
    /// names left empty).
    fn hit(fingerprint: &str, task: String, run: String, outputs: Vec<OutputRecord>) -> Self {
        CacheEntry {
            fingerprint: fingerprint.to_owned(),
            task,
            kind: String::new(),
            created_at: String::new(),
            run,
            instance: String::new(),
            outputs,
            key: serde_json::Value::Null,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline_name: String,
    /// The pipeline file as given (for display) and its text (so resume/rerun replan the same).
    pub pipeline_path: String,
    /// Kept once per distinct text in the store's `texts` tree (schema 4): a stored record names
    /// it by [`RunRecord::pipeline_text_hash`] and reads give it back whole.
    #[serde(default)]
    pub pipeline_text: String,
    /// blake3 of `pipeline_text`, hex, in stored records (none in schema 3 records, which hold
    /// the text itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_text_hash: Option<String>,
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

impl RunRecord {
    /// A copy with an empty pipeline text: the text of a generated pipeline can be megabytes, and
    /// a stored record names it by hash (`Clone` would copy it only for it to be dropped).
    fn without_text(&self) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            pipeline_name: self.pipeline_name.clone(),
            pipeline_path: self.pipeline_path.clone(),
            pipeline_text: String::new(),
            pipeline_text_hash: self.pipeline_text_hash.clone(),
            overrides: self.overrides.clone(),
            params: self.params.clone(),
            state: self.state.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            parent: self.parent.clone(),
            mode: self.mode.clone(),
            force_from: self.force_from.clone(),
            counts: self.counts.clone(),
            log_path: self.log_path.clone(),
        }
    }
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
    /// Compiled pipelines, one per pipeline file (see [`crate::plan::cached`]).
    /// Pipeline texts by blake3 (see [`RunRecord::pipeline_text`]).
    texts: sled::Tree,
    path: PathBuf,
    /// The workdir's `out/` with a trailing `/`: recorded output paths under it are stored
    /// relative to it (see `entry::Form`).
    root: String,
}

/// Writes a hint file (a pack, a compiled plan) or a record's large key whole or not at all:
/// streamed to `PATH.new`, then renamed into place, not synced (a hint lost is only slower; a
/// key lost is a key `cache explain` cannot show). `write` returns `Ok(None)` to give up (nothing
/// is replaced), and says an I/O error through the `failed` it is handed (`what`, with the
/// file's path).
fn write_hint<T>(
    path: &Path,
    what: fn(String, std::io::Error) -> StoreError,
    write: impl FnOnce(
        &mut std::io::BufWriter<std::fs::File>,
        &dyn Fn(std::io::Error) -> StoreError,
    ) -> Result<Option<T>, StoreError>,
) -> Result<Option<T>, StoreError> {
    use std::io::Write;
    let failed = |e: std::io::Error| what(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let tmp = path.with_extension("new");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(failed)?);
    let written = write(&mut out, &failed).and_then(|w| {
        out.flush().map_err(failed)?;
        Ok(w)
    });
    drop(out);
    match written {
        Ok(Some(w)) => {
            std::fs::rename(&tmp, path).map_err(failed)?;
            Ok(Some(w))
        }
        other => {
            let _ = std::fs::remove_file(&tmp);
            other
        }
    }
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

/// Length of a `cache` tree key: task tag and raw fingerprint.
const CACHE_KEY_LEN: usize = 8 + 32;

fn task_tag(task: &str) -> [u8; 8] {
    let h = blake3::hash(task.as_bytes());
    let mut tag = [0; 8];
    tag.copy_from_slice(&h.as_bytes()[..8]);
    tag
}

fn cache_key(task: &str, fingerprint: &[u8; 32]) -> [u8; CACHE_KEY_LEN] {
    let mut k = [0; CACHE_KEY_LEN];
    k[..8].copy_from_slice(&task_tag(task));
    k[8..].copy_from_slice(fingerprint);
    k
}

/// A fingerprint in hex (64 digits) as bytes.
pub fn fingerprint_bytes(hex: &str) -> Option<[u8; 32]> {
    let h = hex.as_bytes();
    if h.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(h[2 * i])? << 4 | digit(h[2 * i + 1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// One task's cache entries, read in one scan ([`Store::task_cache`]), sorted by fingerprint (the
/// scan's order). A key the scan did not reach is looked up in the store.
pub struct TaskCache {
    task: String,
    entries: Vec<([u8; 32], sled::IVec)>,
    complete: bool,
}

impl TaskCache {
    /// The entry with this fingerprint. Each entry is handed out once (a fingerprint names one
    /// instance of a run), which also frees it.
    pub fn take(
        &mut self,
        store: &Store,
        fingerprint: &str,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let Some(raw) = fingerprint_bytes(fingerprint) else {
            return Ok(None);
        };
        match self.entries.binary_search_by(|(fp, _)| fp.cmp(&raw)) {
            Ok(at) if !self.entries[at].1.is_empty() => {
                let v = std::mem::take(&mut self.entries[at].1);
                entry::decode_hit(fingerprint, &v, &store.root).map(Some)
            }
            _ if self.complete => Ok(None),
            _ => store.cache_get(&self.task, fingerprint),
        }
    }
}

/// The cache entries a pipeline's last run used, read as one file ([`Store::pack`]): a rerun
/// of a 10,000-instance night finds all of its entries in one read instead of scanning or
/// looking up the `cache` tree 10,000 times (sled spends 4,000-8,000 instructions a key).
///
/// Layout: a version byte, then per entry, sorted by fingerprint: the raw fingerprint (32
/// bytes), the entry's length (u32, little endian) and the parts of the entry a hit uses (task
/// name, the run that recorded it as an index into the runs, outputs; about half of the whole
/// entry). Then the runs (a count, u32, and each id), and where they start (u32): a pack's
/// entries come from a few runs, and an id in every entry was a sixth of a 100,000-entry pack.
pub struct Pack {
    blob: Vec<u8>,
    /// The runs the entries name, by index.
    runs: Vec<String>,
    /// The workdir's `out/`, which relative output paths are under.
    root: String,
    /// Where each entry starts in `blob` (at its fingerprint), in fingerprint order: 4 bytes an
    /// entry, where a copy of the fingerprint beside it took 40.
    index: Vec<u32>,
}

/// 3: outputs in the packed form of schema 5 (`entry::Form`); 4: runs by index. A pack of an
/// older version is not read (a hint: the next run writes a new one).
const PACK_VERSION: u8 = 4;

impl Pack {
    fn read(blob: Vec<u8>, root: String) -> Option<Pack> {
        if blob.first() != Some(&PACK_VERSION) {
            return None;
        }
        let runs_at = blob.len().checked_sub(4)?;
        let entries_end = Reader(&blob[runs_at..]).u32()? as usize;
        let mut r = Reader(blob.get(entries_end..runs_at)?);
        let n = r.u32()?;
        let mut runs = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            runs.push(r.str()?);
        }
        if !r.is_empty() {
            return None;
        }
        let mut r = Reader(blob.get(1..entries_end)?);
        let mut index = Vec::new();
        let mut at = 1usize;
        let mut last: Option<&[u8]> = None;
        while !r.is_empty() {
            let fp = r.take(32)?;
            let len = r.u32()?;
            r.take(len as usize)?;
            if last.is_some_and(|l| l >= fp) {
                return None;
            }
            last = Some(fp);
            index.push(u32::try_from(at).ok()?);
            at += 36 + len as usize;
        }
        index.shrink_to_fit();
        Some(Pack {
            blob,
            runs,
            root,
            index,
        })
    }

    /// Where the entry with this fingerprint is in `blob`: offset and length.
    fn place(&self, fingerprint: &[u8; 32]) -> Option<(usize, usize)> {
        let fp_at = |at: u32| self.blob.get(at as usize..at as usize + 32);
        let at = self
            .index
            .binary_search_by(|&at| fp_at(at).cmp(&Some(&fingerprint[..])))
            .ok()?;
        let from = self.index[at] as usize + 36;
        let len = Reader(self.blob.get(from - 4..from)?).u32()? as usize;
        Some((from, len))
    }

    fn raw(&self, fingerprint: &[u8; 32]) -> Option<&[u8]> {
        let (from, len) = self.place(fingerprint)?;
        self.blob.get(from..from + len)
    }

    /// A hit's parts: the run that recorded the entry, its outputs, and the same outputs kept
    /// where they are, in the pack (see [`Outputs::InPack`]).
    pub fn hit(
        &self,
        task: &str,
        fingerprint: &str,
    ) -> Option<(String, Vec<OutputRecord>, Outputs)> {
        let (from, len) = self.place(&fingerprint_bytes(fingerprint)?)?;
        let mut r = Reader(self.blob.get(from..from + len)?);
        if r.str_ref()? != task {
            return None;
        }
        let run = self.runs.get(r.u32()? as usize)?.clone();
        let at = from + len - r.0.len();
        let form = entry::Form::Packed { root: &self.root };
        let outputs = entry::read_outputs(&mut r, fingerprint, form).ok()?;
        Some((run, outputs, Outputs::InPack(at as u32)))
    }

    /// The run that recorded the entry and its outputs as the pack holds them (packed), if the
    /// entry is `task`'s.
    fn parts_of(&self, task: &str, fingerprint: &[u8; 32]) -> Option<(&str, &[u8])> {
        let mut r = Reader(self.raw(fingerprint)?);
        if r.str_ref()? != task {
            return None;
        }
        let run = self.runs.get(r.u32()? as usize)?;
        Some((run, r.0))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// A finished instance's outputs as a run keeps them for its dependents: in the store's packed
/// form (schema 5: the hash as 32 bytes, paths relative to `out/`), about 70 bytes an output
/// where an [`OutputRecord`] takes about 200 with its strings; or, for a hit found in the
/// pipeline's pack, only where they are in it. Read back with [`Store::outputs`].
#[derive(Debug, Default)]
pub enum Outputs {
    #[default]
    None,
    Own(Box<[u8]>),
    /// At this offset in the run's pack.
    InPack(u32),
}

/// The runs a pack being written names, each given an index the first time.
#[derive(Default)]
struct RunIndex {
    ids: Vec<String>,
    at: std::collections::HashMap<String, u32>,
}

impl RunIndex {
    fn of(&mut self, run: &str) -> u32 {
        if let Some(&i) = self.at.get(run) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(run.to_owned());
        self.at.insert(run.to_owned(), i);
        i
    }
}

/// Where [`Store::put_pack`] takes an entry from.
#[derive(Debug, Clone, Copy)]
pub enum PackSource<'a> {
    /// The old pack (the run found it there), else the `cache` tree.
    Old,
    /// The `cache` tree.
    Cache,
    /// Made by this run, which just put the same into the `cache` tree: no need to read it.
    Made { run: &'a str, outputs: &'a Outputs },
}

/// Persists a run's finished work on a thread of its own ([`Store::writer`]).
pub struct Writer {
    tx: Option<std::sync::mpsc::SyncSender<Vec<Durable>>>,
    thread: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
    /// Without a thread: the store and run to write to directly.
    inline: Option<(Store, String)>,
}

impl Writer {
    /// Queues finished work (it is written in the order sent). Fails if an earlier write failed.
    pub fn send(&mut self, batch: Vec<Durable>) -> Result<(), StoreError> {
        if let Some((store, run)) = &self.inline {
            return store.persist(run, batch);
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(batch).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread stopped: it ended on a write error.
        self.finish()?;
        Err(StoreError::Writer(
            "finished work sent after the writer ended".into(),
        ))
    }

    /// Waits until everything sent is written.
    pub fn finish(&mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(StoreError::Writer("the writer thread panicked".into())),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
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

    /// Closes the store and opens it once more, so that the next command opens it quickly.
    /// sled writes a snapshot of its page table only while opening, after replaying its log
    /// from the last snapshot: after a run that wrote much (the first run of a 10,000-task
    /// pipeline logs megabytes), this moves that replay from the next command (a rerun,
    /// `status`) to the end of the run. Skipped when the store is still open elsewhere.
    pub fn settle(self) {
        let Some(workdir) = self.path.parent().map(Path::to_path_buf) else {
            return;
        };
        drop(self);
        if let Ok(again) = Store::try_open(&workdir) {
            drop(again);
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
            // need far less, and the rest is only memory taken from the tasks. 16 MB: a first
            // run of a 100k-instance gather peaked at 216-223 MB instead of 253-273 MB (64 MB,
            // session 7). 8 MB (session 11): a first run of a chain of 100k tasks, whose entries
            // land all over the tree, peaks at 105 MB instead of 115; a fan-out of 100k takes
            // 1.08 s instead of 0.90, as more of the tree is read back from disk (4 MB: 100 MB
            // and 1.30 s). Runs and reruns of 10k instances take the same time.
            .cache_capacity(8 << 20)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        // Compiled plans were a tree before they were files (`state/plans/`): a hint, dropped.
        if db.tree_names().iter().any(|name| name == b"plans") {
            db.drop_tree("plans")?;
        }
        let store = Store {
            meta: db.open_tree("meta")?,
            cache: db.open_tree("cache")?,
            runs: db.open_tree("runs")?,
            log: db.open_tree("log")?,
            instances: db.open_tree("instances")?,
            filehash: db.open_tree("filehash")?,
            keys: db.open_tree("keys")?,
            texts: db.open_tree("texts")?,
            db,
            path,
            // Absolute, so that a store opened through a relative path reads the same paths.
            root: format!(
                "{}/",
                std::path::absolute(workdir.join("out"))
                    .unwrap_or_else(|_| workdir.join("out"))
                    .display()
            ),
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
                if found < 3 {
                    store.migrate_cache_keys()?;
                    store.meta.insert("schema", &3u32.to_be_bytes())?;
                }
                if found < 4 {
                    // 3 -> 4: nothing to convert (records holding their text stay readable);
                    // the number keeps older binaries from reading records without it.
                    store.meta.insert("schema", &4u32.to_be_bytes())?;
                }
                if found < 5 {
                    // 4 -> 5: nothing to convert (text outputs stay readable); the number keeps
                    // older binaries from reading packed outputs.
                    store.meta.insert("schema", &5u32.to_be_bytes())?;
                }
                if found < 6 {
                    // 5 -> 6: nothing to convert (plain groups stay readable); the number keeps
                    // older binaries from reading compressed ones.
                    store.meta.insert("schema", &6u32.to_be_bytes())?;
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

    /// 2 -> 3: moves cache entries from hex-fingerprint keys to task-tagged keys. Each entry names
    /// its task, so the move needs nothing else.
    fn migrate_cache_keys(&self) -> Result<(), StoreError> {
        for kv in self.cache.iter() {
            let (k, v) = kv?;
            if k.len() == CACHE_KEY_LEN {
                continue;
            }
            let fp = String::from_utf8_lossy(&k).into_owned();
            let e = entry::decode(&fp, &v, &self.root)?;
            let raw = fingerprint_bytes(&fp).ok_or_else(|| StoreError::CorruptEntry(fp.clone()))?;
            self.cache
                .insert(cache_key(&e.task, &raw), entry::encode(&e, &self.root))?;
            self.cache.remove(&k)?;
        }
        Ok(())
    }

    /// The compiled pipeline kept for `slot` (a pipeline file), if any.
    pub fn plan_get(&self, slot: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.plan_path(slot)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Plan(
                self.plan_path(slot).display().to_string(),
                e,
            )),
        }
    }

    /// Keeps a compiled pipeline for `slot`, replacing the one kept before.
    pub fn plan_put(&self, slot: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
        self.plan_put_with(slot, |out| Some(out.write_all(bytes)))
            .map(|_| ())
    }

    /// Keeps the compiled pipeline that `write` streams out for `slot`, unless `write` gives up
    /// (returns `None`: nothing is replaced). Returns whether it was kept. A file, not a tree:
    /// sled copied a 100,000-task plan twice (25 MB) at the peak of the run that compiled it.
    pub fn plan_put_with(
        &self,
        slot: &[u8],
        write: impl FnOnce(&mut dyn std::io::Write) -> Option<std::io::Result<()>>,
    ) -> Result<bool, StoreError> {
        let kept = write_hint(&self.plan_path(slot), StoreError::Plan, |out, failed| {
            write(out).map(|r| r.map_err(failed)).transpose()
        })?;
        Ok(kept.is_some())
    }

    /// `state/plans/<blake3 of the slot>`.
    fn plan_path(&self, slot: &[u8]) -> PathBuf {
        let name = blake3::hash(slot).to_hex();
        self.path.join("plans").join(&name[..32])
    }

    pub fn cache_get(
        &self,
        task: &str,
        fingerprint: &str,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let Some(raw) = fingerprint_bytes(fingerprint) else {
            return Ok(None);
        };
        self.cache
            .get(cache_key(task, &raw))?
            .map(|v| entry::decode(fingerprint, &v, &self.root))
            .transpose()
    }

    /// The cache entries of one task, read in one scan of its key range, for a task about to
    /// look up `wanted` keys. The scan stops after a few times `wanted` entries (a task with a
    /// long history of other keys is then looked up key by key, see [`TaskCache::get`]).
    pub fn task_cache(&self, task: &str, wanted: usize) -> Result<TaskCache, StoreError> {
        let limit = wanted.saturating_mul(4).max(1024);
        // Grown as found: a first run finds nothing, and 100k wanted keys reserved 7 MB for it.
        let mut entries = Vec::new();
        let mut complete = true;
        for kv in self.cache.scan_prefix(task_tag(task)) {
            if entries.len() == limit {
                complete = false;
                break;
            }
            let (k, v) = kv?;
            if let Some(fp) = k.get(8..).and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                entries.push((fp, v));
            }
        }
        Ok(TaskCache {
            task: task.to_owned(),
            entries,
            complete,
        })
    }

    /// The entries `pipeline`'s last run used (see [`Pack`]); `None` when there is none or it
    /// cannot be read.
    pub fn pack(&self, pipeline: &str) -> Result<Option<Pack>, StoreError> {
        Ok(std::fs::read(self.pack_path(pipeline))
            .ok()
            .and_then(|blob| Pack::read(blob, self.root.clone())))
    }

    /// `state/packs/<blake3 of the pipeline name>`.
    fn pack_path(&self, pipeline: &str) -> PathBuf {
        let name = blake3::hash(pipeline.as_bytes()).to_hex();
        self.path.join("packs").join(&name[..32])
    }

    /// Keeps these entries, sorted by fingerprint, as `pipeline`'s pack (see [`PackSource`]
    /// for where each comes from; one with no entry is left out). Returns how many it holds.
    pub fn put_pack<'a>(
        &self,
        pipeline: &str,
        old: Option<&Pack>,
        sorted: impl Iterator<Item = (&'a str, [u8; 32], PackSource<'a>)>,
    ) -> Result<usize, StoreError> {
        use std::io::Write;
        // Streamed to the file: a 100,000-instance pack never sits whole in memory at the end
        // of the run that writes it.
        let written = write_hint(
            &self.pack_path(pipeline),
            StoreError::Pack,
            |out, failed| {
                out.write_all(&[PACK_VERSION]).map_err(failed)?;
                let mut last: Option<[u8; 32]> = None;
                let mut n = 0;
                let mut written = 1usize;
                let mut runs = RunIndex::default();
                let mut part = Vec::new();
                for (task, fp, source) in sorted {
                    if last.is_some_and(|l| l >= fp) {
                        continue;
                    }
                    let kept = match source {
                        PackSource::Old => old.and_then(|p| p.parts_of(task, &fp)),
                        _ => None,
                    };
                    // A pack's entry: what a hit reads of a cache entry (task, the run's index,
                    // packed outputs).
                    part.clear();
                    let mut head = |task: &str, run: &str| {
                        put_str(&mut part, task);
                        part.extend_from_slice(&runs.of(run).to_le_bytes());
                    };
                    match (kept, source) {
                        (Some((run, outputs)), _) => {
                            head(task, run);
                            part.extend_from_slice(outputs);
                        }
                        (None, PackSource::Made { run, outputs }) => match outputs {
                            Outputs::Own(packed) => {
                                head(task, run);
                                part.extend_from_slice(packed);
                            }
                            Outputs::None => {
                                head(task, run);
                                entry::put_outputs(&mut part, &[], &self.root);
                            }
                            // Kept in another pack: never the case for work made by the run.
                            Outputs::InPack(_) => continue,
                        },
                        (None, _) => match self.cache.get(cache_key(task, &fp))? {
                            Some(b) => {
                                let e = entry::decode(&hex(&fp), &b, &self.root)?;
                                head(&e.task, &e.run);
                                entry::put_outputs(&mut part, &e.outputs, &self.root);
                            }
                            None => continue,
                        },
                    }
                    out.write_all(&fp).map_err(failed)?;
                    out.write_all(&(part.len() as u32).to_le_bytes())
                        .map_err(failed)?;
                    out.write_all(&part).map_err(failed)?;
                    written += 36 + part.len();
                    last = Some(fp);
                    n += 1;
                }
                let entries_end = u32::try_from(written)
                    .map_err(|_| failed(std::io::Error::other("a pack of 4 GB or more")))?;
                let mut table = Vec::new();
                table.extend_from_slice(&(runs.ids.len() as u32).to_le_bytes());
                for id in &runs.ids {
                    put_str(&mut table, id);
                }
                table.extend_from_slice(&entries_end.to_le_bytes());
                out.write_all(&table).map_err(failed)?;
                Ok(Some(n))
            },
        )?;
        Ok(written.unwrap_or(0))
    }

    /// Outputs in the form a run keeps them (see [`Outputs`]).
    pub fn keep_outputs(&self, outputs: &[OutputRecord]) -> Outputs {
        if outputs.is_empty() {
            return Outputs::None;
        }
        let mut b = Vec::new();
        entry::put_outputs(&mut b, outputs, &self.root);
        Outputs::Own(b.into_boxed_slice())
    }

    /// Kept outputs read back (`pack`: the run's pack, which [`Outputs::InPack`] points into).
    pub fn outputs(
        &self,
        kept: &Outputs,
        pack: Option<&Pack>,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        let bytes = match kept {
            Outputs::None => return Ok(Vec::new()),
            Outputs::Own(b) => &b[..],
            Outputs::InPack(at) => {
                pack.and_then(|p| p.blob.get(*at as usize..))
                    .ok_or_else(|| {
                        StoreError::CorruptEntry(
                            "of the run's pack (outputs held for dependents)".into(),
                        )
                    })?
            }
        };
        let form = entry::Form::Packed { root: &self.root };
        entry::read_outputs(&mut Reader(bytes), "(outputs held for dependents)", form)
    }

    /// Forgets every pack (after entries are dropped from the cache).
    pub fn clear_packs(&self) -> Result<(), StoreError> {
        let dir = self.path.join("packs");
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Pack(dir.display().to_string(), e))
            }
            _ => Ok(()),
        }
    }

    pub fn cache_put(&self, e: &CacheEntry) -> Result<(), StoreError> {
        let raw = fingerprint_bytes(&e.fingerprint)
            .ok_or_else(|| StoreError::CorruptEntry(e.fingerprint.clone()))?;
        self.cache
            .insert(cache_key(&e.task, &raw), entry::encode(e, &self.root))?;
        Ok(())
    }

    pub fn cache_remove(&self, task: &str, fingerprint: &str) -> Result<(), StoreError> {
        if let Some(raw) = fingerprint_bytes(fingerprint) {
            self.cache.remove(cache_key(task, &raw))?;
        }
        Ok(())
    }

    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>, StoreError> {
        self.cache
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let fp = k.get(8..).map(hex).unwrap_or_default();
                entry::decode(&fp, &v, &self.root)
            })
            .collect()
    }

    /// Writes a run record (twice per run at least: when it starts and when it ends). The
    /// pipeline text, 0.6 MB for a generated pipeline of 10,000 tasks, is kept once per distinct
    /// text and named by its hash in the record.
    pub fn put_run(&self, r: &RunRecord) -> Result<(), StoreError> {
        let hash = match &r.pipeline_text_hash {
            // Kept already (see `keep_text`).
            Some(hash) if r.pipeline_text.is_empty() => hash.clone(),
            _ => self.put_text(&r.pipeline_text)?,
        };
        let stored = RunRecord {
            pipeline_text_hash: Some(hash),
            ..r.without_text()
        };
        self.runs.insert(r.id.as_bytes(), encode(&stored))?;
        Ok(())
    }

    /// Keeps a pipeline text once; returns its blake3, hex.
    fn put_text(&self, text: &str) -> Result<String, StoreError> {
        let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
        // Known by a marker in `meta`: asking `texts` itself reads the text in (sled pages in
        // the leaf with its values), 7.8 MB for a generated pipeline of 100,000 tasks.
        let marker = format!("text {hash}");
        if !self.meta.contains_key(&marker)? {
            if !self.texts.contains_key(hash.as_bytes())? {
                self.texts.insert(hash.as_bytes(), text.as_bytes())?;
            }
            self.meta.insert(marker, &[])?;
        }
        Ok(hash)
    }

    /// Keeps the run's pipeline text in the store and lets go of it in memory: the record names
    /// it by hash from then on, and [`Store::get_run`] gives it back whole. A generated
    /// pipeline's text is megabytes (7.8 MB for 100,000 tasks), otherwise held all run long.
    pub fn keep_text(&self, r: &mut RunRecord) -> Result<(), StoreError> {
        if r.pipeline_text_hash.is_none() || !r.pipeline_text.is_empty() {
            r.pipeline_text_hash = Some(self.put_text(&r.pipeline_text)?);
            r.pipeline_text = String::new();
        }
        Ok(())
    }

    /// Decodes a stored run record and gives it back its pipeline text.
    fn read_run(&self, bytes: &[u8]) -> Result<RunRecord, StoreError> {
        let mut r: RunRecord = decode("run", bytes)?;
        if let Some(hash) = r.pipeline_text_hash.take() {
            let text = self
                .texts
                .get(hash.as_bytes())?
                .ok_or_else(|| StoreError::MissingText(r.id.clone()))?;
            r.pipeline_text = String::from_utf8_lossy(&text).into_owned();
        }
        Ok(r)
    }

    /// A run record without its pipeline text (empty), for callers that want only its state
    /// and counts: the text of a generated pipeline can be megabytes.
    pub fn get_run_without_text(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.runs
            .get(id.as_bytes())?
            .map(|v| decode("run", &v))
            .transpose()
    }

    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.runs
            .get(id.as_bytes())?
            .map(|v| self.read_run(&v))
            .transpose()
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs
            .iter()
            .values()
            .map(|v| self.read_run(&v?))
            .collect()
    }

    pub fn latest_run(&self) -> Result<Option<RunRecord>, StoreError> {
        self.runs
            .last()?
            .map(|(_, v)| self.read_run(&v))
            .transpose()
    }

    pub fn delete_run(&self, id: &str) -> Result<(), StoreError> {
        for tree in [&self.instances, &self.log] {
            for k in tree.scan_prefix(instance_key(id, "")).keys() {
                tree.remove(k?)?;
            }
        }
        self.runs.remove(id.as_bytes())?;
        let keys = self.keys_dir(id);
        match std::fs::remove_dir_all(&keys) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Keys(keys.display().to_string(), e))
            }
            _ => Ok(()),
        }
    }

    /// Appends records to the run's log, in groups of about [`GROUP_BYTES`] each. Records
    /// handed over owned are dropped as soon as they are encoded (a gather's record holds its
    /// key, 6.7 MB for 100,000 inputs).
    fn append<R: std::borrow::Borrow<InstanceRecord>>(
        &self,
        run: &str,
        records: impl IntoIterator<Item = R>,
    ) -> Result<(), StoreError> {
        let mut group = Vec::with_capacity(GROUP_BYTES + 1024);
        let mut large = false;
        let mut records = records.into_iter().peekable();
        while let Some(owned) = records.next() {
            let r = owned.borrow();
            if group.is_empty() {
                group.push(record::GROUP);
            }
            // One allocation for a record larger than a group (a gather's key), not doublings.
            let key = r.key.as_deref().map(RawValue::get).unwrap_or_default();
            let key_file = match key.len() >= KEY_FILE_MIN {
                true => Some(self.put_key_file(run, &r.id, key)?),
                false => None,
            };
            large |= key_file.is_none() && key.len() > GROUP_BYTES;
            group.reserve(key.len() + 1024);
            record::encode(&mut group, r, &self.root, key_file.as_deref());
            drop(owned);
            if group.len() >= GROUP_BYTES || records.peek().is_none() {
                let seq = self.db.generate_id()?;
                let key = log_key(run, seq);
                if large {
                    // A key's hex digits hardly compress, and compressing would take one more
                    // copy of megabytes: kept as it is.
                    self.log.insert(key, group.as_slice())?;
                    group = Vec::with_capacity(GROUP_BYTES + 1024);
                } else {
                    self.log.insert(key, record::compress(&group)?)?;
                    group.clear();
                }
                large = false;
            }
        }
        Ok(())
    }

    /// `state/keys/<run>/`: the keys of the run's records that are too large to keep in sled.
    fn keys_dir(&self, run: &str) -> PathBuf {
        // Made file-name safe: `delete_run` removes it, whatever id it is handed.
        self.path.join("keys").join(crate::sched::sanitize(run))
    }

    /// Writes a record's large key to a file of its run's (whole or nothing); returns its name.
    fn put_key_file(&self, run: &str, id: &str, key: &str) -> Result<String, StoreError> {
        use std::io::Write;
        let name = blake3::hash(id.as_bytes()).to_hex()[..32].to_owned();
        write_hint(
            &self.keys_dir(run).join(&name),
            StoreError::Keys,
            |out, failed| {
                out.write_all(key.as_bytes()).map_err(failed)?;
                Ok(Some(()))
            },
        )?;
        Ok(name)
    }

    pub fn put_instance(&self, run: &str, r: &InstanceRecord) -> Result<(), StoreError> {
        self.append(run, [r])
    }

    /// Writes many instance records.
    pub fn put_instances(&self, run: &str, rs: &[InstanceRecord]) -> Result<(), StoreError> {
        self.append(run, rs)
    }

    pub fn get_instance(&self, run: &str, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self.instances(run)?.into_iter().find(|r| r.id == id))
    }

    /// Every instance of a run, in id order: the latest record of each.
    pub fn instances(&self, run: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let prefix = instance_key(run, "");
        // Every record in the order written; the last of each id wins.
        let mut all: Vec<InstanceRecord> = Vec::new();
        // Schema 1 records first: a schema 2 group written later for the same run supersedes them.
        for v in self.instances.scan_prefix(&prefix).values() {
            all.push(decode("task instance", &v?)?);
        }
        for v in self.log.scan_prefix(&prefix).values() {
            let v = v?;
            let group = match v.first() {
                Some(&(record::GROUP | record::GROUP_TEXT | record::GROUP_LZ4)) => {
                    record::decode_group(run, &v, &self.root, &self.keys_dir(run))?
                }
                _ => decode("task instance records", &v)?,
            };
            all.extend(group);
        }
        // Stable: records of one id stay in the order written.
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let mut latest: Vec<InstanceRecord> = Vec::with_capacity(all.len());
        for r in all {
            match latest.last_mut() {
                Some(last) if last.id == r.id => *last = r,
                _ => latest.push(r),
            }
        }
        Ok(latest)
    }

    /// The parts of the cache key with this fingerprint, as JSON: from the record of the instance
    /// that made the cache entry (or, for schema 1 stores, from the `keys` tree).
    pub fn key_at(&self, task: &str, fingerprint: &str) -> Result<Option<KeyAt>, StoreError> {
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
            .cache_get(task, fingerprint)?
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
    pub fn persist(&self, run: &str, batch: Vec<Durable>) -> Result<(), StoreError> {
        for d in &batch {
            if let Some(c) = &d.cache {
                self.cache_put(c)?;
            }
        }
        self.append(run, batch.into_iter().map(|d| d.record))
    }

    /// A thread that persists a run's finished work in the order it is sent, so that the
    /// scheduler goes on with the next tasks while sled writes.
    pub fn writer(&self, run: &str) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Durable>>(8);
        let store = self.clone();
        let name = run.to_owned();
        let thread = std::thread::Builder::new()
            .name("nearby-store".into())
            .spawn(move || {
                for batch in rx {
                    store.persist(&name, batch)?;
                }
                Ok(())
            });
        match thread {
            Ok(thread) => Writer {
                tx: Some(tx),
                thread: Some(thread),
                inline: None,
            },
            // No thread to be had: write on the caller's thread instead.
            Err(_) => Writer {
                tx: None,
                thread: None,
                inline: Some((self.clone(), run.to_string())),
            },
        }
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
/// Instance records in binary, a group per `log` value: the byte [`GROUP`], then the records one
/// after another. A record: id, task, kind (strings: u32 length, little endian, then UTF-8),
/// state (u8, in the order of [`State`]), attempts (u32), item (optional string: length
/// `u32::MAX` for none), started_at and finished_at (packed: see below), duration_ms (u64,
/// `u64::MAX` for none), outputs (as in a cache entry), fingerprint, key (its JSON), cache, log,
/// error (packed or optional strings), quarantined (u8). Binary rather than JSON: a "nothing to
/// do" rerun of a wide fan-out writes one record per instance, and escaping JSON was most of it.
///
/// Packed optional strings start with a byte: 0 none, 1 the common form, 2 any other text (an
/// optional string follows). Common forms: a timestamp the scheduler writes
/// (`2026-11-27T21:40:00.123Z`) as milliseconds since the epoch (i64), a fingerprint (64 hex
/// digits) as its 32 bytes, a cache hit's reason (`hit: recorded by run RUN`) as the run id. A
/// rerun's record of a cached instance is about 150 bytes.
mod record {
    use super::entry::{put_outputs, read_outputs, Form};
    use super::{InstanceRecord, State, StoreError};
    use crate::binary::{put_str, Reader};
    use serde_json::value::RawValue;
    use std::path::Path;

    /// The tag of a group whose outputs are in the [`Form::Packed`] form (schema 5).
    pub const GROUP: u8 = 4;
    /// The tag of a group written by schema 3 and 4 ([`Form::Text`] outputs), still read.
    pub const GROUP_TEXT: u8 = 3;
    /// The tag of a [`GROUP`] compressed with LZ4 (schema 6): then the length of the group's
    /// records (u32) and the compressed records. About 2x smaller.
    pub const GROUP_LZ4: u8 = 5;
    /// The longest group read back (a corrupt length is not an allocation of gigabytes).
    const MAX_GROUP: usize = 1 << 30;
    const NONE: u32 = u32::MAX;
    /// In place of a key's length: the key is in a file of the run's (then its name).
    const KEY_FILE: u32 = u32::MAX - 1;
    const STATES: [State; 7] = [
        State::Pending,
        State::Running,
        State::Succeeded,
        State::Cached,
        State::Failed,
        State::Skipped,
        State::Cancelled,
    ];

    fn put_opt(b: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => put_str(b, s),
            None => b.extend_from_slice(&NONE.to_le_bytes()),
        }
    }

    /// A packed optional string: none, the common form's bytes, or the text itself.
    fn put_packed(b: &mut Vec<u8>, s: Option<&str>, pack: fn(&str) -> Option<Vec<u8>>) {
        match s {
            None => b.push(0),
            Some(text) => match pack(text) {
                Some(bytes) => {
                    b.push(1);
                    b.extend_from_slice(&bytes);
                }
                None => {
                    b.push(2);
                    put_str(b, text);
                }
            },
        }
    }

    fn get_packed(
        r: &mut Reader,
        unpack: fn(&mut Reader) -> Option<String>,
    ) -> Option<Option<String>> {
        match *r.take(1)?.first()? {
            0 => Some(None),
            1 => unpack(r).map(Some),
            2 => r.str().map(Some),
            _ => None,
        }
    }

    const HIT: &str = "hit: recorded by run ";

    /// Milliseconds since the epoch, when the text is exactly what [`timestamp_text`] makes of
    /// them: `YYYY-MM-DDTHH:MM:SS.mmmZ`, a valid date from 1970 on (anything else keeps its
    /// text). Read by hand: the writer packs two per record.
    fn pack_time(text: &str) -> Option<Vec<u8>> {
        let b = text.as_bytes();
        if b.len() != 24 || b[23] != b'Z' {
            return None;
        }
        for (at, sep) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            if b[at] != sep {
                return None;
            }
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            b[from..to].iter().try_fold(0i64, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if y < 1970 || !(1..=12).contains(&mo) || d < 1 || d > month_days[mo as usize - 1] {
            return None;
        }
        if h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        // Days from the civil date (proleptic Gregorian; H. Hinnant's algorithm).
        let yy = if mo <= 2 { y - 1 } else { y };
        let (era, yoe) = (yy / 400, yy % 400);
        let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let total = (((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms;
        Some(total.to_le_bytes().to_vec())
    }

    fn timestamp_text(ms: i64) -> Option<String> {
        let t = chrono::DateTime::from_timestamp_millis(ms)?;
        Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    fn unpack_time(r: &mut Reader) -> Option<String> {
        timestamp_text(i64::from_le_bytes(r.array()?))
    }

    fn pack_fingerprint(text: &str) -> Option<Vec<u8>> {
        // Lower-case hex only, so that the text comes back as it was.
        match super::ContentHash::parse(text) {
            super::ContentHash::Blake3(raw) => Some(raw.to_vec()),
            super::ContentHash::Text(_) => None,
        }
    }

    fn unpack_fingerprint(r: &mut Reader) -> Option<String> {
        Some(super::hex(r.take(32)?))
    }

    fn pack_hit(text: &str) -> Option<Vec<u8>> {
        let mut b = Vec::new();
        put_str(&mut b, text.strip_prefix(HIT)?);
        Some(b)
    }

    fn unpack_hit(r: &mut Reader) -> Option<String> {
        Some(format!("{HIT}{}", r.str()?))
    }

    /// `key_file`: the name of the file the record's key was written to (see
    /// [`super::KEY_FILE_MIN`]); the record then names it instead of holding the key.
    pub fn encode(b: &mut Vec<u8>, r: &InstanceRecord, root: &str, key_file: Option<&str>) {
        for s in [&r.id, &r.task, &r.kind] {
            put_str(b, s);
        }
        b.push(STATES.iter().position(|s| *s == r.state).unwrap_or(0) as u8);
        b.extend_from_slice(&r.attempts.to_le_bytes());
        put_opt(b, r.item.as_deref());
        for t in [&r.started_at, &r.finished_at] {
            put_packed(b, t.as_deref(), pack_time);
        }
        b.extend_from_slice(&r.duration_ms.unwrap_or(u64::MAX).to_le_bytes());
        put_outputs(b, &r.outputs, root);
        put_packed(b, r.fingerprint.as_deref(), pack_fingerprint);
        match key_file {
            Some(name) => {
                b.extend_from_slice(&KEY_FILE.to_le_bytes());
                put_str(b, name);
            }
            None => put_opt(b, r.key.as_deref().map(RawValue::get)),
        }
        put_packed(b, r.cache.as_deref(), pack_hit);
        for s in [&r.log, &r.error] {
            put_opt(b, s.as_deref());
        }
        b.push(r.quarantined as u8);
    }

    /// A [`GROUP`] as it is stored: compressed ([`GROUP_LZ4`]).
    pub fn compress(group: &[u8]) -> Result<Vec<u8>, StoreError> {
        let records = group.get(1..).unwrap_or_default();
        let mut out = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(records.len())];
        out[0] = GROUP_LZ4;
        out[1..5].copy_from_slice(&(records.len() as u32).to_le_bytes());
        let n = lz4_flex::block::compress_into(records, &mut out[5..])
            .map_err(|e| StoreError::CorruptEntry(format!("a group of records: {e}")))?;
        out.truncate(5 + n);
        Ok(out)
    }

    /// `keys`: the directory of the run's key files (see [`encode`]).
    pub fn decode_group(
        run: &str,
        bytes: &[u8],
        root: &str,
        keys: &Path,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let bad = || StoreError::CorruptEntry(format!("instance records of run {run}"));
        let mut r = Reader(bytes.get(1..).unwrap_or_default());
        let inflated;
        let form = match bytes.first() {
            Some(&GROUP) => Form::Packed { root },
            Some(&GROUP_TEXT) => Form::Text,
            Some(&GROUP_LZ4) => {
                let len = r.u32().ok_or_else(bad)? as usize;
                if len > MAX_GROUP {
                    return Err(bad());
                }
                inflated = lz4_flex::block::decompress(r.0, len).map_err(|_| bad())?;
                if inflated.len() != len {
                    return Err(bad());
                }
                r = Reader(&inflated);
                Form::Packed { root }
            }
            _ => return Err(bad()),
        };
        let mut out = Vec::new();
        while !r.0.is_empty() {
            out.push(decode(&mut r, form, keys).ok_or_else(bad)?);
        }
        Ok(out)
    }

    fn opt(r: &mut Reader) -> Option<Option<String>> {
        let n = u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?);
        if n == NONE {
            r.take(4)?;
            return Some(None);
        }
        r.str().map(Some)
    }

    fn decode(r: &mut Reader, form: Form, keys: &Path) -> Option<InstanceRecord> {
        let (id, task, kind) = (r.str()?, r.str()?, r.str()?);
        let state = *STATES.get(*r.take(1)?.first()? as usize)?;
        let attempts = r.u32()?;
        let item = opt(r)?;
        let started_at = get_packed(r, unpack_time)?;
        let finished_at = get_packed(r, unpack_time)?;
        let duration_ms = Some(u64::from_le_bytes(r.array()?)).filter(|&d| d != u64::MAX);
        let outputs = read_outputs(r, "", form).ok()?;
        let fingerprint = get_packed(r, unpack_fingerprint)?;
        let key = if r.0.get(..4) == Some(&KEY_FILE.to_le_bytes()[..]) {
            r.take(4)?;
            // A key file lost in a crash is a key not known (`cache explain` says so), not
            // a record that cannot be read.
            let name = r.str_ref()?;
            std::fs::read_to_string(keys.join(name))
                .ok()
                .and_then(|json| RawValue::from_string(json).ok())
        } else {
            match opt(r)? {
                Some(json) => Some(RawValue::from_string(json).ok()?),
                None => None,
            }
        };
        let cache = get_packed(r, unpack_hit)?;
        let (log, error) = (opt(r)?, opt(r)?);
        let quarantined = *r.take(1)?.first()? != 0;
        Some(InstanceRecord {
            id,
            task,
            kind,
            state,
            attempts,
            item,
            started_at,
            finished_at,
            duration_ms,
            outputs,
            fingerprint,
            key,
            cache,
            log,
            error,
            quarantined,
        })
    }
}

mod entry {
    use super::{CacheEntry, ContentHash, OutputRecord, StoreError};
    use crate::binary::{put_str, Reader};

    /// Version 2 wrote each output's path and hash as text; version 3 (schema 5) writes the hash
    /// as its 32 bytes and a path under the workdir's `out/` relative to it (see [`Form`]).
    const VERSION: u8 = 3;

    /// How the outputs of an entry, a record or a pack entry were written.
    #[derive(Debug, Clone, Copy)]
    pub enum Form<'a> {
        /// Schema 4 and before: name, path and hash as strings.
        Text,
        /// Schema 5: the name; the path as a byte (1: relative to `root`, the workdir's `out/`
        /// with a trailing `/`; 2: as it is) and a string; size and mtime; the hash as a byte
        /// (1: its 32 bytes, for 64 lower-case hex digits; 2: a string) and its bytes. 40 to 80
        /// bytes less per output, in every entry, record and pack.
        Packed { root: &'a str },
    }

    pub fn encode(e: &CacheEntry, root: &str) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + e.outputs.len() * 96);
        b.push(VERSION);
        for s in [&e.task, &e.kind, &e.created_at, &e.run, &e.instance] {
            put_str(&mut b, s);
        }
        put_outputs(&mut b, &e.outputs, root);
        b
    }

    /// Writes outputs in the [`Form::Packed`] form.
    pub fn put_outputs(b: &mut Vec<u8>, outputs: &[OutputRecord], root: &str) {
        b.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
        for o in outputs {
            put_str(b, &o.name);
            match o.path.strip_prefix(root).filter(|_| !root.is_empty()) {
                Some(rel) => {
                    b.push(1);
                    put_str(b, rel);
                }
                None => {
                    b.push(2);
                    put_str(b, &o.path);
                }
            }
            b.extend_from_slice(&o.size.to_le_bytes());
            b.extend_from_slice(&o.mtime_ns.to_le_bytes());
            match &o.hash {
                ContentHash::Blake3(raw) => {
                    b.push(1);
                    b.extend_from_slice(raw);
                }
                ContentHash::Text(text) => {
                    b.push(2);
                    put_str(b, text);
                }
            }
        }
    }

    /// The version byte of a binary entry, and the form of its outputs.
    fn version<'a>(r: &mut Reader, root: &'a str) -> Option<Form<'a>> {
        match r.u8()? {
            2 => Some(Form::Text),
            VERSION => Some(Form::Packed { root }),
            _ => None,
        }
    }

    pub fn decode(fingerprint: &str, bytes: &[u8], root: &str) -> Result<CacheEntry, StoreError> {
        if bytes.first() == Some(&b'{') {
            return super::decode("cache entry", bytes);
        }
        let bad = || StoreError::CorruptEntry(fingerprint.to_owned());
        let mut r = Reader(bytes);
        let form = version(&mut r, root).ok_or_else(bad)?;
        let mut strs = [(); 5].map(|_| String::new());
        for s in &mut strs {
            *s = r.str().ok_or_else(bad)?;
        }
        let outputs = read_outputs(&mut r, fingerprint, form)?;
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

    /// The parts of an entry a cache hit uses (the run that made it and the outputs); the other
    /// names are left empty.
    pub fn decode_hit(
        fingerprint: &str,
        bytes: &[u8],
        root: &str,
    ) -> Result<CacheEntry, StoreError> {
        if bytes.first() == Some(&b'{') {
            return decode(fingerprint, bytes, root);
        }
        let bad = || StoreError::CorruptEntry(fingerprint.to_owned());
        let mut r = Reader(bytes);
        let form = version(&mut r, root).ok_or_else(bad)?;
        for _ in 0..3 {
            r.skip_str().ok_or_else(bad)?;
        }
        let run = r.str().ok_or_else(bad)?;
        r.skip_str().ok_or_else(bad)?;
        let outputs = read_outputs(&mut r, fingerprint, form)?;
        Ok(CacheEntry::hit(fingerprint, String::new(), run, outputs))
    }

    pub fn read_outputs(
        r: &mut Reader,
        fingerprint: &str,
        form: Form,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        let bad = || StoreError::CorruptEntry(fingerprint.to_owned());
        let n = r.u32().ok_or_else(bad)?;
        let mut outputs = Vec::with_capacity(n.min(1024) as usize);
        for _ in 0..n {
            let name = r.str().ok_or_else(bad)?;
            let path = match form {
                Form::Text => r.str(),
                Form::Packed { root } => match r.u8() {
                    Some(1) => r.str_ref().map(|rel| format!("{root}{rel}")),
                    Some(2) => r.str(),
                    _ => None,
                },
            }
            .ok_or_else(bad)?;
            let size = r.u64().ok_or_else(bad)?;
            let mtime_ns = i128::from_le_bytes(r.array().ok_or_else(bad)?);
            let hash = match form {
                Form::Text => r.str_ref().map(ContentHash::parse),
                Form::Packed { .. } => match r.u8() {
                    Some(1) => r.array().map(ContentHash::Blake3),
                    Some(2) => r.str_ref().map(|text| ContentHash::Text(text.into())),
                    _ => None,
                },
            }
            .ok_or_else(bad)?;
            outputs.push(OutputRecord {
                name,
                path,
                size,
                mtime_ns,
                hash,
            });
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_text_is_kept_once_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let text = "name: p\ntasks:\n  a: {uses: noop}\n".repeat(50);
        let run = |id: &str| RunRecord {
            id: id.into(),
            pipeline_name: "p".into(),
            pipeline_path: "p.yaml".into(),
            pipeline_text: text.clone(),
            pipeline_text_hash: None,
            overrides: BTreeMap::new(),
            params: serde_json::json!({}),
            state: "running".into(),
            started_at: "2026-11-28T00:00:00.000Z".into(),
            finished_at: None,
            parent: None,
            mode: "run".into(),
            force_from: None,
            counts: BTreeMap::new(),
            log_path: String::new(),
        };
        s.put_run(&run("r1")).unwrap();
        s.put_run(&run("r2")).unwrap();
        assert_eq!(s.texts.len(), 1);
        let hash = blake3::hash(text.as_bytes()).to_hex();
        assert!(s.meta.contains_key(format!("text {hash}")).unwrap());
        let stored = s.runs.get("r2").unwrap().unwrap();
        assert!(stored.len() < text.len(), "the record names the text");
        assert_eq!(s.get_run("r2").unwrap().unwrap().pipeline_text, text);
        // A record whose text was let go of keeps naming it.
        let mut r3 = run("r3");
        s.keep_text(&mut r3).unwrap();
        assert!(r3.pipeline_text.is_empty());
        s.put_run(&r3).unwrap();
        assert_eq!(s.texts.len(), 1);
        assert_eq!(s.get_run("r3").unwrap().unwrap().pipeline_text, text);
        assert!(s.runs().unwrap().iter().all(|r| r.pipeline_text == text));
        // A schema 3 record holds its text itself.
        s.runs.insert("r0", encode(&run("r0"))).unwrap();
        assert_eq!(s.get_run("r0").unwrap().unwrap().pipeline_text, text);
        // A record whose text is gone is an error that names the run, not an empty pipeline.
        s.texts.clear().unwrap();
        let err = s.get_run("r1").unwrap_err().to_string();
        assert!(
            err.contains("run r1") && err.contains("pipeline text"),
            "{err}"
        );
    }

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
                hash: ContentHash::parse(&"cd".repeat(32)),
            }],
            key: serde_json::Value::Null,
        };
        let root = "/w/out/";
        let bytes = entry::encode(&e, root);
        let back = entry::decode(&e.fingerprint, &bytes, root).unwrap();
        assert_eq!(back.outputs, e.outputs);
        assert_eq!((&back.run, &back.instance), (&e.run, &e.instance));
        for cut in [1, 10, bytes.len() - 1] {
            assert!(entry::decode(&e.fingerprint, &bytes[..cut], root).is_err());
        }
        // Packed: the hash in 33 bytes instead of 68, the path relative to `out/` in 15 instead
        // of 21.
        let text = text_entry(&e);
        assert_eq!(text.len() - bytes.len(), 35 + 6);
        // Version 2 (schema 4) entries read as they were written, whatever the root.
        let back = entry::decode(&e.fingerprint, &text, "/elsewhere/").unwrap();
        assert_eq!(back.outputs, e.outputs);
        // Paths outside `out/`, relative paths and hashes that are not lower-case hex keep
        // their text.
        let mut odd = e.clone();
        for (path, hash) in [
            ("/w/outside.fits", "CD".repeat(32)),
            ("/w/out", "not a hash".to_string()),
            ("out/image.fits", "ab".repeat(31)),
            ("/w/out/sub/é.fits", "ef".repeat(32)),
        ] {
            odd.outputs[0].path = path.into();
            odd.outputs[0].hash = ContentHash::parse(&hash);
            let bytes = entry::encode(&odd, root);
            let back = entry::decode(&odd.fingerprint, &bytes, root).unwrap();
            assert_eq!(back.outputs, odd.outputs, "{path}");
            assert_eq!(back.outputs[0].hash.to_string(), hash);
            let hit = entry::decode_hit(&odd.fingerprint, &bytes, root).unwrap();
            assert_eq!(hit.outputs, odd.outputs, "{path}");
        }
    }

    #[test]
    fn content_hashes_read_back_as_written_in_json_and_text() {
        let blake = blake3::hash(b"frame").to_hex().to_string();
        for text in [
            blake.as_str(),
            &blake.to_uppercase(),
            "will be produced by a[1]",
            "",
        ] {
            let h = ContentHash::parse(text);
            assert_eq!(h.to_string(), text);
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), h);
        }
        assert!(matches!(ContentHash::parse(&blake), ContentHash::Blake3(_)));
        assert!(matches!(
            ContentHash::parse(&blake.to_uppercase()),
            ContentHash::Text(_)
        ));
    }

    /// A cache entry as schema 4 wrote it (version 2: outputs as text).
    fn text_entry(e: &CacheEntry) -> Vec<u8> {
        let mut b = vec![2];
        for s in [&e.task, &e.kind, &e.created_at, &e.run, &e.instance] {
            put_str(&mut b, s);
        }
        b.extend_from_slice(&(e.outputs.len() as u32).to_le_bytes());
        for o in &e.outputs {
            put_str(&mut b, &o.name);
            put_str(&mut b, &o.path);
            b.extend_from_slice(&o.size.to_le_bytes());
            b.extend_from_slice(&o.mtime_ns.to_le_bytes());
            put_str(&mut b, &o.hash.to_string());
        }
        b
    }

    #[test]
    fn a_pack_finds_entries_by_task_and_fingerprint_and_prefers_its_own_copies() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let entry = |task: &str, n: u8, run: &str| CacheEntry {
            fingerprint: hex(&[n; 32]),
            task: task.into(),
            kind: "noop".into(),
            created_at: "t".into(),
            run: run.into(),
            instance: format!("{task}[{n}]"),
            outputs: vec![],
            key: serde_json::Value::Null,
        };
        for n in 0..5 {
            s.cache_put(&entry("fan", n, "r1")).unwrap();
        }
        assert!(s.pack("night").unwrap().is_none());
        // Keys with no entry (n = 9) are left out; repeated keys are kept once.
        let keys = [(0u8, "fan"), (1, "fan"), (1, "fan"), (3, "fan"), (9, "fan")];
        let n = s
            .put_pack(
                "night",
                None,
                keys.iter().map(|&(n, t)| (t, [n; 32], PackSource::Cache)),
            )
            .unwrap();
        assert_eq!(n, 3);
        let pack = s.pack("night").unwrap().unwrap();
        assert_eq!(pack.len(), 3);
        assert_eq!(pack.hit("fan", &hex(&[1; 32])).unwrap().0, "r1");
        assert!(pack.hit("fan", &hex(&[2; 32])).is_none(), "not in the pack");
        assert!(
            pack.hit("other", &hex(&[1; 32])).is_none(),
            "another task's key"
        );
        assert!(pack.hit("fan", "not hex").is_none());
        // A newer entry in the cache: a key the run took from the old pack keeps the pack's
        // copy (one read, no tree lookup); a key it found in the cache takes the cache's.
        s.cache_put(&entry("fan", 1, "r2")).unwrap();
        let one = |source| [("fan", [1; 32], source)].into_iter();
        s.put_pack("night", Some(&pack), one(PackSource::Old))
            .unwrap();
        let kept = s.pack("night").unwrap().unwrap();
        assert_eq!(kept.hit("fan", &hex(&[1; 32])).unwrap().0, "r1");
        s.put_pack("night", Some(&kept), one(PackSource::Cache))
            .unwrap();
        let fresh = s.pack("night").unwrap().unwrap();
        assert_eq!(fresh.hit("fan", &hex(&[1; 32])).unwrap().0, "r2");
        // Entries of several runs each name their own (runs are kept once, by index).
        let two = [0u8, 1].map(|n| ("fan", [n; 32], PackSource::Cache));
        assert_eq!(s.put_pack("mixed", None, two.into_iter()).unwrap(), 2);
        let mixed = s.pack("mixed").unwrap().unwrap();
        assert_eq!(mixed.runs, ["r1", "r2"]);
        assert_eq!(mixed.hit("fan", &hex(&[0; 32])).unwrap().0, "r1");
        assert_eq!(mixed.hit("fan", &hex(&[1; 32])).unwrap().0, "r2");
        // Copied from the old pack into a new one, an entry keeps its run.
        let from_old = [1u8].map(|n| ("fan", [n; 32], PackSource::Old));
        s.put_pack("mixed", Some(&mixed), from_old.into_iter())
            .unwrap();
        let copied = s.pack("mixed").unwrap().unwrap();
        assert_eq!(copied.runs, ["r2"]);
        assert_eq!(copied.hit("fan", &hex(&[1; 32])).unwrap().0, "r2");
        // An entry the run made itself is packed as given.
        let outputs = [OutputRecord {
            name: "o".into(),
            path: "/w/out/o".into(),
            size: 3,
            mtime_ns: 7,
            hash: ContentHash::parse(&"ab".repeat(32)),
        }];
        let kept = s.keep_outputs(&outputs);
        assert_eq!(s.outputs(&kept, None).unwrap(), outputs);
        let made = PackSource::Made {
            run: "r3",
            outputs: &kept,
        };
        s.put_pack("night", None, one(made)).unwrap();
        let pack = s.pack("night").unwrap().unwrap();
        let (run, got, in_pack) = pack.hit("fan", &hex(&[1; 32])).unwrap();
        assert_eq!((run.as_str(), &got[..]), ("r3", &outputs[..]));
        // A hit's outputs are kept where they are in the pack, and read back from there.
        assert!(matches!(in_pack, Outputs::InPack(_)));
        assert_eq!(s.outputs(&in_pack, Some(&pack)).unwrap(), outputs);
        assert!(
            s.outputs(&in_pack, None).is_err(),
            "no pack to read them from"
        );
        // A damaged pack is no pack.
        std::fs::write(s.pack_path("night"), [PACK_VERSION, 1, 2]).unwrap();
        assert!(s.pack("night").unwrap().is_none());
        s.clear_packs().unwrap();
        assert!(s.pack("second").unwrap().is_none());
    }

    fn full_record() -> InstanceRecord {
        InstanceRecord {
            id: "calibrate[r1234 ccd2]".into(),
            task: "calibrate".into(),
            kind: "calibrate".into(),
            state: State::Failed,
            attempts: 3,
            item: Some("/data/r1234.fits".into()),
            started_at: Some("2026-11-27T00:00:00.000Z".into()),
            finished_at: None,
            duration_ms: Some(0),
            outputs: vec![OutputRecord {
                name: "image".into(),
                path: "/w/out/é.fits".into(),
                size: 1,
                mtime_ns: -1,
                hash: ContentHash::parse(&"ab".repeat(32)),
            }],
            fingerprint: Some("cd".repeat(32)),
            key: RawValue::from_string(r#"{"task":"calibrate"}"#.into()).ok(),
            cache: Some("miss: no cache entry for this key".into()),
            log: None,
            error: Some("bad input (quarantined): NAXIS2 = 0".into()),
            quarantined: true,
        }
    }

    /// A record of an instance `gather` whose key lists `inputs` hashes, and the key's JSON.
    fn gather_record(inputs: usize) -> (InstanceRecord, String) {
        let json = format!("{{\"all\":[{}]}}", vec!["\"ab\""; inputs].join(","));
        let mut gather = full_record();
        gather.id = "gather".into();
        gather.key = Some(RawValue::from_string(json.clone()).unwrap());
        (gather, json)
    }

    #[test]
    fn groups_are_compressed_except_one_holding_a_large_key_and_both_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (gather, json) = gather_record(20_000);
        s.put_instances("run1", &[full_record(), gather]).unwrap();
        s.put_instance("run1", &full_record()).unwrap();
        let tags: Vec<u8> = s.log.iter().values().map(|v| v.unwrap()[0]).collect();
        assert_eq!(tags, [record::GROUP, record::GROUP_LZ4]);
        let got = s.instances("run1").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].key.as_ref().unwrap().get(), json);
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap(),
            serde_json::to_value(full_record()).unwrap()
        );
    }

    #[test]
    fn a_very_large_key_is_kept_in_a_file_of_its_run_and_goes_with_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (gather, json) = gather_record(60_000);
        assert!(json.len() >= KEY_FILE_MIN);
        s.put_instances("run1", &[gather, full_record()]).unwrap();
        let stored: usize = s.log.iter().values().map(|v| v.unwrap().len()).sum();
        assert!(stored < 4096, "the key is not in sled: {stored} bytes");
        let got = s.instances("run1").unwrap();
        let key = |got: &[InstanceRecord]| {
            let g = got.iter().find(|r| r.id == "gather").unwrap();
            g.key.as_ref().map(|k| k.get().to_owned())
        };
        assert!(
            key(&got).as_deref() == Some(json.as_str()),
            "the key reads back"
        );
        // A key file lost (a crash before it was on disk) is a key not known, not an error.
        let keys = dir.path().join("state/keys/run1");
        assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 1);
        for f in std::fs::read_dir(&keys).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let got = s.instances("run1").unwrap();
        assert!(key(&got).is_none());
        assert_eq!(got.len(), 2);
        // Deleting the run deletes its key files.
        s.put_instance("run1", &gather_record(60_000).0).unwrap();
        assert!(keys.exists());
        s.delete_run("run1").unwrap();
        assert!(!keys.exists());
    }

    #[test]
    fn binary_records_round_trip_and_json_groups_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let r = full_record();
        let mut other = r.clone();
        (other.id, other.state, other.key, other.duration_ms) =
            ("b".into(), State::Cached, None, None);
        // A schema 2 group (JSON), then a binary one that supersedes `r`'s record.
        let json = serde_json::to_vec(&[&r]).unwrap();
        let seq = s.db.generate_id().unwrap();
        s.log.insert(log_key("run1", seq), json).unwrap();
        let mut newer = r.clone();
        newer.attempts = 4;
        s.put_instances("run1", &[newer, other]).unwrap();
        let got = s.instances("run1").unwrap();
        assert_eq!(got.len(), 2);
        let (a, b) = (&got[0], &got[1]);
        assert_eq!((a.id.as_str(), a.attempts), ("b", 3));
        assert_eq!(a.state, State::Cached);
        assert_eq!(a.duration_ms, None);
        assert_eq!(b.attempts, 4);
        let back = serde_json::to_value(b).unwrap();
        let mut want = serde_json::to_value(&r).unwrap();
        want["attempts"] = 4.into();
        assert_eq!(back, want);
        // Texts in and out of the packed forms come back as they were.
        let mut odd = r.clone();
        odd.id = "odd".into();
        odd.started_at = Some("2026-11-27T00:00:00Z".into());
        odd.finished_at = Some("2026-11-27T21:40:00.123Z".into());
        odd.fingerprint = Some("CD".repeat(32));
        odd.cache = Some("hit: recorded by run 20261127-214000-123-abcd".into());
        let decode = |g: &[u8]| record::decode_group("run1", g, "/w/out/", Path::new("/n"));
        let mut group = vec![record::GROUP];
        record::encode(&mut group, &odd, "/w/out/", None);
        let back = decode(&group).unwrap();
        assert_eq!(
            serde_json::to_value(&back[0]).unwrap(),
            serde_json::to_value(&odd).unwrap()
        );
        // Compressed as stored, it comes back the same; cut short or with a wrong length, it
        // is an error.
        let packed = record::compress(&group).unwrap();
        assert_eq!(packed[0], record::GROUP_LZ4);
        let back = decode(&packed).unwrap();
        assert_eq!(
            serde_json::to_value(&back[0]).unwrap(),
            serde_json::to_value(&odd).unwrap()
        );
        assert!(decode(&packed[..packed.len() - 2]).is_err());
        let mut wrong = packed.clone();
        wrong[1] = wrong[1].wrapping_add(1);
        assert!(decode(&wrong).is_err());
        wrong[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&wrong).is_err());
        // A truncated group is an error, not a panic.
        let mut group = vec![record::GROUP];
        record::encode(&mut group, &r, "/w/out/", None);
        assert!(decode(&group[..group.len() - 3]).is_err());
        // An unknown tag is an error too.
        group[0] = 9;
        assert!(decode(&group).is_err());
    }

    #[test]
    fn packed_timestamps_come_back_as_written() {
        let mut group = vec![record::GROUP];
        let mut r = full_record();
        let times = [
            "1970-01-01T00:00:00.000Z",
            "2024-02-29T23:59:59.999Z",
            "2026-11-27T21:40:00.123Z",
            "2100-03-01T00:00:00.001Z",
            // Not in the packed form: kept as text.
            "2025-02-29T00:00:00.000Z",
            "2026-11-27T21:40:00Z",
            "1969-12-31T23:59:59.999Z",
        ];
        let mut sizes = Vec::new();
        for t in times {
            r.started_at = Some(t.into());
            group.truncate(1);
            record::encode(&mut group, &r, "", None);
            let back = record::decode_group("r", &group, "", Path::new("/n")).unwrap();
            assert_eq!(back[0].started_at.as_deref(), Some(t));
            sizes.push(group.len());
        }
        // The first four are packed (8 bytes), the others kept as text (4 + 20 to 24 bytes).
        assert!(sizes[..4].iter().all(|&n| n == sizes[0]));
        assert!(sizes[4..].iter().all(|&n| n > sizes[0] + 8));
    }

    #[test]
    fn schema_2_cache_entries_move_to_task_keys() {
        let dir = tempfile::tempdir().unwrap();
        let fp = "0f".repeat(32);
        let e = CacheEntry {
            fingerprint: fp.clone(),
            task: "extract".into(),
            kind: "extract".into(),
            created_at: "2026-11-27T00:00:00Z".into(),
            run: "r1".into(),
            instance: "extract[a]".into(),
            outputs: vec![],
            key: serde_json::Value::Null,
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.cache.insert(fp.as_bytes(), text_entry(&e)).unwrap();
            s.meta.insert("schema", &2u32.to_be_bytes()).unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema().unwrap(), SCHEMA);
        let got = s.cache_get("extract", &fp).unwrap().expect("moved entry");
        assert_eq!(got.instance, "extract[a]");
        assert!(s.cache_get("other-task", &fp).unwrap().is_none());
        assert_eq!(s.cache_entries().unwrap()[0].fingerprint, fp);
    }

    #[test]
    fn a_task_cache_scan_that_stops_early_falls_back_to_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let entry = |n: u32| CacheEntry {
            fingerprint: blake3::hash(&n.to_le_bytes()).to_hex().to_string(),
            task: "fan".into(),
            kind: "noop".into(),
            created_at: String::new(),
            run: format!("r{n}"),
            instance: String::new(),
            outputs: vec![],
            key: serde_json::Value::Null,
        };
        for n in 0..1100 {
            s.cache_put(&entry(n)).unwrap();
        }
        s.cache_put(&CacheEntry {
            task: "other".into(),
            ..entry(5000)
        })
        .unwrap();
        // Asked for one key, the scan stops at 1024 entries: the rest are looked up one by one.
        let mut c = s.task_cache("fan", 1).unwrap();
        assert!(!c.complete);
        for n in 0..1100 {
            let got = c.take(&s, &entry(n).fingerprint).unwrap().expect("entry");
            assert_eq!(got.run, format!("r{n}"));
        }
        let mut full = s.task_cache("fan", 1000).unwrap();
        assert!(full.complete);
        assert_eq!(full.entries.len(), 1100);
        assert!(full.take(&s, &entry(5000).fingerprint).unwrap().is_none());
    }
}
