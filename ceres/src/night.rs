//! A night's calibrated frames and their detections, made into cutout stacks.
//!
//! Frames come from the `calibrate` task's images and the `extract` task's catalogs (paired by
//! MJD-OBS and CCD), or are made from raw frames here by running those same task kinds
//! ([`calibrate_and_extract`]). Exposures of one field and CCD (same OBJECT and CCDNAME) are
//! registered to each other with the catalogs ([`register`]: the median offset of matched
//! sources, which the stars dominate), so that every plane of a stack shows the same sky
//! without depending on a header WCS that may be arcminutes off; the other exposures are
//! resampled onto the detection's exposure's pixels at that sub-pixel offset.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nearby_engine::task::{TaskError, TaskKind};
use nearby_tasks::fits::{read_all_images, read_header, read_table, Header, Image};
use nearby_tasks::stack::resample::{Kernel, Plane};
use nearby_tasks::wcs::TanWcs;
use serde_json::{Map, Value as J};

use crate::stack::Stack;

/// One extracted source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub number: i64,
    /// FITS pixel in the trimmed frame.
    pub x: f64,
    pub y: f64,
    pub flux: f64,
}

/// One CCD of one exposure.
#[derive(Debug, Clone)]
pub struct CcdFrame {
    pub run: i64,
    pub object: String,
    pub ccd: String,
    /// CCD number (IMAGEID), 1-based.
    pub imageid: i64,
    /// MJD-OBS (exposure start) and mid-exposure MJD.
    pub mjd_obs: f64,
    pub mjd_mid: f64,
    /// Evening date of the night, YYYY-MM-DD.
    pub night: String,
    /// Trimmed = raw + LTV.
    pub ltv: (f64, f64),
    pub image: Image,
    pub detections: Vec<Detection>,
}

/// What was skipped making stacks, and why (reported in the task log).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Skipped {
    /// Detections whose field had fewer exposures than the stack depth.
    pub too_few_exposures: usize,
    /// Exposures that could not be registered to the detection's exposure.
    pub unregistered: usize,
}

