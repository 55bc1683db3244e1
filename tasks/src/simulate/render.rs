//! Drawing a planned frame: expected electrons (sky, stars, asteroids, satellites) through the
//! flat field (vignetting, pixel response, dust rings, bad columns), dark current of hot pixels,
//! Poisson noise, cosmic rays, saturation and bleeding, then readout: gain, bias with its
//! structure, read noise, pre- and overscan, 16-bit ADC.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use rayon::prelude::*;

use super::plan::{
    great_circle_focal, raw_xy, stream, Night, SITE_LAT_DEG, SITE_LON_DEG, STREAM_FRAME,
};
use super::psf::{Canvas, Moffat};
use super::time;
use super::truth::{Artifact, FrameKind, FrameTruth};
use crate::fits::{Header, Image};

/// A drawn frame: the night-level header and one image (ADU, integers) per CCD, plus the
/// artifacts that only drawing reveals (cosmic rays, bleed trails).
#[derive(Debug, Clone)]
pub struct RenderedFrame {
    pub index: usize,
    pub primary: Header,
    pub ccds: Vec<Image>,
    pub artifacts: Vec<Artifact>,
}

/// Draws frame `index` of the night; CCDs in parallel. Deterministic per seed.
pub fn render(night: &Night, index: usize) -> RenderedFrame {
    let fr = &night.frames[index];
    let drawn: Vec<(Image, Vec<Artifact>)> = (0..night.ccds.len())
        .into_par_iter()
        .map(|k| render_ccd(night, fr, k))
        .collect();
    let mut ccds = Vec::with_capacity(drawn.len());
    let mut artifacts = Vec::new();
    for (im, a) in drawn {
        ccds.push(im);
        artifacts.extend(a);
    }
    RenderedFrame {
        index,
        primary: primary_header(night, fr),
        ccds,
        artifacts,
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fixed-pattern value for (seed, a, b), about N(0, 1): the same in every frame, so a flat
/// or a master bias can learn it.
fn fixed_gauss(seed: u64, a: u64, b: u64) -> f32 {
    let h = splitmix(seed ^ splitmix(a.wrapping_mul(0x1000_0000_01B3) ^ splitmix(b)));
    let s: f32 = (0..4)
        .map(|i| ((h >> (16 * i)) & 0xFFFF) as f32 / 65536.0)
        .sum();
    (s - 2.0) * 3f32.sqrt()
}

fn poisson(rng: &mut ChaCha8Rng, lam: f32) -> f32 {
    if lam <= 0.0 {
        return 0.0;
    }
    if lam < 25.0 {
        let l = (-(lam as f64)).exp();
        let (mut k, mut p) = (0u32, 1.0f64);
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k as f32;
            }
            k += 1;
        }
    }
    let z: f32 = StandardNormal.sample(rng);
    (lam + lam.sqrt() * z).round().max(0.0)
}

