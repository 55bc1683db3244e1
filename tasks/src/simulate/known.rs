//! Known asteroids in a simulated night: objects of an orbit file (MPCORB or JPL SBDB JSON) put
//! where the offline ephemeris ([`crate::ephem`], n-body with a JPL SPK) predicts them, seen
//! from the simulated site, La Palma (MPC 950), at the start, middle and end of each exposure:
//! the astrometric (ICRF) position, which is what astrometry against the reference catalogue
//! measures, trailed over the exposure like the synthetic movers. Their brightness is the
//! predicted V (H, G system), used as the magnitude in the simulated band (no colour term).
//!
//! The night then holds both kinds of mover: known ones, which the `known` task should name,
//! and synthetic ones, which no catalogue knows. The ephemeris itself is checked against JPL
//! Horizons (docs/ephemeris.md), not here.
//!
//! [`point_at`] is the astronomer's "put this asteroid in my field": it moves the first field
//! so that the object sits at the centre of CCD 1 in the field's middle exposure.

use crate::ephem::{
    self, elements::Elements, observer::Observatory, spk::Spk, time::Instant, Prediction,
    Propagation,
};

use super::config::SimConfig;
use super::plan::{observe_mover, plan, Night};
use super::sky;
use super::truth::{Asteroid, FrameTruth};

/// Where the known objects come from: their orbits, the planets, the site.
pub struct KnownOrbits<'a> {
    pub objects: &'a [Elements],
    pub spk: &'a Spk,
    pub site: &'a Observatory,
}

/// Objects whose two-body position (good to a few arcminutes within a few years of the epoch)
/// falls this far beyond the mosaic's circle still get the n-body prediction.
const PREFILTER_MARGIN_DEG: f64 = 0.5;

const DAY: f64 = 86_400.0;

fn instant(mjd_utc: f64) -> Result<Instant, String> {
    Instant::from_utc_mjd(mjd_utc).map_err(|e| e.to_string())
}

/// Mid-exposure UTC MJD of a frame.
fn mid_mjd(x: &FrameTruth) -> f64 {
    x.mjd_start + x.exptime_secs / 2.0 / DAY
}

/// The science frames of field `f`, in time order, and the middle one.
fn field_frames(night: &Night, f: usize) -> Vec<&FrameTruth> {
    night.frames.iter().filter(|x| x.field == Some(f)).collect()
}

/// The config with its first field moved so that `target` (a designation, number, name or
/// packed designation in the orbit file) lies at the centre of CCD 1 in the field's middle
/// exposure, to better than 0.01". Errors name the object and say why.
pub fn point_at(cfg: &SimConfig, orbits: &KnownOrbits, target: &str) -> Result<SimConfig, String> {
    let object = orbits
        .objects
        .iter()
        .find(|o| o.is_named(target))
        .ok_or_else(|| {
            format!(
                "target `{target}` is not in the orbit file ({} objects{})",
                orbits.objects.len(),
                match orbits.objects.first() {
                    Some(o) => format!(", e.g. `{}`", o.designation),
                    None => String::new(),
                }
            )
        })?;
    let mut cfg = cfg.clone();
    for _ in 0..4 {
        let night = plan(&cfg).map_err(|p| format!("{p:?}"))?;
        let frames = field_frames(&night, 0);
        let mid = frames
            .get(frames.len() / 2)
            .ok_or("the night has no science exposure to point")?;
        let t = instant(mid_mjd(mid))?;
        let p = ephem::predict(orbits.spk, object, orbits.site, &[t], Propagation::NBody)
            .map_err(|e| format!("target `{target}`: {e}"))?;
        let p = &p[0];
        let (cx, cy) = (cfg.ccd.nx as f64 / 2.0, cfg.ccd.ny as f64 / 2.0);
        let (u, v) = night.ccds[0].placement.to_focal(cx, cy);
        let (aim_ra, aim_dec) = mid.camera.focal_to_sky(u, v);
        let (xi, eta) = sky::project(aim_ra, aim_dec, p.ra_deg, p.dec_deg).ok_or_else(|| {
            format!("target `{target}`: more than 90 degrees from the field (cannot happen)")
        })?;
        if xi.hypot(eta).to_degrees() * 3600.0 < 0.01 {
            break;
        }
        let (ra, dec) = sky::deproject(cfg.field_ra_deg, cfg.field_dec_deg, xi, eta);
        cfg.field_ra_deg = ra.rem_euclid(360.0);
        cfg.field_dec_deg = dec;
    }
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(format!("target `{target}`: {problems:?}"));
    }
    Ok(cfg)
}

