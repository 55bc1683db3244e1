//! Which detections are stationary: found again at the same place in other exposures, with no
//! significant motion across them. Stars and galaxies are stationary on the (aligned) sky; hot
//! pixels, bad columns and dust are stationary on the detector, so the task asks twice.
//!
//! A detection with a neighbour within `radius_arcsec` in at least `min_others` other exposures
//! (the nearest one of like shape in each: a trail matched by a round star is an asteroid
//! crossing it; in all other exposures but one for a bright source, S/N above about
//! 20, whose star would be found in each) is stationary unless a straight-line fit through it
//! and those neighbours, weighted by their position errors, moves at least `min_motion_arcsec`
//! over the whole sequence *and* by at least `min_motion_sigma` standard deviations: a slow asteroid whose steps are shorter than the
//! radius is kept, a faint star whose centroid scatters is not. Before that test the group
//! grows along its fitted line into the exposures where nothing matched in place (a slow
//! mover matches only its neighbours in time, whose short lever arm cannot show its motion).

use super::grid::Grid;
use super::{Detection, Exposure, LineFit};

/// Magnitude error of a bright source (S/N about 20): a star this bright is found in every
/// exposure, so it needs matches in all other exposures but one to be stationary.
const BRIGHT_MAGERR: f64 = 0.05;

/// Thresholds of [`stationary`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationaryConfig {
    pub radius_arcsec: f64,
    /// Other exposures that must show the source; `None` for half of them (at least one).
    pub min_others: Option<usize>,
    pub min_motion_arcsec: f64,
    pub min_motion_sigma: f64,
    /// Seeing FWHM, arcseconds: how long a source must be to be a trail ([`alike`]).
    pub seeing_fwhm_arcsec: f64,
}

/// Whether two detections at one place may be one source seen twice: a star, a galaxy or a
/// defect has the same shape in every exposure, so a trail (at least two seeings long) and a
/// source less than half as long are two objects (an asteroid crossing a star), not one.
fn alike(a: &Detection, b: &Detection, fwhm: f64) -> bool {
    let (short, long) = if a.trail_arcsec < b.trail_arcsec {
        (a.trail_arcsec, b.trail_arcsec)
    } else {
        (b.trail_arcsec, a.trail_arcsec)
    };
    long < 2.0 * fwhm || short >= 0.5 * long
}

/// Marks the stationary detections (same order as `dets`).
pub fn stationary(exposures: &[Exposure], dets: &[Detection], cfg: &StationaryConfig) -> Vec<bool> {
    let n_exp = exposures.len();
    let need = cfg
        .min_others
        .unwrap_or((n_exp.saturating_sub(1) / 2).max(1));
    let grids: Vec<Grid> = (0..n_exp)
        .map(|e| {
            let pts: Vec<(f64, f64, u32)> = dets
                .iter()
                .enumerate()
                .filter(|(_, d)| d.exposure == e)
                .map(|(i, d)| (d.xi, d.eta, i as u32))
                .collect();
            Grid::new(&pts, cfg.radius_arcsec.max(0.1))
        })
        .collect();
    let t_first = exposures.iter().map(|e| e.t_min).fold(f64::MAX, f64::min);
    let t_last = exposures.iter().map(|e| e.t_min).fold(f64::MIN, f64::max);
    let span = (t_last - t_first).max(0.0);
    let mut group: Vec<usize> = Vec::with_capacity(n_exp);
    dets.iter()
        .enumerate()
        .map(|(i, d)| {
            group.clear();
            group.push(i);
            for (e, g) in grids.iter().enumerate() {
                if e == d.exposure {
                    continue;
                }
                let mut best: Option<(u32, f64)> = None;
                g.within(d.xi, d.eta, cfg.radius_arcsec, |j, d2| {
                    if best.is_none_or(|b| d2 < b.1)
                        && alike(d, &dets[j as usize], cfg.seeing_fwhm_arcsec)
                    {
                        best = Some((j, d2));
                    }
                });
                if let Some((j, _)) = best {
                    group.push(j as usize);
                }
            }
            // A star as bright as this one is found in every exposure, unless an edge, a bad
            // column or a neighbour hides it: a bright source found again in fewer exposures
            // is rather a slow mover that passed near a fainter source (or that a blend
            // pulled towards its position in the exposure before).
            let need = if d.magerr < BRIGHT_MAGERR {
                need.max(n_exp.saturating_sub(2))
            } else {
                need
            };
            if group.len() - 1 < need {
                return false;
            }
            // Weighted by the detections' errors: one blended or faint detection does not
            // hide the motion that the others show.
            let point = |k: usize| {
                let x = &dets[k];
                let w = 1.0 / x.sigma_arcsec.max(1e-3).powi(2);
                (exposures[x.exposure].t_min, x.xi, x.eta, w)
            };
            let Some(mut fit) = LineFit::fit_weighted(group.iter().map(|&k| point(k))) else {
                // Same time (should not happen): treat as stationary.
                return true;
            };
            // A slow mover steps less than the radius between neighbouring exposures, so only
            // those match; two or three close in time cannot show its motion. The group grows
            // along its own line into the exposures that did not match, where a slow mover
            // is found on and a star is found again in place.
            if group.len() < n_exp {
                let mut grown = false;
                for (e, g) in grids.iter().enumerate() {
                    if group.iter().any(|&k| dets[k].exposure == e) {
                        continue;
                    }
                    let (px, py) = fit.at(exposures[e].t_min);
                    let mut best: Option<(u32, f64)> = None;
                    g.within(px, py, cfg.radius_arcsec, |j, d2| {
                        if best.is_none_or(|b| d2 < b.1)
                            && alike(d, &dets[j as usize], cfg.seeing_fwhm_arcsec)
                        {
                            best = Some((j, d2));
                        }
                    });
                    if let Some((j, _)) = best {
                        group.push(j as usize);
                        grown = true;
                    }
                }
                if grown {
                    match LineFit::fit_weighted(group.iter().map(|&k| point(k))) {
                        Some(f) => fit = f,
                        None => return true,
                    }
                }
            }
            let motion = fit.rate() * span;
            let sigma_motion = span / fit.stt.sqrt();
            motion < cfg.min_motion_arcsec || motion < cfg.min_motion_sigma * sigma_motion
        })
        .collect()
}
