//! Linking transient candidates into tracklets without trying all triples.
//!
//! Every pair of detections in two exposures (closest exposures first) is a hypothesis of linear
//! motion, but only pairs the detections' shapes allow are formed: a round detection cannot move
//! much faster than a seeing FWHM per exposure time (its trail would show), so its partner is
//! searched in a small disk; an elongated one (a trail) moves along its major axis, so its
//! partner must lie in that direction. Each hypothesis predicts where the object is in the other
//! exposures, and a grid of each exposure finds the nearest detection there. Hypotheses with
//! enough detections are fitted by least squares, pruned of detections off the line, and checked
//! for rate, motion, and magnitude. The candidates are then accepted best first (more
//! detections, then smaller residuals), each detection belonging to one tracklet at most.
//!
//! The cost grows with the number of detections times the detections near each (tens), not with
//! the cube of the number of detections.

use std::collections::HashSet;

use super::grid::Grid;
use super::{Detection, Exposure, LineFit, LinkConfig};

/// A linked moving object.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracklet {
    /// Indices into the detections, in time order, one per exposure at most.
    pub detections: Vec<usize>,
    /// Distance of each detection from the fitted line at its time, arcseconds.
    pub residuals_arcsec: Vec<f64>,
    /// Where each detection puts the object at its time (xi, eta), arcseconds: its own
    /// position, or for a trail cut at the image's edge the point on its line that the motion
    /// says ([`placed`]).
    pub positions_arcsec: Vec<(f64, f64)>,
    pub rate_arcsec_per_min: f64,
    /// Direction of motion, degrees east of north.
    pub pa_deg: f64,
    pub rms_arcsec: f64,
    /// The fitted position at `t0_min` (arcseconds on the tangent plane).
    pub t0_min: f64,
    pub xi0: f64,
    pub eta0: f64,
    /// The object moves more than a seeing FWHM during an exposure.
    pub trailed: bool,
}

/// A trail this many FWHM long or more is taken as one: its axis says where the object goes.
const TRAIL_FWHM: f64 = 1.0;
/// A round detection may hide a trail up to its measured length plus this many FWHM.
const HIDDEN_TRAIL_FWHM: f64 = 1.5;
/// A trail cut at the image's edge shorter than this many FWHM shows no direction: what is left
/// is a blob at the edge (often blended), whose axis the cut and the neighbour set.
const CUT_AXIS_FWHM: f64 = 3.0;

/// What a detection's shape says about the motion.
#[derive(Clone, Copy)]
struct Shape {
    /// Slowest and fastest rate the shape allows, "/min.
    min_rate: f64,
    max_rate: f64,
    /// Unit vector of a trail's axis (xi, eta), when it is a trail.
    axis: Option<(f64, f64)>,
    /// Allowed angle between the motion and the axis, radians.
    axis_tol: f64,
    /// A trail cut at the image's edge: it does not say where the object was, so it joins
    /// hypotheses and does not make them.
    cut_trail: bool,
}

fn shape(d: &Detection, exp: &Exposure, cfg: &LinkConfig) -> Shape {
    let fwhm = cfg.seeing_fwhm_arcsec;
    let exptime = exp.exptime_min.max(1e-6);
    let cut_trail = d.truncated && d.trail_arcsec >= TRAIL_FWHM * fwhm;
    if cut_trail && d.trail_arcsec < CUT_AXIS_FWHM * fwhm {
        // Any rate and direction: the rest of the trail lies beyond the edge.
        return Shape {
            min_rate: 0.0,
            max_rate: cfg.max_rate_arcsec_per_min,
            axis: None,
            axis_tol: 0.0,
            cut_trail,
        };
    }
    if d.trail_arcsec >= TRAIL_FWHM * fwhm {
        let pa = d.axis_pa_deg.to_radians();
        Shape {
            // The object moved at least along the trail (half of it: a measured length may
            // include a blended neighbour).
            min_rate: (0.5 * d.trail_arcsec - fwhm).max(0.0) / exptime,
            max_rate: cfg.max_rate_arcsec_per_min,
            axis: Some((pa.sin(), pa.cos())),
            axis_tol: 10f64.to_radians() + (fwhm / d.trail_arcsec).atan(),
            cut_trail,
        }
    } else {
        Shape {
            min_rate: 0.0,
            max_rate: ((longest_trail_arcsec(d, fwhm) + HIDDEN_TRAIL_FWHM * fwhm) / exptime)
                .min(cfg.max_rate_arcsec_per_min),
            axis: None,
            axis_tol: 0.0,
            cut_trail,
        }
    }
}

