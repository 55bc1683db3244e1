//! The CERES task kinds: `ceres_cutouts` (stacks from calibrated frames and catalogs, or from a
//! raw night, labelled by the simulator's truth when given), `ceres_dataset` (split by night),
//! `ceres_train`, `ceres_evaluate` (held-out nights) and `ceres_classify` (a night's
//! detections, scores into the catalogs).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use nearby_tasks::fits::{read_table, write_tables, ColumnData, Header, Table};
use nearby_tasks::simulate::Truth;
use serde_json::{json, Map, Value as J};

use crate::dataset;
use crate::metrics;
use crate::model::{self, Ceres, ModelCard, ModelConfig};
use crate::night;
use crate::stack::{Label, Stack};
use crate::train::{self, TrainConfig};

/// Every CERES kind, for the registry.
pub fn kinds() -> Vec<Arc<dyn TaskKind>> {
    vec![
        Arc::new(Cutouts),
        Arc::new(Dataset),
        Arc::new(Train),
        Arc::new(Evaluate),
        Arc::new(Classify),
    ]
}

fn failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(e.to_string())
}
fn bad(e: impl std::fmt::Display) -> TaskError {
    TaskError::BadInput(e.to_string())
}

fn is_template(v: &J) -> bool {
    v.as_str().is_some_and(|s| s.contains("${"))
}

/// A number param within [min, max] (templates are checked when they are resolved).
fn num(
    p: &Map<String, J>,
    name: &'static str,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, (&'static str, String)> {
    let Some(v) = p.get(name) else {
        return Ok(default);
    };
    if is_template(v) {
        return Ok(default);
    }
    match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
        Some(x) if x.is_finite() && x >= min && x <= max => Ok(x),
        _ => Err((name, format!("{v}: expected a number from {min} to {max}"))),
    }
}

fn params_error(p: Vec<(&'static str, String)>) -> TaskError {
    TaskError::params(&p)
}

/// Files of a directory input (sorted, `*.fits`), or the file itself.
fn fits_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| failed(format!("{}: cannot list: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".fits") || n.ends_with(".fits.fz"))
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

fn inputs<'a>(inv: &'a Invocation, name: &str) -> &'a [PathBuf] {
    inv.inputs.get(name).map_or(&[], Vec::as_slice)
}

// ---------------------------------------------------------------------------------------------

pub struct Cutouts;

const CUTOUT_PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "cutout_px", ty: PType::Int, required: false, default: Some("64"), doc: "Side of each cutout, pixels (the network reads the central `cutout_px` of its own, and with context the central `context_px`)." },
    ParamSpec { name: "exposures", ty: PType::Int, required: false, default: Some("4"), doc: "Planes per stack: the detection's exposure and the others of its field nearest in time." },
    ParamSpec { name: "line_width_px", ty: PType::Float, required: false, default: Some("2"), doc: "Satellite-line count (LINEDETS): transients within this many px (perpendicular) of a straight line through the detection are on its line (a trail's pieces scatter well under 1 px about it; a FWHM is ~3 px)." },
    ParamSpec { name: "line_gap_px", ty: PType::Float, required: false, default: Some("100"), doc: "The satellite line's members are those in one run with the detection along it, no gap wider than this (a faint trail's pieces are 5-20 px apart; lines of chance members far along it are not its)." },
    ParamSpec { name: "static_radius_px", ty: PType::Float, required: false, default: Some("2"), doc: "A detection with a detection of another exposure of its stack within this many px of the same sky (registered) is static, not a transient, and is on no satellite line." },
];

const CUTOUT_INPUTS: &[PortSpec] = &[
    PortSpec { name: "images", file: "", required: false, doc: "Calibrated images (`calibrate.image`), gathered." },
    PortSpec { name: "catalogs", file: "", required: false, doc: "Their catalogs (`extract.catalog`), paired by MJD-OBS and CCD." },
    PortSpec { name: "raw", file: "", required: false, doc: "Or a directory of raw frames, calibrated and extracted here with the calibrate and extract kinds' defaults." },
    PortSpec { name: "bias", file: "", required: false, doc: "Master bias (with `raw`)." },
    PortSpec { name: "flat", file: "", required: false, doc: "Master flat (with `raw`)." },
    PortSpec { name: "truth", file: "", required: false, doc: "The simulator's truth: labels every stack (asteroid or the artifact's kind)." },
];

const CUTOUT_OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "cutouts",
        file: "cutouts",
        required: true,
        doc: "One FITS cube per detection (layout in docs/ceres.md).",
    },
    PortSpec {
        name: "index",
        file: "cutouts.csv",
        required: true,
        doc: "id,file,night,label,kind,line_count,line_length_px per stack.",
    },
];

