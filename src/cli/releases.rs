//! `countable releases <env>`: the release ledger, newest first.

use crate::data;
use crate::deploy::ledger::Ledger;
use crate::environment::Local;
use crate::ui::Printer;

/// The releases of an environment, newest first: number, outcome, commit, who, when,
/// the pre-deploy backup and the migrations each applied
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable releases prod\n  countable releases prod --json | jq '.[0]'"
)]
pub struct Args {
    /// The environment
    pub env: String,
    /// Machine-readable output (every field of each record)
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let env = data::resolve_env(&local, Some(&args.env))?;
    let store = data::store_of(&local, &env).await?;
    let ledger = Ledger::load(&store).await?;
    let list = ledger.newest_first();
    if args.json {
        printer.data(&serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        printer.note(&format!(
            "{env} has no releases yet (`countable deploy {env}` makes the first)"
        ));
        return Ok(());
    }
    let live = ledger.live().map(|r| r.release);
    printer.data(&format!(
        "{:<4} {:<9} {:<9} {:<12} {:<20} {:<16} {}",
        "", "RELEASE", "OUTCOME", "COMMIT", "STARTED", "BY", "MIGRATIONS"
    ));
    for r in list {
        let mark = if Some(r.release) == live { "*" } else { "" };
        let kind = match r.kind {
            crate::deploy::ledger::Kind::Rollback => {
                format!(" (rollback to {})", r.rollback_to.unwrap_or(0))
            }
            crate::deploy::ledger::Kind::Deploy => String::new(),
            crate::deploy::ledger::Kind::Sync => format!(" (sync {})", r.git_ref),
            crate::deploy::ledger::Kind::UndoSync => format!(" (undo-sync {})", r.git_ref),
        };
        let applied: Vec<String> = r
            .applied()
            .into_iter()
            .chain(r.reversed().into_iter().map(|m| format!("reversed {m}")))
            .collect();
        printer.data(&format!(
            "{:<4} {:<9} {:<9} {:<12} {:<20} {:<16} {}{kind}",
            mark,
            r.release,
            format!("{:?}", r.outcome).to_lowercase(),
            &r.git_sha[..12.min(r.git_sha.len())],
            r.started_at.get(..19).unwrap_or(&r.started_at),
            r.by,
            if applied.is_empty() {
                "-".to_string()
            } else {
                applied.join(", ")
            },
        ));
    }
    Ok(())
}