/// The longest trail a round detection's shape allows, arcseconds: its measured length, or
/// longer by three sigma of the second moments' noise. The trail's length comes from the
/// difference of the moments (L^2 = 12 (A^2 - B^2)); the noise on A^2 of a source at S/N s is
/// about sqrt(2) A^2 / s, so L^2 may be short by 3 x 12 x sqrt(2) A^2 / s (s from the
/// magnitude's error, 1.0857 / magerr: the flux's S/N, which a blend does not inflate as it
/// does the position's error). A faint trail often looks round: at 1.2" seeing and S/N 6 it
/// may be 1.5" long though none is measured.
fn longest_trail_arcsec(d: &Detection, fwhm: f64) -> f64 {
    let a2 = (fwhm / 2.3548).powi(2) + d.trail_arcsec.powi(2) / 12.0;
    let snr = 1.0857 / d.magerr.max(1e-6);
    if !snr.is_finite() {
        return d.trail_arcsec;
    }
    (d.trail_arcsec.powi(2) + 36.0 * 2f64.sqrt() * a2 / snr).sqrt()
}

impl Shape {
    /// Whether motion (vx, vy) "/min is what this shape allows.
    fn allows(&self, vx: f64, vy: f64) -> bool {
        let rate = vx.hypot(vy);
        if rate > self.max_rate * 1.0001 || rate < self.min_rate {
            return false;
        }
        match self.axis {
            None => true,
            Some((ax, ay)) => {
                if rate == 0.0 {
                    return false;
                }
                let cos = ((vx * ax + vy * ay) / rate).abs();
                cos >= self.axis_tol.cos()
            }
        }
    }
}

/// Where detection `d` puts the object moving at (vx, vy) "/min that is at (px, py) at its time.
/// A whole detection is where it is. A truncated one (a trail cut at the image's edge) is
/// only the part left on the image: its centroid lies along the motion up to half the part cut
/// off from the middle (rate x exposure time less its own length, halved), so along the motion
/// it is placed at (px, py) unless it is farther than that; across, it is where it is.
fn placed(d: &Detection, exptime_min: f64, px: f64, py: f64, vx: f64, vy: f64) -> (f64, f64) {
    let rate = vx.hypot(vy);
    if !d.truncated || rate == 0.0 {
        return (d.xi, d.eta);
    }
    let (ux, uy) = (vx / rate, vy / rate);
    let (dx, dy) = (d.xi - px, d.eta - py);
    let along = dx * ux + dy * uy;
    let across = -dx * uy + dy * ux;
    let cut = (0.5 * (rate * exptime_min - d.trail_arcsec)).max(0.0);
    let along = along.signum() * (along.abs() - cut).max(0.0);
    (px + along * ux - across * uy, py + along * uy + across * ux)
}

/// The detection of one exposure nearest to where an object moving at `v` ("/min) is predicted
/// at `p`, within `tol` (a trail cut at the edge measured where [`placed`] puts it, up to `cut`
/// farther), whose shape allows that motion. `cut_trails_only`: only trails cut at the edge.
#[allow(clippy::too_many_arguments)]
fn nearest_member(
    grid: &Grid,
    dets: &[Detection],
    shapes: &[Shape],
    p: (f64, f64),
    v: (f64, f64),
    tol: f64,
    cut: f64,
    exptime: f64,
    cut_trails_only: bool,
) -> Option<usize> {
    let ((px, py), (vx, vy)) = (p, v);
    let mut best: Option<(u32, f64)> = None;
    grid.within(px, py, tol + cut, |k, d2| {
        let dk = &dets[k as usize];
        if cut_trails_only && !shapes[k as usize].cut_trail {
            return;
        }
        let d2 = if dk.truncated {
            let (x, y) = placed(dk, exptime, px, py, vx, vy);
            (x - px).powi(2) + (y - py).powi(2)
        } else {
            d2
        };
        if d2 <= tol * tol && best.is_none_or(|b| d2 < b.1) && shapes[k as usize].allows(vx, vy) {
            best = Some((k, d2));
        }
    });
    best.map(|(k, _)| k as usize)
}

