//! Feeding a decoded dump to the container's own psql or pg_restore, per dump kind:
//! plain SQL through the filter into one transaction, custom and tar archives streamed
//! after their TOC (or spooled for `--jobs`), directory dumps extracted into the volume.

use anyhow::Context;

use super::container::{self, Bounded, Scratch};
use super::db::{ident, Db};
use super::{custom, plain, Options, RestoreError, Restored};
use crate::archive::{self, DumpKind, Reader};
use crate::engine::StreamedExec;

/// Bytes of a custom archive spooled into the container to read its TOC.
const TOC_HEAD: u64 = 16 * 1024 * 1024;
/// The largest `pg_restore -l` listing countable reads (about 300,000 entries).
const TOC_LIST_MAX: usize = 32 * 1024 * 1024;
/// Bytes of a plain dump read to find its header facts.
const SQL_HEAD: usize = 1024 * 1024;

/// Feeding a tool failed. A broken or reset pipe means the tool stopped first (its own
/// error says why); anything else is the backup's bytes failing (cut, corrupt).
fn source_failed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    !matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

async fn create_database(db: &Db, name: &str, template: Option<&str>) -> anyhow::Result<()> {
    let template = template.unwrap_or("template0");
    db.sql(
        "postgres",
        &format!(
            "CREATE DATABASE {} TEMPLATE {}",
            ident(name),
            ident(template)
        ),
    )
    .await
    .map(|_| ())
}

fn check_extensions(needed: &[String], available: &[String]) -> Result<(), RestoreError> {
    let missing: Vec<String> = needed
        .iter()
        .filter(|n| n.as_str() != "plpgsql" && !available.contains(n))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::MissingExtensions(missing))
    }
}

/// Does the restore of `kind` run in one transaction (plain SQL; custom and tar
/// archives streamed; a directory dump with one job)? On a `wal_level=minimal` server
/// the tables it creates, and their indexes, are then written without WAL and synced by
/// its COMMIT.
pub(super) fn one_transaction(kind: DumpKind, opts: &Options) -> bool {
    match kind {
        DumpKind::Plain | DumpKind::Tar => true,
        DumpKind::Custom | DumpKind::Directory => opts.jobs <= 1,
    }
}

/// Must an archive meant for one transaction (`one`) be restored with a commit per
/// object instead? The locks one transaction holds until its COMMIT must fit the
/// server's lock table, or it fails part-way with "out of shared memory" (past about
/// 1,500 tables with a key and a sequence each, at the defaults); past that, it is
/// restored as `pg_restore` does by default, its data through the WAL. Returns the
/// note that says so. A plain dump's size is not known before it streams; its failure
/// says what to do (`RestoreError::TooManyLocks`).
pub(super) fn per_object(one: bool, toc: &custom::Toc, db: &Db) -> Option<String> {
    (one && toc.locks > db.lock_slots).then(|| {
        format!(
            "restored with a commit per object: the archive takes up to {} locks, more than one transaction can hold on this server (its lock table: {}, max_locks_per_transaction × backends); the new database becomes current only once verified",
            crate::ui::count(toc.locks),
            crate::ui::count(db.lock_slots)
        )
    })
}

/// psql or pg_restore failed with `stderr`: out of lock slots has its own hint (read
/// in the whole text: the statement pg_restore quotes after it can be long).
fn failed(tool: &'static str, stderr: &str) -> RestoreError {
    let out_of_locks = stderr.contains("max_locks_per_transaction");
    let stderr = tail(stderr);
    if out_of_locks {
        RestoreError::TooManyLocks { tool, stderr }
    } else {
        RestoreError::Failed { tool, stderr }
    }
}

/// Restore the decoded dump into the new database `new`; `stored_size` is the size of
/// the bytes as stored, the dump's own size when nothing was peeled off (for the
/// `--jobs` space check).
pub(super) async fn restore_into(
    db: &Db,
    decoded: archive::Decoded,
    new: &str,
    opts: &Options,
    stored_size: Option<u64>,
) -> anyhow::Result<Restored> {
    let known_size = stored_size.filter(|_| decoded.layers.is_empty());
    let archive::Decoded {
        reader,
        kind,
        finisher,
        ..
    } = decoded;
    match kind {
        DumpKind::Plain => restore_plain(db, reader, finisher, new, opts).await,
        DumpKind::Custom | DumpKind::Tar => {
            restore_custom(db, reader, finisher, new, opts, kind, known_size).await
        }
        DumpKind::Directory => restore_directory(db, reader, finisher, new, opts, known_size).await,
    }
}

