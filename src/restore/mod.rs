//! The Postgres restore playbook: inspect the dump before touching anything, restore
//! into a new database beside the current one, verify, and only then swap names in one
//! transaction, keeping exactly one previous database for `undo-db`.
//!
//! Whatever fails (a bad backup, a cut download, a newer dump, a missing extension,
//! Ctrl-C) the current database is untouched and the half-made one is dropped.

pub mod custom;
pub mod db;
pub mod plain;

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncReadExt;

use crate::archive::{self, DumpKind, Reader};
use crate::compose::Compose;
use crate::engine::StreamedExec;
use crate::error::Hint;
use crate::ui::{self, Printer};

use db::{ident, literal};
pub use db::{Census, Db};

/// Bytes of a custom archive spooled into the container to read its TOC.
const TOC_HEAD: u64 = 16 * 1024 * 1024;
/// The largest `pg_restore -l` listing countable reads (about 300,000 entries).
const TOC_LIST_MAX: usize = 32 * 1024 * 1024;
/// Bytes of a plain dump read to find its header facts.
const SQL_HEAD: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the backup is a pg_dump archive version {}.{}.{} (PostgreSQL {}), newer than the local pg_restore {} can read", .archive.0, .archive.1, .archive.2, .release, .local)]
    TooNew {
        archive: (u8, u8, u8),
        release: &'static str,
        local: u32,
    },
    #[error("the dump needs extension(s) the local database image does not have: {}", .0.join(", "))]
    MissingExtensions(Vec<String>),
    #[error("the dump is truncated: {0}")]
    Truncated(String),
    #[error("{tool} failed while restoring: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error("the restored database has {got} tables, the dump has {expected}")]
    Verify { expected: u64, got: u64 },
    #[error("interrupted")]
    Interrupted,
    #[error("the dump holds a psql command countable will not run: `{0}` (a pg_dumpall file?)")]
    Unsafe(String),
    #[error("there is no previous database to go back to")]
    NoPrevious,
    #[error("not enough space in the db container to spool the archive for --jobs: {need} needed, {have} free")]
    SpoolSpace { need: String, have: String },
}

impl Hint for RestoreError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            RestoreError::TooNew { release, .. } => format!(
                "use a db image of PostgreSQL {release} (e.g. `image: postgres:17` in compose.yaml, then `countable up`), or restore a dump made by an older pg_dump"
            ),
            RestoreError::MissingExtensions(names) => {
                if names.iter().any(|n| n.starts_with("postgis")) {
                    "use a PostGIS image for the db service (e.g. `image: postgis/postgis:17-3.5` in compose.yaml), then `countable up`".into()
                } else {
                    "use a db image that ships these extensions (set `image:` of the db service in compose.yaml), then `countable up`".into()
                }
            }
            RestoreError::Truncated(_) => "the backup is incomplete: pick an older one with `--backup KEY` (see `countable backups <env>`)".into(),
            RestoreError::Failed { .. } => "your database is unchanged; read the error above, or try an older backup with `--backup KEY`".into(),
            RestoreError::Verify { .. } => "your database is unchanged; the backup may be damaged: try another with `--backup KEY`".into(),
            RestoreError::Interrupted => "your database is unchanged; run the command again to restore".into(),
            RestoreError::Unsafe(_) => "restore a single database's dump (`pg_dump`), not `pg_dumpall` output or a script".into(),
            RestoreError::NoPrevious => "`countable pull-db` keeps the database it replaces; there was none (or it was dropped with --no-keep)".into(),
            RestoreError::SpoolSpace { .. } => "free space in the db container's volume, or restore without --jobs (streamed)".into(),
        })
    }
}

/// Where the bytes come from.
pub struct Source {
    /// Shown to the user: `s3://…/x.tar.lrz`, a path, `stdin`.
    pub label: String,
    pub reader: Reader,
    pub size: Option<u64>,
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep the replaced database as the previous one (for `undo-db`).
    pub keep_previous: bool,
    /// Parallel pg_restore jobs for custom archives (spooled); 1 streams.
    pub jobs: u32,
    /// Non-durable server settings while restoring (a throwaway local database only).
    pub fast: bool,
    /// The template the new database is created from (default `template0`).
    pub template: Option<String>,
}

