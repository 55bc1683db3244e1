//! FITS headers as ordered cards with typed values, and typed getters whose errors name the file,
//! the HDU and the key.

use std::fmt;
use std::path::PathBuf;

use super::FitsError;

/// A header value as the card holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// No value: COMMENT, HISTORY and blank cards, or a key whose value field is empty.
    None,
}

impl Value {
    /// The number a numeric value holds (an integer is widened).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Value::Str(s) => format!("'{s}' (a string)"),
            Value::Int(i) => format!("{i} (an integer)"),
            Value::Float(f) => format!("{f} (a number)"),
            Value::Bool(b) => format!("{} (a logical)", if *b { "T" } else { "F" }),
            Value::None => "no value".into(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(v as f64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v as i64)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(v as i64)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

/// One header card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Upper-case key (`HIERARCH ` prefix removed for long ESO-style keys).
    pub key: String,
    pub value: Value,
    pub comment: String,
}

/// Where a header (and so an error about it) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    /// 0 = the primary HDU.
    pub hdu: usize,
    pub extname: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, HDU {}", self.file.display(), self.hdu)?;
        if let Some(e) = &self.extname {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

/// The place an error points at: a file and HDU, or a header built in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc(pub Option<Origin>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(o) => o.fmt(f),
            None => f.write_str("header in memory"),
        }
    }
}

/// An image section such as `[54:2101,1:4100]`: 1-based, inclusive, as IRAF writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub x1: usize,
    pub x2: usize,
    pub y1: usize,
    pub y2: usize,
}

impl Section {
    /// Width and height in pixels.
    pub fn size(&self) -> (usize, usize) {
        (self.x2 + 1 - self.x1, self.y2 + 1 - self.y1)
    }

    pub fn parse(s: &str) -> Option<Section> {
        let s = s.trim().strip_prefix('[')?.strip_suffix(']')?;
        let (xs, ys) = s.split_once(',')?;
        let range = |r: &str| -> Option<(usize, usize)> {
            let (a, b) = r.split_once(':')?;
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a >= 1 && b >= a).then_some((a, b))
        };
        let (x1, x2) = range(xs)?;
        let (y1, y2) = range(ys)?;
        Some(Section { x1, x2, y1, y2 })
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}:{},{}:{}]", self.x1, self.x2, self.y1, self.y2)
    }
}

/// An ordered list of cards. Keys are matched case-insensitively; the first card wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    cards: Vec<Card>,
    origin: Option<Origin>,
}

impl Header {
    pub fn new() -> Header {
        Header::default()
    }

    pub fn with_origin(mut self, origin: Origin) -> Header {
        self.origin = Some(origin);
        self
    }

    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    pub fn set_origin(&mut self, origin: Option<Origin>) {
        self.origin = origin;
    }

    /// Where this header comes from, for error messages.
    pub fn loc(&self) -> Loc {
        Loc(self.origin.clone())
    }

    pub fn cards(&self) -> &[Card] {
        &self.cards
    }

    pub fn len(&self) -> usize {
        self.cards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.card(key).is_some()
    }

    pub fn card(&self, key: &str) -> Option<&Card> {
        self.cards
            .iter()
            .find(|c| c.key.eq_ignore_ascii_case(key) && !is_commentary(&c.key))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.card(key).map(|c| &c.value)
    }

    /// Sets a key's value and comment, replacing the first card with that key or appending one.
    pub fn set(&mut self, key: &str, value: impl Into<Value>, comment: &str) -> &mut Header {
        let key = key.to_ascii_uppercase();
        let card = Card {
            key: key.clone(),
            value: value.into(),
            comment: comment.to_owned(),
        };
        match self.cards.iter_mut().find(|c| c.key == key) {
            Some(c) => *c = card,
            None => self.cards.push(card),
        }
        self
    }

    /// Removes every card with this key; returns how many were removed.
    pub fn remove(&mut self, key: &str) -> usize {
        let n = self.cards.len();
        self.cards.retain(|c| !c.key.eq_ignore_ascii_case(key));
        n - self.cards.len()
    }

    pub fn add_comment(&mut self, text: &str) -> &mut Header {
        self.push_commentary("COMMENT", text)
    }

    pub fn add_history(&mut self, text: &str) -> &mut Header {
        self.push_commentary("HISTORY", text)
    }

    fn push_commentary(&mut self, key: &str, text: &str) -> &mut Header {
        self.cards.push(Card {
            key: key.into(),
            value: Value::None,
            comment: text.into(),
        });
        self
    }

    /// Appends every card of `other` (keys already here are replaced in place).
    pub fn merge(&mut self, other: &Header) {
        for c in &other.cards {
            if is_commentary(&c.key) {
                self.cards.push(c.clone());
            } else {
                self.set(&c.key, c.value.clone(), &c.comment);
            }
        }
    }