/// Links `dets` into tracklets.
pub fn link(exposures: &[Exposure], dets: &[Detection], cfg: &LinkConfig) -> Vec<Tracklet> {
    let single: Vec<Vec<usize>> = (0..dets.len()).map(|i| vec![i]).collect();
    link_pieces(exposures, dets, &single, dets.len(), cfg)
}

/// Links `dets`, where detection i is made of `pieces[i]` (indices below `n_pieces`): a trail
/// assembled from several sources ([`super::trails`]) or one source. A piece goes to one
/// tracklet at most, whichever detection holds it.
pub fn link_pieces(
    exposures: &[Exposure],
    dets: &[Detection],
    pieces: &[Vec<usize>],
    n_pieces: usize,
    cfg: &LinkConfig,
) -> Vec<Tracklet> {
    let n_exp = exposures.len();
    if n_exp < cfg.min_detections.max(2) {
        return Vec::new();
    }
    let shapes: Vec<Shape> = dets
        .iter()
        .map(|d| shape(d, &exposures[d.exposure], cfg))
        .collect();
    let mut by_exp: Vec<Vec<usize>> = vec![Vec::new(); n_exp];
    for (i, d) in dets.iter().enumerate() {
        if d.exposure < n_exp {
            by_exp[d.exposure].push(i);
        }
    }
    let cell = (2.0 * cfg.max_residual_arcsec).max(1.0);
    let grids: Vec<Grid> = by_exp
        .iter()
        .map(|ix| {
            let pts: Vec<(f64, f64, u32)> = ix
                .iter()
                .map(|&i| (dets[i].xi, dets[i].eta, i as u32))
                .collect();
            Grid::new(&pts, cell)
        })
        .collect();
    // Exposures in time order; seed pairs closest in sequence first.
    let mut order: Vec<usize> = (0..n_exp).collect();
    order.sort_by(|a, b| exposures[*a].t_min.total_cmp(&exposures[*b].t_min));
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    let mut candidates: Vec<Tracklet> = Vec::new();
    let mut members: Vec<usize> = Vec::with_capacity(n_exp);
    for gap in 1..n_exp {
        for w in 0..n_exp - gap {
            let (ei, ej) = (order[w], order[w + gap]);
            let (ti, tj) = (exposures[ei].t_min, exposures[ej].t_min);
            let dt = tj - ti;
            if dt <= 0.0 {
                continue;
            }
            for &a in &by_exp[ei] {
                let da = &dets[a];
                let sa = shapes[a];
                // A trail cut at the edge does not say where the object was: it joins
                // hypotheses, it does not make them.
                if sa.cut_trail {
                    continue;
                }
                let reach = sa.max_rate * dt + cfg.max_residual_arcsec;
                grids[ej].within(da.xi, da.eta, reach, |b, _| {
                    let b = b as usize;
                    let db = &dets[b];
                    if shapes[b].cut_trail {
                        return;
                    }
                    let (vx, vy) = ((db.xi - da.xi) / dt, (db.eta - da.eta) / dt);
                    if !sa.allows(vx, vy) || !shapes[b].allows(vx, vy) {
                        return;
                    }
                    let sigma_v = (da.sigma_arcsec.powi(2) + db.sigma_arcsec.powi(2)).sqrt() / dt;
                    let t_mid = 0.5 * (ti + tj);
                    members.clear();
                    members.push(a);
                    members.push(b);
                    for &ek in &order {
                        if ek == ei || ek == ej {
                            continue;
                        }
                        let tk = exposures[ek].t_min;
                        let (px, py) = (da.xi + vx * (tk - ti), da.eta + vy * (tk - ti));
                        let tol = cfg.max_residual_arcsec + 3.0 * sigma_v * (tk - t_mid).abs();
                        // A trail cut at the edge may lie up to half the motion during the
                        // exposure from the predicted position.
                        let exptime = exposures[ek].exptime_min;
                        let cut = 0.5 * vx.hypot(vy) * exptime;
                        let near = nearest_member(
                            &grids[ek],
                            dets,
                            &shapes,
                            (px, py),
                            (vx, vy),
                            tol,
                            cut,
                            exptime,
                            false,
                        );
                        members.extend(near);
                    }
                    offer(exposures, dets, &members, cfg, &mut seen, &mut candidates);
                });
            }
        }
    }
    // A whole trail among trails cut at the edge makes no pair with them: its length gives
    // the rate and its axis the direction (up to its sign), which predict where the cut ones
    // are.
    for (a, da) in dets.iter().enumerate() {
        let Some((ax, ay)) = shapes[a].axis else {
            continue;
        };
        let ta = exposures[da.exposure].t_min;
        let rate = da.trail_arcsec / exposures[da.exposure].exptime_min.max(1e-6);
        if da.truncated || rate < cfg.min_rate_arcsec_per_min || rate > cfg.max_rate_arcsec_per_min
        {
            continue;
        }
        // The trail's length is known to about a seeing FWHM at each end.
        let sigma_v = 2.0 * cfg.seeing_fwhm_arcsec / exposures[da.exposure].exptime_min.max(1e-6);
        for sign in [1.0, -1.0] {
            let (vx, vy) = (sign * rate * ax, sign * rate * ay);
            members.clear();
            members.push(a);
            for &ek in &order {
                if ek == da.exposure {
                    continue;
                }
                let dt = exposures[ek].t_min - ta;
                let (px, py) = (da.xi + vx * dt, da.eta + vy * dt);
                let tol = cfg.max_residual_arcsec + sigma_v * dt.abs();
                let exptime = exposures[ek].exptime_min;
                let cut = 0.5 * rate * exptime;
                // Only trails cut at the edge: a whole one would have made a pair.
                let near = nearest_member(
                    &grids[ek],
                    dets,
                    &shapes,
                    (px, py),
                    (vx, vy),
                    tol,
                    cut,
                    exptime,
                    true,
                );
                members.extend(near);
            }
            offer(exposures, dets, &members, cfg, &mut seen, &mut candidates);
        }
    }
    accept(candidates, pieces, n_pieces)
}

