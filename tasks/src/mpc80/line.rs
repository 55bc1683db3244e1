//! The 80-column optical observation line, field by field (columns are 1-based, inclusive):
//!
//! | columns | field |
//! |---|---|
//! | 1-5 | packed number (or numbered comet `0001P`; the comet's orbit type alone in 5) |
//! | 6-12 | packed provisional designation, or the observer's temporary designation |
//! | 13 | `*` on a discovery observation |
//! | 14 | note 1 (program code or note) |
//! | 15 | note 2: how it was observed (`C` CCD, `S`/`V` first line of a satellite/roving record, ...) |
//! | 16-32 | date, UTC: `YYYY MM DD.dddddd` |
//! | 33-44 | RA J2000: `HH MM SS.sss` |
//! | 45-56 | Dec J2000: `sDD MM SS.ss` |
//! | 57-65 | blank (kept as found) |
//! | 66-70 | magnitude |
//! | 71 | band |
//! | 72-77 | blank on submission; the MPC's reference code in its archive (kept as found) |
//! | 78-80 | observatory code |
//!
//! [`ObsLine`] holds the values exactly as written (numbers with the count of decimals they
//! had), so [`ObsLine::format`] of a parsed line gives the line back byte for byte, and
//! [`ObsLine::from_observation`] writes new lines at a chosen [`Precision`]. Errors name the
//! columns and say what was expected.

use super::designation::{Designation, DesignationError};
use crate::obs::{date_of_mjd, mjd_of_date, Observation};

/// The columns of each field, 1-based and inclusive.
pub mod cols {
    pub const NUMBER: (usize, usize) = (1, 5);
    pub const PROVISIONAL: (usize, usize) = (6, 12);
    pub const DESIGNATION: (usize, usize) = (1, 12);
    pub const DISCOVERY: (usize, usize) = (13, 13);
    pub const NOTE1: (usize, usize) = (14, 14);
    pub const NOTE2: (usize, usize) = (15, 15);
    pub const DATE: (usize, usize) = (16, 32);
    pub const RA: (usize, usize) = (33, 44);
    pub const DEC: (usize, usize) = (45, 56);
    pub const BLANK1: (usize, usize) = (57, 65);
    pub const MAG: (usize, usize) = (66, 70);
    pub const BAND: (usize, usize) = (71, 71);
    pub const BLANK2: (usize, usize) = (72, 77);
    pub const CODE: (usize, usize) = (78, 80);
}

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub columns: (usize, usize),
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.columns {
            (a, b) if a == b => write!(f, "column {a}: {}", self.message),
            (a, b) => write!(f, "columns {a}-{b}: {}", self.message),
        }
    }
}

fn field_err(columns: (usize, usize), message: impl Into<String>) -> FieldError {
    FieldError {
        columns,
        message: message.into(),
    }
}

/// A decimal number held exactly with the count of decimals it was written with:
/// `23.498` is `{units: 23498, decimals: 3}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub units: i64,
    pub decimals: u8,
}

impl Fixed {
    /// Digits, optionally a point and more digits (no sign, no exponent).
    pub fn parse(s: &str) -> Option<Fixed> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || int.len() > 12
            || frac.len() > 9
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
            || (s.contains('.') && frac.is_empty())
        {
            return None;
        }
        let units = format!("{int}{frac}").parse().ok()?;
        Some(Fixed {
            units,
            decimals: frac.len() as u8,
        })
    }

    /// `v` rounded to `decimals`.
    pub fn round(v: f64, decimals: u8) -> Fixed {
        Fixed {
            units: (v * Fixed::scale(decimals) as f64).round() as i64,
            decimals,
        }
    }

    fn scale(decimals: u8) -> i64 {
        10i64.pow(decimals as u32)
    }

    pub fn value(&self) -> f64 {
        self.units as f64 / Fixed::scale(self.decimals) as f64
    }

    pub fn integer_part(&self) -> i64 {
        self.units / Fixed::scale(self.decimals)
    }

    /// The integer part zero-padded to `width`, then the decimals.
    fn format(&self, width: usize) -> String {
        let scale = Fixed::scale(self.decimals);
        let int = self.units / scale;
        if self.decimals == 0 {
            format!("{int:0width$}")
        } else {
            let frac = self.units % scale;
            format!("{int:0width$}.{frac:0d$}", d = self.decimals as usize)
        }
    }
}

