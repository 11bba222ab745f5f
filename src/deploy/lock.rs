//! The deploy lock: a session-level Postgres advisory lock, held by one psql session
//! for the whole deploy, rollback or sync of an environment. It lives in the server's
//! `postgres` database, keyed by the environment's database name: a sync swaps that
//! database (ending every session in it), and the lock must outlast the swap. A killed
//! holder drops its session (the exec's connection closes, psql exits) and Postgres
//! releases the lock: nothing to clean up by hand. The holder names itself in
//! `pg_stat_activity`.
//!
//! It never takes the migration lock (the entrypoint's) or touches data.

use std::time::{Duration, Instant};

use crate::engine::ExecSession;
use crate::error::Hint;
use crate::restore::db::literal;
use crate::restore::Db;

/// Where the lock is taken: never a database a restore swaps.
const LOCK_DATABASE: &str = "postgres";

/// The key of `db`'s lock: every deploy, rollback and sync of this environment, from
/// any machine, contends for it.
fn key_sql(db: &Db) -> String {
    format!(
        "hashtext({})",
        literal(&format!("countable:deploy:{}", db.name))
    )
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deploy, rollback or sync of {env} holds the lock: {holder}")]
    Held { env: String, holder: String },
    #[error("{env} is being deployed or synced: {holder}")]
    Busy { env: String, holder: String },
}

impl Hint for LockError {
    fn hint(&self) -> Option<String> {
        match self {
            LockError::Held { env, .. } => Some(format!(
                "wait for it to finish (`countable deploy {env} --lock-wait 600` waits up to 10 minutes); a deploy that was killed releases the lock by itself"
            )),
            LockError::Busy { .. } => Some(
                "wait for it to finish, then run this again; one that was killed releases the lock by itself".into(),
            ),
        }
    }
}
crate::register_hint!(LockError);

/// The held lock; dropping it ends the session, which releases it.
pub struct DeployLock {
    session: ExecSession,
    key: String,
}

impl DeployLock {
    /// Take the lock for a deploy or rollback as `who` (shown to a second one),
    /// waiting up to `wait`.
    pub async fn take(db: &Db, env: &str, who: &str, wait: Duration) -> anyhow::Result<Self> {
        Self::take_named(db, &application_name(who), wait, |holder| LockError::Held {
            env: env.to_string(),
            holder,
        })
        .await
    }

    /// Take the lock for something else than a deploy (a sync), at once, named `what`
    /// (`countable <what>` in `pg_stat_activity`).
    pub async fn take_for(db: &Db, env: &str, what: &str) -> anyhow::Result<Self> {
        let name = bounded(&format!("countable {what}"));
        Self::take_named(db, &name, Duration::ZERO, |holder| LockError::Busy {
            env: env.to_string(),
            holder,
        })
        .await
    }

    /// Take the lock as session `name`, waiting up to `wait`; someone else holding it
    /// is `refused(their name)`.
    async fn take_named(
        db: &Db,
        name: &str,
        wait: Duration,
        refused: impl FnOnce(String) -> LockError,
    ) -> anyhow::Result<Self> {
        let key = key_sql(db);
        let mut session = db.session(LOCK_DATABASE, name).await?;
        let started = Instant::now();
        loop {
            session
                .send(format!("SELECT pg_try_advisory_lock({key});\n").as_bytes())
                .await?;
            match session.read_line(4096).await? {
                Some(l) if l.trim() == "t" => return Ok(Self { session, key }),
                Some(l) if l.trim() == "f" => {}
                other => {
                    let said = session.finish().await.map(|r| r.stderr).unwrap_or_default();
                    anyhow::bail!(
                        "taking the deploy lock failed ({}): {}",
                        other.unwrap_or_default(),
                        said.trim()
                    );
                }
            }
            if started.elapsed() >= wait {
                let holder = holder(db).await.unwrap_or_else(|_| "unknown".into());
                return Err(refused(holder).into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Release the lock and end the session.
    pub async fn release(mut self) -> anyhow::Result<()> {
        self.session
            .send(format!("SELECT pg_advisory_unlock({});\n", self.key).as_bytes())
            .await?;
        let _ = self.session.read_line(4096).await;
        let _ = self.session.finish().await;
        Ok(())
    }
}

/// What a deploy's session calls itself.
fn application_name(who: &str) -> String {
    bounded(&format!("countable deploy {who}"))
}

/// Printable, and within the 63 bytes Postgres keeps.
fn bounded(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(63);
    clean
}

/// Who holds the lock: the holder session's name and since when.
pub async fn holder(db: &Db) -> anyhow::Result<String> {
    let key = key_sql(db);
    let out = db
        .sql(
            LOCK_DATABASE,
            &format!(
                "SELECT a.application_name || ' (pid ' || a.pid || ', since ' || to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC)' \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND l.objsubid = 1 AND l.objid::bigint = (({key})::bigint & 4294967295) LIMIT 1"
            ),
        )
        .await?;
    Ok(match out.trim() {
        "" => "a session that has just ended".into(),
        h => h.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_are_printable_and_bounded() {
        let n = application_name("prod release 12 by Jürgen\n");
        assert!(n.starts_with("countable deploy prod release 12 by J"));
        assert!(!n.contains('\n'));
        assert!(application_name(&"x".repeat(200)).len() <= 63);
        assert_eq!(bounded("countable sync p by é"), "countable sync p by _");
    }
}
