//! Aligning the exposures of a field on their stars: each exposure's positions are mapped onto
//! the reference exposure's by an affine transform fitted to matched stars.
//!
//! Why: a header WCS is only as good as the telescope's pointing (arcminutes, and a few
//! arcseconds of guiding jitter between exposures), and even a solved one differs a little from
//! exposure to exposure. Linking needs positions that agree to a fraction of an arcsecond across
//! the exposures, which the stars give directly. The offset is found first by voting over the
//! differences of bright-star pairs (robust to any offset up to `max_offset_arcsec`, no prior
//! needed), then the affine transform is fitted to all stars matched within a shrinking radius,
//! with outliers clipped.

use std::collections::HashMap;

use super::grid::Grid;

/// A source as alignment sees it: a position on the tangent plane (arcseconds) and its error,
/// a flux to pick the bright ones; `usable` is false for flagged, odd-shaped or (on the
/// detector) stationary sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Source {
    pub xi: f64,
    pub eta: f64,
    pub sigma_arcsec: f64,
    pub flux: f64,
    pub usable: bool,
}

/// `(xi, eta) -> (a0 + a1 xi + a2 eta, b0 + b1 xi + b2 eta)`, onto the reference exposure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alignment {
    pub a: [f64; 3],
    pub b: [f64; 3],
    /// Stars the final fit used.
    pub n_stars: usize,
    /// RMS distance of those stars from their reference positions after the transform, ".
    pub rms_arcsec: f64,
}

impl Alignment {
    pub fn identity() -> Alignment {
        Alignment {
            a: [0.0, 1.0, 0.0],
            b: [0.0, 0.0, 1.0],
            n_stars: 0,
            rms_arcsec: 0.0,
        }
    }
    pub fn apply(&self, xi: f64, eta: f64) -> (f64, f64) {
        (
            self.a[0] + self.a[1] * xi + self.a[2] * eta,
            self.b[0] + self.b[1] * xi + self.b[2] * eta,
        )
    }
    /// The shift at the origin, arcseconds.
    pub fn shift(&self) -> (f64, f64) {
        (self.a[0], self.b[0])
    }
}

/// How far apart two exposures may be pointed (arcseconds), the bin of the offset vote, and how
/// many of the brightest sources vote.
const VOTE_BIN_ARCSEC: f64 = 2.0;
const VOTERS: usize = 300;
const AFFINE_STARS: usize = 20;

