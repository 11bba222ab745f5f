//! `countable deploy <env>`: production from the project's own compose files.
//!
//! In order: preflight (clean tree, right branch, engine up), the database up, the
//! deploy lock, the image built here, room checked on the host's disk and in the store
//! (`space`), the image shipped to the host (no registry: one API stream of the layers
//! it lacks, within the room it has; skipped when it has the image), a checked backup,
//! the release directory
//! written, the new web container started beside the old one, the health gate, nginx
//! switched, the old container drained and removed, the other services converged,
//! the ledger completed and old images pruned. A failure before the switch leaves
//! the old release serving and is recorded as a failed release.
//!
//! Secrets travel in memory: to compose through its environment, to the host as
//! `.env` (0600). Nothing here prints a value.

pub mod bundle;
pub mod gate;
pub mod ledger;
pub mod lock;
pub mod model;
pub mod prune;
pub mod restore_db;
pub mod rollback;
pub mod run;
pub mod settings;
pub mod space;
pub mod target;
pub mod tls;

use std::time::{Duration, Instant};

pub use run::deploy;

/// How `deploy` behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Deploy this ref instead of the working tree's HEAD.
    pub git_ref: Option<String>,
    /// Deploy although the working tree has changes.
    pub allow_dirty: bool,
    /// Deploy a commit that is not on the environment's branch.
    pub force: bool,
    /// Print the steps and commands, change nothing.
    pub dry_run: bool,
    /// How long to wait for another deploy's lock.
    pub lock_wait: Duration,
}

/// Step timings for the ledger.
#[derive(Debug, Default)]
pub struct Steps {
    pub done: Vec<ledger::Step>,
    current: Option<(String, Instant)>,
}

impl Steps {
    /// Begin `name` (ending the step before it, as succeeded).
    pub fn begin(&mut self, name: &str) {
        self.end(true);
        self.current = Some((name.to_string(), Instant::now()));
    }

    /// End the running step.
    pub fn end(&mut self, ok: bool) {
        if let Some((name, at)) = self.current.take() {
            self.done.push(ledger::Step {
                name,
                seconds: (at.elapsed().as_secs_f64() * 100.0).round() / 100.0,
                ok,
            });
        }
    }
}
