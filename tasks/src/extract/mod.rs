//! Source extraction as a plain function over an image array (no I/O): background, matched
//! filter, thresholding, 8-connected labeling, multi-threshold deblending and measurements, with
//! SExtractor's algorithms, column names and conventions.
//!
//! ```
//! use nearby_tasks::extract::{extract, ExtractConfig, Image};
//! let (w, h) = (64, 64);
//! let mut data = vec![100.0f32; w * h];
//! for y in 0..h {
//!     for x in 0..w {
//!         let r2 = (x as f32 - 30.3).powi(2) + (y as f32 - 40.6).powi(2);
//!         data[y * w + x] += 1000.0 * (-r2 / (2.0 * 1.5 * 1.5)).exp() + ((x * 7 + y * 13) % 5) as f32;
//!     }
//! }
//! let cat = extract(&Image::new(&data, w, h), &ExtractConfig::default());
//! assert_eq!(cat.sources.len(), 1);
//! let s = &cat.sources[0];
//! assert!((s.xwin_image - 31.3).abs() < 0.05); // 1-based, FITS convention
//! assert!((s.ywin_image - 41.6).abs() < 0.05);
//! ```
//!
//! Conventions (as SExtractor's): pixel coordinates in the catalog are 1-based (the centre of the
//! first pixel is 1.0); THETA_IMAGE is in degrees counter-clockwise from the x axis in -90..90;
//! magnitudes are `mag_zeropoint - 2.5 log10(flux)` or 99 when the flux is not positive;
//! PHOT_APERTURES are diameters. Isophotal barycentre and shape (X_IMAGE, A_IMAGE, ...) are
//! moments of the *filtered* detection pixels, as in SExtractor; XWIN_IMAGE/YWIN_IMAGE are
//! iterative Gaussian-windowed centroids on the unfiltered image, the precise ones.

mod background;
mod catalog;
mod deblend;
mod detect;
mod measure;
mod trails;

pub use background::{background, Background};
pub use catalog::{Catalog, Column, ColumnType, Source};

use crate::calibrate::MASK_SATURATED;
use rayon::prelude::*;

/// FLAGS bit 1: neighbours or bad pixels cover more than 10% of the AUTO aperture.
pub const FLAG_CROWDED: u16 = 1;
/// FLAGS bit 2: the object was blended with another one and deblended.
pub const FLAG_BLENDED: u16 = 2;
/// FLAGS bit 4: at least one pixel of the object is saturated.
pub const FLAG_SATURATED: u16 = 4;
/// FLAGS bit 8: the object touches the image border.
pub const FLAG_TRUNCATED: u16 = 8;
/// FLAGS bit 16: an aperture (AUTO, APER or the centroid window) runs off the image.
pub const FLAG_APER_INCOMPLETE: u16 = 16;
/// FLAGS bit 32: the isophotal footprint contains bad pixels (masked or zero weight).
pub const FLAG_ISO_INCOMPLETE: u16 = 32;
/// FLAGS bit 256 (beyond SExtractor's eight): a faint trail found by the line-filter search
/// (`trails.rs`), measured as a line rather than from a thresholded footprint.
pub const FLAG_TRAIL_SEARCH: u16 = 256;

/// An image to extract from, with optional inverse-variance weights and mask.
///
/// A pixel is unusable when its mask has any bit other than [`MASK_SATURATED`] set, when its
/// weight is not positive (unless the mask says it is only saturated), or when its value is not
/// finite. Saturated pixels are detected and measured, and flag their sources.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub data: &'a [f32],
    pub width: usize,
    pub height: usize,
    /// Inverse variance per pixel (e.g. `calibrate::apply`'s weight); its scale is calibrated
    /// against the measured background noise, as SExtractor's MAP_WEIGHT.
    pub weight: Option<&'a [f32]>,
    /// `calibrate::MASK_*` bits per pixel.
    pub mask: Option<&'a [u8]>,
}

