//! The celestial WCS of an image: the gnomonic (TAN) projection with a linear CD (or CDELT + PC)
//! matrix and, optionally, SIP distortion polynomials (Shupe et al. 2005: `RA---TAN-SIP`,
//! `A_p_q`/`B_p_q` forward, `AP_p_q`/`BP_p_q` inverse), read from and written to a FITS header.
//! Pixel coordinates are FITS ones: 1-based, (1, 1) the centre of the first pixel.
//!
//! `sky_to_pix` starts from the inverse polynomials (when the header has them) and finishes with
//! Newton's method on the forward ones, so pixel -> sky -> pixel closes far below 1e-6 px
//! whatever the accuracy of `AP`/`BP`. TPV and other distortions are not read.

use crate::fits::Header;

/// A polynomial `sum c[p][q] u^p v^q` over `p + q <= order`, as SIP writes its `A_p_q`.
#[derive(Debug, Clone, PartialEq)]
pub struct Poly {
    pub order: usize,
    /// `c[p * (order + 1) + q]`, zero where `p + q > order`.
    pub c: Vec<f64>,
}

impl Poly {
    pub fn zeros(order: usize) -> Poly {
        Poly {
            order,
            c: vec![0.0; (order + 1) * (order + 1)],
        }
    }

    pub fn get(&self, p: usize, q: usize) -> f64 {
        if p + q > self.order {
            0.0
        } else {
            self.c[p * (self.order + 1) + q]
        }
    }

    pub fn set(&mut self, p: usize, q: usize, v: f64) {
        let n = self.order + 1;
        self.c[p * n + q] = v;
    }

    /// The value at (u, v).
    pub fn eval(&self, u: f64, v: f64) -> f64 {
        self.eval_grad(u, v).0
    }

    /// The value and its partial derivatives d/du, d/dv at (u, v).
    pub fn eval_grad(&self, u: f64, v: f64) -> (f64, f64, f64) {
        let n = self.order;
        let (mut f, mut fu, mut fv) = (0.0, 0.0, 0.0);
        let mut up = 1.0; // u^p
        let mut up1 = 0.0; // p u^(p-1)
        for p in 0..=n {
            let mut vq = 1.0;
            let mut vq1 = 0.0;
            for q in 0..=n - p {
                let c = self.c[p * (n + 1) + q];
                if c != 0.0 {
                    f += c * up * vq;
                    fu += c * up1 * vq;
                    fv += c * up * vq1;
                }
                vq1 = (q + 1) as f64 * vq;
                vq *= v;
            }
            up1 = (p + 1) as f64 * up;
            up *= u;
        }
        (f, fu, fv)
    }
}

/// SIP distortion: `u' = u + A(u, v)`, `v' = v + B(u, v)` with (u, v) pixels from CRPIX, and the
/// optional inverse `u = U + AP(U, V)`, `v = V + BP(U, V)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sip {
    pub a: Poly,
    pub b: Poly,
    pub ap: Option<Poly>,
    pub bp: Option<Poly>,
}

/// A TAN(-SIP) WCS: `(x, y)` pixels -> `(u, v) = (x, y) - CRPIX` -> SIP -> `CD . (u', v')`
/// intermediate degrees -> sky.
#[derive(Debug, Clone, PartialEq)]
pub struct TanWcs {
    pub crpix: [f64; 2],
    /// RA, Dec at the reference pixel, degrees.
    pub crval: [f64; 2],
    /// Degrees per pixel: `[[CD1_1, CD1_2], [CD2_1, CD2_2]]`.
    pub cd: [[f64; 2]; 2],
    pub sip: Option<Sip>,
}

/// Keys of one SIP polynomial (`A`, `B`, `AP`, `BP`) read from a header: `None` without
/// `{name}_ORDER`.
fn read_poly(h: &Header, name: &str) -> Option<Poly> {
    let order = h.i64(&format!("{name}_ORDER")).ok()?;
    if !(0..=9).contains(&order) {
        return None;
    }
    let order = order as usize;
    let mut p = Poly::zeros(order);
    for i in 0..=order {
        for j in 0..=order - i {
            if let Ok(v) = h.f64(&format!("{name}_{i}_{j}")) {
                p.set(i, j, v);
            }
        }
    }
    Some(p)
}

