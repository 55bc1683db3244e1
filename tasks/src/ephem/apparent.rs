//! From a body's barycentric state to what an observer sees: light-time iteration, the
//! astrometric RA/Dec (ICRF, as MPC astrometry is reduced against a star catalogue), its rates,
//! the apparent RA/Dec of date (stellar aberration, then precession-nutation), distances, phase
//! angle, and the V magnitude of the IAU H,G system.

use super::elements::GM_SUN;
use super::frames;
use super::kepler;
use super::nbody::{State, C_AU_PER_DAY};
use super::spk::Spk;
use super::time::Instant;
use super::vec3::{add, dot, mul, norm, scale, sub, Vec3};
use super::EphemError;

/// Arcseconds per radian.
const ARCSEC_PER_RAD: f64 = 180.0 * 3600.0 / std::f64::consts::PI;
/// NAIF id of the Sun.
const SUN: i32 = 10;

/// What an observer sees of a body at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub time: Instant,
    /// Astrometric RA and Dec (ICRF, light-time corrected), degrees.
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Rates of the astrometric position: dRA/dt cos(Dec) and dDec/dt, arcsec/hour.
    pub dra_cosdec: f64,
    pub ddec: f64,
    /// Apparent RA and Dec: aberration applied, true equator and equinox of date, degrees.
    pub ra_app_deg: f64,
    pub dec_app_deg: f64,
    /// Observer-body distance and Sun-body distance (at the emission time), au.
    pub delta_au: f64,
    pub r_au: f64,
    /// Sun-body-observer angle, degrees.
    pub phase_deg: f64,
    /// Sun-observer-body angle (solar elongation), degrees.
    pub elongation_deg: f64,
    /// V magnitude from H, G (None when the elements carry no H).
    pub v_mag: Option<f64>,
}

/// RA and Dec (degrees) of a direction.
pub fn radec(u: Vec3) -> (f64, f64) {
    let ra = u[1].atan2(u[0]).to_degrees().rem_euclid(360.0);
    let dec = (u[2] / norm(u)).clamp(-1.0, 1.0).asin().to_degrees();
    (ra, dec)
}

/// Stellar aberration: the direction `u` (unit) seen by an observer moving with barycentric
/// velocity `v` (au/day), relativistic form.
pub fn aberrate(u: Vec3, v: Vec3) -> Vec3 {
    let beta = scale(v, 1.0 / C_AU_PER_DAY);
    let p = dot(u, beta);
    let inv_gamma = (1.0 - dot(beta, beta)).sqrt();
    let w = add(
        scale(u, inv_gamma),
        scale(beta, 1.0 + p / (1.0 + inv_gamma)),
    );
    scale(w, 1.0 / (1.0 + p))
}

/// The IAU H,G magnitude (Bowell et al. 1989) at distances r, delta (au) and phase angle.
pub fn hg_magnitude(h: f64, g: f64, r: f64, delta: f64, phase_deg: f64) -> f64 {
    let tan_half = (phase_deg.to_radians() / 2.0).tan();
    let phi1 = (-3.33 * tan_half.powf(0.63)).exp();
    let phi2 = (-1.87 * tan_half.powf(1.22)).exp();
    h + 5.0 * (r * delta).log10() - 2.5 * ((1.0 - g) * phi1 + g * phi2).log10()
}

/// Observes a body whose barycentric state at `t` is `body` from an observer at barycentric
/// position `obs` moving with `obs_v`. The light-time correction moves the body back along its
/// heliocentric two-body orbit (planetary perturbations over hours are far below 0.01").
pub fn observe(
    spk: &Spk,
    body: &State,
    t: &Instant,
    obs: Vec3,
    obs_v: Vec3,
    hg: Option<(f64, f64)>,
) -> Result<Prediction, EphemError> {
    let (sun, sun_v) = spk.state(SUN, t.tdb)?;
    let helio = sub([body[0], body[1], body[2]], sun);
    let helio_v = sub([body[3], body[4], body[5]], sun_v);
    let mut tau = norm(sub([body[0], body[1], body[2]], obs)) / C_AU_PER_DAY;
    let mut emitted = (helio, helio_v, sun, sun_v);
    for _ in 0..4 {
        let (r, v) = kepler::propagate(GM_SUN, helio, helio_v, -tau).ok_or_else(|| {
            EphemError::Orbit("light-time: the two-body step did not converge".into())
        })?;
        let (s, sv) = spk.state(SUN, t.tdb - tau)?;
        emitted = (r, v, s, sv);
        tau = norm(sub(add(r, s), obs)) / C_AU_PER_DAY;
    }
    let (r_helio, v_helio, s, sv) = emitted;
    let rho = sub(add(r_helio, s), obs);
    let delta = norm(rho);
    let u = scale(rho, 1.0 / delta);
    // d(rho)/dt, the emission time moving at 1 - d(tau)/dt.
    let v_body = add(v_helio, sv);
    let tau_rate = dot(u, sub(v_body, obs_v)) / C_AU_PER_DAY;
    let rho_rate = sub(scale(v_body, 1.0 - tau_rate), obs_v);
    let du = scale(sub(rho_rate, scale(u, dot(u, rho_rate))), 1.0 / delta);
    let (ra, dec) = radec(u);
    let (sa, ca) = ra.to_radians().sin_cos();
    let (sd, cd) = dec.to_radians().sin_cos();
    let per_hour = ARCSEC_PER_RAD / 24.0;
    let dra_cosdec = dot(du, [-sa, ca, 0.0]) * per_hour;
    let ddec = dot(du, [-sd * ca, -sd * sa, cd]) * per_hour;
    let (pn, _) = frames::precession_nutation(t.tdb);
    let (ra_app, dec_app) = radec(mul(&pn, aberrate(u, obs_v)));
    let r = norm(r_helio);
    let phase = (dot(r_helio, rho) / (r * delta))
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees();
    let obs_helio = sub(obs, sun);
    let elongation = (-dot(obs_helio, u) / norm(obs_helio))
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees();
    Ok(Prediction {
        time: *t,
        ra_deg: ra,
        dec_deg: dec,
        dra_cosdec,
        ddec,
        ra_app_deg: ra_app,
        dec_app_deg: dec_app,
        delta_au: delta,
        r_au: r,
        phase_deg: phase,
        elongation_deg: elongation,
        v_mag: hg.map(|(h, g)| hg_magnitude(h, g, r, delta, phase)),
    })
}