impl<'a> Image<'a> {
    pub fn new(data: &'a [f32], width: usize, height: usize) -> Self {
        assert_eq!(
            data.len(),
            width * height,
            "image data must hold width x height pixels"
        );
        Image {
            data,
            width,
            height,
            weight: None,
            mask: None,
        }
    }
    pub fn with_weight(mut self, weight: &'a [f32]) -> Self {
        assert_eq!(
            weight.len(),
            self.data.len(),
            "weight map must match the image"
        );
        self.weight = Some(weight);
        self
    }
    pub fn with_mask(mut self, mask: &'a [u8]) -> Self {
        assert_eq!(mask.len(), self.data.len(), "mask must match the image");
        self.mask = Some(mask);
        self
    }
    /// Whether pixel `p` carries no usable data.
    #[inline]
    pub fn is_bad(&self, p: usize) -> bool {
        let m = self.mask.map_or(0, |m| m[p]);
        if m & !MASK_SATURATED != 0 {
            return true;
        }
        if let Some(w) = self.weight {
            if (w[p].is_nan() || w[p] <= 0.0) && m & MASK_SATURATED == 0 {
                return true;
            }
        }
        !self.data[p].is_finite()
    }
    #[inline]
    fn mask_saturated(&self, p: usize) -> bool {
        self.mask.is_some_and(|m| m[p] & MASK_SATURATED != 0)
    }
}

/// A detection filter (correlation kernel), normalised to unit sum when built by the helpers.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub width: usize,
    pub height: usize,
    /// Row-major weights, `width * height`.
    pub data: Vec<f32>,
}

impl Kernel {
    /// SExtractor's `default.conv`: the 3x3 "all-ground" pyramid `1 2 1 / 2 4 2 / 1 2 1`,
    /// normalised.
    pub fn default_3x3() -> Self {
        let d = [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0f32];
        Kernel {
            width: 3,
            height: 3,
            data: d.iter().map(|v| v / 16.0).collect(),
        }
    }
    /// A normalised Gaussian of the given FWHM on a `size` x `size` grid (size odd).
    pub fn gaussian(fwhm_px: f32, size: usize) -> Self {
        let size = size | 1;
        let s2 = (fwhm_px / 2.354_82).powi(2);
        let c = (size / 2) as f32;
        let mut data: Vec<f32> = (0..size * size)
            .map(|i| {
                let (x, y) = ((i % size) as f32 - c, (i / size) as f32 - c);
                (-(x * x + y * y) / (2.0 * s2)).exp()
            })
            .collect();
        let s: f32 = data.iter().sum();
        data.iter_mut().for_each(|v| *v /= s);
        Kernel {
            width: size,
            height: size,
            data,
        }
    }
    /// Parse a SExtractor `.conv` file (`CONV NORM` or `CONV NONORM`, `#` comments, one row of
    /// the kernel per line).
    pub fn parse_conv(text: &str) -> Result<Self, String> {
        let mut norm = true;
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("CONV") {
                norm = !rest.trim().eq_ignore_ascii_case("NONORM");
                continue;
            }
            let row: Result<Vec<f32>, _> = line.split_whitespace().map(str::parse::<f32>).collect();
            rows.push(
                row.map_err(|e| format!("line {}: {e}: expected numbers, found `{line}`", i + 1))?,
            );
        }
        let h = rows.len();
        let w = rows.first().map_or(0, Vec::len);
        if h == 0 || w == 0 || rows.iter().any(|r| r.len() != w) {
            return Err("a filter needs equal-length rows of numbers".to_string());
        }
        if w.is_multiple_of(2) || h.is_multiple_of(2) {
            return Err(format!("a filter needs odd dimensions, found {w}x{h}"));
        }
        let mut data: Vec<f32> = rows.into_iter().flatten().collect();
        if norm {
            let s: f32 = data.iter().map(|v| v.abs()).sum();
            if s > 0.0 {
                data.iter_mut().for_each(|v| *v /= s);
            }
        }
        Ok(Kernel {
            width: w,
            height: h,
            data,
        })
    }
}

