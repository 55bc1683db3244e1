//! One astrometric observation of a moving object, the unit every survey product agrees on: the
//! `link` task's tracklets are made of them, `report` writes them as MPC 80-column lines and ADES
//! rows, and an astronomer's report of validated detections is read back into them to label
//! tracklets (as CERES's training sets were labelled). Times are UTC as MJD; positions are
//! astrometric J2000 (ICRS) in degrees, as the MPC wants them.
//!
//! Also here: the observation-list JSON file that `report` reads, and [`match_labels`], which
//! pairs the observations of a validated report with the survey's own detections by time and
//! position.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One position of one object at one time, seen from one observatory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// How an astronomer writes the object: a number (`433`), a provisional designation
    /// (`2007 TE366`), a comet (`C/1995 O1`, `1P`), or the survey's own temporary designation
    /// for a new object (`NEAR001`: 1 to 7 letters and digits, not all digits).
    pub designation: String,
    /// Mid-exposure time, UTC, as a Modified Julian Date.
    pub mjd_utc: f64,
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Observed magnitude in `band`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mag: Option<f64>,
    /// Photometric band as the MPC writes it (`R`, `V`, `G`, `r`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<String>,
    /// MPC observatory code (`950` = La Palma).
    pub code: String,
    /// This observation is the discovery one (the `*` of column 13).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovery: bool,
}

/// The `format` of an observation-list file.
pub const FORMAT: &str = "nearby-observations/1";

/// An observation-list file: `{"format": "nearby-observations/1", "observations": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationList {
    pub format: String,
    pub observations: Vec<Observation>,
}

impl ObservationList {
    pub fn new(observations: Vec<Observation>) -> ObservationList {
        ObservationList {
            format: FORMAT.to_string(),
            observations,
        }
    }

    /// Reads and checks a list: the format tag, then every observation (all problems at once,
    /// each naming the observation's index and designation).
    pub fn load(path: &Path) -> Result<ObservationList, String> {
        let list =
            crate::json::load_tagged(path, "an observation list", FORMAT, |l: &Self| &l.format)?;
        let problems: Vec<String> = list
            .observations
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                o.problems()
                    .into_iter()
                    .map(move |p| format!("observation {i} ({}): {p}", o.designation))
            })
            .collect();
        if problems.is_empty() {
            Ok(list)
        } else {
            Err(format!("{}: {}", path.display(), problems.join("; ")))
        }
    }
}

impl Observation {
    /// What is wrong with the values, if anything (ranges, not formats: the writers check those).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.designation.trim().is_empty() {
            p.push("the designation is empty".to_string());
        }
        // 1800-01-01 .. 2200-01-01: the years the MPC formats can hold.
        if !(-21_504.0..124_593.0).contains(&self.mjd_utc) {
            p.push(format!(
                "mjd_utc {}: expected a date between 1800 and 2199",
                self.mjd_utc
            ));
        }
        if !(0.0..360.0).contains(&self.ra_deg) {
            p.push(format!("ra_deg {}: expected 0 <= RA < 360", self.ra_deg));
        }
        if !(-90.0..=90.0).contains(&self.dec_deg) {
            p.push(format!("dec_deg {}: expected -90..90", self.dec_deg));
        }
        if self.mag.is_some_and(|m| !(-10.0..40.0).contains(&m)) {
            p.push(format!(
                "mag {}: expected -10..40",
                self.mag.unwrap_or_default()
            ));
        }
        if self.band.as_deref().is_some_and(|b| b.trim().is_empty()) {
            p.push("the band is empty (leave it out instead)".to_string());
        }
        if self.code.len() != 3 || !self.code.chars().all(|c| c.is_ascii_alphanumeric()) {
            p.push(format!(
                "code `{}`: expected a 3-character MPC observatory code",
                self.code
            ));
        }
        p
    }
}

/// The MJD of 0h UTC on a proleptic Gregorian date; `None` for a date that does not exist.
pub fn mjd_of_date(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::simulate::time::days_from_civil(year, month, day);
    (crate::simulate::time::civil_from_days(days) == (year, month, day)).then_some(days + 40_587)
}

