//! Civil dates, MJD and sidereal time: just what a night's headers need.

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// The MJD of 0h UTC on a `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<f64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1800..=2200).contains(&y) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject 2014-02-31 and the like: the day must survive the round trip.
    (civil_from_days(days) == (y, m, d)).then_some(days as f64 + 40587.0)
}

/// The `YYYY-MM-DD` date `days` after the date `s` (before it when negative); `None` when `s`
/// is not a date.
pub fn add_days(s: &str, days: i64) -> Option<String> {
    let mjd = parse_date(s)?;
    let (y, m, d) = civil_from_days(mjd as i64 - 40587 + days);
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// ISO 8601 UTC with milliseconds, as DATE-OBS: `2014-07-10T22:30:00.000`.
pub fn iso(mjd: f64) -> String {
    let ms_total = ((mjd - 40587.0) * 86_400_000.0).round() as i64;
    let days = ms_total.div_euclid(86_400_000);
    let ms = ms_total.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Julian year (TT and UTC differ by a minute: irrelevant for proper motions).
pub fn julian_year(mjd: f64) -> f64 {
    2000.0 + (mjd - 51544.5) / 365.25
}

/// Greenwich mean sidereal time, degrees.
pub fn gmst_deg(mjd: f64) -> f64 {
    (280.46061837 + 360.98564736629 * (mjd - 51544.5)).rem_euclid(360.0)
}

/// Sexagesimal `HH:MM:SS.ss` for an RA in degrees.
pub fn ra_hms(ra_deg: f64) -> String {
    let cs = (ra_deg.rem_euclid(360.0) / 15.0 * 360_000.0).round() as i64 % (24 * 360_000);
    format!(
        "{:02}:{:02}:{:02}.{:02}",
        cs / 360_000,
        cs / 6000 % 60,
        cs / 100 % 60,
        cs % 100
    )
}

/// Sexagesimal `+DD:MM:SS.s` for a declination in degrees.
pub fn dec_dms(dec_deg: f64) -> String {
    let sign = if dec_deg < 0.0 { '-' } else { '+' };
    let ds = (dec_deg.abs() * 36_000.0).round() as i64;
    format!(
        "{sign}{:02}:{:02}:{:02}.{}",
        ds / 36_000,
        ds / 600 % 60,
        ds / 10 % 60,
        ds % 10
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_mjd() {
        assert_eq!(parse_date("1858-11-17"), Some(0.0));
        assert_eq!(parse_date("2000-01-01"), Some(51544.0));
        assert_eq!(parse_date("2014-07-10"), Some(56848.0));
        assert_eq!(parse_date("2014-02-31"), None);
        assert_eq!(parse_date("July 10"), None);
        assert_eq!(add_days("2014-06-30", 1).as_deref(), Some("2014-07-01"));
        assert_eq!(add_days("2014-06-30", 40).as_deref(), Some("2014-08-09"));
        assert_eq!(add_days("2014-03-01", -1).as_deref(), Some("2014-02-28"));
        assert_eq!(add_days("2014-02-31", 1), None);
        assert_eq!(iso(56848.0 + 22.5 / 24.0), "2014-07-10T22:30:00.000");
        assert_eq!(iso(56848.0 + 25.0 / 24.0), "2014-07-11T01:00:00.000");
        // J2000.0 is 2000-01-01T12:00 TT; GMST then is 280.46 deg.
        assert!((gmst_deg(51544.5) - 280.46061837).abs() < 1e-9);
        assert!((julian_year(51544.5) - 2000.0).abs() < 1e-12);
    }

    #[test]
    fn sexagesimal() {
        assert_eq!(ra_hms(287.0), "19:08:00.00");
        assert_eq!(ra_hms(359.99999999), "00:00:00.00");
        assert_eq!(dec_dms(-22.5), "-22:30:00.0");
        assert_eq!(dec_dms(5.0 + 1.0 / 7200.0), "+05:00:00.5");
    }
}