fn render_ccd(night: &Night, fr: &FrameTruth, k: usize) -> (Image, Vec<Artifact>) {
    let cfg = &night.config;
    let spec = &cfg.ccd;
    let ccd = &night.ccds[k];
    let id = ccd.id;
    let (nx, ny, pre) = (spec.nx, spec.ny, spec.prescan);
    let mut rng = stream(
        cfg.seed,
        STREAM_FRAME + 4096 + (fr.index as u64) * 64 + k as u64,
    );
    let mut artifacts = Vec::new();

    // 1. Expected electrons from sources, before the flat field.
    let mut e = vec![0f32; nx * ny];
    if fr.kind == FrameKind::Science {
        let psf = Moffat::from_fwhm(
            fr.seeing_fwhm_arcsec / fr.camera.scale_arcsec,
            cfg.moffat_beta,
        );
        let mut c = Canvas {
            data: &mut e,
            width: nx,
            height: ny,
        };
        let data_xy = |x: f64, y: f64| (x - pre as f64 - 1.0, y - 1.0);
        for s in fr.stars.iter().filter(|s| s.ccd == id) {
            let (x, y) = data_xy(s.x, s.y);
            c.add_psf(&psf, x, y, s.flux_e);
        }
        for a in &night.asteroids {
            let Some(p) = a.positions.iter().find(|p| p.frame == fr.index) else {
                continue;
            };
            let half = a.rate_arcsec_per_min * fr.exptime_secs / 60.0 / 2.0 / 3600.0;
            let ends = [
                super::sky::offset(p.ra_deg, p.dec_deg, a.pa_deg + 180.0, half),
                super::sky::offset(p.ra_deg, p.dec_deg, a.pa_deg, half),
            ];
            let pts: Vec<(f64, f64)> = ends
                .iter()
                .filter_map(|&(ra, dec)| fr.camera.sky_to_focal(ra, dec))
                .map(|(u, v)| ccd.placement.from_focal(u, v))
                .collect();
            if let [s, t] = pts[..] {
                c.add_trail(&psf, s, t, p.flux_e);
            }
        }
        for sat in &night.satellites {
            if let Artifact::Satellite {
                frame,
                ra0_deg,
                dec0_deg,
                ra1_deg,
                dec1_deg,
                e_per_px,
                ..
            } = sat
            {
                if *frame != fr.index {
                    continue;
                }
                // Straight pieces of 32 px follow the (slightly curved) track exactly enough.
                let pts: Vec<(f64, f64)> = great_circle_focal(
                    &fr.camera,
                    (*ra0_deg, *dec0_deg),
                    (*ra1_deg, *dec1_deg),
                    32.0,
                )
                .into_iter()
                .map(|(u, v)| ccd.placement.from_focal(u, v))
                .collect();
                for w in pts.windows(2) {
                    let len = (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1);
                    c.add_trail(&psf, w[0], w[1], e_per_px * len);
                }
            }
        }
    }

    // 2. Through the flat field, on the sky (or twilight) with its gradient.
    let sky = if fr.kind == FrameKind::Bias {
        0.0
    } else {
        fr.sky_e_per_px
    };
    let rref = night.mosaic_radius_px;
    let ga = night.sky_gradient_angle[fr.index];
    let (gc, gs) = (ga.cos(), ga.sin());
    let g = cfg.sky_gradient;
    e.par_chunks_mut(nx).enumerate().for_each(|(y, row)| {
        for (x, px) in row.iter_mut().enumerate() {
            let (u, v) = ccd.placement.to_focal(x as f64, y as f64);
            let vig = 1.0 - 0.12 * (u * u + v * v) / (rref * rref);
            let grad = 1.0 + g * (u * gc + v * gs) / (2.0 * rref);
            let prnu = 1.0 + 0.01 * fixed_gauss(cfg.seed, id as u64, (y * nx + x) as u64) as f64;
            *px = ((sky * grad + *px as f64) * vig * prnu) as f32;
        }
    });
    for a in &night.fixed {
        match *a {
            Artifact::DustRing {
                ccd: c,
                x,
                y,
                r_inner_px,
                r_outer_px,
                depth,
            } if c == id => {
                let (xc, yc) = (x - pre as f64 - 1.0, y - 1.0);
                let x0 = (xc - r_outer_px).floor().max(0.0) as usize;
                let x1 = ((xc + r_outer_px).ceil() as usize).min(nx - 1);
                let y0 = (yc - r_outer_px).floor().max(0.0) as usize;
                let y1 = ((yc + r_outer_px).ceil() as usize).min(ny - 1);
                for yy in y0..=y1 {
                    for xx in x0..=x1 {
                        let d = (xx as f64 - xc).hypot(yy as f64 - yc);
                        let f = if d < r_inner_px {
                            1.0 - 0.3 * depth
                        } else if d <= r_outer_px {
                            let t = (d - r_inner_px) / (r_outer_px - r_inner_px);
                            1.0 - depth * (0.3 + 0.7 * (std::f64::consts::PI * t).sin())
                        } else {
                            1.0
                        };
                        e[yy * nx + xx] *= f as f32;
                    }
                }
            }
            Artifact::BadColumn {
                ccd: c,
                x,
                y0,
                y1,
                response,
                extra_e,
            } if c == id => {
                let xd = x - pre - 1;
                for yy in (y0 - 1)..y1.min(ny) {
                    let px = &mut e[yy * nx + xd];
                    *px = *px * response as f32 + extra_e as f32;
                }
            }
            Artifact::HotPixel {
                ccd: c,
                x,
                y,
                dark_e_per_s,
            } if c == id => {
                e[(y - 1) * nx + (x - pre - 1)] += (dark_e_per_s * fr.exptime_secs) as f32;
            }
            _ => {}
        }
    }

    // 3. Photon noise.
    for px in e.iter_mut() {
        *px = poisson(&mut rng, *px);
    }

    // 4. Cosmic rays, during the exposure and the readout.
    let area_cm2 = (nx * ny) as f64 * (spec.pixel_um * 1e-4).powi(2);
    let mean =
        cfg.cosmic_rays_per_cm2_per_min * area_cm2 * (fr.exptime_secs + spec.readout_secs) / 60.0;
    let n_cr = if mean > 0.0 {
        Poisson::new(mean)
            .map(|p| p.sample(&mut rng) as usize)
            .unwrap_or(0)
    } else {
        0
    };
    for _ in 0..n_cr {
        let (xd, yd) = (
            rng.random_range(0.0..nx as f64 - 1.0),
            rng.random_range(0.0..ny as f64 - 1.0),
        );
        let length = if rng.random::<f64>() < 0.6 {
            rng.random_range(0.0..2.0)
        } else {
            (-8.0 * rng.random::<f64>().max(1e-9).ln()).min(40.0)
        };
        let angle: f64 = rng.random_range(0.0..360.0);
        let energy = (length + 1.0) * rng.random_range(600.0..2500.0);
        let steps = ((length / 0.25).ceil() as usize).max(1);
        let (dx, dy) = (angle.to_radians().cos(), angle.to_radians().sin());
        for s in 0..=steps {
            let t = length * s as f64 / steps as f64;
            splat(
                &mut e,
                nx,
                ny,
                xd + t * dx,
                yd + t * dy,
                energy / (steps + 1) as f64,
            );
        }
        let (x, y) = raw_xy(cfg, xd, yd);
        artifacts.push(Artifact::CosmicRay {
            frame: fr.index,
            ccd: id,
            x,
            y,
            length_px: length,
            angle_deg: angle,
            energy_e: energy,
        });
    }

    // 5. Full wells overflow along their columns.
    artifacts.extend(
        bleed(&mut e, nx, ny, ccd.full_well_e as f32)
            .into_iter()
            .map(|(x0, x1, y0, y1)| Artifact::Bleed {
                frame: fr.index,
                ccd: id,
                x0: x0 + pre + 1,
                x1: x1 + pre + 1,
                y0: y0 + 1,
                y1: y1 + 1,
            }),
    );

    // 6. Readout: gain, bias (with a start-of-frame transient and a slope), fixed column
    //    pattern in the data, read noise, 16-bit ADC.
    let width = ccd.raw_width;
    let mut raw = vec![0f32; width * ny];
    let rn_adu = (ccd.read_noise_e / ccd.gain_e_per_adu) as f32;
    let gain = ccd.gain_e_per_adu as f32;
    let level = (ccd.bias_adu + night.bias_offset_adu[fr.index]) as f32;
    let columns: Vec<f32> = (0..nx)
        .map(|x| 0.8 * fixed_gauss(cfg.seed, 1000 + id as u64, (x + pre) as u64))
        .collect();
    for y in 0..ny {
        let bias_row = level + 6.0 * (-(y as f32) / 20.0).exp() + 1.5 * y as f32 / ny as f32;
        for x in 0..width {
            let n: f32 = StandardNormal.sample(&mut rng);
            let mut v = bias_row + rn_adu * n;
            if (pre..pre + nx).contains(&x) {
                v += e[y * nx + x - pre] / gain + columns[x - pre];
            }
            raw[y * width + x] = v.round().clamp(0.0, 65535.0);
        }
    }
    let mut im = Image::new(width, ny, raw);
    im.header = ccd_header(night, fr, k);
    (im, artifacts)
}

