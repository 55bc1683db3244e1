//! The `link` task kind: reads every catalog of a night (extract's `catalog.fits`, one table per
//! CCD), groups the tables by field (`OBJECT`) and CCD (`CCDNAME`, else `EXTNAME`) into visits
//! (exposures less than `max_gap_min` apart), and per visit aligns the exposures on their stars,
//! removes what is stationary on the sky or on the detector, links the rest, and writes
//! `tracklets.json` (format `nearby-tracklets/1`) and `summary.txt`.
//!
//! The engine's fan-out cannot group files by what their headers say, so one instance takes the
//! whole night and does the grouping itself; the visits are linked in parallel.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};

use super::stationary::StationaryConfig;
use super::{
    align, assemble, link_pieces, stationary, Alignment, Detection, Exposure, LinkConfig, Source,
};
use crate::fits::{read_headers, read_table, FitsError, Table};
use crate::simulate::{deproject, project};

pub const FORMAT: &str = "nearby-tracklets/1";

pub struct Link;

/// The smallest position error a detection is given: centroids of bright sources and trails are
/// not better than this relative to the aligned frame (PSF and trail shape, alignment).
const SIGMA_FLOOR_ARCSEC: f64 = 0.1;

/// Extra position error of a deblended source, seeing FWHMs.
const BLENDED_SIGMA_FWHM: f64 = 0.33;

const PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "code", ty: PType::Str, required: false, default: Some("950"), doc: "MPC observatory code written into observations.json (950: INT, La Palma)." },
    ParamSpec { name: "min_detections", ty: PType::Int, required: false, default: Some("3"), doc: "Detections a tracklet needs (EURONEAR: 3)." },
    ParamSpec { name: "max_residual_arcsec", ty: PType::Float, required: false, default: Some("1.0"), doc: "Largest distance of a detection from the fitted line (EURONEAR: 2)." },
    ParamSpec { name: "min_rate_arcsec_per_min", ty: PType::Float, required: false, default: Some("0.1"), doc: "Slowest rate linked." },
    ParamSpec { name: "max_rate_arcsec_per_min", ty: PType::Float, required: false, default: Some("100.0"), doc: "Fastest rate linked." },
    ParamSpec { name: "min_motion_arcsec", ty: PType::Float, required: false, default: Some("1.0"), doc: "Smallest motion from first to last detection (EURONEAR: 3 px)." },
    ParamSpec { name: "min_motion_sigma", ty: PType::Float, required: false, default: Some("4.0"), doc: "The motion must also exceed this many standard deviations of its error." },
    ParamSpec { name: "max_chi2_per_dof", ty: PType::Float, required: false, default: Some("5.0"), doc: "Largest chi-square per degree of freedom of the line fit (residuals over the position errors)." },
    ParamSpec { name: "max_mag_deviation", ty: PType::Float, required: false, default: Some("1.0"), doc: "A detection's magnitude may differ from the tracklet's median by this plus 3 MAGERR_AUTO." },
    ParamSpec { name: "stationary_radius_arcsec", ty: PType::Float, required: false, default: Some("1.0"), doc: "A source found again within this radius in half the other exposures, without significant motion, is stationary." },
    ParamSpec { name: "max_offset_arcsec", ty: PType::Float, required: false, default: Some("300.0"), doc: "Largest pointing difference between exposures of a field that alignment searches." },
    ParamSpec { name: "max_gap_min", ty: PType::Float, required: false, default: Some("60.0"), doc: "Exposures of a field and CCD further apart in time start a new visit." },
    ParamSpec { name: "min_snr", ty: PType::Float, required: false, default: Some("0.0"), doc: "Candidates need at least this SNR_AUTO (FLUX_AUTO / FLUXERR_AUTO)." },
    ParamSpec { name: "seeing_fwhm_arcsec", ty: PType::Float, required: false, default: None, doc: "Seeing FWHM; default: the median FWHM_IMAGE of the visit's stars (else 1.5)." },
];

const INPUTS: &[PortSpec] = &[PortSpec {
    name: "catalogs",
    file: "",
    required: true,
    doc:
        "The night's catalogs (extract's catalog.fits, one table per CCD), or a directory of them.",
}];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "tracklets",
        file: "tracklets.json",
        required: true,
        doc: "nearby-tracklets/1: the visits linked and every tracklet with its detections.",
    },
    PortSpec {
        name: "observations",
        file: "observations.json",
        required: true,
        doc: "nearby-observations/1: every tracklet's detections under a temporary designation (NB00001, ...), for the report step.",
    },
    PortSpec {
        name: "summary",
        file: "summary.txt",
        required: true,
        doc: "One line per visit: exposures, sources, stationary, candidates, tracklets.",
    },
];

/// Everything the params set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub min_detections: usize,
    pub max_residual_arcsec: f64,
    pub min_rate_arcsec_per_min: f64,
    pub max_rate_arcsec_per_min: f64,
    pub min_motion_arcsec: f64,
    pub min_motion_sigma: f64,
    pub max_chi2_per_dof: f64,
    pub max_mag_deviation: f64,
    pub stationary_radius_arcsec: f64,
    pub max_offset_arcsec: f64,
    pub max_gap_min: f64,
    pub min_snr: f64,
    pub seeing_fwhm_arcsec: Option<f64>,
}

