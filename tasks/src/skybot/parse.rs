//! SkyBoT's answers, VOTable and text, into [`SkybotObject`]s.
//!
//! VOTable: `FIELD`s name the columns (`Num`, `Name`, `RA` h:m:s, `DEC` d:m:s, `Class`, `Mv`,
//! `ErrPos`, `d`, `dRAcosDec`, `dDEC`, `Dgeo`, `Dhelio`, and hidden `_RAJ2000`/`_DECJ2000` in
//! degrees, preferred when present); `INFO name="QUERY_STATUS"` says `OK` or `ERROR` with a
//! message ("No solar system object was found in the requested FOV" is an empty field).
//!
//! Text: `# Flag: 1` (objects), `0` (none) or `-1` (error, message below); `# Ticket: ...`;
//! `# Num | Name | RA(h) | DE(deg) | ...` names the columns; then rows joined by ` | `. A name
//! containing ` | ` makes a row longer than the header: the extra pieces belong to the name.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{Mime, SkybotError};

/// One known object in the field.
#[derive(Debug, Clone, PartialEq)]
pub struct SkybotObject {
    /// Minor-planet or comet number, if numbered.
    pub number: Option<u32>,
    /// Name or designation (`Ceres`, `2019 RB21`, `G!kun||'homdima`).
    pub name: String,
    /// Astrometric J2000 position at the epoch, degrees.
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// `MB>Inner`, `KBO>Detached`, `Mars-Crosser`, ...
    pub class: String,
    /// Predicted V magnitude.
    pub mag_v: Option<f64>,
    /// Uncertainty of the position, arcsec.
    pub error_arcsec: Option<f64>,
    /// Distance from the field centre, arcsec.
    pub centre_distance_arcsec: Option<f64>,
    /// Motion, arcsec per hour (`output=basic` and more).
    pub dra_cosdec_arcsec_per_h: Option<f64>,
    pub ddec_arcsec_per_h: Option<f64>,
    /// Distance from the observer and from the Sun, au.
    pub geocentric_au: Option<f64>,
    pub heliocentric_au: Option<f64>,
}

fn malformed(format: &'static str, reason: impl Into<String>) -> SkybotError {
    SkybotError::Malformed {
        format,
        reason: reason.into(),
    }
}

