//! The `masters` and `calibrate` task kinds: FITS I/O around the calibration functions.
//!
//! - `masters` reads a directory of bias and flat frames, groups them by IMAGETYP, FILTER and CCD,
//!   overscan-corrects and trims each, and combines them into `master_bias.fits` (one HDU per
//!   CCD) and `master_flat.fits` (one HDU per filter and CCD, with a FILTER key, normalised to a
//!   median of 1).
//! - `calibrate` turns one raw multi-extension frame into `image.fits` (float32, one HDU per CCD,
//!   headers kept with the WCS moved to the trimmed pixels) and `weight.fits` (inverse variance,
//!   0 where masked). It checks every CCD first (keys, sections, masters, bad pixels), then
//!   calibrates each in one pass over blocks of rows, straight from the mapped raw frame and
//!   masters to the output files: no CCD-sized array is made, so a frame costs its memory
//!   traffic and not the first touch of fresh pages. The masters stay mapped for the next frame.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};

use rayon::prelude::*;

use super::{
    master_bias, master_flat, overscan_correct, overscan_levels, parse_section, robust_level,
    robust_level_of_pixels, Ccd, Combine, Detector, OverscanLevels, OverscanOptions, RowScratch,
    RowStats, Section,
};
use crate::fits::{
    read_all_images, read_headers, read_image, write_mef, Header, Image, ImageFile, ImageSlot,
    MefWriter, Pixel, RowWriter, StoredImage,
};

/// The CCD a header describes: CCDNAME, else IMAGEID, else EXTNAME, else the HDU number.
pub fn ccd_key(h: &Header, hdu: usize) -> String {
    for k in ["CCDNAME", "IMAGEID", "EXTNAME"] {
        if let Ok(v) = h.str(k) {
            if !v.trim().is_empty() {
                return v.trim().to_owned();
            }
        }
    }
    format!("HDU{hdu}")
}

/// A key from the CCD header, else from the primary header.
fn key_str(h: &Header, primary: &Header, key: &str) -> Option<String> {
    h.str(key)
        .ok()
        .or_else(|| primary.str(key).ok())
        .map(|s| s.trim().to_owned())
}

fn bad_input(h: &Header, what: impl std::fmt::Display) -> TaskError {
    TaskError::BadInput(format!("{}: {what}", h.loc()))
}

/// The overscan and data sections of one CCD: BIASSEC, and TRIMSEC (else DATASEC).
fn sections(h: &Header) -> Result<(Section, Section), TaskError> {
    let sec = |key: &str| -> Result<Section, TaskError> {
        let text = h.str(key)?;
        parse_section(&text).map_err(|e| bad_input(h, format!("key {key}: {e}")))
    };
    let trimsec = if h.contains("TRIMSEC") {
        sec("TRIMSEC")?
    } else {
        sec("DATASEC")?
    };
    Ok((sec("BIASSEC")?, trimsec))
}

/// Overscan-corrects and trims one CCD. Returns the trimmed pixels and their size.
fn correct(img: &Image) -> Result<(Vec<f32>, usize, usize), TaskError> {
    let (biassec, trimsec) = sections(&img.header)?;
    overscan_correct(
        &img.data,
        img.width,
        img.height,
        biassec,
        trimsec,
        OverscanOptions::default(),
    )
    .map_err(|e| bad_input(&img.header, format!("BIASSEC/TRIMSEC: {e}")))
}

fn combine_method(inv: &Invocation) -> Result<Combine, TaskError> {
    match inv.str("method").unwrap_or("median") {
        "median" => Ok(Combine::Median),
        "sigma_clip" => Ok(Combine::SigmaClippedMean {
            sigma: inv.float("clip_sigma").unwrap_or(3.0) as f32,
        }),
        m => Err(TaskError::Failed(format!(
            "method `{m}`: expected median or sigma_clip"
        ))),
    }
}

/// The files an input names: a directory gives its `*.fits` and `*.fits.fz` files, sorted.
pub(crate) fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let n = f.to_string_lossy().to_ascii_lowercase();
                    n.ends_with(".fits") || n.ends_with(".fits.fz") || n.ends_with(".fit")
                })
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

const MASTERS_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "method",
        ty: PType::Str,
        required: false,
        default: Some("\"median\""),
        doc: "How frames are combined pixel by pixel: `median` or `sigma_clip` (mean of the \
              values within `clip_sigma` of the median, iterated).",
    },
    ParamSpec {
        name: "clip_sigma",
        ty: PType::Float,
        required: false,
        default: Some("3.0"),
        doc: "Clipping limit of `sigma_clip`, in standard deviations.",
    },
];

const MASTERS_INPUTS: &[PortSpec] = &[PortSpec {
    name: "calib",
    file: "",
    required: true,
    doc: "A directory of bias and flat frames (IMAGETYP bias/zero and flat), or the files.",
}];

