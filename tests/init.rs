//! `countable init` adopts a real `django-admin startproject` project: adds what is
//! missing, never overwrites, prints the settings lines to add; then `up` serves it.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn init_adopts_a_startproject_project_and_it_comes_up() {
    require_images();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("legacy");
    std::fs::create_dir(&root).unwrap();
    // A real Django project, made by Django's own startproject in the stand-in image.
    let made = run(Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/w", root.display()))
        .args([PYTHON_IMAGE, "django-admin", "startproject", "mysite", "/w"]));
    assert_eq!(made.code, 0, "{}", made.stderr);
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
    let listing = |root: &std::path::Path| {
        let mut l: Vec<_> = walk(root);
        l.sort();
        l
    };
    let before = listing(&root);
    let dry = run(countable(&root)
        .args(["init", "--yes", "--dry-run", "--name", &name])
        .args(image_flags(port)))
    .ok();
    assert_eq!(listing(&root), before, "--dry-run wrote something");
    for line in [
        "add compose.yaml",
        "add compose.override.yaml",
        "add .env",
        "keep requirements.txt (it exists)",
        "keep .gitignore (it exists)",
    ] {
        assert!(
            dry.stdout.lines().any(|l| l == line),
            "{line}: {}",
            dry.stdout
        );
    }
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

