//! Render the embedded templates (rust-embed + minijinja) into a new project, or into an
//! existing one without touching what is there.
//!
//! Planning (what files, with what contents) is separate from writing, so tests compare
//! plans with golden files and `new`/`init` share one list. This module never runs
//! docker or any other program.

use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::{context, Environment, UndefinedBehavior};
use rust_embed::RustEmbed;

use crate::envfile;
use crate::error::Hint;
use crate::names::ProjectName;

#[derive(RustEmbed)]
#[folder = "templates/"]
struct Templates;

#[derive(RustEmbed)]
#[folder = "entrypoints/"]
struct Entrypoints;

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{} exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write in {}", path.display())]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no Django project here: {} has no manage.py", .0.display())]
    NotDjango(PathBuf),
    #[error("cannot find the settings module: manage.py in {} does not set DJANGO_SETTINGS_MODULE", .0.display())]
    NoSettings(PathBuf),
}

impl Hint for ScaffoldError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ScaffoldError::NotEmpty(p) => format!(
                "choose another name, or `countable new {} --force` to write into it anyway (existing files with the same names are overwritten)",
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            ScaffoldError::Unwritable { path, .. } => format!(
                "run it where you may write, e.g. `cd ~ && countable new <name>`, or fix the permissions of {}",
                path.display()
            ),
            ScaffoldError::NotDjango(_) => "run `countable init` in the directory holding manage.py, or start afresh with `countable new <name>`".into(),
            ScaffoldError::NoSettings(_) => "add `os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"<package>.settings\")` to manage.py, or pass `--settings <package>.settings`".into(),
        })
    }
}
crate::register_hint!(ScaffoldError);

/// What the user chose (flags, prompts or defaults).
#[derive(Debug, Clone)]
pub struct Choices {
    pub project: ProjectName,
    pub postgres_major: u8,
    pub python_version: String,
    pub postgis: bool,
    pub port: u16,
    pub db_image: Option<String>,
    pub python_image: Option<String>,
    pub nginx_image: Option<String>,
    /// The Dockerfile compose builds web from: `Dockerfile`, or `Dockerfile.countable`
    /// beside a team's own (`init --dockerfile countable`).
    pub dockerfile: String,
    /// The team's own compose file, adopted (`init`): countable's additions go into
    /// `docker-compose.countable.yml` instead of a compose.yaml of its own.
    pub adopt: Option<crate::adopt::overlay::Adoption>,
    /// web runs the team's own image (their Dockerfile kept, no compose file of
    /// theirs): countable's entrypoint wrapped around theirs, their paths and port.
    pub web: Option<crate::adopt::web::Web>,
}

pub const POSTGRES_MAJORS: &[u8] = &[17, 16, 15, 14, 13];
pub const PYTHON_VERSIONS: &[&str] = &["3.13", "3.12", "3.11"];
pub const DEFAULT_POSTGRES: u8 = 17;
pub const DEFAULT_PYTHON: &str = "3.12";
pub const DEFAULT_PORT: u16 = 8000;
pub const NGINX_IMAGE: &str = "nginx:1.28";

impl Choices {
    pub fn defaults(project: ProjectName) -> Self {
        Self {
            project,
            postgres_major: DEFAULT_POSTGRES,
            python_version: DEFAULT_PYTHON.into(),
            postgis: false,
            port: DEFAULT_PORT,
            db_image: None,
            python_image: None,
            nginx_image: None,
            dockerfile: "Dockerfile".into(),
            adopt: None,
            web: None,
        }
    }

    /// The public image the scaffold names, unless overridden.
    pub fn db_image(&self) -> String {
        self.db_image.clone().unwrap_or_else(|| {
            if self.postgis {
                format!("postgis/postgis:{}-3.5", self.postgres_major)
            } else {
                format!("postgres:{}", self.postgres_major)
            }
        })
    }

    pub fn python_image(&self) -> String {
        self.python_image
            .clone()
            .unwrap_or_else(|| format!("python:{}-slim", self.python_version))
    }

    pub fn nginx_image(&self) -> String {
        self.nginx_image
            .clone()
            .unwrap_or_else(|| NGINX_IMAGE.into())
    }
}