const MASTERS_OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "bias",
        file: "master_bias.fits",
        required: true,
        doc: "Master bias: one float32 HDU per CCD (EXTNAME, CCDNAME, NCOMBINE), trimmed.",
    },
    PortSpec {
        name: "flat",
        file: "master_flat.fits",
        required: true,
        doc: "Master flat: one float32 HDU per filter and CCD (FILTER, NCOMBINE), median 1.",
    },
];

pub struct Masters;

/// Frames of one group, trimmed: pixels, width, height, the first frame's header.
type Stack = (Vec<Vec<f32>>, usize, usize, Header);

/// One CCD of one calibration frame.
struct Member {
    file: PathBuf,
    hdu: usize,
}

impl TaskKind for Masters {
    fn name(&self) -> &'static str {
        "masters"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Combine bias and flat frames into a master bias and a master flat per CCD (and filter)."
    }
    fn params(&self) -> &'static [ParamSpec] {
        MASTERS_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(MASTERS_INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(MASTERS_OUTPUTS)
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(m) = params.get("method").and_then(J::as_str) {
            if !m.contains("${") && m != "median" && m != "sigma_clip" {
                p.push(("method", format!("`{m}`: expected median or sigma_clip")));
            }
        }
        if let Some(s) = params.get("clip_sigma").and_then(J::as_f64) {
            if s <= 0.0 {
                p.push(("clip_sigma", format!("{s}: must be > 0")));
            }
        }
        p
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let method = combine_method(inv)?;
        let files = input_files(inv.inputs.get("calib").map_or(&[][..], |v| &v[..]))?;
        // (ccd) -> bias members; (filter, ccd) -> flat members; ccd -> EXTNAME.
        let mut biases: BTreeMap<String, Vec<Member>> = BTreeMap::new();
        let mut flats: BTreeMap<(String, String), Vec<Member>> = BTreeMap::new();
        let mut extnames: BTreeMap<String, String> = BTreeMap::new();
        for f in &files {
            let headers = match read_headers(f) {
                Ok(h) => h,
                Err(e) => {
                    writeln!(log, "masters: skipping {}: {e}", f.display())?;
                    continue;
                }
            };
            let primary = headers[0].clone();
            for (hdu, h) in headers.iter().enumerate() {
                if h.i64("NAXIS").unwrap_or(0) != 2 {
                    continue;
                }
                let typ = key_str(h, &primary, "IMAGETYP")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let ccd = ccd_key(h, hdu);
                extnames
                    .entry(ccd.clone())
                    .or_insert_with(|| h.str("EXTNAME").unwrap_or_else(|_| ccd.clone()));
                let m = Member {
                    file: f.clone(),
                    hdu,
                };
                if typ == "bias" || typ == "zero" {
                    biases.entry(ccd).or_default().push(m);
                } else if typ.contains("flat") {
                    let filter = key_str(h, &primary, "FILTER").unwrap_or_default();
                    flats.entry((filter, ccd)).or_default().push(m);
                } else if hdu <= 1 {
                    writeln!(log, "masters: ignoring {} (IMAGETYP `{typ}`)", f.display())?;
                }
            }
        }
        if biases.is_empty() && flats.is_empty() {
            return Err(TaskError::BadInput(format!(
                "no bias or flat frames among the {} files given",
                files.len()
            )));
        }
        let load = |ms: &[Member], log: &mut dyn Write| -> Result<Stack, TaskError> {
            let mut frames = Vec::new();
            let mut size = None;
            let mut first = None;
            for m in ms {
                if inv.cancel.load(Ordering::Relaxed) {
                    return Err(TaskError::Cancelled);
                }
                let r = read_image(&m.file, m.hdu)
                    .map_err(TaskError::from)
                    .and_then(|img| {
                        img.check_usable()?;
                        let (d, w, h) = correct(&img)?;
                        Ok((d, w, h, img.header))
                    });
                match r {
                    Ok((d, w, h, hd)) => {
                        if *size.get_or_insert((w, h)) != (w, h) {
                            writeln!(
                                log,
                                "masters: skipping {}: {w}x{h} differs from the first frame",
                                hd.loc()
                            )?;
                            continue;
                        }
                        first.get_or_insert(hd);
                        frames.push(d);
                    }
                    Err(e) => writeln!(
                        log,
                        "masters: skipping {}, HDU {}: {e}",
                        m.file.display(),
                        m.hdu
                    )?,
                }
            }
            let (w, h) = size.unwrap_or((0, 0));
            match first {
                Some(hd) if !frames.is_empty() => Ok((frames, w, h, hd)),
                _ => Err(TaskError::BadInput(format!(
                    "no usable frame among {} ({})",
                    ms.len(),
                    ms.first()
                        .map(|m| m.file.display().to_string())
                        .unwrap_or_default()
                ))),
            }
        };
        let out_header = |src: &Header, typ: &str, n: usize| {
            let mut h = Header::new();
            for k in [
                "EXTNAME", "CCDNAME", "IMAGEID", "FILTER", "GAIN", "RDNOISE", "SATURATE",
            ] {
                if let Some(c) = src.card(k) {
                    h.set(k, c.value.clone(), &c.comment);
                }
            }
            h.set("IMAGETYP", typ, "master calibration frame")
                .set("NCOMBINE", n as i64, "frames combined")
                .set("BUNIT", "ADU", "");
            h
        };
        let mut bias_images = Vec::new();
        let mut bias_data: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (ccd, ms) in &biases {
            let (frames, w, h, hd) = load(ms, log)?;
            let refs: Vec<&[f32]> = frames.iter().map(Vec::as_slice).collect();
            let (data, _) = master_bias(&refs, method)
                .map_err(|e| TaskError::BadInput(format!("master bias of CCD {ccd}: {e}")))?;
            writeln!(
                log,
                "masters: bias {ccd}: {} frames, {w}x{h}, level {:.2} ADU",
                frames.len(),
                robust_level(&data, None)
            )?;
            let mut img = Image::new(w, h, data.clone());
            img.header = out_header(&hd, "bias", frames.len());
            bias_images.push(img);
            bias_data.insert(ccd.clone(), data);
        }
        let filters: Vec<&String> = {
            let mut f: Vec<&String> = flats.keys().map(|(f, _)| f).collect();
            f.dedup();
            f
        };
        if filters.len() > 1 {
            writeln!(log, "masters: flats in {} filters ({:?}): one HDU per filter and CCD, told apart by FILTER", filters.len(), filters)?;
        }
        let mut flat_images = Vec::new();
        for ((filter, ccd), ms) in &flats {
            let (frames, w, h, hd) = load(ms, log)?;
            let bias = bias_data.get(ccd).filter(|b| b.len() == w * h);
            if bias.is_none() {
                writeln!(log, "masters: no master bias of the flat's size for CCD {ccd}: flats used without bias subtraction")?;
            }
            let refs: Vec<&[f32]> = frames.iter().map(Vec::as_slice).collect();
            let (data, _) = master_flat(&refs, bias.map(Vec::as_slice), method).map_err(|e| {
                TaskError::BadInput(format!("master flat of CCD {ccd}, filter {filter}: {e}"))
            })?;
            writeln!(
                log,
                "masters: flat {filter} {ccd}: {} frames, {w}x{h}",
                frames.len()
            )?;
            let mut img = Image::new(w, h, data);
            img.header = out_header(&hd, "flat", frames.len());
            img.header.set("FILTER", filter.as_str(), "");
            if filters.len() > 1 {
                let ext = extnames.get(ccd).cloned().unwrap_or_else(|| ccd.clone());
                img.header.set("EXTNAME", format!("{ext}_{filter}"), "");
            }
            flat_images.push(img);
        }
        let mut primary = Header::new();
        primary.set("ORIGIN", "nearby masters", "");
        write_mef(inv.output("bias")?, &primary, &bias_images, Pixel::F32)?;
        write_mef(inv.output("flat")?, &primary, &flat_images, Pixel::F32)?;
        if bias_images.is_empty() || flat_images.is_empty() {
            writeln!(
                log,
                "masters: warning: {} bias and {} flat HDUs written",
                bias_images.len(),
                flat_images.len()
            )?;
        }
        Ok(())
    }
}