#[test]
fn init_refuses_a_directory_without_django() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(countable(tmp.path()).args(["init", "--yes"])).fails();
    assert!(r.stderr.contains("has no manage.py"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn init_with_a_bad_name_suggests_init_not_new() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("manage.py"),
        "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"mysite.settings\")\n",
    )
    .unwrap();
    let r = run(countable(tmp.path()).args(["init", "--yes", "--name", "My-Shop"])).fails();
    assert!(
        r.stderr.contains("not a valid project name"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("hint: countable init --name my_shop"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("countable new"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "wrote nothing"
    );
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

/// The shape of a team's project that already has its own compose file: db, redis and
/// app; its own Dockerfile under /code; a settings package; `-r` requirements and
/// DATABASE_URL. init reads all of it, and refuses to shadow the team's compose file.
#[test]
fn init_reads_a_team_project_and_never_shadows_its_compose_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let files: &[(&str, &str)] = &[
        ("manage.py", "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"demo.settings.dev\")\n"),
        ("demo/__init__.py", ""),
        ("demo/wsgi.py", "import os\nos.environ.setdefault(\"DJANGO_SETTINGS_MODULE\", \"demo.settings.dev\")\n"),
        ("demo/settings/__init__.py", ""),
        ("demo/settings/base.py", "import dj_database_url\nDATABASES = {\"default\": dj_database_url.config(conn_max_age=600)}\nWSGI_APPLICATION = \"demo.wsgi.application\"\n"),
        ("demo/settings/dev.py", "from .base import *\nDEBUG = True\n"),
        ("demo/settings/production.py", "from .base import *\nDEBUG = False\n"),
        ("requirements.txt", "-r requirements/production.txt\n"),
        ("requirements/production.txt", "-r base.txt\nuwsgi>=2\n"),
        ("requirements/base.txt", "Django>=5.2,<5.3\npsycopg2-binary\ndj-database-url\nredis\n"),
        ("Dockerfile", "FROM python:3.12-slim\nWORKDIR /code\nCOPY . .\nRUN pip install -r requirements.txt\nEXPOSE 8000\nUSER app\nCMD [\"uwsgi\", \"--http\", \":8000\", \"--module\", \"demo.wsgi\"]\n"),
        ("docker-compose.yml", "services:\n  db:\n    image: postgres:16\n  redis:\n    image: redis:7\n  app:\n    build: .\n    environment:\n      DATABASE_URL: postgres://postgres@db/postgres\n    depends_on: [db, redis]\n"),
    ];
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let before = walk(root);
    let dry = run(countable(root).args(["init", "--yes", "--dry-run", "--name", "demo"])).fails();
    for said in [
        "docker-compose.yml: db → db (postgres:16), redis → kept (redis:7), app → web (build)",
        "Dockerfile (kept, web is built from it): FROM python:3.12-slim, WORKDIR /code, USER app, port 8000, runs `uwsgi --http :8000 --module demo.wsgi`",
        "countable does not adopt an existing compose file yet, and its compose.yaml would shadow yours",
        "hint: move it aside (`git mv docker-compose.yml docker-compose.yml.old`)",
    ] {
        assert!(dry.stderr.contains(said), "{said}: {}", dry.stderr);
    }
    let r = run(countable(root).args(["init", "--yes", "--name", "demo"])).fails();
    assert!(r.stderr.contains("would shadow yours"), "{}", r.stderr);
    assert_eq!(walk(root), before, "a refused init wrote something");

    // Moved aside as told: init reads the rest and writes what fits it.
    std::fs::rename(
        root.join("docker-compose.yml"),
        root.join("docker-compose.yml.old"),
    )
    .unwrap();
    let r = run(countable(root).args(["init", "--yes", "--name", "demo"])).ok();
    assert!(r.stderr.contains("settings: demo.settings.production for deploys (compose.yaml), demo.settings.dev locally (compose.override.yaml)"), "{}", r.stderr);
    assert!(r.stderr.contains("requirements read: requirements.txt, requirements/production.txt, requirements/base.txt"), "{}", r.stderr);
    // psycopg2-binary is a psycopg; gunicorn is missing (the kept Dockerfile runs uwsgi).
    assert!(!r.stderr.contains("lack psycopg"), "{}", r.stderr);
    assert!(
        r.stderr.contains("the requirements lack gunicorn"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("the kept Dockerfile works in /code"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("DATABASES"),
        "DATABASE_URL is read already: {}",
        r.stdout
    );
    assert!(r.stdout.contains("SECURE_PROXY_SSL_HEADER"), "{}", r.stdout);
    let env = std::fs::read_to_string(root.join(".env")).unwrap();
    let password = env
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD="))
        .unwrap()
        .trim_matches('\'')
        .to_string();
    assert!(
        env.contains(&format!(
            "DATABASE_URL='postgres://demo:{password}@db:5432/demo'"
        )),
        "{env}"
    );
    let override_ = std::fs::read_to_string(root.join("compose.override.yaml")).unwrap();
    assert!(
        override_.contains("DJANGO_SETTINGS_MODULE: demo.settings.dev"),
        "{override_}"
    );
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    assert!(
        compose.contains("DJANGO_SETTINGS_MODULE: demo.settings.production"),
        "{compose}"
    );
    assert!(
        r.stderr.contains("Dockerfile does not run entrypoint.sh")
            && r.stderr.contains("--dockerfile countable"),
        "{}",
        r.stderr
    );

    // --dockerfile countable: countable's own beside theirs, which stays as it was;
    // compose builds web from it (as `docker compose config` resolves it).
    let other = tempfile::tempdir().unwrap();
    let root = other.path();
    for (path, text) in files.iter().filter(|(p, _)| *p != "docker-compose.yml") {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
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
        r.stderr.contains(
            "Dockerfile (kept, not used): web is built from countable's Dockerfile.countable"
        ),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("does not run entrypoint.sh"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("works in /code"), "{}", r.stderr);
    let theirs = files.iter().find(|(p, _)| *p == "Dockerfile").unwrap().1;
    assert_eq!(
        std::fs::read_to_string(root.join("Dockerfile")).unwrap(),
        theirs
    );
    assert!(std::fs::read_to_string(root.join("Dockerfile.countable"))
        .unwrap()
        .contains("entrypoint.sh"));
    let config = run(Command::new("docker")
        .current_dir(root)
        .args(["compose", "config", "--format", "json"]))
    .ok();
    let config: serde_json::Value = serde_json::from_str(&config.stdout).unwrap();
    assert_eq!(
        config["services"]["web"]["build"]["dockerfile"], "Dockerfile.countable",
        "{config}"
    );
}
