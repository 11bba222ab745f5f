//! The corpus of real project shapes `countable init` adopts, each made by the test,
//! offline, with nothing of another project committed:
//! - `django-admin startproject` (Django's own generator, in the stand-in image);
//! - `wagtail start` (Wagtail from PyPI's wheels, in countable-test/python-wagtail): a
//!   settings package, SQLite, its own Dockerfile;
//! - a team's project written in the shape teams have: its own docker-compose.yml (db,
//!   redis, app), a Dockerfile with its own entrypoint under /code, `-r` requirements, a
//!   settings package and DATABASE_URL.
//!
//! For each: `init`, the printed settings lines applied as a user would, `up`, then the
//! same proof ([`serves_and_takes_pull_db`]).

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn init_adopts_a_startproject_project_and_it_comes_up() {
    require_images();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("legacy");
    // A real Django project, made by Django's own startproject in the stand-in image.
    generate(
        &root,
        PYTHON_IMAGE,
        &["django-admin", "startproject", "mysite", "/w"],
    );
    std::fs::write(root.join("README.md"), "# our legacy site\n").unwrap();
    std::fs::write(root.join(".gitignore"), "*.pyc\n").unwrap();
    std::fs::write(
        root.join("requirements.txt"),
        "Django>=5.2,<5.3\ngunicorn\npsycopg[binary]\n",
    )
    .unwrap();
    let manage_before = std::fs::read(root.join("manage.py")).unwrap();
    let settings_before = std::fs::read_to_string(root.join("mysite/settings.py")).unwrap();

    let name = unique_name("adopt");
    let port = free_port();
    // --dry-run: every file it would add or keep, the settings chosen; nothing written.
    let dry = init_dry_run(
        &root,
        &name,
        &image_flags(port),
        &[
            "add compose.yaml",
            "add compose.override.yaml",
            "add .env",
            "keep requirements.txt (it exists)",
            "keep .gitignore (it exists)",
        ],
    );
    assert!(
        dry.stderr.contains(
            "settings: mysite.settings for deploys (compose.yaml), mysite.settings locally"
        ),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("requirements read: requirements.txt"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("nothing written (--dry-run)"),
        "{}",
        dry.stderr
    );
    let r = run(countable(&root)
        .args(["init", "--yes", "--name", &name])
        .args(image_flags(port)))
    .ok();
    // Added what was missing, kept what was there.
    for added in [
        "compose.yaml",
        "compose.override.yaml",
        "Dockerfile",
        "entrypoint.sh",
        "nginx/default.conf",
        "countable.yml",
        "Jenkinsfile",
        ".env",
        ".env.example",
        "mysite/health.py",
        "gunicorn.conf.py",
    ] {
        assert!(root.join(added).is_file(), "{added} was not added");
        assert!(
            r.stderr.contains(&format!("added {added}")),
            "{added} not reported: {}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("kept .gitignore"), "{}", r.stderr);
    // Everything countable deploy relies on was added, so no gap is reported.
    assert!(!r.stderr.contains("countable deploy"), "{}", r.stderr);
    assert!(r.stderr.contains("kept requirements.txt"), "{}", r.stderr);
    assert!(
        r.stderr.contains("add `.env` to .gitignore"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(root.join("manage.py")).unwrap(),
        manage_before
    );
    assert_eq!(
        std::fs::read_to_string(root.join("mysite/settings.py")).unwrap(),
        settings_before
    );
    assert_eq!(
        std::fs::read_to_string(root.join("README.md")).unwrap(),
        "# our legacy site\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join(".gitignore")).unwrap(),
        "*.pyc\n"
    );
    // Detected the layout.
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    assert!(compose.contains("DJANGO_SETTINGS_MODULE: mysite.settings"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("\"mysite.wsgi:application\""));
    // The settings lines to add come on stdout.
    assert!(
        r.stdout
            .contains("SECRET_KEY = os.environ[\"DJANGO_SECRET_KEY\"]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("MIDDLEWARE.insert(0, \"mysite.health.HealthCheckMiddleware\")"),
        "{}",
        r.stdout
    );

    // A second init writes nothing.
    let again = run(countable(&root).args(["init", "--yes", "--name", &name])).ok();
    assert!(!again.stderr.contains("added "), "{}", again.stderr);

    // The user pastes the printed lines into their settings, as told; then `up` serves it.
    std::fs::write(
        root.join("mysite/settings.py"),
        format!("{settings_before}\n{}", r.stdout),
    )
    .unwrap();
    let up = run(countable(&root).arg("up"));
    let _cleanup = Cleanup(name.clone(), root.clone());
    assert_eq!(up.code, 0, "{}", up.stderr);
    let login = http_get(port, "/admin/login/", &[]);
    assert_eq!(login.status, 200, "{login:?}");
    let css = http_get(port, "/static/admin/css/base.css", &[]);
    assert_eq!(css.status, 200);
    assert!(css.header("Server").unwrap_or("").starts_with("nginx"));
    serves_and_takes_pull_db(
        &root,
        &name,
        port,
        "db",
        "/static/admin/css/base.css",
        &["db", "web", "nginx"],
    );
}

/// `wagtail start`: a settings package (base, dev, production), SQLite, and a
/// Dockerfile whose build installs packages with apt-get, which cannot run offline; so
/// `--dockerfile countable` builds web from countable's Dockerfile beside theirs.
#[test]
fn init_adopts_a_wagtail_start_project_and_it_comes_up() {
    require_images();
    require_image(WAGTAIL_IMAGE);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    generate(&root, WAGTAIL_IMAGE, &["wagtail", "start", "mysite", "/w"]);
    let theirs = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(theirs.contains("apt-get install"), "{theirs}");

    let name = unique_name("wagtail");
    let port = free_port();
    let flags: Vec<String> = image_flags(port)
        .into_iter()
        .map(|f| {
            if f == PYTHON_IMAGE {
                WAGTAIL_IMAGE.to_string()
            } else {
                f
            }
        })
        .collect();
    let r = run(countable(&root)
        .args([
            "init",
            "--yes",
            "--dockerfile",
            "countable",
            "--name",
            &name,
        ])
        .args(&flags))
    .ok();
    for said in [
        "settings: mysite.settings.production for deploys (compose.yaml), mysite.settings.dev locally (compose.override.yaml)",
        "Dockerfile (kept, not used): web is built from countable's Dockerfile.countable",
        "database: POSTGRES_* in .env",
        "the requirements lack gunicorn",
        "the requirements lack psycopg",
        "add these lines to mysite/settings/base.py",
    ] {
        assert!(r.stderr.contains(said), "{said}: {}", r.stderr);
    }
    // SQLite until now: the printed lines switch it to the db service, and Wagtail's
    // search index needs django.contrib.postgres there.
    for line in [
        "DATABASES = {",
        "INSTALLED_APPS += [\"django.contrib.postgres\"]",
    ] {
        assert!(r.stdout.contains(line), "{line}: {}", r.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(root.join("Dockerfile")).unwrap(),
        theirs
    );

    // As the user would: the printed lines into base.py, the two packages init named
    // into requirements.txt.
    let base = root.join("mysite/settings/base.py");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&base, format!("{text}\n{}", r.stdout)).unwrap();
    let reqs = std::fs::read_to_string(root.join("requirements.txt")).unwrap();
    std::fs::write(
        root.join("requirements.txt"),
        format!("{reqs}gunicorn\npsycopg[binary]\n"),
    )
    .unwrap();
    let up = run(countable(&root).arg("up"));
    let _cleanup = Cleanup(name.clone(), root.clone());
    assert_eq!(up.code, 0, "{}", up.stderr);
    let home = http_get(port, "/", &[]);
    assert!(home.body.contains("Wagtail"), "{home:?}");
    serves_and_takes_pull_db(
        &root,
        &name,
        port,
        "db",
        "/static/wagtailadmin/css/core.css",
        &["db", "web", "nginx"],
    );
}

/// What every adopted shape does once up: `/`, the admin login and a static file answer
/// through nginx; migrations ran; the db publishes no port; a plain `docker compose
/// config` in the project resolves `services`; and `pull-db` restores a backup into it
/// (a dump taken with a marker table, restored after the marker was dropped).
fn serves_and_takes_pull_db(
    root: &Path,
    name: &str,
    port: u16,
    db: &str,
    static_file: &str,
    services: &[&str],
) {
    for path in ["/", "/admin/login/", static_file] {
        let r = http_get(port, path, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            r.header("Server").unwrap_or("").starts_with("nginx"),
            "{path} not through nginx: {r:?}"
        );
    }
    let container = format!("{name}-{db}-1");
    let psql = |sql: &str| {
        run(Command::new("docker").args([
            "exec",
            "-e",
            &format!("SQL={sql}"),
            &container,
            "sh",
            "-c",
            "psql -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"${POSTGRES_DB:-$POSTGRES_USER}\" -Atc \"$SQL\"",
        ]))
        .ok()
        .stdout
        .trim()
        .to_string()
    };
    let applied: u32 = psql("select count(*) from django_migrations")
        .parse()
        .unwrap();
    assert!(applied >= 10, "only {applied} migrations applied");
    let published = run(Command::new("docker").args(["port", &container])).ok();
    assert_eq!(published.stdout.trim(), "", "the db publishes a port");
    let config =
        run(Command::new("docker")
            .current_dir(root)
            .args(["compose", "config", "--services"]))
        .ok();
    for s in services {
        assert!(
            config.stdout.lines().any(|l| l == *s),
            "plain `docker compose config` lacks {s}: {}",
            config.stdout
        );
    }

    psql("create table corpus_marker (n int); insert into corpus_marker values (42)");
    std::fs::create_dir_all(root.join("backups/prod")).unwrap();
    sh(root, &format!("docker exec {container} sh -c 'pg_dump -U \"$POSTGRES_USER\" \"${{POSTGRES_DB:-$POSTGRES_USER}}\"' | gzip > backups/prod/2026-12-01T020000Z.sql.gz"));
    psql("drop table corpus_marker");
    let yml = std::fs::read_to_string(root.join("countable.yml")).unwrap();
    let with_backups = yml.replacen(
        "  prod:\n    branch: master\n",
        "  prod:\n    branch: master\n    backups: backups/prod/\n",
        1,
    );
    assert_ne!(yml, with_backups, "{yml}");
    std::fs::write(root.join("countable.yml"), with_backups).unwrap();
    let pulled = run(countable(root).args(["pull-db", "prod"])).ok();
    assert!(
        pulled.stderr.contains("restored") && pulled.stderr.contains("2026-12-01T020000Z.sql.gz"),
        "{}",
        pulled.stderr
    );
    assert_eq!(psql("select n from corpus_marker"), "42");
    let login = http_get(port, "/admin/login/", &[]);
    assert_eq!(login.status, 200, "after pull-db: {login:?}");
}

struct Cleanup(String, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([
                "compose",
                "-p",
                &self.0,
                "down",
                "--volumes",
                "--remove-orphans",
                "--rmi",
                "local",
            ])
            .current_dir(&self.1)
            .output();
    }
}

/// Every file under `root`, relative, with its size (what a dry run must leave alone).
fn walk(root: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().unwrap().len();
                out.push((p.strip_prefix(root).unwrap().to_path_buf(), len));
            }
        }
    }
    out
}

/// The team's files, in the shape the issue met: compose with db, redis and app (its
/// db password a variable with a default); docker/Dockerfile working in /code with its
/// own entrypoint and a shell-form gunicorn on `$PORT` (8080); `-r` requirements; a
/// settings package reading DATABASE_URL, STATIC_ROOT under BASE_DIR. The db and redis use the
/// stand-in images (redis is a stand-in process on its port).
fn team_project(root: &Path) -> Vec<(&'static str, String)> {
    let files: Vec<(&'static str, String)> = vec![
        ("manage.py", "#!/usr/bin/env python\nimport os\nimport sys\n\nif __name__ == \"__main__\":\n    os.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"demo.settings.dev\")\n    from django.core.management import execute_from_command_line\n    execute_from_command_line(sys.argv)\n".into()),
        ("demo/__init__.py", String::new()),
        ("demo/wsgi.py", "import os\nfrom django.core.wsgi import get_wsgi_application\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"demo.settings.dev\")\napplication = get_wsgi_application()\n".into()),
        ("demo/urls.py", "from django.contrib import admin\nfrom django.http import HttpResponse\nfrom django.urls import path\n\nurlpatterns = [\n    path(\"\", lambda request: HttpResponse(\"demo home\")),\n    path(\"admin/\", admin.site.urls),\n]\n".into()),
        ("demo/settings/__init__.py", String::new()),
        ("demo/settings/base.py", "import os\nfrom pathlib import Path\nfrom urllib.parse import urlparse\n\nBASE_DIR = Path(__file__).resolve().parent.parent.parent\nINSTALLED_APPS = [\n    \"django.contrib.admin\",\n    \"django.contrib.auth\",\n    \"django.contrib.contenttypes\",\n    \"django.contrib.sessions\",\n    \"django.contrib.messages\",\n    \"django.contrib.staticfiles\",\n]\nMIDDLEWARE = [\n    \"django.middleware.security.SecurityMiddleware\",\n    \"django.contrib.sessions.middleware.SessionMiddleware\",\n    \"django.middleware.common.CommonMiddleware\",\n    \"django.middleware.csrf.CsrfViewMiddleware\",\n    \"django.contrib.auth.middleware.AuthenticationMiddleware\",\n    \"django.contrib.messages.middleware.MessageMiddleware\",\n]\nROOT_URLCONF = \"demo.urls\"\nTEMPLATES = [{\n    \"BACKEND\": \"django.template.backends.django.DjangoTemplates\",\n    \"APP_DIRS\": True,\n    \"OPTIONS\": {\"context_processors\": [\n        \"django.template.context_processors.request\",\n        \"django.contrib.auth.context_processors.auth\",\n        \"django.contrib.messages.context_processors.messages\",\n    ]},\n}]\nWSGI_APPLICATION = \"demo.wsgi.application\"\n_db = urlparse(os.environ[\"DATABASE_URL\"])\nDATABASES = {\"default\": {\n    \"ENGINE\": \"django.db.backends.postgresql\",\n    \"NAME\": _db.path.lstrip(\"/\"),\n    \"USER\": _db.username,\n    \"PASSWORD\": _db.password or \"\",\n    \"HOST\": _db.hostname,\n    \"PORT\": _db.port or 5432,\n}}\nSTATIC_URL = \"/static/\"\nSTATIC_ROOT = BASE_DIR / \"static\"\nMEDIA_URL = \"/media/\"\n".into()),
        ("demo/settings/dev.py", "from .base import *\nDEBUG = True\n".into()),
        ("demo/settings/production.py", "from .base import *\nDEBUG = False\n".into()),
        ("requirements.txt", "-r requirements/production.txt\n".into()),
        ("requirements/production.txt", "-r base.txt\ngunicorn\n".into()),
        ("requirements/base.txt", "Django>=5.2,<5.3\npsycopg[binary]\n".into()),
        ("docker-entrypoint.sh", "#!/bin/sh\nset -e\necho \"team entrypoint: starting $*\"\nexec \"$@\"\n".into()),
        ("docker/Dockerfile", format!("FROM {PYTHON_IMAGE}\nENV PYTHONUNBUFFERED=1 PORT=8080\nWORKDIR /code\nCOPY requirements.txt ./\nCOPY requirements ./requirements\nRUN pip install -r requirements.txt\nCOPY . .\nENTRYPOINT [\"/code/docker-entrypoint.sh\"]\nCMD gunicorn demo.wsgi:application --bind 0.0.0.0:$PORT\n")),
        ("docker-compose.yml", format!("services:\n  db:\n    image: {DB_IMAGE}\n    environment:\n      POSTGRES_USER: demo\n      POSTGRES_PASSWORD: ${{DB_PASSWORD:-demo-dev}}\n      POSTGRES_DB: demo\n    ports:\n      - \"5432\"\n  redis:\n    image: {PYTHON_IMAGE}\n    command: python -m http.server 6379\n  app:\n    build:\n      context: .\n      dockerfile: docker/Dockerfile\n    ports:\n      - \"8080\"\n    environment:\n      DATABASE_URL: postgres://demo:demo-dev@db:5432/demo\n    volumes:\n      - .:/code\n    depends_on: [db, redis]\n")),
    ];
    for (path, text) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    sh(root, "chmod 0755 manage.py docker-entrypoint.sh");
    files
}

/// A team's own compose file is adopted, never shadowed: countable's additions go into
/// docker-compose.countable.yml, their files stay byte for byte, their entrypoint and
/// command run inside countable's, redis is kept, and a plain `docker compose` here
/// reads both files (COMPOSE_FILE) as `countable up` does.
#[test]
fn init_adopts_a_team_compose_file_and_it_comes_up() {
    require_images();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("demo");
    std::fs::create_dir(&root).unwrap();
    let files = team_project(&root);
    let name = unique_name("team");
    let port = free_port();
    let flags = ["--nginx-image", NGINX_IMAGE, "--port", &port.to_string()].map(String::from);

    // --dry-run: every file and the mapping; nothing written.
    let dry = init_dry_run(
        &root,
        &name,
        &flags,
        &[
            "add docker-compose.countable.yml",
            "add entrypoint.sh",
            "add countable.yml",
            "keep requirements.txt (it exists)",
        ],
    );
    // web builds from their docker/Dockerfile: countable writes no Dockerfile of its own.
    assert!(!dry.stdout.contains("Dockerfile"), "{}", dry.stdout);
    assert!(
        !dry.stdout.contains("compose.yaml"),
        "a second base file: {}",
        dry.stdout
    );
    for said in [
        &format!("docker-compose.yml: db → db ({DB_IMAGE}), redis → kept ({PYTHON_IMAGE}), app → web (build)"),
        "docker/Dockerfile (kept, web is built from it): FROM countable-test/python, WORKDIR /code, USER root, port 8080, runs `/code/docker-entrypoint.sh gunicorn demo.wsgi:application --bind 0.0.0.0:$PORT`",
        "adopting docker-compose.yml: countable's additions go into docker-compose.countable.yml",
        "app: countable's entrypoint wraps your entrypoint `/code/docker-entrypoint.sh` and the Dockerfile's command `/bin/sh -c gunicorn demo.wsgi:application --bind 0.0.0.0:$PORT`; static files in /code/static (from STATIC_ROOT), media in /code/media, port 8080",
        "settings: demo.settings.production for deploys (countable.yml's settings_module), demo.settings.dev locally (docker-compose.countable.yml)",
        "database: the settings read DATABASE_URL, which app's environment sets",
        "requirements read: requirements.txt, requirements/production.txt, requirements/base.txt",
        "add these lines to demo/settings/base.py",
    ] {
        assert!(dry.stderr.contains(said), "{said}: {}", dry.stderr);
    }
    // Nothing countable deploy relies on is missing (judged on what init would write):
    // the one warning is their live-code mount, which deploys would get too.
    let warnings: Vec<&str> = dry
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", dry.stderr);
    assert!(
        warnings[0]
            .contains("docker-compose.yml mounts the project directory into `app` (`.:/code`)")
            && warnings[0].contains("move that mount into docker-compose.override.yml"),
        "{}",
        dry.stderr
    );

    let r = run(countable(&root)
        .args(["init", "--yes", "--name", &name])
        .args(&flags))
    .ok();
    assert_eq!(r.stderr.matches("warning").count(), 1, "{}", r.stderr);
    for (path, text) in &files {
        assert_eq!(
            &std::fs::read_to_string(root.join(path)).unwrap(),
            text,
            "{path} was changed"
        );
    }
    assert!(!root.join("compose.yaml").exists() && !root.join("compose.override.yaml").exists());
    let yml = std::fs::read_to_string(root.join("countable.yml")).unwrap();
    for want in [
        "compose_files: [docker-compose.yml, docker-compose.countable.yml]",
        "  web: app\n",
        "settings_module: demo.settings.production",
    ] {
        assert!(yml.contains(want), "{want}: {yml}");
    }
    let env = std::fs::read_to_string(root.join(".env")).unwrap();
    for want in [
        "COMPOSE_FILE='docker-compose.yml:docker-compose.countable.yml'",
        "POSTGRES_PASSWORD='demo-dev'",
        "DATABASE_URL='postgres://demo:demo-dev@db:5432/demo'",
    ] {
        assert!(env.contains(want), "{want}: {env}");
    }
    assert!(!r.stdout.contains("DATABASES"), "{}", r.stdout);
    // STATIC_ROOT is theirs (the volume is mounted there); MEDIA_ROOT is missing.
    assert!(!r.stdout.contains("STATIC_ROOT"), "{}", r.stdout);
    assert!(r.stdout.contains("MEDIA_ROOT = os.environ"), "{}", r.stdout);

    let base = root.join("demo/settings/base.py");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&base, format!("{text}\n{}", r.stdout)).unwrap();
    let up = run(countable(&root).arg("up"));
    let _cleanup = Cleanup(name.clone(), root.clone());
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(http_get(port, "/", &[]).body, "demo home");
    // countable's entrypoint migrated under the lock, then ran theirs, then gunicorn.
    let logs = run(Command::new("docker").args(["logs", &format!("{name}-app-1")])).ok();
    let logs = format!("{}{}", logs.stdout, logs.stderr);
    // `$PORT` reached the shell of their CMD unexpanded by compose.
    for said in [
        "entrypoint: migrate (holding the lock countable:migrate)",
        "entrypoint: collectstatic",
        "team entrypoint: starting /bin/sh -c gunicorn demo.wsgi:application --bind 0.0.0.0:$PORT",
        "Listening at: http://0.0.0.0:8080",
    ] {
        assert!(logs.contains(said), "{said}: {logs}");
    }
    let redis = run(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Running}}",
        &format!("{name}-redis-1"),
    ]))
    .ok();
    assert_eq!(redis.stdout.trim(), "true");
    // A plain `docker compose` here: the same project, both files, ports as countable's.
    let config = compose_config(&root, &[]);
    assert_eq!(config["name"], name.as_str());
    assert_eq!(
        config["services"]["app"]["entrypoint"][1],
        "/countable/entrypoint.sh"
    );
    assert!(config["services"]["app"]["ports"].is_null(), "{config}");
    assert!(config["services"]["db"]["ports"].is_null(), "{config}");
    serves_and_takes_pull_db(
        &root,
        &name,
        port,
        "db",
        "/static/admin/css/base.css",
        &["db", "redis", "app", "nginx"],
    );

    // --dockerfile countable on a second copy: web built from countable's file beside
    // theirs, whose entrypoint it runs itself (nothing wrapped).
    let other = tempfile::tempdir().unwrap();
    let root = other.path();
    let files = team_project(root);
    let r = run(countable(root).args([
        "init",
        "--yes",
        "--dockerfile",
        "countable",
        "--name",
        "demo",
    ]))
    .ok();
    assert!(
        !r.stderr.contains("does not run entrypoint.sh"),
        "{}",
        r.stderr
    );
    let theirs = files
        .iter()
        .find(|(p, _)| *p == "docker/Dockerfile")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap(),
        theirs.1
    );
    assert!(!root.join("Dockerfile").exists());
    let config = compose_config(root, &[]);
    let app = &config["services"]["app"];
    assert_eq!(
        app["build"]["dockerfile"], "Dockerfile.countable",
        "{config}"
    );
    assert!(app["entrypoint"].is_null(), "{config}");
    let targets: Vec<&str> = app["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["target"].as_str())
        .collect();
    assert!(targets.contains(&"/app/staticfiles"), "{config}");
}

