//! astrometry.net index files (Debian's `astrometry-data-tycho2-*`, or any index built with
//! `build-astrometry-index`) read as reference stars, so a site with those packages installed has
//! Tycho-2 offline without converting anything.
//!
//! An index file is FITS, but its star positions are not in ordinary table columns. The star
//! k-d tree is a set of binary tables whose only column is bytes in the writer's byte order
//! (`ENDIAN = '04:03:02:01'` is little-endian, `'01:02:03:04'` big-endian):
//! - `kdtree_header_stars` (no rows): `KDT_NDAT` stars, `KDT_NDIM` = 3 (unit vectors),
//!   `KDT_DATA` = the stored type (`u32`, `u16` or `double`);
//! - `kdtree_range_stars`: 2 * NDIM + 1 doubles, the bounding box (min per axis, max per axis)
//!   and the scale: an integer `v` stands for `min + v / scale`;
//! - `kdtree_data_stars`: NDAT rows of NDIM stored values, the unit vectors (J2000, ICRS).
//!
//! A `TAGALONG` table (`AN_FILE = 'TAGALONG'`, an ordinary FITS table) has one row per star in
//! the same order, with the magnitude the index was sorted by (`MAG_VT` for Tycho-2). There are
//! no proper motions: the positions are at J2000.0, which for Tycho-2 (typically 10-30 mas/yr)
//! is good to a few tenths of an arcsecond a decade or two later; set `ref_sigma_arcsec` to
//! match.

use std::path::Path;

use super::refcat::RefStar;
use super::AstrometryError;
use crate::fits::{read_headers, read_table, read_table_bytes, Header};

/// Whether a file's primary header says it is an astrometry.net index (or star k-d tree) file.
pub fn is_index(primary: &Header) -> bool {
    primary
        .str("AN_FILE")
        .is_ok_and(|s| matches!(s.trim(), "QUAD" | "SKDT" | "INDEX"))
}

/// How one coordinate is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    U32,
    U16,
    F64,
}

impl Stored {
    fn size(self) -> usize {
        match self {
            Stored::U32 => 4,
            Stored::U16 => 2,
            Stored::F64 => 8,
        }
    }
}

fn error(path: &Path, what: impl Into<String>) -> AstrometryError {
    AstrometryError::Refcat {
        file: path.display().to_string(),
        what: what.into(),
    }
}

/// The HDU whose first column is named `ttype` (astrometry.net names tables by their column).
fn hdu_named(headers: &[Header], ttype: &str) -> Option<usize> {
    headers
        .iter()
        .position(|h| h.str("TTYPE1").is_ok_and(|s| s.trim() == ttype))
}

/// Little-endian (`true`) or big-endian, from an ENDIAN key.
fn little_endian(path: &Path, hdu: usize, h: &Header) -> Result<bool, AstrometryError> {
    match h.str("ENDIAN").map(|s| s.trim().to_string()) {
        Ok(s) if s == "04:03:02:01" => Ok(true),
        Ok(s) if s == "01:02:03:04" => Ok(false),
        Ok(s) => Err(error(
            path,
            format!("HDU {hdu}: ENDIAN = '{s}': expected '04:03:02:01' or '01:02:03:04'"),
        )),
        Err(_) => Err(error(
            path,
            format!("HDU {hdu}: no ENDIAN key: the byte order of the star k-d tree is unknown"),
        )),
    }
}

