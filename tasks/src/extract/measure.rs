//! Measurements of one deblended object: isophotal moments and fluxes, FWHM, Kron (AUTO) and
//! circular-aperture photometry, half-light radius and the windowed centroid, with SExtractor's
//! definitions. Pixels of other objects and unusable pixels inside an aperture are replaced by
//! their mirror image through the object's centre (SExtractor's MASK_TYPE CORRECT).

use super::deblend::Piece;
use super::{
    ExtractConfig, Frame, Noise, Source, FLAG_APER_INCOMPLETE, FLAG_BLENDED, FLAG_CROWDED,
    FLAG_ISO_INCOMPLETE, FLAG_SATURATED, FLAG_TRUNCATED,
};

/// Kron first moment integration limit, in isophotal A/B units.
const KRON_NSIG: f64 = 6.0;
/// Neighbour/bad-pixel fraction of the AUTO aperture above which FLAGS bit 1 is set.
const CROWD_THRESHOLD: f64 = 0.1;
/// Subsampling of boundary pixels of circular apertures.
const APER_OVERSAMP: usize = 5;
const WINPOS_NSIG: f64 = 4.0;
const WINPOS_NITERMAX: usize = 16;
const WINPOS_STEPMIN: f64 = 0.0001;
const WINPOS_FAC: f64 = 2.0;

struct Px<'a> {
    f: &'a Frame<'a>,
    number: u32,
    /// `2 * centre + 0.49999`, for mirror pixels.
    mx2: f64,
    my2: f64,
}

impl Px<'_> {
    #[inline(always)]
    fn usable(&self, p: usize) -> bool {
        let s = self.f.seg[p];
        (s == 0 || s == self.number) && !self.f.is_bad(p)
    }
    /// Value and variance at `(x, y)` (inside the image); an unusable pixel is replaced by the
    /// image at its mirror point through the object's centre, bilinearly interpolated when the
    /// four pixels around it are usable, else the nearest mirror pixel (SExtractor's choice), else
    /// 0. The flag says whether the pixel itself was unusable.
    #[inline(always)]
    fn get(&self, x: usize, y: usize) -> (f64, f64, bool) {
        let w = self.f.w;
        let p = y * w + x;
        if self.usable(p) {
            return (self.f.sub[p] as f64, self.f.noise.var(p), false);
        }
        self.mirror(x, y)
    }

    #[inline(never)]
    fn mirror(&self, x: usize, y: usize) -> (f64, f64, bool) {
        let w = self.f.w;
        // Mirror point (mx2, my2 carry +0.49999 for the nearest-pixel rounding).
        let (fx, fy) = (self.mx2 - 0.49999 - x as f64, self.my2 - 0.49999 - y as f64);
        let (x0, y0) = (fx.floor(), fy.floor());
        let (tx, ty) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        if x0 >= 0 && y0 >= 0 && ((x0 + 1) as usize) < w && ((y0 + 1) as usize) < self.f.h {
            let q = y0 as usize * w + x0 as usize;
            let quad = [q, q + 1, q + w, q + w + 1];
            if quad.iter().all(|q| self.usable(*q)) {
                let wts = [
                    (1.0 - tx) * (1.0 - ty),
                    tx * (1.0 - ty),
                    (1.0 - tx) * ty,
                    tx * ty,
                ];
                let (mut v, mut var) = (0.0, 0.0);
                for (q, k) in quad.iter().zip(wts) {
                    v += k * self.f.sub[*q] as f64;
                    var += k * self.f.noise.var(*q);
                }
                return (v, var, true);
            }
        }
        let x2 = (self.mx2 - x as f64) as i64;
        let y2 = (self.my2 - y as f64) as i64;
        if x2 >= 0 && y2 >= 0 && (x2 as usize) < w && (y2 as usize) < self.f.h {
            let q = y2 as usize * w + x2 as usize;
            if self.usable(q) {
                return (self.f.sub[q] as f64, self.f.noise.var(q), true);
            }
        }
        let var = match self.f.noise {
            Noise::Global { sigma } => (sigma as f64).powi(2),
            Noise::Map { .. } => 0.0,
        };
        (0.0, var, true)
    }
}

