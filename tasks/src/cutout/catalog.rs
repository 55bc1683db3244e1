//! The targets to cut out, from either
//! - a FITS catalog: every binary table HDU (the `extract` kind writes one per CCD) with sky
//!   columns ALPHA_J2000/DELTA_J2000, else ALPHA/DELTA, else RA/DEC (degrees); the id is
//!   `EXTNAME_NUMBER` (SExtractor's NUMBER, else ID, else the row from 1); or
//! - JSON: a list of `{id, ra, dec}` (also `ra_deg`/`dec_deg`), or an object holding such a
//!   list under `detections`, `targets`, `objects` or `tracklets`. An item with no position of
//!   its own but a list of them (`detections` or `positions`, as a linked moving object has)
//!   stands for one target at the mean of its positions: a 200-pixel window at that position
//!   shows the object in every exposure of a sequence.
//!
//! Items that cannot be read (no or bad position) are reported and skipped; the rest are kept.

use std::path::Path;

use serde_json::Value as J;

use crate::fits::{read_headers, read_table};

/// A position to cut out.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: String,
    pub ra_deg: f64,
    pub dec_deg: f64,
}

/// The targets of a catalog file and a note for every item skipped. Errors when the file
/// cannot be read at all or holds no target.
pub fn read_targets(path: &Path) -> Result<(Vec<Target>, Vec<String>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (targets, notes) = if matches!(first, Some(b'[') | Some(b'{')) {
        from_json(path, &bytes)?
    } else {
        from_fits(path)?
    };
    if targets.is_empty() {
        return Err(format!(
            "{}: no usable target{}",
            path.display(),
            notes
                .first()
                .map(|n| format!(" ({} skipped; first: {n})", notes.len()))
                .unwrap_or_default()
        ));
    }
    Ok((targets, notes))
}

fn from_fits(path: &Path) -> Result<(Vec<Target>, Vec<String>), String> {
    let headers = read_headers(path).map_err(|e| {
        format!("{e} (expected a FITS table with ALPHA_J2000/DELTA_J2000, ALPHA/DELTA or RA/DEC, or JSON)")
    })?;
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for (hdu, h) in headers.iter().enumerate().skip(1) {
        if !h.str("XTENSION").is_ok_and(|x| x.trim() == "BINTABLE") {
            continue;
        }
        let t = read_table(path, hdu).map_err(|e| e.to_string())?;
        let pair = [
            ("ALPHA_J2000", "DELTA_J2000"),
            ("ALPHA", "DELTA"),
            ("RA", "DEC"),
        ]
        .into_iter()
        .find(|(a, d)| t.column(a).is_ok() && t.column(d).is_ok());
        let Some((a, d)) = pair else {
            notes.push(format!(
                "{}: no sky columns (expected ALPHA_J2000/DELTA_J2000, ALPHA/DELTA or RA/DEC)",
                t.header.loc()
            ));
            continue;
        };
        let ra = t.f64s(a).map_err(|e| e.to_string())?;
        let dec = t.f64s(d).map_err(|e| e.to_string())?;
        let ids: Vec<String> = ["NUMBER", "ID"]
            .iter()
            .find_map(|c| {
                let col = t.column(c).ok()?;
                Some(match col.data.to_f64() {
                    Some(v) => v.iter().map(|x| format!("{x}")).collect(),
                    None => t
                        .strs(c)
                        .ok()?
                        .iter()
                        .map(|s| s.trim().to_owned())
                        .collect(),
                })
            })
            .unwrap_or_else(|| (1..=ra.len()).map(|i| i.to_string()).collect());
        let prefix = if t.name.is_empty() {
            format!("HDU{hdu}")
        } else {
            t.name.clone()
        };
        for (k, ((r, dd), id)) in ra.iter().zip(&dec).zip(&ids).enumerate() {
            match position(*r, *dd) {
                Ok((r, dd)) => targets.push(Target {
                    id: format!("{prefix}_{id}"),
                    ra_deg: r,
                    dec_deg: dd,
                }),
                Err(why) => notes.push(format!("{}, row {}: {why}", t.header.loc(), k + 1)),
            }
        }
    }
    Ok((targets, notes))
}

/// A checked position: finite, Dec within +-90; RA wrapped into 0..360.
fn position(ra: f64, dec: f64) -> Result<(f64, f64), String> {
    if !(ra.is_finite() && dec.is_finite()) {
        return Err(format!("position ({ra}, {dec}) is not finite"));
    }
    if !(-90.0..=90.0).contains(&dec) {
        return Err(format!("Dec {dec}: expected -90 to 90 degrees"));
    }
    Ok((ra.rem_euclid(360.0), dec))
}

fn from_json(path: &Path, bytes: &[u8]) -> Result<(Vec<Target>, Vec<String>), String> {
    let doc: J = serde_json::from_slice(bytes)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    const LISTS: [&str; 4] = ["detections", "targets", "objects", "tracklets"];
    let items = match &doc {
        J::Array(a) => a,
        J::Object(o) => LISTS
            .iter()
            .find_map(|k| o.get(*k).and_then(J::as_array))
            .ok_or_else(|| {
                format!(
                    "{}: expected a list of {{id, ra, dec}}, or an object with one under {}",
                    path.display(),
                    LISTS.join(", ")
                )
            })?,
        _ => {
            return Err(format!(
                "{}: expected a JSON list or object",
                path.display()
            ))
        }
    };
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let id = match item.get("id").or_else(|| item.get("name")) {
            Some(J::String(s)) => s.clone(),
            Some(J::Number(n)) => n.to_string(),
            _ => (k + 1).to_string(),
        };
        match json_position(item) {
            Ok((ra, dec)) => targets.push(Target {
                id,
                ra_deg: ra,
                dec_deg: dec,
            }),
            Err(why) => notes.push(format!("{}: item {} (id {id}): {why}", path.display(), k)),
        }
    }
    Ok((targets, notes))
}

/// An item's position: its own `ra`/`dec`, else the mean of its `detections`/`positions`.
fn json_position(item: &J) -> Result<(f64, f64), String> {
    let num = |v: &J, keys: [&str; 2]| keys.iter().find_map(|k| v.get(*k)?.as_f64());
    let own = (num(item, ["ra", "ra_deg"]), num(item, ["dec", "dec_deg"]));
    if let (Some(ra), Some(dec)) = own {
        return position(ra, dec);
    }
    let list = ["detections", "positions"]
        .iter()
        .find_map(|k| item.get(*k)?.as_array())
        .ok_or("no ra/dec (degrees) and no detections or positions")?;
    let mut v = [0.0f64; 3];
    for p in list {
        let (Some(ra), Some(dec)) = (num(p, ["ra", "ra_deg"]), num(p, ["dec", "dec_deg"])) else {
            return Err("a detection without ra/dec (degrees)".into());
        };
        let (ra, dec) = position(ra, dec)?;
        let (ra, dec) = (ra.to_radians(), dec.to_radians());
        v[0] += dec.cos() * ra.cos();
        v[1] += dec.cos() * ra.sin();
        v[2] += dec.sin();
    }
    if list.is_empty() {
        return Err("an empty list of detections".into());
    }
    let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    position(
        v[1].atan2(v[0]).to_degrees(),
        (v[2] / r).clamp(-1.0, 1.0).asin().to_degrees(),
    )
}
