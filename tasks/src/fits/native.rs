//! Uncompressed FITS images read and written in Rust, without cfitsio's buffered copies: the
//! calibration of a full mosaic frame is bound by this I/O (a raw INT WFC frame is 70 MB).
//!
//! A file is read here only when it is plain: a primary HDU (`SIMPLE = T`) and `IMAGE`
//! extensions, every header ending in END within the file, every data unit wholly inside it,
//! the file a whole number of 2880-byte blocks. Anything else (tables, tile-compressed `.fz`
//! images, random groups, a truncated or damaged file) is left to cfitsio, which also words the
//! errors for damaged files; so both paths give the same images and the same messages.
//!
//! Pixels are decoded from big-endian with BSCALE/BZERO applied as cfitsio does when reading
//! into floats (in double precision, then rounded to f32; BLANK is not checked, as cfitsio
//! does not when no null value is asked for). Writing puts each HDU out as one header and one
//! data write, padded to whole blocks; the cards other than the layout (SIMPLE, BITPIX,
//! NAXISn, ...) are formatted by cfitsio in memory, so headers are byte for byte those the
//! cfitsio writer makes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use super::raw::Handle;
use super::{display, loc, write_cards, write_error, FitsError, Header, Image, Origin, Pixel};
use super::{image_shape, Value};

const BLOCK: usize = 2880;
const CARD: usize = 80;
/// Pixels converted per parallel work item.
const CHUNK: usize = 1 << 16;

/// One HDU of a plain file: its cards (up to END, trailing blank cards dropped, as cfitsio
/// does) and where its data lie.
pub(super) struct Hdu {
    pub cards: Vec<String>,
    pub bitpix: i64,
    /// NAXIS1, NAXIS2, ... as the header gives them.
    pub dims: Vec<usize>,
    pub data_start: u64,
}

impl Hdu {
    /// The header, with its origin (file, HDU number, EXTNAME) set.
    pub fn header(&self, path: &Path, index: usize) -> Header {
        let header = Header::from_cards(&self.cards);
        let extname = match header.get("EXTNAME") {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        header.with_origin(Origin {
            file: path.to_path_buf(),
            hdu: index,
            extname,
        })
    }
}

/// The value field of a card (`KEY     = value / comment`), for the layout keys this reader
/// needs (integers and logicals; none of them is a string but XTENSION).
fn value_of<'a>(cards: &'a [String], key: &str) -> Option<&'a str> {
    cards.iter().find_map(|c| {
        let (k, rest) = (c.get(..8)?, c.get(8..)?);
        (k.trim_end() == key)
            .then(|| rest.strip_prefix("= "))
            .flatten()
            .map(|v| v.split('/').next().unwrap_or("").trim())
    })
}

fn int_of(cards: &[String], key: &str) -> Option<i64> {
    value_of(cards, key)?.parse().ok()
}

/// Lists the HDUs of a plain file, or `None` when the file is anything else (see the module
/// documentation) or cannot be read: then cfitsio reads it.
pub(super) fn scan(path: &Path) -> Option<Vec<Hdu>> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len == 0 || len % BLOCK as u64 != 0 {
        return None;
    }
    let mut hdus = Vec::new();
    let mut pos = 0u64;
    let mut block = vec![0u8; BLOCK];
    while pos < len {
        file.seek(SeekFrom::Start(pos)).ok()?;
        let mut cards = Vec::new();
        let mut ended = false;
        while !ended {
            if pos >= len {
                return None;
            }
            file.read_exact(&mut block).ok()?;
            pos += BLOCK as u64;
            for raw in block.chunks(CARD) {
                if !raw.iter().all(|b| (32..127).contains(b)) {
                    return None;
                }
                let card = String::from_utf8_lossy(raw).into_owned();
                if card.starts_with("END ") {
                    ended = true;
                    break;
                }
                cards.push(card);
            }
        }
        while cards.last().is_some_and(|c| c.trim().is_empty()) {
            cards.pop();
        }
        let first = cards.first()?;
        let is_image = if hdus.is_empty() {
            first.starts_with("SIMPLE  =") && value_of(&cards, "SIMPLE") == Some("T")
        } else {
            first.starts_with("XTENSION=")
                && value_of(&cards, "XTENSION")?.trim_matches(['\'', ' ']) == "IMAGE"
        };
        let bitpix = int_of(&cards, "BITPIX")?;
        let naxis = int_of(&cards, "NAXIS")?;
        if !is_image
            || ![8, 16, 32, -32, -64].contains(&bitpix)
            || !(0..=999).contains(&naxis)
            || value_of(&cards, "GROUPS") == Some("T")
            || int_of(&cards, "PCOUNT").unwrap_or(0) != 0
            || int_of(&cards, "GCOUNT").unwrap_or(1) != 1
        {
            return None;
        }
        let dims = (1..=naxis)
            .map(|i| usize::try_from(int_of(&cards, &format!("NAXIS{i}"))?).ok())
            .collect::<Option<Vec<usize>>>()?;
        let pixels = if naxis == 0 {
            0
        } else {
            dims.iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?
        };
        let bytes = pixels.checked_mul(bitpix.unsigned_abs() / 8)?;
        let data_start = pos;
        pos = data_start.checked_add(bytes.div_ceil(BLOCK as u64) * BLOCK as u64)?;
        if pos > len {
            return None;
        }
        hdus.push(Hdu {
            cards,
            bitpix,
            dims,
            data_start,
        });
    }
    Some(hdus)
}

