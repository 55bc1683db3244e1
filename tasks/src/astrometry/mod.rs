//! Astrometric calibration: solving a CCD's WCS from its source catalog and a reference catalog.
//!
//! [`solve`] is the algorithm, apart from I/O: starting from the header's (approximate) WCS it
//! matches the brightest sources to the brightest reference stars around the pointing with
//! triangles ([`r#match`]), which tolerates a pointing off by the search radius, an unknown
//! rotation and parity, and outliers; then matches every source to every reference star, fits
//! TAN-SIP with sigma clipping ([`fit`]) and narrows the match radius until the matches settle.
//! A CCD that cannot be solved gets an error that says why, never a wrong WCS: the solution must
//! match `min_matches` stars, far more than chance would, with an RMS below `max_rms_arcsec`.
//! [`refcat`] reads reference catalogs (the simulator's, Gaia extracts, astrometry.net index
//! files such as Debian's Tycho-2 through [`anindex`]) and serves cone
//! searches from a k-d tree ([`kdtree`]); [`task`] is the `astrometry` task kind.

pub mod anindex;
pub mod fit;
pub mod kdtree;
pub mod r#match;
pub mod refcat;
pub mod task;
#[cfg(test)]
mod tests;

use crate::fits::FitsError;
use crate::wcs::TanWcs;
use fit::{fit_clipped, fit_inverse, n_terms, Star};
use kdtree::KdTree;
use r#match::{match_patterns, MatchConfig};

/// Why a field could not be solved, or a catalog not read.
#[derive(Debug, thiserror::Error)]
pub enum AstrometryError {
    #[error("reference catalog {file}: {what}")]
    Refcat { file: String, what: String },
    #[error("{file}: cannot read: {reason}")]
    Io { file: String, reason: String },
    #[error(transparent)]
    Fits(#[from] FitsError),
    #[error("too few sources: {usable} usable of {total} ({why}); at least {need} are needed")]
    TooFewSources {
        usable: usize,
        total: usize,
        why: String,
        need: usize,
    },
    #[error(
        "{found} reference stars within {radius_arcmin:.1}' of RA {ra:.5} Dec {dec:.5}: the \
         reference catalog does not cover this field (at least 3 are needed)"
    )]
    NoReferences {
        found: usize,
        ra: f64,
        dec: f64,
        radius_arcmin: f64,
    },
    #[error("no match: {0}")]
    NoMatch(String),
    #[error("solution rejected: {0}")]
    Rejected(String),
}

/// A detected source as the solver needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Source {
    /// 1-based FITS pixel position.
    pub x: f64,
    pub y: f64,
    /// Centroid uncertainty per axis, pixels.
    pub sigma_px: f64,
    pub flux: f64,
    /// Star-like and unflagged: good for the pattern and the fit (saturated stars, cosmic rays
    /// and hot pixels are not).
    pub clean: bool,
}

/// A reference star at the exposure's epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkyStar {
    pub ra_deg: f64,
    pub dec_deg: f64,
    pub mag: f64,
}

/// The solver's settings (the task's params).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveConfig {
    /// Order of the SIP polynomials, 1 (TAN alone) to 5; lowered for a CCD with too few
    /// matches (two stars per coefficient are required).
    pub sip_order: usize,
    pub clip_sigma: f64,
    /// How far the header's pointing may be off, degrees.
    pub search_radius_deg: f64,
    /// How far the header's pixel scale may be off, as a fraction.
    pub scale_tol: f64,
    /// Sources (brightest first) the pattern matcher uses at most.
    pub n_pattern: usize,
    pub min_matches: usize,
    pub max_rms_arcsec: f64,
    /// Uncertainty of the reference positions at the exposure's epoch, arcseconds.
    pub ref_sigma_arcsec: f64,
}

impl Default for SolveConfig {
    fn default() -> Self {
        SolveConfig {
            sip_order: 3,
            clip_sigma: 3.0,
            search_radius_deg: 6.0 / 60.0,
            scale_tol: 0.05,
            n_pattern: 40,
            min_matches: 8,
            max_rms_arcsec: 1.0,
            ref_sigma_arcsec: 0.005,
        }
    }
}

/// A solved CCD.
#[derive(Debug, Clone)]
pub struct Solution {
    pub wcs: TanWcs,
    /// (source index, reference index, kept by the clipping) of every match.
    pub matches: Vec<(usize, usize, bool)>,
    pub n_used: usize,
    /// RMS of the kept matches' residuals (length of the residual vector).
    pub rms_px: f64,
    pub rms_arcsec: f64,
    /// SIP order fitted (lower than asked when matches were few).
    pub order: usize,
    /// Largest error of the inverse polynomials AP/BP over the image, pixels.
    pub inverse_err_px: f64,
    /// Candidate transforms the pattern matcher checked.
    pub pattern_trials: usize,
}

/// One round of the refinement: the pairs (source, reference), their fit and its order.
type Round = (Vec<(usize, usize)>, fit::ClippedFit, usize);

