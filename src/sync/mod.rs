//! `countable sync <from> <to>` and `countable undo-sync <pair>` (seed 004, the Stage
//! Sync role, done safely): one environment's database and bucket pairs copied into
//! another, fixed up, reported, and undoable.
//!
//! In order (`run`): preflight refuses before anything changes (`preflight`: engines,
//! production as the target, migrations, secrets, mail, the bucket plans and
//! `--max-delete`); the target is backed up; the database streams from a fresh dump
//! (or the newest backup) through the pull-db restore engine into a new database
//! beside the target's, whose counts must equal the source's and where the scrubs and
//! fixups run in one transaction (`database`, `fixups`) before the swap; then the
//! buckets are copied incrementally (`buckets`), each object the sync replaces or
//! deletes kept in the target's store first (`record`); last, the report and a ledger
//! entry (`report`). `undo` puts the database and the objects back.
//!
//! Nothing here prints a secret value: fixup values travel on psql's stdin only, and
//! psql's errors are redacted before they are shown.

pub mod buckets;
pub mod config;
pub mod database;
pub mod fixups;
pub mod preflight;
pub mod record;
pub mod report;
pub mod run;
pub mod sql;
pub mod undo;

use crate::error::Hint;

pub use run::{sync, Options};
pub use undo::undo_sync;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no sync pair `{name}` in countable.yml (known: {known})")]
    NoPair { name: String, known: String },
    #[error("no sync pair from `{from}` to `{to}` in countable.yml")]
    NoPairFor { from: String, to: String },
    #[error("several sync pairs go from `{from}` to `{to}`: {names}")]
    Ambiguous {
        from: String,
        to: String,
        names: String,
    },
    #[error(
        "`{env}` is the environment `master` deploys to: countable never syncs into production"
    )]
    Production { env: String },
    #[error("{from} and {to} have not applied the same migrations: only {from} has [{}], only {to} has [{}]", .only_from.join(", "), .only_to.join(", "))]
    Migrations {
        from: String,
        to: String,
        only_from: Vec<String>,
        only_to: Vec<String>,
    },
    #[error("the fixups of `{pair}` read secret(s) {to}'s secrets do not have: {}", .names.join(", "))]
    MissingSecrets {
        pair: String,
        to: String,
        names: Vec<String>,
    },
    #[error("the `mail` scrub of `{pair}`: {to}'s secrets send mail ({key} is set to SMTP)")]
    MailEnabled {
        pair: String,
        to: String,
        key: String,
    },
    #[error("the `site` scrub of `{pair}` needs a domain of {to}, and it has none")]
    NoDomain { pair: String, to: String },
    #[error(
        "{description}: {would} object(s) would be deleted from {to}, more than --max-delete {max}"
    )]
    TooManyDeletes {
        description: String,
        to: String,
        would: usize,
        max: usize,
    },
    #[error("the restored copy of {from}'s database does not match it: {}", .differences.join("; "))]
    Census {
        from: String,
        differences: Vec<String>,
    },
    #[error("fixup `{0}` changed no row (--strict)")]
    NoRows(String),
    #[error("the scrubs and fixups failed, so {to}'s database was left as it was: {message}")]
    Fixups { to: String, message: String },
    #[error("nothing to undo for `{pair}`: {why}")]
    NothingToUndo { pair: String, why: String },
}

impl Hint for SyncError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SyncError::NoPair { .. } | SyncError::NoPairFor { .. } => "add the pair under `sync:` in countable.yml, e.g.\n  sync:\n    prod-to-staging: {from: prod, to: staging}\nthen `countable sync prod-to-staging` (README, section `countable sync`)".into(),
            SyncError::Ambiguous { names, .. } => format!("name the pair: `countable sync {}`", names.split(", ").next().unwrap_or_default()),
            SyncError::Production { env } => format!("sync into a staging environment; if `{env}` is not production, mark it `sync_target: true` under environments.{env} in countable.yml"),
            SyncError::Migrations { to, .. } => format!("deploy the code the source runs to {to} first (`countable deploy {to}`), then sync again"),
            SyncError::MissingSecrets { to, names, .. } => format!("set them in the target's secrets: `countable secrets set {to} {}` (each value is read from stdin when only the name is given)", names.first().map(String::as_str).unwrap_or("NAME")),
            SyncError::MailEnabled { to, key, .. } => format!("let {to} print mail instead of sending it: `countable secrets set {to} EMAIL_URL=console://` (and `countable secrets unset {to} {key}` if it is EMAIL_HOST), then deploy it; or drop `mail` from the pair's `scrub:`"),
            SyncError::NoDomain { to, .. } => format!("add `domains: [{to}.example.com]` under environments.{to} in countable.yml, or drop `site` from the pair's `scrub:`"),
            SyncError::TooManyDeletes { would, .. } => format!("look at the plan first (`countable sync … --dry-run`); if it is right, allow it with `--max-delete {would}`"),
            SyncError::Census { from, .. } => format!("nothing changed in the target; run the sync again (was {from} written to meanwhile?), or sync from a backup with `--from-backup`"),
            SyncError::NoRows(_) => "check the fixup's SQL against the source's data (`countable sync … --dry-run` lists them), or run without --strict to accept it with a warning".into(),
            SyncError::Fixups { .. } => "fix the fixup's SQL in countable.yml (its words are above; secret values are shown as <NAME>), then sync again".into(),
            SyncError::NothingToUndo { pair, .. } => format!("`countable sync {pair}` records what undo-sync needs in the target's backup store; `countable releases <target>` lists the syncs"),
        })
    }
}
crate::register_hint!(SyncError);

/// `sync/<pair>/` in the target's store: the records and kept objects of a pair.
pub fn store_dir(pair: &str) -> String {
    format!("sync/{pair}/")
}
