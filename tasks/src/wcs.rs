//! A small celestial WCS: the gnomonic (TAN) projection with a linear CD (or CDELT + PC) matrix,
//! read from a FITS header. Pixel coordinates are FITS ones: 1-based, (1, 1) the centre of the
//! first pixel. Distortion terms (SIP, TPV) are not applied.

use crate::fits::Header;

/// A TAN WCS: `(x, y)` pixels -> intermediate `CD . (x - CRPIX)` degrees -> sky.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TanWcs {
    pub crpix: [f64; 2],
    /// RA, Dec at the reference pixel, degrees.
    pub crval: [f64; 2],
    /// Degrees per pixel: `[[CD1_1, CD1_2], [CD2_1, CD2_2]]`.
    pub cd: [[f64; 2]; 2],
}

impl TanWcs {
    /// The WCS of a header, or `None` when it has none (or not a RA---TAN/DEC--TAN one).
    pub fn from_header(h: &Header) -> Option<TanWcs> {
        let c1 = h.str("CTYPE1").ok()?;
        let c2 = h.str("CTYPE2").ok()?;
        if !c1.starts_with("RA---TAN") || !c2.starts_with("DEC--TAN") {
            return None;
        }
        let f = |k: &str| h.f64(k).ok();
        let crpix = [f("CRPIX1")?, f("CRPIX2")?];
        let crval = [f("CRVAL1")?, f("CRVAL2")?];
        let cd = if h.contains("CD1_1") || h.contains("CD2_2") {
            [
                [f("CD1_1").unwrap_or(0.0), f("CD1_2").unwrap_or(0.0)],
                [f("CD2_1").unwrap_or(0.0), f("CD2_2").unwrap_or(0.0)],
            ]
        } else {
            let (d1, d2) = (f("CDELT1")?, f("CDELT2")?);
            let pc = |i: usize, j: usize| {
                f(&format!("PC{i}_{j}")).unwrap_or(if i == j { 1.0 } else { 0.0 })
            };
            [
                [d1 * pc(1, 1), d1 * pc(1, 2)],
                [d2 * pc(2, 1), d2 * pc(2, 2)],
            ]
        };
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        (det.is_finite() && det != 0.0).then_some(TanWcs { crpix, crval, cd })
    }

    /// Sky position (RA in 0..360, Dec; degrees) of a 1-based pixel position.
    pub fn pix_to_sky(&self, x: f64, y: f64) -> (f64, f64) {
        let (dx, dy) = (x - self.crpix[0], y - self.crpix[1]);
        let xi = (self.cd[0][0] * dx + self.cd[0][1] * dy).to_radians();
        let eta = (self.cd[1][0] * dx + self.cd[1][1] * dy).to_radians();
        let (ra0, dec0) = (self.crval[0].to_radians(), self.crval[1].to_radians());
        let denom = dec0.cos() - eta * dec0.sin();
        let ra = ra0 + xi.atan2(denom);
        let dec = (dec0.sin() + eta * dec0.cos()).atan2(xi.hypot(denom));
        (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
    }

    /// The 1-based pixel position of a sky position (degrees); `None` on the far hemisphere.
    pub fn sky_to_pix(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let (ra0, dec0) = (self.crval[0].to_radians(), self.crval[1].to_radians());
        let (ra, dec) = (ra_deg.to_radians(), dec_deg.to_radians());
        let cosc = dec0.sin() * dec.sin() + dec0.cos() * dec.cos() * (ra - ra0).cos();
        if cosc <= 0.0 {
            return None;
        }
        let xi = (dec.cos() * (ra - ra0).sin() / cosc).to_degrees();
        let eta = ((dec0.cos() * dec.sin() - dec0.sin() * dec.cos() * (ra - ra0).cos()) / cosc)
            .to_degrees();
        let cd = &self.cd;
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        let dx = (cd[1][1] * xi - cd[0][1] * eta) / det;
        let dy = (-cd[1][0] * xi + cd[0][0] * eta) / det;
        Some((dx + self.crpix[0], dy + self.crpix[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cd: bool) -> Header {
        let mut h = Header::new();
        h.set("CTYPE1", "RA---TAN", "")
            .set("CTYPE2", "DEC--TAN", "")
            .set("CRPIX1", 1024.5, "")
            .set("CRPIX2", -200.0, "")
            .set("CRVAL1", 359.9, "")
            .set("CRVAL2", -20.0, "");
        if cd {
            h.set("CD1_1", -9.1e-5, "")
                .set("CD1_2", 1.2e-6, "")
                .set("CD2_1", 0.9e-6, "")
                .set("CD2_2", 9.2e-5, "");
        } else {
            h.set("CDELT1", -9.1e-5, "")
                .set("CDELT2", 9.2e-5, "")
                .set("PC1_2", 0.01, "");
        }
        h
    }

    #[test]
    fn round_trip_is_exact_to_a_micro_pixel() {
        for cd in [true, false] {
            let w = TanWcs::from_header(&header(cd)).unwrap();
            for &(x, y) in &[
                (1.0, 1.0),
                (2048.0, 4100.0),
                (1024.5, -200.0),
                (3.3, 3000.7),
            ] {
                let (ra, dec) = w.pix_to_sky(x, y);
                let (x2, y2) = w.sky_to_pix(ra, dec).unwrap();
                assert!(
                    (x - x2).abs() < 1e-6 && (y - y2).abs() < 1e-6,
                    "{x},{y} -> {x2},{y2}"
                );
            }
        }
    }

    #[test]
    fn reference_pixel_maps_to_crval_and_scale_is_right() {
        let w = TanWcs::from_header(&header(true)).unwrap();
        let (ra, dec) = w.pix_to_sky(1024.5, -200.0);
        assert!((ra - 359.9).abs() < 1e-12 && (dec + 20.0).abs() < 1e-12);
        // One pixel up in y moves ~CD2_2 in Dec.
        let (_, d2) = w.pix_to_sky(1024.5, -199.0);
        assert!(((d2 - dec) - 9.2e-5).abs() < 1e-8);
        // Wraps RA into 0..360.
        let (ra, _) = w.pix_to_sky(-2000.0, -200.0);
        assert!(ra < 1.0, "{ra}");
    }

    #[test]
    fn no_wcs_is_none() {
        assert!(TanWcs::from_header(&Header::new()).is_none());
        let mut h = header(true);
        h.set("CTYPE1", "RA---ZPN", "");
        assert!(TanWcs::from_header(&h).is_none());
    }
}
