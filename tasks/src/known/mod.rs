//! The `known` task kind: which tracklets are known asteroids or comets. Two sources of truth:
//! orbital elements propagated offline ([`crate::ephem`], MPCORB or JPL SBDB with a JPL SPK), and
//! IMCCE's SkyBoT cone search ([`crate::skybot`]) when the network is there. A tracklet is known
//! when a prediction lies within `radius_arcsec` (EURONEAR: 5") of its middle detection at that
//! detection's time; the closest prediction wins.
//!
//! Offline, every object is first placed by two-body motion at the night's mean time
//! ([`ephem::prefilter`]: fast, over all cores, good to arcminutes within a year of the epoch);
//! only objects within `prefilter_arcmin` of a tracklet are then predicted with the n-body
//! propagation at each tracklet's time.
//!
//! Outputs: `known.json` (per tracklet: the match, its separation, predicted V and source) and
//! `observations.json` (link's observations, known objects under their designations, new ones
//! under their temporary ones), for the report step.
//!
//! With the optional input `labels` (MPC 80-column reports of detections an astronomer
//! validated), tracklets with a validated detection are marked `valid` ([`labels`]).

use std::io::Write;
use std::path::Path;

use nearby_engine::task::{Invocation, PType, ParamSpec, PortSpec, Ports, TaskError, TaskKind};
use serde::{Deserialize, Serialize};

use crate::ephem::{self, elements, observer, spk::Spk, time::Instant, Propagation};
use crate::link::task::{TrackletOut, TrackletsFile};
use crate::obs::ObservationList;

#[cfg(test)]
mod label_tests;
pub mod labels;
#[cfg(test)]
mod tests;

/// A prediction near a tracklet: the object, its separation (arcsec) and predicted V.
pub type Hit = (String, f64, Option<f64>);

/// One tracklet's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub tracklet: String,
    /// The object's designation (`(433) Eros`, `2007 TE366`), or None when nothing is near.
    pub object: Option<String>,
    pub separation_arcsec: Option<f64>,
    pub predicted_v: Option<f64>,
    /// `ephemeris` or `skybot`.
    pub source: Option<String>,
    /// `valid` when an astronomer's report (input `labels`) has one of its detections; absent
    /// when none does (unlabelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The report lines that validated it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validated_by: Vec<labels::Validation>,
}

/// The known.json file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownFile {
    /// `nearby-known/1`.
    pub format: String,
    pub matches: Vec<Match>,
}

/// Angular separation, arcsec.
fn separation_arcsec(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let (r1, d1, r2, d2) = (
        ra1.to_radians(),
        dec1.to_radians(),
        ra2.to_radians(),
        dec2.to_radians(),
    );
    let s = ((d2 - d1) / 2.0).sin().powi(2) + d1.cos() * d2.cos() * ((r2 - r1) / 2.0).sin().powi(2);
    2.0 * s.sqrt().min(1.0).asin().to_degrees() * 3600.0
}

/// The detection a tracklet is matched at: its middle one.
fn anchor(t: &TrackletOut) -> Option<(f64, f64, f64)> {
    let d = t.detections.get(t.detections.len() / 2)?;
    Some((d.mjd, d.ra_deg, d.dec_deg))
}

/// Matches tracklets against orbital elements, offline.
pub fn match_ephemeris(
    tracklets: &[TrackletOut],
    objects: &[elements::Elements],
    spk: &Spk,
    site: &observer::Observatory,
    radius_arcsec: f64,
    prefilter_arcmin: f64,
    log: &mut dyn Write,
) -> Result<Vec<Option<Hit>>, TaskError> {
    let anchors: Vec<Option<(f64, f64, f64)>> = tracklets.iter().map(anchor).collect();
    let times: Vec<f64> = anchors.iter().flatten().map(|a| a.0).collect();
    let mut best: Vec<Option<Hit>> = vec![None; tracklets.len()];
    if times.is_empty() || objects.is_empty() {
        return Ok(best);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let t_mean = Instant::from_utc_mjd(mean).map_err(|e| TaskError::BadInput(e.to_string()))?;
    // Two-body first, for every object at once: cheap, and good to arcminutes.
    let points: Vec<(usize, ephem::vec3::Vec3)> = anchors
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|(_, ra, dec)| (i, ephem::prefilter::unit(ra, dec))))
        .collect();
    let units: Vec<ephem::vec3::Vec3> = points.iter().map(|p| p.1).collect();
    let near_objects =
        ephem::prefilter::near(spk, objects, site, &t_mean, &units, prefilter_arcmin / 60.0)
            .map_err(|e| TaskError::BadInput(e.to_string()))?;
    let mut candidates = 0;
    for (k, hits) in near_objects {
        let o = &objects[k];
        let near: Vec<usize> = hits.iter().map(|&h| points[h].0).collect();
        candidates += 1;
        let ts: Vec<Instant> = near
            .iter()
            .filter_map(|&i| anchors[i].and_then(|a| Instant::from_utc_mjd(a.0).ok()))
            .collect();
        let precise = match ephem::predict(spk, o, site, &ts, Propagation::NBody) {
            Ok(p) => p,
            Err(e) => {
                writeln!(log, "known: {}: {e}; skipped", o.designation)?;
                continue;
            }
        };
        for (&i, p) in near.iter().zip(&precise) {
            let Some((_, ra, dec)) = anchors[i] else {
                continue;
            };
            let sep = separation_arcsec(p.ra_deg, p.dec_deg, ra, dec);
            if sep <= radius_arcsec && best[i].as_ref().is_none_or(|b| sep < b.1) {
                best[i] = Some((o.designation.clone(), sep, p.v_mag));
            }
        }
    }
    writeln!(
        log,
        "known: {} objects, {candidates} within {prefilter_arcmin}' of a tracklet (two-body), {} tracklets matched within {radius_arcsec}\"",
        objects.len(),
        best.iter().flatten().count()
    )?;
    Ok(best)
}

