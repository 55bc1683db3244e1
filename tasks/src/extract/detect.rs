//! Detection: matched filtering, thresholding and 8-connected labeling by runs.
//!
//! Rows are thresholded into runs in parallel; runs of consecutive rows are joined with a
//! union-find (two-pointer sweep, 8-connectivity); each component keeps its runs in row order.

use super::Kernel;
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 16;

/// The variance a filtered pixel's threshold is compared with: the variance map averaged with
/// the filter's weights, as SExtractor filters its detection weight map with the detection
/// filter. The weights are the kernel's absolute values normalised to unit sum over the pixels
/// inside the image, so a constant variance stays what it is (as with one global sigma) and a
/// kernel with negative lobes cannot make a variance negative.
///
/// Why it matters: the calibrated weights include the source's own photon noise, so the
/// unfiltered variance peaks on a faint source exactly where its filtered signal peaks, and a
/// per-pixel test against it loses sources near the threshold that SExtractor keeps.
pub(crate) fn detection_variance(var: &[f32], w: usize, h: usize, kernel: &Kernel) -> Vec<f32> {
    let total: f32 = kernel.data.iter().map(|k| k.abs()).sum();
    if total <= 0.0 || !total.is_finite() {
        return var.to_vec();
    }
    let weights = Kernel {
        width: kernel.width,
        height: kernel.height,
        data: kernel.data.iter().map(|k| k.abs() / total).collect(),
    };
    let mut out = convolve(var, w, h, &weights);
    // Within half a kernel of an edge part of the weights fall outside: divide by the part inside.
    let (cx, cy) = (weights.width / 2, weights.height / 2);
    let inside = |x: usize, y: usize| -> f32 {
        let mut s = 0.0;
        for ky in 0..weights.height {
            let sy = y as i64 + ky as i64 - cy as i64;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for kx in 0..weights.width {
                let sx = x as i64 + kx as i64 - cx as i64;
                if sx >= 0 && sx < w as i64 {
                    s += weights.data[ky * weights.width + kx];
                }
            }
        }
        s
    };
    let mut fix = |x: usize, y: usize| {
        let s = inside(x, y);
        if s > 0.0 {
            out[y * w + x] /= s;
        }
    };
    for y in 0..h {
        if y < cy || y + cy >= h || w <= 2 * cx {
            (0..w).for_each(|x| fix(x, y));
        } else {
            (0..cx).chain(w - cx..w).for_each(|x| fix(x, y));
        }
    }
    out
}

/// Correlate `src` with `kernel` (zero outside the image), rows in parallel.
pub(crate) fn convolve(src: &[f32], w: usize, h: usize, kernel: &Kernel) -> Vec<f32> {
    let mut out = vec![0.0f32; w * h];
    let (kw, kh) = (kernel.width, kernel.height);
    let (cx, cy) = (kw / 2, kh / 2);
    out.par_chunks_mut(w * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (r, orow) in chunk.chunks_mut(w).enumerate() {
                let y = c * ROWS_PER_TASK + r;
                // Touch the row with a write before the `+=` below reads it: a fresh page that
                // is read first is mapped to the kernel's zero page, and the write after it
                // copies the page and flushes the TLB of every CPU running this process, one
                // inter-processor interrupt per page (36% of a two-thread extraction).
                orow.fill(0.0);
                for ky in 0..kh {
                    let sy = y as i64 + ky as i64 - cy as i64;
                    if sy < 0 || sy >= h as i64 {
                        continue;
                    }
                    let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                    for kx in 0..kw {
                        let k = kernel.data[ky * kw + kx];
                        if k == 0.0 {
                            continue;
                        }
                        // out[x] += k * src[x + kx - cx] over the x where the source exists.
                        let off = kx as i64 - cx as i64;
                        let (x0, x1) = if off < 0 {
                            ((-off) as usize, w)
                        } else {
                            (0, w - (off as usize).min(w))
                        };
                        if x0 >= x1 {
                            continue;
                        }
                        let s = &srow[(x0 as i64 + off) as usize..(x1 as i64 + off) as usize];
                        for (o, v) in orow[x0..x1].iter_mut().zip(s) {
                            *o += k * *v;
                        }
                    }
                }
            }
        });
    out
}

/// A horizontal run of detected pixels: row `y`, columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub y: u32,
    pub x0: u32,
    pub x1: u32,
}

/// A connected component: its runs in row-major order.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    pub runs: Vec<Run>,
    pub npix: usize,
}

impl Component {
    /// Pixel indices (`y * width + x`) in row-major order.
    pub fn pixels(&self, width: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.npix);
        for r in &self.runs {
            let base = r.y as usize * width;
            v.extend((r.x0..r.x1).map(|x| (base + x as usize) as u32));
        }
        v
    }
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // Keep the smaller index as root: components then come out in scan order.
        if ra < rb {
            parent[rb as usize] = ra;
        } else {
            parent[ra as usize] = rb;
        }
    }
}