/// Aligns `src` onto `reference`; `None` when fewer than 3 stars match (the exposure cannot be
/// used). Uses a shift alone when fewer than `AFFINE_STARS` stars match. Stars are weighted by
/// their position errors.
pub fn align(reference: &[Source], src: &[Source], max_offset_arcsec: f64) -> Option<Alignment> {
    fn bright(s: &[Source]) -> Vec<&Source> {
        let mut v: Vec<&Source> = s
            .iter()
            .filter(|s| s.usable && s.flux.is_finite() && s.flux > 0.0)
            .collect();
        v.sort_by(|a, b| b.flux.total_cmp(&a.flux));
        v.truncate(VOTERS);
        v
    }
    let (rb, sb) = (bright(reference), bright(src));
    // Vote: every pair's difference, in bins; the densest 2x2 block of bins wins.
    let mut votes: HashMap<(i64, i64), u32> = HashMap::new();
    for r in &rb {
        for s in &sb {
            let (dx, dy) = (r.xi - s.xi, r.eta - s.eta);
            if dx.abs() <= max_offset_arcsec && dy.abs() <= max_offset_arcsec {
                let k = (
                    (dx / VOTE_BIN_ARCSEC).floor() as i64,
                    (dy / VOTE_BIN_ARCSEC).floor() as i64,
                );
                *votes.entry(k).or_default() += 1;
            }
        }
    }
    let block = |k: (i64, i64)| -> u32 {
        [(0, 0), (1, 0), (0, 1), (1, 1)]
            .iter()
            .map(|d| votes.get(&(k.0 + d.0, k.1 + d.1)).copied().unwrap_or(0))
            .sum()
    };
    let best = votes
        .keys()
        .map(|&k| (block(k), k))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))?;
    if best.0 < 3 {
        return None;
    }
    // Refine: the mean difference of the pairs in the winning block.
    let (cx, cy) = (
        (best.1 .0 + 1) as f64 * VOTE_BIN_ARCSEC,
        (best.1 .1 + 1) as f64 * VOTE_BIN_ARCSEC,
    );
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for r in &rb {
        for s in &sb {
            let (dx, dy) = (r.xi - s.xi, r.eta - s.eta);
            if (dx - cx).abs() <= VOTE_BIN_ARCSEC && (dy - cy).abs() <= VOTE_BIN_ARCSEC {
                sx += dx;
                sy += dy;
                n += 1.0;
            }
        }
    }
    let mut al = Alignment {
        a: [sx / n, 1.0, 0.0],
        b: [sy / n, 0.0, 1.0],
        ..Alignment::identity()
    };
    // Match every usable source, fit, shrink the radius, refit.
    let pts: Vec<(f64, f64, u32)> = reference
        .iter()
        .enumerate()
        .filter(|(_, s)| s.usable)
        .map(|(i, s)| (s.xi, s.eta, i as u32))
        .collect();
    let grid = Grid::new(&pts, 2.0);
    let mut radius = VOTE_BIN_ARCSEC;
    let mut ok = false;
    for _ in 0..4 {
        let mut pairs: Vec<(f64, f64, f64, f64, f64)> = Vec::new();
        for s in src.iter().filter(|s| s.usable) {
            let (x, y) = al.apply(s.xi, s.eta);
            let mut best: Option<(u32, f64)> = None;
            grid.within(x, y, radius, |i, d2| {
                if best.is_none_or(|b| d2 < b.1) {
                    best = Some((i, d2));
                }
            });
            if let Some((i, _)) = best {
                let r = &reference[i as usize];
                let w = 1.0 / (s.sigma_arcsec.powi(2) + r.sigma_arcsec.powi(2)).max(1e-6);
                pairs.push((s.xi, s.eta, r.xi, r.eta, w));
            }
        }
        if pairs.len() < 3 {
            return ok.then_some(al);
        }
        // Fit, then drop the worst-fitting star while it is far out of line with the others
        // (in units of its error): a slow bright asteroid, a mismatch, a blend.
        let residuals = |fit: &Alignment, pairs: &[(f64, f64, f64, f64, f64)]| -> Vec<f64> {
            pairs
                .iter()
                .map(|p| {
                    let (x, y) = fit.apply(p.0, p.1);
                    (x - p.2).hypot(y - p.3)
                })
                .collect()
        };
        let fit = loop {
            let Some(fit) = fit_affine(&pairs, pairs.len() >= AFFINE_STARS) else {
                return ok.then_some(al);
            };
            // Each residual as it would be from a fit without that star (leverage w / sum w,
            // as for a shift), over its error and that fit's: a slow bright asteroid has the
            // smallest error of all and would pull a weighted fit to a dozen faint stars onto
            // itself, leaving itself a small residual.
            let wsum: f64 = pairs.iter().map(|p| p.4).sum();
            let norm: Vec<f64> = residuals(&fit, &pairs)
                .iter()
                .zip(&pairs)
                .map(|(r, p)| {
                    let rest = (wsum - p.4).max(1e-12);
                    r * wsum / rest / (1.0 / p.4 + 1.0 / rest).sqrt()
                })
                .collect();
            let mut sorted = norm.clone();
            sorted.sort_by(f64::total_cmp);
            // In units of the errors, the median distance of a 2-D Gaussian is 1.177 sigma.
            let typical = sorted[sorted.len() / 2] / 1.177;
            let (worst, w) = norm
                .iter()
                .copied()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, 0.0));
            if pairs.len() > 3 && w > 3.0 && w > 3.0 * typical {
                pairs.swap_remove(worst);
            } else {
                break fit;
            }
        };
        let res = residuals(&fit, &pairs);
        // Weighted RMS, and the radius for the next round from the unweighted spread.
        let wsum: f64 = pairs.iter().map(|p| p.4).sum();
        let rms = (res
            .iter()
            .zip(&pairs)
            .map(|(r, p)| p.4 * r * r)
            .sum::<f64>()
            / wsum)
            .sqrt();
        let spread = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64).sqrt();
        al = Alignment {
            n_stars: pairs.len(),
            rms_arcsec: rms,
            ..fit
        };
        ok = true;
        radius = (3.0 * spread).clamp(0.5, radius);
    }
    Some(al)
}

/// Weighted least-squares affine (or shift-only) transform taking (x, y) to (u, v) for
/// (x, y, u, v, weight).
fn fit_affine(pairs: &[(f64, f64, f64, f64, f64)], affine: bool) -> Option<Alignment> {
    let n: f64 = pairs.iter().map(|p| p.4).sum();
    let mean = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| {
        pairs.iter().map(|p| p.4 * f(p)).sum::<f64>() / n
    };
    let (mx, my, mu, mv) = (mean(|p| p.0), mean(|p| p.1), mean(|p| p.2), mean(|p| p.3));
    let (mut m11, mut m12, mut m22) = (0.0, 0.0, 0.0);
    let (mut xu, mut yu, mut xv, mut yv) = (0.0, 0.0, 0.0, 0.0);
    for p in pairs {
        let (x, y, u, v, w) = (p.0 - mx, p.1 - my, p.2 - mu, p.3 - mv, p.4);
        m11 += w * x * x;
        m12 += w * x * y;
        m22 += w * y * y;
        xu += w * x * u;
        yu += w * y * u;
        xv += w * x * v;
        yv += w * y * v;
    }
    let det = m11 * m22 - m12 * m12;
    let (a1, a2, b1, b2) = if affine && det > 1e-9 * (m11 * m22).max(1e-300) {
        (
            (m22 * xu - m12 * yu) / det,
            (m11 * yu - m12 * xu) / det,
            (m22 * xv - m12 * yv) / det,
            (m11 * yv - m12 * xv) / det,
        )
    } else {
        (1.0, 0.0, 0.0, 1.0)
    };
    let al = Alignment {
        a: [mu - a1 * mx - a2 * my, a1, a2],
        b: [mv - b1 * mx - b2 * my, b1, b2],
        n_stars: pairs.len(),
        rms_arcsec: 0.0,
    };
    al.a.iter()
        .chain(&al.b)
        .all(|v| v.is_finite())
        .then_some(al)
}
