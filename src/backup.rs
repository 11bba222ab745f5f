//! Backups with proof. `backup`: the whole database of an environment, dumped by the
//! pg_dump inside its db container (custom format, version-matched), streamed through
//! optional compression and SHA-256 into the environment's store under a new UTC
//! timestamped key, then checked against what the store holds, with a manifest beside
//! it. Retention is in `retention`, the drill (`verify-backup`) is in `drill`.
//!
//! Nothing here overwrites a stored backup; a failed backup leaves no object behind.

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
            BackupError::DumpFailed(_) => "check the environment's database: `countable status`, or the db container's log".into(),
            BackupError::Mismatch(_) => "the store changed the object: run the backup again, and check the store".into(),
            BackupError::NoRetention => "say what to keep, e.g. `--keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6`".into(),
        })
    }
}

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
