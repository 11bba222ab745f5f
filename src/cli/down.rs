//! `countable down`: stop the environment, keeping its data unless asked.

use crate::environment::Local;
use crate::error::Hinted;
use crate::ui::Printer;

/// Stop and remove the project's containers. Volumes (the database!) are kept unless
/// --volumes (confirmed on a terminal, or beforehand with the global --yes).
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable down\n  countable down --volumes --yes   also delete the database and media volumes"
)]
pub struct Args {
    /// Also remove the named volumes: the database, static and media files
    #[arg(long)]
    pub volumes: bool,
    /// Print the command instead of running it
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let local = Local::open(&std::env::current_dir()?)?;
    let name = local.project.compose_name().to_string();
    if args.volumes && !args.dry_run && !printer.assumed_yes() {
        if !printer.interactive() {
            return Err(Hinted::new(
                format!("`down --volumes` deletes the database of {name} and no terminal is here to confirm it"),
                "countable down --volumes --yes",
            )
            .into());
        }
        if !printer.confirm(
            &format!("Delete the database and media volumes of {name}?"),
            false,
        )? {
            printer.note("nothing removed");
            return Ok(());
        }
    }
    local.down(args.volumes, args.dry_run, printer)?;
    if !args.dry_run {
        printer.success(&format!(
            "{name} is down{}",
            if args.volumes {
                " and its volumes removed"
            } else {
                " (data kept)"
            }
        ));
    }
    Ok(())
}