/// Problems with params: (param, what is wrong).
type ParamProblems = Vec<(&'static str, String)>;

/// `ceres_cutouts`'s params: cutout side, exposures per stack, and the satellite-line search.
fn cutout_config(p: &Map<String, J>) -> Result<(usize, usize, night::LineConfig), ParamProblems> {
    let size = num(p, "cutout_px", 64.0, 4.0, 512.0);
    let depth = num(p, "exposures", 4.0, 1.0, 16.0);
    let width = num(p, "line_width_px", 2.0, 0.01, 100.0);
    let radius = num(p, "static_radius_px", 2.0, 0.01, 100.0);
    let gap = num(p, "line_gap_px", 100.0, 0.0, 1e5);
    match (size, depth, width, radius, gap) {
        (Ok(s), Ok(d), Ok(w), Ok(r), Ok(g)) => Ok((
            s as usize,
            d as usize,
            night::LineConfig {
                static_radius_px: r,
                search: crate::lines::LineSearch {
                    half_width: w,
                    max_gap: g,
                },
            },
        )),
        (a, b, c, d, e) => Err([a.err(), b.err(), c.err(), d.err(), e.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

impl TaskKind for Cutouts {
    fn name(&self) -> &'static str {
        "ceres_cutouts"
    }
    fn version(&self) -> u32 {
        // 2: the satellite line (LINEDETS and LINELEN; the index's line_count and
        // line_length_px columns).
        2
    }
    fn summary(&self) -> &'static str {
        "Cutout stacks of every detection (all exposures of its field, registered), labelled by the simulator's truth when given."
    }
    fn params(&self) -> &'static [ParamSpec] {
        CUTOUT_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(CUTOUT_INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(CUTOUT_OUTPUTS)
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        cutout_config(params).err().unwrap_or_default()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let (size, depth, lines) = cutout_config(inv.params).map_err(params_error)?;
        let work = inv.out_dir.join("work");
        let (images, catalogs) = if !inputs(inv, "raw").is_empty() {
            let raw = fits_files(inputs(inv, "raw"))?;
            let (bias, flat) = (inv.input("bias")?, inv.input("flat")?);
            night::calibrate_and_extract(&raw, bias, flat, &work, log)?
        } else {
            if inputs(inv, "images").is_empty() || inputs(inv, "catalogs").is_empty() {
                return Err(failed(
                    "give `images` and `catalogs` (calibrated frames and their catalogs), or `raw` with `bias` and `flat`",
                ));
            }
            (
                inputs(inv, "images").to_vec(),
                inputs(inv, "catalogs").to_vec(),
            )
        };
        let frames = night::load_frames(&images, &catalogs)?;
        let (mut stacks, skipped) = night::make_stacks(&frames, size, depth, lines);
        if let Some(t) = inputs(inv, "truth").first() {
            let truth = Truth::load(t).map_err(bad)?;
            let ltv: HashMap<(i64, String), (f64, f64)> = frames
                .iter()
                .map(|f| ((f.run, f.ccd.clone()), f.ltv))
                .collect();
            let n = crate::truth::label(&truth, &mut stacks, &ltv);
            writeln!(
                log,
                "ceres_cutouts: {n} of {} stacks labelled from {}",
                stacks.len(),
                t.display()
            )?;
        }
        let _ = std::fs::remove_dir_all(&work);
        let dir = inv.output("cutouts")?;
        std::fs::create_dir_all(dir)?;
        let by_key: HashMap<(i64, &str), &night::CcdFrame> = frames
            .iter()
            .map(|f| ((f.run, f.ccd.as_str()), f))
            .collect();
        let by_mjd: HashMap<(String, i64), &night::CcdFrame> = frames
            .iter()
            .map(|f| ((f.ccd.clone(), (f.mjd_mid * 1e6).round() as i64), f))
            .collect();
        let mut index = String::from("id,file,night,label,kind,line_count,line_length_px\n");
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for s in &stacks {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let planes: Vec<&night::CcdFrame> = s
                .mjd
                .iter()
                .filter_map(|m| {
                    by_mjd
                        .get(&(s.ccd.clone(), (m * 1e6).round() as i64))
                        .copied()
                })
                .collect();
            let wcs = if planes.len() == s.depth && by_key.contains_key(&(s.run, s.ccd.as_str())) {
                night::wcs_headers(&planes, s)
            } else {
                Vec::new()
            };
            let file = format!("{}.fits", s.id);
            s.write(&dir.join(&file), &wcs)?;
            let label = s.label.map_or("", Label::name);
            index.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                s.id,
                file,
                s.night,
                label,
                s.kind,
                s.line.map_or(String::new(), |l| l.members.to_string()),
                s.line
                    .map_or(String::new(), |l| format!("{:.1}", l.length_px))
            ));
            *kinds
                .entry(if s.kind.is_empty() {
                    "unlabelled".into()
                } else {
                    s.kind.clone()
                })
                .or_default() += 1;
        }
        std::fs::write(inv.output("index")?, index)?;
        writeln!(
            log,
            "ceres_cutouts: {} stacks of {depth} x {size}x{size} from {} CCD frames; by kind {:?}; skipped {} detections in fields with fewer than {depth} exposures, {} in exposures that could not be registered",
            stacks.len(),
            frames.len(),
            kinds,
            skipped.too_few_exposures,
            skipped.unregistered
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Dataset;

/// `context_px` of `ceres_dataset` must be 0 or a multiple of `cutout_px` above it.
fn context_problem(p: &Map<String, J>) -> Option<(&'static str, String)> {
    let size = num(p, "cutout_px", 32.0, 4.0, 512.0).ok()? as usize;
    let context = num(p, "context_px", 64.0, 0.0, 512.0).ok()? as usize;
    (context != 0 && (context <= size || !context.is_multiple_of(size))).then(|| {
        (
            "context_px",
            format!("{context}: expected 0 (none) or a multiple of cutout_px ({size}) above it"),
        )
    })
}

const DATASET_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "exposures",
        ty: PType::Int,
        required: false,
        default: Some("4"),
        doc: "Planes per example (stacks with fewer are skipped).",
    },
    ParamSpec {
        name: "cutout_px",
        ty: PType::Int,
        required: false,
        default: Some("32"),
        doc: "Side of the network's input, pixels: the central part of each cutout.",
    },
    ParamSpec {
        name: "context_px",
        ty: PType::Int,
        required: false,
        default: Some("64"),
        doc: "Also the central `context_px` of each plane block-averaged down to `cutout_px`, one more channel per exposure (where a trail goes, where a fast asteroid is in the other exposures); a multiple of `cutout_px`, 0 for none. Stacks smaller than this are skipped.",
    },
    ParamSpec {
        name: "validation_fraction",
        ty: PType::Float,
        required: false,
        default: Some("0.15"),
        doc: "Fraction of the nights for validation (at least one night).",
    },
    ParamSpec {
        name: "test_fraction",
        ty: PType::Float,
        required: false,
        default: Some("0.15"),
        doc: "Fraction of the nights held out for the test (at least one night).",
    },
    ParamSpec {
        name: "seed",
        ty: PType::Int,
        required: false,
        default: Some("1"),
        doc: "Seed of the night shuffle.",
    },
];

const DATASET_INPUTS: &[PortSpec] = &[
    PortSpec { name: "cutouts", file: "", required: true, doc: "Directories (or files) of cutout cubes, gathered over nights." },
    PortSpec { name: "train_only", file: "", required: false, doc: "More cutout cubes whose nights go to the training split only (never validation or test), e.g. nights simulated with more of an artifact the network sees too rarely; a night may not be in both inputs." },
    PortSpec { name: "labels", file: "", required: false, doc: "CSV files `id,label[,kind[,source]]` (label asteroid/artifact) that label or relabel stacks, e.g. from astronomer-validated MPC reports or SkyBoT matches." },
];

impl TaskKind for Dataset {
    fn name(&self) -> &'static str {
        "ceres_dataset"
    }
    fn version(&self) -> u32 {
        // 2: examples carry the satellite line (line_count, line_length_px).
        2
    }
    fn summary(&self) -> &'static str {
        "A CERES dataset: labelled cutout stacks split by night into train, validation and test, with a manifest and the class balance."
    }
    fn params(&self) -> &'static [ParamSpec] {
        DATASET_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(DATASET_INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(&[PortSpec {
            name: "dataset",
            file: "dataset",
            required: true,
            doc: "manifest.json and train/validation/test.safetensors.",
        }])
    }
    fn validate(&self, p: &Map<String, J>) -> Vec<(&'static str, String)> {
        [
            num(p, "exposures", 4.0, 1.0, 16.0).err(),
            num(p, "cutout_px", 32.0, 4.0, 512.0).err(),
            num(p, "context_px", 64.0, 0.0, 512.0).err(),
            context_problem(p),
            num(p, "validation_fraction", 0.15, 0.0, 0.5).err(),
            num(p, "test_fraction", 0.15, 0.0, 0.5).err(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let p = inv.params;
        let e = |r: Result<f64, (&'static str, String)>| r.map_err(|x| params_error(vec![x]));
        let exposures = e(num(p, "exposures", 4.0, 1.0, 16.0))? as usize;
        let cutout_px = e(num(p, "cutout_px", 32.0, 4.0, 512.0))? as usize;
        let context_px = e(num(p, "context_px", 64.0, 0.0, 512.0))? as usize;
        if let Some(problem) = context_problem(p) {
            return Err(params_error(vec![problem]));
        }
        let vf = e(num(p, "validation_fraction", 0.15, 0.0, 0.5))?;
        let tf = e(num(p, "test_fraction", 0.15, 0.0, 0.5))?;
        let seed = inv.int("seed").unwrap_or(1).max(0) as u64;
        let mut relabel: HashMap<String, (Label, String, String)> = HashMap::new();
        for path in inputs(inv, "labels") {
            let text = std::fs::read_to_string(path)
                .map_err(|err| failed(format!("{}: cannot read: {err}", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let f: Vec<&str> = line.split(',').map(str::trim).collect();
                if line.trim().is_empty() || (n == 0 && f[0] == "id") {
                    continue;
                }
                let label = f.get(1).and_then(|l| Label::parse(l)).ok_or_else(|| {
                    bad(format!(
                        "{}:{}: `{line}`: expected id,label[,kind[,source]] with label asteroid or artifact",
                        path.display(),
                        n + 1
                    ))
                })?;
                relabel.insert(
                    f[0].to_owned(),
                    (
                        label,
                        f.get(2).unwrap_or(&"").to_string(),
                        f.get(3)
                            .map_or_else(|| path.display().to_string(), |s| s.to_string()),
                    ),
                );
            }
        }
        let files = fits_files(inputs(inv, "cutouts"))?;
        let extra = fits_files(inputs(inv, "train_only"))?;
        let mut stacks = Vec::new();
        let mut names = Vec::new();
        let mut unreadable = 0;
        // Nights of each input, and the first file of each (to name it if a night is in both).
        let mut split_nights: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut train_only: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (idx, f) in files.iter().chain(&extra).enumerate() {
            match Stack::read(f) {
                Ok(mut s) => {
                    if let Some((l, k, src)) = relabel.get(&s.id) {
                        s.label = Some(*l);
                        if !k.is_empty() {
                            s.kind = k.clone();
                        }
                        s.label_source = src.clone();
                    }
                    let nights = if idx < files.len() {
                        &mut split_nights
                    } else {
                        &mut train_only
                    };
                    nights.entry(s.night.clone()).or_insert_with(|| f.clone());
                    stacks.push(s);
                    names.push(f.display().to_string());
                }
                Err(err) => {
                    // One bad cube never sinks the rest: report it and go on.
                    unreadable += 1;
                    writeln!(log, "ceres_dataset: skipped: {err}")?;
                }
            }
        }
        if let Some((night, f)) = train_only
            .iter()
            .find(|(n, _)| split_nights.contains_key(*n))
        {
            return Err(bad(format!(
                "night {night} is in both `cutouts` ({}) and `train_only` ({}): a night's \
                 stacks must all go to one split",
                split_nights[night].display(),
                f.display()
            )));
        }
        let dir = inv.output("dataset")?;
        let (m, skipped) = dataset::build(
            &stacks,
            &names,
            &train_only.into_keys().collect(),
            dataset::BuildConfig {
                exposures,
                cutout_px,
                context_px,
                validation_fraction: vf,
                test_fraction: tf,
                seed,
            },
            dir,
        )
        .map_err(bad)?;
        for (name, s) in &m.splits {
            writeln!(
                log,
                "ceres_dataset: {name}: {} nights, {} asteroids, {} artifacts ({:.1}% asteroids); kinds {:?}",
                s.nights.len(),
                s.balance.asteroid,
                s.balance.artifact,
                100.0 * s.balance.asteroid as f64 / (s.balance.asteroid + s.balance.artifact).max(1) as f64,
                s.balance.kinds
            )?;
        }
        if !m.train_only_nights.is_empty() {
            writeln!(
                log,
                "ceres_dataset: train only: {} nights ({})",
                m.train_only_nights.len(),
                m.train_only_nights.join(", ")
            )?;
        }
        writeln!(log, "ceres_dataset: {} cubes read, {unreadable} unreadable, {skipped} unlabelled or too small", files.len() + extra.len())?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Train;

const TRAIN_PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "width", ty: PType::Int, required: false, default: Some("8"), doc: "Channels of the first stage (doubled at each later stage)." },
    ParamSpec { name: "stages", ty: PType::Int, required: false, default: Some("3"), doc: "Stages; each after the first halves the cutout." },
    ParamSpec { name: "blocks_per_stage", ty: PType::Int, required: false, default: Some("1"), doc: "Residual blocks per stage (the depth)." },
    ParamSpec { name: "epochs", ty: PType::Int, required: false, default: Some("20"), doc: "Most epochs to train." },
    ParamSpec { name: "batch_size", ty: PType::Int, required: false, default: Some("64"), doc: "Stacks per step." },
    ParamSpec { name: "learning_rate", ty: PType::Float, required: false, default: Some("0.003"), doc: "Peak AdamW learning rate (linear warm-up, then cosine to 5%)." },
    ParamSpec { name: "weight_decay", ty: PType::Float, required: false, default: Some("0.0001"), doc: "AdamW weight decay." },
    ParamSpec { name: "warmup_epochs", ty: PType::Int, required: false, default: Some("1"), doc: "Epochs of linear warm-up." },
    ParamSpec { name: "precision_floor", ty: PType::Float, required: false, default: Some("0.9"), doc: "Early stopping keeps the epoch with the best validation asteroid recall at this precision or better." },
    ParamSpec { name: "recall_target", ty: PType::Float, required: false, default: Some("0.95"), doc: "The decision threshold is set on the validation nights to reach this asteroid recall." },
    ParamSpec { name: "patience", ty: PType::Int, required: false, default: Some("6"), doc: "Epochs without a better validation recall before stopping." },
    ParamSpec { name: "seed", ty: PType::Int, required: false, default: Some("1"), doc: "Seed of initialisation, shuffling and augmentation." },
    ParamSpec { name: "augment", ty: PType::Bool, required: false, default: Some("true"), doc: "Random flips, 90 degree rotations and noise." },
    ParamSpec { name: "noise_sigma", ty: PType::Float, required: false, default: Some("0.05"), doc: "Augmentation noise, normalised units." },
    ParamSpec { name: "asteroid_weight", ty: PType::Float, required: false, default: None, doc: "Loss weight of asteroids (default: artifacts / asteroids in the training split)." },
    SATELLITE_LINE_PARAMS[0],
    SATELLITE_LINE_PARAMS[1],
    DEVICE_PARAM,
    ParamSpec { name: "checkpoint_dir", ty: PType::Str, required: false, default: None, doc: "Where epoch checkpoints go (default: `cache/ceres/KEY` in the working directory); a killed training resumes from them." },
];

const TRAIN_OUTPUTS: &[PortSpec] = &[
    PortSpec { name: "model", file: "model", required: true, doc: "model.safetensors and model.json (config, threshold)." },
    PortSpec { name: "metrics", file: "metrics.json", required: true, doc: "Per epoch: loss, validation precision, recall, F1 per class, confusion matrix, seconds." },
    PortSpec { name: "plot", file: "metrics.png", required: true, doc: "The metrics per epoch as a plot." },
];

fn model_config(
    p: &Map<String, J>,
    exposures: usize,
    cutout_px: usize,
    context_px: usize,
) -> Result<ModelConfig, Vec<(&'static str, String)>> {
    let mut errs = Vec::new();
    let mut g = |n, d, lo, hi| {
        num(p, n, d, lo, hi).unwrap_or_else(|e| {
            errs.push(e);
            d
        })
    };
    let c = ModelConfig {
        exposures,
        cutout_px,
        width: g("width", 8.0, 1.0, 256.0) as usize,
        stages: g("stages", 3.0, 1.0, 6.0) as usize,
        blocks_per_stage: g("blocks_per_stage", 1.0, 0.0, 16.0) as usize,
        context_px,
    };
    errs.extend(c.problems());
    if errs.is_empty() {
        Ok(c)
    } else {
        Err(errs)
    }
}

fn train_config(p: &Map<String, J>) -> Result<TrainConfig, Vec<(&'static str, String)>> {
    let mut errs = Vec::new();
    let mut g = |n, d, lo, hi| {
        num(p, n, d, lo, hi).unwrap_or_else(|e| {
            errs.push(e);
            d
        })
    };
    let c = TrainConfig {
        epochs: g("epochs", 20.0, 1.0, 10000.0) as usize,
        batch_size: g("batch_size", 64.0, 1.0, 65536.0) as usize,
        learning_rate: g("learning_rate", 0.003, 1e-8, 10.0),
        weight_decay: g("weight_decay", 1e-4, 0.0, 1.0),
        warmup_epochs: g("warmup_epochs", 1.0, 0.0, 1000.0) as usize,
        precision_floor: g("precision_floor", 0.9, 0.0, 1.0),
        recall_target: g("recall_target", 0.95, 0.0, 1.0),
        patience: g("patience", 6.0, 1.0, 10000.0) as usize,
        seed: g("seed", 1.0, 0.0, 1e15) as u64,
        augment: p
            .get("augment")
            .and_then(|v| v.as_bool().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(true),
        noise_sigma: g("noise_sigma", 0.05, 0.0, 10.0),
        asteroid_weight: p
            .get("asteroid_weight")
            .map(|_| g("asteroid_weight", 1.0, 1e-6, 1e6)),
    };
    if errs.is_empty() {
        Ok(c)
    } else {
        Err(errs)
    }
}

/// The working directory (the parent of `out/`) of an instance's output directory.
fn workdir_of(out_dir: &Path) -> Option<&Path> {
    out_dir
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "out"))?
        .parent()
}

impl TaskKind for Train {
    fn name(&self) -> &'static str {
        "ceres_train"
    }
    fn version(&self) -> u32 {
        // 2: validation metrics, early stopping and thresholds with the satellite-line veto.
        2
    }
    fn summary(&self) -> &'static str {
        "Train the CERES residual CNN on a dataset; checkpoints every epoch, early stopping on validation recall at a precision floor."
    }
    fn params(&self) -> &'static [ParamSpec] {
        TRAIN_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(&[
            PortSpec { name: "dataset", file: "", required: true, doc: "A `ceres_dataset` directory." },
            PortSpec { name: "pretrained", file: "", required: false, doc: "Safetensors weights to start from (tensors matching by name and shape are loaded)." },
        ])
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(TRAIN_OUTPUTS)
    }
    fn validate(&self, p: &Map<String, J>) -> Vec<(&'static str, String)> {
        let mut v = model_config(p, 4, 32, 0).err().unwrap_or_default();
        v.extend(train_config(p).err().unwrap_or_default());
        v.extend(veto_params(p).err().unwrap_or_default());
        v.extend(device_problem(p));
        v
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let dir = inv.input("dataset")?;
        let m = dataset::read_manifest(dir).map_err(bad)?;
        let mcfg = model_config(inv.params, m.exposures, m.cutout_px, m.context_px)
            .map_err(params_error)?;
        let tcfg = train_config(inv.params).map_err(params_error)?;
        let veto = veto_params(inv.params).map_err(params_error)?;
        let dev = device_of(inv)?;
        let net = Ceres::new(&mcfg, &dev, tcfg.seed).map_err(failed)?;
        if let Some(pre) = inputs(inv, "pretrained").first() {
            let skipped = net.load_weights(pre, true).map_err(bad)?;
            writeln!(
                log,
                "ceres_train: pretrained weights from {}; {} tensors left as initialised: {:?}",
                pre.display(),
                skipped.len(),
                skipped
            )?;
        }
        let train_data = dataset::load_split(dir, &m, "train").map_err(bad)?;
        let mut val = dataset::load_split(dir, &m, "validation").map_err(bad)?;
        let val_examples = m
            .splits
            .get("validation")
            .map_or(&[][..], |s| s.examples.as_slice());
        val.veto = veto.rows(val_examples);
        let mut vetoed: BTreeMap<&str, usize> = BTreeMap::new();
        for (e, v) in val_examples.iter().zip(&val.veto) {
            if *v {
                *vetoed.entry(e.kind.as_str()).or_default() += 1;
            }
        }
        let without = val_examples.len() - with_line_count(val_examples);
        writeln!(
            log,
            "ceres_train: {}: calls {} validation stacks artifacts, by kind {vetoed:?}{}",
            veto_description(veto),
            val.veto.iter().filter(|v| **v).count(),
            if without > 0 {
                format!("; {without} validation stacks have no satellite-line count (a dataset built before ceres_cutouts 2): left to the network")
            } else {
                String::new()
            }
        )?;
        let manifest_text = std::fs::read(dir.join("manifest.json"))?;
        let mut key_src = manifest_text.clone();
        key_src.extend(serde_json::to_vec(&(&mcfg, &tcfg)).map_err(failed)?);
        if veto.min_members > 0 {
            // Keys of trainings without the veto are as before.
            key_src.extend(format!("veto {} {}", veto.min_members, veto.min_length_px).bytes());
        }
        if let Some(pre) = inputs(inv, "pretrained").first() {
            key_src.extend(std::fs::read(pre)?);
        }
        let key = format!("{:016x}", train::fnv1a(&key_src));
        let ckpt = match inv.str("checkpoint_dir").filter(|s| !s.is_empty()) {
            Some(d) => PathBuf::from(d).join(&key),
            None => workdir_of(inv.out_dir)
                .unwrap_or(inv.out_dir)
                .join("cache")
                .join("ceres")
                .join(&key),
        };
        writeln!(
            log,
            "ceres_train: {} ({} parameters); {} training and {} validation stacks; checkpoints in {}",
            model::describe(&mcfg),
            net.vars().iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
            train_data.n,
            val.n,
            ckpt.display()
        )?;
        let t0 = Instant::now();
        let done = train::train(&net, &tcfg, &train_data, &val, &ckpt, &key, inv.cancel, log)
            .map_err(|e| {
                if inv.cancel.load(Ordering::Relaxed) {
                    TaskError::Cancelled
                } else {
                    failed(e)
                }
            })?;
        let scores = val.vetoed(&train::score_all(&net, &val, &dev).map_err(failed)?);
        let threshold =
            metrics::threshold_for_recall(&scores, &val.labels, tcfg.recall_target).max(0.0);
        let (_, threshold_at_floor) =
            metrics::recall_at_precision(&scores, &val.labels, tcfg.precision_floor);
        let out = inv.output("model")?;
        std::fs::create_dir_all(out)?;
        net.save(&out.join("model.safetensors")).map_err(failed)?;
        let normalisation = if mcfg.context_px > 0 {
            model::NORMALISATION_CONTEXT
        } else {
            model::NORMALISATION
        };
        let card = ModelCard {
            format: model::CARD_FORMAT.into(),
            config: mcfg,
            threshold,
            recall_target: tcfg.recall_target,
            normalisation: normalisation.into(),
            precision_floor: Some(tcfg.precision_floor),
            threshold_at_floor: Some(threshold_at_floor),
            trained_epochs: done.state.epochs_done,
            satellite_line: (veto.min_members > 0)
                .then_some((veto.min_members, veto.min_length_px)),
        };
        std::fs::write(
            out.join("model.json"),
            serde_json::to_string_pretty(&card).map_err(failed)?,
        )?;
        let per_epoch: Vec<f64> = done.state.history.iter().map(|h| h.seconds).collect();
        let metrics = json!({
            "best_epoch": done.state.best_epoch,
            "resumed_after_epoch": done.resumed_from,
            "threshold": threshold,
            "validation_at_threshold": metrics::report(&scores, &val.labels, threshold, tcfg.precision_floor),
            "mean_seconds_per_epoch": per_epoch.iter().sum::<f64>() / per_epoch.len().max(1) as f64,
            "epochs": done.state.history,
        });
        std::fs::write(
            inv.output("metrics")?,
            serde_json::to_string_pretty(&metrics).map_err(failed)?,
        )?;
        crate::plot::write(&done.state.history, inv.output("plot")?).map_err(failed)?;
        writeln!(
            log,
            "ceres_train: best epoch {} of {} (resumed after {}), threshold {threshold:.4} for recall {} on validation; {:.1} s",
            done.state.best_epoch,
            done.state.epochs_done,
            done.resumed_from,
            tcfg.recall_target,
            t0.elapsed().as_secs_f64()
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Evaluate;

impl TaskKind for Evaluate {
    fn name(&self) -> &'static str {
        "ceres_evaluate"
    }
    fn version(&self) -> u32 {
        // 2: the satellite-line veto.
        2
    }
    fn summary(&self) -> &'static str {
        "Score a dataset split (the held-out test nights by default) with a model: precision, recall, F1 per class, confusion matrix, false positives by kind."
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[
            ParamSpec {
                name: "split",
                ty: PType::Str,
                required: false,
                default: Some("\"test\""),
                doc: "train, validation or test.",
            },
            ParamSpec {
                name: "precision_floor",
                ty: PType::Float,
                required: false,
                default: Some("0.9"),
                doc: "Also report the best recall at this precision (a bound: its threshold is tuned on the split itself).",
            },
            ParamSpec {
                name: "threshold",
                ty: PType::Float,
                required: false,
                default: None,
                doc: "Scores at or above are asteroids (default: the model's).",
            },
            SATELLITE_LINE_PARAMS[0],
            SATELLITE_LINE_PARAMS[1],
            DEVICE_PARAM,
        ]
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(&[
            PortSpec {
                name: "model",
                file: "",
                required: true,
                doc: "A `ceres_train` model directory.",
            },
            PortSpec {
                name: "dataset",
                file: "",
                required: true,
                doc: "A `ceres_dataset` directory.",
            },
        ])
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(&[PortSpec {
            name: "report",
            file: "evaluation.json",
            required: true,
            doc: "The metrics at the model's threshold.",
        }])
    }
    fn validate(&self, p: &Map<String, J>) -> Vec<(&'static str, String)> {
        let mut v: Vec<_> = [
            num(p, "precision_floor", 0.9, 0.0, 1.0).err(),
            num(p, "threshold", 0.5, 0.0, 1.0).err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        v.extend(veto_params(p).err().unwrap_or_default());
        v.extend(device_problem(p));
        if let Some(s) = p.get("split").and_then(J::as_str) {
            if !s.contains("${") && !dataset::SPLITS.contains(&s) {
                v.push((
                    "split",
                    format!("`{s}`: expected train, validation or test"),
                ));
            }
        }
        v
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let dev = device_of(inv)?;
        let (net, card) = model::load_model(inv.input("model")?, &dev).map_err(bad)?;
        let dir = inv.input("dataset")?;
        let m = dataset::read_manifest(dir).map_err(bad)?;
        check_shapes(
            &card.config,
            m.exposures,
            m.cutout_px.max(m.context_px),
            &dir.display().to_string(),
        )?;
        if m.cutout_px != card.config.cutout_px || m.context_px != card.config.context_px {
            return Err(bad(format!(
                "{}: the dataset's inputs are {}x{} px with context_px {}, but the model ({}) reads {}x{} px with context_px {}: build the dataset with the model's cutout_px and context_px (ceres_dataset)",
                dir.display(),
                m.cutout_px,
                m.cutout_px,
                m.context_px,
                model::describe(&card.config),
                card.config.cutout_px,
                card.config.cutout_px,
                card.config.context_px
            )));
        }
        let split = inv.str("split").unwrap_or("test");
        let floor = inv.float("precision_floor").unwrap_or(0.9);
        let veto = veto_params(inv.params).map_err(params_error)?;
        let threshold = inv.float("threshold").unwrap_or(card.threshold);
        let scored = score_split(&net, dir, &m, split, veto, &dev)?;
        let Scored {
            data,
            raw,
            scores,
            examples,
            seconds,
        } = &scored;
        let vetoed_rows = &data.veto;
        let r = metrics::report(scores, &data.labels, threshold, floor);
        let before = metrics::report(raw, &data.labels, threshold, floor);
        let with_line_counts = with_line_count(examples);
        if with_line_counts < examples.len() {
            writeln!(
                log,
                "ceres_evaluate: {} of {} {split} stacks have no satellite-line count in {} (a dataset built before ceres_cutouts 2, or cubes without LINEDETS): the veto leaves them to the network",
                examples.len() - with_line_counts,
                examples.len(),
                dir.join("manifest.json").display()
            )?;
        }
        // At the threshold chosen on the validation nights for the model's precision floor:
        // what the held-out nights honestly get (r.recall_at_floor is tuned on them).
        let at_validation_floor = card.threshold_at_floor.map(|t| {
            let c = metrics::report(scores, &data.labels, t, floor);
            json!({
                "precision_floor": card.precision_floor,
                "threshold": t,
                "precision": c.asteroid.precision,
                "recall": c.asteroid.recall,
            })
        });
        // The thresholds the veto's validation nights give (the model's were set without it):
        // for the model's recall target and for the precision floor, and the split at each.
        let with_veto_thresholds = if split != "validation" && veto.min_members > 0 {
            let v = score_split(&net, dir, &m, "validation", veto, &dev)?;
            let t_recall =
                metrics::threshold_for_recall(&v.scores, &v.data.labels, card.recall_target)
                    .max(0.0);
            let (_, t_floor) = metrics::recall_at_precision(&v.scores, &v.data.labels, floor);
            let at = |t: f64| {
                let c = metrics::report(scores, &data.labels, t, floor);
                json!({"threshold": t, "precision": c.asteroid.precision, "recall": c.asteroid.recall, "confusion": c.confusion})
            };
            Some(json!({
                "recall_target": card.recall_target,
                "at_recall_target": at(t_recall),
                "precision_floor": floor,
                "at_precision_floor": at(t_floor),
            }))
        } else {
            None
        };
        // What the errors are: false positives by kind, and what the veto took, by kind.
        let mut fp: BTreeMap<String, usize> = Default::default();
        let mut by_kind: BTreeMap<String, (usize, usize)> = Default::default();
        let mut vetoed: BTreeMap<String, (usize, usize)> = Default::default();
        for (i, ex) in examples.iter().enumerate() {
            let called = scores[i] as f64 >= threshold;
            let e = by_kind.entry(ex.kind.clone()).or_default();
            e.0 += 1;
            e.1 += called as usize;
            if called && data.labels[i] == 0 {
                *fp.entry(ex.kind.clone()).or_default() += 1;
            }
            if vetoed_rows[i] {
                let e = vetoed.entry(ex.kind.clone()).or_default();
                e.0 += 1;
                e.1 += (raw[i] as f64 >= threshold) as usize;
            }
        }
        let nights = m
            .splits
            .get(split)
            .map(|s| s.nights.clone())
            .unwrap_or_default();
        let out = json!({
            "split": split,
            "nights": nights,
            "stacks": data.n,
            "threshold": threshold,
            "satellite_line_min": veto.min_members,
            "satellite_line_px": veto.min_length_px,
            "stacks_with_line_count": with_line_counts,
            "metrics": r,
            "without_veto": before,
            "at_validation_floor_threshold": at_validation_floor,
            "with_veto_validation_thresholds": with_veto_thresholds,
            "false_positives_by_kind": fp,
            "called_asteroid_by_kind": by_kind.iter().map(|(k, (n, c))| (k.clone(), json!({"stacks": n, "called_asteroid": c}))).collect::<Map<String, J>>(),
            "vetoed_by_kind": vetoed.iter().map(|(k, (n, c))| (k.clone(), json!({"stacks": n, "network_called_asteroid": c}))).collect::<Map<String, J>>(),
            "stacks_per_second": data.n as f64 / seconds.max(1e-9),
        });
        std::fs::write(
            inv.output("report")?,
            serde_json::to_string_pretty(&out).map_err(failed)?,
        )?;
        let pr = |v: &J| {
            format!(
                "{:.4}: P {:.3} R {:.3}",
                v["threshold"].as_f64().unwrap_or(f64::NAN),
                v["precision"].as_f64().unwrap_or(f64::NAN),
                v["recall"].as_f64().unwrap_or(f64::NAN)
            )
        };
        writeln!(
            log,
            "ceres_evaluate: {split} ({} nights, {} stacks): asteroid P {:.3} R {:.3} F1 {:.3}, artifact P {:.3} R {:.3} at threshold {:.4}, {} (without it P {:.3} R {:.3}); best recall {:.3} at precision >= {floor} (threshold tuned on this split); at the validation's threshold for that floor {}; confusion {:?}; false positives by kind {:?}; vetoed by kind (stacks, of them called asteroid by the network) {:?}",
            nights.len(),
            data.n,
            r.asteroid.precision,
            r.asteroid.recall,
            r.asteroid.f1,
            r.artifact.precision,
            r.artifact.recall,
            threshold,
            veto_description(veto),
            before.asteroid.precision,
            before.asteroid.recall,
            r.recall_at_floor,
            at_validation_floor.as_ref().map_or("(not in the model card)".to_string(), pr),
            r.confusion,
            fp,
            vetoed
        )?;
        if let Some(w) = &with_veto_thresholds {
            writeln!(
                log,
                "ceres_evaluate: thresholds set on the validation nights with the veto: for recall {} {}; for precision {floor} {}",
                card.recall_target,
                pr(&w["at_recall_target"]),
                pr(&w["at_precision_floor"])
            )?;
        }
        Ok(())
    }
}

/// One split scored: the network's scores (`raw`), the same with the satellite-line veto
/// (`scores`; `data.veto` says which stacks it took), and the manifest's examples in the same
/// order.
struct Scored {
    data: dataset::Data,
    raw: Vec<f32>,
    scores: Vec<f32>,
    examples: Vec<dataset::Example>,
    seconds: f64,
}

fn score_split(
    net: &Ceres,
    dir: &Path,
    m: &dataset::Manifest,
    split: &str,
    veto: Veto,
    dev: &Device,
) -> Result<Scored, TaskError> {
    let mut data = dataset::load_split(dir, m, split).map_err(bad)?;
    let examples = m
        .splits
        .get(split)
        .map(|s| s.examples.clone())
        .unwrap_or_default();
    if examples.len() != data.n {
        return Err(bad(format!(
            "{}: the manifest lists {} {split} examples, {split}.safetensors holds {}: the dataset is inconsistent, build it again (ceres_dataset)",
            dir.join("manifest.json").display(),
            examples.len(),
            data.n
        )));
    }
    let t0 = Instant::now();
    let raw = train::score_all(net, &data, dev).map_err(failed)?;
    let seconds = t0.elapsed().as_secs_f64();
    data.veto = veto.rows(&examples);
    let scores = data.vetoed(&raw);
    Ok(Scored {
        data,
        raw,
        scores,
        examples,
        seconds,
    })
}

fn check_shapes(
    c: &ModelConfig,
    exposures: usize,
    size: usize,
    what: &str,
) -> Result<(), TaskError> {
    if exposures < c.exposures || size < c.stack_px() {
        return Err(bad(format!(
            "{what}: stacks of {exposures} exposures of {size}x{size} px, but the model ({}) needs {} exposures of at least {}x{} px{}",
            model::describe(c),
            c.exposures,
            c.stack_px(),
            c.stack_px(),
            if size < c.stack_px() {
                format!(": cut them with ceres_cutouts cutout_px >= {}", c.stack_px())
            } else {
                String::new()
            }
        )));
    }
    if exposures != c.exposures {
        return Err(bad(format!(
            "{what}: stacks of {exposures} exposures, but the model ({}) was trained on {}",
            model::describe(c),
            c.exposures
        )));
    }
    Ok(())
}

/// The satellite-line veto: a stack whose detection has at least `min_members` transients of
/// its exposure in one run along a straight line through it, the run at least `min_length_px`
/// long, is an artifact (a satellite trail's piece) whatever the network says. The defaults are
/// measured on training and validation nights only (docs/ceres.md, "The satellite-line veto").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Veto {
    pub min_members: usize,
    pub min_length_px: f64,
}

impl Veto {
    /// Whether a stack with this line (members, run length) is called an artifact; `None`
    /// (no line information) never is.
    pub fn vetoes(&self, members: Option<usize>, length_px: Option<f64>) -> bool {
        self.min_members > 0
            && members.is_some_and(|n| n >= self.min_members)
            && length_px.is_some_and(|l| l >= self.min_length_px)
    }

    /// Which of a split's examples the veto calls artifacts, in the manifest's order.
    fn rows(&self, examples: &[dataset::Example]) -> Vec<bool> {
        examples
            .iter()
            .map(|e| self.vetoes(e.line_count, e.line_length_px))
            .collect()
    }
}

/// How many of a split's examples carry a satellite line (datasets built before
/// `ceres_cutouts` 2 have none: the veto leaves those to the network).
fn with_line_count(examples: &[dataset::Example]) -> usize {
    examples
        .iter()
        .filter(|e| e.line_count.is_some() && e.line_length_px.is_some())
        .count()
}

const SATELLITE_LINE_MIN: f64 = 10.0;
const SATELLITE_LINE_PX: f64 = 400.0;

const DEVICE_PARAM: ParamSpec = ParamSpec {
    name: "device",
    ty: PType::Str,
    required: false,
    default: None,
    doc: "Where the network runs: `cpu` (the default) or `cuda` / `cuda:N` (a GPU; needs nearby built with `--features cuda`).",
};

/// The `device` param's problem, if it names no device.
fn device_problem(p: &Map<String, J>) -> Option<(&'static str, String)> {
    let s = p.get("device")?.as_str()?;
    if s.contains("${") {
        return None;
    }
    crate::device::parse(s).err().map(|e| ("device", e))
}

/// The device the `device` param names (the CPU when it is absent).
fn device_of(inv: &Invocation) -> Result<Device, TaskError> {
    crate::device::open(inv.str("device").unwrap_or("cpu")).map_err(bad)
}

const SATELLITE_LINE_PARAMS: [ParamSpec; 2] = [
    ParamSpec {
        name: "satellite_line_min",
        ty: PType::Int,
        required: false,
        default: Some("10"),
        doc: "The satellite-line veto: a stack whose detection has at least this many transients of its exposure in one run along a straight line through it (LINEDETS, `ceres_cutouts`), the run at least `satellite_line_px` long, is an artifact whatever the network's score; 0 turns the veto off. Stacks without the count are left to the network.",
    },
    ParamSpec {
        name: "satellite_line_px",
        ty: PType::Float,
        required: false,
        default: Some("400"),
        doc: "Shortest run (LINELEN, px) the veto takes for a satellite: longer than any asteroid's trail in one exposure (the small preset's fastest, 100\"/min for 60 s at 0.33\"/px, trails 300 px).",
    },
];

/// How the logs name the veto in force.
fn veto_description(v: Veto) -> String {
    if v.min_members == 0 {
        "the satellite-line veto off (satellite_line_min 0)".into()
    } else {
        format!(
            "with the satellite-line veto (>= {} transients in a run >= {} px along a line)",
            v.min_members, v.min_length_px
        )
    }
}

fn veto_params(p: &Map<String, J>) -> Result<Veto, Vec<(&'static str, String)>> {
    let n = num(p, "satellite_line_min", SATELLITE_LINE_MIN, 0.0, 1e6);
    let l = num(p, "satellite_line_px", SATELLITE_LINE_PX, 0.0, 1e6);
    match (n, l) {
        (Ok(n), Ok(l)) => Ok(Veto {
            min_members: n as usize,
            min_length_px: l,
        }),
        (a, b) => Err([a.err(), b.err()].into_iter().flatten().collect()),
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Classify;

impl TaskKind for Classify {
    fn name(&self) -> &'static str {
        "ceres_classify"
    }
    fn version(&self) -> u32 {
        // 2: the satellite-line veto; line_count, line_length_px and reason columns.
        2
    }
    fn summary(&self) -> &'static str {
        "Score a night's cutout stacks with a CERES model; scores and labels into a CSV and into copies of the catalogs (CERES_SCORE, CERES_ASTEROID)."
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[
            ParamSpec { name: "threshold", ty: PType::Float, required: false, default: None, doc: "Scores at or above are asteroids (default: the model's, set for its recall target)." },
            ParamSpec { name: "batch_size", ty: PType::Int, required: false, default: Some("256"), doc: "Stacks per forward pass." },
            SATELLITE_LINE_PARAMS[0],
            SATELLITE_LINE_PARAMS[1],
            DEVICE_PARAM,
        ]
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(&[
            PortSpec { name: "model", file: "", required: true, doc: "A model directory (model.safetensors, model.json)." },
            PortSpec { name: "cutouts", file: "", required: true, doc: "Directories (or files) of cutout cubes." },
            PortSpec { name: "catalogs", file: "", required: false, doc: "The night's extract catalogs: copied with the scores added, rows matched by NUMBER." },
        ])
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(&[
            PortSpec { name: "scores", file: "scores.csv", required: true, doc: "id,run,ccd,number,x,y,score,line_count,line_length_px,reason,asteroid per stack (reason: `network`, or `satellite_line` where the veto called it an artifact)." },
            PortSpec { name: "catalogs", file: "catalogs", required: true, doc: "The catalogs with CERES_SCORE (-1 where no stack), CERES_ASTEROID (1/0) and CERES_LINE (the satellite-line count, -1 where unknown) columns." },
        ])
    }
    fn validate(&self, p: &Map<String, J>) -> Vec<(&'static str, String)> {
        [
            num(p, "threshold", 0.5, 0.0, 1.0).err(),
            num(p, "batch_size", 256.0, 1.0, 65536.0).err(),
        ]
        .into_iter()
        .flatten()
        .chain(veto_params(p).err().unwrap_or_default())
        .chain(device_problem(p))
        .collect()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let dev = device_of(inv)?;
        let mdir = inv.input("model")?;
        let (net, card) = model::load_model(mdir, &dev).map_err(bad)?;
        let threshold = inv.float("threshold").unwrap_or(card.threshold);
        let bs = inv.int("batch_size").unwrap_or(256).max(1) as usize;
        let line_veto = veto_params(inv.params).map_err(params_error)?;
        let c = &card.config;
        let files = fits_files(inputs(inv, "cutouts"))?;
        let mut stacks = Vec::new();
        for f in &files {
            match Stack::read(f) {
                Ok(s) => {
                    check_shapes(c, s.depth, s.size, &f.display().to_string())?;
                    stacks.push(s);
                }
                Err(e) => writeln!(log, "ceres_classify: skipped: {e}")?,
            }
        }
        let t0 = Instant::now();
        let mut scores = Vec::with_capacity(stacks.len());
        for chunk in stacks.chunks(bs) {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let mut x = Vec::with_capacity(chunk.len() * c.channels() * c.cutout_px * c.cutout_px);
            for s in chunk {
                x.extend(
                    s.input(c.cutout_px, c.exposures, c.context_px)
                        .unwrap_or_default(),
                );
            }
            scores.extend(net.scores(&x, chunk.len(), &dev).map_err(failed)?);
        }
        let secs = t0.elapsed().as_secs_f64();
        let veto: Vec<bool> = stacks
            .iter()
            .map(|s| line_veto.vetoes(s.line.map(|l| l.members), s.line.map(|l| l.length_px)))
            .collect();
        let called: Vec<bool> = scores
            .iter()
            .zip(&veto)
            .map(|(p, v)| !v && *p as f64 >= threshold)
            .collect();
        let mut csv =
            String::from("id,run,ccd,number,x,y,score,line_count,line_length_px,reason,asteroid\n");
        let mut by_det: HashMap<(String, i64, i64), Call> = HashMap::new();
        for (i, (s, p)) in stacks.iter().zip(&scores).enumerate() {
            csv.push_str(&format!(
                "{},{},{},{},{:.3},{:.3},{:.6},{},{},{},{}\n",
                s.id,
                s.run,
                s.ccd,
                s.number,
                s.x,
                s.y,
                p,
                s.line.map_or(String::new(), |l| l.members.to_string()),
                s.line
                    .map_or(String::new(), |l| format!("{:.1}", l.length_px)),
                if veto[i] { "satellite_line" } else { "network" },
                called[i] as u8
            ));
            by_det.insert(
                (s.ccd.clone(), (s.mjd_obs * 1e6).round() as i64, s.number),
                Call {
                    score: *p,
                    asteroid: called[i],
                    line_count: s
                        .line
                        .map_or(-1, |l| l.members.min(i32::MAX as usize) as i32),
                },
            );
        }
        std::fs::write(inv.output("scores")?, csv)?;
        let out_cats = inv.output("catalogs")?;
        std::fs::create_dir_all(out_cats)?;
        for (k, cat) in inputs(inv, "catalogs").iter().enumerate() {
            annotate(cat, &out_cats.join(format!("{k:04}_catalog.fits")), &by_det)?;
        }
        let without_count = stacks.iter().filter(|s| s.line.is_none()).count();
        if without_count > 0 {
            writeln!(
                log,
                "ceres_classify: {without_count} of {} stacks have no satellite-line count (cubes cut before ceres_cutouts 2, no LINEDETS): the veto leaves them to the network",
                stacks.len()
            )?;
        }
        let n_veto = veto.iter().filter(|v| **v).count();
        let n_veto_called = veto
            .iter()
            .zip(&scores)
            .filter(|(v, p)| **v && **p as f64 >= threshold)
            .count();
        writeln!(
            log,
            "ceres_classify: {}: called {n_veto} stacks artifacts, {n_veto_called} of them scored asteroid by the network",
            veto_description(line_veto)
        )?;
        // Where the stacks carry labels (the demo's come from the simulator's truth), say how
        // the calls compare with them.
        let vetoed = dataset::with_veto(&scores, &veto);
        let labelled: Vec<(f32, u8)> = stacks
            .iter()
            .zip(&vetoed)
            .filter_map(|(s, p)| s.label.map(|l| (*p, l as u8)))
            .collect();
        if !labelled.is_empty() {
            let (p, l): (Vec<f32>, Vec<u8>) = labelled.into_iter().unzip();
            let r = metrics::report(&p, &l, threshold, 0.9);
            writeln!(
                log,
                "ceres_classify: against the stacks' labels: asteroid precision {:.3}, recall {:.3} ({} asteroids, {} artifacts); confusion {:?}",
                r.asteroid.precision,
                r.asteroid.recall,
                r.asteroid.support,
                r.artifact.support,
                r.confusion
            )?;
        }
        let n_ast = called.iter().filter(|c| **c).count();
        writeln!(
            log,
            "ceres_classify: {} stacks in {:.3} s ({:.0} stacks/s); {n_ast} asteroids at threshold {threshold:.4}",
            stacks.len(),
            secs,
            stacks.len() as f64 / secs.max(1e-9)
        )?;
        nearby_engine::task::write_metrics(
            inv.out_dir,
            &[("classified", stacks.len() as f64), ("real", n_ast as f64)],
        )?;
        Ok(())
    }
}

/// What `ceres_classify` said of one detection.
struct Call {
    score: f32,
    asteroid: bool,
    line_count: i32,
}

/// Copies a catalog adding CERES_SCORE (-1 where no stack was scored), CERES_ASTEROID and
/// CERES_LINE (-1 where unknown), rows matched to stacks by (CCDNAME, MJD-OBS of the table,
/// NUMBER).
fn annotate(
    path: &Path,
    out: &Path,
    by_det: &HashMap<(String, i64, i64), Call>,
) -> Result<(), TaskError> {
    let n = nearby_tasks::fits::hdu_count(path)?;
    let mut primary: Header = nearby_tasks::fits::read_header(path, 0)?;
    primary.set_origin(None);
    let mut tables = Vec::new();
    for hdu in 1..n {
        let mut t: Table = read_table(path, hdu)?;
        let ccd = t.header.str("CCDNAME").unwrap_or_else(|_| t.name.clone());
        let mjd = (t.header.f64("MJD-OBS")? * 1e6).round() as i64;
        let calls: Vec<Option<&Call>> = t
            .f64s("NUMBER")?
            .iter()
            .map(|num| by_det.get(&(ccd.trim().to_owned(), mjd, *num as i64)))
            .collect();
        let score: Vec<f32> = calls.iter().map(|c| c.map_or(-1.0, |c| c.score)).collect();
        let flag: Vec<i16> = calls
            .iter()
            .map(|c| c.is_some_and(|c| c.asteroid) as i16)
            .collect();
        let line: Vec<i32> = calls
            .iter()
            .map(|c| c.map_or(-1, |c| c.line_count))
            .collect();
        t.header.set_origin(None);
        t = t
            .with("CERES_SCORE", "", ColumnData::from(score))
            .with("CERES_ASTEROID", "", ColumnData::from(flag))
            .with("CERES_LINE", "", ColumnData::from(line));
        tables.push(t);
    }
    write_tables(out, &primary, &tables)?;
    Ok(())
}
