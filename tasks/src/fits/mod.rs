//! FITS I/O: images (BITPIX 8/16/32/-32/-64 with BSCALE/BZERO), multi-extension files (one HDU
//! per CCD), tile-compressed (`.fz`) images, headers and binary tables, over cfitsio as the
//! `fitsio` crate builds it from its bundled source. Plain (uncompressed) image files are read
//! and written by `native`, in Rust, because calibration is bound by that I/O; the files and
//! the errors are the same either way.
//!
//! Every error names the file, the HDU (0 = primary) and, where one is at fault, the key. Errors
//! that mean the file itself is bad (truncated, not FITS, wrong NAXIS, unsupported BITPIX, no
//! usable pixels, a missing key) become [`TaskError::BadInput`] so the engine quarantines the
//! frame; errors of the machine (cannot open or write) stay retryable.
//!
//! Pixel coordinates are not this module's business: an [`Image`] is row-major, `data[y * width
//! + x]` with x, y from 0; FITS pixel (1, 1) is `data[0]`.

mod cube;
mod header;
mod mapped;
mod native;
mod raw;
mod table;
#[cfg(test)]
mod tests;

use std::ffi::c_int;
use std::path::Path;

use nearby_engine::task::TaskError;

pub use cube::{read_cube, write_cube, Cube};
pub use header::{is_commentary, Card, Header, Loc, Origin, Section, Value};
pub use mapped::{ImageFile, Pixels, StoredImage};
pub use native::{ImageSlot, MefWriter, RowWriter};
pub use table::{read_table, read_table_bytes, write_tables, Column, ColumnData, HduRef, Table};

use raw::{Handle, Status};

/// Everything that can go wrong reading or writing FITS.
#[derive(Debug, thiserror::Error)]
pub enum FitsError {
    #[error("{file}: cannot open: {reason}")]
    Open { file: String, reason: String },
    #[error("{at}: the file is truncated or unreadable: {reason}")]
    Truncated { at: Loc, reason: String },
    #[error("{at}: not a valid FITS header: {reason}")]
    Corrupt { at: Loc, reason: String },
    #[error("{file}: there is no HDU {hdu}: the file has {count} (numbered from 0, the primary)")]
    NoSuchHdu {
        file: String,
        hdu: usize,
        count: usize,
    },
    #[error("{at}: NAXIS = {naxis}: expected a 2-D image{hint}")]
    WrongNaxis {
        at: Loc,
        naxis: String,
        hint: &'static str,
    },
    #[error("{at}: BITPIX = {bitpix} is not supported: expected 8, 16, 32, -32 or -64")]
    UnsupportedBitpix { at: Loc, bitpix: String },
    #[error("{at}: not an image HDU (it is {found})")]
    NotImage { at: Loc, found: &'static str },
    #[error("{at}: not a binary table HDU (it is {found})")]
    NotTable { at: Loc, found: &'static str },
    #[error("{at}: key {key} is missing")]
    MissingKey { at: Loc, key: String },
    #[error("{at}: key {key} = {found}: expected {expected}")]
    BadKey {
        at: Loc,
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("{at}: {what}")]
    BadData { at: Loc, what: String },
    #[error("{at}: no column {column}; the columns are: {have}")]
    NoColumn {
        at: Loc,
        column: String,
        have: String,
    },
    #[error("{file}: cannot write: {reason}")]
    Write { file: String, reason: String },
}

impl FitsError {
    /// Whether the input itself is at fault (retrying will not help): quarantine it.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, FitsError::Open { .. } | FitsError::Write { .. })
    }
}

impl From<FitsError> for TaskError {
    fn from(e: FitsError) -> TaskError {
        if e.is_bad_input() {
            TaskError::BadInput(e.to_string())
        } else {
            TaskError::Failed(e.to_string())
        }
    }
}

/// An image: row-major f32 pixels (BSCALE/BZERO applied) and its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
    pub header: Header,
}

impl Image {
    /// An image with an empty header.
    ///
    /// # Panics
    /// If `data.len() != width * height` (a programming error, not bad input).
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Image {
        assert_eq!(
            data.len(),
            width * height,
            "image data must hold width * height pixels"
        );
        Image {
            width,
            height,
            data,
            header: Header::new(),
        }
    }

    pub fn filled(width: usize, height: usize, value: f32) -> Image {
        Image::new(width, height, vec![value; width * height])
    }

