//! A whole 80-column report: header lines (`COD 950`, `CON ...`), observation lines, the second
//! lines of two-line records, blank lines. [`Report::parse`] keeps every line (an unreadable one
//! verbatim, with its error beside it) so one bad line never loses the rest of a night, and
//! [`Report::write`] gives back the same bytes. [`Header`] and [`write_submission`] make a new
//! report from observations.

use super::line::{FieldError, ObsLine, Precision};
use crate::obs::Observation;

/// The header keywords of a submission, in the order they are written.
pub const HEADER_KEYWORDS: [&str; 11] = [
    "COD", "CON", "OBS", "MEA", "TEL", "NET", "BND", "COM", "NUM", "ACK", "AC2",
];

/// A problem on one line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub field: Option<FieldError>,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.field {
            Some(fe) => write!(f, "line {}, {fe}", self.line),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// An observation and, for a two-line record (satellite `S`/`s`, roving observer `V`/`v`,
/// radar `R`/`r`), its second line, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: ObsLine,
    pub second: Option<String>,
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `COD 950`: the keyword and the rest of the line after its separating space.
    Header {
        keyword: String,
        text: String,
    },
    /// Empty or only blanks (kept as found).
    Blank(String),
    Record(Box<Record>),
    /// A line that could not be read, verbatim; its error is in [`Parsed::errors`].
    Unreadable(String),
}

/// A report as lines, with how its lines ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Lines end in `\r\n` rather than `\n`.
    pub crlf: bool,
    /// The last line ends with a line break.
    pub final_newline: bool,
}

/// What [`Report::parse`] found: the report and the problems of its unreadable lines.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub report: Report,
    pub errors: Vec<LineError>,
}

/// Whether a second line belongs to the first: `s` after `S`, `v` after `V`, `r` after `R`,
/// with the same designation in columns 1-12.
fn second_line_of(first: &str, second: &str) -> bool {
    let (Some(n1), Some(n2)) = (first.as_bytes().get(14), second.as_bytes().get(14)) else {
        return false;
    };
    n1.to_ascii_lowercase() == *n2 && first.get(..12) == second.get(..12)
}

fn two_line_first(line: &ObsLine) -> bool {
    matches!(line.note2, 'S' | 'V' | 'R')
}

impl Report {
    /// Reads a report; never fails as a whole.
    pub fn parse(text: &str) -> Parsed {
        let crlf = text.contains("\r\n");
        let final_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let raw: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n')
                .map(|l| {
                    if crlf {
                        l.strip_suffix('\r').unwrap_or(l)
                    } else {
                        l
                    }
                })
                .collect()
        };
        let mut lines = Vec::with_capacity(raw.len());
        let mut errors = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let l = raw[i];
            let n = i + 1;
            i += 1;
            if l.trim().is_empty() {
                lines.push(Line::Blank(l.to_string()));
                continue;
            }
            if let Some(kw) = HEADER_KEYWORDS
                .iter()
                .find(|k| l.starts_with(*k) && matches!(l.as_bytes().get(3), None | Some(b' ')))
            {
                lines.push(Line::Header {
                    keyword: kw.to_string(),
                    text: l.get(4..).unwrap_or("").to_string(),
                });
                continue;
            }
            if matches!(l.as_bytes().get(14), Some(b's' | b'v' | b'r')) && l.len() == 80 {
                errors.push(LineError {
                    line: n,
                    field: None,
                    message: format!(
                        "a second line (`{}` in column 15) without the first line of its record before it",
                        &l[14..15]
                    ),
                });
                lines.push(Line::Unreadable(l.to_string()));
                continue;
            }
            match ObsLine::parse(l) {
                Ok(obs) if two_line_first(&obs) => {
                    if i < raw.len() && second_line_of(l, raw[i]) && raw[i].len() == 80 {
                        lines.push(Line::Record(Box::new(Record {
                            line: obs,
                            second: Some(raw[i].to_string()),
                        })));
                        i += 1;
                    } else {
                        errors.push(LineError {
                            line: n,
                            field: None,
                            message: format!(
                                "`{}` in column 15 starts a two-line record, but line {} is not its second line (`{}`, same designation)",
                                obs.note2,
                                n + 1,
                                obs.note2.to_ascii_lowercase()
                            ),
                        });
                        lines.push(Line::Unreadable(l.to_string()));
                    }
                }
                Ok(obs) => lines.push(Line::Record(Box::new(Record {
                    line: obs,
                    second: None,
                }))),
                Err(fields) => {
                    for fe in fields {
                        errors.push(LineError {
                            line: n,
                            message: fe.to_string(),
                            field: Some(fe),
                        });
                    }
                    lines.push(Line::Unreadable(l.to_string()));
                }
            }
        }
        Parsed {
            report: Report {
                lines,
                crlf,
                final_newline,
            },
            errors,
        }
    }

    /// The text: every line re-assembled from its fields.
    pub fn write(&self) -> Result<String, String> {
        let nl = if self.crlf { "\r\n" } else { "\n" };
        let mut out = Vec::with_capacity(self.lines.len());
        for l in &self.lines {
            match l {
                Line::Header { keyword, text } if text.is_empty() => out.push(keyword.clone()),
                Line::Header { keyword, text } => out.push(format!("{keyword} {text}")),
                Line::Blank(s) | Line::Unreadable(s) => out.push(s.clone()),
                Line::Record(r) => {
                    out.push(r.line.format()?);
                    if let Some(s) = &r.second {
                        out.push(s.clone());
                    }
                }
            }
        }
        let mut text = out.join(nl);
        if self.final_newline && !out.is_empty() {
            text.push_str(nl);
        }
        Ok(text)
    }

    /// The text of every header line with this keyword, in order.
    pub fn header(&self, keyword: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Header { keyword: k, text } if k == keyword => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Every observation line.
    pub fn observations(&self) -> impl Iterator<Item = &ObsLine> {
        self.lines.iter().filter_map(|l| match l {
            Line::Record(r) => Some(&r.line),
            _ => None,
        })
    }
}

