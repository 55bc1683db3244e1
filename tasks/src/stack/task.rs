//! The `stack` task kind: reads calibrated frames (one file per exposure, one HDU per CCD) and
//! their weight maps, resamples every CCD onto one TAN grid, optionally shifts the exposures
//! along a sky motion, combines them, and writes `stack.fits` and `stack.weight.fits`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};

use super::{
    combine, mid_exposure_mjd, resample, shift_layer, Combine, FrameWcs, Grid, Kernel, Layer,
    Motion, Source,
};
use crate::calibrate::robust_level;
use crate::calibrate::task::input_files;
use crate::fits::{read_all_images, read_header, write_image, Image, Pixel};
use crate::stack::resample::Plane;

pub struct Stack;

const PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "kernel", ty: PType::Str, required: false, default: Some("\"lanczos3\""), doc: "Resampling kernel: `lanczos3` or `bilinear` (SWarp's RESAMPLING_TYPE)." },
    ParamSpec { name: "combine", ty: PType::Str, required: false, default: Some("\"median\""), doc: "`median`, `clipped_mean` or `weighted_mean` (SWarp's COMBINE_TYPE)." },
    ParamSpec { name: "clip_sigma", ty: PType::Float, required: false, default: Some("3.0"), doc: "clipped_mean: drop values farther than this many sigma (from their weight) from the median." },
    ParamSpec { name: "clip_ampfrac", ty: PType::Float, required: false, default: Some("0.3"), doc: "clipped_mean: tolerance added in quadrature, as a fraction of the median (SWarp's CLIP_AMPFRAC)." },
    ParamSpec { name: "subtract_sky", ty: PType::Bool, required: false, default: Some("true"), doc: "Subtract each CCD's median level before resampling (frames of different sky combine cleanly)." },
    ParamSpec { name: "ra_deg", ty: PType::Float, required: false, default: None, doc: "Grid centre RA, degrees (with dec_deg, width_px, height_px; default: the frames' footprints)." },
    ParamSpec { name: "dec_deg", ty: PType::Float, required: false, default: None, doc: "Grid centre Dec, degrees." },
    ParamSpec { name: "width_px", ty: PType::Int, required: false, default: None, doc: "Grid width, pixels." },
    ParamSpec { name: "height_px", ty: PType::Int, required: false, default: None, doc: "Grid height, pixels." },
    ParamSpec { name: "pixel_scale_arcsec", ty: PType::Float, required: false, default: None, doc: "Grid pixel scale, arcsec (default: the frames' median)." },
    ParamSpec { name: "rate_arcsec_per_min", ty: PType::Float, required: false, default: None, doc: "Shift-and-stack: the motion's rate, arcsec/min (with pa_deg)." },
    ParamSpec { name: "pa_deg", ty: PType::Float, required: false, default: None, doc: "Shift-and-stack: the motion's position angle, degrees east of north." },
    ParamSpec { name: "ref_mjd", ty: PType::Float, required: false, default: None, doc: "Shift-and-stack: the time the stack shows the mover at, MJD UTC (default: the mean mid-exposure time)." },
    ParamSpec { name: "subtract_static", ty: PType::Bool, required: false, default: Some("true"), doc: "Shift-and-stack: subtract the median of the unshifted exposures first (removes stars)." },
];

const INPUTS: &[PortSpec] = &[
    PortSpec { name: "images", file: "", required: true, doc: "Calibrated frames (`calibrate.image`), one file per exposure, one HDU per CCD, each with a TAN WCS; or a directory of them." },
    PortSpec { name: "weights", file: "", required: false, doc: "Their inverse-variance maps (`calibrate.weight`), HDU for HDU; paired with the image in the same directory, else by order." },
    PortSpec { name: "wcs", file: "", required: false, doc: "The `astrometry` task's wcs.fits files, one per image in the same order: each CCD's solved WCS (by EXTNAME) replaces the header's; CCDs that were not solved are left out." },
];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "image",
        file: "stack.fits",
        required: true,
        doc: "The stack: float32 on the TAN grid, NaN where no exposure covers.",
    },
    PortSpec {
        name: "weight",
        file: "stack.weight.fits",
        required: true,
        doc: "Its inverse-variance weight (0 where no exposure covers).",
    },
];

