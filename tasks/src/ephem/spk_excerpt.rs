//! Writing an excerpt of an SPK file: the Chebyshev records of every segment that cover a time
//! window, copied unchanged into a new DAF/SPK file (laid out as NAIF specifies it) that [`Spk::parse`] reads. The
//! predictions inside the window are those of the full file, bit for bit; outside it the excerpt
//! answers with a coverage error. The demo carries such an excerpt of DE421 (5 days, 9 kB)
//! instead of the 17 MB file.
//!
//! Layout written (NAIF's DAF Required Reading): the file record; the comment records (lines
//! ended by NUL, the area by EOT); summary records of up to 25 segments, each followed by its
//! name record; then each segment's records followed by its directory `[INIT, INTLEN, RSIZE, N]`.
//! Little-endian (`LTL-IEEE`).

use super::spk::{Spk, RECORD, SECONDS_PER_DAY};
use super::EphemError;

/// Doubles per DAF record.
const WORDS: usize = RECORD / 8;
/// Segment summaries per summary record: (128 - 3 control words) / 5 words each.
const MAX_SEGMENTS: usize = 25;
/// Characters of comment per comment record.
const COMMENT_CHARS: usize = 1000;
/// The FTP validation string of the file record: bytes that a text-mode transfer would change.
const FTPSTR: &[u8; 28] = b"FTPSTR:\r:\n:\r\n:\r\x00:\x81:\x10\xce:ENDFTP";

/// One segment's records kept in the window.
struct Kept {
    target: i32,
    center: i32,
    frame: i32,
    data_type: i32,
    start_s: f64,
    end_s: f64,
    init: f64,
    intlen: f64,
    rsize: usize,
    words: Vec<f64>,
}

/// The records of every segment of `spk` that cover TDB days (since J2000) `from`..`to`, as the
/// bytes of a new SPK file whose comment area holds `comment`.
pub fn excerpt(spk: &Spk, from: f64, to: f64, comment: &str) -> Result<Vec<u8>, EphemError> {
    let fail = |reason: String| EphemError::Spk {
        file: spk.name().to_owned(),
        reason,
    };
    if !(from.is_finite() && to.is_finite() && from < to) {
        return Err(fail(format!(
            "excerpt window {from}..{to} (TDB days since J2000) is empty"
        )));
    }
    let (t0, t1) = (from * SECONDS_PER_DAY, to * SECONDS_PER_DAY);
    let mut kept = Vec::new();
    for s in spk.segments() {
        let n = s.records.len() / s.rsize;
        let records_end = s.init + s.intlen * n as f64;
        if t1 < s.start_s.max(s.init) || t0 > s.end_s.min(records_end) {
            continue;
        }
        let index = |t: f64| (((t - s.init) / s.intlen).floor().max(0.0) as usize).min(n - 1);
        let (k0, k1) = (index(t0), index(t1));
        let init = s.init + k0 as f64 * s.intlen;
        let mut words = s.records[k0 * s.rsize..(k1 + 1) * s.rsize].to_vec();
        let count = k1 - k0 + 1;
        words.extend([init, s.intlen, s.rsize as f64, count as f64]);
        kept.push(Kept {
            target: s.target,
            center: s.center,
            frame: s.frame,
            data_type: s.data_type,
            start_s: s.start_s.max(init),
            end_s: s.end_s.min(init + s.intlen * count as f64),
            init,
            intlen: s.intlen,
            rsize: s.rsize,
            words,
        });
    }
    if kept.is_empty() {
        return Err(fail(format!(
            "no segment covers TDB days {from}..{to} since J2000"
        )));
    }
    Ok(write(&kept, comment))
}

fn write(kept: &[Kept], comment: &str) -> Vec<u8> {
    // Comment records: each line ends with NUL, the area with EOT.
    let mut text: Vec<u8> = Vec::new();
    for line in comment.lines() {
        text.extend(line.bytes().filter(|b| b.is_ascii() && *b != 0 && *b != 4));
        text.push(0);
    }
    text.push(4);
    let comment_records = text.len().div_ceil(COMMENT_CHARS);
    // Summary records (1-based numbers), each followed by its name record.
    let groups: Vec<&[Kept]> = kept.chunks(MAX_SEGMENTS).collect();
    let summary_records: Vec<usize> = (0..groups.len())
        .map(|g| 2 + comment_records + 2 * g)
        .collect();
    let data_record = 2 + comment_records + 2 * groups.len();
    let mut out = vec![0u8; RECORD * (data_record - 1)];
    // Data, with each segment's word addresses.
    let mut data: Vec<u8> = Vec::new();
    let mut addresses = Vec::new();
    let mut next_word = (data_record - 1) * WORDS + 1;
    for k in kept {
        addresses.push((next_word, next_word + k.words.len() - 1));
        next_word += k.words.len();
        for w in &k.words {
            data.extend(w.to_le_bytes());
        }
    }
    let put = |out: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // File record.
    put(&mut out, 0, b"DAF/SPK ");
    put(&mut out, 8, &2i32.to_le_bytes());
    put(&mut out, 12, &6i32.to_le_bytes());
    put(
        &mut out,
        16,
        format!("{:<60}", "nearby SPK excerpt").as_bytes(),
    );
    put(&mut out, 76, &(summary_records[0] as i32).to_le_bytes());
    let last = summary_records[summary_records.len() - 1];
    put(&mut out, 80, &(last as i32).to_le_bytes());
    put(&mut out, 84, &(next_word as i32).to_le_bytes());
    put(&mut out, 88, b"LTL-IEEE");
    put(&mut out, 699, FTPSTR);
    // Comment records.
    for (i, chunk) in text.chunks(COMMENT_CHARS).enumerate() {
        put(&mut out, (1 + i) * RECORD, chunk);
    }
    // Summary records: next, previous, count, then start, end and six integers per segment.
    let mut index = 0;
    for (g, group) in groups.iter().enumerate() {
        let record = summary_records[g];
        let at = (record - 1) * RECORD;
        let next = summary_records.get(g + 1).copied().unwrap_or(0);
        let previous = if g == 0 { 0 } else { summary_records[g - 1] };
        put(&mut out, at, &(next as f64).to_le_bytes());
        put(&mut out, at + 8, &(previous as f64).to_le_bytes());
        put(&mut out, at + 16, &(group.len() as f64).to_le_bytes());
        for (i, k) in group.iter().enumerate() {
            let (first, last) = addresses[index];
            index += 1;
            let s = at + 24 + i * 40;
            put(&mut out, s, &k.start_s.to_le_bytes());
            put(&mut out, s + 8, &k.end_s.to_le_bytes());
            let ints = [
                k.target,
                k.center,
                k.frame,
                k.data_type,
                first as i32,
                last as i32,
            ];
            for (j, v) in ints.iter().enumerate() {
                put(&mut out, s + 16 + 4 * j, &v.to_le_bytes());
            }
            // Name record: one 40-character name per summary.
            let name = format!(
                "body {} wrt {}, {} x {:.0} s from {:.0}",
                k.target,
                k.center,
                (k.words.len() - 4) / k.rsize,
                k.intlen,
                k.init
            );
            let name = format!("{name:<40}");
            put(&mut out, record * RECORD + i * 40, &name.as_bytes()[..40]);
        }
    }
    out.extend(data);
    out.resize(out.len().div_ceil(RECORD) * RECORD, 0);
    out
}