/// Where the Django code is: its package, settings modules and WSGI callable.
#[derive(Debug, Clone, PartialEq)]
pub struct DjangoLayout {
    pub package: String,
    /// The settings deploys use (compose.yaml's `DJANGO_SETTINGS_MODULE`).
    pub settings_module: String,
    /// The settings local development uses (compose.override.yaml sets it when it
    /// differs): `x.settings.dev` of a settings package.
    pub local_settings_module: String,
    /// The settings the staging environment deploys with: a package's `staging`
    /// module, else `settings_module`.
    pub staging_settings_module: String,
    pub wsgi_app: String,
    /// The settings read the database from `DATABASE_URL` (then `.env` gets one).
    pub database_url: bool,
}

impl DjangoLayout {
    /// The layout `countable new` creates: `<name>/settings.py`, `<name>/wsgi.py`.
    pub fn conventional(project: &ProjectName) -> Self {
        Self {
            package: project.to_string(),
            settings_module: format!("{project}.settings"),
            local_settings_module: format!("{project}.settings"),
            staging_settings_module: format!("{project}.settings"),
            wsgi_app: format!("{project}.wsgi:application"),
            database_url: false,
        }
    }
}

/// The secrets written to `.env`.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub secret_key: String,
    pub db_password: String,
}

impl Secrets {
    pub fn random() -> Self {
        Self {
            secret_key: envfile::random_secret(50),
            db_password: envfile::random_password(32),
        }
    }
}

/// One file to write, relative to the project root.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: String,
    pub executable: bool,
    /// Written with mode 0600 (`.env`).
    pub secret: bool,
    /// Django code (only `new` writes these).
    pub django: bool,
}

/// (template, output path, executable, django code)
const TEMPLATE_FILES: &[(&str, &str, bool, bool)] = &[
    ("compose/compose.yaml.j2", "compose.yaml", false, false),
    (
        "compose/compose.override.yaml.j2",
        "compose.override.yaml",
        false,
        false,
    ),
    ("compose/Dockerfile.j2", "Dockerfile", false, false),
    ("compose/dockerignore.j2", ".dockerignore", false, false),
    ("nginx/default.conf.j2", "nginx/default.conf", false, false),
    ("project/countable.yml.j2", "countable.yml", false, false),
    ("project/Jenkinsfile.j2", "Jenkinsfile", false, false),
    ("project/gitignore.j2", ".gitignore", false, false),
    ("project/README.md.j2", "README.md", false, true),
    (
        "django/requirements.txt.j2",
        "requirements.txt",
        false,
        false,
    ),
    (
        "django/gunicorn.conf.py.j2",
        "gunicorn.conf.py",
        false,
        false,
    ),
    ("django/manage.py.j2", "manage.py", true, true),
    (
        "django/package/__init__.py.j2",
        "{package}/__init__.py",
        false,
        true,
    ),
    (
        "django/package/settings.py.j2",
        "{package}/settings.py",
        false,
        true,
    ),
    (
        "django/package/urls.py.j2",
        "{package}/urls.py",
        false,
        true,
    ),
    (
        "django/package/views.py.j2",
        "{package}/views.py",
        false,
        true,
    ),
    (
        "django/package/wsgi.py.j2",
        "{package}/wsgi.py",
        false,
        true,
    ),
    (
        "django/package/health.py.j2",
        "{package}/health.py",
        false,
        false,
    ),
];

/// What countable adds to a team's compose file it adopts (`init`), in place of its
/// own compose.yaml and compose.override.yaml.
const ADOPT_FILE: (&str, &str, bool, bool) = (
    "compose/adopt.yaml.j2",
    crate::adopt::overlay::FILE,
    false,
    false,
);

/// The entrypoint copied verbatim into every project.
pub const ENTRYPOINT: (&str, &str) = ("django.sh", "entrypoint.sh");

/// The names of every embedded template, for tests.
pub fn embedded_templates() -> Vec<String> {
    Templates::iter().map(|p| p.into_owned()).collect()
}

fn template_text(name: &str) -> anyhow::Result<String> {
    let file = Templates::get(name).with_context(|| format!("template {name} is not embedded"))?;
    String::from_utf8(file.data.into_owned())
        .with_context(|| format!("template {name} is not UTF-8"))
}

