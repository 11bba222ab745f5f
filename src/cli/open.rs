//! `countable open`: the local URL, and a browser on it.

use crate::environment::Local;
use crate::ui::Printer;

/// Print the local environment's URL and open it in a browser when there is a display.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  countable open\n  countable open --no-browser")]
pub struct Args {
    /// Only print the URL
    #[arg(long)]
    pub no_browser: bool,
}

pub async fn run(args: Args, printer: &Printer) -> anyhow::Result<()> {
    let mut local = Local::open(&std::env::current_dir()?)?;
    let states = local.status().await?;
    let url = local.url_from(&states);
    let nginx = &local.project.config.services.nginx;
    if !states
        .iter()
        .any(|s| &s.service == nginx && s.state == "running")
    {
        printer.warn(&format!(
            "{} is not running: `countable up` starts it",
            local.project.compose_name()
        ));
    }
    printer.data(&url);
    if !args.no_browser {
        if let Some(program) = crate::daily::open::open(&url)? {
            printer.status(&format!("opened in a browser ({program})"));
        }
    }
    Ok(())
}
