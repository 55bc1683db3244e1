//! Fitting a TAN-SIP WCS to matched stars, with iterative sigma clipping, and the inverse SIP
//! polynomials.
//!
//! The model: intermediate world coordinates (xi, eta) of each reference star, projected about
//! CRVAL, are polynomials of order N in (u, v) = pixel - CRPIX. The constant terms are driven to
//! zero by moving CRVAL (re-projecting and fitting again), the linear terms are the CD matrix, and
//! the terms of order 2 and up, multiplied by CD^-1, are SIP's A and B. Pixel coordinates are
//! divided by half the image size while fitting, so the normal equations stay well conditioned.

use crate::wcs::{Poly, Sip, TanWcs};

/// A matched star: measured pixel position, reference sky position at the exposure's epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Star {
    pub x: f64,
    pub y: f64,
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Inverse variance of each pixel coordinate, 1/px^2.
    pub weight: f64,
}

/// Terms `(p, q)` of a polynomial of total order `n`.
fn terms(n: usize) -> Vec<(usize, usize)> {
    (0..=n)
        .flat_map(|p| (0..=n - p).map(move |q| (p, q)))
        .collect()
}

/// Number of coefficients of a polynomial of order `n` in two variables.
pub fn n_terms(n: usize) -> usize {
    (n + 1) * (n + 2) / 2
}

