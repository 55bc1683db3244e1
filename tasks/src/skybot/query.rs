//! A cone-search request and its URL. The URL is written the same way for the same request
//! (fixed decimals, fixed parameter order), so it can key a cache.

use super::SkybotError;

/// The service's current address.
pub const ENDPOINT: &str = "https://ssp.imcce.fr/webservices/skybot/api/conesearch.php";

/// The answer format (`-mime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mime {
    Votable,
    Text,
}

impl Mime {
    pub fn param(self) -> &'static str {
        match self {
            Mime::Votable => "votable",
            Mime::Text => "text",
        }
    }
    /// What the answer should be, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Mime::Votable => "VOTable",
            Mime::Text => "SkyBoT text table",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Mime::Votable => "vot",
            Mime::Text => "txt",
        }
    }
}

/// How many columns (`-output`): `object` (number, name, position, class, Mv, error,
/// distance), `basic` (also the motion and distances), `obs`, `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Object,
    Basic,
    Obs,
    All,
}

impl Output {
    pub fn param(self) -> &'static str {
        match self {
            Output::Object => "object",
            Output::Basic => "basic",
            Output::Obs => "obs",
            Output::All => "all",
        }
    }
}

/// Which known objects are in a field at an epoch, seen from an observatory.
#[derive(Debug, Clone, PartialEq)]
pub struct ConeQuery {
    /// Epoch, Julian Date UTC (MJD + 2400000.5).
    pub epoch_jd: f64,
    /// Field centre, J2000, degrees.
    pub ra_deg: f64,
    pub dec_deg: f64,
    /// Cone radius, degrees (the INT WFC's 34' field: about 0.33).
    pub radius_deg: f64,
    /// MPC observatory code (`-loc`): `950` for La Palma; `500` is the geocentre.
    pub observer: String,
    pub mime: Mime,
    pub output: Output,
    /// Asteroids, planets, comets as three bits (`-objFilter`): `111` all, `100` asteroids.
    pub obj_filter: String,
    /// Largest position uncertainty of the objects returned, arcsec (`-filter`, 0 = all).
    pub max_error_arcsec: f64,
    /// `EQJ2000` or `ECJ2000` (`-refsys`).
    pub refsys: String,
    /// The client's name (`-from`).
    pub from: String,
}

impl ConeQuery {
    /// A query for a field seen from an observatory, with the usual options: VOTable, basic
    /// output, every kind of object, no filter on position errors, equatorial J2000.
    pub fn new(
        epoch_mjd_utc: f64,
        ra_deg: f64,
        dec_deg: f64,
        radius_deg: f64,
        observer: &str,
    ) -> ConeQuery {
        ConeQuery {
            epoch_jd: epoch_mjd_utc + 2_400_000.5,
            ra_deg,
            dec_deg,
            radius_deg,
            observer: observer.to_string(),
            mime: Mime::Votable,
            output: Output::Basic,
            obj_filter: "111".to_string(),
            max_error_arcsec: 0.0,
            refsys: "EQJ2000".to_string(),
            from: "nearby".to_string(),
        }
    }

    /// Everything wrong with the request, before anything is sent.
    pub fn check(&self) -> Result<(), SkybotError> {
        let mut p = Vec::new();
        // SkyBoT covers 1889-2060 or so; refuse what cannot be a date of observation.
        if !(2_411_368.5..2_473_459.5).contains(&self.epoch_jd) {
            p.push(format!("epoch JD {}: expected 1889-2060", self.epoch_jd));
        }
        if !(0.0..360.0).contains(&self.ra_deg) {
            p.push(format!(
                "RA {}: expected 0 <= RA < 360 degrees",
                self.ra_deg
            ));
        }
        if !(-90.0..=90.0).contains(&self.dec_deg) {
            p.push(format!("Dec {}: expected -90..90 degrees", self.dec_deg));
        }
        if !(self.radius_deg > 0.0 && self.radius_deg <= 10.0) {
            p.push(format!(
                "radius {} degrees: expected more than 0, at most 10",
                self.radius_deg
            ));
        }
        if !(self.max_error_arcsec >= 0.0 && self.max_error_arcsec.is_finite()) {
            p.push(format!(
                "position error filter {}: expected >= 0 arcsec",
                self.max_error_arcsec
            ));
        }
        for (name, v, ok) in [
            (
                "observer",
                &self.observer,
                self.observer.len() == 3
                    && self.observer.bytes().all(|b| b.is_ascii_alphanumeric()),
            ),
            (
                "objFilter",
                &self.obj_filter,
                self.obj_filter.len() == 3
                    && self.obj_filter.bytes().all(|b| b == b'0' || b == b'1'),
            ),
            (
                "refsys",
                &self.refsys,
                self.refsys == "EQJ2000" || self.refsys == "ECJ2000",
            ),
            (
                "from",
                &self.from,
                !self.from.is_empty()
                    && self
                        .from
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            ),
        ] {
            if !ok {
                p.push(format!("{name} `{v}` is not allowed"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(SkybotError::BadQuery(p.join("; ")))
        }
    }

    /// The request URL on `endpoint` (1e-6 day = 0.09 s, 1e-7 degree = 0.4 mas).
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{endpoint}?-ep={:.6}&-ra={:.7}&-dec={:.7}&-rd={:.7}&-mime={}&-output={}&-loc={}&-filter={}&-objFilter={}&-refsys={}&-from={}",
            self.epoch_jd,
            self.ra_deg,
            self.dec_deg,
            self.radius_deg,
            self.mime.param(),
            self.output.param(),
            self.observer,
            self.max_error_arcsec,
            self.obj_filter,
            self.refsys,
            self.from
        )
    }
}
