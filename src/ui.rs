//! The one printer: data to stdout, status and progress to stderr, prompts on a terminal.
//!
//! Nothing else in countable writes to the terminal. No colour, spinners or prompts when
//! stderr/stdin is not a terminal or `NO_COLOR` is set, so pipes and CI logs stay clean.
//! It never decides anything: callers ask, it shows.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone)]
pub struct Printer {
    color: bool,
    fancy: bool,
    interactive: bool,
    quiet: bool,
}

impl Printer {
    /// `assume_yes`: never prompt, take the defaults. `quiet`: status lines off.
    pub fn new(assume_yes: bool, quiet: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let err_tty = std::io::stderr().is_terminal();
        Self {
            color: err_tty && !no_color,
            fancy: err_tty && !no_color,
            interactive: !assume_yes && std::io::stdin().is_terminal() && err_tty,
            quiet,
        }
    }

    /// May we ask the user something?
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A line of data on stdout (what pipes and `--json` consume).
    pub fn data(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    /// A step being taken.
    pub fn status(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{} {msg}", self.paint("1;36", "::"));
        }
    }

    /// A finished step.
    pub fn success(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{} {msg}", self.paint("1;32", "ok"));
        }
    }

    /// Something the user should know but that does not stop the command.
    pub fn warn(&self, msg: &str) {
        eprintln!("{} {msg}", self.paint("1;33", "warning:"));
    }

    /// A plain line on stderr (notes, indented details).
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// An error, as rendered by `error::render`.
    pub fn error(&self, text: &str) {
        let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
        eprintln!("{} {rest}", self.paint("1;31", head));
    }

    /// A spinner while something of unknown length runs; plain status line without a TTY.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        if !self.fancy || self.quiet {
            self.status(msg);
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}").unwrap());
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// Yes/no on a terminal; `default` without one.
    pub fn confirm(&self, prompt: &str, default: bool) -> anyhow::Result<bool> {
        if !self.interactive {
            return Ok(default);
        }
        Ok(dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(default)
            .interact()?)
    }

    /// Pick one of `items` on a terminal; `default` without one.
    pub fn select(&self, prompt: &str, items: &[&str], default: usize) -> anyhow::Result<usize> {
        if !self.interactive {
            return Ok(default);
        }
        Ok(dialoguer::Select::new()
            .with_prompt(prompt)
            .items(items)
            .default(default)
            .interact()?)
    }

    /// Free text on a terminal, validated; `default` without one.
    pub fn input<F>(&self, prompt: &str, default: &str, validate: F) -> anyhow::Result<String>
    where
        F: Fn(&String) -> Result<(), String>,
    {
        if !self.interactive {
            return Ok(default.to_string());
        }
        Ok(dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .default(default.to_string())
            .validate_with(|s: &String| validate(s))
            .interact_text()?)
    }
}
