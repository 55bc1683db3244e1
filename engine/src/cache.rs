//! Cache keys (fingerprints), content hashes and the validation of recorded outputs.
//!
//! Fingerprint = blake3 over the JSON of [`CacheKey`]: task name and kind, kind version, canonical
//! params (JSON objects have sorted keys), the fan-out item, the content hash of every input, the
//! declared output paths and the cache schema version. A recorded entry is a hit only if every
//! output still exists with its recorded content (size and mtime are checked first; a file whose
//! stamp changed is re-hashed).
//!
//! Cache schema history:
//! - 1: first version.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::{ContentHash, FileStamp, OutputRecord, Store};

pub const CACHE_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    pub schema: u32,
    pub task: String,
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub item: Option<String>,
    /// Input name -> content hashes, in input order (hex in the JSON).
    pub inputs: BTreeMap<String, Vec<ContentHash>>,
    /// Output name -> path relative to the instance's output directory.
    pub outputs: BTreeMap<String, String>,
}

/// A key being hashed is hashed in parts of about this size.
const SPILL: usize = 16 << 10;

/// Keys longer than this (a gather's) are not kept in the per-thread JSON buffer.
const BIG_KEY: usize = 64 << 10;

/// A cache key as it is stored: its canonical JSON, and the fingerprint of that JSON.
#[derive(Debug, Clone, Default)]
pub struct SealedKey {
    pub json: String,
    pub fingerprint: String,
}

impl CacheKey {
    /// blake3 of the key's JSON, hex. A rerun computes one per task instance, and most are hits
    /// that never need the JSON itself: it is written into a buffer kept for the thread.
    pub fn fingerprint(&self) -> String {
        // Hashed as it is written: a gather's key (one hash per input, 6.7 MB for 100,000
        // inputs) never sits whole in memory when it is only checked against the cache.
        let hasher = std::cell::RefCell::new(blake3::Hasher::new());
        self.with_json_spilled(
            0,
            |json| {
                hasher.borrow_mut().update(json);
                json.clear();
            },
            |json| {
                hasher.borrow_mut().update(json);
            },
        );
        let fingerprint = hasher.borrow().finalize();
        fingerprint.to_hex().to_string()
    }

    /// The key's JSON and fingerprint, serialized once (a record keeps the one, the cache the
    /// other).
    pub fn seal(&self) -> SealedKey {
        self.with_json(|buf| {
            let fingerprint = blake3::hash(buf).to_hex().to_string();
            // A large key (a gather's: one hash per input) leaves with the buffer rather than
            // being copied, and the thread keeps no megabytes of capacity behind it.
            let bytes = if buf.len() > BIG_KEY {
                std::mem::take(buf)
            } else {
                buf.clone()
            };
            let json = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            SealedKey { json, fingerprint }
        })
    }

