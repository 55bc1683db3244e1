//! Planning a night: the mosaic's CCDs and their defects, the frames and their times, pointing,
//! seeing and sky, the star field, the asteroids and satellites. Everything but pixels, so it is
//! cheap; [`super::render`] draws the frames from it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::config::{SimConfig, SATELLITE_E_PER_PX_MIN};
use super::psf::{effective_pixels, Moffat};
use super::sky::{self, Camera, HeaderWcs};
use super::time;
use super::truth::*;

/// The simulated site's MPC code: La Palma, whose INT the camera is.
pub const SITE_CODE: &str = "950";
/// La Palma (MPC 950): east longitude and geodetic latitude, degrees.
pub const SITE_LON_DEG: f64 = 342.1176;
pub const SITE_LAT_DEG: f64 = 28.7606;
/// The INT WFC's CCD serials, in IMAGEID order.
const CCD_NAMES: [&str; 4] = ["A5382-1-7", "A5383-17-7", "A5530-3", "A5506-4"];

/// A planned night. Public fields are what the truth file records.
#[derive(Debug, Clone)]
pub struct Night {
    pub config: SimConfig,
    pub ccds: Vec<CcdTruth>,
    pub frames: Vec<FrameTruth>,
    pub stars: Vec<Star>,
    pub asteroids: Vec<Asteroid>,
    /// Hot pixels, bad columns and dust rings (the same in every frame).
    pub fixed: Vec<Artifact>,
    /// Satellite trails, each naming its frame.
    pub satellites: Vec<Artifact>,
    /// Per frame: direction of the sky gradient (radians) and the bias offset (ADU).
    pub(crate) sky_gradient_angle: Vec<f64>,
    pub(crate) bias_offset_adu: Vec<f64>,
    /// Distance from the optical axis to the farthest mosaic corner, pixels.
    pub(crate) mosaic_radius_px: f64,
}

/// A random stream of its own for each purpose, so that changing one part of the night (say
/// the number of asteroids) leaves the others as they were.
pub fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(id);
    r
}

pub(crate) const STREAM_CCD: u64 = 1 << 20;
pub(crate) const STREAM_FRAME: u64 = 2 << 20;
const STREAM_STARS: u64 = 3 << 20;
const STREAM_ASTEROIDS: u64 = 4 << 20;
const STREAM_FIELDS: u64 = 5 << 20;
const STREAM_SATELLITES: u64 = 6 << 20;

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Airmass (plane-parallel, capped at 40) of (ra, dec) from La Palma at `mjd`.
pub fn airmass(ra: f64, dec: f64, mjd: f64) -> f64 {
    let h = (time::gmst_deg(mjd) + SITE_LON_DEG - ra).to_radians();
    let (phi, d) = (SITE_LAT_DEG.to_radians(), dec.to_radians());
    let sin_alt = phi.sin() * d.sin() + phi.cos() * d.cos() * h.cos();
    if sin_alt <= 0.025 {
        40.0
    } else {
        1.0 / sin_alt
    }
}

/// Electrons per second from a source of magnitude `mag` seen through `airmass`.
pub fn flux_rate(cfg: &SimConfig, mag: f64, airmass: f64) -> f64 {
    10f64.powf(-0.4 * (mag - cfg.zeropoint_mag + cfg.extinction_mag_per_airmass * airmass))
}

/// The signal (electrons) at which an optimal measurement has signal-to-noise `snr`, for a
/// profile of `n_eff` pixels on a background of `b` electrons (sky plus read noise squared).
pub fn flux_for_snr(snr: f64, n_eff: f64, b: f64) -> f64 {
    let s2 = snr * snr;
    (s2 + (s2 * s2 + 4.0 * s2 * n_eff * b).sqrt()) / 2.0
}

fn snr(flux: f64, n_eff: f64, b: f64) -> f64 {
    flux / (flux + n_eff * b).sqrt()
}

/// Raw FITS x, y (1-based, prescan included) of a point in a CCD's data area (0-based).
pub(crate) fn raw_xy(cfg: &SimConfig, xd: f64, yd: f64) -> (f64, f64) {
    (xd + cfg.ccd.prescan as f64 + 1.0, yd + 1.0)
}

