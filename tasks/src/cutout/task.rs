//! The `cutout` task kind: for every target of a catalog, a window from every exposure.
//!
//! Per target, `cutouts/ID.fits` holds a float32 cube of N planes of `size_px` x `size_px` (one
//! per exposure, in input order; NaN off the CCD, all NaN when the exposure does not hold the
//! target) in the primary HDU, the layout a classifier taking the exposures as channels reads
//! in one go, then one 2-D image HDU per exposure (`EXTNAME = 'EXP001'`, ...): the same plane
//! with its WCS (the parent's with CRPIX moved), time, parent file and HDU, offset and flags,
//! for ds9 and astropy, which want a WCS on a 2-D image.
//! `cutouts/ID.png` shows the planes side by side. `cutouts.json` indexes it all.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{json, Map, Value as J};

use super::preview::{encode_png, mosaic, stretch, Stretch};
use super::{cut, read_targets, window_wcs, Target};
use crate::calibrate::task::input_files;
use crate::fits::{read_all_images, read_header, write_cube, Header, Image};
use crate::stack::{mid_exposure_mjd, FrameWcs};

pub struct Cutout;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "size_px",
        ty: PType::Int,
        required: false,
        default: Some("200"),
        doc: "Side of the square cutout, pixels (CERES takes 200).",
    },
    ParamSpec {
        name: "stretch",
        ty: PType::Str,
        required: false,
        default: Some("\"zscale\""),
        doc: "PNG preview stretch: `zscale` (IRAF's) or `asinh`.",
    },
    ParamSpec {
        name: "zscale_contrast",
        ty: PType::Float,
        required: false,
        default: Some("0.25"),
        doc: "zscale contrast (IRAF's default 0.25).",
    },
    ParamSpec {
        name: "png",
        ty: PType::Bool,
        required: false,
        default: Some("true"),
        doc: "Write the PNG previews.",
    },
];

const INPUTS: &[PortSpec] = &[
    PortSpec { name: "targets", file: "", required: true, doc: "A FITS catalog (ALPHA_J2000/DELTA_J2000, ALPHA/DELTA or RA/DEC) or JSON ({id, ra, dec} items, or tracklets with detections)." },
    PortSpec { name: "frames", file: "", required: true, doc: "The exposures (calibrated frames, one HDU per CCD with a WCS), or a directory of them." },
    PortSpec { name: "wcs", file: "", required: false, doc: "The `astrometry` task's wcs.fits files, one per frame in the same order: each CCD's solved WCS (matched by EXTNAME) replaces the frame header's; CCDs that were not solved are left out." },
];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "cutouts",
        file: "cutouts",
        required: true,
        doc: "Directory: ID.fits (cube + per-exposure WCS HDUs) and ID.png per target.",
    },
    PortSpec {
        name: "index",
        file: "cutouts.json",
        required: true,
        doc: "Every target: files, and per exposure its CCD, offset, edge and on-frame flags.",
    },
];

#[derive(Debug, Clone, Copy, PartialEq)]
struct Config {
    size: usize,
    stretch: Stretch,
    png: bool,
}

/// The largest cutout side accepted, pixels.
const MAX_SIZE_PX: i64 = 8192;

fn config(p: &Map<String, J>) -> Result<Config, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let templ = |v: &J| v.as_str().is_some_and(|s| s.contains("${"));
    let size = match p.get("size_px").filter(|v| !templ(v)) {
        None => 200,
        Some(v) => match v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(n) if (1..=MAX_SIZE_PX).contains(&n) => n as usize,
            _ => {
                problems.push((
                    "size_px",
                    format!("{v}: expected 1 to {MAX_SIZE_PX} pixels"),
                ));
                200
            }
        },
    };
    let contrast = match p.get("zscale_contrast").filter(|v| !templ(v)) {
        None => 0.25,
        Some(v) => match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(c) if c > 0.0 && c.is_finite() => c as f32,
            _ => {
                problems.push(("zscale_contrast", format!("{v}: expected a number > 0")));
                0.25
            }
        },
    };
    let stretch = match p
        .get("stretch")
        .and_then(J::as_str)
        .filter(|s| !s.contains("${"))
    {
        None | Some("zscale") => Stretch::Zscale { contrast },
        Some("asinh") => Stretch::Asinh,
        Some(other) => {
            problems.push(("stretch", format!("`{other}`: expected zscale or asinh")));
            Stretch::Asinh
        }
    };
    let png = p
        .get("png")
        .and_then(|v| v.as_bool().or_else(|| v.as_str()?.trim().parse().ok()))
        .unwrap_or(true);
    if problems.is_empty() {
        Ok(Config { size, stretch, png })
    } else {
        Err(problems)
    }
}