/// The local database and the app services that use it.
pub struct Target {
    pub db: Db,
    pub compose: Compose,
    /// Services to stop during the swap (everything but the db that is running).
    pub app_services: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub format: String,
    pub kind: DumpKind,
    pub tables: u64,
    pub rows: u64,
    pub database_bytes: u64,
    pub transferred_bytes: u64,
    pub restore_seconds: f64,
    pub verify_seconds: f64,
    pub swap_seconds: f64,
    pub analyze_seconds: f64,
    pub previous_kept: bool,
}

fn new_name(db: &str) -> String {
    format!("{db}__countable_new")
}

pub fn previous_name(db: &str) -> String {
    format!("{db}__countable_prev")
}

/// What the restore step learnt.
struct Restored {
    expected_tables: u64,
}

/// Restore `source` into the target's database. See the module doc for the guarantees.
pub async fn restore(
    target: &Target,
    source: Source,
    opts: &Options,
    printer: &Printer,
) -> anyhow::Result<Summary> {
    let db = &target.db;
    let new = new_name(&db.name);
    if db.name.len() + "__countable_prev".len() > 63 {
        anyhow::bail!(
            "the database name `{}` is too long to restore beside it (PostgreSQL names have at most 63 bytes)",
            db.name
        );
    }
    let bar = printer.bytes_bar(source.size, &format!("restoring {}", source.label));
    let (reader, transferred) = ui::ProgressReader::new(source.reader, bar.clone());
    let started = Instant::now();
    let decoded = archive::decode(Box::pin(reader))
        .await
        .inspect_err(|_| bar.finish_and_clear())?;
    let format = decoded.describe();
    let kind = decoded.kind;
    bar.set_message(format!("restoring {} ({format})", source.label));
    // A leftover from a crash: never the user's database, always ours to drop.
    db.drop_database(&new).await?;
    let baseline = match opts.template.as_deref() {
        Some(t) if t != "template0" => db.table_count(t).await?,
        _ => 0,
    };
    let fast = if opts.fast {
        match Durability::relax(db).await {
            Ok(d) => Some(d),
            Err(e) => {
                let _ = Durability::default().restore(db).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    // Everything up to the swap can be interrupted and is undone on failure.
    let work = async {
        let restored = restore_into(db, decoded, &new, opts).await?;
        let restore_seconds = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = db.table_count(&new).await?;
        let expected = restored.expected_tables + baseline;
        if got != expected {
            return Err(RestoreError::Verify { expected, got }.into());
        }
        let verify_seconds = t.elapsed().as_secs_f64();
        if let Some(f) = &fast {
            f.restore(db).await?;
            // Written while fsync was off: flush it all to disk before it becomes current.
            db.sql("postgres", "CHECKPOINT").await?;
        }
        let t = Instant::now();
        db.sql(&new, "ANALYZE").await?;
        let analyze_seconds = t.elapsed().as_secs_f64();
        let counts = (got, db.row_count(&new).await?, db.size_bytes(&new).await?);
        Ok::<_, anyhow::Error>((restore_seconds, verify_seconds, analyze_seconds, counts))
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(RestoreError::Interrupted.into()),
    };
    bar.finish_and_clear();
    let (restore_seconds, verify_seconds, analyze_seconds, (tables, rows, database_bytes)) =
        match outcome {
            Ok(v) => v,
            Err(e) => return Err(undo_partial(db, &new, fast.as_ref(), e).await),
        };
    let t = Instant::now();
    swap(target, &new, printer).await?;
    if !opts.keep_previous {
        db.drop_database(&previous_name(&db.name)).await?;
    }
    let swap_seconds = t.elapsed().as_secs_f64();
    Ok(Summary {
        source: source.label,
        format,
        kind,
        tables,
        rows,
        database_bytes,
        transferred_bytes: transferred.load(std::sync::atomic::Ordering::Relaxed),
        restore_seconds,
        verify_seconds,
        swap_seconds,
        analyze_seconds,
        previous_kept: opts.keep_previous,
    })
}

/// After a failure: drop the half-made database, remove our files in the container, put
/// the server settings back; `e` is returned, with a note if dropping failed.
async fn undo_partial(
    db: &Db,
    new: &str,
    fast: Option<&Durability>,
    e: anyhow::Error,
) -> anyhow::Error {
    let dropped = db.drop_database(new).await;
    let _ = db
        .exec(
            &[
                "sh",
                "-c",
                "rm -rf /tmp/countable-* \"$PGDATA\"/countable-spool-* \"$PGDATA\"/countable-dir-*",
            ],
            None::<tokio::io::Empty>,
        )
        .await;
    if let Some(f) = fast {
        let _ = f.restore(db).await;
    }
    match dropped {
        Err(d) => e.context(format!(
            "(and dropping the half-restored {new} failed: {d})"
        )),
        Ok(()) => e,
    }
}

/// Feeding a tool failed. A broken or reset pipe means the tool stopped first (its own
/// error says why); anything else is the backup's bytes failing (cut, corrupt).
fn source_failed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    !matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

/// Restore `source` into a new database `name` on `db`, verified, with no swap and no
/// previous database: for drills in a disposable container. Returns the format.
pub async fn restore_fresh(
    db: &Db,
    source: Source,
    name: &str,
    opts: &Options,
) -> anyhow::Result<String> {
    let decoded = archive::decode(source.reader).await?;
    let format = decoded.describe();
    db.drop_database(name).await?;
    if opts.fast {
        // The container is thrown away afterwards: nothing to put back.
        Durability::relax(db).await?;
    }
    let restored = restore_into(db, decoded, name, opts).await?;
    let got = db.table_count(name).await?;
    if got != restored.expected_tables {
        return Err(RestoreError::Verify {
            expected: restored.expected_tables,
            got,
        }
        .into());
    }
    Ok(format)
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

async fn restore_into(
    db: &Db,
    decoded: archive::Decoded,
    new: &str,
    opts: &Options,
) -> anyhow::Result<Restored> {
    let archive::Decoded {
        reader,
        kind,
        finisher,
        ..
    } = decoded;
    match kind {
        DumpKind::Plain => restore_plain(db, reader, finisher, new, opts).await,
        DumpKind::Custom | DumpKind::Tar => {
            restore_custom(db, reader, finisher, new, opts, kind).await
        }
        DumpKind::Directory => restore_directory(db, reader, finisher, new, opts).await,
    }
}

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
        return Err(RestoreError::Failed {
            tool: "psql",
            stderr: tail(&run.stderr),
        }
        .into());
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

async fn write_file(db: &Db, path: &str, contents: Vec<u8>) -> anyhow::Result<()> {
    let wrote = db
        .exec(
            &["sh", "-c", "cat > \"$1\"", "sh", path],
            Some(std::io::Cursor::new(contents)),
        )
        .await?;
    if wrote.code != 0 {
        anyhow::bail!(
            "writing into the db container failed: {}",
            wrote.stderr.trim()
        );
    }
    Ok(())
}

/// The TOC of the archive at `path` in the container: parsed, extensions checked, and
/// the filtered list written to `list_path` for `pg_restore -L`.
async fn list_toc(db: &Db, path: &str, list_path: &str) -> anyhow::Result<custom::Toc> {
    let listed = db
        .exec_capped(
            &["pg_restore", "-l", path],
            None::<tokio::io::Empty>,
            TOC_LIST_MAX,
        )
        .await?;
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
    write_file(
        db,
        list_path,
        custom::filter_list(&listed.stdout).into_bytes(),
    )
    .await?;
    Ok(toc)
}

/// A custom- or tar-format archive: its start (where the TOC is) is spooled into the
/// container so the container's own pg_restore lists it; the rest streams after it
/// (or, with --jobs, the whole archive is spooled into the volume first).
async fn restore_custom(
    db: &Db,
    mut reader: Reader,
    finisher: archive::Finisher,
    new: &str,
    opts: &Options,
    kind: DumpKind,
) -> anyhow::Result<Restored> {
    // A tar-format archive's toc.dat, and its header, follow the first tar header.
    let at = if kind == DumpKind::Tar { 512 } else { 0 };
    let (head, r) = archive::peek(reader, at + 16)
        .await
        .map_err(archive::damaged)?;
    reader = r;
    let version = custom::archive_version(head.get(at..).unwrap_or_default())
        .context("not a pg_dump archive")?;
    check_version(db, version)?;
    let id = std::process::id();
    let head_path = format!("/tmp/countable-{id}.head");
    let list_path = format!("/tmp/countable-{id}.list");
    let spooled = db
        .exec(
            &["sh", "-c", "cat > \"$1\"", "sh", &head_path],
            Some((&mut reader).take(TOC_HEAD)),
        )
        .await?;
    if spooled.code != 0 {
        anyhow::bail!(
            "writing into the db container failed: {}",
            spooled.stderr.trim()
        );
    }
    spooled.fed.map_err(archive::damaged)?;
    let toc = list_toc(db, &head_path, &list_path).await?;
    create_database(db, new, opts.template.as_deref()).await?;
    let base = pg_restore_args(db, new, &list_path);
    // pg_restore runs tar-format archives with one job only.
    let run = if opts.jobs > 1 && kind == DumpKind::Custom {
        let spool = format!("countable-spool-{id}.dump");
        check_spool_space(db, Some(&head_path)).await?;
        let mut spooled = db
            .exec(
                &[
                    "sh",
                    "-c",
                    "cat \"$1\" - > \"$PGDATA/$2\"",
                    "sh",
                    &head_path,
                    &spool,
                ],
                Some(&mut reader),
            )
            .await?;
        std::mem::replace(&mut spooled.fed, Ok(0)).map_err(archive::damaged)?;
        if spooled.code != 0 {
            anyhow::bail!("spooling the archive failed: {}", spooled.stderr.trim());
        }
        finish(finisher).await?;
        let jobs = opts.jobs.to_string();
        let mut cmd =
            vec![
            "sh", "-c",
            "f=\"$PGDATA/$1\"; shift; pg_restore -j \"$@\" \"$f\"; rc=$?; rm -f \"$f\"; exit $rc",
            "sh", &spool, &jobs,
        ];
        cmd.extend(base);
        db.exec(&cmd, None::<tokio::io::Empty>).await?
    } else {
        let mut cmd = vec![
            "sh",
            "-c",
            "h=\"$1\"; shift; cat \"$h\" - | pg_restore \"$@\"",
            "sh",
            &head_path,
        ];
        cmd.extend(base);
        let mut run = db.exec(&cmd, Some(&mut reader)).await?;
        std::mem::replace(&mut run.fed, Ok(0)).map_err(archive::damaged)?;
        finish(finisher).await?;
        run
    };
    let _ = db
        .exec(
            &["rm", "-f", &head_path, &list_path],
            None::<tokio::io::Empty>,
        )
        .await;
    restored_by_pg_restore(&run, &toc)
}

/// pg_restore's exit, as the playbook's outcome.
fn restored_by_pg_restore(run: &StreamedExec, toc: &custom::Toc) -> anyhow::Result<Restored> {
    if run.code != 0 {
        return Err(RestoreError::Failed {
            tool: "pg_restore",
            stderr: tail(&run.stderr),
        }
        .into());
    }
    Ok(Restored {
        expected_tables: toc.tables,
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

/// A directory-format dump in a tar: extracted into the db container's volume, then
/// restored from there (in parallel with --jobs).
async fn restore_directory(
    db: &Db,
    reader: Reader,
    finisher: archive::Finisher,
    new: &str,
    opts: &Options,
) -> anyhow::Result<Restored> {
    let id = std::process::id();
    let dir = format!("countable-dir-{id}");
    let list_path = format!("/tmp/countable-{id}.list");
    check_spool_space(db, None).await?;
    let mut extracted = db
        .exec(
            &[
                "sh", "-c",
                "d=\"$PGDATA/$1\"; rm -rf \"$d\"; mkdir -p \"$d\" && tar -x -C \"$d\" && dirname \"$(find \"$d\" -name toc.dat | head -n 1)\"",
                "sh", &dir,
            ],
            Some(reader),
        )
        .await?;
    std::mem::replace(&mut extracted.fed, Ok(0)).map_err(archive::damaged)?;
    finish(finisher).await?;
    let cleanup = || async {
        let _ = db
            .exec(
                &[
                    "sh",
                    "-c",
                    "rm -rf \"$PGDATA/$1\" \"$2\"",
                    "sh",
                    &dir,
                    &list_path,
                ],
                None::<tokio::io::Empty>,
            )
            .await;
    };
    if extracted.code != 0 {
        cleanup().await;
        return Err(archive::ArchiveError::Damaged(format!(
            "extracting the directory dump failed: {}",
            tail(&extracted.stderr)
        ))
        .into());
    }
    let path = extracted.stdout.trim().to_string();
    let result = async {
        let header = db
            .exec(
                &["head", "-c", "8", &format!("{path}/toc.dat")],
                None::<tokio::io::Empty>,
            )
            .await?;
        let version = custom::archive_version(header.stdout.as_bytes())
            .context("the directory dump has no valid toc.dat")?;
        check_version(db, version)?;
        let toc = list_toc(db, &path, &list_path).await?;
        create_database(db, new, opts.template.as_deref()).await?;
        let jobs = opts.jobs.to_string();
        let run = db
            .exec(
                &[
                    &["pg_restore", "-j", &jobs][..],
                    &pg_restore_args(db, new, &list_path),
                    &[&path],
                ]
                .concat(),
                None::<tokio::io::Empty>,
            )
            .await?;
        restored_by_pg_restore(&run, &toc)
    }
    .await;
    cleanup().await;
    result
}

/// The spool for `--jobs` goes into the data volume: refuse early when it cannot fit
/// (estimated from the part already written: the whole archive is unknown in advance,
/// so at least 4× the head and 1 GiB must be free).
async fn check_spool_space(db: &Db, head_path: Option<&str>) -> anyhow::Result<()> {
    let out = db
        .exec(
            &[
                "sh",
                "-c",
                "df -Pk \"$PGDATA\" | awk 'NR==2 {print $4}'; [ -z \"$1\" ] || stat -c %s \"$1\"",
                "sh",
                head_path.unwrap_or(""),
            ],
            None::<tokio::io::Empty>,
        )
        .await?;
    let mut lines = out.stdout.lines();
    let free_kib: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX / 2048);
    let head: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let need = (head * 4).max(1024 * 1024 * 1024);
    if free_kib * 1024 < need {
        return Err(RestoreError::SpoolSpace {
            need: ui::human_bytes(need),
            have: ui::human_bytes(free_kib * 1024),
        }
        .into());
    }
    Ok(())
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

/// Server settings relaxed while restoring into a throwaway local database, and how
/// they were before (values set with ALTER SYSTEM are put back, others reset).
#[derive(Default)]
pub struct Durability {
    prior: Vec<(String, String)>,
}

const RELAXED: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("autovacuum", "off"),
    ("max_wal_size", "4GB"),
    ("maintenance_work_mem", "256MB"),
];

/// `off` vs `off`, `4GB` vs `4096` (MB, as pg_file_settings may show it).
fn relaxed_equal(seen: &str, ours: &str) -> bool {
    seen.eq_ignore_ascii_case(ours)
        || (ours == "4GB" && seen == "4096")
        || (ours == "256MB" && seen == "262144")
}

impl Durability {
    pub async fn relax(db: &Db) -> anyhow::Result<Self> {
        let names: Vec<String> = RELAXED.iter().map(|(n, _)| literal(n)).collect();
        let prior = db
            .sql(
                "postgres",
                &format!(
                    "SELECT name || '=' || setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' AND name IN ({})",
                    names.join(", ")
                ),
            )
            .await?
            .lines()
            .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
            // A value equal to ours is a leftover of a run that was killed: not the user's.
            .filter(|(n, v)| !RELAXED.iter().any(|(rn, rv)| rn == n && relaxed_equal(v, rv)))
            .collect();
        let mut sql: String = RELAXED
            .iter()
            .map(|(n, v)| format!("ALTER SYSTEM SET {n} = {};\n", literal(v)))
            .collect();
        sql.push_str("SELECT pg_reload_conf();\n");
        db.sql("postgres", &sql).await?;
        Ok(Self { prior })
    }

    pub async fn restore(&self, db: &Db) -> anyhow::Result<()> {
        let mut sql = String::new();
        for (name, _) in RELAXED {
            match self.prior.iter().find(|(n, _)| n == name) {
                Some((_, v)) => {
                    sql.push_str(&format!("ALTER SYSTEM SET {name} = {};\n", literal(v)))
                }
                None => sql.push_str(&format!("ALTER SYSTEM RESET {name};\n")),
            }
        }
        sql.push_str("SELECT pg_reload_conf();\n");
        db.sql("postgres", &sql).await.map(|_| ())
    }
}

/// Stop the app services, rename current → previous and new → current in one
/// transaction, start the services again (also when the swap failed).
async fn swap(target: &Target, new: &str, printer: &Printer) -> anyhow::Result<()> {
    let db = &target.db;
    let prev = previous_name(&db.name);
    let current_exists = db.exists(&db.name).await?;
    let renames = if current_exists {
        format!(
            "BEGIN;\nALTER DATABASE {} RENAME TO {};\nALTER DATABASE {} RENAME TO {};\nCOMMIT;\n",
            ident(&db.name),
            ident(&prev),
            ident(new),
            ident(&db.name)
        )
    } else {
        format!(
            "ALTER DATABASE {} RENAME TO {};\n",
            ident(new),
            ident(&db.name)
        )
    };
    with_apps_stopped(target, printer, async {
        db.drop_database(&prev).await?;
        rename_with_retry(db, &[&db.name, &prev, new], &renames).await
    })
    .await
}

/// Swap the current database with the previous one (undo the last restore).
pub async fn undo(target: &Target, printer: &Printer) -> anyhow::Result<()> {
    let db = &target.db;
    let prev = previous_name(&db.name);
    if !db.exists(&prev).await? {
        return Err(RestoreError::NoPrevious.into());
    }
    let tmp = format!("{}__countable_swap", db.name);
    let renames = format!(
        "BEGIN;\nALTER DATABASE {cur} RENAME TO {tmp};\nALTER DATABASE {prev} RENAME TO {cur};\nALTER DATABASE {tmp} RENAME TO {prev};\nCOMMIT;\n",
        cur = ident(&db.name),
        tmp = ident(&tmp),
        prev = ident(&prev)
    );
    with_apps_stopped(target, printer, async {
        db.drop_database(&tmp).await?;
        rename_with_retry(db, &[&db.name, &prev, &tmp], &renames).await
    })
    .await
}

async fn with_apps_stopped<F>(target: &Target, printer: &Printer, work: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let services: Vec<&str> = target.app_services.iter().map(String::as_str).collect();
    if !services.is_empty() {
        printer.status(&format!("stopping {} for the swap", services.join(", ")));
        let mut args = vec!["stop"];
        args.extend(&services);
        target.compose.capture(&args)?;
    }
    let result = work.await;
    if !services.is_empty() {
        let mut args = vec!["start"];
        args.extend(&services);
        if let Err(e) = target.compose.capture(&args) {
            printer.warn(&format!(
                "starting {} again failed: {e}; run `countable up`",
                services.join(", ")
            ));
        }
    }
    result
}

/// Disconnect everyone from the databases being renamed and rename, retrying while a
/// client reconnects in between.
async fn rename_with_retry(db: &Db, names: &[&str], renames: &str) -> anyhow::Result<()> {
    let listed: Vec<String> = names.iter().map(|n| literal(n)).collect();
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({}) AND pid <> pg_backend_pid();\n",
        listed.join(", ")
    );
    // Verbose errors carry the SQLSTATE: 55006 is "object in use", in any language.
    let renames = format!("\\set VERBOSITY verbose\n{renames}");
    let mut last = None;
    for _ in 0..20 {
        db.sql("postgres", &terminate).await?;
        match db.sql("postgres", &renames).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("55006") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("renaming the databases failed")))
}