    fn missing(&self, key: &str) -> FitsError {
        FitsError::MissingKey {
            at: self.loc(),
            key: key.to_ascii_uppercase(),
        }
    }

    fn bad(&self, key: &str, v: &Value, expected: &'static str) -> FitsError {
        FitsError::BadKey {
            at: self.loc(),
            key: key.to_ascii_uppercase(),
            found: v.describe(),
            expected,
        }
    }

    /// A string value. A number or logical is given as its text (some writers quote numbers and
    /// some do not, e.g. `RA`).
    pub fn str(&self, key: &str) -> Result<String, FitsError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(Value::Int(i)) => Ok(i.to_string()),
            Some(Value::Float(f)) => Ok(f.to_string()),
            Some(v @ (Value::Bool(_) | Value::None)) => Err(self.bad(key, v, "a string")),
        }
    }

    /// A number. A string holding a number (`'2.5'`) is accepted, as some writers quote them.
    pub fn f64(&self, key: &str) -> Result<f64, FitsError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(v) => v
                .as_f64()
                .or_else(|| match v {
                    Value::Str(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .filter(|f: &f64| f.is_finite())
                .ok_or_else(|| self.bad(key, v, "a finite number")),
        }
    }

    pub fn i64(&self, key: &str) -> Result<i64, FitsError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Int(i)) => Ok(*i),
            Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(*f as i64),
            Some(v @ Value::Str(s)) => s.trim().parse().map_err(|_| self.bad(key, v, "an integer")),
            Some(v) => Err(self.bad(key, v, "an integer")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, FitsError> {
        match self.get(key) {
            None => Err(self.missing(key)),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(key, v, "a logical (T or F)")),
        }
    }

    /// Like [`Header::f64`] but `None` when the key is absent (an error if present and bad).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, FitsError> {
        if self.contains(key) {
            self.f64(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, FitsError> {
        if self.contains(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An image section key such as BIASSEC or TRIMSEC.
    pub fn section(&self, key: &str) -> Result<Section, FitsError> {
        let s = self.str(key)?;
        Section::parse(&s).ok_or_else(|| {
            self.bad(
                key,
                &Value::Str(s.clone()),
                "a section [x1:x2,y1:y2] with 1 <= x1 <= x2 and 1 <= y1 <= y2",
            )
        })
    }

    /// Parses 80-character cards (as cfitsio returns them) into a header; stops at END.
    /// Long strings continued over CONTINUE cards are joined.
    pub fn from_cards<S: AsRef<str>>(cards: &[S]) -> Header {
        let mut h = Header::new();
        for raw in cards {
            let raw = raw.as_ref();
            let card = parse_card(raw);
            if card.key == "END" {
                break;
            }
            if card.key == "CONTINUE" {
                if let Some(Card {
                    value: Value::Str(prev),
                    comment,
                    ..
                }) = h.cards.last_mut()
                {
                    if prev.ends_with('&') {
                        prev.pop();
                        if let Value::Str(more) = &card.value {
                            prev.push_str(more);
                        }
                        if !card.comment.is_empty() {
                            *comment = card.comment;
                        }
                        continue;
                    }
                }
            }
            h.cards.push(card);
        }
        h
    }
}

/// COMMENT, HISTORY and blank keys may repeat and carry text, not values.
pub fn is_commentary(key: &str) -> bool {
    key.is_empty() || key == "COMMENT" || key == "HISTORY"
}

fn parse_card(raw: &str) -> Card {
    let raw: String = raw.chars().take(80).collect();
    let head: String = raw.chars().take(8).collect();
    let key = head.trim().to_ascii_uppercase();
    if key == "HIERARCH" {
        if let Some((k, rest)) = raw.get(8..).and_then(|r| r.split_once('=')) {
            let (value, comment) = parse_value(rest);
            return Card {
                key: k.trim().to_ascii_uppercase(),
                value,
                comment,
            };
        }
    }
    let rest = raw.get(8..).unwrap_or("");
    if let Some(field) = rest.strip_prefix("= ").filter(|_| !is_commentary(&key)) {
        let (value, comment) = parse_value(field);
        return Card {
            key,
            value,
            comment,
        };
    }
    if key == "CONTINUE" {
        let (value, comment) = parse_value(rest);
        return Card {
            key,
            value,
            comment,
        };
    }
    Card {
        key,
        value: Value::None,
        comment: rest.trim().to_owned(),
    }
}

/// Parses a value field (after `= `): a quoted string, T/F, an integer, a real, or nothing;
/// then an optional `/ comment`.
fn parse_value(field: &str) -> (Value, String) {
    let t = field.trim_start();
    if let Some(body) = t.strip_prefix('\'') {
        let mut s = String::new();
        let mut chars = body.chars().peekable();
        let mut consumed = 1;
        while let Some(c) = chars.next() {
            consumed += c.len_utf8();
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    consumed += 1;
                    s.push('\'');
                    continue;
                }
                break;
            }
            s.push(c);
        }
        let after = &t[consumed.min(t.len())..];
        let comment = after
            .split_once('/')
            .map(|(_, c)| c.trim().to_owned())
            .unwrap_or_default();
        return (Value::Str(s.trim_end().to_owned()), comment);
    }
    let (v, comment) = match t.split_once('/') {
        Some((v, c)) => (v.trim(), c.trim().to_owned()),
        None => (t.trim(), String::new()),
    };
    let value = match v {
        "" => Value::None,
        "T" => Value::Bool(true),
        "F" => Value::Bool(false),
        _ => {
            if let Ok(i) = v.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = v.replace(['D', 'd'], "E").parse::<f64>() {
                Value::Float(f)
            } else {
                Value::Str(v.to_owned())
            }
        }
    };
    (value, comment)
}

/// Formats a non-string value for the fixed-format value field (right-justified to column 30).
/// Reals use Rust's shortest representation that reads back to the same f64.
pub fn format_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => (if *b { "T" } else { "F" }).to_owned(),
        Value::Float(f) if !f.is_finite() => return None,
        Value::Float(f) => {
            let mut s = format!("{f}");
            if !s.contains(['.', 'e', 'E']) {
                s.push_str(".0");
            }
            if s.len() > 20 {
                s = format!("{f:E}");
            }
            s
        }
        Value::Str(_) | Value::None => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> String {
        format!("{s:<80}")
    }

    #[test]
    fn parses_every_kind_of_card() {
        let h = Header::from_cards(&[
            card("SIMPLE  =                    T / conforms"),
            card("BITPIX  =                   16"),
            card("BZERO   =              32768.0 / offset"),
            card("OBJECT  = 'O''Brien field'     / with a quote"),
            card("RA      = '19:00:00.00'"),
            card("EXPDBL  =             1.5D+02"),
            card("BLANKV  =                      / no value"),
            card("COMMENT   a comment"),
            card("HISTORY   step 1"),
            card("HIERARCH ESO DET CHIP ID = 'ccd42' / chip"),
            card("LONG    = 'abc&'"),
            card("CONTINUE  'def'"),
            card("END"),
            card("AFTER   = 1"),
        ]);
        assert!(h.bool("SIMPLE").unwrap());
        assert_eq!(h.i64("BITPIX").unwrap(), 16);
        assert_eq!(h.f64("BZERO").unwrap(), 32768.0);
        assert_eq!(h.card("BZERO").unwrap().comment, "offset");
        assert_eq!(h.str("OBJECT").unwrap(), "O'Brien field");
        assert_eq!(h.f64("EXPDBL").unwrap(), 150.0);
        assert_eq!(h.get("BLANKV"), Some(&Value::None));
        assert_eq!(h.str("ESO DET CHIP ID").unwrap(), "ccd42");
        assert_eq!(h.str("LONG").unwrap(), "abcdef");
        assert!(!h.contains("AFTER"), "cards after END are ignored");
        assert_eq!(h.cards().iter().filter(|c| c.key == "HISTORY").count(), 1);
    }

    #[test]
    fn getters_name_the_key_and_what_was_expected() {
        let mut h = Header::new().with_origin(Origin {
            file: "night/r1.fits".into(),
            hdu: 2,
            extname: Some("CCD2".into()),
        });
        h.set("GAIN", "fast", "");
        let e = h.f64("GAIN").unwrap_err().to_string();
        assert_eq!(
            e,
            "night/r1.fits, HDU 2 (CCD2): key GAIN = 'fast' (a string): expected a finite number"
        );
        let e = h.f64("RDNOISE").unwrap_err().to_string();
        assert_eq!(e, "night/r1.fits, HDU 2 (CCD2): key RDNOISE is missing");
        assert_eq!(h.opt_f64("RDNOISE").unwrap(), None);
    }

    #[test]
    fn sections_parse_and_reject_nonsense() {
        let s = Section::parse("[54:2101, 1:4100]").unwrap();
        assert_eq!(s.size(), (2048, 4100));
        assert_eq!(s.to_string(), "[54:2101,1:4100]");
        assert!(Section::parse("[0:10,1:5]").is_none());
        assert!(Section::parse("[10:5,1:5]").is_none());
        assert!(Section::parse("54:2101,1:4100").is_none());
    }

    #[test]
    fn reals_format_to_read_back_exactly() {
        for v in [
            0.1,
            280.123_456_789_012_3,
            -1.0e-7,
            3.0,
            1.0e300,
            6.02214076e23,
        ] {
            let s = format_value(&Value::Float(v)).unwrap();
            assert!(s.len() <= 20, "{s}");
            let (back, _) = parse_value(&s);
            assert_eq!(back, Value::Float(v), "{s}");
        }
        assert_eq!(format_value(&Value::Float(f64::NAN)), None);
    }
}
