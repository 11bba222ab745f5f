//! What counts as a backup, how old it is, and which backups retention keeps.
//!
//! One definition of "backup" and of "newest" for `pull-db`, `backups prune` and
//! `verify-backup --since`: an object is a backup when its key carries a time countable
//! can read ([`key_time`]) and its name ends like a dump ([`DUMP_EXTENSIONS`]); its age
//! is that time, never the store's modification time (which a copy, a re-upload or a
//! README written in the same second changes). Anything else is "not a backup": it is
//! listed, it can be restored by naming it, and it is never deleted by retention.
//!
//! Nothing here talks to a store; it works on keys and times.

use std::collections::BTreeSet;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::backup::BackupError;

/// The last extension of a backup's name, case-insensitive: dumps, tarballs and their
/// compressions (`.backup`, `.sql.gz`, `.tar.lrz`, `.dump`, …). A dated `notes.txt` is
/// not a backup.
pub const DUMP_EXTENSIONS: &[&str] = &[
    "backup", "bak", "dump", "dmp", "pgdump", "sql", "psql", "pgsql", "tar", "tgz", "txz", "tbz2",
    "gz", "zst", "zstd", "xz", "bz2", "lrz", "lz4",
];

/// Dates, as written in keys: `2026-11-29` or `20261129`.
const DATES: &[&[BorrowedFormatItem<'static>]] = &[
    format_description!("[year]-[month]-[day]"),
    format_description!("[year][month][day]"),
];

/// An optional time after the date: a separator (`T`, `_`, `-`, space, `.` or none),
/// hours and minutes with an optional separator (`:`, `-`, `.`), optional seconds, then
/// an optional `Z` or numeric offset. Without an offset the time is UTC.
const CLOCK: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[optional [[optional [[first [T][_][-][ ][.]]]][hour][optional [[first [:][-][.]]]][minute][optional [[optional [[first [:][-][.]]]][second]]][optional [[first [Z][[offset_hour sign:mandatory][optional [:]][offset_minute]]]]]]]"
);

/// The time in a key, read from the first timestamp in it (UTC unless the key says
/// otherwise; a date alone is that day's midnight). Accepted shapes, e.g.:
/// `2026-11-29T020000Z.backup` (countable's own), `2026-11-29T02:00:00Z.sql`,
/// `prod-20261129-0200.sql.gz`, `2026-11-29_02-00.tar.lrz`, `db_20261129T020000.dump`,
/// `prod-2026-11-29.sql.gz`. Years before 1970 are not read as dates, nor is a date
/// followed by something time-like that is not a valid time.
pub fn key_time(key: &str) -> Option<OffsetDateTime> {
    let bytes = key.as_bytes();
    (0..bytes.len())
        .filter(|&i| bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()))
        .find_map(|i| time_at(&bytes[i..]))
}

fn time_at(input: &[u8]) -> Option<OffsetDateTime> {
    DATES.iter().find_map(|date| {
        let mut parsed = time::parsing::Parsed::new();
        let rest = parsed.parse_items(input, date).ok()?;
        let rest = parsed.parse_items(rest, CLOCK).ok()?;
        if rest.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let day = Date::try_from(parsed).ok()?;
        if day.year() < 1970 {
            return None;
        }
        let clock = Time::try_from(parsed).ok();
        // A date followed by something time-like that is not a time
        // (`2026-11-29T25:00`, `2026-11-29T02`) is not read as that day's midnight.
        if clock.is_none()
            && rest.len() > 1
            && b"T_- .".contains(&rest[0])
            && rest[1].is_ascii_digit()
        {
            return None;
        }
        let clock = clock.unwrap_or(Time::MIDNIGHT);
        let offset = UtcOffset::try_from(parsed).unwrap_or(UtcOffset::UTC);
        Some(
            PrimitiveDateTime::new(day, clock)
                .assume_offset(offset)
                .to_offset(UtcOffset::UTC),
        )
    })
}

