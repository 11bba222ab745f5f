//! `countable verify-backup [<env>]`: restore backups in a disposable container and
//! compare them with their manifests; read their media back.

use crate::data;
use crate::drill::{self, Outcome};
use crate::environment::Local;
use crate::error::Hinted;
use crate::store::Backup;
use crate::ui::Printer;

/// Prove backups: download (checksum checked), restore into a disposable container of
/// the environment's db image on this machine's engine (or `drill_host`), never on the
/// environment's, compare counts with the manifest, read every media file back (size
/// and SHA-256 against the media manifest), record the result beside the backup
/// (`<key>.verified.json`). Exits 1 on any mismatch
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable verify-backup prod                 the newest backup\n  countable verify-backup prod --backup 2026-11-30T021500Z.backup\n  countable verify-backup prod --since 2026-11-01   a scheduled drill over many"
)]
pub struct Args {
    /// The environment (default: `data_from`)
    pub env: Option<String>,
    /// One backup (default: the newest)
    #[arg(long, value_name = "KEY", conflicts_with_all = ["all", "since"])]
    pub backup: Option<String>,
    /// Every backup (objects without a time in their key are not backups: name them
    /// with --backup)
    #[arg(long)]
    pub all: bool,
    /// Every backup from this UTC date on (YYYY-MM-DD), by the time in its key;
    /// objects without one are left out (name them with --backup)
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Print the results as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    // The environment's engine only says which image its db runs; the drill runs on
    // the drill engine (`drill_host`, else the local one), never on production.
    let (env_engine, db) = local.env_db(&env).await?;
    let drill_host = local.project.config.environments[&env].drill_host.clone();
    let engine = drill::drill_engine(drill_host.as_deref()).await?;
    let image = drill::image_for_drill(&engine, &env_engine, &db.container, printer).await?;
    let backups: Vec<Backup> = if args.all || args.since.is_some() {
        let since = match args.since.as_deref() {
            Some(d) => Some(parse_date(d)?),
            None => None,
        };
        store
            .list()
            .await?
            .into_iter()
            .filter(|b| b.taken_at().is_some() && since.is_none_or(|s| taken_since(b, s)))
            .collect()
    } else {
        vec![store.pick(args.backup.as_deref()).await?]
    };
    let mut results = Vec::new();
    for b in &backups {
        let v = drill::verify(&engine, &image, &db.container, &store, b, printer).await?;
        let media = v
            .media
            .as_ref()
            .map(|m| format!("; media: {}", m.describe()))
            .unwrap_or_else(|| "; no media".into());
        match v.outcome {
            Outcome::Passed => printer.success(&format!(
                "{}: restored in {:.1} s, every count matches its manifest{media}",
                v.key, v.restore_seconds
            )),
            Outcome::RestoredWithoutManifest => printer.warn(&format!(
                "{}: restored in {:.1} s; no manifest, nothing compared{media}",
                v.key, v.restore_seconds
            )),
            Outcome::Failed => {
                printer.warn(&format!("{}: FAILED{media}", v.key));
                for p in &v.problems {
                    printer.note(&format!("    {p}"));
                }
            }
        }
        results.push(v);
    }
    if args.json {
        printer.data(&serde_json::to_string_pretty(&results)?);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|v| v.outcome == Outcome::Failed)
        .map(|v| v.key.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(Hinted::new(
            format!(
                "{} of {} backups failed the drill: {}",
                failed.len(),
                results.len(),
                failed.join(", ")
            ),
            "make a new backup now (`countable backup <env>`) and find out what damaged these",
        )
        .into());
    }
    Ok(())
}

/// `2026-11-01` → that day at 00:00 UTC, as Unix seconds.
fn parse_date(d: &str) -> anyhow::Result<i64> {
    let date = time::Date::parse(
        d.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        Hinted::new(
            format!("`{d}` is not a date"),
            "--since 2026-11-01 (YYYY-MM-DD, UTC)",
        )
    })?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

/// Whether `b` is a backup taken at or after `since` (Unix seconds): the time in its
/// key, as for `pull-db` and `backups prune`; objects that are not backups have none.
fn taken_since(b: &Backup, since: i64) -> bool {
    b.taken_at().is_some_and(|t| t.unix_timestamp() >= since)
}