/// The `.env` entries: `secrets` for the real file, `None` for `.env.example`. Every key
/// the generated code reads is here (a unit test checks it), or named in a comment when
/// compose.yaml or `countable deploy` sets it; an empty value means the code's default.
pub fn env_entries(choices: &Choices, secrets: Option<&Secrets>) -> Vec<(&'static str, String)> {
    let name = choices.project.to_string();
    let secret = |v: &str| secrets.map(|_| v.to_string()).unwrap_or_default();
    let s = |v: &str| v.to_string();
    let mut entries = vec![
        ("# Settings and secrets of this environment (12-factor). Never commit .env; .env.example lists the keys.", s("")),
        ("# An empty value means the default written in the comment.", s("")),
        ("# Set by compose.yaml for web: DJANGO_SETTINGS_MODULE, DJANGO_STATIC_ROOT, DJANGO_MEDIA_ROOT.", s("")),
        ("DJANGO_SECRET_KEY", secret(secrets.map(|s| s.secret_key.as_str()).unwrap_or(""))),
        ("DJANGO_DEBUG", if secrets.is_some() { "1" } else { "0" }.into()),
        ("DJANGO_ALLOWED_HOSTS", s("localhost,127.0.0.1")),
        ("# Origins forms are posted from, comma-separated, e.g. https://www.example.com", s("")),
        ("DJANGO_CSRF_TRUSTED_ORIGINS", s("")),
        ("# DEBUG, INFO, WARNING, ERROR (default INFO); logs go to stdout.", s("")),
        ("DJANGO_LOG_LEVEL", s("")),
        ("# HTTPS: redirect plain HTTP (not /healthz), secure cookies and HSTS (default one year).", s("")),
        ("DJANGO_SECURE_SSL_REDIRECT", s("0")),
        ("DJANGO_SECURE_HSTS_SECONDS", s("")),
        ("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", s("")),
        ("DJANGO_SECURE_HSTS_PRELOAD", s("")),
        ("# The database: POSTGRES_* (the db container reads them too), or DATABASE_URL instead.", s("")),
        ("POSTGRES_HOST", s("db")),
        ("POSTGRES_PORT", s("5432")),
        ("POSTGRES_DB", name.clone()),
        ("POSTGRES_USER", name),
        ("POSTGRES_PASSWORD", secret(secrets.map(|s| s.db_password.as_str()).unwrap_or(""))),
        ("DATABASE_URL", s("")),
        ("# Seconds a database connection is reused (default 60; 0 closes it after each request).", s("")),
        ("DJANGO_CONN_MAX_AGE", s("")),
        ("# Mail: EMAIL_URL, e.g. smtp+tls://postmaster%40mg.example.com:KEY@smtp.mailgun.org:587", s("")),
        ("# (smtp+tls STARTTLS, smtps TLS, console prints), or EMAIL_HOST and friends; neither prints mails.", s("")),
        ("EMAIL_URL", s("")),
        ("EMAIL_HOST", s("")),
        ("EMAIL_PORT", s("")),
        ("EMAIL_HOST_USER", s("")),
        ("EMAIL_HOST_PASSWORD", s("")),
        ("EMAIL_USE_TLS", s("")),
        ("DJANGO_DEFAULT_FROM_EMAIL", s("")),
        ("# gunicorn (gunicorn.conf.py): workers (default 2 x CPUs + 1, at most 8), threads (1),", s("")),
        ("# timeout (60 s, below nginx's 65 s), graceful timeout (30 s), trusted proxies (own networks).", s("")),
        ("GUNICORN_WORKERS", s("")),
        ("GUNICORN_THREADS", s("")),
        ("GUNICORN_TIMEOUT", s("")),
        ("GUNICORN_GRACEFUL_TIMEOUT", s("")),
        ("GUNICORN_FORWARDED_ALLOW_IPS", s("")),
        ("# Entrypoint: 0 skips migrate / collectstatic; seconds to wait for the db (default 60).", s("")),
        ("DJANGO_MIGRATE", s("1")),
        ("DJANGO_COLLECTSTATIC", s("1")),
        ("DB_WAIT_TIMEOUT", s("")),
        ("# Error reporting: leave empty to disable. `countable deploy` sets SENTRY_RELEASE and SENTRY_ENVIRONMENT.", s("")),
        ("SENTRY_DSN", s("")),
    ];
    if let Some(a) = &choices.adopt {
        entries.push(("# The compose files a plain `docker compose` reads here, as `countable up` does: yours, then countable's.", s("")));
        entries.push(("COMPOSE_FILE", a.compose_file_variable()));
    }
    entries
}

