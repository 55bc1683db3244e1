//! ADES, the IAU's Astrometry Data Exchange Standard, in its PSV (pipe-separated values) form:
//!
//! ```text
//! # version=2017
//! # observatory
//! ! mpcCode 950
//! # submitter
//! ! name O. Vaduvescu
//! permID |provID     |trkSub |mode|stn |obsTime                 |ra         |dec        |...
//!        |2007 AE30  |       | CCD|950 |2014-07-10T04:20:01.248Z|314.988500 |-13.415361 |...
//! ```
//!
//! `#` lines open a context group (`version=2017`, `observatory`, `submitter`, `observers`,
//! `measurers`, `telescope`), `!` lines are its entries (`! mpcCode 950`), then one row of field
//! names and the observation rows. A new `#` group after rows starts another block. Columns may
//! be padded with spaces (aligned `|`) or not; [`Psv::parse`] records which, and how each
//! column was aligned (left, right, on the decimal point), so [`Psv::write`] gives back the same
//! bytes. [`Psv::validate`] checks what the MPC's submission schema requires;
//! [`write_submission`] writes observations in the padded form.

use crate::obs::{date_of_mjd, mjd_of_date, Observation};

/// A problem, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsvError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for PsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn psv_err(line: usize, message: impl Into<String>) -> PsvError {
    PsvError {
        line,
        message: message.into(),
    }
}

/// A context line: `# observatory` opens a group, `! mpcCode 950` is an entry of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    Group(String),
    Entry { key: String, value: String },
}

/// How a padded column places its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
    /// The decimal point (or the end of an integer) after this many characters.
    Decimal(usize),
}

/// How the columns of a block are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `a|b|c`.
    Unpadded,
    /// Each column padded to a width (field names left-aligned, values as `Align` says), the
    /// `|` aligned; trailing blanks at the end of a line are dropped.
    Padded(Vec<(usize, Align)>),
}

/// Context lines, a row of field names and the rows under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub context: Vec<Context>,
    pub fields: Vec<String>,
    /// Values without their padding, one per field.
    pub rows: Vec<Vec<String>>,
    pub layout: Layout,
    /// Line of the field-name row (for messages).
    pub header_line: usize,
}

/// A PSV document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Psv {
    pub blocks: Vec<Block>,
    pub final_newline: bool,
}

/// What a field's value is, for alignment and checks.
fn is_numeric_field(name: &str) -> bool {
    matches!(
        name,
        "ra" | "dec"
            | "rmsRA"
            | "rmsDec"
            | "rmsCorr"
            | "mag"
            | "rmsMag"
            | "logSNR"
            | "seeing"
            | "exp"
            | "rmsFit"
            | "nStars"
            | "raStar"
            | "decStar"
            | "deltaRA"
            | "deltaDec"
            | "dist"
            | "pa"
            | "rmsDist"
            | "rmsPA"
            | "rmsTime"
            | "pos1"
            | "pos2"
            | "pos3"
            | "posCov11"
            | "posCov12"
            | "posCov13"
            | "posCov22"
            | "posCov23"
            | "posCov33"
            | "aperture"
            | "fRatio"
            | "precTime"
            | "precRA"
            | "precDec"
    )
}

fn int_len(v: &str) -> usize {
    v.find('.').unwrap_or(v.len())
}

fn pad(value: &str, width: usize, align: Align) -> String {
    let lead = match align {
        Align::Left => 0,
        Align::Right => width.saturating_sub(value.len()),
        Align::Decimal(k) if value.is_empty() => k.min(width),
        Align::Decimal(k) => k.saturating_sub(int_len(value)),
    };
    let mut s = " ".repeat(lead);
    s.push_str(value);
    if s.len() < width {
        s.push_str(&" ".repeat(width - s.len()));
    }
    s
}

/// The alignment, of `Left`, `Right` and decimal, that reproduces every cell of a column, if
/// one does. `last`: the column ends the line, whose trailing blanks were dropped.
fn infer_align(cells: &[(&str, &str)], width: usize, last: bool) -> Option<Align> {
    let mut candidates = vec![Align::Left, Align::Right];
    if let Some((raw, value)) = cells.iter().find(|(_, v)| !v.is_empty()) {
        let lead = raw.len() - raw.trim_start().len();
        candidates.push(Align::Decimal(lead + int_len(value)));
    }
    candidates.into_iter().find(|&a| {
        cells.iter().all(|(raw, value)| {
            let padded = pad(value, width, a);
            if last {
                padded.trim_end() == raw.trim_end()
            } else {
                padded == *raw
            }
        })
    })
}

