//! The one printer: data to stdout, status and progress to stderr, prompts on a terminal.
//!
//! Nothing else in countable writes to the terminal. No colour, spinners or prompts when
//! stderr/stdin is not a terminal or `NO_COLOR` is set, so pipes and CI logs stay clean.
//! It never decides anything: callers ask, it shows.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
pub struct Printer {
    color: bool,
    fancy: bool,
    interactive: bool,
    assume_yes: bool,
    quiet: bool,
    /// Every bar shown, drawn together (two steps may run at once), with lines
    /// printed above them.
    bars: MultiProgress,
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
            assume_yes,
            quiet,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// A line on stderr, above the bars being drawn.
    fn line(&self, text: String) {
        self.bars.suspend(|| eprintln!("{text}"));
    }

    /// May we ask the user something?
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    /// Did the user answer yes beforehand (`--yes`)? Destructive steps that would
    /// otherwise need a terminal to confirm them go ahead.
    pub fn assumed_yes(&self) -> bool {
        self.assume_yes
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
            self.line(format!("{} {msg}", self.paint("1;36", "::")));
        }
    }

    /// A finished step.
    pub fn success(&self, msg: &str) {
        if !self.quiet {
            self.line(format!("{} {msg}", self.paint("1;32", "ok")));
        }
    }

    /// Something the user should know but that does not stop the command.
    pub fn warn(&self, msg: &str) {
        self.line(format!("{} {msg}", self.paint("1;33", "warning:")));
    }

    /// A plain line on stderr (notes, indented details).
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            self.line(msg.to_string());
        }
    }

    /// An error, as rendered by `error::render`.
    pub fn error(&self, text: &str) {
        let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
        self.line(format!("{} {rest}", self.paint("1;31", head)));
    }

    /// A spinner while something of unknown length runs; plain status line without a TTY.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        if !self.fancy || self.quiet {
            self.status(msg);
            return ProgressBar::hidden();
        }
        let pb = self.bars.add(ProgressBar::new_spinner());
        pb.set_style(ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}").unwrap());
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// A byte-progress bar (percentage, rate, ETA) when the total is known, a byte
    /// counter when not; hidden without a terminal.
    pub fn bytes_bar(&self, total: Option<u64>, msg: &str) -> ProgressBar {
        if !self.fancy || self.quiet {
            self.status(msg);
            return ProgressBar::hidden();
        }
        let pb = match total {
            Some(t) => {
                let pb = ProgressBar::new(t);
                pb.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30.cyan/blue}] {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap()
                    .progress_chars("=> "),
                );
                pb
            }
            None => {
                let pb = ProgressBar::new_spinner();
                pb.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.cyan} {msg} {bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap(),
                );
                pb
            }
        };
        let pb = self.bars.add(pb);
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
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

    /// A secret typed on the terminal, never echoed (the caller checked stdin is one).
    pub fn secret(&self, prompt: &str) -> anyhow::Result<String> {
        Ok(dialoguer::Password::new()
            .with_prompt(prompt)
            .allow_empty_password(true)
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

/// An `AsyncRead` that advances a progress bar by the bytes read through it (indicatif's
/// own reader wrapper), and counts them for the summary. At the end of the input the
/// bar turns into a spinner for the restore phase that follows (index builds,
/// constraints).
pub struct ProgressReader<R>(indicatif::ProgressBarIter<Counted<R>>);

impl<R: tokio::io::AsyncRead + Unpin> ProgressReader<R> {
    pub fn new(inner: R, bar: ProgressBar) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Counted {
            inner,
            bar: bar.clone(),
            count: count.clone(),
            ended: false,
        };
        (Self(bar.wrap_async_read(counted)), count)
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ProgressReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// What indicatif's wrapper does not do: count the bytes (the bar is hidden without a
/// terminal, and finishing it moves its position) and notice the end of the input.
pub struct Counted<R> {
    inner: R,
    bar: ProgressBar,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ended: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.count
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        } else if matches!(poll, std::task::Poll::Ready(Ok(())))
            && buf.remaining() > 0
            && !self.ended
        {
            // The end of the input: the database still builds indexes and constraints.
            self.ended = true;
            if !self.bar.is_hidden() {
                self.bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed}").unwrap(),
                );
                self.bar.set_message(
                    "all read; the database finishes the restore (indexes, constraints)",
                );
            }
        }
        poll
    }
}

/// `2,000`: a count, thousands grouped.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 file`, `2,000 files`.
pub fn counted(n: u64, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        n => format!("{} {thing}s", count(n)),
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(2000), "2,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(counted(1, "file"), "1 file");
        assert_eq!(counted(2000, "file"), "2,000 files");
    }

    #[tokio::test]
    async fn progress_reader_moves_the_bar_and_counts() {
        let data = vec![7u8; 100_000];
        let bar = ProgressBar::hidden();
        let (mut reader, count) = ProgressReader::new(&data[..], bar.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 100_000);
        assert_eq!(bar.position(), 100_000);
    }
}
