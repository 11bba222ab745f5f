//! The one place that starts local programs: `docker compose` (through `compose`),
//! decoders that only exist as programs (`lrzip`), `ssh` (the engine's tunnels) and a
//! browser (`countable open`).
//! Everything else talks to libraries or to the Docker API (`engine`).
//!
//! It never decides what to run; callers pass the program and its arguments.

// This is the seam: the one module allowed to do what clippy.toml forbids elsewhere.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// A synchronous command for `program` (compose).
pub fn command(program: &str) -> std::process::Command {
    std::process::Command::new(program)
}

/// An asynchronous command for `program` (ssh, for `engine::ssh`).
pub fn async_command(program: &str) -> tokio::process::Command {
    tokio::process::Command::new(program)
}

/// Start `program args…` and leave it running on its own (a browser): no stdin, its
/// output discarded, not waited for.
pub fn launch(program: &str, args: &[&str]) -> anyhow::Result<()> {
    command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    Ok(())
}

/// Is `program` on PATH (and executable)?
pub fn exists(program: &str) -> bool {
    which::which(program).is_ok()
}

/// A running filter program: bytes go in through `input`'s copy task, its output comes
/// out of the stdout returned beside it; `finish` reports how it ended.
pub struct Filter {
    child: tokio::process::Child,
    feeder: tokio::task::JoinHandle<std::io::Result<u64>>,
    stderr: tokio::task::JoinHandle<String>,
    name: String,
}

/// Start `program args…` with `input` streamed to its stdin; returns its stdout.
pub fn spawn_filter<R>(
    program: &str,
    args: &[&str],
    mut input: R,
) -> anyhow::Result<(tokio::process::ChildStdout, Filter)>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let feeder = tokio::spawn(async move {
        let n = tokio::io::copy(&mut input, &mut stdin).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        n
    });
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = (&mut err).take(64 * 1024).read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    Ok((
        stdout,
        Filter {
            child,
            feeder,
            stderr,
            name: program.to_string(),
        },
    ))
}

impl Filter {
    /// As [`Filter::finish`], after its output was read as far as the reader needed: a
    /// tar entry read to its end leaves the archive's end blocks and padding unread,
    /// and a program still writing them then dies of SIGPIPE. That death only says the
    /// rest had nowhere to go; whether what was read is whole, the reader checks (the
    /// dump's trailer, its counts).
    pub async fn finish_read(mut self) -> anyhow::Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.wait().await?;
        // Killed by SIGPIPE, itself or under a shell (128 + 13).
        if status.signal() == Some(13) || status.code() == Some(141) {
            let _ = self.feeder.await;
            return Ok(());
        }
        self.settle(status).await
    }

    /// Wait for the program; an error names the program, its status and its stderr.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        let status = self.wait().await?;
        self.settle(status).await
    }

    async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {}", self.name))
    }

    async fn settle(self, status: std::process::ExitStatus) -> anyhow::Result<()> {
        let fed = self.feeder.await.context("joining the input task")?;
        let stderr = self.stderr.await.unwrap_or_default();
        if let Err(e) = fed {
            if status.success() {
                return Err(anyhow::Error::new(e).context(format!("feeding {}", self.name)));
            }
        }
        if !status.success() {
            anyhow::bail!("{} failed ({status}): {}", self.name, stderr.trim());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_filter_left_writing_after_its_reader_stopped_is_not_a_failure() {
        // `yes` writes until its reader goes: it dies of SIGPIPE.
        let (mut out, filter) = spawn_filter("sh", &["-c", "yes"], tokio::io::empty()).unwrap();
        let mut first = [0u8; 10];
        out.read_exact(&mut first).await.unwrap();
        drop(out);
        filter.finish_read().await.unwrap();
        // A program that fails on its own still fails.
        let (mut out, filter) =
            spawn_filter("sh", &["-c", "echo broken >&2; exit 3"], tokio::io::empty()).unwrap();
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).await.unwrap();
        let e = filter.finish_read().await.unwrap_err();
        assert!(format!("{e:#}").contains("broken"), "{e:#}");
    }
}