/// Matches tracklets against one SkyBoT cone search per field (at the field's mean time; each
/// object moved to the tracklet's time by its rates).
pub fn match_skybot(
    tracklets: &[TrackletOut],
    client: &crate::skybot::Client,
    code: &str,
    radius_arcsec: f64,
    log: &mut dyn Write,
) -> Result<Vec<Option<Hit>>, TaskError> {
    let mut best: Vec<Option<Hit>> = vec![None; tracklets.len()];
    let mut fields: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, t) in tracklets.iter().enumerate() {
        fields.entry(t.field.as_str()).or_default().push(i);
    }
    for (field, idx) in fields {
        let anchors: Vec<(usize, (f64, f64, f64))> = idx
            .iter()
            .filter_map(|&i| Some((i, anchor(&tracklets[i])?)))
            .collect();
        if anchors.is_empty() {
            continue;
        }
        let n = anchors.len() as f64;
        let mjd = anchors.iter().map(|a| a.1 .0).sum::<f64>() / n;
        let dec = anchors.iter().map(|a| a.1 .2).sum::<f64>() / n;
        let ra = anchors.iter().map(|a| a.1 .1).sum::<f64>() / n;
        let radius = anchors
            .iter()
            .map(|a| separation_arcsec(ra, dec, a.1 .1, a.1 .2))
            .fold(0.0_f64, f64::max)
            / 3600.0
            + 5.0 / 60.0;
        let q = crate::skybot::ConeQuery::new(mjd, ra, dec, radius, code);
        let answer = client
            .cone_search(&q)
            .map_err(|e| TaskError::Failed(format!("SkyBoT, field {field}: {e}")))?;
        writeln!(
            log,
            "known: SkyBoT field {field}: {} objects within {:.1}'{}",
            answer.objects.len(),
            radius * 60.0,
            if answer.from_cache {
                " (cached answer)"
            } else {
                ""
            }
        )?;
        for (i, (t, ra_t, dec_t)) in anchors {
            for o in &answer.objects {
                let hours = (t - mjd) * 24.0;
                let dra = o.dra_cosdec_arcsec_per_h.unwrap_or(0.0) * hours / 3600.0;
                let ddec = o.ddec_arcsec_per_h.unwrap_or(0.0) * hours / 3600.0;
                let dec_o = o.dec_deg + ddec;
                let ra_o = o.ra_deg + dra / dec_o.to_radians().cos().max(1e-6);
                let sep = separation_arcsec(ra_o, dec_o, ra_t, dec_t);
                if sep <= radius_arcsec && best[i].as_ref().is_none_or(|b| sep < b.1) {
                    let name = match o.number {
                        Some(n) => format!("({n}) {}", o.name),
                        None => o.name.clone(),
                    };
                    best[i] = Some((name, sep, o.mag_v));
                }
            }
        }
    }
    Ok(best)
}

/// How the report names a known object: its number, else its provisional designation.
fn report_designation(object: &str) -> String {
    let o = object.trim();
    if let Some(rest) = o.strip_prefix('(') {
        if let Some((num, _)) = rest.split_once(')') {
            return num.trim().to_owned();
        }
    }
    o.to_owned()
}

pub struct Known;

