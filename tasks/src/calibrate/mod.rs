//! CCD calibration algorithms as plain functions over pixel arrays (no I/O).
//!
//! - [`parse_section`]: FITS/IRAF sections (`BIASSEC`, `TRIMSEC`, `DATASEC`), 1-based inclusive.
//! - [`overscan_correct`]: subtract the row-wise (or column-wise) median of the overscan strip,
//!   optionally smoothed, and trim to the data section.
//! - [`combine`]: per-pixel median or sigma-clipped mean of a stack, with the count of values used.
//! - [`master_bias`], [`master_flat`] (each flat normalised by its median; the master too).
//! - [`apply`]: `(raw - bias) / flat` with a weight (inverse variance) map and a bad-pixel mask.
//!
//! Images are row-major `f32` slices, `width` pixels per row (FITS axis 1 = x). Every function is
//! chunked over rows with rayon and allocates nothing per pixel.

use rayon::prelude::*;

use crate::fits::Pixels;

/// Mask bit: the flat field is out of range (`< FLAT_MIN`, `> FLAT_MAX`) or not finite.
pub const MASK_BAD_FLAT: u8 = 1;
/// Mask bit: the raw value reached the saturation level. Extraction keeps such pixels (they are
/// the cores of bright stars) but flags the sources that contain them (FLAGS bit 4).
pub const MASK_SATURATED: u8 = 2;
/// Mask bit: the raw or bias value is not finite (NaN, infinity).
pub const MASK_NONFINITE: u8 = 4;
/// Mask bit: flagged by a static bad-pixel map (hot, dead or cosmetic defects).
pub const MASK_BAD: u8 = 8;

/// Default lower limit of a usable normalised flat value.
pub const FLAT_MIN: f32 = 0.1;
/// Default upper limit of a usable normalised flat value.
pub const FLAT_MAX: f32 = 10.0;

/// Rows per rayon task: large enough to amortise scheduling, small enough to balance 2-64 cores.
const ROWS_PER_TASK: usize = 16;

/// A calibration error: what was expected and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    #[error("invalid section `{text}`: {reason} (expected `[x1:x2,y1:y2]`, 1-based inclusive)")]
    BadSection { text: String, reason: String },
    #[error("section {section} lies outside the {width}x{height} image")]
    SectionOutside {
        section: String,
        width: usize,
        height: usize,
    },
    #[error("the overscan section {biassec} neither spans the rows nor the columns of the data section {trimsec}")]
    OverscanGeometry { biassec: String, trimsec: String },
    #[error("{what} has {found} pixels, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("no frames to combine")]
    NoFrames,
    #[error("{what}: {reason}")]
    BadParameter { what: &'static str, reason: String },
}

/// A rectangular image section, stored 0-based and half-open (`x0..x1`, `y0..y1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub x0: usize,
    pub x1: usize,
    pub y0: usize,
    pub y1: usize,
}

impl Section {
    /// The whole of a `width` x `height` image.
    pub fn full(width: usize, height: usize) -> Self {
        Section {
            x0: 0,
            x1: width,
            y0: 0,
            y1: height,
        }
    }
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
    /// Errors unless the section lies inside a `width` x `height` image.
    pub fn check_inside(&self, width: usize, height: usize) -> Result<(), CalibrateError> {
        if self.x1 > width || self.y1 > height || self.x0 >= self.x1 || self.y0 >= self.y1 {
            return Err(CalibrateError::SectionOutside {
                section: self.to_string(),
                width,
                height,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Section {
    /// Back in FITS notation: `[x1:x2,y1:y2]`, 1-based inclusive.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}:{},{}:{}]",
            self.x0 + 1,
            self.x1,
            self.y0 + 1,
            self.y1
        )
    }
}

/// Parse a FITS section such as `[1:2048,1:4100]` (1-based, inclusive, x then y). A reversed
/// range (`[2048:1,...]`, used by some instruments to mean a flipped readout) gives the same
/// pixels; whitespace is ignored.
pub fn parse_section(text: &str) -> Result<Section, CalibrateError> {
    let bad = |reason: &str| CalibrateError::BadSection {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| bad("missing brackets"))?;
    let mut axes = inner.split(',');
    let (ax, ay) = match (axes.next(), axes.next(), axes.next()) {
        (Some(a), Some(b), None) => (a, b),
        _ => return Err(bad("expected two ranges separated by a comma")),
    };
    let range = |s: &str| -> Result<(usize, usize), CalibrateError> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| bad("a range needs a colon"))?;
        let a: usize = a
            .parse()
            .map_err(|_| bad("range bounds must be positive integers"))?;
        let b: usize = b
            .parse()
            .map_err(|_| bad("range bounds must be positive integers"))?;
        if a == 0 || b == 0 {
            return Err(bad("sections are 1-based: 0 is not a pixel"));
        }
        Ok((a.min(b) - 1, a.max(b)))
    };
    let (x0, x1) = range(ax)?;
    let (y0, y1) = range(ay)?;
    Ok(Section { x0, x1, y0, y1 })
}

/// How the overscan level is estimated and smoothed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OverscanOptions {
    /// Half-width (in rows, or columns for a horizontal overscan) of the running mean applied to
    /// the per-line medians; 0 keeps the per-line medians as they are.
    pub smooth_half_width: usize,
}

