//! Pattern matching of detected sources to reference stars with triangles (Groth 1986; Valdes et
//! al. 1995): triangles of each star and pairs of its nearest neighbours are described by the
//! ratios of their sides (b/a, c/a with a >= b >= c), which do not change under translation,
//! rotation, scaling or a mirror flip. Reference triangles go into a k-d tree of invariants; each
//! source triangle that finds a reference triangle of the same shape and the expected size gives
//! a candidate similarity transform (either parity), which is checked by how many sources it maps
//! onto reference stars, refined to an affine transform and scored again. So the header's
//! pointing may be off by any amount within the searched area, and its rotation and parity may
//! be unknown; sources without a reference (asteroids, artifacts) and references without a
//! source only cost votes.
//!
//! Both sets are in pixels: sources on the image, references on the tangent plane divided by
//! the expected pixel scale, with x toward the west (decreasing RA), as on an image with north
//! up and east left.

use super::kdtree::KdTree;

/// `p -> m . p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [[f64; 2]; 2],
    pub t: [f64; 2],
}

impl Affine {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.m[0][0] * p[0] + self.m[0][1] * p[1] + self.t[0],
            self.m[1][0] * p[0] + self.m[1][1] * p[1] + self.t[1],
        ]
    }

    pub fn det(&self) -> f64 {
        self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0]
    }

    pub fn inverse(&self) -> Option<Affine> {
        let d = self.det();
        if !d.is_finite() || d == 0.0 {
            return None;
        }
        let m = [
            [self.m[1][1] / d, -self.m[0][1] / d],
            [-self.m[1][0] / d, self.m[0][0] / d],
        ];
        let t = [
            -(m[0][0] * self.t[0] + m[0][1] * self.t[1]),
            -(m[1][0] * self.t[0] + m[1][1] * self.t[1]),
        ];
        Some(Affine { m, t })
    }

    /// The least-squares similarity (rotation, scale, translation; mirrored when `flip`) taking
    /// `src` onto `dst`.
    pub fn similarity(src: &[[f64; 2]], dst: &[[f64; 2]], flip: bool) -> Affine {
        let n = src.len() as f64;
        let f = if flip { -1.0 } else { 1.0 };
        let c = |pts: &[[f64; 2]], k: usize, s: f64| pts.iter().map(|p| s * p[k]).sum::<f64>() / n;
        let (sx, sy) = (c(src, 0, 1.0), c(src, 1, f));
        let (dx, dy) = (c(dst, 0, 1.0), c(dst, 1, 1.0));
        // As complex numbers: dst = alpha * src' + beta, src' = (x, f y).
        let (mut num_re, mut num_im, mut den) = (0.0, 0.0, 0.0);
        for (s, d) in src.iter().zip(dst) {
            let (x, y) = (s[0] - sx, f * s[1] - sy);
            let (u, v) = (d[0] - dx, d[1] - dy);
            num_re += u * x + v * y;
            num_im += v * x - u * y;
            den += x * x + y * y;
        }
        let (a, b) = if den > 0.0 {
            (num_re / den, num_im / den)
        } else {
            (1.0, 0.0)
        };
        let m = [[a, -b * f], [b, a * f]];
        let t = [dx - (a * sx - b * sy), dy - (b * sx + a * sy)];
        Affine { m, t }
    }

    /// The least-squares affine transform taking `src` onto `dst` (at least 3 points not on a
    /// line).
    pub fn fit(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Affine> {
        if src.len() < 3 {
            return None;
        }
        // Normal equations of [x y 1] . (row of m, t), shared by both output axes.
        let mut ata = [[0.0f64; 3]; 3];
        let mut atb = [[0.0f64; 2]; 3];
        for (s, d) in src.iter().zip(dst) {
            let row = [s[0], s[1], 1.0];
            for i in 0..3 {
                for j in 0..3 {
                    ata[i][j] += row[i] * row[j];
                }
                atb[i][0] += row[i] * d[0];
                atb[i][1] += row[i] * d[1];
            }
        }
        let inv = invert3(&ata)?;
        let sol = |k: usize| -> [f64; 3] {
            let mut out = [0.0; 3];
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..3).map(|j| inv[i][j] * atb[j][k]).sum();
            }
            out
        };
        let (px, py) = (sol(0), sol(1));
        Some(Affine {
            m: [[px[0], px[1]], [py[0], py[1]]],
            t: [px[2], py[2]],
        })
    }
}

