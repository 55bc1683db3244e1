//! Orbital elements and the files they come in: the MPC's MPCORB one-line format (packed epochs
//! and designations), the JSON of JPL's small-body database API (`sbdb.api`, one object or a
//! list) and of its query API (`sbdb_query.api`: `fields` + `data` rows, the form of KStars'
//! asteroids.dat).
//!
//! Elements are heliocentric osculating, referred to the J2000 ecliptic and equinox. Whatever
//! the source gives (mean anomaly or time of perihelion), they are held as perihelion distance q,
//! eccentricity e and time of perihelion tp, which serve ellipses, parabolas and hyperbolas alike.

use serde_json::Value;

use super::kepler;
use super::vec3::Vec3;
use super::EphemError;

/// The Sun's GM in au^3/day^2: the square of the Gaussian constant k = 0.01720209895 (the
/// MPC's and JPL's heliocentric elements use it; DE440's GM_sun differs by 2e-11).
pub const GM_SUN: f64 = 0.01720209895 * 0.01720209895;

/// One object's osculating elements at an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Elements {
    /// What to call it: the readable designation (`(433) Eros`, `2007 TE366`).
    pub designation: String,
    /// Other ids that select it with `--object` (packed designation, number, name).
    pub aliases: Vec<String>,
    /// Osculation epoch, TDB modified Julian date.
    pub epoch_mjd: f64,
    /// Perihelion distance, au.
    pub q: f64,
    pub e: f64,
    /// Inclination, longitude of the ascending node, argument of perihelion: degrees.
    pub i_deg: f64,
    pub node_deg: f64,
    pub peri_deg: f64,
    /// Time of perihelion passage, TDB modified Julian date.
    pub tp_mjd: f64,
    /// Absolute magnitude H and slope G of the IAU H,G system (None: no magnitude).
    pub h: Option<f64>,
    pub g: f64,
}

/// What `parse` found: the elements it could read and one error per item it could not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub elements: Vec<Elements>,
    pub errors: Vec<EphemError>,
}

/// The raw numbers of a source, before checks.
struct Raw {
    designation: String,
    aliases: Vec<String>,
    epoch_mjd: Option<f64>,
    e: Option<f64>,
    a: Option<f64>,
    q: Option<f64>,
    i: Option<f64>,
    node: Option<f64>,
    peri: Option<f64>,
    mean_anomaly: Option<f64>,
    tp_mjd: Option<f64>,
    h: Option<f64>,
    g: Option<f64>,
    at: String,
}

impl Raw {
    /// Checks the numbers and converts them to (q, e, tp).
    fn seal(self) -> Result<Elements, EphemError> {
        let at = format!("{} ({})", self.at, self.designation);
        let fail = |reason: String| EphemError::Elements {
            at: at.clone(),
            reason,
        };
        let need = |v: Option<f64>, what: &str| {
            v.filter(|x| x.is_finite())
                .ok_or_else(|| fail(format!("no {what}")))
        };
        let epoch_mjd = need(self.epoch_mjd, "epoch")?;
        let e = need(self.e, "eccentricity")?;
        if e < 0.0 {
            return Err(fail(format!(
                "eccentricity {e} is negative (expected e >= 0)"
            )));
        }
        let (i, node, peri) = (
            need(self.i, "inclination")?,
            need(self.node, "longitude of the ascending node")?,
            need(self.peri, "argument of perihelion")?,
        );
        if !(0.0..=180.0).contains(&i) {
            return Err(fail(format!("inclination {i} deg is outside 0..180")));
        }
        let (q, tp_mjd) = match (self.q, self.tp_mjd, self.a, self.mean_anomaly) {
            (Some(q), Some(tp), _, _) => (q, tp),
            (q, tp, Some(a), Some(m)) => {
                if a == 0.0 || (e < 1.0) != (a > 0.0) || e == 1.0 {
                    return Err(fail(format!(
                        "semi-major axis {a} au does not fit eccentricity {e} (a > 0 for e < 1, a < 0 for e > 1)"
                    )));
                }
                let n = (GM_SUN / a.abs().powi(3)).sqrt(); // rad/day
                (
                    q.unwrap_or(a * (1.0 - e)),
                    tp.unwrap_or(epoch_mjd - m.to_radians() / n),
                )
            }
            _ => {
                return Err(fail(
                    "neither (q, tp) nor (a, mean anomaly) are given".into(),
                ))
            }
        };
        if q.is_nan() || q <= 0.0 || !q.is_finite() || !tp_mjd.is_finite() {
            return Err(fail(format!("perihelion distance {q} au (expected > 0)")));
        }
        Ok(Elements {
            designation: self.designation,
            aliases: self.aliases,
            epoch_mjd,
            q,
            e,
            i_deg: i,
            node_deg: node,
            peri_deg: peri,
            tp_mjd,
            h: self.h.filter(|h| h.is_finite()),
            g: self.g.filter(|g| g.is_finite()).unwrap_or(0.15),
        })
    }
}