/// A magnitude and where it starts in columns 66-70.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Magnitude {
    pub value: Fixed,
    /// Blanks before it: 0 for `17.5 `, 1 for ` 9.5 ` (and for the ` 17.5` of some old reports).
    pub indent: u8,
}

impl Magnitude {
    /// Two places for the integer part (` 9.5`, `17.5`, `23.27`), as Fortran's F4.1 and F5.2.
    fn new(value: Fixed) -> Magnitude {
        let digits = value.integer_part().to_string().len();
        Magnitude {
            value,
            indent: 2usize.saturating_sub(digits) as u8,
        }
    }

    fn parse(field: &str) -> Option<Magnitude> {
        let t = field.trim();
        Some(Magnitude {
            value: Fixed::parse(t)?,
            indent: (field.len() - field.trim_start().len()) as u8,
        })
    }

    fn format(&self) -> String {
        format!(
            "{}{}",
            " ".repeat(self.indent as usize),
            self.value.format(1)
        )
    }
}

/// `HH MM SS.ss` or `sDD MM SS.s`: sign, whole hours or degrees, minutes, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sexagesimal {
    /// `+`/`-` for a declination; `None` for an RA (or `-` in a tolerated negative RA).
    pub sign: Option<char>,
    pub whole: u32,
    /// Digits of `whole` as written (2; 1 only in a tolerated negative RA such as `-2 54 23.498`).
    pub whole_digits: u8,
    pub minutes: u32,
    pub seconds: Fixed,
}

impl Sexagesimal {
    fn parse(s: &str) -> Option<Sexagesimal> {
        let (sign, rest) = match s.chars().next()? {
            c @ ('+' | '-') => (Some(c), &s[1..]),
            _ => (None, s),
        };
        let mut parts = rest.split(' ');
        let (w, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || !(1..=2).contains(&w.len())
            || m.len() != 2
            || !w.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let seconds = Fixed::parse(sec)?;
        if sec.split('.').next()?.len() != 2 {
            return None;
        }
        Some(Sexagesimal {
            sign,
            whole: w.parse().ok()?,
            whole_digits: w.len() as u8,
            minutes: m.parse().ok()?,
            seconds,
        })
    }

    fn format(&self) -> String {
        let sign = self.sign.map(String::from).unwrap_or_default();
        format!(
            "{sign}{:0w$} {:02} {}",
            self.whole,
            self.minutes,
            self.seconds.format(2),
            w = self.whole_digits as usize
        )
    }

    /// Hours or degrees, signed.
    pub fn value(&self) -> f64 {
        let v = self.whole as f64 + self.minutes as f64 / 60.0 + self.seconds.value() / 3600.0;
        if self.sign == Some('-') {
            -v
        } else {
            v
        }
    }

    /// `v` (hours or degrees) in units of 10^-decimals seconds, then split.
    fn from_units(units: i64, decimals: u8, sign: Option<char>) -> Sexagesimal {
        let per_sec = Fixed::scale(decimals);
        let whole = units / (3600 * per_sec);
        let minutes = units / (60 * per_sec) % 60;
        let seconds = units % (60 * per_sec);
        Sexagesimal {
            sign,
            whole: whole as u32,
            whole_digits: 2,
            minutes: minutes as u32,
            seconds: Fixed {
                units: seconds,
                decimals,
            },
        }
    }
}

/// A date as the format writes it: `2014 07 10.18057`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpcDate {
    pub year: i64,
    pub month: i64,
    /// Day of the month with its fraction.
    pub day: Fixed,
}

impl MpcDate {
    fn format(&self) -> String {
        format!("{:04} {:02} {}", self.year, self.month, self.day.format(2))
    }

