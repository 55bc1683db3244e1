//! The `report` task kind: observations (the `nearby-observations/1` JSON of [`crate::obs`])
//! into the two files the MPC accepts, an 80-column report with its header and an ADES PSV
//! submission. Objects are grouped (by designation, then time), both files are parsed back
//! before they are written, and every bad observation is named in one error.

use std::collections::BTreeSet;
use std::io::Write;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde_json::{Map, Value as J};

use crate::ades::{self, AdesContext, Psv};
use crate::mpc80::{self, Designation, Header, Precision, Report as Mpc80Report};
use crate::obs::{Observation, ObservationList};

pub struct Report;

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "cod",
        ty: PType::Str,
        required: false,
        default: Some("\"950\""),
        doc: "COD: MPC observatory code (950 = La Palma); also ADES mpcCode.",
    },
    ParamSpec {
        name: "con",
        ty: PType::StrList,
        required: true,
        default: None,
        doc: "CON: contact lines (name and address, then `[e-mail]`).",
    },
    ParamSpec {
        name: "obs",
        ty: PType::Str,
        required: true,
        default: None,
        doc: "OBS: observers, `P. Short, O. Vaduvescu`.",
    },
    ParamSpec {
        name: "mea",
        ty: PType::Str,
        required: true,
        default: None,
        doc: "MEA: measurers (also ADES measurers).",
    },
    ParamSpec {
        name: "tel",
        ty: PType::Str,
        required: false,
        default: Some("\"2.5-m f/3.3 reflector + CCD\""),
        doc: "TEL: the telescope (default the INT with the WFC, as EURONEAR wrote it).",
    },
    ParamSpec {
        name: "net",
        ty: PType::Str,
        required: false,
        default: Some("\"Gaia DR3\""),
        doc: "NET: reference catalogue of the astrometry.",
    },
    ParamSpec {
        name: "bnd",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "BND: the band of the magnitudes, if one for all.",
    },
    ParamSpec {
        name: "com",
        ty: PType::StrList,
        required: false,
        default: Some("[]"),
        doc: "COM: comment lines.",
    },
    ParamSpec {
        name: "ack",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "ACK: subject of the MPC's acknowledgement.",
    },
    ParamSpec {
        name: "ac2",
        ty: PType::StrList,
        required: false,
        default: Some("[]"),
        doc: "AC2: addresses for the acknowledgement.",
    },
    ParamSpec {
        name: "time_decimals",
        ty: PType::Int,
        required: false,
        default: Some("5"),
        doc: "80-column: decimals of the day (5 = 0.86 s, 6 = 0.086 s).",
    },
    ParamSpec {
        name: "ra_decimals",
        ty: PType::Int,
        required: false,
        default: Some("2"),
        doc: "80-column: decimals of the RA seconds (2 or 3).",
    },
    ParamSpec {
        name: "dec_decimals",
        ty: PType::Int,
        required: false,
        default: Some("1"),
        doc: "80-column: decimals of the Dec arcseconds (1 or 2).",
    },
    ParamSpec {
        name: "mag_decimals",
        ty: PType::Int,
        required: false,
        default: Some("1"),
        doc: "80-column: decimals of the magnitude (1 or 2).",
    },
    ParamSpec {
        name: "submitter",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "ADES submitter name (default the first CON line up to its first comma).",
    },
    ParamSpec {
        name: "telescope_design",
        ty: PType::Str,
        required: false,
        default: Some("\"Reflector\""),
        doc: "ADES telescope design.",
    },
    ParamSpec {
        name: "telescope_aperture_m",
        ty: PType::Float,
        required: false,
        default: Some("2.54"),
        doc: "ADES telescope aperture, metres (INT: 2.54).",
    },
    ParamSpec {
        name: "telescope_detector",
        ty: PType::Str,
        required: false,
        default: Some("\"CCD\""),
        doc: "ADES detector.",
    },
    ParamSpec {
        name: "ast_cat",
        ty: PType::Str,
        required: false,
        default: Some("\"Gaia3\""),
        doc: "ADES astCat code of the reference catalogue (Gaia3 = Gaia DR3).",
    },
];