/// A box of the image with unusable pixels already replaced (mirror about the isophotal
/// centre), for the passes that read the same pixels many times (the centroid window iterates).
struct Stamp {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    v: Vec<f32>,
    var: Vec<f32>,
}

impl Stamp {
    fn new(px: &Px, x0: usize, x1: usize, y0: usize, y1: usize) -> Stamp {
        let n = (x1 - x0) * (y1 - y0);
        let (mut v, mut var) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let f = px.f;
        for y in y0..y1 {
            let base = y * f.w;
            for x in x0..x1 {
                let p = base + x;
                if px.usable(p) {
                    v.push(f.sub[p]);
                    var.push(f.noise.var(p) as f32);
                } else {
                    let (a, b, _) = px.mirror(x, y);
                    v.push(a as f32);
                    var.push(b as f32);
                }
            }
        }
        Stamp {
            x0,
            y0,
            x1,
            y1,
            v,
            var,
        }
    }
    /// Values of row `y`, columns `xa..xb`, when the stamp covers them.
    #[inline]
    fn row(&self, y: usize, xa: usize, xb: usize) -> Option<&[f32]> {
        if y >= self.y0 && y < self.y1 && xa >= self.x0 && xb <= self.x1 {
            let i = (y - self.y0) * (self.x1 - self.x0);
            Some(&self.v[i + xa - self.x0..i + xb - self.x0])
        } else {
            None
        }
    }
    #[inline(always)]
    fn get(&self, px: &Px, x: usize, y: usize) -> (f64, f64) {
        if x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1 {
            let i = (y - self.y0) * (self.x1 - self.x0) + (x - self.x0);
            (self.v[i] as f64, self.var[i] as f64)
        } else {
            let (a, b, _) = px.get(x, y);
            (a, b)
        }
    }
}

pub(crate) fn mag(flux: f64, err: f64, zp: f32) -> (f64, f64) {
    if flux > 0.0 {
        (zp as f64 - 2.5 * flux.log10(), 1.086 * err / flux)
    } else {
        (99.0, 99.0)
    }
}

/// Bounds `[lo, hi)` of a box `centre +- half` (SExtractor's rounding), clipped to `0..n`;
/// the flag says whether clipping happened.
fn bounds(c: f64, half: f64, n: usize) -> (usize, usize, bool) {
    let lo = (c - half).round() as i64;
    let hi = (c + half).round() as i64 + 1;
    let clipped = lo < 0 || hi > n as i64;
    (lo.max(0) as usize, hi.clamp(0, n as i64) as usize, clipped)
}

/// Half-width in x and y of the ellipse `cxx x^2 + cyy y^2 + cxy xy <= k^2`.
fn ellipse_extent(cxx: f64, cyy: f64, cxy: f64, k: f64) -> (f64, f64) {
    let dx = cxx - cxy * cxy / (4.0 * cyy);
    let dy = cyy - cxy * cxy / (4.0 * cxx);
    (
        if dx > 0.0 { k / dx.sqrt() } else { 0.0 },
        if dy > 0.0 { k / dy.sqrt() } else { 0.0 },
    )
}

