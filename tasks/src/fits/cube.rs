//! Data cubes: a 3-D float32 image (NAXIS3 planes of NAXIS1 x NAXIS2) in the primary HDU,
//! followed by 2-D image extensions (each plane again with its own WCS, say), as the `cutout`
//! kind writes a detection's exposures: the cube for a classifier that takes them as channels,
//! the planes for people and for WCS readers (which want a WCS on a 2-D image).

use std::path::Path;

use super::raw::{self, Handle};
use super::{
    append_image, display, header_at, open, read_error, write_cards, write_error, FitsError,
    Header, Image, Pixel,
};

/// A cube read back: its header, (width, height, planes) and the pixels, plane after plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Cube {
    pub header: Header,
    pub width: usize,
    pub height: usize,
    pub planes: usize,
    pub data: Vec<f32>,
}

impl Cube {
    /// Plane `k` (from 0), row-major.
    pub fn plane(&self, k: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[k * n..(k + 1) * n]
    }
}

/// Writes `data` (planes of `width` x `height`, one after another) as a float32 cube in the
/// primary HDU with `primary`'s cards, then each image of `extensions` as a float32 image HDU.
/// An existing file is replaced.
pub fn write_cube(
    path: &Path,
    primary: &Header,
    width: usize,
    height: usize,
    data: &[f32],
    extensions: &[Image],
) -> Result<(), FitsError> {
    let n = width * height;
    if n == 0 || !data.len().is_multiple_of(n) || data.is_empty() {
        return Err(FitsError::Write {
            file: display(path),
            reason: format!(
                "a cube of {width} x {height} planes cannot hold {} pixels",
                data.len()
            ),
        });
    }
    let mut h = Handle::create(path, false).map_err(|s| write_error(path, "create", s))?;
    h.create_image(-32, &[width, height, data.len() / n])
        .map_err(|s| write_error(path, "create cube HDU", s))?;
    write_cards(&mut h, primary)?;
    h.write_pixels(raw::TFLOAT, data)
        .map_err(|s| write_error(path, "write pixels", s))?;
    for e in extensions {
        append_image(&mut h, e, Pixel::F32)?;
    }
    h.close().map_err(|s| write_error(path, "close", s))
}

/// Reads the image in HDU `hdu` as a cube (a 2-D image is a cube of one plane).
pub fn read_cube(path: &Path, hdu: usize) -> Result<Cube, FitsError> {
    let mut h = open(path)?;
    let (kind, header) = header_at(&mut h, hdu)?;
    if kind != raw::IMAGE_HDU {
        return Err(FitsError::NotImage {
            at: header.loc(),
            found: super::kind_name(kind),
        });
    }
    let dims = h.image_shape().map_err(|s| read_error(path, hdu, s))?;
    if !(2..=3).contains(&dims.len()) || dims.contains(&0) {
        return Err(FitsError::WrongNaxis {
            at: header.loc(),
            naxis: format!("{} ({:?})", dims.len(), dims),
            hint: " (expected a 2-D image or a 3-D cube)",
        });
    }
    let planes = dims.get(2).copied().unwrap_or(1);
    let data = h
        .read_pixels_f32(dims[0] * dims[1] * planes)
        .map_err(|s| read_error(path, hdu, s))?;
    Ok(Cube {
        header,
        width: dims[0],
        height: dims[1],
        planes,
        data,
    })
}
