//! Backups with proof. `backup`: the whole database of an environment, dumped by the
//! pg_dump inside its db container (custom format, version-matched), streamed through
//! optional compression and SHA-256 into the environment's store under a new UTC
//! timestamped key, then checked against what the store holds, with a manifest beside
//! it; then the environment's media under the same stamp (`media::backup`). Retention
//! is in `retention`, the drill (`verify-backup`) is in `drill`.
//!
//! Nothing here overwrites a stored backup; a failed backup leaves no object behind
//! (but a database dump that was stored and checked stays when its media fails).

use anyhow::Context;
use async_compression::tokio::write::{BzEncoder, GzipEncoder, XzEncoder, ZstdEncoder};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::digest::HashingWriter;
use crate::error::Hint;
use crate::interrupt::Interrupt;
use crate::media::{Media, MediaSummary};
use crate::process;
use crate::restore::{Census, Db};
use crate::store::Upload;
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
    #[error("the backup was interrupted; nothing was stored")]
    Interrupted,
}

impl Hint for BackupError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            BackupError::Exists(_) => "wait a second and run the backup again (keys carry the time to the second)".into(),
            BackupError::DumpFailed(_) => "check the environment's db container and its log on the engine it runs on (`docker logs <container>` there); pg_dump's words are above".into(),
            BackupError::Mismatch(_) => "the store changed the object: run the backup again, and check the store".into(),
            BackupError::Interrupted => "run the backup again when it may finish: `countable backup <env>`".into(),
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
    /// The compression a file name asks for by its last suffix (`.gz`, `.zst`, `.xz`,
    /// `.bz2`, `.lrz`); none for anything else.
    pub fn for_name(path: &std::path::Path) -> Self {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        [
            Compress::Gzip,
            Compress::Zstd,
            Compress::Xz,
            Compress::Bzip2,
            Compress::Lrzip,
        ]
        .into_iter()
        .find(|c| c.suffix().trim_start_matches('.') == ext)
        .unwrap_or(Compress::None)
    }

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

/// `2026-11-30T021500Z`: the time of a backup, in its keys.
pub fn stamp(now: OffsetDateTime) -> String {
    now.format(STAMP).expect("formatting a UTC time")
}

/// The time a stamp of countable's own says; `None` for anything else.
pub fn parse_stamp(stamp: &str) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(stamp, STAMP)
        .ok()
        .map(|t| t.assume_utc())
}

/// `2026-11-30T021500Z.backup[.zst]`
pub fn new_key(now: OffsetDateTime, compress: Compress) -> String {
    format!("{}.backup{}", stamp(now), compress.suffix())
}

/// What a backup stored: the database dump (its manifest) and, under the same stamp,
/// the media (`None`: the environment has none).
#[derive(Debug, Clone, Serialize)]
pub struct Backed {
    #[serde(flatten)]
    pub manifest: Manifest,
    pub media: Option<MediaSummary>,
}

/// Back up environment `env`: its database (`db`), then its `media`, into `store`
/// under one stamp. A media part that fails fails the backup, but the database dump,
/// stored and checked by then, stays.
pub async fn backup(
    db: &Db,
    env: &str,
    store: &Store,
    compress: Compress,
    media: &Media,
    printer: &Printer,
) -> anyhow::Result<Backed> {
    let now = OffsetDateTime::now_utc();
    let manifest = backup_db(db, env, store, compress, now, printer).await?;
    let media = crate::media::backup::back_up(
        media,
        env,
        store,
        &stamp(now),
        &manifest.created_at,
        printer,
    )
    .await
    .with_context(|| {
        format!(
            "the database is backed up ({}{}), its media is not",
            store.location(),
            manifest.key
        )
    })?;
    if let Some(m) = &media {
        printer.success(&format!("media: {}", m.describe()));
    }
    Ok(Backed { manifest, media })
}

