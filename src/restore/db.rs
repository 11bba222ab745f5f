//! The database inside the db container, reached through the engine seam: who we are
//! there, which versions run, and SQL run by psql with the statements on stdin (never
//! through a shell string, never through a published port).

use std::io::Cursor;

use anyhow::Context;

use crate::archive::Reader;
use crate::engine::{Engine, ExecSession, StreamedExec};

/// The most output `sql` reads.
const SQL_OUTPUT_MAX: usize = 16 * 1024 * 1024;

/// `pg_tables t` rows of user tables that are not an extension's own.
const USER_TABLES: &str = "t.schemaname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = format('%I.%I', t.schemaname, t.tablename)::regclass AND d.deptype = 'e')";

/// `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Object counts and per-table row counts of a database.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Census {
    pub tables: u64,
    pub indexes: u64,
    pub sequences: u64,
    pub functions: u64,
    pub extensions: u64,
    /// `schema.table` → rows.
    pub rows: std::collections::BTreeMap<String, u64>,
}

impl Census {
    /// Every difference between `self` (expected) and `got`, in words.
    pub fn differences(&self, got: &Census) -> Vec<String> {
        let mut out = Vec::new();
        for (what, a, b) in [
            ("tables", self.tables, got.tables),
            ("indexes", self.indexes, got.indexes),
            ("sequences", self.sequences, got.sequences),
            ("functions", self.functions, got.functions),
            ("extensions", self.extensions, got.extensions),
        ] {
            if a != b {
                out.push(format!("{what}: expected {a}, restored {b}"));
            }
        }
        for (table, n) in &self.rows {
            match got.rows.get(table) {
                None => out.push(format!(
                    "table {table}: missing after restore (expected {n} rows)"
                )),
                Some(m) if m != n => {
                    out.push(format!("table {table}: expected {n} rows, restored {m}"))
                }
                _ => {}
            }
        }
        for table in got.rows.keys().filter(|t| !self.rows.contains_key(*t)) {
            out.push(format!("table {table}: restored but not in the manifest"));
        }
        out
    }
}

/// A `REPEATABLE READ` transaction held open in a psql session of its own, whose
/// snapshot other sessions import (`SET TRANSACTION SNAPSHOT`, `pg_dump --snapshot`):
/// what they read is the database as of one instant. The transaction lives until
/// `release` (or the drop of this value, which ends the session).
pub struct Snapshot {
    session: ExecSession,
    /// What `pg_export_snapshot()` returned, e.g. `00000003-0000001B-1`.
    pub id: String,
}

impl Snapshot {
    /// End the transaction and the session.
    pub async fn release(mut self) -> anyhow::Result<()> {
        self.session.send(b"COMMIT;\n").await?;
        let r = self.session.finish().await?;
        if r.code != 0 {
            anyhow::bail!(
                "the session holding the snapshot failed: {}",
                r.stderr.trim()
            );
        }
        Ok(())
    }
}

/// Is `id` the shape `pg_export_snapshot()` returns (hex digits and dashes)? It is
/// put into SQL and into a command line, so nothing else passes.
fn is_snapshot_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `sql` run inside a read-only transaction that sees `snapshot`, when given.
fn in_snapshot(sql: &str, snapshot: Option<&str>) -> String {
    match snapshot {
        None => sql.to_string(),
        Some(id) => format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT {};\n{sql};\nCOMMIT;\n",
            literal(id)
        ),
    }
}

/// Seconds after which a client's writes are surely in the statistics (PostgreSQL 15+
/// flushes a backend's counts when it goes idle, at most 10 s late; older servers
/// within half a second).
pub const POSITION_SETTLE_SECS: u64 = 11;

/// Where a database stands: what can tell that nobody wrote to it between two looks.
///
/// - `id`: the cluster's system identifier and the database's OID (a new one after a
///   swap or a re-create).
/// - `contents`: a digest of the user schema (tables, columns, constraints, functions,
///   storage files) and of each user table's insert/update/delete counts and each
///   sequence's value. VACUUM, ANALYZE and checkpoints change none of it.
/// - `next_xid`: the cluster's next transaction ID. Every transaction that writes
///   takes an ID, at once; reads take none; ANALYZE (anywhere in the cluster) does.
/// - `busy`: another client is in a writing transaction, or ended a transaction so
///   recently that its counts may not be in the statistics yet.
///
/// Unchanged ([`Position::unchanged_since`]): the same `id` and `contents`, and either
/// no transaction ID was taken since or nobody could have written unseen (not `busy`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub id: String,
    pub contents: String,
    pub next_xid: u64,
    #[serde(skip)]
    pub busy: bool,
}

