//! The local environment of a project: bring it up (healthy), down, and report on it.
//!
//! It combines the two seams (compose for lifecycle, engine for state and the database)
//! and holds the `up` sequence: db first, fill an empty db, then everything else.

use std::path::Path;

use anyhow::Context;

use crate::compose::{Compose, Output};
use crate::engine::{Engine, ServiceState};
use crate::error::Hinted;
use crate::project::Project;
use crate::ui::Printer;

/// Seconds `up` waits for every service to become healthy.
pub const WAIT_TIMEOUT_SECS: u32 = 300;

/// A project's local environment, with both seams ready.
pub struct Local {
    pub project: Project,
    pub compose: Compose,
    engine: Option<Engine>,
    recovered: crate::restore::Recovered,
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// How `up` should behave.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Skip filling an empty database from `data_from`.
    pub no_data: bool,
    /// Print the commands instead of running them.
    pub dry_run: bool,
}

/// What `up` found in the database before the app started.
#[derive(Debug, Clone, PartialEq)]
pub enum DataOutcome {
    HasTables,
    EmptyNoSource,
    EmptySkipped,
    /// Filled from an environment's backup (pull-db).
    Filled,
}

impl Local {
    /// Find the project above `start`, check Compose v2 and the engine.
    pub fn open(start: &Path) -> anyhow::Result<Self> {
        let project = Project::find(start)?;
        let compose = Compose::for_project(&project)?;
        Ok(Self {
            project,
            compose,
            engine: None,
            recovered: Default::default(),
        })
    }

    /// The engine, connected on first use.
    pub async fn engine(&mut self) -> anyhow::Result<&Engine> {
        if self.engine.is_none() {
            self.engine = Some(Engine::connect().await?);
        }
        Ok(self.engine.as_ref().expect("just set"))
    }

    fn up_args(&self, services: &[&str]) -> Vec<String> {
        let timeout = WAIT_TIMEOUT_SECS.to_string();
        let mut args: Vec<String> = ["up", "--detach", "--wait", "--wait-timeout", &timeout]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if services.is_empty() {
            args.insert(1, "--build".into());
            args.push("--remove-orphans".into());
        }
        args.extend(services.iter().map(|s| s.to_string()));
        args
    }

    /// Bring the environment up: the db, then (if it is empty) its data, then the rest,
    /// waiting until every service is healthy.
    pub async fn up(&mut self, printer: &Printer, opts: &UpOptions) -> anyhow::Result<DataOutcome> {
        let db = self.project.config.services.db.clone();
        let db_args = self.up_args(&[&db]);
        let all_args = self.up_args(&[]);
        if opts.dry_run {
            printer.data(&self.compose.display(&as_refs(&db_args)));
            printer.data("# if the database has no tables and data_from is set: fill it");
            printer.data(&self.compose.display(&as_refs(&all_args)));
            return Ok(DataOutcome::HasTables);
        }
        let project_name = self.project.compose_name().to_string();
        self.engine().await?;
        printer.status(&format!("starting the database ({db})"));
        let started = self.compose.run(&as_refs(&db_args), Output::Status);
        self.require_healthy(printer, started, Some(&db)).await?;
        let outcome = self.fill_if_empty(printer, opts).await?;
        printer.status(&format!("building and starting {project_name}"));
        let started = self.compose.run(&as_refs(&all_args), Output::Status);
        self.require_healthy(printer, started, None).await?;
        Ok(outcome)
    }