    /// The pixel at column x, row y (from 0).
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    pub fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// Rejects frames with no usable pixels: all NaN/Inf, or every finite pixel zero (a
    /// readout that failed). Tasks call it on every frame they are handed.
    pub fn check_usable(&self) -> Result<(), FitsError> {
        let (finite, nonzero) = usable_counts(&self.data);
        check_usable(&self.header, self.data.len(), finite, nonzero)
    }
}

impl StoredImage<'_> {
    /// [`Image::check_usable`], decoding the pixels a block at a time and stopping at the first
    /// finite non-zero pixel: a usable frame (nearly every one) costs a block, not a pass over
    /// its pixels; only a frame about to be rejected is counted to the end for the message.
    pub fn check_usable(&self) -> Result<(), FitsError> {
        const BLOCK: usize = 1 << 12;
        let n = self.pixels.len();
        let mut buf = vec![0.0f32; BLOCK.min(n)];
        let (mut finite, mut nonzero) = (0, 0);
        for start in (0..n).step_by(BLOCK) {
            let buf = &mut buf[..BLOCK.min(n - start)];
            self.pixels.read(start, buf);
            let (f, nz) = usable_counts(buf);
            if nz > 0 {
                return Ok(());
            }
            (finite, nonzero) = (finite + f, nonzero + nz);
        }
        check_usable(self.header, n, finite, nonzero)
    }
}

/// The finite pixels and the finite non-zero pixels of `data`.
fn usable_counts(data: &[f32]) -> (usize, usize) {
    data.iter().fold((0, 0), |(f, nz), v| {
        let finite = v.is_finite();
        (f + finite as usize, nz + (finite && *v != 0.0) as usize)
    })
}

/// The verdict of [`Image::check_usable`] from the counts of `n` pixels.
fn check_usable(header: &Header, n: usize, finite: usize, nonzero: usize) -> Result<(), FitsError> {
    let at = header.loc();
    if n == 0 {
        return Err(FitsError::BadData {
            at,
            what: "the image has no pixels".into(),
        });
    }
    if finite == 0 {
        return Err(FitsError::BadData {
            at,
            what: format!("no usable pixels: all {n} are NaN or infinite"),
        });
    }
    if nonzero == 0 {
        return Err(FitsError::BadData {
            at,
            what: format!(
                "no usable pixels: all {finite} finite pixels are zero (a failed readout?)"
            ),
        });
    }
    Ok(())
}

/// How pixels are stored when writing. Integers are rounded and clamped to the type's range
/// (NaN becomes 0); `U16` is BITPIX 16 with BZERO 32768, as raw CCD frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixel {
    U8,
    I16,
    U16,
    I32,
    F32,
    F64,
}

impl Pixel {
    /// The BITPIX the file will show.
    pub fn bitpix(self) -> i64 {
        match self {
            Pixel::U8 => 8,
            Pixel::I16 | Pixel::U16 => 16,
            Pixel::I32 => 32,
            Pixel::F32 => -32,
            Pixel::F64 => -64,
        }
    }

    /// cfitsio's image type code (USHORT_IMG = 20 writes BITPIX 16 + BZERO 32768).
    fn img_type(self) -> c_int {
        match self {
            Pixel::U16 => 20,
            other => other.bitpix() as c_int,
        }
    }
}

