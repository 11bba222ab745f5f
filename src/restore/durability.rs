//! The restore's claim on a local database server, and the non-durable settings it may
//! make there. Before a restore touches anything, it writes a marker into the data
//! directory (`$PGDATA/countable-durability`): who is restoring (host, pid, process
//! start) and the settings as they were. The marker goes only when the server is
//! durable again and flushed to disk.
//!
//! A countable killed mid-restore (`kill -9`, a power cut on the laptop) leaves the
//! marker behind: the next command that touches the local db (`recover`) sees that its
//! owner is gone, puts every setting back, flushes, and drops the half-made databases.
//! A live owner's marker is left alone, and a second restore is refused while it runs.

use serde::{Deserialize, Serialize};

use super::container::{self, MARKER};
use super::db::{literal, Db};
use super::{new_name, old_name};
use crate::error::Hinted;

/// Relaxed while restoring into a throwaway local database.
pub const RELAXED: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("autovacuum", "off"),
    ("max_wal_size", "4GB"),
    ("maintenance_work_mem", "256MB"),
];

/// `off` vs `off`, `4GB` vs `4096` (MB, as pg_file_settings may show it).
fn relaxed_equal(seen: &str, ours: &str) -> bool {
    seen.eq_ignore_ascii_case(ours)
        || (ours == "4GB" && seen == "4096")
        || (ours == "256MB" && seen == "262144")
}

/// Who holds a restore, as written in the marker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22),
    /// so a recycled pid is not mistaken for the owner.
    pub start: u64,
}

impl Owner {
    fn me() -> Self {
        let pid = std::process::id();
        Self {
            host: hostname(),
            pid,
            start: process_start(pid).unwrap_or(0),
        }
    }

    /// Is this owner a process that still runs on this machine? (An owner on another
    /// machine cannot be checked and counts as alive.)
    fn alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        match process_start(self.pid) {
            Some(start) => self.start == 0 || start == self.start,
            None => false,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `$PGDATA/countable-durability`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    pub owner: Owner,
    /// The database being restored into (dropped if the owner died).
    pub database: String,
    /// Were the settings relaxed? Then `prior` holds the user's own values.
    pub relaxed: bool,
    /// Values of RELAXED settings that `ALTER SYSTEM` had set before countable.
    pub prior: Vec<(String, String)>,
}

/// A restore's hold on the server: made by `claim`, ended by `release`.
pub struct Claim {
    marker: Marker,
}

/// What `recover` put right.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovered {
    pub settings: bool,
    pub dropped: Vec<String>,
    /// Databases a killed swap left closed to connections, opened again.
    pub reopened: Vec<String>,
}

async fn read_marker(db: &Db) -> anyhow::Result<Option<Marker>> {
    let Some(text) = container::read_data_file(db, MARKER).await? else {
        return Ok(None);
    };
    // An unreadable marker is still a marker: treat it as a dead owner's, with the
    // settings relaxed and nothing known of the user's own values.
    Ok(Some(serde_json::from_str(&text).unwrap_or(Marker {
        owner: Owner {
            host: String::new(),
            pid: 0,
            start: 0,
        },
        database: new_name(&db.name),
        relaxed: true,
        prior: Vec::new(),
    })))
}

async fn write_marker(db: &Db, marker: &Marker) -> anyhow::Result<()> {
    container::write_file(db, MARKER, serde_json::to_vec_pretty(marker)?).await
}

/// The RELAXED settings that postgresql.auto.conf holds now, leftovers of ours excluded.
async fn user_settings(db: &Db) -> anyhow::Result<Vec<(String, String)>> {
    let names: Vec<String> = RELAXED.iter().map(|(n, _)| literal(n)).collect();
    Ok(db
        .sql(
            "postgres",
            &format!(
                "SELECT name || '=' || setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' AND name IN ({})",
                names.join(", ")
            ),
        )
        .await?
        .lines()
        .filter_map(|l| l.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())))
        // A value equal to ours is a leftover of an older countable killed mid-restore.
        .filter(|(n, v)| !RELAXED.iter().any(|(rn, rv)| rn == n && relaxed_equal(v, rv)))
        .collect())
}

/// SQL that puts every RELAXED setting back to `prior` (or resets it).
fn put_back_sql(prior: &[(String, String)]) -> String {
    let mut sql = String::new();
    for (name, _) in RELAXED {
        match prior.iter().find(|(n, _)| n == name) {
            Some((_, v)) => sql.push_str(&format!("ALTER SYSTEM SET {name} = {};\n", literal(v))),
            None => sql.push_str(&format!("ALTER SYSTEM RESET {name};\n")),
        }
    }
    sql.push_str("SELECT pg_reload_conf();\n");
    sql
}

/// Make the server durable again and flush what was written while it was not: the
/// settings, a reload, a CHECKPOINT, then `sync` of the container's file systems
/// (files written with fsync off were never registered for the checkpoint's fsync).
async fn put_back(db: &Db, prior: &[(String, String)]) -> anyhow::Result<()> {
    db.sql("postgres", &put_back_sql(prior)).await?;
    db.sql("postgres", "CHECKPOINT").await?;
    container::sync(db).await
}

