//! `countable up`: one command to a running, healthy environment.

use crate::environment::{Local, UpOptions};
use crate::ui::Printer;

/// Build and start the project, wait until every service is healthy, print its URL.
/// An empty database is filled from `data_from` (countable.yml) first, and an empty
/// media volume from the same backup's media.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable up\n  countable up --no-data\n  countable up --no-media\n  countable up --dry-run\n  countable up --watch"
)]
pub struct Args {
    /// Do not fill an empty database (nor media) from `data_from`
    #[arg(long)]
    pub no_data: bool,
    /// Fill an empty database, but not the empty media volume
    #[arg(long)]
    pub no_media: bool,
    /// Print the commands instead of running them
    #[arg(long)]
    pub dry_run: bool,
    /// Then stay and rebuild web when requirements.txt or the Dockerfile changes
    /// (compose's `develop.watch`, from compose.override.yaml); Ctrl-C stops watching
    #[arg(long)]
    pub watch: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let opts = UpOptions {
        no_data: args.no_data,
        no_media: args.no_media,
        dry_run: args.dry_run,
    };
    local.up(printer, &opts).await?;
    if args.dry_run {
        if args.watch {
            printer.data(&local.compose()?.display(&["watch", "--no-up"]));
        }
        return Ok(());
    }
    let states = local.status().await?;
    let url = local.url_from(&states);
    printer.success(&format!(
        "{} is up and healthy",
        local.project.compose_name()
    ));
    printer.data(&url);
    if args.watch {
        return local.watch(printer).await;
    }
    Ok(())
}