/// A candidate tracklet from `members`, if there are enough of them, its fit passes and no
/// hypothesis has proposed the same detections before.
fn offer(
    exposures: &[Exposure],
    dets: &[Detection],
    members: &[usize],
    cfg: &LinkConfig,
    seen: &mut HashSet<Vec<usize>>,
    candidates: &mut Vec<Tracklet>,
) {
    if members.len() < cfg.min_detections {
        return;
    }
    if let Some(t) = fit_and_check(exposures, dets, members, cfg) {
        if seen.insert(t.detections.clone()) {
            candidates.push(t);
        }
    }
}

/// Fits a line to `members`, drops the worst detections while any lies farther than the limit
/// (keeping at least `min_detections`), and checks rate, motion and magnitudes.
fn fit_and_check(
    exposures: &[Exposure],
    dets: &[Detection],
    members: &[usize],
    cfg: &LinkConfig,
) -> Option<Tracklet> {
    let mut m: Vec<usize> = members.to_vec();
    m.sort_by(|a, b| {
        exposures[dets[*a].exposure]
            .t_min
            .total_cmp(&exposures[dets[*b].exposure].t_min)
    });
    let point = |i: &usize| {
        let d = &dets[*i];
        (exposures[d.exposure].t_min, d.xi, d.eta)
    };
    loop {
        // Magnitudes: drop the detection farthest from the median if it is out of bounds. The
        // median is of the whole detections: trails cut at the edge lost light, and where
        // half the detections are cut their median would make the whole ones look too bright.
        let whole: Vec<f64> = m
            .iter()
            .filter(|&&i| !dets[i].truncated)
            .map(|&i| dets[i].mag)
            .collect();
        let mut mags: Vec<f64> = if whole.is_empty() {
            m.iter().map(|&i| dets[i].mag).collect()
        } else {
            whole
        };
        mags.sort_by(f64::total_cmp);
        let median = mags[mags.len() / 2];
        let worst_mag = m
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let d = &dets[i];
                // A trail cut at the edge lost light: it may be fainter, not brighter.
                let deviation = if d.truncated {
                    median - d.mag
                } else {
                    (d.mag - median).abs()
                };
                let excess = deviation - cfg.max_mag_deviation - 3.0 * d.magerr;
                (
                    k,
                    if excess.is_nan() {
                        f64::INFINITY
                    } else {
                        excess
                    },
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if worst_mag.1 > 0.0 {
            if m.len() <= cfg.min_detections {
                return None;
            }
            m.remove(worst_mag.0);
            continue;
        }
        let (fit, positions) = fit_placed(exposures, dets, &m, cfg)?;
        let res: Vec<f64> = m
            .iter()
            .zip(&positions)
            .map(|(i, &(x, y))| {
                let (px, py) = fit.at(point(i).0);
                (x - px).hypot(y - py)
            })
            .collect();
        // A detection may lie max_residual_arcsec from the line, or three times its own error
        // where that is larger (trails assembled from pieces).
        let (worst, excess) = res
            .iter()
            .zip(&m)
            .map(|(r, &i)| r - cfg.max_residual_arcsec.max(3.0 * dets[i].sigma_arcsec))
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if excess > 0.0 {
            if m.len() <= cfg.min_detections {
                return None;
            }
            m.remove(worst);
            continue;
        }
        // The residuals must also agree with the detections' position errors.
        let dof = 2 * m.len() - 4;
        if dof > 0 {
            let (worst, _) = res
                .iter()
                .zip(&m)
                .map(|(r, &i)| r / dets[i].sigma_arcsec)
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))?;
            let chi2: f64 = res
                .iter()
                .zip(&m)
                .map(|(r, &i)| (r / dets[i].sigma_arcsec).powi(2))
                .sum();
            if chi2 > cfg.max_chi2_per_dof * dof as f64 {
                if m.len() <= cfg.min_detections {
                    return None;
                }
                m.remove(worst);
                continue;
            }
        }
        let rate = fit.rate();
        if rate < cfg.min_rate_arcsec_per_min || rate > cfg.max_rate_arcsec_per_min {
            return None;
        }
        // A trail cut at the edge is placed by the others' motion, which whole trails give
        // only when they are whole: a piece of a trail (much shorter than the motion during
        // its exposure) lies anywhere along it, and the line through pieces places the cut
        // trail wrong. Such a tracklet keeps its whole detections only.
        let piece = |i: usize| {
            let d = &dets[i];
            let motion = rate * exposures[d.exposure].exptime_min;
            !d.truncated && d.trail_arcsec < 0.5 * motion - cfg.seeing_fwhm_arcsec
        };
        if let Some(k) = m.iter().position(|&i| dets[i].truncated) {
            if m.iter().any(|&i| piece(i)) {
                if m.len() <= cfg.min_detections {
                    return None;
                }
                m.remove(k);
                continue;
            }
        }
        let t_first = point(&m[0]).0;
        let t_last = point(&m[m.len() - 1]).0;
        let span = t_last - t_first;
        let motion = rate * span;
        // The motion's significance from a fit weighted by the position errors, as in the
        // stationary test: one or two blended detections with large errors do not hide the
        // motion that the others show.
        let weighted =
            LineFit::fit_weighted(m.iter().zip(&positions).map(|(&i, &(x, y))| {
                (point(&i).0, x, y, dets[i].sigma_arcsec.max(1e-3).powi(-2))
            }))?;
        let significance = weighted.rate() * weighted.stt.sqrt();
        if motion < cfg.min_motion_arcsec || significance < cfg.min_motion_sigma {
            return None;
        }
        let exptime = m
            .iter()
            .map(|&i| exposures[dets[i].exposure].exptime_min)
            .sum::<f64>()
            / m.len() as f64;
        let rms = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64).sqrt();
        return Some(Tracklet {
            detections: m,
            residuals_arcsec: res,
            positions_arcsec: positions,
            rate_arcsec_per_min: rate,
            pa_deg: fit.pa_deg(),
            rms_arcsec: rms,
            t0_min: fit.t0,
            xi0: fit.xi0,
            eta0: fit.eta0,
            trailed: rate * exptime > cfg.seeing_fwhm_arcsec,
        });
    }
}

