//! Trails that extraction broke into pieces, put back together within each exposure.
//!
//! A fast mover's trail is a faint line: noise, a star across it or the deblender cut it into
//! several sources, each elongated along the trail (bright trails) or round (faint ones), none of
//! them centred on the object's mid-exposure position. Linked as they are, their centroids miss
//! the line of motion by up to half the trail. Here collinear pieces close to each other in one
//! exposure are chained into one trail detection: its middle is the mid-exposure position, its
//! length the motion during the exposure.
//!
//! A chain starts from an elongated piece (its axis is the direction) or, for faint trails, from
//! two round pieces close together, and grows from its ends along the line while a piece lies on
//! the line within a few seeing FWHM of the end. Chains of round pieces only need three pieces:
//! two round noise peaks side by side are common, three on one line with small gaps much less
//! so. Chains do not replace their pieces: both go to linking, which keeps what links best
//! and uses each piece once.

use super::grid::Grid;
use super::{Detection, Exposure, LinkConfig};

/// A trail detection made of several pieces of one exposure.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub detection: Detection,
    /// Indices of the pieces in the detections, along the trail.
    pub pieces: Vec<usize>,
}

/// Largest gap between the ends of neighbouring pieces, seeing FWHMs.
const MAX_GAP_FWHM: f64 = 3.0;
/// Largest distance of a piece's centre from the chain's line, seeing FWHMs.
const MAX_OFFSET_FWHM: f64 = 0.5;
/// Pieces at least this many FWHM long are elongated: their axis must follow the line.
const ELONGATED_FWHM: f64 = 1.0;
/// Allowed angle between an elongated piece's axis and the line, degrees, plus the angle
/// whose tangent is a seeing FWHM over the piece's length (a short piece's axis is known to
/// tens of degrees: a piece 1.5 FWHM long, elongation 1.5, is 34 degrees more).
const AXIS_TOL_DEG: f64 = 15.0;
/// Chains longer than this many pieces are not grown further (a bad column, a galaxy's arm).
const MAX_PIECES: usize = 40;

