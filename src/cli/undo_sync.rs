//! `countable undo-sync <pair>`: the target of a pair as it was before its last sync
//! (see `crate::sync::undo`).

use crate::environment::Local;
use crate::sync::{self, run::find_pair};
use crate::ui::Printer;

/// Put the target of a sync pair back as it was before the pair's last sync
///
/// Its database from the backup the sync took first, and the bucket objects the sync
/// created, replaced or deleted (where nobody changed them since)
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable undo-sync prod-to-staging\n  countable undo-sync prod-to-staging --dry-run"
)]
pub struct Args {
    /// The pair's name (countable.yml, `sync:`)
    pub pair: String,
    /// Print what would be put back, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let pair = find_pair(&local.project.config, &args.pair, None)?;
    let report = sync::undo_sync(&local, pair, args.dry_run, printer).await?;
    report.print(printer, args.json)
}