/// Reads the stars of an astrometry.net index file: positions from the star k-d tree, magnitudes
/// from the tag-along table (infinite when there is none). Epoch J2000.0, no proper motions.
pub fn read_index(path: &Path) -> Result<Vec<RefStar>, AstrometryError> {
    let headers = read_headers(path)?;
    let Some(kh) = hdu_named(&headers, "kdtree_header_stars") else {
        return Err(error(
            path,
            "an astrometry.net file without a star k-d tree (no table kdtree_header_stars); \
             give an index file (index-*.fits)",
        ));
    };
    let head = &headers[kh];
    let key = |k: &str| {
        head.i64(k)
            .map_err(|_| error(path, format!("HDU {kh} (kdtree_header_stars): no {k} key")))
    };
    let (ndat, ndim) = (key("KDT_NDAT")?.max(0) as usize, key("KDT_NDIM")?);
    if ndim != 3 {
        return Err(error(
            path,
            format!("HDU {kh}: KDT_NDIM = {ndim}: expected 3 (unit vectors)"),
        ));
    }
    let stored = match head.str("KDT_DATA").map(|s| s.trim().to_string()) {
        Ok(s) if s == "u32" => Stored::U32,
        Ok(s) if s == "u16" => Stored::U16,
        Ok(s) if s == "double" => Stored::F64,
        other => {
            return Err(error(
                path,
                format!(
                    "HDU {kh}: KDT_DATA = {}: expected u32, u16 or double",
                    other.unwrap_or_else(|_| "(missing)".into())
                ),
            ))
        }
    };
    let little = little_endian(path, kh, head).or_else(|e| {
        // Some writers put ENDIAN in the primary header only.
        little_endian(path, 0, &headers[0]).map_err(|_| e)
    })?;
    let f64_at = |b: &[u8]| {
        let a: [u8; 8] = b[..8].try_into().unwrap_or_default();
        if little {
            f64::from_le_bytes(a)
        } else {
            f64::from_be_bytes(a)
        }
    };

    let Some(dh) = hdu_named(&headers, "kdtree_data_stars") else {
        return Err(error(
            path,
            "no table kdtree_data_stars (the star positions)",
        ));
    };
    let (_, row, data) = read_table_bytes(path, dh)?;
    if row != 3 * stored.size() || data.len() != ndat * row {
        return Err(error(
            path,
            format!(
                "HDU {dh} (kdtree_data_stars): {} bytes in rows of {row}: expected {ndat} rows \
                 (KDT_NDAT) of {} bytes (3 x {:?})",
                data.len(),
                3 * stored.size(),
                stored
            ),
        ));
    }
    // Integers are offsets in the bounding box: min + v / scale.
    let (min, scale) = if stored == Stored::F64 {
        ([0.0; 3], 1.0)
    } else {
        let Some(rh) = hdu_named(&headers, "kdtree_range_stars") else {
            return Err(error(
                path,
                "no table kdtree_range_stars: integer star positions cannot be converted",
            ));
        };
        let (_, _, r) = read_table_bytes(path, rh)?;
        if r.len() < 7 * 8 {
            return Err(error(
                path,
                format!(
                    "HDU {rh} (kdtree_range_stars): {} bytes: expected 7 doubles",
                    r.len()
                ),
            ));
        }
        let v: Vec<f64> = r.chunks_exact(8).take(7).map(f64_at).collect();
        if !(v[6].is_finite() && v[6] > 0.0) {
            return Err(error(
                path,
                format!("HDU {rh}: scale {}: expected a positive number", v[6]),
            ));
        }
        ([v[0], v[1], v[2]], v[6])
    };
    let value = |b: &[u8], k: usize| -> f64 {
        let s = stored.size();
        let c = &b[k * s..(k + 1) * s];
        match stored {
            Stored::F64 => f64_at(c),
            Stored::U32 => {
                let a = [c[0], c[1], c[2], c[3]];
                let v = if little {
                    u32::from_le_bytes(a)
                } else {
                    u32::from_be_bytes(a)
                };
                min[k] + v as f64 / scale
            }
            Stored::U16 => {
                let a = [c[0], c[1]];
                let v = if little {
                    u16::from_le_bytes(a)
                } else {
                    u16::from_be_bytes(a)
                };
                min[k] + v as f64 / scale
            }
        }
    };

    let mags = tagalong_mags(path, &headers, ndat)?;
    let mut stars = Vec::with_capacity(ndat);
    for (i, b) in data.chunks_exact(row).enumerate() {
        let v = [value(b, 0), value(b, 1), value(b, 2)];
        let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if !(norm > 0.5 && norm < 1.5) {
            return Err(error(
                path,
                format!(
                    "HDU {dh}, row {}: |v| = {norm}: expected a unit vector",
                    i + 1
                ),
            ));
        }
        stars.push(RefStar {
            ra_deg: v[1].atan2(v[0]).to_degrees().rem_euclid(360.0),
            dec_deg: (v[2] / norm).asin().to_degrees(),
            pmra_mas_per_yr: 0.0,
            pmdec_mas_per_yr: 0.0,
            epoch_jyr: 2000.0,
            mag: mags.as_ref().map_or(f64::INFINITY, |m| m[i]),
        });
    }
    Ok(stars)
}

/// The magnitudes of the tag-along table, when it has a column named like one (`MAG`, `MAG_VT`,
/// `MAG_G`...), in star order; NaN becomes infinity (sorted last).
fn tagalong_mags(
    path: &Path,
    headers: &[Header],
    ndat: usize,
) -> Result<Option<Vec<f64>>, AstrometryError> {
    let Some(th) = headers
        .iter()
        .position(|h| h.str("AN_FILE").is_ok_and(|s| s.trim() == "TAGALONG"))
    else {
        return Ok(None);
    };
    let t = read_table(path, th)?;
    let Some(col) = t
        .columns
        .iter()
        .find(|c| c.name.to_ascii_uppercase().starts_with("MAG"))
    else {
        return Ok(None);
    };
    let Some(m) = col.data.to_f64() else {
        return Ok(None);
    };
    if m.len() != ndat {
        return Err(error(
            path,
            format!(
                "HDU {th} (tag-along): {} rows, but the star k-d tree has {ndat} stars",
                m.len()
            ),
        ));
    }
    Ok(Some(
        m.into_iter()
            .map(|x| if x.is_finite() { x } else { f64::INFINITY })
            .collect(),
    ))
}
