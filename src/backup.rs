//! Backups with proof. `backup`: the whole database of an environment, dumped by the
//! pg_dump inside its db container (custom format, version-matched), streamed through
//! optional compression and SHA-256 into the environment's store under a new UTC
//! timestamped key, then checked against what the store holds, with a manifest beside
//! it. `plan_prune`: restic-style retention. The drill (`verify-backup`) is in `drill`.
//!
//! Nothing here overwrites a stored backup; a failed backup leaves no object behind.

use std::collections::BTreeSet;

use async_compression::tokio::write::{BzEncoder, GzipEncoder, XzEncoder, ZstdEncoder};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::digest::HashingWriter;
use crate::error::Hint;
use crate::process;
use crate::restore::{Census, Db};
use crate::store::{Backup, Store};
use crate::ui::{self, Printer};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup named {0} exists already; countable never overwrites one")]
    Exists(String),
    #[error("pg_dump failed in the db container: {0}")]
    DumpFailed(String),
    #[error("the stored backup does not match what was sent: {0}")]
    Mismatch(String),
    #[error("no --keep-* option given: pruning would delete every backup")]
    NoRetention,
}

impl Hint for BackupError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            BackupError::Exists(_) => "wait a second and run the backup again (keys carry the time to the second)".into(),
            BackupError::DumpFailed(_) => "check the environment's db container and its log on the engine it runs on (`docker logs <container>` there); pg_dump's words are above".into(),
            BackupError::Mismatch(_) => "the store changed the object: run the backup again, and check the store".into(),
            BackupError::NoRetention => "say what to keep, e.g. `--keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6`".into(),
        })
    }
}
crate::register_hint!(BackupError);

/// Compression applied over pg_dump's custom format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// None: the custom format's own compression (the default, by measurement)
    #[default]
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    /// lrzip, for teams that keep `.lrz` backups (needs the `lrzip` program)
    Lrzip,
}

impl Compress {
    pub fn suffix(self) -> &'static str {
        match self {
            Compress::None => "",
            Compress::Gzip => ".gz",
            Compress::Zstd => ".zst",
            Compress::Xz => ".xz",
            Compress::Bzip2 => ".bz2",
            Compress::Lrzip => ".lrz",
        }
    }
}

/// `<key>.manifest.json`: what a backup holds and how to check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub countable_version: String,
    pub created_at: String,
    pub environment: String,
    pub database: String,
    pub server_version: u32,
    pub pg_dump_version: String,
    pub format: String,
    pub compression: Compress,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub census: Census,
    pub dump_seconds: f64,
}

pub fn manifest_key(key: &str) -> String {
    format!("{key}.manifest.json")
}

pub fn verified_key(key: &str) -> String {
    format!("{key}.verified.json")
}

const STAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour][minute][second]Z");

/// `2026-11-30T021500Z.backup[.zst]`
pub fn new_key(now: OffsetDateTime, compress: Compress) -> String {
    let stamp = now.format(STAMP).expect("formatting a UTC time");
    format!("{stamp}.backup{}", compress.suffix())
}

/// The time in a key made by `new_key` (or by hand in the same shape), if any.
pub fn key_time(key: &str) -> Option<OffsetDateTime> {
    let stamp = key.get(..18)?;
    time::PrimitiveDateTime::parse(stamp, STAMP)
        .ok()
        .map(|t| t.assume_utc())
}