/// Dump `db`'s database into `store` under the stamp of `now` and prove the stored
/// object is what was sent. The manifest's counts are read in the very snapshot
/// pg_dump dumps, so writes going on meanwhile are in neither or in both. Interrupted
/// (Ctrl-C, SIGTERM) or failed, it leaves no object and no temporary file behind.
async fn backup_db(
    db: &Db,
    env: &str,
    store: &Store,
    compress: Compress,
    now: OffsetDateTime,
    printer: &Printer,
) -> anyhow::Result<Manifest> {
    let interrupt = Interrupt::get()?;
    let key = new_key(now, compress);
    if store.exists(&key).await? {
        return Err(BackupError::Exists(key).into());
    }
    let spinner = printer.spinner(&format!(
        "dumping {} into {}{key}",
        db.name,
        store.location()
    ));
    let started = std::time::Instant::now();
    let mut upload = store.upload(&key).await?;
    let dumped = tokio::select! {
        r = census_and_dump(db, compress, &mut upload) => r,
        _ = interrupt.wait() => Err(BackupError::Interrupted.into()),
    };
    spinner.finish_and_clear();
    let (census, sha256, size) = match dumped {
        Ok(v) => v,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    let stored = tokio::select! {
        r = commit_and_check(store, &key, upload, size, &sha256) => r,
        _ = interrupt.wait() => Err(BackupError::Interrupted.into()),
    };
    if let Err(e) = stored {
        // A key that appeared during the upload is someone else's object: never ours to delete.
        let theirs = matches!(
            e.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::Exists { .. })
        );
        if !theirs {
            let _ = store.delete(&key).await;
        }
        return Err(e);
    }
    let dump_seconds = started.elapsed().as_secs_f64();
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

/// Open one snapshot, count in it, and dump it into `sink`: (census, sha256, size). The
/// session that exported the snapshot stays open, idle in its transaction, until
/// pg_dump has finished.
async fn census_and_dump<W>(
    db: &Db,
    compress: Compress,
    sink: &mut W,
) -> anyhow::Result<(Census, String, u64)>
where
    W: AsyncWrite + Unpin + Send,
{
    let snapshot = db.export_snapshot(&db.name).await?;
    let census = db.census_at(&db.name, Some(&snapshot.id)).await?;
    let (sha256, size) = dump_into(db, compress, &snapshot.id, sink).await?;
    // pg_dump has read all it needs; the read-only transaction only has to end.
    let _ = snapshot.release().await;
    Ok((census, sha256, size))
}

/// Commit the upload and prove the store holds what was sent.
async fn commit_and_check(
    store: &Store,
    key: &str,
    upload: Upload,
    size: u64,
    sha256: &str,
) -> anyhow::Result<()> {
    upload.commit().await?;
    check_stored(store, key, size, sha256).await
}

/// The arguments of pg_dump for a dump of `db` as of `snapshot`, with compression
/// `level` (`-Z6`, `-Z0`).
fn dump_command(db: &Db, level: &str, snapshot: &str) -> Vec<String> {
    dump_command_args(&db.user, &db.name, level, snapshot)
}

pub(crate) fn dump_command_args(
    user: &str,
    database: &str,
    level: &str,
    snapshot: &str,
) -> Vec<String> {
    [
        "pg_dump",
        "-Fc",
        level,
        &format!("--snapshot={snapshot}"),
        "-U",
        user,
        "-d",
        database,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Stream pg_dump's output (of `snapshot`) through `compress` and a hash into `sink`;
/// (sha256, size).
async fn dump_into<W>(
    db: &Db,
    compress: Compress,
    snapshot: &str,
    sink: &mut W,
) -> anyhow::Result<(String, u64)>
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
    let owned = dump_command(db, level, snapshot);
    let cmd: Vec<&str> = owned.iter().map(String::as_str).collect();
    stream_dump(db, &cmd, compress, sink).await
}

/// Run the dump program `cmd` in the db container and stream its output through
/// `compress` and a hash into `sink`; (sha256, size of what `sink` got).
pub(crate) async fn stream_dump<W>(
    db: &Db,
    cmd: &[&str],
    compress: Compress,
    sink: &mut W,
) -> anyhow::Result<(String, u64)>
where
    W: AsyncWrite + Unpin + Send,
{
    let mut hashing = HashingWriter::new(sink);
    let (code, stderr, written) = match compress {
        Compress::None => db.dump_to(cmd, &mut hashing).await?,
        Compress::Gzip => encode(db, cmd, GzipEncoder::new(&mut hashing)).await?,
        Compress::Zstd => encode(db, cmd, ZstdEncoder::new(&mut hashing)).await?,
        Compress::Xz => encode(db, cmd, XzEncoder::new(&mut hashing)).await?,
        Compress::Bzip2 => encode(db, cmd, BzEncoder::new(&mut hashing)).await?,
        Compress::Lrzip => lrzip_into(db, cmd, &mut hashing).await?,
    };
    if code != 0 {
        return Err(BackupError::DumpFailed(stderr.trim().to_string()).into());
    }
    written?;
    hashing.shutdown().await?;
    let (sha, size, _) = hashing.finish();
    Ok((sha, size))
}

/// A private temporary directory (mode 0700) for lrzip's output, under `TMPDIR`. It is
/// removed when dropped: on success, on failure, and when the backup is interrupted
/// (the future holding it is dropped).
fn private_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("countable-lrzip-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

/// lrzip 0.651 writes corrupt LZMA streams to stdout for small inputs (its file output
/// is sound), so it writes a file (mode 0600: umask 077) in a private directory, which
/// is also its `TMPDIR`; the file is then streamed into `sink`, and the directory
/// removed.
async fn lrzip_into<W>(
    db: &Db,
    cmd: &[&str],
    sink: &mut W,
) -> anyhow::Result<(i64, String, std::io::Result<u64>)>
where
    W: AsyncWrite + Unpin + Send,
{
    if !process::exists("lrzip") {
        return Err(crate::archive::ArchiveError::LrzipMissing.into());
    }
    let dir = private_dir()?;
    let dir_s = dir.path().display().to_string();
    let file = dir.path().join("backup.lrz");
    let file_s = file.display().to_string();
    let (mut into_lrzip, from_dump) = tokio::io::duplex(256 * 1024);
    let (mut chatter, filter) = process::spawn_filter(
        "sh",
        &[
            "-c",
            "umask 077 && export TMPDIR=\"$2\" && exec lrzip -q -f -o \"$1\"",
            "sh",
            &file_s,
            &dir_s,
        ],
        from_dump,
    )?;
    let dump = async {
        let r = db.dump_to(cmd, &mut into_lrzip).await;
        let _ = into_lrzip.shutdown().await;
        r
    };
    let mut void = tokio::io::sink();
    let (r, _) = tokio::join!(dump, tokio::io::copy(&mut chatter, &mut void));
    drop(into_lrzip);
    let finished = filter.finish().await;
    let copied = match (&r, &finished) {
        (Ok(_), Ok(())) => match tokio::fs::File::open(&file).await {
            Ok(mut f) => tokio::io::copy(&mut f, sink).await.map(|_| ()),
            Err(e) => Err(e),
        },
        _ => Ok(()),
    };
    dir.close()?;
    finished?;
    copied?;
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lrzip_directory_is_private_and_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_dir().unwrap();
        let path = dir.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(path.join("backup.lrz"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn pg_dump_dumps_the_exported_snapshot() {
        let cmd = dump_command_args("app", "shop", "-Z0", "00000003-0000001B-1");
        assert_eq!(
            cmd,
            [
                "pg_dump",
                "-Fc",
                "-Z0",
                "--snapshot=00000003-0000001B-1",
                "-U",
                "app",
                "-d",
                "shop"
            ]
        );
    }
}