/// One CCD of an exposure with a WCS.
struct Ccd {
    image: Image,
    wcs: FrameWcs,
    hdu: usize,
}

/// An exposure: its CCDs and primary header.
struct Exposure {
    path: PathBuf,
    primary: Header,
    ccds: Vec<Ccd>,
}

/// Replaces each CCD's header WCS by the one `astrometry` solved (by EXTNAME); a CCD it could not
/// solve is dropped rather than cut with the header's approximate pointing.
fn use_solved_wcs(e: &mut Exposure, wcs_file: &Path, log: &mut dyn Write) -> Result<(), TaskError> {
    let solved = crate::astrometry::task::read_wcs_file(wcs_file)?;
    let mut kept = Vec::new();
    for mut c in std::mem::take(&mut e.ccds) {
        match crate::astrometry::task::solved_for(&c.image.header, &solved) {
            Some(w) => {
                c.wcs = w;
                kept.push(c);
            }
            None => writeln!(
                log,
                "cutout: {}: no solved WCS in {}; left out",
                c.image.header.loc(),
                wcs_file.display()
            )?,
        }
    }
    e.ccds = kept;
    if e.ccds.is_empty() {
        return Err(TaskError::BadInput(format!(
            "{}: no CCD has a solved WCS in {}",
            e.path.display(),
            wcs_file.display()
        )));
    }
    Ok(())
}

fn load(path: &Path, log: &mut dyn Write) -> Result<Exposure, TaskError> {
    let primary = read_header(path, 0)?;
    let mut ccds = Vec::new();
    for image in read_all_images(path)? {
        let at = image.header.loc();
        if let Err(e) = image.check_usable() {
            writeln!(log, "cutout: skipping {e}")?;
            continue;
        }
        let Some(wcs) = FrameWcs::from_header(&image.header) else {
            writeln!(log, "cutout: skipping {at}: no celestial WCS (expected CTYPE1/2 = RA---TAN/DEC--TAN with CRPIX, CRVAL and CD or CDELT)")?;
            continue;
        };
        let hdu = image.header.origin().map_or(0, |o| o.hdu);
        ccds.push(Ccd { image, wcs, hdu });
    }
    if ccds.is_empty() {
        return Err(TaskError::BadInput(format!(
            "{}: no CCD with usable pixels and a celestial WCS",
            path.display()
        )));
    }
    Ok(Exposure {
        path: path.to_owned(),
        primary,
        ccds,
    })
}

