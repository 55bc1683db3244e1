//! What a simulated night looks like: instrument, observing plan, sky and artifacts.

use serde::{Deserialize, Serialize};

/// One CCD's geometry and electronics (per-CCD values scatter a little around these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcdSpec {
    /// Light-sensitive columns and rows.
    pub nx: usize,
    pub ny: usize,
    /// Columns read before the data (prescan) and after it (overscan), on every row.
    pub prescan: usize,
    pub overscan: usize,
    pub pixel_um: f64,
    /// Electrons per ADU.
    pub gain: f64,
    pub read_noise_e: f64,
    pub bias_adu: f64,
    /// Charge a pixel holds before it bleeds along its column.
    pub full_well_e: f64,
    /// Seconds to read the mosaic out (cosmic rays keep arriving).
    pub readout_secs: f64,
}

/// Everything the simulator needs. Deterministic: the same config gives the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub seed: u64,
    /// UTC date of the evening the night starts, `YYYY-MM-DD`.
    pub night: String,
    /// UTC hour of the first science exposure (may exceed 24: the night goes past midnight).
    pub start_utc_hours: f64,
    pub n_fields: usize,
    pub n_exposures: usize,
    pub exptime_secs: f64,
    /// Start-to-start interval of the exposures of a field.
    pub cadence_secs: f64,
    pub n_bias: usize,
    pub n_flats: usize,
    pub flat_exptime_secs: f64,
    /// Mean level of a twilight flat, electrons per pixel.
    pub flat_level_e: f64,
    pub filter: String,
    /// Centre of the first field; the next fields follow east along the ecliptic-ish track.
    pub field_ra_deg: f64,
    pub field_dec_deg: f64,
    pub field_step_deg: f64,
    pub n_ccds: usize,
    pub ccd: CcdSpec,
    /// Gap between neighbouring CCDs, pixels.
    pub ccd_gap_px: f64,
    pub pixel_scale_arcsec: f64,
    /// Radial distortion of the true camera: r_focal = r (1 + k r^2), r in radians (the INT
    /// prime-focus corrector is about 220, 1% at the corner of the WFC).
    pub distortion_k3_per_rad2: f64,
    /// How far the header pointing may be from the truth.
    pub pointing_error_arcmin: f64,
    pub seeing_min_arcsec: f64,
    pub seeing_max_arcsec: f64,
    pub moffat_beta: f64,
    pub sky_mag_per_arcsec2: f64,
    /// Fractional change of the sky level from one side of the mosaic to the other.
    pub sky_gradient: f64,
    /// Magnitude that gives 1 electron per second above the atmosphere.
    pub zeropoint_mag: f64,
    pub extinction_mag_per_airmass: f64,
    /// Stars per square degree between `star_mag_min` and `star_mag_max`.
    pub star_density_per_deg2: f64,
    pub star_mag_min: f64,
    pub star_mag_max: f64,
    /// Stars brighter than this go into the reference catalog.
    pub refcat_mag_max: f64,
    /// Epoch of the reference catalog positions (Julian year), as Gaia DR3's 2016.0.
    pub refcat_epoch: f64,
    pub n_asteroids: usize,
    pub asteroid_rate_min_arcsec_per_min: f64,
    pub asteroid_rate_max_arcsec_per_min: f64,
    pub asteroid_mag_bright: f64,
    /// The faintest asteroids have about this signal-to-noise ratio (PSF-fit, untrailed).
    pub asteroid_snr_min: f64,
    pub hot_pixels_per_ccd: usize,
    pub bad_columns_per_ccd: usize,
    pub dust_rings_per_ccd: usize,
    pub cosmic_rays_per_cm2_per_min: f64,
    /// Chance that a satellite crosses a science exposure.
    pub satellite_probability: f64,
    /// Satellite trails are log-uniform in electrons per pixel of trail, from
    /// [`SATELLITE_E_PER_PX_MIN`] (faint: cut by extraction into many S/N ~3 pieces) to this.
    #[serde(default = "satellite_e_per_px_max_default")]
    pub satellite_e_per_px_max: f64,
}

/// The faintest satellite trail, electrons per pixel of trail.
pub const SATELLITE_E_PER_PX_MIN: f64 = 300.0;

fn satellite_e_per_px_max_default() -> f64 {
    8000.0
}

impl SimConfig {
    /// The INT Wide Field Camera on a July night of EURONEAR near-opposition fields (19h08m
    /// -20 deg, observed from 00:15 UTC near transit): four 2048x4100 CCDs with pre- and
    /// overscan, 0.33"/px, 120 s exposures 2.77 min apart.
    pub fn int_wfc() -> SimConfig {
        SimConfig {
            seed: 1,
            night: "2014-07-10".into(),
            start_utc_hours: 24.25,
            n_fields: 1,
            n_exposures: 4,
            exptime_secs: 120.0,
            cadence_secs: 166.0,
            n_bias: 5,
            n_flats: 5,
            flat_exptime_secs: 4.0,
            flat_level_e: 60000.0,
            filter: "R".into(),
            field_ra_deg: 287.0,
            field_dec_deg: -20.0,
            field_step_deg: 0.6,
            n_ccds: 4,
            ccd: CcdSpec {
                nx: 2048,
                ny: 4100,
                prescan: 54,
                overscan: 52,
                pixel_um: 13.5,
                gain: 2.8,
                read_noise_e: 6.5,
                bias_adu: 1700.0,
                full_well_e: 150000.0,
                readout_secs: 40.0,
            },
            ccd_gap_px: 75.0,
            pixel_scale_arcsec: 0.33,
            distortion_k3_per_rad2: 220.0,
            pointing_error_arcmin: 3.0,
            seeing_min_arcsec: 0.9,
            seeing_max_arcsec: 2.0,
            moffat_beta: 3.0,
            sky_mag_per_arcsec2: 20.8,
            sky_gradient: 0.04,
            zeropoint_mag: 25.9,
            extinction_mag_per_airmass: 0.08,
            star_density_per_deg2: 9000.0,
            star_mag_min: 11.5,
            star_mag_max: 23.5,
            refcat_mag_max: 21.0,
            refcat_epoch: 2016.0,
            n_asteroids: 20,
            asteroid_rate_min_arcsec_per_min: 0.1,
            asteroid_rate_max_arcsec_per_min: 100.0,
            asteroid_mag_bright: 16.5,
            asteroid_snr_min: 3.0,
            hot_pixels_per_ccd: 200,
            bad_columns_per_ccd: 3,
            dust_rings_per_ccd: 4,
            cosmic_rays_per_cm2_per_min: 2.0,
            satellite_probability: 0.15,
            satellite_e_per_px_max: satellite_e_per_px_max_default(),
        }
    }