/// Reads the pixels of image HDU `index` (its shape already checked: `width * height` pixels)
/// from an open file, as f32 with BSCALE/BZERO applied. `bytes` is scratch memory, reused from
/// HDU to HDU so that its pages are faulted in once.
fn read_pixels(
    file: &mut File,
    bytes: &mut Vec<u8>,
    path: &Path,
    index: usize,
    hdu: &Hdu,
    header: &Header,
    n: usize,
) -> Result<Vec<f32>, FitsError> {
    let bscale = header.opt_f64("BSCALE")?.unwrap_or(1.0);
    let bzero = header.opt_f64("BZERO")?.unwrap_or(0.0);
    let size = hdu.bitpix.unsigned_abs() as usize / 8;
    bytes.resize(n * size, 0);
    file.seek(SeekFrom::Start(hdu.data_start))
        .and_then(|_| file.read_exact(bytes))
        .map_err(|e| FitsError::Truncated {
            at: loc(path, index, None),
            reason: e.to_string(),
        })?;
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(CHUNK * size))
        .for_each(|(o, b)| decode(b, hdu.bitpix, bscale, bzero, o));
    Ok(out)
}

/// Decodes `out.len()` stored pixels from `bytes` (big-endian, BITPIX bytes each) into f32,
/// BSCALE/BZERO applied in double precision as cfitsio does; the one conversion every reader
/// of plain files uses.
pub(super) fn decode(bytes: &[u8], bitpix: i64, bscale: f64, bzero: f64, out: &mut [f32]) {
    let size = bitpix.unsigned_abs() as usize / 8;
    let it = out.iter_mut().zip(bytes.chunks_exact(size));
    let scale = |v: f64| (v * bscale + bzero) as f32;
    match (bitpix, bscale == 1.0 && bzero == 0.0) {
        (8, true) => it.for_each(|(o, b)| *o = b[0] as f32),
        (8, false) => it.for_each(|(o, b)| *o = scale(b[0] as f64)),
        (16, true) => it.for_each(|(o, b)| *o = i16::from_be_bytes([b[0], b[1]]) as f32),
        (16, false) => it.for_each(|(o, b)| {
            *o = scale(i16::from_be_bytes([b[0], b[1]]) as f64);
        }),
        (32, true) => it.for_each(|(o, b)| *o = be_i32(b) as f32),
        (32, false) => it.for_each(|(o, b)| *o = scale(be_i32(b) as f64)),
        (-32, true) => it.for_each(|(o, b)| *o = f32::from_bits(be_i32(b) as u32)),
        (-32, false) => it.for_each(|(o, b)| {
            *o = scale(f32::from_bits(be_i32(b) as u32) as f64);
        }),
        (_, true) => it.for_each(|(o, b)| *o = be_f64(b) as f32),
        (_, false) => it.for_each(|(o, b)| *o = scale(be_f64(b))),
    }
}