/// A file name from a target id: letters, digits, `.`, `_`, `-` kept, the rest `_`; made unique.
fn file_stem(id: &str, taken: &mut BTreeSet<String>) -> String {
    let mut base: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with('.') {
        base.insert(0, 't');
    }
    let mut name = base.clone();
    let mut k = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// The CCD of an exposure holding a sky position, and the FITS pixel position on it.
fn locate(e: &Exposure, t: &Target) -> Option<(usize, f64, f64)> {
    e.ccds.iter().enumerate().find_map(|(k, c)| {
        let (x, y) = c.wcs.sky_to_pix(t.ra_deg, t.dec_deg)?;
        let inside = x >= 0.5
            && y >= 0.5
            && x <= c.image.width as f64 + 0.5
            && y <= c.image.height as f64 + 0.5;
        inside.then_some((k, x, y))
    })
}

impl TaskKind for Cutout {
    fn name(&self) -> &'static str {
        "cutout"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Cut a window around each target from every exposure: a FITS cube with per-exposure WCS, and a PNG preview."
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
        let cfg = config(inv.params).map_err(|p| TaskError::params(&p))?;
        let (targets, notes) = read_targets(inv.input("targets")?).map_err(TaskError::BadInput)?;
        for n in &notes {
            writeln!(log, "cutout: skipping target: {n}")?;
        }
        let files = input_files(inv.inputs.get("frames").map_or(&[][..], |v| &v[..]))?;
        let solved = inv.inputs.get("wcs").map_or(&[][..], |v| &v[..]);
        if !solved.is_empty() && solved.len() != files.len() {
            return Err(TaskError::BadInput(format!(
                "input `wcs` has {} files for {} frames: give one wcs.fits per frame, in the same order",
                solved.len(),
                files.len()
            )));
        }
        let mut exposures = Vec::new();
        let mut skipped = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let loaded = load(f, log).and_then(|mut e| {
                if let Some(w) = solved.get(i) {
                    use_solved_wcs(&mut e, w, log)?;
                }
                Ok(e)
            });
            match loaded {
                Ok(e) => exposures.push(e),
                Err(e) => {
                    writeln!(log, "cutout: skipping {}: {e}", f.display())?;
                    skipped.push(e.to_string());
                }
            }
        }
        if exposures.is_empty() {
            return Err(TaskError::BadInput(format!(
                "none of the {} frames can be cut: {}",
                files.len(),
                if skipped.is_empty() {
                    "input `frames` holds no FITS file".to_owned()
                } else {
                    skipped.join("; ")
                }
            )));
        }
        let dir = inv.output("cutouts")?;
        std::fs::create_dir_all(dir)?;
        let size = cfg.size;
        let mut taken = BTreeSet::new();
        let mut index = Vec::new();
        let mut off_frame = Vec::new();
        for t in &targets {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let places: Vec<Option<(usize, f64, f64)>> =
                exposures.iter().map(|e| locate(e, t)).collect();
            if places.iter().all(Option::is_none) {
                writeln!(
                    log,
                    "cutout: {} at ({:.6}, {:.6}) lies on none of the {} exposures",
                    t.id,
                    t.ra_deg,
                    t.dec_deg,
                    exposures.len()
                )?;
                off_frame.push(json!({"id": t.id, "ra": t.ra_deg, "dec": t.dec_deg}));
                continue;
            }
            let stem = file_stem(&t.id, &mut taken);
            let mut cube = Vec::with_capacity(size * size * exposures.len());
            let mut hdus = Vec::new();
            let mut per_exp = Vec::new();
            let mut panels = Vec::new();
            for (k, (e, place)) in exposures.iter().zip(&places).enumerate() {
                let mut h = Header::new();
                h.set("EXTNAME", format!("EXP{:03}", k + 1), "exposure");
                let name = e.path.file_name().map(|n| n.to_string_lossy().into_owned());
                h.set("PARENT", name.unwrap_or_default(), "parent frame file");
                let rec = match *place {
                    Some((c, x, y)) => {
                        let ccd = &e.ccds[c];
                        let w = cut(&ccd.image, x, y, size);
                        h.merge(&window_wcs(&ccd.image.header, w.dx, w.dy));
                        for key in ["CCDNAME", "FILTER", "DATE-OBS", "MJD-OBS", "EXPTIME"] {
                            let card = ccd.image.header.card(key).or_else(|| e.primary.card(key));
                            if let Some(c) = card {
                                h.set(key, c.value.clone(), &c.comment);
                            }
                        }
                        let mid = mid_exposure_mjd(&ccd.image.header, &e.primary).ok();
                        if let Some(m) = mid {
                            h.set("MJD-MID", m, "[MJD UTC] mid-exposure");
                        }
                        h.set("PARHDU", ccd.hdu as i64, "parent HDU (0 = primary)")
                            .set(
                                "CUTX0",
                                w.dx,
                                "parent x of cutout x = 0 (x_parent = x + CUTX0)",
                            )
                            .set(
                                "CUTY0",
                                w.dy,
                                "parent y of cutout y = 0 (y_parent = y + CUTY0)",
                            )
                            .set(
                                "X_TARG",
                                x - w.dx as f64,
                                "target x in the cutout, FITS pixels",
                            )
                            .set(
                                "Y_TARG",
                                y - w.dy as f64,
                                "target y in the cutout, FITS pixels",
                            )
                            .set("ONFRAME", true, "the exposure holds the target")
                            .set("EDGE", w.edge, "the cutout runs off the CCD (NaN there)");
                        let rec = json!({
                            "on_frame": true, "edge": w.edge, "parent": e.path.display().to_string(),
                            "hdu": ccd.hdu, "x0": w.dx, "y0": w.dy,
                            "x": x - w.dx as f64, "y": y - w.dy as f64, "mjd_mid": mid,
                        });
                        cube.extend_from_slice(&w.data);
                        rec
                    }
                    None => {
                        h.set("ONFRAME", false, "the exposure does not hold the target")
                            .set("EDGE", true, "no pixels: all NaN");
                        cube.extend(std::iter::repeat_n(f32::NAN, size * size));
                        json!({"on_frame": false, "edge": true, "parent": e.path.display().to_string()})
                    }
                };
                if cfg.png {
                    panels.push(stretch(
                        &cube[k * size * size..(k + 1) * size * size],
                        cfg.stretch,
                    ));
                }
                let mut plane = Image::new(
                    size,
                    size,
                    cube[k * size * size..(k + 1) * size * size].to_vec(),
                );
                plane.header = h;
                hdus.push(plane);
                per_exp.push(rec);
            }
            let mut primary = Header::new();
            primary
                .set("OBJECT", t.id.as_str(), "target id")
                .set("RA_TARG", t.ra_deg, "[deg] target RA")
                .set("DEC_TARG", t.dec_deg, "[deg] target Dec")
                .set(
                    "NEXP",
                    exposures.len() as i64,
                    "planes: one per exposure, also as EXP HDUs",
                )
                .set("CUTSIZE", size as i64, "[px] side of the cutout");
            primary
                .add_comment("Plane k of the cube is exposure k; HDU EXPk holds it with its WCS.");
            let fits = dir.join(format!("{stem}.fits"));
            write_cube(&fits, &primary, size, size, &cube, &hdus)?;
            let mut entry = json!({
                "id": t.id, "ra": t.ra_deg, "dec": t.dec_deg,
                "fits": format!("{stem}.fits"), "exposures": per_exp,
            });
            if cfg.png {
                let (w, h, grey) = mosaic(&panels, size, 2);
                std::fs::write(dir.join(format!("{stem}.png")), encode_png(w, h, &grey))?;
                entry["png"] = J::from(format!("{stem}.png"));
            }
            index.push(entry);
        }
        writeln!(
            log,
            "cutout: {} targets cut from {} exposures, {} off every frame",
            index.len(),
            exposures.len(),
            off_frame.len()
        )?;
        if index.is_empty() {
            return Err(TaskError::BadInput(format!(
                "none of the {} targets lies on any of the {} exposures (first: {} at RA {:.6}, Dec {:.6})",
                targets.len(),
                exposures.len(),
                targets[0].id,
                targets[0].ra_deg,
                targets[0].dec_deg
            )));
        }
        let doc = json!({
            "format": "nearby-cutouts-1",
            "size_px": size,
            "frames": exposures.iter().map(|e| e.path.display().to_string()).collect::<Vec<_>>(),
            "targets": index,
            "off_frame": off_frame,
            "skipped": notes,
        });
        std::fs::write(
            inv.output("index")?,
            serde_json::to_vec_pretty(&doc).map_err(|e| TaskError::Failed(e.to_string()))?,
        )?;
        Ok(())
    }
}