fn check_len(what: &str, found: usize, expected: usize) -> Result<(), CalibrateError> {
    if found != expected {
        return Err(CalibrateError::SizeMismatch {
            what: what.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Median of a small buffer (reordered in place); NaN-free input expected. Even counts average
/// the two middle values.
fn median_in_place(v: &mut [f32]) -> f32 {
    let n = v.len();
    if n == 0 {
        return f32::NAN;
    }
    let mid = n / 2;
    let (lo, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let l = lo.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        0.5 * (l + m)
    }
}

fn smooth(levels: &[f32], half: usize) -> Vec<f32> {
    if half == 0 || levels.len() < 2 {
        return levels.to_vec();
    }
    let n = levels.len();
    let mut prefix = vec![0.0f64; n + 1];
    for (i, v) in levels.iter().enumerate() {
        prefix[i + 1] = prefix[i] + *v as f64;
    }
    (0..n)
        .map(|i| {
            let a = i.saturating_sub(half);
            let b = (i + half + 1).min(n);
            ((prefix[b] - prefix[a]) / (b - a) as f64) as f32
        })
        .collect()
}

/// Subtract the overscan level and trim to `trimsec`. Returns `(pixels, width, height)` of the
/// trimmed frame.
///
/// When `biassec` spans the rows of `trimsec` (the usual serial overscan, columns beside the data)
/// the level is the median of each row of the overscan; when it spans the columns (a parallel
/// overscan, rows below or above the data) it is the median of each column. Non-finite overscan
/// values are ignored.
pub fn overscan_correct(
    raw: &[f32],
    width: usize,
    height: usize,
    biassec: Section,
    trimsec: Section,
    opts: OverscanOptions,
) -> Result<(Vec<f32>, usize, usize), CalibrateError> {
    let mut out = Vec::new();
    let (tw, th) = overscan_correct_into(raw, width, height, biassec, trimsec, opts, &mut out)?;
    Ok((out, tw, th))
}

/// The overscan level of each line of a CCD's data section: one per row of `trimsec` when the
/// overscan is serial (columns beside the data), one per column when it is parallel.
#[derive(Debug, Clone, PartialEq)]
pub struct OverscanLevels {
    by_row: bool,
    values: Vec<f32>,
}

impl OverscanLevels {
    /// The level to subtract from the trimmed pixel in column `x`, row `y` (from 0): `values`
    /// indexed by whichever the overscan runs along.
    #[inline]
    fn at(&self, x: usize, y: usize) -> f32 {
        self.values[if self.by_row { y } else { x }]
    }
}

/// The overscan levels of a raw `width` x `height` frame: the median of each row (or column) of
/// `biassec` over the rows (columns) of `trimsec`, non-finite values ignored, smoothed as `opts`
/// says.
pub fn overscan_levels(
    raw: &Pixels,
    width: usize,
    height: usize,
    biassec: Section,
    trimsec: Section,
    opts: OverscanOptions,
) -> Result<OverscanLevels, CalibrateError> {
    check_len("raw frame", raw.len(), width * height)?;
    biassec.check_inside(width, height)?;
    trimsec.check_inside(width, height)?;
    let by_row = biassec.y0 <= trimsec.y0 && biassec.y1 >= trimsec.y1;
    let by_col = biassec.x0 <= trimsec.x0 && biassec.x1 >= trimsec.x1;
    let median_of = |buf: &mut Vec<f32>| {
        buf.retain(|v| v.is_finite());
        let m = median_in_place(buf);
        if m.is_finite() {
            m
        } else {
            0.0
        }
    };
    let values: Vec<f32> = if by_row {
        (trimsec.y0..trimsec.y1)
            .into_par_iter()
            .with_min_len(64)
            .map_init(Vec::new, |buf: &mut Vec<f32>, y| {
                buf.resize(biassec.width(), 0.0);
                raw.read(y * width + biassec.x0, buf);
                median_of(buf)
            })
            .collect()
    } else if by_col {
        (trimsec.x0..trimsec.x1)
            .into_par_iter()
            .with_min_len(64)
            .map_init(Vec::new, |buf: &mut Vec<f32>, x| {
                buf.clear();
                buf.extend((biassec.y0..biassec.y1).map(|y| raw.get(y * width + x)));
                median_of(buf)
            })
            .collect()
    } else {
        return Err(CalibrateError::OverscanGeometry {
            biassec: biassec.to_string(),
            trimsec: trimsec.to_string(),
        });
    };
    Ok(OverscanLevels {
        by_row,
        values: smooth(&values, opts.smooth_half_width),
    })
}

/// [`overscan_correct`] into `out` (resized as needed, so its memory is reused frame after
/// frame); returns the trimmed `(width, height)`.
pub fn overscan_correct_into(
    raw: &[f32],
    width: usize,
    height: usize,
    biassec: Section,
    trimsec: Section,
    opts: OverscanOptions,
    out: &mut Vec<f32>,
) -> Result<(usize, usize), CalibrateError> {
    let levels = overscan_levels(&Pixels::Decoded(raw), width, height, biassec, trimsec, opts)?;
    let (tw, th) = (trimsec.width(), trimsec.height());
    zeroed(out, tw * th);
    out.par_chunks_mut(tw * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (r, orow) in chunk.chunks_mut(tw).enumerate() {
                let j = c * ROWS_PER_TASK + r;
                let y = trimsec.y0 + j;
                let irow = &raw[y * width + trimsec.x0..y * width + trimsec.x1];
                for (x, (o, i)) in orow.iter_mut().zip(irow).enumerate() {
                    *o = *i - levels.at(x, j);
                }
            }
        });
    Ok((tw, th))
}

/// Resize `v` to `n` elements. A buffer too small is replaced by a fresh zeroed allocation
/// (`vec![0; n]` asks the allocator for zeroed memory: fresh pages come zeroed from the kernel,
/// with no memset pass over them); one large enough is reused. Every element is overwritten by
/// the caller either way.
fn zeroed<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.capacity() < n {
        *v = vec![T::default(); n];
    } else {
        v.resize(n, T::default());
    }
}

/// Trim without overscan subtraction (e.g. to `DATASEC` of a frame whose overscan was already
/// removed).
pub fn trim(
    raw: &[f32],
    width: usize,
    height: usize,
    sec: Section,
) -> Result<Vec<f32>, CalibrateError> {
    check_len("raw frame", raw.len(), width * height)?;
    sec.check_inside(width, height)?;
    let mut out = Vec::with_capacity(sec.width() * sec.height());
    for y in sec.y0..sec.y1 {
        out.extend_from_slice(&raw[y * width + sec.x0..y * width + sec.x1]);
    }
    Ok(out)
}

/// How a stack of frames is combined pixel by pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// The median of the finite values.
    Median,
    /// The mean of the values within `sigma` standard deviations of the median, iterated until no
    /// value is rejected (at most 10 times).
    SigmaClippedMean { sigma: f32 },
}

/// Clip and average `v` (finite values; reordered). Returns the estimate and the count used.
fn combine_values(v: &mut [f32], method: Combine) -> (f32, u16) {
    let n = v.len();
    if n == 0 {
        return (f32::NAN, 0);
    }
    match method {
        Combine::Median => (median_in_place(v), n as u16),
        Combine::SigmaClippedMean { sigma } => {
            if n < 3 {
                let s: f32 = v.iter().sum();
                return (s / n as f32, n as u16);
            }
            // Sort once; the kept set is always a contiguous window of the sorted values.
            v.sort_unstable_by(|a, b| a.total_cmp(b));
            let (mut lo, mut hi) = (0usize, n);
            for _ in 0..10 {
                let w = &v[lo..hi];
                let k = w.len();
                let med = if k % 2 == 1 {
                    w[k / 2]
                } else {
                    0.5 * (w[k / 2 - 1] + w[k / 2])
                };
                let mean = w.iter().map(|x| *x as f64).sum::<f64>() / k as f64;
                let var = w.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>()
                    / (k.max(2) - 1) as f64;
                let cut = sigma as f64 * var.sqrt();
                let (a, b) = (med as f64 - cut, med as f64 + cut);
                let nlo = lo + w.iter().take_while(|x| (**x as f64) < a).count();
                let nhi = hi - w.iter().rev().take_while(|x| (**x as f64) > b).count();
                if (nlo == lo && nhi == hi) || nhi <= nlo + 1 {
                    break;
                }
                lo = nlo;
                hi = nhi;
            }
            let w = &v[lo..hi];
            let mean = w.iter().map(|x| *x as f64).sum::<f64>() / w.len() as f64;
            (mean as f32, w.len() as u16)
        }
    }
}

/// Combine frames pixel by pixel. Returns the combined frame and, per pixel, the number of values
/// that went into it (non-finite values are skipped; a pixel with none is NaN with count 0).
pub fn combine(frames: &[&[f32]], method: Combine) -> Result<(Vec<f32>, Vec<u16>), CalibrateError> {
    let scales = vec![1.0f32; frames.len()];
    combine_scaled(frames, None, &scales, method)
}

/// `combine` of `(frame - offset) * scale[k]` without materialising the scaled frames.
fn combine_scaled(
    frames: &[&[f32]],
    offset: Option<&[f32]>,
    scales: &[f32],
    method: Combine,
) -> Result<(Vec<f32>, Vec<u16>), CalibrateError> {
    let first = frames.first().ok_or(CalibrateError::NoFrames)?;
    let n = first.len();
    for (k, f) in frames.iter().enumerate() {
        check_len(&format!("frame {k}"), f.len(), n)?;
    }
    if let Some(o) = offset {
        check_len("bias", o.len(), n)?;
    }
    if frames.len() > u16::MAX as usize {
        return Err(CalibrateError::BadParameter {
            what: "frames",
            reason: format!("{} frames, at most 65535", frames.len()),
        });
    }
    if let Combine::SigmaClippedMean { sigma } = method {
        if sigma.is_nan() || sigma <= 0.0 {
            return Err(CalibrateError::BadParameter {
                what: "sigma",
                reason: format!("must be > 0, found {sigma}"),
            });
        }
    }
    const CHUNK: usize = 4096;
    let mut out = vec![0.0f32; n];
    let mut counts = vec![0u16; n];
    out.par_chunks_mut(CHUNK)
        .zip(counts.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each_init(
            || Vec::with_capacity(frames.len()),
            |buf, (c, (o, cnt))| {
                let base = c * CHUNK;
                for i in 0..o.len() {
                    let p = base + i;
                    buf.clear();
                    let off = offset.map_or(0.0, |b| b[p]);
                    for (f, s) in frames.iter().zip(scales) {
                        let v = (f[p] - off) * s;
                        if v.is_finite() {
                            buf.push(v);
                        }
                    }
                    let (v, k) = combine_values(buf, method);
                    o[i] = v;
                    cnt[i] = k;
                }
            },
        );
    Ok((out, counts))
}

/// Master bias: the combination of bias frames (already overscan-corrected and trimmed).
pub fn master_bias(
    frames: &[&[f32]],
    method: Combine,
) -> Result<(Vec<f32>, Vec<u16>), CalibrateError> {
    combine(frames, method)
}

/// Median of the finite values of a frame, from at most 2^18 evenly strided samples (exact for
/// frames up to 262144 pixels; within a small fraction of the noise above that).
pub fn robust_level(frame: &[f32], offset: Option<&[f32]>) -> f32 {
    robust_level_of(frame.len(), |i| frame[i] - offset.map_or(0.0, |b| b[i]))
}

/// [`robust_level`] of a frame of `n` pixels whose pixel `i` is `value(i)` (a frame that is not
/// held as an array: stored pixels, or a correction applied on the fly).
pub fn robust_level_of(n: usize, value: impl Fn(usize) -> f32) -> f32 {
    let stride = sample_stride(n);
    median_of_finite((0..n).step_by(stride).map(value).collect())
}

/// [`robust_level`] of stored pixels: the samples of [`robust_level_of`], decoded by
/// [`Pixels::for_each_strided`].
pub fn robust_level_of_pixels(pixels: &Pixels) -> f32 {
    let n = pixels.len();
    let stride = sample_stride(n);
    let mut samples = Vec::with_capacity(n.div_ceil(stride));
    pixels.for_each_strided(0..n, stride, |_, v| samples.push(v));
    median_of_finite(samples)
}

/// The distance between the samples of a robust level of `n` pixels: at most 2^18 samples.
fn sample_stride(n: usize) -> usize {
    const MAX_SAMPLES: usize = 1 << 18;
    n.div_ceil(MAX_SAMPLES).max(1)
}

/// The median of the finite values of `samples` ([`median_in_place`]'s).
///
/// The samples are ordered as integers (the bits of an `f32` turned into a key that sorts as
/// [`f32::total_cmp`] does): the same median, with cheaper comparisons for the 2^18 samples
/// of a CCD.
fn median_of_finite(samples: Vec<f32>) -> f32 {
    // total_cmp's order: flip every bit of a negative value, the sign bit of a positive one.
    let key = |v: f32| {
        let b = v.to_bits();
        b ^ (((b as i32 >> 31) as u32) | 0x8000_0000)
    };
    let value_of = |k: u32| f32::from_bits(k ^ ((!((k as i32) >> 31) as u32) | 0x8000_0000));
    let mut s: Vec<u32> = samples
        .into_iter()
        .filter(|v| v.is_finite())
        .map(key)
        .collect();
    let len = s.len();
    if len == 0 {
        return f32::NAN;
    }
    let mid = len / 2;
    let (lo, m, _) = s.select_nth_unstable(mid);
    let m = value_of(*m);
    if len % 2 == 1 {
        m
    } else {
        let l = lo
            .iter()
            .map(|k| value_of(*k))
            .fold(f32::NEG_INFINITY, f32::max);
        0.5 * (l + m)
    }
}

/// Master flat: each flat has `bias` subtracted (when given), is divided by its own median, and
/// the stack is combined; the master is then normalised to a median of 1.
pub fn master_flat(
    flats: &[&[f32]],
    bias: Option<&[f32]>,
    method: Combine,
) -> Result<(Vec<f32>, Vec<u16>), CalibrateError> {
    if flats.is_empty() {
        return Err(CalibrateError::NoFrames);
    }
    let scales: Vec<f32> = flats
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let m = robust_level(f, bias);
            if m.is_finite() && m > 0.0 {
                Ok(1.0 / m)
            } else {
                Err(CalibrateError::BadParameter {
                    what: "flat",
                    reason: format!("flat {k} has a median level of {m}, expected > 0"),
                })
            }
        })
        .collect::<Result<_, _>>()?;
    let (mut master, counts) = combine_scaled(flats, bias, &scales, method)?;
    let m = robust_level(&master, None);
    if m.is_finite() && m > 0.0 {
        let inv = 1.0 / m;
        master
            .par_chunks_mut(1 << 16)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= inv));
    }
    Ok((master, counts))
}

