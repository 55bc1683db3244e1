//! The `extract` task kind: reads a (calibrated) multi-extension image and its optional weight
//! map, runs [`super::extract`] on every CCD, and writes `catalog.fits`: one binary table per
//! image HDU with SExtractor's column names and units, plus ALPHA_J2000/DELTA_J2000 from the
//! header's TAN(-SIP) WCS when it has one.

use std::io::Write;
use std::sync::atomic::Ordering;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};

use super::{extract, ColumnType, ExtractConfig, Image};
use crate::calibrate::MASK_SATURATED;
use crate::fits::{read_all_images, write_tables, ColumnData, Header, Table};
use crate::wcs::TanWcs;

pub struct Extract;

const PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "thresh_sigma", ty: PType::Float, required: false, default: Some("1.5"), doc: "DETECT_THRESH: threshold on the filtered image, in background RMS." },
    ParamSpec { name: "min_area_px", ty: PType::Int, required: false, default: Some("5"), doc: "DETECT_MINAREA: minimum pixels above the threshold." },
    ParamSpec { name: "deblend_nthresh", ty: PType::Int, required: false, default: Some("32"), doc: "DEBLEND_NTHRESH: deblending sub-thresholds." },
    ParamSpec { name: "deblend_mincont", ty: PType::Float, required: false, default: Some("0.005"), doc: "DEBLEND_MINCONT: minimum flux fraction of a branch." },
    ParamSpec { name: "back_size_px", ty: PType::Int, required: false, default: Some("64"), doc: "BACK_SIZE: background mesh cell, pixels." },
    ParamSpec { name: "back_filtersize", ty: PType::Int, required: false, default: Some("3"), doc: "BACK_FILTERSIZE: median filter of the mesh, cells." },
    ParamSpec { name: "filter_fwhm_px", ty: PType::Float, required: false, default: None, doc: "Detection filter: a Gaussian of this FWHM (pixels); default SExtractor's default.conv; 0 for none." },
    ParamSpec { name: "phot_apertures_px", ty: PType::StrList, required: false, default: Some("[5]"), doc: "PHOT_APERTURES: aperture diameters, pixels." },
    ParamSpec { name: "kron_factor", ty: PType::Float, required: false, default: Some("2.5"), doc: "PHOT_AUTOPARAMS Kron factor." },
    ParamSpec { name: "min_radius", ty: PType::Float, required: false, default: Some("3.5"), doc: "PHOT_AUTOPARAMS minimum radius." },
    ParamSpec { name: "mag_zeropoint", ty: PType::Float, required: false, default: Some("0.0"), doc: "MAG_ZEROPOINT, magnitudes." },
    ParamSpec { name: "trail_snr", ty: PType::Float, required: false, default: Some("0.0"), doc: "S/N a faint trail needs to be found by the line-filter search after the normal extraction (FLAGS 256); 0 (the default) for no search. 10 finds most faint fast movers, at +10-300% extraction time per survey CCD image and +190% on a crowded 4096^2 star field (bench/RESULTS-link.md)." },
    ParamSpec { name: "gain_e_per_adu", ty: PType::Float, required: false, default: None, doc: "GAIN, e-/ADU (default: the header's GAIN, else 0 = no Poisson term)." },
    ParamSpec { name: "saturate_adu", ty: PType::Float, required: false, default: None, doc: "SATUR_LEVEL, ADU (default: the header's SATURATE, else none)." },
];

const INPUTS: &[PortSpec] = &[
    PortSpec {
        name: "image",
        file: "",
        required: true,
        doc: "A (calibrated) image, one HDU per CCD.",
    },
    PortSpec {
        name: "weight",
        file: "",
        required: false,
        doc: "Its inverse-variance map, HDU for HDU (0 = unusable).",
    },
];

const OUTPUTS: &[PortSpec] = &[PortSpec {
    name: "catalog",
    file: "catalog.fits",
    required: true,
    doc: "One binary table per image HDU (EXTNAME of the CCD), SExtractor columns and TUNITs.",
}];

