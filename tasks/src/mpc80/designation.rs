//! MPC designations, packed (as columns 1-12 of an observation line hold them) and unpacked (as
//! astronomers write them).
//!
//! - Numbers: 1-99999 as five digits (`00433`); 100000-619999 as a letter for the ten-thousands
//!   (A = 10 .. Z = 35, a = 36 .. z = 61) and four digits (`A0001` = 100001); from 620000 a
//!   tilde and four base-62 digits of `number - 620000` (`~0000` = 620000, up to 15396335).
//! - Provisional designations: century letter (I = 18, J = 19, K = 20, L = 21), two-digit year,
//!   half-month letter, cycle count in two characters (00-99, then A0 = 100 .. z9 = 619),
//!   second letter: `2007 TE366` = `K07Ta6E`, `1998 QS55` = `J98Q55S`.
//! - Palomar-Leiden and Trojan survey designations: `2040 P-L` = `PLS2040`, `3138 T-1` =
//!   `T1S3138`.
//! - Comets: numbered periodic `1P` = `0001P`; provisional `C/1995 O1` = `CJ95O010` (orbit type,
//!   then as an asteroid but with the number where the cycle is and a fragment letter or `0`
//!   last: `D/1993 F2-B` = `DJ93F02b`); comets designated as asteroids `P/2019 LD2` =
//!   `PK19L02D`.
//! - Provisional natural satellites: `S/2003 J 2` = `SK03J020`.
//!
//! The extended provisional format for cycle counts above 619 and numbered natural satellites
//! are not supported: they fail with an error saying so.

use std::fmt;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The largest number the packed form holds (`~zzzz`).
pub const MAX_NUMBER: u32 = 620_000 + 62 * 62 * 62 * 62 - 1;

fn base62_value(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
        'a'..='z' => Some(c as u32 - 'a' as u32 + 36),
        _ => None,
    }
}

fn base62_digit(v: u32) -> char {
    BASE62[v as usize % 62] as char
}

/// Why a designation could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("designation `{text}`: {reason}")]
pub struct DesignationError {
    pub text: String,
    pub reason: String,
}

fn err<T>(text: &str, reason: impl Into<String>) -> Result<T, DesignationError> {
    Err(DesignationError {
        text: text.to_string(),
        reason: reason.into(),
    })
}

/// The two Palomar-Leiden and three Trojan surveys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survey {
    PalomarLeiden,
    Trojan1,
    Trojan2,
    Trojan3,
}

impl Survey {
    fn unpacked(self) -> &'static str {
        match self {
            Survey::PalomarLeiden => "P-L",
            Survey::Trojan1 => "T-1",
            Survey::Trojan2 => "T-2",
            Survey::Trojan3 => "T-3",
        }
    }
    fn packed(self) -> &'static str {
        match self {
            Survey::PalomarLeiden => "PLS",
            Survey::Trojan1 => "T1S",
            Survey::Trojan2 => "T2S",
            Survey::Trojan3 => "T3S",
        }
    }
    const ALL: [Survey; 4] = [
        Survey::PalomarLeiden,
        Survey::Trojan1,
        Survey::Trojan2,
        Survey::Trojan3,
    ];
}

/// A provisional designation `YYYY HL[n]`: year, half-month letter, second letter, cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provisional {
    pub year: u16,
    /// A-Y without I: the half-month of discovery.
    pub half_month: char,
    /// A-Z without I: the order within the half-month.
    pub letter: char,
    /// How many times the 25 letters went round (0-619).
    pub cycle: u16,
}

/// Every designation kind this module reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Designation {
    /// A numbered minor planet.
    Number(u32),
    Provisional(Provisional),
    Survey {
        number: u16,
        survey: Survey,
    },
    /// A numbered periodic comet, `1P`; `kind` is `P` or `D`.
    PeriodicComet {
        number: u16,
        kind: char,
    },
    /// A comet's provisional designation, `C/1995 O1`, `D/1993 F2-B`.
    Comet {
        kind: char,
        year: u16,
        half_month: char,
        number: u16,
        fragment: Option<char>,
    },
    /// A comet designated as an asteroid, `P/2019 LD2`.
    CometAsAsteroid {
        kind: char,
        provisional: Provisional,
    },
    /// A natural satellite's provisional designation, `S/2003 J 2`.
    Satellite {
        year: u16,
        planet: char,
        number: u16,
    },
}

