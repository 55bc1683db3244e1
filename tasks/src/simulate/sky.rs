//! Sky geometry: the gnomonic (TAN) projection, the true camera (TAN plus radial distortion,
//! rotated and scaled), the CCD layout of the mosaic, and the approximate WCS a header carries.
//!
//! Coordinates: (xi, eta) are standard coordinates in radians (xi toward increasing RA);
//! (u, v) are focal-plane pixels from the optical axis, u toward the west (decreasing RA) and v
//! toward the north when the camera is not rotated, as on a sky image with north up and east
//! left; (x, y) are FITS pixel coordinates of a raw CCD frame, 1-based, prescan included.

use serde::{Deserialize, Serialize};

use crate::fits::Header;

const RAD: f64 = std::f64::consts::PI / 180.0;
const ARCSEC: f64 = RAD / 3600.0;

/// Gnomonic projection of (ra, dec) about (ra0, dec0), degrees in, radians out. `None` for
/// points 90 degrees or more from the tangent point.
pub fn project(ra0: f64, dec0: f64, ra: f64, dec: f64) -> Option<(f64, f64)> {
    let (a0, d0, a, d) = (ra0 * RAD, dec0 * RAD, ra * RAD, dec * RAD);
    let cosc = d.sin() * d0.sin() + d.cos() * d0.cos() * (a - a0).cos();
    if cosc <= 1e-6 {
        return None;
    }
    let xi = d.cos() * (a - a0).sin() / cosc;
    let eta = (d.sin() * d0.cos() - d.cos() * d0.sin() * (a - a0).cos()) / cosc;
    Some((xi, eta))
}

/// Inverse gnomonic projection: standard coordinates (radians) about (ra0, dec0) to degrees.
pub fn deproject(ra0: f64, dec0: f64, xi: f64, eta: f64) -> (f64, f64) {
    let (a0, d0) = (ra0 * RAD, dec0 * RAD);
    let den = d0.cos() - eta * d0.sin();
    let a = a0 + xi.atan2(den);
    let d = (d0.sin() + eta * d0.cos()).atan2((xi * xi + den * den).sqrt());
    ((a / RAD).rem_euclid(360.0), d / RAD)
}

/// Angular distance between two points, degrees.
pub fn separation_deg(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let (a1, d1, a2, d2) = (ra1 * RAD, dec1 * RAD, ra2 * RAD, dec2 * RAD);
    let h = ((d2 - d1) / 2.0).sin().powi(2) + d1.cos() * d2.cos() * ((a2 - a1) / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin() / RAD
}

/// The point `dist_deg` away from (ra, dec) toward position angle `pa_deg` (east of north).
pub fn offset(ra: f64, dec: f64, pa_deg: f64, dist_deg: f64) -> (f64, f64) {
    let (a, d, pa, r) = (ra * RAD, dec * RAD, pa_deg * RAD, dist_deg * RAD);
    let d2 = (d.sin() * r.cos() + d.cos() * r.sin() * pa.cos()).asin();
    let a2 = a + (pa.sin() * r.sin() * d.cos()).atan2(r.cos() - d.sin() * d2.sin());
    ((a2 / RAD).rem_euclid(360.0), d2 / RAD)
}

/// The true camera of one exposure: where the optical axis points, how the focal plane is
/// rotated and scaled, and its radial distortion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Rotation of the focal plane, degrees (0 = north along +v).
    pub rotation_deg: f64,
    /// Arcseconds per pixel on the optical axis.
    pub scale_arcsec: f64,
    /// Radial distortion: r_focal = r (1 + k r^2), r in radians.
    pub k3_per_rad2: f64,
}

impl Camera {
    /// Sky (degrees) to focal-plane pixels.
    pub fn sky_to_focal(&self, ra: f64, dec: f64) -> Option<(f64, f64)> {
        let (xi, eta) = project(self.ra_deg, self.dec_deg, ra, dec)?;
        let f = 1.0 + self.k3_per_rad2 * (xi * xi + eta * eta);
        let s = self.scale_arcsec * ARCSEC;
        let (p, q) = (-xi * f / s, eta * f / s);
        let (c, sn) = (
            (self.rotation_deg * RAD).cos(),
            (self.rotation_deg * RAD).sin(),
        );
        Some((p * c + q * sn, -p * sn + q * c))
    }

