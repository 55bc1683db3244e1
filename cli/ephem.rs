//! `nearby ephem`: predicted positions of known objects from an elements file, like a local JPL
//! Horizons: astrometric RA/Dec (ICRF), rates, distances, phase, elongation and V per object and
//! time. The computation is nearby_tasks::ephem; this file reads arguments and prints.

use std::path::PathBuf;

use clap::Args;
use nearby_engine::diag::did_you_mean;
use nearby_tasks::ephem::{self, elements, observer, Instant, Propagation, Spk};

#[derive(Args)]
pub struct EphemArgs {
    /// Orbital elements: MPCORB one-line records or JPL small-body database JSON.
    #[arg(long)]
    pub elements: PathBuf,
    /// Only these objects (repeatable): number, name, designation or packed designation.
    #[arg(long = "object", value_name = "ID")]
    pub objects: Vec<String>,
    /// MPC observatory code (500 is the geocentre).
    #[arg(long)]
    pub observatory: String,
    /// UTC time, ISO 8601 (repeatable): --time 2024-03-01T22:15:00Z
    #[arg(long = "time", value_name = "ISO", required = true)]
    pub times: Vec<String>,
    /// JPL planetary ephemeris (SPK), e.g. de421.bsp or de440.bsp.
    #[arg(long, env = "NEARBY_SPK")]
    pub spk: Option<PathBuf>,
    /// MPC observatory codes JSON (ObsCodes.json); default: the built-in subset.
    #[arg(long)]
    pub obscodes: Option<PathBuf>,
    /// Sun-only two-body motion (fast, arcminutes off after a year) instead of n-body.
    #[arg(long)]
    pub two_body: bool,
}

/// `nearby spk-excerpt`: a few days of a JPL SPK file, for a machine or a demo without the
/// whole file.
#[derive(Args)]
pub struct ExcerptArgs {
    /// The JPL planetary ephemeris to cut from, e.g. de421.bsp.
    #[arg(long, env = "NEARBY_SPK")]
    pub spk: PathBuf,
    /// First UTC time to cover, ISO 8601.
    #[arg(long)]
    pub from: String,
    /// Last UTC time to cover, ISO 8601.
    #[arg(long)]
    pub to: String,
    /// The excerpt to write.
    #[arg(long)]
    pub out: PathBuf,
}

const INVALID: u8 = 2;