const CALIBRATE_INPUTS: &[PortSpec] = &[
    PortSpec {
        name: "frame",
        file: "",
        required: true,
        doc: "One raw multi-extension frame (BIASSEC, TRIMSEC or DATASEC, GAIN, RDNOISE, SATURATE per CCD).",
    },
    PortSpec {
        name: "bias",
        file: "",
        required: true,
        doc: "The master bias (`masters.bias`).",
    },
    PortSpec {
        name: "flat",
        file: "",
        required: true,
        doc: "The master flat (`masters.flat`).",
    },
    PortSpec {
        name: "bad_pixels",
        file: "",
        required: false,
        doc: "A bad-pixel map (nonzero = bad): one image HDU per CCD (matched by CCDNAME, IMAGEID or EXTNAME), or a single image for every CCD; raw or trimmed size.",
    },
];

const CALIBRATE_OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "image",
        file: "image.fits",
        required: true,
        doc: "Calibrated frame: float32, one HDU per CCD, trimmed, headers kept (WCS moved to the trimmed pixels, LTV1/LTV2 the offset), BUNIT ADU.",
    },
    PortSpec {
        name: "weight",
        file: "weight.fits",
        required: true,
        doc: "Inverse variance (1/ADU^2) per pixel, 0 where masked (bad flat, saturated, not finite, bad in the bad-pixel map).",
    },
];

pub struct Calibrate;