const INPUTS: &[PortSpec] = &[PortSpec {
    name: "observations",
    file: "",
    required: true,
    doc: "One or more `nearby-observations/1` JSON files; all their observations are reported.",
}];

const OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "mpc80",
        file: "report.txt",
        required: true,
        doc: "The MPC 80-column report: header lines, then one line per observation.",
    },
    PortSpec {
        name: "ades",
        file: "report.psv",
        required: true,
        doc: "The same observations as an ADES PSV submission (padded).",
    },
];

/// Everything the params say, checked.
struct Config {
    header: Header,
    precision: Precision,
    ades: AdesContext,
}

fn text(p: &Map<String, J>, name: &str) -> Option<String> {
    match p.get(name)? {
        J::String(s) => Some(s.clone()),
        J::Number(n) => Some(n.to_string()),
        J::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list(p: &Map<String, J>, name: &str) -> Vec<String> {
    p.get(name)
        .and_then(J::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_template(p: &Map<String, J>, name: &str) -> bool {
    p.get(name)
        .and_then(J::as_str)
        .is_some_and(|s| s.contains("${"))
}

fn config(p: &Map<String, J>) -> Result<Config, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let mut decimals = |name: &'static str, default: u8| -> u8 {
        if is_template(p, name) {
            return default;
        }
        match p.get(name) {
            None => default,
            Some(v) => match v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()) {
                Some(d) if (0..=9).contains(&d) => d as u8,
                _ => {
                    problems.push((name, format!("{v}: expected a count of decimals")));
                    default
                }
            },
        }
    };
    let precision = Precision {
        time_decimals: decimals("time_decimals", 5),
        ra_decimals: decimals("ra_decimals", 2),
        dec_decimals: decimals("dec_decimals", 1),
        mag_decimals: decimals("mag_decimals", 1),
    };
    for msg in precision.problems() {
        let name = match msg.split(':').next() {
            Some("time") => "time_decimals",
            Some("RA") => "ra_decimals",
            Some("Dec") => "dec_decimals",
            _ => "mag_decimals",
        };
        problems.push((name, msg));
    }
    let header = Header {
        cod: text(p, "cod").unwrap_or_else(|| "950".to_string()),
        con: list(p, "con"),
        obs: text(p, "obs").unwrap_or_default(),
        mea: text(p, "mea").unwrap_or_default(),
        tel: text(p, "tel").unwrap_or_default(),
        net: text(p, "net").unwrap_or_default(),
        bnd: text(p, "bnd"),
        com: list(p, "com"),
        ack: text(p, "ack"),
        ac2: list(p, "ac2"),
    };
    let templated = ["cod", "obs", "mea", "tel", "net"]
        .iter()
        .any(|n| is_template(p, n));
    if !templated {
        for msg in header.problems() {
            let name = match msg.trim_start_matches('`').get(..3).unwrap_or("") {
                "COD" => "cod",
                "CON" => "con",
                "OBS" => "obs",
                "MEA" => "mea",
                "TEL" => "tel",
                "NET" => "net",
                _ => "con",
            };
            // A required param left out is the engine's to report ("needs param").
            if msg.ends_with("is required") && !p.contains_key(name) {
                continue;
            }
            problems.push((name, msg));
        }
    }
    let submitter = text(p, "submitter").unwrap_or_else(|| {
        header
            .con
            .first()
            .map(|c| c.split(',').next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    });
    let aperture = match p.get("telescope_aperture_m") {
        None => 2.54,
        Some(_) if is_template(p, "telescope_aperture_m") => 2.54,
        Some(v) => match v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()) {
            Some(a) if a > 0.0 && a.is_finite() => a,
            _ => {
                problems.push(("telescope_aperture_m", format!("{v}: expected metres > 0")));
                2.54
            }
        },
    };
    let names = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    };
    let ades = AdesContext {
        mpc_code: header.cod.clone(),
        submitter,
        observers: names(&header.obs),
        measurers: names(&header.mea),
        telescope_design: text(p, "telescope_design").unwrap_or_default(),
        telescope_aperture_m: aperture,
        telescope_detector: text(p, "telescope_detector").unwrap_or_default(),
        ast_cat: text(p, "ast_cat").unwrap_or_default(),
    };
    if problems.is_empty() {
        Ok(Config {
            header,
            precision,
            ades,
        })
    } else {
        Err(problems)
    }
}

