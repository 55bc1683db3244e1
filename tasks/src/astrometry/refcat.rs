//! Reference catalogs: stars with positions, proper motions and magnitudes, read from FITS binary
//! tables or CSV files, indexed by a k-d tree over unit vectors for cone searches, and moved to
//! the epoch of an exposure by their proper motions.
//!
//! Columns are found by name, case-insensitively, under the names the simulator and Gaia use:
//! RA (`RA`, `RA_ICRS`, `RAJ2000`), Dec (`DEC`, `DE_ICRS`, `DEJ2000`), proper motions in mas/yr
//! (`PMRA` = mu_alpha cos delta, `PMDEC`/`PMDE`; optional), magnitude (`MAG`,
//! `PHOT_G_MEAN_MAG`, `GMAG`; optional) and epoch (`REF_EPOCH`/`EPOCH` column, else the
//! `EPOCH`/`REFEPOCH` header key, else J2000.0 when there are no proper motions).

use std::path::Path;

use super::kdtree::KdTree;
use super::{anindex, AstrometryError};
use crate::fits::{hdu_count, read_header, read_table, Table, Value};

const RA: &[&str] = &["RA", "RA_ICRS", "RAJ2000", "ALPHA_J2000"];
const DEC: &[&str] = &["DEC", "DE_ICRS", "DEJ2000", "DELTA_J2000"];
const PMRA: &[&str] = &["PMRA", "PMRA_MAS_PER_YR"];
const PMDEC: &[&str] = &["PMDEC", "PMDE", "PMDEC_MAS_PER_YR"];
const MAG: &[&str] = &["MAG", "PHOT_G_MEAN_MAG", "GMAG"];
const EPOCH: &[&str] = &["REF_EPOCH", "EPOCH"];

/// One reference star at its catalog epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefStar {
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// mu_alpha * cos(delta) and mu_delta, milliarcseconds per year (0 when unknown).
    pub pmra_mas_per_yr: f64,
    pub pmdec_mas_per_yr: f64,
    /// Julian year of the position.
    pub epoch_jyr: f64,
    /// Infinity when unknown (sorted after every measured star).
    pub mag: f64,
}

impl RefStar {
    /// Position (degrees) at Julian year `epoch`: the unit vector moved along its proper motion
    /// in the tangent plane, so it holds at the poles too.
    pub fn at(&self, epoch: f64) -> (f64, f64) {
        let dt = epoch - self.epoch_jyr;
        if dt == 0.0 || (self.pmra_mas_per_yr == 0.0 && self.pmdec_mas_per_yr == 0.0) {
            return (self.ra_deg, self.dec_deg);
        }
        let (a, d) = (self.ra_deg.to_radians(), self.dec_deg.to_radians());
        let mas = std::f64::consts::PI / 180.0 / 3.6e6;
        let (mu_a, mu_d) = (
            self.pmra_mas_per_yr * mas * dt,
            self.pmdec_mas_per_yr * mas * dt,
        );
        // p: position, e: toward the east, n: toward the north.
        let p = [d.cos() * a.cos(), d.cos() * a.sin(), d.sin()];
        let e = [-a.sin(), a.cos(), 0.0];
        let n = [-d.sin() * a.cos(), -d.sin() * a.sin(), d.cos()];
        let v: Vec<f64> = (0..3).map(|i| p[i] + mu_a * e[i] + mu_d * n[i]).collect();
        let ra = v[1].atan2(v[0]).to_degrees().rem_euclid(360.0);
        let dec = v[2].atan2(v[0].hypot(v[1])).to_degrees();
        (ra, dec)
    }
}

fn unit(ra_deg: f64, dec_deg: f64) -> [f64; 3] {
    let (a, d) = (ra_deg.to_radians(), dec_deg.to_radians());
    [d.cos() * a.cos(), d.cos() * a.sin(), d.sin()]
}

/// A reference catalog with its spatial index.
#[derive(Debug)]
pub struct RefCatalog {
    pub stars: Vec<RefStar>,
    /// Rows left out (no finite RA/Dec, or Dec outside -90..90), with the first as an example.
    pub skipped: usize,
    pub first_skipped: Option<String>,
    tree: KdTree<3>,
}

/// The stars of one file before indexing, with the rows it skipped.
struct Read {
    stars: Vec<RefStar>,
    skipped: usize,
    first_skipped: Option<String>,
}

impl RefCatalog {
    /// A catalog of these stars.
    pub fn new(stars: Vec<RefStar>) -> RefCatalog {
        let pts: Vec<[f64; 3]> = stars.iter().map(|s| unit(s.ra_deg, s.dec_deg)).collect();
        RefCatalog {
            tree: KdTree::new(&pts),
            stars,
            skipped: 0,
            first_skipped: None,
        }
    }

    /// Reads and indexes one or more files (a Gaia extract split in tiles is several): a name
    /// ending in `.csv` is CSV; a FITS file is an astrometry.net index file when its primary
    /// header says so ([`anindex`]), else every binary table HDU with RA and Dec. The index
    /// files of one series (Tycho-2's 10 to 19) hold many of the same stars: a star of a later
    /// index file within [`DUPLICATE_ARCSEC`] of one already read is left out.
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<RefCatalog, AstrometryError> {
        RefCatalog::read_near(paths, None)
    }