/// Everything the params decide.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    kernel: Kernel,
    combine: Combine,
    subtract_sky: bool,
    /// (ra, dec, width, height) of a given grid.
    grid: Option<(f64, f64, usize, usize)>,
    scale_deg: Option<f64>,
    motion: Option<Motion>,
    ref_mjd: Option<f64>,
    subtract_static: bool,
}

type Problems = Vec<(&'static str, String)>;

fn config(p: &Map<String, J>) -> Result<Config, Problems> {
    let mut problems: Problems = Vec::new();
    let is_template = |v: &J| v.as_str().is_some_and(|s| s.contains("${"));
    let num = |name: &'static str, problems: &mut Problems| -> Option<f64> {
        let v = p.get(name).filter(|v| !is_template(v))?;
        match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                problems.push((name, format!("{v}: expected a number")));
                None
            }
        }
    };
    let flag = |name: &'static str, default: bool| {
        p.get(name)
            .and_then(|v| v.as_bool().or_else(|| v.as_str()?.trim().parse().ok()))
            .unwrap_or(default)
    };
    let word = |name: &'static str, default: &'static str| -> String {
        p.get(name)
            .and_then(J::as_str)
            .filter(|s| !s.contains("${"))
            .unwrap_or(default)
            .to_owned()
    };
    let kernel = Kernel::parse(&word("kernel", "lanczos3")).unwrap_or_else(|| {
        problems.push((
            "kernel",
            format!("`{}`: expected lanczos3 or bilinear", word("kernel", "")),
        ));
        Kernel::Lanczos3
    });
    let sigma = num("clip_sigma", &mut problems).unwrap_or(3.0);
    if sigma <= 0.0 {
        problems.push(("clip_sigma", format!("{sigma}: must be > 0")));
    }
    let ampfrac = num("clip_ampfrac", &mut problems).unwrap_or(0.3);
    if ampfrac < 0.0 {
        problems.push(("clip_ampfrac", format!("{ampfrac}: must be >= 0")));
    }
    let combine = match word("combine", "median").as_str() {
        "median" => Combine::Median,
        "weighted_mean" => Combine::WeightedMean,
        "clipped_mean" => Combine::ClippedMean {
            sigma: sigma as f32,
            ampfrac: ampfrac as f32,
        },
        other => {
            problems.push((
                "combine",
                format!("`{other}`: expected median, clipped_mean or weighted_mean"),
            ));
            Combine::Median
        }
    };
    let scale_deg = num("pixel_scale_arcsec", &mut problems).map(|s| s / 3600.0);
    if scale_deg.is_some_and(|s| s <= 0.0) {
        problems.push(("pixel_scale_arcsec", "must be > 0".into()));
    }
    let ra = num("ra_deg", &mut problems);
    let dec = num("dec_deg", &mut problems);
    let size = |name: &'static str, problems: &mut Problems| {
        let v = num(name, problems)?;
        if v >= 1.0 && v <= super::grid::MAX_SIDE_PX as f64 && v.fract() == 0.0 {
            Some(v as usize)
        } else {
            problems.push((
                name,
                format!(
                    "{v}: expected whole pixels, 1 to {}",
                    super::grid::MAX_SIDE_PX
                ),
            ));
            None
        }
    };
    let width = size("width_px", &mut problems);
    let height = size("height_px", &mut problems);
    let grid = match (ra, dec, width, height) {
        (Some(ra), Some(dec), Some(w), Some(h)) => {
            if !(-90.0..=90.0).contains(&dec) {
                problems.push(("dec_deg", format!("{dec}: expected -90 to 90")));
            }
            Some((ra, dec, w, h))
        }
        (None, None, None, None) => None,
        _ => {
            let given = ["ra_deg", "dec_deg", "width_px", "height_px"]
                .into_iter()
                .filter(|n| p.contains_key(*n))
                .collect::<Vec<_>>();
            if given.len() < 4 {
                problems.push((
                    "ra_deg",
                    format!(
                        "a given grid needs ra_deg, dec_deg, width_px and height_px; only {} given",
                        given.join(", ")
                    ),
                ));
            }
            None
        }
    };
    let rate = num("rate_arcsec_per_min", &mut problems);
    let pa = num("pa_deg", &mut problems);
    let motion = match (rate, pa) {
        (Some(r), Some(pa)) => Some(Motion {
            rate_arcsec_per_min: r,
            pa_deg: pa,
        }),
        (None, None) => None,
        _ => {
            problems.push((
                "rate_arcsec_per_min",
                "shift-and-stack needs both rate_arcsec_per_min and pa_deg".into(),
            ));
            None
        }
    };
    let ref_mjd = num("ref_mjd", &mut problems);
    let cfg = Config {
        kernel,
        combine,
        subtract_sky: flag("subtract_sky", true),
        grid,
        scale_deg,
        motion,
        ref_mjd,
        subtract_static: flag("subtract_static", true),
    };
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// One CCD of an exposure, ready to resample.
struct Ccd {
    image: Image,
    weight: Option<Image>,
    wcs: FrameWcs,
}

