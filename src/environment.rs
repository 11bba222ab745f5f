//! The local environment of a project: bring it up (healthy), down, and report on it.
//!
//! It combines the two seams (compose for lifecycle, engine for state and the database)
//! and holds the `up` sequence: db first, fill an empty db, then everything else.

use std::path::Path;

use anyhow::Context;

use crate::compose::{Compose, ComposeError, Output, Teed};
use crate::engine::{Engine, ServiceState};
use crate::error::Hinted;
use crate::project::Project;
use crate::ui::Printer;

/// Seconds `up` waits for every service to become healthy.
pub const WAIT_TIMEOUT_SECS: u32 = 300;

/// A project's local environment; each seam is opened on first use, so commands that
/// never run compose (`backup`, `backups`, `verify-backup` of another environment) do
/// not need it installed.
pub struct Local {
    pub project: Project,
    compose: std::cell::OnceCell<Compose>,
    engine: Option<Engine>,
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// [`Compose::run_teed`] on a blocking thread, so the runtime (and Ctrl-C) goes on.
async fn run_teed(compose: &Compose, args: &[String], echo: bool) -> anyhow::Result<Teed> {
    let (compose, args) = (compose.clone(), args.to_vec());
    tokio::task::spawn_blocking(move || compose.run_teed(&as_refs(&args), echo)).await?
}

/// How `up` should behave.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Skip filling an empty database (and media) from `data_from`.
    pub no_data: bool,
    /// Skip filling an empty media volume from the same backup.
    pub no_media: bool,
    /// Print the commands instead of running them.
    pub dry_run: bool,
}

