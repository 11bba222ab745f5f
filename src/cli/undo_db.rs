//! `countable undo-db`: swap the local database with the one the last restore replaced.

use crate::environment::Local;
use crate::restore;
use crate::ui::Printer;

/// Swap the local database back with the previous one (kept by pull-db and import-db).
/// Running it again swaps them back again
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  countable undo-db")]
pub struct Args {}

pub async fn run(_args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let target = local.restore_target(printer).await?;
    restore::undo(&target, printer).await?;
    printer.success(&format!(
        "swapped `{}` with the previous database",
        target.db.name
    ));
    Ok(())
}