/// Adds charge at a sub-pixel position, shared bilinearly between four pixels.
fn splat(e: &mut [f32], nx: usize, ny: usize, x: f64, y: f64, q: f64) {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    for (dx, dy, w) in [
        (0, 0, (1.0 - fx) * (1.0 - fy)),
        (1, 0, fx * (1.0 - fy)),
        (0, 1, (1.0 - fx) * fy),
        (1, 1, fx * fy),
    ] {
        let (xi, yi) = (x0 as i64 + dx, y0 as i64 + dy);
        if xi >= 0 && yi >= 0 && (xi as usize) < nx && (yi as usize) < ny {
            e[yi as usize * nx + xi as usize] += (q * w) as f32;
        }
    }
}

/// Moves charge above `full_well` up and down its column until every pixel holds at most a
/// full well; returns the bled regions (data coordinates, 0-based, inclusive) grouped over
/// neighbouring columns.
pub(crate) fn bleed(
    e: &mut [f32],
    nx: usize,
    ny: usize,
    full_well: f32,
) -> Vec<(usize, usize, usize, usize)> {
    let mut cols: Vec<(usize, usize, usize)> = Vec::new();
    // Find the overflowing columns in memory order (a column walk misses the cache per pixel).
    let mut over = vec![false; nx];
    for row in e.chunks(nx) {
        for (o, &v) in over.iter_mut().zip(row) {
            *o |= v > full_well;
        }
    }
    for x in (0..nx).filter(|&x| over[x]) {
        let idx = |y: usize| y * nx + x;
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut y = 0;
        while y < ny {
            if e[idx(y)] <= full_well {
                y += 1;
                continue;
            }
            let start = y;
            let mut excess = 0.0;
            while y < ny && e[idx(y)] >= full_well {
                excess += e[idx(y)] - full_well;
                e[idx(y)] = full_well;
                y += 1;
            }
            let end = y - 1;
            let mut down = excess / 2.0;
            let mut j = start;
            while down > 0.0 && j > 0 {
                j -= 1;
                let t = (full_well - e[idx(j)]).max(0.0).min(down);
                e[idx(j)] += t;
                down -= t;
            }
            lo = lo.min(j);
            // What falls off the bottom goes up (the serial register is at the top).
            let mut up = excess - excess / 2.0 + down;
            let mut j = end;
            while up > 0.0 && j + 1 < ny {
                j += 1;
                let t = (full_well - e[idx(j)]).max(0.0).min(up);
                e[idx(j)] += t;
                up -= t;
            }
            hi = hi.max(j);
            y = j + 1;
        }
        cols.push((x, lo, hi));
    }
    let mut out: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (x, lo, hi) in cols {
        match out.last_mut() {
            Some(g) if g.1 + 1 == x && lo <= g.3 && hi >= g.2 => {
                g.1 = x;
                g.2 = g.2.min(lo);
                g.3 = g.3.max(hi);
            }
            _ => out.push((x, x, lo, hi)),
        }
    }
    out
}

