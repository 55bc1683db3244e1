//! Time scales: UTC (with the leap-second table) -> TAI -> TT -> TDB, and calendar dates.
//!
//! Everything downstream works in TDB days since J2000.0 (JD 2451545.0 TDB), the argument of the
//! JPL ephemerides and of the elements' epochs. Earth rotation needs UT1; we use UTC for it
//! (|UT1 - UTC| < 0.9 s moves a site by < 0.4 km: < 0.06" for an NEA at 0.01 au).

use super::EphemError;

/// Julian date of J2000.0.
pub const J2000_JD: f64 = 2451545.0;
/// MJD = JD - 2400000.5.
pub const MJD_OFFSET: f64 = 2400000.5;
/// TT - TAI in seconds (exact, by definition).
const TT_MINUS_TAI: f64 = 32.184;
const SECONDS_PER_DAY: f64 = 86400.0;

/// TAI - UTC from each leap second on: (MJD of the UTC day it takes effect, seconds).
/// IERS Bulletin C; no leap second has been announced after 2017-01-01.
const LEAP_SECONDS: [(f64, f64); 28] = [
    (41317.0, 10.0),
    (41499.0, 11.0),
    (41683.0, 12.0),
    (42048.0, 13.0),
    (42413.0, 14.0),
    (42778.0, 15.0),
    (43144.0, 16.0),
    (43509.0, 17.0),
    (43874.0, 18.0),
    (44239.0, 19.0),
    (44786.0, 20.0),
    (45151.0, 21.0),
    (45516.0, 22.0),
    (46247.0, 23.0),
    (47161.0, 24.0),
    (47892.0, 25.0),
    (48257.0, 26.0),
    (48804.0, 27.0),
    (49169.0, 28.0),
    (49534.0, 29.0),
    (50083.0, 30.0),
    (50630.0, 31.0),
    (51179.0, 32.0),
    (53736.0, 33.0),
    (54832.0, 34.0),
    (56109.0, 35.0),
    (57204.0, 36.0),
    (57754.0, 37.0),
];

/// An instant, held in the two scales the ephemeris needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instant {
    /// TDB, days since J2000.0: the ephemeris and integration time.
    pub tdb: f64,
    /// UT1 (taken as UTC), days since J2000.0: the Earth rotation angle's argument.
    pub ut1: f64,
}

impl Instant {
    /// From a UTC modified Julian date (1972 onwards, when UTC got whole leap seconds).
    pub fn from_utc_mjd(mjd_utc: f64) -> Result<Instant, EphemError> {
        let tai_utc = tai_minus_utc(mjd_utc)?;
        let tt = mjd_utc - (J2000_JD - MJD_OFFSET) + (tai_utc + TT_MINUS_TAI) / SECONDS_PER_DAY;
        Ok(Instant {
            tdb: tt + tdb_minus_tt(tt) / SECONDS_PER_DAY,
            ut1: mjd_utc - (J2000_JD - MJD_OFFSET),
        })
    }

    /// From an ISO 8601 UTC date: `2020-08-01T00:28:50.817Z`, `2020-08-01 00:28`, `2020-08-01`.
    pub fn from_utc_iso(text: &str) -> Result<Instant, EphemError> {
        Instant::from_utc_mjd(parse_iso_mjd(text)?)
    }

    /// From a TDB modified Julian date (elements' epochs). UT1 is derived with the leap seconds
    /// of the day (or 10 s + 32.184 s before 1972): only the observer's site uses it.
    pub fn from_tdb_mjd(mjd_tdb: f64) -> Instant {
        let tdb = mjd_tdb - (J2000_JD - MJD_OFFSET);
        let tai_utc = tai_minus_utc(mjd_tdb).unwrap_or(10.0);
        Instant {
            tdb,
            ut1: tdb - (tai_utc + TT_MINUS_TAI) / SECONDS_PER_DAY,
        }
    }

    /// TDB Julian date.
    pub fn jd_tdb(&self) -> f64 {
        self.tdb + J2000_JD
    }

