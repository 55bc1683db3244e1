//! JPL SPK files (DE421, DE440, ...): the DAF container and Chebyshev segments of types 2
//! (position) and 3 (position and velocity), chained to the solar-system barycentre.
//!
//! A DAF file is 1024-byte records. The file record names the format (`DAF/SPK`), the summary
//! sizes (ND doubles, NI integers) and the first summary record; summary records form a linked
//! list, each holding segment descriptors (start and end in TDB seconds past J2000, target,
//! centre, frame, type, first and last data word). A type 2/3 segment is N records of equal
//! length INTLEN seconds, each `[mid, radius, coefficients...]`, followed by the directory
//! `[INIT, INTLEN, RSIZE, N]`. Positions are km and velocities km/s, in the ICRF.
//!
//! Bodies used here (NAIF ids): 0 solar-system barycentre, 1-9 planetary-system barycentres,
//! 10 Sun, 199/299/399/499 Mercury/Venus/Earth/Mars, 301 Moon. The Earth is chained as
//! 0 -> 3 (Earth-Moon barycentre) -> 399.

use std::collections::HashMap;
use std::path::Path;

use super::EphemError;

/// Astronomical unit in km (IAU 2012, exact).
pub const AU_KM: f64 = 149_597_870.7;
pub(super) const SECONDS_PER_DAY: f64 = 86_400.0;
pub(super) const RECORD: usize = 1024;
/// Most Chebyshev coefficients per component we evaluate (DE files use at most 18).
const MAX_COEF: usize = 32;

/// One Chebyshev segment, its coefficients decoded to f64.
#[derive(Debug, Clone)]
pub struct Segment {
    pub target: i32,
    pub center: i32,
    pub frame: i32,
    /// SPK data type: 2 or 3.
    pub data_type: i32,
    /// Coverage in TDB seconds past J2000.
    pub start_s: f64,
    pub end_s: f64,
    /// Start of the first record and length of each, TDB seconds past J2000.
    pub(super) init: f64,
    pub(super) intlen: f64,
    /// Doubles per record: mid, radius and the coefficients.
    pub(super) rsize: usize,
    /// Coefficients per component.
    ncoef: usize,
    /// The records, one after another.
    pub(super) records: Vec<f64>,
}

/// A loaded SPK file.
#[derive(Debug, Clone)]
pub struct Spk {
    name: String,
    segments: Vec<Segment>,
    /// Segment indices per target, in file order (later ones take precedence, as in SPICE).
    by_target: HashMap<i32, Vec<usize>>,
}

/// Reads the i-th little- or big-endian double or int.
struct Words<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Words<'_> {
    fn f64_at(&self, byte: usize) -> Option<f64> {
        let b: [u8; 8] = self.bytes.get(byte..byte + 8)?.try_into().ok()?;
        Some(if self.big_endian {
            f64::from_be_bytes(b)
        } else {
            f64::from_le_bytes(b)
        })
    }
    fn i32_at(&self, byte: usize) -> Option<i32> {
        let b: [u8; 4] = self.bytes.get(byte..byte + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            i32::from_be_bytes(b)
        } else {
            i32::from_le_bytes(b)
        })
    }
}