fn invert3(a: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c = |i: usize, j: usize| {
        let (i1, i2) = ((i + 1) % 3, (i + 2) % 3);
        let (j1, j2) = ((j + 1) % 3, (j + 2) % 3);
        a[i1][j1] * a[i2][j2] - a[i1][j2] * a[i2][j1]
    };
    let det = a[0][0] * c(0, 0) + a[0][1] * c(0, 1) + a[0][2] * c(0, 2);
    let scale = a.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max);
    if !det.is_finite() || det.abs() <= 1e-12 * scale.powi(3) {
        return None;
    }
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det;
        }
    }
    Some(out)
}

/// A triangle of three stars, vertices ordered by the length of the side opposite them
/// (longest first).
#[derive(Debug, Clone, Copy)]
struct Triangle {
    v: [usize; 3],
    /// (b/a, c/a).
    shape: [f64; 2],
    /// The longest side, pixels.
    a: f64,
    /// Whether v0 -> v1 -> v2 turns counter-clockwise.
    ccw: bool,
}

/// Triangles of each point with pairs of its `k` nearest neighbours. Triangles whose sides
/// differ by less than `tol` of the longest (their vertex order would be ambiguous), that are
/// too thin (c/a < 0.1) or have a side shorter than `min_side` are left out.
fn triangles(pts: &[[f64; 2]], k: usize, tol: f64, min_side: f64) -> Vec<Triangle> {
    let d = |i: usize, j: usize| (pts[i][0] - pts[j][0]).hypot(pts[i][1] - pts[j][1]);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for i in 0..pts.len() {
        let mut near: Vec<usize> = (0..pts.len()).filter(|&j| j != i).collect();
        near.sort_by(|&a, &b| d(i, a).total_cmp(&d(i, b)));
        near.truncate(k);
        for (x, &j) in near.iter().enumerate() {
            for &l in &near[x + 1..] {
                let mut key = [i, j, l];
                key.sort_unstable();
                if !seen.insert(key) {
                    continue;
                }
                // Each vertex with the side opposite it, longest side first.
                let [p, q, r] = key;
                let mut v = [(p, d(q, r)), (q, d(p, r)), (r, d(p, q))];
                v.sort_by(|x, y| y.1.total_cmp(&x.1));
                let (a, b, c) = (v[0].1, v[1].1, v[2].1);
                if c < min_side || c < 0.1 * a || a - b < tol * a || b - c < tol * a {
                    continue;
                }
                let (p0, p1, p2) = (pts[v[0].0], pts[v[1].0], pts[v[2].0]);
                let cross = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0]);
                out.push(Triangle {
                    v: [v[0].0, v[1].0, v[2].0],
                    shape: [b / a, c / a],
                    a,
                    ccw: cross > 0.0,
                });
            }
        }
    }
    // Triangles of the brightest stars (lowest indices) first: they are the likeliest to be in
    // both lists.
    out.sort_by_key(|t| t.v.iter().copied().max().unwrap_or(0));
    out
}

/// Settings of the matcher.
#[derive(Debug, Clone, Copy)]
pub struct MatchConfig {
    /// Tolerance on the triangle side ratios (distortion changes shapes by up to ~1%).
    pub shape_tol: f64,
    /// Allowed fractional difference between the expected and the true pixel scale.
    pub scale_tol: f64,
    /// Neighbours per star that triangles are made with.
    pub neighbours: usize,
    /// Radius (pixels) within which a transformed source counts as on a reference star, for the
    /// similarity of one triangle (the affine refinement uses a third of it).
    pub verify_radius_px: f64,
    /// Matches a candidate needs to be accepted.
    pub min_matches: usize,
    /// Candidates tried before the best so far is taken.
    pub max_trials: usize,
}

/// A transform from source pixels to reference pixels and the pairs (source, reference) it
/// matches.
#[derive(Debug, Clone)]
pub struct PatternMatch {
    pub transform: Affine,
    pub pairs: Vec<(usize, usize)>,
    /// Candidate transforms that were checked.
    pub trials: usize,
}

/// Nearest-reference pairs of every source within `r` under `t`, one source per reference (the
/// closest).
fn pairs_within(src: &[[f64; 2]], tree: &KdTree<2>, t: &Affine, r: f64) -> Vec<(usize, usize)> {
    let mut best: std::collections::HashMap<usize, (usize, f64)> = Default::default();
    for (i, p) in src.iter().enumerate() {
        if let Some((j, d2)) = tree.nearest(&t.apply(*p), r) {
            let e = best.entry(j).or_insert((i, d2));
            if d2 < e.1 {
                *e = (i, d2);
            }
        }
    }
    let mut v: Vec<(usize, usize)> = best.into_iter().map(|(j, (i, _))| (i, j)).collect();
    v.sort_unstable();
    v
}