/// The line through `m`, with truncated trails [`placed`] on it: fitted first to the whole
/// detections (to all where fewer than two are whole), then twice more with the truncated ones
/// placed where the last fit says.
fn fit_placed(
    exposures: &[Exposure],
    dets: &[Detection],
    m: &[usize],
    cfg: &LinkConfig,
) -> Option<(LineFit, Vec<(f64, f64)>)> {
    let t = |i: usize| exposures[dets[i].exposure].t_min;
    let mut positions: Vec<(f64, f64)> = m.iter().map(|&i| (dets[i].xi, dets[i].eta)).collect();
    let whole: Vec<usize> = m.iter().copied().filter(|&i| !dets[i].truncated).collect();
    if let [w] = whole[..] {
        if dets[w].trail_arcsec >= TRAIL_FWHM * cfg.seeing_fwhm_arcsec {
            let fit = one_trail_fit(exposures, dets, m, w, cfg)?;
            for (k, &i) in m.iter().enumerate() {
                let (px, py) = fit.at(t(i));
                let exptime = exposures[dets[i].exposure].exptime_min;
                positions[k] = placed(&dets[i], exptime, px, py, fit.v_xi, fit.v_eta);
            }
            return Some((fit, positions));
        }
    }
    let whole = m
        .iter()
        .filter(|&&i| !dets[i].truncated)
        .map(|&i| (t(i), dets[i].xi, dets[i].eta));
    let mut fit = match LineFit::fit(whole) {
        Some(f) => f,
        None => LineFit::fit(m.iter().map(|&i| (t(i), dets[i].xi, dets[i].eta)))?,
    };
    if m.iter().all(|&i| !dets[i].truncated) {
        return Some((fit, positions));
    }
    for _ in 0..3 {
        for (k, &i) in m.iter().enumerate() {
            let d = &dets[i];
            let (px, py) = fit.at(t(i));
            let exptime = exposures[d.exposure].exptime_min;
            positions[k] = placed(d, exptime, px, py, fit.v_xi, fit.v_eta);
        }
        fit = LineFit::fit(m.iter().zip(&positions).map(|(&i, p)| (t(i), p.0, p.1)))?;
    }
    Some((fit, positions))
}