    /// UTC as MJD.
    pub fn mjd(&self) -> f64 {
        let day0 = mjd_of_date(self.year, self.month, self.day.integer_part()).unwrap_or(0);
        let scale = Fixed::scale(self.day.decimals);
        day0 as f64 + (self.day.units % scale) as f64 / scale as f64
    }
}

/// Who the line is about: a number, a provisional designation, a temporary designation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// Columns 1-5: a minor-planet number or a numbered periodic comet.
    pub number: Option<Designation>,
    /// Columns 6-12 (with the orbit type in 5 for comets and satellites).
    pub provisional: Option<Designation>,
    /// Columns 6-12 when they hold no packed designation: the observer's own name for it.
    pub temporary: Option<String>,
}

impl ObjectId {
    /// The designation an astronomer would use: the number, else the provisional designation,
    /// else the temporary one.
    pub fn designation(&self) -> String {
        match (&self.number, &self.provisional, &self.temporary) {
            (Some(n), _, _) => n.to_string(),
            (None, Some(p), _) => p.to_string(),
            (None, None, Some(t)) => t.clone(),
            (None, None, None) => String::new(),
        }
    }

    fn decode(c1_5: &str, c6_12: &str) -> Result<ObjectId, FieldError> {
        let derr = |cols, e: DesignationError| field_err(cols, e.to_string());
        let mut id = ObjectId {
            number: None,
            provisional: None,
            temporary: None,
        };
        let head = c1_5.trim_start();
        // A comet's or satellite's orbit type alone in column 5: `    CJ95O010`.
        if head.len() == 1 && "PCDXIAS".contains(head) {
            id.provisional = Some(
                Designation::from_packed(&format!("{head}{c6_12}"))
                    .map_err(|e| derr(cols::DESIGNATION, e))?,
            );
            return Ok(id);
        }
        if !head.is_empty() {
            let n = Designation::from_packed(c1_5).map_err(|e| derr(cols::NUMBER, e))?;
            id.number = Some(n);
        }
        if c6_12.trim().is_empty() {
            if id.number.is_none() {
                return Err(field_err(
                    cols::DESIGNATION,
                    "no designation: expected a packed number in 1-5 or a designation in 6-12",
                ));
            }
            return Ok(id);
        }
        // A numbered comet's provisional designation takes its orbit type from column 5.
        let packed = match id.number {
            Some(Designation::PeriodicComet { kind, .. }) => format!("{kind}{c6_12}"),
            _ => c6_12.to_string(),
        };
        match Designation::from_packed(&packed) {
            Ok(d) => id.provisional = Some(d),
            Err(_) => id.temporary = Some(c6_12.trim().to_string()),
        }
        Ok(id)
    }

    /// Columns 1-5 and 6-12.
    fn encode(&self) -> Result<(String, String), String> {
        let mut c1_5 = match &self.number {
            Some(n) => n.packed().map_err(|e| e.to_string())?,
            None => "     ".to_string(),
        };
        let c6_12 = match (&self.provisional, &self.temporary) {
            (Some(p), _) => {
                let packed = p.packed().map_err(|e| e.to_string())?;
                match packed.len() {
                    7 => packed,
                    8 => {
                        let kind = &packed[..1];
                        if self.number.is_none() {
                            c1_5 = format!("    {kind}");
                        } else if !c1_5.ends_with(kind) {
                            return Err(format!(
                                "{p} is a comet of type {kind}, but column 5 holds `{}`",
                                &c1_5[4..]
                            ));
                        }
                        packed[1..].to_string()
                    }
                    _ => {
                        return Err(format!(
                            "{p} is not a provisional designation (columns 6-12)"
                        ))
                    }
                }
            }
            (None, Some(t)) => check_temporary(t)?,
            (None, None) => String::new(),
        };
        Ok((c1_5, format!("{c6_12:<7}")))
    }
}

/// A temporary designation as it goes in columns 6-12, or why it cannot: 1-7 letters and digits
/// that do not read as a packed designation (the `link` task names new objects with it).
pub fn check_temporary(t: &str) -> Result<String, String> {
    if t.is_empty() || t.len() > 7 || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "temporary designation `{t}`: expected 1 to 7 letters and digits"
        ));
    }
    if let Ok(d) = Designation::from_packed(t) {
        return Err(format!(
            "temporary designation `{t}` would be read back as the packed designation {d}: choose another"
        ));
    }
    Ok(t.to_string())
}