/// Finds the transform from `src` (pixels, brightest first) to `refs` (reference pixels,
/// brightest first) for an image of `width` x `height` pixels. Fails, saying what the best
/// candidate achieved, when no candidate matches `min_matches` sources.
pub fn match_patterns(
    src: &[[f64; 2]],
    refs: &[[f64; 2]],
    width: f64,
    height: f64,
    cfg: &MatchConfig,
) -> Result<PatternMatch, String> {
    if src.len() < 3 || refs.len() < 3 {
        return Err(format!(
            "{} sources and {} reference stars: a triangle needs 3 of each",
            src.len(),
            refs.len()
        ));
    }
    let min_side = 5.0;
    let st = triangles(src, cfg.neighbours, cfg.shape_tol, min_side);
    let rt = triangles(refs, cfg.neighbours, cfg.shape_tol, min_side);
    let shapes: Vec<[f64; 2]> = rt.iter().map(|t| t.shape).collect();
    let shape_tree = KdTree::new(&shapes);
    let ref_tree = KdTree::new(refs);
    let ln_tol = (1.0 + cfg.scale_tol).ln();
    let r1 = cfg.verify_radius_px;
    let r2 = r1 / 3.0;
    let mut best: Option<PatternMatch> = None;
    let mut trials = 0;
    for s in &st {
        for k in shape_tree.within(&s.shape, cfg.shape_tol) {
            let r = &rt[k];
            if (r.a / s.a).ln().abs() > ln_tol {
                continue;
            }
            trials += 1;
            let sp: Vec<[f64; 2]> = s.v.iter().map(|&i| src[i]).collect();
            let rp: Vec<[f64; 2]> = r.v.iter().map(|&i| refs[i]).collect();
            let sim = Affine::similarity(&sp, &rp, s.ccw != r.ccw);
            let first = pairs_within(src, &ref_tree, &sim, r1);
            let floor = best
                .as_ref()
                .map_or(cfg.min_matches.max(4), |b| b.pairs.len());
            if first.len() >= floor {
                // Refine to an affine transform on these pairs and score it at a third of the
                // radius, twice.
                let mut t = sim;
                let mut pairs = first;
                for _ in 0..2 {
                    let (a, b): (Vec<_>, Vec<_>) =
                        pairs.iter().map(|&(i, j)| (src[i], refs[j])).unzip();
                    match Affine::fit(&a, &b) {
                        Some(f) => t = f,
                        None => break,
                    }
                    pairs = pairs_within(src, &ref_tree, &t, r2);
                }
                if best.as_ref().is_none_or(|b| pairs.len() > b.pairs.len()) {
                    best = Some(PatternMatch {
                        transform: t,
                        pairs,
                        trials,
                    });
                }
                if let Some(b) = &best {
                    let n = b.pairs.len();
                    let enough = good_enough(src.len(), refs, &b.transform, width, height);
                    if n >= cfg.min_matches && n >= enough {
                        return Ok(PatternMatch {
                            trials,
                            ..b.clone()
                        });
                    }
                }
            }
            if trials >= cfg.max_trials {
                break;
            }
        }
        if trials >= cfg.max_trials {
            break;
        }
    }
    match best {
        Some(b) if b.pairs.len() >= cfg.min_matches => Ok(PatternMatch { trials, ..b }),
        Some(b) => Err(format!(
            "the best of {trials} candidate transforms matched {} of {} sources to {} reference \
             stars (at least {} are needed)",
            b.pairs.len(),
            src.len(),
            refs.len(),
            cfg.min_matches
        )),
        None => Err(format!(
            "none of {trials} candidate transforms ({} source and {} reference triangles) put \
             {} sources on reference stars",
            st.len(),
            rt.len(),
            cfg.min_matches.max(4)
        )),
    }
}

/// Matches that end the search early: 40% of the stars both lists should share on the image.
fn good_enough(n_src: usize, refs: &[[f64; 2]], t: &Affine, width: f64, height: f64) -> usize {
    let Some(inv) = t.inverse() else {
        return usize::MAX;
    };
    let inside = refs
        .iter()
        .map(|p| inv.apply(*p))
        .filter(|p| p[0] >= 0.5 && p[1] >= 0.5 && p[0] <= width + 0.5 && p[1] <= height + 0.5)
        .count();
    (0.4 * n_src.min(inside) as f64).ceil() as usize
}
