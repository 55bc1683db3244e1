//! The output grid of a stack: a gnomonic (TAN) projection, north up and east left, either
//! covering the union of the frames' footprints at their median pixel scale (SWarp's
//! `CENTER_TYPE ALL`, `PIXELSCALE_TYPE MEDIAN`) or with a given centre, scale and size.

use super::FrameWcs;
use crate::fits::Header;
use crate::wcs::TanWcs;

/// A TAN pixel grid: `width` x `height` pixels with FITS 1-based pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pub wcs: TanWcs,
}

/// Points sampled along each edge of a frame to find its footprint (8 a side: exact for TAN,
/// whose edges are great circles, and close for distorted frames whose edges bow).
const EDGE_SAMPLES: usize = 8;

/// The largest grid side accepted, pixels: beyond it the footprints are wrong (frames spread
/// over the sky) rather than a real mosaic.
pub const MAX_SIDE_PX: usize = 65_536;

impl Grid {
    /// A grid of `width` x `height` pixels of `scale_deg` centred on (`ra_deg`, `dec_deg`).
    pub fn centered(
        ra_deg: f64,
        dec_deg: f64,
        scale_deg: f64,
        width: usize,
        height: usize,
    ) -> Grid {
        Grid {
            width,
            height,
            wcs: TanWcs {
                crpix: [(width as f64 + 1.0) / 2.0, (height as f64 + 1.0) / 2.0],
                crval: [ra_deg.rem_euclid(360.0), dec_deg],
                cd: [[-scale_deg, 0.0], [0.0, scale_deg]],
                sip: None,
            },
        }
    }

    /// The smallest grid holding every frame (`(wcs, width, height)`), tangent at the mean of
    /// their corners, with pixels of `scale_deg` (default: the median pixel scale of the frames).
    /// `None` when there are no frames or the footprints cannot share a tangent plane (more
    /// than 90 degrees apart, or a grid wider than [`MAX_SIDE_PX`]).
    pub fn covering(frames: &[(FrameWcs, usize, usize)], scale_deg: Option<f64>) -> Option<Grid> {
        let mut corners = Vec::new();
        for (wcs, w, h) in frames {
            corners.extend(edge_points(*w, *h).map(|(x, y)| wcs.pix_to_sky(x, y)));
        }
        if corners.is_empty() {
            return None;
        }
        let (ra0, dec0) = mean_direction(&corners)?;
        let scale = match scale_deg {
            Some(s) => s,
            None => {
                let mut s: Vec<f64> = frames.iter().map(|(w, ..)| pixel_scale_deg(w)).collect();
                s.sort_by(f64::total_cmp);
                s[s.len() / 2]
            }
        };
        if !(scale.is_finite() && scale > 0.0) {
            return None;
        }
        let probe = Grid::centered(ra0, dec0, scale, 0, 0).wcs;
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(ra, dec) in &corners {
            let (x, y) = probe.sky_to_pix(ra, dec)?;
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        // A footprint a whisker over a whole number of pixels (rounding) does not add a pixel.
        let (w, h) = ((x1 - x0 - 1e-6).ceil(), (y1 - y0 - 1e-6).ceil());
        if !(w >= 1.0 && h >= 1.0 && w <= MAX_SIDE_PX as f64 && h <= MAX_SIDE_PX as f64) {
            return None;
        }
        // The lower-left footprint corner is the outer edge (0.5, 0.5) of pixel (1, 1).
        let crpix = [probe.crpix[0] - x0 + 0.5, probe.crpix[1] - y0 + 0.5];
        let mut wcs = probe;
        wcs.crpix = crpix;
        Some(Grid {
            width: w as usize,
            height: h as usize,
            wcs,
        })
    }

    /// The grid's header: NAXIS1/2 are written by the FITS writer; this sets the TAN WCS.
    pub fn header(&self) -> Header {
        let mut h = Header::new();
        self.wcs.write(&mut h);
        h
    }

    /// Pixel scale, degrees.
    pub fn scale_deg(&self) -> f64 {
        pixel_scale_deg(&self.wcs)
    }
}

/// The pixel scale of a WCS at its reference pixel: sqrt(|det CD|), degrees.
pub fn pixel_scale_deg(wcs: &TanWcs) -> f64 {
    let cd = &wcs.cd;
    (cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0]).abs().sqrt()
}

/// Points along the outer edge of a `w` x `h` frame, FITS pixel coordinates.
fn edge_points(w: usize, h: usize) -> impl Iterator<Item = (f64, f64)> {
    let (w, h) = (w as f64, h as f64);
    (0..EDGE_SAMPLES).flat_map(move |i| {
        let t = i as f64 / EDGE_SAMPLES as f64;
        [
            (0.5 + t * w, 0.5),
            (w + 0.5, 0.5 + t * h),
            (w + 0.5 - t * w, h + 0.5),
            (0.5, h + 0.5 - t * h),
        ]
    })
}

/// The direction of the summed unit vectors of sky positions (degrees); `None` if they cancel.
fn mean_direction(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let mut v = [0.0f64; 3];
    for &(ra, dec) in points {
        let (ra, dec) = (ra.to_radians(), dec.to_radians());
        v[0] += dec.cos() * ra.cos();
        v[1] += dec.cos() * ra.sin();
        v[2] += dec.sin();
    }
    let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if r < 1e-9 * points.len() as f64 {
        return None;
    }
    let ra = v[1].atan2(v[0]).to_degrees().rem_euclid(360.0);
    let dec = (v[2] / r).clamp(-1.0, 1.0).asin().to_degrees();
    Some((ra, dec))
}