/// How many decimals the writer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// Of the day: 5 = 0.86 s, 6 = 0.086 s.
    pub time_decimals: u8,
    /// Of the seconds of RA: 2 = 0.15" at the equator, 3 = 0.015".
    pub ra_decimals: u8,
    /// Of the arcseconds of Dec: 1 or 2.
    pub dec_decimals: u8,
    /// Of the magnitude: 1 or 2.
    pub mag_decimals: u8,
}

impl Default for Precision {
    /// The MPC's usual CCD precision, and EURONEAR's: 1e-5 day, 0.01 s, 0.1", 0.1 mag.
    fn default() -> Precision {
        Precision {
            time_decimals: 5,
            ra_decimals: 2,
            dec_decimals: 1,
            mag_decimals: 1,
        }
    }
}

impl Precision {
    /// What does not fit the columns.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, v, max) in [
            ("time", self.time_decimals, 6),
            ("RA", self.ra_decimals, 3),
            ("Dec", self.dec_decimals, 2),
            ("magnitude", self.mag_decimals, 2),
        ] {
            if v > max {
                p.push(format!(
                    "{name}: {v} decimals do not fit the columns (at most {max})"
                ));
            }
        }
        p
    }
}

/// One observation line with every field decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObsLine {
    pub object: ObjectId,
    pub discovery: bool,
    pub note1: char,
    pub note2: char,
    pub date: MpcDate,
    pub ra: Sexagesimal,
    pub dec: Sexagesimal,
    /// Columns 57-65, normally blank.
    pub columns_57_65: String,
    pub mag: Option<Magnitude>,
    pub band: char,
    /// Columns 72-77: blank on submission, a reference in the MPC's archive.
    pub columns_72_77: String,
    pub code: String,
}

/// The text of columns `(a, b)`; the caller has checked the line is 80 ASCII characters.
fn slice(line: &str, (a, b): (usize, usize)) -> &str {
    &line[a - 1..b]
}

fn char_at(line: &str, col: usize) -> char {
    line.as_bytes()[col - 1] as char
}

