//! Adopting an existing Django project (`countable init`): find its settings module and
//! WSGI callable, and work out which settings lines the user must add by hand because
//! countable never edits their code.

use std::path::{Path, PathBuf};

use crate::scaffold::{DjangoLayout, ScaffoldError};

pub mod compose;
pub mod dockerfile;
pub mod overlay;
pub mod requirements;
pub mod web;

/// The first string literal after `key` in `text` (`"DJANGO_SETTINGS_MODULE", "x.settings"`).
fn string_after(text: &str, key: &str) -> Option<String> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start_matches(['"', '\'']);
    let start = rest.find(['"', '\''])?;
    let quote = rest[start..].chars().next()?;
    let body = &rest[start + 1..];
    let end = body.find(quote)?;
    Some(body[..end].to_string())
}

/// The file that holds a settings module: `a/b.py` or `a/b/__init__.py`.
pub fn module_file(root: &Path, module: &str) -> Option<PathBuf> {
    let rel = module.replace('.', "/");
    [
        root.join(format!("{rel}.py")),
        root.join(&rel).join("__init__.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Settings module names that are meant for deploys, best first.
const DEPLOY_NAMES: &[&str] = &["production", "prod", "live"];
/// Settings module names that are meant for local development, best first.
const LOCAL_NAMES: &[&str] = &["dev", "development", "local"];

/// The modules of the settings package `named` belongs to (`x.settings.dev` →
/// `x.settings.base`, `x.settings.dev`, `x.settings.production`, …), or of `named`
/// itself when it is a package; empty for a single settings module.
pub fn settings_package(root: &Path, named: &str) -> Vec<String> {
    let package = match module_file(root, named) {
        Some(f) if f.ends_with("__init__.py") => named.to_string(),
        _ => match named.rsplit_once('.') {
            Some((parent, _)) if parent.rsplit('.').next() == Some("settings") => {
                parent.to_string()
            }
            _ => return Vec::new(),
        },
    };
    let dir = root.join(package.replace('.', "/"));
    if !dir.join("__init__.py").is_file() {
        return Vec::new();
    }
    let mut modules: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.strip_suffix(".py")?;
            (stem != "__init__").then(|| format!("{package}.{stem}"))
        })
        .collect();
    modules.sort();
    modules.insert(0, package);
    modules
}

/// The first of `modules` whose last part is one of `names` (in the order of `names`).
fn pick(modules: &[String], names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        modules
            .iter()
            .find(|m| m.rsplit('.').next() == Some(n))
            .cloned()
    })
}