/// Pixel `i` of `bytes` decoded as [`decode`] decodes it, without the loop: for reads of
/// single pixels (the strided samples of a robust level), where `decode`'s setup per call
/// costs more than the pixel. Inlined into a loop, its match on `bitpix` is made once.
#[inline(always)]
pub(super) fn decode_one(bytes: &[u8], i: usize, bitpix: i64, bscale: f64, bzero: f64) -> f32 {
    let unscaled = bscale == 1.0 && bzero == 0.0;
    let scale = |v: f64| (v * bscale + bzero) as f32;
    match bitpix {
        8 => {
            let v = bytes[i];
            if unscaled {
                v as f32
            } else {
                scale(v as f64)
            }
        }
        16 => {
            let v = i16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
            if unscaled {
                v as f32
            } else {
                scale(v as f64)
            }
        }
        32 => {
            let v = be_i32(&bytes[4 * i..4 * i + 4]);
            if unscaled {
                v as f32
            } else {
                scale(v as f64)
            }
        }
        -32 => {
            let v = f32::from_bits(be_i32(&bytes[4 * i..4 * i + 4]) as u32);
            if unscaled {
                v
            } else {
                scale(v as f64)
            }
        }
        _ => {
            let v = be_f64(&bytes[8 * i..8 * i + 8]);
            if unscaled {
                v as f32
            } else {
                scale(v)
            }
        }
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_f64(b: &[u8]) -> f64 {
    f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Reads the image in HDU `index` of a plain file.
pub(super) fn read_image(path: &Path, hdus: &[Hdu], index: usize) -> Result<Image, FitsError> {
    let mut file = File::open(path).map_err(|e| FitsError::Open {
        file: display(path),
        reason: e.to_string(),
    })?;
    image_in(&mut file, &mut Vec::new(), path, hdus, index)
}

/// [`read_image`] from a file already open, with scratch memory for the raw bytes.
pub(super) fn image_in(
    file: &mut File,
    scratch: &mut Vec<u8>,
    path: &Path,
    hdus: &[Hdu],
    index: usize,
) -> Result<Image, FitsError> {
    let Some(hdu) = hdus.get(index) else {
        return Err(FitsError::NoSuchHdu {
            file: display(path),
            hdu: index,
            count: hdus.len(),
        });
    };
    let header = hdu.header(path, index);
    let (width, height) = image_shape(&header, &hdu.dims)?;
    let data = read_pixels(file, scratch, path, index, hdu, &header, width * height)?;
    Ok(Image {
        width,
        height,
        data,
        header,
    })
}

/// A card as cfitsio writes the layout keys: the value right-justified to column 30.
fn layout_card(key: &str, value: &str, comment: &str) -> String {
    let mut c = format!("{key:<8}= {value:>20} / {comment}");
    c.truncate(CARD);
    c
}

/// The layout cards cfitsio writes for an image HDU (`primary` or an IMAGE extension): the
/// keys up to EXTEND or GCOUNT, and the scaling keys of unsigned 16-bit pixels.
fn layout_cards(primary: bool, pixel: Pixel, dims: &[usize]) -> (Vec<String>, Vec<String>) {
    let mut cards = Vec::new();
    if primary {
        cards.push(layout_card(
            "SIMPLE",
            "T",
            "file does conform to FITS standard",
        ));
    } else {
        cards.push(format!("{:<30} / IMAGE extension", "XTENSION= 'IMAGE   '"));
    }
    cards.push(layout_card(
        "BITPIX",
        &pixel.bitpix().to_string(),
        "number of bits per data pixel",
    ));
    cards.push(layout_card(
        "NAXIS",
        &dims.len().to_string(),
        "number of data axes",
    ));
    for (i, d) in dims.iter().enumerate() {
        cards.push(layout_card(
            &format!("NAXIS{}", i + 1),
            &d.to_string(),
            &format!("length of data axis {}", i + 1),
        ));
    }
    if primary {
        cards.push(layout_card(
            "EXTEND",
            "T",
            "FITS dataset may contain extensions",
        ));
    } else {
        cards.push(layout_card("PCOUNT", "0", "required keyword; must = 0"));
        cards.push(layout_card("GCOUNT", "1", "required keyword; must = 1"));
    }
    let mut scaling = Vec::new();
    if pixel == Pixel::U16 {
        scaling.push(layout_card(
            "BZERO",
            "32768",
            "offset data range to that of unsigned short",
        ));
        scaling.push(layout_card("BSCALE", "1", "default scaling factor"));
    }
    (cards, scaling)
}

/// Writes headers of image HDUs: the layout cards written here, the rest formatted by cfitsio
/// into a scratch file in memory (long strings, HIERARCH, COMMENT and HISTORY as it writes
/// them).
struct HeaderWriter {
    scratch: Handle,
}

impl HeaderWriter {
    fn new(path: &Path) -> Result<HeaderWriter, FitsError> {
        let scratch = Handle::create_in_memory(path).map_err(|s| write_error(path, "create", s))?;
        Ok(HeaderWriter { scratch })
    }

    /// The header of one HDU as whole blocks, END included.
    fn bytes(
        &mut self,
        primary: bool,
        pixel: Pixel,
        dims: &[usize],
        header: &Header,
    ) -> Result<Vec<u8>, FitsError> {
        let path = self.scratch.path.clone();
        let h = &mut self.scratch;
        h.create_image(8, &[])
            .map_err(|s| write_error(&path, "create header", s))?;
        // cfitsio lists the cards with END last.
        let cards = |h: &mut Handle| -> Result<Vec<String>, FitsError> {
            let mut c = h
                .header_cards()
                .map_err(|s| write_error(&path, "format header", s))?;
            c.retain(|c| c.trim_end() != "END");
            Ok(c)
        };
        // What cfitsio writes into a new HDU: the layout keys, then (in a primary) COMMENT
        // cards citing the FITS paper; the layout keys are written here for the real image.
        let new_hdu = cards(h)?;
        let citation = new_hdu.iter().filter(|c| c.starts_with("COMMENT "));
        write_cards(h, header)?;
        let cards = cards(h)?;
        let user = &cards[new_hdu.len().min(cards.len())..];
        let (keys, scaling) = layout_cards(primary, pixel, dims);
        let mut out = Vec::with_capacity(BLOCK * (cards.len() / 36 + 2));
        for c in keys
            .iter()
            .chain(citation)
            .chain(&scaling)
            .chain(user)
            .map(String::as_str)
            .chain(["END"])
        {
            out.extend(format!("{c:<80}").bytes().take(CARD));
        }
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, b' ');
        Ok(out)
    }
}

/// The pixels of `data` stored as `pixel` says, big-endian, padded with zeros to whole blocks,
/// into `out` (reused from HDU to HDU).
fn data_bytes<'a>(data: &[f32], pixel: Pixel, out: &'a mut Vec<u8>) -> &'a [u8] {
    let size = pixel.bitpix().unsigned_abs() as usize / 8;
    out.clear();
    out.resize((data.len() * size).div_ceil(BLOCK) * BLOCK, 0);
    out[..data.len() * size]
        .par_chunks_mut(CHUNK * size)
        .zip(data.par_chunks(CHUNK))
        .for_each(|(o, d)| encode(d, pixel, o));
    out
}

