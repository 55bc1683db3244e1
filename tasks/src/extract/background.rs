//! Background and background-RMS maps, SExtractor's way: per mesh cell, a clipped histogram mode
//! estimate; bad cells replaced by their nearest good neighbours; the mesh median-filtered; and a
//! natural bicubic spline through the cell centres back to full resolution.

use super::{ExtractConfig, Image};
use rayon::prelude::*;

/// Fewer valid pixels than this fraction of a cell makes the cell `bad` (interpolated).
const MIN_GOOD_FRACTION: f64 = 0.5;
/// Histogram half-range, in units of the clipped standard deviation.
const QUANT_NSIGMA: f64 = 5.0;
/// Histogram bins per standard deviation of sample noise (SExtractor's QUANTIF_AMIN).
const QUANT_AMIN: f64 = 4.0;
const QUANT_MAX_LEVELS: usize = 4096;

/// The background model of an image: the filtered mesh and full-resolution maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    pub width: usize,
    pub height: usize,
    /// Cell size in pixels (the last column and row of cells may be smaller).
    pub cell_w: usize,
    pub cell_h: usize,
    /// Number of cells along x and y.
    pub nx: usize,
    pub ny: usize,
    /// Per-cell background level and RMS after bad-cell replacement and median filtering.
    pub mesh_level: Vec<f32>,
    pub mesh_rms: Vec<f32>,
    /// Medians of the mesh: SExtractor's `backmean` and `backsig` (the global RMS sets the
    /// detection threshold when there is no weight map).
    pub global_level: f32,
    pub global_rms: f32,
    /// Full-resolution maps (bicubic spline through the cell centres).
    pub level: Vec<f32>,
    pub rms: Vec<f32>,
}

/// The filtered mesh and the spline coefficients needed to interpolate it.
#[derive(Debug, Clone)]
pub(crate) struct Mesh {
    pub width: usize,
    pub height: usize,
    pub cell_w: usize,
    pub cell_h: usize,
    pub nx: usize,
    pub ny: usize,
    pub level: Vec<f32>,
    pub rms: Vec<f32>,
    pub global_level: f32,
    pub global_rms: f32,
    /// Second derivatives along y (divided by 6, as the evaluation expects) of level and rms.
    d2y_level: Vec<f32>,
    d2y_rms: Vec<f32>,
}

/// Estimate the background of `img` (full-resolution level and RMS maps included).
pub fn background(img: &Image, cfg: &ExtractConfig) -> Background {
    let mesh = estimate_mesh(img, cfg);
    let n = img.width * img.height;
    let mut level = vec![0.0f32; n];
    let mut rms = vec![0.0f32; n];
    mesh.fill_rows(&mut level, true);
    mesh.fill_rows(&mut rms, false);
    Background {
        width: mesh.width,
        height: mesh.height,
        cell_w: mesh.cell_w,
        cell_h: mesh.cell_h,
        nx: mesh.nx,
        ny: mesh.ny,
        mesh_level: mesh.level,
        mesh_rms: mesh.rms,
        global_level: mesh.global_level,
        global_rms: mesh.global_rms,
        level,
        rms,
    }
}

/// Robust statistics of one cell's valid pixels: `(mode, sigma)`, or `None` for a bad cell.
fn cell_stats(
    buf: &[f32],
    cell_area: usize,
    hist: &mut Vec<u32>,
    scratch: &mut Vec<u64>,
) -> Option<(f32, f32)> {
    let npix = buf.len();
    if (npix as f64) < cell_area as f64 * MIN_GOOD_FRACTION || npix == 0 {
        return None;
    }
    // Mean and sigma, then once more within +-2 sigma. Sums are taken relative to the first
    // value (exact in f32 for a cell's dynamic range) in lanes the compiler can vectorise.
    let origin = buf[0];
    let (s, s2) = lane_sums_all(buf, origin);
    let mean = s / npix as f64;
    let sig = (s2 / npix as f64 - mean * mean).max(0.0).sqrt();
    // (relative to `origin`, like `mean` here)
    let (lcut, hcut) = ((mean - 2.0 * sig) as f32, (mean + 2.0 * sig) as f32);
    let (s, s2, n) = lane_sums(buf, origin, lcut, hcut);
    let mean0 = mean + origin as f64;
    if n == 0 {
        return Some((mean0 as f32, 0.0));
    }
    let mean = s / n as f64;
    let sigma = (s2 / n as f64 - mean * mean).max(0.0).sqrt();
    let mean = mean + origin as f64;
    let step = (2.0 / std::f64::consts::PI).sqrt() * QUANT_NSIGMA / QUANT_AMIN;
    let nlevels = ((step * n as f64 + 1.0) as usize).min(QUANT_MAX_LEVELS);
    let qscale = if sigma > 0.0 {
        2.0 * QUANT_NSIGMA * sigma / nlevels as f64
    } else {
        1.0
    };
    let qzero = mean - QUANT_NSIGMA * sigma;
    hist.clear();
    hist.resize(nlevels, 0);
    let inv_q = (1.0 / qscale) as f32;
    let cste = (0.499999 - qzero / qscale) as f32;
    for v in buf {
        // Bin = the value truncated toward zero, as the bins are defined: bin 0 takes (-1, 1).
        let b = *v * inv_q + cste;
        if b > -1.0 {
            if let Some(c) = hist.get_mut(b as usize) {
                *c += 1;
            }
        }
    }
    let (mode, s) = histogram_mode(hist, mean, qzero, qscale, scratch);
    Some((mode as f32, s as f32))
}