/// Whether a key belongs to a celestial WCS this module reads or writes (or a distortion a
/// solver replaces: SCAMP's `PVi_j`), so that a new solution can clear the old one first.
pub fn is_wcs_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
        "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
        "CROTA1", "CROTA2", "LONPOLE", "LATPOLE", "RADESYS", "RADECSYS", "EQUINOX",
    ];
    let k = key.to_ascii_uppercase();
    if EXACT.contains(&k.as_str()) || k.starts_with("PV1_") || k.starts_with("PV2_") {
        return true;
    }
    // SIP: A_ORDER, A_p_q, AP_DMAX, ...
    let Some((name, rest)) = k.split_once('_') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    ["A", "B", "AP", "BP"].contains(&name)
        && (rest == "ORDER"
            || rest == "DMAX"
            || rest
                .split_once('_')
                .is_some_and(|(p, q)| digits(p) && digits(q)))
}

fn det(m: &[[f64; 2]; 2]) -> f64 {
    m[0][0] * m[1][1] - m[0][1] * m[1][0]
}

impl TanWcs {
    /// A TAN WCS without distortion.
    pub fn new(crpix: [f64; 2], crval: [f64; 2], cd: [[f64; 2]; 2]) -> TanWcs {
        TanWcs {
            crpix,
            crval,
            cd,
            sip: None,
        }
    }

