//! Adopting a team's own compose file instead of shadowing it: what countable adds
//! (nginx in front, healthchecks, the db port closed, `service_healthy` ordering,
//! volumes for static files and media, countable's entrypoint wrapped around the
//! team's command) goes into a file of its own, [`FILE`], that compose merges after
//! theirs. Their file is never edited. This module decides what goes in it; the
//! template `compose/adopt.yaml.j2` writes it.

use super::compose::{Existing, Role, Service};
use super::dockerfile::Contract;
use crate::error::Hinted;

/// The file countable writes beside the team's compose file.
pub const FILE: &str = "docker-compose.countable.yml";
use super::web::Web;
pub use super::web::ENTRYPOINT_IN_CONTAINER;

/// The database the team's db service creates, as the project's `.env` must say it.
#[derive(Debug, Clone, PartialEq)]
pub struct DbCredentials {
    /// None: the value comes from `.env` (their file interpolates it, or leaves it to
    /// countable's generated one).
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: Option<String>,
}

/// Everything the override and the project's other files need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// The team's compose file.
    pub team_file: String,
    /// The override compose merges by itself beside it (`docker-compose.override.yml`),
    /// if any: a local file, merged locally only (countable.yml's `dev_compose_files`).
    pub dev_file: Option<String>,
    pub db: String,
    pub web: String,
    /// countable's nginx service (`nginx`, unless the team has a service of that name).
    pub nginx: String,
    /// The services kept as the team wrote them (redis, workers).
    pub kept: Vec<String>,
    /// How web's container runs: its port, roots, entrypoint and command.
    pub run: Web,
    /// web is built from countable's Dockerfile (`--dockerfile countable`).
    pub dockerfile: Option<String>,
    /// The db keeps its data in no named volume: the override gives it `db-data`.
    pub db_volume: bool,
    pub credentials: DbCredentials,
    /// web's own `environment:` sets `DATABASE_URL` (it wins over `.env`).
    pub web_sets_database_url: bool,
    /// What a user should know: a command that cannot be wrapped, a user that cannot
    /// write the volumes.
    pub warnings: Vec<String>,
}

impl Adoption {
    /// countable.yml's `compose_files`: theirs, then countable's.
    pub fn compose_files(&self) -> Vec<String> {
        vec![self.team_file.clone(), FILE.into()]
    }

    /// `COMPOSE_FILE` for `.env`, so a plain `docker compose` here reads the files
    /// `countable up` reads, in its order (a COMPOSE_FILE stops compose from merging
    /// the override file by itself, so it is listed).
    pub fn compose_file_variable(&self) -> String {
        let mut files = self.compose_files();
        files.extend(self.dev_file.clone());
        files.join(":")
    }

    /// `DATABASE_URL` of the team's db as web reaches it.
    pub fn database_url(&self, generated_user: &str, generated_password: &str) -> String {
        let user = self.credentials.user.as_deref().unwrap_or(generated_user);
        let password = self
            .credentials
            .password
            .as_deref()
            .unwrap_or(generated_password);
        let db = self.credentials.db.as_deref().unwrap_or(user);
        let auth = if password.is_empty() {
            user.to_string()
        } else {
            format!("{user}:{password}")
        };
        format!("postgres://{auth}@{}:5432/{db}", self.db)
    }
}

/// A literal value (no `${…}`): the value compose will pass as it is.
fn literal(v: Option<&String>) -> Option<Option<String>> {
    match v {
        None => Some(None),
        Some(v) if v.contains('$') => None,
        Some(v) => Some(Some(v.clone())),
    }
}

fn credentials(db: &Service) -> DbCredentials {
    let env = &db.environment;
    // The postgres image's defaults: user `postgres`, database named as the user.
    let user = match literal(env.get("POSTGRES_USER")) {
        Some(Some(u)) => Some(u),
        Some(None) => Some("postgres".into()),
        None => None,
    };
    let password = literal(env.get("POSTGRES_PASSWORD")).map(Option::unwrap_or_default);
    let db_name = match literal(env.get("POSTGRES_DB")) {
        Some(Some(d)) => Some(d),
        Some(None) => user.clone(),
        None => None,
    };
    DbCredentials {
        user,
        password,
        db: db_name,
    }
}