    /// [`RefCatalog::read`], keeping only the stars within one of `cones` (RA, Dec, radius, in
    /// degrees) when given. A solver needs a few arcminutes around each CCD, not the sky: Debian's
    /// Tycho-2 index files hold 725,000 distinct stars, and indexing all of them (and finding the
    /// duplicates between files) took seconds per frame; the cones leave a few hundred.
    pub fn read_near(
        paths: &[impl AsRef<Path>],
        cones: Option<&[(f64, f64, f64)]>,
    ) -> Result<RefCatalog, AstrometryError> {
        let cones: Option<Vec<([f64; 3], f64)>> = cones.map(|c| {
            c.iter()
                .map(|&(ra, dec, r)| (unit(ra, dec), r.min(180.0).to_radians().cos()))
                .collect()
        });
        let near = |stars: Vec<RefStar>| -> Vec<RefStar> {
            let Some(cones) = &cones else {
                return stars;
            };
            stars
                .into_iter()
                .filter(|s| {
                    let u = unit(s.ra_deg, s.dec_deg);
                    cones
                        .iter()
                        .any(|(c, cos_r)| u[0] * c[0] + u[1] * c[1] + u[2] * c[2] >= *cos_r)
                })
                .collect()
        };
        let mut all = Vec::new();
        let (mut skipped, mut first_skipped) = (0, None);
        let mut index_stars: Vec<RefStar> = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let csv = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if !csv && anindex::is_index(&read_header(p, 0)?) {
                let stars = near(anindex::read_index(p)?);
                index_stars = merge_distinct(index_stars, stars);
                continue;
            }
            let r = if csv { read_csv(p)? } else { read_fits(p)? };
            all.extend(near(r.stars));
            skipped += r.skipped;
            first_skipped = first_skipped.or(r.first_skipped);
        }
        all.extend(index_stars);
        let mut cat = RefCatalog::new(all);
        cat.skipped = skipped;
        cat.first_skipped = first_skipped;
        Ok(cat)
    }

    /// Stars within `radius_deg` of (ra, dec), at their catalog epoch.
    pub fn cone(&self, ra_deg: f64, dec_deg: f64, radius_deg: f64) -> Vec<RefStar> {
        let chord = 2.0 * (radius_deg.min(180.0).to_radians() / 2.0).sin();
        self.tree
            .within(&unit(ra_deg, dec_deg), chord)
            .into_iter()
            .map(|i| self.stars[i])
            .collect()
    }
}

/// Two index stars closer than this are the same star, arcseconds (astrometry.net's own
/// deduplication radius for Tycho-2 is 1").
pub const DUPLICATE_ARCSEC: f64 = 1.0;

/// `have` and those of `more` that are not within [`DUPLICATE_ARCSEC`] of a star of `have`.
fn merge_distinct(mut have: Vec<RefStar>, more: Vec<RefStar>) -> Vec<RefStar> {
    if have.is_empty() {
        return more;
    }
    let pts: Vec<[f64; 3]> = have.iter().map(|s| unit(s.ra_deg, s.dec_deg)).collect();
    let tree = KdTree::new(&pts);
    let chord = (DUPLICATE_ARCSEC / 3600.0).to_radians();
    have.extend(
        more.into_iter()
            .filter(|s| tree.nearest(&unit(s.ra_deg, s.dec_deg), chord).is_none()),
    );
    have
}

fn refcat_error(path: &Path, what: impl Into<String>) -> AstrometryError {
    AstrometryError::Refcat {
        file: path.display().to_string(),
        what: what.into(),
    }
}

/// The first of `names` that `have` holds (case-insensitively), as the name in `have`.
fn find<'a>(have: &'a [String], names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| {
        have.iter()
            .find(|h| h.trim().eq_ignore_ascii_case(n))
            .map(String::as_str)
    })
}