fn primary_header(night: &Night, fr: &FrameTruth) -> Header {
    let cfg = &night.config;
    let mut h = Header::new();
    let (object, obstype) = match fr.kind {
        FrameKind::Bias => ("Bias".to_owned(), "BIAS"),
        FrameKind::Flat => (format!("Sky flat {}", cfg.filter), "SKY"),
        FrameKind::Science => (
            format!("NEARBY field {:02}", fr.field.unwrap_or(0) + 1),
            "TARGET",
        ),
    };
    // The pointing the telescope reports: the field centre, not where it really looked.
    let (ra, dec) = fr
        .header_wcs
        .first()
        .map(|w| (w.crval1, w.crval2))
        .unwrap_or((fr.camera.ra_deg, fr.camera.dec_deg));
    let utstart = time::iso(fr.mjd_start);
    h.set(
        "ORIGIN",
        "nearby simulate",
        "simulated night, see truth.json",
    )
    .set("TELESCOP", "INT", "Isaac Newton Telescope")
    .set("INSTRUME", "WFC", "Wide Field Camera")
    .set("OBSERVAT", "LAPALMA", "")
    .set("OBSCODE", "950", "MPC observatory code")
    .set("LATITUDE", SITE_LAT_DEG, "[deg] geodetic latitude")
    .set("LONGITUD", SITE_LON_DEG - 360.0, "[deg] east longitude")
    .set("RUN", fr.run as i64, "run number")
    .set("IMAGETYP", fr.kind.imagetyp(), "type of frame")
    .set("OBSTYPE", obstype, "type of observation")
    .set("OBJECT", object.as_str(), "")
    .set("DATE-OBS", utstart.as_str(), "[UTC] start of the exposure")
    .set("UTSTART", &utstart[11..], "[UTC] start of the exposure")
    .set(
        "MJD-OBS",
        fr.mjd_start,
        "[d] MJD (UTC) at the start of the exposure",
    )
    .set("EXPTIME", fr.exptime_secs, "[s] exposure time")
    .set("FILTER", cfg.filter.as_str(), "")
    .set("RA", time::ra_hms(ra).as_str(), "telescope RA (J2000)")
    .set("DEC", time::dec_dms(dec).as_str(), "telescope Dec (J2000)")
    .set("EQUINOX", 2000.0, "")
    .set("RADESYS", "ICRS", "")
    .set("AIRMASS", (fr.airmass * 1000.0).round() / 1000.0, "")
    .set("NEXTEND", night.ccds.len(), "number of CCD extensions")
    .set("SIMULATE", true, "made by the nearby simulator")
    .set("SIMSEED", cfg.seed as i64, "simulator seed");
    h
}