    fn with_json<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        // A gather's key is megabytes: room for it at once (a hash is 67 bytes of JSON), not
        // doublings that took a third more than it needs at the gather's peak.
        let room = self.inputs.values().map(|h| h.len() * 67).sum::<usize>() + 1024;
        self.with_json_spilled(room, |_| {}, f)
    }

    /// Writes the key's JSON into the thread's buffer (with at least `room` bytes), handing a
    /// large list of input hashes to `spill` as it grows (`spill` may empty the buffer), then the
    /// rest to `f`.
    fn with_json_spilled<T>(
        &self,
        room: usize,
        spill: impl FnMut(&mut Vec<u8>),
        f: impl FnOnce(&mut Vec<u8>) -> T,
    ) -> T {
        use std::cell::RefCell;
        thread_local! {
            static JSON: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        JSON.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            buf.reserve(room);
            self.write_json(&mut buf, spill);
            let out = f(&mut buf);
            if buf.capacity() > BIG_KEY {
                *buf = Vec::new();
            }
            out
        })
    }

    /// The key's JSON, byte for byte what `serde_json::to_writer` makes of it (fingerprints
    /// must not change), written by hand: serde's generic path took 3,400 instructions a key,
    /// most of them escaping strings that need no escape.
    fn write_json(&self, buf: &mut Vec<u8>, mut spill: impl FnMut(&mut Vec<u8>)) {
        buf.extend_from_slice(b"{\"schema\":");
        json_u64(buf, self.schema.into());
        buf.extend_from_slice(b",\"task\":");
        json_str(buf, &self.task);
        buf.extend_from_slice(b",\"kind\":");
        json_str(buf, &self.kind);
        buf.extend_from_slice(b",\"version\":");
        json_u64(buf, self.version.into());
        buf.extend_from_slice(b",\"params\":");
        // Params are any JSON: serde_json's own writer (it cannot fail on a Value).
        let _ = serde_json::to_writer(&mut *buf, &self.params);
        buf.extend_from_slice(b",\"item\":");
        match &self.item {
            Some(item) => json_str(buf, item),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"inputs\":{");
        json_join(buf, &self.inputs, |buf, (name, hashes)| {
            json_str(buf, name);
            buf.extend_from_slice(b":[");
            json_join(buf, hashes, |buf, h| {
                match h {
                    ContentHash::Blake3(raw) => {
                        buf.push(b'"');
                        hex_into(buf, raw);
                        buf.push(b'"');
                    }
                    ContentHash::Text(text) => json_str(buf, text),
                }
                if buf.len() >= SPILL {
                    spill(buf);
                }
            });
            buf.push(b']');
        });
        buf.extend_from_slice(b"},\"outputs\":{");
        json_join(buf, &self.outputs, |buf, (name, path)| {
            json_str(buf, name);
            buf.push(b':');
            json_str(buf, path);
        });
        buf.extend_from_slice(b"}}");
    }

    /// What changed from `old` to `self`, in words.
    pub fn diff(&self, old: &CacheKey) -> Vec<String> {
        let mut out = Vec::new();
        if self.schema != old.schema {
            out.push(format!(
                "cache schema changed: {} -> {}",
                old.schema, self.schema
            ));
        }
        if self.kind != old.kind || self.version != old.version {
            out.push(format!(
                "task kind changed: {} v{} -> {} v{}",
                old.kind, old.version, self.kind, self.version
            ));
        }
        if self.params != old.params {
            match (self.params.as_object(), old.params.as_object()) {
                (Some(new), Some(prev)) => {
                    for (k, v) in new {
                        match prev.get(k) {
                            Some(p) if p == v => {}
                            Some(p) => out.push(format!("param `{k}` changed: {p} -> {v}")),
                            None => out.push(format!("param `{k}` added: {v}")),
                        }
                    }
                    for k in prev.keys().filter(|k| !new.contains_key(*k)) {
                        out.push(format!("param `{k}` removed"));
                    }
                }
                _ => out.push("params changed".into()),
            }
        }
        if self.item != old.item {
            out.push(format!("item changed: {:?} -> {:?}", old.item, self.item));
        }
        for (k, v) in &self.inputs {
            match old.inputs.get(k) {
                Some(p) if p == v => {}
                Some(p) if p.len() != v.len() => out.push(format!(
                    "input `{k}` changed: {} files -> {} files",
                    p.len(),
                    v.len()
                )),
                Some(_) => out.push(format!("input `{k}` content changed")),
                None => out.push(format!("input `{k}` added")),
            }
        }
        for k in old.inputs.keys().filter(|k| !self.inputs.contains_key(*k)) {
            out.push(format!("input `{k}` removed"));
        }
        if self.outputs != old.outputs {
            out.push("declared outputs changed".into());
        }
        out
    }
}

/// Bytes as lower-case hex digits.
fn hex_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        buf.push(DIGITS[(b >> 4) as usize]);
        buf.push(DIGITS[(b & 15) as usize]);
    }
}