/// Extraction parameters, named after SExtractor's with their units.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractConfig {
    /// DETECT_THRESH: detection threshold in units of the background RMS (applied to the
    /// filtered image, as SExtractor does).
    pub thresh_sigma: f32,
    /// DETECT_MINAREA: minimum number of pixels above threshold.
    pub min_area_px: usize,
    /// DEBLEND_NTHRESH: number of deblending sub-thresholds.
    pub deblend_nthresh: usize,
    /// DEBLEND_MINCONT: minimum flux fraction of a branch to make a separate object.
    pub deblend_mincont: f32,
    /// FILTER / FILTER_NAME: detection filter, `None` to detect on the unfiltered image.
    pub filter: Option<Kernel>,
    /// BACK_SIZE: background mesh cell size in pixels.
    pub back_size_px: usize,
    /// BACK_FILTERSIZE: median filter size on the mesh, in cells.
    pub back_filtersize: usize,
    /// PHOT_APERTURES: circular aperture diameters in pixels.
    pub phot_apertures_px: Vec<f32>,
    /// PHOT_AUTOPARAMS: Kron factor and minimum radius (in units of A and B).
    pub kron_factor: f32,
    pub min_radius: f32,
    /// GAIN in e-/ADU for the Poisson part of the flux errors; 0 leaves it out (SExtractor's
    /// convention for "infinite gain").
    pub gain_e_per_adu: f32,
    /// SATUR_LEVEL in ADU (raw image values); `None` for no level check (a mask can still say
    /// which pixels are saturated).
    pub saturate_adu: Option<f32>,
    /// MAG_ZEROPOINT.
    pub mag_zeropoint: f32,
    /// S/N a faint trail needs to be found by the line-filter search after the normal
    /// extraction (`trails.rs`); 0 turns the search off.
    pub trail_snr: f32,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            thresh_sigma: 1.5,
            min_area_px: 5,
            deblend_nthresh: 32,
            deblend_mincont: 0.005,
            filter: Some(Kernel::default_3x3()),
            back_size_px: 64,
            back_filtersize: 3,
            phot_apertures_px: vec![5.0],
            kron_factor: 2.5,
            min_radius: 3.5,
            gain_e_per_adu: 0.0,
            saturate_adu: None,
            mag_zeropoint: 0.0,
            trail_snr: 0.0,
        }
    }
}

/// Per-pixel noise: one global sigma, or a variance map from the weights.
pub(crate) enum Noise {
    Global { sigma: f32 },
    Map { var: Vec<f32> },
}

impl Noise {
    #[inline]
    pub fn var(&self, p: usize) -> f64 {
        match self {
            Noise::Global { sigma } => (*sigma as f64) * (*sigma as f64),
            Noise::Map { var } => var[p] as f64,
        }
    }
}

/// Everything the measurements read, shared by all objects.
pub(crate) struct Frame<'a> {
    pub img: &'a Image<'a>,
    pub w: usize,
    pub h: usize,
    /// Background-subtracted image; unusable pixels interpolated along their row (0 where a run
    /// is too long).
    pub sub: Vec<f32>,
    /// Filtered background-subtracted image (NaN where unusable pixels were not interpolated).
    pub filt: Vec<f32>,
    /// Unusable pixels (empty when there are none).
    pub bad: Vec<bool>,
    /// Object number (1-based) owning each pixel, 0 for none.
    pub seg: Vec<u32>,
    pub noise: Noise,
    pub mesh: background::Mesh,
    /// Detection threshold above the background (global, or the lowest local one).
    pub thresh: f32,
}

impl Frame<'_> {
    #[inline]
    pub fn is_bad(&self, p: usize) -> bool {
        !self.bad.is_empty() && self.bad[p]
    }
}