/// Dump `db`'s database into `store` and prove the stored object is what was sent.
pub async fn backup(
    db: &Db,
    env: &str,
    store: &Store,
    compress: Compress,
    printer: &Printer,
) -> anyhow::Result<Manifest> {
    let now = OffsetDateTime::now_utc();
    let key = new_key(now, compress);
    if store.exists(&key).await? {
        return Err(BackupError::Exists(key).into());
    }
    let census = db.census(&db.name).await?;
    let spinner = printer.spinner(&format!(
        "dumping {} into {}{key}",
        db.name,
        store.location()
    ));
    let started = std::time::Instant::now();
    let mut upload = store.upload(&key).await?;
    let dumped = dump_into(db, compress, &mut upload).await;
    spinner.finish_and_clear();
    let (sha256, size) = match dumped {
        Ok(v) => v,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    if let Err(e) = upload.commit().await {
        let _ = store.delete(&key).await;
        return Err(e.into());
    }
    let dump_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = check_stored(store, &key, size, &sha256).await {
        let _ = store.delete(&key).await;
        return Err(e);
    }
    let pg_dump_version = db
        .exec(&["pg_dump", "--version"], None::<tokio::io::Empty>)
        .await?
        .stdout;
    let manifest = Manifest {
        countable_version: env!("CARGO_PKG_VERSION").into(),
        created_at: now.format(&time::format_description::well_known::Rfc3339)?,
        environment: env.into(),
        database: db.name.clone(),
        server_version: db.server_version,
        pg_dump_version: pg_dump_version.trim().into(),
        format: "custom".into(),
        compression: compress,
        key: key.clone(),
        size,
        sha256,
        census,
        dump_seconds,
    };
    store
        .put_small(&manifest_key(&key), serde_json::to_vec_pretty(&manifest)?)
        .await?;
    printer.success(&format!(
        "backed up {} to {}{key} ({} in {dump_seconds:.1} s, {} tables, checksum verified)",
        db.name,
        store.location(),
        ui::human_bytes(size),
        manifest.census.tables
    ));
    Ok(manifest)
}

/// Stream pg_dump's output through `compress` and a hash into `sink`; (sha256, size).
async fn dump_into<W>(db: &Db, compress: Compress, sink: &mut W) -> anyhow::Result<(String, u64)>
where
    W: AsyncWrite + Unpin + Send,
{
    // With a compression of our own, pg_dump does not compress too (-Z0): measured on
    // high-entropy data, zlib then zstd gains nothing over zlib alone, while -Z0 then
    // zstd is 7% smaller and 26% faster. Without one, the custom format's own zlib.
    let level = if compress == Compress::None {
        "-Z6"
    } else {
        "-Z0"
    };
    let cmd = ["pg_dump", "-Fc", level, "-U", &db.user, "-d", &db.name];
    let mut hashing = HashingWriter::new(sink);
    let (code, stderr, written) = match compress {
        Compress::None => db.dump_to(&cmd, &mut hashing).await?,
        Compress::Gzip => encode(db, &cmd, GzipEncoder::new(&mut hashing)).await?,
        Compress::Zstd => encode(db, &cmd, ZstdEncoder::new(&mut hashing)).await?,
        Compress::Xz => encode(db, &cmd, XzEncoder::new(&mut hashing)).await?,
        Compress::Bzip2 => encode(db, &cmd, BzEncoder::new(&mut hashing)).await?,
        Compress::Lrzip => {
            if !process::exists("lrzip") {
                return Err(crate::archive::ArchiveError::LrzipMissing.into());
            }
            // lrzip 0.651 writes corrupt LZMA streams to stdout for small inputs
            // (its file output is sound), so it writes a temporary file, which is then
            // streamed into the store and removed.
            let tmp = std::env::temp_dir().join(format!(
                "countable-{}-{}.lrz",
                std::process::id(),
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ));
            let tmp_s = tmp.display().to_string();
            let (mut into_lrzip, from_dump) = tokio::io::duplex(256 * 1024);
            let (mut chatter, filter) =
                process::spawn_filter("lrzip", &["-q", "-f", "-o", &tmp_s], from_dump)?;
            let dump = async {
                let r = db.dump_to(&cmd, &mut into_lrzip).await;
                let _ = into_lrzip.shutdown().await;
                r
            };
            let mut void = tokio::io::sink();
            let (r, _) = tokio::join!(dump, tokio::io::copy(&mut chatter, &mut void));
            drop(into_lrzip);
            let finished = filter.finish().await;
            let copied = match (&r, &finished) {
                (Ok(_), Ok(())) => match tokio::fs::File::open(&tmp).await {
                    Ok(mut f) => tokio::io::copy(&mut f, &mut hashing).await.map(|_| ()),
                    Err(e) => Err(e),
                },
                _ => Ok(()),
            };
            let _ = tokio::fs::remove_file(&tmp).await;
            finished?;
            copied?;
            r?
        }
    };
    if code != 0 {
        return Err(BackupError::DumpFailed(stderr.trim().to_string()).into());
    }
    written?;
    hashing.shutdown().await?;
    let (sha, size, _) = hashing.finish();
    Ok((sha, size))
}

async fn encode<E>(
    db: &Db,
    cmd: &[&str],
    mut encoder: E,
) -> anyhow::Result<(i64, String, std::io::Result<u64>)>
where
    E: AsyncWrite + Unpin + Send,
{
    let r = db.dump_to(cmd, &mut encoder).await?;
    encoder.shutdown().await?;
    Ok(r)
}

/// The store holds `key` with `size` bytes whose SHA-256 is `sha256` (read back).
async fn check_stored(store: &Store, key: &str, size: u64, sha256: &str) -> anyhow::Result<()> {
    let stored = store.size_of(key).await?.unwrap_or(0);
    if stored != size {
        return Err(BackupError::Mismatch(format!("{stored} bytes stored, {size} sent")).into());
    }
    let backup = Backup {
        key: key.into(),
        size,
        modified: 0,
    };
    let opened = store.open(&backup).await?;
    let (mut reader, digest) = crate::digest::HashingReader::new(opened.reader);
    let mut buf = vec![0u8; 256 * 1024];
    while reader.read(&mut buf).await? > 0 {}
    let (got, _) = digest.snapshot();
    if got != sha256 {
        return Err(BackupError::Mismatch(format!("SHA-256 {got} stored, {sha256} sent")).into());
    }
    Ok(())
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
    use time::macros::datetime;

    #[test]
    fn keys_carry_their_time() {
        let t = datetime!(2026-11-30 02:15:07 UTC);
        let k = new_key(t, Compress::Zstd);
        assert_eq!(k, "2026-11-30T021507Z.backup.zst");
        assert_eq!(key_time(&k), Some(t));
        assert_eq!(key_time("prod.sql"), None);
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
