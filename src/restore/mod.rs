//! The Postgres restore: inspect the dump before touching anything, restore into a new
//! database beside the current one, verify, and only then swap names in one
//! transaction, keeping exactly one previous database for `undo-db`.
//!
//! Whatever fails (a bad backup, a cut download, a newer dump, a missing extension,
//! Ctrl-C, a `kill -9` found by the next command) the current and previous databases
//! are as they were and the half-made one is dropped.
//!
//! Where things are: `playbook` (the steps, in order), `load` (feeding psql or
//! pg_restore per dump kind), `swap` (renames and undo), `durability` (the claim on the
//! server, non-durable settings, recovery after a crash), `container` (file work and
//! every shell script run in the db container), `db` (SQL helpers), `custom` and
//! `plain` (the dump formats).

mod container;
pub mod custom;
pub mod db;
mod durability;
mod load;
pub mod plain;
mod playbook;
mod session;
mod swap;

use crate::archive::{DumpKind, Reader};
use crate::compose::Compose;
use crate::error::Hint;

pub use db::{Census, Db, Position};
pub use durability::{departures, recover, Departures, Recovered, RELAXED};
pub use playbook::{restore, restore_fresh, restore_then};
pub use swap::undo;

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
    #[error("{tool} ran out of lock slots while restoring (the dump creates more tables than one transaction can lock on this server): {stderr}")]
    TooManyLocks { tool: &'static str, stderr: String },
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
            RestoreError::TooManyLocks { tool: "psql", .. } => "your database is unchanged; raise the db's lock table (add `\"-c\", \"max_locks_per_transaction=1024\"` to the db's `command` in the compose file, then `countable up`), or restore a custom-format dump (`pg_dump -Fc`), which countable restores with a commit per object when it is this large".into(),
            RestoreError::TooManyLocks { .. } => "your database is unchanged; other sessions may hold locks too: raise the db's lock table (add `\"-c\", \"max_locks_per_transaction=1024\"` to the db's `command` in the compose file, then `countable up`), or restore a custom archive with `--jobs 2`, which commits as it goes".into(),
            RestoreError::Verify { .. } => "your database is unchanged; the backup may be damaged: try another with `--backup KEY`".into(),
            RestoreError::Interrupted => "your database is unchanged; run the command again to restore".into(),
            RestoreError::Unsafe(_) => "restore a single database's dump (`pg_dump`), not `pg_dumpall` output or a script".into(),
            RestoreError::NoPrevious => "`countable pull-db` keeps the database it replaces; there was none (or it was dropped with --no-keep)".into(),
            RestoreError::SpoolSpace { .. } => "free space in the db container's volume, or restore without --jobs (streamed)".into(),
        })
    }
}
crate::register_hint!(RestoreError);

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

/// How the app services around a database are stopped and started for the swap.
#[derive(Clone)]
pub enum Apps {
    /// `docker compose stop|start SERVICE…` of a project with its files (the local one,
    /// a release on a host).
    Compose(Compose),
    /// Through the engine, by the compose labels of `project`'s containers: an
    /// environment's services on its host, with no compose files at hand.
    Engine {
        engine: crate::engine::Engine,
        project: String,
    },
}

/// The database and the app services that use it.
pub struct Target {
    pub db: Db,
    pub apps: Apps,
    /// Services to stop during the swap (everything but the db that is running).
    pub app_services: Vec<String>,
    /// Services stopped for the swap and left stopped after it (a rollback starts
    /// another release in their place); started again only when the swap failed.
    pub keep_stopped: Vec<String>,
    /// The running app container (engine, container) that was left running through
    /// the swap: `manage.py migrate` runs there right after it, so the schema fits the
    /// code as a restart's entrypoint would have made it.
    pub migrate_in: Option<(crate::engine::Engine, String)>,
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
    /// Download, decode and restore, from the first byte read.
    pub restore_seconds: f64,
    /// Tables checked against the dump's, rows counted.
    pub verify_seconds: f64,
    /// Durable settings back, CHECKPOINT, flushed to disk.
    pub durable_seconds: f64,
    /// The renames (the app's one moment without its database).
    pub swap_seconds: f64,
    /// After the switch, side by side: ANALYZE; and dropping the replaced database
    /// (`--no-keep`), ending the claim, `migrate`.
    pub finish_seconds: f64,
    /// `manage.py migrate` in the running web (0 when skipped or not running).
    pub migrate_seconds: f64,
    /// ANALYZE, after the switch.
    pub analyze_seconds: f64,
    pub previous_kept: bool,
}

pub(crate) fn new_name(db: &str) -> String {
    format!("{db}__countable_new")
}

pub fn previous_name(db: &str) -> String {
    format!("{db}__countable_prev")
}

/// The former previous database, set aside during a swap and dropped after its commit.
pub(crate) fn old_name(db: &str) -> String {
    format!("{db}__countable_old")
}

/// What the restore step learnt.
pub(crate) struct Restored {
    pub(crate) expected_tables: u64,
    /// Every row the dump loaded, when the stream could count them (plain COPY data):
    /// the summary then needs no `count(*)` of every table afterwards.
    pub(crate) rows: Option<u64>,
    /// How the restore went where it is not the usual way, for the summary.
    pub(crate) note: Option<String>,
}