/// The CCD (0-based) whose data area holds focal-plane point (u, v), and the data position.
fn ccd_of(cfg: &SimConfig, ccds: &[CcdTruth], u: f64, v: f64) -> Option<(usize, f64, f64)> {
    ccds.iter().enumerate().find_map(|(k, c)| {
        let (xd, yd) = c.placement.from_focal(u, v);
        let inside = xd >= -0.5
            && yd >= -0.5
            && xd < cfg.ccd.nx as f64 - 0.5
            && yd < cfg.ccd.ny as f64 - 0.5;
        inside.then_some((k, xd, yd))
    })
}

fn plan_ccds(cfg: &SimConfig) -> Vec<CcdTruth> {
    let spec = &cfg.ccd;
    sky::layout(cfg.n_ccds, spec.nx, spec.ny, cfg.ccd_gap_px)
        .into_iter()
        .enumerate()
        .map(|(k, placement)| {
            let mut r = stream(cfg.seed, STREAM_CCD + k as u64);
            let gain = spec.gain * (1.0 + 0.04 * gauss(&mut r)).clamp(0.8, 1.2);
            let read_noise_e = spec.read_noise_e * (1.0 + 0.1 * gauss(&mut r)).clamp(0.7, 1.3);
            let bias_adu = (spec.bias_adu + 60.0 * gauss(&mut r)).max(200.0);
            let saturate_adu = (spec.full_well_e / gain + bias_adu).min(65535.0).floor();
            let x1 = spec.prescan + 1;
            let x2 = spec.prescan + spec.nx;
            CcdTruth {
                id: k + 1,
                extname: format!("CCD{}", k + 1),
                ccdname: CCD_NAMES[k % CCD_NAMES.len()].into(),
                gain_e_per_adu: gain,
                read_noise_e,
                bias_adu,
                full_well_e: spec.full_well_e,
                saturate_adu,
                raw_width: spec.prescan + spec.nx + spec.overscan,
                raw_height: spec.ny,
                datasec: format!("[{x1}:{x2},1:{}]", spec.ny),
                // Skip the first 3 overscan columns, where charge still trails from the data.
                biassec: format!(
                    "[{}:{},1:{}]",
                    x2 + 4,
                    spec.prescan + spec.nx + spec.overscan,
                    spec.ny
                ),
                placement,
            }
        })
        .collect()
}

fn plan_defects(cfg: &SimConfig) -> Vec<Artifact> {
    let (nx, ny) = (cfg.ccd.nx, cfg.ccd.ny);
    let mut out = Vec::new();
    for k in 0..cfg.n_ccds {
        let mut r = stream(cfg.seed, STREAM_CCD + 64 + k as u64);
        let ccd = k + 1;
        for _ in 0..cfg.hot_pixels_per_ccd {
            let (xd, yd) = (r.random_range(0..nx), r.random_range(0..ny));
            out.push(Artifact::HotPixel {
                ccd,
                x: xd + cfg.ccd.prescan + 1,
                y: yd + 1,
                dark_e_per_s: log_uniform(&mut r, 0.5, 200.0),
            });
        }
        for _ in 0..cfg.bad_columns_per_ccd {
            let xd = r.random_range(8..nx - 8);
            let y0 = r.random_range(0..ny / 2);
            let dead = r.random::<bool>();
            out.push(Artifact::BadColumn {
                ccd,
                x: xd + cfg.ccd.prescan + 1,
                y0: y0 + 1,
                y1: ny,
                response: if dead { r.random_range(0.2..0.7) } else { 1.0 },
                extra_e: if dead {
                    0.0
                } else {
                    log_uniform(&mut r, 100.0, 3000.0)
                },
            });
        }
        for _ in 0..cfg.dust_rings_per_ccd {
            let r_outer = r.random_range(15.0..50.0);
            let (xd, yd) = (
                r.random_range(0.0..nx as f64 - 1.0),
                r.random_range(0.0..ny as f64 - 1.0),
            );
            let (x, y) = raw_xy(cfg, xd, yd);
            out.push(Artifact::DustRing {
                ccd,
                x,
                y,
                r_inner_px: 0.55 * r_outer,
                r_outer_px: r_outer,
                depth: r.random_range(0.02..0.08),
            });
        }
    }
    out
}

/// The field centres the headers report and the true pointing error of each.
struct FieldPlan {
    ra: f64,
    dec: f64,
    error: (f64, f64),
    rotation_deg: f64,
    scale_arcsec: f64,
    seeing_arcsec: f64,
}