/// The cone a CCD's reference stars must come from: the sky position of the image centre under
/// the header's WCS and a radius reaching its corners plus the search radius (degrees).
pub fn search_cone(
    hint: &TanWcs,
    width: usize,
    height: usize,
    cfg: &SolveConfig,
) -> (f64, f64, f64) {
    let (ra, dec) = hint.pix_to_sky((width as f64 + 1.0) / 2.0, (height as f64 + 1.0) / 2.0);
    let half_diag = (width as f64).hypot(height as f64) / 2.0 * hint.scale_deg();
    (
        ra,
        dec,
        half_diag * (1.0 + cfg.scale_tol) + cfg.search_radius_deg,
    )
}

/// Solves the WCS of a `width` x `height` image from its sources, reference stars in the cone of
/// [`search_cone`] (at the exposure's epoch) and the header's approximate WCS.
pub fn solve(
    sources: &[Source],
    width: usize,
    height: usize,
    hint: &TanWcs,
    refs: &[SkyStar],
    cfg: &SolveConfig,
) -> Result<Solution, AstrometryError> {
    let (w, h) = (width as f64, height as f64);
    let inside = |s: &Source| {
        s.x.is_finite()
            && s.y.is_finite()
            && s.flux.is_finite()
            && s.flux > 0.0
            && s.x >= 0.5
            && s.y >= 0.5
            && s.x <= w + 0.5
            && s.y <= h + 0.5
    };
    let usable: Vec<usize> = (0..sources.len())
        .filter(|&i| inside(&sources[i]) && sources[i].clean)
        .collect();
    let need = cfg.min_matches.max(3);
    if usable.len() < need {
        let bad = sources.iter().filter(|s| !inside(s)).count();
        return Err(AstrometryError::TooFewSources {
            usable: usable.len(),
            total: sources.len(),
            why: format!(
                "{bad} without a finite position and positive flux on the image, {} flagged or \
                 not star-like",
                sources.len() - bad - usable.len()
            ),
            need,
        });
    }
    let (ra0, dec0, radius) = search_cone(hint, width, height, cfg);
    if refs.len() < 3 {
        return Err(AstrometryError::NoReferences {
            found: refs.len(),
            ra: ra0,
            dec: dec0,
            radius_arcmin: radius * 60.0,
        });
    }

    // Pattern matching on the brightest of each, at matched densities.
    let s0 = hint.scale_deg();
    let plane = TanWcs::new([0.0, 0.0], [ra0, dec0], [[-s0, 0.0], [0.0, s0]]);
    let mut by_flux = usable.clone();
    by_flux.sort_by(|&a, &b| sources[b].flux.total_cmp(&sources[a].flux));
    let mut by_mag: Vec<usize> = (0..refs.len()).collect();
    by_mag.sort_by(|&a, &b| refs[a].mag.total_cmp(&refs[b].mag));
    let area_ratio = std::f64::consts::PI * (radius / s0).powi(2) / (w * h);
    let refs_on_image = refs.len() as f64 / area_ratio;
    let n_src = (1.5 * refs_on_image)
        .ceil()
        .clamp(8.0, cfg.n_pattern as f64) as usize;
    let n_src = n_src.min(by_flux.len());
    let n_ref = ((1.5 * n_src as f64 * area_ratio).ceil() as usize).clamp(n_src, 1000);
    let src_pts: Vec<[f64; 2]> = by_flux[..n_src]
        .iter()
        .map(|&i| [sources[i].x, sources[i].y])
        .collect();
    let ref_idx: Vec<usize> = by_mag.iter().copied().take(n_ref).collect();
    let ref_pts: Vec<[f64; 2]> = ref_idx
        .iter()
        .filter_map(|&j| plane.sky_to_pix(refs[j].ra_deg, refs[j].dec_deg))
        .map(|(x, y)| [x, y])
        .collect();
    let mcfg = MatchConfig {
        shape_tol: 0.01,
        scale_tol: cfg.scale_tol,
        neighbours: 8,
        verify_radius_px: (0.02 * w.max(h)).max(6.0),
        min_matches: cfg.min_matches.min(n_src).max(4),
        max_trials: 30_000,
    };
    let pm = match_patterns(&src_pts, &ref_pts, w, h, &mcfg).map_err(AstrometryError::NoMatch)?;

    // The pattern's affine transform as a TAN WCS: reference pixels (p, q) = M (x, y) + t are
    // (xi, eta) = (-s0 p, s0 q) degrees about (ra0, dec0).
    let t = pm.transform;
    let cd = [
        [-s0 * t.m[0][0], -s0 * t.m[0][1]],
        [s0 * t.m[1][0], s0 * t.m[1][1]],
    ];
    let inv = t
        .inverse()
        .ok_or_else(|| AstrometryError::NoMatch("degenerate pattern transform".into()))?;
    let origin = inv.apply([0.0, 0.0]);
    let first = TanWcs::new(origin, [ra0, dec0], cd);
    let centre = [(w + 1.0) / 2.0, (h + 1.0) / 2.0];
    let (rc, dc) = first.pix_to_sky(centre[0], centre[1]);
    let mut wcs = TanWcs::new(centre, [rc, dc], cd);

    // Match everything, fit, narrow the radius; stop when the matches no longer change.
    let fit_src: Vec<usize> = usable.clone();
    let norm = w.max(h) / 2.0;
    let floor2 = (cfg.ref_sigma_arcsec / 3600.0 / s0).powi(2) + 0.01f64.powi(2);
    let mut radius_px = mcfg.verify_radius_px / 3.0;
    // The last round's pairs (source, reference), its fit and its order.
    let mut last: Option<Round> = None;
    for round in 0..8 {
        let ref_pix: Vec<[f64; 2]> = refs
            .iter()
            .map(|r| match wcs.sky_to_pix(r.ra_deg, r.dec_deg) {
                Some((x, y)) if x > -50.0 && y > -50.0 && x < w + 50.0 && y < h + 50.0 => [x, y],
                _ => [f64::NAN, f64::NAN],
            })
            .collect();
        let tree = KdTree::new(&ref_pix);
        let mut best: std::collections::HashMap<usize, (usize, f64)> = Default::default();
        for &i in &fit_src {
            if let Some((j, d2)) = tree.nearest(&[sources[i].x, sources[i].y], radius_px) {
                let e = best.entry(j).or_insert((i, d2));
                if d2 < e.1 {
                    *e = (i, d2);
                }
            }
        }
        let mut pairs: Vec<(usize, usize)> = best.into_iter().map(|(j, (i, _))| (i, j)).collect();
        pairs.sort_unstable();
        let stars: Vec<Star> = pairs
            .iter()
            .map(|&(i, j)| Star {
                x: sources[i].x,
                y: sources[i].y,
                ra_deg: refs[j].ra_deg,
                dec_deg: refs[j].dec_deg,
                weight: 1.0 / (sources[i].sigma_px.powi(2) + floor2),
            })
            .collect();
        // Two stars per coefficient; a quadratic at most while the radius is wide.
        let cap = if round == 0 {
            cfg.sip_order.min(2)
        } else {
            cfg.sip_order
        };
        let Some(order) = (1..=cap).rev().find(|&o| stars.len() >= 2 * n_terms(o)) else {
            return Err(AstrometryError::NoMatch(format!(
                "{} sources within {radius_px:.1} px of a reference star after the pattern \
                 match ({} pattern pairs); at least 6 are needed",
                stars.len(),
                pm.pairs.len()
            )));
        };
        let Some(f) = fit_clipped(&stars, centre, wcs.crval, order, norm, cfg.clip_sigma) else {
            return Err(AstrometryError::NoMatch(format!(
                "the {} matched stars do not constrain an order-{order} fit",
                stars.len()
            )));
        };
        wcs = f.wcs.clone();
        let settled = last
            .as_ref()
            .is_some_and(|(p, _, o)| *p == pairs && *o == order);
        let next = (5.0 * f.rms_px).clamp(2.0, radius_px.max(2.0));
        last = Some((pairs, f, order));
        if settled && round > 1 {
            break;
        }
        radius_px = next;
    }
    let Some((pairs, f, order)) = last else {
        return Err(AstrometryError::NoMatch("no fit".into()));
    };

    // Acceptance: enough matches, far more than chance, and a small RMS.
    let scale_arcsec = wcs.scale_deg() * 3600.0;
    let rms_arcsec = f.rms_px * scale_arcsec;
    let on_image = refs
        .iter()
        .filter_map(|r| wcs.sky_to_pix(r.ra_deg, r.dec_deg))
        .filter(|&(x, y)| x >= 0.5 && y >= 0.5 && x <= w + 0.5 && y <= h + 0.5)
        .count();
    let chance =
        fit_src.len() as f64 * on_image as f64 * std::f64::consts::PI * radius_px.powi(2) / (w * h);
    let need = (cfg.min_matches as f64).max(3.0 * chance + 5.0 * chance.sqrt());
    if (f.n_used as f64) < need {
        return Err(AstrometryError::Rejected(format!(
            "{} stars matched (radius {radius_px:.2} px), but {need:.0} are needed ({chance:.1} \
             would match by chance)",
            f.n_used
        )));
    }
    if rms_arcsec > cfg.max_rms_arcsec {
        return Err(AstrometryError::Rejected(format!(
            "RMS {rms_arcsec:.3}\" over {} stars is above max_rms_arcsec = {}",
            f.n_used, cfg.max_rms_arcsec
        )));
    }
    let mut wcs = f.wcs.clone();
    let inverse_err_px = fit_inverse(&mut wcs, w, h, order + 2).unwrap_or(f64::NAN);
    let matches = pairs
        .iter()
        .zip(&f.used)
        .map(|(&(i, j), &u)| (i, j, u))
        .collect();
    Ok(Solution {
        wcs,
        matches,
        n_used: f.n_used,
        rms_px: f.rms_px,
        rms_arcsec,
        order,
        inverse_err_px,
        pattern_trials: pm.trials,
    })
}