/// Objects grouped, each in time order; the sort is stable, so equal times keep their order.
fn grouped(mut obs: Vec<Observation>) -> Vec<Observation> {
    obs.sort_by(|a, b| {
        a.designation
            .cmp(&b.designation)
            .then(a.mjd_utc.total_cmp(&b.mjd_utc))
    });
    obs
}

/// The reports as text, each checked by parsing it back.
pub fn write_reports(
    header: &Header,
    precision: Precision,
    ades_ctx: &AdesContext,
    observations: &[Observation],
) -> Result<(String, String), Vec<String>> {
    let mpc = mpc80::write_submission(header, observations, precision)?;
    let psv = ades::write_submission(ades_ctx, observations)?;
    let back = Mpc80Report::parse(&mpc);
    let mut problems: Vec<String> = back
        .errors
        .iter()
        .map(|e| format!("the 80-column report does not read back: {e}"))
        .collect();
    if back.report.observations().count() != observations.len() {
        problems.push("the 80-column report lost observations".to_string());
    }
    match Psv::parse(&psv) {
        Ok(p) => problems.extend(
            p.validate()
                .iter()
                .map(|e| format!("the ADES report does not validate: {e}")),
        ),
        Err(e) => problems.extend(
            e.iter()
                .map(|e| format!("the ADES report does not read back: {e}")),
        ),
    }
    if problems.is_empty() {
        Ok((mpc, psv))
    } else {
        Err(problems)
    }
}

impl TaskKind for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Write observations as an MPC 80-column report and an ADES PSV submission."
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Fixed(INPUTS)
    }
    fn outputs(&self) -> Ports {
        Ports::Fixed(OUTPUTS)
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        config(params).err().unwrap_or_default()
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let cfg = config(inv.params).map_err(|p| TaskError::params(&p))?;
        let files = inv
            .inputs
            .get("observations")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| TaskError::Failed("input `observations` was not given".into()))?;
        let mut all = Vec::new();
        let mut bad = Vec::new();
        for f in files {
            match ObservationList::load(f) {
                Ok(list) => all.extend(list.observations),
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(TaskError::BadInput(bad.join("\n")));
        }
        let obs = grouped(all);
        let (mpc, psv) = write_reports(&cfg.header, cfg.precision, &cfg.ades, &obs)
            .map_err(|p| TaskError::BadInput(p.join("\n")))?;
        std::fs::write(inv.output("mpc80")?, mpc)?;
        std::fs::write(inv.output("ades")?, psv)?;
        let objects: BTreeSet<&str> = obs.iter().map(|o| o.designation.as_str()).collect();
        let kinds = objects.iter().fold([0usize; 3], |mut k, d| {
            let i = match Designation::parse(d) {
                Ok(Some(Designation::Number(_) | Designation::PeriodicComet { .. })) => 0,
                Ok(Some(_)) => 1,
                _ => 2,
            };
            k[i] += 1;
            k
        });
        writeln!(
            log,
            "report: {} observations of {} objects ({} numbered, {} provisional, {} new with temporary designations) from {}",
            obs.len(),
            objects.len(),
            kinds[0],
            kinds[1],
            kinds[2],
            cfg.header.cod
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