    /// The WCS of a header, or `None` when it has none (or not a RA---TAN/DEC--TAN one, with or
    /// without `-SIP`).
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
        let d = det(&cd);
        if !(d.is_finite() && d != 0.0 && crpix.iter().chain(&crval).all(|v| v.is_finite())) {
            return None;
        }
        let sip = if c1.ends_with("-SIP") && c2.ends_with("-SIP") {
            match (read_poly(h, "A"), read_poly(h, "B")) {
                (Some(a), Some(b)) => Some(Sip {
                    a,
                    b,
                    ap: read_poly(h, "AP"),
                    bp: read_poly(h, "BP"),
                }),
                _ => None,
            }
        } else {
            None
        };
        Some(TanWcs {
            crpix,
            crval,
            cd,
            sip,
        })
    }

    /// Writes the WCS into a header, first removing every WCS key it had (old TAN, CDELT/PC,
    /// SIP and PV keys): CTYPE `RA---TAN-SIP`/`DEC--TAN-SIP` with `A_`/`B_` (terms of order 2 and
    /// up) and `AP_`/`BP_` (every term) when there is distortion, else `RA---TAN`/`DEC--TAN`.
    pub fn write(&self, h: &mut Header) {
        let old: Vec<String> = h
            .cards()
            .iter()
            .filter(|c| is_wcs_key(&c.key))
            .map(|c| c.key.clone())
            .collect();
        for k in old {
            h.remove(&k);
        }
        let suffix = if self.sip.is_some() { "-SIP" } else { "" };
        h.set("WCSAXES", 2, "")
            .set("CTYPE1", format!("RA---TAN{suffix}"), "gnomonic projection")
            .set("CTYPE2", format!("DEC--TAN{suffix}"), "gnomonic projection")
            .set("CUNIT1", "deg", "")
            .set("CUNIT2", "deg", "")
            .set("CRVAL1", self.crval[0], "[deg] RA at the reference pixel")
            .set("CRVAL2", self.crval[1], "[deg] Dec at the reference pixel")
            .set("CRPIX1", self.crpix[0], "reference pixel")
            .set("CRPIX2", self.crpix[1], "reference pixel")
            .set("CD1_1", self.cd[0][0], "[deg/px]")
            .set("CD1_2", self.cd[0][1], "[deg/px]")
            .set("CD2_1", self.cd[1][0], "[deg/px]")
            .set("CD2_2", self.cd[1][1], "[deg/px]")
            .set("RADESYS", "ICRS", "")
            .set("EQUINOX", 2000.0, "");
        let Some(sip) = &self.sip else {
            return;
        };
        let mut poly = |name: &str, p: &Poly, from: usize, what: &str| {
            h.set(&format!("{name}_ORDER"), p.order as i64, what);
            for i in 0..=p.order {
                for j in 0..=p.order - i {
                    let c = p.get(i, j);
                    if i + j >= from && c != 0.0 {
                        h.set(&format!("{name}_{i}_{j}"), c, "");
                    }
                }
            }
        };
        poly("A", &sip.a, 2, "SIP forward distortion, x");
        poly("B", &sip.b, 2, "SIP forward distortion, y");
        if let (Some(ap), Some(bp)) = (&sip.ap, &sip.bp) {
            poly("AP", ap, 0, "SIP inverse distortion, x");
            poly("BP", bp, 0, "SIP inverse distortion, y");
        }
    }

    /// Degrees per pixel (the square root of |det CD|).
    pub fn scale_deg(&self) -> f64 {
        det(&self.cd).abs().sqrt()
    }

    /// Intermediate world coordinates (degrees, before the projection) of a pixel.
    pub fn pix_to_intermediate(&self, x: f64, y: f64) -> (f64, f64) {
        let (mut u, mut v) = (x - self.crpix[0], y - self.crpix[1]);
        if let Some(s) = &self.sip {
            let (du, dv) = (s.a.eval(u, v), s.b.eval(u, v));
            u += du;
            v += dv;
        }
        (
            self.cd[0][0] * u + self.cd[0][1] * v,
            self.cd[1][0] * u + self.cd[1][1] * v,
        )
    }

    /// Sky position (RA in 0..360, Dec; degrees) of a 1-based pixel position.
    pub fn pix_to_sky(&self, x: f64, y: f64) -> (f64, f64) {
        let (xi, eta) = self.pix_to_intermediate(x, y);
        let (xi, eta) = (xi.to_radians(), eta.to_radians());
        let (ra0, dec0) = (self.crval[0].to_radians(), self.crval[1].to_radians());
        let denom = dec0.cos() - eta * dec0.sin();
        let ra = ra0 + xi.atan2(denom);
        let dec = (dec0.sin() + eta * dec0.cos()).atan2(xi.hypot(denom));
        (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
    }

    /// Intermediate world coordinates (degrees) of a sky position; `None` on the far hemisphere.
    pub fn sky_to_intermediate(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let (ra0, dec0) = (self.crval[0].to_radians(), self.crval[1].to_radians());
        let (ra, dec) = (ra_deg.to_radians(), dec_deg.to_radians());
        let cosc = dec0.sin() * dec.sin() + dec0.cos() * dec.cos() * (ra - ra0).cos();
        if cosc <= 0.0 {
            return None;
        }
        let xi = (dec.cos() * (ra - ra0).sin() / cosc).to_degrees();
        let eta = ((dec0.cos() * dec.sin() - dec0.sin() * dec.cos() * (ra - ra0).cos()) / cosc)
            .to_degrees();
        Some((xi, eta))
    }

    /// The 1-based pixel position of intermediate world coordinates (degrees).
    pub fn intermediate_to_pix(&self, xi: f64, eta: f64) -> (f64, f64) {
        let cd = &self.cd;
        let d = det(cd);
        let uu = (cd[1][1] * xi - cd[0][1] * eta) / d;
        let vv = (-cd[1][0] * xi + cd[0][0] * eta) / d;
        let Some(s) = &self.sip else {
            return (uu + self.crpix[0], vv + self.crpix[1]);
        };
        // Start from the inverse polynomials, then solve u + A(u, v) = U, v + B(u, v) = V.
        let (mut u, mut v) = match (&s.ap, &s.bp) {
            (Some(ap), Some(bp)) => (uu + ap.eval(uu, vv), vv + bp.eval(uu, vv)),
            _ => (uu, vv),
        };
        for _ in 0..50 {
            let (fa, au, av) = s.a.eval_grad(u, v);
            let (fb, bu, bv) = s.b.eval_grad(u, v);
            let (ru, rv) = (u + fa - uu, v + fb - vv);
            let (j11, j12, j21, j22) = (1.0 + au, av, bu, 1.0 + bv);
            let dj = j11 * j22 - j12 * j21;
            if !dj.is_finite() || dj == 0.0 {
                break;
            }
            let du = (j22 * ru - j12 * rv) / dj;
            let dv = (-j21 * ru + j11 * rv) / dj;
            u -= du;
            v -= dv;
            if du.abs().max(dv.abs()) < 1e-12 {
                break;
            }
        }
        (u + self.crpix[0], v + self.crpix[1])
    }

    /// The 1-based pixel position of a sky position (degrees); `None` on the far hemisphere.
    pub fn sky_to_pix(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let (xi, eta) = self.sky_to_intermediate(ra_deg, dec_deg)?;
        Some(self.intermediate_to_pix(xi, eta))
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
            assert!(w.sip.is_none());
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

    /// A SIP distortion like a prime-focus corrector's: mostly radial (cubic), a little of
    /// everything else, ~5 px at the corners of a 2048 x 4100 CCD.
    fn sip_wcs() -> TanWcs {
        let mut a = Poly::zeros(3);
        let mut b = Poly::zeros(3);
        a.set(2, 0, 2.1e-6);
        a.set(1, 1, -1.3e-6);
        a.set(3, 0, 2.4e-10);
        a.set(1, 2, 2.4e-10);
        b.set(0, 2, 1.7e-6);
        b.set(2, 1, 2.4e-10);
        b.set(0, 3, 2.4e-10);
        TanWcs {
            crpix: [1024.5, 2050.5],
            crval: [287.1, -20.2],
            cd: [[-9.16e-5, 1.0e-7], [1.2e-7, 9.17e-5]],
            sip: Some(Sip {
                a,
                b,
                ap: None,
                bp: None,
            }),
        }
    }

    #[test]
    fn sip_round_trip_is_exact_to_a_micro_pixel() {
        let w = sip_wcs();
        let mut worst: f64 = 0.0;
        for i in 0..=20 {
            for j in 0..=20 {
                let (x, y) = (-100.0 + i as f64 * 112.4, -100.0 + j as f64 * 215.0);
                let (ra, dec) = w.pix_to_sky(x, y);
                let (x2, y2) = w.sky_to_pix(ra, dec).unwrap();
                worst = worst.max((x - x2).hypot(y - y2));
            }
        }
        assert!(worst < 1e-6, "worst round trip {worst} px");
        // The distortion is there: the corner moves by pixels against plain TAN.
        let tan = TanWcs {
            sip: None,
            ..w.clone()
        };
        let (ra, dec) = w.pix_to_sky(1.0, 1.0);
        let (x, y) = tan.sky_to_pix(ra, dec).unwrap();
        assert!((x - 1.0).hypot(y - 1.0) > 3.0, "{x} {y}");
    }

    #[test]
    fn sip_survives_the_header() {
        let mut w = sip_wcs();
        let mut ap = Poly::zeros(4);
        ap.set(2, 0, -2.1e-6);
        ap.set(0, 0, 1e-9);
        let mut bp = Poly::zeros(4);
        bp.set(0, 2, -1.7e-6);
        if let Some(s) = &mut w.sip {
            s.ap = Some(ap);
            s.bp = Some(bp);
        }
        let mut h = header(false);
        h.set("PV1_1", 0.0, "").set("A_ORDER", 7, "");
        w.write(&mut h);
        assert_eq!(h.str("CTYPE1").unwrap(), "RA---TAN-SIP");
        assert!(!h.contains("CDELT1") && !h.contains("PC1_2") && !h.contains("PV1_1"));
        assert_eq!(h.i64("A_ORDER").unwrap(), 3);
        // Linear terms belong to CD: A_1_0 is not written.
        assert!(!h.contains("A_1_0") && h.contains("AP_0_0"));
        let back = TanWcs::from_header(&h).unwrap();
        assert_eq!(back, w);
        // Without -SIP in CTYPE the polynomials are not applied (as wcslib does).
        h.set("CTYPE1", "RA---TAN", "")
            .set("CTYPE2", "DEC--TAN", "");
        assert!(TanWcs::from_header(&h).unwrap().sip.is_none());
    }

    #[test]
    fn no_wcs_is_none() {
        assert!(TanWcs::from_header(&Header::new()).is_none());
        let mut h = header(true);
        h.set("CTYPE1", "RA---ZPN", "");
        assert!(TanWcs::from_header(&h).is_none());
    }
}