impl Elements {
    /// Heliocentric state (au, au/day) at the epoch, ecliptic J2000.
    pub fn ecliptic_state(&self) -> Option<(Vec3, Vec3)> {
        let (r, v) = kepler::perihelion_state(
            GM_SUN,
            self.q,
            self.e,
            self.i_deg.to_radians(),
            self.node_deg.to_radians(),
            self.peri_deg.to_radians(),
        );
        kepler::propagate(GM_SUN, r, v, self.epoch_mjd - self.tp_mjd)
    }

    /// Semi-major axis (negative for hyperbolas, infinite for a parabola).
    pub fn a(&self) -> f64 {
        self.q / (1.0 - self.e)
    }

    /// Whether `id` names this object (case and spaces ignored; `433`, `Eros`, `(433) Eros`,
    /// `2007 TE366`, `K07Ta6E`).
    pub fn is_named(&self, id: &str) -> bool {
        let key = normalise(id);
        std::iter::once(&self.designation)
            .chain(&self.aliases)
            .any(|n| normalise(n) == key)
    }
}

/// The parts of a full name that select the object alone: `(433) Eros` and
/// `433 Eros (A898 PA)` both give 433 and Eros, the latter also A898 PA.
fn names_in(full: &str) -> Vec<String> {
    let mut rest = full.trim();
    let mut out = Vec::new();
    if let Some(open) = rest.rfind('(').filter(|_| rest.ends_with(')')) {
        out.push(rest[open + 1..rest.len() - 1].to_owned());
        rest = rest[..open].trim();
    }
    let (first, name) = match rest.strip_prefix('(') {
        Some(r) => r.split_once(')').unwrap_or((r, "")),
        None => rest.split_once(' ').unwrap_or((rest, "")),
    };
    if first.chars().all(|c| c.is_ascii_digit()) && !first.is_empty() {
        out.push(first.to_owned());
        if !name.trim().is_empty() {
            out.push(name.trim().to_owned());
        }
    }
    out
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '(' && *c != ')')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses an elements file: JSON (SBDB) if it starts with `{` or `[`, else MPCORB.
pub fn parse(file: &str, text: &str) -> Parsed {
    if text.trim_start().starts_with(['{', '[']) {
        parse_sbdb_json(file, text)
    } else {
        parse_mpcorb(file, text)
    }
}

/// Parses MPCORB one-line records (the MPCORB.DAT header, up to its `-----` line, is skipped).
pub fn parse_mpcorb(file: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("-----"))
        .map_or(0, |i| i + 1);
    for (n, line) in lines.iter().enumerate().skip(first) {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{file}:{}", n + 1);
        match mpcorb_line(&at, line).and_then(Raw::seal) {
            Ok(e) => out.elements.push(e),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// Columns of one MPCORB record (1-based, inclusive, as the MPC documents them).
fn mpcorb_line(at: &str, line: &str) -> Result<Raw, EphemError> {
    let fail = |reason: String| EphemError::Elements {
        at: at.to_owned(),
        reason,
    };
    if !line.is_ascii() {
        return Err(fail(
            "not ASCII (expected an MPCORB one-line record)".into(),
        ));
    }
    if line.len() < 103 {
        return Err(fail(format!(
            "{} characters, expected at least 103 (an MPCORB record through column 103, a)",
            line.len()
        )));
    }
    let col = |a: usize, b: usize| line.get(a - 1..b.min(line.len())).unwrap_or("").trim();
    let num = |a: usize, b: usize, what: &str| -> Result<Option<f64>, EphemError> {
        let s = col(a, b);
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<f64>()
            .map(Some)
            .map_err(|_| fail(format!("columns {a}-{b} ({what}): `{s}` is not a number")))
    };
    let packed = col(1, 7);
    let readable = col(167, 194);
    let unpacked = unpack_designation(packed);
    let designation = if !readable.is_empty() {
        readable.to_owned()
    } else {
        unpacked.clone().unwrap_or_else(|| packed.to_owned())
    };
    let mut aliases = vec![packed.to_owned()];
    aliases.extend(unpacked);
    aliases.extend(names_in(readable));
    let epoch_text = col(21, 25);
    let epoch_mjd = if epoch_text.is_empty() {
        None
    } else {
        Some(unpack_epoch(epoch_text).ok_or_else(|| {
            fail(format!(
                "columns 21-25 (epoch): `{epoch_text}` is not a packed date like K24AH"
            ))
        })?)
    };
    Ok(Raw {
        designation,
        aliases,
        epoch_mjd,
        h: num(9, 13, "H")?,
        g: num(15, 19, "G")?,
        mean_anomaly: num(27, 35, "mean anomaly")?,
        peri: num(38, 46, "argument of perihelion")?,
        node: num(49, 57, "node")?,
        i: num(60, 68, "inclination")?,
        e: num(71, 79, "eccentricity")?,
        a: num(93, 103, "semi-major axis")?,
        q: None,
        tp_mjd: None,
        at: at.to_owned(),
    })
}

/// Value of a packed digit: 0-9, A-Z = 10-35, a-z = 36-61.
fn packed_digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
        'a'..='z' => Some(c as u32 - 'a' as u32 + 36),
        _ => None,
    }
}

