//! CERES: a convolutional network that tells real asteroid detections from artifacts (cosmic
//! rays, hot pixels, bad columns, bleed and satellite trails, noise peaks, star residuals),
//! after the EURONEAR CERES module, here a compact residual CNN trained from scratch with candle
//! on CPU.
//!
//! The path of the data: [`night`] makes each detection's cutout stack from calibrated frames
//! and catalogs, [`truth`] labels it from the simulator's truth, [`stack`] stores it as a FITS
//! cube and normalises it, [`lines`] counts the detections on a satellite line through
//! each, [`dataset`] splits labelled stacks by night, [`model`] is the
//! network (its convolutions on the CPU in `conv`), [`train`] fits it with checkpoints,
//! [`metrics`] scores it, [`plot`] draws the history; [`kinds`] wraps these as task kinds.

mod conv;
pub mod dataset;
pub mod device;
pub mod kinds;
pub mod lines;
pub mod metrics;
pub mod model;
pub mod night;
pub mod plot;
pub mod stack;
pub mod train;
pub mod truth;

pub use kinds::kinds;

#[cfg(test)]
mod tests;