/// The environment, store and backup an empty database was filled from.
type FilledFrom = (
    crate::names::EnvName,
    crate::store::Store,
    crate::store::Backup,
);

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
    /// Find the project above `start`.
    pub fn open(start: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            project: Project::find(start)?,
            compose: std::cell::OnceCell::new(),
            engine: None,
        })
    }

    /// Compose v2 for this project, found on first use.
    pub fn compose(&self) -> Result<&Compose, ComposeError> {
        if let Some(c) = self.compose.get() {
            return Ok(c);
        }
        let c = Compose::for_project(&self.project)?;
        Ok(self.compose.get_or_init(|| c))
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
        let compose = self.compose()?.clone();
        if opts.dry_run {
            printer.data(&compose.display(&as_refs(&db_args)));
            printer.data("# if the database has no tables and data_from is set: fill it (and an empty media volume) from its newest backup");
            printer.data(&compose.display(&as_refs(&all_args)));
            return Ok(DataOutcome::HasTables);
        }
        let project_name = self.project.compose_name().to_string();
        self.engine().await?;
        printer.status(&format!("starting the database ({db})"));
        let started = run_teed(&compose, &db_args, true).await;
        self.require_healthy(printer, started, Some(&db)).await?;
        let (outcome, filled_from) = self.fill_if_empty(printer, opts).await?;
        printer.status(&format!("building and starting {project_name}"));
        let started = run_teed(&compose, &all_args, true).await;
        self.require_healthy(printer, started, None).await?;
        // After web has mounted the volume: a volume compose made took the owner of
        // web's media root then, and what is written takes it over.
        if let Some((env, store, backup)) = filled_from {
            if opts.no_media {
                printer.note("   media not filled from the same backup (--no-media)");
            } else {
                self.fill_media(printer, &env, &store, &backup)
                    .await
                    .with_context(|| format!("filling the empty media volume from `{env}`'s backup {} failed (`countable up --no-media` starts without media)", backup.key))?;
            }
        }
        Ok(outcome)
    }

    /// What compose said comes first: an image it could not pull, a port in use or a
    /// failed build is reported as such (compose may exit 0 after them). Then, since
    /// `--wait` can exit 0 while a container crash-loops, the engine has the last
    /// word: the containers (or those of `only`) must exist and be good. Failing ones
    /// get their last log lines shown.
    async fn require_healthy(
        &mut self,
        printer: &Printer,
        started: anyhow::Result<Teed>,
        only: Option<&str>,
    ) -> anyhow::Result<()> {
        let project = self.project.compose_name().to_string();
        let started = match started?.result(&project) {
            Err(e @ ComposeError::Up(_)) => return Err(e.into()),
            other => other.map_err(anyhow::Error::new),
        };
        let states = self.engine().await?.project_services(&project).await?;
        let missing = match only {
            Some(o) => !states.iter().any(|s| s.service == o),
            None => states.is_empty(),
        };
        let bad: Vec<ServiceState> = states
            .into_iter()
            .filter(|s| only.is_none_or(|o| o == s.service))
            .filter(|s| !s.is_good())
            .collect();
        if started.is_ok() && bad.is_empty() && !missing {
            return Ok(());
        }
        self.show_failing(printer, &bad).await;
        let names: Vec<&str> = bad.iter().map(|s| s.service.as_str()).collect();
        let first = names.first().copied().or(only).unwrap_or("web");
        let err = started.err().unwrap_or_else(|| {
            if missing {
                anyhow::anyhow!(
                    "compose created no container{}",
                    only.map(|o| format!(" for `{o}`")).unwrap_or_default()
                )
            } else {
                anyhow::anyhow!("not healthy: {}", names.join(", "))
            }
        });
        Err(Hinted::wrap(
            err,
            format!("`countable up` could not bring {project} up healthy"),
            format!("see why with `countable logs {first}` (a failed migration shows in `countable logs web`), fix it, then `countable up` again"),
        )
        .into())
    }

    /// Print the last log lines of each failing service.
    async fn show_failing(&self, printer: &Printer, bad: &[ServiceState]) {
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
            let Ok(compose) = self.compose() else {
                continue;
            };
            // On a blocking thread, so the runtime (and the interrupt listener) goes on.
            let args = [
                "logs",
                "--no-color",
                "--no-log-prefix",
                "--tail",
                "300",
                &s.service,
            ]
            .map(String::from);
            let compose = compose.clone();
            let text = tokio::task::spawn_blocking(move || compose.capture(&as_refs(&args))).await;
            if let Ok(Ok(text)) = text {
                for line in summarize_log(&text, 15) {
                    printer.note(&format!("    {line}"));
                }
            }
        }
    }

    /// Start the db service (only) and wait until it is healthy. A db container that
    /// already runs healthy is taken as it is (about a second of `compose up --wait`
    /// saved on every restore; a changed db definition applies on the next `up`).
    pub async fn ensure_db(&mut self, printer: &Printer) -> anyhow::Result<()> {
        let db = self.project.config.services.db.clone();
        let project = self.project.compose_name().to_string();
        let engine = self.engine().await?.clone();
        let running = engine.project_services(&project).await?;
        if running.iter().any(|s| {
            s.service == db && s.state == "running" && s.health.as_deref() == Some("healthy")
        }) {
            return Ok(());
        }
        let args = self.up_args(&[&db]);
        let compose = self.compose()?.clone();
        let started = run_teed(&compose, &args, false).await;
        self.require_healthy(printer, started, Some(&db)).await
    }

    /// The local database, ready to be restored into: db up, versions known. The app
    /// keeps running through the swap (it reconnects by itself); a running web then
    /// gets `migrate`, as its entrypoint would on a restart.
    pub async fn restore_target(
        &mut self,
        printer: &Printer,
    ) -> anyhow::Result<crate::restore::Target> {
        self.ensure_db(printer).await?;
        let project = self.project.compose_name().to_string();
        let web = self.project.config.services.web.clone();
        let db = self.local_db(printer).await?;
        let engine = self.engine().await?.clone();
        let migrate_in = engine
            .service_container(&project, &web)
            .await
            .ok()
            .map(|c| (engine.clone(), c));
        // No app service stops (`app_services` is empty): the engine is enough, and the
        // compose program is not even looked for (`docker compose version` costs 0.1 to
        // 0.5 s).
        Ok(crate::restore::Target {
            db,
            apps: crate::restore::Apps::Engine {
                engine: engine.clone(),
                project,
            },
            app_services: Vec::new(),
            keep_stopped: Vec::new(),
            migrate_in,
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
        let compose_project = self.compose_project_of(env);
        let service = &self.project.config.services.db;
        if config.is_swarm() {
            // On a Swarm: the node that runs the db task (swarm::locate).
            let (engine, container) = crate::swarm::locate::running(
                &engine,
                config.docker_host.as_deref(),
                &compose_project,
                service,
            )
            .await?;
            let db = crate::restore::Db::discover(engine.clone(), container).await?;
            return Ok((engine, db));
        }
        let container = match engine.service_container(&compose_project, service).await {
            Ok(c) => c,
            Err(e @ crate::engine::EngineError::NoContainer { .. }) => {
                let host = config
                    .docker_host
                    .as_deref()
                    .unwrap_or("this machine's engine");
                let on = match &config.docker_host {
                    Some(h) => format!(
                        "DOCKER_HOST={} ",
                        crate::compose::shell_line(std::slice::from_ref(h))
                    ),
                    None => String::new(),
                };
                return Err(Hinted::wrap(
                    e.into(),
                    format!("environment `{env}` has no running `{service}` container on {host}"),
                    format!("check what runs there (`{on}docker compose -p {compose_project} ps -a`); if {env} runs under another compose project name, set `compose_project:` of {env} in countable.yml"),
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let db = crate::restore::Db::discover(engine.clone(), container).await?;
        Ok((engine, db))
    }

    /// The compose project of environment `env` (`compose_project`, default
    /// `<project>-<env>`).
    pub fn compose_project_of(&self, env: &crate::names::EnvName) -> String {
        self.project.config.environments[env]
            .compose_project
            .clone()
            .unwrap_or_else(|| format!("{}-{env}", self.project.compose_name()))
    }

    /// The media of environment `env`, whose database is `db` (from [`Self::env_db`]):
    /// where countable.yml says it is, checked against the volumes the environment's
    /// compose files declare.
    pub async fn env_media(
        &self,
        env: &crate::names::EnvName,
        db: &crate::restore::Db,
    ) -> anyhow::Result<crate::media::Media> {
        let config = &self.project.config;
        let settings = &config.environments[env];
        let files = settings
            .compose_files
            .as_ref()
            .unwrap_or(&config.compose_files);
        // A volume is found through the compose files; without them there is none to
        // read (the database is backed up all the same).
        let is_volume = matches!(
            settings.media_location()?,
            crate::media::MediaLocation::Volume { .. }
        );
        if let Some(missing) = files
            .iter()
            .find(|f| is_volume && !self.project.root.join(f).exists())
        {
            return Ok(crate::media::Media::Undeclared {
                why: format!(
                    "the project has no {missing} to declare a media volume: no media to back up"
                ),
            });
        }
        let shape = crate::deploy::model::shape(&crate::deploy::run::read_files(
            &self.project.root,
            files,
        )?)?;
        crate::media::Media::resolve(settings, &shape.volumes, &self.compose_project_of(env), db)
            .await
    }

    /// The media of environment `env` to read: its bucket (no engine needed), or its
    /// volume on its engine (reached like `backup` reaches it).
    pub async fn env_media_to_read(
        &self,
        env: &crate::names::EnvName,
    ) -> anyhow::Result<crate::media::Media> {
        let settings = &self.project.config.environments[env];
        if let Some(bucket) = crate::media::Media::bucket_of(settings)? {
            return Ok(bucket);
        }
        let (_, db) = self.env_db(env).await?;
        self.env_media(env, &db).await
    }

    /// The local media volume that environment `env`'s media goes into (the compose
    /// volume `media_volume` of `env`, default `media`), with the local db's image for
    /// the helper that writes it; the db is started when it is not running.
    pub async fn media_target(
        &mut self,
        printer: &Printer,
        env: &crate::names::EnvName,
    ) -> anyhow::Result<crate::media::pull::Target> {
        let config = &self.project.config;
        let volume = match config.environments[env].media_location()? {
            crate::media::MediaLocation::Volume { volume } => volume,
            crate::media::MediaLocation::Bucket { .. } => crate::media::DEFAULT_VOLUME.into(),
        };
        let shape = crate::deploy::model::shape(&crate::deploy::run::read_files(
            &self.project.root,
            &config.compose_files,
        )?)?;
        let Some(named) = shape.volumes.get(&volume).cloned() else {
            return Err(crate::media::MediaError::NoLocalVolume(volume).into());
        };
        let project = self.project.compose_name().to_string();
        let service = config.services.db.clone();
        let engine = self.engine().await?.clone();
        let container = match engine.service_container(&project, &service).await {
            Ok(c) => c,
            Err(crate::engine::EngineError::NoContainer { .. }) => {
                printer.status(&format!("starting the local database ({service})"));
                self.ensure_db(printer).await?;
                engine.service_container(&project, &service).await?
            }
            Err(e) => return Err(e.into()),
        };
        let image = engine.image_id_of(&container).await?;
        let compose_version = self.compose()?.version().unwrap_or_else(|| "2".into());
        let web = &self.project.config.services.web;
        let prime = match shape.mounts.get(&(web.clone(), volume.clone())) {
            Some(path) => {
                let web_image = shape
                    .images
                    .get(web)
                    .cloned()
                    .unwrap_or_else(|| format!("{project}-{web}"));
                engine
                    .has_image(&web_image)
                    .await?
                    .then(|| (web_image, path.clone()))
            }
            None => None,
        };
        Ok(crate::media::pull::Target {
            engine,
            project,
            volume,
            named,
            image,
            compose_version,
            prime,
        })
    }

    /// Fill the local media volume from the media of `backup` of `env` (same stamp as
    /// the database just restored), when the volume is empty.
    async fn fill_media(
        &mut self,
        printer: &Printer,
        env: &crate::names::EnvName,
        store: &crate::store::Store,
        backup: &crate::store::Backup,
    ) -> anyhow::Result<()> {
        let Some(stored) = crate::media::StoredMedia::find(store, Some(&backup.key)).await? else {
            printer.note(&format!(
                "   the backup {} has no media; media left as it is",
                backup.key
            ));
            return Ok(());
        };
        let target = self.media_target(printer, env).await?;
        let source = crate::media::MediaSource::Backup(stored);
        let label = format!("{env}'s backup {}", backup.key);
        let mut opts = crate::media::pull::Options {
            filter: Default::default(),
            jobs: 8,
            dry_run: true,
            retry: format!("countable pull-media {env} --from-backup {}", backup.key),
        };
        let look = crate::media::pull::pull(&source, &label, &target, &opts, printer).await?;
        if look.existing > 0 || look.plan.copy.files == 0 {
            printer.note(&format!(
                "   the local media volume is not empty (or the backup's media is): left as it is (`{}` copies what is missing)",
                opts.retry
            ));
            return Ok(());
        }
        printer.status(&format!(
            "the media volume is empty: filling it from {label} ({})",
            crate::ui::counted(look.plan.copy.files, "file")
        ));
        opts.dry_run = false;
        let summary = crate::media::pull::pull(&source, &label, &target, &opts, printer).await?;
        crate::media::pull::report(printer, &summary, false)
    }

    /// Does the local database have any table outside the system schemas?
    pub async fn db_has_tables(&mut self, printer: &Printer) -> anyhow::Result<bool> {
        let db = self.local_db(printer).await?;
        Ok(db.table_count(&db.name).await? > 0)
    }

    /// The running db container's database, versions and user discovered, and what an
    /// interrupted restore left there put right first (settings, half-made databases).
    pub(crate) async fn local_db(
        &mut self,
        printer: &Printer,
    ) -> anyhow::Result<crate::restore::Db> {
        let project = self.project.compose_name().to_string();
        let service = self.project.config.services.db.clone();
        let engine = self.engine().await?.clone();
        let container = engine
            .service_container(&project, &service)
            .await
            .map_err(|e| {
                Hinted::wrap(
                    e.into(),
                    format!("the local database of {project} is not running"),
                    "countable up",
                )
            })?;
        let db = crate::restore::Db::discover(engine, container).await?;
        let recovered = crate::restore::recover(&db).await?;
        if !recovered.is_empty() {
            printer.warn(&recovered.describe());
        }
        Ok(db)
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
            self.local_db(printer).await?;
        }
        Ok(())
    }

    /// The seam where `up` fills an empty database from `data_from` (pull-db); the
    /// backup it was filled from, for the media of the same stamp.
    async fn fill_if_empty(
        &mut self,
        printer: &Printer,
        opts: &UpOptions,
    ) -> anyhow::Result<(DataOutcome, Option<FilledFrom>)> {
        if self.db_has_tables(printer).await? {
            return Ok((DataOutcome::HasTables, None));
        }
        let Some(source) = self.project.config.data_from.clone() else {
            printer.note("   the database is empty; migrations will create the schema (set `data_from` in countable.yml to fill it from a backup)");
            return Ok((DataOutcome::EmptyNoSource, None));
        };
        if opts.no_data {
            printer.note(&format!(
                "   the database is empty; not filling it (nor media) from `{source}` (--no-data)"
            ));
            return Ok((DataOutcome::EmptySkipped, None));
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
        Ok((DataOutcome::Filled, Some((source, store, backup))))
    }

    /// Stop the environment; `volumes` also removes its named volumes (the database!).
    pub fn down(&self, volumes: bool, dry_run: bool, printer: &Printer) -> anyhow::Result<()> {
        let mut args = vec!["down", "--remove-orphans"];
        if volumes {
            args.push("--volumes");
        }
        let compose = self.compose()?;
        if dry_run {
            printer.data(&compose.display(&args));
            return Ok(());
        }
        compose.run(&args, Output::Status)
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

    /// `docker compose watch --no-up`: rebuild and replace a service when a file its
    /// `develop.watch` names changes, until Ctrl-C. Needs a development compose file.
    pub async fn watch(&mut self, printer: &Printer) -> anyhow::Result<()> {
        let files = self.project.local_compose_files();
        if files.len() == self.project.config.compose_files.len() {
            return Err(Hinted::new(
                format!(
                    "nothing to watch: none of the development compose files ({}) exists",
                    self.project.config.dev_compose_files.join(", ")
                ),
                "`countable init` adds compose.override.yaml (live code, and the rebuild rules `--watch` follows)",
            )
            .into());
        }
        printer.status("watching for changes that need a new image (develop.watch); Ctrl-C stops watching, the environment keeps running");
        let compose = self.compose()?.clone();
        // Ctrl-C is how watching ends: it reaches compose (same process group), and
        // countable, listening, only notes it.
        let interrupt = crate::interrupt::Interrupt::get()?;
        let code =
            tokio::task::spawn_blocking(move || compose.attached(&["watch", "--no-up"])).await??;
        if interrupt.hit() {
            printer.note("stopped watching; the environment keeps running");
            return Ok(());
        }
        crate::error::pass_through(code)
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
        self.compose()?.run(&args, Output::Data)
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
