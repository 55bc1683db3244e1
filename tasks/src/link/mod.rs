//! Linking moving objects within one field and CCD: the exposures are aligned on their stars,
//! stationary sources are removed, and what is left is linked into tracklets of detections on a
//! straight line at a constant rate (no I/O here; [`task`] reads catalogs and writes JSON).
//!
//! Everything works in arcseconds on one tangent plane per field and CCD (xi toward east, eta
//! toward north), and in minutes from the first exposure. The catalogs' sky positions may come
//! from a rough header WCS (off by arcminutes, differently per exposure): [`align`] maps every
//! exposure onto a reference exposure by matching its stars, so only relative astrometry matters.
//!
//! ```
//! use nearby_tasks::link::{link, Detection, Exposure, LinkConfig};
//! let exposures: Vec<Exposure> = (0..4)
//!     .map(|e| Exposure { t_min: 2.0 * e as f64, exptime_min: 1.0 })
//!     .collect();
//! // An asteroid moving 0.5"/min east; a noise detection in exposure 2.
//! let mut dets: Vec<Detection> = (0..4)
//!     .map(|e| Detection::point(e, 10.0 + exposures[e].t_min * 0.5, 20.0, 0.1, 19.0))
//!     .collect();
//! dets.push(Detection::point(2, 70.0, 50.0, 0.1, 19.0));
//! let found = link(&exposures, &dets, &LinkConfig::default());
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].detections, vec![0, 1, 2, 3]);
//! assert!((found[0].rate_arcsec_per_min - 0.5).abs() < 1e-9);
//! assert!((found[0].pa_deg - 90.0).abs() < 1e-6); // east of north
//! ```

pub mod align;
mod grid;
pub mod stationary;
pub mod task;
mod tracklets;
pub mod trails;

pub use align::{align, Alignment, Source};
pub use grid::Grid;
pub use stationary::stationary;
pub use tracklets::{link, link_pieces, Tracklet};
pub use trails::{assemble, Chain};

/// One exposure of a field: its mid-exposure time and its length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposure {
    /// Minutes from the group's reference time (mid-exposure).
    pub t_min: f64,
    pub exptime_min: f64,
}

/// A transient candidate: one detection in one exposure, on the aligned tangent plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Index into the exposures.
    pub exposure: usize,
    /// Aligned position, arcseconds (xi east, eta north).
    pub xi: f64,
    pub eta: f64,
    /// 1-sigma position error, arcseconds.
    pub sigma_arcsec: f64,
    pub mag: f64,
    pub magerr: f64,
    /// Length of the trail the shape implies, arcseconds: sqrt(12 (A^2 - B^2)) (a uniform line
    /// of length L convolved with the PSF has A^2 = B^2 + L^2 / 12).
    pub trail_arcsec: f64,
    /// Direction of the major axis, degrees east of north, 0..180.
    pub axis_pa_deg: f64,
    /// The source touches the image's edge (extract's FLAGS 8): a trail cut there runs on
    /// beyond it, so its centroid lies off the mid-exposure position along the motion by up to
    /// half the part cut off. Linking places it on its line where the motion says.
    pub truncated: bool,
}

impl Detection {
    /// A round detection (no trail).
    pub fn point(exposure: usize, xi: f64, eta: f64, sigma_arcsec: f64, mag: f64) -> Self {
        Detection {
            exposure,
            xi,
            eta,
            sigma_arcsec,
            mag,
            magerr: 0.05,
            trail_arcsec: 0.0,
            axis_pa_deg: 0.0,
            truncated: false,
        }
    }
}