/// Decide the adoption of `existing` (the team's compose file) with web built from
/// `contract` (their Dockerfile; None with `--dockerfile countable`, then web is built
/// from `countable_dockerfile`); `settings` is the project's settings text.
pub fn plan(
    existing: &Existing,
    contract: Option<&Contract>,
    countable_dockerfile: Option<&str>,
    settings: &str,
) -> Result<Adoption, Hinted> {
    let file = existing.file.display().to_string();
    let db = existing.role(Role::Db).ok_or_else(|| {
        Hinted::new(
            format!("{file} has no PostgreSQL service (no service runs a postgres or postgis image)"),
            format!("add a db service with a postgres image to {file}, or move it aside and `countable init` writes a whole compose.yaml"),
        )
    })?;
    let web = existing.role(Role::Web).ok_or_else(|| {
        Hinted::new(
            format!("{file} has no service that builds the code (none has `build:`)"),
            format!("give the Django service `build: .` in {file}, or move it aside and `countable init` writes a whole compose.yaml"),
        )
    })?;
    let names: Vec<&str> = existing.services.iter().map(|s| s.name.as_str()).collect();
    let nginx = if names.contains(&"nginx") {
        "countable-nginx"
    } else {
        "nginx"
    };
    let mut warnings = Vec::new();
    if let Some(at) = &web.mounts_project_at {
        warnings.push(format!("{file} mounts the project directory into `{}` (`.:{at}`): live code is for development, and `countable deploy` runs {file} too; move that mount into {} (merged locally only), or keep it knowing deploys mount the release's files there", web.name, existing.override_file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| override_name(&file))));
    }
    let run = match countable_dockerfile {
        Some(_) => Web::countables(),
        None => super::web::theirs(
            &contract.cloned().unwrap_or_default(),
            Some(web),
            settings,
            &mut warnings,
        ),
    };
    Ok(Adoption {
        dev_file: existing
            .override_file
            .as_ref()
            .map(|f| f.display().to_string()),
        team_file: file,
        db: db.name.clone(),
        web: web.name.clone(),
        nginx: nginx.into(),
        kept: existing
            .services
            .iter()
            .filter(|s| s.role == Role::Other)
            .map(|s| s.name.clone())
            .collect(),
        run,
        dockerfile: countable_dockerfile.map(str::to_string),
        db_volume: !db
            .mount_targets
            .iter()
            .any(|t| t.trim_end_matches('/') == "/var/lib/postgresql/data"),
        credentials: credentials(db),
        web_sets_database_url: web.environment.contains_key("DATABASE_URL"),
        warnings,
    })
}

/// The override file compose merges by itself beside `file`.
fn override_name(file: &str) -> String {
    match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.override.{ext}"),
        None => format!("{file}.override"),
    }
}