/// The `<title>` of an HTML page, if the body is one.
pub fn html_title(body: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` hold in `head`.
    let head: String = body.trim_start().chars().take(4096).collect();
    let lower = head.to_ascii_lowercase();
    if !(lower.starts_with("<!doctype html") || lower.starts_with("<html")) {
        return None;
    }
    let title = lower
        .find("<title>")
        .and_then(|a| {
            let b = lower[a..].find("</title>")?;
            Some(head[a + 7..a + b].trim().to_string())
        })
        .unwrap_or_default();
    Some(title)
}

/// Reads an answer of the expected format (HTTP status 200 assumed; an HTML page is an error
/// naming its title).
pub fn parse_answer(body: &str, mime: Mime) -> Result<Vec<SkybotObject>, SkybotError> {
    if let Some(title) = html_title(body) {
        return Err(SkybotError::HtmlPage {
            status: 200,
            title,
            expected: mime.describe(),
        });
    }
    match mime {
        Mime::Votable => parse_votable(body),
        Mime::Text => parse_text(body),
    }
}

/// Column positions of the values an object needs, by the names either format gives them.
struct Columns {
    number: Option<usize>,
    name: usize,
    ra: (usize, bool),
    dec: (usize, bool),
    class: Option<usize>,
    mag_v: Option<usize>,
    error: Option<usize>,
    distance: Option<usize>,
    dra: Option<usize>,
    ddec: Option<usize>,
    geo: Option<usize>,
    helio: Option<usize>,
}

impl Columns {
    /// `names` as the answer writes them; `(index, in_degrees)` for the position.
    fn find(names: &[String], format: &'static str) -> Result<Columns, SkybotError> {
        let at = |cands: &[&str]| names.iter().position(|n| cands.contains(&n.as_str()));
        let name = at(&["Name"]).ok_or_else(|| malformed(format, "no `Name` column"))?;
        let ra = match (at(&["_RAJ2000"]), at(&["RA", "RA(h)"])) {
            (Some(i), _) => (i, true),
            (None, Some(i)) => (i, false),
            (None, None) => return Err(malformed(format, "no RA column")),
        };
        let dec = match (at(&["_DECJ2000"]), at(&["DEC", "DE(deg)"])) {
            (Some(i), _) => (i, true),
            (None, Some(i)) => (i, false),
            (None, None) => return Err(malformed(format, "no Dec column")),
        };
        Ok(Columns {
            number: at(&["Num"]),
            name,
            ra,
            dec,
            class: at(&["Class"]),
            mag_v: at(&["Mv"]),
            error: at(&["ErrPos", "Err(arcsec)"]),
            distance: at(&["d", "d(arcsec)"]),
            dra: at(&["dRAcosDec", "dRA(arcsec/h)"]),
            ddec: at(&["dDEC", "dDEC(arcsec/h)"]),
            geo: at(&["Dgeo", "Dg(ua)"]),
            helio: at(&["Dhelio", "Dh(ua)"]),
        })
    }

    /// One row; `row` is 1-based for messages.
    fn object(
        &self,
        cells: &[String],
        row: usize,
        format: &'static str,
    ) -> Result<SkybotObject, SkybotError> {
        let bad = |what: &str, v: &str| malformed(format, format!("row {row}: {what} `{v}`"));
        let cell = |i: usize| cells.get(i).map(|s| s.trim()).unwrap_or("");
        let opt = |i: Option<usize>, what: &str| -> Result<Option<f64>, SkybotError> {
            match i.map(cell) {
                None | Some("") | Some("-") | Some("–") => Ok(None),
                Some(v) => v.parse::<f64>().map(Some).map_err(|_| bad(what, v)),
            }
        };
        let number = match self.number.map(cell) {
            None | Some("") | Some("-") | Some("–") => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| bad("number", v))?),
        };
        let angle =
            |(i, degrees): (usize, bool), hours: bool, what: &str| -> Result<f64, SkybotError> {
                let v = cell(i);
                let x = if degrees {
                    v.parse::<f64>().ok()
                } else {
                    sexagesimal(v).map(|x| if hours { x * 15.0 } else { x })
                };
                x.filter(|x| x.is_finite()).ok_or_else(|| bad(what, v))
            };
        let name = cell(self.name);
        if name.is_empty() {
            return Err(bad("name", name));
        }
        Ok(SkybotObject {
            number,
            name: name.to_string(),
            ra_deg: angle(self.ra, true, "RA")?.rem_euclid(360.0),
            dec_deg: angle(self.dec, false, "Dec")?,
            class: self.class.map(cell).unwrap_or("").to_string(),
            mag_v: opt(self.mag_v, "Mv")?,
            error_arcsec: opt(self.error, "position error")?,
            centre_distance_arcsec: opt(self.distance, "distance")?,
            dra_cosdec_arcsec_per_h: opt(self.dra, "dRAcosDec")?,
            ddec_arcsec_per_h: opt(self.ddec, "dDEC")?,
            geocentric_au: opt(self.geo, "Dgeo")?,
            heliocentric_au: opt(self.helio, "Dhelio")?,
        })
    }
}

/// `05 25 5.8105` or `+04 31 3.866` (SkyBoT does not pad the seconds) as hours or degrees.
fn sexagesimal(s: &str) -> Option<f64> {
    let neg = s.starts_with('-');
    let parts: Vec<f64> = s
        .trim_start_matches(['+', '-'])
        .split_whitespace()
        .map(|p| p.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [a, b, c] = parts[..] else { return None };
    if b >= 60.0 || c >= 60.0 || a < 0.0 || b < 0.0 || c < 0.0 {
        return None;
    }
    let v = a + b / 60.0 + c / 3600.0;
    Some(if neg { -v } else { v })
}

const NO_OBJECT: &str = "No solar system object";

/// A VOTable answer (TABLEDATA serialization).
pub fn parse_votable(body: &str) -> Result<Vec<SkybotObject>, SkybotError> {
    const F: &str = "VOTable";
    if body.trim().is_empty() {
        return Err(SkybotError::Empty { attempts: 1 });
    }
    let mut reader = Reader::from_str(body);
    let mut fields: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row: Option<Vec<String>> = None;
    let mut cell: Option<String> = None;
    // QUERY_STATUS INFOs: (value, message); `in_status` while inside one.
    let mut statuses: Vec<(String, String)> = Vec::new();
    let mut in_status = false;
    let mut seen_votable = false;
    let attr = |e: &quick_xml::events::BytesStart, key: &str| -> Option<String> {
        let a = e.try_get_attribute(key).ok()??;
        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()
            .map(|v| v.into_owned())
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(F, format!("byte {}: {e}", reader.error_position())))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                match e.local_name().as_ref() {
                    "VOTABLE" => seen_votable = true,
                    "INFO" if attr(e, "name").as_deref() == Some("QUERY_STATUS") => {
                        statuses.push((attr(e, "value").unwrap_or_default(), String::new()));
                        in_status = !empty;
                    }
                    "FIELD" => fields.push(attr(e, "name").unwrap_or_default()),
                    "TR" => row = Some(Vec::new()),
                    "TD" if empty => {
                        if let Some(r) = row.as_mut() {
                            r.push(String::new())
                        }
                    }
                    "TD" => cell = Some(String::new()),
                    "BINARY" | "BINARY2" | "FITS" => {
                        return Err(malformed(F, "only the TABLEDATA serialization is read"))
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                if let Some(c) = cell.as_mut() {
                    c.push_str(&text);
                } else if in_status {
                    if let Some(s) = statuses.last_mut() {
                        s.1.push_str(&text);
                    }
                }
            }
            Event::CData(c) => {
                let text = c.to_string();
                if let Some(cl) = cell.as_mut() {
                    cl.push_str(&text);
                } else if in_status {
                    if let Some(s) = statuses.last_mut() {
                        s.1.push_str(&text);
                    }
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r)
                        .ok_or_else(|| malformed(F, format!("unknown entity `&{};`", &*r)))?
                        .to_string(),
                };
                if let Some(c) = cell.as_mut() {
                    c.push_str(&resolved);
                } else if in_status {
                    if let Some(s) = statuses.last_mut() {
                        s.1.push_str(&resolved);
                    }
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "TD" => {
                    if let (Some(r), Some(c)) = (row.as_mut(), cell.take()) {
                        r.push(c);
                    }
                }
                "TR" => rows.extend(row.take()),
                "INFO" => in_status = false,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_votable {
        return Err(malformed(F, "no VOTABLE element"));
    }
    if let Some((_, msg)) = statuses
        .iter()
        .find(|(v, _)| v.eq_ignore_ascii_case("ERROR"))
    {
        let msg = msg.trim();
        if msg.contains(NO_OBJECT) {
            return Ok(Vec::new());
        }
        return Err(SkybotError::Service(if msg.is_empty() {
            "QUERY_STATUS is ERROR, with no message".to_string()
        } else {
            msg.to_string()
        }));
    }
    if fields.is_empty() {
        return Err(malformed(F, "no FIELD: no table in the answer"));
    }
    let cols = Columns::find(&fields, F)?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            if r.len() != fields.len() {
                return Err(malformed(
                    F,
                    format!(
                        "row {}: {} cells for {} fields",
                        i + 1,
                        r.len(),
                        fields.len()
                    ),
                ));
            }
            cols.object(r, i + 1, F)
        })
        .collect()
}

/// A text answer (`-mime=text`).
pub fn parse_text(body: &str) -> Result<Vec<SkybotObject>, SkybotError> {
    const F: &str = "SkyBoT text table";
    if body.trim().is_empty() {
        return Err(SkybotError::Empty { attempts: 1 });
    }
    let mut lines = body.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or("");
    let flag = first
        .strip_prefix('#')
        .and_then(|r| r.trim().strip_prefix("Flag:"))
        .map(str::trim)
        .ok_or_else(|| {
            malformed(
                F,
                format!("the first line is `{first}`, expected `# Flag: ...`"),
            )
        })?;
    let rest: Vec<&str> = lines.collect();
    let message = || {
        rest.iter()
            .map(|l| l.trim_start_matches('#').trim())
            .filter(|l| !l.is_empty() && !l.starts_with("Ticket:"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match flag {
        "1" => {}
        "0" => return Ok(Vec::new()),
        "-1" => return Err(SkybotError::Service(message())),
        other => return Err(malformed(F, format!("flag `{other}`: expected 1, 0 or -1"))),
    }
    let header = rest
        .iter()
        .find(|l| l.starts_with('#') && l.contains(" | "))
        .ok_or_else(|| malformed(F, "no `# Num | Name | ...` column line"))?;
    let names: Vec<String> = header
        .trim_start_matches('#')
        .split(" | ")
        .map(|n| n.trim().to_string())
        .collect();
    let cols = Columns::find(&names, F)?;
    let n = names.len();
    rest.iter()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let mut parts: Vec<String> = l.split(" | ").map(str::to_string).collect();
            if parts.len() < n {
                return Err(malformed(
                    F,
                    format!("row {}: {} values for {n} columns", i + 1, parts.len()),
                ));
            }
            // A name holding ` | ` took the extra pieces: give them back to it.
            let extra = parts.len() - n;
            if extra > 0 {
                let joined = parts[cols.name..=cols.name + extra].join(" | ");
                parts.splice(cols.name..=cols.name + extra, [joined]);
            }
            cols.object(&parts, i + 1, F)
        })
        .collect()
}