/// Every settings file's text: the package's modules, or the one module.
pub fn settings_text(root: &Path, named: &str) -> String {
    let mut modules = settings_package(root, named);
    if modules.is_empty() {
        modules.push(named.to_string());
    }
    modules
        .iter()
        .filter_map(|m| module_file(root, m))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The settings web runs locally, as Python reads them: a package's `base` module, then
/// the local module (so its assignments win); a single module alone.
pub fn running_settings_text(root: &Path, layout: &DjangoLayout) -> String {
    let local = &layout.local_settings_module;
    let base = settings_package(root, local)
        .into_iter()
        .find(|m| m.rsplit('.').next() == Some("base") && m != local);
    base.iter()
        .chain(std::iter::once(local))
        .filter_map(|m| module_file(root, m))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Does this settings text take the database from `DATABASE_URL`
/// (dj-database-url, django-environ's `env.db()`, or by hand)?
pub fn reads_database_url(text: &str) -> bool {
    ["DATABASE_URL", "dj_database_url", "env.db(", "env.db_url("]
        .iter()
        .any(|k| text.contains(k))
}

/// Detect the layout of the Django project at `root`; `settings` names the deploy
/// settings module instead of detection. A settings package (`base`, `dev`,
/// `production`) gives development its dev module and deploys their production one;
/// else the module wsgi.py sets is the deploy one when it differs from manage.py's.
pub fn detect(root: &Path, settings: Option<&str>) -> Result<DjangoLayout, ScaffoldError> {
    let manage = root.join("manage.py");
    let manage_text = std::fs::read_to_string(&manage)
        .map_err(|_| ScaffoldError::NotDjango(root.to_path_buf()))?;
    let from_manage = string_after(&manage_text, "DJANGO_SETTINGS_MODULE");
    let named = settings
        .map(str::to_string)
        .or_else(|| from_manage.clone())
        .ok_or_else(|| ScaffoldError::NoSettings(root.to_path_buf()))?;
    let package = named.split('.').next().unwrap_or(&named).to_string();
    let modules = settings_package(root, &named);
    let from_wsgi = ["wsgi.py", "asgi.py"].iter().find_map(|f| {
        let text = std::fs::read_to_string(root.join(package.replace('.', "/")).join(f)).ok()?;
        string_after(&text, "DJANGO_SETTINGS_MODULE")
    });
    let settings_module = match settings {
        Some(s) => s.to_string(),
        None => pick(&modules, DEPLOY_NAMES)
            .or(from_wsgi.filter(|w| module_file(root, w).is_some()))
            .unwrap_or_else(|| named.clone()),
    };
    // A package's staging module, unless --settings names the module for deploys.
    let staging_settings_module = settings
        .is_none()
        .then(|| pick(&modules, &["staging", "stage"]))
        .flatten()
        .unwrap_or_else(|| settings_module.clone());
    let local_settings_module = pick(&modules, LOCAL_NAMES)
        .or(from_manage.filter(|m| module_file(root, m).is_some()))
        .unwrap_or_else(|| settings_module.clone());
    let text = settings_text(root, &settings_module);
    let wsgi_app = string_after(&text, "WSGI_APPLICATION")
        .map(|dotted| match dotted.rsplit_once('.') {
            Some((module, attr)) => format!("{module}:{attr}"),
            None => dotted,
        })
        .unwrap_or_else(|| format!("{package}.wsgi:application"));
    Ok(DjangoLayout {
        package,
        settings_module,
        local_settings_module,
        staging_settings_module,
        wsgi_app,
        database_url: reads_database_url(&text),
    })
}

/// The settings file the printed lines belong in: a package's `base` module when
/// development and deploys run different modules of it (both import it), else the
/// deploy module.
pub fn advice_file(root: &Path, layout: &DjangoLayout) -> String {
    let modules = settings_package(root, &layout.settings_module);
    let base = modules
        .iter()
        .find(|m| m.rsplit('.').next() == Some("base"))
        .filter(|_| layout.local_settings_module != layout.settings_module);
    let module = base.unwrap_or(&layout.settings_module);
    module_file(root, module)
        .and_then(|p| p.strip_prefix(root).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| module.clone())
}

/// Lines the user must add to their settings for the conventional setup to work,
/// judged from what the settings file already mentions.
pub fn settings_advice(root: &Path, layout: &DjangoLayout) -> Vec<String> {
    let text = settings_text(root, &layout.settings_module);
    let mut lines = Vec::new();
    if !text.contains("import os") {
        lines.push("import os".to_string());
    }
    if !text.contains("DJANGO_SECRET_KEY") {
        lines.push("SECRET_KEY = os.environ[\"DJANGO_SECRET_KEY\"]".into());
    }
    if !text.contains("DJANGO_DEBUG") {
        lines.push("DEBUG = os.environ.get(\"DJANGO_DEBUG\", \"0\") == \"1\"".into());
    }
    if !text.contains("DJANGO_ALLOWED_HOSTS") {
        lines.push(
            "ALLOWED_HOSTS = os.environ.get(\"DJANGO_ALLOWED_HOSTS\", \"localhost\").split(\",\")"
                .into(),
        );
    }
    if !text.contains("POSTGRES_") && !reads_database_url(&text) {
        lines.push(
            "DATABASES = {\"default\": {\"ENGINE\": \"django.db.backends.postgresql\", \"NAME\": os.environ[\"POSTGRES_DB\"], \"USER\": os.environ[\"POSTGRES_USER\"], \"PASSWORD\": os.environ[\"POSTGRES_PASSWORD\"], \"HOST\": os.environ.get(\"POSTGRES_HOST\", \"db\"), \"PORT\": os.environ.get(\"POSTGRES_PORT\", \"5432\"), \"CONN_MAX_AGE\": int(os.environ.get(\"DJANGO_CONN_MAX_AGE\") or 60), \"CONN_HEALTH_CHECKS\": True}}".into(),
        );
    }
    if !text.contains("DJANGO_STATIC_ROOT") {
        lines.push("STATIC_ROOT = os.environ.get(\"DJANGO_STATIC_ROOT\", \"staticfiles\")".into());
    }
    if !text.contains("DJANGO_MEDIA_ROOT") {
        lines.push("MEDIA_ROOT = os.environ.get(\"DJANGO_MEDIA_ROOT\", \"media\")".into());
    }
    if !text.contains("SECURE_PROXY_SSL_HEADER") {
        lines.push(
            "SECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\")  # nginx sets it"
                .into(),
        );
    }
    if !text.contains("DJANGO_SECURE_SSL_REDIRECT") {
        lines.push(
            "SECURE_SSL_REDIRECT = os.environ.get(\"DJANGO_SECURE_SSL_REDIRECT\", \"0\") == \"1\""
                .into(),
        );
    }
    if !text.contains("SECURE_REDIRECT_EXEMPT") {
        lines.push(
            "SECURE_REDIRECT_EXEMPT = [r\"^healthz$\"]  # the healthcheck calls /healthz over plain HTTP"
                .into(),
        );
    }
    if !text.contains("SECURE_HSTS_SECONDS") {
        lines.push(
            "SECURE_HSTS_SECONDS = int(os.environ.get(\"DJANGO_SECURE_HSTS_SECONDS\") or (31536000 if globals().get(\"SECURE_SSL_REDIRECT\") else 0))"
                .into(),
        );
    }
    if !text.contains("DJANGO_CSRF_TRUSTED_ORIGINS") {
        lines.push(
            "CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get(\"DJANGO_CSRF_TRUSTED_ORIGINS\", \"\").split(\",\") if o]"
                .into(),
        );
    }
    if !text.contains("STORAGES") && !text.contains("STATICFILES_STORAGE") {
        lines.push(
            "STORAGES = {\"default\": {\"BACKEND\": \"django.core.files.storage.FileSystemStorage\"}, \"staticfiles\": {\"BACKEND\": \"django.contrib.staticfiles.storage.ManifestStaticFilesStorage\"}}  # hashed names: nginx caches them for a year"
                .into(),
        );
    }
    // Wagtail's search index uses PostgreSQL's own fields there (its system check
    // stops every manage.py command without the app).
    if text.contains("wagtail") && !text.contains("django.contrib.postgres") {
        lines.push(
            "INSTALLED_APPS += [\"django.contrib.postgres\"]  # Wagtail's search index on PostgreSQL"
                .into(),
        );
    }
    let health = format!("{}.health.HealthCheckMiddleware", layout.package);
    if !text.contains(&health) {
        lines.push(format!(
            "MIDDLEWARE.insert(0, \"{health}\")  # /healthz for the container healthcheck"
        ));
    }
    lines
}

/// What the project's own files (kept by `init`) lack for the contract `countable deploy`
/// relies on: the entrypoint that migrates under the lock, the nginx include that
/// switches releases, `/healthz`. One sentence per gap; empty when none.
/// `files` is init's plan: a file not on disk yet is judged by what init would write.
pub fn contract_gaps(
    root: &Path,
    layout: &DjangoLayout,
    choices: &crate::scaffold::Choices,
    files: &[crate::scaffold::PlannedFile],
) -> Vec<String> {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|_| {
            files
                .iter()
                .find(|f| f.path == Path::new(rel))
                .map(|f| f.contents.clone())
                .unwrap_or_default()
        })
    };
    let dockerfile = &choices.dockerfile;
    let compose = match &choices.adopt {
        Some(_) => overlay::FILE,
        None => "compose.yaml",
    };
    let mut gaps = Vec::new();
    // An adopted web with the team's Dockerfile gets the entrypoint from the override.
    let wrapped = choices
        .adopt
        .as_ref()
        .map(|a| &a.run)
        .or(choices.web.as_ref())
        .is_some_and(|w| w.entrypoint.is_some());
    if !wrapped && !read(dockerfile).contains("entrypoint.sh") {
        gaps.push(format!("{dockerfile} does not run entrypoint.sh: migrations would not run at start under the lock `countable deploy` relies on (or `countable init --dockerfile countable` writes countable's own beside it)"));
    }
    if !read(compose).contains("/etc/nginx/countable") {
        gaps.push(format!("{compose} mounts no `nginx-live` volume at /etc/nginx/countable: `countable deploy` could not switch releases without downtime"));
    }
    let nginx_conf = choices
        .adopt
        .as_ref()
        .map(|a| a.nginx_conf.as_str())
        .unwrap_or("nginx/default.conf");
    if !read(nginx_conf).contains("include /etc/nginx/countable/*.conf;") {
        gaps.push(format!("{nginx_conf} lacks `include /etc/nginx/countable/*.conf;` after `set $app ...;`: `countable deploy` could not switch releases without downtime"));
    }
    let health = format!("{}/health.py", layout.package.replace('.', "/"));
    if !read(&health).contains("unapplied_migrations") {
        gaps.push(format!("{health} is not countable's: /healthz must answer 503 while a migration is unapplied, or a deploy's health gate passes too early"));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(manage: &str, settings: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manage.py"), manage).unwrap();
        std::fs::create_dir(dir.path().join("mysite")).unwrap();
        std::fs::write(dir.path().join("mysite/settings.py"), settings).unwrap();
        dir
    }

    #[test]
    fn detects_startproject_layout() {
        let dir = project(
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n",
            "WSGI_APPLICATION = 'mysite.wsgi.application'\n",
        );
        let l = detect(dir.path(), None).unwrap();
        assert_eq!(l.package, "mysite");
        assert_eq!(l.settings_module, "mysite.settings");
        assert_eq!(l.wsgi_app, "mysite.wsgi:application");
        assert_eq!(l.local_settings_module, "mysite.settings");
        assert!(!l.database_url);
        assert!(settings_package(dir.path(), "mysite.settings").is_empty());
        let advice = settings_advice(dir.path(), &l);
        assert!(advice
            .iter()
            .any(|a| a.starts_with("SECRET_KEY = os.environ")));
        assert!(advice
            .iter()
            .any(|a| a.contains("mysite.health.HealthCheckMiddleware")));
    }

    #[test]
    fn contract_gaps_name_what_kept_files_lack() {
        let dir = project(
            "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n",
            "",
        );
        let layout = detect(dir.path(), None).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM python\nCMD [\"gunicorn\"]\n",
        )
        .unwrap();
        let choices =
            crate::scaffold::Choices::defaults(crate::names::ProjectName::parse("mysite").unwrap());
        let gaps = contract_gaps(dir.path(), &layout, &choices, &[]);
        assert_eq!(gaps.len(), 4, "{gaps:?}");
        assert!(gaps[0].starts_with("Dockerfile does not run entrypoint.sh"));
        let files = crate::scaffold::plan(
            &crate::scaffold::Choices::defaults(
                crate::names::ProjectName::parse("mysite").unwrap(),
            ),
            &layout,
            &crate::scaffold::Secrets::random(),
            false,
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("Dockerfile")).unwrap();
        crate::scaffold::write_missing(dir.path(), &files).unwrap();
        assert_eq!(
            contract_gaps(dir.path(), &layout, &choices, &[]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_settings_package_gives_dev_locally_and_production_to_deploys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("manage.py"),
            "os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"demo.settings.dev\")\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("demo/settings")).unwrap();
        for (f, text) in [
            ("demo/__init__.py", ""),
            ("demo/settings/__init__.py", ""),
            ("demo/settings/base.py", "import dj_database_url\nDATABASES = {'default': dj_database_url.config(conn_max_age=600)}\nWSGI_APPLICATION = 'demo.wsgi.application'\nSTATIC_ROOT = '/code/static'\n"),
            ("demo/settings/dev.py", "from .base import *\nDEBUG = True\n"),
            ("demo/settings/production.py", "from .base import *\nDEBUG = False\n"),
            ("demo/wsgi.py", "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'demo.settings.dev')\n"),
        ] {
            std::fs::write(root.join(f), text).unwrap();
        }
        let l = detect(root, None).unwrap();
        assert_eq!(l.settings_module, "demo.settings.production");
        assert_eq!(l.local_settings_module, "demo.settings.dev");
        assert_eq!(l.staging_settings_module, "demo.settings.production");
        assert_eq!(l.wsgi_app, "demo.wsgi:application");
        assert!(l.database_url);
        assert_eq!(
            settings_package(root, "demo.settings.dev"),
            [
                "demo.settings",
                "demo.settings.base",
                "demo.settings.dev",
                "demo.settings.production"
            ]
        );
        let advice = settings_advice(root, &l);
        assert_eq!(advice_file(root, &l), "demo/settings/base.py");
        assert!(
            !advice.iter().any(|a| a.starts_with("DATABASES")),
            "{advice:?}"
        );
        assert!(advice
            .iter()
            .any(|a| a.starts_with("SECURE_PROXY_SSL_HEADER")));
        assert!(!advice.iter().any(|a| a.contains("django.contrib.postgres")));
        // A Wagtail project moving to PostgreSQL needs django.contrib.postgres.
        let base = root.join("demo/settings/base.py");
        let text = std::fs::read_to_string(&base).unwrap();
        std::fs::write(&base, format!("{text}INSTALLED_APPS = ['wagtail.admin']\n")).unwrap();
        assert!(settings_advice(root, &l)
            .iter()
            .any(|a| a.starts_with("INSTALLED_APPS += [\"django.contrib.postgres\"]")));
        // --settings names the deploy module; development keeps the dev one.
        let l = detect(root, Some("demo.settings.base")).unwrap();
        assert_eq!(l.settings_module, "demo.settings.base");
        assert_eq!(l.local_settings_module, "demo.settings.dev");
        // The plan: .env gets DATABASE_URL, the override the dev module.
        let name = crate::names::ProjectName::parse("demo").unwrap();
        let files = crate::scaffold::plan(
            &crate::scaffold::Choices::defaults(name),
            &detect(root, None).unwrap(),
            &crate::scaffold::Secrets {
                secret_key: "k".into(),
                db_password: "pw".into(),
            },
            false,
        )
        .unwrap();
        let file = |p: &str| {
            files
                .iter()
                .find(|f| f.path == Path::new(p))
                .unwrap()
                .contents
                .clone()
        };
        assert!(
            file(".env").contains("DATABASE_URL='postgres://demo:pw@db:5432/demo'"),
            "{}",
            file(".env")
        );
        assert!(file("compose.override.yaml").contains("DJANGO_SETTINGS_MODULE: demo.settings.dev"));
        assert!(file("compose.yaml").contains("DJANGO_SETTINGS_MODULE: demo.settings.production"));
        // countable.yml names each environment's module; a staging module goes to staging.
        std::fs::write(
            root.join("demo/settings/staging.py"),
            "from .production import *\n",
        )
        .unwrap();
        let l = detect(root, None).unwrap();
        assert_eq!(l.staging_settings_module, "demo.settings.staging");
        let name = crate::names::ProjectName::parse("demo").unwrap();
        let files = crate::scaffold::plan(
            &crate::scaffold::Choices::defaults(name),
            &l,
            &crate::scaffold::Secrets::random(),
            false,
        )
        .unwrap();
        let yml = &files
            .iter()
            .find(|f| f.path == Path::new("countable.yml"))
            .unwrap()
            .contents;
        let config = crate::project::Config::parse(yml, Path::new("countable.yml")).unwrap();
        let module = |env: &str| {
            config.environments[&crate::names::EnvName::parse(env).unwrap()]
                .settings_module
                .clone()
        };
        assert_eq!(module("prod").as_deref(), Some("demo.settings.production"));
        assert_eq!(module("staging").as_deref(), Some("demo.settings.staging"));
    }

    #[test]
    fn refuses_without_manage_py() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            detect(dir.path(), None),
            Err(ScaffoldError::NotDjango(_))
        ));
        std::fs::write(dir.path().join("manage.py"), "print('hi')\n").unwrap();
        assert!(matches!(
            detect(dir.path(), None),
            Err(ScaffoldError::NoSettings(_))
        ));
    }
}