const PARAMS: &[ParamSpec] = &[
    ParamSpec { name: "code", ty: PType::Str, required: false, default: Some("950"), doc: "MPC observatory code of the site (950: INT, La Palma)." },
    ParamSpec { name: "radius_arcsec", ty: PType::Float, required: false, default: Some("5.0"), doc: "A prediction this close to a tracklet's middle detection matches it (EURONEAR: 5\")." },
    ParamSpec { name: "prefilter_arcmin", ty: PType::Float, required: false, default: Some("30.0"), doc: "Offline: objects whose two-body position is this close to a tracklet get the n-body prediction." },
    ParamSpec { name: "skybot", ty: PType::Bool, required: false, default: Some("false"), doc: "Also ask IMCCE's SkyBoT (one cone search per field)." },
    ParamSpec { name: "skybot_url", ty: PType::Str, required: false, default: None, doc: "SkyBoT's cone-search address (default: IMCCE's)." },
    ParamSpec { name: "cache_dir", ty: PType::Str, required: false, default: Some(""), doc: "Where SkyBoT answers are cached (empty: not cached)." },
    ParamSpec { name: "timeout_secs", ty: PType::Float, required: false, default: Some("60"), doc: "SkyBoT: limit per attempt." },
    ParamSpec { name: "label_radius_arcsec", ty: PType::Float, required: false, default: Some("2.0"), doc: "Labels: a reported observation this close to a detection is the same measurement." },
    ParamSpec { name: "label_time_secs", ty: PType::Float, required: false, default: Some("2.0"), doc: "Labels: ... and this close in time, seconds (reports round times to 0.86 s)." },
];

const INPUTS: &[PortSpec] = &[
    PortSpec {
        name: "tracklets",
        file: "",
        required: true,
        doc: "The link task's tracklets.json.",
    },
    PortSpec {
        name: "observations",
        file: "",
        required: true,
        doc: "The link task's observations.json (rewritten with the known objects' designations).",
    },
    PortSpec {
        name: "elements",
        file: "",
        required: false,
        doc: "Orbital elements: MPCORB (one-line) or JPL SBDB JSON.",
    },
    PortSpec {
        name: "spk",
        file: "",
        required: false,
        doc: "A JPL planetary ephemeris (DE421, DE440) for the offline predictions.",
    },
    PortSpec {
        name: "labels",
        file: "",
        required: false,
        doc: "MPC 80-column reports of detections an astronomer validated: their tracklets are marked valid.",
    },
];

const OUTPUTS: &[PortSpec] = &[
    PortSpec { name: "known", file: "known.json", required: true, doc: "nearby-known/1: per tracklet, the matched object (or none), separation, predicted V, source." },
    PortSpec { name: "observations", file: "observations.json", required: true, doc: "nearby-observations/1: known objects under their designations, new ones under their temporary ones." },
];

