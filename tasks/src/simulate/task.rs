//! The `simulate` task kind: plans and draws a night, writes its frames as multi-extension FITS
//! (one HDU per CCD), the reference catalog as a FITS table, the truth as JSON, and the list of
//! science frames for a pipeline to fan out over.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use rayon::prelude::*;
use serde_json::{Map, Value as J};

use super::known::{add_known, point_at, KnownOrbits};
use super::{plan, refcat_table, render, truth, Artifact, FrameKind, SimConfig, SITE_CODE};
use crate::ephem::{elements, elements::Elements, observer, observer::Observatory, Spk};
use crate::fits::{write_mef, write_tables, Header, Pixel};

pub struct Simulate;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "preset",
        ty: PType::Str,
        required: false,
        default: Some("\"small\""),
        doc: "`small` (2 CCDs of 512x1024, 4 exposures: tests and the demo) or `int_wfc` (the \
              INT Wide Field Camera: 4 CCDs of 2048x4100 with overscan, 0.33\"/px).",
    },
    ParamSpec {
        name: "seed",
        ty: PType::Int,
        required: false,
        default: Some("1"),
        doc: "Random seed: the same seed and params give the same frames, byte for byte.",
    },
    ParamSpec {
        name: "n_fields",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Fields observed in the night (default: the preset's, 1).",
    },
    ParamSpec {
        name: "n_exposures",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Exposures per field, a few minutes apart (default: the preset's, 4).",
    },
    ParamSpec {
        name: "n_ccds",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "CCDs of the mosaic, 1 to 4 (default: the preset's).",
    },
    ParamSpec {
        name: "n_asteroids",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Asteroids per field, from bright to S/N ~ 3 (default: the preset's).",
    },
    ParamSpec {
        name: "n_bias",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Bias frames (default: the preset's).",
    },
    ParamSpec {
        name: "n_flats",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Twilight flats (default: the preset's).",
    },
    ParamSpec {
        name: "exptime_secs",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "Exposure time of science frames, seconds (default: the preset's).",
    },
    ParamSpec {
        name: "night",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "UTC date of the evening, YYYY-MM-DD (default 2014-07-10).",
    },
    ParamSpec {
        name: "night_offset_days",
        ty: PType::Int,
        required: false,
        default: None,
        doc: "Days added to `night` (default 0): a fan-out over `range` with `${item}` here \
              simulates consecutive nights across the end of a month.",
    },
    ParamSpec {
        name: "satellite_probability",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "Chance that a satellite crosses a science exposure (default: the preset's, 0.25 \
              for small, 0.15 for int_wfc).",
    },
    ParamSpec {
        name: "satellite_e_per_px_max",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "Brightest satellite trail, electrons per pixel of trail (default 8000); trails are \
              log-uniform from 300 to this, so a low value gives only faint trails.",
    },
    ParamSpec {
        name: "ra_deg",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "RA of the first field's centre, degrees (default 287).",
    },
    ParamSpec {
        name: "dec_deg",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "Dec of the first field's centre, degrees (default -20).",
    },
    ParamSpec {
        name: "refcat_mag_max",
        ty: PType::Float,
        required: false,
        default: None,
        doc: "Faintest star in the reference catalog, magnitudes (default: the preset's, 21; \
              deeper for small CCDs, which hold few stars as bright as that).",
    },
    ParamSpec {
        name: "target",
        ty: PType::Str,
        required: false,
        default: Some("\"\""),
        doc: "A known object of `known_orbits` (designation, number, name or packed \
              designation) to put at the centre of CCD 1: the first field is pointed at it.",
    },
    ParamSpec {
        name: "compress",
        ty: PType::Bool,
        required: false,
        default: Some("false"),
        doc: "Write frames tile-compressed (`.fits.fz`, lossless for these integer frames).",
    },
];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "raw",
        file: "raw",
        required: true,
        doc: "Directory of science frames, one multi-extension FITS file per exposure.",
    },
    PortSpec {
        name: "calib",
        file: "calib",
        required: true,
        doc: "Directory of bias and twilight flat frames (IMAGETYP bias / flat).",
    },
    PortSpec {
        name: "refcat",
        file: "refcat.fits",
        required: true,
        doc: "Reference catalog (FITS table: ID, RA, DEC, PMRA, PMDEC, MAG).",
    },
    PortSpec {
        name: "truth",
        file: "truth.json",
        required: true,
        doc: "Every star, asteroid position and artifact put in the frames.",
    },
    PortSpec {
        name: "frames",
        file: "frames.txt",
        required: true,
        doc: "The science frames, one path a line, relative to this file's directory.",
    },
];

const INPUTS: &[PortSpec] = &[
    PortSpec {
        name: "known_orbits",
        file: "",
        required: false,
        doc: "Orbital elements (MPCORB one-line or JPL SBDB JSON): the objects that fall on a CCD \
              are put in where the offline ephemeris predicts them (seen from La Palma, 950).",
    },
    PortSpec {
        name: "spk",
        file: "",
        required: false,
        doc: "A JPL planetary ephemeris (DE421, or an excerpt of it) for `known_orbits`.",
    },
];

fn is_template(v: &J) -> bool {
    v.as_str().is_some_and(|s| s.contains("${"))
}

/// Builds the config from params; templates (not yet rendered) are left to `run`.
fn config(params: &Map<String, J>) -> Result<SimConfig, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let preset = params.get("preset").and_then(J::as_str).unwrap_or("small");
    let mut cfg = if is_template(&J::from(preset)) {
        SimConfig::small()
    } else {
        match SimConfig::preset(preset) {
            Some(c) => c,
            None => {
                problems.push((
                    "preset",
                    format!("unknown preset `{preset}`; presets are: small, int_wfc"),
                ));
                SimConfig::small()
            }
        }
    };
    let mut count = |name: &'static str, slot: &mut usize| {
        let Some(v) = params.get(name).filter(|v| !is_template(v)) else {
            return;
        };
        match v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(n) if n >= 0 => *slot = n as usize,
            _ => problems.push((name, format!("{v}: expected a count (0 or more)"))),
        }
    };
    count("n_fields", &mut cfg.n_fields);
    count("n_exposures", &mut cfg.n_exposures);
    count("n_ccds", &mut cfg.n_ccds);
    count("n_asteroids", &mut cfg.n_asteroids);
    count("n_bias", &mut cfg.n_bias);
    count("n_flats", &mut cfg.n_flats);
    let mut real = |name: &'static str, slot: &mut f64| {
        let Some(v) = params.get(name).filter(|v| !is_template(v)) else {
            return;
        };
        match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(x) if x.is_finite() => *slot = x,
            _ => problems.push((name, format!("{v}: expected a number"))),
        }
    };
    real("exptime_secs", &mut cfg.exptime_secs);
    real("ra_deg", &mut cfg.field_ra_deg);
    real("dec_deg", &mut cfg.field_dec_deg);
    real("refcat_mag_max", &mut cfg.refcat_mag_max);
    real("satellite_probability", &mut cfg.satellite_probability);
    real("satellite_e_per_px_max", &mut cfg.satellite_e_per_px_max);
    if let Some(v) = params.get("seed").filter(|v| !is_template(v)) {
        match v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(n) if n >= 0 => cfg.seed = n as u64,
            _ => problems.push(("seed", format!("{v}: expected an integer >= 0"))),
        }
    }
    if let Some(s) = params.get("night").and_then(J::as_str) {
        if !s.contains("${") {
            cfg.night = s.to_owned();
        }
    }
    if let Some(v) = params.get("night_offset_days").filter(|v| !is_template(v)) {
        let days = v.as_i64().or_else(|| v.as_str()?.trim().parse().ok());
        match days.and_then(|d| super::time::add_days(&cfg.night, d)) {
            Some(night) => cfg.night = night,
            None if days.is_none() => problems.push((
                "night_offset_days",
                format!("{v}: expected a whole number of days"),
            )),
            // A bad `night` is reported below by the config's own check.
            None => {}
        }
    }
    // A longer exposure needs a longer cadence: keep the readout gap of the preset.
    let base = SimConfig::preset(preset).unwrap_or_else(SimConfig::small);
    cfg.cadence_secs = cfg
        .cadence_secs
        .max(cfg.exptime_secs + (base.cadence_secs - base.exptime_secs));
    cfg.field_ra_deg = cfg.field_ra_deg.rem_euclid(360.0);
    if problems.is_empty() {
        problems.extend(cfg.problems().into_iter().map(|(f, m)| (param_of(f), m)));
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// The param that sets a config field (for error messages).
fn param_of(field: &'static str) -> &'static str {
    match field {
        "field_dec_deg" => "dec_deg",
        "n_ccds"
        | "n_fields"
        | "n_exposures"
        | "exptime_secs"
        | "night"
        | "satellite_probability"
        | "satellite_e_per_px_max" => field,
        _ => "preset",
    }
}

impl TaskKind for Simulate {
    fn name(&self) -> &'static str {
        "simulate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Simulate a night of the INT Wide Field Camera: biases, flats and science frames with \
         stars, asteroids and artifacts, a reference catalog and the truth."
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
        let start = Instant::now();
        let cfg = config(inv.params).map_err(|p| TaskError::params(&p))?;
        let compress = inv.bool("compress").unwrap_or(false);
        let target = inv.str("target").filter(|t| !t.is_empty());
        let given = |name: &str| inv.inputs.get(name).and_then(|v| v.first());
        let orbits = match (given("known_orbits"), given("spk")) {
            (Some(el), Some(spk)) => Some(read_orbits(el, spk, log)?),
            (None, None) => None,
            _ => {
                return Err(TaskError::BadInput(
                    "inputs `known_orbits` and `spk` go together: the ephemeris needs both".into(),
                ))
            }
        };
        let mut night = match (&orbits, target) {
            (Some((objects, spk, site)), target) => {
                let k = KnownOrbits { objects, spk, site };
                let cfg = match target {
                    Some(t) => point_at(&cfg, &k, t).map_err(TaskError::BadInput)?,
                    None => cfg.clone(),
                };
                let mut night = plan(&cfg).map_err(|p| TaskError::Failed(format!("{p:?}")))?;
                for line in add_known(&mut night, &k).map_err(TaskError::Failed)? {
                    writeln!(log, "simulate: {line}")?;
                }
                night
            }
            (None, Some(t)) => {
                return Err(TaskError::BadInput(format!(
                    "param `target` ({t}) needs the inputs `known_orbits` and `spk`"
                )))
            }
            (None, None) => plan(&cfg).map_err(|p| TaskError::Failed(format!("{p:?}")))?,
        };
        let cfg = night.config.clone();
        let raw_dir = inv.output("raw")?.to_path_buf();
        let calib_dir = inv.output("calib")?.to_path_buf();
        std::fs::create_dir_all(&raw_dir)?;
        std::fs::create_dir_all(&calib_dir)?;
        for f in &mut night.frames {
            let dir = if f.kind == FrameKind::Science {
                &raw_dir
            } else {
                &calib_dir
            };
            let name = format!("r{}.fits{}", f.run, if compress { ".fz" } else { "" });
            let path = dir.join(name);
            f.file = relative(&path, inv.out_dir);
        }
        let planned = start.elapsed();
        let (drawing, writing) = (AtomicU64::new(0), AtomicU64::new(0));
        let drawn: Vec<Vec<Artifact>> = (0..night.frames.len())
            .into_par_iter()
            .map(|i| {
                if inv.cancel.load(Ordering::Relaxed) {
                    return Err(TaskError::Cancelled);
                }
                let t = Instant::now();
                let r = render(&night, i);
                drawing.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                let t = Instant::now();
                write_mef(
                    &inv.out_dir.join(&night.frames[i].file),
                    &r.primary,
                    &r.ccds,
                    Pixel::U16,
                )?;
                writing.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(r.artifacts)
            })
            .collect::<Result<_, TaskError>>()?;
        let truth = truth(&night, drawn.into_iter().flatten());

        let mut primary = Header::new();
        primary
            .set("ORIGIN", "nearby simulate", "synthetic reference catalog")
            .set("SIMSEED", cfg.seed as i64, "");
        write_tables(inv.output("refcat")?, &primary, &[refcat_table(&night)])?;

        let tpath = inv.output("truth")?;
        let mut w = std::io::BufWriter::new(std::fs::File::create(tpath)?);
        serde_json::to_writer(&mut w, &truth)
            .map_err(|e| TaskError::Failed(format!("cannot write {}: {e}", tpath.display())))?;
        w.flush()?;

        let list_path = inv.output("frames")?;
        let base = list_path.parent().unwrap_or(inv.out_dir);
        let mut list = String::new();
        for f in night.frames.iter().filter(|f| f.kind == FrameKind::Science) {
            list.push_str(&relative(&inv.out_dir.join(&f.file), base));
            list.push('\n');
        }
        std::fs::write(list_path, list)?;

        let science = night
            .frames
            .iter()
            .filter(|f| f.kind == FrameKind::Science)
            .count();
        writeln!(
            log,
            "simulate: {} frames ({science} science, {} CCDs of {}x{}), {} stars ({} in the \
             reference catalog), {} asteroids, {} artifacts; planned in {:.2} s, done in {:.2} s \
             (drawing {:.1} s, writing {:.1} s, summed over threads)",
            night.frames.len(),
            cfg.n_ccds,
            cfg.ccd.nx,
            cfg.ccd.ny,
            night.stars.len(),
            night.stars.iter().filter(|s| s.in_refcat).count(),
            night.asteroids.len(),
            truth.artifacts.len(),
            planned.as_secs_f64(),
            start.elapsed().as_secs_f64(),
            drawing.load(Ordering::Relaxed) as f64 * 1e-6,
            writing.load(Ordering::Relaxed) as f64 * 1e-6,
        )?;
        Ok(())
    }
}

/// The orbit file's objects (unreadable ones logged and left out), the SPK and La Palma (950).
fn read_orbits(
    elements_path: &Path,
    spk_path: &Path,
    log: &mut dyn Write,
) -> Result<(Vec<Elements>, Spk, Observatory), TaskError> {
    let text = std::fs::read_to_string(elements_path).map_err(|e| {
        TaskError::BadInput(format!("{}: cannot read: {e}", elements_path.display()))
    })?;
    let parsed = elements::parse(&elements_path.display().to_string(), &text);
    for e in parsed.errors.iter().take(20) {
        writeln!(log, "simulate: skipped {e}")?;
    }
    let spk = Spk::open(spk_path).map_err(|e| TaskError::BadInput(e.to_string()))?;
    let sites = observer::parse_obscodes("built-in codes", observer::BUILTIN_OBSCODES)
        .map_err(|e| TaskError::Failed(e.to_string()))?;
    let site = sites
        .get(SITE_CODE)
        .cloned()
        .ok_or_else(|| TaskError::Failed(format!("code {SITE_CODE} is not built in")))?;
    Ok((parsed.elements, spk, site))
}

/// `path` relative to `base` when it lies under it, else as given.
fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