/// Keys that describe the data layout: cfitsio writes them from the data, never from a header.
fn is_structural(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO",
        "BLANK", "TFIELDS", "THEAP", "END", "CHECKSUM", "DATASUM", "ZIMAGE", "ZCMPTYPE", "ZBITPIX",
        "ZNAXIS", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZTENSION", "ZEXTEND", "ZBLOCKED", "ZPCOUNT",
        "ZGCOUNT", "ZHECKSUM", "ZDATASUM", "ZBLANK", "ZSCALE", "ZZERO",
    ];
    const INDEXED: &[&str] = &[
        "NAXIS", "TTYPE", "TFORM", "TUNIT", "TNULL", "TSCAL", "TZERO", "TDIM", "TDISP", "TBCOL",
        "ZNAXIS", "ZTILE", "ZNAME", "ZVAL",
    ];
    let k = key.to_ascii_uppercase();
    EXACT.contains(&k.as_str())
        || INDEXED.iter().any(|p| {
            k.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn loc(path: &Path, hdu: usize, extname: Option<String>) -> Loc {
    Loc(Some(Origin {
        file: path.to_path_buf(),
        hdu,
        extname,
    }))
}

/// Reads the value of BITPIX from the first header of a file cfitsio refused to open.
fn sniff_bitpix(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return "unreadable".into();
    };
    bytes
        .chunks(80)
        .take(36)
        .map(String::from_utf8_lossy)
        .find(|c| c.starts_with("BITPIX  ="))
        .map(|c| c[9..].split('/').next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|| "unreadable".into())
}

/// Maps a cfitsio failure while reading HDU `hdu` to the error that says what is wrong.
fn read_error(path: &Path, hdu: usize, s: Status) -> FitsError {
    let at = loc(path, hdu, None);
    match s.code {
        raw::END_OF_FILE | raw::READ_ERROR | 116 => FitsError::Truncated {
            at,
            reason: s.to_string(),
        },
        raw::BAD_BITPIX => FitsError::UnsupportedBitpix {
            at,
            bitpix: if hdu == 0 {
                sniff_bitpix(path)
            } else {
                "an illegal value".into()
            },
        },
        raw::BAD_NAXIS | raw::BAD_NAXES => FitsError::WrongNaxis {
            at,
            naxis: "an illegal value".into(),
            hint: "",
        },
        _ => FitsError::Corrupt {
            at,
            reason: s.to_string(),
        },
    }
}

fn open(path: &Path) -> Result<Handle, FitsError> {
    match std::fs::metadata(path) {
        Err(e) => {
            return Err(FitsError::Open {
                file: display(path),
                reason: e.to_string(),
            })
        }
        Ok(m) if m.len() == 0 => {
            return Err(FitsError::Truncated {
                at: loc(path, 0, None),
                reason: "the file is empty".into(),
            })
        }
        Ok(m) if m.len() < 2880 => {
            return Err(FitsError::Truncated {
                at: loc(path, 0, None),
                reason: format!(
                    "{} bytes: a FITS file holds at least one 2880-byte header block",
                    m.len()
                ),
            })
        }
        Ok(_) => {}
    }
    Handle::open(path).map_err(|s| read_error(path, 0, s))
}

/// Moves to `hdu` and reads its header (with its origin set).
fn header_at(h: &mut Handle, hdu: usize) -> Result<(c_int, Header), FitsError> {
    let path = h.path.clone();
    let count = h.num_hdus().map_err(|s| read_error(&path, hdu, s))?;
    let kind = match h.move_to(hdu) {
        Ok(k) => k,
        // cfitsio counts HDUs as it reaches them: past the last one is "end of file".
        Err(s) if s.code == raw::END_OF_FILE && hdu >= count && file_ends_cleanly(&path) => {
            return Err(FitsError::NoSuchHdu {
                file: display(&path),
                hdu,
                count,
            })
        }
        Err(s) => return Err(read_error(&path, hdu, s)),
    };
    check_complete(h, hdu)?;
    let cards = h.header_cards().map_err(|s| read_error(&path, hdu, s))?;
    let header = Header::from_cards(&cards);
    let extname = header.get("EXTNAME").and_then(|v| match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    });
    Ok((
        kind,
        header.with_origin(Origin {
            file: path,
            hdu,
            extname,
        }),
    ))
}

/// Checks that the current HDU's data unit lies wholly inside the file.
fn check_complete(h: &mut Handle, hdu: usize) -> Result<(), FitsError> {
    let path = h.path.clone();
    let end = h.data_end().map_err(|s| read_error(&path, hdu, s))?;
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if end > len {
        return Err(FitsError::Truncated {
            at: loc(&path, hdu, None),
            reason: format!("the file has {len} bytes but this HDU's data ends at byte {end}"),
        });
    }
    Ok(())
}

/// Whether a file's size is a whole number of 2880-byte FITS blocks (else it was cut short).
fn file_ends_cleanly(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() % 2880 == 0)
}

fn kind_name(kind: c_int) -> &'static str {
    match kind {
        raw::IMAGE_HDU => "an image",
        raw::ASCII_TBL => "an ASCII table",
        raw::BINARY_TBL => "a binary table",
        _ => "of an unknown type",
    }
}

/// The number of HDUs in a file.
pub fn hdu_count(path: &Path) -> Result<usize, FitsError> {
    let mut h = open(path)?;
    // Walk to the end so a truncated last HDU is noticed here, not later.
    let n = h.num_hdus().map_err(|s| read_error(path, 0, s))?;
    let mut i = n;
    for k in 0..n {
        h.move_to(k).map_err(|s| read_error(path, k, s))?;
        check_complete(&mut h, k)?;
    }
    loop {
        match h.move_to(i) {
            Ok(_) => {
                check_complete(&mut h, i)?;
                i += 1
            }
            Err(s) if s.code == raw::END_OF_FILE && file_ends_cleanly(path) => return Ok(i),
            Err(s) => return Err(read_error(path, i, s)),
        }
    }
}

