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

/// One setting of the team's db service (POSTGRES_USER, _PASSWORD, _DB), as compose
/// will resolve it, so `.env` can say the database that really gets created.
#[derive(Debug, Clone, PartialEq)]
pub enum DbValue {
    /// The value compose passes: a literal (`$$` unescaped), the default of a variable
    /// nothing sets, or the image's own default.
    Known(String),
    /// countable's generated value: `.env` holds it under this very POSTGRES_* key and
    /// the service reads it from there (`${POSTGRES_PASSWORD}`, a bare key, an
    /// `env_file:`).
    Generated,
    /// countable's generated value, which `.env` must also hold under the team's own
    /// variable (`${DB_PASSWORD}` with no default).
    GeneratedAs(String),
}

/// The database the team's db service creates.
#[derive(Debug, Clone, PartialEq)]
pub struct DbCredentials {
    pub user: DbValue,
    pub password: DbValue,
    pub db: DbValue,
}

/// Everything the override and the project's other files need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Adoption {
    /// The team's compose file.
    pub team_file: String,
    /// The override compose merges by itself beside it (`docker-compose.override.yml`):
    /// a local file, merged locally only (countable.yml's `dev_compose_files`, listed
    /// even before it exists, so live code has its place).
    pub dev_file: String,
    /// It exists now (then `COMPOSE_FILE` lists it: compose refuses a missing one).
    pub dev_file_exists: bool,
    pub db: String,
    pub web: String,
    /// countable's nginx service (`nginx`, unless the team has a service of that name).
    pub nginx: String,
    /// Its config file: `nginx/default.conf`, or `nginx/countable.conf` beside the
    /// team's nginx (whose own config stays theirs).
    pub nginx_conf: String,
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
        if self.dev_file_exists {
            files.push(self.dev_file.clone());
        }
        files.join(":")
    }

    /// `DATABASE_URL` of the team's db as web reaches it, given `.env`'s generated
    /// POSTGRES_USER, _PASSWORD and _DB; each part percent-encoded.
    pub fn database_url(&self, generated: [&str; 3]) -> String {
        let c = &self.credentials;
        let pick = |v: &DbValue, g: &str| match v {
            DbValue::Known(k) => k.clone(),
            DbValue::Generated | DbValue::GeneratedAs(_) => g.to_string(),
        };
        // RFC 3986's unreserved characters stay; everything else is escaped.
        const PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let enc = |v: &str| percent_encoding::utf8_percent_encode(v, PART).to_string();
        let (user, password, db) = (
            pick(&c.user, generated[0]),
            pick(&c.password, generated[1]),
            pick(&c.db, generated[2]),
        );
        let auth = if password.is_empty() {
            enc(&user)
        } else {
            format!("{}:{}", enc(&user), enc(&password))
        };
        format!("postgres://{auth}@{}:5432/{}", self.db, enc(&db))
    }
}

/// How compose resolves `value` of `key`: a literal, `${NAME}`, `${NAME:-default}`,
/// `$NAME`; `$$` is a literal `$`.
fn db_value(key: &str, value: &str) -> DbValue {
    if !value.replace("$$", "").contains('$') {
        return DbValue::Known(value.replace("$$", "$"));
    }
    let inner = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    let Some(inner) = inner else {
        return DbValue::Generated;
    };
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(end);
    let default = rest
        .strip_prefix(":-")
        .or_else(|| rest.strip_prefix('-'))
        .filter(|d| !d.contains('$'));
    match default {
        _ if name == key => DbValue::Generated,
        Some(d) => DbValue::Known(d.to_string()),
        None if rest.is_empty() || rest.starts_with('?') || rest.starts_with(":?") => {
            DbValue::GeneratedAs(name.to_string())
        }
        None => DbValue::Generated,
    }
}