fn plan_fields(cfg: &SimConfig) -> Vec<FieldPlan> {
    let mut r = stream(cfg.seed, STREAM_FIELDS);
    (0..cfg.n_fields)
        .map(|f| {
            let dec = cfg.field_dec_deg;
            let ra = (cfg.field_ra_deg + f as f64 * cfg.field_step_deg / dec.to_radians().cos())
                .rem_euclid(360.0);
            let err = cfg.pointing_error_arcmin * r.random_range(0.3..1.0);
            let pa: f64 = r.random_range(0.0..360.0);
            FieldPlan {
                ra,
                dec,
                error: (pa, err / 60.0),
                rotation_deg: 0.05 * gauss(&mut r),
                scale_arcsec: cfg.pixel_scale_arcsec * (1.0 + 0.0015 * gauss(&mut r)),
                seeing_arcsec: r.random_range(cfg.seeing_min_arcsec..=cfg.seeing_max_arcsec),
            }
        })
        .collect()
}

fn plan_frames(cfg: &SimConfig, ccds: &[CcdTruth], fields: &[FieldPlan]) -> Vec<FrameTruth> {
    let mjd0 = time::parse_date(&cfg.night).unwrap_or(51544.0);
    let mut frames = Vec::new();
    let day = 86400.0;
    let mut push = |kind, field: Option<usize>, exposure: Option<usize>, mjd, exptime| {
        let index = frames.len();
        let run = 1_000_001 + index as u64;
        let dir = if kind == FrameKind::Science {
            "raw"
        } else {
            "calib"
        };
        frames.push(FrameTruth {
            index,
            run,
            file: format!("{dir}/r{run}.fits"),
            kind,
            field,
            exposure,
            mjd_start: mjd,
            date_obs: time::iso(mjd),
            exptime_secs: exptime,
            airmass: 1.0,
            seeing_fwhm_arcsec: 0.0,
            sky_e_per_px: 0.0,
            camera: Camera {
                ra_deg: fields[0].ra,
                dec_deg: fields[0].dec,
                rotation_deg: fields[0].rotation_deg,
                scale_arcsec: fields[0].scale_arcsec,
                k3_per_rad2: cfg.distortion_k3_per_rad2,
            },
            header_wcs: Vec::new(),
            stars: Vec::new(),
        });
    };
    for i in 0..cfg.n_bias {
        push(
            FrameKind::Bias,
            None,
            None,
            mjd0 + (19.0 * 3600.0 + i as f64 * (cfg.ccd.readout_secs + 5.0)) / day,
            0.0,
        );
    }
    for i in 0..cfg.n_flats {
        let step = cfg.flat_exptime_secs + cfg.ccd.readout_secs + 15.0;
        push(
            FrameKind::Flat,
            None,
            None,
            mjd0 + (20.9 * 3600.0 + i as f64 * step) / day,
            cfg.flat_exptime_secs,
        );
    }
    let field_secs = cfg.n_exposures as f64 * cfg.cadence_secs + 180.0;
    for f in 0..cfg.n_fields {
        for e in 0..cfg.n_exposures {
            let t =
                cfg.start_utc_hours * 3600.0 + f as f64 * field_secs + e as f64 * cfg.cadence_secs;
            push(
                FrameKind::Science,
                Some(f),
                Some(e),
                mjd0 + t / day,
                cfg.exptime_secs,
            );
        }
    }
    // Conditions of each frame, from the frame streams.
    for fr in &mut frames {
        let mut r = stream(cfg.seed, STREAM_FRAME + fr.index as u64);
        match fr.kind {
            FrameKind::Bias => {}
            FrameKind::Flat => {
                // Twilight fades: later flats are fainter, exposed to similar levels.
                fr.sky_e_per_px = cfg.flat_level_e * r.random_range(0.55..1.25);
            }
            FrameKind::Science => {
                let fp = &fields[fr.field.unwrap_or(0)];
                let (ra, dec) = sky::offset(fp.ra, fp.dec, fp.error.0, fp.error.1);
                // Guiding and re-pointing jitter between exposures: about 1.5".
                let jitter = 1.5 / 3600.0;
                let (ra, dec) = (
                    ra + jitter * gauss(&mut r) / dec.to_radians().cos(),
                    dec + jitter * gauss(&mut r),
                );
                fr.camera = Camera {
                    ra_deg: ra.rem_euclid(360.0),
                    dec_deg: dec,
                    rotation_deg: fp.rotation_deg,
                    scale_arcsec: fp.scale_arcsec,
                    k3_per_rad2: cfg.distortion_k3_per_rad2,
                };
                let mid = fr.mjd_start + fr.exptime_secs / 2.0 / day;
                fr.airmass = airmass(ra, dec, mid);
                fr.seeing_fwhm_arcsec = (fp.seeing_arcsec * (1.0 + 0.08 * gauss(&mut r)))
                    .max(0.6 * cfg.seeing_min_arcsec);
                let sky_mag = cfg.sky_mag_per_arcsec2 + 0.05 * gauss(&mut r);
                fr.sky_e_per_px = 10f64.powf(-0.4 * (sky_mag - cfg.zeropoint_mag))
                    * cfg.exptime_secs
                    * fp.scale_arcsec.powi(2);
                fr.header_wcs = ccds
                    .iter()
                    .map(|c| {
                        HeaderWcs::for_ccd(
                            fp.ra,
                            fp.dec,
                            cfg.pixel_scale_arcsec,
                            &c.placement,
                            cfg.ccd.prescan,
                        )
                    })
                    .collect();
            }
        }
    }
    frames
}