/// A packed MPC epoch (`K24AH` = 2024-10-17, 0h TT) as an MJD.
pub fn unpack_epoch(s: &str) -> Option<f64> {
    let c: Vec<char> = s.chars().collect();
    if c.len() != 5 {
        return None;
    }
    let century = match c[0] {
        'I' => 1800,
        'J' => 1900,
        'K' => 2000,
        _ => return None,
    };
    let year = century + s.get(1..3)?.parse::<i64>().ok()?;
    let month = i64::from(packed_digit(c[3])?);
    let day = i64::from(packed_digit(c[4])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(super::time::mjd_from_civil(year, month, day) as f64)
}

/// Unpacks a packed number (`00433` -> `433`, `A0001` -> `100001`, `~0000` -> `620000`) or
/// provisional designation (`K07Ta6E` -> `2007 TE366`, `PLS2040` -> `2040 P-L`).
pub fn unpack_designation(packed: &str) -> Option<String> {
    let c: Vec<char> = packed.chars().collect();
    match c.len() {
        5 if c[0] == '~' => {
            let v = c[1..]
                .iter()
                .try_fold(0u64, |acc, &d| Some(acc * 62 + u64::from(packed_digit(d)?)))?;
            Some((620_000 + v).to_string())
        }
        5 if c[1..].iter().all(char::is_ascii_digit) => {
            let head = u64::from(packed_digit(c[0])?);
            let tail: u64 = packed.get(1..)?.parse().ok()?;
            Some((head * 10_000 + tail).to_string())
        }
        7 if packed.get(3..)?.chars().all(|d| d.is_ascii_digit())
            && ["PLS", "T1S", "T2S", "T3S"].contains(&packed.get(..3)?) =>
        {
            let survey = match packed.get(..2)? {
                "PL" => "P-L",
                "T1" => "T-1",
                "T2" => "T-2",
                _ => "T-3",
            };
            Some(format!("{} {survey}", packed.get(3..)?))
        }
        7 if packed.get(1..3)?.chars().all(|d| d.is_ascii_digit()) => {
            let century = match c[0] {
                'I' => 18,
                'J' => 19,
                'K' => 20,
                _ => return None,
            };
            let (half, second) = (c[3], c[6]);
            if !half.is_ascii_uppercase() || !second.is_ascii_uppercase() {
                return None;
            }
            let cycle = packed_digit(c[4])? * 10 + c[5].to_digit(10)?;
            let cycle = if cycle == 0 {
                String::new()
            } else {
                cycle.to_string()
            };
            Some(format!(
                "{century}{} {half}{second}{cycle}",
                packed.get(1..3)?
            ))
        }
        _ => None,
    }
}

/// Parses SBDB JSON: an `sbdb.api` answer (or a list of them), or an `sbdb_query.api` table.
pub fn parse_sbdb_json(file: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.errors.push(EphemError::Elements {
                at: format!("{file}:{}:{}", e.line(), e.column()),
                reason: format!("not valid JSON: {e}"),
            });
            return out;
        }
    };
    let items: Vec<(String, Result<Raw, EphemError>)> = if value.get("fields").is_some() {
        query_rows(file, &value)
    } else {
        let objects = match &value {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        objects
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{file}: object {}", i + 1), Ok(v)))
            .map(|(at, v)| {
                let raw = v.and_then(sbdb_object);
                (at, raw)
            })
            .collect()
    };
    for (at, raw) in items {
        let sealed = raw.and_then(|mut r| {
            r.at.clone_from(&at);
            r.seal()
        });
        match sealed {
            Ok(e) => out.elements.push(e),
            Err(EphemError::Elements { at: a, reason }) if a.is_empty() => {
                out.errors.push(EphemError::Elements { at, reason })
            }
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// A number from an SBDB value: JSON numbers or strings (`".2541"`), null as absent.
fn sbdb_number(v: Option<&Value>, what: &str) -> Result<Option<f64>, EphemError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| EphemError::Elements {
                at: String::new(),
                reason: format!("`{what}` is `{s}`, not a number"),
            }),
        Some(other) => Err(EphemError::Elements {
            at: String::new(),
            reason: format!("`{what}` is {other}, not a number"),
        }),
    }
}