impl Position {
    /// Is nothing written since `then`?
    pub fn unchanged_since(&self, then: &Position) -> bool {
        self.id == then.id
            && self.contents == then.contents
            && (self.next_xid == then.next_xid || !self.busy)
    }
}

/// The local database server, as seen from inside its container.
#[derive(Clone)]
pub struct Db {
    engine: Engine,
    pub container: String,
    /// The superuser the image was initialised with (POSTGRES_USER).
    pub user: String,
    /// The application's database (POSTGRES_DB).
    pub name: String,
    /// The container's `$PGDATA`, where countable's files in the data directory go.
    pub pgdata: String,
    /// The psql kept open for `sql` (shared by clones; opened on first use).
    session: std::sync::Arc<tokio::sync::Mutex<Option<super::session::Session>>>,
    /// e.g. 150018
    pub server_version: u32,
    /// `wal_level=minimal` (the dev override's db): a table created in a restore's
    /// one transaction is written without WAL and synced by its COMMIT.
    pub wal_minimal: bool,
    /// The locks the server's shared lock table is sized for: `max_locks_per_transaction`
    /// × every backend it may run (`max_connections`, autovacuum's workers and launcher,
    /// `max_worker_processes`, `max_wal_senders`) and `max_prepared_transactions`, as
    /// PostgreSQL sizes it (`NLOCKENTS`; it has some spare room beyond). A restore in one
    /// transaction that would hold more commits as it goes instead (see
    /// `load::per_object`).
    pub lock_slots: u64,
    /// (major, minor) of the container's pg_restore/psql.
    pub tools_version: (u32, u32),
}

