//! A night simulator in the geometry of the INT Wide Field Camera: biases, twilight flats and
//! science frames of a few fields, each exposed 4-6 times a few minutes apart, with stars from a
//! synthetic reference catalog, asteroids (0.1 to 100 "/min, trailed when fast, down to S/N ~ 3)
//! and the artifacts of real CCDs; a truth file records all of it.
//!
//! The algorithm is apart from I/O: [`plan`] decides everything but pixels, [`render`] draws one
//! frame into arrays with headers, [`truth`] and [`refcat_table`] describe the night; the
//! `simulate` task kind ([`task::Simulate`]) writes them as FITS and JSON. The same
//! [`SimConfig`] (seed included) always gives the same frames.

mod config;
pub mod known;
mod plan;
mod psf;
mod render;
mod sky;
pub mod task;
#[cfg(test)]
mod tests;
pub mod time;
mod truth;

pub use config::{CcdSpec, SimConfig};
pub use plan::{airmass, asteroid_at, flux_for_snr, plan, star_at, Night, SITE_CODE};
pub use psf::{effective_pixels, Canvas, Moffat};
pub use render::{render, RenderedFrame};
pub use sky::{deproject, offset, project, separation_deg, Camera, HeaderWcs, Placement};
pub use truth::{
    Artifact, Asteroid, AsteroidPosition, CcdTruth, FrameKind, FrameTruth, Segment, Star,
    StarOnCcd, Truth,
};

use crate::fits::Table;

/// The night's truth, given the artifacts that drawing its frames revealed (cosmic rays and
/// bleed trails, in frame order).
pub fn truth(night: &Night, drawn: impl IntoIterator<Item = Artifact>) -> Truth {
    let mut artifacts = night.fixed.clone();
    artifacts.extend(night.satellites.iter().cloned());
    artifacts.extend(drawn);
    Truth {
        format: truth::FORMAT.into(),
        config: night.config.clone(),
        pixel_convention: "FITS pixel coordinates of the raw frame: 1-based, (1, 1) is the \
                           centre of the first pixel, prescan columns included"
            .into(),
        ccds: night.ccds.clone(),
        frames: night.frames.clone(),
        stars: night.stars.clone(),
        asteroids: night.asteroids.clone(),
        artifacts,
    }
}

/// The reference catalog: every star brighter than `refcat_mag_max`, at `refcat_epoch`, as a
/// FITS table with columns ID, RA, DEC (deg), PMRA (mu_alpha cos delta), PMDEC (mas/yr), MAG.
pub fn refcat_table(night: &Night) -> Table {
    let stars: Vec<&Star> = night.stars.iter().filter(|s| s.in_refcat).collect();
    let mut t = Table::new("REFCAT")
        .with(
            "ID",
            "",
            stars.iter().map(|s| s.id as i32).collect::<Vec<_>>(),
        )
        .with(
            "RA",
            "deg",
            stars.iter().map(|s| s.ra_deg).collect::<Vec<_>>(),
        )
        .with(
            "DEC",
            "deg",
            stars.iter().map(|s| s.dec_deg).collect::<Vec<_>>(),
        )
        .with(
            "PMRA",
            "mas/yr",
            stars.iter().map(|s| s.pmra_mas_per_yr).collect::<Vec<_>>(),
        )
        .with(
            "PMDEC",
            "mas/yr",
            stars.iter().map(|s| s.pmdec_mas_per_yr).collect::<Vec<_>>(),
        )
        .with(
            "MAG",
            "mag",
            stars.iter().map(|s| s.mag).collect::<Vec<_>>(),
        );
    t.header
        .set(
            "EPOCH",
            night.config.refcat_epoch,
            "[yr] Julian epoch of RA, DEC",
        )
        .set("FILTER", night.config.filter.as_str(), "band of MAG")
        .set(
            "MAGLIM",
            night.config.refcat_mag_max,
            "faintest MAG in the catalog",
        )
        .set("RADESYS", "ICRS", "");
    t
}
