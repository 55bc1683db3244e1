//! The `astrometry` task kind: reads a source catalog (one table per CCD, from `extract`, or
//! SExtractor's FITS_LDAC), the image headers with the approximate WCS, and a reference catalog;
//! solves each CCD with [`super::solve`] at the exposure's epoch; writes `wcs.fits` (one
//! header-only HDU per CCD with the solved TAN-SIP WCS and its quality, as SCAMP's `.head`
//! files) and `catalog.fits` (the input tables with ALPHA_J2000/DELTA_J2000 and
//! ALPHAWIN_J2000/DELTAWIN_J2000 from the solution).
//!
//! A CCD that cannot be solved is written without a WCS (`ASTROK = F` and the reason) and its sky
//! columns are NaN; the task fails only when no CCD is solved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};

use super::refcat::RefCatalog;
use super::{search_cone, solve, AstrometryError, SkyStar, Solution, SolveConfig, Source};
use crate::ephem::time::{parse_fits_date, time_of_day};
use crate::fits::{
    read_header, read_headers, read_table, write_headers, write_tables, ColumnData, Header, Table,
    Value,
};
use crate::wcs::TanWcs;

pub struct Astrometry;

const PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "sip_order", ty: PType::Int, required: false, default: Some("3"), doc: "Order of the SIP distortion polynomials, 1 (TAN alone) to 5; lowered on a CCD with fewer than two matches per coefficient." },
    ParamSpec { name: "clip_sigma", ty: PType::Float, required: false, default: Some("3.0"), doc: "Matches whose residual exceeds this many times the robust scatter are left out of the fit." },
    ParamSpec { name: "search_radius_arcmin", ty: PType::Float, required: false, default: Some("6.0"), doc: "How far the header's pointing may be off, arcminutes." },
    ParamSpec { name: "scale_tolerance", ty: PType::Float, required: false, default: Some("0.05"), doc: "How far the header's pixel scale may be off, as a fraction." },
    ParamSpec { name: "min_matches", ty: PType::Int, required: false, default: Some("8"), doc: "Matched stars a solution needs (and far more than chance would give)." },
    ParamSpec { name: "max_rms_arcsec", ty: PType::Float, required: false, default: Some("1.0"), doc: "A solution whose residual RMS is larger is rejected, arcseconds." },
    ParamSpec { name: "n_pattern", ty: PType::Int, required: false, default: Some("40"), doc: "Brightest sources the triangle matcher uses at most." },
    ParamSpec { name: "ref_sigma_arcsec", ty: PType::Float, required: false, default: Some("0.005"), doc: "Uncertainty of the reference positions at the epoch of the exposure, arcseconds (weights the fit)." },
    ParamSpec { name: "ra_deg", ty: PType::Float, required: false, default: None, doc: "Pointing (image centre) to use instead of the header's, with dec_deg, degrees." },
    ParamSpec { name: "dec_deg", ty: PType::Float, required: false, default: None, doc: "Pointing (image centre) to use instead of the header's, with ra_deg, degrees." },
    ParamSpec { name: "pixel_scale_arcsec", ty: PType::Float, required: false, default: None, doc: "Pixel scale, arcsec/px, for headers without a CD matrix (or to override it)." },
];

const INPUTS: &[PortSpec] = &[
    PortSpec {
        name: "catalog",
        file: "",
        required: true,
        doc: "Source catalog: extract's catalog.fits (one table per CCD) or SExtractor FITS_LDAC.",
    },
    PortSpec {
        name: "image",
        file: "",
        required: false,
        doc: "The image the catalog was extracted from: its headers give the approximate WCS, the size and the time (else the LDAC headers or the catalog's).",
    },
    PortSpec {
        name: "refcat",
        file: "",
        required: true,
        doc: "Reference catalog: FITS table(s) or CSV with RA, DEC, PMRA, PMDEC, MAG (Gaia names work too), or astrometry.net index files (Debian's Tycho-2).",
    },
];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "wcs",
        file: "wcs.fits",
        required: true,
        doc: "One header-only HDU per CCD (EXTNAME of the catalog table): the solved TAN-SIP WCS, ASTROK, ASTNMAT, ASTRMS, or the reason it failed.",
    },
    PortSpec {
        name: "catalog",
        file: "catalog.fits",
        required: true,
        doc: "The input tables with ALPHA_J2000/DELTA_J2000 (X_IMAGE) and ALPHAWIN_J2000/DELTAWIN_J2000 (XWIN_IMAGE) from the solved WCS.",
    },
];