/// Sum and sum of squares of `v - origin` over all values.
fn lane_sums_all(buf: &[f32], origin: f32) -> (f64, f64) {
    const L: usize = 8;
    let (mut ts, mut ts2) = (0.0f64, 0.0f64);
    for block in buf.chunks(1024) {
        let (mut s, mut s2) = ([0.0f32; L], [0.0f32; L]);
        let mut chunks = block.chunks_exact(L);
        for c in &mut chunks {
            for k in 0..L {
                let d = c[k] - origin;
                s[k] += d;
                s2[k] += d * d;
            }
        }
        for v in chunks.remainder() {
            let d = *v - origin;
            ts += d as f64;
            ts2 += (d * d) as f64;
        }
        ts += s.iter().map(|x| *x as f64).sum::<f64>();
        ts2 += s2.iter().map(|x| *x as f64).sum::<f64>();
    }
    (ts, ts2)
}

/// Sum, sum of squares and count of `v - origin` over the values with `lo <= v - origin <= hi`.
fn lane_sums(buf: &[f32], origin: f32, lo: f32, hi: f32) -> (f64, f64, usize) {
    const L: usize = 8;
    let (mut s, mut s2, mut n) = ([0.0f32; L], [0.0f32; L], [0u32; L]);
    let (mut ts, mut ts2, mut tn) = (0.0f64, 0.0f64, 0usize);
    // f32 lanes flushed to f64 every 1024 values keep the rounding negligible.
    for block in buf.chunks(1024) {
        let mut chunks = block.chunks_exact(L);
        for c in &mut chunks {
            for k in 0..L {
                let d = c[k] - origin;
                let keep = d >= lo && d <= hi;
                let d = if keep { d } else { 0.0 };
                s[k] += d;
                s2[k] += d * d;
                n[k] += keep as u32;
            }
        }
        for v in chunks.remainder() {
            let d = *v - origin;
            if d >= lo && d <= hi {
                ts += d as f64;
                ts2 += (d * d) as f64;
                tn += 1;
            }
        }
        for k in 0..L {
            ts += s[k] as f64;
            ts2 += s2[k] as f64;
            tn += n[k] as usize;
            s[k] = 0.0;
            s2[k] = 0.0;
            n[k] = 0;
        }
    }
    (ts, ts2, tn)
}