impl Psv {
    /// Reads a document. Structural problems (an entry before any group, a row with the wrong
    /// number of values, no field-name row) are errors with their line.
    pub fn parse(text: &str) -> Result<Psv, Vec<PsvError>> {
        let final_newline = text.ends_with('\n');
        let mut errors = Vec::new();
        let mut blocks: Vec<Block> = Vec::new();
        // Raw cells of the block being read, for the layout.
        let mut raw_rows: Vec<Vec<String>> = Vec::new();
        let mut context: Vec<Context> = Vec::new();
        let mut current: Option<Block> = None;
        let finish = |b: Block, raw_rows: &[Vec<String>]| -> Block {
            let layout = layout_of(&b, raw_rows);
            Block { layout, ..b }
        };
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(rest) = line.strip_prefix('#') {
                if let Some(b) = current.take() {
                    blocks.push(finish(b, &raw_rows));
                    raw_rows.clear();
                }
                context.push(Context::Group(rest.trim().to_string()));
            } else if let Some(rest) = line.strip_prefix('!') {
                if current.is_some() || context.is_empty() {
                    errors.push(psv_err(
                        n,
                        "a `!` entry must follow a `#` group line, before the field names",
                    ));
                    continue;
                }
                let rest = rest.trim();
                let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
                context.push(Context::Entry {
                    key: key.to_string(),
                    value: value.trim().to_string(),
                });
            } else if line.trim().is_empty() {
                errors.push(psv_err(n, "blank line: PSV has none"));
            } else if let Some(b) = current.as_mut() {
                let cells: Vec<&str> = line.split('|').collect();
                if cells.len() != b.fields.len() {
                    errors.push(psv_err(
                        n,
                        format!(
                            "{} values, but the field names (line {}) are {}",
                            cells.len(),
                            b.header_line,
                            b.fields.len()
                        ),
                    ));
                    continue;
                }
                b.rows
                    .push(cells.iter().map(|c| c.trim().to_string()).collect());
                raw_rows.push(cells.iter().map(|c| c.to_string()).collect());
            } else {
                let cells: Vec<&str> = line.split('|').collect();
                let fields: Vec<String> = cells.iter().map(|c| c.trim().to_string()).collect();
                if let Some(f) = fields
                    .iter()
                    .find(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    errors.push(psv_err(
                        n,
                        format!("field name `{f}`: expected letters and digits (`permID`, `ra`)"),
                    ));
                }
                raw_rows.push(cells.iter().map(|c| c.to_string()).collect());
                current = Some(Block {
                    context: std::mem::take(&mut context),
                    fields,
                    rows: Vec::new(),
                    layout: Layout::Unpadded,
                    header_line: n,
                });
            }
        }
        if let Some(b) = current.take() {
            blocks.push(finish(b, &raw_rows));
        }
        if !context.is_empty() {
            errors.push(psv_err(
                text.lines().count(),
                "context lines at the end with no field names and rows after them",
            ));
        }
        if blocks.is_empty() && errors.is_empty() {
            errors.push(psv_err(1, "no field-name row: not an ADES PSV document"));
        }
        if errors.is_empty() {
            Ok(Psv {
                blocks,
                final_newline,
            })
        } else {
            Err(errors)
        }
    }

    /// The text, each block laid out as it was read.
    pub fn write(&self) -> String {
        let mut out = Vec::new();
        for b in &self.blocks {
            for c in &b.context {
                out.push(match c {
                    Context::Group(g) => format!("# {g}"),
                    Context::Entry { key, value } if value.is_empty() => format!("! {key}"),
                    Context::Entry { key, value } => format!("! {key} {value}"),
                });
            }
            out.push(b.format_row(&b.fields, true));
            for r in &b.rows {
                out.push(b.format_row(r, false));
            }
        }
        let mut text = out.join("\n");
        if self.final_newline {
            text.push('\n');
        }
        text
    }

    /// The `# version=...` of the document.
    pub fn version(&self) -> Option<&str> {
        self.blocks.first()?.context.iter().find_map(|c| match c {
            Context::Group(g) => g.strip_prefix("version=").map(str::trim),
            _ => None,
        })
    }

    /// What the MPC's submission schema requires: a version line; in each block's context the
    /// observatory's `mpcCode`, the submitter's and measurers' `name`, the telescope's `design`,
    /// `aperture` and `detector`; in each row an identifier (`permID`, `provID`, `artSat` or
    /// `trkSub`), `mode`, `stn`, `obsTime` (ISO 8601 UTC ending in `Z`), `ra`, `dec` (degrees)
    /// and `astCat`, with `mag` and `band` together or not at all.
    pub fn validate(&self) -> Vec<PsvError> {
        let mut errors = Vec::new();
        if self.version().is_none() {
            errors.push(psv_err(1, "no `# version=2017` (or 2022) line"));
        }
        for b in &self.blocks {
            for (group, key) in [
                ("observatory", "mpcCode"),
                ("submitter", "name"),
                ("measurers", "name"),
                ("telescope", "design"),
                ("telescope", "aperture"),
                ("telescope", "detector"),
            ] {
                if b.context_value(group, key).is_none() {
                    errors.push(psv_err(
                        b.header_line,
                        format!("the context has no `# {group}` with `! {key} ...`"),
                    ));
                }
            }
            for (r, row) in b.rows.iter().enumerate() {
                let line = b.header_line + 1 + r;
                for m in row_problems(&b.fields, row) {
                    errors.push(psv_err(line, m));
                }
            }
        }
        errors
    }

    /// Every row as an [`Observation`], or why it cannot be one (a row's own line number).
    pub fn observations(&self) -> Vec<Result<Observation, PsvError>> {
        let mut out = Vec::new();
        for b in &self.blocks {
            for (r, row) in b.rows.iter().enumerate() {
                let line = b.header_line + 1 + r;
                let problems = row_problems(&b.fields, row);
                out.push(if problems.is_empty() {
                    Ok(b.observation(row))
                } else {
                    Err(psv_err(line, problems.join("; ")))
                });
            }
        }
        out
    }
}