/// Solves the normal equations `ata x = atb[k]` for each right-hand side by Cholesky
/// decomposition; `None` when the matrix is not positive definite.
fn solve_normal(mut ata: Vec<f64>, atb: &[Vec<f64>], n: usize) -> Option<Vec<Vec<f64>>> {
    for j in 0..n {
        let mut d = ata[j * n + j];
        for k in 0..j {
            d -= ata[j * n + k] * ata[j * n + k];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        ata[j * n + j] = d;
        for i in j + 1..n {
            let mut s = ata[i * n + j];
            for k in 0..j {
                s -= ata[i * n + k] * ata[j * n + k];
            }
            ata[i * n + j] = s / d;
        }
    }
    let l = |i: usize, j: usize| ata[i * n + j];
    Some(
        atb.iter()
            .map(|b| {
                let mut y = vec![0.0; n];
                for i in 0..n {
                    y[i] = (b[i] - (0..i).map(|k| l(i, k) * y[k]).sum::<f64>()) / l(i, i);
                }
                let mut x = vec![0.0; n];
                for i in (0..n).rev() {
                    x[i] = (y[i] - (i + 1..n).map(|k| l(k, i) * x[k]).sum::<f64>()) / l(i, i);
                }
                x
            })
            .collect(),
    )
}

/// Weighted least-squares polynomials of order `n` in (u, v) for each column of `values`.
fn fit_polys(
    uv: &[(f64, f64)],
    values: &[&[f64]],
    weights: &[f64],
    n: usize,
) -> Option<Vec<Vec<f64>>> {
    let t = terms(n);
    let m = t.len();
    if uv.len() < m {
        return None;
    }
    let mut ata = vec![0.0; m * m];
    let mut atb = vec![vec![0.0; m]; values.len()];
    let mut row = vec![0.0; m];
    for (k, &(u, v)) in uv.iter().enumerate() {
        for (r, &(p, q)) in row.iter_mut().zip(&t) {
            *r = u.powi(p as i32) * v.powi(q as i32);
        }
        let w = weights[k];
        for i in 0..m {
            let wi = w * row[i];
            for j in 0..=i {
                ata[i * m + j] += wi * row[j];
            }
            for (b, vals) in atb.iter_mut().zip(values) {
                b[i] += wi * vals[k];
            }
        }
    }
    for i in 0..m {
        for j in 0..i {
            ata[j * m + i] = ata[i * m + j];
        }
    }
    solve_normal(ata, &atb, m)
}

/// Fits a TAN-SIP WCS of order `order` (1 = TAN alone) with CRPIX fixed at `crpix`, starting
/// from the tangent point `crval`. `norm` is the pixel scale of the fit's coordinates (half the
/// image size). `None` when there are fewer stars than coefficients or they are degenerate.
pub fn fit_tan_sip(
    stars: &[Star],
    crpix: [f64; 2],
    crval: [f64; 2],
    order: usize,
    norm: f64,
) -> Option<TanWcs> {
    let t = terms(order);
    let uv: Vec<(f64, f64)> = stars
        .iter()
        .map(|s| ((s.x - crpix[0]) / norm, (s.y - crpix[1]) / norm))
        .collect();
    let weights: Vec<f64> = stars.iter().map(|s| s.weight).collect();
    let mut crval = crval;
    let mut coef = Vec::new();
    for _ in 0..6 {
        let tan = TanWcs::new(crpix, crval, [[1.0, 0.0], [0.0, 1.0]]);
        let mut xi = Vec::with_capacity(stars.len());
        let mut eta = Vec::with_capacity(stars.len());
        for s in stars {
            let (a, b) = tan.sky_to_intermediate(s.ra_deg, s.dec_deg)?;
            xi.push(a);
            eta.push(b);
        }
        coef = fit_polys(&uv, &[&xi, &eta], &weights, order)?;
        // The constant term is where CRPIX lands on the tangent plane: move CRVAL there.
        let (c_xi, c_eta) = (coef[0][0], coef[1][0]);
        let (ra, dec) = tan.pix_to_sky(crpix[0] + c_xi, crpix[1] + c_eta);
        crval = [ra, dec];
        if c_xi.hypot(c_eta) < 1e-13 {
            break;
        }
    }
    let at = |k: usize, p: usize, q: usize| {
        let i = t.iter().position(|&x| x == (p, q)).unwrap_or(0);
        coef[k][i] / norm.powi((p + q) as i32)
    };
    let cd = [[at(0, 1, 0), at(0, 0, 1)], [at(1, 1, 0), at(1, 0, 1)]];
    let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
    if !det.is_finite() || det == 0.0 {
        return None;
    }
    let inv = [
        [cd[1][1] / det, -cd[0][1] / det],
        [-cd[1][0] / det, cd[0][0] / det],
    ];
    let sip = (order >= 2).then(|| {
        let (mut a, mut b) = (Poly::zeros(order), Poly::zeros(order));
        for &(p, q) in t.iter().filter(|(p, q)| p + q >= 2) {
            let (cx, cy) = (at(0, p, q), at(1, p, q));
            a.set(p, q, inv[0][0] * cx + inv[0][1] * cy);
            b.set(p, q, inv[1][0] * cx + inv[1][1] * cy);
        }
        Sip {
            a,
            b,
            ap: None,
            bp: None,
        }
    });
    Some(TanWcs {
        crpix,
        crval,
        cd,
        sip,
    })
}

/// A clipped fit: the WCS, which stars it kept, and its residuals.
#[derive(Debug, Clone)]
pub struct ClippedFit {
    pub wcs: TanWcs,
    pub used: Vec<bool>,
    /// Residual (pixels) of every star, kept or not.
    pub residual_px: Vec<f64>,
    /// RMS of the kept stars' residuals (length of the residual vector), pixels.
    pub rms_px: f64,
    pub n_used: usize,
}

/// Fits, then drops stars whose residual is beyond `clip_sigma` times the robust per-axis
/// scatter (scaled by their weight) and fits again, until the kept set no longer changes.
/// Dropped stars come back when a later fit agrees with them.
pub fn fit_clipped(
    stars: &[Star],
    crpix: [f64; 2],
    crval: [f64; 2],
    order: usize,
    norm: f64,
    clip_sigma: f64,
) -> Option<ClippedFit> {
    let mut used = vec![true; stars.len()];
    let w_med = {
        let mut w: Vec<f64> = stars.iter().map(|s| s.weight).collect();
        w.sort_by(f64::total_cmp);
        w.get(w.len() / 2).copied().unwrap_or(1.0)
    };
    let mut crval = crval;
    for _ in 0..10 {
        let kept: Vec<Star> = stars
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(s, _)| *s)
            .collect();
        let wcs = fit_tan_sip(&kept, crpix, crval, order, norm)?;
        crval = wcs.crval;
        let residual_px: Vec<f64> = stars.iter().map(|s| residual(&wcs, s)).collect();
        // Residuals scaled to the median weight: comparable between bright and faint stars.
        let scaled: Vec<f64> = stars
            .iter()
            .zip(&residual_px)
            .map(|(s, r)| r * (s.weight / w_med).sqrt())
            .collect();
        let mut sq: Vec<f64> = scaled
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .map(|(r, _)| r * r)
            .collect();
        sq.sort_by(f64::total_cmp);
        // The median of |r|^2 for a 2-D Gaussian of per-axis sigma s is 2 ln 2 s^2. Residuals
        // of the fitted stars are smaller than their errors by sqrt(1 - p/n) (p coefficients per
        // axis fitted to n stars), and the scatter is never taken below the catalog's own
        // centroid errors: without both, a fit to a dozen stars fits them so closely that each
        // round clips more of them (the demo's CCDs lost 9 of 16 stars that way).
        let n_kept = sq.len() as f64;
        let dof = (1.0 - n_terms(order) as f64 / n_kept.max(1.0)).max(0.1);
        let robust =
            (sq.get(sq.len() / 2).copied().unwrap_or(0.0) / (2.0 * 2f64.ln()) / dof).sqrt();
        let sigma = robust.max(1.0 / w_med.sqrt());
        let limit = clip_sigma * sigma.max(1e-6);
        let new: Vec<bool> = scaled.iter().map(|r| *r <= limit).collect();
        let n_new = new.iter().filter(|u| **u).count();
        let done = new == used || n_new < n_terms(order);
        if done {
            let n_used = used.iter().filter(|u| **u).count();
            let rms_px = (residual_px
                .iter()
                .zip(&used)
                .filter(|(_, u)| **u)
                .map(|(r, _)| r * r)
                .sum::<f64>()
                / n_used.max(1) as f64)
                .sqrt();
            return Some(ClippedFit {
                wcs,
                used,
                residual_px,
                rms_px,
                n_used,
            });
        }
        used = new;
    }
    // No convergence in 10 rounds: the last kept set, fitted once more.
    let kept: Vec<Star> = stars
        .iter()
        .zip(&used)
        .filter(|(_, u)| **u)
        .map(|(s, _)| *s)
        .collect();
    let wcs = fit_tan_sip(&kept, crpix, crval, order, norm)?;
    let residual_px: Vec<f64> = stars.iter().map(|s| residual(&wcs, s)).collect();
    let n_used = kept.len();
    let rms_px =
        (kept.iter().map(|s| residual(&wcs, s).powi(2)).sum::<f64>() / n_used.max(1) as f64).sqrt();
    Some(ClippedFit {
        wcs,
        used,
        residual_px,
        rms_px,
        n_used,
    })
}