impl TaskKind for Known {
    fn name(&self) -> &'static str {
        "known"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Match tracklets to known objects: offline ephemeris (MPCORB/SBDB + JPL SPK, n-body) and/or SkyBoT."
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
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let file = TrackletsFile::load(inv.input("tracklets")?).map_err(TaskError::BadInput)?;
        let tracklets = &file.tracklets;
        let code = inv.str("code").unwrap_or("950");
        let radius = inv.float("radius_arcsec").unwrap_or(5.0);
        let mut found: Vec<Option<(Hit, &str)>> = vec![None; tracklets.len()];
        let mut merge = |hits: Vec<Option<Hit>>, source: &'static str| {
            for (slot, hit) in found.iter_mut().zip(hits) {
                if let Some(hit) = hit {
                    if slot.as_ref().is_none_or(|s| hit.1 < s.0 .1) {
                        *slot = Some((hit, source));
                    }
                }
            }
        };
        let given = |name: &str| inv.inputs.get(name).and_then(|v| v.first());
        match (given("elements"), given("spk")) {
            (Some(el), Some(spk_path)) => {
                let text = std::fs::read_to_string(el).map_err(|e| {
                    TaskError::BadInput(format!("{}: cannot read: {e}", el.display()))
                })?;
                let parsed = elements::parse(&el.display().to_string(), &text);
                for e in parsed.errors.iter().take(20) {
                    writeln!(log, "known: skipped {e}")?;
                }
                let spk = Spk::open(spk_path).map_err(|e| TaskError::BadInput(e.to_string()))?;
                let sites = observer::parse_obscodes("built-in codes", observer::BUILTIN_OBSCODES)
                    .map_err(|e| TaskError::Failed(e.to_string()))?;
                let site = sites.get(code).ok_or_else(|| {
                    TaskError::BadInput(format!(
                        "observatory code `{code}` is not among the built-in codes"
                    ))
                })?;
                let prefilter = inv.float("prefilter_arcmin").unwrap_or(30.0);
                merge(
                    match_ephemeris(
                        tracklets,
                        &parsed.elements,
                        &spk,
                        site,
                        radius,
                        prefilter,
                        log,
                    )?,
                    "ephemeris",
                );
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(TaskError::BadInput(
                    "inputs `elements` and `spk` go together: the offline ephemeris needs both"
                        .into(),
                ))
            }
            (None, None) => {}
        }
        if given("elements").is_none() && !inv.bool("skybot").unwrap_or(false) {
            writeln!(
                log,
                "known: no orbital elements and no SkyBoT: every tracklet is reported as new"
            )?;
        }
        if inv.bool("skybot").unwrap_or(false) {
            let mut client = crate::skybot::Client {
                timeout: std::time::Duration::from_secs_f64(
                    inv.float("timeout_secs").unwrap_or(60.0).max(0.1),
                ),
                ..Default::default()
            };
            if let Some(u) = inv.str("skybot_url").filter(|u| !u.is_empty()) {
                client.endpoint = u.to_owned();
            }
            if let Some(d) = inv.str("cache_dir").filter(|d| !d.is_empty()) {
                client.cache_dir = Some(Path::new(d).to_path_buf());
            }
            merge(
                match_skybot(tracklets, &client, code, radius, log)?,
                "skybot",
            );
        }
        let label_files = inv.inputs.get("labels").map(Vec::as_slice).unwrap_or(&[]);
        let mut validations = vec![Vec::new(); tracklets.len()];
        if !label_files.is_empty() {
            let mut all = Vec::new();
            for path in label_files {
                all.extend(labels::read_labels(path, log)?);
            }
            let tol = crate::obs::MatchTolerance {
                radius_arcsec: inv.float("label_radius_arcsec").unwrap_or(2.0),
                time_secs: inv.float("label_time_secs").unwrap_or(2.0),
            };
            let unmatched;
            (validations, unmatched) = labels::validate(tracklets, code, &all, tol);
            writeln!(
                log,
                "known: {} of {} validated observations are detections of {} tracklets; {unmatched} match no tracklet",
                all.len() - unmatched,
                all.len(),
                validations.iter().filter(|v| !v.is_empty()).count()
            )?;
        }
        let matches: Vec<Match> = tracklets
            .iter()
            .zip(&found)
            .zip(validations)
            .map(|((t, f), v)| Match {
                tracklet: t.id.clone(),
                object: f.as_ref().map(|f| f.0 .0.clone()),
                separation_arcsec: f.as_ref().map(|f| f.0 .1),
                predicted_v: f.as_ref().and_then(|f| f.0 .2),
                source: f.as_ref().map(|f| f.1.to_owned()),
                label: (!v.is_empty()).then(|| "valid".to_owned()),
                validated_by: v,
            })
            .collect();
        // Observations: link's temporary designations are NB + the tracklet's position in the file.
        let mut obs =
            ObservationList::load(inv.input("observations")?).map_err(TaskError::BadInput)?;
        for o in &mut obs.observations {
            let index = o
                .designation
                .strip_prefix("NB")
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(Some(m)) = index.and_then(|i| found.get(i.wrapping_sub(1))) {
                o.designation = report_designation(&m.0 .0);
                o.discovery = false;
            }
        }
        let known = found.iter().flatten().count();
        for m in matches.iter().filter(|m| m.object.is_some()) {
            writeln!(
                log,
                "known: {} is {} ({:.2}\", {})",
                m.tracklet,
                m.object.as_deref().unwrap_or_default(),
                m.separation_arcsec.unwrap_or(f64::NAN),
                m.source.as_deref().unwrap_or_default()
            )?;
        }
        let validated = matches.iter().filter(|m| m.label.is_some()).count();
        let out = KnownFile {
            format: "nearby-known/1".into(),
            matches,
        };
        std::fs::write(
            inv.output("known")?,
            serde_json::to_string_pretty(&out).map_err(|e| TaskError::Failed(e.to_string()))?,
        )?;
        std::fs::write(
            inv.output("observations")?,
            serde_json::to_string_pretty(&obs).map_err(|e| TaskError::Failed(e.to_string()))?,
        )?;
        let mut metrics = vec![
            ("known", known as f64),
            ("unknown", (tracklets.len() - known) as f64),
        ];
        if !label_files.is_empty() {
            metrics.push(("validated", validated as f64));
        }
        nearby_engine::task::write_metrics(inv.out_dir, &metrics)
    }
}