impl ObsLine {
    /// Decodes an 80-character line. Every bad field is reported, not only the first.
    pub fn parse(line: &str) -> Result<ObsLine, Vec<FieldError>> {
        if let Some((i, c)) = line.char_indices().find(|(_, c)| !c.is_ascii()) {
            let col = line[..i].chars().count() + 1;
            return Err(vec![field_err(
                (col, col),
                format!("`{c}`: observation lines are ASCII"),
            )]);
        }
        if line.len() != 80 {
            return Err(vec![field_err(
                (1, line.len().max(1)),
                format!("{} characters: an observation line has 80", line.len()),
            )]);
        }
        let mut errors = Vec::new();
        let object = ObjectId::decode(slice(line, cols::NUMBER), slice(line, cols::PROVISIONAL))
            .map_err(|e| errors.push(e))
            .ok();
        let discovery = match char_at(line, 13) {
            '*' => true,
            ' ' => false,
            c => {
                errors.push(field_err(
                    cols::DISCOVERY,
                    format!("`{c}`: expected `*` (discovery) or blank"),
                ));
                false
            }
        };
        let date = parse_date(slice(line, cols::DATE))
            .map_err(|e| errors.push(e))
            .ok();
        let ra = parse_ra(slice(line, cols::RA))
            .map_err(|e| errors.push(e))
            .ok();
        let dec = parse_dec(slice(line, cols::DEC))
            .map_err(|e| errors.push(e))
            .ok();
        let mag_field = slice(line, cols::MAG);
        let mag_text = mag_field.trim();
        let mag = if mag_text.is_empty() {
            None
        } else {
            match Magnitude::parse(mag_field) {
                Some(m) => Some(m),
                None => {
                    errors.push(field_err(
                        cols::MAG,
                        format!("magnitude `{mag_text}`: expected a number such as `17.5`"),
                    ));
                    None
                }
            }
        };
        let code = slice(line, cols::CODE);
        if !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            errors.push(field_err(
                cols::CODE,
                format!("observatory code `{code}`: expected 3 letters or digits"),
            ));
        }
        match (object, date, ra, dec) {
            (Some(object), Some(date), Some(ra), Some(dec)) if errors.is_empty() => Ok(ObsLine {
                object,
                discovery,
                note1: char_at(line, 14),
                note2: char_at(line, 15),
                date,
                ra,
                dec,
                columns_57_65: slice(line, cols::BLANK1).to_string(),
                mag,
                band: char_at(line, 71),
                columns_72_77: slice(line, cols::BLANK2).to_string(),
                code: code.to_string(),
            }),
            _ => Err(errors),
        }
    }

    /// The 80 columns.
    pub fn format(&self) -> Result<String, String> {
        let (c1_5, c6_12) = self.object.encode()?;
        let mag = self.mag.map(|m| m.format()).unwrap_or_default();
        let line = format!(
            "{c1_5}{c6_12}{}{}{}{:<17}{:<12}{:<12}{:<9}{:<5}{}{:<6}{:<3}",
            if self.discovery { '*' } else { ' ' },
            self.note1,
            self.note2,
            self.date.format(),
            self.ra.format(),
            self.dec.format(),
            self.columns_57_65,
            mag,
            self.band,
            self.columns_72_77,
            self.code
        );
        if line.len() != 80 || !line.is_ascii() {
            return Err(format!(
                "the fields make {} characters, not 80: `{line}`",
                line.len()
            ));
        }
        Ok(line)
    }

    /// The line as an [`Observation`] (RA wrapped into 0-360 degrees).
    pub fn to_observation(&self) -> Observation {
        Observation {
            designation: self.object.designation(),
            mjd_utc: self.date.mjd(),
            ra_deg: (self.ra.value() * 15.0).rem_euclid(360.0),
            dec_deg: self.dec.value(),
            mag: self.mag.map(|m| m.value.value()),
            band: (self.band != ' ').then(|| self.band.to_string()),
            code: self.code.clone(),
            discovery: self.discovery,
        }
    }

    /// A CCD observation line (note 2 = `C`) for a submission.
    pub fn from_observation(o: &Observation, p: Precision) -> Result<ObsLine, String> {
        let mut problems = o.problems();
        problems.extend(p.problems());
        let object = match Designation::parse(&o.designation) {
            Ok(Some(d @ (Designation::Number(_) | Designation::PeriodicComet { .. }))) => {
                ObjectId {
                    number: Some(d),
                    provisional: None,
                    temporary: None,
                }
            }
            Ok(Some(d)) => ObjectId {
                number: None,
                provisional: Some(d),
                temporary: None,
            },
            Ok(None) => ObjectId {
                number: None,
                provisional: None,
                temporary: Some(o.designation.trim().to_string()),
            },
            Err(e) => {
                problems.push(e.to_string());
                ObjectId {
                    number: None,
                    provisional: None,
                    temporary: None,
                }
            }
        };
        let band = match o.band.as_deref().map(str::trim) {
            None => ' ',
            Some(b) if b.len() == 1 && b.is_ascii() => b.chars().next().unwrap_or(' '),
            Some(b) => {
                problems.push(format!(
                    "band `{b}`: the 80-column format holds one character"
                ));
                ' '
            }
        };
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        // Date: whole days and the fraction rounded together, so 23:59:59.9 becomes the next day.
        let scale = Fixed::scale(p.time_decimals);
        let units = (o.mjd_utc * scale as f64).round() as i64;
        let (year, month, day) = date_of_mjd(units.div_euclid(scale));
        let date = MpcDate {
            year,
            month,
            day: Fixed {
                units: day * scale + units.rem_euclid(scale),
                decimals: p.time_decimals,
            },
        };
        let ra_scale = Fixed::scale(p.ra_decimals);
        let ra_units =
            (o.ra_deg / 15.0 * 3600.0 * ra_scale as f64).round() as i64 % (24 * 3600 * ra_scale);
        let ra = Sexagesimal::from_units(ra_units, p.ra_decimals, None);
        let dec_scale = Fixed::scale(p.dec_decimals);
        let dec_units = (o.dec_deg.abs() * 3600.0 * dec_scale as f64).round() as i64;
        let sign = if o.dec_deg < 0.0 && dec_units > 0 {
            '-'
        } else {
            '+'
        };
        let dec = Sexagesimal::from_units(dec_units, p.dec_decimals, Some(sign));
        let line = ObsLine {
            object,
            discovery: o.discovery,
            note1: ' ',
            note2: 'C',
            date,
            ra,
            dec,
            columns_57_65: " ".repeat(9),
            mag: o
                .mag
                .map(|m| Magnitude::new(Fixed::round(m, p.mag_decimals))),
            band,
            columns_72_77: " ".repeat(6),
            code: o.code.clone(),
        };
        // Catch what only the assembled line shows (a temporary designation that reads back as
        // a packed one).
        line.format()?;
        Ok(line)
    }
}