/// Radius (pixels) of the circle about the optical axis that holds every CCD.
fn mosaic_radius(cfg: &SimConfig, ccds: &[CcdTruth]) -> f64 {
    let (nx, ny) = (cfg.ccd.nx as f64, cfg.ccd.ny as f64);
    ccds.iter()
        .flat_map(|c| {
            [(0.0, 0.0), (nx, 0.0), (0.0, ny), (nx, ny)].map(|(x, y)| c.placement.to_focal(x, y))
        })
        .map(|(u, v)| u.hypot(v))
        .fold(0.0, f64::max)
}

/// Stars over every field, with a margin wide enough for a solver that starts from the header
/// pointing. N(<m) grows as 10^(0.3 m), as star counts at mid galactic latitude do.
fn plan_stars(cfg: &SimConfig, fields: &[FieldPlan], radius_px: f64) -> Vec<Star> {
    let mut r = stream(cfg.seed, STREAM_STARS);
    let radius_deg =
        radius_px * cfg.pixel_scale_arcsec / 3600.0 + cfg.pointing_error_arcmin / 60.0 + 1.0 / 60.0;
    let area = std::f64::consts::PI * radius_deg.powi(2);
    let n = (cfg.star_density_per_deg2 * area).round() as usize;
    let alpha = 0.3;
    let (lo, hi) = (
        10f64.powf(alpha * cfg.star_mag_min),
        10f64.powf(alpha * cfg.star_mag_max),
    );
    let mut stars = Vec::new();
    for (f, fp) in fields.iter().enumerate() {
        for _ in 0..n {
            // Uniform in the disc of the tangent plane.
            let rr = radius_deg.to_radians() * r.random::<f64>().sqrt();
            let th = r.random_range(0.0..std::f64::consts::TAU);
            let (ra, dec) = sky::deproject(fp.ra, fp.dec, rr * th.cos(), rr * th.sin());
            let mag = (lo + r.random::<f64>() * (hi - lo)).log10() / alpha;
            let fast = r.random::<f64>() < 0.02;
            let sigma = if fast { 40.0 } else { 4.0 };
            let pmra = sigma * gauss(&mut r);
            let pmdec = sigma * gauss(&mut r);
            // Overlapping fields share their stars: skip those an earlier field made.
            let seen = fields[..f]
                .iter()
                .any(|g| sky::separation_deg(g.ra, g.dec, ra, dec) < radius_deg);
            if seen {
                continue;
            }
            stars.push(Star {
                id: stars.len() + 1,
                ra_deg: ra,
                dec_deg: dec,
                pmra_mas_per_yr: pmra,
                pmdec_mas_per_yr: pmdec,
                mag,
                in_refcat: mag <= cfg.refcat_mag_max,
            });
        }
    }
    stars
}

/// A star's position at a Julian epoch.
pub fn star_at(s: &Star, epoch: f64, refcat_epoch: f64) -> (f64, f64) {
    let dt = epoch - refcat_epoch;
    let dec = s.dec_deg + s.pmdec_mas_per_yr * dt / 3.6e6;
    let ra = s.ra_deg + s.pmra_mas_per_yr * dt / 3.6e6 / s.dec_deg.to_radians().cos();
    (ra.rem_euclid(360.0), dec)
}