/// What makes a tracklet. Defaults follow EURONEAR's rules, tightened where noted.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Detections a tracklet needs (EURONEAR: 3).
    pub min_detections: usize,
    /// Largest distance of a detection from the fitted line, arcseconds (EURONEAR: 2").
    pub max_residual_arcsec: f64,
    pub min_rate_arcsec_per_min: f64,
    pub max_rate_arcsec_per_min: f64,
    /// Smallest motion from the first to the last detection, arcseconds (EURONEAR: 3 px, 1" on
    /// the INT WFC). Slower objects cannot be told from stars.
    pub min_motion_arcsec: f64,
    /// The motion must also exceed this many standard deviations of its own error (from the
    /// detections' position errors), so that noisy faint stars do not pass as slow movers.
    pub min_motion_sigma: f64,
    /// The fit's chi-square per degree of freedom (residuals over the detections' position
    /// errors, two per detection, four parameters) may not exceed this.
    pub max_chi2_per_dof: f64,
    /// A detection's magnitude may differ from the tracklet's median by this much plus three
    /// times its own error.
    pub max_mag_deviation: f64,
    /// Seeing FWHM, arcseconds: how long a trail must be before its shape shows the motion.
    pub seeing_fwhm_arcsec: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            min_detections: 3,
            max_residual_arcsec: 1.0,
            min_rate_arcsec_per_min: 0.1,
            max_rate_arcsec_per_min: 100.0,
            min_motion_arcsec: 1.0,
            min_motion_sigma: 4.0,
            max_chi2_per_dof: 5.0,
            max_mag_deviation: 1.0,
            seeing_fwhm_arcsec: 1.5,
        }
    }
}

/// Least-squares straight line through (t, xi, eta) points: position at `t0` and velocity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LineFit {
    pub t0: f64,
    pub xi0: f64,
    pub eta0: f64,
    /// Arcseconds per minute.
    pub v_xi: f64,
    pub v_eta: f64,
    /// Sum of w (t - t0)^2 (w = 1 unweighted): the lever arm of the velocity.
    pub stt: f64,
}

impl LineFit {
    /// Fit to at least two points at distinct times; `None` otherwise.
    pub fn fit(points: impl Iterator<Item = (f64, f64, f64)> + Clone) -> Option<LineFit> {
        Self::fit_weighted(points.map(|(t, x, y)| (t, x, y, 1.0)))
    }

    /// Weighted fit to (t, xi, eta, weight) points, at least two at distinct times with
    /// positive weight. With weights 1 / sigma^2, `1 / stt` is the variance of each velocity
    /// component.
    pub fn fit_weighted(
        points: impl Iterator<Item = (f64, f64, f64, f64)> + Clone,
    ) -> Option<LineFit> {
        let (mut n, mut sw, mut st, mut sx, mut sy) = (0, 0.0, 0.0, 0.0, 0.0);
        for (t, x, y, w) in points.clone() {
            n += 1;
            sw += w;
            st += w * t;
            sx += w * x;
            sy += w * y;
        }
        if n < 2 || sw <= 0.0 {
            return None;
        }
        let (t0, xi0, eta0) = (st / sw, sx / sw, sy / sw);
        let (mut stt, mut stx, mut sty) = (0.0, 0.0, 0.0);
        for (t, x, y, w) in points {
            let dt = t - t0;
            stt += w * dt * dt;
            stx += w * dt * (x - xi0);
            sty += w * dt * (y - eta0);
        }
        (stt > 0.0).then(|| LineFit {
            t0,
            xi0,
            eta0,
            v_xi: stx / stt,
            v_eta: sty / stt,
            stt,
        })
    }

    pub fn at(&self, t: f64) -> (f64, f64) {
        (
            self.xi0 + self.v_xi * (t - self.t0),
            self.eta0 + self.v_eta * (t - self.t0),
        )
    }

    pub fn rate(&self) -> f64 {
        self.v_xi.hypot(self.v_eta)
    }

    /// Direction of motion, degrees east of north, 0..360.
    pub fn pa_deg(&self) -> f64 {
        self.v_xi.atan2(self.v_eta).to_degrees().rem_euclid(360.0)
    }
}

#[cfg(test)]
mod tests;
