//! Cron schedules (`minute hour day-of-month month day-of-week`, in UTC), as in crontab(5):
//! `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists `a,b,c`; day of week 0-7
//! (0 and 7 are Sunday). As in crontab, when both day fields are restricted a time matches if
//! either does.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron `{text}`: expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let field = |i: usize, name: &str, lo: u32, hi: u32| {
            parse_field(fields[i], lo, hi).map_err(|e| format!("cron `{text}`, {name}: {e}"))
        };
        let mut weekdays = field(4, "day of week", 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            text: text.to_owned(),
            minutes: field(0, "minute", 0, 59)?,
            hours: field(1, "hour", 0, 23)?,
            days: field(2, "day of month", 1, 31)?,
            months: field(3, "month", 1, 12)?,
            weekdays,
            days_any: fields[2] == "*",
            weekdays_any: fields[4] == "*",
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let day = bit(self.days, t.day());
        let weekday = bit(self.weekdays, t.weekday().num_days_from_sunday());
        let day_ok = match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        };
        bit(self.minutes, t.minute())
            && bit(self.hours, t.hour())
            && bit(self.months, t.month())
            && day_ok
    }

    /// The first matching minute strictly after `t` (None if none within five years, e.g. 31 Feb).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut m = t
            .with_second(0)?
            .with_nanosecond(0)?
            .checked_add_signed(Duration::minutes(1))?;
        let end = t.checked_add_signed(Duration::days(5 * 366))?;
        while m <= end {
            if !self.months_ok(m) {
                // Jump to the first minute of the next month.
                let (y, mo) = if m.month() == 12 {
                    (m.year() + 1, 1)
                } else {
                    (m.year(), m.month() + 1)
                };
                m = m
                    .with_day(1)?
                    .with_month(mo)?
                    .with_year(y)?
                    .with_hour(0)?
                    .with_minute(0)?;
                continue;
            }
            if self.matches(m) {
                return Some(m);
            }
            m += Duration::minutes(1);
        }
        None
    }

    fn months_ok(&self, t: DateTime<Utc>) -> bool {
        self.months & (1 << t.month()) != 0
    }

    /// Every matching minute in `(after, until]`, oldest first.
    pub fn between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > until {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }
}

fn parse_field(f: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut set = 0u64;
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("bad step `{s}` in `{part}`"))?;
                if step == 0 {
                    return Err(format!("step 0 in `{part}`"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a, part)?, num(b, part)?)
        } else {
            let v = num(range, part)?;
            (v, if step > 1 { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("`{part}` is outside {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn num(s: &str, part: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("`{s}` in `{part}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_at_eight() {
        let c = Cron::parse("0 8 * * *").unwrap();
        assert_eq!(
            c.next_after(t("2026-11-27T07:59:59Z")),
            Some(t("2026-11-27T08:00:00Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-27T08:00:00Z")),
            Some(t("2026-11-28T08:00:00Z"))
        );
        let missed = c.between(t("2026-11-20T09:00:00Z"), t("2026-11-27T08:30:00Z"));
        assert_eq!(missed.len(), 7);
        assert_eq!(missed[0], t("2026-11-21T08:00:00Z"));
    }

    #[test]
    fn steps_ranges_lists_and_weekdays() {
        let c = Cron::parse("*/15 18-20 * * 1-5").unwrap();
        // 2026-11-28 is a Saturday: the next is Monday 18:00.
        assert_eq!(
            c.next_after(t("2026-11-27T20:50:00Z")),
            Some(t("2026-11-30T18:00:00Z"))
        );
        assert_eq!(
            c.next_after(t("2026-11-30T18:00:00Z")),
            Some(t("2026-11-30T18:15:00Z"))
        );
        let sunday = Cron::parse("30 6 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2026-11-29T06:30:00Z"))
        );
        let leap = Cron::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(t("2026-11-27T00:00:00Z")),
            Some(t("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 31 2 *")
                .unwrap()
                .next_after(t("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn errors_say_which_field() {
        for (text, want) in [
            ("0 8 * *", "expected 5 fields"),
            ("60 8 * * *", "minute: `60` is outside 0-59"),
            ("0 8 * * mon", "day of week: `mon`"),
            ("*/0 8 * * *", "step 0"),
        ] {
            let e = Cron::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