const COMET_KINDS: &str = "PCDXIA";
const PLANETS: &str = "JSUN";

fn is_half_month(c: char) -> bool {
    c.is_ascii_uppercase() && c != 'I' && c != 'Z'
}

fn is_order_letter(c: char) -> bool {
    c.is_ascii_uppercase() && c != 'I'
}

/// Century letter and two year digits of a packed designation.
fn unpack_year(s: &str, text: &str) -> Result<u16, DesignationError> {
    let mut c = s.chars();
    let century = match c.next() {
        Some(ch @ 'I'..='L') => 18 + (ch as u16 - 'I' as u16),
        _ => return err(text, "the century letter must be I (1800s) to L (2100s)"),
    };
    let yy: String = c.collect();
    match yy.parse::<u16>() {
        Ok(y) if yy.len() == 2 && yy.bytes().all(|b| b.is_ascii_digit()) => Ok(century * 100 + y),
        _ => err(text, "expected two year digits after the century letter"),
    }
}

fn pack_year(year: u16, text: &str) -> Result<String, DesignationError> {
    if !(1800..=2199).contains(&year) {
        return err(text, "the year must be 1800-2199");
    }
    let c = (b'I' + (year / 100 - 18) as u8) as char;
    Ok(format!("{c}{:02}", year % 100))
}

/// Two characters holding 0-619: `00`-`99`, then a base-62 letter for the tens.
fn unpack_count(s: &str, text: &str) -> Result<u16, DesignationError> {
    let mut c = s.chars();
    match (c.next().and_then(base62_value), c.next()) {
        (Some(t), Some(u @ '0'..='9')) => Ok(t as u16 * 10 + (u as u16 - '0' as u16)),
        _ => err(
            text,
            format!("`{s}`: expected a packed count (00-99, A0-z9)"),
        ),
    }
}

fn pack_count(n: u16, text: &str) -> Result<String, DesignationError> {
    if n > 619 {
        return err(
            text,
            "counts above 619 need the extended packed format, which is not supported",
        );
    }
    Ok(format!("{}{}", base62_digit(n as u32 / 10), n % 10))
}

/// `1998 QS55` and the like (also the part after `P/` of a comet designated as an asteroid).
fn parse_provisional(s: &str, text: &str) -> Option<Result<Provisional, DesignationError>> {
    let (year, rest) = s.split_once(' ')?;
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut c = rest.chars();
    let (half_month, letter) = (c.next()?, c.next()?);
    let digits: String = c.collect();
    if !half_month.is_ascii_uppercase()
        || !letter.is_ascii_uppercase()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return None;
    }
    Some((|| {
        if !is_half_month(half_month) {
            return err(text, "the half-month letter must be A-Y without I");
        }
        if !is_order_letter(letter) {
            return err(text, "the second letter must be A-Z without I");
        }
        let year: u16 = year.parse().unwrap_or(0);
        if !(1800..=2199).contains(&year) {
            return err(text, "the year must be 1800-2199");
        }
        let cycle = if digits.is_empty() {
            0
        } else {
            match digits.parse::<u16>() {
                Ok(n) if n <= 619 => n,
                _ => {
                    return err(
                        text,
                        "cycle counts above 619 need the extended packed format, which is not supported",
                    )
                }
            }
        };
        Ok(Provisional {
            year,
            half_month,
            letter,
            cycle,
        })
    })())
}

fn unpack_provisional(p: &str, text: &str) -> Result<Provisional, DesignationError> {
    let c: Vec<char> = p.chars().collect();
    if c.len() != 7 {
        return err(text, "a packed provisional designation has 7 characters");
    }
    let year = unpack_year(&p[..3], text)?;
    if !is_half_month(c[3]) {
        return err(text, "the half-month letter must be A-Y without I");
    }
    let cycle = unpack_count(&p[4..6], text)?;
    if !is_order_letter(c[6]) {
        return err(text, "the last letter must be A-Z without I");
    }
    Ok(Provisional {
        year,
        half_month: c[3],
        letter: c[6],
        cycle,
    })
}