const JD_TO_MJD: f64 = 2_400_000.5;

/// One `sbdb.api` answer: `object.fullname`, `orbit.epoch`, `orbit.elements[{name, value}]`,
/// `phys_par[{name: H|G, value}]`.
fn sbdb_object(v: &Value) -> Result<Raw, EphemError> {
    let missing = |what: &str| EphemError::Elements {
        at: String::new(),
        reason: format!("no `{what}` (expected an sbdb.api answer with object and orbit)"),
    };
    let object = v.get("object").ok_or_else(|| missing("object"))?;
    let orbit = v.get("orbit").ok_or_else(|| missing("orbit"))?;
    let designation = object
        .get("fullname")
        .or_else(|| object.get("des"))
        .and_then(Value::as_str)
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut aliases = names_in(&designation);
    for key in ["des", "prefix"] {
        if let Some(s) = object.get(key).and_then(Value::as_str) {
            aliases.push(s.to_owned());
        }
    }
    let element = |name: &str| -> Result<Option<f64>, EphemError> {
        let found = orbit
            .get("elements")
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            });
        sbdb_number(found.and_then(|e| e.get("value")), name)
    };
    let phys = |name: &str| -> Result<Option<f64>, EphemError> {
        let found = v.get("phys_par").and_then(Value::as_array).and_then(|l| {
            l.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        });
        sbdb_number(found.and_then(|e| e.get("value")), name)
    };
    Ok(Raw {
        designation,
        aliases,
        epoch_mjd: sbdb_number(orbit.get("epoch"), "epoch")?.map(|jd| jd - JD_TO_MJD),
        e: element("e")?,
        a: element("a")?,
        q: element("q")?,
        i: element("i")?,
        node: element("om")?,
        peri: element("w")?,
        mean_anomaly: element("ma")?,
        tp_mjd: element("tp")?.map(|jd| jd - JD_TO_MJD),
        h: phys("H")?,
        g: phys("G")?,
        at: String::new(),
    })
}

/// Rows of an `sbdb_query.api` table (`fields`: full_name or pdes, epoch (JD) or epoch_mjd, e,
/// a, q, i, om, w, ma, tp (JD), H, G).
fn query_rows(file: &str, v: &Value) -> Vec<(String, Result<Raw, EphemError>)> {
    let fields: Vec<&str> = v
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .enumerate()
        .map(|(n, row)| {
            let at = format!("{file}: data row {}", n + 1);
            let cell = |name: &str| {
                fields
                    .iter()
                    .position(|f| *f == name)
                    .and_then(|i| row.get(i))
            };
            let text = |name: &str| {
                cell(name)
                    .and_then(Value::as_str)
                    .map(|s| s.trim().to_owned())
            };
            let raw = (|| {
                let num = |name: &str| sbdb_number(cell(name), name);
                let epoch_mjd = match num("epoch_mjd")? {
                    Some(mjd) => Some(mjd),
                    None => num("epoch")?.map(|jd| jd - JD_TO_MJD),
                };
                Ok(Raw {
                    designation: text("full_name")
                        .or_else(|| text("pdes"))
                        .or_else(|| text("name"))
                        .unwrap_or_else(|| "?".into()),
                    aliases: ["pdes", "name"]
                        .iter()
                        .filter_map(|k| text(k))
                        .chain(text("full_name").iter().flat_map(|f| names_in(f)))
                        .collect(),
                    epoch_mjd,
                    e: num("e")?,
                    a: num("a")?,
                    q: num("q")?,
                    i: num("i")?,
                    node: num("om")?,
                    peri: num("w")?,
                    mean_anomaly: num("ma")?,
                    tp_mjd: num("tp")?.map(|jd| jd - JD_TO_MJD),
                    h: num("H")?,
                    g: num("G")?,
                    at: String::new(),
                })
            })();
            (at, raw)
        })
        .collect()
}