/// Iterative 3-sigma clipping around the median on a histogram; returns `(mode, sigma)` in data
/// units, mode = 2.5 median - 1.5 mean unless the distribution is too skewed
/// (|mean - median| / sigma >= 0.3), where the median is used. Bin `i` holds values around
/// `qzero + i qscale`; prefix sums make each clipping iteration O(log bins).
fn histogram_mode(
    hist: &[u32],
    mean0: f64,
    qzero: f64,
    qscale: f64,
    scratch: &mut Vec<u64>,
) -> (f64, f64) {
    let nlevels = hist.len();
    // Prefix sums of counts, counts x bin and counts x bin^2 (every element is written), in
    // exact integers (bins and counts are far below 2^21, so nothing overflows).
    scratch.resize(3 * (nlevels + 1), 0);
    let (c0, rest) = scratch.split_at_mut(nlevels + 1);
    let (c1, c2) = rest.split_at_mut(nlevels + 1);
    c0[0] = 0;
    c1[0] = 0;
    c2[0] = 0;
    let (mut a0, mut a1, mut a2) = (0u64, 0u64, 0u64);
    for ((((o0, o1), o2), h), x) in c0[1..]
        .iter_mut()
        .zip(c1[1..].iter_mut())
        .zip(c2[1..].iter_mut())
        .zip(hist)
        .zip(0u64..)
    {
        let hx = *h as u64 * x;
        a0 += *h as u64;
        a1 += hx;
        a2 += hx * x;
        *o0 = a0;
        *o1 = a1;
        *o2 = a2;
    }
    let (c0, c1, c2) = (&*c0, &*c1, &*c2);
    let top = nlevels as i64 - 1;
    let (mut lcut, mut hcut) = (0i64, top);
    let mut sig = 10.0 * top as f64;
    let mut sig1 = 1.0f64;
    let mut mea = (mean0 - qzero) / qscale;
    let mut med = mea;
    let mut iter = 0;
    while iter < 100 && sig >= 0.1 && (sig / sig1 - 1.0).abs() > 1e-4 {
        iter += 1;
        sig1 = sig;
        let (l, h) = (lcut as usize, hcut as usize + 1);
        let sum = (c0[h] - c0[l]) as f64;
        if sum > 0.0 {
            mea = (c1[h] - c1[l]) as f64 / sum;
            sig = (c2[h] - c2[l]) as f64 / sum - mea * mea;
            // Interpolated median: the bin where the cumulative count crosses half.
            let target = c0[l] as f64 + 0.5 * sum;
            let m = c0[l..=h].partition_point(|c| *c as f64 <= target) + l - 1;
            let m = m.min(h - 1);
            let hm = hist[m] as f64;
            med = m as f64 - 0.5
                + if hm > 0.0 {
                    (target - c0[m] as f64) / hm
                } else {
                    0.5
                };
        } else {
            mea = 0.0;
            sig = 0.0;
            med = 0.0;
        }
        sig = if sig > 0.0 { sig.sqrt() } else { 0.0 };
        let lo = med - 3.0 * sig;
        lcut = if lo > 0.0 { (lo + 0.5) as i64 } else { 0 };
        let hi = med + 3.0 * sig;
        hcut = if hi < top as f64 {
            (hi + 0.5).max(0.0) as i64
        } else {
            top
        };
        if hcut < lcut {
            break;
        }
    }
    let mode = if sig > 0.0 {
        if ((mea - med) / sig).abs() < 0.3 {
            qzero + (2.5 * med - 1.5 * mea) * qscale
        } else {
            qzero + med * qscale
        }
    } else {
        qzero + mea * qscale
    };
    (mode, sig * qscale)
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    let mid = n / 2;
    let (lo, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        0.5 * (m + lo.iter().copied().fold(f32::NEG_INFINITY, f32::max))
    }
}

/// Natural cubic spline second derivatives (divided by 6) of `y` at unit spacing, written with
/// stride `stride` starting at `out[0]`.
fn spline_d2(y: &[f32], out: &mut [f32], stride: usize, u: &mut Vec<f32>) {
    let n = y.len();
    if n < 3 {
        for k in 0..n {
            out[k * stride] = 0.0;
        }
        return;
    }
    u.clear();
    u.resize(n, 0.0);
    out[0] = 0.0;
    for i in 1..n - 1 {
        let t = -1.0 / (out[(i - 1) * stride] + 4.0);
        out[i * stride] = t;
        u[i] = t * (u[i - 1] - 6.0 * (y[i + 1] + y[i - 1] - 2.0 * y[i]));
    }
    out[(n - 1) * stride] = 0.0;
    for i in (1..n - 1).rev() {
        out[i * stride] = out[i * stride] * out[(i + 1) * stride] + u[i];
    }
    for i in 0..n {
        out[i * stride] /= 6.0;
    }
}

/// Evaluate the spline segment between `lo` and `hi` (second derivatives/6 `dlo`, `dhi`) at `t`.
#[inline]
fn spline_eval(lo: f32, hi: f32, dlo: f32, dhi: f32, t: f32) -> f32 {
    let c = 1.0 - t;
    c * (lo + (c * c - 1.0) * dlo) + t * (hi + (t * t - 1.0) * dhi)
}

/// Segment index and offset of pixel coordinate `p` on a node grid of `n` nodes spaced `cell`.
#[inline]
fn segment(p: usize, cell: usize, n: usize) -> (usize, f32) {
    let u = (p as f32 + 0.5) / cell as f32 - 0.5;
    if n < 2 {
        return (0, 0.0);
    }
    let j = (u.floor() as i64).clamp(0, n as i64 - 2) as usize;
    (j, u - j as f32)
}

