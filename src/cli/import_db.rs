//! `countable import-db <file|->`: a dump file (or stdin) into the local database.

use std::path::PathBuf;

use crate::data;
use crate::environment::Local;
use crate::ui::Printer;

use super::restore_args::RestoreArgs;

/// Restore a dump from a file, or from stdin with `-`, into the local database, the
/// same way `pull-db` does (any format pull-db reads, atomic, previous kept)
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable import-db ~/Downloads/2026-11-30.tar.lrz\n  ssh prod 'pg_dump -Fc shop' | countable import-db -"
)]
pub struct Args {
    /// The dump file, or `-` for stdin
    pub file: PathBuf,
    #[command(flatten)]
    pub restore: RestoreArgs,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let label = args.file.display().to_string();
    if args.restore.dry_run {
        for step in args.restore.plan(&label, &local.project.config.services.db) {
            printer.data(&step);
        }
        return Ok(());
    }
    let project = local.project.compose_name().to_string();
    let retry = format!("countable import-db {label}");
    if args.file.as_os_str() == "-" {
        // stdin is the dump: nothing to ask on, only the --no-keep rule.
        args.restore.check_no_keep(printer, &project, &retry)?;
    } else if !args.restore.confirm(printer, &project, &label, &retry)? {
        printer.note("nothing changed");
        return Ok(());
    }
    let summary = data::import(&mut local, printer, &args.file, &args.restore.options()).await?;
    data::report(printer, &summary, args.restore.json)
}
