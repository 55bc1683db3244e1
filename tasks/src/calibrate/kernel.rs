//! The per-row kernel of the single-pass calibration ([`Ccd::calibrate_rows`](super::Ccd)):
//! stored pixels in, stored pixels out, in one loop.
//!
//! A raw CCD row (big-endian 16-bit integers with BZERO), the master bias and flat rows
//! (big-endian float32) are decoded, overscan-corrected, bias-subtracted, flat-fielded and
//! weighted, and the science and weight values are written as the big-endian float32 bytes of
//! the output files, eight pixels at a time: every step is a fixed-size operation on eight
//! lanes, which the compiler turns into vector instructions (byte swaps, integer to float,
//! the two divisions of the formula). The formula is [`PixelModel::calibrate`], the one
//! [`apply`](super::apply) uses, so the two agree bit for bit.
//!
//! Pixels stored otherwise (other BITPIX, BSCALE, a non-integral BZERO, cfitsio-decoded
//! files) and raw frames whose overscan runs along the columns are decoded into a row of
//! `f32` first and go through the same loop.

use super::{PixelModel, RowStats};

/// Pixels per step of the kernel (eight `f32`: one AVX register, two SSE ones).
pub(super) const LANES: usize = 8;

/// One row of input values, read eight at a time (or one at a time for a row's last few).
pub(super) trait Row {
    /// The values of pixels `x0..x0 + LANES`.
    fn lanes(&self, x0: usize) -> [f32; LANES];
    /// The value of pixel `x`.
    fn at(&self, x: usize) -> f32;
}

/// A row of `f32` values already decoded.
pub(super) struct Decoded<'a>(pub &'a [f32]);

impl Row for Decoded<'_> {
    #[inline(always)]
    fn lanes(&self, x0: usize) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        out.copy_from_slice(&self.0[x0..x0 + LANES]);
        out
    }
    #[inline(always)]
    fn at(&self, x: usize) -> f32 {
        self.0[x]
    }
}

/// A row stored as big-endian float32 with no scaling (BITPIX -32, BSCALE 1, BZERO 0): the
/// masters.
pub(super) struct BigEndianF32<'a>(pub &'a [u8]);

impl Row for BigEndianF32<'_> {
    #[inline(always)]
    fn lanes(&self, x0: usize) -> [f32; LANES] {
        let b = &self.0[4 * x0..4 * (x0 + LANES)];
        let mut out = [0.0; LANES];
        for (j, o) in out.iter_mut().enumerate() {
            *o = f32::from_be_bytes([b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]]);
        }
        out
    }
    #[inline(always)]
    fn at(&self, x: usize) -> f32 {
        let b = &self.0[4 * x..4 * x + 4];
        f32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// A raw row stored as big-endian 16-bit integers with BSCALE 1 and an integral BZERO that
/// `f32` holds exactly (32768 for unsigned 16-bit), less the row's overscan level.
///
/// `(v + bzero) as f32` computed in `f32` is the `f64` decode of [`Pixels::read`]
/// (`(v * 1.0 + bzero) as f32`) exactly: both operands are exact, the `f64` sum of an `i16`
/// and an integer below 2^53 is exact, so each side rounds the same exact sum once.
///
/// [`Pixels::read`]: crate::fits::Pixels::read
pub(super) struct OffsetI16<'a> {
    pub bytes: &'a [u8],
    pub bzero: f32,
    pub level: f32,
}

impl OffsetI16<'_> {
    /// Whether a stored image's `bzero` (with BSCALE 1) decodes exactly as [`OffsetI16`] does.
    pub fn exact_for(bzero: f64) -> bool {
        bzero.fract() == 0.0 && bzero.abs() < 9.0e15 && (bzero as f32) as f64 == bzero
    }

    #[inline(always)]
    fn value(&self, hi: u8, lo: u8) -> f32 {
        (i16::from_be_bytes([hi, lo]) as f32 + self.bzero) - self.level
    }
}

impl Row for OffsetI16<'_> {
    #[inline(always)]
    fn lanes(&self, x0: usize) -> [f32; LANES] {
        let b = &self.bytes[2 * x0..2 * (x0 + LANES)];
        let mut out = [0.0; LANES];
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.value(b[2 * j], b[2 * j + 1]);
        }
        out
    }
    #[inline(always)]
    fn at(&self, x: usize) -> f32 {
        self.value(self.bytes[2 * x], self.bytes[2 * x + 1])
    }
}