/// Extract sources from an image. The catalog is ordered and numbered by the position of each
/// object's last row, then its first column (the order a line-by-line scan completes them);
/// faint trails found by the line-filter search follow, numbered on.
pub fn extract(img: &Image, cfg: &ExtractConfig) -> Catalog {
    let (w, h) = (img.width, img.height);
    let n = w * h;
    let mesh = background::estimate_mesh(img, cfg);

    // Unusable pixels.
    let any_bad =
        img.mask.is_some() || img.weight.is_some() || img.data.iter().any(|v| !v.is_finite());
    let bad: Vec<bool> = if any_bad {
        (0..n).into_par_iter().map(|p| img.is_bad(p)).collect()
    } else {
        Vec::new()
    };

    // Background-subtracted image, rows in parallel.
    let mut sub = vec![0.0f32; n];
    sub.par_chunks_mut(w * 16).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new(), vec![0.0f32; w]),
        |(nodes, d2x, u, row), (c, chunk)| {
            for (r, out) in chunk.chunks_mut(w).enumerate() {
                let y = c * 16 + r;
                mesh.row(y, true, row, nodes, d2x, u);
                let data = &img.data[y * w..(y + 1) * w];
                for x in 0..w {
                    out[x] = data[x] - row[x];
                }
                if any_bad {
                    interpolate_bad_runs(out, &bad[y * w..(y + 1) * w]);
                }
            }
        },
    );

    // Noise model: SExtractor's MAP_WEIGHT scales the weights so that they match the measured
    // background RMS (median over the mesh of rms / sqrt(mean variance)).
    let noise = match img.weight {
        None => Noise::Global {
            sigma: mesh.global_rms,
        },
        Some(wt) => {
            let scale2 = weight_scale(img, &mesh).powi(2);
            let mut var: Vec<f32> = wt
                .par_iter()
                .map(|v| if *v > 0.0 { scale2 / *v } else { f32::NAN })
                .collect();
            var.par_chunks_mut(w)
                .zip(bad.par_chunks(w))
                .for_each(|(row, b)| interpolate_bad_runs(row, b));
            var.par_iter_mut().for_each(|v| {
                if !v.is_finite() {
                    *v = 0.0;
                }
            });
            Noise::Map { var }
        }
    };

    let mut filt = match &cfg.filter {
        Some(k) => detect::convolve(&sub, w, h, k),
        None => sub.clone(),
    };
    if any_bad {
        // Bad pixels that could not be interpolated cannot be detected.
        filt.par_iter_mut()
            .zip(sub.par_iter_mut())
            .for_each(|(f, s)| {
                if s.is_nan() {
                    *f = f32::NAN;
                    *s = 0.0;
                }
            });
    }

    // With a variance map and a filter, thresholds compare the filtered image with the filtered
    // variance (measurements keep the per-pixel variance).
    let det_var = match (&noise, &cfg.filter) {
        (Noise::Map { var }, Some(k)) => Some(detect::detection_variance(var, w, h, k)),
        _ => None,
    };

    // Threshold and label.
    let ts = cfg.thresh_sigma;
    let (comps, thresh) = match &noise {
        Noise::Global { sigma } => {
            let t = ts * sigma;
            (
                detect::label(w, h, cfg.min_area_px.max(1), |p| filt[p] > t),
                t,
            )
        }
        Noise::Map { var } => {
            let var = det_var.as_deref().unwrap_or(var);
            let ts2 = ts * ts;
            let comps = detect::label(w, h, cfg.min_area_px.max(1), |p| {
                let f = filt[p];
                f > 0.0 && f * f > ts2 * var[p]
            });
            (comps, ts * mesh.global_rms)
        }
    };

    // Deblend each detection.
    let pieces: Vec<deblend::Piece> = comps
        .par_iter()
        .flat_map_iter(|c| {
            let t = match &noise {
                Noise::Global { .. } => thresh,
                Noise::Map { var } => c
                    .pixels(w)
                    .iter()
                    .map(|p| ts * det_var.as_deref().unwrap_or(var)[*p as usize].sqrt())
                    .fold(f32::INFINITY, f32::min),
            };
            deblend::deblend(c, &filt, w, t, cfg.deblend_nthresh, cfg.deblend_mincont)
                .into_iter()
                .filter(|p| p.pixels.len() >= cfg.min_area_px.max(1))
        })
        .collect();
    drop(det_var);

    // Order as a scan completes them: by last row, then first column.
    let mut order: Vec<(u32, u32, usize)> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let last = *p.pixels.iter().max().unwrap_or(&0) as usize / w;
            let xmin = p.pixels.iter().map(|q| *q as usize % w).min().unwrap_or(0);
            (last as u32, xmin as u32, i)
        })
        .collect();
    order.sort_unstable();
    let mut seg = vec![0u32; n];
    for (k, (_, _, i)) in order.iter().enumerate() {
        for &p in &pieces[*i].pixels {
            seg[p as usize] = k as u32 + 1;
        }
    }
    let frame = Frame {
        img,
        w,
        h,
        sub,
        filt,
        bad,
        seg,
        noise,
        mesh,
        thresh,
    };
    let mut sources: Vec<Source> = order
        .par_iter()
        .enumerate()
        .map(|(k, (_, _, i))| measure::measure(&frame, cfg, &pieces[*i], k as u32 + 1))
        .collect();
    let trails = trails::find(&frame, cfg, &sources);
    sources.extend(trails);
    Catalog {
        sources,
        apertures_px: cfg.phot_apertures_px.clone(),
        background_level: frame.mesh.global_level,
        background_rms: frame.mesh.global_rms,
        threshold: thresh,
        has_world: false,
    }
}