pub(crate) fn estimate_mesh(img: &Image, cfg: &ExtractConfig) -> Mesh {
    let (w, h) = (img.width, img.height);
    let cw = cfg.back_size_px.max(1).min(w.max(1));
    let ch = cfg.back_size_px.max(1).min(h.max(1));
    let nx = w.div_ceil(cw).max(1);
    let ny = h.div_ceil(ch).max(1);
    // Per-cell statistics, one rayon task per row of cells.
    let stats: Vec<Option<(f32, f32)>> = (0..ny)
        .into_par_iter()
        .flat_map_iter(|j| {
            let mut buf = Vec::with_capacity(cw * ch);
            let mut hist = Vec::new();
            let mut scratch = Vec::new();
            let y0 = j * ch;
            let y1 = ((j + 1) * ch).min(h);
            (0..nx)
                .map(|i| {
                    let x0 = i * cw;
                    let x1 = ((i + 1) * cw).min(w);
                    buf.clear();
                    let plain = img.mask.is_none() && img.weight.is_none();
                    for y in y0..y1 {
                        let row = y * w;
                        let src = &img.data[row + x0..row + x1];
                        if plain && src.iter().all(|v| v.is_finite()) {
                            buf.extend_from_slice(src);
                        } else {
                            buf.extend(
                                (x0..x1)
                                    .filter(|x| !img.is_bad(row + x))
                                    .map(|x| img.data[row + x]),
                            );
                        }
                    }
                    cell_stats(&buf, (x1 - x0) * (y1 - y0), &mut hist, &mut scratch)
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let nb = nx * ny;
    let mut level = vec![0.0f32; nb];
    let mut rms = vec![0.0f32; nb];
    // Bad cells: the mean of the nearest good cells.
    let good: Vec<usize> = (0..nb).filter(|k| stats[*k].is_some()).collect();
    for k in 0..nb {
        if let Some((m, s)) = stats[k] {
            level[k] = m;
            rms[k] = s;
        } else if good.is_empty() {
            level[k] = 0.0;
            rms[k] = 1.0;
        } else {
            let (px, py) = ((k % nx) as i64, (k / nx) as i64);
            let d2 = |g: usize| {
                let (gx, gy) = ((g % nx) as i64, (g / nx) as i64);
                (gx - px).pow(2) + (gy - py).pow(2)
            };
            let dmin = good.iter().map(|g| d2(*g)).min().unwrap_or(0);
            let near: Vec<usize> = good.iter().copied().filter(|g| d2(*g) == dmin).collect();
            level[k] = near
                .iter()
                .map(|g| stats[*g].map_or(0.0, |s| s.0))
                .sum::<f32>()
                / near.len() as f32;
            rms[k] = near
                .iter()
                .map(|g| stats[*g].map_or(0.0, |s| s.1))
                .sum::<f32>()
                / near.len() as f32;
        }
    }
    // Median filter, window shrunk symmetrically at the edges.
    let (fx, fy) = (cfg.back_filtersize / 2, cfg.back_filtersize / 2);
    if cfg.back_filtersize > 1 {
        let mut l2 = level.clone();
        let mut r2 = rms.clone();
        let mut bl = Vec::new();
        let mut br = Vec::new();
        for py in 0..ny {
            let hy = fy.min(py).min(ny - 1 - py);
            for px in 0..nx {
                let hx = fx.min(px).min(nx - 1 - px);
                bl.clear();
                br.clear();
                for y in py - hy..=py + hy {
                    for x in px - hx..=px + hx {
                        bl.push(level[y * nx + x]);
                        br.push(rms[y * nx + x]);
                    }
                }
                l2[py * nx + px] = median(&mut bl);
                r2[py * nx + px] = median(&mut br);
            }
        }
        level = l2;
        rms = r2;
    }
    let global_level = median(&mut level.clone());
    let mut global_rms = median(&mut rms.clone());
    if global_rms <= 0.0 {
        let mut pos: Vec<f32> = rms.iter().copied().filter(|v| *v > 0.0).collect();
        global_rms = if pos.is_empty() {
            1.0
        } else {
            median(&mut pos)
        };
    }
    // Spline second derivatives along y for each column of cells.
    let mut d2y_level = vec![0.0f32; nb];
    let mut d2y_rms = vec![0.0f32; nb];
    let mut col = vec![0.0f32; ny];
    let mut u = Vec::new();
    for i in 0..nx {
        for j in 0..ny {
            col[j] = level[j * nx + i];
        }
        spline_d2(&col, &mut d2y_level[i..], nx, &mut u);
        for j in 0..ny {
            col[j] = rms[j * nx + i];
        }
        spline_d2(&col, &mut d2y_rms[i..], nx, &mut u);
    }
    Mesh {
        width: w,
        height: h,
        cell_w: cw,
        cell_h: ch,
        nx,
        ny,
        level,
        rms,
        global_level,
        global_rms,
        d2y_level,
        d2y_rms,
    }
}

impl Mesh {
    /// Interpolate one full row `y` of the level (or rms) map into `out` (`width` long).
    pub fn row(
        &self,
        y: usize,
        level: bool,
        out: &mut [f32],
        nodes: &mut Vec<f32>,
        d2x: &mut Vec<f32>,
        u: &mut Vec<f32>,
    ) {
        let (map, d2y) = if level {
            (&self.level, &self.d2y_level)
        } else {
            (&self.rms, &self.d2y_rms)
        };
        let nx = self.nx;
        nodes.clear();
        if self.ny > 1 {
            let (j, t) = segment(y, self.cell_h, self.ny);
            for i in 0..nx {
                let (a, b) = (j * nx + i, (j + 1) * nx + i);
                nodes.push(spline_eval(map[a], map[b], d2y[a], d2y[b], t));
            }
        } else {
            nodes.extend_from_slice(&map[..nx]);
        }
        if nx < 2 {
            out.fill(nodes[0]);
            return;
        }
        d2x.clear();
        d2x.resize(nx, 0.0);
        spline_d2(nodes, d2x, 1, u);
        let cw = self.cell_w;
        let mut x = 0usize;
        // Walk the segments: pixels whose coordinate falls between nodes j and j+1 (the first and
        // last segments extend to the image edges).
        for j in 0..nx - 1 {
            let x_end = if j + 2 == nx {
                self.width
            } else {
                ((j + 1) * cw + cw / 2).min(self.width)
            };
            let (lo, hi, dlo, dhi) = (nodes[j], nodes[j + 1], d2x[j], d2x[j + 1]);
            let inv = 1.0 / cw as f32;
            let t0 = (x as f32 + 0.5) * inv - 0.5 - j as f32;
            for (k, o) in out[x..x_end.max(x)].iter_mut().enumerate() {
                *o = spline_eval(lo, hi, dlo, dhi, t0 + k as f32 * inv);
            }
            x = x_end.max(x);
        }
    }

    /// Fill a full-resolution map (level or rms), rows in parallel.
    pub fn fill_rows(&self, out: &mut [f32], level: bool) {
        let w = self.width;
        out.par_chunks_mut(w * 16).enumerate().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(nodes, d2x, u), (c, chunk)| {
                for (r, row) in chunk.chunks_mut(w).enumerate() {
                    self.row(c * 16 + r, level, row, nodes, d2x, u);
                }
            },
        );
    }

    /// Bilinear background level at a pixel (SExtractor's `back()`, for the BACKGROUND column).
    pub fn level_at(&self, x: f64, y: f64) -> f32 {
        let (xi, yi) = ((x + 0.5).max(0.0) as usize, (y + 0.5).max(0.0) as usize);
        let (i, tx) = segment(xi.min(self.width.saturating_sub(1)), self.cell_w, self.nx);
        let (j, ty) = segment(yi.min(self.height.saturating_sub(1)), self.cell_h, self.ny);
        let nx = self.nx;
        let g = |a: usize, b: usize| self.level[b.min(self.ny - 1) * nx + a.min(nx - 1)];
        let (b00, b10, b01, b11) = (g(i, j), g(i + 1, j), g(i, j + 1), g(i + 1, j + 1));
        let (tx, ty) = (
            if self.nx < 2 { 0.0 } else { tx },
            if self.ny < 2 { 0.0 } else { ty },
        );
        (1.0 - ty) * ((1.0 - tx) * b00 + tx * b10) + ty * ((1.0 - tx) * b01 + tx * b11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_mode_of_a_flat_histogram_is_its_centre() {
        let hist = vec![10u32; 101];
        let (mode, _) = histogram_mode(&hist, 50.0, 0.0, 1.0, &mut Vec::new());
        assert!((mode - 50.0).abs() < 1.0, "{mode}");
    }

    #[test]
    fn spline_through_a_line_is_the_line() {
        let y = [1.0f32, 3.0, 5.0, 7.0];
        let mut d = [0.0f32; 4];
        spline_d2(&y, &mut d, 1, &mut Vec::new());
        assert!(d.iter().all(|v| v.abs() < 1e-6));
        assert!((spline_eval(y[1], y[2], d[1], d[2], 0.25) - 3.5).abs() < 1e-6);
        // Linear extrapolation past the ends.
        assert!((spline_eval(y[0], y[1], d[0], d[1], -0.5) - 0.0).abs() < 1e-6);
    }
}
