//! Ctrl-C (SIGINT) and SIGTERM as something work can be raced against, so that what a
//! command leaves behind (a partial upload, a temporary file, a disposable container)
//! is cleaned up before it exits.
//!
//! Listening starts at the first `Interrupt::get()` and lasts for the process: from
//! then on these signals never end the process by themselves, and one that comes
//! between two pieces of work is not lost. It never decides what to clean up.

use std::sync::OnceLock;

use tokio::sync::watch;

static RECEIVER: OnceLock<watch::Receiver<bool>> = OnceLock::new();

/// A handle on "has the user interrupted us?"; cheap to clone.
#[derive(Clone)]
pub struct Interrupt {
    rx: watch::Receiver<bool>,
}

impl Interrupt {
    /// Listen for SIGINT and SIGTERM (from the first call on, inside the runtime).
    pub fn get() -> std::io::Result<Self> {
        if let Some(rx) = RECEIVER.get() {
            return Ok(Self { rx: rx.clone() });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(false);
        let rx = RECEIVER.get_or_init(|| rx).clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            let _ = tx.send(true);
            // Keep the sender, so the flag stays readable.
            std::future::pending::<()>().await;
        });
        Ok(Self { rx })
    }

    /// Has a signal come (as far as the listener has seen)?
    pub fn hit(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once a signal has come (at once if one came already).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|hit| *hit).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