/// Every file of a project. `with_django`: include the Django code (for `new`).
pub fn plan(
    choices: &Choices,
    layout: &DjangoLayout,
    secrets: &Secrets,
    with_django: bool,
) -> anyhow::Result<Vec<PlannedFile>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let adopt = choices.adopt.as_ref();
    let run = adopt
        .map(|a| a.run.clone())
        .or(choices.web.clone())
        .unwrap_or_else(crate::adopt::web::Web::countables);
    let ctx = context! {
        adopted => adopt.is_some(),
        overlay => crate::adopt::overlay::FILE,
        compose_files => adopt.map(|a| a.compose_files()).unwrap_or_default(),
        dev_files => adopt.map(|a| vec![a.dev_file.clone()]).unwrap_or_default(),
        team_file => adopt.map(|a| a.team_file.clone()).unwrap_or_default(),
        db_service => adopt.map(|a| a.db.as_str()).unwrap_or("db"),
        nginx_service => adopt.map(|a| a.nginx.as_str()).unwrap_or("nginx"),
        web_port => run.port,
        static_root => run.static_root,
        media_root => run.media_root,
        kept => adopt.map(|a| a.kept.clone()).unwrap_or_default(),
        workdir => run.workdir,
        entrypoint => run.entrypoint.as_deref().map(crate::adopt::overlay::flow),
        entrypoint_path => crate::adopt::overlay::ENTRYPOINT_IN_CONTAINER,
        command => run.command.as_deref().map(crate::adopt::overlay::flow),
        nginx_conf => adopt.map(|a| a.nginx_conf.as_str()).unwrap_or("nginx/default.conf"),
        db_volume => adopt.is_some_and(|a| a.db_volume),
        adopt_dockerfile => adopt.and_then(|a| a.dockerfile.clone()),
        project => choices.project.as_str(),
        package => layout.package,
        settings_module => layout.settings_module,
        local_settings_module => layout.local_settings_module,
        staging_settings_module => layout.staging_settings_module,
        // countable.yml names each environment's settings when they are not the one
        // module everywhere (or the compose files are the team's).
        settings_per_env => adopt.is_some()
            || layout.local_settings_module != layout.settings_module
            || layout.staging_settings_module != layout.settings_module,
        wsgi_app => layout.wsgi_app,
        db_image => choices.db_image(),
        python_image => choices.python_image(),
        nginx_image => choices.nginx_image(),
        port => choices.port,
        url => format!("http://localhost:{}/", choices.port),
        web_service => adopt.map(|a| a.web.as_str()).unwrap_or("web"),
        dockerfile => choices.dockerfile,
        version => env!("CARGO_PKG_VERSION"),
    };
    let mut files = Vec::new();
    let extra: &[(&str, &str, bool, bool)] = if adopt.is_some() { &[ADOPT_FILE] } else { &[] };
    for (template, out, executable, django) in TEMPLATE_FILES.iter().chain(extra) {
        if *django && !with_django {
            continue;
        }
        // An adopted compose file takes the place of countable's own two, and web is
        // built from the team's Dockerfile unless countable's goes beside it.
        if adopt.is_some() && template.starts_with("compose/compose.")
            || adopt.is_some_and(|a| a.dockerfile.is_none()) && *template == "compose/Dockerfile.j2"
        {
            continue;
        }
        let source = template_text(template)?;
        let contents = env
            .render_str(&source, &ctx)
            .with_context(|| format!("rendering template {template}"))?;
        files.push(PlannedFile {
            path: PathBuf::from(match *out {
                "Dockerfile" => choices.dockerfile.clone(),
                "nginx/default.conf" => adopt
                    .map(|a| a.nginx_conf.clone())
                    .unwrap_or_else(|| out.to_string()),
                out => out.replace("{package}", &layout.package.replace('.', "/")),
            }),
            contents,
            executable: *executable,
            secret: false,
            django: *django,
        });
    }
    let entry = Entrypoints::get(ENTRYPOINT.0).context("entrypoint is not embedded")?;
    files.push(PlannedFile {
        path: ENTRYPOINT.1.into(),
        contents: String::from_utf8(entry.data.into_owned()).context("entrypoint is not UTF-8")?,
        executable: true,
        secret: false,
        django: false,
    });
    files.push(PlannedFile {
        path: ".env.example".into(),
        contents: envfile::render(&env_entries(choices, None)),
        executable: false,
        secret: false,
        django: false,
    });
    let mut local_env = env_entries(choices, Some(secrets));
    let name = choices.project.as_str();
    // The team's own variables their db service reads countable's values from.
    let mut aliases = Vec::new();
    if let Some(a) = adopt {
        // The database the team's db service creates, as it creates it.
        use crate::adopt::overlay::DbValue;
        let c = &a.credentials;
        for (key, value) in local_env.iter_mut() {
            let setting = match *key {
                "POSTGRES_HOST" => {
                    *value = a.db.clone();
                    continue;
                }
                "POSTGRES_USER" => &c.user,
                "POSTGRES_PASSWORD" => &c.password,
                "POSTGRES_DB" => &c.db,
                _ => continue,
            };
            match setting {
                DbValue::Known(known) => *value = known.clone(),
                DbValue::Generated => {}
                DbValue::GeneratedAs(alias) => aliases.push(envfile::encode_line(alias, value)),
            }
        }
    }
    let generated = |key: &str| {
        local_env
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if layout.database_url {
        // The same database as POSTGRES_*, in the form the project's settings read.
        let url = match adopt {
            Some(a) => a.database_url([
                &generated("POSTGRES_USER"),
                &generated("POSTGRES_PASSWORD"),
                &generated("POSTGRES_DB"),
            ]),
            None => format!("postgres://{name}:{}@db:5432/{name}", secrets.db_password),
        };
        for (key, value) in local_env.iter_mut() {
            if *key == "DATABASE_URL" {
                *value = url.clone();
            }
        }
    }
    let mut contents = envfile::render(&local_env);
    if !aliases.is_empty() {
        contents
            .push_str("# The variables your compose file reads the database's settings from.\n");
        for line in aliases {
            contents.push_str(&line);
            contents.push('\n');
        }
    }
    files.push(PlannedFile {
        path: ".env".into(),
        contents,
        executable: false,
        secret: true,
        django: false,
    });
    Ok(files)
}