/// Evening date (YYYY-MM-DD) of an observation: the civil date 12 hours earlier, so that a
/// night keeps one date across midnight UTC (true near the longitude of La Palma).
pub fn night_of(mjd: f64) -> String {
    let days = (mjd - 0.5).floor() as i64 - 40587; // days since 1970-01-01
    let (y, m, d) = nearby_tasks::simulate::time::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn bad(at: impl std::fmt::Display, what: impl std::fmt::Display) -> TaskError {
    TaskError::BadInput(format!("{at}: {what}"))
}

/// Reads calibrated images and extract catalogs (any order; paired by MJD-OBS and CCD name).
/// A catalog with no image, or an image HDU with no catalog table, is an error naming both.
pub fn load_frames(images: &[PathBuf], catalogs: &[PathBuf]) -> Result<Vec<CcdFrame>, TaskError> {
    // Catalog tables by (MJD-OBS rounded to 1e-6 d, CCD name).
    let mut tables: HashMap<(i64, String), Vec<Detection>> = HashMap::new();
    for path in catalogs {
        let n = nearby_tasks::fits::hdu_count(path)?;
        for hdu in 1..n {
            let t = read_table(path, hdu)?;
            let h = &t.header;
            let mjd = h.f64("MJD-OBS")?;
            let ccd = h.str("CCDNAME").unwrap_or_else(|_| t.name.clone());
            let (num, xs, ys, fl) = (
                t.f64s("NUMBER")?,
                t.f64s("X_IMAGE")?,
                t.f64s("Y_IMAGE")?,
                t.f64s("FLUX_AUTO")?,
            );
            let dets = (0..num.len())
                .map(|i| Detection {
                    number: num[i] as i64,
                    x: xs[i],
                    y: ys[i],
                    flux: fl[i],
                })
                .collect();
            tables.insert(((mjd * 1e6).round() as i64, ccd.trim().to_owned()), dets);
        }
    }
    let mut out = Vec::new();
    for path in images {
        let primary = read_header(path, 0)?;
        let run = primary.opt_f64("RUN")?.unwrap_or(0.0) as i64;
        for img in read_all_images(path)? {
            let h = &img.header;
            let mjd = h.f64("MJD-OBS")?;
            let exptime = h.opt_f64("EXPTIME")?.unwrap_or(0.0);
            let ccd = h.str("CCDNAME")?.trim().to_owned();
            let key = ((mjd * 1e6).round() as i64, ccd.clone());
            let detections = tables.remove(&key).ok_or_else(|| {
                bad(
                    h.loc(),
                    format!(
                        "no catalog table for CCD {ccd} at MJD-OBS {mjd} among the {} catalogs",
                        catalogs.len()
                    ),
                )
            })?;
            let object = key_of(h, &primary, "OBJECT").unwrap_or_default();
            out.push(CcdFrame {
                run: h.opt_f64("RUN")?.map_or(run, |v| v as i64),
                object,
                imageid: h.opt_f64("IMAGEID")?.unwrap_or(0.0) as i64,
                ccd,
                mjd_obs: mjd,
                mjd_mid: mjd + exptime / 2.0 / 86400.0,
                night: night_of(mjd),
                ltv: (
                    h.opt_f64("LTV1")?.unwrap_or(0.0),
                    h.opt_f64("LTV2")?.unwrap_or(0.0),
                ),
                image: img.clone(),
                detections,
            });
        }
    }
    if let Some(((mjd, ccd), _)) = tables.into_iter().next() {
        return Err(bad(
            "catalogs",
            format!(
                "a catalog of CCD {ccd} at MJD-OBS {} has no calibrated image among the {} images",
                mjd as f64 * 1e-6,
                images.len()
            ),
        ));
    }
    Ok(out)
}

fn key_of(h: &Header, primary: &Header, key: &str) -> Option<String> {
    h.opt_str(key)
        .ok()
        .flatten()
        .or_else(|| primary.opt_str(key).ok().flatten())
        .map(|s| s.trim().to_owned())
}

/// Offset (dx, dy) that takes a position in exposure `a` to the same sky in exposure `b`: every
/// pair of sources closer than `radius` px votes, the densest 2-px cell of votes wins, and the
/// median of the votes near it is the answer. `None` with fewer than 3 agreeing pairs.
pub fn register(a: &[Detection], b: &[Detection], radius: f64) -> Option<(f64, f64)> {
    let mut votes = Vec::new();
    let mut grid: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    for (i, d) in b.iter().enumerate() {
        grid.entry(((d.x / radius).floor() as i64, (d.y / radius).floor() as i64))
            .or_default()
            .push(i);
    }
    for s in a {
        let (cx, cy) = ((s.x / radius).floor() as i64, (s.y / radius).floor() as i64);
        for gx in cx - 1..=cx + 1 {
            for gy in cy - 1..=cy + 1 {
                for &j in grid.get(&(gx, gy)).into_iter().flatten() {
                    let (dx, dy) = (b[j].x - s.x, b[j].y - s.y);
                    if dx.hypot(dy) < radius {
                        votes.push((dx, dy));
                    }
                }
            }
        }
    }
    let mut cells: HashMap<(i64, i64), usize> = HashMap::new();
    for (dx, dy) in &votes {
        *cells
            .entry(((dx / 2.0).floor() as i64, (dy / 2.0).floor() as i64))
            .or_default() += 1;
    }
    let (&(cx, cy), _) = cells
        .iter()
        .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))?;
    let (mx, my) = (cx as f64 * 2.0 + 1.0, cy as f64 * 2.0 + 1.0);
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = votes
        .into_iter()
        .filter(|(dx, dy)| (dx - mx).hypot(dy - my) < 2.5)
        .unzip();
    if xs.len() < 3 {
        return None;
    }
    let mid = xs.len() / 2;
    xs.select_nth_unstable_by(mid, f64::total_cmp);
    ys.select_nth_unstable_by(mid, f64::total_cmp);
    Some((xs[mid], ys[mid]))
}

/// 0-based frame pixel of the first (lower-left) pixel of a `size` x `size` cutout around FITS
/// pixel (x, y): odd sizes centre on the pixel nearest (x, y), even ones put it just above and
/// right of the centre.
pub fn cutout_origin(x: f64, y: f64, size: usize) -> (i64, i64) {
    let half = (size / 2) as i64;
    (
        (x - 1.0).round() as i64 - half,
        (y - 1.0).round() as i64 - half,
    )
}