/// One input file: its usable CCDs and its mid-exposure time (when it has one).
struct Exposure {
    path: PathBuf,
    ccds: Vec<Ccd>,
    mid_mjd: Result<f64, String>,
}

/// The weight map paired with image `k`: when every image has a directory of its own (the
/// outputs of `calibrate` instances), the weight map in the same directory; else the k-th.
fn weight_for<'a>(files: &[PathBuf], k: usize, weights: &'a [PathBuf]) -> Option<&'a PathBuf> {
    let dirs: std::collections::BTreeSet<_> = files.iter().map(|f| f.parent()).collect();
    let own_dirs = dirs.len() == files.len();
    own_dirs
        .then(|| weights.iter().find(|w| w.parent() == files[k].parent()))
        .flatten()
        .or_else(|| weights.get(k))
}

/// Reads an exposure; CCDs that cannot be used are skipped with a line in `log`.
fn load(
    path: &Path,
    weight: Option<&PathBuf>,
    solved: Option<&Path>,
    log: &mut dyn Write,
) -> Result<Exposure, TaskError> {
    let solved = solved
        .map(crate::astrometry::task::read_wcs_file)
        .transpose()?;
    let primary = read_header(path, 0)?;
    let images = read_all_images(path)?;
    let weights = match weight {
        Some(w) => {
            let ws = read_all_images(w)?;
            if ws.len() != images.len() {
                return Err(TaskError::BadInput(format!(
                    "{}: {} image HDUs, but its weight map {} has {}",
                    path.display(),
                    images.len(),
                    w.display(),
                    ws.len()
                )));
            }
            ws.into_iter().map(Some).collect()
        }
        None => vec![None; images.len()],
    };
    let mut ccds = Vec::new();
    for (image, weight) in images.into_iter().zip(weights) {
        let at = image.header.loc();
        if let Err(e) = image.check_usable() {
            writeln!(log, "stack: skipping {e}")?;
            continue;
        }
        let wcs = match &solved {
            // The `astrometry` task's solution replaces the header's approximate pointing.
            Some(s) => crate::astrometry::task::solved_for(&image.header, s),
            None => FrameWcs::from_header(&image.header),
        };
        let Some(wcs) = wcs else {
            if solved.is_some() {
                writeln!(log, "stack: skipping {at}: not solved by astrometry")?;
            } else {
                writeln!(log, "stack: skipping {at}: no celestial WCS (expected CTYPE1/2 = RA---TAN/DEC--TAN with CRPIX, CRVAL and CD or CDELT)")?;
            }
            continue;
        };
        if let Some(w) = &weight {
            if (w.width, w.height) != (image.width, image.height) {
                writeln!(
                    log,
                    "stack: skipping {at}: {}x{} pixels, but its weight map {} is {}x{}",
                    image.width,
                    image.height,
                    w.header.loc(),
                    w.width,
                    w.height
                )?;
                continue;
            }
        }
        ccds.push(Ccd { image, weight, wcs });
    }
    if ccds.is_empty() {
        return Err(TaskError::BadInput(format!(
            "{}: no CCD with usable pixels and a celestial WCS",
            path.display()
        )));
    }
    let mid_mjd = mid_exposure_mjd(&ccds[0].image.header, &primary);
    Ok(Exposure {
        path: path.to_owned(),
        ccds,
        mid_mjd,
    })
}

