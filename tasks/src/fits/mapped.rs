//! The images of a FITS file with their pixels left as the file stores them, for work that
//! passes over each pixel once (calibration): a plain file is memory-mapped, so its pixels go
//! from the page cache to the computation without a copy into a decoded array (a raw INT WFC
//! frame is 70 MB, its masters 268 MB, and on a virtual machine the first touch of that much
//! fresh memory costs more than the calibration itself). Files the native reader does not take
//! (tile-compressed, damaged) are decoded by cfitsio as [`read_all_images`](super::read_all_images)
//! does, with the same errors.
//!
//! The mapping is read-only and private; the file must not be truncated while it is mapped (a
//! read past its new end would kill the process with SIGBUS), the contract astropy's
//! `memmap=True` also rests on. Pipelines hand tasks immutable files: a task's outputs are
//! renamed into place once written and never rewritten.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::native::{self, decode, decode_one};
use super::{display, image_shape, is_empty_image, loc, FitsError, Header, Image};

/// Pixels of one image: stored (big-endian, BITPIX bytes each, BSCALE/BZERO to apply) or
/// already decoded.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    Stored {
        bytes: &'a [u8],
        bitpix: i64,
        bscale: f64,
        bzero: f64,
    },
    Decoded(&'a [f32]),
}

impl Pixels<'_> {
    /// The number of pixels.
    pub fn len(&self) -> usize {
        match self {
            Pixels::Stored { bytes, bitpix, .. } => {
                bytes.len() / (bitpix.unsigned_abs() as usize / 8)
            }
            Pixels::Decoded(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes `out.len()` pixels from pixel `start` on (row-major) into `out`.
    ///
    /// # Panics
    /// If the range runs past the image (a programming error: callers check shapes).
    pub fn read(&self, start: usize, out: &mut [f32]) {
        match *self {
            Pixels::Stored {
                bytes,
                bitpix,
                bscale,
                bzero,
            } => {
                let size = bitpix.unsigned_abs() as usize / 8;
                let b = &bytes[start * size..(start + out.len()) * size];
                decode(b, bitpix, bscale, bzero, out);
            }
            Pixels::Decoded(d) => out.copy_from_slice(&d[start..start + out.len()]),
        }
    }

    /// Pixels `range.start`, `range.start + stride`, ... below `range.end`, decoded as
    /// [`Pixels::get`] decodes them, handed to `f` with their index: strided samples (robust
    /// levels) with the choice of decoder made once, not per pixel.
    pub fn for_each_strided(
        &self,
        range: std::ops::Range<usize>,
        stride: usize,
        mut f: impl FnMut(usize, f32),
    ) {
        let stride = stride.max(1);
        match *self {
            Pixels::Stored {
                bytes,
                bitpix,
                bscale,
                bzero,
            } => {
                // Called with a constant BITPIX in each arm, so each loop is specialised.
                let mut each = |bitpix: i64| {
                    for i in range.clone().step_by(stride) {
                        f(i, decode_one(bytes, i, bitpix, bscale, bzero));
                    }
                };
                match bitpix {
                    8 => each(8),
                    16 => each(16),
                    32 => each(32),
                    -32 => each(-32),
                    _ => each(-64),
                }
            }
            Pixels::Decoded(d) => {
                for i in range.step_by(stride) {
                    f(i, d[i]);
                }
            }
        }
    }

    /// The pixel at index `i` (row-major), decoded as [`Pixels::read`] decodes it.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f32 {
        match *self {
            Pixels::Stored {
                bytes,
                bitpix,
                bscale,
                bzero,
            } => decode_one(bytes, i, bitpix, bscale, bzero),
            Pixels::Decoded(d) => d[i],
        }
    }
}

/// One image of an [`ImageFile`]: its header (origin set), shape and pixels.
pub struct StoredImage<'a> {
    pub header: &'a Header,
    pub width: usize,
    pub height: usize,
    pub pixels: Pixels<'a>,
}

