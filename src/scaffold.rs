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

/// Where the Django code is: its package, settings module and WSGI callable.
#[derive(Debug, Clone, PartialEq)]
pub struct DjangoLayout {
    pub package: String,
    pub settings_module: String,
    pub wsgi_app: String,
}

impl DjangoLayout {
    /// The layout `countable new` creates: `<name>/settings.py`, `<name>/wsgi.py`.
    pub fn conventional(project: &ProjectName) -> Self {
        Self {
            package: project.to_string(),
            settings_module: format!("{project}.settings"),
            wsgi_app: format!("{project}.wsgi:application"),
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

/// The `.env` entries: `secrets` for the real file, `None` for `.env.example`.
pub fn env_entries(choices: &Choices, secrets: Option<&Secrets>) -> Vec<(&'static str, String)> {
    let name = choices.project.to_string();
    let secret = |v: &str| secrets.map(|_| v.to_string()).unwrap_or_default();
    vec![
        ("# Settings and secrets of this environment (12-factor). Never commit .env; .env.example lists the keys.", String::new()),
        ("DJANGO_SECRET_KEY", secret(secrets.map(|s| s.secret_key.as_str()).unwrap_or(""))),
        ("DJANGO_DEBUG", if secrets.is_some() { "1" } else { "0" }.into()),
        ("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1".into()),
        ("DJANGO_SECURE_SSL_REDIRECT", "0".into()),
        ("POSTGRES_HOST", "db".into()),
        ("POSTGRES_PORT", "5432".into()),
        ("POSTGRES_DB", name.clone()),
        ("POSTGRES_USER", name),
        ("POSTGRES_PASSWORD", secret(secrets.map(|s| s.db_password.as_str()).unwrap_or(""))),
        ("# Error reporting: leave empty to disable.", String::new()),
        ("SENTRY_DSN", String::new()),
    ]
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
    let ctx = context! {
        project => choices.project.as_str(),
        package => layout.package,
        settings_module => layout.settings_module,
        wsgi_app => layout.wsgi_app,
        db_image => choices.db_image(),
        python_image => choices.python_image(),
        nginx_image => choices.nginx_image(),
        port => choices.port,
        url => format!("http://localhost:{}/", choices.port),
        web_service => "web",
        version => env!("CARGO_PKG_VERSION"),
    };
    let mut files = Vec::new();
    for (template, out, executable, django) in TEMPLATE_FILES {
        if *django && !with_django {
            continue;
        }
        let source = template_text(template)?;
        let contents = env
            .render_str(&source, &ctx)
            .with_context(|| format!("rendering template {template}"))?;
        files.push(PlannedFile {
            path: PathBuf::from(out.replace("{package}", &layout.package.replace('.', "/"))),
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
    files.push(PlannedFile {
        path: ".env".into(),
        contents: envfile::render(&env_entries(choices, Some(secrets))),
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
        let used: Vec<&str> = TEMPLATE_FILES.iter().map(|t| t.0).collect();
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