/// The motion of a tracklet whose only whole detection is the trail `w`, the others trails cut
/// at the edge (which only bound where the object was): through `w`'s middle along its axis,
/// in the direction in which the cut trails lie, at the rate its length gives, but within the
/// rates at which every cut trail's visible part lies inside the object's trail in its
/// exposure (give or take a seeing FWHM at each end).
fn one_trail_fit(
    exposures: &[Exposure],
    dets: &[Detection],
    m: &[usize],
    w: usize,
    cfg: &LinkConfig,
) -> Option<LineFit> {
    let dw = &dets[w];
    let tw = exposures[dw.exposure].t_min;
    let pa = dw.axis_pa_deg.to_radians();
    let (mut ux, mut uy) = (pa.sin(), pa.cos());
    let along = |i: usize| (dets[i].xi - dw.xi) * ux + (dets[i].eta - dw.eta) * uy;
    let dt = |i: usize| exposures[dets[i].exposure].t_min - tw;
    let others: Vec<usize> = m.iter().copied().filter(|&i| i != w).collect();
    if others.iter().map(|&i| along(i) * dt(i)).sum::<f64>() < 0.0 {
        (ux, uy) = (-ux, -uy);
    }
    // The line across: through the points (along, across) of the trail's middle and the cut
    // trails' centroids, weighted by their errors, with the trail's axis as a prior on its
    // slope (known to its position error over half its length).
    let sigma_slope = dw.sigma_arcsec / (0.5 * dw.trail_arcsec).max(cfg.seeing_fwhm_arcsec);
    let (mut s, mut su, mut suu, mut sv, mut suv) = (0.0, 0.0, sigma_slope.powi(-2), 0.0, 0.0);
    for &i in m {
        let (dx, dy) = (dets[i].xi - dw.xi, dets[i].eta - dw.eta);
        let (u, v) = (dx * ux + dy * uy, -dx * uy + dy * ux);
        let wt = dets[i].sigma_arcsec.max(1e-3).powi(-2);
        s += wt;
        su += wt * u;
        suu += wt * u * u;
        sv += wt * v;
        suv += wt * u * v;
    }
    let det = s * suu - su * su;
    if det <= 0.0 {
        return None;
    }
    let (c, slope) = ((suu * sv - su * suv) / det, (s * suv - su * sv) / det);
    let (x0, y0) = (dw.xi - c * uy, dw.eta + c * ux);
    let n = slope.hypot(1.0);
    (ux, uy) = ((ux - slope * uy) / n, (uy + slope * ux) / n);
    let along = |i: usize| (dets[i].xi - x0) * ux + (dets[i].eta - y0) * uy;
    let slack = cfg.seeing_fwhm_arcsec;
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    for &i in &others {
        let (u, d) = (along(i), dt(i));
        let half_exp = 0.5 * exposures[dets[i].exposure].exptime_min;
        let half_len = 0.5 * dets[i].trail_arcsec;
        // The visible part's far end is not beyond the trail's end: r (d + E/2) >= its far end;
        // its near end not before the trail's start: r (d - E/2) <= its near end.
        for (c, b, at_least) in [
            (d + half_exp, u + half_len - slack, true),
            (d - half_exp, u - half_len + slack, false),
        ] {
            if c == 0.0 {
                if (at_least && b > 0.0) || (!at_least && b < 0.0) {
                    return None;
                }
            } else if (c > 0.0) == at_least {
                lo = lo.max(b / c);
            } else {
                hi = hi.min(b / c);
            }
        }
    }
    if lo > hi {
        return None;
    }
    let rate = (dw.trail_arcsec / exposures[dw.exposure].exptime_min.max(1e-6)).clamp(lo, hi);
    let t_mean = m
        .iter()
        .map(|&i| exposures[dets[i].exposure].t_min)
        .sum::<f64>()
        / m.len() as f64;
    let stt = m
        .iter()
        .map(|&i| (exposures[dets[i].exposure].t_min - t_mean).powi(2))
        .sum();
    Some(LineFit {
        t0: tw,
        xi0: x0 + along(w) * ux,
        eta0: y0 + along(w) * uy,
        v_xi: rate * ux,
        v_eta: rate * uy,
        stt,
    })
}

