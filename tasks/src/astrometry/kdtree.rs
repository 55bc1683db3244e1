//! A static k-d tree over points in D dimensions (Bentley 1975), stored implicitly: the points
//! are permuted so that every range's middle element splits it on the axis `depth % D`. It
//! serves three searches of the solver: cone searches of the reference catalog (unit vectors,
//! D = 3), triangle invariants within a tolerance (D = 2) and nearest neighbours on the image
//! plane (D = 2).

#[derive(Debug)]
pub struct KdTree<const D: usize> {
    pts: Vec<[f64; D]>,
    /// `ids[k]`: the caller's index of `pts[k]`.
    ids: Vec<usize>,
}

impl<const D: usize> KdTree<D> {
    /// Builds the tree; points with a non-finite coordinate are left out.
    pub fn new(points: &[[f64; D]]) -> KdTree<D> {
        let mut items: Vec<([f64; D], usize)> = points
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, p)| p.iter().all(|c| c.is_finite()))
            .map(|(i, p)| (p, i))
            .collect();
        build(&mut items, 0);
        let (pts, ids) = items.into_iter().unzip();
        KdTree { pts, ids }
    }

    pub fn len(&self) -> usize {
        self.pts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pts.is_empty()
    }

    /// The caller's indices of every point within Euclidean distance `r` of `q`.
    pub fn within(&self, q: &[f64; D], r: f64) -> Vec<usize> {
        let mut out = Vec::new();
        self.within_range(0, self.pts.len(), 0, q, r * r, r, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn within_range(
        &self,
        lo: usize,
        hi: usize,
        depth: usize,
        q: &[f64; D],
        r2: f64,
        r: f64,
        out: &mut Vec<usize>,
    ) {
        if lo >= hi {
            return;
        }
        let mid = (lo + hi) / 2;
        let p = &self.pts[mid];
        if dist2(p, q) <= r2 {
            out.push(self.ids[mid]);
        }
        let axis = depth % D;
        let d = q[axis] - p[axis];
        if d - r <= 0.0 {
            self.within_range(lo, mid, depth + 1, q, r2, r, out);
        }
        if d + r >= 0.0 {
            self.within_range(mid + 1, hi, depth + 1, q, r2, r, out);
        }
    }

    /// The caller's index of the point nearest to `q` and its squared distance, if one lies
    /// within `r`.
    pub fn nearest(&self, q: &[f64; D], r: f64) -> Option<(usize, f64)> {
        let mut best = (usize::MAX, r * r);
        self.nearest_range(0, self.pts.len(), 0, q, &mut best);
        (best.0 != usize::MAX).then(|| (self.ids[best.0], best.1))
    }

    fn nearest_range(
        &self,
        lo: usize,
        hi: usize,
        depth: usize,
        q: &[f64; D],
        best: &mut (usize, f64),
    ) {
        if lo >= hi {
            return;
        }
        let mid = (lo + hi) / 2;
        let p = &self.pts[mid];
        let d2 = dist2(p, q);
        if d2 <= best.1 {
            *best = (mid, d2);
        }
        let axis = depth % D;
        let d = q[axis] - p[axis];
        let (near, far) = if d < 0.0 {
            ((lo, mid), (mid + 1, hi))
        } else {
            ((mid + 1, hi), (lo, mid))
        };
        self.nearest_range(near.0, near.1, depth + 1, q, best);
        if d * d <= best.1 {
            self.nearest_range(far.0, far.1, depth + 1, q, best);
        }
    }
}

fn dist2<const D: usize>(a: &[f64; D], b: &[f64; D]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn build<const D: usize>(items: &mut [([f64; D], usize)], depth: usize) {
    if items.len() <= 1 {
        return;
    }
    let axis = depth % D;
    let mid = items.len() / 2;
    items.select_nth_unstable_by(mid, |a, b| a.0[axis].total_cmp(&b.0[axis]));
    let (left, right) = items.split_at_mut(mid);
    build(left, depth + 1);
    build(&mut right[1..], depth + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn agrees_with_brute_force() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let pts: Vec<[f64; 2]> = (0..500)
            .map(|_| [r.random_range(0.0..100.0), r.random_range(0.0..100.0)])
            .collect();
        let t = KdTree::new(&pts);
        assert_eq!(t.len(), 500);
        for _ in 0..200 {
            let q = [r.random_range(-10.0..110.0), r.random_range(-10.0..110.0)];
            let rad = r.random_range(0.0..15.0);
            let mut got = t.within(&q, rad);
            got.sort();
            let want: Vec<usize> = (0..pts.len())
                .filter(|&i| dist2(&pts[i], &q) <= rad * rad)
                .collect();
            assert_eq!(got, want);
            let best = (0..pts.len())
                .min_by(|&a, &b| dist2(&pts[a], &q).total_cmp(&dist2(&pts[b], &q)))
                .unwrap();
            match t.nearest(&q, rad) {
                Some((i, d2)) => {
                    assert_eq!(i, best);
                    assert!((d2 - dist2(&pts[best], &q)).abs() < 1e-12);
                }
                None => assert!(dist2(&pts[best], &q) > rad * rad),
            }
        }
    }

    #[test]
    fn skips_nan_points_and_handles_empty() {
        let t = KdTree::new(&[[f64::NAN, 0.0, 0.0], [1.0, 0.0, 0.0]]);
        assert_eq!(t.within(&[1.0, 0.0, 0.0], 0.1), vec![1]);
        let e: KdTree<3> = KdTree::new(&[]);
        assert!(e.is_empty() && e.nearest(&[0.0; 3], 1.0).is_none());
    }
}
