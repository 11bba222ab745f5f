//! `countable completions <shell>`: shell completion scripts on stdout.

use clap::CommandFactory;

/// Print a completion script for your shell.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "Examples:\n  countable completions bash > ~/.local/share/bash-completion/completions/countable\n  countable completions zsh > \"${fpath[1]}/_countable\""
)]
pub struct Args {
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "countable", &mut std::io::stdout());
    Ok(())
}