    /// A small night for tests and the demo: two 512x1024 CCDs (plus pre- and overscan), four
    /// 60 s exposures of one field, two biases and two flats; everything else as the INT WFC.
    pub fn small() -> SimConfig {
        let full = SimConfig::int_wfc();
        SimConfig {
            n_ccds: 2,
            n_exposures: 4,
            exptime_secs: 60.0,
            cadence_secs: 100.0,
            n_bias: 2,
            n_flats: 2,
            ccd: CcdSpec {
                nx: 512,
                ny: 1024,
                prescan: 16,
                overscan: 32,
                readout_secs: 10.0,
                ..full.ccd.clone()
            },
            ccd_gap_px: 40.0,
            pointing_error_arcmin: 1.0,
            star_density_per_deg2: 12000.0,
            n_asteroids: 8,
            hot_pixels_per_ccd: 20,
            bad_columns_per_ccd: 1,
            dust_rings_per_ccd: 1,
            satellite_probability: 0.25,
            ..full
        }
    }

    /// A preset by name: `small` or `int_wfc`.
    pub fn preset(name: &str) -> Option<SimConfig> {
        match name {
            "small" => Some(SimConfig::small()),
            "int_wfc" => Some(SimConfig::int_wfc()),
            _ => None,
        }
    }

    /// Every problem with the config, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut need = |ok: bool, field: &'static str, msg: String| {
            if !ok {
                out.push((field, msg));
            }
        };
        need(
            (1..=4).contains(&self.n_ccds),
            "n_ccds",
            format!("{}: the INT WFC layout has 1 to 4 CCDs", self.n_ccds),
        );
        need(
            self.n_fields >= 1,
            "n_fields",
            "at least one field is needed".into(),
        );
        need(
            self.n_exposures >= 1,
            "n_exposures",
            "at least one exposure per field is needed".into(),
        );
        need(
            self.exptime_secs > 0.0 && self.exptime_secs <= 3600.0,
            "exptime_secs",
            format!("{}: expected 0 < exptime <= 3600 s", self.exptime_secs),
        );
        need(
            self.cadence_secs >= self.exptime_secs,
            "cadence_secs",
            format!(
                "{} s is shorter than the exposure time ({} s)",
                self.cadence_secs, self.exptime_secs
            ),
        );
        need(
            self.ccd.nx >= 64 && self.ccd.ny >= 64 && self.ccd.nx <= 8192 && self.ccd.ny <= 8192,
            "ccd",
            format!(
                "{} x {}: CCDs must be 64 to 8192 pixels on a side",
                self.ccd.nx, self.ccd.ny
            ),
        );
        need(
            self.ccd.overscan >= 8,
            "ccd.overscan",
            "at least 8 overscan columns are needed to measure the bias".into(),
        );
        need(
            self.seeing_min_arcsec > 0.0 && self.seeing_max_arcsec >= self.seeing_min_arcsec,
            "seeing_min_arcsec",
            "expected 0 < seeing_min <= seeing_max".into(),
        );
        need(
            self.moffat_beta > 1.0,
            "moffat_beta",
            "a Moffat profile needs beta > 1".into(),
        );
        need(
            self.asteroid_rate_min_arcsec_per_min > 0.0
                && self.asteroid_rate_max_arcsec_per_min >= self.asteroid_rate_min_arcsec_per_min,
            "asteroid_rate_min_arcsec_per_min",
            "expected 0 < rate_min <= rate_max".into(),
        );
        need(
            self.star_mag_max > self.star_mag_min,
            "star_mag_max",
            "expected star_mag_min < star_mag_max".into(),
        );
        need(
            (0.0..=1.0).contains(&self.satellite_probability),
            "satellite_probability",
            format!(
                "{}: expected a probability, 0 to 1",
                self.satellite_probability
            ),
        );
        need(
            self.satellite_e_per_px_max >= SATELLITE_E_PER_PX_MIN,
            "satellite_e_per_px_max",
            format!(
                "{}: expected at least the faintest trail's {SATELLITE_E_PER_PX_MIN} e/px",
                self.satellite_e_per_px_max
            ),
        );
        need(
            super::time::parse_date(&self.night).is_some(),
            "night",
            format!("{:?}: expected a date YYYY-MM-DD", self.night),
        );
        need(
            self.field_dec_deg.abs() < 85.0,
            "field_dec_deg",
            "fields within 5 degrees of a pole are not supported".into(),
        );
        need(
            self.n_fields * self.n_exposures <= 1000 && self.n_bias <= 100 && self.n_flats <= 100,
            "n_fields",
            "at most 1000 science exposures and 100 biases and flats per night".into(),
        );
        out
    }
}
