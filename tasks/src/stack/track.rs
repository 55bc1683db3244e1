//! Shift-and-stack (synthetic tracking): each exposure, already on the output grid, is shifted
//! by the motion of a hypothetical object between the reference time and the exposure's
//! mid-time, so that an object moving at that rate and position angle lands on the same output
//! pixel in every exposure and adds up, while stars trail and a median rejects them.
//!
//! The motion is taken as a straight line in the grid's tangent plane, where great circles are
//! straight lines; over the minutes of a sequence the rate's change along the line is
//! negligible (below 1e-6 of the displacement for a 1-degree grid).

use super::resample::{Kernel, Layer, Plane};
use super::Grid;
use crate::fits::Header;

/// A sky motion: rate in arcseconds per minute along position angle `pa_deg` (east of north).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    pub rate_arcsec_per_min: f64,
    pub pa_deg: f64,
}

impl Motion {
    /// The grid-pixel shift of the motion over `dt_min` minutes.
    pub fn pixel_shift(&self, grid: &Grid, dt_min: f64) -> (f64, f64) {
        let d = self.rate_arcsec_per_min * dt_min / 3600.0;
        let pa = self.pa_deg.to_radians();
        // Standard coordinates: xi towards east (increasing RA), eta towards north.
        let (dxi, deta) = (d * pa.sin(), d * pa.cos());
        let cd = &grid.wcs.cd;
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        (
            (cd[1][1] * dxi - cd[0][1] * deta) / det,
            (-cd[1][0] * dxi + cd[0][0] * deta) / det,
        )
    }
}

/// The mid-exposure time (MJD, UTC) of a CCD: `MJD-OBS`, else `DATE-OBS`, as the start, plus
/// half of `EXPTIME`; each key read from the CCD's header, else the primary's.
pub fn mid_exposure_mjd(ccd: &Header, primary: &Header) -> Result<f64, String> {
    let find = |key: &str| {
        if ccd.contains(key) {
            Some(ccd)
        } else if primary.contains(key) {
            Some(primary)
        } else {
            None
        }
    };
    let start = if let Some(h) = find("MJD-OBS") {
        h.f64("MJD-OBS").map_err(|e| e.to_string())?
    } else if let Some(h) = find("DATE-OBS") {
        let text = h.str("DATE-OBS").map_err(|e| e.to_string())?;
        let clock = crate::ephem::time::time_of_day(h);
        crate::ephem::time::parse_fits_date(&text, clock.as_deref())
            .map_err(|e| format!("{}: key DATE-OBS: {e}", h.loc()))?
    } else {
        return Err(format!(
            "{}: no MJD-OBS or DATE-OBS: shifting along a motion needs each exposure's time",
            ccd.loc()
        ));
    };
    let exptime = match find("EXPTIME") {
        Some(h) => h.f64("EXPTIME").map_err(|e| e.to_string())?,
        None => {
            return Err(format!(
                "{}: no EXPTIME: the mid-exposure time needs the exposure time",
                ccd.loc()
            ))
        }
    };
    if exptime.is_nan() || exptime < 0.0 {
        return Err(format!(
            "{}: key EXPTIME = {exptime}: expected seconds >= 0",
            ccd.loc()
        ));
    }
    Ok(start + exptime / 2.0 / 86400.0)
}

/// The layer moved by (`sx`, `sy`) grid pixels: output pixel (x, y) takes the value at
/// (x + sx, y + sy), interpolated with `kernel`. Pixel areas are unchanged, so fluxes are too.
pub fn shift_layer(layer: &Layer, sx: f64, sy: f64, kernel: Kernel) -> Layer {
    use rayon::prelude::*;
    let plane = Plane::new(
        &layer.value,
        Some(&layer.weight),
        layer.width,
        layer.height,
        0.0,
    );
    let mut out = Layer::empty(layer.width, layer.height);
    let w = layer.width;
    out.value
        .par_chunks_mut(w)
        .zip(out.weight.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (vals, wts))| {
            for x in 0..w {
                if let Some((v, var)) = plane.sample(x as f64 + sx, y as f64 + sy, kernel) {
                    vals[x] = v;
                    wts[x] = 1.0 / var;
                }
            }
        });
    out
}
