//! Cutouts around detections: for each target position, a square window (200 x 200 pixels by
//! default, as the CERES classifier takes) from every exposure, with the parent's WCS carried
//! over (all its WCS cards, distortion terms included, with CRPIX moved by the window's offset),
//! a flag when the window runs off the CCD, and a PNG preview for reviewers.
//!
//! [`catalog`] reads the targets, [`cut`] takes a window, [`preview`] stretches and encodes the
//! PNG; [`task::Cutout`] does the FITS I/O.

pub mod catalog;
pub mod preview;
pub mod task;
#[cfg(test)]
mod tests;

pub use catalog::{read_targets, Target};

use crate::fits::{Header, Image};

/// A window cut from a CCD: `size` x `size` pixels, NaN where it lies off the CCD.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub size: usize,
    /// The parent pixel of window pixel (i, j) is (i + dx, j + dy), FITS 1-based both.
    pub dx: i64,
    pub dy: i64,
    /// Whether part of the window lies off the CCD.
    pub edge: bool,
    pub data: Vec<f32>,
}

/// The window of `size` pixels centred on the parent's pixel nearest to FITS position (x, y):
/// that pixel becomes window pixel (size/2, size/2) (1-based; the centre for odd sizes, the
/// lower-left of the four central pixels for even ones).
pub fn cut(image: &Image, x: f64, y: f64, size: usize) -> Window {
    let half = (size / 2) as i64;
    let dx = x.round() as i64 - half - (size % 2) as i64;
    let dy = y.round() as i64 - half - (size % 2) as i64;
    let (w, h) = (image.width as i64, image.height as i64);
    let mut data = vec![f32::NAN; size * size];
    let mut edge = false;
    for j in 0..size as i64 {
        let py = j + dy; // 0-based parent row of window row j (0-based)
        if py < 0 || py >= h {
            edge = true;
            continue;
        }
        for i in 0..size as i64 {
            let px = i + dx;
            if px < 0 || px >= w {
                edge = true;
                continue;
            }
            data[(j * size as i64 + i) as usize] = image.data[(py * w + px) as usize];
        }
    }
    Window {
        size,
        dx,
        dy,
        edge,
        data,
    }
}

/// Whether a header key belongs to the celestial WCS (its projection, reference, matrix and
/// distortion terms: SIP's A_/B_/AP_/BP_, TPV's PV, and their orders).
pub fn is_wcs_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "WCSAXES", "RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "LONPOLE", "LATPOLE", "WCSNAME",
        "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER", "A_DMAX", "B_DMAX", "MJDREF",
    ];
    const PREFIX: &[&str] = &[
        "CTYPE", "CUNIT", "CRVAL", "CRPIX", "CDELT", "CROTA", "CD1_", "CD2_", "PC1_", "PC2_",
        "PV1_", "PV2_", "A_", "B_", "AP_", "BP_",
    ];
    EXACT.contains(&key) || PREFIX.iter().any(|p| key.starts_with(p))
}

/// The WCS cards of `parent` for a window whose pixel (i, j) is the parent's (i + dx, j + dy):
/// every WCS card copied, CRPIX1/2 moved by (-dx, -dy). Distortion polynomials are functions
/// of the offset from CRPIX, so they hold unchanged.
pub fn window_wcs(parent: &Header, dx: i64, dy: i64) -> Header {
    let mut h = Header::new();
    for c in parent.cards() {
        if is_wcs_key(&c.key) {
            h.set(&c.key, c.value.clone(), &c.comment);
        }
    }
    for (key, d) in [("CRPIX1", dx), ("CRPIX2", dy)] {
        if let Ok(v) = parent.f64(key) {
            h.set(key, v - d as f64, "reference pixel, moved to the cutout");
        }
    }
    h
}