impl TaskKind for Calibrate {
    fn name(&self) -> &'static str {
        "calibrate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Overscan, bias and flat correction of one raw frame, with an inverse-variance weight map."
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(CALIBRATE_INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(CALIBRATE_OUTPUTS)
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let frame = ImageFile::open(inv.input("frame")?)?;
        let bias_path = inv.input("bias")?;
        let biases = master(bias_path)?;
        let flats = master(inv.input("flat")?)?;
        let bad_pixels = match inv.inputs.get("bad_pixels").and_then(|v| v.first()) {
            Some(p) => Some(BadPixelMap::read(p)?),
            None => None,
        };
        // Every CCD is checked before a file is written: a bad frame leaves no half output.
        // The CCDs are planned side by side (each plan's overscan levels and robust levels
        // are mostly serial work); the first bad CCD in frame order is the one reported.
        let plans: Vec<Result<CcdPlan, TaskError>> = (0..frame.len())
            .into_par_iter()
            .map(|k| {
                if inv.cancel.load(Ordering::Relaxed) {
                    return Err(TaskError::Cancelled);
                }
                plan_ccd(&frame, k, &biases, &flats, bad_pixels.as_ref())
            })
            .collect();
        let plans = plans.into_iter().collect::<Result<Vec<_>, _>>()?;
        let mut primary = frame.primary().clone();
        primary.set_origin(None);
        for k in ["BZERO", "BSCALE"] {
            primary.remove(k);
        }
        primary.add_history("nearby calibrate");
        let mut images = MefWriter::create(inv.output("image")?, &primary)?;
        let mut weights = MefWriter::create(inv.output("weight")?, &Header::new())?;
        for plan in &plans {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let ccd = plan.ccd(&frame, &biases, &flats)?;
            let (w, hh, trimsec) = (ccd.width(), ccd.height(), plan.trimsec);
            let mut oh = frame.image(plan.index).header.clone();
            oh.set_origin(None);
            for k in ["BIASSEC", "TRIMSEC", "BZERO", "BSCALE"] {
                oh.remove(k);
            }
            oh.set("DATASEC", format!("[1:{w},1:{hh}]"), "trimmed");
            oh.set("LTV1", -(trimsec.x0 as f64), "[px] trimmed = raw + LTV");
            oh.set("LTV2", -(trimsec.y0 as f64), "[px] trimmed = raw + LTV");
            for (key, off) in [("CRPIX1", trimsec.x0), ("CRPIX2", trimsec.y0)] {
                if let Ok(v) = oh.f64(key) {
                    oh.set(key, v - off as f64, "reference pixel (trimmed frame)");
                }
            }
            // The calibrated saturation level is known once the pixels are: a placeholder of
            // the same card length until then.
            let saturate_card = "[ADU] saturation level, calibrated";
            oh.set("SATURATE", 0.0, saturate_card);
            oh.set("BUNIT", "ADU", "bias-subtracted, flat-fielded");
            oh.set("FILTER", plan.filter.as_str(), "");
            oh.add_history("nearby calibrate: overscan, master bias, master flat");
            let mut wh = Header::new();
            for k in ["EXTNAME", "CCDNAME", "IMAGEID"] {
                if let Some(c) = oh.card(k) {
                    wh.set(k, c.value.clone(), &c.comment);
                }
            }
            wh.set("BUNIT", "1/ADU**2", "inverse variance, 0 where masked");
            let image_slot = images.add_image(&oh, w, hh, Pixel::F32)?;
            let weight_slot = weights.add_image(&wh, w, hh, Pixel::F32)?;
            let det = Detector::new(plan.gain, plan.rdnoise, plan.saturate - plan.level.max(0.0));
            let stats = calibrate_ccd(
                &ccd,
                &det,
                (images.rows(), &image_slot),
                (weights.rows(), &weight_slot),
            )?;
            let sat_cal = if stats.min_saturated.is_finite() {
                stats.min_saturated
            } else {
                let bias = biases.file.image(plan.bias).pixels;
                let bias_level = robust_level_of_pixels(&bias);
                (plan.saturate - plan.level - bias_level) / stats.max_flat
            };
            writeln!(
                log,
                "calibrate: {}: {w}x{hh}, overscan {:.1} ADU, {} masked pixels \
                 ({} from the bad-pixel map)",
                plan.name, plan.level, stats.masked, plan.from_map
            )?;
            oh.set("SATURATE", sat_cal as f64, saturate_card);
            images.rewrite_header(&image_slot, &oh)?;
        }
        nearby_engine::task::write_metrics(
            inv.out_dir,
            &[("frames", 1.0), ("ccds", plans.len() as f64)],
        )?;
        Ok(())
    }
}

/// One CCD of a raw frame, checked and ready to calibrate: everything [`Calibrate`] needs to
/// know before it writes a byte.
struct CcdPlan {
    /// The image's index in the frame.
    index: usize,
    name: String,
    filter: String,
    gain: f32,
    rdnoise: f32,
    /// SATURATE of the raw header, raw ADU.
    saturate: f32,
    trimsec: Section,
    levels: OverscanLevels,
    /// The overscan level subtracted (robust), ADU.
    level: f32,
    /// The images of the master bias and flat picked for this CCD.
    bias: usize,
    flat: usize,
    /// The bad-pixel map in the trimmed geometry (1 = bad) and its count of bad pixels.
    bad: Option<Vec<u8>>,
    from_map: usize,
}