fn failed(problems: Problems) -> TaskError {
    TaskError::params(&problems)
}

impl TaskKind for Stack {
    fn name(&self) -> &'static str {
        "stack"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Resample frames onto one TAN grid (Lanczos-3/bilinear, flux conserving) and combine them; optionally shift along a motion (synthetic tracking)."
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(OUTPUTS)
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        config(params).err().unwrap_or_default()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let cfg = config(inv.params).map_err(failed)?;
        let files = input_files(inv.inputs.get("images").map_or(&[][..], |v| &v[..]))?;
        let weights = input_files(inv.inputs.get("weights").map_or(&[][..], |v| &v[..]))?;
        let solved = inv.inputs.get("wcs").map_or(&[][..], |v| &v[..]);
        if !solved.is_empty() && solved.len() != files.len() {
            return Err(TaskError::BadInput(format!(
                "input `wcs` has {} files for {} images: give one wcs.fits per image, in the same order",
                solved.len(),
                files.len()
            )));
        }
        if files.is_empty() {
            return Err(TaskError::BadInput(
                "input `images` holds no FITS file".into(),
            ));
        }
        let mut exposures = Vec::new();
        let mut skipped = Vec::new();
        for (k, f) in files.iter().enumerate() {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let w = weight_for(&files, k, &weights);
            match load(f, w, solved.get(k).map(PathBuf::as_path), log) {
                Ok(e) => exposures.push(e),
                Err(e) => {
                    writeln!(log, "stack: skipping {}: {e}", f.display())?;
                    skipped.push(e.to_string());
                }
            }
        }
        if exposures.is_empty() {
            return Err(TaskError::BadInput(format!(
                "none of the {} frames can be stacked: {}",
                files.len(),
                skipped.join("; ")
            )));
        }
        let grid = match cfg.grid {
            Some((ra, dec, w, h)) => {
                let scale = match cfg.scale_deg {
                    Some(s) => s,
                    None => {
                        let mut s: Vec<f64> = exposures
                            .iter()
                            .flat_map(|e| &e.ccds)
                            .map(|c| super::grid::pixel_scale_deg(&c.wcs))
                            .collect();
                        s.sort_by(f64::total_cmp);
                        s[s.len() / 2]
                    }
                };
                Grid::centered(ra, dec, scale, w, h)
            }
            None => {
                let frames: Vec<(FrameWcs, usize, usize)> = exposures
                    .iter()
                    .flat_map(|e| &e.ccds)
                    .map(|c| (c.wcs.clone(), c.image.width, c.image.height))
                    .collect();
                Grid::covering(&frames, cfg.scale_deg).ok_or_else(|| {
                    TaskError::BadInput(format!(
                        "the {} frames' footprints do not fit one tangent-plane grid (over 90 degrees apart, or wider than {} pixels)",
                        exposures.len(),
                        super::grid::MAX_SIDE_PX
                    ))
                })?
            }
        };
        writeln!(
            log,
            "stack: {} exposures onto a {}x{} grid at ({:.6}, {:.6}), {:.4}\"/px, {}, {}",
            exposures.len(),
            grid.width,
            grid.height,
            grid.wcs.crval[0],
            grid.wcs.crval[1],
            grid.scale_deg() * 3600.0,
            cfg.kernel.name(),
            cfg.combine.name()
        )?;
        let mut layers = Vec::with_capacity(exposures.len());
        for e in &exposures {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let mut layer = Layer::empty(grid.width, grid.height);
            let mut written = 0;
            for c in &e.ccds {
                let sky = if cfg.subtract_sky {
                    robust_level(&c.image.data, None)
                } else {
                    0.0
                };
                let plane = Plane::new(
                    &c.image.data,
                    c.weight.as_ref().map(|w| &w.data[..]),
                    c.image.width,
                    c.image.height,
                    sky,
                );
                written += resample(
                    &Source { plane, wcs: &c.wcs },
                    &grid,
                    cfg.kernel,
                    &mut layer,
                );
            }
            writeln!(
                log,
                "stack: {}: {} CCDs, {written} grid pixels",
                e.path.display(),
                e.ccds.len()
            )?;
            layers.push(layer);
        }
        let mut header = grid.header();
        if let Some(motion) = cfg.motion {
            let mut times = Vec::new();
            for e in &exposures {
                times.push(e.mid_mjd.clone().map_err(TaskError::BadInput)?);
            }
            let ref_mjd = cfg
                .ref_mjd
                .unwrap_or_else(|| times.iter().sum::<f64>() / times.len() as f64);
            if cfg.subtract_static && layers.len() > 1 {
                let stat = combine(&layers, Combine::Median);
                for l in &mut layers {
                    for (v, s) in l.value.iter_mut().zip(&stat.value) {
                        *v -= s;
                    }
                }
            }
            for (l, t) in layers.iter_mut().zip(&times) {
                let dt_min = (t - ref_mjd) * 1440.0;
                let (sx, sy) = motion.pixel_shift(&grid, dt_min);
                writeln!(
                    log,
                    "stack: shift-and-stack: mid-exposure {t:.6}, {dt_min:+.3} min, shift ({sx:+.3}, {sy:+.3}) px"
                )?;
                *l = shift_layer(l, sx, sy, cfg.kernel);
            }
            header
                .set(
                    "TRKRATE",
                    motion.rate_arcsec_per_min,
                    "[arcsec/min] shift-and-stack rate",
                )
                .set(
                    "TRKPA",
                    motion.pa_deg,
                    "[deg] shift-and-stack position angle, E of N",
                )
                .set("TRKMJD", ref_mjd, "[MJD UTC] time the mover is shown at")
                .set(
                    "TRKSTAT",
                    cfg.subtract_static && layers.len() > 1,
                    "median of unshifted exposures subtracted",
                );
        }
        let out = combine(&layers, cfg.combine);
        let covered = out.weight.iter().filter(|w| **w > 0.0).count();
        writeln!(
            log,
            "stack: {covered} of {} grid pixels covered",
            grid.width * grid.height
        )?;
        let first = &exposures[0].ccds[0].image.header;
        for key in ["FILTER", "BUNIT", "OBJECT", "TELESCOP", "INSTRUME"] {
            if let Some(c) = first.card(key) {
                header.set(key, c.value.clone(), &c.comment);
            }
        }
        header
            .set("NCOMBINE", exposures.len() as i64, "exposures combined")
            .set("COMBINET", cfg.combine.name(), "combination")
            .set("RESAMPT", cfg.kernel.name(), "resampling kernel")
            .set(
                "SKYSUB",
                cfg.subtract_sky,
                "each CCD's median level subtracted",
            );
        if let Ok(t) = &exposures[0].mid_mjd {
            header.set("MJD-MID", *t, "[MJD UTC] first exposure's mid-time");
        }
        for (k, e) in exposures.iter().enumerate() {
            // The last two path components: calibrate's outputs are all named image.fits.
            let parts: Vec<_> = e.path.components().rev().take(2).collect();
            let name: PathBuf = parts.into_iter().rev().collect();
            let name = name.display().to_string();
            header.set(
                &format!("IMAGE{:03}", k + 1),
                name.as_str(),
                "input exposure",
            );
        }
        header.add_history("nearby stack");
        let mut image = Image::new(grid.width, grid.height, out.value);
        image.header = header.clone();
        write_image(inv.output("image")?, &image, Pixel::F32)?;
        let mut wh = grid.header();
        wh.set("BUNIT", "inverse variance", "0 where no exposure covers");
        let mut weight = Image::new(grid.width, grid.height, out.weight);
        weight.header = wh;
        write_image(inv.output("weight")?, &weight, Pixel::F32)?;
        Ok(())
    }
}