fn params(p: &Map<String, J>) -> Result<Params, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let mut num = |name: &'static str, min: f64| -> Option<f64> {
        let v = p.get(name)?;
        if v.as_str().is_some_and(|s| s.contains("${")) {
            return None;
        }
        match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(x) if x.is_finite() && x >= min => Some(x),
            Some(x) if x.is_finite() => {
                problems.push((name, format!("{x}: must be >= {min}")));
                None
            }
            _ => {
                problems.push((name, format!("{v}: expected a number")));
                None
            }
        }
    };
    let mut out = Params {
        min_detections: num("min_detections", 3.0).map_or(3, |x| x as usize),
        max_residual_arcsec: num("max_residual_arcsec", 0.01).unwrap_or(1.0),
        min_rate_arcsec_per_min: num("min_rate_arcsec_per_min", 0.0).unwrap_or(0.1),
        max_rate_arcsec_per_min: num("max_rate_arcsec_per_min", 0.0).unwrap_or(100.0),
        min_motion_arcsec: num("min_motion_arcsec", 0.0).unwrap_or(1.0),
        min_motion_sigma: num("min_motion_sigma", 0.0).unwrap_or(4.0),
        max_chi2_per_dof: num("max_chi2_per_dof", 0.1).unwrap_or(5.0),
        max_mag_deviation: num("max_mag_deviation", 0.0).unwrap_or(1.0),
        stationary_radius_arcsec: num("stationary_radius_arcsec", 0.0).unwrap_or(1.0),
        max_offset_arcsec: num("max_offset_arcsec", 1.0).unwrap_or(300.0),
        max_gap_min: num("max_gap_min", 0.0).unwrap_or(60.0),
        min_snr: num("min_snr", 0.0).unwrap_or(0.0),
        seeing_fwhm_arcsec: num("seeing_fwhm_arcsec", 0.01),
    };
    if out.max_rate_arcsec_per_min < out.min_rate_arcsec_per_min {
        problems.push((
            "max_rate_arcsec_per_min",
            format!(
                "{}: must be >= min_rate_arcsec_per_min ({})",
                out.max_rate_arcsec_per_min, out.min_rate_arcsec_per_min
            ),
        ));
    }
    out.min_detections = out.min_detections.max(3);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The tracklets file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackletsFile {
    /// `nearby-tracklets/1`.
    pub format: String,
    /// The params the linking used.
    pub params: J,
    pub visits: Vec<VisitOut>,
    pub tracklets: Vec<TrackletOut>,
    /// Catalog tables that could not be used, and why.
    pub skipped: Vec<Skipped>,
}

impl TrackletsFile {
    pub fn load(path: &Path) -> Result<TrackletsFile, String> {
        crate::json::load_tagged(path, "a tracklets file", FORMAT, |t: &TrackletsFile| {
            &t.format
        })
    }
}