/// Pixels of a master bias or dark that stand more than `nsigma` robust standard deviations
/// (1.4826 x MAD) above its median: returns a mask with [`MASK_BAD`] set on them.
pub fn hot_pixels(frame: &[f32], nsigma: f32) -> Vec<u8> {
    let med = robust_level(frame, None);
    let stride = frame.len().div_ceil(1 << 18).max(1);
    let mut dev: Vec<f32> = frame
        .iter()
        .step_by(stride)
        .filter(|v| v.is_finite())
        .map(|v| (v - med).abs())
        .collect();
    let mad = median_in_place(&mut dev);
    let cut = med + nsigma * 1.4826 * mad.max(f32::MIN_POSITIVE);
    frame
        .par_iter()
        .map(|v| if *v > cut { MASK_BAD } else { 0 })
        .collect()
}

/// Detector constants for [`apply`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    /// Gain in electrons per ADU (> 0).
    pub gain_e_per_adu: f32,
    /// Read noise in electrons (>= 0).
    pub read_noise_e: f32,
    /// Raw level (ADU, before bias subtraction) at and above which a pixel is saturated.
    pub saturate_adu: f32,
    /// Flat values outside `flat_min..=flat_max` are masked ([`MASK_BAD_FLAT`]).
    pub flat_min: f32,
    pub flat_max: f32,
}