impl Spk {
    /// Reads an SPK file from disk.
    pub fn open(path: &Path) -> Result<Spk, EphemError> {
        let bytes = std::fs::read(path).map_err(|e| EphemError::Spk {
            file: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        Spk::parse(&path.display().to_string(), &bytes)
    }

    /// Parses the bytes of an SPK file; `name` is used in errors.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Spk, EphemError> {
        let fail = |reason: String| EphemError::Spk {
            file: name.to_owned(),
            reason,
        };
        let truncated = || fail(format!("truncated ({} bytes)", bytes.len()));
        if bytes.len() < RECORD || &bytes[0..7] != b"DAF/SPK" {
            return Err(fail(
                "not an SPK file (expected the DAF/SPK file record)".into(),
            ));
        }
        let big_endian = match &bytes[88..96] {
            b"LTL-IEEE" => false,
            b"BIG-IEEE" => true,
            other => {
                return Err(fail(format!(
                    "unsupported binary format `{}` (expected LTL-IEEE or BIG-IEEE)",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let w = Words { bytes, big_endian };
        let nd = w.i32_at(8).ok_or_else(truncated)?;
        let ni = w.i32_at(12).ok_or_else(truncated)?;
        if nd != 2 || ni != 6 {
            return Err(fail(format!(
                "summary sizes ND={nd}, NI={ni} (an SPK has ND=2, NI=6)"
            )));
        }
        let summary_doubles = 2 + 3; // ND + (NI + 1) / 2
        let mut next = w.i32_at(76).ok_or_else(truncated)? as usize;
        let mut segments = Vec::new();
        let mut visited = 0;
        while next != 0 {
            visited += 1;
            if visited > bytes.len() / RECORD {
                return Err(fail("the summary records form a loop".into()));
            }
            let rec = (next - 1) * RECORD;
            let control = |i: usize| w.f64_at(rec + 8 * i).ok_or_else(truncated);
            let (following, count) = (control(0)?, control(2)?);
            if !(0.0..=125.0).contains(&count) || following < 0.0 {
                return Err(fail(format!("summary record {next} is corrupt")));
            }
            for k in 0..count as usize {
                let at = rec + 24 + k * summary_doubles * 8;
                let int = |i: usize| w.i32_at(at + 16 + 4 * i).ok_or_else(truncated);
                let start_s = w.f64_at(at).ok_or_else(truncated)?;
                let end_s = w.f64_at(at + 8).ok_or_else(truncated)?;
                let (target, center, frame, data_type) = (int(0)?, int(1)?, int(2)?, int(3)?);
                let (first, last) = (int(4)?, int(5)?);
                if data_type != 2 && data_type != 3 {
                    continue; // other types (e.g. 1, 13, 21) are not used by DE files
                }
                let seg_name = format!("segment {target} (centre {center}, type {data_type})");
                if first < 1 || last < first + 3 {
                    return Err(fail(format!(
                        "{seg_name}: bad data addresses {first}..{last}"
                    )));
                }
                let word = |addr: i32| w.f64_at((addr as usize - 1) * 8).ok_or_else(truncated);
                let (init, intlen) = (word(last - 3)?, word(last - 2)?);
                let (rsize, n) = (word(last - 1)?, word(last)?);
                let per_component = if data_type == 2 { 3.0 } else { 6.0 };
                let ncoef = (rsize - 2.0) / per_component;
                let expected_words = rsize * n + 4.0;
                if intlen.is_nan()
                    || intlen <= 0.0
                    || n < 1.0
                    || ncoef < 1.0
                    || ncoef.fract() != 0.0
                    || ncoef > MAX_COEF as f64
                    || expected_words != f64::from(last - first + 1)
                {
                    return Err(fail(format!(
                        "{seg_name}: inconsistent directory (INTLEN {intlen}, RSIZE {rsize}, N {n}, {} words)",
                        last - first + 1
                    )));
                }
                let records = (first..last - 3).map(word).collect::<Result<Vec<_>, _>>()?;
                segments.push(Segment {
                    target,
                    center,
                    frame,
                    data_type,
                    start_s,
                    end_s,
                    init,
                    intlen,
                    rsize: rsize as usize,
                    ncoef: ncoef as usize,
                    records,
                });
            }
            next = following as usize;
        }
        if segments.is_empty() {
            return Err(fail("no segments of type 2 or 3".into()));
        }
        let mut by_target: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, s) in segments.iter().enumerate() {
            by_target.entry(s.target).or_default().push(i);
        }
        Ok(Spk {
            name: name.to_owned(),
            segments,
            by_target,
        })
    }

    /// The name it was opened under (the path).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment for `target` that covers `seconds`, the last one in the file winning.
    fn segment(&self, target: i32, seconds: f64) -> Result<&Segment, EphemError> {
        let candidates = self.by_target.get(&target).ok_or_else(|| {
            EphemError::Coverage(format!("{}: no segment for body {target}", self.name))
        })?;
        candidates
            .iter()
            .rev()
            .map(|&i| &self.segments[i])
            .find(|s| s.covers(seconds))
            .ok_or_else(|| {
                EphemError::Coverage(format!(
                    "{}: body {target} is not covered at TDB JD {:.5}",
                    self.name,
                    seconds / SECONDS_PER_DAY + super::time::J2000_JD
                ))
            })
    }

    /// Barycentric (ICRF) position of a body, au, at TDB days since J2000.
    pub fn position(&self, body: i32, tdb: f64) -> Result<[f64; 3], EphemError> {
        let seconds = tdb * SECONDS_PER_DAY;
        let mut p = [0.0; 3];
        let mut body = body;
        while body != 0 {
            let s = self.segment(body, seconds)?;
            let q = s.evaluate(seconds, false).0;
            for k in 0..3 {
                p[k] += q[k] / AU_KM;
            }
            body = s.center;
        }
        Ok(p)
    }

    /// Barycentric (ICRF) position (au) and velocity (au/day) of a body.
    pub fn state(&self, body: i32, tdb: f64) -> Result<([f64; 3], [f64; 3]), EphemError> {
        let seconds = tdb * SECONDS_PER_DAY;
        let (mut p, mut v) = ([0.0; 3], [0.0; 3]);
        let mut body = body;
        while body != 0 {
            let s = self.segment(body, seconds)?;
            let (q, dq) = s.evaluate(seconds, true);
            for k in 0..3 {
                p[k] += q[k] / AU_KM;
                v[k] += dq[k] * SECONDS_PER_DAY / AU_KM;
            }
            body = s.center;
        }
        Ok((p, v))
    }
}

impl Segment {
    /// Whether the segment's summary and its records both cover the instant (an excerpted
    /// file may keep the summary of the whole original).
    fn covers(&self, seconds: f64) -> bool {
        let records_end = self.init + self.intlen * (self.records.len() / self.rsize) as f64;
        self.start_s.max(self.init) <= seconds && seconds <= self.end_s.min(records_end)
    }

    /// Position (km) and, if asked, velocity (km/s) relative to the centre at TDB seconds.
    fn evaluate(&self, seconds: f64, with_velocity: bool) -> ([f64; 3], [f64; 3]) {
        let n = self.records.len() / self.rsize;
        let index = (((seconds - self.init) / self.intlen).floor().max(0.0) as usize).min(n - 1);
        let rec = &self.records[index * self.rsize..(index + 1) * self.rsize];
        let (mid, radius) = (rec[0], rec[1]);
        let x = (seconds - mid) / radius;
        let coef = &rec[2..];
        let m = self.ncoef;
        // Chebyshev polynomials T_k(x) and their derivatives, by the recurrences.
        let mut t = [0.0f64; MAX_COEF];
        let mut dt = [0.0f64; MAX_COEF];
        t[0] = 1.0;
        if m > 1 {
            t[1] = x;
            dt[1] = 1.0;
        }
        for k in 2..m {
            t[k] = 2.0 * x * t[k - 1] - t[k - 2];
            dt[k] = 2.0 * t[k - 1] + 2.0 * x * dt[k - 1] - dt[k - 2];
        }
        let dot = |c: &[f64], basis: &[f64]| c.iter().zip(basis).map(|(a, b)| a * b).sum::<f64>();
        let mut p = [0.0; 3];
        let mut v = [0.0; 3];
        for k in 0..3 {
            p[k] = dot(&coef[k * m..(k + 1) * m], &t[..m]);
            if with_velocity {
                v[k] = if self.data_type == 3 {
                    dot(&coef[(3 + k) * m..(4 + k) * m], &t[..m])
                } else {
                    dot(&coef[k * m..(k + 1) * m], &dt[..m]) / radius
                };
            }
        }
        (p, v)
    }
}