    /// UTC as an ISO string with milliseconds (UT1 is held as UTC).
    pub fn utc_iso(&self) -> String {
        let mjd = self.ut1 + J2000_JD - MJD_OFFSET;
        let mut ms = (mjd * SECONDS_PER_DAY * 1000.0).round() as i64;
        let day_ms = 86_400_000;
        let day = ms.div_euclid(day_ms);
        ms = ms.rem_euclid(day_ms);
        let (y, m, d) = civil_from_mjd(day);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// TAI - UTC in seconds on a UTC MJD.
pub fn tai_minus_utc(mjd_utc: f64) -> Result<f64, EphemError> {
    if mjd_utc < LEAP_SECONDS[0].0 {
        return Err(EphemError::Time(format!(
            "UTC MJD {mjd_utc} is before 1972-01-01: UTC had no whole leap seconds then; give TDB instead"
        )));
    }
    let i = LEAP_SECONDS.partition_point(|&(start, _)| start <= mjd_utc);
    Ok(LEAP_SECONDS[i - 1].1)
}

/// TDB - TT in seconds: the two largest periodic terms (Fairhead & Bretagnon), good to ~30 us.
pub fn tdb_minus_tt(tt_days_j2000: f64) -> f64 {
    let g = (357.53 + 0.985_600_28 * tt_days_j2000).to_radians();
    0.001_657 * g.sin() + 0.000_014 * (2.0 * g).sin()
}

/// MJD of a Gregorian calendar date at 0h.
pub fn mjd_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Days from civil (proleptic Gregorian), counted from 1970-01-01 = MJD 40587.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + 40_587
}

/// Gregorian calendar date of an MJD day number.
pub fn civil_from_mjd(mjd: i64) -> (i64, i64, i64) {
    let z = mjd - 40_587 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The header keys that may hold the time of day when `DATE-OBS` has only a date.
const TIME_OF_DAY_KEYS: [&str; 3] = ["TIME-OBS", "UT", "UTSTART"];

/// The time of day a header keeps beside a date-only `DATE-OBS`, for [`parse_fits_date`].
pub fn time_of_day(h: &crate::fits::Header) -> Option<String> {
    TIME_OF_DAY_KEYS
        .iter()
        .find_map(|k| h.opt_str(k).ok().flatten())
}

/// An exposure's start as an MJD (UTC) from a FITS `DATE-OBS` value and, when that is only a
/// date, the time of day kept in another key (see [`TIME_OF_DAY_KEYS`]). Besides ISO 8601, the
/// form the FITS standard used before 2000 is read: `DD/MM/YY`, the year 19YY. Some writers of
/// that form put the years since 1900 there, so `26/07/102` is 2002-07-26 (the SAAO frame in
/// tests/data is one).
pub fn parse_fits_date(date: &str, time_of_day: Option<&str>) -> Result<f64, EphemError> {
    let d = date.trim();
    let iso = if let Some((day, rest)) = d.split_once('/') {
        let bad = || {
            EphemError::Time(format!(
                "`{d}`: expected an ISO date (2020-08-01T00:28:50) or the old DD/MM/YY form"
            ))
        };
        let (month, year) = rest.split_once('/').ok_or_else(bad)?;
        let num = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
        let (day, month, year) = (num(day)?, num(month)?, num(year)?);
        if !(0..1000).contains(&year) {
            return Err(bad());
        }
        format!("{:04}-{month:02}-{day:02}", 1900 + year)
    } else {
        d.to_owned()
    };
    let has_clock = iso.contains(['T', ' ']);
    let parsed = match time_of_day.map(str::trim).filter(|t| !t.is_empty()) {
        Some(clock) if !has_clock => parse_iso_mjd(&format!("{iso}T{clock}")),
        _ => parse_iso_mjd(&iso),
    };
    parsed.map_err(|e| match iso == d {
        true => e,
        false => EphemError::Time(format!("`{d}` (read as {iso}): {e}")),
    })
}

/// Parses an ISO 8601 date-time (UTC) into an MJD.
pub fn parse_iso_mjd(text: &str) -> Result<f64, EphemError> {
    let bad = |why: &str| {
        EphemError::Time(format!(
            "`{text}`: {why} (expected an ISO UTC time like 2020-08-01T00:28:50.8Z)"
        ))
    };
    let t = text.trim().trim_end_matches('Z');
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, c.trim()),
        None => (t, ""),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad("the date is not YYYY-MM-DD"));
    };
    let num = |s: &str, what: &str| s.parse::<i64>().map_err(|_| bad(&format!("bad {what}")));
    let (y, m, d) = (num(y, "year")?, num(m, "month")?, num(d, "day")?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad("month or day out of range"));
    }
    let mut seconds = 0.0;
    if !clock.is_empty() {
        let mut scale = 3600.0;
        for field in clock.split(':') {
            if scale < 1.0 {
                return Err(bad("too many fields in the time of day"));
            }
            let v: f64 = field.parse().map_err(|_| bad("bad time of day"))?;
            if !(0.0..60.0).contains(&v) || (scale == 3600.0 && v >= 24.0) {
                return Err(bad("time of day out of range"));
            }
            seconds += v * scale;
            scale /= 60.0;
        }
    }
    Ok(mjd_from_civil(y, m, d) as f64 + seconds / SECONDS_PER_DAY)
}