/// Writes the records of `--spk` that cover `--from`..`--to`, with a comment saying so.
pub fn excerpt(a: &ExcerptArgs) -> u8 {
    let (from, to) = match (Instant::from_utc_iso(&a.from), Instant::from_utc_iso(&a.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => return fail(format!("--from: {e}")),
        (_, Err(e)) => return fail(format!("--to: {e}")),
    };
    let spk = match Spk::open(&a.spk) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let source = a.spk.file_name().map_or_else(
        || a.spk.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let comment = format!(
        "Excerpt of {source}: the records that cover {} .. {} UTC,\ncopied unchanged by `nearby spk-excerpt`.",
        from.utc_iso(),
        to.utc_iso()
    );
    let bytes = match ephem::spk_excerpt::excerpt(&spk, from.tdb, to.tdb, &comment) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = std::fs::write(&a.out, &bytes) {
        return fail(format!("cannot write {}: {e}", a.out.display()));
    }
    eprintln!("{}: {} bytes from {source}", a.out.display(), bytes.len());
    0
}

fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    INVALID
}

/// RA in hours as `HH MM SS.sss`.
fn hms(ra_deg: f64) -> String {
    let ms = (ra_deg / 15.0 * 3_600_000.0).round() as i64 % (24 * 3_600_000);
    format!(
        "{:02} {:02} {:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Dec as `sDD MM SS.ss`.
fn dms(dec_deg: f64) -> String {
    let sign = if dec_deg < 0.0 { '-' } else { '+' };
    let cs = (dec_deg.abs() * 360_000.0).round() as i64;
    format!(
        "{sign}{:02} {:02} {:02}.{:02}",
        cs / 360_000,
        cs / 6000 % 60,
        cs / 100 % 60,
        cs % 100
    )
}

pub fn ephem(a: &EphemArgs) -> u8 {
    let Some(spk_path) = &a.spk else {
        return fail(
            "no planetary ephemeris: give --spk FILE (a JPL SPK such as de421.bsp) or set NEARBY_SPK; \
             .ci/fetch-de421.sh downloads DE421",
        );
    };
    let times: Vec<Instant> = match a.times.iter().map(|t| Instant::from_utc_iso(t)).collect() {
        Ok(t) => t,
        Err(e) => return fail(format!("--{e}")),
    };
    let obscodes = match &a.obscodes {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => observer::parse_obscodes(&path.display().to_string(), &text),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        },
        None => observer::parse_obscodes("built-in codes", observer::BUILTIN_OBSCODES),
    };
    let obscodes = match obscodes {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let Some(site) = obscodes.get(&a.observatory) else {
        let hint = did_you_mean(&a.observatory, obscodes.keys().map(String::as_str))
            .unwrap_or_else(|| {
                "give --obscodes with the MPC's ObsCodes.json for other codes".into()
            });
        return fail(format!(
            "--observatory {}: no such code with a site on the Earth; {hint}",
            a.observatory
        ));
    };
    let file = a.elements.display().to_string();
    let text = match std::fs::read_to_string(&a.elements) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read elements {file}: {e}")),
    };
    let parsed = elements::parse(&file, &text);
    for e in &parsed.errors {
        eprintln!("warning: skipped {e}");
    }
    let mut chosen: Vec<&ephem::Elements> = Vec::new();
    for id in &a.objects {
        match parsed.elements.iter().find(|e| e.is_named(id)) {
            Some(e) => chosen.push(e),
            None => {
                let hint = did_you_mean(id, parsed.elements.iter().map(|e| e.designation.as_str()))
                    .unwrap_or_default();
                return fail(format!(
                    "--object {id}: not among the readable objects of {file} {hint}"
                ));
            }
        }
    }
    if a.objects.is_empty() {
        chosen = parsed.elements.iter().collect();
    }
    if chosen.is_empty() {
        return fail(format!("{file}: no readable orbital elements"));
    }
    let spk = match Spk::open(spk_path) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let propagation = if a.two_body {
        Propagation::TwoBody
    } else {
        Propagation::NBody
    };
    let mut code = 0;
    println!(
        "# observatory {} ({}); astrometric RA/Dec ICRF; rates dRA*cosDec, dDec in arcsec/hour; {}",
        site.code,
        site.name,
        if a.two_body { "two-body" } else { "n-body" }
    );
    println!(
        "# {:<23} {:>12} {:>12} {:>11} {:>10} {:>10} {:>10} {:>13} {:>12} {:>8} {:>6} {:>6}",
        "time_utc",
        "ra_hms",
        "dec_dms",
        "ra_deg",
        "dec_deg",
        "dra_cosdec",
        "ddec",
        "delta_au",
        "r_au",
        "phase",
        "elong",
        "V"
    );
    for e in chosen {
        match ephem::predict(&spk, e, site, &times, propagation) {
            Ok(predictions) => {
                println!(
                    "# {}  (elements epoch MJD {} TDB)",
                    e.designation, e.epoch_mjd
                );
                for p in predictions {
                    let v = p
                        .v_mag
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
                    println!(
                        "  {:<23} {:>12} {:>12} {:>11.6} {:>10.6} {:>10.3} {:>10.3} {:>13.9} {:>12.9} {:>8.3} {:>6.1} {:>6}",
                        p.time.utc_iso(),
                        hms(p.ra_deg),
                        dms(p.dec_deg),
                        p.ra_deg,
                        p.dec_deg,
                        p.dra_cosdec,
                        p.ddec,
                        p.delta_au,
                        p.r_au,
                        p.phase_deg,
                        p.elongation_deg,
                        v
                    );
                }
            }
            Err(err) => {
                eprintln!("error: {}: {err}", e.designation);
                code = INVALID;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    #[test]
    fn sexagesimal_rounds_with_carry() {
        assert_eq!(super::hms(359.999_999_99), "00 00 00.000");
        assert_eq!(super::hms(152.289713526), "10 09 09.531");
        assert_eq!(super::dms(-0.000_001), "-00 00 00.00");
        assert_eq!(super::dms(8.991461485), "+08 59 29.26");
        assert_eq!(super::dms(-29.999_999_9), "-30 00 00.00");
    }
}
