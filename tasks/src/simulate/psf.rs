//! Drawing point sources and trails with a Moffat PSF into an image of expected electrons.
//! Positions are 0-based pixel centres of the image being drawn into.

/// A Moffat profile I(r) = (beta - 1) / (pi alpha^2) (1 + r^2 / alpha^2)^-beta, normalised to
/// a total of 1 over the plane.
#[derive(Debug, Clone, Copy)]
pub struct Moffat {
    pub alpha: f64,
    pub beta: f64,
}

impl Moffat {
    pub fn from_fwhm(fwhm_px: f64, beta: f64) -> Moffat {
        let alpha = fwhm_px / (2.0 * (2f64.powf(1.0 / beta) - 1.0).sqrt());
        Moffat { alpha, beta }
    }

    pub fn fwhm(&self) -> f64 {
        2.0 * self.alpha * (2f64.powf(1.0 / self.beta) - 1.0).sqrt()
    }

    pub fn at(&self, r2: f64) -> f64 {
        let q = 1.0 + r2 / (self.alpha * self.alpha);
        // beta = 3 (the default) without powf: the wings of thousands of stars per frame.
        let p = if self.beta == 3.0 {
            1.0 / (q * q * q)
        } else {
            q.powf(-self.beta)
        };
        (self.beta - 1.0) / (std::f64::consts::PI * self.alpha * self.alpha) * p
    }

    /// Radius beyond which a source of `flux` adds less than `floor` per pixel.
    pub fn radius(&self, flux: f64, floor: f64) -> f64 {
        let peak = flux * (self.beta - 1.0) / (std::f64::consts::PI * self.alpha * self.alpha);
        let r = if peak <= floor {
            0.0
        } else {
            self.alpha * ((peak / floor).powf(1.0 / self.beta) - 1.0).max(0.0).sqrt()
        };
        r.clamp(4.0 * self.fwhm(), 200.0)
    }
}

/// A view of an image to draw into.
pub struct Canvas<'a> {
    pub data: &'a mut [f32],
    pub width: usize,
    pub height: usize,
}

impl Canvas<'_> {
    /// Adds `flux` electrons spread as the PSF centred at (xc, yc). The core is integrated over
    /// each pixel on a 4x4 grid; the wings are sampled at pixel centres.
    pub fn add_psf(&mut self, psf: &Moffat, xc: f64, yc: f64, flux: f64) {
        self.add_profile(psf, xc, yc, flux, true, psf.radius(flux, 0.05));
    }

    fn add_profile(&mut self, psf: &Moffat, xc: f64, yc: f64, flux: f64, integrate: bool, r: f64) {
        if flux <= 0.0 {
            return;
        }
        let x0 = (xc - r).floor().max(0.0) as i64;
        let x1 = (xc + r).ceil().min(self.width as f64 - 1.0) as i64;
        let y0 = (yc - r).floor().max(0.0) as i64;
        let y1 = (yc + r).ceil().min(self.height as f64 - 1.0) as i64;
        if x0 > x1 || y0 > y1 {
            return;
        }
        let core2 = if integrate {
            (1.5 * psf.fwhm()).powi(2)
        } else {
            -1.0
        };
        const SUB: usize = 4;
        for y in y0..=y1 {
            let dy = y as f64 - yc;
            let row = &mut self.data[y as usize * self.width..(y as usize + 1) * self.width];
            for x in x0..=x1 {
                let dx = x as f64 - xc;
                let d2 = dx * dx + dy * dy;
                let v = if d2 < core2 {
                    let mut s = 0.0;
                    for i in 0..SUB {
                        let sy = dy + (i as f64 + 0.5) / SUB as f64 - 0.5;
                        for j in 0..SUB {
                            let sx = dx + (j as f64 + 0.5) / SUB as f64 - 0.5;
                            s += psf.at(sx * sx + sy * sy);
                        }
                    }
                    s / (SUB * SUB) as f64
                } else {
                    psf.at(d2)
                };
                row[x as usize] += (flux * v) as f32;
            }
        }
    }

    /// Adds `flux` electrons spread evenly along the segment from `a` to `b` (a source moving
    /// during the exposure), convolved with the PSF. Samples lie 0.2 FWHM apart, so the motion
    /// itself smooths the profile and long trails sample the PSF at pixel centres only.
    pub fn add_trail(&mut self, psf: &Moffat, a: (f64, f64), b: (f64, f64), flux: f64) {
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let n = ((len / (0.2 * psf.fwhm())).ceil() as usize).max(1);
        // The wings are drawn as far as the whole trail's light would reach: cut at each
        // sample's own level, the many faint wings would lose a percent of the flux.
        let margin = psf.radius(flux, 0.05);
        // Skip trails that cannot touch this canvas.
        let (lo_x, hi_x) = (a.0.min(b.0) - margin, a.0.max(b.0) + margin);
        let (lo_y, hi_y) = (a.1.min(b.1) - margin, a.1.max(b.1) + margin);
        if hi_x < 0.0 || hi_y < 0.0 || lo_x > self.width as f64 || lo_y > self.height as f64 {
            return;
        }
        for i in 0..n {
            let t = (i as f64 + 0.5) / n as f64;
            self.add_profile(
                psf,
                a.0 + t * (b.0 - a.0),
                a.1 + t * (b.1 - a.1),
                flux / n as f64,
                n < 5,
                margin,
            );
        }
    }
}