fn unwritable(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Unwritable {
        path: path.to_path_buf(),
        source,
    }
}

fn write_one(root: &Path, file: &PlannedFile, overwrite: bool) -> Result<(), ScaffoldError> {
    let path = root.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(unwritable(parent))?;
    }
    if file.secret {
        if overwrite && path.exists() {
            std::fs::remove_file(&path).map_err(unwritable(&path))?;
        }
        return envfile::write_secret_file(&path, &file.contents).map_err(|e| {
            ScaffoldError::Unwritable {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        });
    }
    std::fs::write(&path, &file.contents).map_err(unwritable(&path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if file.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(unwritable(&path))?;
    }
    Ok(())
}

/// Write a new project at `target`. Refuses a non-empty directory unless `force`.
/// A new directory is assembled beside the target and renamed into place, so a failure
/// leaves nothing behind.
pub fn write_new(target: &Path, files: &[PlannedFile], force: bool) -> Result<(), ScaffoldError> {
    let target = &std::path::absolute(target).map_err(unwritable(target))?;
    let exists = target.exists();
    if exists {
        let empty = std::fs::read_dir(target)
            .map_err(unwritable(target))?
            .next()
            .is_none();
        if !empty && !force {
            return Err(ScaffoldError::NotEmpty(target.to_path_buf()));
        }
        for f in files {
            write_one(target, f, true)?;
        }
        return Ok(());
    }
    let parent = target.parent().unwrap_or(Path::new("/"));
    let staging = parent.join(format!(
        ".{}.countable-new-{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        std::fs::create_dir(&staging).map_err(unwritable(parent))?;
        for f in files {
            write_one(&staging, f, false)?;
        }
        std::fs::rename(&staging, target).map_err(unwritable(parent))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// What `write_missing` did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
}

/// Write each file that does not exist yet under `root`; never overwrite.
pub fn write_missing(root: &Path, files: &[PlannedFile]) -> Result<Report, ScaffoldError> {
    let mut report = Report::default();
    for f in files {
        if root.join(&f.path).exists() {
            report.skipped.push(f.path.clone());
        } else {
            write_one(root, f, false)?;
            report.written.push(f.path.clone());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> (Choices, DjangoLayout, Secrets) {
        let name = ProjectName::parse("shop").unwrap();
        let layout = DjangoLayout::conventional(&name);
        let secrets = Secrets {
            secret_key: "golden-secret-with=$#'\"".into(),
            db_password: "goldenpassword".into(),
        };
        (Choices::defaults(name), layout, secrets)
    }

    /// Compare every planned file with tests/golden/new/; UPDATE_GOLDEN=1 rewrites them.
    #[test]
    fn templates_match_golden_files() {
        let (choices, layout, secrets) = fixed();
        let files = plan(&choices, &layout, &secrets, true).unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/new");
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for f in &files {
            let path = golden.join(format!("{}.golden", f.path.display()));
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &f.contents).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!(
                    "missing golden file {} (UPDATE_GOLDEN=1 cargo test)",
                    path.display()
                )
            });
            assert_eq!(
                f.contents,
                want,
                "{} differs from its golden file",
                f.path.display()
            );
        }
    }

    #[test]
    fn every_embedded_template_is_rendered() {
        let (choices, layout, secrets) = fixed();
        plan(&choices, &layout, &secrets, true).unwrap();
        let used: Vec<&str> = TEMPLATE_FILES
            .iter()
            .chain([&ADOPT_FILE])
            .map(|t| t.0)
            .collect();
        // Rendered at deploy time by tls::nginx_tls_conf (and tested there), not scaffolded.
        let elsewhere = ["nginx/tls.conf.j2"];
        for t in embedded_templates()
            .into_iter()
            .filter(|t| !elsewhere.contains(&t.as_str()))
        {
            assert!(
                used.contains(&t.as_str()),
                "template {t} is embedded but never rendered"
            );
        }
    }

    #[test]
    fn image_choices() {
        let (mut c, _, _) = fixed();
        assert_eq!(c.db_image(), "postgres:17");
        assert_eq!(c.python_image(), "python:3.12-slim");
        c.postgis = true;
        c.postgres_major = 16;
        assert_eq!(c.db_image(), "postgis/postgis:16-3.5");
        c.db_image = Some("countable-test/postgres:15".into());
        assert_eq!(c.db_image(), "countable-test/postgres:15");
    }

    #[test]
    fn env_file_holds_the_secrets_and_example_does_not() {
        let (choices, layout, secrets) = fixed();
        let files = plan(&choices, &layout, &secrets, true).unwrap();
        let get = |p: &str| files.iter().find(|f| f.path == Path::new(p)).unwrap();
        let env = envfile::parse(&get(".env").contents);
        let example = envfile::parse(&get(".env.example").contents);
        let keys = |v: &Vec<(String, String)>| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&env), keys(&example));
        let val = |v: &Vec<(String, String)>, k: &str| {
            v.iter().find(|(kk, _)| kk == k).unwrap().1.clone()
        };
        assert_eq!(val(&env, "DJANGO_SECRET_KEY"), secrets.secret_key);
        assert_eq!(val(&example, "DJANGO_SECRET_KEY"), "");
        assert_eq!(val(&example, "POSTGRES_PASSWORD"), "");
        assert!(get(".env").secret);
    }

    fn planned(name: &str) -> String {
        let (choices, layout, secrets) = fixed();
        plan(&choices, &layout, &secrets, true)
            .unwrap()
            .into_iter()
            .find(|f| f.path == Path::new(name))
            .unwrap_or_else(|| panic!("{name} is not planned"))
            .contents
    }

    /// The environment variable names `text` reads: `env("K"`, `env_int("K"`,
    /// `os.environ["K"]`, `os.environ.get("K"`, gunicorn's `_int("K"`, shell and compose
    /// `${K…}`.
    fn keys_read(text: &str) -> std::collections::BTreeSet<String> {
        const NEEDLES: &[&str] = &[
            "env(\"",
            "env_bool(\"",
            "env_int(\"",
            "env_list(\"",
            "_int(\"",
            "environ[\"",
            "environ.get(\"",
            "${",
        ];
        let mut keys = std::collections::BTreeSet::new();
        for needle in NEEDLES {
            for (at, _) in text.match_indices(needle) {
                let key: String = text[at + needle.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if key.starts_with(|c: char| c.is_ascii_uppercase()) {
                    keys.insert(key);
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_read_is_listed_in_env_example() {
        let example = planned(".env.example");
        let mut listed: std::collections::BTreeSet<String> = envfile::parse(&example)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // Keys compose.yaml or `countable deploy` set are named in comments.
        for line in example.lines().filter(|l| l.starts_with('#')) {
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.contains('_')
                    && word
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    listed.insert(word.to_string());
                }
            }
        }
        let mut read = std::collections::BTreeSet::new();
        for file in [
            "shop/settings.py",
            "shop/health.py",
            "gunicorn.conf.py",
            "entrypoint.sh",
            "compose.yaml",
        ] {
            read.extend(keys_read(&planned(file)));
        }
        for key in [
            "DJANGO_SECRET_KEY",
            "SENTRY_RELEASE",
            "GUNICORN_TIMEOUT",
            "DJANGO_MIGRATE",
            "POSTGRES_PASSWORD",
        ] {
            assert!(read.contains(key), "the scanner misses {key}: {read:?}");
        }
        let missing: Vec<_> = read.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "read but not in .env.example: {missing:?}"
        );
        let entries: Vec<String> = envfile::parse(&example)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let unused: Vec<_> = entries.iter().filter(|k| !read.contains(*k)).collect();
        assert!(
            unused.is_empty(),
            "in .env.example but never read: {unused:?}"
        );
    }

    fn yaml(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn compose_project_name_is_countable_yml_project() {
        let compose = yaml(&planned("compose.yaml"));
        let config = yaml(&planned("countable.yml"));
        assert_eq!(compose["name"], config["project"]);
        assert_eq!(compose["name"].as_str(), Some("shop"));
    }

    #[test]
    fn compose_keeps_the_db_to_its_own_values_and_rotates_logs() {
        let compose = yaml(&planned("compose.yaml"));
        let services = compose["services"].as_mapping().unwrap();
        let db = &compose["services"]["db"];
        assert!(db.get("env_file").is_none(), "the db reads all of .env");
        let env = db["environment"].as_mapping().unwrap();
        assert!(!env.is_empty());
        for (k, v) in env {
            let k = k.as_str().unwrap();
            assert!(k.starts_with("POSTGRES_"), "db gets {k}");
            assert!(
                v.as_str().unwrap().starts_with(&format!("${{{k}:?")),
                "{k}: {v:?}"
            );
        }
        for (name, svc) in services {
            assert_eq!(
                svc["logging"]["driver"].as_str(),
                Some("json-file"),
                "{name:?}"
            );
            assert!(
                svc["logging"]["options"]["max-size"].as_str().is_some(),
                "{name:?}"
            );
            assert!(
                svc["logging"]["options"]["max-file"].as_str().is_some(),
                "{name:?}"
            );
            assert!(
                svc.get("healthcheck").is_some(),
                "{name:?} has no healthcheck"
            );
        }
        let nginx_volumes: Vec<&str> = compose["services"]["nginx"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            nginx_volumes.contains(&"nginx-live:/etc/nginx/countable"),
            "{nginx_volumes:?}"
        );
        assert!(compose["volumes"].get("nginx-live").is_some());
    }

    /// `NAME = _int("ENV", default)` in gunicorn.conf.py: the default.
    fn gunicorn_default(conf: &str, setting: &str) -> u64 {
        let line = conf
            .lines()
            .find(|l| l.starts_with(&format!("{setting} = _int(")))
            .unwrap_or_else(|| panic!("no {setting} in gunicorn.conf.py"));
        line.trim_end_matches(')')
            .rsplit(", ")
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn seconds(text: &str) -> u64 {
        text.trim()
            .trim_end_matches(';')
            .trim_end_matches('s')
            .parse()
            .unwrap()
    }

    #[test]
    fn timeouts_agree_between_gunicorn_nginx_and_compose() {
        let conf = planned("gunicorn.conf.py");
        let timeout = gunicorn_default(&conf, "timeout");
        let graceful = gunicorn_default(&conf, "graceful_timeout");
        let nginx = planned("nginx/default.conf");
        let read = nginx
            .lines()
            .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
            .unwrap();
        assert!(
            seconds(read) > timeout,
            "nginx gives up ({read}) before gunicorn ({timeout} s)"
        );
        let compose = yaml(&planned("compose.yaml"));
        let grace = seconds(
            compose["services"]["web"]["stop_grace_period"]
                .as_str()
                .unwrap(),
        );
        assert!(
            grace > graceful,
            "stop_grace_period {grace} s <= graceful_timeout {graceful} s"
        );
        assert!(!conf.contains("forwarded_allow_ips = \"*\""));
    }

    #[test]
    fn nginx_follows_the_deploy_contract() {
        let nginx = planned("nginx/default.conf");
        let order = [
            "resolver 127.0.0.11 valid=1s ipv6=off;",
            "set $app http://web:8000;",
            "include /etc/nginx/countable/*.conf;",
            "proxy_pass $app;",
        ];
        let mut at = 0;
        for line in order {
            at += nginx[at..]
                .find(line)
                .unwrap_or_else(|| panic!("missing or out of order: {line}"));
        }
        for line in [
            "server_tokens off;",
            "proxy_connect_timeout 5s;",
            "proxy_next_upstream error timeout;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "default_type application/octet-stream;",
        ] {
            assert!(nginx.contains(line), "nginx lacks {line}");
        }
        let media = &nginx[nginx.find("location ^~ /media/").unwrap()..];
        let media = &media[..media.find("\n    }\n").unwrap()];
        assert!(
            !media.contains("proxy_pass") && !media.contains("fastcgi"),
            "{media}"
        );
        for script in [" html", " svg", " js", " php"] {
            assert!(
                !media.contains(script),
                "media keeps a runnable type: {script}"
            );
        }
    }

    #[test]
    fn the_image_runs_as_a_user_and_secrets_stay_out() {
        let dockerfile = planned("Dockerfile");
        let user = dockerfile
            .lines()
            .rfind(|l| l.starts_with("USER "))
            .unwrap();
        assert_eq!(user, "USER 10001:10001");
        assert!(dockerfile.contains("chown 10001:10001 /app/staticfiles /app/media"));
        for file in [".gitignore", ".dockerignore"] {
            let lines: Vec<String> = planned(file).lines().map(String::from).collect();
            for entry in [".env", "backups/", "secrets/*.key"] {
                assert!(lines.iter().any(|l| l == entry), "{file} lacks {entry}");
            }
        }
    }

    #[test]
    fn jenkinsfile_traces_no_secret_and_deploys_by_branch() {
        let jenkins = planned("Jenkinsfile");
        let off = jenkins.find("set +x").expect("tracing is turned off");
        let on = jenkins.find("set -x").expect("and back on");
        for secret in ["DJANGO_SECRET_KEY='%s'", "POSTGRES_PASSWORD='%s'"] {
            let at = jenkins.find(secret).unwrap();
            assert!(off < at && at < on, "{secret} is generated under tracing");
        }
        assert!(!jenkins.contains("echo \"DJANGO_SECRET_KEY"));
        for (branch, env) in [("develop", "staging"), ("master", "prod")] {
            let stage = &jenkins[jenkins.find(&format!("branch '{branch}'")).unwrap()..];
            let stage = &stage[..stage.find("stage(").unwrap_or(stage.len())];
            assert!(
                stage.contains(&format!("sh 'countable deploy {env}'")),
                "{stage}"
            );
            assert!(
                stage.contains("variable: 'COUNTABLE_AGE_KEY_FILE'"),
                "{stage}"
            );
        }
        assert!(jenkins.contains("recipientProviders: [culprits(), developers()"));
    }

    #[test]
    fn new_refuses_non_empty_and_leaves_nothing() {
        let (choices, layout, secrets) = fixed();
        let files = plan(&choices, &layout, &secrets, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shop");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep.txt"), "mine").unwrap();
        assert!(matches!(
            write_new(&target, &files, false),
            Err(ScaffoldError::NotEmpty(_))
        ));
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
        let fresh = dir.path().join("fresh");
        write_new(&fresh, &files, false).unwrap();
        assert!(fresh.join("shop/settings.py").is_file());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no staging dir left"
        );
    }

    #[test]
    fn write_missing_never_overwrites() {
        let (choices, layout, secrets) = fixed();
        let files = plan(&choices, &layout, &secrets, false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM mine\n").unwrap();
        let report = write_missing(dir.path(), &files).unwrap();
        assert_eq!(report.skipped, vec![PathBuf::from("Dockerfile")]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap(),
            "FROM mine\n"
        );
        assert!(
            !dir.path().join("manage.py").exists(),
            "init does not write Django code"
        );
    }
}