impl Provisional {
    fn packed(&self, text: &str) -> Result<String, DesignationError> {
        Ok(format!(
            "{}{}{}{}",
            pack_year(self.year, text)?,
            self.half_month,
            pack_count(self.cycle, text)?,
            self.letter
        ))
    }
}

impl fmt::Display for Provisional {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {}{}", self.year, self.half_month, self.letter)?;
        if self.cycle > 0 {
            write!(f, "{}", self.cycle)?;
        }
        Ok(())
    }
}

/// Packs a minor-planet number (`433` -> `00433`, `100001` -> `A0001`, `620000` -> `~0000`).
pub fn pack_number(n: u32) -> Result<String, DesignationError> {
    match n {
        1..=99_999 => Ok(format!("{n:05}")),
        100_000..=619_999 => Ok(format!("{}{:04}", base62_digit(n / 10_000), n % 10_000)),
        620_000..=MAX_NUMBER => {
            let mut v = n - 620_000;
            let mut digits = [' '; 4];
            for d in digits.iter_mut().rev() {
                *d = base62_digit(v % 62);
                v /= 62;
            }
            Ok(format!("~{}", digits.iter().collect::<String>()))
        }
        _ => err(
            &n.to_string(),
            format!("minor-planet numbers run from 1 to {MAX_NUMBER}"),
        ),
    }
}

/// Unpacks a five-character packed number.
pub fn unpack_number(p: &str) -> Result<u32, DesignationError> {
    let c: Vec<char> = p.chars().collect();
    if c.len() != 5 {
        return err(p, "a packed number has 5 characters");
    }
    let n = if c[0] == '~' {
        c[1..]
            .iter()
            .try_fold(0u32, |acc, &ch| base62_value(ch).map(|v| acc * 62 + v))
    } else if c[1..].iter().all(char::is_ascii_digit) {
        base62_value(c[0])
            .map(|head| head * 10_000 + c[1..].iter().fold(0, |a, ch| a * 10 + (*ch as u32 - 48)))
    } else {
        None
    };
    match n {
        Some(v) if c[0] == '~' => Ok(620_000 + v),
        Some(0) => err(p, "number 0 does not exist"),
        Some(v) => Ok(v),
        None => err(
            p,
            "expected five digits, a letter and four digits, or `~` and four base-62 digits",
        ),
    }
}

