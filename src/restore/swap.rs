//! The swap: the restored database becomes the current one, the current one becomes
//! the previous one (for `undo-db`), all renames in one transaction. The previous
//! previous database is renamed aside in that same transaction and dropped only after
//! the commit, so a swap that fails at any point leaves current and previous as they
//! were: there is always an undo point.
//!
//! The app may keep running: the databases are closed to new sessions
//! (`ALLOW_CONNECTIONS false`), their sessions ended, and the renames and the
//! reopening committed in one transaction sent in the same round trip. A request in
//! flight at that instant fails; the app's next one reconnects by name, to the new
//! database (Django checks a reused connection first: `CONN_HEALTH_CHECKS`). A swap
//! that fails reopens the databases as they were; a countable killed in between is
//! put right by `durability::recover`.

use std::time::Duration;

use super::db::{ident, literal, Db};
use super::{old_name, previous_name, Apps, RestoreError, Target};
use crate::ui::Printer;

/// The renames of a swap of `new` into `db`, given which databases exist now.
fn swap_sql(db: &str, new: &str, current_exists: bool, previous_exists: bool) -> String {
    let (cur, prev, old, new) = (
        ident(db),
        ident(&previous_name(db)),
        ident(&old_name(db)),
        ident(new),
    );
    let mut sql = String::from("BEGIN;\n");
    if current_exists {
        if previous_exists {
            sql.push_str(&format!("ALTER DATABASE {prev} RENAME TO {old};\n"));
        }
        sql.push_str(&format!("ALTER DATABASE {cur} RENAME TO {prev};\n"));
    }
    sql.push_str(&format!("ALTER DATABASE {new} RENAME TO {cur};\n"));
    sql.push_str(&reopen_sql(&[db]));
    if current_exists {
        sql.push_str(&reopen_sql(&[&previous_name(db)]));
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// `ALTER DATABASE … ALLOW_CONNECTIONS true` for each of `names`.
fn reopen_sql(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("ALTER DATABASE {} ALLOW_CONNECTIONS true;\n", ident(n)))
        .collect()
}

/// `ALTER DATABASE … ALLOW_CONNECTIONS false` for each of `names`.
fn close_sql(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("ALTER DATABASE {} ALLOW_CONNECTIONS false;\n", ident(n)))
        .collect()
}

/// Stop the app services, swap `new` in, start the services again (also when the swap
/// failed). After the commit, the former previous database is dropped.
pub async fn swap(target: &Target, new: &str, printer: &Printer) -> anyhow::Result<()> {
    let db = &target.db;
    let prev = previous_name(&db.name);
    let old = old_name(&db.name);
    // A leftover of a swap that died after its commit: the previous previous database.
    db.drop_database(&old).await?;
    let current_exists = db.exists(&db.name).await?;
    let previous_exists = db.exists(&prev).await?;
    let renames = swap_sql(&db.name, new, current_exists, previous_exists);
    let mut open: Vec<&str> = vec![new];
    if current_exists {
        open.push(&db.name);
    }
    if previous_exists {
        open.push(&prev);
    }
    with_apps_stopped(target, printer, async {
        rename_with_retry(db, &open, &renames).await
    })
    .await?;
    db.drop_database(&old).await
}

/// Swap the current database with the previous one (undo the last restore).
pub async fn undo(target: &Target, printer: &Printer) -> anyhow::Result<()> {
    let db = &target.db;
    let prev = previous_name(&db.name);
    if !db.exists(&prev).await? {
        return Err(RestoreError::NoPrevious.into());
    }
    let tmp = format!("{}__countable_swap", db.name);
    let renames = format!(
        "BEGIN;\nALTER DATABASE {cur} RENAME TO {tmp};\nALTER DATABASE {prev} RENAME TO {cur};\nALTER DATABASE {tmp} RENAME TO {prev};\n{}COMMIT;\n",
        reopen_sql(&[&db.name, &prev]),
        cur = ident(&db.name),
        tmp = ident(&tmp),
        prev = ident(&prev)
    );
    with_apps_stopped(target, printer, async {
        db.drop_database(&tmp).await?;
        rename_with_retry(db, &[&db.name, &prev], &renames).await
    })
    .await
}

