//! `countable deploy <env>`: what the Jenkins job runs (see `crate::deploy`).

use std::time::Duration;

use crate::data;
use crate::deploy::{self, Options};
use crate::environment::Local;
use crate::ui::Printer;

/// Deploy the committed code to an environment: backup first, build here, ship the
/// image to the environment's Docker host, health gate, zero-downtime switch, release
/// recorded in the ledger
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable deploy staging                 what Jenkins runs on develop\n  countable deploy prod --dry-run          every step and command, no secrets\n  countable deploy prod --ref v1.4.2       another commit than HEAD\n  countable deploy prod --lock-wait 600    wait for a deploy that is running\n\nThe release is refused when the working tree is dirty (--allow-dirty) or the commit\nis not on the environment's `branch` (--force). `countable releases <env>` lists\nwhat was deployed; `countable rollback <env>` goes back."
)]
pub struct Args {
    /// The environment (a name under `environments:` in countable.yml)
    pub env: String,
    /// Deploy this commit, branch or tag instead of HEAD
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// Deploy although the working tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,
    /// Deploy a commit that is not on the environment's branch
    #[arg(long)]
    pub force: bool,
    /// Print every step and command (never a secret) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to SECS for another deploy of this environment to finish
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub lock_wait: u64,
    /// Print the release record as JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, Some(&args.env))?;
    let opts = Options {
        git_ref: args.git_ref,
        allow_dirty: args.allow_dirty,
        force: args.force,
        dry_run: args.dry_run,
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    let record = deploy::deploy(&local.project, &env, &opts, printer).await?;
    if let Some(r) = record {
        if args.json {
            printer.data(&serde_json::to_string_pretty(&r)?);
        } else {
            printer.data(&r.release.to_string());
        }
    }
    Ok(())
}