fn ccd_header(night: &Night, fr: &FrameTruth, k: usize) -> Header {
    let c = &night.ccds[k];
    let primary = primary_header(night, fr);
    let mut h = Header::new();
    h.set("EXTNAME", c.extname.as_str(), "")
        .set("INHERIT", true, "the primary header applies too")
        .set("CCDNAME", c.ccdname.as_str(), "CCD serial")
        .set("IMAGEID", c.id, "CCD number")
        .set(
            "GAIN",
            (c.gain_e_per_adu * 1000.0).round() / 1000.0,
            "[e-/ADU]",
        )
        .set(
            "RDNOISE",
            (c.read_noise_e * 100.0).round() / 100.0,
            "[e-] read noise",
        )
        .set("SATURATE", c.saturate_adu, "[ADU] saturation level")
        .set("DATASEC", c.datasec.as_str(), "light-sensitive pixels")
        .set("TRIMSEC", c.datasec.as_str(), "pixels to keep")
        .set("BIASSEC", c.biassec.as_str(), "overscan")
        .set("CCDSUM", "1 1", "binning");
    // The keys a per-CCD step needs, repeated from the primary header.
    for key in [
        "DATE-OBS", "MJD-OBS", "EXPTIME", "IMAGETYP", "FILTER", "OBJECT", "AIRMASS",
    ] {
        if let Some(card) = primary.card(key) {
            h.set(key, card.value.clone(), &card.comment);
        }
    }
    if let Some(w) = fr.header_wcs.get(k) {
        w.write(&mut h);
    }
    h
}
