//! What the simulator put in the frames: written beside them as JSON so that every later stage
//! (calibration, extraction, astrometry, linking) can be scored against it.
//!
//! Pixel positions are FITS pixel coordinates of the raw frame: 1-based, (1, 1) the centre of
//! the first pixel, prescan columns included (as SExtractor's X_IMAGE on the raw frame).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::SimConfig;
use super::sky::{Camera, HeaderWcs, Placement};

pub const FORMAT: &str = "nearby-simulate-truth/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// `nearby-simulate-truth/1`.
    pub format: String,
    pub config: SimConfig,
    pub pixel_convention: String,
    pub ccds: Vec<CcdTruth>,
    pub frames: Vec<FrameTruth>,
    pub stars: Vec<Star>,
    pub asteroids: Vec<Asteroid>,
    pub artifacts: Vec<Artifact>,
}

impl Truth {
    pub fn load(path: &Path) -> Result<Truth, String> {
        crate::json::load_tagged(path, "a simulator truth file", FORMAT, |t: &Truth| {
            &t.format
        })
    }
}

/// One CCD of the mosaic: electronics, geometry and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CcdTruth {
    /// 1-based, as IMAGEID.
    pub id: usize,
    pub extname: String,
    pub ccdname: String,
    pub gain_e_per_adu: f64,
    pub read_noise_e: f64,
    pub bias_adu: f64,
    pub full_well_e: f64,
    /// Level above which pixels are saturated (SATURATE in the header).
    pub saturate_adu: f64,
    pub raw_width: usize,
    pub raw_height: usize,
    pub datasec: String,
    pub biassec: String,
    pub placement: Placement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    Bias,
    Flat,
    Science,
}

impl FrameKind {
    /// IMAGETYP as written in the header.
    pub fn imagetyp(self) -> &'static str {
        match self {
            FrameKind::Bias => "bias",
            FrameKind::Flat => "flat",
            FrameKind::Science => "object",
        }
    }
}

/// One exposure of the night (a multi-extension file, one HDU per CCD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    pub index: usize,
    pub run: u64,
    /// Path relative to the simulator's output directory, e.g. `raw/r1000011.fits`.
    pub file: String,
    pub kind: FrameKind,
    /// Field and exposure number (from 0) of science frames.
    pub field: Option<usize>,
    pub exposure: Option<usize>,
    pub mjd_start: f64,
    pub date_obs: String,
    pub exptime_secs: f64,
    pub airmass: f64,
    pub seeing_fwhm_arcsec: f64,
    /// Expected sky (or flat illumination) at the optical axis, electrons per pixel.
    pub sky_e_per_px: f64,
    /// The true camera (the WCS the pixels were drawn with, distortion included).
    pub camera: Camera,
    /// The approximate WCS written in each CCD's header, in CCD order.
    pub header_wcs: Vec<HeaderWcs>,
    /// Stars drawn on each CCD (science frames).
    pub stars: Vec<StarOnCcd>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StarOnCcd {
    pub star: usize,
    pub ccd: usize,
    pub x: f64,
    pub y: f64,
    /// Electrons received (after extinction, before the flat field).
    pub flux_e: f64,
}

/// A star of the synthetic sky. Positions are at `config.refcat_epoch`; the frames show them
/// moved by their proper motion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Star {
    pub id: usize,
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// mu_alpha * cos(delta), milliarcseconds per year.
    pub pmra_mas_per_yr: f64,
    pub pmdec_mas_per_yr: f64,
    pub mag: f64,
    pub in_refcat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asteroid {
    pub id: usize,
    /// Temporary designation, e.g. `SIM0001`; a known object's designation.
    pub name: String,
    /// A known object put in from an orbit file (input `known_orbits`): its designation there,
    /// e.g. `(2001) Einstein`. Absent for the synthetic movers, which no catalogue knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<String>,
    pub field: usize,
    pub mag: f64,
    pub rate_arcsec_per_min: f64,
    /// Direction of motion, degrees east of north.
    pub pa_deg: f64,
    /// Moves more than one seeing FWHM during an exposure.
    pub trailed: bool,
    pub positions: Vec<AsteroidPosition>,
}

/// Where an asteroid is in one exposure (mid-exposure), and where its trail runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsteroidPosition {
    pub frame: usize,
    pub exposure: usize,
    pub mjd_mid: f64,
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// The CCD holding the mid-exposure position; `None` if it falls in a gap or off the mosaic.
    pub ccd: Option<usize>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    /// Trail ends (exposure start and end) in that CCD's pixels.
    pub x_start: Option<f64>,
    pub y_start: Option<f64>,
    pub x_end: Option<f64>,
    pub y_end: Option<f64>,
    pub trail_px: f64,
    pub flux_e: f64,
    /// Expected signal-to-noise of an optimal (profile-fit) measurement.
    pub snr: f64,
}

/// A segment of a trail on one CCD, in its pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub ccd: usize,
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

/// Everything else in the pixels. Fixed defects have no frame; transient ones name theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Artifact {
    HotPixel {
        ccd: usize,
        x: usize,
        y: usize,
        dark_e_per_s: f64,
    },
    /// A column from row y0 to y1 that responds weakly (`response` < 1) or adds charge
    /// (`extra_e` per pixel on every readout).
    BadColumn {
        ccd: usize,
        x: usize,
        y0: usize,
        y1: usize,
        response: f64,
        extra_e: f64,
    },
    /// The out-of-focus shadow of a dust grain: an annulus of lower response.
    DustRing {
        ccd: usize,
        x: f64,
        y: f64,
        r_inner_px: f64,
        r_outer_px: f64,
        depth: f64,
    },
    CosmicRay {
        frame: usize,
        ccd: usize,
        x: f64,
        y: f64,
        length_px: f64,
        angle_deg: f64,
        energy_e: f64,
    },
    Satellite {
        frame: usize,
        ra0_deg: f64,
        dec0_deg: f64,
        ra1_deg: f64,
        dec1_deg: f64,
        e_per_px: f64,
        segments: Vec<Segment>,
    },
    /// Saturated charge that bled along columns x0..=x1 over rows y0..=y1.
    Bleed {
        frame: usize,
        ccd: usize,
        x0: usize,
        x1: usize,
        y0: usize,
        y1: usize,
    },
}