fn place_stars(cfg: &SimConfig, ccds: &[CcdTruth], stars: &[Star], fr: &mut FrameTruth) {
    let epoch = time::julian_year(fr.mjd_start + fr.exptime_secs / 2.0 / 86400.0);
    let margin = 20.0;
    let rate_scale = fr.exptime_secs;
    for s in stars {
        let (ra, dec) = star_at(s, epoch, cfg.refcat_epoch);
        let Some((u, v)) = fr.camera.sky_to_focal(ra, dec) else {
            continue;
        };
        for c in ccds {
            let (xd, yd) = c.placement.from_focal(u, v);
            if xd < -margin
                || yd < -margin
                || xd > cfg.ccd.nx as f64 + margin
                || yd > cfg.ccd.ny as f64 + margin
            {
                continue;
            }
            let (x, y) = raw_xy(cfg, xd, yd);
            fr.stars.push(StarOnCcd {
                star: s.id,
                ccd: c.id,
                x,
                y,
                flux_e: flux_rate(cfg, s.mag, fr.airmass) * rate_scale,
            });
        }
    }
}

/// Where an asteroid is at `mjd`: linear motion along a great circle from its reference point.
pub fn asteroid_at(ra0: f64, dec0: f64, mjd0: f64, rate: f64, pa: f64, mjd: f64) -> (f64, f64) {
    let minutes = (mjd - mjd0) * 1440.0;
    sky::offset(ra0, dec0, pa, rate * minutes / 3600.0)
}

/// Where a mover is in exposure `x` and how it shows: its mid-exposure position on the mosaic,
/// its trail's ends (exposure start and end), flux and expected S/N. `at(mjd)` gives its (RA,
/// Dec); `rate` ("/min) sets the trail length, `mag` the brightness; `rn2` is the read noise
/// squared (electrons^2).
pub(crate) fn observe_mover(
    cfg: &SimConfig,
    ccds: &[CcdTruth],
    x: &FrameTruth,
    rate: f64,
    mag: f64,
    rn2: f64,
    at: impl Fn(f64) -> (f64, f64),
) -> AsteroidPosition {
    let day = 86400.0;
    let t0 = x.mjd_start;
    let t1 = x.mjd_start + x.exptime_secs / day;
    let tm = (t0 + t1) / 2.0;
    let (ra, dec) = at(tm);
    let scale = x.camera.scale_arcsec;
    let trail_px = rate * x.exptime_secs / 60.0 / scale;
    let fwhm_px = x.seeing_fwhm_arcsec / scale;
    let flux_e = flux_rate(cfg, mag, x.airmass) * x.exptime_secs;
    let psf = Moffat::from_fwhm(fwhm_px, cfg.moffat_beta);
    let n_eff = effective_pixels(&psf, trail_px);
    let mut p = AsteroidPosition {
        frame: x.index,
        exposure: x.exposure.unwrap_or(0),
        mjd_mid: tm,
        ra_deg: ra,
        dec_deg: dec,
        ccd: None,
        x: None,
        y: None,
        x_start: None,
        y_start: None,
        x_end: None,
        y_end: None,
        trail_px,
        flux_e,
        snr: snr(flux_e, n_eff, x.sky_e_per_px + rn2),
    };
    if let Some((u, v)) = x.camera.sky_to_focal(ra, dec) {
        if let Some((k, xd, yd)) = ccd_of(cfg, ccds, u, v) {
            let pixel = |mjd: f64| {
                let (ra, dec) = at(mjd);
                let (u, v) = x.camera.sky_to_focal(ra, dec).unwrap_or((u, v));
                let (xd, yd) = ccds[k].placement.from_focal(u, v);
                raw_xy(cfg, xd, yd)
            };
            let (xs, ys) = pixel(t0);
            let (xe, ye) = pixel(t1);
            let (xm, ym) = raw_xy(cfg, xd, yd);
            p.ccd = Some(k + 1);
            (p.x, p.y) = (Some(xm), Some(ym));
            (p.x_start, p.y_start) = (Some(xs), Some(ys));
            (p.x_end, p.y_end) = (Some(xe), Some(ye));
        }
    }
    p
}