/// A plain SQL dump: filtered (ownership and unsafe psql commands) into psql, in one
/// transaction, ending with the trailer.
async fn restore_plain(
    db: &Db,
    reader: Reader,
    finisher: archive::Finisher,
    new: &str,
    opts: &Options,
) -> anyhow::Result<Restored> {
    let (head, reader) = archive::peek(reader, SQL_HEAD)
        .await
        .map_err(archive::damaged)?;
    let header = plain::inspect(&head);
    check_extensions(&header.extensions, &db.available_extensions().await?)?;
    let filter = plain::FilterOptions {
        strip_restrict: header.restrict && !plain::psql_knows_restrict(db.tools_version),
        strip_transaction_timeout: db.server_major() < 17,
    };
    create_database(db, new, opts.template.as_deref()).await?;
    let (pipe_in, pipe_out) = tokio::io::duplex(256 * 1024);
    let filtering = plain::filter(reader, pipe_in, filter);
    let cmd = [
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-U",
        &db.user,
        "-d",
        new,
    ];
    let psql = db.exec(&cmd, Some(pipe_out));
    let (stats, run) = tokio::join!(filtering, psql);
    let run = run?;
    let stats = match stats {
        Ok(s) => Some(s),
        Err(e) if source_failed(&e) => return Err(archive::damaged(e).into()),
        Err(_) => None,
    };
    if let Some(line) = stats.as_ref().and_then(|s| s.rejected.clone()) {
        return Err(RestoreError::Unsafe(line).into());
    }
    if run.code != 0 {
        return Err(failed("psql", &run.stderr).into());
    }
    finish(finisher).await?;
    let stats = stats.context("psql stopped reading the dump")?;
    if !stats.trailer {
        return Err(
            RestoreError::Truncated(format!("no `{}` line at its end", plain::TRAILER)).into(),
        );
    }
    Ok(Restored {
        expected_tables: stats.tables,
        rows: (!stats.inserts).then_some(stats.rows),
        note: None,
    })
}

/// Refuse an archive of `version` that the container's pg_restore cannot read.
fn check_version(db: &Db, version: (u8, u8, u8)) -> Result<(), RestoreError> {
    let local = db.tools_version.0;
    if version > custom::max_archive_for(local) {
        return Err(RestoreError::TooNew {
            archive: version,
            release: custom::release_for(version),
            local,
        });
    }
    Ok(())
}

/// The TOC of the archive at `path` in the container (see `read_toc`).
async fn list_toc(db: &Db, path: &str, list_path: &str) -> anyhow::Result<custom::Toc> {
    let listed = db
        .exec_capped(
            &["pg_restore", "-l", path],
            None::<tokio::io::Empty>,
            TOC_LIST_MAX,
        )
        .await?;
    read_toc(db, &listed, list_path).await
}

/// A TOC as `pg_restore -l` printed it (`listed`): parsed, extensions checked, and the
/// filtered list written to `list_path` for `pg_restore -L`.
async fn read_toc(db: &Db, listed: &StreamedExec, list_path: &str) -> anyhow::Result<custom::Toc> {
    if listed.truncated {
        anyhow::bail!(
            "the archive's table of contents is larger than countable reads ({} MiB)",
            TOC_LIST_MAX >> 20
        );
    }
    if listed.code != 0 {
        return Err(RestoreError::Truncated(format!(
            "pg_restore cannot read its table of contents: {}",
            tail(&listed.stderr)
        ))
        .into());
    }
    let toc = custom::parse_list(&listed.stdout);
    check_extensions(&toc.extensions, &db.available_extensions().await?)?;
    container::write_file(
        db,
        list_path,
        custom::filter_list(&listed.stdout).into_bytes(),
    )
    .await?;
    Ok(toc)
}

/// pg_restore's exit, as the playbook's outcome (with `note` for the summary).
fn restored_by_pg_restore(
    run: &StreamedExec,
    toc: &custom::Toc,
    note: Option<String>,
) -> anyhow::Result<Restored> {
    if run.code != 0 {
        return Err(failed("pg_restore", &run.stderr).into());
    }
    Ok(Restored {
        expected_tables: toc.tables,
        rows: None,
        note,
    })
}

/// pg_restore's options for a local restore of the listed entries into `new`.
fn pg_restore_args<'a>(db: &'a Db, new: &'a str, list: &'a str) -> [&'a str; 9] {
    [
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "-U",
        &db.user,
        "-d",
        new,
        "-L",
        list,
    ]
}