impl Detector {
    pub fn new(gain_e_per_adu: f32, read_noise_e: f32, saturate_adu: f32) -> Self {
        Detector {
            gain_e_per_adu,
            read_noise_e,
            saturate_adu,
            flat_min: FLAT_MIN,
            flat_max: FLAT_MAX,
        }
    }

    /// Errors unless the gain is finite and > 0 and the read noise >= 0.
    pub fn check(&self) -> Result<(), CalibrateError> {
        if !self.gain_e_per_adu.is_finite() || self.gain_e_per_adu <= 0.0 {
            return Err(CalibrateError::BadParameter {
                what: "gain_e_per_adu",
                reason: format!("must be > 0, found {}", self.gain_e_per_adu),
            });
        }
        if self.read_noise_e.is_nan() || self.read_noise_e < 0.0 {
            return Err(CalibrateError::BadParameter {
                what: "read_noise_e",
                reason: format!("must be >= 0, found {}", self.read_noise_e),
            });
        }
        Ok(())
    }

    fn pixel_model(&self) -> PixelModel {
        let inv_gain = 1.0 / self.gain_e_per_adu;
        PixelModel {
            inv_gain,
            rn2: (self.read_noise_e * inv_gain).powi(2),
            fmin: self.flat_min,
            fmax: self.flat_max,
            sat: self.saturate_adu,
        }
    }
}