/// The calendar date `(year, month, day)` of an integral MJD.
pub fn date_of_mjd(mjd: i64) -> (i64, i64, i64) {
    crate::simulate::time::civil_from_days(mjd - 40_587)
}

/// Angular distance between two positions, arcseconds (haversine: exact at small angles).
pub fn separation_arcsec(ra1_deg: f64, dec1_deg: f64, ra2_deg: f64, dec2_deg: f64) -> f64 {
    let (d1, d2) = (dec1_deg.to_radians(), dec2_deg.to_radians());
    let dra = (ra2_deg - ra1_deg).to_radians();
    let h = ((d2 - d1) / 2.0).sin().powi(2) + d1.cos() * d2.cos() * (dra / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin().to_degrees() * 3600.0
}

/// How close a detection must be to a labelled observation to be the same measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchTolerance {
    /// Largest time difference, seconds (reports round times to 1e-5 day = 0.86 s).
    pub time_secs: f64,
    /// Largest separation, arcseconds.
    pub radius_arcsec: f64,
}

impl Default for MatchTolerance {
    /// 2 s and 2": a report's rounding (0.86 s, 0.15") plus re-measurement by a different
    /// pipeline, well below the motion of a slow main-belt asteroid between exposures (~0.3"/min
    /// over ~3 min).
    fn default() -> MatchTolerance {
        MatchTolerance {
            time_secs: 2.0,
            radius_arcsec: 2.0,
        }
    }
}

/// A labelled observation and the detection that is the same measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelMatch {
    /// Index into the labels.
    pub label: usize,
    /// Index into the detections.
    pub detection: usize,
    pub separation_arcsec: f64,
    /// Detection time minus label time, seconds.
    pub dt_secs: f64,
}

/// The result of [`match_labels`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labelling {
    /// One per matched label, in label order.
    pub matches: Vec<LabelMatch>,
    /// Labels no detection matched (the survey missed them, or the report is from elsewhere).
    pub unmatched_labels: Vec<usize>,
}

/// Pairs an astronomer's validated observations (`labels`) with the survey's detections: same
/// observatory code, times within `tol.time_secs`, positions within `tol.radius_arcsec`. Pairs
/// are one-to-one, the closest in the sky first, so two objects passing near each other keep
/// their own detections. Detections no label claims stay unlabelled: whether they are invalid
/// is the caller's rule, not this function's.
pub fn match_labels(
    labels: &[Observation],
    detections: &[Observation],
    tol: MatchTolerance,
) -> Labelling {
    let mut by_time: Vec<usize> = (0..detections.len()).collect();
    by_time.sort_by(|&a, &b| detections[a].mjd_utc.total_cmp(&detections[b].mjd_utc));
    let dt_days = tol.time_secs / 86_400.0;
    let mut candidates = Vec::new();
    for (li, l) in labels.iter().enumerate() {
        let start = by_time.partition_point(|&d| detections[d].mjd_utc < l.mjd_utc - dt_days);
        for &di in &by_time[start..] {
            let d = &detections[di];
            if d.mjd_utc > l.mjd_utc + dt_days {
                break;
            }
            if d.code != l.code {
                continue;
            }
            let sep = separation_arcsec(l.ra_deg, l.dec_deg, d.ra_deg, d.dec_deg);
            if sep <= tol.radius_arcsec {
                candidates.push(LabelMatch {
                    label: li,
                    detection: di,
                    separation_arcsec: sep,
                    dt_secs: (d.mjd_utc - l.mjd_utc) * 86_400.0,
                });
            }
        }
    }
    candidates.sort_by(|a, b| {
        a.separation_arcsec
            .total_cmp(&b.separation_arcsec)
            .then(a.label.cmp(&b.label))
            .then(a.detection.cmp(&b.detection))
    });
    let mut label_taken = vec![false; labels.len()];
    let mut detection_taken = vec![false; detections.len()];
    let mut matches = Vec::new();
    for c in candidates {
        if !label_taken[c.label] && !detection_taken[c.detection] {
            label_taken[c.label] = true;
            detection_taken[c.detection] = true;
            matches.push(c);
        }
    }
    matches.sort_by_key(|m| m.label);
    Labelling {
        matches,
        unmatched_labels: (0..labels.len()).filter(|&i| !label_taken[i]).collect(),
    }
}
