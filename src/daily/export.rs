//! `countable export-db [FILE|-]`: the local database, dumped by the pg_dump inside its
//! container (so the versions match), streamed through the compression its file name
//! asks for (`.gz`, `.zst`, `.xz`, `.bz2`, `.lrz`) into the file or stdout, with a byte
//! counter. Custom format by default (what `pg_restore` reads, selectively and in
//! parallel), plain SQL with `--format plain`. `import-db` reads both back.
//!
//! A file appears whole or not at all: the dump goes to a private `.part` file beside
//! it (mode 0600: it is the project's data), which is flushed and renamed at the end
//! and removed on any failure, Ctrl-C included. An existing file is replaced only with `--force`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::backup::{BackupError, Compress};
use crate::environment::Local;
use crate::error::Hinted;
use crate::interrupt::Interrupt;
use crate::store::dir::sibling;
use crate::ui::{self, Printer};

/// The dump's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// pg_dump's custom format (`pg_restore`)
    #[default]
    Custom,
    /// Plain SQL (`psql`)
    Plain,
}

/// Where the dump goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    File(PathBuf),
    Stdout,
}

impl Target {
    pub fn parse(arg: &Path) -> Self {
        if arg.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(arg.to_path_buf())
        }
    }
}

/// The default file name: `<project>-<UTC stamp>.dump` (custom) or `.sql.gz` (plain).
pub fn default_name(project: &str, format: Format, now: time::OffsetDateTime) -> PathBuf {
    let ext = match format {
        Format::Custom => "dump",
        Format::Plain => "sql.gz",
    };
    PathBuf::from(format!("{project}-{}.{ext}", crate::backup::stamp(now)))
}

/// pg_dump's arguments: the custom format compresses itself (zlib) only when nothing
/// else does.
pub fn dump_args(user: &str, database: &str, format: Format, compress: Compress) -> Vec<String> {
    let mut v: Vec<String> = vec!["pg_dump".into()];
    match format {
        Format::Custom if compress == Compress::None => v.extend(["-Fc".into(), "-Z6".into()]),
        Format::Custom => v.extend(["-Fc".into(), "-Z0".into()]),
        Format::Plain => v.push("-Fp".into()),
    }
    v.extend(["-U".into(), user.into(), "-d".into(), database.into()]);
    v
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The file, or `-` for stdout.
    pub file: String,
    pub database: String,
    pub format: Format,
    pub compression: Compress,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

/// Dump the local database into `target`. `compress` overrides what the file name asks for.
pub async fn export(
    local: &mut Local,
    printer: &Printer,
    target: &Target,
    format: Format,
    compress: Option<Compress>,
    force: bool,
) -> anyhow::Result<Exported> {
    let compress = compress.unwrap_or(match target {
        Target::File(p) => Compress::for_name(p),
        Target::Stdout => Compress::None,
    });
    if let Target::File(path) = target {
        if path.exists() && !force {
            return Err(Hinted::new(
                format!("{} exists already", path.display()),
                format!(
                    "name another file, or replace it: `countable export-db {} --force`",
                    path.display()
                ),
            )
            .into());
        }
    }
    let db = local.local_db(printer).await?;
    let args = dump_args(&db.user, &db.name, format, compress);
    let cmd: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let label = match target {
        Target::File(p) => p.display().to_string(),
        Target::Stdout => "-".into(),
    };
    let interrupt = Interrupt::get()?;
    let bar = printer.bytes_bar(None, &format!("exporting {} to {label}", db.name));
    let (sha256, bytes) = match target {
        Target::Stdout => {
            let mut out = bar.wrap_async_write(tokio::io::stdout());
            let r = tokio::select! {
                r = crate::backup::stream_dump(&db, &cmd, compress, &mut out) => r,
                _ = interrupt.wait() => Err(interrupted()),
            };
            bar.finish_and_clear();
            r.map_err(explain)?
        }
        Target::File(path) => {
            let part = sibling(path, "part");
            // Ctrl-C is raced, so the .part file goes on every way out.
            let r = tokio::select! {
                r = into_file(&db, &cmd, compress, &part, path, &bar) => r,
                _ = interrupt.wait() => Err(interrupted()),
            };
            bar.finish_and_clear();
            if r.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            r.map_err(explain)?
        }
    };
    Ok(Exported {
        file: label,
        database: db.name.clone(),
        format,
        compression: compress,
        bytes,
        sha256,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn interrupted() -> anyhow::Error {
    Hinted::new(
        "the export was interrupted; no file was written",
        "run it again when it may finish",
    )
    .into()
}

/// pg_dump's failure, said of the local database.
fn explain(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<BackupError>() {
        Ok(BackupError::DumpFailed(why)) => Hinted::new(
            format!("pg_dump failed in the local db container: {why}"),
            "see `countable logs db`; `countable doctor` checks the database",
        )
        .into(),
        Ok(other) => other.into(),
        Err(e) => e,
    }
}

/// Stream the dump into `part`, flush it to disk and rename it to `path`.
async fn into_file(
    db: &crate::restore::Db,
    cmd: &[&str],
    compress: Compress,
    part: &Path,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(String, u64)> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let on_disk = file
        .try_clone()
        .await
        .with_context(|| format!("opening {}", part.display()))?;
    let mut out = bar.wrap_async_write(file);
    let r = crate::backup::stream_dump(db, cmd, compress, &mut out).await?;
    out.flush().await?;
    drop(out);
    on_disk
        .sync_all()
        .await
        .with_context(|| format!("flushing {}", part.display()))?;
    std::fs::rename(part, path)
        .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
    Ok(r)
}

/// The summary line of an export.
pub fn describe(e: &Exported) -> String {
    let format = match e.format {
        Format::Custom => "custom format",
        Format::Plain => "plain SQL",
    };
    let compression = match e.compression {
        Compress::None => String::new(),
        c => format!(", {}", c.suffix().trim_start_matches('.')),
    };
    format!(
        "exported {} to {} ({}, {format}{compression}, {:.1} s)",
        e.database,
        e.file,
        ui::human_bytes(e.bytes),
        e.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_chooses_the_compression() {
        for (name, c) in [
            ("shop.dump", Compress::None),
            ("shop.sql", Compress::None),
            ("shop.sql.gz", Compress::Gzip),
            ("shop.dump.zst", Compress::Zstd),
            ("shop.sql.xz", Compress::Xz),
            ("shop.dump.bz2", Compress::Bzip2),
            ("shop.dump.lrz", Compress::Lrzip),
        ] {
            assert_eq!(Compress::for_name(Path::new(name)), c, "{name}");
        }
    }

    #[test]
    fn custom_compresses_itself_only_alone() {
        let alone = dump_args("u", "d", Format::Custom, Compress::None);
        assert!(alone.contains(&"-Z6".to_string()), "{alone:?}");
        let zstd = dump_args("u", "d", Format::Custom, Compress::Zstd);
        assert!(zstd.contains(&"-Z0".to_string()), "{zstd:?}");
        let plain = dump_args("u", "d", Format::Plain, Compress::Gzip);
        assert_eq!(plain, ["pg_dump", "-Fp", "-U", "u", "-d", "d"]);
    }
}