/// The header of one HDU (0 = primary).
pub fn read_header(path: &Path, hdu: usize) -> Result<Header, FitsError> {
    let mut h = open(path)?;
    header_at(&mut h, hdu).map(|(_, hd)| hd)
}

/// Every HDU's header, in order.
pub fn read_headers(path: &Path) -> Result<Vec<Header>, FitsError> {
    let n = hdu_count(path)?;
    let mut h = open(path)?;
    (0..n)
        .map(|i| header_at(&mut h, i).map(|(_, hd)| hd))
        .collect()
}

/// Whether a header describes an image with no pixels (the empty primary HDU of a MEF file).
fn is_empty_image(header: &Header) -> bool {
    match header.i64("NAXIS") {
        Ok(0) => true,
        Ok(n) => (1..=n).any(|i| header.i64(&format!("NAXIS{i}")).is_ok_and(|v| v == 0)),
        Err(_) => false,
    }
}

/// Checks that a header and its axis lengths (NAXIS1, NAXIS2, ...) describe a 2-D image of a
/// supported BITPIX; returns (width, height).
fn image_shape(header: &Header, dims: &[usize]) -> Result<(usize, usize), FitsError> {
    let at = header.loc();
    let bitpix = header.i64("BITPIX")?;
    if ![8, 16, 32, -32, -64].contains(&bitpix) {
        return Err(FitsError::UnsupportedBitpix {
            at,
            bitpix: bitpix.to_string(),
        });
    }
    let naxis = header.i64("NAXIS")?;
    let extra_axes_are_one = dims.iter().skip(2).all(|&d| d == 1);
    if naxis < 2 || dims.len() < 2 || !extra_axes_are_one || dims[0] == 0 || dims[1] == 0 {
        let hint = if naxis == 0 || dims.contains(&0) {
            " (this HDU holds no pixels: in a multi-extension file the images are in the \
             extensions)"
        } else {
            ""
        };
        return Err(FitsError::WrongNaxis {
            at,
            naxis: format!(
                "{naxis} ({})",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
            hint,
        });
    }
    Ok((dims[0], dims[1]))
}

fn image_here(h: &mut Handle, hdu: usize) -> Result<Image, FitsError> {
    let (kind, header) = header_at(h, hdu)?;
    if kind != raw::IMAGE_HDU {
        return Err(FitsError::NotImage {
            at: header.loc(),
            found: kind_name(kind),
        });
    }
    let dims = h.image_shape().map_err(|s| read_error(&h.path, hdu, s))?;
    let (width, height) = image_shape(&header, &dims)?;
    let data = h
        .read_pixels_f32(width * height)
        .map_err(|s| read_error(&h.path, hdu, s))?;
    Ok(Image {
        width,
        height,
        data,
        header,
    })
}

/// Reads the image in HDU `hdu` (0 = primary) as f32, BSCALE/BZERO applied. Tile-compressed
/// HDUs are decompressed; their header is that of the image they hold.
pub fn read_image(path: &Path, hdu: usize) -> Result<Image, FitsError> {
    match native::scan(path) {
        Some(hdus) => native::read_image(path, &hdus, hdu),
        None => read_image_cfitsio(path, hdu),
    }
}

/// [`read_image`] through cfitsio: tile-compressed, damaged or otherwise unusual files.
fn read_image_cfitsio(path: &Path, hdu: usize) -> Result<Image, FitsError> {
    let mut h = open(path)?;
    image_here(&mut h, hdu)
}

/// The first HDU that holds pixels: the primary of a plain frame, HDU 1 of an `.fz` file.
pub fn read_first_image(path: &Path) -> Result<Image, FitsError> {
    if let Some(hdus) = native::scan(path) {
        return native_images(path, &hdus, true).map(|mut v| v.remove(0));
    }
    let n = hdu_count(path)?;
    let mut h = open(path)?;
    for i in 0..n {
        let (kind, header) = header_at(&mut h, i)?;
        if kind == raw::IMAGE_HDU && !is_empty_image(&header) {
            return image_here(&mut h, i);
        }
    }
    Err(FitsError::BadData {
        at: loc(path, 0, None),
        what: format!("none of the {n} HDUs holds an image"),
    })
}

/// Every image HDU that holds pixels, in order: the CCDs of a multi-extension frame. Empty
/// HDUs (a MEF's primary) and tables are skipped; an image HDU that cannot be read is an error.
pub fn read_all_images(path: &Path) -> Result<Vec<Image>, FitsError> {
    match native::scan(path) {
        Some(hdus) => native_images(path, &hdus, false),
        None => read_all_images_cfitsio(path),
    }
}

/// [`read_all_images`] through cfitsio: tile-compressed, damaged or otherwise unusual files.
fn read_all_images_cfitsio(path: &Path) -> Result<Vec<Image>, FitsError> {
    let n = hdu_count(path)?;
    let mut h = open(path)?;
    let mut out = Vec::new();
    for i in 0..n {
        let (kind, header) = header_at(&mut h, i)?;
        if kind == raw::IMAGE_HDU && !is_empty_image(&header) {
            out.push(image_here(&mut h, i)?);
        }
    }
    if out.is_empty() {
        return Err(FitsError::BadData {
            at: loc(path, 0, None),
            what: format!("none of the {n} HDUs holds an image"),
        });
    }
    Ok(out)
}

/// The images of a plain file that hold pixels (only the first with `first_only`), as
/// [`read_all_images`] gives them.
fn native_images(
    path: &Path,
    hdus: &[native::Hdu],
    first_only: bool,
) -> Result<Vec<Image>, FitsError> {
    let mut file = std::fs::File::open(path).map_err(|e| FitsError::Open {
        file: display(path),
        reason: e.to_string(),
    })?;
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    for (i, hdu) in hdus.iter().enumerate() {
        if !is_empty_image(&hdu.header(path, i)) {
            out.push(native::image_in(&mut file, &mut scratch, path, hdus, i)?);
            if first_only {
                break;
            }
        }
    }
    if out.is_empty() {
        return Err(FitsError::BadData {
            at: loc(path, 0, None),
            what: format!("none of the {} HDUs holds an image", hdus.len()),
        });
    }
    Ok(out)
}

/// Whether a path asks for tile compression (`.fz`, as fpack names files).
pub fn is_compressed_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("fz"))
}

