//! N-body propagation of a small body (massless) in the field of the Sun, the eight planets,
//! the Moon and Pluto, whose positions come from the JPL ephemeris, plus the Sun's leading
//! general-relativistic term. Barycentric ICRF, au and days (TDB).
//!
//! The integrator is Gragg-Bulirsch-Stoer: the modified midpoint rule with n = 2, 4, 6, ...
//! substeps extrapolated to zero step size (Richardson, polynomial in h^2). It takes long steps
//! on smooth orbits (a main-belt asteroid crosses a year in ~30 steps) and shrinks them by
//! itself at close approaches. Asteroid perturbers (Ceres, Pallas, Vesta, ...) are not included;
//! docs/ephemeris.md gives what that costs against JPL Horizons.

use super::spk::{Spk, AU_KM};
use super::vec3::{dot, norm, Vec3};
use super::EphemError;

/// Speed of light, au/day.
pub const C_AU_PER_DAY: f64 = 299_792.458 * 86_400.0 / AU_KM;

/// Perturbing bodies: NAIF id and GM in km^3/s^2 (DE440 values, Park et al. 2021).
const BODIES: [(i32, f64); 11] = [
    (10, 132_712_440_041.279_42), // Sun
    (1, 22_031.868_551),          // Mercury barycentre
    (2, 324_858.592),             // Venus barycentre
    (399, 398_600.435_507),       // Earth
    (301, 4_902.800_118),         // Moon
    (4, 42_828.375_816),          // Mars barycentre
    (5, 126_712_764.1),           // Jupiter barycentre
    (6, 37_940_584.841_8),        // Saturn barycentre
    (7, 5_794_556.4),             // Uranus barycentre
    (8, 6_836_527.100_58),        // Neptune barycentre
    (9, 975.5),                   // Pluto barycentre
];

/// Substep counts of the extrapolation table (Deuflhard's sequence 2, 4, 6, ...).
const SUBSTEPS: [usize; 8] = [2, 4, 6, 8, 10, 12, 14, 16];

/// A state: position (au) then velocity (au/day).
pub type State = [f64; 6];

/// Integrates small bodies through the planets of one SPK file.
pub struct Propagator<'a> {
    spk: &'a Spk,
    /// GM of each body in au^3/day^2.
    gm: [f64; 11],
    /// Relative error allowed per step (position and velocity).
    pub tolerance: f64,
}