/// A list as YAML flow (JSON is YAML): `["a", "b"]`.
pub fn flow(words: &[String]) -> String {
    serde_json::to_string(words).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(text: &str) -> Existing {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-compose.yml"), text).unwrap();
        super::super::compose::read(dir.path()).unwrap().unwrap()
    }

    #[test]
    fn wraps_their_command_and_reads_their_db() {
        let e = existing("services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_PASSWORD: devpw\n    volumes: [pgdata:/var/lib/postgresql/data]\n  redis:\n    image: redis:7\n  app:\n    build: .\n    ports: ['8000:8000']\n    environment: [DATABASE_URL=postgres://postgres:devpw@db/postgres]\n");
        let c = super::super::dockerfile::parse(
            "FROM python\nWORKDIR /code\nEXPOSE 8080\nENTRYPOINT [\"/docker-entrypoint.sh\"]\nCMD gunicorn demo.wsgi -b :8080\n",
        );
        let a = plan(&e, Some(&c), None, "").unwrap();
        assert_eq!(a.db, "db");
        assert_eq!(a.web, "app");
        assert_eq!(a.kept, ["redis"]);
        assert_eq!(a.nginx, "nginx");
        assert_eq!(a.run.port, 8080);
        assert_eq!(a.run.workdir, "/code");
        assert_eq!(
            a.run.entrypoint.as_deref().unwrap(),
            ["/bin/sh", ENTRYPOINT_IN_CONTAINER, "/docker-entrypoint.sh"]
        );
        assert_eq!(
            a.run.command.as_deref().unwrap(),
            ["/bin/sh", "-c", "gunicorn demo.wsgi -b :8080"]
        );
        assert!(!a.db_volume);
        assert!(a.web_sets_database_url);
        assert_eq!(
            a.database_url("x", "y"),
            "postgres://postgres:devpw@db:5432/postgres"
        );
        assert_eq!(
            a.compose_file_variable(),
            "docker-compose.yml:docker-compose.countable.yml"
        );
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        // Live code mounted in the team's base file: said, with where it belongs.
        let e = existing("services:\n  db:\n    image: postgres\n  app:\n    build: .\n    volumes: ['.:/code', 'static:/code/static']\n");
        let a = plan(&e, Some(&c), None, "").unwrap();
        assert!(
            a.warnings[0].contains("(`.:/code`)")
                && a.warnings[0].contains("docker-compose.override.yml"),
            "{:?}",
            a.warnings
        );
    }

    #[test]
    fn their_command_stays_and_interpolated_credentials_come_from_env() {
        let e = existing("services:\n  nginx:\n    image: nginx\n  pg:\n    image: postgis/postgis:16-3.4\n    environment:\n      POSTGRES_USER: ${DB_USER}\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n  web:\n    build: .\n    command: python manage.py runserver 0.0.0.0:8000\n    working_dir: /srv/app\n");
        let c = super::super::dockerfile::parse("FROM python\nUSER app\nCMD [\"gunicorn\"]\n");
        let a = plan(&e, Some(&c), None, "").unwrap();
        assert_eq!(a.nginx, "countable-nginx");
        assert_eq!(a.run.workdir, "/srv/app");
        assert_eq!(a.run.command, None);
        assert!(a.db_volume);
        assert_eq!(a.credentials.user, None);
        assert_eq!(
            a.database_url("shop", "pw"),
            "postgres://shop:pw@pg:5432/shop"
        );
        assert!(a.warnings[0].contains("USER app"), "{:?}", a.warnings);
        // With countable's Dockerfile: its entrypoint, /app and 8000.
        let a = plan(&e, None, Some("Dockerfile.countable"), "").unwrap();
        assert_eq!(a.run, Web::countables());
    }

    #[test]
    fn the_plan_writes_the_override_instead_of_a_second_base_file() {
        let e = existing("services:\n  db:\n    image: postgres:16\n    environment: [POSTGRES_USER=shop, POSTGRES_PASSWORD=pw]\n  app:\n    build: .\n");
        let c = super::super::dockerfile::parse(
            "FROM python\nWORKDIR /code\nEXPOSE 8080\nCMD [\"gunicorn\"]\n",
        );
        let mut choices =
            crate::scaffold::Choices::defaults(crate::names::ProjectName::parse("shop").unwrap());
        choices.adopt = Some(plan(&e, Some(&c), None, "").unwrap());
        let mut layout = crate::scaffold::DjangoLayout::conventional(&choices.project);
        layout.database_url = true;
        let files = crate::scaffold::plan(
            &choices,
            &layout,
            &crate::scaffold::Secrets::random(),
            false,
        )
        .unwrap();
        let file = |p: &str| files.iter().find(|f| f.path == std::path::Path::new(p));
        assert!(file("compose.yaml").is_none() && file("compose.override.yaml").is_none());
        let overlay = &file(FILE).unwrap().contents;
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(overlay).unwrap();
        assert_eq!(doc["name"], "shop");
        assert_eq!(doc["services"]["app"]["command"][0], "gunicorn");
        assert_eq!(
            doc["services"]["app"]["entrypoint"][1],
            ENTRYPOINT_IN_CONTAINER
        );
        assert!(
            overlay.contains("      - static:/code/staticfiles\n"),
            "{overlay}"
        );
        assert!(
            overlay.contains("http://127.0.0.1:8080/healthz"),
            "{overlay}"
        );
        let config = crate::project::Config::parse(
            &file("countable.yml").unwrap().contents,
            std::path::Path::new("countable.yml"),
        )
        .unwrap();
        assert_eq!(config.compose_files, ["docker-compose.yml", FILE]);
        assert!(config.dev_compose_files.is_empty());
        assert_eq!(
            (config.services.web.as_str(), config.services.web_port),
            ("app", 8080)
        );
        let prod = &config.environments[&crate::names::EnvName::parse("prod").unwrap()];
        assert_eq!(prod.settings_module.as_deref(), Some("shop.settings"));
        assert!(file("nginx/default.conf")
            .unwrap()
            .contents
            .contains("set $app http://app:8080;"));
        let env = &file(".env").unwrap().contents;
        assert!(
            env.contains("COMPOSE_FILE='docker-compose.yml:docker-compose.countable.yml'"),
            "{env}"
        );
        assert!(
            env.contains("DATABASE_URL='postgres://shop:pw@db:5432/shop'"),
            "{env}"
        );
    }

    #[test]
    fn refuses_a_file_without_db_or_web() {
        let e = existing("services:\n  app:\n    build: .\n");
        assert!(plan(&e, None, None, "")
            .unwrap_err()
            .to_string()
            .contains("has no PostgreSQL service"));
        let e = existing("services:\n  db:\n    image: postgres\n  app:\n    image: shop\n");
        assert!(plan(&e, None, None, "")
            .unwrap_err()
            .to_string()
            .contains("no service that builds"));
    }
}