/// The constants of the per-pixel calibration, derived once from a [`Detector`].
#[derive(Debug, Clone, Copy)]
struct PixelModel {
    inv_gain: f32,
    /// (read noise / gain)^2, ADU^2.
    rn2: f32,
    fmin: f32,
    fmax: f32,
    sat: f32,
}

/// One calibrated pixel before the bad-pixel map: what [`PixelModel::calibrate`] finds.
#[derive(Debug, Clone, Copy)]
struct PixelValue {
    science: f32,
    /// Inverse variance; 0 unless the pixel is clean and its variance positive.
    weight: f32,
    flat_ok: bool,
    finite: bool,
    saturated: bool,
}

impl PixelValue {
    /// Whether no mask bit is set (the bad-pixel map aside).
    #[inline(always)]
    fn clean(&self) -> bool {
        self.flat_ok & self.finite & !self.saturated
    }

    /// The mask bits (`MASK_*`, the bad-pixel map aside).
    #[inline(always)]
    fn mask(&self) -> u8 {
        ((!self.flat_ok as u8) * MASK_BAD_FLAT)
            | ((!self.finite as u8) * MASK_NONFINITE)
            | ((self.saturated as u8) * MASK_SATURATED)
    }
}

impl PixelModel {
    /// One pixel from the overscan-corrected raw value, the bias and the flat (the formula of
    /// [`apply`]). Branch-free and on lanes of bools and floats only, so that loops over it
    /// vectorise (the kernel of [`Ccd::calibrate_rows`] runs it eight pixels at a time).
    #[inline(always)]
    fn calibrate(&self, rv: f32, bv: f32, fv: f32) -> PixelValue {
        let d = rv - bv;
        let flat_ok = (fv >= self.fmin) & (fv <= self.fmax); // false for NaN
        let finite = d.is_finite();
        let saturated = rv >= self.sat;
        let inv_f = if flat_ok { 1.0 / fv } else { 0.0 };
        let science = if finite { d * inv_f } else { 0.0 };
        let var = (d.max(0.0) * self.inv_gain + self.rn2) * inv_f * inv_f;
        let ok = flat_ok & finite & !saturated & (var > 0.0);
        PixelValue {
            science,
            weight: if ok { 1.0 / var } else { 0.0 },
            flat_ok,
            finite,
            saturated,
        }
    }
}