fn config(p: &Map<String, J>) -> Result<ExtractConfig, Vec<(&'static str, String)>> {
    let mut cfg = ExtractConfig::default();
    let mut problems = Vec::new();
    let num = |name: &'static str| -> Option<Result<f64, String>> {
        let v = p.get(name)?;
        if v.as_str().is_some_and(|s| s.contains("${")) {
            return None;
        }
        Some(
            v.as_f64()
                .or_else(|| v.as_str()?.trim().parse().ok())
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| format!("{v}: expected a number")),
        )
    };
    let mut get = |name: &'static str, min: f64, set: &mut dyn FnMut(f64)| match num(name) {
        Some(Ok(x)) if x >= min => set(x),
        Some(Ok(x)) => problems.push((name, format!("{x}: must be >= {min}"))),
        Some(Err(e)) => problems.push((name, e)),
        None => {}
    };
    get("thresh_sigma", 0.0, &mut |x| cfg.thresh_sigma = x as f32);
    get("min_area_px", 1.0, &mut |x| cfg.min_area_px = x as usize);
    get("deblend_nthresh", 1.0, &mut |x| {
        cfg.deblend_nthresh = x as usize
    });
    get("deblend_mincont", 0.0, &mut |x| {
        cfg.deblend_mincont = x as f32
    });
    get("back_size_px", 4.0, &mut |x| cfg.back_size_px = x as usize);
    get("back_filtersize", 1.0, &mut |x| {
        cfg.back_filtersize = x as usize
    });
    get("filter_fwhm_px", 0.0, &mut |x| {
        cfg.filter =
            (x > 0.0).then(|| super::Kernel::gaussian(x as f32, ((2.0 * x).ceil() as usize) | 1))
    });
    get("kron_factor", 0.0, &mut |x| cfg.kron_factor = x as f32);
    get("min_radius", 0.0, &mut |x| cfg.min_radius = x as f32);
    get("trail_snr", 0.0, &mut |x| cfg.trail_snr = x as f32);
    get("mag_zeropoint", -100.0, &mut |x| {
        cfg.mag_zeropoint = x as f32
    });
    get("gain_e_per_adu", 0.0, &mut |x| {
        cfg.gain_e_per_adu = x as f32
    });
    get("saturate_adu", 0.0, &mut |x| {
        cfg.saturate_adu = Some(x as f32)
    });
    if let Some(list) = p.get("phot_apertures_px").and_then(J::as_array) {
        let mut ap = Vec::new();
        for v in list {
            match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
                Some(d) if d > 0.0 && d.is_finite() => ap.push(d as f32),
                _ => problems.push((
                    "phot_apertures_px",
                    format!("{v}: expected a diameter > 0 (pixels)"),
                )),
            }
        }
        cfg.phot_apertures_px = ap;
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

