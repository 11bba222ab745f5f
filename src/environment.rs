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
        self.compose
            .run(&as_refs(&db_args), Output::Status)
            .map_err(|e| self.explain_failure(e))?;
        let outcome = self.fill_if_empty(printer, &project_name, opts).await?;
        printer.status(&format!("building and starting {project_name}"));
        if let Err(e) = self.compose.run(&as_refs(&all_args), Output::Status) {
            self.show_failing(printer).await;
            return Err(self.explain_failure(e));
        }
        Ok(outcome)
    }

    fn explain_failure(&self, err: anyhow::Error) -> anyhow::Error {
        err.context(Hinted::new(
            format!("`countable up` could not bring {} up healthy", self.project.compose_name()),
            "see why with `countable status` and `countable logs <service>` (a failed migration shows in `countable logs web`)",
        ))
    }

    /// Print the last log lines of every service that is not running healthy.
    async fn show_failing(&mut self, printer: &Printer) {
        let project = self.project.compose_name().to_string();
        let Ok(engine) = self.engine().await else { return };
        let Ok(states) = engine.project_services(&project).await else { return };
        for s in states {
            let bad = s.state != "running" || s.health.as_deref().is_some_and(|h| h != "healthy");
            if !bad {
                continue;
            }
            printer.warn(&format!(
                "{} is {}{}; its last log lines:",
                s.service,
                s.state,
                s.health.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
            ));
            if let Ok(text) = self.compose.capture(&["logs", "--no-color", "--tail", "25", &s.service]) {
                for line in text.lines() {
                    printer.note(&format!("    {line}"));
                }
            }
        }
    }

    /// Does the local database have any table outside the system schemas?
    pub async fn db_has_tables(&mut self) -> anyhow::Result<bool> {
        let project = self.project.compose_name().to_string();
        let service = self.project.config.services.db.clone();
        let engine = self.engine().await?;
        let container = engine.service_container(&project, &service).await?;
        let sql = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')";
        let out = engine
            .exec_capture(
                &container,
                &["sh", "-c", "exec psql -X -qAt -U \"$POSTGRES_USER\" -d \"${POSTGRES_DB:-$POSTGRES_USER}\" -c \"$1\"", "sh", sql],
                &[],
            )
            .await?;
        if out.code != 0 {
            return Err(Hinted::new(
                format!("could not query the database in `{service}`: {}", out.stderr.trim()),
                format!("countable logs {service}"),
            )
            .into());
        }
        let n: u64 = out
            .stdout
            .trim()
            .parse()
            .with_context(|| format!("unexpected answer from psql: {:?}", out.stdout))?;
        Ok(n > 0)
    }

    /// The seam where `up` fills an empty database from `data_from` (pull-db).
    async fn fill_if_empty(
        &mut self,
        printer: &Printer,
        _project: &str,
        opts: &UpOptions,
    ) -> anyhow::Result<DataOutcome> {
        if self.db_has_tables().await? {
            return Ok(DataOutcome::HasTables);
        }
        let Some(source) = self.project.config.data_from.clone() else {
            printer.note("   the database is empty; migrations will create the schema (set `data_from` in countable.yml to fill it from a backup)");
            return Ok(DataOutcome::EmptyNoSource);
        };
        if opts.no_data {
            printer.note(&format!("   the database is empty; not filling it from `{source}` (--no-data)"));
            return Ok(DataOutcome::EmptySkipped);
        }
        printer.warn(&format!(
            "the database is empty and data_from is `{source}`, but this countable cannot restore backups yet (`countable pull-db` comes next); starting with an empty schema"
        ));
        Ok(DataOutcome::EmptySkipped)
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
    pub fn logs(&self, service: Option<&str>, follow: bool, tail: Option<u32>) -> anyhow::Result<()> {
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