fn write_error(path: &Path, what: &str, s: Status) -> FitsError {
    FitsError::Write {
        file: display(path),
        reason: format!("{what}: {s}"),
    }
}

/// Writes the non-structural cards of `header` into the current HDU.
fn write_cards(h: &mut Handle, header: &Header) -> Result<(), FitsError> {
    let path = h.path.clone();
    for c in header.cards() {
        if is_structural(&c.key) {
            continue;
        }
        let what = format!("key {}", c.key);
        let r = match (&c.key[..], &c.value) {
            ("COMMENT", _) => h.write_comment(&c.comment),
            ("HISTORY", _) => h.write_history(&c.comment),
            ("", _) => h.write_record(&format!("        {}", c.comment)),
            (k, Value::Str(s)) => h.write_key_str(k, s, &c.comment),
            (k, v) if k.len() > 8 => match v {
                Value::Int(i) => h.write_key_typed(raw::TLONGLONG, k, *i, &c.comment),
                Value::Float(f) => h.write_key_typed(raw::TDOUBLE, k, *f, &c.comment),
                Value::Bool(b) => h.write_key_typed(raw::TLOGICAL, k, *b as c_int, &c.comment),
                _ => h.write_key_str(k, "", &c.comment),
            },
            (k, Value::Float(f)) if !f.is_finite() => {
                return Err(FitsError::Write {
                    file: display(&path),
                    reason: format!("key {k} = {f}: FITS headers cannot hold NaN or infinity"),
                })
            }
            (k, v) => {
                let value = header::format_value(v).unwrap_or_default();
                let mut card = format!("{k:<8}= {value:>20}");
                if !c.comment.is_empty() {
                    card.push_str(" / ");
                    card.push_str(&c.comment);
                }
                card.truncate(80);
                h.write_record(&card)
            }
        };
        r.map_err(|s| write_error(&path, &what, s))?;
    }
    Ok(())
}

