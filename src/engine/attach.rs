//! An exec attached to this terminal, for a person at a prompt (`countable psql` on any
//! environment's db container, local or remote). With a terminal on both ends the
//! program gets a TTY of this terminal's size and this terminal is in raw mode (put
//! back on every way out); without one, stdin is streamed in and closed at its end,
//! and the program's stdout and stderr stay apart, so pipes and scripts work.
//!
//! It never reads what passes through; the exit code is the program's.

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Engine, EngineError};

/// This terminal in raw mode while it lives; the saved settings come back on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Are stdin and stdout both terminals?
pub fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The exit code shells report for a program killed by SIGPIPE: our reader went away.
const BROKEN_PIPE: i64 = 128 + 13;

impl Engine {
    /// Run `cmd` in `container` attached to this terminal (a TTY when `tty`), as
    /// `user` (None: the container's); its exit code.
    pub async fn exec_attached(
        &self,
        container: &str,
        cmd: &[&str],
        env: &[String],
        tty: bool,
        user: Option<&str>,
    ) -> Result<i64, EngineError> {
        let (exec_id, mut output, mut input) = self
            .start_attached(container, cmd, env, true, tty, user)
            .await?;
        let raw = if tty { RawMode::enter().ok() } else { None };
        if tty {
            if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
                let _ = self
                    .docker
                    .resize_exec(
                        &exec_id,
                        bollard::exec::ResizeExecOptions {
                            height: size.ws_row,
                            width: size.ws_col,
                        },
                    )
                    .await;
            }
        }
        // stdin → the program; its end closes the program's stdin (psql then ends).
        let feed = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut input).await;
            let _ = input.shutdown().await;
        });
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        let mut failed = None;
        let mut reader_gone = false;
        while let Some(chunk) = output.next().await {
            let written = match chunk {
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    stderr.write_all(&message).await.and(stderr.flush().await)
                }
                Ok(
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message },
                ) => stdout.write_all(&message).await.and(stdout.flush().await),
                Ok(_) => Ok(()),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // Our stdout closed (`| head`): stop, as a program in a pipe would.
            if written.is_err() {
                reader_gone = true;
                break;
            }
        }
        feed.abort();
        drop(raw);
        if let Some(e) = failed {
            return Err(e.into());
        }
        if reader_gone {
            return Ok(BROKEN_PIPE);
        }
        self.exit_code(&exec_id).await
    }

    /// The exit code of a finished exec: its output has ended, but the engine may
    /// take a moment to record the code.
    async fn exit_code(&self, exec_id: &str) -> Result<i64, EngineError> {
        for _ in 0..50 {
            let inspect = self.docker.inspect_exec(exec_id).await?;
            if inspect.running != Some(true) {
                if let Some(code) = inspect.exit_code {
                    return Ok(code);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(EngineError::Api(
            bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: format!("the engine recorded no exit code for exec {exec_id}"),
            },
        ))
    }
}