/// Cuts `size` x `size` from `plane` whose pixel (i, j) is the frame's 0-based position
/// (x0 + i + dx, y0 + j + dy): whole-pixel shifts copy pixels, fractional ones interpolate with
/// Lanczos-3 (bilinear next to the edge or a bad pixel), so the planes of a stack line up to the
/// registration's accuracy instead of to the nearest pixel (a star cut at whole pixels moves by
/// up to a pixel from plane to plane and looks like a slow mover). Positions off the frame are
/// NaN.
pub fn cut_registered(
    plane: &Plane,
    (x0, y0): (i64, i64),
    (dx, dy): (f64, f64),
    size: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(size * size);
    for j in 0..size {
        let v = (y0 + j as i64) as f64 + dy;
        for i in 0..size {
            let u = (x0 + i as i64) as f64 + dx;
            out.push(
                plane
                    .sample(u, v, Kernel::Lanczos3)
                    .map_or(f32::NAN, |(val, _)| val),
            );
        }
    }
    out
}

/// How the satellite-line count of each detection is made ([`crate::lines`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineConfig {
    /// A detection with a detection of another exposure of its stack within this many px of
    /// the same sky is static (a star), not a transient that can be on a satellite line.
    pub static_radius_px: f64,
    /// Transients within this many px (perpendicular) of a line through the detection are on
    /// it, in one run with it while no gap along the line is wider than `max_gap`.
    pub search: crate::lines::LineSearch,
}

