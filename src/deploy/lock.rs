//! The deploy lock: a session-level Postgres advisory lock in the environment's own
//! database, held by one psql session for the whole deploy. A killed deploy drops its
//! session (the exec's connection closes, psql exits) and Postgres releases the lock:
//! nothing to clean up by hand. The holder names itself in `pg_stat_activity`.
//!
//! It never takes the migration lock (the entrypoint's) or touches data.

use std::time::{Duration, Instant};

use crate::engine::ExecSession;
use crate::error::Hint;
use crate::restore::Db;

/// `hashtext('countable:deploy')`: one key per database, so every deploy of this
/// environment, from any machine, contends for the same lock.
const KEY_SQL: &str = "hashtext('countable:deploy')";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deploy of {env} holds the lock: {holder}")]
    Held { env: String, holder: String },
}

impl Hint for LockError {
    fn hint(&self) -> Option<String> {
        match self {
            LockError::Held { env, .. } => Some(format!(
                "wait for it to finish (`countable deploy {env} --lock-wait 600` waits up to 10 minutes); a deploy that was killed releases the lock by itself"
            )),
        }
    }
}
crate::register_hint!(LockError);

/// The held lock; dropping it ends the session, which releases it.
pub struct DeployLock {
    session: ExecSession,
}

impl DeployLock {
    /// Take the lock as `who` (shown to a second deploy), waiting up to `wait`.
    pub async fn take(db: &Db, env: &str, who: &str, wait: Duration) -> anyhow::Result<Self> {
        let mut session = db.session(&db.name, &application_name(who)).await?;
        let started = Instant::now();
        loop {
            session
                .send(format!("SELECT pg_try_advisory_lock({KEY_SQL});\n").as_bytes())
                .await?;
            match session.read_line(4096).await? {
                Some(l) if l.trim() == "t" => return Ok(Self { session }),
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
                return Err(LockError::Held {
                    env: env.to_string(),
                    holder,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Release the lock and end the session.
    pub async fn release(mut self) -> anyhow::Result<()> {
        self.session
            .send(format!("SELECT pg_advisory_unlock({KEY_SQL});\n").as_bytes())
            .await?;
        let _ = self.session.read_line(4096).await;
        let _ = self.session.finish().await;
        Ok(())
    }
}

/// What the holder's session calls itself (Postgres keeps 63 bytes of it).
fn application_name(who: &str) -> String {
    let clean: String = who
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("countable deploy {clean}");
    name.truncate(63);
    name
}

/// Who holds the lock: the holder session's name and since when.
pub async fn holder(db: &Db) -> anyhow::Result<String> {
    let out = db
        .sql(
            &db.name,
            &format!(
                "SELECT a.application_name || ' (pid ' || a.pid || ', since ' || to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC)' \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.objsubid = 1 AND l.objid::bigint = (({KEY_SQL})::bigint & 4294967295) LIMIT 1"
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
    }
}
