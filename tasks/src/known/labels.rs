//! Labels from astronomers: MPC 80-column reports of the detections an astronomer validated (as
//! CERES's training sets were labelled) mark the tracklets they belong to as `valid`. An
//! observation in a report is the same measurement as a tracklet's detection when it is from the
//! same observatory, within a couple of seconds and arcseconds ([`crate::obs::match_labels`]);
//! one such detection makes the tracklet valid. Tracklets no report claims stay unlabelled:
//! nobody looked at them, which is not the same as rejecting them.

use std::io::Write;
use std::path::Path;

use nearby_engine::task::TaskError;
use serde::{Deserialize, Serialize};

use crate::link::task::TrackletOut;
use crate::obs::{match_labels, MatchTolerance, Observation};

/// How many unreadable lines of one report are written to the log (the count is always given).
const MAX_LOGGED_ERRORS: usize = 20;

/// One validated observation, and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The report's path as given.
    pub file: String,
    /// 1-based line number in the report.
    pub line: usize,
    pub observation: Observation,
}

/// The astronomer's observation that validated a tracklet's detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub file: String,
    pub line: usize,
    /// The object as the astronomer named it (`12471`, `2004 SH36`, `NEAR001`).
    pub designation: String,
    /// Which of the tracklet's detections (index into its `detections`).
    pub detection: usize,
    pub separation_arcsec: f64,
    /// Detection time minus the report's time, seconds.
    pub dt_secs: f64,
}

/// Reads one report. Unreadable lines are skipped, each logged with the file and line; a file
/// that cannot be read at all is an error.
pub fn read_labels(path: &Path, log: &mut dyn Write) -> Result<Vec<Label>, TaskError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TaskError::BadInput(format!("labels {}: cannot read: {e}", path.display())))?;
    let file = path.display().to_string();
    let (numbered, errors) = crate::mpc80::read_numbered_observations(&text);
    for e in errors.iter().take(MAX_LOGGED_ERRORS) {
        writeln!(log, "known: labels {file}: skipped {e}")?;
    }
    writeln!(
        log,
        "known: labels {file}: {} observations, {} unreadable lines skipped",
        numbered.len(),
        errors.len()
    )?;
    Ok(numbered
        .into_iter()
        .map(|(line, observation)| Label {
            file: file.clone(),
            line,
            observation,
        })
        .collect())
}

/// Per tracklet, the labels that match its detections (empty: unlabelled), and how many labels
/// matched no detection (the survey missed or did not link them, or they are from another
/// night). `code` is the observatory of the tracklets' detections.
pub fn validate(
    tracklets: &[TrackletOut],
    code: &str,
    labels: &[Label],
    tol: MatchTolerance,
) -> (Vec<Vec<Validation>>, usize) {
    let mut detections = Vec::new();
    let mut owner = Vec::new();
    for (ti, t) in tracklets.iter().enumerate() {
        for (di, d) in t.detections.iter().enumerate() {
            detections.push(Observation {
                designation: t.id.clone(),
                mjd_utc: d.mjd,
                ra_deg: d.ra_deg,
                dec_deg: d.dec_deg,
                mag: None,
                band: None,
                code: code.to_owned(),
                discovery: false,
            });
            owner.push((ti, di));
        }
    }
    let observations: Vec<Observation> = labels.iter().map(|l| l.observation.clone()).collect();
    let found = match_labels(&observations, &detections, tol);
    let mut out = vec![Vec::new(); tracklets.len()];
    for m in &found.matches {
        let (ti, di) = owner[m.detection];
        let l = &labels[m.label];
        out[ti].push(Validation {
            file: l.file.clone(),
            line: l.line,
            designation: l.observation.designation.clone(),
            detection: di,
            separation_arcsec: m.separation_arcsec,
            dt_secs: m.dt_secs,
        });
    }
    (out, found.unmatched_labels.len())
}