/// The observations of a report (an astronomer's validated detections, say) with the problems
/// of the lines that could not be read: a bad line costs only itself.
pub fn read_observations(text: &str) -> (Vec<Observation>, Vec<LineError>) {
    let (numbered, errors) = read_numbered_observations(text);
    (numbered.into_iter().map(|(_, o)| o).collect(), errors)
}

/// As [`read_observations`], each observation with its 1-based line number in `text`, so that
/// whoever uses it can say which line of the astronomer's report it came from.
pub fn read_numbered_observations(text: &str) -> (Vec<(usize, Observation)>, Vec<LineError>) {
    let parsed = Report::parse(text);
    let mut numbered = Vec::new();
    let mut line = 1;
    for l in &parsed.report.lines {
        if let Line::Record(r) = l {
            numbered.push((line, r.line.to_observation()));
            if r.second.is_some() {
                line += 1;
            }
        }
        line += 1;
    }
    (numbered, parsed.errors)
}

/// The header of a submission. `COD`, `CON`, `OBS`, `MEA`, `TEL` and `NET` are required by the
/// MPC; `BND` (the band the magnitudes are in), `COM` and `ACK`/`AC2` are optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Observatory code, `950`.
    pub cod: String,
    /// Contact: name and address lines, then `[e-mail]`.
    pub con: Vec<String>,
    /// Observers, `P. Short, O. Vaduvescu`.
    pub obs: String,
    /// Measurers.
    pub mea: String,
    /// Telescope, `2.5-m f/3.3 reflector + CCD`.
    pub tel: String,
    /// Reference catalogue of the astrometry, `Gaia DR3`.
    pub net: String,
    pub bnd: Option<String>,
    pub com: Vec<String>,
    /// Subject line of the MPC's acknowledgement.
    pub ack: Option<String>,
    /// Where to send the acknowledgement.
    pub ac2: Vec<String>,
}

impl Header {
    /// Missing required lines and lines too long for the format (80 columns).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (k, v) in [
            ("COD", &self.cod),
            ("OBS", &self.obs),
            ("MEA", &self.mea),
            ("TEL", &self.tel),
            ("NET", &self.net),
        ] {
            if v.trim().is_empty() {
                p.push(format!("{k} is required"));
            }
        }
        if self.con.iter().all(|c| c.trim().is_empty()) {
            p.push("CON is required".to_string());
        }
        if self.cod.len() != 3 || !self.cod.bytes().all(|b| b.is_ascii_alphanumeric()) {
            p.push(format!(
                "COD `{}`: expected a 3-character observatory code",
                self.cod
            ));
        }
        for line in self.lines() {
            if line.len() > 80 || !line.is_ascii() {
                p.push(format!(
                    "`{line}`: header lines are at most 80 ASCII characters"
                ));
            }
        }
        p
    }

    /// The header lines, in the MPC's order.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("COD {}", self.cod)];
        out.extend(self.con.iter().map(|c| format!("CON {c}")));
        out.push(format!("OBS {}", self.obs));
        out.push(format!("MEA {}", self.mea));
        out.push(format!("TEL {}", self.tel));
        out.push(format!("NET {}", self.net));
        out.extend(self.bnd.iter().map(|b| format!("BND {b}")));
        out.extend(self.com.iter().map(|c| format!("COM {c}")));
        out.extend(self.ack.iter().map(|a| format!("ACK {a}")));
        out.extend(self.ac2.iter().map(|a| format!("AC2 {a}")));
        out
    }
}

/// A submission: the header, then one line per observation in the order given. All problems
/// are collected, each naming the observation (index and designation).
pub fn write_submission(
    header: &Header,
    observations: &[Observation],
    precision: Precision,
) -> Result<String, Vec<String>> {
    let mut problems = header.problems();
    let mut lines = header.lines();
    for (i, o) in observations.iter().enumerate() {
        if o.code != header.cod {
            problems.push(format!(
                "observation {i} ({}): code {} differs from COD {} (one report per observatory)",
                o.designation, o.code, header.cod
            ));
        }
        match ObsLine::from_observation(o, precision).and_then(|l| l.format()) {
            Ok(l) => lines.push(l),
            Err(e) => problems.push(format!("observation {i} ({}): {e}", o.designation)),
        }
    }
    if problems.is_empty() {
        let mut text = lines.join("\n");
        text.push('\n');
        Ok(text)
    } else {
        Err(problems)
    }
}