/// Whether `key` names something that could be a dump, by its last extension.
pub fn looks_like_dump(key: &str) -> bool {
    key.rsplit_once('.')
        .is_some_and(|(_, ext)| DUMP_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// When the backup named `key` was taken, if `key` names a backup (see the module doc).
pub fn backup_time(key: &str) -> Option<OffsetDateTime> {
    if looks_like_dump(key) {
        key_time(key)
    } else {
        None
    }
}

/// How many backups to keep, restic/borg style.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

/// One backup as retention sees it.
#[derive(Debug, Clone)]
pub struct Dated {
    pub key: String,
    pub time: OffsetDateTime,
    pub verified: bool,
}

/// Which keys to keep and which to delete. The newest `last` are kept; then, walking
/// from the newest, the newest backup of each of the `daily` most recent days that
/// have one (likewise ISO weeks and months). The newest verified backup is always kept.
pub fn plan_prune(
    backups: &[Dated],
    keep: Retention,
) -> Result<(Vec<String>, Vec<String>), BackupError> {
    if keep.last + keep.daily + keep.weekly + keep.monthly == 0 {
        return Err(BackupError::NoRetention);
    }
    let mut sorted: Vec<&Dated> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.key.cmp(&a.key)));
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for b in sorted.iter().take(keep.last) {
        kept.insert(&b.key);
    }
    let mut bucketed = |n: usize, bucket: &dyn Fn(OffsetDateTime) -> (i32, u32)| {
        let mut seen = Vec::new();
        for b in &sorted {
            let k = bucket(b.time);
            if seen.len() >= n {
                break;
            }
            if !seen.contains(&k) {
                seen.push(k);
                kept.insert(&b.key);
            }
        }
    };
    bucketed(keep.daily, &|t| (t.year(), t.ordinal() as u32));
    bucketed(keep.weekly, &|t| {
        let (y, w, _) = t.to_iso_week_date();
        (y, w as u32)
    });
    bucketed(keep.monthly, &|t| (t.year(), t.month() as u32));
    if let Some(v) = sorted.iter().find(|b| b.verified) {
        kept.insert(&v.key);
    }
    let keep_list: Vec<String> = sorted
        .iter()
        .filter(|b| kept.contains(b.key.as_str()))
        .map(|b| b.key.clone())
        .collect();
    let drop_list: Vec<String> = sorted
        .iter()
        .filter(|b| !kept.contains(b.key.as_str()))
        .map(|b| b.key.clone())
        .collect();
    Ok((keep_list, drop_list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{new_key, Compress};
    use time::macros::datetime;

    #[test]
    fn keys_carry_their_time() {
        let t = datetime!(2026-11-30 02:15:07 UTC);
        let k = new_key(t, Compress::Zstd);
        assert_eq!(k, "2026-11-30T021507Z.backup.zst");
        assert_eq!(key_time(&k), Some(t));
        assert_eq!(backup_time(&k), Some(t));
        assert_eq!(key_time("prod.sql"), None);
    }

    #[test]
    fn timestamps_teams_put_in_keys() {
        let two = datetime!(2026-11-29 02:00 UTC);
        for key in [
            "2026-11-29T020000Z.tar.lrz",
            "2026-11-29T02:00:00Z.sql",
            "2026-11-29T02:00:00.sql",
            "2026-11-29T03:00:00+01:00.sql",
            "prod-20261129-0200.sql.gz",
            "prod_20261129T020000Z.dump",
            "20261129020000.backup",
            "2026-11-29_02-00.tar.lrz",
            "2026-11-29 02.00.tar.lrz",
            "shop-db-2026-11-29-0200.sql.zst",
            "v15-2026-11-29T0200Z.backup",
        ] {
            assert_eq!(key_time(key), Some(two), "{key}");
            assert_eq!(backup_time(key), Some(two), "{key}");
        }
        let midnight = datetime!(2026-11-29 00:00 UTC);
        for key in [
            "prod-2026-11-29.sql.gz",
            "20261129.dump",
            "db-2026-11-29-full.sql",
        ] {
            assert_eq!(key_time(key), Some(midnight), "{key}");
        }
    }

    #[test]
    fn what_is_not_a_backup() {
        for key in [
            "README.txt",
            "old-dump.sql.gz",
            "latest.tar.lrz",
            "db1.sql",
            "12345678.sql",
            "2026-13-01.sql",
            "2026-02-30.sql",
            "1969-12-31.sql",
            "202611291.sql",
            "1202611290.sql",
            "prod-2026-11-29T25:00:00.sql",
            "2026-11-29T02.sql",
            "2026-11-29-1.sql.gz",
        ] {
            let t = key_time(key);
            assert!(
                backup_time(key).is_none(),
                "{key} was dated {t:?}, it must not count as a backup"
            );
        }
        // Dated, but not named like a dump.
        assert!(key_time("notes-2026-11-29.txt").is_some());
        assert_eq!(backup_time("notes-2026-11-29.txt"), None);
        assert_eq!(backup_time("2026-11-29T020000Z"), None);
        assert_eq!(backup_time("2026-11-29T020000Z.backup.manifest.json"), None);
    }

    /// Every day at 02:00 for 400 days, the newest first.
    fn calendar() -> Vec<Dated> {
        let start = datetime!(2025-10-27 02:00 UTC);
        (0..400)
            .map(|d| {
                let t = start + time::Duration::days(d);
                Dated {
                    key: new_key(t, Compress::None),
                    time: t,
                    verified: false,
                }
            })
            .collect()
    }

    #[test]
    fn retention_on_a_calendar() {
        let all = calendar();
        let (keep, drop) = plan_prune(
            &all,
            Retention {
                last: 2,
                daily: 7,
                weekly: 4,
                monthly: 6,
            },
        )
        .unwrap();
        assert_eq!(keep.len() + drop.len(), 400);
        // 2026-11-30 is a Monday. The newest 7 days (the last 2 among them); the newest
        // of 4 ISO weeks (W49: Nov 30, W48: Nov 29, W47: Nov 22, W46: Nov 15, so 2 more);
        // the newest of 6 months (Nov 30, then Oct 31 … Jun 30, so 5 more).
        assert_eq!(keep[0], "2026-11-30T020000Z.backup");
        assert_eq!(
            &keep[..7],
            &all.iter()
                .rev()
                .take(7)
                .map(|d| d.key.clone())
                .collect::<Vec<_>>()[..]
        );
        assert!(
            keep.contains(&"2026-11-22T020000Z.backup".to_string()),
            "Sunday of the previous ISO week"
        );
        assert!(
            keep.contains(&"2026-10-31T020000Z.backup".to_string()),
            "newest of October"
        );
        assert!(
            keep.contains(&"2026-06-30T020000Z.backup".to_string()),
            "newest of June (6th month back)"
        );
        assert!(
            !keep.contains(&"2026-05-31T020000Z.backup".to_string()),
            "May is beyond 6 months"
        );
        assert!(keep.contains(&"2026-11-15T020000Z.backup".to_string()));
        assert_eq!(keep.len(), 7 + 2 + 5, "{keep:?}");
    }

    #[test]
    fn the_newest_verified_backup_is_never_deleted() {
        let mut all = calendar();
        all[10].verified = true;
        let old = all[10].key.clone();
        let (keep, drop) = plan_prune(
            &all,
            Retention {
                last: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keep.len(), 2);
        assert!(keep.contains(&old));
        assert!(!drop.contains(&old));
        assert!(matches!(
            plan_prune(&all, Retention::default()),
            Err(BackupError::NoRetention)
        ));
    }
}