impl Claim {
    /// Claim the server for a restore into `database`, relaxing durability if `relax`.
    /// Refused while another countable's restore holds it.
    pub async fn claim(db: &Db, database: &str, relax: bool) -> anyhow::Result<Self> {
        if let Some(m) = read_marker(db).await? {
            if m.owner.alive() {
                return Err(busy(&m).into());
            }
        }
        let prior = if relax {
            user_settings(db).await?
        } else {
            Vec::new()
        };
        let marker = Marker {
            owner: Owner::me(),
            database: database.to_string(),
            relaxed: relax,
            prior,
        };
        // The marker first: a kill between here and the settings leaves a marker whose
        // put-back is harmless.
        write_marker(db, &marker).await?;
        if relax {
            let mut sql: String = RELAXED
                .iter()
                .map(|(n, v)| format!("ALTER SYSTEM SET {n} = {};\n", literal(v)))
                .collect();
            sql.push_str("SELECT pg_reload_conf();\n");
            if let Err(e) = db.sql("postgres", &sql).await {
                let _ = put_back(db, &marker.prior).await;
                let _ = container::remove_data_file(db, MARKER).await;
                return Err(e);
            }
        }
        Ok(Self { marker })
    }

    /// Durable again (settings back, checkpoint, sync), then the claim ends.
    pub async fn release(&self, db: &Db) -> anyhow::Result<()> {
        if self.marker.relaxed {
            put_back(db, &self.marker.prior).await?;
        }
        container::remove_data_file(db, MARKER).await
    }

    /// Make the server durable again but keep the claim (before the swap).
    pub async fn durable(&mut self, db: &Db) -> anyhow::Result<()> {
        if self.marker.relaxed {
            put_back(db, &self.marker.prior).await?;
            self.marker.relaxed = false;
            write_marker(db, &self.marker).await?;
        }
        Ok(())
    }
}

fn busy(m: &Marker) -> Hinted {
    Hinted::new(
        format!(
            "another countable restore into this database is running (pid {} on {})",
            m.owner.pid,
            if m.owner.host.is_empty() {
                "an unknown host"
            } else {
                &m.owner.host
            }
        ),
        "wait until it ends, then run the command again",
    )
}

/// Put right what a countable that died mid-restore left: settings, half-made and
/// half-dropped databases, scratch files. Nothing is done while the owner lives.
pub async fn recover(db: &Db) -> anyhow::Result<Recovered> {
    let mut done = Recovered::default();
    let Some(m) = read_marker(db).await? else {
        return Ok(done);
    };
    if m.owner.alive() {
        return Ok(done);
    }
    if m.relaxed {
        put_back(db, &m.prior).await?;
        done.settings = true;
    }
    // A swap killed between closing the databases and its commit left them closed.
    let closed = db
        .sql(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE NOT datallowconn AND datname IN ({}, {})",
                literal(&db.name),
                literal(&super::previous_name(&db.name))
            ),
        )
        .await?;
    for name in closed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        db.sql(
            "postgres",
            &format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                super::db::ident(name)
            ),
        )
        .await?;
        done.reopened.push(name.to_string());
    }
    for name in [m.database.clone(), old_name(&db.name)] {
        if name != db.name && db.exists(&name).await? {
            db.drop_database(&name).await?;
            done.dropped.push(name);
        }
    }
    container::remove_all_scratch(db).await;
    container::remove_data_file(db, MARKER).await?;
    Ok(done)
}

/// How far a local server is from durable (for `doctor`).
#[derive(Debug, Default, PartialEq)]
pub struct Departures {
    /// Crash-safety settings that are off.
    pub off: Vec<String>,
    /// A restore's marker: `Some(true)` while its owner runs, `Some(false)` when a
    /// killed restore left it (the next command that opens the db puts things back).
    pub restore: Option<bool>,
}

/// The crash-safety settings that are off, and a restore's marker.
pub async fn departures(db: &Db) -> anyhow::Result<Departures> {
    let off = db
        .sql(
            &db.name,
            "SELECT name FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes') AND setting = 'off' ORDER BY name",
        )
        .await?;
    Ok(Departures {
        off: off
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        restore: read_marker(db).await?.map(|m| m.owner.alive()),
    })
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        !self.settings && self.dropped.is_empty() && self.reopened.is_empty()
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.settings {
            parts.push(format!(
                "put back {} and flushed the data to disk",
                RELAXED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.dropped.is_empty() {
            parts.push(format!("dropped the half-made {}", self.dropped.join(", ")));
        }
        if !self.reopened.is_empty() {
            parts.push(format!(
                "reopened {} to connections",
                self.reopened.join(", ")
            ));
        }
        format!(
            "an earlier countable restore was interrupted; {}",
            parts.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert!(me.alive());
        let recycled = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!recycled.alive(), "same pid, other start: not the owner");
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(!gone.alive());
        let elsewhere = Owner {
            host: "elsewhere.invalid".into(),
            ..gone
        };
        assert!(
            elsewhere.alive(),
            "an owner on another host cannot be judged dead"
        );
    }

    #[test]
    fn put_back_sets_the_users_values_and_resets_the_rest() {
        let sql = put_back_sql(&[("max_wal_size".into(), "2GB".into())]);
        assert!(sql.contains("ALTER SYSTEM SET max_wal_size = '2GB';"));
        assert!(sql.contains("ALTER SYSTEM RESET fsync;"));
        assert!(sql.contains("ALTER SYSTEM RESET full_page_writes;"));
        assert!(sql.trim_end().ends_with("SELECT pg_reload_conf();"));
    }
}