impl Designation {
    /// Reads an unpacked designation; `Ok(None)` when the text is none of the kinds (a temporary
    /// designation, say), `Err` when it is one of them but wrong (`2007 IE366`).
    pub fn parse(text: &str) -> Result<Option<Designation>, DesignationError> {
        let s = text.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(n) if (1..=MAX_NUMBER).contains(&n) => Ok(Some(Designation::Number(n))),
                _ => err(
                    text,
                    format!("minor-planet numbers run from 1 to {MAX_NUMBER}"),
                ),
            };
        }
        // 1P, 2D
        if let Some(kind) = s.chars().last().filter(|k| *k == 'P' || *k == 'D') {
            let num = &s[..s.len() - 1];
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
                return match num.parse::<u16>() {
                    Ok(n) if (1..=9999).contains(&n) => {
                        Ok(Some(Designation::PeriodicComet { number: n, kind }))
                    }
                    _ => err(text, "periodic comet numbers run from 1 to 9999"),
                };
            }
        }
        // 2040 P-L, 3138 T-1
        if let Some((num, survey)) = s.split_once(' ') {
            if let Some(sv) = Survey::ALL.iter().find(|v| v.unpacked() == survey) {
                return match num.parse::<u16>() {
                    Ok(n) if num.len() == 4 && n > 0 => Ok(Some(Designation::Survey {
                        number: n,
                        survey: *sv,
                    })),
                    _ => err(text, "a survey designation has a four-digit number"),
                };
            }
        }
        if let Some(p) = parse_provisional(s, text) {
            return p.map(|p| Some(Designation::Provisional(p)));
        }
        // C/1995 O1, D/1993 F2-B, P/2019 LD2, S/2003 J 2
        let Some((kind, rest)) = s.split_once('/') else {
            return Ok(None);
        };
        let mut kc = kind.chars();
        let (Some(kind), None) = (kc.next(), kc.next()) else {
            return Ok(None);
        };
        if kind == 'S' {
            let parts: Vec<&str> = rest.split(' ').collect();
            let [year, planet, number] = parts[..] else {
                return err(text, "a satellite designation reads `S/2003 J 2`");
            };
            let (Ok(year), Some(planet), Ok(number)) = (
                year.parse::<u16>(),
                planet
                    .chars()
                    .next()
                    .filter(|p| PLANETS.contains(*p) && planet.len() == 1),
                number.parse::<u16>(),
            ) else {
                return err(
                    text,
                    "a satellite designation reads `S/2003 J 2` (planet J, S, U or N)",
                );
            };
            if !(1800..=2199).contains(&year) || !(1..=619).contains(&number) {
                return err(text, "year 1800-2199 and number 1-619 expected");
            }
            return Ok(Some(Designation::Satellite {
                year,
                planet,
                number,
            }));
        }
        if !COMET_KINDS.contains(kind) {
            return Ok(None);
        }
        if let Some(p) = parse_provisional(rest, text) {
            return p.map(|provisional| Some(Designation::CometAsAsteroid { kind, provisional }));
        }
        let Some((year, id)) = rest.split_once(' ') else {
            return err(text, "a comet designation reads `C/1995 O1`");
        };
        let (id, fragment) = match id.split_once('-') {
            Some((id, f)) => {
                let mut fc = f.chars();
                match (fc.next(), fc.next()) {
                    (Some(c @ 'A'..='Z'), None) => (id, Some(c)),
                    _ => return err(text, "a fragment is one capital letter, `-B`"),
                }
            }
            None => (id, None),
        };
        let mut ic = id.chars();
        let half_month = ic.next().filter(|c| is_half_month(*c));
        let number: Option<u16> = ic.as_str().parse().ok();
        match (year.parse::<u16>(), half_month, number) {
            (Ok(y), Some(h), Some(n)) if (1800..=2199).contains(&y) && (1..=619).contains(&n) => {
                Ok(Some(Designation::Comet {
                    kind,
                    year: y,
                    half_month: h,
                    number: n,
                    fragment,
                }))
            }
            _ => err(
                text,
                "a comet designation reads `C/1995 O1`: year 1800-2199, half-month letter A-Y without I, number 1-619",
            ),
        }
    }

    /// The packed form: 5 characters for numbers and numbered comets (columns 1-5), 7 for
    /// provisional and survey designations (columns 6-12), 8 for comet and satellite
    /// provisional designations (columns 5-12, the orbit type first).
    pub fn packed(&self) -> Result<String, DesignationError> {
        let text = self.to_string();
        match *self {
            Designation::Number(n) => pack_number(n),
            Designation::Provisional(p) => p.packed(&text),
            Designation::Survey { number, survey } => Ok(format!("{}{number:04}", survey.packed())),
            Designation::PeriodicComet { number, kind } => Ok(format!("{number:04}{kind}")),
            Designation::Comet {
                kind,
                year,
                half_month,
                number,
                fragment,
            } => Ok(format!(
                "{kind}{}{half_month}{}{}",
                pack_year(year, &text)?,
                pack_count(number, &text)?,
                fragment.map_or('0', |f| f.to_ascii_lowercase())
            )),
            Designation::CometAsAsteroid { kind, provisional } => {
                Ok(format!("{kind}{}", provisional.packed(&text)?))
            }
            Designation::Satellite {
                year,
                planet,
                number,
            } => Ok(format!(
                "S{}{planet}{}0",
                pack_year(year, &text)?,
                pack_count(number, &text)?
            )),
        }
    }

    /// Reads a packed designation of any of the lengths [`Designation::packed`] writes.
    pub fn from_packed(p: &str) -> Result<Designation, DesignationError> {
        if !p.is_ascii() {
            return err(p, "packed designations are ASCII letters and digits");
        }
        let c: Vec<char> = p.chars().collect();
        match c.len() {
            5 if c[4] == 'P' || c[4] == 'D' => match p[..4].parse::<u16>() {
                Ok(n) if n > 0 && c[..4].iter().all(char::is_ascii_digit) => {
                    Ok(Designation::PeriodicComet {
                        number: n,
                        kind: c[4],
                    })
                }
                _ => err(p, "a numbered comet is four digits and P or D, `0001P`"),
            },
            5 => unpack_number(p).map(Designation::Number),
            7 => {
                if let Some(sv) = Survey::ALL.iter().find(|s| p.starts_with(s.packed())) {
                    return match p[3..].parse::<u16>() {
                        Ok(n) if n > 0 && c[3..].iter().all(char::is_ascii_digit) => {
                            Ok(Designation::Survey {
                                number: n,
                                survey: *sv,
                            })
                        }
                        _ => err(p, "a packed survey designation ends in four digits"),
                    };
                }
                unpack_provisional(p, p).map(Designation::Provisional)
            }
            8 if c[0] == 'S' => {
                let year = unpack_year(&p[1..4], p)?;
                let number = unpack_count(&p[5..7], p)?;
                if !PLANETS.contains(c[4]) || c[7] != '0' || number == 0 {
                    return err(p, "a packed satellite designation reads `SK03J020`");
                }
                Ok(Designation::Satellite {
                    year,
                    planet: c[4],
                    number,
                })
            }
            8 if COMET_KINDS.contains(c[0]) => {
                let kind = c[0];
                if c[7].is_ascii_uppercase() {
                    return unpack_provisional(&p[1..], p)
                        .map(|provisional| Designation::CometAsAsteroid { kind, provisional });
                }
                let year = unpack_year(&p[1..4], p)?;
                let number = unpack_count(&p[5..7], p)?;
                let fragment = match c[7] {
                    '0' => None,
                    f @ 'a'..='z' => Some(f.to_ascii_uppercase()),
                    _ => return err(p, "the last character is `0` or a fragment letter a-z"),
                };
                if !is_half_month(c[4]) || number == 0 {
                    return err(p, "a packed comet designation reads `CJ95O010`");
                }
                Ok(Designation::Comet {
                    kind,
                    year,
                    half_month: c[4],
                    number,
                    fragment,
                })
            }
            _ => err(
                p,
                "a packed designation has 5 (number), 7 (provisional) or 8 (comet, satellite) characters",
            ),
        }
    }
}

