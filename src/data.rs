//! Getting data into the local database: pick a backup from an environment's store (or
//! take a file or stdin), then hand it to the restore playbook. Shared by `pull-db`,
//! `import-db` and `up` (which fills an empty database).

use std::path::Path;

use anyhow::Context;

use crate::environment::Local;
use crate::error::Hinted;
use crate::names::EnvName;
use crate::restore::{self, Options, Source, Summary};
use crate::store::{Backup, Store};
use crate::ui::{self, Printer};

/// The environment named on the command line, or `data_from`.
pub fn resolve_env(local: &Local, env: Option<&str>) -> anyhow::Result<EnvName> {
    let config = &local.project.config;
    let name = match env {
        Some(e) => EnvName::parse(e)?,
        None => config.data_from.clone().ok_or_else(|| {
            Hinted::new(
                "no environment given and countable.yml has no `data_from`",
                "name one (`countable pull-db prod`) or set `data_from: prod` in countable.yml",
            )
        })?,
    };
    if !config.environments.contains_key(&name) {
        let known: Vec<String> = config.environments.keys().map(|k| k.to_string()).collect();
        return Err(Hinted::new(
            format!(
                "no environment `{name}` in countable.yml (known: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
            format!(
                "add it under `environments:` in {}",
                local.project.root.join("countable.yml").display()
            ),
        )
        .into());
    }
    Ok(name)
}

/// The backup store of environment `env`.
pub async fn store_of(local: &Local, env: &EnvName) -> anyhow::Result<Store> {
    let config = &local.project.config.environments[env];
    Ok(Store::for_environment(env.as_str(), config, &local.project.root).await?)
}

/// Restore `backup` of `env` into the local database.
pub async fn pull(
    local: &mut Local,
    printer: &Printer,
    store: &Store,
    backup: &Backup,
    opts: &Options,
) -> anyhow::Result<Summary> {
    let opts = &with_template(local, opts);
    let target = local.restore_target(printer).await?;
    let opened = store.open(backup).await?;
    let source = Source {
        label: format!("{}{}", store.location(), backup.key),
        reader: opened.reader,
        size: opened.size.or(Some(backup.size)),
    };
    restore::restore(&target, source, opts, printer).await
}

/// Restore a file (or `-` for stdin) into the local database.
pub async fn import(
    local: &mut Local,
    printer: &Printer,
    path: &Path,
    opts: &Options,
) -> anyhow::Result<Summary> {
    let source = if path == Path::new("-") {
        Source {
            label: "stdin".into(),
            reader: Box::pin(tokio::io::stdin()),
            size: None,
        }
    } else {
        let file = tokio::fs::File::open(path).await.map_err(|e| {
            Hinted::wrap(
                anyhow::Error::new(e),
                format!("cannot open {}", path.display()),
                "check the path; `-` reads the dump from stdin",
            )
        })?;
        let size = file.metadata().await.ok().map(|m| m.len());
        Source {
            label: path.display().to_string(),
            reader: Box::pin(file),
            size,
        }
    };
    let opts = &with_template(local, opts);
    let target = local.restore_target(printer).await?;
    restore::restore(&target, source, opts, printer).await
}

/// `db_template` from countable.yml unless the options name one.
fn with_template(local: &Local, opts: &Options) -> Options {
    let mut opts = opts.clone();
    if opts.template.is_none() {
        opts.template = local.project.config.db_template.clone();
    }
    opts
}

/// Print what a restore did: a status block on stderr, or JSON on stdout.
pub fn report(printer: &Printer, s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        printer.data(&serde_json::to_string_pretty(s).context("serialising the summary")?);
        return Ok(());
    }
    printer.success(&format!("restored {} ({})", s.source, s.format));
    printer.note(&format!(
        "   {} tables, {} rows, database {}; read {} in {:.1} s ({}/s)",
        s.tables,
        s.rows,
        ui::human_bytes(s.database_bytes),
        ui::human_bytes(s.transferred_bytes),
        s.restore_seconds,
        ui::human_bytes((s.transferred_bytes as f64 / s.restore_seconds.max(0.001)) as u64),
    ));
    printer.note(&format!(
        "   stages: download+decode+restore {:.1} s, verify {:.1} s, flush {:.1} s, swap {:.1} s; then, with the app on the new data, {:.1} s (ANALYZE {:.1} s beside migrate {:.1} s)",
        s.restore_seconds,
        s.verify_seconds,
        s.durable_seconds,
        s.swap_seconds,
        s.finish_seconds,
        s.analyze_seconds,
        s.migrate_seconds
    ));
    if s.previous_kept {
        printer.note("   the replaced database is kept: `countable undo-db` swaps it back");
    }
    Ok(())
}