impl TaskKind for Extract {
    fn name(&self) -> &'static str {
        "extract"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Detect and measure sources on every CCD (SExtractor's algorithms and columns)."
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
        let base = config(inv.params).map_err(|p| TaskError::params(&p))?;
        let path = inv.input("image")?;
        let images = read_all_images(path)?;
        let weights = match inv.inputs.get("weight").and_then(|v| v.first()) {
            Some(w) => {
                let ws = read_all_images(w)?;
                if ws.len() != images.len() {
                    return Err(TaskError::BadInput(format!(
                        "{}: {} image HDUs, but the weight map {} has {}",
                        path.display(),
                        images.len(),
                        w.display(),
                        ws.len()
                    )));
                }
                Some(ws)
            }
            None => None,
        };
        let mut tables = Vec::new();
        for (k, img) in images.iter().enumerate() {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            img.check_usable()?;
            let h = &img.header;
            let mut cfg = base.clone();
            if !inv.params.contains_key("gain_e_per_adu") {
                cfg.gain_e_per_adu = h.opt_f64("GAIN")?.unwrap_or(0.0) as f32;
            }
            if !inv.params.contains_key("saturate_adu") {
                cfg.saturate_adu = h.opt_f64("SATURATE")?.map(|v| v as f32);
            }
            let weight = weights.as_ref().map(|ws| &ws[k]);
            if let Some(w) = weight {
                if (w.width, w.height) != (img.width, img.height) {
                    return Err(TaskError::BadInput(format!(
                        "{}: {}x{} pixels, but its weight map {} is {}x{}",
                        h.loc(),
                        img.width,
                        img.height,
                        w.header.loc(),
                        w.width,
                        w.height
                    )));
                }
            }
            // Zero-weight pixels at or above the saturation level are saturated, not bad: the
            // sources holding them are measured and flagged (FLAGS 4).
            let mask: Option<Vec<u8>> = match (weight, cfg.saturate_adu) {
                (Some(w), Some(sat)) => Some(
                    img.data
                        .iter()
                        .zip(&w.data)
                        .map(|(v, wt)| {
                            if *wt <= 0.0 && *v >= sat {
                                MASK_SATURATED
                            } else {
                                0
                            }
                        })
                        .collect(),
                ),
                _ => None,
            };
            let mut im = Image::new(&img.data, img.width, img.height);
            if let Some(w) = weight {
                im = im.with_weight(&w.data);
            }
            if let Some(m) = &mask {
                im = im.with_mask(m);
            }
            let mut cat = extract(&im, &cfg);
            let wcs = TanWcs::from_header(h);
            if let Some(wcs) = &wcs {
                cat.set_world(|x, y| Some(wcs.pix_to_sky(x, y)));
            }
            let hdu = h.origin().map_or(k + 1, |o| o.hdu);
            let name = h
                .str("EXTNAME")
                .or_else(|_| h.str("CCDNAME"))
                .unwrap_or_else(|_| format!("HDU{hdu}"));
            // EXTNAMEs must tell the tables apart (some MEF frames name every CCD `SCI`).
            let name = if tables.iter().any(|t: &Table| t.name == name) {
                format!("{name}_{hdu}")
            } else {
                name
            };
            writeln!(
                log,
                "extract: {name}: {} sources, background {:.2} +- {:.2} ADU{}",
                cat.sources.len(),
                cat.background_level,
                cat.background_rms,
                if wcs.is_some() {
                    ", sky positions from the TAN WCS"
                } else {
                    ""
                }
            )?;
            let mut t = Table::new(&name);
            let mut th = Header::new();
            for key in [
                "CCDNAME", "IMAGEID", "FILTER", "DATE-OBS", "MJD-OBS", "EXPTIME", "OBJECT",
            ] {
                if let Some(c) = h.card(key) {
                    th.set(key, c.value.clone(), &c.comment);
                }
            }
            th.set(
                "SEXBKGND",
                cat.background_level as f64,
                "[ADU] median background",
            )
            .set(
                "SEXBKDEV",
                cat.background_rms as f64,
                "[ADU] background RMS",
            )
            .set("SEXTHLD", cat.threshold as f64, "[ADU] detection threshold")
            .set("SEXGAIN", cfg.gain_e_per_adu as f64, "[e-/ADU] gain used")
            .set("SEXMGZPT", cfg.mag_zeropoint as f64, "[mag] zero point")
            .set("SEXIMASX", img.width as i64, "[px] image width")
            .set("SEXIMASY", img.height as i64, "[px] image height");
            if let Some(s) = cfg.saturate_adu {
                th.set("SEXSATLV", s as f64, "[ADU] saturation level");
            }
            for (i, d) in cat.apertures_px.iter().enumerate() {
                th.set(
                    &format!("SEXAPED{}", i + 1),
                    *d as f64,
                    "[px] aperture diameter",
                );
            }
            t.header = th;
            for col in cat.columns() {
                let vals = cat.column_values(col.name).unwrap_or_default();
                let n = col.repeat.max(1);
                for j in 0..n {
                    // A vector column (FLUX_APER with several apertures) becomes one scalar
                    // column per aperture: FLUX_APER, FLUX_APER2, ...
                    let cname = if j == 0 {
                        col.name.to_string()
                    } else {
                        format!("{}{}", col.name, j + 1)
                    };
                    let v = vals.iter().skip(j).step_by(n).copied();
                    let data: ColumnData = match col.ty {
                        ColumnType::I32 => v.map(|x| x as i32).collect::<Vec<_>>().into(),
                        ColumnType::I16 => v.map(|x| x as i16).collect::<Vec<_>>().into(),
                        ColumnType::F32 => v.map(|x| x as f32).collect::<Vec<_>>().into(),
                        ColumnType::F64 => v.collect::<Vec<_>>().into(),
                    };
                    t = t.with(&cname, col.unit, data);
                }
            }
            tables.push(t);
        }
        let mut primary = Header::new();
        primary
            .set("ORIGIN", "nearby extract", "")
            .set("SEXVERS", "nearby", "");
        write_tables(inv.output("catalog")?, &primary, &tables)?;
        let sources: usize = tables.iter().map(|t| t.nrows()).sum();
        nearby_engine::task::write_metrics(inv.out_dir, &[("sources", sources as f64)])?;
        Ok(())
    }
}