/// The team's Dockerfile without a compose file of theirs: init writes compose.yaml,
/// and web runs their image with countable's entrypoint wrapped around their entrypoint
/// and command, their WORKDIR, STATIC_ROOT and port.
#[test]
fn init_wraps_a_team_dockerfile_in_its_own_compose_file() {
    require_images();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("demo");
    std::fs::create_dir(&root).unwrap();
    team_project(&root);
    std::fs::remove_file(root.join("docker-compose.yml")).unwrap();
    std::fs::rename(root.join("docker/Dockerfile"), root.join("Dockerfile")).unwrap();
    let name = unique_name("teamdf");
    let port = free_port();
    let r = run(countable(&root)
        .args(["init", "--yes", "--name", &name])
        .args(image_flags(port)))
    .ok();
    assert!(
        r.stderr.contains("web: countable's entrypoint wraps your entrypoint `/code/docker-entrypoint.sh` and the Dockerfile's command `/bin/sh -c gunicorn demo.wsgi:application --bind 0.0.0.0:$PORT`; static files in /code/static (from STATIC_ROOT), media in /code/media, port 8080"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let base = root.join("demo/settings/base.py");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&base, format!("{text}\n{}", r.stdout)).unwrap();
    let up = run(countable(&root).arg("up"));
    let _cleanup = Cleanup(name.clone(), root.clone());
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(http_get(port, "/", &[]).body, "demo home");
    let css = http_get(port, "/static/admin/css/base.css", &[]);
    assert_eq!(css.status, 200, "{css:?}");
    assert!(css.header("Server").unwrap_or("").starts_with("nginx"));
    let logs = run(Command::new("docker").args(["logs", &format!("{name}-web-1")])).ok();
    let logs = format!("{}{}", logs.stdout, logs.stderr);
    // Locally compose.override.yaml runs the development server (live code under
    // /code), through the same entrypoints.
    for said in [
        "entrypoint: migrate (holding the lock countable:migrate)",
        "team entrypoint: starting python manage.py runserver 0.0.0.0:8080",
        "static files copied to '/code/static'",
    ] {
        assert!(logs.contains(said), "{said}: {logs}");
    }
    // What deploys run: compose.yaml alone keeps their Dockerfile's command.
    let config = compose_config(&root, &["-f", "compose.yaml"]);
    let web = &config["services"]["web"];
    assert_eq!(web["entrypoint"][1], "/countable/entrypoint.sh", "{web}");
    assert_eq!(web["entrypoint"][2], "/code/docker-entrypoint.sh", "{web}");
    assert_eq!(web["command"][0], "/bin/sh", "{web}");
    assert!(
        web["command"][2]
            .as_str()
            .unwrap()
            .starts_with("gunicorn demo.wsgi:application --bind 0.0.0.0:$"),
        "{web}"
    );
}

/// `init --dry-run`: it writes nothing and lists each of `lines` (add/keep) on stdout.
fn init_dry_run(root: &Path, name: &str, flags: &[String], lines: &[&str]) -> Run {
    let sorted = |root: &Path| {
        let mut files = walk(root);
        files.sort();
        files
    };
    let before = sorted(root);
    let dry = run(countable(root)
        .args(["init", "--yes", "--dry-run", "--name", name])
        .args(flags))
    .ok();
    assert_eq!(sorted(root), before, "--dry-run wrote something");
    for line in lines {
        assert!(
            dry.stdout.lines().any(|l| l == *line),
            "{line}: {}",
            dry.stdout
        );
    }
    dry
}

/// A plain `docker compose [args] config` in `root`, as JSON (what compose resolves).
fn compose_config(root: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(Command::new("docker")
        .current_dir(root)
        .arg("compose")
        .args(args)
        .args(["config", "--format", "json"]))
    .ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// Make a project in `root` with a public generator in `image` (`/w` is `root`).
fn generate(root: &Path, image: &str, command: &[&str]) {
    std::fs::create_dir(root).unwrap();
    let made = run(Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/w", root.display()))
        .arg(image)
        .args(command));
    assert_eq!(made.code, 0, "{}", made.stderr);
}