fn layout_of(b: &Block, raw_rows: &[Vec<String>]) -> Layout {
    let unpadded = raw_rows
        .iter()
        .all(|r| r.iter().all(|c| c.trim() == c.as_str()));
    if unpadded {
        return Layout::Unpadded;
    }
    let n = b.fields.len();
    let header = &raw_rows[0];
    let columns = (0..n)
        .map(|j| {
            let last = j + 1 == n;
            let width = if last {
                raw_rows.iter().map(|r| r[j].len()).max().unwrap_or(0)
            } else {
                header[j].len()
            };
            let cells: Vec<(&str, &str)> = raw_rows[1..]
                .iter()
                .zip(&b.rows)
                .map(|(raw, vals)| (raw[j].as_str(), vals[j].as_str()))
                .collect();
            (
                width,
                infer_align(&cells, width, last).unwrap_or(Align::Left),
            )
        })
        .collect();
    Layout::Padded(columns)
}

impl Block {
    fn format_row(&self, cells: &[String], names: bool) -> String {
        match &self.layout {
            Layout::Unpadded => cells.join("|"),
            Layout::Padded(cols) => {
                let line = cells
                    .iter()
                    .zip(cols)
                    .map(|(c, &(w, a))| pad(c, w, if names { Align::Left } else { a }))
                    .collect::<Vec<_>>()
                    .join("|");
                line.trim_end().to_string()
            }
        }
    }

    /// The value of `! key` in the first `# group` of the context.
    pub fn context_value(&self, group: &str, key: &str) -> Option<&str> {
        let mut in_group = false;
        for c in &self.context {
            match c {
                Context::Group(g) => in_group = g == group,
                Context::Entry { key: k, value } if in_group && k == key && !value.is_empty() => {
                    return Some(value)
                }
                Context::Entry { .. } => {}
            }
        }
        None
    }