fn write_pixels(h: &mut Handle, data: &[f32], pixel: Pixel) -> Result<(), Status> {
    fn conv<T>(data: &[f32], lo: f32, hi: f32, f: impl Fn(f32) -> T) -> Vec<T> {
        data.iter()
            .map(|&v| {
                f(if v.is_nan() {
                    0.0
                } else {
                    v.round().clamp(lo, hi)
                })
            })
            .collect()
    }
    match pixel {
        Pixel::U8 => h.write_pixels(raw::TBYTE, &conv(data, 0.0, 255.0, |v| v as u8)),
        Pixel::I16 => h.write_pixels(raw::TSHORT, &conv(data, -32768.0, 32767.0, |v| v as i16)),
        Pixel::U16 => h.write_pixels(raw::TUSHORT, &conv(data, 0.0, 65535.0, |v| v as u16)),
        Pixel::I32 => h.write_pixels(
            raw::TINT,
            &data
                .iter()
                .map(|&v| {
                    if v.is_nan() {
                        0
                    } else {
                        (v as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
                    }
                })
                .collect::<Vec<i32>>(),
        ),
        Pixel::F32 => h.write_pixels(raw::TFLOAT, data),
        Pixel::F64 => h.write_pixels(
            raw::TDOUBLE,
            &data.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
        ),
    }
}

fn append_image(h: &mut Handle, image: &Image, pixel: Pixel) -> Result<(), FitsError> {
    let path = h.path.clone();
    if image.data.len() != image.width * image.height {
        return Err(FitsError::Write {
            file: display(&path),
            reason: format!(
                "image data holds {} pixels, not {} x {}",
                image.data.len(),
                image.width,
                image.height
            ),
        });
    }
    h.create_image(pixel.img_type(), &[image.width, image.height])
        .map_err(|s| write_error(&path, "create image HDU", s))?;
    write_cards(h, &image.header)?;
    write_pixels(h, &image.data, pixel).map_err(|s| write_error(&path, "write pixels", s))
}

/// Writes one image. A path ending in `.fz` is written tile-compressed (an empty primary HDU and
/// the image in HDU 1, as fpack does; integer pixels are compressed losslessly, float pixels
/// with cfitsio's default quantization, as fpack does); any other path gets the image in the
/// primary HDU. An existing file is replaced.
pub fn write_image(path: &Path, image: &Image, pixel: Pixel) -> Result<(), FitsError> {
    if is_compressed_name(path) {
        return write_mef_cfitsio(path, &Header::new(), std::slice::from_ref(image), pixel);
    }
    native::write(path, &Header::new(), Some(image), &[], pixel)
}

/// [`write_image`] through cfitsio, to check the native writer against.
#[cfg(test)]
fn write_image_cfitsio(path: &Path, image: &Image, pixel: Pixel) -> Result<(), FitsError> {
    let mut h = Handle::create(path, false).map_err(|s| write_error(path, "create", s))?;
    append_image(&mut h, image, pixel)?;
    h.close().map_err(|s| write_error(path, "close", s))
}

/// Writes a multi-extension file: a primary HDU with no pixels and `primary`'s cards (the
/// night-level keys), then one image HDU per image with its own header (give each an EXTNAME).
/// A path ending in `.fz` tile-compresses the image HDUs. An existing file is replaced.
pub fn write_mef(
    path: &Path,
    primary: &Header,
    images: &[Image],
    pixel: Pixel,
) -> Result<(), FitsError> {
    if is_compressed_name(path) {
        return write_mef_cfitsio(path, primary, images, pixel);
    }
    native::write(path, primary, None, images, pixel)
}

/// [`write_mef`] through cfitsio: tile-compressed when the path ends in `.fz`.
fn write_mef_cfitsio(
    path: &Path,
    primary: &Header,
    images: &[Image],
    pixel: Pixel,
) -> Result<(), FitsError> {
    let mut h = Handle::create(path, is_compressed_name(path))
        .map_err(|s| write_error(path, "create", s))?;
    h.create_image(8, &[])
        .map_err(|s| write_error(path, "create primary HDU", s))?;
    write_cards(&mut h, primary)?;
    for image in images {
        append_image(&mut h, image, pixel)?;
    }
    h.close().map_err(|s| write_error(path, "close", s))
}

/// Writes a file of headers without pixels: a primary HDU with `primary`'s cards, then one
/// image extension with NAXIS = 0 per header (as a solved WCS per CCD is written: SCAMP's
/// `.head` files as FITS). An existing file is replaced.
pub fn write_headers(path: &Path, primary: &Header, headers: &[Header]) -> Result<(), FitsError> {
    let mut h = Handle::create(path, false).map_err(|s| write_error(path, "create", s))?;
    h.create_image(8, &[])
        .map_err(|s| write_error(path, "create primary HDU", s))?;
    write_cards(&mut h, primary)?;
    for header in headers {
        h.create_image(8, &[])
            .map_err(|s| write_error(path, "create header HDU", s))?;
        write_cards(&mut h, header)?;
    }
    h.close().map_err(|s| write_error(path, "close", s))
}