/// A calibrated frame: science pixels in ADU (flat-fielded), inverse variance in 1/ADU^2 (0 where
/// masked) and the mask bits (`MASK_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    pub science: Vec<f32>,
    pub weight: Vec<f32>,
    pub mask: Vec<u8>,
}

/// `(raw - bias) / flat` with its inverse-variance weight and mask.
///
/// Variance (ADU^2) of a calibrated pixel: `(max(raw - bias, 0) / gain + (read_noise / gain)^2) /
/// flat^2`. Masked: flat out of range or not finite, raw or bias not finite, raw >= saturation,
/// and pixels set in `bad` (any non-zero value, e.g. from [`hot_pixels`]). Weight is 0 on every
/// masked pixel; science is 0 where it cannot be computed (bad flat, non-finite input) and the
/// computed value elsewhere, saturated pixels included.
pub fn apply(
    raw: &[f32],
    bias: &[f32],
    flat: &[f32],
    det: &Detector,
    bad: Option<&[u8]>,
) -> Result<Calibrated, CalibrateError> {
    let mut out = Calibrated {
        science: Vec::new(),
        weight: Vec::new(),
        mask: Vec::new(),
    };
    apply_into(raw, bias, flat, det, bad, &mut out)?;
    Ok(out)
}

/// [`apply`] into the buffers of `out` (resized as needed), so a night of frames of one size
/// reuses the same memory instead of faulting in fresh pages for every frame.
pub fn apply_into(
    raw: &[f32],
    bias: &[f32],
    flat: &[f32],
    det: &Detector,
    bad: Option<&[u8]>,
    out: &mut Calibrated,
) -> Result<(), CalibrateError> {
    let n = raw.len();
    check_len("bias", bias.len(), n)?;
    check_len("flat", flat.len(), n)?;
    if let Some(b) = bad {
        check_len("bad-pixel mask", b.len(), n)?;
    }
    det.check()?;
    zeroed(&mut out.science, n);
    zeroed(&mut out.weight, n);
    zeroed(&mut out.mask, n);
    apply_kernel(raw, bias, flat, det, bad, out);
    Ok(())
}