    /// Compose's `--wait` can exit 0 while a container crash-loops, so the engine has
    /// the last word: every container (or those of `only`) must be good. Failing ones
    /// get their last log lines shown.
    async fn require_healthy(
        &mut self,
        printer: &Printer,
        started: anyhow::Result<()>,
        only: Option<&str>,
    ) -> anyhow::Result<()> {
        let project = self.project.compose_name().to_string();
        let states = self.engine().await?.project_services(&project).await?;
        let bad: Vec<ServiceState> = states
            .into_iter()
            .filter(|s| only.is_none_or(|o| o == s.service))
            .filter(|s| !s.is_good())
            .collect();
        if started.is_ok() && bad.is_empty() {
            return Ok(());
        }
        self.show_failing(printer, &bad);
        let names: Vec<&str> = bad.iter().map(|s| s.service.as_str()).collect();
        let first = names.first().copied().unwrap_or("web");
        let err = started
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("not healthy: {}", names.join(", ")));
        Err(Hinted::wrap(
            err,
            format!("`countable up` could not bring {project} up healthy"),
            format!("see why with `countable logs {first}` (a failed migration shows in `countable logs web`), fix it, then `countable up` again"),
        )
        .into())
    }

    /// Print the last log lines of each failing service.
    fn show_failing(&self, printer: &Printer, bad: &[ServiceState]) {
        for s in bad {
            if s.state == "created" {
                printer.warn(&format!(
                    "{} was not started (it waits for a service above)",
                    s.service
                ));
                continue;
            }
            printer.warn(&format!(
                "{} is {}{}; its last log lines:",
                s.service,
                s.state,
                s.health
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            ));
            if let Ok(text) = self.compose.capture(&[
                "logs",
                "--no-color",
                "--no-log-prefix",
                "--tail",
                "300",
                &s.service,
            ]) {
                for line in summarize_log(&text, 15) {
                    printer.note(&format!("    {line}"));
                }
            }
        }
    }

    /// Start the db service (only) and wait until it is healthy.
    pub async fn ensure_db(&mut self, printer: &Printer) -> anyhow::Result<()> {
        let db = self.project.config.services.db.clone();
        let args = self.up_args(&[&db]);
        self.engine().await?;
        let started = self.compose.capture(&as_refs(&args)).map(|_| ());
        self.require_healthy(printer, started, Some(&db)).await
    }

    /// The local database, ready to be restored into: db up, versions known, and the
    /// running app services (stopped during the swap).
    pub async fn restore_target(
        &mut self,
        printer: &Printer,
    ) -> anyhow::Result<crate::restore::Target> {
        self.ensure_db(printer).await?;
        let project = self.project.compose_name().to_string();
        let db_service = self.project.config.services.db.clone();
        let db = self.local_db().await?;
        self.report_recovered(printer);
        let states = self.engine().await?.project_services(&project).await?;
        Ok(crate::restore::Target {
            db,
            compose: self.compose.clone(),
            app_services: states
                .into_iter()
                .filter(|s| s.service != db_service && s.state == "running")
                .map(|s| s.service)
                .collect(),
        })
    }

    /// The database of environment `env` (prod, staging): its engine (`docker_host`) and
    /// the db container of its compose project (`compose_project`, default
    /// `<project>-<env>`).
    pub async fn env_db(
        &self,
        env: &crate::names::EnvName,
    ) -> anyhow::Result<(Engine, crate::restore::Db)> {
        let config = &self.project.config.environments[env];
        let engine = Engine::connect_to(config.docker_host.as_deref()).await?;
        let compose_project = config
            .compose_project
            .clone()
            .unwrap_or_else(|| format!("{}-{env}", self.project.compose_name()));
        let service = &self.project.config.services.db;
        let container = engine.service_container(&compose_project, service).await?;
        let db = crate::restore::Db::discover(engine.clone(), container).await?;
        Ok((engine, db))
    }

    /// Does the local database have any table outside the system schemas?
    pub async fn db_has_tables(&mut self) -> anyhow::Result<bool> {
        let db = self.local_db().await?;
        Ok(db.table_count(&db.name).await? > 0)
    }

    /// The running db container's database, versions and user discovered, and what an
    /// interrupted restore left there put right first (settings, half-made databases).
    async fn local_db(&mut self) -> anyhow::Result<crate::restore::Db> {
        let project = self.project.compose_name().to_string();
        let service = self.project.config.services.db.clone();
        let engine = self.engine().await?.clone();
        let container = engine.service_container(&project, &service).await?;
        let db = crate::restore::Db::discover(engine, container).await?;
        self.recovered = crate::restore::recover(&db).await?;
        Ok(db)
    }

    /// What the last look at the local db put right after an interrupted restore.
    pub fn take_recovered(&mut self) -> crate::restore::Recovered {
        std::mem::take(&mut self.recovered)
    }

    /// Put right what an interrupted restore left in the local db, if it is running;
    /// says so through `printer`.
    pub async fn recover_db(&mut self, printer: &Printer) -> anyhow::Result<()> {
        let project = self.project.compose_name().to_string();
        let service = self.project.config.services.db.clone();
        let running = self
            .engine()
            .await?
            .project_services(&project)
            .await?
            .iter()
            .any(|s| s.service == service && s.state == "running");
        if running {
            self.local_db().await?;
            self.report_recovered(printer);
        }
        Ok(())
    }

    /// Print what recovery did, once.
    pub fn report_recovered(&mut self, printer: &Printer) {
        let r = self.take_recovered();
        if !r.is_empty() {
            printer.warn(&r.describe());
        }
    }

    /// The seam where `up` fills an empty database from `data_from` (pull-db).
    async fn fill_if_empty(
        &mut self,
        printer: &Printer,
        opts: &UpOptions,
    ) -> anyhow::Result<DataOutcome> {
        let has_tables = self.db_has_tables().await?;
        self.report_recovered(printer);
        if has_tables {
            return Ok(DataOutcome::HasTables);
        }
        let Some(source) = self.project.config.data_from.clone() else {
            printer.note("   the database is empty; migrations will create the schema (set `data_from` in countable.yml to fill it from a backup)");
            return Ok(DataOutcome::EmptyNoSource);
        };
        if opts.no_data {
            printer.note(&format!(
                "   the database is empty; not filling it from `{source}` (--no-data)"
            ));
            return Ok(DataOutcome::EmptySkipped);
        }
        printer.status(&format!(
            "the database is empty: filling it from `{source}`'s newest backup"
        ));
        let store = crate::data::store_of(self, &source).await?;
        let backup = store.pick(None).await?;
        let opts = crate::restore::Options {
            keep_previous: false,
            jobs: 1,
            fast: true,
            template: None,
        };
        let summary = crate::data::pull(self, printer, &store, &backup, &opts)
            .await
            .with_context(|| format!("filling the empty database from `{source}` failed (`countable up --no-data` starts without data)"))?;
        crate::data::report(printer, &summary, false)?;
        Ok(DataOutcome::Filled)
    }

    /// Stop the environment; `volumes` also removes its named volumes (the database!).
    pub fn down(&self, volumes: bool, dry_run: bool, printer: &Printer) -> anyhow::Result<()> {
        let mut args = vec!["down", "--remove-orphans"];
        if volumes {
            args.push("--volumes");
        }
        if dry_run {
            printer.data(&self.compose.display(&args));
            return Ok(());
        }
        self.compose.run(&args, Output::Status)
    }

    /// Every container of the local environment.
    pub async fn status(&mut self) -> anyhow::Result<Vec<ServiceState>> {
        let project = self.project.compose_name().to_string();
        Ok(self.engine().await?.project_services(&project).await?)
    }

    /// The URL nginx publishes, from the running container if there is one.
    pub fn url_from(&self, states: &[ServiceState]) -> String {
        let nginx = &self.project.config.services.nginx;
        states
            .iter()
            .find(|s| &s.service == nginx)
            .and_then(|s| s.ports.first())
            .map(|p| format!("http://localhost:{p}/"))
            .unwrap_or_else(|| self.project.url())
    }

    /// Stream the services' logs to stdout.
    pub fn logs(
        &self,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> anyhow::Result<()> {
        let tail = tail.map(|t| t.to_string());
        let mut args = vec!["logs", "--no-color"];
        if follow {
            args.push("--follow");
        }
        if let Some(t) = &tail {
            args.extend(["--tail", t]);
        }
        if let Some(s) = service {
            args.push(s);
        }
        self.compose.run(&args, Output::Data)
    }
}

/// The last `max` meaningful lines of a log: Python traceback frames (`File "…"`, the
/// source lines under them and `^^^` markers) are dropped so the exception itself shows.
pub fn summarize_log(text: &str, max: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            !(t.is_empty()
                || t.starts_with("File \"")
                || t.chars().all(|c| c == '^' || c == '~')
                || indent >= 4)
        })
        .collect();
    lines[lines.len().saturating_sub(max)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_summary_keeps_the_exception() {
        let log = "entrypoint: python manage.py migrate --noinput\nTraceback (most recent call last):\n  File \"/x.py\", line 1, in f\n    return g()\n           ^^^\npsycopg.errors.DivisionByZero: division by zero\n";
        assert_eq!(
            summarize_log(log, 2),
            vec![
                "Traceback (most recent call last):",
                "psycopg.errors.DivisionByZero: division by zero"
            ]
        );
        assert_eq!(summarize_log("", 5), Vec::<String>::new());
    }
}
