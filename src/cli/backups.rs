//! `countable backups [<env>]`: the backups an environment has, newest first, with
//! their manifest, media and drill state; `countable backups prune <env>`: retention,
//! the database dump and the media of one stamp being one backup.

use crate::backup;
use crate::data;
use crate::drill::Verification;
use crate::environment::Local;
use crate::media::{self, manifest, MediaManifest};
use crate::retention::{self, Dated, Retention};
use crate::ui::{self, Printer};
use time::format_description::well_known::Rfc3339;

/// List an environment's backups: key, size, time, manifest, media (files and bytes)
/// and drill state; newest first
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_long_help = "Examples:\n  countable backups prod\n  countable backups prod --json | jq -r '.[0].key'\n  countable backups prune prod --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6\n  countable backups prune prod --keep-daily 7 --apply"
)]
pub struct Args {
    /// The environment (default: `data_from`)
    pub env: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    Prune(PruneArgs),
}

/// Delete old backups by retention rules (restic/borg semantics). Without --apply it
/// only lists what would go. The newest verified backup is never deleted. A backup is
/// an object whose key carries its time and ends like a dump (`2026-11-30T021500Z.backup`,
/// `prod-20261130-0215.sql.gz`, `2026-11-30_02-15.tar.lrz`); anything else is listed as
/// "kept: not a backup" and never deleted. A deleted backup's media manifest goes with
/// it, then the media files no remaining backup refers to (files unchanged since a
/// deleted backup stay while a kept one refers to them)
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The environment (default: `data_from`)
    pub env: Option<String>,
    /// Keep the N newest backups
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_last: usize,
    /// Keep the newest backup of each of the N most recent days that have one
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_daily: usize,
    /// Keep the newest backup of each of the N most recent ISO weeks
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_weekly: usize,
    /// Keep the newest backup of each of the N most recent months
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keep_monthly: usize,
    /// Delete (with their manifests, drill records and media); without it, a dry run
    #[arg(long)]
    pub apply: bool,
}

#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    backup: &'a crate::store::Backup,
    /// When it was taken (from its key, RFC 3339); `null`: not a backup.
    taken_at: Option<String>,
    manifest: bool,
    verification: Option<String>,
    /// Its media: files and bytes (`null`: no media manifest).
    media: Option<MediaRow>,
}

#[derive(serde::Serialize)]
struct MediaRow {
    count: u64,
    bytes: u64,
}

impl MediaRow {
    fn describe(media: Option<&Self>) -> String {
        match media {
            Some(m) => format!(
                "media {} {}",
                ui::counted(m.count, "file"),
                ui::human_bytes(m.bytes)
            ),
            None => "no media".into(),
        }
    }
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    if let Some(Action::Prune(p)) = args.action {
        return prune(p, printer).await;
    }
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    let list = store.list().await?;
    let sides = store.side_files(&list).await?;
    let entries: std::collections::HashSet<String> =
        store.entries().await?.into_iter().map(|b| b.key).collect();
    let mut rows = Vec::new();
    for (b, side) in list.iter().zip(&sides) {
        let media_key = manifest::manifest_key(manifest::stamp_of(&b.key));
        let media = match b.taken_at().is_some() && entries.contains(&media_key) {
            true => MediaManifest::load(&store, &media_key)
                .await?
                .map(|m| MediaRow {
                    count: m.count,
                    bytes: m.bytes,
                }),
            false => None,
        };
        let verification = if side.verified {
            let v = store.get_small(&backup::verified_key(&b.key)).await?;
            v.and_then(|bytes| serde_json::from_slice::<Verification>(&bytes).ok())
                .map(|v| {
                    format!(
                        "{} {}",
                        serde_json::to_value(v.outcome)
                            .ok()
                            .and_then(|o| o.as_str().map(String::from))
                            .unwrap_or_default(),
                        v.verified_at
                    )
                })
        } else {
            None
        };
        rows.push(Row {
            backup: b,
            taken_at: b.taken_at().and_then(|t| t.format(&Rfc3339).ok()),
            manifest: side.manifest,
            verification,
            media,
        });
    }
    if args.json {
        printer.data(&serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        printer.note(&format!("no backups in {}", store.location()));
        return Ok(());
    }
    printer.note(&format!("backups of {env} in {}", store.location()));
    for r in &rows {
        let Some(taken) = &r.taken_at else {
            printer.data(&format!(
                "{:<36} {:>10}  {}  not a backup (no time countable reads in its name; pick it with --backup)",
                r.backup.key,
                ui::human_bytes(r.backup.size),
                r.backup.modified_rfc3339(),
            ));
            continue;
        };
        printer.data(&format!(
            "{:<36} {:>10}  {}  {}  {}  {}",
            r.backup.key,
            ui::human_bytes(r.backup.size),
            taken,
            if r.manifest {
                "manifest"
            } else {
                "no manifest"
            },
            MediaRow::describe(r.media.as_ref()),
            r.verification.as_deref().unwrap_or("not verified")
        ));
    }
    Ok(())
}

async fn prune(args: PruneArgs, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    let list = store.list().await?;
    let sides = store.side_files(&list).await?;
    let mut dated = Vec::new();
    let mut not_backups = Vec::new();
    for (b, side) in list.iter().zip(&sides) {
        let Some(time) = b.taken_at() else {
            not_backups.push(b.key.as_str());
            continue;
        };
        let passed = if side.verified {
            store
                .get_small(&backup::verified_key(&b.key))
                .await?
                .and_then(|bytes| serde_json::from_slice::<Verification>(&bytes).ok())
                .is_some_and(|v| v.outcome == crate::drill::Outcome::Passed)
        } else {
            false
        };
        dated.push(Dated {
            key: b.key.clone(),
            time,
            verified: passed,
        });
    }
    let keep = Retention {
        last: args.keep_last,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
    };
    let (kept, dropped) = retention::plan_prune(&dated, keep)?;
    for k in &kept {
        printer.data(&format!("keep   {k}"));
    }
    for k in &dropped {
        printer.data(&format!("delete {k}"));
    }
    for k in &not_backups {
        printer.data(&format!("kept: not a backup  {k}"));
    }
    let others = match not_backups.len() {
        0 => String::new(),
        n => format!(", {n} not a backup (kept)"),
    };
    let remaining: Vec<String> = kept
        .iter()
        .cloned()
        .chain(not_backups.iter().map(|k| k.to_string()))
        .collect();
    let entries = store.entries().await?;
    let gc = media::prune::plan(&store, &entries, &remaining, &dropped).await?;
    let media_line = |verb: &str| {
        format!(
            "media: {} and {} ({}) {verb}; {} of those backups kept (newer backups refer to them)",
            ui::counted(gc.manifests.len() as u64, "manifest"),
            ui::counted(gc.objects.len() as u64, "file"),
            ui::human_bytes(gc.bytes()),
            ui::counted(gc.still_referenced, "file")
        )
    };
    if !args.apply {
        printer.note(&format!(
            "dry run: {} would be deleted, {} kept{others}; add --apply to delete",
            dropped.len(),
            kept.len()
        ));
        if gc.touches_anything() {
            printer.note(&media_line("would be deleted"));
        }
        return Ok(());
    }
    for k in &dropped {
        store.delete(k).await?;
        store.delete(&backup::manifest_key(k)).await?;
        store.delete(&backup::verified_key(k)).await?;
    }
    media::prune::apply(&store, &gc).await?;
    printer.success(&format!(
        "deleted {} backups, kept {}{others}",
        dropped.len(),
        kept.len()
    ));
    if gc.touches_anything() {
        printer.success(&media_line("deleted"));
    }
    Ok(())
}