/// The kernel of [`apply`], writing into preallocated buffers (lengths checked by the caller).
fn apply_kernel(
    raw: &[f32],
    bias: &[f32],
    flat: &[f32],
    det: &Detector,
    bad: Option<&[u8]>,
    out: &mut Calibrated,
) {
    const CHUNK: usize = 1 << 14;
    let model = det.pixel_model();
    out.science
        .par_chunks_mut(CHUNK)
        .zip(out.weight.par_chunks_mut(CHUNK))
        .zip(out.mask.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((sci, wt), msk))| {
            let base = c * CHUNK;
            let len = sci.len();
            let r = &raw[base..base + len];
            let b = &bias[base..base + len];
            let f = &flat[base..base + len];
            for i in 0..len {
                let p = model.calibrate(r[i], b[i], f[i]);
                (sci[i], wt[i], msk[i]) = (p.science, p.weight, p.mask());
            }
            if let Some(bm) = bad {
                let bm = &bm[base..base + len];
                for i in 0..len {
                    if bm[i] != 0 {
                        msk[i] |= MASK_BAD;
                        wt[i] = 0.0;
                    }
                }
            }
        });
}

/// One CCD for the single-pass calibration: its raw pixels as stored, the overscan levels, the
/// master bias and flat (trimmed size, as stored) and the bad-pixel map (trimmed). Overscan,
/// trim, bias, flat, weight and mask are computed row by row into the caller's buffers by
/// [`Ccd::calibrate_rows`], which gives what [`overscan_correct`] followed by [`apply`] gives,
/// without a whole-CCD array in between.
pub struct Ccd<'a> {
    raw: Pixels<'a>,
    raw_width: usize,
    trimsec: Section,
    levels: &'a OverscanLevels,
    bias: Pixels<'a>,
    flat: Pixels<'a>,
    bad: Option<&'a [u8]>,
}

/// What [`Ccd::calibrate_rows`] saw in a block of rows, merged over blocks with
/// [`RowStats::merge`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// Pixels with any mask bit set (the bad-pixel map's included).
    pub masked: usize,
    /// The lowest calibrated value of a saturated pixel (infinity when none is saturated).
    pub min_saturated: f32,
    /// The highest finite flat value, at least 1.
    pub max_flat: f32,
}

impl RowStats {
    pub const NONE: RowStats = RowStats {
        masked: 0,
        min_saturated: f32::INFINITY,
        max_flat: 1.0,
    };

    pub fn merge(self, o: RowStats) -> RowStats {
        RowStats {
            masked: self.masked + o.masked,
            min_saturated: self.min_saturated.min(o.min_saturated),
            max_flat: self.max_flat.max(o.max_flat),
        }
    }
}

/// One row of raw, bias and flat values, decoded; reused from row to row.
#[derive(Debug, Default)]
pub struct RowScratch {
    raw: Vec<f32>,
    bias: Vec<f32>,
    flat: Vec<f32>,
}

