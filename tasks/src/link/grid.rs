//! A uniform grid over points on the plane (compressed rows: one sorted array of point indices
//! and an offset per cell), for "which points lie within r of here" in time proportional to the
//! points nearby. Built once per exposure; linking queries it millions of times.

pub struct Grid {
    x0: f64,
    y0: f64,
    cell: f64,
    nx: usize,
    ny: usize,
    /// `start[c]..start[c + 1]` indexes `items` for cell c.
    start: Vec<u32>,
    /// (x, y, caller's index) in cell order.
    items: Vec<(f64, f64, u32)>,
}

impl Grid {
    /// A grid of `cell`-sized squares over `points` (x, y, caller's index).
    pub fn new(points: &[(f64, f64, u32)], cell: f64) -> Grid {
        let cell = if cell.is_finite() && cell > 0.0 {
            cell
        } else {
            1.0
        };
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &(x, y, _) in points {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if points.is_empty() {
            (x0, y0, x1, y1) = (0.0, 0.0, 0.0, 0.0);
        }
        // At most ~4 cells per point: a sparse exposure gets coarser cells.
        let max_cells = (4 * points.len()).max(16) as f64;
        let mut cell = cell;
        while ((x1 - x0) / cell + 1.0) * ((y1 - y0) / cell + 1.0) > max_cells {
            cell *= 2.0;
        }
        let nx = ((x1 - x0) / cell) as usize + 1;
        let ny = ((y1 - y0) / cell) as usize + 1;
        let mut count = vec![0u32; nx * ny + 1];
        let key = |x: f64, y: f64| {
            let i = (((x - x0) / cell) as usize).min(nx - 1);
            let j = (((y - y0) / cell) as usize).min(ny - 1);
            j * nx + i
        };
        for &(x, y, _) in points {
            count[key(x, y) + 1] += 1;
        }
        for c in 1..count.len() {
            count[c] += count[c - 1];
        }
        let mut fill = count.clone();
        let mut items = vec![(0.0, 0.0, 0); points.len()];
        for &p in points {
            let k = key(p.0, p.1);
            items[fill[k] as usize] = p;
            fill[k] += 1;
        }
        Grid {
            x0,
            y0,
            cell,
            nx,
            ny,
            start: count,
            items,
        }
    }

    /// Whether any point lies within `r` of (x, y).
    pub fn any_within(&self, x: f64, y: f64, r: f64) -> bool {
        let mut any = false;
        self.within(x, y, r, |_, _| any = true);
        any
    }

    /// Calls `f(index, distance^2)` for every point within `r` of (x, y).
    #[inline]
    pub fn within(&self, x: f64, y: f64, r: f64, mut f: impl FnMut(u32, f64)) {
        if self.items.is_empty() || r.is_nan() || r < 0.0 {
            return;
        }
        let lo =
            |v: f64, o: f64, n: usize| (((v - r - o) / self.cell).floor().max(0.0) as usize).min(n);
        let hi = |v: f64, o: f64, n: usize| {
            let h = ((v + r - o) / self.cell).floor();
            if h < 0.0 {
                None
            } else {
                Some((h as usize).min(n - 1))
            }
        };
        let (Some(i1), Some(j1)) = (hi(x, self.x0, self.nx), hi(y, self.y0, self.ny)) else {
            return;
        };
        let (i0, j0) = (lo(x, self.x0, self.nx), lo(y, self.y0, self.ny));
        let r2 = r * r;
        if i0 > i1 || j0 > j1 {
            return;
        }
        for j in j0..=j1 {
            let row = j * self.nx;
            let (a, b) = (
                self.start[row + i0] as usize,
                self.start[row + i1 + 1] as usize,
            );
            for &(px, py, idx) in &self.items[a..b] {
                let d2 = (px - x) * (px - x) + (py - y) * (py - y);
                if d2 <= r2 {
                    f(idx, d2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Grid;

    #[test]
    fn finds_exactly_the_points_within_the_radius() {
        let pts: Vec<(f64, f64, u32)> = (0..500u32)
            .map(|i| {
                let a = i as f64 * 0.618_034;
                ((a * 97.0) % 200.0 - 50.0, (a * 61.0) % 130.0 + 7.0, i)
            })
            .collect();
        for cell in [0.5, 3.0, 40.0, 1000.0] {
            let g = Grid::new(&pts, cell);
            for &(x, y, r) in &[
                (0.0, 50.0, 10.0),
                (-60.0, 0.0, 30.0),
                (149.0, 137.0, 2.5),
                (500.0, 500.0, 1.0),
                (20.0, 60.0, 0.0),
            ] {
                let mut got = Vec::new();
                g.within(x, y, r, |i, _| got.push(i));
                got.sort();
                let want: Vec<u32> = pts
                    .iter()
                    .filter(|p| (p.0 - x).hypot(p.1 - y) <= r)
                    .map(|p| p.2)
                    .collect();
                assert_eq!(g.any_within(x, y, r), !want.is_empty());
                assert_eq!(got, want, "cell {cell} at {x},{y} r {r}");
            }
        }
        let empty = Grid::new(&[], 1.0);
        empty.within(0.0, 0.0, 5.0, |_, _| panic!("no points"));
        assert!(!empty.any_within(0.0, 0.0, 5.0));
    }
}
