//! `countable rollback <env> [RELEASE]`: an earlier release's code back, aware of the
//! schema (see `crate::deploy::rollback`).

use std::time::Duration;

use crate::data;
use crate::deploy::rollback::{self, Options};
use crate::environment::Local;
use crate::ui::Printer;

/// Go back to an earlier release (default: the succeeded one before the live one).
/// Migrations the target's code does not know are reversed first when they can be;
/// irreversible ones refuse the rollback unless --restore-db
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable rollback prod                  the release before the live one\n  countable rollback prod 12               release 12 (see `countable releases prod`)\n  countable rollback prod --dry-run        what it would do to the schema\n  countable rollback prod 12 --restore-db  restore the pre-deploy backup when migrations cannot be reversed"
)]
pub struct Args {
    /// The environment
    pub env: String,
    /// The release to go back to (a number from `countable releases <env>`)
    pub release: Option<u32>,
    /// When migrations cannot be reversed, restore the backup taken before them
    /// (writes since then are lost; the replaced database is kept beside it)
    #[arg(long)]
    pub restore_db: bool,
    /// Print what would be done to the schema and the code, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to SECS for a running deploy of this environment
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub lock_wait: u64,
    /// Print the new release record as JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, Some(&args.env))?;
    let opts = Options {
        target: args.release,
        restore_db: args.restore_db,
        dry_run: args.dry_run,
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    if let Some(r) = rollback::rollback(&local.project, &env, &opts, printer).await? {
        if args.json {
            printer.data(&serde_json::to_string_pretty(&r)?);
        } else {
            printer.data(&r.release.to_string());
        }
    }
    Ok(())
}
