//! An offline ephemeris: where a known asteroid or comet is, seen from an observatory, without
//! asking JPL Horizons or SkyBoT.
//!
//! UTC -> TT -> TDB (time.rs); planets from a JPL SPK file such as DE421 (spk.rs); the orbit's
//! osculating elements from MPCORB or JPL SBDB JSON (elements.rs), turned into a state by
//! universal-variable two-body motion (kepler.rs) and integrated to the requested times with
//! the Sun, planets, Moon and Pluto as perturbers (nbody.rs); the site from the MPC code table
//! (observer.rs, frames.rs); light-time, aberration and magnitude (apparent.rs).
//! docs/ephemeris.md has the error budget and the accuracy measured against Horizons.

pub mod apparent;
pub mod elements;
pub mod frames;
pub mod kepler;
pub mod nbody;
pub mod observer;
pub mod prefilter;
pub mod spk;
pub mod spk_excerpt;
pub mod time;
pub mod vec3;

#[cfg(test)]
mod tests;

pub use apparent::Prediction;
pub use elements::Elements;
pub use observer::Observatory;
pub use spk::Spk;
pub use time::Instant;

use vec3::{add, mul};

/// Everything that can go wrong, each saying where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EphemError {
    #[error("time {0}")]
    Time(String),
    #[error("{file}: {reason}")]
    Spk { file: String, reason: String },
    #[error("{0}")]
    Coverage(String),
    #[error("{at}: {reason}")]
    Elements { at: String, reason: String },
    #[error("observatory {0}")]
    Observatory(String),
    #[error("orbit: {0}")]
    Orbit(String),
}

/// How to move the orbit from its epoch to the requested times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Sun, planets, Moon and Pluto (the accurate one).
    NBody,
    /// The Sun alone: fast, for a coarse prefilter (arcminutes after a year).
    TwoBody,
}

/// Predicts the position of one object seen from `site` at each of `times`.
pub fn predict(
    spk: &Spk,
    elements: &Elements,
    site: &Observatory,
    times: &[Instant],
    propagation: Propagation,
) -> Result<Vec<Prediction>, EphemError> {
    let states = barycentric_states(spk, elements, times, propagation)?;
    let hg = elements.h.map(|h| (h, elements.g));
    times
        .iter()
        .zip(&states)
        .map(|(t, state)| {
            let (earth, earth_v) = spk.state(399, t.tdb)?;
            let (site_r, site_v) = site.geocentric(t);
            apparent::observe(spk, state, t, add(earth, site_r), add(earth_v, site_v), hg)
        })
        .collect()
}

/// The object's barycentric ICRF state (au, au/day) at each of `times`.
pub fn barycentric_states(
    spk: &Spk,
    elements: &Elements,
    times: &[Instant],
    propagation: Propagation,
) -> Result<Vec<nbody::State>, EphemError> {
    let not_converged = || {
        EphemError::Orbit(format!(
            "{}: the two-body motion did not converge (q {} au, e {})",
            elements.designation, elements.q, elements.e
        ))
    };
    let to_eq = frames::ecliptic_to_equatorial();
    let (r, v) = elements.ecliptic_state().ok_or_else(not_converged)?;
    let (r, v) = (mul(&to_eq, r), mul(&to_eq, v));
    let t0 = Instant::from_tdb_mjd(elements.epoch_mjd).tdb;
    match propagation {
        Propagation::NBody => {
            let (sun, sun_v) = spk.state(10, t0)?;
            let (r, v) = (add(r, sun), add(v, sun_v));
            let tdb: Vec<f64> = times.iter().map(|t| t.tdb).collect();
            nbody::Propagator::new(spk).propagate(t0, [r[0], r[1], r[2], v[0], v[1], v[2]], &tdb)
        }
        Propagation::TwoBody => times
            .iter()
            .map(|t| {
                let (rt, vt) = kepler::propagate(elements::GM_SUN, r, v, t.tdb - t0)
                    .ok_or_else(not_converged)?;
                let (sun, sun_v) = spk.state(10, t.tdb)?;
                let (rt, vt) = (add(rt, sun), add(vt, sun_v));
                Ok([rt[0], rt[1], rt[2], vt[0], vt[1], vt[2]])
            })
            .collect(),
    }
}