fn plan_asteroids(cfg: &SimConfig, ccds: &[CcdTruth], frames: &[FrameTruth]) -> Vec<Asteroid> {
    let mut out = Vec::new();
    let day = 86400.0;
    for f in 0..cfg.n_fields {
        let mut r = stream(cfg.seed, STREAM_ASTEROIDS + f as u64);
        let fr: Vec<&FrameTruth> = frames.iter().filter(|x| x.field == Some(f)).collect();
        let (Some(first), Some(last)) = (fr.first(), fr.last()) else {
            continue;
        };
        let mjd_ref = (first.mjd_start + last.mjd_start + last.exptime_secs / day) / 2.0;
        let mid = fr[fr.len() / 2];
        // Each asteroid's faintest magnitude: S/N = snr_min in this field's conditions, for its
        // own trail (a fast mover spreads its light and must be brighter to be seen at all).
        let rn2 = ccds[0].read_noise_e.powi(2);
        let mid_fwhm_px = mid.seeing_fwhm_arcsec / mid.camera.scale_arcsec;
        let psf = Moffat::from_fwhm(mid_fwhm_px, cfg.moffat_beta);
        let m_lim = |rate: f64| {
            let trail_px = rate * mid.exptime_secs / 60.0 / mid.camera.scale_arcsec;
            let n_eff = effective_pixels(&psf, trail_px);
            let f = flux_for_snr(cfg.asteroid_snr_min, n_eff, mid.sky_e_per_px + rn2);
            cfg.zeropoint_mag
                - cfg.extinction_mag_per_airmass * mid.airmass
                - 2.5 * (f / mid.exptime_secs).log10()
        };
        let n = cfg.n_asteroids;
        // Brightness covers bright to faint evenly (one per bin, jittered, shuffled); rates are
        // log-uniform.
        let mut depth: Vec<f64> = (0..n)
            .map(|i| (i as f64 + r.random::<f64>()) / n as f64)
            .collect();
        for i in (1..depth.len()).rev() {
            depth.swap(i, r.random_range(0..=i));
        }
        for t in depth {
            let k = r.random_range(0..ccds.len());
            let xd = r.random_range(30.0..cfg.ccd.nx as f64 - 30.0);
            let yd = r.random_range(30.0..cfg.ccd.ny as f64 - 30.0);
            let (u, v) = ccds[k].placement.to_focal(xd, yd);
            let (ra0, dec0) = mid.camera.focal_to_sky(u, v);
            let rate = log_uniform(
                &mut r,
                cfg.asteroid_rate_min_arcsec_per_min,
                cfg.asteroid_rate_max_arcsec_per_min,
            );
            let faintest = m_lim(rate).max(cfg.asteroid_mag_bright);
            let mag = cfg.asteroid_mag_bright + t * (faintest - cfg.asteroid_mag_bright);
            let pa = r.random_range(0.0..360.0);
            let at = |mjd: f64| asteroid_at(ra0, dec0, mjd_ref, rate, pa, mjd);
            let positions: Vec<AsteroidPosition> = fr
                .iter()
                .map(|x| observe_mover(cfg, ccds, x, rate, mag, rn2, at))
                .collect();
            let trailed = positions
                .iter()
                .zip(&fr)
                .any(|(p, x)| p.trail_px > x.seeing_fwhm_arcsec / x.camera.scale_arcsec);
            out.push(Asteroid {
                id: out.len() + 1,
                name: format!("SIM{:04}", out.len() + 1),
                known: None,
                field: f,
                mag,
                rate_arcsec_per_min: rate,
                pa_deg: pa,
                trailed,
                positions,
            });
        }
    }
    out
}

/// Points along a great circle from `a` to `b`, spaced about `step_px` apart on the focal plane
/// of `cam` (straight in its tangent plane, so exact), as focal-plane (u, v).
pub(crate) fn great_circle_focal(
    cam: &Camera,
    a: (f64, f64),
    b: (f64, f64),
    step_px: f64,
) -> Vec<(f64, f64)> {
    let (Some(pa), Some(pb)) = (
        sky::project(cam.ra_deg, cam.dec_deg, a.0, a.1),
        sky::project(cam.ra_deg, cam.dec_deg, b.0, b.1),
    ) else {
        return Vec::new();
    };
    let len_px = (pb.0 - pa.0).hypot(pb.1 - pa.1).to_degrees() * 3600.0 / cam.scale_arcsec;
    let n = (len_px / step_px).ceil().max(1.0) as usize;
    (0..=n)
        .filter_map(|i| {
            let t = i as f64 / n as f64;
            let (xi, eta) = (pa.0 + t * (pb.0 - pa.0), pa.1 + t * (pb.1 - pa.1));
            let (ra, dec) = sky::deproject(cam.ra_deg, cam.dec_deg, xi, eta);
            cam.sky_to_focal(ra, dec)
        })
        .collect()
}

