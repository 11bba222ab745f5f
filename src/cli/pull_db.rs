//! `countable pull-db [<env>]`: an environment's newest (or chosen) backup into the
//! local database, streamed and atomic.

use crate::data;
use crate::environment::Local;
use crate::ui::Printer;

use super::restore_args::RestoreArgs;

/// Restore an environment's backup (the newest, or --backup KEY) into the local
/// database: downloaded, decoded and restored in one stream into a new database, then
/// swapped in; the replaced one is kept for `countable undo-db`
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable pull-db                 from `data_from` (countable.yml)\n  countable pull-db prod --yes\n  countable pull-db prod --backup 2026-11-30T020000Z.tar.lrz\n  countable pull-db prod --jobs 2   parallel restore of a custom-format archive"
)]
pub struct Args {
    /// The environment whose backup to restore (default: `data_from`)
    pub env: Option<String>,
    /// A backup key (see `countable backups <env>`); default: the newest
    #[arg(long, value_name = "KEY")]
    pub backup: Option<String>,
    #[command(flatten)]
    pub restore: RestoreArgs,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, args.env.as_deref())?;
    let store = data::store_of(&local, &env).await?;
    let backup = store.pick(args.backup.as_deref()).await?;
    let label = format!("{}{}", store.location(), backup.key);
    if args.restore.dry_run {
        for step in args.restore.plan(&label, &local.project.config.services.db) {
            printer.data(&step);
        }
        return Ok(());
    }
    let project = local.project.compose_name().to_string();
    let what = format!("{env}'s backup {}", backup.key);
    let retry = format!("countable pull-db {env} --backup {}", backup.key);
    if !args.restore.confirm(printer, &project, &what, &retry)? {
        printer.note("nothing changed");
        return Ok(());
    }
    let summary = data::pull(
        &mut local,
        printer,
        &store,
        &backup,
        &args.restore.options(),
    )
    .await?;
    data::report(printer, &summary, args.restore.json)
}