fn credentials(db: &Service) -> DbCredentials {
    let get = |key: &str| -> Option<DbValue> {
        match db.environment.get(key) {
            Some(Some(v)) => Some(db_value(key, v)),
            // A bare key: from `.env`, which countable writes.
            Some(None) => Some(DbValue::Generated),
            None if db.env_file => Some(DbValue::Generated),
            None => None,
        }
    };
    // The postgres image's defaults: user `postgres`, no password, database named as
    // the user.
    let user = get("POSTGRES_USER").unwrap_or(DbValue::Known("postgres".into()));
    let password = get("POSTGRES_PASSWORD").unwrap_or(DbValue::Known(String::new()));
    let db_name = get("POSTGRES_DB").unwrap_or_else(|| user.clone());
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
    let dev_file = existing
        .override_file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| {
            let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("yml");
            super::compose::override_name(&file, ext)
        });
    if let Some(at) = &web.mounts_project_at {
        warnings.push(format!(
            "{file} mounts the project directory into `{}` (`.:{at}`): live code is for development, and `countable deploy` runs {file} too; move that mount into {dev_file} (countable.yml's dev_compose_files: merged locally only{}), or keep it knowing deploys mount the release's files there",
            web.name,
            if existing.override_file.is_some() {
                ""
            } else {
                "; add it to COMPOSE_FILE in .env too"
            }
        ));
    }
    // The override is merged after countable's file: ports it publishes come back.
    for s in existing.override_services.iter().filter(|s| s.publishes) {
        if s.name == web.name || s.name == db.name {
            warnings.push(format!("{dev_file} publishes ports of `{}`, and it is merged after {FILE}, which closes them: remove them there ({})", s.name, if s.name == web.name { "nginx publishes the site" } else { "the database is reached through the Docker API" }));
        }
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
        dev_file,
        dev_file_exists: existing.override_file.is_some(),
        team_file: file,
        db: db.name.clone(),
        web: web.name.clone(),
        nginx: nginx.into(),
        nginx_conf: if nginx == "nginx" {
            "nginx/default.conf"
        } else {
            "nginx/countable.conf"
        }
        .into(),
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
            a.database_url(["x", "y", "z"]),
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
        assert_eq!(a.nginx_conf, "nginx/countable.conf");
        assert_eq!(a.run.workdir, "/srv/app");
        assert_eq!(a.run.command, None);
        assert!(a.db_volume);
        assert_eq!(a.credentials.user, DbValue::GeneratedAs("DB_USER".into()));
        assert_eq!(
            a.database_url(["shop", "p@ss/w:rd#1", "shop"]),
            "postgres://shop:p%40ss%2Fw%3Ard%231@pg:5432/shop"
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
        assert_eq!(config.dev_compose_files, ["docker-compose.override.yml"]);
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
    fn credentials_as_compose_resolves_them() {
        let db = |env: &str| {
            let e = existing(&format!(
                "services:\n  db:\n    image: postgres:16\n{env}  app:\n    build: .\n"
            ));
            plan(&e, None, None, "").unwrap().credentials
        };
        use DbValue::*;
        let c = db("    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD:-devpw}\n      POSTGRES_USER: pa$$t\n      POSTGRES_DB: ${POSTGRES_DB}\n");
        assert_eq!(c.password, Known("devpw".into()));
        assert_eq!(c.user, Known("pa$t".into()));
        assert_eq!(c.db, Generated);
        // A bare key, or an env_file: countable's .env says it.
        let c = db("    env_file: .env\n    environment: [POSTGRES_PASSWORD]\n");
        assert_eq!(
            (c.user, c.password, c.db),
            (Generated, Generated, Generated)
        );
        // The image's defaults.
        let c = db("");
        assert_eq!(c.user, Known("postgres".into()));
        assert_eq!(c.db, Known("postgres".into()));
        assert_eq!(c.password, Known(String::new()));
        let c = db("    environment:\n      POSTGRES_PASSWORD: $DB_PW\n");
        assert_eq!(c.password, GeneratedAs("DB_PW".into()));
    }

    #[test]
    fn the_override_file_stays_local_and_its_ports_are_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            "services:\n  db:\n    image: postgres\n  app:\n    build: .\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("docker-compose.override.yaml"),
            "services:\n  app:\n    ports: ['8000:8000']\n",
        )
        .unwrap();
        let e = super::super::compose::read(dir.path()).unwrap().unwrap();
        let a = plan(&e, None, None, "").unwrap();
        assert_eq!(a.dev_file, "docker-compose.override.yaml");
        assert_eq!(
            a.compose_file_variable(),
            "docker-compose.yml:docker-compose.countable.yml:docker-compose.override.yaml"
        );
        assert!(
            a.warnings
                .iter()
                .any(|w| w.contains("docker-compose.override.yaml publishes ports of `app`")),
            "{:?}",
            a.warnings
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