/// Longest run of bad pixels along a row that detection interpolates over (SExtractor's
/// INTERP_MAXXLAG).
const INTERP_MAX_RUN: usize = 16;

/// Replace runs of bad pixels in a row by linear interpolation between the good pixels on either
/// side (or the one good side), for runs up to [`INTERP_MAX_RUN`]; longer runs become NaN. Bad
/// pixels still count as bad for photometry: this only keeps a masked column from cutting a
/// source in two.
fn interpolate_bad_runs(row: &mut [f32], bad: &[bool]) {
    let w = row.len();
    let mut x = 0;
    while x < w {
        if !bad[x] {
            x += 1;
            continue;
        }
        let a = x;
        while x < w && bad[x] {
            x += 1;
        }
        let b = x; // run a..b
        let left = if a > 0 { Some(row[a - 1]) } else { None };
        let right = if b < w { Some(row[b]) } else { None };
        let fill = |t: usize| -> f32 {
            match (left, right) {
                (Some(l), Some(r)) => l + (r - l) * (t - a + 1) as f32 / (b - a + 1) as f32,
                (Some(l), None) => l,
                (None, Some(r)) => r,
                (None, None) => f32::NAN,
            }
        };
        for (t, v) in row.iter_mut().enumerate().take(b).skip(a) {
            *v = if b - a <= INTERP_MAX_RUN {
                fill(t)
            } else {
                f32::NAN
            };
        }
    }
}

/// Scale factor `s` such that the variance of a pixel is `s^2 / weight`: the median over cells of
/// the measured RMS divided by the typical weight-predicted RMS.
fn weight_scale(img: &Image, mesh: &background::Mesh) -> f32 {
    let Some(wt) = img.weight else { return 1.0 };
    let (w, h) = (img.width, img.height);
    let mut ratios = Vec::new();
    let mut buf = Vec::new();
    for j in 0..mesh.ny {
        for i in 0..mesh.nx {
            buf.clear();
            for y in j * mesh.cell_h..((j + 1) * mesh.cell_h).min(h) {
                for x in i * mesh.cell_w..((i + 1) * mesh.cell_w).min(w) {
                    let v = wt[y * w + x];
                    if v > 0.0 {
                        buf.push(1.0 / v);
                    }
                }
            }
            if buf.len() * 2 < mesh.cell_w * mesh.cell_h {
                continue;
            }
            let mid = buf.len() / 2;
            let (_, med_var, _) = buf.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
            let rms = mesh.rms[j * mesh.nx + i];
            if *med_var > 0.0 && rms > 0.0 {
                ratios.push(rms / med_var.sqrt());
            }
        }
    }
    if ratios.is_empty() {
        return 1.0;
    }
    let mid = ratios.len() / 2;
    let (_, m, _) = ratios.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m
}

pub mod task;
#[cfg(test)]
mod tests;