/// Stores `data` as `pixel` says, big-endian, into `out` (`data.len()` pixels long). Integers
/// are rounded and clamped to the type's range (NaN becomes 0).
fn encode(data: &[f32], pixel: Pixel, out: &mut [u8]) {
    let size = pixel.bitpix().unsigned_abs() as usize / 8;
    let int = |v: f32, lo: f32, hi: f32| {
        if v.is_nan() {
            0.0
        } else {
            v.round().clamp(lo, hi)
        }
    };
    let it = out.chunks_exact_mut(size).zip(data);
    match pixel {
        Pixel::U8 => it.for_each(|(o, &v)| o[0] = int(v, 0.0, 255.0) as u8),
        Pixel::I16 => it.for_each(|(o, &v)| {
            o.copy_from_slice(&(int(v, -32768.0, 32767.0) as i16).to_be_bytes());
        }),
        Pixel::U16 => it.for_each(|(o, &v)| {
            let stored = (int(v, 0.0, 65535.0) as u16 ^ 0x8000) as i16;
            o.copy_from_slice(&stored.to_be_bytes());
        }),
        Pixel::I32 => it.for_each(|(o, &v)| {
            let i = if v.is_nan() {
                0
            } else {
                (v as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32
            };
            o.copy_from_slice(&i.to_be_bytes());
        }),
        Pixel::F32 => it.for_each(|(o, &v)| o.copy_from_slice(&v.to_be_bytes())),
        Pixel::F64 => it.for_each(|(o, &v)| o.copy_from_slice(&(v as f64).to_be_bytes())),
    }
}

/// Writes a plain (uncompressed) file: the primary HDU, pixels in it when `primary_image` is
/// given, then one IMAGE extension per image. An existing file is replaced.
pub(super) fn write(
    path: &Path,
    primary: &Header,
    primary_image: Option<&Image>,
    images: &[Image],
    pixel: Pixel,
) -> Result<(), FitsError> {
    let werr = |e: std::io::Error| FitsError::Write {
        file: display(path),
        reason: e.to_string(),
    };
    for im in primary_image.into_iter().chain(images) {
        if im.data.len() != im.width * im.height {
            return Err(FitsError::Write {
                file: display(path),
                reason: format!(
                    "image data holds {} pixels, not {} x {}",
                    im.data.len(),
                    im.width,
                    im.height
                ),
            });
        }
    }
    let mut headers = HeaderWriter::new(path)?;
    // Headers first: a card cfitsio refuses fails the write before the file is touched.
    let mut parts = Vec::new();
    match primary_image {
        Some(im) => parts.push(headers.bytes(true, pixel, &[im.width, im.height], &im.header)?),
        None => parts.push(headers.bytes(true, Pixel::U8, &[], primary)?),
    }
    for im in images {
        parts.push(headers.bytes(false, pixel, &[im.width, im.height], &im.header)?);
    }
    if path.exists() {
        std::fs::remove_file(path).map_err(werr)?;
    }
    let mut file = File::create(path).map_err(werr)?;
    let mut buffer = Vec::new();
    let mut parts = parts.into_iter();
    let primary_header = parts.next().unwrap_or_default();
    file.write_all(&primary_header).map_err(werr)?;
    if let Some(im) = primary_image {
        file.write_all(data_bytes(&im.data, pixel, &mut buffer))
            .map_err(werr)?;
    }
    for (im, header) in images.iter().zip(parts) {
        file.write_all(&header).map_err(werr)?;
        file.write_all(data_bytes(&im.data, pixel, &mut buffer))
            .map_err(werr)?;
    }
    Ok(())
}

/// A multi-extension file written one image HDU at a time, its pixel rows handed over in
/// blocks as they are computed (from any thread, each written at its own offset), so that no
/// whole image need be held in memory: a calibrated CCD goes from the computation to the page
/// cache through a buffer of a few rows. The bytes are those [`write`] makes for the same
/// headers and pixels.
pub struct MefWriter {
    path: std::path::PathBuf,
    file: File,
    headers: HeaderWriter,
    /// Where the next HDU starts: the end of the file so far.
    end: u64,
}

/// Where one image HDU of a [`MefWriter`] lies in its file.
#[derive(Debug, Clone)]
pub struct ImageSlot {
    header_at: u64,
    header_len: usize,
    data_at: u64,
    width: usize,
    height: usize,
    pixel: Pixel,
}

impl ImageSlot {
    /// Bytes of one stored row of pixels.
    pub fn row_bytes(&self) -> usize {
        self.width * self.pixel.bitpix().unsigned_abs() as usize / 8
    }
}

impl MefWriter {
    /// Creates `path` (replacing a file there) with a primary HDU holding `primary`'s cards and
    /// no pixels.
    pub fn create(path: &Path, primary: &Header) -> Result<MefWriter, FitsError> {
        let mut headers = HeaderWriter::new(path)?;
        let first = headers.bytes(true, Pixel::U8, &[], primary)?;
        let werr = |e: std::io::Error| FitsError::Write {
            file: display(path),
            reason: e.to_string(),
        };
        if path.exists() {
            std::fs::remove_file(path).map_err(werr)?;
        }
        let mut file = File::create(path).map_err(werr)?;
        file.write_all(&first).map_err(werr)?;
        Ok(MefWriter {
            path: path.to_path_buf(),
            file,
            headers,
            end: first.len() as u64,
        })
    }

    fn error(&self, reason: impl std::fmt::Display) -> FitsError {
        write_error_io(&self.path, reason)
    }

    /// Appends an image HDU of `width` x `height` pixels stored as `pixel`, with `header`'s
    /// cards; its data unit (zeros until [`RowWriter::write`] fills it) is reserved
    /// in the file, padded to whole blocks.
    pub fn add_image(
        &mut self,
        header: &Header,
        width: usize,
        height: usize,
        pixel: Pixel,
    ) -> Result<ImageSlot, FitsError> {
        let bytes = self.headers.bytes(false, pixel, &[width, height], header)?;
        let slot = ImageSlot {
            header_at: self.end,
            header_len: bytes.len(),
            data_at: self.end + bytes.len() as u64,
            width,
            height,
            pixel,
        };
        let data_len = (slot.row_bytes() * height).div_ceil(BLOCK) * BLOCK;
        self.file
            .write_all_at(&bytes, slot.header_at)
            .and_then(|_| self.file.set_len(slot.data_at + data_len as u64))
            .map_err(|e| self.error(e))?;
        self.end = slot.data_at + data_len as u64;
        Ok(slot)
    }

    /// The writer of pixel rows into this file's images, to share among threads (the header
    /// formatting of the file itself is not thread-safe).
    pub fn rows(&self) -> RowWriter<'_> {
        RowWriter {
            file: &self.file,
            path: &self.path,
        }
    }

    /// Replaces the header of an image already added (a key known only once its pixels are
    /// computed, such as a calibrated SATURATE). The new header must take as many blocks as
    /// the first.
    pub fn rewrite_header(&mut self, slot: &ImageSlot, header: &Header) -> Result<(), FitsError> {
        let bytes = self
            .headers
            .bytes(false, slot.pixel, &[slot.width, slot.height], header)?;
        if bytes.len() != slot.header_len {
            return Err(self.error(format!(
                "the rewritten header takes {} bytes, the reserved one {}",
                bytes.len(),
                slot.header_len
            )));
        }
        self.file
            .write_all_at(&bytes, slot.header_at)
            .map_err(|e| self.error(e))
    }
}

