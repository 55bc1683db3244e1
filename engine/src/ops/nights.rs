//! The night as the unit of operations. Each night has its own work directory,
//! `WORKDIR/nights/<night>/` (its own state store, outputs and logs), so nights run side by side
//! in separate processes, a broken night cannot touch another, and the store's lock is the lock
//! that keeps two runs of one night apart. Night names are dates, `YYYY-MM-DD` (the evening's
//! date, as observers name nights).

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

pub fn parse_night(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y%m%d"))
        .map_err(|_| format!("`{s}` is not a night: expected a date, YYYY-MM-DD"))
}

pub fn night_name(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The night that ended before `t`: the date twelve hours earlier (a run at 08:00 UTC on the 28th
/// is for the night of the 27th).
pub fn night_before(t: chrono::DateTime<chrono::Utc>) -> NaiveDate {
    (t - chrono::Duration::hours(12)).date_naive()
}

pub fn night_dir(workdir: &Path, night: &str) -> PathBuf {
    workdir.join("nights").join(night)
}

/// Every night that has a directory, oldest first.
pub fn nights(workdir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(workdir.join("nights"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| parse_night(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Nights from `from` to `to`, inclusive.
pub fn range(from: NaiveDate, to: NaiveDate) -> Vec<String> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(night_name)
        .collect()
}

/// Run slots shared by every nearby process of a work directory (the service and backfills):
/// `WORKDIR/slots/slot-K.lock`, held with an exclusive file lock while a night runs. Slot 0 is
/// kept for scheduled runs, so a backfill can never starve tonight's run.
pub struct Slot {
    _file: std::fs::File,
    pub index: usize,
}

/// Takes a free slot among `indices`, if any (never blocks).
pub fn try_slot(
    workdir: &Path,
    indices: impl IntoIterator<Item = usize>,
) -> std::io::Result<Option<Slot>> {
    let dir = workdir.join("slots");
    std::fs::create_dir_all(&dir)?;
    for index in indices {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("slot-{index}.lock")))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if rc == 0 {
            return Ok(Some(Slot { _file: file, index }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn night_names_and_ranges() {
        assert_eq!(night_name(parse_night("20261127").unwrap()), "2026-11-27");
        assert!(parse_night("2026-13-01")
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        let r = range(
            parse_night("2026-02-27").unwrap(),
            parse_night("2026-03-02").unwrap(),
        );
        assert_eq!(r, ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]);
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z").unwrap();
        assert_eq!(night_name(night_before(t.into())), "2026-11-27");
    }

    #[test]
    fn a_slot_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = try_slot(dir.path(), [1, 2]).unwrap().unwrap();
        let b = try_slot(dir.path(), [1, 2]).unwrap().unwrap();
        assert_eq!((a.index, b.index), (1, 2));
        assert!(try_slot(dir.path(), [1, 2]).unwrap().is_none());
        drop(a);
        assert_eq!(try_slot(dir.path(), [1, 2]).unwrap().unwrap().index, 1);
    }
}