/// Every detection's stack: for each field and CCD with at least `depth` exposures, each
/// detection gets its own exposure as plane 0 and the `depth - 1` other exposures nearest in
/// time, in time order, each resampled onto plane 0's pixels at the registered (sub-pixel)
/// position of the same sky; and its satellite-line count: the transients of its exposure on
/// one line through it, transients being detections absent from those other exposures.
pub fn make_stacks(
    frames: &[CcdFrame],
    size: usize,
    depth: usize,
    lines: LineConfig,
) -> (Vec<Stack>, Skipped) {
    let mut groups: BTreeMap<(String, String, String), Vec<&CcdFrame>> = BTreeMap::new();
    for f in frames {
        groups
            .entry((f.night.clone(), f.object.clone(), f.ccd.clone()))
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    for group in groups.values_mut() {
        group.sort_by(|a, b| a.mjd_mid.total_cmp(&b.mjd_mid));
        if group.len() < depth || depth == 0 {
            skipped.too_few_exposures += group.iter().map(|f| f.detections.len()).sum::<usize>();
            continue;
        }
        let planes: Vec<Plane> = group
            .iter()
            .map(|f| Plane::new(&f.image.data, None, f.image.width, f.image.height, 0.0))
            .collect();
        for (k, f) in group.iter().enumerate() {
            // The depth - 1 other exposures nearest in time to this one.
            let mut others: Vec<usize> = (0..group.len()).filter(|&j| j != k).collect();
            others.sort_by(|&a, &b| {
                (group[a].mjd_mid - f.mjd_mid)
                    .abs()
                    .total_cmp(&(group[b].mjd_mid - f.mjd_mid).abs())
            });
            others.truncate(depth - 1);
            others.sort_unstable();
            let shifts: Vec<Option<(f64, f64)>> = others
                .iter()
                .map(|&j| register(&f.detections, &group[j].detections, 20.0))
                .collect();
            if shifts.iter().any(Option::is_none) {
                skipped.unregistered += f.detections.len();
                continue;
            }
            let points = |f: &CcdFrame| -> Vec<crate::lines::Point> {
                f.detections.iter().map(|d| (d.x, d.y)).collect()
            };
            let other_points: Vec<Vec<crate::lines::Point>> =
                others.iter().map(|&j| points(group[j])).collect();
            let other_views: Vec<(&[crate::lines::Point], (f64, f64))> = other_points
                .iter()
                .zip(&shifts)
                .map(|(p, s)| (p.as_slice(), s.unwrap_or((0.0, 0.0))))
                .collect();
            let on_line = crate::lines::exposure_lines(
                &points(f),
                &other_views,
                lines.static_radius_px,
                lines.search,
            );
            for (d, &line) in f.detections.iter().zip(&on_line) {
                let origin = cutout_origin(d.x, d.y, size);
                let mut pixels = cut_registered(&planes[k], origin, (0.0, 0.0), size);
                let mut mjd = vec![f.mjd_mid];
                let mut shift = vec![(0.0, 0.0)];
                for (&j, s) in others.iter().zip(&shifts) {
                    let (dx, dy) = s.unwrap_or((0.0, 0.0));
                    pixels.extend(cut_registered(&planes[j], origin, (dx, dy), size));
                    mjd.push(group[j].mjd_mid);
                    shift.push((dx, dy));
                }
                out.push(Stack {
                    id: format!("{}_{}_{}", f.run, f.ccd, d.number),
                    night: f.night.clone(),
                    run: f.run,
                    ccd: f.ccd.clone(),
                    number: d.number,
                    mjd_obs: f.mjd_obs,
                    x: d.x,
                    y: d.y,
                    size,
                    depth,
                    pixels,
                    mjd,
                    shift,
                    line: Some(line),
                    label: None,
                    kind: String::new(),
                    label_source: String::new(),
                });
            }
        }
    }
    (out, skipped)
}

/// Per-plane TAN WCS headers (EXTNAME WCS1..) of a stack, from the frames' header WCS moved to
/// cutout pixels; empty when a frame has none.
pub fn wcs_headers(frames: &[&CcdFrame], stack: &Stack) -> Vec<Header> {
    let mut out = Vec::new();
    for (k, f) in frames.iter().enumerate() {
        let Some(_) = TanWcs::from_header(&f.image.header) else {
            return Vec::new();
        };
        // Cutout pixel (i, j) (0-based) is this frame's 0-based (x0 + i + dx, y0 + j + dy).
        let (dx, dy) = stack.shift.get(k).copied().unwrap_or((0.0, 0.0));
        let (x0, y0) = cutout_origin(stack.x, stack.y, stack.size);
        let (x0, y0) = (x0 as f64 + dx, y0 as f64 + dy);
        let mut h = Header::new();
        h.set("EXTNAME", format!("WCS{}", k + 1), "TAN WCS of this plane");
        for c in f.image.header.cards() {
            let key = c.key.as_str();
            if key.starts_with("CRVAL")
                || key.starts_with("CD")
                || key.starts_with("CTYPE")
                || key.starts_with("CUNIT")
                || key == "RADESYS"
                || key == "EQUINOX"
            {
                h.set(key, c.value.clone(), &c.comment);
            }
        }
        for (key, off) in [("CRPIX1", x0), ("CRPIX2", y0)] {
            if let Ok(v) = f.image.header.f64(key) {
                h.set(key, v - off, "reference pixel (cutout)");
            }
        }
        out.push(h);
    }
    out
}

/// Runs one task kind in-process on files, as the engine would (tests, and the per-night
/// calibration inside `ceres_cutouts`).
pub fn run_kind(
    kind: &dyn TaskKind,
    params: Map<String, J>,
    inputs: &[(&str, Vec<PathBuf>)],
    out_dir: &Path,
    log: &mut dyn std::io::Write,
) -> Result<BTreeMap<String, PathBuf>, TaskError> {
    let inputs = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    nearby_engine::task::run_alone_to(kind, params, inputs, out_dir, log)
}

/// Calibrates and extracts raw frames with the `calibrate` and `extract` task kinds (default
/// params, the demo's threshold) into `work`; returns the (images, catalogs) paths.
pub fn calibrate_and_extract(
    raw: &[PathBuf],
    bias: &Path,
    flat: &Path,
    work: &Path,
    log: &mut dyn std::io::Write,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), TaskError> {
    use nearby_tasks::calibrate::task::Calibrate;
    use nearby_tasks::extract::task::Extract;
    let mut images = Vec::new();
    let mut catalogs = Vec::new();
    for (i, frame) in raw.iter().enumerate() {
        let dir = work.join(format!("{i:04}"));
        let cal = run_kind(
            &Calibrate,
            Map::new(),
            &[
                ("frame", vec![frame.clone()]),
                ("bias", vec![bias.to_path_buf()]),
                ("flat", vec![flat.to_path_buf()]),
            ],
            &dir.join("calibrate"),
            log,
        )?;
        let ext = run_kind(
            &Extract,
            Map::new(),
            &[
                ("image", vec![cal["image"].clone()]),
                ("weight", vec![cal["weight"].clone()]),
            ],
            &dir.join("extract"),
            log,
        )?;
        images.push(cal["image"].clone());
        catalogs.push(ext["catalog"].clone());
    }
    Ok((images, catalogs))
}
