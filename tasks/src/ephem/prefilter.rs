//! The cheap first pass over a whole orbit catalogue (MPCORB holds ~1.4 million objects): where
//! is each object at one instant by two-body motion about the Sun, and which of them lie near
//! any of a few sky positions (a night's tracklets, a simulated field)? Only those get the
//! n-body prediction.
//!
//! Per object: one universal-variable solve from perihelion to `t` and a direction from the
//! observer; the Sun, the Earth and the site are evaluated once for all objects. Light-time and
//! aberration are left out (< 30" for a main-belt asteroid), as is everything that two-body
//! motion misses (arcminutes within a few years of the epoch: docs/ephemeris.md), so the radius
//! must carry a margin of that size. Objects are spread over the cores.

use rayon::prelude::*;

use super::elements::{Elements, GM_SUN};
use super::vec3::{add, dot, mul, norm, scale, sub, Vec3};
use super::EphemError;
use super::{frames, kepler, Instant, Observatory, Spk};

/// A unit vector (ICRF) towards RA, Dec in degrees.
pub fn unit(ra_deg: f64, dec_deg: f64) -> Vec3 {
    let (ra, dec) = (ra_deg.to_radians(), dec_deg.to_radians());
    [dec.cos() * ra.cos(), dec.cos() * ra.sin(), dec.sin()]
}

/// For each object, the indices of `points` (unit vectors) within `radius_deg` of its two-body
/// direction at `t` seen from `site`; objects near none of them are left out. Returns (object
/// index, near point indices), in object order. Objects whose motion cannot be solved are
/// skipped (the n-body prediction would fail on them too).
pub fn near(
    spk: &Spk,
    objects: &[Elements],
    site: &Observatory,
    t: &Instant,
    points: &[Vec3],
    radius_deg: f64,
) -> Result<Vec<(usize, Vec<usize>)>, EphemError> {
    let sun = spk.position(10, t.tdb)?;
    let observer = add(spk.position(399, t.tdb)?, site.geocentric(t).0);
    // The Sun seen from the observer: heliocentric positions are moved by it.
    let sun_from_observer = sub(sun, observer);
    let to_eq = frames::ecliptic_to_equatorial();
    let cos_radius = radius_deg.to_radians().cos();
    let t_mjd = t.tdb + super::time::J2000_JD - super::time::MJD_OFFSET;
    Ok(objects
        .par_iter()
        .enumerate()
        .filter_map(|(k, o)| {
            let (r0, v0) = kepler::perihelion_state(
                GM_SUN,
                o.q,
                o.e,
                o.i_deg.to_radians(),
                o.node_deg.to_radians(),
                o.peri_deg.to_radians(),
            );
            let (r, _) = kepler::propagate(GM_SUN, r0, v0, t_mjd - o.tp_mjd)?;
            let d = add(mul(&to_eq, r), sun_from_observer);
            let u = scale(d, 1.0 / norm(d));
            let hits: Vec<usize> = points
                .iter()
                .enumerate()
                .filter(|(_, p)| dot(u, **p) >= cos_radius)
                .map(|(i, _)| i)
                .collect();
            (!hits.is_empty()).then_some((k, hits))
        })
        .collect())
}