impl CcdPlan {
    fn ccd<'a>(
        &'a self,
        frame: &'a ImageFile,
        biases: &'a MasterFile,
        flats: &'a MasterFile,
    ) -> Result<Ccd<'a>, TaskError> {
        let img = frame.image(self.index);
        Ccd::new(
            img.pixels,
            img.width,
            self.trimsec,
            &self.levels,
            biases.file.image(self.bias).pixels,
            flats.file.image(self.flat).pixels,
            self.bad.as_deref(),
        )
        .map_err(|e| bad_input(img.header, format!("calibration: {e}")))
    }
}

/// Checks CCD `k` of `frame` and finds what calibrates it: its keys, sections, overscan
/// levels, masters and bad pixels.
fn plan_ccd(
    frame: &ImageFile,
    k: usize,
    biases: &MasterFile,
    flats: &MasterFile,
    bad_pixels: Option<&BadPixelMap>,
) -> Result<CcdPlan, TaskError> {
    let img = frame.image(k);
    let h = img.header;
    img.check_usable()?;
    let gain = h.f64("GAIN")? as f32;
    let rdnoise = h.f64("RDNOISE")? as f32;
    let saturate = h.f64("SATURATE")? as f32;
    let (biassec, trimsec) = sections(h)?;
    let levels = overscan_levels(
        &img.pixels,
        img.width,
        img.height,
        biassec,
        trimsec,
        OverscanOptions::default(),
    )
    .map_err(|e| bad_input(h, format!("BIASSEC/TRIMSEC: {e}")))?;
    let (w, hh) = (trimsec.width(), trimsec.height());
    let hdu = h.origin().map_or(k + 1, |o| o.hdu);
    let name = ccd_key(h, hdu);
    let filter = key_str(h, frame.primary(), "FILTER").unwrap_or_default();
    let bias = biases.pick(&name, None, w, hh).ok_or_else(|| {
        bad_input(
            h,
            format!(
                "no master bias for CCD {name} of {w}x{hh} pixels in {}",
                biases.file.path().display()
            ),
        )
    })?;
    let flat = flats.pick(&name, Some(&filter), w, hh).ok_or_else(|| {
        bad_input(
            h,
            format!("no master flat for CCD {name}, filter `{filter}`, of {w}x{hh} pixels"),
        )
    })?;
    let bad = match bad_pixels {
        Some(map) => {
            let mut buf = Vec::new();
            map.for_ccd(&name, &img, trimsec, &mut buf)?;
            Some(buf)
        }
        None => None,
    };
    let from_map = bad
        .as_ref()
        .map_or(0, |b| b.iter().filter(|v| **v != 0).count());
    Detector::new(gain, rdnoise, saturate)
        .check()
        .map_err(|e| bad_input(h, format!("calibration: {e}")))?;
    let mut plan = CcdPlan {
        index: k,
        name,
        filter,
        gain,
        rdnoise,
        saturate,
        trimsec,
        levels,
        level: 0.0,
        bias,
        flat,
        bad,
        from_map,
    };
    plan.level = plan.ccd(frame, biases, flats)?.overscan_level();
    Ok(plan)
}

/// Rows calibrated per work item: 32 rows of a 2048-pixel CCD are 256 kB of science and as
/// much of weight, small enough to stay in cache between the computation and the write.
const BLOCK_ROWS: usize = 32;

