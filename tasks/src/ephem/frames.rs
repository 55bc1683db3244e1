//! Reference-frame rotations to the precision an asteroid ephemeris needs (~0.05"):
//! the J2000 ecliptic, IAU 1976 precession, the ten largest terms of the IAU 1980 nutation
//! (good to ~0.03") and Greenwich apparent sidereal time. Frame bias (0.02") and polar motion
//! (~10 m at the site) are neglected.

use super::vec3::{matmul, rot, Mat3};

const ARCSEC: f64 = std::f64::consts::PI / (180.0 * 3600.0);

/// Obliquity of the J2000 ecliptic (IAU 1976, the one JPL uses for ecliptic elements).
pub const OBLIQUITY_J2000: f64 = 84_381.448 * ARCSEC;

/// Rotation from the J2000 ecliptic to the ICRF equator: `eq = ECL_TO_EQ * ecl`.
pub fn ecliptic_to_equatorial() -> Mat3 {
    rot(0, -OBLIQUITY_J2000)
}

/// Julian centuries of TT (TDB) since J2000.
fn centuries(tdb_days: f64) -> f64 {
    tdb_days / 36_525.0
}

/// IAU 1976 precession (Lieske 1977): mean J2000 -> mean equator and equinox of date.
pub fn precession(tdb_days: f64) -> Mat3 {
    let t = centuries(tdb_days);
    let zeta = (2306.2181 + (0.30188 + 0.017998 * t) * t) * t * ARCSEC;
    let z = (2306.2181 + (1.09468 + 0.018203 * t) * t) * t * ARCSEC;
    let theta = (2004.3109 - (0.42665 + 0.041833 * t) * t) * t * ARCSEC;
    matmul(&rot(2, -z), &matmul(&rot(1, theta), &rot(2, -zeta)))
}

/// Mean obliquity of date (IAU 1980), radians.
fn mean_obliquity(t: f64) -> f64 {
    (84_381.448 + (-46.8150 + (-0.00059 + 0.001813 * t) * t) * t) * ARCSEC
}

/// Nutation in longitude and obliquity (radians): the ten largest terms of IAU 1980.
/// Each row: multipliers of (l, l', F, D, Omega), dpsi and deps in 0.0001" (+ rate per century).
const NUTATION: [([f64; 5], f64, f64, f64, f64); 10] = [
    ([0.0, 0.0, 0.0, 0.0, 1.0], -171_996.0, -174.2, 92_025.0, 8.9),
    ([0.0, 0.0, 2.0, -2.0, 2.0], -13_187.0, -1.6, 5_736.0, -3.1),
    ([0.0, 0.0, 2.0, 0.0, 2.0], -2_274.0, -0.2, 977.0, -0.5),
    ([0.0, 0.0, 0.0, 0.0, 2.0], 2_062.0, 0.2, -895.0, 0.5),
    ([0.0, 1.0, 0.0, 0.0, 0.0], 1_426.0, -3.4, 54.0, -0.1),
    ([1.0, 0.0, 0.0, 0.0, 0.0], 712.0, 0.1, -7.0, 0.0),
    ([0.0, 1.0, 2.0, -2.0, 2.0], -517.0, 1.2, 224.0, -0.6),
    ([0.0, 0.0, 2.0, 0.0, 1.0], -386.0, -0.4, 200.0, 0.0),
    ([1.0, 0.0, 2.0, 0.0, 2.0], -301.0, 0.0, 129.0, -0.1),
    ([0.0, -1.0, 2.0, -2.0, 2.0], 217.0, -0.5, -95.0, 0.3),
];

fn nutation_angles(t: f64) -> (f64, f64) {
    // Delaunay arguments (degrees): Moon's and Sun's mean anomalies, F, D, Moon's node.
    let args = [
        134.962_98 + 477_198.867_398 * t,
        357.527_72 + 35_999.050_34 * t,
        93.271_91 + 483_202.017_538 * t,
        297.850_36 + 445_267.111_48 * t,
        125.044_52 - 1_934.136_261 * t,
    ];
    let (mut dpsi, mut deps) = (0.0, 0.0);
    for (m, s0, s1, c0, c1) in NUTATION {
        let arg: f64 = m
            .iter()
            .zip(args)
            .map(|(k, a)| k * a)
            .sum::<f64>()
            .to_radians();
        dpsi += (s0 + s1 * t) * arg.sin();
        deps += (c0 + c1 * t) * arg.cos();
    }
    (dpsi * 1e-4 * ARCSEC, deps * 1e-4 * ARCSEC)
}

/// Precession-nutation: ICRF (J2000 mean) -> true equator and equinox of date; also returns the
/// equation of the equinoxes (radians) for apparent sidereal time.
pub fn precession_nutation(tdb_days: f64) -> (Mat3, f64) {
    let t = centuries(tdb_days);
    let eps = mean_obliquity(t);
    let (dpsi, deps) = nutation_angles(t);
    let nutation = matmul(
        &rot(0, -(eps + deps)),
        &matmul(&rot(2, -dpsi), &rot(0, eps)),
    );
    (matmul(&nutation, &precession(tdb_days)), dpsi * eps.cos())
}

/// Greenwich mean sidereal time (IAU 1982), radians, from UT1 days since J2000.
pub fn gmst(ut1_days: f64) -> f64 {
    let t = ut1_days / 36_525.0;
    let deg =
        280.460_618_37 + 360.985_647_366_29 * ut1_days + (0.000_387_933 - t / 38_710_000.0) * t * t;
    deg.rem_euclid(360.0).to_radians()
}
