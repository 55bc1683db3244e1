//! Multi-threshold deblending (SExtractor's algorithm).
//!
//! The detection is re-thresholded at `nthresh` levels spaced exponentially between the
//! detection threshold and its (filtered) peak, building a tree of connected pieces. Going down
//! the tree, a node whose children include at least two *significant* branches (flux above their
//! own threshold greater than `mincont` x the total flux) is split: those branches become the
//! cores of separate objects. The remaining pixels of the detection are then given to the core
//! whose Gaussian model (from its second moments) predicts the most flux at that pixel.

use super::detect::Component;

/// An object after deblending: its pixel indices and whether it came out of a split.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub pixels: Vec<u32>,
    pub blended: bool,
}

/// Safety cap on the number of pieces at one level (SExtractor's DEBLEND_NSONMAX).
const MAX_NODES_PER_LEVEL: usize = 1024;

struct Node {
    level: usize,
    /// Local pixel indices (filled for the cores only).
    pixels: Vec<u32>,
    npix: usize,
    /// A pixel of the node (its union-find root when the level was taken).
    rep: u32,
    flux: f64,
    thresh: f32,
    children: Vec<usize>,
    ok: bool,
}

/// Deblend one detection. `filt` is the filtered image, `thresh` the detection threshold of the
/// component (the lowest local threshold when thresholds vary).
pub(crate) fn deblend(
    comp: &Component,
    filt: &[f32],
    width: usize,
    thresh: f32,
    nthresh: usize,
    mincont: f32,
) -> Vec<Piece> {
    let whole = || {
        vec![Piece {
            pixels: comp.pixels(width),
            blended: false,
        }]
    };
    if nthresh < 2 || mincont >= 1.0 || comp.npix < 3 {
        return whole();
    }
    // Local bounding box.
    let (mut xmin, mut xmax) = (u32::MAX, 0u32);
    for r in &comp.runs {
        xmin = xmin.min(r.x0);
        xmax = xmax.max(r.x1);
    }
    let ymin = comp.runs[0].y;
    let ymax = comp.runs[comp.runs.len() - 1].y + 1;
    let bw = (xmax - xmin) as usize;
    let bh = (ymax - ymin) as usize;
    let to_global = |l: u32| -> u32 {
        let (lx, ly) = (l as usize % bw, l as usize / bw);
        ((ly + ymin as usize) * width + lx + xmin as usize) as u32
    };
    let mut val = vec![f32::NEG_INFINITY; bw * bh];
    let mut root_pixels = Vec::with_capacity(comp.npix);
    let mut peak = f32::NEG_INFINITY;
    let mut flux = 0.0f64;
    for r in &comp.runs {
        let ly = (r.y - ymin) as usize;
        for x in r.x0..r.x1 {
            let l = ly * bw + (x - xmin) as usize;
            let v = filt[r.y as usize * width + x as usize];
            val[l] = v;
            root_pixels.push(l as u32);
            peak = peak.max(v);
            flux += v as f64;
        }
    }
    // A single local maximum cannot split at any threshold.
    let is_local_max = |l: usize| {
        let (lx, ly) = ((l % bw) as i64, (l / bw) as i64);
        let v = val[l];
        for dy in -1..=1i64 {
            for dx in -1..=1i64 {
                if dx == 0 && dy == 0 {
                    continue;
                }
                let (x, y) = (lx + dx, ly + dy);
                if x >= 0
                    && y >= 0
                    && (x as usize) < bw
                    && (y as usize) < bh
                    && val[y as usize * bw + x as usize] > v
                {
                    return false;
                }
            }
        }
        true
    };
    if root_pixels
        .iter()
        .filter(|l| is_local_max(**l as usize))
        .take(2)
        .count()
        < 2
    {
        return whole();
    }
    if thresh.is_nan() || thresh <= 0.0 || peak.is_nan() || peak <= thresh {
        return whole();
    }
    let value0 = mincont as f64 * flux;

    // Build the tree with one union-find sweep over the pixels in decreasing order (a max-tree):
    // after adding every pixel above t_k, the union-find roots are the pieces of level k.
    let thresholds: Vec<f32> = (0..nthresh)
        .map(|k| thresh * (peak / thresh).powf(k as f32 / nthresh as f32))
        .collect();
    let mut order = root_pixels.clone();
    order.sort_unstable_by(|a, b| val[*b as usize].total_cmp(&val[*a as usize]));
    let mut parent = vec![u32::MAX; bw * bh]; // u32::MAX: not added yet
    let mut rflux = vec![0.0f64; bw * bh];
    let mut rnpix = vec![0u32; bw * bh];
    let mut roots: Vec<u32> = Vec::new();
    let mut node_of_root = vec![u32::MAX; bw * bh];
    let mut nodes: Vec<Node> = Vec::new();
    let mut level_nodes: Vec<Vec<usize>> = vec![Vec::new(); nthresh];
    let mut next = 0usize;
    fn find(parent: &mut [u32], mut i: u32) -> u32 {
        while parent[i as usize] != i {
            let p = parent[i as usize];
            parent[i as usize] = parent[p as usize];
            i = p;
        }
        i
    }
    let mut overflow = false;
    for k in (0..nthresh).rev() {
        let t = thresholds[k];
        // Add every pixel above t (level 0 takes them all: they are the detection).
        while next < order.len() && (k == 0 || val[order[next] as usize] > t) {
            let l = order[next];
            next += 1;
            parent[l as usize] = l;
            rflux[l as usize] = val[l as usize] as f64;
            rnpix[l as usize] = 1;
            roots.push(l);
            let (lx, ly) = ((l as usize % bw) as i64, (l as usize / bw) as i64);
            for dy in -1..=1i64 {
                let y = ly + dy;
                if y < 0 || y >= bh as i64 {
                    continue;
                }
                for dx in -1..=1i64 {
                    let x = lx + dx;
                    if (dx == 0 && dy == 0) || x < 0 || x >= bw as i64 {
                        continue;
                    }
                    let q = (y as usize * bw + x as usize) as u32;
                    if parent[q as usize] == u32::MAX {
                        continue;
                    }
                    let (ra, rb) = (find(&mut parent, l), find(&mut parent, q));
                    if ra != rb {
                        let (big, small) = if rnpix[ra as usize] >= rnpix[rb as usize] {
                            (ra, rb)
                        } else {
                            (rb, ra)
                        };
                        parent[small as usize] = big;
                        rflux[big as usize] += rflux[small as usize];
                        rnpix[big as usize] += rnpix[small as usize];
                    }
                }
            }
        }
        // Snapshot: the current roots are the nodes of level k.
        roots.retain(|r| parent[*r as usize] == *r);
        if roots.len() > MAX_NODES_PER_LEVEL {
            overflow = true;
            break;
        }
        for &r in &roots {
            let id = nodes.len();
            nodes.push(Node {
                level: k,
                pixels: Vec::new(),
                npix: rnpix[r as usize] as usize,
                rep: r,
                flux: rflux[r as usize],
                thresh: t,
                children: Vec::new(),
                ok: true,
            });
            level_nodes[k].push(id);
        }
        // Link the nodes of level k+1 to the level-k node containing them.
        if k + 1 < nthresh {
            for &id in &level_nodes[k] {
                node_of_root[nodes[id].rep as usize] = id as u32;
            }
            for &child in &level_nodes[k + 1] {
                let r = find(&mut parent, nodes[child].rep);
                let pid = node_of_root[r as usize] as usize;
                nodes[pid].children.push(child);
            }
        }
    }
    if overflow || level_nodes[0].len() != 1 {
        return whole();
    }

    // Cut the branches, deepest levels first.
    let significant = |n: &Node| n.flux - n.thresh as f64 * n.npix as f64 > value0;
    let mut cores: Vec<usize> = Vec::new();
    let root = level_nodes[0][0];
    for k in (0..nthresh - 1).rev() {
        for &i in &level_nodes[k] {
            let children = nodes[i].children.clone();
            let mut m = 0;
            let mut ok = nodes[i].ok;
            for &j in &children {
                if significant(&nodes[j]) {
                    m += 1;
                }
                ok &= nodes[j].ok;
            }
            nodes[i].ok = ok;
            if m > 1 {
                for &j in &children {
                    if nodes[j].ok && significant(&nodes[j]) {
                        cores.push(j);
                    }
                }
                nodes[i].ok = false;
            }
        }
    }
    if nodes[root].ok || cores.len() < 2 {
        return whole();
    }
    debug_assert!(cores.iter().all(|c| nodes[*c].level > 0));
    // Pixels of each core: the piece above its threshold around its representative.
    let mut seen = vec![false; bw * bh];
    let mut stack: Vec<u32> = Vec::new();
    for &c in &cores {
        let t = nodes[c].thresh;
        let mut pix = Vec::with_capacity(nodes[c].npix);
        stack.push(nodes[c].rep);
        seen[nodes[c].rep as usize] = true;
        while let Some(q) = stack.pop() {
            pix.push(q);
            let (qx, qy) = ((q as usize % bw) as i64, (q as usize / bw) as i64);
            for dy in -1..=1i64 {
                let y = qy + dy;
                if y < 0 || y >= bh as i64 {
                    continue;
                }
                for dx in -1..=1i64 {
                    let x = qx + dx;
                    if x < 0 || x >= bw as i64 {
                        continue;
                    }
                    let n = y as usize * bw + x as usize;
                    if !seen[n] && val[n] > t {
                        seen[n] = true;
                        stack.push(n as u32);
                    }
                }
            }
        }
        nodes[c].pixels = pix;
    }

    // Gaussian models of the cores.
    struct Model {
        mx: f64,
        my: f64,
        cxx: f64,
        cyy: f64,
        cxy: f64,
        abcor: f64,
        amp: f64,
    }
    let models: Vec<Model> = cores
        .iter()
        .map(|&c| {
            let n = &nodes[c];
            let (mut s, mut sx, mut sy, mut sxx, mut syy, mut sxy) =
                (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
            let mut cpeak = f32::NEG_INFINITY;
            for &l in &n.pixels {
                let v = val[l as usize] as f64;
                let (x, y) = ((l as usize % bw) as f64, (l as usize / bw) as f64);
                s += v;
                sx += v * x;
                sy += v * y;
                sxx += v * x * x;
                syy += v * y * y;
                sxy += v * x * y;
                cpeak = cpeak.max(val[l as usize]);
            }
            let (mx, my) = (sx / s, sy / s);
            let mut x2 = sxx / s - mx * mx;
            let mut y2 = syy / s - my * my;
            let xy = sxy / s - mx * my;
            if x2 * y2 - xy * xy < 0.00694 {
                x2 += 0.0833333;
                y2 += 0.0833333;
            }
            let det = x2 * y2 - xy * xy;
            let (cxx, cyy, cxy) = (y2 / det, x2 / det, -2.0 * xy / det);
            let tmp = (0.25 * (x2 - y2).powi(2) + xy * xy).sqrt();
            let a = (0.5 * (x2 + y2) + tmp).max(0.0).sqrt();
            let b = (0.5 * (x2 + y2) - tmp).max(0.0).sqrt();
            // Profile-shape correction: compare the areas above the threshold and above half way
            // to the peak with a Gaussian's.
            let t1 = n.thresh as f64;
            let t2 = 0.5 * (t1 + cpeak as f64);
            let area1 = n
                .pixels
                .iter()
                .filter(|l| val[**l as usize] as f64 > t1)
                .count() as f64;
            let area2 = n
                .pixels
                .iter()
                .filter(|l| val[**l as usize] as f64 > t2)
                .count() as f64;
            let r = t1 / t2;
            let abcor = if r > 0.0 && a * b > 0.0 {
                let darea = area2 - area1;
                ((if darea < 0.0 { darea } else { -1.0 })
                    / (2.0 * std::f64::consts::PI * (if r < 1.0 { r } else { 0.99 }).ln() * a * b))
                    .min(1.0)
            } else {
                1.0
            };
            let abcor = if abcor > 0.0 { abcor } else { 1.0 };
            let d = n.pixels.len() as f64 / (2.0 * std::f64::consts::PI * abcor * a * b).max(1e-12);
            let peak4 = 4.0 * cpeak as f64;
            let amp = if d < 70.0 {
                (t1 * d.exp()).min(peak4)
            } else {
                peak4
            };
            Model {
                mx,
                my,
                cxx,
                cyy,
                cxy,
                abcor,
                amp,
            }
        })
        .collect();

    // Owner of each pixel: its core, or the most probable core.
    let mut owner = vec![u32::MAX; bw * bh];
    for (ci, &c) in cores.iter().enumerate() {
        for &l in &nodes[c].pixels {
            owner[l as usize] = ci as u32;
        }
    }
    let mut out: Vec<Vec<u32>> = cores
        .iter()
        .map(|c| Vec::with_capacity(nodes[*c].pixels.len() * 2))
        .collect();
    for &l in &root_pixels {
        let o = owner[l as usize];
        let ci = if o != u32::MAX {
            o as usize
        } else {
            let (x, y) = ((l as usize % bw) as f64, (l as usize / bw) as f64);
            let mut best = 0usize;
            let mut best_p = f64::NEG_INFINITY;
            let mut best_d = f64::INFINITY;
            let mut nearest = 0usize;
            for (i, m) in models.iter().enumerate() {
                let (dx, dy) = (x - m.mx, y - m.my);
                let dist = 0.5 * (m.cxx * dx * dx + m.cyy * dy * dy + m.cxy * dx * dy) / m.abcor;
                let p = if dist < 70.0 {
                    m.amp * (-dist).exp()
                } else {
                    0.0
                };
                if p > best_p {
                    best_p = p;
                    best = i;
                }
                if dist < best_d {
                    best_d = dist;
                    nearest = i;
                }
            }
            if best_p > 1e-31 {
                best
            } else {
                nearest
            }
        };
        out[ci].push(to_global(l));
    }
    out.into_iter()
        .map(|mut p| {
            p.sort_unstable();
            Piece {
                pixels: p,
                blended: true,
            }
        })
        .collect()
}