/// A custom- or tar-format archive: its start (where the TOC is) is spooled into the
/// container so the container's own pg_restore lists it; the rest streams after it
/// (or, with --jobs, the whole archive is spooled into the volume first, after a
/// free-space check against its size, and bounded by the free space while it goes).
async fn restore_custom(
    db: &Db,
    mut reader: Reader,
    finisher: archive::Finisher,
    new: &str,
    opts: &Options,
    kind: DumpKind,
    known_size: Option<u64>,
) -> anyhow::Result<Restored> {
    use tokio::io::AsyncReadExt;
    // A tar-format archive's toc.dat, and its header, follow the first tar header.
    let at = if kind == DumpKind::Tar { 512 } else { 0 };
    let (head, r) = archive::peek(reader, at + 16)
        .await
        .map_err(archive::damaged)?;
    reader = r;
    let version = custom::archive_version(head.get(at..).unwrap_or_default())
        .context("not a pg_dump archive")?;
    check_version(db, version)?;
    let scratch = Scratch::new();
    let result = async {
        let mut listed = container::spool_head_and_list(
            db,
            &scratch.head,
            (&mut reader).take(TOC_HEAD),
            TOC_LIST_MAX,
        )
        .await?;
        std::mem::replace(&mut listed.fed, Ok(0)).map_err(archive::damaged)?;
        let toc = read_toc(db, &listed, &scratch.list).await?;
        create_database(db, new, opts.template.as_deref()).await?;
        let base = pg_restore_args(db, new, &scratch.list);
        // pg_restore runs tar-format archives with one job only.
        let streamed = one_transaction(kind, opts);
        let note = per_object(streamed, &toc, db);
        let run = if !streamed {
            let free = container::free_bytes(db).await?;
            if let Some(size) = known_size {
                container::check_space(size, free)?;
            }
            let mut bounded = Bounded::new(&mut reader, free);
            let mut spooled =
                container::spool_archive(db, &scratch.head, &scratch.spool, &mut bounded).await?;
            fed(std::mem::replace(&mut spooled.fed, Ok(0)))?;
            finish(finisher).await?;
            container::pg_restore_spooled(db, &scratch.spool, opts.jobs, &base).await?
        } else {
            // One transaction, as the plain path: on a server with `wal_level=minimal`
            // (the dev override's db), the data of tables it created, and their
            // indexes, skip the WAL. Unless its locks would not fit.
            let single: &[&str] = if note.is_some() {
                &[]
            } else {
                &["--single-transaction"]
            };
            let args = [single, &base].concat();
            let mut run = container::pg_restore_streamed(
                db,
                &scratch.head,
                &scratch.list,
                &args,
                &mut reader,
            )
            .await?;
            std::mem::replace(&mut run.fed, Ok(0)).map_err(archive::damaged)?;
            finish(finisher).await?;
            run
        };
        restored_by_pg_restore(&run, &toc, note).map(|r| (r, streamed))
    }
    .await;
    // The streamed pg_restore removed its scratch files as it ended.
    if !matches!(result, Ok((_, true))) {
        container::remove(db, &[&scratch.head, &scratch.list, &scratch.spool]).await;
    }
    result.map(|(r, _)| r)
}

/// How feeding a spool ended: out of room is a space error, the rest a damaged backup.
fn fed(r: std::io::Result<u64>) -> anyhow::Result<u64> {
    r.map_err(|e| match container::spool_full(&e) {
        Some(full) => full.into(),
        None => archive::damaged(e).into(),
    })
}

/// A directory-format dump in a tar: extracted into the db container's volume (after
/// the same space checks as a spool), then restored from there (in one transaction, or
/// in parallel with --jobs).
async fn restore_directory(
    db: &Db,
    reader: Reader,
    finisher: archive::Finisher,
    new: &str,
    opts: &Options,
    known_size: Option<u64>,
) -> anyhow::Result<Restored> {
    let scratch = Scratch::new();
    let free = container::free_bytes(db).await?;
    if let Some(size) = known_size {
        container::check_space(size, free)?;
    }
    let result = async {
        let mut extracted =
            container::extract_directory(db, &scratch.dir, Bounded::new(reader, free)).await?;
        fed(std::mem::replace(&mut extracted.fed, Ok(0)))?;
        finish(finisher).await?;
        if extracted.code != 0 {
            return Err(archive::ArchiveError::Damaged(format!(
                "extracting the directory dump failed: {}",
                tail(&extracted.stderr)
            ))
            .into());
        }
        let path = extracted.stdout.trim().to_string();
        let header = container::head_bytes(db, &format!("{path}/toc.dat"), 8).await?;
        let version = custom::archive_version(header.as_bytes())
            .context("the directory dump has no valid toc.dat")?;
        check_version(db, version)?;
        let toc = list_toc(db, &path, &scratch.list).await?;
        create_database(db, new, opts.template.as_deref()).await?;
        let jobs = opts.jobs.to_string();
        // One job: one transaction, as every one-job restore (see `one_transaction`),
        // when its locks fit.
        let one = one_transaction(DumpKind::Directory, opts);
        let note = per_object(one, &toc, db);
        let parallel: [&str; 2] = if note.is_some() {
            ["-j", "1"]
        } else if one {
            ["--single-transaction", "-j1"]
        } else {
            ["-j", &jobs]
        };
        let run = db
            .exec(
                &[
                    &["pg_restore"][..],
                    &parallel,
                    &pg_restore_args(db, new, &scratch.list),
                    &[&path],
                ]
                .concat(),
                None::<tokio::io::Empty>,
            )
            .await?;
        restored_by_pg_restore(&run, &toc, note)
    }
    .await;
    container::remove(db, &[&scratch.dir, &scratch.list]).await;
    result
}

/// Decoder programs must have ended well: a failing lrzip means a damaged backup.
async fn finish(finisher: archive::Finisher) -> Result<(), archive::ArchiveError> {
    finisher
        .finish()
        .await
        .map_err(|e| archive::ArchiveError::Damaged(format!("{e:#}")))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}