/// `verb` (`stop` or `start`) the app `services` of the target: `docker compose
/// VERB SERVICE…` on a blocking thread (so the runtime, and Ctrl-C, go on), or the
/// engine's stop/start of their containers.
async fn apps(target: &Target, verb: &str, services: &[String]) -> anyhow::Result<()> {
    match &target.apps {
        Apps::Compose(compose) => {
            let compose = compose.clone();
            let args: Vec<String> = std::iter::once(verb.to_string())
                .chain(services.iter().cloned())
                .collect();
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                compose.capture(&args)
            })
            .await??;
        }
        Apps::Engine { engine, project } => {
            for c in engine.project_services(project).await? {
                if !services.contains(&c.service) {
                    continue;
                }
                match (verb, c.state == "running") {
                    ("stop", true) => engine.stop(&c.id, 30).await?,
                    ("start", false) => engine.start(&c.id).await?,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

async fn with_apps_stopped<F>(target: &Target, printer: &Printer, work: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let stopped: Vec<String> = target
        .app_services
        .iter()
        .chain(&target.keep_stopped)
        .cloned()
        .collect();
    if !stopped.is_empty() {
        printer.status(&format!("stopping {} for the swap", stopped.join(", ")));
        apps(target, "stop", &stopped).await?;
    }
    let result = work.await;
    // What the caller replaces stays stopped, unless the swap failed: then the old
    // database is still current and its app comes back.
    let restart: Vec<String> = if result.is_ok() {
        target.app_services.clone()
    } else {
        stopped
    };
    if !restart.is_empty() {
        if let Err(e) = apps(target, "start", &restart).await {
            printer.warn(&format!(
                "starting {} again failed: {e}; run `countable up`",
                restart.join(", ")
            ));
        }
    }
    result
}

/// In one round trip: close `names` (the databases that exist and are renamed) to new
/// sessions, end their sessions and commit the renames (`renames`, which reopen the
/// databases). Retried while a session that was on its way in holds one (55006).
/// On failure the databases are reopened as they were.
async fn rename_with_retry(db: &Db, names: &[&str], renames: &str) -> anyhow::Result<()> {
    let listed: Vec<String> = names.iter().map(|n| literal(n)).collect();
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN ({}) AND pid <> pg_backend_pid();\n",
        listed.join(", ")
    );
    // One round trip, so the databases are closed only for as long as the sessions
    // take to end and the renames to commit. Verbose errors carry the SQLSTATE: 55006
    // is "object in use", in any language.
    let script = format!(
        "\\set VERBOSITY verbose\n{}{terminate}{renames}",
        close_sql(names)
    );
    let mut last = None;
    for _ in 0..20 {
        match db.sql("postgres", &script).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("55006") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let _ = db.sql("postgres", &reopen_sql(names)).await;
    Err(last.unwrap_or_else(|| anyhow::anyhow!("renaming the databases failed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_database_is_set_aside_not_dropped_before_the_commit() {
        let sql = swap_sql("shop", "shop__countable_new", true, true);
        assert_eq!(
            sql,
            "BEGIN;\nALTER DATABASE \"shop__countable_prev\" RENAME TO \"shop__countable_old\";\nALTER DATABASE \"shop\" RENAME TO \"shop__countable_prev\";\nALTER DATABASE \"shop__countable_new\" RENAME TO \"shop\";\nALTER DATABASE \"shop\" ALLOW_CONNECTIONS true;\nALTER DATABASE \"shop__countable_prev\" ALLOW_CONNECTIONS true;\nCOMMIT;\n"
        );
        assert!(!sql.contains("DROP"));
        let first = swap_sql("shop", "shop__countable_new", false, true);
        assert!(!first.contains("__countable_prev"), "{first}");
        let fresh = swap_sql("shop", "shop__countable_new", true, false);
        assert!(!fresh.contains("__countable_old"), "{fresh}");
    }
}