impl<'a> Ccd<'a> {
    /// Checks that the pieces fit together: a raw frame `raw_width` pixels wide holding
    /// `trimsec`, levels for its lines, bias, flat and map of the trimmed size.
    pub fn new(
        raw: Pixels<'a>,
        raw_width: usize,
        trimsec: Section,
        levels: &'a OverscanLevels,
        bias: Pixels<'a>,
        flat: Pixels<'a>,
        bad: Option<&'a [u8]>,
    ) -> Result<Ccd<'a>, CalibrateError> {
        let raw_height = raw.len() / raw_width.max(1);
        check_len("raw frame", raw.len(), raw_width * raw_height)?;
        trimsec.check_inside(raw_width, raw_height)?;
        let n = trimsec.width() * trimsec.height();
        let lines = if levels.by_row {
            trimsec.height()
        } else {
            trimsec.width()
        };
        check_len("overscan levels", levels.values.len(), lines)?;
        check_len("bias", bias.len(), n)?;
        check_len("flat", flat.len(), n)?;
        if let Some(b) = bad {
            check_len("bad-pixel mask", b.len(), n)?;
        }
        Ok(Ccd {
            raw,
            raw_width,
            trimsec,
            levels,
            bias,
            flat,
            bad,
        })
    }

    /// Width of the trimmed frame.
    pub fn width(&self) -> usize {
        self.trimsec.width()
    }

    /// Height of the trimmed frame.
    pub fn height(&self) -> usize {
        self.trimsec.height()
    }

    /// The overscan level subtracted, in ADU: the robust level of the raw frame less that of
    /// the corrected, trimmed one (the samples [`robust_level_of`] takes of it, row by row).
    pub fn overscan_level(&self) -> f32 {
        let (w, h, t) = (self.width(), self.height(), self.trimsec);
        let stride = sample_stride(w * h);
        let mut samples = Vec::with_capacity((w * h).div_ceil(stride));
        // The first sample at or after the start of trimmed row y, as an index of the trimmed
        // frame.
        let mut next = 0;
        for y in 0..h {
            let x0 = next - y * w;
            if x0 >= w {
                continue;
            }
            let row = (t.y0 + y) * self.raw_width + t.x0;
            self.raw
                .for_each_strided(row + x0..row + w, stride, |i, v| {
                    samples.push(v - self.levels.at(i - row, y));
                });
            next += (w - x0).div_ceil(stride) * stride;
        }
        robust_level_of_pixels(&self.raw) - median_of_finite(samples)
    }

    /// Calibrates the trimmed rows `rows` into `science` and `weight` (`rows.len() * width`
    /// pixels each, stored as FITS stores float32: big-endian, 4 bytes a pixel) with `det`
    /// (checked with [`Detector::check`]; its saturation level in overscan-corrected ADU, as
    /// [`apply`] takes it). The values are those of [`apply`], bit for bit.
    ///
    /// A raw frame of 16-bit integers with a serial overscan and masters of unscaled float32
    /// (what telescopes and the `masters` task write) go from their stored bytes to the output
    /// bytes in one loop ([`kernel`]); anything else is decoded a row at a time into `scratch`
    /// first.
    pub fn calibrate_rows(
        &self,
        det: &Detector,
        rows: std::ops::Range<usize>,
        scratch: &mut RowScratch,
        science: &mut [u8],
        weight: &mut [u8],
    ) -> RowStats {
        let (w, t) = (self.width(), self.trimsec);
        let model = det.pixel_model();
        let mut stats = RowStats::NONE;
        let raw_i16 = match self.raw {
            Pixels::Stored {
                bytes,
                bitpix: 16,
                bscale,
                bzero,
            } if self.levels.by_row && bscale == 1.0 && kernel::OffsetI16::exact_for(bzero) => {
                Some((bytes, bzero as f32))
            }
            _ => None,
        };
        let masters_f32 = match (self.bias, self.flat) {
            (
                Pixels::Stored {
                    bytes: b,
                    bitpix: -32,
                    bscale: 1.0,
                    bzero: 0.0,
                },
                Pixels::Stored {
                    bytes: f,
                    bitpix: -32,
                    bscale: 1.0,
                    bzero: 0.0,
                },
            ) => Some((b, f)),
            _ => None,
        };
        scratch.raw.resize(w, 0.0);
        scratch.bias.resize(w, 0.0);
        scratch.flat.resize(w, 0.0);
        let RowScratch { raw, bias, flat } = scratch;
        for (k, y) in rows.enumerate() {
            let row_bytes = k * 4 * w..(k + 1) * 4 * w;
            let (sci, wt) = (&mut science[row_bytes.clone()], &mut weight[row_bytes]);
            let bad = self.bad.map(|b| &b[y * w..(y + 1) * w]);
            let first = (t.y0 + y) * self.raw_width + t.x0;
            let s = match (raw_i16, masters_f32) {
                (Some((bytes, bzero)), Some((b, f))) => {
                    let raw = kernel::OffsetI16 {
                        bytes: &bytes[2 * first..2 * (first + w)],
                        bzero,
                        level: self.levels.values[y],
                    };
                    let bias = kernel::BigEndianF32(&b[4 * y * w..4 * (y + 1) * w]);
                    let flat = kernel::BigEndianF32(&f[4 * y * w..4 * (y + 1) * w]);
                    kernel::calibrate_row(&model, &raw, &bias, &flat, bad, sci, wt)
                }
                _ => {
                    self.raw.read(first, &mut raw[..]);
                    if self.levels.by_row {
                        let l = self.levels.values[y];
                        raw.iter_mut().for_each(|v| *v -= l);
                    } else {
                        raw.iter_mut()
                            .zip(&self.levels.values)
                            .for_each(|(v, l)| *v -= *l);
                    }
                    self.bias.read(y * w, &mut bias[..]);
                    self.flat.read(y * w, &mut flat[..]);
                    let (r, b, f) = (
                        kernel::Decoded(raw),
                        kernel::Decoded(bias),
                        kernel::Decoded(flat),
                    );
                    kernel::calibrate_row(&model, &r, &b, &f, bad, sci, wt)
                }
            };
            stats = stats.merge(s);
        }
        stats
    }
}

mod kernel;
pub mod task;
#[cfg(test)]
mod tests;