/// Where the pixels of a file's images are.
enum Store {
    /// A plain file, mapped; each image's data unit is `(offset, length, bitpix, bscale, bzero)`.
    Mapped {
        map: Mmap,
        units: Vec<(usize, usize, i64, f64, f64)>,
    },
    /// Decoded by cfitsio.
    Decoded(Vec<Image>),
}

/// The image HDUs of a file that hold pixels, as [`read_all_images`](super::read_all_images)
/// lists them (empty HDUs and tables skipped), with their pixels left where they are.
pub struct ImageFile {
    path: PathBuf,
    primary: Header,
    /// Header, width, height of each image.
    images: Vec<(Header, usize, usize)>,
    store: Store,
}

impl ImageFile {
    /// Opens `path`: maps a plain file, decodes any other with cfitsio. Errors as
    /// [`read_all_images`](super::read_all_images) gives them.
    pub fn open(path: &Path) -> Result<ImageFile, FitsError> {
        let Some(hdus) = native::scan(path) else {
            return Self::decoded(path);
        };
        let file = File::open(path).map_err(|e| FitsError::Open {
            file: display(path),
            reason: e.to_string(),
        })?;
        // SAFETY: the mapping is read-only and private; see the module documentation for the
        // file that must not shrink while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FitsError::Open {
            file: display(path),
            reason: format!("cannot map: {e}"),
        })?;
        let (mut images, mut units) = (Vec::new(), Vec::new());
        for (i, hdu) in hdus.iter().enumerate() {
            let header = hdu.header(path, i);
            if is_empty_image(&header) {
                continue;
            }
            let (width, height) = image_shape(&header, &hdu.dims)?;
            let bscale = header.opt_f64("BSCALE")?.unwrap_or(1.0);
            let bzero = header.opt_f64("BZERO")?.unwrap_or(0.0);
            let start = hdu.data_start as usize;
            let len = width * height * (hdu.bitpix.unsigned_abs() as usize / 8);
            if start + len > map.len() {
                // The file shrank after it was scanned.
                return Err(FitsError::Truncated {
                    at: loc(path, i, None),
                    reason: format!(
                        "the file has {} bytes but this HDU's data ends at byte {}",
                        map.len(),
                        start + len
                    ),
                });
            }
            units.push((start, len, hdu.bitpix, bscale, bzero));
            images.push((header, width, height));
        }
        if images.is_empty() {
            return Err(FitsError::BadData {
                at: loc(path, 0, None),
                what: format!("none of the {} HDUs holds an image", hdus.len()),
            });
        }
        let primary = hdus[0].header(path, 0);
        Ok(ImageFile {
            path: path.to_path_buf(),
            primary,
            images,
            store: Store::Mapped { map, units },
        })
    }

    fn decoded(path: &Path) -> Result<ImageFile, FitsError> {
        let decoded = super::read_all_images_cfitsio(path)?;
        let primary = super::read_header(path, 0)?;
        Ok(ImageFile {
            path: path.to_path_buf(),
            primary,
            images: decoded
                .iter()
                .map(|im| (im.header.clone(), im.width, im.height))
                .collect(),
            store: Store::Decoded(decoded),
        })
    }

    /// Whether the pixels are mapped from the file (else cfitsio decoded them into memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The primary header (HDU 0), origin set.
    pub fn primary(&self) -> &Header {
        &self.primary
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `k` (0 = the first image that holds pixels).
    ///
    /// # Panics
    /// If `k >= self.len()`.
    pub fn image(&self, k: usize) -> StoredImage<'_> {
        let (header, width, height) = &self.images[k];
        let pixels = match &self.store {
            Store::Mapped { map, units } => {
                let (start, len, bitpix, bscale, bzero) = units[k];
                Pixels::Stored {
                    bytes: &map[start..start + len],
                    bitpix,
                    bscale,
                    bzero,
                }
            }
            Store::Decoded(images) => Pixels::Decoded(&images[k].data),
        };
        StoredImage {
            header,
            width: *width,
            height: *height,
            pixels,
        }
    }

    /// Every image, in order.
    pub fn images(&self) -> impl Iterator<Item = StoredImage<'_>> {
        (0..self.len()).map(|k| self.image(k))
    }
}