/// Rows of named numeric columns to stars; `epoch_key` is the file's epoch when there is no
/// epoch column. `row_name` names row `i` in messages.
fn to_stars(
    path: &Path,
    names: &[String],
    column: &dyn Fn(&str) -> Result<Vec<f64>, AstrometryError>,
    epoch_key: Option<f64>,
    row_name: &dyn Fn(usize) -> String,
) -> Result<Read, AstrometryError> {
    let need = |names_wanted: &[&str], what: &str| {
        find(names, names_wanted).ok_or_else(|| {
            refcat_error(
                path,
                format!(
                    "no {what} column (looked for {}); the columns are: {}",
                    names_wanted.join(", "),
                    names.join(", ")
                ),
            )
        })
    };
    let ra = column(need(RA, "RA")?)?;
    let dec = column(need(DEC, "Dec")?)?;
    let opt = |wanted: &[&str]| find(names, wanted).map(column).transpose();
    let pmra = opt(PMRA)?;
    let pmdec = opt(PMDEC)?;
    let mag = opt(MAG)?;
    let epoch_col = opt(EPOCH)?;
    let has_pm = pmra.is_some() || pmdec.is_some();
    if has_pm && epoch_col.is_none() && epoch_key.is_none() {
        return Err(refcat_error(
            path,
            "proper motions without an epoch: add a REF_EPOCH column or an EPOCH header key \
             (Julian year of the positions, 2016.0 for Gaia DR3)",
        ));
    }
    let mut out = Read {
        stars: Vec::with_capacity(ra.len()),
        skipped: 0,
        first_skipped: None,
    };
    let get = |c: &Option<Vec<f64>>, i: usize| c.as_ref().map_or(f64::NAN, |v| v[i]);
    for i in 0..ra.len() {
        let (a, d) = (ra[i], dec[i]);
        if !(a.is_finite() && d.is_finite() && (-90.0..=90.0).contains(&d)) {
            out.skipped += 1;
            if out.first_skipped.is_none() {
                out.first_skipped = Some(format!(
                    "{}: {}: RA {a}, Dec {d}: expected finite degrees, |Dec| <= 90",
                    path.display(),
                    row_name(i)
                ));
            }
            continue;
        }
        let finite_or = |v: f64, or: f64| if v.is_finite() { v } else { or };
        out.stars.push(RefStar {
            ra_deg: a.rem_euclid(360.0),
            dec_deg: d,
            // Gaia's two-parameter solutions have no proper motion: take it as zero.
            pmra_mas_per_yr: finite_or(get(&pmra, i), 0.0),
            pmdec_mas_per_yr: finite_or(get(&pmdec, i), 0.0),
            epoch_jyr: finite_or(get(&epoch_col, i), epoch_key.unwrap_or(2000.0)),
            mag: finite_or(get(&mag, i), f64::INFINITY),
        });
    }
    Ok(out)
}

fn read_fits(path: &Path) -> Result<Read, AstrometryError> {
    let n = hdu_count(path)?;
    let mut out = Read {
        stars: Vec::new(),
        skipped: 0,
        first_skipped: None,
    };
    let mut tables = 0;
    for hdu in 1..n {
        let h = read_header(path, hdu)?;
        if !matches!(h.get("XTENSION"), Some(Value::Str(s)) if s.trim() == "BINTABLE") {
            continue;
        }
        let t: Table = read_table(path, hdu)?;
        let names: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        if find(&names, RA).is_none() && tables > 0 {
            continue;
        }
        tables += 1;
        let epoch_key = ["EPOCH", "REFEPOCH"]
            .iter()
            .find_map(|k| t.header.f64(k).ok());
        let column = |name: &str| t.f64s(name).map_err(AstrometryError::from);
        let r = to_stars(path, &names, &column, epoch_key, &|i| {
            format!("HDU {hdu}, row {}", i + 1)
        })?;
        out.stars.extend(r.stars);
        out.skipped += r.skipped;
        out.first_skipped = out.first_skipped.or(r.first_skipped);
    }
    if tables == 0 {
        return Err(refcat_error(
            path,
            format!("no binary table among its {n} HDUs: expected a reference catalog"),
        ));
    }
    Ok(out)
}

/// CSV with a header line of column names; `#` lines are comments, empty fields are missing
/// values; a `# EPOCH = 2016.0` comment line gives the epoch.
fn read_csv(path: &Path) -> Result<Read, AstrometryError> {
    let text = std::fs::read_to_string(path).map_err(|e| AstrometryError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut names: Option<(usize, Vec<String>)> = None;
    let mut rows: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut epoch_key = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#') {
            if let Some((k, v)) = c.split_once('=') {
                if k.trim().eq_ignore_ascii_case("EPOCH") {
                    epoch_key = v.trim().parse::<f64>().ok();
                }
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        match &names {
            None => names = Some((n + 1, fields.iter().map(|s| s.to_string()).collect())),
            Some((_, h)) if fields.len() != h.len() => {
                return Err(refcat_error(
                    path,
                    format!(
                        "line {}: {} fields, but the header line has {} columns",
                        n + 1,
                        fields.len(),
                        h.len()
                    ),
                ))
            }
            Some(_) => rows.push((n + 1, fields)),
        }
    }
    let Some((_, names)) = names else {
        return Err(refcat_error(
            path,
            "empty: expected a header line of column names",
        ));
    };
    let column = |name: &str| -> Result<Vec<f64>, AstrometryError> {
        let k = names.iter().position(|h| h == name).unwrap_or(0);
        rows.iter()
            .map(|(line, f)| {
                let s = f[k];
                if s.is_empty() || s.eq_ignore_ascii_case("nan") || s.eq_ignore_ascii_case("null") {
                    return Ok(f64::NAN);
                }
                s.parse::<f64>().map_err(|_| {
                    refcat_error(
                        path,
                        format!("line {line}, column {name}: `{s}` is not a number"),
                    )
                })
            })
            .collect()
    };
    to_stars(path, &names, &column, epoch_key, &|i| {
        format!("line {}", rows[i].0)
    })
}
