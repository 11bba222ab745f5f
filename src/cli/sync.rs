//! `countable sync <pair>` / `countable sync <from> <to>`: one environment's database
//! and bucket pairs into another, fixed up, undoable (see `crate::sync`).

use crate::environment::Local;
use crate::sync::{self, run::find_pair, Options};
use crate::ui::Printer;

/// Copy an environment's database and bucket pairs into another (a `sync:` pair)
///
/// Production into staging, as a `sync:` pair of countable.yml says: the target is backed
/// up first, the database restored beside its own, checked, scrubbed and fixed up, then
/// swapped in; the buckets are copied incrementally. `countable undo-sync <pair>` goes
/// back
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable sync prod-to-staging             the pair of that name (countable.yml, `sync:`)\n  countable sync prod staging                the one pair from prod to staging\n  countable sync prod-to-staging --dry-run   the plan: copy/skip/delete per bucket pair\n  countable sync prod-to-staging --from-backup --max-delete 100 --strict\n  countable sync prod-to-staging --json | jq .buckets\n  countable undo-sync prod-to-staging        the target as it was before"
)]
pub struct Args {
    /// A pair's name, or the source environment
    pub pair_or_from: String,
    /// The target environment (when the first argument is the source)
    pub to: Option<String>,
    /// Restore the source's newest backup instead of a fresh dump
    #[arg(long)]
    pub from_backup: bool,
    /// Print the plan (copy/skip/delete counts and bytes per bucket pair, the database
    /// steps, the fixups), change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse when a bucket pair would delete more than N objects (pairs with
    /// `delete: true` only)
    #[arg(long, value_name = "N")]
    pub max_delete: Option<usize>,
    /// A fixup or scrub that changes no row fails the sync (the target is left as it
    /// was) instead of warning
    #[arg(long)]
    pub strict: bool,
    /// Copy the database even when neither side changed since the last sync (by
    /// default an unchanged pair leaves it alone)
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let pair = find_pair(
        &local.project.config,
        &args.pair_or_from,
        args.to.as_deref(),
    )?;
    let opts = Options {
        from_backup: args.from_backup,
        dry_run: args.dry_run,
        max_delete: args.max_delete,
        strict: args.strict,
        force: args.force,
    };
    let report = sync::sync(&local, pair, &opts, printer).await?;
    report.print(printer, args.json)
}