    fn get<'a>(&self, row: &'a [String], field: &str) -> Option<&'a str> {
        let j = self.fields.iter().position(|f| f == field)?;
        row.get(j).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A row already checked by [`row_problems`].
    fn observation(&self, row: &[String]) -> Observation {
        let get = |f| self.get(row, f);
        let num = |f| get(f).and_then(|v| v.parse::<f64>().ok());
        let designation = ["permID", "provID", "trkSub", "artSat"]
            .iter()
            .find_map(|f| get(f))
            .unwrap_or_default()
            .to_string();
        Observation {
            designation,
            mjd_utc: get("obsTime").and_then(parse_time).unwrap_or(f64::NAN),
            ra_deg: num("ra").unwrap_or(f64::NAN),
            dec_deg: num("dec").unwrap_or(f64::NAN),
            mag: num("mag"),
            band: get("band").map(str::to_string),
            code: get("stn").unwrap_or_default().to_string(),
            discovery: get("disc") == Some("*"),
        }
    }
}

/// What the submission schema finds wrong with one row.
fn row_problems(fields: &[String], row: &[String]) -> Vec<String> {
    let get = |f: &str| {
        fields
            .iter()
            .position(|x| x == f)
            .and_then(|j| row.get(j))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let mut p = Vec::new();
    if ["permID", "provID", "artSat", "trkSub"]
        .iter()
        .all(|f| get(f).is_none())
    {
        p.push("no identifier: one of permID, provID, artSat, trkSub is required".to_string());
    }
    for f in ["mode", "stn", "obsTime", "ra", "dec", "astCat"] {
        if get(f).is_none() {
            p.push(format!("`{f}` is required"));
        }
    }
    if let Some(t) = get("obsTime") {
        if parse_time(t).is_none() {
            p.push(format!(
                "obsTime `{t}`: expected ISO 8601 UTC such as 2014-07-10T04:20:01.248Z"
            ));
        }
    }
    for (f, lo, hi) in [("ra", 0.0, 360.0), ("dec", -90.0, 90.0)] {
        if let Some(v) = get(f) {
            match v.parse::<f64>() {
                Ok(x) if (lo..=hi).contains(&x) => {}
                _ => p.push(format!("{f} `{v}`: expected degrees {lo} to {hi}")),
            }
        }
    }
    match (get("mag"), get("band")) {
        (Some(m), Some(_)) if m.parse::<f64>().is_err() => {
            p.push(format!("mag `{m}`: expected a number"))
        }
        (Some(_), None) => p.push("mag without band".to_string()),
        (None, Some(_)) => p.push("band without mag".to_string()),
        _ => {}
    }
    p
}

/// `2014-07-10T04:20:01.248Z` as MJD (UTC); the `Z` is required.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let (&[y, mo, da], &[h, mi, se]) = (&d[..], &t[..]) else {
        return None;
    };
    let digits = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_digit());
    let (int_s, frac_s) = se.split_once('.').unwrap_or((se, ""));
    if !digits(y, 4)
        || !digits(mo, 2)
        || !digits(da, 2)
        || !digits(h, 2)
        || !digits(mi, 2)
        || !digits(int_s, 2)
        || !frac_s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mjd0 = mjd_of_date(y.parse().ok()?, mo.parse().ok()?, da.parse().ok()?)?;
    let (h, mi, sec): (f64, f64, f64) = (h.parse().ok()?, mi.parse().ok()?, se.parse().ok()?);
    if h >= 24.0 || mi >= 60.0 || sec >= 61.0 {
        return None;
    }
    Some(mjd0 as f64 + (h * 3600.0 + mi * 60.0 + sec) / 86_400.0)
}