impl fmt::Display for Designation {
    /// The unpacked form.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Designation::Number(n) => write!(f, "{n}"),
            Designation::Provisional(p) => write!(f, "{p}"),
            Designation::Survey { number, survey } => {
                write!(f, "{number:04} {}", survey.unpacked())
            }
            Designation::PeriodicComet { number, kind } => write!(f, "{number}{kind}"),
            Designation::Comet {
                kind,
                year,
                half_month,
                number,
                fragment,
            } => {
                write!(f, "{kind}/{year} {half_month}{number}")?;
                if let Some(fr) = fragment {
                    write!(f, "-{fr}")?;
                }
                Ok(())
            }
            Designation::CometAsAsteroid { kind, provisional } => {
                write!(f, "{kind}/{provisional}")
            }
            Designation::Satellite {
                year,
                planet,
                number,
            } => write!(f, "S/{year} {planet} {number}"),
        }
    }
}

/// Packs any designation an astronomer writes (`2007 TE366` -> `K07Ta6E`).
pub fn pack(unpacked: &str) -> Result<String, DesignationError> {
    match Designation::parse(unpacked)? {
        Some(d) => d.packed(),
        None => err(
            unpacked,
            "not a number, provisional, survey, comet or satellite designation",
        ),
    }
}

/// Unpacks any packed designation (`K07Ta6E` -> `2007 TE366`).
pub fn unpack(packed: &str) -> Result<String, DesignationError> {
    Designation::from_packed(packed).map(|d| d.to_string())
}
