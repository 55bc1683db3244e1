//! Two-body motion about the Sun with universal variables: one formula for elliptic,
//! near-parabolic and hyperbolic orbits (no separate Kepler equations, no loss of precision
//! as the eccentricity crosses 1).
//!
//! Propagation solves the universal Kepler equation for the universal anomaly chi with
//! Laguerre-Conway iteration (robust from any start), then applies the Lagrange f and g
//! coefficients with Stumpff functions C(z), S(z), z = alpha chi^2, alpha = 1/a.

use super::vec3::{add, dot, norm, scale, Vec3};

/// The Stumpff functions C(z) = (1 - cos sqrt z)/z and S(z) = (sqrt z - sin sqrt z)/sqrt(z)^3,
/// continued to z < 0 with cosh/sinh, and by their series near 0 where the closed forms cancel.
pub fn stumpff(z: f64) -> (f64, f64) {
    if z.abs() < 0.1 {
        // Series: C = sum (-z)^k/(2k+2)!, S = sum (-z)^k/(2k+3)!; 8 terms reach 1e-17 at |z| 0.1.
        let (mut c, mut s) = (0.0, 0.0);
        let (mut term_c, mut term_s) = (0.5, 1.0 / 6.0);
        for k in 0..8 {
            c += term_c;
            s += term_s;
            let k = k as f64;
            term_c *= -z / ((2.0 * k + 3.0) * (2.0 * k + 4.0));
            term_s *= -z / ((2.0 * k + 4.0) * (2.0 * k + 5.0));
        }
        (c, s)
    } else if z > 0.0 {
        let w = z.sqrt();
        ((1.0 - w.cos()) / z, (w - w.sin()) / (z * w))
    } else {
        let w = (-z).sqrt();
        ((w.cosh() - 1.0) / -z, (w.sinh() - w) / (-z * w))
    }
}

/// Propagates a state (position au, velocity au/day) about a centre of gravitational parameter
/// `mu` (au^3/day^2) by `dt` days. Returns None only if the iteration fails to converge (an
/// orbit so extreme that no real asteroid or comet has it).
pub fn propagate(mu: f64, r0: Vec3, v0: Vec3, dt: f64) -> Option<(Vec3, Vec3)> {
    if dt == 0.0 {
        return Some((r0, v0));
    }
    let rn = norm(r0);
    let sqrt_mu = mu.sqrt();
    let sigma0 = dot(r0, v0) / sqrt_mu;
    let alpha = 2.0 / rn - dot(v0, v0) / mu;
    // Whole revolutions of an ellipse change nothing: keep |dt| within one period.
    let dt = if alpha > 0.0 {
        let period = std::f64::consts::TAU / (sqrt_mu * alpha.powf(1.5));
        dt - (dt / period).round() * period
    } else {
        dt
    };
    let kepler = |chi: f64| {
        let z = alpha * chi * chi;
        let (c, s) = stumpff(z);
        let f =
            sigma0 * chi * chi * c + (1.0 - alpha * rn) * chi.powi(3) * s + rn * chi - sqrt_mu * dt;
        let df = sigma0 * chi * (1.0 - z * s) + (1.0 - alpha * rn) * chi * chi * c + rn;
        let ddf = sigma0 * (1.0 - z * c) + (1.0 - alpha * rn) * chi * (1.0 - z * s);
        (f, df, ddf, c, s)
    };
    let mut chi = sqrt_mu * dt / rn;
    let n = 5.0;
    let mut converged = false;
    for _ in 0..100 {
        let (f, df, ddf, _, _) = kepler(chi);
        let disc = ((n - 1.0) * (n - 1.0) * df * df - n * (n - 1.0) * f * ddf)
            .abs()
            .sqrt();
        let step = n * f / (df + df.signum() * disc);
        chi -= step;
        // Convergence is cubic: once the step is 1e-12 of chi, chi is at machine precision
        // (asking for less makes it oscillate in the last bit).
        if step.abs() <= 1e-12 * chi.abs() || step == 0.0 {
            converged = true;
            break;
        }
    }
    if !converged || !chi.is_finite() {
        return None;
    }
    let (_, r, _, c, s) = kepler(chi);
    let z_chi2 = chi * chi;
    let f = 1.0 - z_chi2 / rn * c;
    let g = dt - chi.powi(3) * s / sqrt_mu;
    let rv = add(scale(r0, f), scale(v0, g));
    let fdot = sqrt_mu / (r * rn) * (alpha * chi.powi(3) * s - chi);
    let gdot = 1.0 - z_chi2 / r * c;
    Some((rv, add(scale(r0, fdot), scale(v0, gdot))))
}

/// Heliocentric ecliptic state at perihelion of a conic with perihelion distance `q` (au),
/// eccentricity `e`, inclination `i`, node `node` and argument of perihelion `peri` (radians).
pub fn perihelion_state(mu: f64, q: f64, e: f64, i: f64, node: f64, peri: f64) -> (Vec3, Vec3) {
    let speed = (mu * (1.0 + e) / q).sqrt();
    let (so, co) = node.sin_cos();
    let (sw, cw) = peri.sin_cos();
    let (si, ci) = i.sin_cos();
    // Unit vectors P (towards perihelion) and Q (90 degrees ahead in the orbit).
    let p = [co * cw - so * sw * ci, so * cw + co * sw * ci, sw * si];
    let qv = [-co * sw - so * cw * ci, -so * sw + co * cw * ci, cw * si];
    (scale(p, q), scale(qv, speed))
}