/// The effective number of pixels of a source's profile, 1 / sum(p_i^2) over the normalised
/// profile: the noise of an optimal (PSF-fit) flux measurement is sqrt(F + n_eff * B).
pub fn effective_pixels(psf: &Moffat, trail_px: f64) -> f64 {
    let half = (trail_px / 2.0 + 4.0 * psf.fwhm()).ceil() as usize + 2;
    let size = 2 * half + 1;
    let mut data = vec![0f32; size * size];
    let mut c = Canvas {
        data: &mut data,
        width: size,
        height: size,
    };
    let mid = half as f64;
    c.add_trail(
        psf,
        (mid - trail_px / 2.0, mid),
        (mid + trail_px / 2.0, mid),
        1.0,
    );
    let total: f64 = data.iter().map(|&v| v as f64).sum();
    let sum2: f64 = data.iter().map(|&v| (v as f64 / total).powi(2)).sum();
    1.0 / sum2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(d: &[f32]) -> f64 {
        d.iter().map(|&v| v as f64).sum()
    }

    #[test]
    fn moffat_is_normalised_and_has_the_asked_fwhm() {
        let m = Moffat::from_fwhm(3.6, 3.0);
        assert!((m.fwhm() - 3.6).abs() < 1e-12);
        assert!((m.at(1.8 * 1.8) / m.at(0.0) - 0.5).abs() < 1e-12);
        let mut d = vec![0f32; 201 * 201];
        Canvas {
            data: &mut d,
            width: 201,
            height: 201,
        }
        .add_psf(&m, 100.3, 99.8, 1.0e6);
        // The Moffat wings beyond the drawn radius hold a few parts in 1e4.
        assert!((sum(&d) / 1.0e6 - 1.0).abs() < 2e-3, "{}", sum(&d));
        // The centroid is where it was put.
        let (mut sx, mut sy) = (0.0, 0.0);
        for (i, &v) in d.iter().enumerate() {
            sx += (i % 201) as f64 * v as f64;
            sy += (i / 201) as f64 * v as f64;
        }
        assert!((sx / sum(&d) - 100.3).abs() < 0.01 && (sy / sum(&d) - 99.8).abs() < 0.01);
    }

    #[test]
    fn trails_spread_the_flux_along_the_track_and_clip_at_edges() {
        let m = Moffat::from_fwhm(3.0, 3.0);
        let mut d = vec![0f32; 300 * 100];
        let mut c = Canvas {
            data: &mut d,
            width: 300,
            height: 100,
        };
        c.add_trail(&m, (50.0, 50.0), (250.0, 50.0), 2.0e5);
        assert!((sum(&d) / 2.0e5 - 1.0).abs() < 3e-3);
        // Even along the track, nothing beyond its ends.
        let at = |x: usize| d[50 * 300 + x];
        assert!((at(100) / at(200) - 1.0).abs() < 0.02);
        assert!(at(280) < at(150) * 1e-2);

        let mut e = vec![0f32; 100 * 100];
        Canvas {
            data: &mut e,
            width: 100,
            height: 100,
        }
        .add_trail(&m, (-500.0, 50.0), (50.0, 50.0), 5.5e5);
        assert!(
            (sum(&e) / 5.0e4 - 1.0).abs() < 0.02,
            "about 1/11 of the flux lands: {}",
            sum(&e)
        );
    }

    #[test]
    fn trailing_raises_the_effective_area() {
        let m = Moffat::from_fwhm(3.6, 3.0);
        let point = effective_pixels(&m, 0.0);
        // Analytically n_eff = pi alpha^2 (2 beta - 1) / (beta - 1)^2 (pixels add a little).
        let exact = std::f64::consts::PI * m.alpha.powi(2) * 5.0 / 4.0;
        assert!((point / exact - 1.0).abs() < 0.05, "{point} vs {exact}");
        assert!(effective_pixels(&m, 100.0) > 5.0 * point);
    }
}