impl<'a> Propagator<'a> {
    pub fn new(spk: &'a Spk) -> Propagator<'a> {
        let to_au_day = 86_400.0 * 86_400.0 / AU_KM.powi(3);
        Propagator {
            spk,
            gm: BODIES.map(|(_, gm)| gm * to_au_day),
            tolerance: 1e-12,
        }
    }

    /// Acceleration (au/day^2) of a massless body at barycentric `r` moving with `v`.
    fn acceleration(&self, t: f64, r: Vec3, v: Vec3) -> Result<Vec3, EphemError> {
        let mut a = [0.0; 3];
        let mut heliocentric = [0.0; 3];
        for (k, &(id, _)) in BODIES.iter().enumerate() {
            let p = self.spk.position(id, t)?;
            let d = [r[0] - p[0], r[1] - p[1], r[2] - p[2]];
            if id == 10 {
                heliocentric = d;
            }
            let d2 = dot(d, d);
            let f = -self.gm[k] / (d2 * d2.sqrt());
            for i in 0..3 {
                a[i] += f * d[i];
            }
        }
        // Schwarzschild term of the Sun (PPN beta = gamma = 1): the perihelion precession that
        // moves an NEA with q ~ 0.5 au by ~0.1" per year.
        let mu = self.gm[0];
        let c2 = C_AU_PER_DAY * C_AU_PER_DAY;
        let rn = norm(heliocentric);
        let k = mu / (c2 * rn.powi(3));
        let (radial, along) = (4.0 * mu / rn - dot(v, v), 4.0 * dot(heliocentric, v));
        for i in 0..3 {
            a[i] += k * (radial * heliocentric[i] + along * v[i]);
        }
        Ok(a)
    }

    fn derivative(&self, t: f64, y: &State) -> Result<State, EphemError> {
        let a = self.acceleration(t, [y[0], y[1], y[2]], [y[3], y[4], y[5]])?;
        Ok([y[3], y[4], y[5], a[0], a[1], a[2]])
    }

    /// Modified midpoint rule over [t, t + h] in n substeps; `f0` is the derivative at t.
    fn midpoint(
        &self,
        t: f64,
        y: &State,
        f0: &State,
        h: f64,
        n: usize,
    ) -> Result<State, EphemError> {
        let s = h / n as f64;
        let mut prev = *y;
        let mut cur = [0.0; 6];
        for i in 0..6 {
            cur[i] = y[i] + s * f0[i];
        }
        for m in 1..n {
            let f = self.derivative(t + m as f64 * s, &cur)?;
            for i in 0..6 {
                let next = prev[i] + 2.0 * s * f[i];
                prev[i] = cur[i];
                cur[i] = next;
            }
        }
        let f = self.derivative(t + h, &cur)?;
        let mut out = [0.0; 6];
        for i in 0..6 {
            out[i] = 0.5 * (cur[i] + prev[i] + s * f[i]);
        }
        Ok(out)
    }

    /// One extrapolated step: Some(new state, rows used) if the error estimate met the
    /// tolerance, None if the step must shrink.
    fn step(&self, t: f64, y: &State, h: f64) -> Result<Option<(State, usize)>, EphemError> {
        let f0 = self.derivative(t, y)?;
        let mut table: Vec<State> = Vec::with_capacity(SUBSTEPS.len());
        let scale_r = norm([y[0], y[1], y[2]]) * self.tolerance;
        let scale_v = norm([y[3], y[4], y[5]]) * self.tolerance;
        for (j, &n) in SUBSTEPS.iter().enumerate() {
            let mut row = self.midpoint(t, y, &f0, h, n)?;
            // Neville's scheme, in place: table[k] holds T[j-1][k]; row becomes T[j][j].
            let mut previous_col = row;
            for k in 1..=j {
                let ratio = (n as f64 / SUBSTEPS[j - k] as f64).powi(2) - 1.0;
                let mut next = [0.0; 6];
                for i in 0..6 {
                    next[i] = previous_col[i] + (previous_col[i] - table[k - 1][i]) / ratio;
                }
                table[k - 1] = previous_col;
                previous_col = next;
            }
            row = previous_col;
            if j > 0 {
                let last = table[j - 1];
                let err_r = (0..3).map(|i| (row[i] - last[i]).abs()).fold(0.0, f64::max);
                let err_v = (3..6).map(|i| (row[i] - last[i]).abs()).fold(0.0, f64::max);
                if err_r <= scale_r && err_v <= scale_v {
                    return Ok(Some((row, j)));
                }
            }
            table.push(row);
        }
        Ok(None)
    }

    /// Integrates from state `y0` at TDB day `t0` to each of `times`, returning the states in
    /// the order of `times` (which may lie on both sides of t0).
    pub fn propagate(&self, t0: f64, y0: State, times: &[f64]) -> Result<Vec<State>, EphemError> {
        let mut out = vec![[0.0; 6]; times.len()];
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
        let (before, after): (Vec<usize>, Vec<usize>) =
            order.into_iter().partition(|&i| times[i] < t0);
        // Backwards in time: nearest first.
        for (indices, direction) in [(before.into_iter().rev().collect(), -1.0), (after, 1.0)] {
            let indices: Vec<usize> = indices;
            let (mut t, mut y) = (t0, y0);
            let rn = norm([y[0], y[1], y[2]]);
            // First guess: a fiftieth of an orbit's radian time scale r/v.
            let mut h = (rn / norm([y[3], y[4], y[5]]) * 0.05).clamp(0.01, 50.0);
            for i in indices {
                while (times[i] - t) * direction > 0.0 {
                    let remaining = (times[i] - t) * direction;
                    let last = h >= remaining;
                    let this_h = h.min(remaining);
                    match self.step(t, &y, this_h * direction)? {
                        Some((next, rows)) => {
                            y = next;
                            t = if last {
                                times[i]
                            } else {
                                t + this_h * direction
                            };
                            // Aim to converge at the fifth row (n = 10).
                            let factor = match rows {
                                0..=2 => 2.0,
                                3 => 1.5,
                                4 => 1.2,
                                5 => 1.0,
                                6 => 0.8,
                                _ => 0.6,
                            };
                            if !last || factor < 1.0 {
                                h = this_h * factor;
                            }
                        }
                        None => {
                            h = this_h * 0.3;
                            if h < 1e-9 {
                                return Err(EphemError::Orbit(format!(
                                    "the integration step shrank below 1e-9 day at TDB JD {:.5} (a collision with a planet?)",
                                    t + super::time::J2000_JD
                                )));
                            }
                        }
                    }
                }
                out[i] = y;
            }
        }
        Ok(out)
    }
}
