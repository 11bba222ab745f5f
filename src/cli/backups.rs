//! `countable backups [<env>]`: the backups an environment has, newest first.

use crate::data;
use crate::environment::Local;
use crate::ui::{self, Printer};

/// List an environment's backups: key, size, time; newest first
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable backups prod\n  countable backups prod --json | jq -r '.[0].key'"
)]
pub struct Args {
    /// The environment (default: `data_from`)
    pub env: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    let list = store.list().await?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        printer.note(&format!("no backups in {}", store.location()));
        return Ok(());
    }
    printer.note(&format!("backups of {env} in {}", store.location()));
    for b in &list {
        printer.data(&format!(
            "{:<40} {:>10}  {}",
            b.key,
            ui::human_bytes(b.size),
            b.modified_rfc3339()
        ));
    }
    Ok(())
}
