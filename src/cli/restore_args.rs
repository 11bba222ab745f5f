//! Options `pull-db` and `import-db` share.

use crate::error::Hinted;
use crate::restore::Options;
use crate::ui::Printer;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Parallel pg_restore jobs for custom-format archives (spools the archive into the
    /// db container's volume first)
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Drop the replaced database instead of keeping it for `countable undo-db`
    #[arg(long)]
    pub no_keep: bool,
    /// Keep the server's durable settings during the restore (slower)
    #[arg(long)]
    pub durable: bool,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Print the plan instead of restoring
    #[arg(long)]
    pub dry_run: bool,
}

impl RestoreArgs {
    /// `--no-keep` drops the replaced database for good: without a terminal to confirm
    /// it on, it needs `--yes`. `retry` is the command line to repeat with it.
    pub fn check_no_keep(
        &self,
        printer: &Printer,
        project: &str,
        retry: &str,
    ) -> anyhow::Result<()> {
        if self.no_keep && !printer.interactive() && !printer.assumed_yes() {
            return Err(Hinted::new(
                format!("--no-keep drops the current local database of {project} for good, and no terminal is here to confirm it"),
                format!("{retry} --no-keep --yes, or leave out --no-keep to keep it for `countable undo-db`"),
            )
            .into());
        }
        Ok(())
    }

    /// Ask before replacing `project`'s local database with `what`, saying truthfully what
    /// is kept (see [`Self::check_no_keep`]).
    pub fn confirm(
        &self,
        printer: &Printer,
        project: &str,
        what: &str,
        retry: &str,
    ) -> anyhow::Result<bool> {
        self.check_no_keep(printer, project, retry)?;
        if !printer.interactive() {
            // Nothing to ask on; --no-keep got here only with --yes.
            return Ok(true);
        }
        let kept = if self.no_keep {
            "the current one is dropped and cannot be brought back"
        } else {
            "the current one is kept for `countable undo-db`, replacing any kept before"
        };
        printer.confirm(
            &format!("Replace the local database of {project} with {what}? ({kept})"),
            !self.no_keep,
        )
    }

    pub fn options(&self) -> Options {
        Options {
            keep_previous: !self.no_keep,
            jobs: self.jobs,
            fast: !self.durable,
            template: None,
        }
    }

    /// The plan `--dry-run` prints: the same steps the playbook takes.
    pub fn plan(&self, source: &str, db_service: &str) -> Vec<String> {
        let mut v = vec![
            format!("read {source}, decode by content (gzip, zstd, xz, bzip2, lrzip, tar)"),
            "claim the server: write $PGDATA/countable-durability (this process, the settings as they were); refused while another restore's owner lives".into(),
        ];
        if !self.durable {
            v.push(
                "unless the server runs wal_level=minimal (there each COMMIT syncs the tables it loaded): ALTER SYSTEM SET fsync/synchronous_commit/full_page_writes/autovacuum = off"
                    .into(),
            );
        }
        v.push("DROP DATABASE a leftover <db>__countable_new".into());
        v.push(format!(
            "inspect the dump against the `{db_service}` container: pg_restore version, extensions"
        ));
        v.push("CREATE DATABASE \"<db>__countable_new\" TEMPLATE template0 (or countable.yml's db_template)".into());
        if self.jobs > 1 {
            v.push(format!("custom format: spool into $PGDATA, pg_restore -j {} --no-owner --no-acl --exit-on-error -L <filtered list>", self.jobs));
        } else {
            v.push("custom format: pg_restore --single-transaction --no-owner --no-acl --exit-on-error -L <filtered list> (streamed on stdin; a commit per object instead when the TOC's relations outnumber the server's lock slots)".into());
        }
        v.push("tar format: as custom, streamed, one job (pg_restore restores tar archives with one job only)".into());
        if self.jobs > 1 {
            v.push(format!(
                "directory dump: extracted into the volume, pg_restore -j {}",
                self.jobs
            ));
        } else {
            v.push(
                "directory dump: extracted into the volume, pg_restore --single-transaction (a commit per object when its relations outnumber the lock slots)".into(),
            );
        }
        v.push("plain SQL: psql -X -q -v ON_ERROR_STOP=1 --single-transaction (streamed, owner/grant lines filtered, trailer checked)".into());
        v.push("verify: the new database's tables = the tables the dump creates; rows as the stream counted them (plain COPY data), else from the server's statistics, else count(*)".into());
        if !self.durable {
            v.push("if relaxed: put the settings back, CHECKPOINT, sync (the container's file systems)".into());
        }
        v.push("swap, the app running: ALTER DATABASE … ALLOW_CONNECTIONS false on the databases renamed; end their sessions; BEGIN; ALTER DATABASE <db>__countable_prev RENAME TO <db>__countable_old; ALTER DATABASE <db> RENAME TO <db>__countable_prev; ALTER DATABASE <db>__countable_new RENAME TO <db>; ALLOW_CONNECTIONS true; COMMIT (the app reconnects on its next request); DROP DATABASE <db>__countable_old".into());
        let mut after = vec!["ANALYZE (SKIP_LOCKED), and beside it:"];
        if self.no_keep {
            after.push("DROP DATABASE <db>__countable_prev,");
        }
        after.push("remove $PGDATA/countable-durability, then manage.py migrate in the running web unless the restored data has every migration the current database had");
        v.push(format!("with the app on the new data: {}", after.join(" ")));
        v
    }
}