pub(crate) fn measure(f: &Frame, cfg: &ExtractConfig, piece: &Piece, number: u32) -> Source {
    let (w, h) = (f.w, f.h);
    let gain = cfg.gain_e_per_adu as f64;
    let global_var = match f.noise {
        Noise::Global { sigma } => (sigma as f64).powi(2),
        Noise::Map { .. } => (f.mesh.global_rms as f64).powi(2),
    };
    let mut flags: u16 = if piece.blended { FLAG_BLENDED } else { 0 };

    // --- Isophotal pass: bounding box, fluxes, moments of the filtered values.
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (usize::MAX, 0usize, usize::MAX, 0usize);
    for &p in &piece.pixels {
        let (x, y) = (p as usize % w, p as usize / w);
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    let (mut rv, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut tv, mut sigtv) = (0.0f64, 0.0f64);
    let mut peak = f64::NEG_INFINITY;
    let mut isoarea = 0i32;
    let ts = cfg.thresh_sigma as f64;
    let sat = cfg.saturate_adu;
    for &p in &piece.pixels {
        let p = p as usize;
        let (x, y) = ((p % w - xmin) as f64, (p / w - ymin) as f64);
        let c = f.filt[p] as f64;
        let v = f.sub[p] as f64;
        rv += c;
        sx += c * x;
        sy += c * y;
        sxx += c * x * x;
        syy += c * y * y;
        sxy += c * x * y;
        tv += v;
        let var = f.noise.var(p);
        sigtv += var;
        let t = match f.noise {
            Noise::Global { .. } => f.thresh as f64,
            Noise::Map { .. } => ts * var.sqrt(),
        };
        if v > t {
            isoarea += 1;
        }
        peak = peak.max(v);
        if sat.is_some_and(|s| f.img.data[p] >= s) || f.img.mask_saturated(p) {
            flags |= FLAG_SATURATED;
        }
    }
    if xmin == 0 || ymin == 0 || xmax + 1 == w || ymax + 1 == h {
        flags |= FLAG_TRUNCATED;
    }
    if !f.bad.is_empty() {
        // Bad pixels in the footprint (interpolated for detection) or next to it.
        'outer: for &p in &piece.pixels {
            let (x, y) = ((p as usize % w) as i64, (p as usize / w) as i64);
            for dy in -1..=1i64 {
                for dx in -1..=1i64 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx >= 0
                        && ny >= 0
                        && (nx as usize) < w
                        && (ny as usize) < h
                        && f.bad[ny as usize * w + nx as usize]
                    {
                        flags |= FLAG_ISO_INCOMPLETE;
                        break 'outer;
                    }
                }
            }
        }
    }
    if gain > 0.0 && tv > 0.0 {
        sigtv += tv / gain;
    }
    if rv.is_nan() || rv <= 0.0 {
        rv = 1.0;
    }
    let (xm, ym) = (sx / rv, sy / rv);
    let mut x2 = sxx / rv - xm * xm;
    let mut y2 = syy / rv - ym * ym;
    let xy = sxy / rv - xm * ym;
    let mut singular = false;
    if x2 * y2 - xy * xy < 0.00694 {
        x2 += 0.0833333;
        y2 += 0.0833333;
        singular = true;
    }
    let det = x2 * y2 - xy * xy;
    let theta = if (x2 - y2).abs() > 0.0 {
        0.5 * (2.0 * xy).atan2(x2 - y2)
    } else {
        std::f64::consts::FRAC_PI_4
    };
    let tmp = (0.25 * (x2 - y2).powi(2) + xy * xy).sqrt();
    let a = (0.5 * (x2 + y2) + tmp).max(0.0).sqrt();
    let b = (0.5 * (x2 + y2) - tmp).max(0.0).sqrt();
    let (cxx, cyy, cxy) = (y2 / det, x2 / det, -2.0 * xy / det);
    let mx = xm + xmin as f64;
    let my = ym + ymin as f64;

    // Position errors of the barycentre.
    let (mut esum, mut ex2, mut ey2, mut exy) = (0.0f64, 0.0, 0.0, 0.0);
    for &p in &piece.pixels {
        let p = p as usize;
        let c = f.filt[p] as f64;
        let mut err = global_var;
        if gain > 0.0 && c > 0.0 {
            err += c / gain;
        }
        let (dx, dy) = ((p % w) as f64 - mx, (p / w) as f64 - my);
        esum += err;
        ex2 += err * dx * dx;
        ey2 += err * dy * dy;
        exy += err * dx * dy;
    }
    let flux2 = rv * rv;
    ex2 /= flux2;
    ey2 /= flux2;
    exy /= flux2;
    esum *= 0.08333 / flux2;
    if singular && ex2 * ey2 - exy * exy < esum * esum {
        ex2 += esum;
        ey2 += esum;
    }

    // --- FWHM: weighted fit of log(pixel) against r^2 over the core.
    let thresh_iso = f.thresh as f64;
    let mut fwhm = 0.0f64;
    let thresh0 = (peak / 5.0).max(thresh_iso);
    if thresh0 > 0.0 {
        let bkg = f.mesh.level_at(mx, my) as f64;
        let satv = sat.map_or(f64::INFINITY, |s| s as f64 - bkg);
        let (mut s, mut sxd, mut sxxd, mut syd, mut sxyd) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
        for &p in &piece.pixels {
            let p = p as usize;
            let v = f.sub[p] as f64;
            if v > thresh0 && v < satv {
                let (dx, dy) = ((p % w) as f64 - mx, (p / w) as f64 - my);
                let d2 = dx * dx + dy * dy;
                let lv = v.ln();
                let wgt = v * v;
                s += wgt;
                sxd += d2 * wgt;
                sxxd += d2 * d2 * wgt;
                syd += lv * wgt;
                sxyd += lv * d2 * wgt;
            }
        }
        let d = s * sxxd - sxd * sxd;
        if d.abs() > 0.0 {
            let mut bb = -(s * sxyd - sxd * syd) / d;
            let bmax = 1.0 / (13.0 * a * b).max(1e-12);
            if bb < bmax {
                bb = bmax;
            }
            fwhm = 1.6651 / bb.sqrt();
            if fwhm > 0.0 {
                fwhm -= 1.0 / (4.0 * fwhm);
            }
        }
    }

    let px = Px {
        f,
        number,
        mx2: 2.0 * mx + 0.49999,
        my2: 2.0 * my + 0.49999,
    };

    // --- Kron radius: first moment within KRON_NSIG isophotal radii.
    let (dxl, dyl) = ellipse_extent(cxx, cyy, cxy, KRON_NSIG);
    let (x0, x1, c1) = bounds(mx, dxl, w);
    let (y0, y1, c2) = bounds(my, dyl, h);
    if c1 || c2 {
        flags |= FLAG_APER_INCOMPLETE;
    }
    let klim2 = KRON_NSIG * KRON_NSIG;
    let (mut r1, mut v1) = (0.0f64, 0.0f64);
    let (mut area, mut areab) = (0usize, 0usize);
    for y in y0..y1 {
        let dy = y as f64 - my;
        for x in x0..x1 {
            let dx = x as f64 - mx;
            let r2 = cxx * dx * dx + cyy * dy * dy + cxy * dx * dy;
            if r2 <= klim2 {
                let p = y * w + x;
                if px.usable(p) {
                    let v = f.sub[p] as f64;
                    area += 1;
                    r1 += r2.sqrt() * v;
                    v1 += v;
                } else {
                    areab += 1;
                }
            }
        }
    }
    let mut kron = cfg.min_radius as f64;
    if r1 > 0.0 && v1 > 0.0 {
        kron = (cfg.kron_factor as f64 * r1 / v1).max(cfg.min_radius as f64);
    }
    area += areab;
    if area > 0 && areab as f64 / area as f64 > CROWD_THRESHOLD {
        flags |= FLAG_CROWDED;
    }

    // --- AUTO flux within the Kron ellipse.
    let (dxl, dyl) = ellipse_extent(cxx, cyy, cxy, kron);
    let (x0, x1, c1) = bounds(mx, dxl, w);
    let (y0, y1, c2) = bounds(my, dyl, h);
    let rmax_hl = (kron.max(cfg.min_radius as f64) * a).max(2.0);
    if c1 || c2 {
        flags |= FLAG_APER_INCOMPLETE;
    }
    let k2 = kron * kron;
    let (mut ftv, mut fsig) = (0.0f64, 0.0f64);
    let (mut area, mut areab) = (0usize, 0usize);
    // The same pass builds the growth curve for the half-light radius: 2x2 subpixels binned in
    // r^2 (circular radius, pixels of the AUTO aperture).
    const NB: usize = 1024;
    let r2max = (rmax_hl + 1.0) * (rmax_hl + 1.0);
    let inv_bin = NB as f64 / r2max;
    let mut bins = [0.0f64; NB + 1];
    for y in y0..y1 {
        let dy = y as f64 - my;
        for x in x0..x1 {
            let dx = x as f64 - mx;
            if cxx * dx * dx + cyy * dy * dy + cxy * dx * dy <= k2 {
                area += 1;
                let (v, var, was_bad) = px.get(x, y);
                if was_bad {
                    areab += 1;
                }
                ftv += v;
                fsig += var;
                let v4 = 0.25 * v;
                for sy in [-0.25, 0.25] {
                    let yy = (dy + sy) * (dy + sy);
                    for sxp in [-0.25, 0.25] {
                        let r2 = (dx + sxp) * (dx + sxp) + yy;
                        if r2 < r2max {
                            bins[(r2 * inv_bin) as usize] += v4;
                        }
                    }
                }
            }
        }
    }
    if area > 0 && areab as f64 > CROWD_THRESHOLD * area as f64 {
        flags |= FLAG_CROWDED;
    }
    if gain > 0.0 && ftv > 0.0 {
        fsig += ftv / gain;
    }
    let flux_auto = ftv;
    let fluxerr_auto = fsig.sqrt();
    if flux_auto <= 0.0 {
        kron = 0.0;
    }
    // --- Half-light radius, normalised to FLUX_AUTO.
    let mut flux_radius = 0.0f64;
    if flux_auto > 0.0 {
        let target = 0.5 * flux_auto;
        let mut cum = 0.0f64;
        for (i, b) in bins.iter().enumerate() {
            if cum + b >= target && *b > 0.0 {
                flux_radius = ((i as f64 + (target - cum) / b) / inv_bin).sqrt();
                break;
            }
            cum += b;
        }
    }

    // --- Windowed centroid.
    let sig = if flux_radius > 0.0 {
        2.0 * flux_radius / 2.35
    } else if fwhm > 0.0 {
        fwhm / 2.35
    } else {
        a.max(0.5)
    }
    .max(0.3);
    let inv2s2 = 1.0 / (2.0 * sig * sig);
    let raper = WINPOS_NSIG * sig;
    let raper2 = raper * raper;
    let stamp = {
        let rap = cfg
            .phot_apertures_px
            .iter()
            .fold(0.0f64, |m, d| m.max(*d as f64 / 2.0 + 1.0));
        let r = (raper + 1.5).max(rap);
        let (sx0, sx1, _) = bounds(mx, r, w);
        let (sy0, sy1, _) = bounds(my, r, h);
        Stamp::new(&px, sx0, sx1, sy0, sy1)
    };
    let (mut wx, mut wy) = (mx, my);
    let mut win_ok = false;
    let mut gx: Vec<f64> = Vec::new();
    // Window bounds (SExtractor's rounding), flagging windows that run off the image.
    let win_bounds = |wx: f64, wy: f64, flags: &mut u16| {
        let xl = (wx - raper + 0.499999).floor() as i64;
        let xh = (wx + raper + 1.499999).floor() as i64;
        let yl = (wy - raper + 0.499999).floor() as i64;
        let yh = (wy + raper + 1.499999).floor() as i64;
        if xl < 0 || yl < 0 || xh > w as i64 || yh > h as i64 {
            *flags |= FLAG_APER_INCOMPLETE;
        }
        (
            xl.max(0) as usize,
            xh.clamp(0, w as i64) as usize,
            yl.max(0) as usize,
            yh.clamp(0, h as i64) as usize,
        )
    };
    // Columns [xa, xb) of row y inside the window circle.
    let span = |wx: f64, dy: f64, xl: usize, xh: usize| -> Option<(usize, usize)> {
        let s2 = raper2 - dy * dy;
        if s2 <= 0.0 {
            return None;
        }
        let hw = s2.sqrt();
        let xa = ((wx - hw).ceil().max(xl as f64)) as usize;
        let xb = (((wx + hw).floor() + 1.0).min(xh as f64).max(0.0)) as usize;
        (xa < xb).then_some((xa, xb))
    };
    for _ in 0..WINPOS_NITERMAX {
        let (xl, xh, yl, yh) = win_bounds(wx, wy, &mut flags);
        // The Gaussian window is separable: one exp per column and per row.
        gx.clear();
        gx.extend((xl..xh).map(|x| (-(x as f64 - wx).powi(2) * inv2s2).exp()));
        let (mut tvw, mut sxw, mut syw) = (0.0f64, 0.0f64, 0.0f64);
        for y in yl..yh {
            let dy = y as f64 - wy;
            let Some((xa, xb)) = span(wx, dy, xl, xh) else {
                continue;
            };
            let gy = (-dy * dy * inv2s2).exp();
            let (mut a, mut b) = (0.0f64, 0.0f64);
            if let Some(row) = stamp.row(y, xa, xb) {
                for (k, (v, g)) in row.iter().zip(&gx[xa - xl..xb - xl]).enumerate() {
                    let t = g * *v as f64;
                    a += t;
                    b += t * k as f64;
                }
                b += a * xa as f64;
            } else {
                for x in xa..xb {
                    let t = gx[x - xl] * stamp.get(&px, x, y).0;
                    a += t;
                    b += t * x as f64;
                }
            }
            tvw += gy * a;
            sxw += gy * b;
            syw += gy * a * y as f64;
        }
        if tvw.is_nan() || tvw <= 0.0 {
            win_ok = false;
            break;
        }
        let (dxp, dyp) = (sxw / tvw - wx, syw / tvw - wy);
        wx += WINPOS_FAC * dxp;
        wy += WINPOS_FAC * dyp;
        win_ok = true;
        if dxp * dxp + dyp * dyp < WINPOS_STEPMIN * WINPOS_STEPMIN {
            break;
        }
    }
    let (mut wex2, mut wey2, mut wexy) = (ex2, ey2, exy);
    if win_ok && wx.is_finite() && wy.is_finite() {
        // Errors of the converged window centroid.
        let (xl, xh, yl, yh) = win_bounds(wx, wy, &mut flags);
        let (mut tvw, mut es, mut e2x, mut e2y, mut e2xy) = (0.0f64, 0.0f64, 0.0, 0.0, 0.0);
        // Separable window again: one exp per column and per row.
        gx.clear();
        gx.extend((xl..xh).map(|x| (-(x as f64 - wx).powi(2) * inv2s2).exp()));
        for y in yl..yh {
            let dy = y as f64 - wy;
            let Some((xa, xb)) = span(wx, dy, xl, xh) else {
                continue;
            };
            let gy = (-dy * dy * inv2s2).exp();
            for x in xa..xb {
                let dx = x as f64 - wx;
                let wgt = gx[x - xl] * gy;
                let (v, var) = stamp.get(&px, x, y);
                tvw += wgt * v;
                let mut err = var;
                if gain > 0.0 && v > 0.0 {
                    err += v / gain;
                }
                let e2 = wgt * wgt * err;
                es += e2;
                e2x += e2 * (dx * dx + 0.0833);
                e2y += e2 * (dy * dy + 0.0833);
                e2xy += e2 * dx * dy;
            }
        }
        if tvw > 0.0 {
            let norm = WINPOS_FAC * WINPOS_FAC / (tvw * tvw);
            wex2 = e2x * norm;
            wey2 = e2y * norm;
            wexy = e2xy * norm;
            let es = es * 0.08333 * norm;
            if singular && wex2 * wey2 - wexy * wexy < es * es {
                wex2 += es;
                wey2 += es;
            }
        }
    } else {
        wx = mx;
        wy = my;
    }

    // --- Circular apertures (diameters), centred on the barycentre.
    let mut flux_aper = Vec::with_capacity(cfg.phot_apertures_px.len());
    let mut fluxerr_aper = Vec::with_capacity(cfg.phot_apertures_px.len());
    for d in &cfg.phot_apertures_px {
        let r = *d as f64 / 2.0;
        let r2 = r * r;
        let rin = r - 0.75;
        let rin2 = if rin > 0.0 { rin * rin } else { 0.0 };
        let rext2 = (r + 0.75) * (r + 0.75);
        let xl = (mx - r + 0.499999).floor() as i64;
        let xh = (mx + r + 1.499999).floor() as i64;
        let yl = (my - r + 0.499999).floor() as i64;
        let yh = (my + r + 1.499999).floor() as i64;
        if xl < 0 || yl < 0 || xh > w as i64 || yh > h as i64 {
            flags |= FLAG_APER_INCOMPLETE;
        }
        let (xl, xh) = (xl.max(0) as usize, xh.clamp(0, w as i64) as usize);
        let (yl, yh) = (yl.max(0) as usize, yh.clamp(0, h as i64) as usize);
        let step = 1.0 / APER_OVERSAMP as f64;
        let (mut atv, mut asig) = (0.0f64, 0.0f64);
        for y in yl..yh {
            let dy = y as f64 - my;
            for x in xl..xh {
                let dx = x as f64 - mx;
                let rr = dx * dx + dy * dy;
                if rr >= rext2 {
                    continue;
                }
                let frac = if rr > rin2 {
                    let mut n = 0usize;
                    for sy in 0..APER_OVERSAMP {
                        let yy = dy + (sy as f64 + 0.5) * step - 0.5;
                        for sx in 0..APER_OVERSAMP {
                            let xx = dx + (sx as f64 + 0.5) * step - 0.5;
                            if xx * xx + yy * yy < r2 {
                                n += 1;
                            }
                        }
                    }
                    n as f64 * step * step
                } else {
                    1.0
                };
                if frac == 0.0 {
                    continue;
                }
                let (v, var) = stamp.get(&px, x, y);
                atv += frac * v;
                asig += frac * var;
            }
        }
        if gain > 0.0 && atv > 0.0 {
            asig += atv / gain;
        }
        flux_aper.push(atv);
        fluxerr_aper.push(asig.sqrt());
    }
    let zp = cfg.mag_zeropoint;
    let (mag_aper, magerr_aper): (Vec<f64>, Vec<f64>) = flux_aper
        .iter()
        .zip(&fluxerr_aper)
        .map(|(fl, e)| mag(*fl, *e, zp))
        .unzip();
    let fluxerr_iso = sigtv.sqrt();
    let (mag_iso, magerr_iso) = mag(tv, fluxerr_iso, zp);
    let (mag_auto, magerr_auto) = mag(flux_auto, fluxerr_auto, zp);

    Source {
        number,
        x_image: mx + 1.0,
        y_image: my + 1.0,
        xwin_image: wx + 1.0,
        ywin_image: wy + 1.0,
        errx2win_image: wex2,
        erry2win_image: wey2,
        errxywin_image: wexy,
        errx2_image: ex2,
        erry2_image: ey2,
        errxy_image: exy,
        x2_image: x2,
        y2_image: y2,
        xy_image: xy,
        a_image: a,
        b_image: b,
        theta_image: theta.to_degrees(),
        cxx_image: cxx,
        cyy_image: cyy,
        cxy_image: cxy,
        xmin_image: xmin as i32 + 1,
        ymin_image: ymin as i32 + 1,
        xmax_image: xmax as i32 + 1,
        ymax_image: ymax as i32 + 1,
        isoarea_image: isoarea,
        npix: piece.pixels.len() as i32,
        flux_iso: tv,
        fluxerr_iso,
        mag_iso,
        magerr_iso,
        flux_auto,
        fluxerr_auto,
        mag_auto,
        magerr_auto,
        kron_radius: kron,
        flux_radius,
        flux_aper,
        fluxerr_aper,
        mag_aper,
        magerr_aper,
        flux_max: peak,
        background: f.mesh.level_at(mx, my) as f64,
        threshold: f.thresh as f64,
        fwhm_image: fwhm,
        elongation: if b > 0.0 { a / b } else { 1.0 },
        ellipticity: if a > 0.0 { 1.0 - b / a } else { 0.0 },
        snr_auto: if fluxerr_auto > 0.0 {
            flux_auto / fluxerr_auto
        } else {
            0.0
        },
        flags,
        alpha_j2000: None,
        delta_j2000: None,
    }
}