/// Calibrates one CCD block by block of rows on every core, each block's science and weight
/// written into their image HDUs as soon as it is computed.
fn calibrate_ccd(
    ccd: &Ccd,
    det: &Detector,
    (images, image_slot): (RowWriter, &ImageSlot),
    (weights, weight_slot): (RowWriter, &ImageSlot),
) -> Result<RowStats, TaskError> {
    /// A worker's buffers, reused from block to block: the science and weight rows as the
    /// files store them (big-endian float32).
    #[derive(Default)]
    struct Buffers {
        rows: RowScratch,
        science: Vec<u8>,
        weight: Vec<u8>,
    }
    let (w, h) = (ccd.width(), ccd.height());
    (0..h.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map_init(Buffers::default, |b, block| {
            let rows = block * BLOCK_ROWS..((block + 1) * BLOCK_ROWS).min(h);
            b.science.resize(rows.len() * w * 4, 0);
            b.weight.resize(rows.len() * w * 4, 0);
            let stats = ccd.calibrate_rows(
                det,
                rows.clone(),
                &mut b.rows,
                &mut b.science,
                &mut b.weight,
            );
            images.write_stored(image_slot, rows.start, &b.science)?;
            weights.write_stored(weight_slot, rows.start, &b.weight)?;
            Ok(stats)
        })
        .try_reduce(|| RowStats::NONE, |a, b| Ok(a.merge(b)))
}

/// A bad-pixel map: nonzero pixels are bad. One image per CCD, or one image for every CCD.
struct BadPixelMap {
    path: PathBuf,
    images: Vec<Image>,
}

impl BadPixelMap {
    fn read(path: &Path) -> Result<BadPixelMap, TaskError> {
        Ok(BadPixelMap {
            path: path.to_path_buf(),
            images: read_all_images(path)?,
        })
    }

    /// Fills `out` with the map of CCD `ccd` in the trimmed geometry (1 = bad). The map may be
    /// the size of the raw CCD (then it is trimmed with the frame's `trimsec`) or of the
    /// trimmed one.
    fn for_ccd(
        &self,
        ccd: &str,
        raw: &StoredImage,
        trimsec: Section,
        out: &mut Vec<u8>,
    ) -> Result<(), TaskError> {
        let map = match &self.images[..] {
            [only] => only,
            many => many
                .iter()
                .find(|m| {
                    let hdu = m.header.origin().map_or(0, |o| o.hdu);
                    ccd_key(&m.header, hdu) == ccd
                })
                .ok_or_else(|| {
                    bad_input(
                        raw.header,
                        format!(
                            "the bad-pixel map {} has {} images and none for CCD {ccd} \
                             (matched by CCDNAME, IMAGEID or EXTNAME)",
                            self.path.display(),
                            many.len()
                        ),
                    )
                })?,
        };
        let (tw, th) = (trimsec.width(), trimsec.height());
        let (x0, y0) = match (map.width, map.height) {
            (w, h) if (w, h) == (tw, th) => (0, 0),
            (w, h) if (w, h) == (raw.width, raw.height) => (trimsec.x0, trimsec.y0),
            (w, h) => {
                return Err(bad_input(
                    &map.header,
                    format!(
                        "bad-pixel map of {w}x{h} pixels for CCD {ccd}: expected the raw \
                         {}x{} or the trimmed {tw}x{th}",
                        raw.width, raw.height
                    ),
                ))
            }
        };
        out.clear();
        out.reserve(tw * th);
        for y in y0..y0 + th {
            let row = &map.data[y * map.width + x0..y * map.width + x0 + tw];
            out.extend(row.iter().map(|v| (*v != 0.0) as u8));
        }
        Ok(())
    }
}

/// A master bias or flat file: its images (mapped where the file is plain) and, per CCD, the
/// index, filter and size of each.
struct MasterFile {
    file: ImageFile,
    by_ccd: BTreeMap<String, Vec<(String, usize, usize, usize)>>,
}

impl MasterFile {
    fn open(path: &Path) -> Result<MasterFile, TaskError> {
        let file = ImageFile::open(path)
            .map_err(|e| TaskError::Failed(format!("master {}: {e}", path.display())))?;
        let mut by_ccd: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (k, img) in file.images().enumerate() {
            let ccd = ccd_key(img.header, k + 1);
            let filter = img
                .header
                .str("FILTER")
                .unwrap_or_default()
                .trim()
                .to_owned();
            by_ccd
                .entry(ccd)
                .or_default()
                .push((filter, k, img.width, img.height));
        }
        Ok(MasterFile { file, by_ccd })
    }

    /// The image for `ccd` of `w` x `h` pixels (and `filter`, when given).
    fn pick(&self, ccd: &str, filter: Option<&str>, w: usize, h: usize) -> Option<usize> {
        self.by_ccd
            .get(ccd)?
            .iter()
            .find(|(f, _, mw, mh)| *mw == w && *mh == h && filter.is_none_or(|x| x == f))
            .map(|(_, k, ..)| *k)
    }
}

/// What identifies a file's content while it is not replaced or rewritten: device, inode,
/// size and modification time (as the engine trusts a source file's recorded hash).
type FileId = (u64, u64, u64, i64, i64);

/// Master files mapped by this process, the most recently used last. A night's calibrate
/// instances all name the same two masters: they are mapped and indexed once, not per frame.
/// Only mapped files are kept (their pages belong to the page cache, not to this process's
/// heap), and only the last few.
static MASTERS: Mutex<Vec<(FileId, Arc<MasterFile>)>> = Mutex::new(Vec::new());
const MASTERS_KEPT: usize = 4;

/// The master file at `path`, from [`MASTERS`] while the file is unchanged.
fn master(path: &Path) -> Result<Arc<MasterFile>, TaskError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| TaskError::Failed(format!("master {}: {e}", path.display())))?;
    let id: FileId = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let mut kept = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = kept.iter().position(|(k, _)| *k == id) {
        let entry = kept.remove(i);
        let file = entry.1.clone();
        kept.push(entry);
        return Ok(file);
    }
    let file = Arc::new(MasterFile::open(path)?);
    if file.file.is_mapped() {
        if kept.len() == MASTERS_KEPT {
            kept.remove(0);
        }
        kept.push((id, file.clone()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fits::write_image;

    const W: usize = 40;
    const H: usize = 24;

    fn ccd(typ: &str, level: f32, edit: impl Fn(&mut Image)) -> Image {
        let data = (0..W * H)
            .map(|p| {
                let (x, y) = (p % W, p / W);
                let sky = if x < 32 {
                    level + ((x * 7 + y * 3) % 5) as f32
                } else {
                    0.0
                };
                1000.0 + sky
            })
            .collect();
        let mut img = Image::new(W, H, data);
        img.header
            .set("EXTNAME", "CCD1", "")
            .set("CCDNAME", "A1", "")
            .set("IMAGETYP", typ, "")
            .set("FILTER", "R", "")
            .set("BIASSEC", "[33:40,1:24]", "")
            .set("TRIMSEC", "[1:32,1:24]", "")
            .set("GAIN", 2.0, "")
            .set("RDNOISE", 5.0, "")
            .set("SATURATE", 60000.0, "")
            .set("CRPIX1", 10.0, "")
            .set("CRPIX2", 12.0, "");
        edit(&mut img);
        img
    }

    fn run(
        kind: &dyn TaskKind,
        inputs: &[(&str, &Path)],
        out: &Path,
    ) -> Result<BTreeMap<String, PathBuf>, TaskError> {
        let inputs: BTreeMap<String, Vec<PathBuf>> = inputs
            .iter()
            .map(|(k, p)| (k.to_string(), vec![p.to_path_buf()]))
            .collect();
        let run = nearby_engine::task::run_alone(kind, Map::new(), inputs, out);
        run.result.map(|()| run.outputs)
    }

    /// Masters from three bias and three flat frames of [`ccd`], written under `dir`.
    fn masters(dir: &Path) -> BTreeMap<String, PathBuf> {
        let calib = dir.join("calib");
        std::fs::create_dir_all(&calib).unwrap();
        for i in 0..3 {
            let b = ccd("bias", 0.0, |_| {});
            write_mef(
                &calib.join(format!("b{i}.fits")),
                &Header::new(),
                &[b],
                Pixel::F32,
            )
            .unwrap();
            let f = ccd("flat", 20000.0, |_| {});
            write_mef(
                &calib.join(format!("f{i}.fits")),
                &Header::new(),
                &[f],
                Pixel::F32,
            )
            .unwrap();
        }
        run(&Masters, &[("calib", &calib)], &dir.join("m")).unwrap()
    }

    #[test]
    fn bad_pixel_map_zeroes_the_weight_per_ccd_or_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let m = masters(dir.path());
        let frame = dir.path().join("r1.fits");
        write_mef(
            &frame,
            &Header::new(),
            &[ccd("object", 500.0, |_| {})],
            Pixel::U16,
        )
        .unwrap();
        let calibrate = |bpm: &Path, out: &str| {
            run(
                &Calibrate,
                &[
                    ("frame", &frame),
                    ("bias", &m["bias"]),
                    ("flat", &m["flat"]),
                    ("bad_pixels", bpm),
                ],
                &dir.path().join(out),
            )
        };
        let zero_weights = |o: &BTreeMap<String, PathBuf>| -> Vec<(usize, usize)> {
            let wt = &read_all_images(&o["weight"]).unwrap()[0];
            (0..wt.height)
                .flat_map(|y| (0..wt.width).map(move |x| (x, y)))
                .filter(|&(x, y)| wt.at(x, y) == 0.0)
                .collect()
        };
        // Per CCD, trimmed size (32x24), uint8 as BPMs are stored: column 5 and pixel (20, 7).
        let mut other = Image::filled(32, 24, 1.0);
        other.header.set("CCDNAME", "B2", "");
        let mut map = Image::filled(32, 24, 0.0);
        map.header.set("CCDNAME", "A1", "");
        for y in 0..24 {
            map.data[y * 32 + 5] = 1.0;
        }
        map.data[7 * 32 + 20] = 4.0;
        let per_ccd = dir.path().join("bpm_mef.fits");
        write_mef(&per_ccd, &Header::new(), &[other, map], Pixel::U8).unwrap();
        let o = calibrate(&per_ccd, "a").unwrap();
        let mut want: Vec<(usize, usize)> = (0..24).map(|y| (5, y)).collect();
        want.push((20, 7));
        want.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(zero_weights(&o), want);
        // The science pixels are still calibrated (masked in the weight only).
        let img = &read_all_images(&o["image"]).unwrap()[0];
        assert!(img.at(5, 3) > 400.0);

        // One image in the raw geometry (40x24, overscan included) for every CCD.
        let mut raw_map = Image::filled(40, 24, 0.0);
        raw_map.data[10 * 40 + 3] = 1.0;
        raw_map.data[10 * 40 + 35] = 1.0; // in the overscan: trimmed away
        let single = dir.path().join("bpm.fits");
        write_image(&single, &raw_map, Pixel::I16).unwrap();
        let o = calibrate(&single, "b").unwrap();
        assert_eq!(zero_weights(&o), vec![(3, 10)]);

        // A map of another size, or without this CCD, is bad input naming the map.
        write_image(&single, &Image::filled(30, 24, 0.0), Pixel::U8).unwrap();
        match calibrate(&single, "c") {
            Err(TaskError::BadInput(m)) => {
                assert!(
                    m.contains("bpm.fits, HDU 0: bad-pixel map of 30x24 pixels for CCD A1"),
                    "{m}"
                );
                assert!(
                    m.contains("expected the raw 40x24 or the trimmed 32x24"),
                    "{m}"
                );
            }
            other => panic!("expected BadInput, got {other:?}"),
        }
        let mut b3 = Image::filled(32, 24, 0.0);
        b3.header.set("CCDNAME", "B3", "");
        let mut b2 = b3.clone();
        b2.header.set("CCDNAME", "B2", "");
        write_mef(&per_ccd, &Header::new(), &[b2, b3], Pixel::U8).unwrap();
        match calibrate(&per_ccd, "d") {
            Err(TaskError::BadInput(m)) => {
                assert!(m.contains("r1.fits, HDU 1 (CCD1)"), "{m}");
                assert!(
                    m.contains("bpm_mef.fits has 2 images and none for CCD A1"),
                    "{m}"
                );
            }
            other => panic!("expected BadInput, got {other:?}"),
        }
    }

    #[test]
    fn masters_then_calibrate_and_bad_frames_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Header::new();
        let m = masters(dir.path());
        let bias = read_all_images(&m["bias"]).unwrap();
        assert_eq!((bias[0].width, bias[0].height), (32, 24));
        assert_eq!(bias[0].header.i64("NCOMBINE").unwrap(), 3);
        let flat = read_all_images(&m["flat"]).unwrap();
        assert!((robust_level(&flat[0].data, None) - 1.0).abs() < 1e-3);

        let frame = |name: &str, edit: &dyn Fn(&mut Image)| {
            let p = dir.path().join(name);
            write_mef(&p, &empty, &[ccd("object", 500.0, edit)], Pixel::F32).unwrap();
            p
        };
        let calibrate = |p: &Path, out: &str| {
            run(
                &Calibrate,
                &[("frame", p), ("bias", &m["bias"]), ("flat", &m["flat"])],
                &dir.path().join(out),
            )
        };
        let good = frame("good.fits", &|_| {});
        let o = calibrate(&good, "c").unwrap();
        let img = &read_all_images(&o["image"]).unwrap()[0];
        assert_eq!((img.width, img.height), (32, 24));
        assert_eq!(img.header.f64("CRPIX1").unwrap(), 10.0);
        assert_eq!(img.header.str("BUNIT").unwrap(), "ADU");
        assert!((robust_level(&img.data, None) - 502.0).abs() < 3.0);
        let wt = &read_all_images(&o["weight"]).unwrap()[0];
        assert!(wt.data.iter().all(|w| *w > 0.0));

        let expect_bad = |p: PathBuf, words: &[&str]| match calibrate(&p, "x") {
            Err(TaskError::BadInput(msg)) => {
                for w in words {
                    assert!(msg.contains(w), "`{w}` not in: {msg}");
                }
            }
            other => panic!("{}: expected BadInput, got {other:?}", p.display()),
        };
        expect_bad(
            frame("nogain.fits", &|i| {
                i.header.remove("GAIN");
            }),
            &["nogain.fits", "HDU 1", "GAIN"],
        );
        expect_bad(
            frame("zero.fits", &|i| i.data.iter_mut().for_each(|v| *v = 0.0)),
            &["zero.fits", "HDU 1", "zero"],
        );
        expect_bad(
            frame("nan.fits", &|i| {
                i.data.iter_mut().for_each(|v| *v = f32::NAN)
            }),
            &["nan.fits", "HDU 1", "NaN"],
        );
        expect_bad(
            frame("badsec.fits", &|i| {
                i.header.set("BIASSEC", "[33:50,1:24]", "");
            }),
            &["badsec.fits", "HDU 1", "BIASSEC"],
        );
        let cut = frame("cut.fits", &|_| {});
        let len = std::fs::metadata(&cut).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(len - 1000)
            .unwrap();
        expect_bad(cut, &["cut.fits", "HDU 1", "truncated"]);
        // A 1-D "frame": wrong NAXIS.
        let flat1d = dir.path().join("oned.fits");
        let mut one = Image::new(W * H, 1, vec![1.0; W * H]);
        one.header = ccd("object", 0.0, |_| {}).header;
        write_mef(&flat1d, &empty, &[one], Pixel::F32).unwrap();
        match calibrate(&flat1d, "y") {
            Err(TaskError::BadInput(msg)) => assert!(msg.contains("oned.fits"), "{msg}"),
            other => panic!("expected BadInput, got {other:?}"),
        }

        // extract on the calibrated frame writes one table per CCD.
        let e = run(
            &crate::extract::task::Extract,
            &[("image", &o["image"]), ("weight", &o["weight"])],
            &dir.path().join("e"),
        )
        .unwrap();
        let t = crate::fits::read_table(&e["catalog"], "CCD1").unwrap();
        assert!(t.column("X_IMAGE").is_ok() && t.column("FLAGS").is_ok());
    }
}
