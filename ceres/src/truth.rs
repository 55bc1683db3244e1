//! Labels from the simulator's truth: a detection within a seeing FWHM (at least 3 px) of an
//! asteroid's trail in its exposure is an asteroid; anything else is an artifact of the kind
//! the truth puts there (star, cosmic ray, hot pixel, bad column, bleed trail, satellite trail,
//! dust ring) or, when nothing is there, a noise peak.
//!
//! Truth positions are FITS pixels of the raw frame; detections are in the trimmed frame, so
//! raw = trimmed - LTV.

use std::collections::HashMap;

use nearby_tasks::simulate::{Artifact, Truth};

use crate::stack::{Label, Stack};

pub const SOURCE: &str = "simulator truth";

/// Distance from (px, py) to the segment (x0, y0)-(x1, y1).
fn to_segment(px: f64, py: f64, x0: f64, y0: f64, x1: f64, y1: f64) -> f64 {
    let (dx, dy) = (x1 - x0, y1 - y0);
    let l2 = dx * dx + dy * dy;
    let t = if l2 > 0.0 {
        (((px - x0) * dx + (py - y0) * dy) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (px - (x0 + t * dx)).hypot(py - (y0 + t * dy))
}

/// What the truth has at raw pixel (x, y) of CCD `ccd` (1-based) in frame `frame`.
pub fn kind_at(truth: &Truth, frame: usize, ccd: usize, x: f64, y: f64) -> &'static str {
    let Some(fr) = truth.frames.get(frame) else {
        return "noise";
    };
    let fwhm_px = fr.seeing_fwhm_arcsec / fr.camera.scale_arcsec.max(1e-6);
    let r = fwhm_px.max(3.0);
    for a in &truth.asteroids {
        for p in a.positions.iter().filter(|p| p.frame == frame) {
            if p.ccd != Some(ccd) {
                continue;
            }
            let (Some(xs), Some(ys), Some(xe), Some(ye)) = (p.x_start, p.y_start, p.x_end, p.y_end)
            else {
                continue;
            };
            if to_segment(x, y, xs, ys, xe, ye) <= r {
                return "asteroid";
            }
        }
    }
    if fr
        .stars
        .iter()
        .any(|s| s.ccd == ccd && (s.x - x).hypot(s.y - y) <= r)
    {
        return "star";
    }
    let mut found: Option<&'static str> = None;
    for a in &truth.artifacts {
        let k = match a {
            Artifact::CosmicRay {
                frame: f,
                ccd: c,
                x: x0,
                y: y0,
                length_px,
                angle_deg,
                ..
            } if *f == frame && *c == ccd => {
                let (s, co) = angle_deg.to_radians().sin_cos();
                let (x1, y1) = (x0 + length_px * co, y0 + length_px * s);
                (to_segment(x, y, *x0, *y0, x1, y1) <= 3.0).then_some("cosmic_ray")
            }
            Artifact::Satellite {
                frame: f, segments, ..
            } if *f == frame => segments
                .iter()
                .any(|s| s.ccd == ccd && to_segment(x, y, s.x0, s.y0, s.x1, s.y1) <= 6.0)
                .then_some("satellite"),
            Artifact::Bleed {
                frame: f,
                ccd: c,
                x0,
                x1,
                y0,
                y1,
            } if *f == frame && *c == ccd => {
                let inside = x >= *x0 as f64 - 3.0
                    && x <= *x1 as f64 + 3.0
                    && y >= *y0 as f64 - 3.0
                    && y <= *y1 as f64 + 3.0;
                inside.then_some("bleed")
            }
            Artifact::BadColumn {
                ccd: c,
                x: xc,
                y0,
                y1,
                ..
            } if *c == ccd => {
                let inside =
                    (x - *xc as f64).abs() <= 3.0 && y >= *y0 as f64 - 3.0 && y <= *y1 as f64 + 3.0;
                inside.then_some("bad_column")
            }
            Artifact::HotPixel {
                ccd: c,
                x: xh,
                y: yh,
                ..
            } if *c == ccd => {
                ((*xh as f64 - x).hypot(*yh as f64 - y) <= 3.0).then_some("hot_pixel")
            }
            Artifact::DustRing {
                ccd: c,
                x: xd,
                y: yd,
                r_outer_px,
                ..
            } if *c == ccd => ((xd - x).hypot(yd - y) <= r_outer_px + 2.0).then_some("dust_ring"),
            _ => None,
        };
        // Transient artifacts of this exposure come before fixed defects.
        if let Some(k) = k {
            let transient = matches!(k, "cosmic_ray" | "satellite" | "bleed");
            if transient {
                return k;
            }
            found = found.or(Some(k));
        }
    }
    found.unwrap_or("noise")
}

/// Labels every stack whose exposure is in the truth; `ltv` gives each (run, CCD name)'s
/// trimmed = raw + LTV offset. Returns how many stacks were labelled.
pub fn label(
    truth: &Truth,
    stacks: &mut [Stack],
    ltv: &HashMap<(i64, String), (f64, f64)>,
) -> usize {
    let frames: HashMap<u64, usize> = truth.frames.iter().map(|f| (f.run, f.index)).collect();
    let ccds: HashMap<&str, usize> = truth
        .ccds
        .iter()
        .map(|c| (c.ccdname.trim(), c.id))
        .collect();
    let mut n = 0;
    for s in stacks.iter_mut() {
        let (Some(&frame), Some(&ccd)) = (frames.get(&(s.run as u64)), ccds.get(s.ccd.as_str()))
        else {
            continue;
        };
        let (lx, ly) = ltv
            .get(&(s.run, s.ccd.clone()))
            .copied()
            .unwrap_or((0.0, 0.0));
        let kind = kind_at(truth, frame, ccd, s.x - lx, s.y - ly);
        s.kind = kind.to_owned();
        s.label = Some(if kind == "asteroid" {
            Label::Asteroid
        } else {
            Label::Artifact
        });
        s.label_source = SOURCE.to_owned();
        n += 1;
    }
    n
}