fn parse_date(s: &str) -> Result<MpcDate, FieldError> {
    let t = s.trim_end();
    let bad = |why: &str| {
        field_err(
            cols::DATE,
            format!("date `{t}`: {why}; expected `YYYY MM DD.ddddd`"),
        )
    };
    let mut parts = t.split(' ');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three fields"));
    };
    if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad("year and month must be 4 and 2 digits"));
    }
    let day = match Fixed::parse(d) {
        Some(f) if d.split('.').next().map_or(0, str::len) == 2 => f,
        _ => return Err(bad("the day must be 2 digits and a fraction")),
    };
    let (year, month): (i64, i64) = (y.parse().unwrap_or(0), m.parse().unwrap_or(0));
    if !(1800..=2199).contains(&year) {
        return Err(bad("the year must be 1800-2199"));
    }
    if mjd_of_date(year, month, day.integer_part()).is_none() {
        return Err(bad("no such day"));
    }
    Ok(MpcDate { year, month, day })
}

/// Minutes below 60, seconds below 60 or exactly `60.00`: some writers round 59.996 up without
/// carrying (layup's newy6 file has `-03 11 60.00`), which is unambiguous, so it is read.
fn minutes_and_seconds_ok(v: &Sexagesimal) -> bool {
    v.minutes < 60 && v.seconds.value() <= 60.0
}

fn parse_ra(s: &str) -> Result<Sexagesimal, FieldError> {
    let t = s.trim_end();
    let bad = |why: &str| field_err(cols::RA, format!("RA `{t}`: {why}; expected `HH MM SS.ss`"));
    let ra = Sexagesimal::parse(t).ok_or_else(|| bad("unreadable"))?;
    match ra.sign {
        // A negative RA (layup's newy6 file writes 21h as `-2 54 23.498`) is read as that many
        // hours before 0h; nothing here ever writes one.
        Some('+') => return Err(bad("RA has no sign")),
        None if ra.whole_digits != 2 => return Err(bad("hours must be 2 digits")),
        _ => {}
    }
    if ra.whole > 23 {
        return Err(bad("hours must be 00-23"));
    }
    if !minutes_and_seconds_ok(&ra) {
        return Err(bad("minutes and seconds must be below 60"));
    }
    Ok(ra)
}

fn parse_dec(s: &str) -> Result<Sexagesimal, FieldError> {
    let t = s.trim_end();
    let bad = |why: &str| {
        field_err(
            cols::DEC,
            format!("Dec `{t}`: {why}; expected `sDD MM SS.s`"),
        )
    };
    let dec = Sexagesimal::parse(t).ok_or_else(|| bad("unreadable"))?;
    if dec.sign.is_none() {
        return Err(bad("the sign (+ or -) is missing"));
    }
    if dec.whole_digits != 2 {
        return Err(bad("degrees must be 2 digits"));
    }
    if !minutes_and_seconds_ok(&dec) {
        return Err(bad("minutes and seconds must be below 60"));
    }
    if dec.value().abs() > 90.0 {
        return Err(bad("beyond the pole"));
    }
    Ok(dec)
}
