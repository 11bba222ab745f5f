//! `countable doctor`: check everything countable needs, each problem with its fix.

use crate::daily::doctor;
use crate::ui::Printer;

/// Check the Docker engine, Compose v2, free disk, lrzip and, in a project, its files,
/// its port, the local database's durability and each environment's docker_host and
/// backup store. Exits 1 when a check fails.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable doctor\n  countable doctor --json | jq '.checks[] | select(.status == \"fail\")'"
)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let checks = doctor::run(&std::env::current_dir()?).await;
    let failed = doctor::any_failed(&checks);
    if args.json {
        let doc = serde_json::json!({ "ok": !failed, "checks": checks });
        printer.data(&serde_json::to_string_pretty(&doc)?);
    } else {
        for line in doctor::table(&checks) {
            printer.data(&line);
        }
    }
    if failed {
        return Err(crate::error::PassThrough(1).into());
    }
    Ok(())
}