/// Every chain of two or more pieces (three if none is elongated) in each exposure.
pub fn assemble(exposures: &[Exposure], dets: &[Detection], cfg: &LinkConfig) -> Vec<Chain> {
    let fwhm = cfg.seeing_fwhm_arcsec.max(0.1);
    let gap = MAX_GAP_FWHM * fwhm;
    let mut out: Vec<Chain> = Vec::new();
    let mut seen: std::collections::HashSet<Vec<usize>> = std::collections::HashSet::new();
    for e in 0..exposures.len() {
        let ix: Vec<usize> = (0..dets.len()).filter(|&i| dets[i].exposure == e).collect();
        let pts: Vec<(f64, f64, u32)> = ix
            .iter()
            .map(|&i| (dets[i].xi, dets[i].eta, i as u32))
            .collect();
        let grid = Grid::new(&pts, gap);
        let elongated = |i: usize| dets[i].trail_arcsec >= ELONGATED_FWHM * fwhm;
        // The longest piece decides how far a neighbour's centre may be.
        let longest = ix.iter().map(|&i| dets[i].trail_arcsec).fold(0.0, f64::max);
        let mut seeds: Vec<(usize, (f64, f64))> = Vec::new();
        for &i in &ix {
            let d = &dets[i];
            if elongated(i) {
                let pa = d.axis_pa_deg.to_radians();
                seeds.push((i, (pa.sin(), pa.cos())));
            } else {
                grid.within(d.xi, d.eta, gap + fwhm, |j, _| {
                    let j = j as usize;
                    if j > i && !elongated(j) {
                        let (dx, dy) = (dets[j].xi - d.xi, dets[j].eta - d.eta);
                        let n = dx.hypot(dy);
                        if n > 0.0 {
                            seeds.push((i, (dx / n, dy / n)));
                        }
                    }
                });
            }
        }
        for (seed, dir) in seeds {
            if let Some(c) = grow(dets, &grid, seed, dir, fwhm, longest, &elongated) {
                let mut key = c.pieces.clone();
                key.sort_unstable();
                if seen.insert(key) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// Grows a chain from `seed` along `dir` (a unit vector) in both directions.
fn grow(
    dets: &[Detection],
    grid: &Grid,
    seed: usize,
    dir: (f64, f64),
    fwhm: f64,
    longest: f64,
    elongated: &dyn Fn(usize) -> bool,
) -> Option<Chain> {
    let gap = MAX_GAP_FWHM * fwhm;
    let (ox, oy) = (dets[seed].xi, dets[seed].eta);
    let along = |i: usize| (dets[i].xi - ox) * dir.0 + (dets[i].eta - oy) * dir.1;
    let across = |i: usize| (-(dets[i].xi - ox) * dir.1 + (dets[i].eta - oy) * dir.0).abs();
    let half = |i: usize| 0.5 * dets[i].trail_arcsec;
    let fits_line = |i: usize| {
        across(i) <= MAX_OFFSET_FWHM * fwhm
            && (!elongated(i) || {
                let pa = dets[i].axis_pa_deg.to_radians();
                let tol = AXIS_TOL_DEG.to_radians() + (fwhm / dets[i].trail_arcsec).atan();
                (pa.sin() * dir.0 + pa.cos() * dir.1).abs() >= tol.cos()
            })
    };
    let mut pieces = vec![seed];
    let (mut lo, mut hi) = (-half(seed), half(seed));
    for sign in [1.0, -1.0] {
        loop {
            if pieces.len() >= MAX_PIECES {
                break;
            }
            let end = if sign > 0.0 { hi } else { lo };
            let (ex, ey) = (ox + end * dir.0, oy + end * dir.1);
            // The nearest piece beyond this end whose near end is within the gap.
            let mut best: Option<(usize, f64)> = None;
            grid.within(ex, ey, gap + 0.5 * longest, |j, _| {
                let j = j as usize;
                if pieces.contains(&j) || !fits_line(j) {
                    return;
                }
                let u = along(j);
                let near = sign * (u - end) - half(j);
                let beyond = sign * (u - end) > 0.0;
                if beyond && near <= gap && best.is_none_or(|b| near < b.1) {
                    best = Some((j, near));
                }
            });
            let Some((j, _)) = best else { break };
            pieces.push(j);
            let u = along(j);
            lo = lo.min(u - half(j));
            hi = hi.max(u + half(j));
        }
    }
    let any_elongated = pieces.iter().any(|&i| elongated(i));
    if pieces.len() < 2 || (!any_elongated && pieces.len() < 3) {
        return None;
    }
    pieces.sort_by(|a, b| along(*a).total_cmp(&along(*b)));
    let mid = 0.5 * (lo + hi);
    // The line's offset across: the mean of the pieces' (signed) offsets.
    let off = pieces
        .iter()
        .map(|&i| -(dets[i].xi - ox) * dir.1 + (dets[i].eta - oy) * dir.0)
        .sum::<f64>()
        / pieces.len() as f64;
    let flux: f64 = pieces.iter().map(|&i| 10f64.powf(-0.4 * dets[i].mag)).sum();
    let first = &dets[seed];
    let sigma = pieces
        .iter()
        .map(|&i| dets[i].sigma_arcsec)
        .fold(0.0, f64::max)
        // Where a faint trail ends is known to a fraction of the seeing at each end.
        .hypot(0.3 * fwhm);
    Some(Chain {
        detection: Detection {
            exposure: first.exposure,
            xi: ox + mid * dir.0 - off * dir.1,
            eta: oy + mid * dir.1 + off * dir.0,
            sigma_arcsec: sigma,
            mag: -2.5 * flux.log10(),
            magerr: pieces.iter().map(|&i| dets[i].magerr).fold(0.0, f64::max),
            trail_arcsec: hi - lo,
            axis_pa_deg: dir.0.atan2(dir.1).to_degrees().rem_euclid(180.0),
            truncated: pieces.iter().any(|&i| dets[i].truncated),
        },
        pieces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(xi: f64, eta: f64, trail: f64) -> Detection {
        Detection {
            trail_arcsec: trail,
            axis_pa_deg: 90.0,
            ..Detection::point(0, xi, eta, 0.2, 20.0)
        }
    }

    #[test]
    fn pieces_of_one_trail_become_one_detection_at_its_middle() {
        let exps = [Exposure {
            t_min: 0.0,
            exptime_min: 1.0,
        }];
        // A 40" trail east-west from xi = 0 to 40, cut into three elongated pieces, plus a
        // round piece off the line and one far beyond the end.
        let dets = vec![
            piece(5.0, 0.0, 10.0),
            piece(20.0, 0.1, 12.0),
            piece(35.0, -0.1, 10.0),
            Detection::point(0, 20.0, 6.0, 0.2, 20.0),
            Detection::point(0, 80.0, 0.0, 0.2, 20.0),
        ];
        let chains = assemble(&exps, &dets, &LinkConfig::default());
        let whole = chains
            .iter()
            .find(|c| c.pieces.len() == 3)
            .expect("the three pieces chain");
        assert_eq!(whole.pieces, vec![0, 1, 2]);
        assert!(
            (whole.detection.xi - 20.0).abs() < 0.2,
            "{:?}",
            whole.detection
        );
        assert!(whole.detection.eta.abs() < 0.1);
        assert!((whole.detection.trail_arcsec - 40.0).abs() < 0.5);
        assert!((whole.detection.axis_pa_deg - 90.0).abs() < 1e-6);
        assert!(chains
            .iter()
            .all(|c| !c.pieces.contains(&3) && !c.pieces.contains(&4)));
    }

    #[test]
    fn a_short_piece_with_a_poorly_measured_axis_joins_the_chain() {
        // Issue 5 (seed 16, SIM0027, 10.2"/min, the linker's input on A5382-1-7, e1): a 10"
        // trail in three pieces along PA 163; the shortest (2.0", elongation 1.5) has its axis
        // at PA 145, 19 degrees off the line. Without it the chain is 7.4" long and its middle
        // lies 1.6" off the trail's.
        let exps = [Exposure {
            t_min: 0.0,
            exptime_min: 1.0,
        }];
        let det = |xi, eta, sigma, mag, len, pa| Detection {
            trail_arcsec: len,
            axis_pa_deg: pa,
            ..Detection::point(0, xi, eta, sigma, mag)
        };
        let dets = vec![
            det(32.843, 162.964, 0.456, -8.843, 1.970, 144.71),
            det(32.099, 165.302, 0.456, -8.918, 2.497, 167.30),
            det(30.570, 168.677, 0.456, -9.491, 4.949, 163.71),
        ];
        let cfg = LinkConfig {
            seeing_fwhm_arcsec: 1.332,
            ..LinkConfig::default()
        };
        let chains = assemble(&exps, &dets, &cfg);
        let whole = chains
            .iter()
            .find(|c| c.pieces.len() == 3)
            .expect("the three pieces chain");
        assert!(whole.detection.trail_arcsec > 9.0, "{whole:?}");
    }

    #[test]
    fn two_round_noise_peaks_are_not_a_trail() {
        let exps = [Exposure {
            t_min: 0.0,
            exptime_min: 1.0,
        }];
        let dets = vec![
            Detection::point(0, 0.0, 0.0, 0.2, 21.0),
            Detection::point(0, 2.0, 0.0, 0.2, 21.0),
        ];
        assert!(assemble(&exps, &dets, &LinkConfig::default()).is_empty());
    }
}