/// Distance (pixels) between a star's measured position and where the WCS puts its reference.
pub fn residual(wcs: &TanWcs, s: &Star) -> f64 {
    match wcs.sky_to_pix(s.ra_deg, s.dec_deg) {
        Some((x, y)) => (x - s.x).hypot(y - s.y),
        None => f64::INFINITY,
    }
}

/// Fits SIP's inverse polynomials AP, BP of order `order` (every term, constant and linear
/// included, as wcslib applies them) on a grid covering the image and a margin of 2% on each
/// side, and returns the largest error of the inverse alone (before sky_to_pix's Newton steps)
/// on a finer grid, in pixels. Does nothing to a WCS without SIP.
pub fn fit_inverse(wcs: &mut TanWcs, width: f64, height: f64, order: usize) -> Option<f64> {
    let Some(sip) = &wcs.sip else {
        return Some(0.0);
    };
    let norm = width.max(height) / 2.0;
    let grid = |n: usize| -> Vec<(f64, f64)> {
        let (mx, my) = (0.02 * width, 0.02 * height);
        let mut g = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let x = 0.5 - mx + (width + 2.0 * mx) * i as f64 / (n - 1) as f64;
                let y = 0.5 - my + (height + 2.0 * my) * j as f64 / (n - 1) as f64;
                g.push((x - wcs.crpix[0], y - wcs.crpix[1]));
            }
        }
        g
    };
    let forward = |u: f64, v: f64| (u + sip.a.eval(u, v), v + sip.b.eval(u, v));
    let pts = grid(40);
    let foc: Vec<(f64, f64)> = pts.iter().map(|&(u, v)| forward(u, v)).collect();
    let du: Vec<f64> = pts.iter().zip(&foc).map(|(p, f)| p.0 - f.0).collect();
    let dv: Vec<f64> = pts.iter().zip(&foc).map(|(p, f)| p.1 - f.1).collect();
    let uv: Vec<(f64, f64)> = foc.iter().map(|f| (f.0 / norm, f.1 / norm)).collect();
    let coef = fit_polys(&uv, &[&du, &dv], &vec![1.0; uv.len()], order)?;
    let (mut ap, mut bp) = (Poly::zeros(order), Poly::zeros(order));
    for (i, &(p, q)) in terms(order).iter().enumerate() {
        let s = norm.powi((p + q) as i32);
        ap.set(p, q, coef[0][i] / s);
        bp.set(p, q, coef[1][i] / s);
    }
    let worst = grid(57)
        .iter()
        .map(|&(u, v)| {
            let (fu, fv) = forward(u, v);
            (fu + ap.eval(fu, fv) - u).hypot(fv + bp.eval(fu, fv) - v)
        })
        .fold(0.0, f64::max);
    if let Some(s) = &mut wcs.sip {
        s.ap = Some(ap);
        s.bp = Some(bp);
    }
    Some(worst)
}