/// Params as a solver config, with every problem as (param, message).
fn config(p: &Map<String, J>) -> Result<SolveConfig, Vec<(&'static str, String)>> {
    let mut cfg = SolveConfig::default();
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
    let mut get = |name: &'static str, lo: f64, hi: f64, set: &mut dyn FnMut(f64)| match num(name) {
        Some(Ok(x)) if (lo..=hi).contains(&x) => set(x),
        Some(Ok(x)) => problems.push((name, format!("{x}: expected {lo} to {hi}"))),
        Some(Err(e)) => problems.push((name, e)),
        None => {}
    };
    get("sip_order", 1.0, 5.0, &mut |x| cfg.sip_order = x as usize);
    get("clip_sigma", 1.5, 100.0, &mut |x| cfg.clip_sigma = x);
    get("search_radius_arcmin", 0.0, 600.0, &mut |x| {
        cfg.search_radius_deg = x / 60.0
    });
    get("scale_tolerance", 0.001, 0.5, &mut |x| cfg.scale_tol = x);
    get("min_matches", 6.0, 1e6, &mut |x| {
        cfg.min_matches = x as usize
    });
    get("max_rms_arcsec", 0.0, 60.0, &mut |x| cfg.max_rms_arcsec = x);
    get("n_pattern", 8.0, 500.0, &mut |x| cfg.n_pattern = x as usize);
    get("ref_sigma_arcsec", 0.0, 10.0, &mut |x| {
        cfg.ref_sigma_arcsec = x
    });
    get("ra_deg", -360.0, 720.0, &mut |_| {});
    get("dec_deg", -90.0, 90.0, &mut |_| {});
    get("pixel_scale_arcsec", 1e-3, 3600.0, &mut |_| {});
    if p.contains_key("ra_deg") != p.contains_key("dec_deg") {
        problems.push(("ra_deg", "ra_deg and dec_deg go together".into()));
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// One CCD's catalog table and the header its image (or LDAC) gives.
struct Ccd {
    table: Table,
    /// The image header (WCS, size, time), else the LDAC header, else the table's own.
    header: Header,
}

/// `Field Header Card` of an LDAC_IMHEAD table as a header.
fn ldac_header(t: &Table) -> Option<Header> {
    let text = t.strs("Field Header Card").ok()?.first()?.clone();
    let cards: Vec<String> = text
        .as_bytes()
        .chunks(80)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Some(Header::from_cards(&cards))
}

/// The catalog's tables paired with their image headers: extract's tables by EXTNAME (else in
/// order), an LDAC file's LDAC_OBJECTS with the LDAC_IMHEAD before each.
fn read_ccds(catalog: &Path, image: Option<&Path>) -> Result<Vec<Ccd>, TaskError> {
    let headers = read_headers(catalog)?;
    let mut ccds = Vec::new();
    let mut ldac: Option<Header> = None;
    for (hdu, h) in headers.iter().enumerate().skip(1) {
        if !matches!(h.get("XTENSION"), Some(Value::Str(s)) if s.trim() == "BINTABLE") {
            continue;
        }
        let t = read_table(catalog, hdu)?;
        match t.name.as_str() {
            "LDAC_IMHEAD" => ldac = ldac_header(&t),
            _ => {
                let header = ldac.take().unwrap_or_else(|| t.header.clone());
                ccds.push(Ccd { table: t, header });
            }
        }
    }
    if ccds.is_empty() {
        return Err(TaskError::BadInput(format!(
            "{}: no catalog table among its {} HDUs",
            catalog.display(),
            headers.len()
        )));
    }
    let Some(image) = image else {
        return Ok(ccds);
    };
    let primary = read_header(image, 0)?;
    let imgs: Vec<Header> = read_headers(image)?
        .into_iter()
        .filter(|h| {
            h.i64("NAXIS").is_ok_and(|n| n >= 2)
                && h.i64("NAXIS1").is_ok_and(|n| n > 0)
                && h.i64("NAXIS2").is_ok_and(|n| n > 0)
        })
        .collect();
    let many = ccds.len();
    for (k, c) in ccds.iter_mut().enumerate() {
        let by_name = imgs
            .iter()
            .find(|h| h.str("EXTNAME").is_ok_and(|e| e.trim() == c.table.name));
        let h = by_name.or(if imgs.len() == many {
            imgs.get(k)
        } else {
            None
        });
        let Some(h) = h else {
            return Err(TaskError::BadInput(format!(
                "{}: no image HDU for catalog table {} (EXTNAME), and the image has {} image \
                 HDUs for {many} tables",
                image.display(),
                c.table.name,
                imgs.len()
            )));
        };
        let mut merged = primary.clone();
        merged.merge(h);
        merged.set_origin(h.origin().cloned());
        c.header = merged;
    }
    Ok(ccds)
}

/// A value of `key` from the first header that has it.
fn f64_of(hs: &[&Header], key: &str) -> Option<f64> {
    hs.iter().find_map(|h| h.f64(key).ok())
}

/// The image size: NAXIS1/2 of the image, else SEXIMASX/SEXIMASY of extract's table.
fn image_size(c: &Ccd) -> Result<(usize, usize), String> {
    // NAXIS1/2 of a table header are its row length and row count, not an image size.
    let is_table =
        |h: &Header| matches!(h.get("XTENSION"), Some(Value::Str(s)) if s.trim() == "BINTABLE");
    let image: Vec<&Header> = [&c.header].into_iter().filter(|h| !is_table(h)).collect();
    let hs = [&c.header, &c.table.header];
    let get = |a: &str, b: &str| f64_of(&image, a).or_else(|| f64_of(&hs, b));
    match (get("NAXIS1", "SEXIMASX"), get("NAXIS2", "SEXIMASY")) {
        (Some(w), Some(h)) if w >= 1.0 && h >= 1.0 => Ok((w as usize, h as usize)),
        _ => Err(
            "no image size: give the image input (NAXIS1/NAXIS2) or a catalog with \
                  SEXIMASX/SEXIMASY"
                .into(),
        ),
    }
}

/// Julian year at mid-exposure: MJD-OBS (else DATE-OBS) plus half of EXPTIME.
fn epoch(c: &Ccd) -> Result<f64, String> {
    let hs = [&c.table.header, &c.header];
    let start = match f64_of(&hs, "MJD-OBS") {
        Some(mjd) => mjd,
        None => {
            // The first header whose DATE-OBS reads; else why the first one present did not.
            let dates: Vec<Result<f64, String>> = hs
                .iter()
                .filter_map(|h| {
                    let date = h.str("DATE-OBS").ok()?;
                    Some(
                        parse_fits_date(&date, time_of_day(h).as_deref())
                            .map_err(|e| format!("{}: key DATE-OBS: {e}", h.loc())),
                    )
                })
                .collect();
            match dates.iter().find_map(|d| d.as_ref().ok()) {
                Some(mjd) => *mjd,
                None => {
                    return Err(dates.into_iter().find_map(Result::err).unwrap_or_else(|| {
                        "no time: the headers have neither MJD-OBS nor DATE-OBS, needed to \
                         move the reference stars by their proper motions"
                            .into()
                    }))
                }
            }
        }
    };
    let half = f64_of(&hs, "EXPTIME").unwrap_or(0.0) / 2.0 / 86400.0;
    Ok(2000.0 + (start + half - 51544.5) / 365.25)
}

/// An angle in degrees from a number or sexagesimal text (`hours` for RA in `HH:MM:SS`).
fn angle(v: &Value, hours: bool) -> Option<f64> {
    if let Some(x) = v.as_f64() {
        return Some(x);
    }
    let Value::Str(s) = v else { return None };
    let s = s.trim();
    let neg = s.starts_with('-');
    let parts: Vec<f64> = s
        .trim_start_matches(['-', '+'])
        .split([':', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut x = parts[0];
    if parts.len() > 1 {
        x += parts[1] / 60.0 + parts.get(2).copied().unwrap_or(0.0) / 3600.0;
    } else if !s.contains(':') {
        // A plain number in a string is degrees.
        return Some(if neg { -x } else { x });
    }
    let x = if neg { -x } else { x };
    Some(if hours { x * 15.0 } else { x })
}

/// The approximate WCS to start from: the header's TAN WCS (with the params' pointing or
/// scale when given), else RA/DEC keys and a pixel scale, centred on the image.
fn hint(c: &Ccd, p: &Map<String, J>, w: usize, h: usize) -> Result<TanWcs, String> {
    let num = |k: &str| {
        p.get(k)
            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
    };
    let centre = [(w as f64 + 1.0) / 2.0, (h as f64 + 1.0) / 2.0];
    let header_wcs =
        TanWcs::from_header(&c.header).or_else(|| TanWcs::from_header(&c.table.header));
    let scale = num("pixel_scale_arcsec").map(|s| s / 3600.0);
    if let Some(mut wcs) = header_wcs {
        wcs.sip = None;
        if let Some(s) = scale {
            let f = s / wcs.scale_deg();
            wcs.cd = wcs.cd.map(|r| r.map(|v| v * f));
        }
        if let (Some(ra), Some(dec)) = (num("ra_deg"), num("dec_deg")) {
            let cd = wcs.cd;
            return Ok(TanWcs::new(centre, [ra.rem_euclid(360.0), dec], cd));
        }
        return Ok(wcs);
    }
    let hs = [&c.header, &c.table.header];
    let from_keys = |k: &str, hours: bool| {
        hs.iter()
            .find_map(|hd| hd.get(k).and_then(|v| angle(v, hours)))
    };
    let ra = num("ra_deg")
        .or_else(|| from_keys("RA", true))
        .or_else(|| from_keys("RA_DEG", false));
    let dec = num("dec_deg")
        .or_else(|| from_keys("DEC", false))
        .or_else(|| from_keys("DEC_DEG", false));
    let scale = scale.or_else(|| {
        ["PIXSCALE", "SECPIX", "PIXSCAL1"]
            .iter()
            .find_map(|k| f64_of(&hs, k))
            .map(|s| s / 3600.0)
    });
    match (ra, dec, scale) {
        (Some(ra), Some(dec), Some(s)) if (-90.0..=90.0).contains(&dec) && s > 0.0 => Ok(
            TanWcs::new(centre, [ra.rem_euclid(360.0), dec], [[-s, 0.0], [0.0, s]]),
        ),
        _ => Err(format!(
            "no WCS hint: the header has no TAN WCS (CTYPE1/2 = RA---TAN/DEC--TAN, CRVAL, CRPIX, \
             CD) and {}; give the params ra_deg, dec_deg and pixel_scale_arcsec",
            match (ra.is_some() && dec.is_some(), scale.is_some()) {
                (false, _) => "no RA/DEC keys",
                (true, false) => "RA/DEC keys but no pixel scale (PIXSCALE, SECPIX)",
                (true, true) => "RA/DEC keys out of range",
            }
        )),
    }
}

/// A numeric column by the first of `names` present, NaN where missing.
fn column(t: &Table, names: &[&str]) -> Option<Vec<f64>> {
    names.iter().find_map(|n| t.f64s(n).ok())
}

/// The sources of a table: windowed centroids (else isophotal), their errors, AUTO flux (else
/// ISO), and whether each is a clean star: FLAGS <= 1, not much more elongated than round and no
/// sharper than most bright sources (cosmic rays and hot pixels are).
fn sources(t: &Table) -> Result<Vec<Source>, String> {
    let n = t.nrows();
    let need = |names: &[&str]| {
        column(t, names).ok_or_else(|| {
            format!(
                "table {}: no {} column; the columns are: {}",
                t.name,
                names.join(" or "),
                t.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let x = need(&["XWIN_IMAGE", "X_IMAGE"])?;
    let y = need(&["YWIN_IMAGE", "Y_IMAGE"])?;
    let flux = need(&["FLUX_AUTO", "FLUX_ISO", "FLUX_APER"])?;
    let ex = column(t, &["ERRX2WIN_IMAGE", "ERRX2_IMAGE"]).unwrap_or_else(|| vec![0.01; n]);
    let ey = column(t, &["ERRY2WIN_IMAGE", "ERRY2_IMAGE"]).unwrap_or_else(|| vec![0.01; n]);
    let flags = column(t, &["FLAGS"]).unwrap_or_else(|| vec![0.0; n]);
    let fwhm = column(t, &["FWHM_IMAGE"]);
    let elong = column(t, &["ELONGATION"]).unwrap_or_else(|| vec![1.0; n]);
    // The typical FWHM of the brighter half of the unflagged sources.
    let typical = fwhm.as_ref().and_then(|f| {
        let mut idx: Vec<usize> = (0..n)
            .filter(|&i| flags[i] == 0.0 && f[i].is_finite() && flux[i] > 0.0)
            .collect();
        idx.sort_by(|&a, &b| flux[b].total_cmp(&flux[a]));
        idx.truncate((idx.len() / 2).max(1));
        let mut v: Vec<f64> = idx.iter().map(|&i| f[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    });
    Ok((0..n)
        .map(|i| {
            let sharp = match (&fwhm, typical) {
                (Some(f), Some(t)) => f[i].is_nan() || f[i] < 0.6 * t,
                _ => false,
            };
            let var = (ex[i] + ey[i]) / 2.0;
            Source {
                x: x[i],
                y: y[i],
                sigma_px: if var.is_finite() && var > 0.0 {
                    var.sqrt()
                } else {
                    0.1
                },
                flux: flux[i],
                clean: flags[i] <= 1.0 && elong[i] < 2.0 && !sharp,
            }
        })
        .collect())
}

/// Sky columns (degrees) of `t` from a pixel -> sky function: ALPHA/DELTA_J2000 from X/Y_IMAGE
/// and ALPHAWIN/DELTAWIN_J2000 from X/YWIN_IMAGE, replacing those already there.
fn set_sky(t: &mut Table, f: &dyn Fn(f64, f64) -> (f64, f64)) {
    for (xs, ys, a, d) in [
        ("X_IMAGE", "Y_IMAGE", "ALPHA_J2000", "DELTA_J2000"),
        (
            "XWIN_IMAGE",
            "YWIN_IMAGE",
            "ALPHAWIN_J2000",
            "DELTAWIN_J2000",
        ),
    ] {
        let (Ok(x), Ok(y)) = (t.f64s(xs), t.f64s(ys)) else {
            continue;
        };
        let sky: Vec<(f64, f64)> = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                if x.is_finite() && y.is_finite() {
                    f(x, y)
                } else {
                    (f64::NAN, f64::NAN)
                }
            })
            .collect();
        t.columns
            .retain(|c| !c.name.eq_ignore_ascii_case(a) && !c.name.eq_ignore_ascii_case(d));
        let ra: Vec<f64> = sky.iter().map(|s| s.0).collect();
        let dec: Vec<f64> = sky.iter().map(|s| s.1).collect();
        *t = std::mem::take(t).with(a, "deg", ColumnData::F64(ra)).with(
            d,
            "deg",
            ColumnData::F64(dec),
        );
    }
}

/// Solves one CCD: everything from the inputs to the solution, or why not.
fn solve_ccd(
    c: &Ccd,
    p: &Map<String, J>,
    cfg: &SolveConfig,
    refcat: &RefCatalog,
) -> Result<(Solution, f64, TanWcs, usize), String> {
    let (w, h) = image_size(c)?;
    let start = hint(c, p, w, h)?;
    let epoch = epoch(c)?;
    let srcs = sources(&c.table)?;
    let (ra, dec, radius) = search_cone(&start, w, h, cfg);
    let refs: Vec<SkyStar> = refcat
        .cone(ra, dec, radius)
        .iter()
        .map(|s| {
            let (ra_deg, dec_deg) = s.at(epoch);
            SkyStar {
                ra_deg,
                dec_deg,
                mag: s.mag,
            }
        })
        .collect();
    let n_refs = refs.len();
    solve(&srcs, w, h, &start, &refs, cfg)
        .map(|s| (s, epoch, start, n_refs))
        .map_err(|e| e.to_string())
}

impl TaskKind for Astrometry {
    fn name(&self) -> &'static str {
        "astrometry"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Solve each CCD's WCS (TAN-SIP) against a reference catalog by triangle matching."
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
        let catalog = inv.input("catalog")?;
        let image = inv
            .inputs
            .get("image")
            .and_then(|v| v.first())
            .map(PathBuf::as_path);
        let refs: &[PathBuf] = inv
            .inputs
            .get("refcat")
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ccds = read_ccds(catalog, image)?;
        // Only the stars in the CCDs' search cones are indexed (a CCD without a usable hint
        // fails on its own below).
        let cones: Vec<(f64, f64, f64)> = ccds
            .iter()
            .filter_map(|c| {
                let (w, h) = image_size(c).ok()?;
                let start = hint(c, inv.params, w, h).ok()?;
                Some(search_cone(&start, w, h, &cfg))
            })
            .collect();
        let refcat = RefCatalog::read_near(refs, Some(&cones)).map_err(|e| match e {
            AstrometryError::Io { .. } => TaskError::Failed(e.to_string()),
            _ => TaskError::BadInput(e.to_string()),
        })?;
        writeln!(
            log,
            "astrometry: reference catalog: {} stars in the search cones of {} CCD(s), from {} \
             file(s){}",
            refcat.stars.len(),
            cones.len(),
            refs.len(),
            match &refcat.first_skipped {
                Some(why) => format!(", {} rows skipped (first: {why})", refcat.skipped),
                None => String::new(),
            }
        )?;
        let (mut tables, mut heads, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        for c in ccds {
            if inv.cancel.load(Ordering::Relaxed) {
                return Err(TaskError::Cancelled);
            }
            let name = c.table.name.clone();
            let mut head = Header::new();
            head.set("EXTNAME", name.as_str(), "catalog table of this CCD");
            for key in [
                "CCDNAME", "IMAGEID", "DATE-OBS", "MJD-OBS", "EXPTIME", "FILTER",
            ] {
                if let Some(card) = c.header.card(key).or_else(|| c.table.header.card(key)) {
                    head.set(key, card.value.clone(), &card.comment);
                }
            }
            let mut table = c.table.clone();
            match solve_ccd(&c, inv.params, &cfg, &refcat) {
                Ok((s, epoch, start, n_refs)) => {
                    let (w, h) = image_size(&c).unwrap_or((0, 0));
                    let (ra1, dec1) = s.wcs.pix_to_sky(s.wcs.crpix[0], s.wcs.crpix[1]);
                    let (ra0, dec0) = start.pix_to_sky(s.wcs.crpix[0], s.wcs.crpix[1]);
                    let off = crate::simulate::separation_deg(ra0, dec0, ra1, dec1) * 3600.0;
                    let rot = (s.wcs.cd[1][0].atan2(s.wcs.cd[1][1])
                        - start.cd[1][0].atan2(start.cd[1][1]))
                    .to_degrees();
                    writeln!(
                        log,
                        "astrometry: {name}: solved: {} stars of {} matches, RMS {:.4}\" ({:.4} px), \
                         SIP order {}, inverse within {:.1e} px; {} reference stars in the cone at \
                         epoch {epoch:.3}; the header was off by {off:.1}\" and {rot:.3} deg; \
                         {} pattern candidates",
                        s.n_used,
                        s.matches.len(),
                        s.rms_arcsec,
                        s.rms_px,
                        s.order,
                        s.inverse_err_px,
                        n_refs,
                        s.pattern_trials
                    )?;
                    s.wcs.write(&mut head);
                    head.set("IMAGEW", w as i64, "[px] image width")
                        .set("IMAGEH", h as i64, "[px] image height")
                        .set("ASTROK", true, "the WCS was solved")
                        .set("ASTNMAT", s.n_used as i64, "matched stars used in the fit")
                        .set(
                            "ASTNCLIP",
                            (s.matches.len() - s.n_used) as i64,
                            "matches clipped",
                        )
                        .set("ASTRMS", s.rms_arcsec, "[arcsec] RMS of the fit residuals")
                        .set("ASTRMSPX", s.rms_px, "[px] RMS of the fit residuals")
                        .set("ASTORDER", s.order as i64, "SIP order fitted")
                        .set("ASTINVER", s.inverse_err_px, "[px] largest error of AP/BP")
                        .set("ASTEPOCH", epoch, "[yr] epoch the references were moved to")
                        .set("ASTOFFS", off, "[arcsec] header pointing error at CRPIX");
                    table
                        .header
                        .set("ASTROK", true, "sky positions from the solved WCS")
                        .set("ASTNMAT", s.n_used as i64, "matched stars used in the fit")
                        .set("ASTRMS", s.rms_arcsec, "[arcsec] RMS of the fit residuals");
                    let wcs = s.wcs.clone();
                    set_sky(&mut table, &|x, y| wcs.pix_to_sky(x, y));
                }
                Err(why) => {
                    writeln!(log, "astrometry: {name}: not solved: {why}")?;
                    let short: String = why.chars().take(60).collect();
                    head.set("ASTROK", false, "no WCS: see ASTERR and the task log")
                        .set("ASTERR", short.as_str(), "why the CCD was not solved");
                    table
                        .header
                        .set("ASTROK", false, "not solved: no sky positions");
                    set_sky(&mut table, &|_, _| (f64::NAN, f64::NAN));
                    failures.push(format!("{name}: {why}"));
                }
            }
            heads.push(head);
            tables.push(table);
        }
        if failures.len() == tables.len() {
            return Err(TaskError::BadInput(format!(
                "{}: no CCD could be solved: {}",
                catalog.display(),
                failures.join("; ")
            )));
        }
        let mut primary = Header::new();
        primary.set("ORIGIN", "nearby astrometry", "");
        write_headers(inv.output("wcs")?, &primary, &heads)?;
        write_tables(inv.output("catalog")?, &primary, &tables)?;
        Ok(())
    }
}

/// The solved WCS of the CCD with this header (by EXTNAME) among `read_wcs_file`'s answer; `None`
/// when that CCD was not solved or is not there.
pub fn solved_for(
    header: &crate::fits::Header,
    solved: &[(String, Option<TanWcs>)],
) -> Option<TanWcs> {
    let name = header.str("EXTNAME").unwrap_or_default();
    solved
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, w)| w.clone())
}

/// The solved WCS of every CCD in a `wcs.fits` (EXTNAME, and the WCS or `None` where it was not
/// solved), for the kinds that resample or cut images.
pub fn read_wcs_file(path: &Path) -> Result<Vec<(String, Option<TanWcs>)>, TaskError> {
    Ok(read_headers(path)?
        .iter()
        .skip(1)
        .map(|h| {
            let name = h.str("EXTNAME").unwrap_or_default();
            let ok = matches!(h.get("ASTROK"), Some(Value::Bool(true)));
            (name, if ok { TanWcs::from_header(h) } else { None })
        })
        .collect())
}