/// A number in decimal, as JSON (and serde_json) writes it.
pub(crate) fn json_u64(buf: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = v;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Writes `items` with `each`, separated by commas (the inside of a JSON array or object).
fn json_join<I: IntoIterator>(
    buf: &mut Vec<u8>,
    items: I,
    mut each: impl FnMut(&mut Vec<u8>, I::Item),
) {
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        each(buf, item);
    }
}

/// A JSON string as serde_json writes it: as it is when nothing in it needs escaping, else by
/// serde_json itself.
pub(crate) fn json_str(buf: &mut Vec<u8>, s: &str) {
    // No early exit, so that the loop is vectorised: most strings are short paths and hashes.
    let needs_escape = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        let _ = serde_json::to_writer(&mut *buf, s);
    } else {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    }
}

/// Size and modification time (ns since the epoch) of a file, or of a directory's newest file.
pub fn stamp(path: &Path) -> std::io::Result<(u64, i128)> {
    let md = std::fs::metadata(path)?;
    if md.is_dir() {
        let mut size = 0;
        let mut mtime = mtime_ns(&md);
        for entry in walk(path)? {
            let m = std::fs::metadata(&entry)?;
            size += m.len();
            mtime = mtime.max(mtime_ns(&m));
        }
        return Ok((size, mtime));
    }
    Ok((md.len(), mtime_ns(&md)))
}

fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Files under a directory, sorted.
fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// blake3 of a file's content, or of a directory's (relative path, file hash) list, hex.
pub fn hash_path(path: &Path) -> std::io::Result<String> {
    Ok(content_hash(path)?.to_hex().to_string())
}

/// [`hash_path`] as blake3's 32 bytes (what an output record keeps).
fn content_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    if path.is_dir() {
        let mut h = blake3::Hasher::new();
        for f in walk(path)? {
            let rel = f.strip_prefix(path).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(&[0]);
            h.update(hash_file(&f)?.to_hex().as_bytes());
        }
        return Ok(h.finalize());
    }
    hash_file(path)
}

fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

/// Records an output after it has been written.
pub fn record_output(name: &str, path: &Path) -> std::io::Result<OutputRecord> {
    let (size, mtime_ns) = stamp(path)?;
    Ok(OutputRecord {
        name: name.to_owned(),
        path: path.display().to_string(),
        size,
        mtime_ns,
        hash: ContentHash::Blake3(*content_hash(path)?.as_bytes()),
    })
}

/// A directory that recorded outputs usually lie under (a workdir's `out/`), kept open: a file
/// under it is statted relative to it, so the kernel walks two path components instead of the
/// whole absolute path. A 10,000-instance rerun stats 10,000 outputs, and walking their paths was
/// most of that.
pub struct OutputDir {
    prefix: String,
    dir: std::fs::File,
}

impl OutputDir {
    pub fn open(dir: &Path) -> Option<OutputDir> {
        Some(OutputDir {
            prefix: format!("{}/", dir.to_str()?.trim_end_matches('/')),
            dir: std::fs::File::open(dir).ok()?,
        })
    }

    /// [`stamp`] of a file under the directory; `None` for other paths and for directories
    /// (those take the full walk).
    fn stamp(&self, path: &str) -> Option<std::io::Result<(u64, i128)>> {
        use std::os::fd::AsRawFd;
        let rel = std::ffi::CString::new(path.strip_prefix(&self.prefix)?).ok()?;
        // SAFETY: `st` is plain data that fstatat fills; `rel` is a valid C string and the
        // descriptor is open for as long as `self`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatat(self.dir.as_raw_fd(), rel.as_ptr(), &mut st, 0) };
        if rc != 0 {
            return Some(Err(std::io::Error::last_os_error()));
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return None;
        }
        // As `mtime_ns` has it: nanoseconds since the epoch, 0 before it.
        let mtime = if st.st_mtime < 0 {
            0
        } else {
            i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
        };
        Some(Ok((st.st_size as u64, mtime)))
    }
}