/// Label the pixels where `above(index)` holds into 8-connected components of at least
/// `min_area` pixels, in the order of their first pixel in the scan.
pub(crate) fn label<F>(w: usize, h: usize, min_area: usize, above: F) -> Vec<Component>
where
    F: Fn(usize) -> bool + Sync,
{
    // Runs per block of rows, in parallel.
    let blocks: Vec<Vec<Run>> = (0..h.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|b| {
            let mut runs = Vec::new();
            for y in b * ROWS_PER_TASK..((b + 1) * ROWS_PER_TASK).min(h) {
                let base = y * w;
                let mut x = 0;
                while x < w {
                    if above(base + x) {
                        let x0 = x;
                        while x < w && above(base + x) {
                            x += 1;
                        }
                        runs.push(Run {
                            y: y as u32,
                            x0: x0 as u32,
                            x1: x as u32,
                        });
                    } else {
                        x += 1;
                    }
                }
            }
            runs
        })
        .collect();
    let runs: Vec<Run> = blocks.into_iter().flatten().collect();
    if runs.is_empty() {
        return Vec::new();
    }
    // Start index of each row's runs.
    let mut row_start = vec![0usize; h + 1];
    for r in &runs {
        row_start[r.y as usize + 1] += 1;
    }
    for y in 0..h {
        row_start[y + 1] += row_start[y];
    }
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    for y in 1..h {
        let (mut a, a_end) = (row_start[y - 1], row_start[y]);
        let (mut b, b_end) = (row_start[y], row_start[y + 1]);
        while a < a_end && b < b_end {
            let (ra, rb) = (runs[a], runs[b]);
            // 8-connected: [x0-1, x1] of one overlaps the other.
            if rb.x0 <= ra.x1 && ra.x0 <= rb.x1 {
                union(&mut parent, a as u32, b as u32);
            }
            if ra.x1 < rb.x1 {
                a += 1;
            } else {
                b += 1;
            }
        }
    }
    // Compact ids in order of first run, then bucket runs (keeping row-major order).
    let mut id = vec![u32::MAX; runs.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let mut comp_of_run = vec![0u32; runs.len()];
    for i in 0..runs.len() {
        let r = find(&mut parent, i as u32) as usize;
        if id[r] == u32::MAX {
            id[r] = sizes.len() as u32;
            sizes.push(0);
        }
        let c = id[r];
        comp_of_run[i] = c;
        sizes[c as usize] += (runs[i].x1 - runs[i].x0) as usize;
    }
    let mut comps: Vec<Component> = sizes
        .iter()
        .map(|n| Component {
            runs: Vec::new(),
            npix: *n,
        })
        .collect();
    for (i, r) in runs.iter().enumerate() {
        let c = comp_of_run[i] as usize;
        if comps[c].npix >= min_area {
            comps[c].runs.push(*r);
        }
    }
    comps.retain(|c| c.npix >= min_area);
    comps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(mask: &[&str], min_area: usize) -> Vec<Vec<(u32, u32)>> {
        let h = mask.len();
        let w = mask[0].len();
        let bits: Vec<bool> = mask
            .iter()
            .flat_map(|r| r.bytes().map(|b| b == b'#'))
            .collect();
        label(w, h, min_area, |i| bits[i])
            .into_iter()
            .map(|c| {
                c.pixels(w)
                    .iter()
                    .map(|p| (*p % w as u32, *p / w as u32))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn diagonal_neighbours_connect() {
        let c = lab(&["#...", ".#..", "..#.", "...#"], 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].len(), 4);
    }

    #[test]
    fn separate_blobs_and_min_area() {
        let c = lab(&["##..#", "##..#", ".....", "#...."], 2);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0], vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert_eq!(c[1], vec![(4, 0), (4, 1)]);
    }

    #[test]
    fn u_shape_merges_late() {
        let c = lab(&["#.#", "#.#", "###"], 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].len(), 7);
    }

    #[test]
    fn detection_variance_keeps_a_constant_and_spreads_a_peak_with_the_filter() {
        let (w, h) = (7, 6);
        let k = Kernel::default_3x3();
        // Constant stays constant, at the edges and corners too.
        let flat = detection_variance(&vec![4.0; w * h], w, h, &k);
        assert!(flat.iter().all(|v| (v - 4.0).abs() < 1e-6), "{flat:?}");
        // A bump of 16 on one pixel is shared out with the kernel's weights (4, 2, 1 of 16).
        let mut var = vec![1.0; w * h];
        var[3 * w + 3] = 17.0;
        let d = detection_variance(&var, w, h, &k);
        assert!((d[3 * w + 3] - 5.0).abs() < 1e-5, "{}", d[3 * w + 3]);
        assert!((d[3 * w + 4] - 3.0).abs() < 1e-5, "{}", d[3 * w + 4]);
        assert!((d[2 * w + 2] - 2.0).abs() < 1e-5, "{}", d[2 * w + 2]);
        assert!((d[w + 1] - 1.0).abs() < 1e-6, "{}", d[w + 1]);
        // Negative lobes weigh by their size: no variance turns negative.
        let hat = Kernel {
            width: 3,
            height: 1,
            data: vec![-1.0, 3.0, -1.0],
        };
        let d = detection_variance(&var, w, h, &hat);
        assert!(d.iter().all(|v| *v > 0.0), "{d:?}");
    }

    #[test]
    fn convolution_with_zero_padding() {
        let k = Kernel {
            width: 3,
            height: 3,
            data: vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        };
        // Correlation with a kernel whose only tap is on the left picks the left neighbour.
        let src = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(convolve(&src, 3, 2, &k), vec![0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
    }
}