/// An MJD (UTC) as `2014-07-10T04:20:01.248Z`, to the millisecond.
pub fn format_time(mjd: f64) -> String {
    let ms = (mjd * 86_400_000.0).round() as i64;
    let (day, ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = date_of_mjd(day);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The context of a submission block.
#[derive(Debug, Clone, PartialEq)]
pub struct AdesContext {
    /// `950`.
    pub mpc_code: String,
    pub submitter: String,
    pub observers: Vec<String>,
    pub measurers: Vec<String>,
    /// `Reflector`.
    pub telescope_design: String,
    pub telescope_aperture_m: f64,
    /// `CCD`.
    pub telescope_detector: String,
    /// `astCat`: the reference catalogue's ADES code (`Gaia3` for Gaia DR3).
    pub ast_cat: String,
}

impl AdesContext {
    fn lines(&self) -> Vec<Context> {
        let g = |s: &str| Context::Group(s.to_string());
        let e = |k: &str, v: &str| Context::Entry {
            key: k.to_string(),
            value: v.to_string(),
        };
        let mut c = vec![
            g("version=2017"),
            g("observatory"),
            e("mpcCode", &self.mpc_code),
            g("submitter"),
            e("name", &self.submitter),
        ];
        if !self.observers.is_empty() {
            c.push(g("observers"));
            c.extend(self.observers.iter().map(|o| e("name", o)));
        }
        c.push(g("measurers"));
        c.extend(self.measurers.iter().map(|m| e("name", m)));
        c.push(g("telescope"));
        c.push(e("design", &self.telescope_design));
        c.push(e("aperture", &format!("{}", self.telescope_aperture_m)));
        c.push(e("detector", &self.telescope_detector));
        c
    }
}

/// The fields a submission writes, in this order.
pub const SUBMISSION_FIELDS: [&str; 12] = [
    "permID", "provID", "trkSub", "mode", "stn", "obsTime", "ra", "dec", "astCat", "disc", "mag",
    "band",
];

/// Observations as a padded ADES PSV submission: obsTime to the millisecond, RA and Dec to 1e-6
/// degree (0.0036"), magnitudes to 0.01. Numbers are aligned on their decimal point, text on
/// the left. Every problem is collected (and the result validated as [`Psv::validate`] would).
pub fn write_submission(
    ctx: &AdesContext,
    observations: &[Observation],
) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for (i, o) in observations.iter().enumerate() {
        let mut bad: Vec<String> = o.problems();
        if o.code != ctx.mpc_code {
            bad.push(format!(
                "code {} differs from the observatory's mpcCode {}",
                o.code, ctx.mpc_code
            ));
        }
        let (mut perm, mut prov, mut trk) = (String::new(), String::new(), String::new());
        match crate::mpc80::Designation::parse(&o.designation) {
            Ok(Some(
                d @ (crate::mpc80::Designation::Number(_)
                | crate::mpc80::Designation::PeriodicComet { .. }),
            )) => perm = d.to_string(),
            Ok(Some(d)) => prov = d.to_string(),
            Ok(None) => trk = o.designation.trim().to_string(),
            Err(e) => bad.push(e.to_string()),
        }
        if !bad.is_empty() {
            problems.push(format!(
                "observation {i} ({}): {}",
                o.designation,
                bad.join("; ")
            ));
            continue;
        }
        let (mag, band) = match (o.mag, &o.band) {
            (Some(m), Some(b)) => (format!("{m:.2}"), b.clone()),
            (Some(m), None) => (format!("{m:.2}"), String::new()),
            (None, _) => (String::new(), String::new()),
        };
        rows.push(vec![
            perm,
            prov,
            trk,
            "CCD".to_string(),
            o.code.clone(),
            format_time(o.mjd_utc),
            format!("{:.6}", o.ra_deg),
            format!("{:.6}", o.dec_deg),
            ctx.ast_cat.clone(),
            if o.discovery { "*" } else { "" }.to_string(),
            mag,
            band,
        ]);
    }
    let fields: Vec<String> = SUBMISSION_FIELDS.iter().map(|f| f.to_string()).collect();
    let layout = Layout::Padded(
        fields
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let values = rows.iter().map(|r: &Vec<String>| r[j].as_str());
                if is_numeric_field(f) {
                    let int = values.clone().map(int_len).max().unwrap_or(0);
                    let frac = values.map(|v| v.len() - int_len(v)).max().unwrap_or(0);
                    (f.len().max(int + frac), Align::Decimal(int))
                } else {
                    (
                        f.len().max(values.map(str::len).max().unwrap_or(0)),
                        Align::Left,
                    )
                }
            })
            .collect(),
    );
    let psv = Psv {
        blocks: vec![Block {
            context: ctx.lines(),
            fields,
            rows,
            layout,
            header_line: 0,
        }],
        final_newline: true,
    };
    // Check the result as a reader would (context entries, required fields).
    let text = psv.write();
    match Psv::parse(&text) {
        Ok(back) => problems.extend(back.validate().iter().map(ToString::to_string)),
        Err(e) => problems.extend(e.iter().map(ToString::to_string)),
    }
    if problems.is_empty() {
        Ok(text)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests;