/// Checks that recorded outputs are still there, unchanged. Returns why not.
pub fn check_outputs(outputs: &[OutputRecord]) -> Result<(), String> {
    check_outputs_in(outputs, None)
}

/// [`check_outputs`], statting files under `dir` relative to it.
pub fn check_outputs_in(outputs: &[OutputRecord], dir: Option<&OutputDir>) -> Result<(), String> {
    for o in outputs {
        let path = Path::new(&o.path);
        let (size, mtime) = dir
            .and_then(|d| d.stamp(&o.path))
            .unwrap_or_else(|| stamp(path))
            .map_err(|_| format!("output `{}` is missing ({})", o.name, o.path))?;
        if size == o.size && mtime == o.mtime_ns {
            continue;
        }
        let hash =
            content_hash(path).map_err(|e| format!("output `{}` cannot be read: {e}", o.name))?;
        if ContentHash::Blake3(*hash.as_bytes()) != o.hash {
            return Err(format!(
                "output `{}` was changed since it was recorded ({})",
                o.name, o.path
            ));
        }
    }
    Ok(())
}

/// The content hash of a source file (an input that no task produced), reusing the hash recorded
/// in the store while the file's size and mtime are unchanged.
pub fn source_hash(store: Option<&Store>, path: &Path) -> std::io::Result<String> {
    let (size, mtime_ns) = stamp(path)?;
    let key = path.display().to_string();
    if let Some(store) = store {
        if let Ok(Some(s)) = store.file_stamp(&key) {
            if s.size == size && s.mtime_ns == mtime_ns {
                return Ok(s.hash);
            }
        }
    }
    let hash = hash_path(path)?;
    if let Some(store) = store {
        // A failed write only costs a re-hash next time.
        let _ = store.put_file_stamp(
            &key,
            &FileStamp {
                size,
                mtime_ns,
                hash: hash.clone(),
            },
        );
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            schema: CACHE_SCHEMA,
            task: "t".into(),
            kind: "noop".into(),
            version: 1,
            params: serde_json::json!({"b": 1, "a": 2}),
            item: None,
            inputs: BTreeMap::from([("x".into(), vec![ContentHash::parse("h1")])]),
            outputs: BTreeMap::new(),
        }
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = key();
        assert_eq!(a.fingerprint(), key().fingerprint());
        // Keys of a JSON object are sorted, so the order params were written in does not matter.
        let mut b = key();
        b.params = serde_json::json!({"a": 2, "b": 1});
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.params = serde_json::json!({"a": 3, "b": 1});
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(b.diff(&a), ["param `a` changed: 2 -> 3"]);
        let mut c = key();
        c.inputs.insert("x".into(), vec![ContentHash::parse("h2")]);
        assert_eq!(c.diff(&a), ["input `x` content changed"]);
    }

    #[test]
    fn key_json_is_serde_json_byte_for_byte() {
        // Fingerprints of existing caches depend on these bytes.
        let odd = [
            "",
            "plain",
            "quote \" and back\\slash",
            "tab\tnew\nline\r\u{1}\u{1f}\u{7f}",
            "unicode é ☃ 𝄞",
            "${params.x} $${y}",
        ];
        for (n, s) in odd.iter().enumerate() {
            let key = CacheKey {
                schema: [0, 1, 9, 10, 123_456_789, u32::MAX][n],
                task: s.to_string(),
                kind: format!("k{s}"),
                version: [u32::MAX, 10, 1, 0, 99, 100_000][n],
                params: serde_json::json!({"z": [s, 1.5, null, {"b": true}], "a": s}),
                item: (n % 2 == 0).then(|| s.to_string()),
                inputs: BTreeMap::from([
                    (
                        s.to_string(),
                        vec![ContentHash::parse(s), ContentHash::parse(&"0a".repeat(32))],
                    ),
                    ("b".into(), vec![]),
                ]),
                outputs: if n == 0 {
                    BTreeMap::new()
                } else {
                    BTreeMap::from([(s.to_string(), format!("{s}/o")), ("z".into(), "p".into())])
                },
            };
            let mut ours = Vec::new();
            key.write_json(&mut ours, |_| {});
            assert_eq!(
                String::from_utf8_lossy(&ours),
                serde_json::to_string(&key).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_gathers_key_hashed_in_parts_has_the_fingerprint_of_its_whole_json() {
        // 5,000 input hashes: 335 KB of JSON, hashed in about 20 parts.
        let hashes: Vec<ContentHash> = (0..5000u32)
            .map(|i| ContentHash::Blake3(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let key = CacheKey {
            schema: CACHE_SCHEMA,
            task: "gather".into(),
            kind: "noop".into(),
            version: 1,
            params: serde_json::json!({}),
            item: None,
            inputs: BTreeMap::from([
                ("all".into(), hashes),
                ("one".into(), vec![ContentHash::parse("h")]),
            ]),
            outputs: BTreeMap::from([("o".into(), "all.txt".into())]),
        };
        let whole = serde_json::to_string(&key).unwrap();
        assert!(whole.len() > 20 * SPILL);
        let expected = blake3::hash(whole.as_bytes()).to_hex().to_string();
        assert_eq!(key.fingerprint(), expected);
        assert_eq!(key.seal().fingerprint, expected);
        assert_eq!(key.seal().json, whole);
    }

    #[test]
    fn a_directory_hashes_its_files_names_and_hex_hashes_in_order() {
        // Recorded hashes must not change between versions: the rule written out by hand.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "a").unwrap();
        let mut h = blake3::Hasher::new();
        for (rel, body) in [("b.txt", "b"), ("sub/a.txt", "a")] {
            h.update(rel.as_bytes());
            h.update(&[0]);
            h.update(blake3::hash(body.as_bytes()).to_hex().as_bytes());
        }
        assert_eq!(
            hash_path(dir.path()).unwrap(),
            h.finalize().to_hex().as_str()
        );
        let rec = record_output("d", dir.path()).unwrap();
        assert_eq!(rec.hash, ContentHash::Blake3(*h.finalize().as_bytes()));
    }

    #[test]
    fn stamps_relative_to_an_open_directory_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("t").join("k");
        std::fs::create_dir_all(&sub).unwrap();
        let file = sub.join("o.txt");
        std::fs::write(&file, "content").unwrap();
        let out = OutputDir::open(dir.path()).unwrap();
        let rel = out.stamp(file.to_str().unwrap()).unwrap().unwrap();
        assert_eq!(rel, stamp(&file).unwrap());
        // Directories and paths elsewhere take the full walk; a missing file is an error.
        assert!(out.stamp(sub.to_str().unwrap()).is_none());
        assert!(out.stamp("/elsewhere/o.txt").is_none());
        let gone = sub.join("gone.txt");
        assert!(out.stamp(gone.to_str().unwrap()).unwrap().is_err());
        let rec = record_output("o", &file).unwrap();
        assert_eq!(
            check_outputs_in(std::slice::from_ref(&rec), Some(&out)),
            Ok(())
        );
        std::fs::write(&file, "changed!").unwrap();
        assert!(check_outputs_in(std::slice::from_ref(&rec), Some(&out)).is_err());
    }

    #[test]
    fn changed_output_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.txt");
        std::fs::write(&p, "one").unwrap();
        let rec = record_output("o", &p).unwrap();
        assert_eq!(check_outputs(std::slice::from_ref(&rec)), Ok(()));
        std::fs::write(&p, "three").unwrap();
        assert!(check_outputs(std::slice::from_ref(&rec))
            .unwrap_err()
            .contains("changed"));
        std::fs::remove_file(&p).unwrap();
        assert!(check_outputs(&[rec]).unwrap_err().contains("missing"));
    }
}
