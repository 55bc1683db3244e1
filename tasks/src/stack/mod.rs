//! Co-adding frames on a common sky grid, as SWarp does: [`grid`] chooses a TAN output grid from
//! the frames' footprints (or from a given centre, scale and size); [`resample`] pulls every
//! output pixel from a frame with a Lanczos-3 or bilinear kernel, scaled by the pixel-area ratio
//! so that fluxes are conserved, and carries the inverse-variance weight along; [`combine`] merges
//! the resampled exposures by median, clipped mean or weighted mean; [`track`] shifts each
//! exposure along a given sky motion before combining (synthetic tracking of faint movers).
//!
//! The algorithms are functions over arrays; [`task::Stack`] reads and writes the FITS files.
//! Every frame's pixel <-> sky mapping goes through [`FrameWcs`], the project's WCS type, so a
//! richer WCS (distortion terms) is used here as soon as that type reads it.

pub mod combine;
pub mod grid;
pub mod resample;
pub mod task;
#[cfg(test)]
mod tests;
pub mod track;

pub use combine::{combine, Combine};
pub use grid::Grid;
pub use resample::{resample, Kernel, Layer, Source};
pub use track::{mid_exposure_mjd, shift_layer, Motion};

/// The WCS a frame's pixels are mapped to the sky with.
pub type FrameWcs = crate::wcs::TanWcs;