/// One field and CCD observed in a run of exposures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitOut {
    pub field: String,
    pub ccd: String,
    pub exposures: Vec<ExposureOut>,
    /// The exposure the others are aligned to (index into `exposures`).
    pub reference: usize,
    /// Tangent point of the aligned plane, degrees.
    pub ra0_deg: Option<f64>,
    pub dec0_deg: Option<f64>,
    pub pixel_scale_arcsec: Option<f64>,
    pub seeing_fwhm_arcsec: Option<f64>,
    pub n_sources: usize,
    pub n_stationary: usize,
    pub n_candidates: usize,
    pub n_tracklets: usize,
    /// Why the visit was not linked, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_linked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposureOut {
    pub file: String,
    pub hdu: usize,
    /// Mid-exposure, MJD (UTC).
    pub mjd_mid: f64,
    pub exptime_secs: f64,
    pub n_sources: usize,
    pub n_candidates: usize,
    /// Stars matched to the reference exposure, and their RMS after the transform (").
    pub aligned_stars: usize,
    pub alignment_rms_arcsec: f64,
    /// Offset onto the reference exposure at the tangent point (xi, eta), arcseconds.
    pub shift_arcsec: [f64; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackletOut {
    /// `T0001`, ... in the file's order (visit, then time of the fitted position).
    pub id: String,
    pub field: String,
    pub ccd: String,
    pub rate_arcsec_per_min: f64,
    /// Direction of motion, degrees east of north.
    pub pa_deg: f64,
    pub rms_arcsec: f64,
    pub trailed: bool,
    pub mag_median: f64,
    pub detections: Vec<DetectionOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionOut {
    /// Index into the visit's exposures.
    pub exposure: usize,
    /// Mid-exposure, MJD (UTC).
    pub mjd: f64,
    /// Aligned onto the reference exposure's sky positions, degrees.
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// The catalog's own pixel position (X_IMAGE, Y_IMAGE) and NUMBER.
    pub x: f64,
    pub y: f64,
    pub number: i64,
    pub mag: f64,
    pub magerr: f64,
    pub flux: f64,
    pub elongation: f64,
    pub residual_arcsec: f64,
    /// A trail extraction broke into pieces, assembled ([`super::trails`]): the NUMBERs of
    /// its pieces (`number` is the one nearest the middle). Empty for a single source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub hdu: usize,
    pub reason: String,
}

/// One catalog table, read and checked.
struct CcdCatalog {
    file: PathBuf,
    hdu: usize,
    field: String,
    ccd: String,
    mjd_mid: f64,
    exptime_secs: f64,
    rows: Vec<Row>,
}

struct Row {
    number: i64,
    x: f64,
    y: f64,
    ra: f64,
    dec: f64,
    flux: f64,
    snr: f64,
    mag: f64,
    magerr: f64,
    a: f64,
    b: f64,
    theta_deg: f64,
    /// Position variance along x and y, px^2.
    err2: f64,
    elongation: f64,
    fwhm_px: f64,
    flags: i64,
}

/// Reads a catalog table; the first sky-position pair present of ALPHA_J2000/DELTA_J2000 (what
/// `extract` writes from the header WCS and `astrometry` from a solved one), ALPHAWIN_J2000 /
/// DELTAWIN_J2000, X_WORLD/Y_WORLD.
fn read_ccd(file: &Path, hdu: usize, t: &Table) -> Result<CcdCatalog, FitsError> {
    let h = &t.header;
    let field = h.opt_str("OBJECT")?.unwrap_or_default().trim().to_owned();
    let ccd = match h.opt_str("CCDNAME")? {
        Some(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => t.name.clone(),
    };
    let exptime_secs = h.opt_f64("EXPTIME")?.unwrap_or(0.0).max(0.0);
    let start = match h.opt_f64("MJD-OBS")? {
        Some(m) => m,
        None => {
            let date = h.str("DATE-OBS").map_err(|_| FitsError::MissingKey {
                at: h.loc(),
                key: "MJD-OBS (or DATE-OBS)".into(),
            })?;
            let clock = crate::ephem::time::time_of_day(h);
            crate::ephem::time::parse_fits_date(&date, clock.as_deref()).map_err(|_| {
                FitsError::BadKey {
                    at: h.loc(),
                    key: "DATE-OBS".into(),
                    found: date.clone(),
                    expected: "an ISO 8601 UTC time (or DD/MM/YY with TIME-OBS or UT)",
                }
            })?
        }
    };
    let sky = [
        ("ALPHA_J2000", "DELTA_J2000"),
        ("ALPHAWIN_J2000", "DELTAWIN_J2000"),
        ("X_WORLD", "Y_WORLD"),
    ]
    .into_iter()
    .find(|(a, d)| t.column(a).is_ok() && t.column(d).is_ok())
    .ok_or_else(|| FitsError::NoColumn {
        at: h.loc(),
        column: "ALPHA_J2000/DELTA_J2000 (or ALPHAWIN_J2000/DELTAWIN_J2000, X_WORLD/Y_WORLD): \
                 sky positions, from extract with a header WCS or from astrometry"
            .into(),
        have: t
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let n = t.nrows();
    let opt = |name: &str, default: f64| -> Result<Vec<f64>, FitsError> {
        if t.column(name).is_ok() {
            t.f64s(name)
        } else {
            Ok(vec![default; n])
        }
    };
    let x = t.f64s("X_IMAGE")?;
    let y = t.f64s("Y_IMAGE")?;
    let ra = t.f64s(sky.0)?;
    let dec = t.f64s(sky.1)?;
    let flux = t.f64s("FLUX_AUTO")?;
    let mag = t.f64s("MAG_AUTO")?;
    let fluxerr = opt("FLUXERR_AUTO", f64::NAN)?;
    let magerr = opt("MAGERR_AUTO", 0.1)?;
    let a = opt("A_IMAGE", 1.0)?;
    let b = opt("B_IMAGE", 1.0)?;
    let theta = opt("THETA_IMAGE", 0.0)?;
    let ex2 = opt("ERRX2_IMAGE", f64::NAN)?;
    let ey2 = opt("ERRY2_IMAGE", f64::NAN)?;
    let elong = opt("ELONGATION", 1.0)?;
    let fwhm = opt("FWHM_IMAGE", f64::NAN)?;
    let flags = opt("FLAGS", 0.0)?;
    let number = opt("NUMBER", f64::NAN)?;
    let rows = (0..n)
        .map(|i| Row {
            number: if number[i].is_finite() {
                number[i] as i64
            } else {
                i as i64 + 1
            },
            x: x[i],
            y: y[i],
            ra: ra[i],
            dec: dec[i],
            flux: flux[i],
            snr: flux[i] / fluxerr[i],
            mag: mag[i],
            magerr: magerr[i],
            a: a[i],
            b: b[i],
            theta_deg: theta[i],
            err2: 0.5 * (ex2[i] + ey2[i]),
            elongation: elong[i],
            fwhm_px: fwhm[i],
            flags: flags[i] as i64,
        })
        .collect();
    Ok(CcdCatalog {
        file: file.to_path_buf(),
        hdu,
        field,
        ccd,
        mjd_mid: start + exptime_secs / 2.0 / 86400.0,
        exptime_secs,
        rows,
    })
}

/// The catalog files named by the input: files, or directories of `*.fits`.
fn catalog_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("fits"))
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

/// Splits the tables into visits: same field and CCD, exposures less than `max_gap_min` apart.
/// Tables at the same time as one already in the visit (a catalog given twice) are skipped.
fn visits(
    mut cats: Vec<CcdCatalog>,
    max_gap_min: f64,
    skipped: &mut Vec<Skipped>,
) -> Vec<Vec<CcdCatalog>> {
    cats.sort_by(|a, b| {
        (&a.field, &a.ccd)
            .cmp(&(&b.field, &b.ccd))
            .then(a.mjd_mid.total_cmp(&b.mjd_mid))
    });
    let mut out: Vec<Vec<CcdCatalog>> = Vec::new();
    for c in cats {
        match out.last_mut() {
            Some(v)
                if v[0].field == c.field
                    && v[0].ccd == c.ccd
                    && (c.mjd_mid - v[v.len() - 1].mjd_mid) * 1440.0 <= max_gap_min =>
            {
                if (c.mjd_mid - v[v.len() - 1].mjd_mid).abs() * 86400.0 < 1.0 {
                    skipped.push(Skipped {
                        file: c.file.display().to_string(),
                        hdu: c.hdu,
                        reason: format!(
                            "same field, CCD and time as {} HDU {}: a repeated catalog",
                            v[v.len() - 1].file.display(),
                            v[v.len() - 1].hdu
                        ),
                    });
                } else {
                    v.push(c);
                }
            }
            _ => out.push(vec![c]),
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Least-squares affine map from pixels to the tangent plane: [[dxi/dx, dxi/dy], [deta/dx,
/// deta/dy]] in arcseconds per pixel; `None` without three spread-out sources.
fn pixel_jacobian(pix: &[(f64, f64)], sky: &[(f64, f64)]) -> Option<[[f64; 2]; 2]> {
    let pairs: Vec<(f64, f64, f64, f64)> = pix
        .iter()
        .zip(sky)
        .filter(|(p, s)| p.0.is_finite() && p.1.is_finite() && s.0.is_finite() && s.1.is_finite())
        .map(|(p, s)| (p.0, p.1, s.0, s.1))
        .collect();
    if pairs.len() < 3 {
        return None;
    }
    let n = pairs.len() as f64;
    let m = |f: fn(&(f64, f64, f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n;
    let (mx, my, mu, mv) = (m(|p| p.0), m(|p| p.1), m(|p| p.2), m(|p| p.3));
    let (mut sxx, mut sxy, mut syy, mut sxu, mut syu, mut sxv, mut syv) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for p in &pairs {
        let (x, y, u, v) = (p.0 - mx, p.1 - my, p.2 - mu, p.3 - mv);
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
        sxu += x * u;
        syu += y * u;
        sxv += x * v;
        syv += y * v;
    }
    let det = sxx * syy - sxy * sxy;
    if det.is_nan() || det <= 0.0 {
        return None;
    }
    let j = [
        [(syy * sxu - sxy * syu) / det, (sxx * syu - sxy * sxu) / det],
        [(syy * sxv - sxy * syv) / det, (sxx * syv - sxy * sxv) / det],
    ];
    let scale2 = (j[0][0] * j[1][1] - j[0][1] * j[1][0]).abs();
    (scale2.is_finite() && scale2 > 0.0).then_some(j)
}

/// The outcome of one visit.
struct VisitResult {
    visit: VisitOut,
    tracklets: Vec<TrackletOut>,
    log: String,
}

/// Aligns, removes stationary sources, links. `Err` says why the visit cannot be linked.
fn link_visit(cats: &[CcdCatalog], p: &Params) -> VisitResult {
    let field = cats[0].field.clone();
    let ccd = cats[0].ccd.clone();
    let mut visit = VisitOut {
        field: field.clone(),
        ccd: ccd.clone(),
        exposures: Vec::new(),
        reference: 0,
        ra0_deg: None,
        dec0_deg: None,
        pixel_scale_arcsec: None,
        seeing_fwhm_arcsec: None,
        n_sources: cats.iter().map(|c| c.rows.len()).sum(),
        n_stationary: 0,
        n_candidates: 0,
        n_tracklets: 0,
        not_linked: None,
    };
    let mut log = String::new();
    let fail = |mut visit: VisitOut, why: String, mut log: String| {
        log.push_str(&format!("link: {field} {ccd}: not linked: {why}\n"));
        visit.not_linked = Some(why);
        VisitResult {
            visit,
            tracklets: Vec::new(),
            log,
        }
    };
    // Tangent point: the median sky position of the exposure with the most sources, RA taken
    // relative to its first source so that 0/360 does not split the field.
    let Some(refi) = (0..cats.len()).max_by_key(|&i| (cats[i].rows.len(), usize::MAX - i)) else {
        return fail(visit, "no exposures".into(), log);
    };
    let rr = &cats[refi].rows;
    let Some(first) = rr.iter().find(|r| r.ra.is_finite() && r.dec.is_finite()) else {
        return fail(
            visit,
            "the reference exposure has no sky positions".into(),
            log,
        );
    };
    let ra_first = first.ra;
    let (Some(ra0), Some(dec0)) = (
        median(
            rr.iter()
                .map(|r| ra_first + (r.ra - ra_first + 540.0).rem_euclid(360.0) - 180.0)
                .collect(),
        ),
        median(rr.iter().map(|r| r.dec).collect()),
    ) else {
        return fail(
            visit,
            "the reference exposure has no sky positions".into(),
            log,
        );
    };
    let ra0 = ra0.rem_euclid(360.0);
    visit.ra0_deg = Some(ra0);
    visit.dec0_deg = Some(dec0);
    let arcsec = 180.0 / std::f64::consts::PI * 3600.0;
    // Every source on the tangent plane, arcseconds.
    let planes: Vec<Vec<(f64, f64)>> = cats
        .iter()
        .map(|c| {
            c.rows
                .iter()
                .map(|r| match project(ra0, dec0, r.ra, r.dec) {
                    Some((xi, eta)) if r.ra.is_finite() && r.dec.is_finite() => {
                        (xi * arcsec, eta * arcsec)
                    }
                    _ => (f64::NAN, f64::NAN),
                })
                .collect()
        })
        .collect();
    let jac: Vec<Option<[[f64; 2]; 2]>> = cats
        .iter()
        .zip(&planes)
        .map(|(c, pl)| {
            let pix: Vec<(f64, f64)> = c.rows.iter().map(|r| (r.x, r.y)).collect();
            pixel_jacobian(&pix, pl)
        })
        .collect();
    let Some(jref) = jac[refi] else {
        return fail(
            visit,
            "the reference exposure's pixel positions do not map to the sky".into(),
            log,
        );
    };
    let scale = (jref[0][0] * jref[1][1] - jref[0][1] * jref[1][0])
        .abs()
        .sqrt();
    visit.pixel_scale_arcsec = Some(scale);
    let usable = |r: &Row| r.flags == 0 && r.elongation < 2.0 && r.flux > 0.0;
    // Seeing: the median FWHM of round, clean, bright sources.
    let seeing = p.seeing_fwhm_arcsec.unwrap_or_else(|| {
        median(
            cats.iter()
                .flat_map(|c| c.rows.iter())
                .filter(|r| usable(r) && r.elongation < 1.3 && r.snr > 20.0)
                .map(|r| r.fwhm_px * scale)
                .collect(),
        )
        .filter(|f| *f > 0.0)
        .unwrap_or(1.5)
    });
    visit.seeing_fwhm_arcsec = Some(seeing);
    let mjd_ref = cats[0].mjd_mid;
    let all_exposures: Vec<Exposure> = cats
        .iter()
        .map(|c| Exposure {
            t_min: (c.mjd_mid - mjd_ref) * 1440.0,
            exptime_min: c.exptime_secs / 60.0,
        })
        .collect();
    // Every usable source as a detection, still unaligned, in the frame of its exposure: its
    // position, error (the larger of the catalog's and the centroid error of a seeing-wide
    // profile at its S/N: catalog errors of isophotal barycentres come out too small for faint
    // sources), magnitude and trail.
    let mut dets: Vec<Detection> = Vec::new();
    let mut on_detector: Vec<Detection> = Vec::new();
    let mut origin: Vec<(usize, usize)> = Vec::new();
    for (k, c) in cats.iter().enumerate() {
        let Some(j) = jac[k] else { continue };
        for (i, (r, &(xi, eta))) in c.rows.iter().zip(&planes[k]).enumerate() {
            let measured = xi.is_finite()
                && eta.is_finite()
                && r.x.is_finite()
                && r.y.is_finite()
                && r.mag.is_finite()
                && r.mag < 99.0;
            if !measured || r.flux.is_nan() || r.flux <= 0.0 || r.snr < p.min_snr {
                continue;
            }
            // The shape in arcseconds: the axes mapped through the pixel-to-sky Jacobian.
            let th = r.theta_deg.to_radians();
            let (ux, uy) = (th.cos(), th.sin());
            let major = (j[0][0] * ux + j[0][1] * uy, j[1][0] * ux + j[1][1] * uy);
            let minor = (-j[0][0] * uy + j[0][1] * ux, -j[1][0] * uy + j[1][1] * ux);
            let a = r.a * major.0.hypot(major.1);
            let b = r.b * minor.0.hypot(minor.1);
            let trail = (12.0 * (a * a - b * b).max(0.0)).sqrt();
            let catalog_sigma = if r.err2.is_finite() && r.err2 > 0.0 {
                r.err2.sqrt() * scale
            } else {
                0.0
            };
            let snr = if r.snr.is_finite() {
                r.snr.max(1.0)
            } else {
                3.0
            };
            let mut sigma = catalog_sigma
                .max(0.6 * seeing / snr)
                .max(SIGMA_FLOOR_ARCSEC);
            // A deblended source's centroid is pulled by its neighbour's light (a star on a
            // trail moves its centroid by up to a pixel or two): a third of the seeing more.
            if r.flags & i64::from(crate::extract::FLAG_BLENDED) != 0 {
                sigma = sigma.hypot(BLENDED_SIGMA_FWHM * seeing);
            }
            let d = Detection {
                exposure: k,
                xi,
                eta,
                sigma_arcsec: sigma,
                mag: r.mag,
                magerr: if r.magerr.is_finite() { r.magerr } else { 0.5 },
                trail_arcsec: trail,
                axis_pa_deg: major.0.atan2(major.1).to_degrees().rem_euclid(180.0),
                truncated: r.flags & i64::from(crate::extract::FLAG_TRUNCATED) != 0,
            };
            dets.push(d);
            on_detector.push(Detection {
                xi: r.x * scale,
                eta: r.y * scale,
                ..d
            });
            origin.push((k, i));
        }
    }
    // Detector defects (hot pixels, bad columns, dust) stay on the same pixel, within a pixel,
    // in all exposures but one: a slow mover whose motion the pointing offsets happen to cancel
    // between two exposures is not one.
    let defect_cfg = StationaryConfig {
        radius_arcsec: scale.max(p.stationary_radius_arcsec.min(scale)),
        min_others: Some(cats.len().saturating_sub(2).max(1)),
        min_motion_arcsec: p.min_motion_arcsec,
        min_motion_sigma: p.min_motion_sigma,
        seeing_fwhm_arcsec: seeing,
    };
    let on_chip = stationary(&all_exposures, &on_detector, &defect_cfg);
    // Alignment onto the reference exposure, on the sources that are not defects (defects
    // would vote for no shift at all); with all of them when that leaves too few.
    let sources = |k: usize, skip_defects: bool| -> Vec<Source> {
        let mut v: Vec<Source> = Vec::new();
        for (n, d) in dets.iter().enumerate().filter(|(_, d)| d.exposure == k) {
            let (c, i) = origin[n];
            v.push(Source {
                xi: d.xi,
                eta: d.eta,
                sigma_arcsec: d.sigma_arcsec,
                flux: cats[c].rows[i].flux,
                usable: usable(&cats[c].rows[i]) && !(skip_defects && on_chip[n]),
            });
        }
        v
    };
    let mut used: Vec<usize> = Vec::new();
    let mut aligns: Vec<Alignment> = vec![Alignment::identity(); cats.len()];
    for k in 0..cats.len() {
        let al = if k == refi {
            Some(Alignment::identity())
        } else if jac[k].is_none() {
            None
        } else {
            align(&sources(refi, true), &sources(k, true), p.max_offset_arcsec).or_else(|| {
                align(
                    &sources(refi, false),
                    &sources(k, false),
                    p.max_offset_arcsec,
                )
            })
        };
        match al {
            Some(al) => {
                used.push(k);
                aligns[k] = al;
            }
            None => log.push_str(&format!(
                "link: {field} {ccd}: {} HDU {} left out: its stars do not match the reference exposure's ({} HDU {})\n",
                cats[k].file.display(),
                cats[k].hdu,
                cats[refi].file.display(),
                cats[refi].hdu
            )),
        }
    }
    if used.len() < p.min_detections {
        return fail(
            visit,
            format!(
                "{} aligned exposures, {} needed",
                used.len(),
                p.min_detections
            ),
            log,
        );
    }
    // The aligned exposures only, renumbered in time order.
    let exposures: Vec<Exposure> = used.iter().map(|&k| all_exposures[k]).collect();
    let renumber: Vec<Option<usize>> = (0..cats.len())
        .map(|k| used.iter().position(|&u| u == k))
        .collect();
    let mut kept: Vec<usize> = Vec::new();
    let mut aligned: Vec<Detection> = Vec::new();
    for (n, d) in dets.iter().enumerate() {
        let Some(e) = renumber[d.exposure] else {
            continue;
        };
        let al = &aligns[d.exposure];
        let (xi, eta) = al.apply(d.xi, d.eta);
        kept.push(n);
        aligned.push(Detection {
            exposure: e,
            xi,
            eta,
            sigma_arcsec: d
                .sigma_arcsec
                .hypot(2.0 * al.rms_arcsec.min(1.0) / (al.n_stars.max(1) as f64).sqrt()),
            ..*d
        });
    }
    let st_cfg = StationaryConfig {
        radius_arcsec: p.stationary_radius_arcsec,
        min_others: None,
        min_motion_arcsec: p.min_motion_arcsec,
        min_motion_sigma: p.min_motion_sigma,
        seeing_fwhm_arcsec: seeing,
    };
    let on_sky = stationary(&exposures, &aligned, &st_cfg);
    let keep: Vec<usize> = (0..aligned.len())
        .filter(|&i| !on_sky[i] && !on_chip[kept[i]])
        .collect();
    let candidates: Vec<Detection> = keep.iter().map(|&i| aligned[i]).collect();
    visit.n_stationary = aligned.len() - candidates.len();
    visit.n_candidates = candidates.len();
    let cfg = LinkConfig {
        min_detections: p.min_detections,
        max_residual_arcsec: p.max_residual_arcsec,
        min_rate_arcsec_per_min: p.min_rate_arcsec_per_min,
        max_rate_arcsec_per_min: p.max_rate_arcsec_per_min,
        min_motion_arcsec: p.min_motion_arcsec,
        min_motion_sigma: p.min_motion_sigma,
        max_chi2_per_dof: p.max_chi2_per_dof,
        max_mag_deviation: p.max_mag_deviation,
        seeing_fwhm_arcsec: seeing,
    };
    let started = std::time::Instant::now();
    // Trails broken into pieces, assembled, go to linking beside their pieces.
    let chains = assemble(&exposures, &candidates, &cfg);
    let mut all = candidates.clone();
    let mut pieces: Vec<Vec<usize>> = (0..candidates.len()).map(|i| vec![i]).collect();
    for c in &chains {
        all.push(c.detection);
        pieces.push(c.pieces.clone());
    }
    let found = link_pieces(&exposures, &all, &pieces, candidates.len(), &cfg);
    let secs = started.elapsed().as_secs_f64();
    let mut per_exp_candidates = vec![0usize; used.len()];
    for d in &candidates {
        per_exp_candidates[d.exposure] += 1;
    }
    visit.exposures = used
        .iter()
        .enumerate()
        .map(|(e, &k)| ExposureOut {
            file: cats[k].file.display().to_string(),
            hdu: cats[k].hdu,
            mjd_mid: cats[k].mjd_mid,
            exptime_secs: cats[k].exptime_secs,
            n_sources: cats[k].rows.len(),
            n_candidates: per_exp_candidates[e],
            aligned_stars: aligns[k].n_stars,
            alignment_rms_arcsec: aligns[k].rms_arcsec,
            shift_arcsec: [aligns[k].shift().0, aligns[k].shift().1],
        })
        .collect();
    visit.reference = used.iter().position(|&k| k == refi).unwrap_or(0);
    visit.n_tracklets = found.len();
    let tracklets = found
        .iter()
        .map(|t| {
            let detections: Vec<DetectionOut> = t
                .detections
                .iter()
                .zip(&t.residuals_arcsec)
                .zip(&t.positions_arcsec)
                .map(|((&ci, &res), &(xi, eta))| {
                    let d = &all[ci];
                    // The piece nearest the detection (the detection itself unless it is an
                    // assembled trail) gives the catalog row. The position is where linking
                    // placed the detection (an assembled trail's middle; a trail cut at the
                    // edge moved along its line); its pixel position is the piece's, moved by
                    // the offset on the sky.
                    let near =
                        |&a: &usize| (candidates[a].xi - d.xi).hypot(candidates[a].eta - d.eta);
                    let pi = pieces[ci]
                        .iter()
                        .copied()
                        .min_by(|a, b| near(a).total_cmp(&near(b)))
                        .unwrap_or(ci);
                    let (k, i) = origin[kept[keep[pi]]];
                    let r = &cats[k].rows[i];
                    let (ra, dec) = deproject(ra0, dec0, xi / arcsec, eta / arcsec);
                    let (x, y) = match jac[k] {
                        Some(j) => {
                            let (u, v) = (xi - candidates[pi].xi, eta - candidates[pi].eta);
                            let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
                            (
                                r.x + (j[1][1] * u - j[0][1] * v) / det,
                                r.y + (-j[1][0] * u + j[0][0] * v) / det,
                            )
                        }
                        None => (r.x, r.y),
                    };
                    let rows = || {
                        pieces[ci].iter().map(|&q| {
                            let (k, i) = origin[kept[keep[q]]];
                            &cats[k].rows[i]
                        })
                    };
                    let merged = pieces[ci].len() > 1;
                    DetectionOut {
                        exposure: d.exposure,
                        mjd: cats[k].mjd_mid,
                        ra_deg: ra,
                        dec_deg: dec,
                        x,
                        y,
                        number: r.number,
                        mag: if merged { d.mag } else { r.mag },
                        magerr: if merged { d.magerr } else { r.magerr },
                        flux: rows().map(|q| q.flux).sum(),
                        elongation: r.elongation,
                        residual_arcsec: res,
                        pieces: if merged {
                            rows().map(|q| q.number).collect()
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect();
            TrackletOut {
                id: String::new(),
                field: field.clone(),
                ccd: ccd.clone(),
                rate_arcsec_per_min: t.rate_arcsec_per_min,
                pa_deg: t.pa_deg,
                rms_arcsec: t.rms_arcsec,
                trailed: t.trailed,
                mag_median: median(detections.iter().map(|d| d.mag).collect()).unwrap_or(f64::NAN),
                detections,
            }
        })
        .collect();
    log.push_str(&format!(
        "link: {field} {ccd}: {} exposures, {} sources, {} stationary, {} candidates, {} tracklets; seeing {seeing:.2}\", linking took {:.1} ms\n",
        used.len(),
        visit.n_sources,
        visit.n_stationary,
        visit.n_candidates,
        visit.n_tracklets,
        secs * 1e3
    ));
    VisitResult {
        visit,
        tracklets,
        log,
    }
}

impl TaskKind for Link {
    fn name(&self) -> &'static str {
        "link"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Find moving objects: align each field's exposures, drop stationary sources, link tracklets."
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
        self::params(params).err().unwrap_or_default()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let p = params(inv.params).map_err(|e| TaskError::params(&e))?;
        let files = catalog_files(inv.inputs.get("catalogs").map_or(&[][..], |v| &v[..]))?;
        if files.is_empty() {
            return Err(TaskError::BadInput(
                "input `catalogs`: no catalog files were given".into(),
            ));
        }
        let mut skipped = Vec::new();
        let mut cats = Vec::new();
        for f in &files {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let headers = match read_headers(f) {
                Ok(h) => h,
                Err(e) => {
                    writeln!(log, "link: skipped: {e}")?;
                    skipped.push(Skipped {
                        file: f.display().to_string(),
                        hdu: 0,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            for hdu in 1..headers.len() {
                match read_table(f, hdu).and_then(|t| read_ccd(f, hdu, &t)) {
                    Ok(c) => cats.push(c),
                    Err(e) => {
                        writeln!(log, "link: skipped: {e}")?;
                        skipped.push(Skipped {
                            file: f.display().to_string(),
                            hdu,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        if cats.is_empty() {
            return Err(TaskError::BadInput(format!(
                "no usable catalog table in {} file(s): {}",
                files.len(),
                skipped
                    .iter()
                    .map(|s| s.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let groups = visits(cats, p.max_gap_min, &mut skipped);
        let results: Vec<VisitResult> = groups
            .par_iter()
            .map(|g| {
                if g.len() < p.min_detections {
                    let v = VisitOut {
                        field: g[0].field.clone(),
                        ccd: g[0].ccd.clone(),
                        exposures: Vec::new(),
                        reference: 0,
                        ra0_deg: None,
                        dec0_deg: None,
                        pixel_scale_arcsec: None,
                        seeing_fwhm_arcsec: None,
                        n_sources: g.iter().map(|c| c.rows.len()).sum(),
                        n_stationary: 0,
                        n_candidates: 0,
                        n_tracklets: 0,
                        not_linked: Some(format!(
                            "{} exposure(s), {} needed",
                            g.len(),
                            p.min_detections
                        )),
                    };
                    VisitResult {
                        log: format!(
                            "link: {} {}: not linked: {}\n",
                            v.field,
                            v.ccd,
                            v.not_linked.as_deref().unwrap_or("")
                        ),
                        visit: v,
                        tracklets: Vec::new(),
                    }
                } else {
                    link_visit(g, &p)
                }
            })
            .collect();
        let mut out = TrackletsFile {
            format: FORMAT.into(),
            params: serde_json::to_value(&p).unwrap_or(J::Null),
            visits: Vec::new(),
            tracklets: Vec::new(),
            skipped,
        };
        let mut summary = String::from(
            "# field | ccd | exposures | sources | stationary | candidates | tracklets | trailed\n",
        );
        for r in results {
            log.write_all(r.log.as_bytes())?;
            let v = &r.visit;
            let trailed = r.tracklets.iter().filter(|t| t.trailed).count();
            summary.push_str(&format!(
                "{} | {} | {} | {} | {} | {} | {} | {}{}\n",
                v.field,
                v.ccd,
                v.exposures.len(),
                v.n_sources,
                v.n_stationary,
                v.n_candidates,
                v.n_tracklets,
                trailed,
                v.not_linked
                    .as_ref()
                    .map(|w| format!(" (not linked: {w})"))
                    .unwrap_or_default()
            ));
            out.visits.push(r.visit);
            for mut t in r.tracklets {
                t.id = format!("T{:04}", out.tracklets.len() + 1);
                out.tracklets.push(t);
            }
        }
        summary.push_str(&format!(
            "# {} visits, {} tracklets, {} tables skipped\n",
            out.visits.len(),
            out.tracklets.len(),
            out.skipped.len()
        ));
        let json = serde_json::to_string_pretty(&out)
            .map_err(|e| TaskError::Failed(format!("cannot write the tracklets: {e}")))?;
        std::fs::write(inv.output("tracklets")?, json)?;
        std::fs::write(inv.output("summary")?, summary)?;
        let code = inv.str("code").unwrap_or("950").to_owned();
        let observations = observations(&out.tracklets, &code);
        let list = serde_json::to_string_pretty(&crate::obs::ObservationList::new(observations))
            .map_err(|e| TaskError::Failed(format!("cannot write the observations: {e}")))?;
        std::fs::write(inv.output("observations")?, list)?;
        nearby_engine::task::write_metrics(
            inv.out_dir,
            &[
                ("tracklets", out.tracklets.len() as f64),
                (
                    "trailed",
                    out.tracklets.iter().filter(|t| t.trailed).count() as f64,
                ),
            ],
        )?;
        Ok(())
    }
}

/// The tracklets as observations for an MPC report: one per detection, under a temporary
/// designation `NB` + the tracklet's number (7 characters, as the MPC allows for new objects),
/// without magnitudes (they are instrumental).
pub fn observations(tracklets: &[TrackletOut], code: &str) -> Vec<crate::obs::Observation> {
    let mut out = Vec::new();
    for (i, t) in tracklets.iter().enumerate() {
        for (k, d) in t.detections.iter().enumerate() {
            out.push(crate::obs::Observation {
                designation: format!("NB{:05}", i + 1),
                mjd_utc: d.mjd,
                ra_deg: d.ra_deg,
                dec_deg: d.dec_deg,
                // Catalog magnitudes are instrumental (no photometric calibration yet): an MPC
                // report leaves the magnitude blank rather than print a wrong one.
                mag: None,
                band: None,
                code: code.to_owned(),
                discovery: k == 0,
            });
        }
    }
    out
}
