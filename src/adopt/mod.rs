//! Adopting an existing Django project (`countable init`): find its settings module and
//! WSGI callable, and work out which settings lines the user must add by hand because
//! countable never edits their code.

use std::path::{Path, PathBuf};

use crate::scaffold::{DjangoLayout, ScaffoldError};

pub mod requirements;

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

/// Detect the layout of the Django project at `root`; `settings` overrides detection.
pub fn detect(root: &Path, settings: Option<&str>) -> Result<DjangoLayout, ScaffoldError> {
    let manage = root.join("manage.py");
    let manage_text = std::fs::read_to_string(&manage)
        .map_err(|_| ScaffoldError::NotDjango(root.to_path_buf()))?;
    let settings_module = match settings {
        Some(s) => s.to_string(),
        None => string_after(&manage_text, "DJANGO_SETTINGS_MODULE")
            .ok_or_else(|| ScaffoldError::NoSettings(root.to_path_buf()))?,
    };
    let package = settings_module
        .split('.')
        .next()
        .unwrap_or(&settings_module)
        .to_string();
    let settings_text = module_file(root, &settings_module)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let wsgi_app = string_after(&settings_text, "WSGI_APPLICATION")
        .map(|dotted| match dotted.rsplit_once('.') {
            Some((module, attr)) => format!("{module}:{attr}"),
            None => dotted,
        })
        .unwrap_or_else(|| format!("{package}.wsgi:application"));
    Ok(DjangoLayout {
        package,
        settings_module,
        wsgi_app,
    })
}

/// Lines the user must add to their settings for the conventional setup to work,
/// judged from what the settings file already mentions.
pub fn settings_advice(root: &Path, layout: &DjangoLayout) -> Vec<String> {
    let text = module_file(root, &layout.settings_module)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
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
    if !text.contains("POSTGRES_") && !text.contains("DATABASE_URL") {
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
pub fn contract_gaps(root: &Path, layout: &DjangoLayout) -> Vec<String> {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    let mut gaps = Vec::new();
    if !read("Dockerfile").contains("entrypoint.sh") {
        gaps.push("Dockerfile does not run entrypoint.sh: migrations would not run at start under the lock `countable deploy` relies on".to_string());
    }
    if !read("compose.yaml").contains("/etc/nginx/countable") {
        gaps.push("compose.yaml mounts no `nginx-live` volume at /etc/nginx/countable: `countable deploy` could not switch releases without downtime".into());
    }
    if !read("nginx/default.conf").contains("include /etc/nginx/countable/*.conf;") {
        gaps.push("nginx/default.conf lacks `include /etc/nginx/countable/*.conf;` after `set $app ...;`: `countable deploy` could not switch releases without downtime".into());
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
        let gaps = contract_gaps(dir.path(), &layout);
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
        assert_eq!(contract_gaps(dir.path(), &layout), Vec::<String>::new());
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