    /// Focal-plane pixels to sky (degrees); the distortion is inverted by Newton's method.
    pub fn focal_to_sky(&self, u: f64, v: f64) -> (f64, f64) {
        let (c, sn) = (
            (self.rotation_deg * RAD).cos(),
            (self.rotation_deg * RAD).sin(),
        );
        let (p, q) = (u * c - v * sn, u * sn + v * c);
        let s = self.scale_arcsec * ARCSEC;
        let (xd, ed) = (-p * s, q * s);
        let rd = (xd * xd + ed * ed).sqrt();
        let mut r = rd;
        for _ in 0..8 {
            let g = r * (1.0 + self.k3_per_rad2 * r * r) - rd;
            r -= g / (1.0 + 3.0 * self.k3_per_rad2 * r * r);
        }
        let f = if rd > 0.0 { r / rd } else { 1.0 };
        deproject(self.ra_deg, self.dec_deg, xd * f, ed * f)
    }
}

/// Where a CCD sits in the focal plane: (u, v) = (u0, v0) + M (xd, yd), with (xd, yd) the
/// 0-based position in its light-sensitive area and M one of two orientations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub u0: f64,
    pub v0: f64,
    /// Rotated by 90 degrees: u = u0 + yd, v = v0 - xd (the INT WFC's fourth CCD lies across
    /// the other three).
    pub rotated: bool,
}

impl Placement {
    pub fn to_focal(&self, xd: f64, yd: f64) -> (f64, f64) {
        if self.rotated {
            (self.u0 + yd, self.v0 - xd)
        } else {
            (self.u0 + xd, self.v0 + yd)
        }
    }

    pub fn from_focal(&self, u: f64, v: f64) -> (f64, f64) {
        if self.rotated {
            (self.v0 - v, u - self.u0)
        } else {
            (u - self.u0, v - self.v0)
        }
    }

    /// d(u, v) / d(xd, yd) as [[du/dx, du/dy], [dv/dx, dv/dy]].
    pub fn matrix(&self) -> [[f64; 2]; 2] {
        if self.rotated {
            [[0.0, 1.0], [-1.0, 0.0]]
        } else {
            [[1.0, 0.0], [0.0, 1.0]]
        }
    }
}

/// The mosaic: the first CCD centred on the optical axis, the second to its west, the third
/// to its east, the fourth rotated across the top of them, as the INT WFC's L shape.
pub fn layout(n_ccds: usize, nx: usize, ny: usize, gap: f64) -> Vec<Placement> {
    let (nx, ny) = (nx as f64, ny as f64);
    let all = [
        Placement {
            u0: -nx / 2.0,
            v0: -ny / 2.0,
            rotated: false,
        },
        Placement {
            u0: nx / 2.0 + gap,
            v0: -ny / 2.0,
            rotated: false,
        },
        Placement {
            u0: -1.5 * nx - gap,
            v0: -ny / 2.0,
            rotated: false,
        },
        Placement {
            u0: -1.5 * nx - gap,
            v0: ny / 2.0 + gap + nx,
            rotated: true,
        },
    ];
    all.into_iter().take(n_ccds).collect()
}

/// The simple TAN WCS written in a raw frame's CCD header: the pointing the telescope reported,
/// the design scale and orientation, no distortion. Real headers are like this: good to a few
/// arcminutes, for a solver to start from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeaderWcs {
    pub crval1: f64,
    pub crval2: f64,
    pub crpix1: f64,
    pub crpix2: f64,
    /// [[CD1_1, CD1_2], [CD2_1, CD2_2]], degrees per pixel.
    pub cd: [[f64; 2]; 2],
}

impl HeaderWcs {
    /// The header WCS of a CCD for a camera pointed at (ra, dec) with the design scale and no
    /// rotation; `prescan` shifts the data area within the raw frame.
    pub fn for_ccd(ra: f64, dec: f64, scale_arcsec: f64, p: &Placement, prescan: usize) -> Self {
        let (xd0, yd0) = p.from_focal(0.0, 0.0);
        let s = scale_arcsec / 3600.0;
        let m = p.matrix();
        // d(xi, eta)/d(u, v) = s * [[-1, 0], [0, 1]].
        let cd = [[-s * m[0][0], -s * m[0][1]], [s * m[1][0], s * m[1][1]]];
        HeaderWcs {
            crval1: ra,
            crval2: dec,
            crpix1: xd0 + prescan as f64 + 1.0,
            crpix2: yd0 + 1.0,
            cd,
        }
    }

    /// FITS pixel (1-based) to sky, degrees.
    pub fn pixel_to_sky(&self, x: f64, y: f64) -> (f64, f64) {
        let (dx, dy) = (x - self.crpix1, y - self.crpix2);
        let xi = (self.cd[0][0] * dx + self.cd[0][1] * dy) * RAD;
        let eta = (self.cd[1][0] * dx + self.cd[1][1] * dy) * RAD;
        deproject(self.crval1, self.crval2, xi, eta)
    }