/// Calibrates one row of `science.len() / 4` pixels from `raw` (overscan-corrected), `bias`
/// and `flat`, with `bad` (non-zero = bad) when there is a bad-pixel map; writes the science
/// and weight values as big-endian float32 bytes. Returns what [`RowStats`] counts.
///
/// On x86-64 processors with AVX2 (nearly all since 2013) the loop is compiled a second time
/// for them and that copy runs: eight lanes per instruction and byte shuffles instead of
/// two-lane SSE2, about a quarter of the instructions. Both copies compute the same IEEE
/// operations in the same order (Rust never fuses a multiply and an add), so the bytes agree.
pub(super) fn calibrate_row(
    model: &PixelModel,
    raw: &impl Row,
    bias: &impl Row,
    flat: &impl Row,
    bad: Option<&[u8]>,
    science: &mut [u8],
    weight: &mut [u8],
) -> RowStats {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, the only thing `row_avx2` asks beyond `row`.
        return unsafe { row_avx2(model, raw, bias, flat, bad, science, weight) };
    }
    row(model, raw, bias, flat, bad, science, weight)
}

/// [`row`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(
    model: &PixelModel,
    raw: &impl Row,
    bias: &impl Row,
    flat: &impl Row,
    bad: Option<&[u8]>,
    science: &mut [u8],
    weight: &mut [u8],
) -> RowStats {
    row(model, raw, bias, flat, bad, science, weight)
}

/// What each lane of [`row`] has seen: pixels masked, the lowest saturated science value,
/// the highest finite flat value.
struct Lanes {
    masked: [u32; LANES],
    min_saturated: [f32; LANES],
    max_flat: [f32; LANES],
}

impl Lanes {
    /// One pixel in lane `j` from its overscan-corrected raw, bias and flat values: its
    /// science and weight values, counted.
    #[inline(always)]
    fn pixel(
        &mut self,
        model: &PixelModel,
        j: usize,
        r: f32,
        b: f32,
        f: f32,
        bad: bool,
    ) -> (f32, f32) {
        let p = model.calibrate(r, b, f);
        self.masked[j] += !(p.clean() & !bad) as u32;
        if p.saturated {
            self.min_saturated[j] = self.min_saturated[j].min(p.science);
        }
        if f.is_finite() {
            self.max_flat[j] = self.max_flat[j].max(f);
        }
        (p.science, if bad { 0.0 } else { p.weight })
    }
}

/// The loop of [`calibrate_row`]: eight pixels a step, each lane with its own counts.
#[inline(always)]
pub(super) fn row(
    model: &PixelModel,
    raw: &impl Row,
    bias: &impl Row,
    flat: &impl Row,
    bad: Option<&[u8]>,
    science: &mut [u8],
    weight: &mut [u8],
) -> RowStats {
    let w = science.len() / 4;
    assert_eq!(
        weight.len(),
        science.len(),
        "science and weight rows differ"
    );
    let mut lanes = Lanes {
        masked: [0; LANES],
        min_saturated: [f32::INFINITY; LANES],
        max_flat: [1.0; LANES],
    };
    let full = w - w % LANES;
    for x0 in (0..full).step_by(LANES) {
        let (r, b, f) = (raw.lanes(x0), bias.lanes(x0), flat.lanes(x0));
        let mut is_bad = [false; LANES];
        if let Some(bad) = bad {
            for (i, b) in is_bad.iter_mut().zip(&bad[x0..x0 + LANES]) {
                *i = *b != 0;
            }
        }
        let mut s = [0.0f32; LANES];
        let mut v = [0.0f32; LANES];
        for j in 0..LANES {
            (s[j], v[j]) = lanes.pixel(model, j, r[j], b[j], f[j], is_bad[j]);
        }
        let sci = &mut science[4 * x0..4 * (x0 + LANES)];
        let wt = &mut weight[4 * x0..4 * (x0 + LANES)];
        for j in 0..LANES {
            sci[4 * j..4 * j + 4].copy_from_slice(&s[j].to_be_bytes());
            wt[4 * j..4 * j + 4].copy_from_slice(&v[j].to_be_bytes());
        }
    }
    for x in full..w {
        let is_bad = bad.is_some_and(|b| b[x] != 0);
        let (s, v) = lanes.pixel(model, 0, raw.at(x), bias.at(x), flat.at(x), is_bad);
        science[4 * x..4 * x + 4].copy_from_slice(&s.to_be_bytes());
        weight[4 * x..4 * x + 4].copy_from_slice(&v.to_be_bytes());
    }
    let mut stats = RowStats::NONE;
    for j in 0..LANES {
        stats = stats.merge(RowStats {
            masked: lanes.masked[j] as usize,
            min_saturated: lanes.min_saturated[j],
            max_flat: lanes.max_flat[j],
        });
    }
    stats
}