fn plan_satellites(
    cfg: &SimConfig,
    ccds: &[CcdTruth],
    frames: &[FrameTruth],
    radius_px: f64,
) -> Vec<Artifact> {
    let mut r = stream(cfg.seed, STREAM_SATELLITES);
    let mut out = Vec::new();
    for fr in frames.iter().filter(|f| f.kind == FrameKind::Science) {
        if r.random::<f64>() >= cfg.satellite_probability {
            continue;
        }
        // A line through a random point of the mosaic, long enough to cross all of it.
        let rr = radius_px * r.random::<f64>().sqrt();
        let th = r.random_range(0.0..std::f64::consts::TAU);
        let (pu, pv) = (rr * th.cos(), rr * th.sin());
        let dir = r.random_range(0.0..std::f64::consts::PI);
        let half = 1.2 * radius_px;
        let a = fr
            .camera
            .focal_to_sky(pu - half * dir.cos(), pv - half * dir.sin());
        let b = fr
            .camera
            .focal_to_sky(pu + half * dir.cos(), pv + half * dir.sin());
        let e_per_px = log_uniform(&mut r, SATELLITE_E_PER_PX_MIN, cfg.satellite_e_per_px_max);
        let pts = great_circle_focal(&fr.camera, a, b, 1.0);
        let mut segments = Vec::new();
        for (k, c) in ccds.iter().enumerate() {
            let inside: Vec<(f64, f64)> = pts
                .iter()
                .map(|&(u, v)| c.placement.from_focal(u, v))
                .filter(|&(x, y)| {
                    x >= 0.0
                        && y >= 0.0
                        && x <= cfg.ccd.nx as f64 - 1.0
                        && y <= cfg.ccd.ny as f64 - 1.0
                })
                .collect();
            if let (Some(&s), Some(&e)) = (inside.first(), inside.last()) {
                let (x0, y0) = raw_xy(cfg, s.0, s.1);
                let (x1, y1) = raw_xy(cfg, e.0, e.1);
                segments.push(Segment {
                    ccd: k + 1,
                    x0,
                    y0,
                    x1,
                    y1,
                });
            }
        }
        out.push(Artifact::Satellite {
            frame: fr.index,
            ra0_deg: a.0,
            dec0_deg: a.1,
            ra1_deg: b.0,
            dec1_deg: b.1,
            e_per_px,
            segments,
        });
    }
    out
}

/// Plans a night. Fails with every problem of the config, as (field, message).
pub fn plan(cfg: &SimConfig) -> Result<Night, Vec<(&'static str, String)>> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    let ccds = plan_ccds(cfg);
    let fixed = plan_defects(cfg);
    let fields = plan_fields(cfg);
    let mut frames = plan_frames(cfg, &ccds, &fields);
    let radius = mosaic_radius(cfg, &ccds);
    let stars = plan_stars(cfg, &fields, radius);
    for fr in frames.iter_mut().filter(|f| f.kind == FrameKind::Science) {
        place_stars(cfg, &ccds, &stars, fr);
    }
    let asteroids = plan_asteroids(cfg, &ccds, &frames);
    let satellites = plan_satellites(cfg, &ccds, &frames, radius);
    let mut r = stream(cfg.seed, STREAM_FRAME - 1);
    let sky_gradient_angle = frames
        .iter()
        .map(|_| r.random_range(0.0..std::f64::consts::TAU))
        .collect();
    let bias_offset_adu = frames.iter().map(|_| 1.5 * gauss(&mut r)).collect();
    Ok(Night {
        config: cfg.clone(),
        ccds,
        frames,
        stars,
        asteroids,
        fixed,
        satellites,
        sky_gradient_angle,
        bias_offset_adu,
        mosaic_radius_px: radius,
    })
}