/// Writes pixel rows into the images of a [`MefWriter`]'s file, from any thread.
#[derive(Clone, Copy)]
pub struct RowWriter<'a> {
    file: &'a File,
    path: &'a Path,
}

impl RowWriter<'_> {
    /// Writes whole rows of pixels from `first_row` on, stored as `slot`'s pixel type says
    /// (through `scratch`, reused from call to call). Blocks of rows may be written from
    /// several threads at once.
    pub fn write(
        &self,
        slot: &ImageSlot,
        first_row: usize,
        pixels: &[f32],
        scratch: &mut Vec<u8>,
    ) -> Result<(), FitsError> {
        let size = slot.pixel.bitpix().unsigned_abs() as usize / 8;
        scratch.resize(pixels.len() * size, 0);
        encode(pixels, slot.pixel, scratch);
        self.write_stored(slot, first_row, scratch)
    }

    /// Writes whole rows from `first_row` on whose pixels are already stored as `slot`'s
    /// pixel type stores them (big-endian, [`ImageSlot::row_bytes`] a row), as a computation
    /// that encodes its own output hands them over.
    pub fn write_stored(
        &self,
        slot: &ImageSlot,
        first_row: usize,
        bytes: &[u8],
    ) -> Result<(), FitsError> {
        let (row, size) = (
            slot.row_bytes(),
            slot.pixel.bitpix().unsigned_abs() as usize / 8,
        );
        if !bytes.len().is_multiple_of(row) || first_row * row + bytes.len() > row * slot.height {
            return Err(write_error_io(
                self.path,
                format!(
                    "{} pixels from row {first_row} do not fit whole rows of a {}x{} image",
                    bytes.len() / size,
                    slot.width,
                    slot.height
                ),
            ));
        }
        self.file
            .write_all_at(bytes, slot.data_at + (first_row * row) as u64)
            .map_err(|e| write_error_io(self.path, e))
    }
}

fn write_error_io(path: &Path, reason: impl std::fmt::Display) -> FitsError {
    FitsError::Write {
        file: display(path),
        reason: reason.to_string(),
    }
}