/// Best first: more detections, then more pieces, then smaller RMS; a piece goes to one
/// tracklet at most. A trail broken into pieces links piece by piece too (one piece per
/// exposure, off the trail's middle, as well on a line as the whole trails when the pieces
/// repeat): the tracklet of the whole trails, which holds more of its pieces, goes first, so that
/// one trail makes one tracklet at its middle, not one per piece.
fn accept(mut candidates: Vec<Tracklet>, pieces: &[Vec<usize>], n_pieces: usize) -> Vec<Tracklet> {
    let n_held = |t: &Tracklet| t.detections.iter().map(|&i| pieces[i].len()).sum::<usize>();
    candidates.sort_by(|a, b| {
        b.detections
            .len()
            .cmp(&a.detections.len())
            .then(n_held(b).cmp(&n_held(a)))
            .then(a.rms_arcsec.total_cmp(&b.rms_arcsec))
            .then(a.detections.cmp(&b.detections))
    });
    let mut used = vec![false; n_pieces];
    let mut out = Vec::new();
    for t in candidates {
        if t.detections
            .iter()
            .any(|&i| pieces[i].iter().any(|&p| used[p]))
        {
            continue;
        }
        for &i in &t.detections {
            for &p in &pieces[i] {
                used[p] = true;
            }
        }
        out.push(t);
    }
    out.sort_by(|a, b| {
        a.t0_min
            .total_cmp(&b.t0_min)
            .then(a.xi0.total_cmp(&b.xi0))
            .then(a.eta0.total_cmp(&b.eta0))
    });
    out
}