/// Adds to the night every object of `orbits` that falls on a CCD in at least one exposure
/// (numbered after the synthetic movers). Returns one log line per object put in or skipped.
pub fn add_known(night: &mut Night, orbits: &KnownOrbits) -> Result<Vec<String>, String> {
    let mut log = Vec::new();
    let cfg = night.config.clone();
    let rn2 = night.ccds.first().map_or(0.0, |c| c.read_noise_e.powi(2));
    let mut added = Vec::new();
    for f in 0..cfg.n_fields {
        let frames = field_frames(night, f);
        let Some(mid) = frames.get(frames.len() / 2) else {
            continue;
        };
        let t_mid = instant(mid_mjd(mid))?;
        let radius_deg = night.mosaic_radius_px * mid.camera.scale_arcsec / 3600.0;
        // Each exposure's start, middle and end.
        let mut times = Vec::new();
        for x in &frames {
            for mjd in exposure_times(x) {
                times.push(instant(mjd)?);
            }
        }
        let centre = ephem::prefilter::unit(mid.camera.ra_deg, mid.camera.dec_deg);
        let near = ephem::prefilter::near(
            orbits.spk,
            orbits.objects,
            orbits.site,
            &t_mid,
            &[centre],
            radius_deg + PREFILTER_MARGIN_DEG,
        )
        .map_err(|e| format!("field {f}: {e}"))?;
        for (k, _) in near {
            let o = &orbits.objects[k];
            let precise =
                match ephem::predict(orbits.spk, o, orbits.site, &times, Propagation::NBody) {
                    Ok(p) => p,
                    Err(e) => {
                        log.push(format!("known object {}: {e}; not put in", o.designation));
                        continue;
                    }
                };
            let Some(v_mag) = precise[1].v_mag else {
                log.push(format!(
                    "known object {}: no H in the orbit file, so no brightness; not put in",
                    o.designation
                ));
                continue;
            };
            let middle = &precise[3 * (frames.len() / 2) + 1];
            let rate = middle.dra_cosdec.hypot(middle.ddec) / 60.0;
            let pa = middle
                .dra_cosdec
                .atan2(middle.ddec)
                .to_degrees()
                .rem_euclid(360.0);
            let positions: Vec<_> = frames
                .iter()
                .enumerate()
                .map(|(e, x)| {
                    let three = &precise[3 * e..3 * e + 3];
                    observe_mover(&cfg, &night.ccds, x, rate, v_mag, rn2, |mjd| {
                        nearest(x, three, mjd)
                    })
                })
                .collect();
            let on = positions.iter().filter(|p| p.ccd.is_some()).count();
            if on == 0 {
                continue;
            }
            let trailed = positions
                .iter()
                .zip(&frames)
                .any(|(p, x)| p.trail_px > x.seeing_fwhm_arcsec / x.camera.scale_arcsec);
            log.push(format!(
                "known object {} in field {f}: V {v_mag:.2}, {rate:.3}\"/min towards PA {pa:.1}, on a CCD in {on} of {} exposures",
                o.designation,
                frames.len()
            ));
            added.push(Asteroid {
                id: 0,
                name: o.designation.clone(),
                known: Some(o.designation.clone()),
                field: f,
                mag: v_mag,
                rate_arcsec_per_min: rate,
                pa_deg: pa,
                trailed,
                positions,
            });
        }
    }
    for mut a in added {
        a.id = night.asteroids.len() + 1;
        night.asteroids.push(a);
    }
    Ok(log)
}

/// UTC MJD of an exposure's start, middle and end.
fn exposure_times(x: &FrameTruth) -> [f64; 3] {
    [x.mjd_start, mid_mjd(x), x.mjd_start + x.exptime_secs / DAY]
}

/// The position predicted (for exposure `x`'s start, middle or end) closest in time to `mjd`.
fn nearest(x: &FrameTruth, three: &[Prediction], mjd: f64) -> (f64, f64) {
    let times = exposure_times(x);
    let i = (0..3)
        .min_by(|&a, &b| (times[a] - mjd).abs().total_cmp(&(times[b] - mjd).abs()))
        .unwrap_or(1);
    three
        .get(i)
        .map_or((f64::NAN, f64::NAN), |p| (p.ra_deg, p.dec_deg))
}