    /// Writes CTYPE, CRVAL, CRPIX, CD, EQUINOX and RADESYS.
    pub fn write(&self, h: &mut Header) {
        h.set("WCSAXES", 2, "")
            .set("CTYPE1", "RA---TAN", "gnomonic projection")
            .set("CTYPE2", "DEC--TAN", "gnomonic projection")
            .set("CUNIT1", "deg", "")
            .set("CUNIT2", "deg", "")
            .set("CRVAL1", self.crval1, "[deg] RA at the reference pixel")
            .set("CRVAL2", self.crval2, "[deg] Dec at the reference pixel")
            .set("CRPIX1", self.crpix1, "reference pixel (optical axis)")
            .set("CRPIX2", self.crpix2, "reference pixel (optical axis)")
            .set("CD1_1", self.cd[0][0], "[deg/px]")
            .set("CD1_2", self.cd[0][1], "[deg/px]")
            .set("CD2_1", self.cd[1][0], "[deg/px]")
            .set("CD2_2", self.cd[1][1], "[deg/px]")
            .set("RADESYS", "ICRS", "")
            .set("EQUINOX", 2000.0, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam() -> Camera {
        Camera {
            ra_deg: 287.0,
            dec_deg: -22.0,
            rotation_deg: 0.3,
            scale_arcsec: 0.33,
            k3_per_rad2: 220.0,
        }
    }

    #[test]
    fn projection_round_trips() {
        for (ra, dec) in [(287.1, -21.8), (286.7, -22.3), (0.01, 0.2), (359.9, -0.3)] {
            let (ra0, dec0) = if ra > 180.0 {
                (287.0, -22.0)
            } else {
                (0.0, 0.0)
            };
            let (xi, eta) = project(ra0, dec0, ra, dec).unwrap();
            let (r2, d2) = deproject(ra0, dec0, xi, eta);
            assert!(separation_deg(ra, dec, r2, d2) < 1e-10, "{ra} {dec}");
        }
        assert!(project(0.0, 0.0, 180.0, 0.0).is_none());
    }

    #[test]
    fn camera_pixel_sky_pixel_below_1e_6_px() {
        let c = cam();
        for &(u, v) in &[
            (0.0, 0.0),
            (3000.0, -3000.0),
            (-3100.0, 3100.0),
            (12.3, 4.5),
        ] {
            let (ra, dec) = c.focal_to_sky(u, v);
            let (u2, v2) = c.sky_to_focal(ra, dec).unwrap();
            assert!(
                (u - u2).abs() < 1e-6 && (v - v2).abs() < 1e-6,
                "{u} {v} -> {u2} {v2}"
            );
        }
    }

    #[test]
    fn camera_orientation_and_distortion() {
        let c = Camera {
            rotation_deg: 0.0,
            ..cam()
        };
        // North is +v, east is -u.
        let (u, v) = c.sky_to_focal(287.0, -22.0 + 0.01).unwrap();
        assert!(
            u.abs() < 1e-6 && (v - 36.0 / 0.33 * (1.0 + 220.0 * (0.01 * RAD).powi(2))).abs() < 1e-3
        );
        let (ra_e, _) = c.focal_to_sky(-100.0, 0.0);
        assert!(ra_e > 287.0);
        // 1% of distortion at 24 arcmin from the axis, as the INT WFC corrector.
        let r = 24.0 / 60.0 * RAD;
        assert!((220.0 * r * r - 0.0107).abs() < 0.001);
    }

    #[test]
    fn placements_invert_and_header_wcs_matches_the_undistorted_camera() {
        let c = Camera {
            rotation_deg: 0.0,
            k3_per_rad2: 0.0,
            ..cam()
        };
        for p in layout(4, 2048, 4100, 75.0) {
            let (u, v) = p.to_focal(100.0, 2000.0);
            let (x, y) = p.from_focal(u, v);
            assert!((x - 100.0).abs() < 1e-12 && (y - 2000.0).abs() < 1e-12);
            let w = HeaderWcs::for_ccd(c.ra_deg, c.dec_deg, c.scale_arcsec, &p, 54);
            for (xd, yd) in [(0.0, 0.0), (2047.0, 4099.0), (1000.0, 10.0)] {
                let (u, v) = p.to_focal(xd, yd);
                let truth = c.focal_to_sky(u, v);
                let hdr = w.pixel_to_sky(xd + 54.0 + 1.0, yd + 1.0);
                let sep = separation_deg(truth.0, truth.1, hdr.0, hdr.1) * 3600.0;
                assert!(sep < 1e-6, "{p:?} ({xd}, {yd}): {sep} arcsec");
            }
        }
    }

    #[test]
    fn offsets_move_along_position_angle() {
        let (ra, dec) = offset(287.0, -22.0, 90.0, 0.1);
        assert!(ra > 287.0 && (dec + 22.0).abs() < 1e-3);
        assert!((separation_deg(287.0, -22.0, ra, dec) - 0.1).abs() < 1e-12);
    }
}