fn parse_tool_version(text: &str) -> Option<(u32, u32)> {
    // "pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let v = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

impl Db {
    /// Learn user, database and versions from the running container.
    pub async fn discover(engine: Engine, container: String) -> anyhow::Result<Self> {
        let who = engine
            .exec_capture(
                &container,
                &["sh", "-c", "printf '%s\\n%s\\n%s\\n' \"${POSTGRES_USER:-postgres}\" \"${POSTGRES_DB:-${POSTGRES_USER:-postgres}}\" \"$PGDATA\"; pg_restore --version"],
                &[],
            )
            .await?;
        let mut lines = who.stdout.lines();
        let user = lines.next().unwrap_or("postgres").to_string();
        let name = lines.next().unwrap_or("postgres").to_string();
        let pgdata = lines.next().unwrap_or_default().to_string();
        let tools_version = lines
            .next()
            .and_then(parse_tool_version)
            .context("the db container has no pg_restore (is it a PostgreSQL image?)")?;
        let mut db = Self {
            engine,
            container,
            user,
            name,
            pgdata,
            session: Default::default(),
            server_version: 0,
            wal_minimal: false,
            lock_slots: 0,
            tools_version,
        };
        let shown = db
            .sql(
                "postgres",
                "SELECT concat_ws(' ', current_setting('server_version_num'), current_setting('wal_level'), current_setting('max_locks_per_transaction')::bigint * (current_setting('max_connections')::bigint + current_setting('autovacuum_max_workers')::bigint + 1 + current_setting('max_worker_processes')::bigint + current_setting('max_wal_senders')::bigint + current_setting('max_prepared_transactions')::bigint))",
            )
            .await?;
        let mut words = shown.split_whitespace();
        db.server_version = words
            .next()
            .unwrap_or_default()
            .parse()
            .context("reading the server version")?;
        db.wal_minimal = words.next() == Some("minimal");
        db.lock_slots = words
            .next()
            .unwrap_or_default()
            .parse()
            .context("reading the server's lock table size")?;
        Ok(db)
    }

    /// The engine the db container runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn server_major(&self) -> u32 {
        self.server_version / 10000
    }

    /// Run `cmd` in the db container with its stdout streamed into `sink`.
    pub async fn dump_to<W>(
        &self,
        cmd: &[&str],
        sink: &mut W,
    ) -> anyhow::Result<(i64, String, std::io::Result<u64>)>
    where
        W: tokio::io::AsyncWrite + Unpin + Send + ?Sized,
    {
        Ok(self
            .engine
            .exec_to_writer(&self.container, cmd, sink)
            .await?)
    }

    /// Run `cmd` in the db container with `stdin` streamed in; the last 64 KiB of its
    /// output are kept.
    pub async fn exec<R>(&self, cmd: &[&str], stdin: Option<R>) -> anyhow::Result<StreamedExec>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        self.exec_capped(cmd, stdin, 64 * 1024).await
    }

    /// `exec`, keeping up to `cap` bytes of output (`truncated` says if more came).
    pub async fn exec_capped<R>(
        &self,
        cmd: &[&str],
        stdin: Option<R>,
        cap: usize,
    ) -> anyhow::Result<StreamedExec>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        Ok(self
            .engine
            .exec_stream(&self.container, cmd, &[], stdin, cap)
            .await?)
    }

    /// psql, quiet and unaligned, tuples only, stopping at the first error, in `database`.
    pub fn psql_args<'a>(&'a self, database: &'a str) -> [&'a str; 11] {
        [
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            &self.user,
            "-d",
            database,
        ]
    }

    /// Run `sql` (statements on psql's stdin, stopping at the first error) in `database`
    /// and return what it printed (unaligned, tuples only). It goes through the session
    /// kept open for this (see `session`), or, while another request holds that, a psql
    /// of its own.
    pub async fn sql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        use super::session::{Failed, Session};
        let Ok(mut slot) = self.session.try_lock() else {
            return self.sql_apart(database, sql).await;
        };
        if slot.as_ref().is_some_and(Session::spoiled) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(
                Session::open(&self.engine, &self.container, &self.psql_args("postgres")).await?,
            );
        }
        let session = slot.as_mut().expect("opened above");
        match session.run(database, sql, SQL_OUTPUT_MAX).await {
            Ok(out) => Ok(out),
            Err(failed) => {
                *slot = None;
                match failed {
                    Failed::Stopped(stderr) => {
                        anyhow::bail!("psql in the db container failed: {}", stderr.trim())
                    }
                    Failed::TooLong => {
                        anyhow::bail!("the answer of psql was larger than countable reads (16 MiB)")
                    }
                    Failed::Transport(e) => Err(e),
                }
            }
        }
    }

    /// `sql` in a psql of its own: for a long statement (ANALYZE) while other requests
    /// go on beside it.
    pub async fn sql_apart(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let input: Reader = Box::pin(Cursor::new(sql.as_bytes().to_vec()));
        let r = self
            .exec_capped(&self.psql_args(database), Some(input), SQL_OUTPUT_MAX)
            .await?;
        if r.code != 0 {
            anyhow::bail!("psql in the db container failed: {}", r.stderr.trim());
        }
        if r.truncated {
            anyhow::bail!("the answer of psql was larger than countable reads (16 MiB)");
        }
        Ok(r.stdout)
    }

    /// Where `database` stands now (see [`Position`]).
    pub async fn position(&self, database: &str) -> anyhow::Result<Position> {
        let next = if self.server_major() >= 13 {
            "pg_snapshot_xmax(pg_current_snapshot())"
        } else {
            "txid_snapshot_xmax(txid_current_snapshot())"
        };
        let sequences = if self.server_major() >= 10 {
            "UNION ALL SELECT concat_ws(' ', 'q', schemaname, sequencename, last_value) FROM pg_sequences"
        } else {
            ""
        };
        let user =
            "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'";
        let out = self
            .sql(
                database,
                &format!(
                    "SELECT (SELECT s.system_identifier || '/' || d.oid FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()), \
                     (SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM ( \
                       SELECT concat_ws(' ', 'c', c.oid, c.relname, c.relkind, c.relfilenode) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user} \
                       UNION ALL SELECT concat_ws(' ', 'a', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attisdropped, a.atthasdef) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user} \
                       UNION ALL SELECT concat_ws(' ', 'k', co.oid, co.conname) FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE {user} \
                       UNION ALL SELECT concat_ws(' ', 'f', p.oid, md5(p.prosrc)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user} \
                       UNION ALL SELECT concat_ws(' ', 't', relid, n_tup_ins, n_tup_upd, n_tup_del) FROM pg_stat_user_tables \
                       {sequences}) t(x)), \
                     {next}, \
                     (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND (backend_xid IS NOT NULL OR state_change > now() - interval '{settle} seconds'))",
                    settle = POSITION_SETTLE_SECS,
                ),
            )
            .await?;
        let f: Vec<&str> = out.trim().split('|').collect();
        match f.as_slice() {
            [id, contents, next, busy] => Ok(Position {
                id: id.to_string(),
                contents: contents.to_string(),
                next_xid: next.parse()?,
                busy: busy.parse::<u64>()? > 0,
            }),
            _ => anyhow::bail!(
                "psql answered {out:?} where countable asked where the database stands"
            ),
        }
    }

    /// Does database `name` exist?
    pub async fn exists(&self, name: &str) -> anyhow::Result<bool> {
        let n = self
            .sql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    literal(name)
                ),
            )
            .await?;
        Ok(n.trim() == "1")
    }

    /// Tables outside the system schemas that a dump carries: those created by an
    /// extension (PostGIS's spatial_ref_sys, say) are not dumped and not counted.
    pub async fn table_count(&self, database: &str) -> anyhow::Result<u64> {
        Ok(self
            .sql(
                database,
                &format!("SELECT count(*) FROM pg_catalog.pg_tables t WHERE {USER_TABLES}"),
            )
            .await?
            .trim()
            .parse()?)
    }

    /// Exact row count over every user table.
    pub async fn row_count(&self, database: &str) -> anyhow::Result<u64> {
        let out = self
            .sql(
                database,
                &format!("SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text::bigint), 0) FROM pg_catalog.pg_tables t WHERE {USER_TABLES}"),
            )
            .await?;
        Ok(out.trim().parse()?)
    }

    /// The rows inserted into every user table of `database`, as the server's own
    /// statistics counted them: exact for a database just restored, read once every
    /// session that wrote it has ended. Since PostgreSQL 15 a backend adds its counts
    /// to the shared statistics before it leaves `pg_stat_activity`; older servers send
    /// them over a lossy socket, and `track_counts` may be off: then None (count rows).
    /// An autovacuum worker (it may start on a table `pg_restore -j` has committed)
    /// inserts nothing and is not waited for.
    pub async fn rows_inserted(&self, database: &str) -> anyhow::Result<Option<u64>> {
        if self.server_major() < 15 {
            return Ok(None);
        }
        let query = format!(
            "SELECT CASE WHEN current_setting('track_counts')::bool AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type <> 'autovacuum worker') THEN (SELECT coalesce(sum(pg_catalog.pg_stat_get_tuples_inserted(format('%I.%I', schemaname, tablename)::regclass)), 0) FROM pg_catalog.pg_tables t WHERE {USER_TABLES}) END"
        );
        for _ in 0..5 {
            let out = self.sql(database, &query).await?;
            if let Ok(n) = out.trim().parse() {
                return Ok(Some(n));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    /// The Django migrations recorded as applied in `database` (`django_migrations`),
    /// as one digest; None when it has no such table or cannot be read.
    pub async fn applied_migrations(&self, database: &str) -> Option<String> {
        let out = self
            .sql(
                database,
                "SELECT count(*) || ':' || coalesce(md5(string_agg(app || '.' || name, ',' ORDER BY app, name)), '') FROM django_migrations",
            )
            .await
            .ok()?;
        Some(out.trim().to_string())
    }

    /// A psql session in `database` that stays open: statements go in, answers come
    /// back line by line (unaligned, tuples only). `application_name` names it in
    /// `pg_stat_activity`.
    pub async fn session(
        &self,
        database: &str,
        application_name: &str,
    ) -> anyhow::Result<crate::engine::ExecSession> {
        Ok(self
            .engine
            .exec_session(
                &self.container,
                &self.psql_args(database),
                &[format!("PGAPPNAME={application_name}")],
            )
            .await?)
    }

    /// Open a `REPEATABLE READ` transaction in `database` and export its snapshot; the
    /// session stays open, idle in that transaction, until the snapshot is released.
    pub async fn export_snapshot(&self, database: &str) -> anyhow::Result<Snapshot> {
        let mut session = self
            .engine
            .exec_session(&self.container, &self.psql_args(database), &[])
            .await?;
        session
            .send(
                b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n",
            )
            .await?;
        match session.read_line(1024).await? {
            Some(id) if is_snapshot_id(id.trim()) => Ok(Snapshot {
                id: id.trim().to_string(),
                session,
            }),
            other => {
                let said = session.finish().await.map(|r| r.stderr).unwrap_or_default();
                anyhow::bail!(
                    "psql in the db container could not export a snapshot ({}): {}",
                    other.unwrap_or_default().trim(),
                    said.trim()
                )
            }
        }
    }

    /// What a backup's manifest records and a drill compares: object counts and each
    /// user table's exact row count.
    pub async fn census(&self, database: &str) -> anyhow::Result<Census> {
        self.census_at(database, None).await
    }

    /// `census`, read in `snapshot` (an id from `export_snapshot`) when given: then the
    /// counts are those of a dump taken with `pg_dump --snapshot`.
    pub async fn census_at(
        &self,
        database: &str,
        snapshot: Option<&str>,
    ) -> anyhow::Result<Census> {
        let not_system = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')";
        let not_extension = |classid: &str, oid: &str| {
            format!("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '{classid}'::regclass AND d.objid = {oid} AND d.deptype = 'e')")
        };
        let counts = self
            .sql(
                database,
                &in_snapshot(&format!(
                    "SELECT (SELECT count(*) FROM pg_catalog.pg_tables t WHERE {USER_TABLES}), \
                     (SELECT count(*) FROM pg_catalog.pg_indexes WHERE schemaname {not_system}), \
                     (SELECT count(*) FROM pg_catalog.pg_sequences WHERE schemaname {not_system}), \
                     (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname {not_system} AND {}), \
                     (SELECT count(*) FROM pg_catalog.pg_extension)",
                    not_extension("pg_catalog.pg_proc", "p.oid")
                ), snapshot),
            )
            .await?;
        let nums: Vec<u64> = counts
            .trim()
            .split('|')
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        let rows = self
            .sql(
                database,
                &in_snapshot(&format!("SELECT format('%s.%s', schemaname, tablename) || '=' || (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text FROM pg_catalog.pg_tables t WHERE {USER_TABLES} ORDER BY 1"), snapshot),
            )
            .await?
            .lines()
            .filter_map(|l| l.rsplit_once('=').map(|(t, n)| (t.to_string(), n.parse().unwrap_or(0))))
            .collect();
        Ok(Census {
            tables: nums.first().copied().unwrap_or(0),
            indexes: nums.get(1).copied().unwrap_or(0),
            sequences: nums.get(2).copied().unwrap_or(0),
            functions: nums.get(3).copied().unwrap_or(0),
            extensions: nums.get(4).copied().unwrap_or(0),
            rows,
        })
    }

    pub async fn size_bytes(&self, database: &str) -> anyhow::Result<u64> {
        Ok(self
            .sql(
                "postgres",
                &format!("SELECT pg_database_size({})", literal(database)),
            )
            .await?
            .trim()
            .parse()?)
    }

    /// Extensions this server can install.
    pub async fn available_extensions(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .sql("postgres", "SELECT name FROM pg_available_extensions")
            .await?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Drop `name` if it exists, disconnecting whoever is in it.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let force = if self.server_major() >= 13 {
            " WITH (FORCE)"
        } else {
            ""
        };
        if self.server_major() < 13 {
            self.sql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}",
                    literal(name)
                ),
            )
            .await?;
        }
        self.sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {}{force}", ident(name)),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_unchanged_only_when_nothing_could_have_been_written() {
        let then = Position {
            id: "7/16384".into(),
            contents: "abc".into(),
            next_xid: 900,
            busy: false,
        };
        let same = |f: &dyn Fn(&mut Position)| {
            let mut now = then.clone();
            f(&mut now);
            now.unchanged_since(&then)
        };
        assert!(same(&|_| {}));
        // Only ANALYZE took an ID, and no client can have written unseen.
        assert!(same(&|p| p.next_xid = 905));
        // An ID was taken while a client was writing or just done: not provably same.
        assert!(!same(&|p| {
            p.next_xid = 905;
            p.busy = true;
        }));
        // No ID taken: nothing committed, however busy.
        assert!(same(&|p| p.busy = true));
        assert!(!same(&|p| p.contents = "abd".into()));
        assert!(!same(&|p| p.id = "7/16999".into()));
    }

    #[test]
    fn census_differences_name_the_table() {
        let mut a = Census {
            tables: 2,
            ..Default::default()
        };
        a.rows.insert("shop.items".into(), 10);
        a.rows.insert("public.notes".into(), 5);
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.rows.insert("shop.items".into(), 9);
        b.indexes = 1;
        let d = a.differences(&b);
        assert_eq!(
            d,
            vec![
                "indexes: expected 0, restored 1",
                "table shop.items: expected 10 rows, restored 9"
            ]
        );
    }

    #[test]
    fn snapshot_ids_are_checked_and_imported() {
        assert!(is_snapshot_id("00000003-0000001B-1"));
        assert!(!is_snapshot_id(""));
        assert!(!is_snapshot_id("1'; DROP TABLE x; --"));
        assert_eq!(in_snapshot("SELECT 1", None), "SELECT 1");
        let sql = in_snapshot("SELECT 1", Some("00000003-0000001B-1"));
        assert!(sql.starts_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSET TRANSACTION SNAPSHOT '00000003-0000001B-1';\nSELECT 1;"), "{sql}");
        assert!(sql.ends_with("COMMIT;\n"));
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn tool_versions() {
        assert_eq!(
            parse_tool_version("pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some((15, 18))
        );
        assert_eq!(
            parse_tool_version("pg_restore (PostgreSQL) 17.2"),
            Some((17, 2))
        );
        assert_eq!(
            parse_tool_version("pg_restore (PostgreSQL) 18beta1"),
            Some((18, 0))
        );
        assert_eq!(parse_tool_version("nothing"), None);
    }
}
