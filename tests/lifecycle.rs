//! `new` → `up` → HTTP through nginx → `down`/`up` on the real engine with the stand-in
//! images. One project per test function (builds are the slow part).

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::*;

#[test]
fn new_then_up_serves_django_through_nginx() {
    let s = Scratch::new("life");
    let up = run(s.countable().arg("up")).ok();
    assert_eq!(
        up.stdout.trim(),
        format!("http://localhost:{}/", s.port),
        "up prints the URL on stdout"
    );

    // The home page, through nginx to gunicorn.
    let home = s.get("/", &[]);
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.body.contains(&format!("{} is running", s.name)));

    // Static files: collected at startup, served by nginx itself from the volume.
    let css = s.get("/static/admin/css/base.css", &[]);
    assert_eq!(css.status, 200, "{:?}", css.headers);
    assert!(css.header("Server").unwrap_or("").starts_with("nginx"));
    assert!(css
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("text/css"));
    assert_eq!(
        css.header("Cache-Control"),
        Some("public, max-age=3600"),
        "nginx's static location answered (an unhashed name: a short cache)"
    );
    assert!(css.body.contains("body"), "real CSS came back");

    // Migrations ran at startup.
    let migrations: u64 = s
        .sql("SELECT count(*) FROM django_migrations")
        .parse()
        .unwrap();
    assert!(migrations > 10, "django_migrations has {migrations} rows");
    let logs = run(s.countable().args(["logs", "web"])).ok();
    assert!(
        logs.stdout
            .contains("Applying contenttypes.0001_initial... OK"),
        "Django's own migrate lines are in the log: {}",
        logs.stdout
    );

    // The db publishes no port; nginx is the only published one.
    let status = run(s.countable().args(["status", "--json"])).ok();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for svc in doc["services"].as_array().unwrap() {
        let ports = svc["ports"].as_array().unwrap();
        match svc["service"].as_str().unwrap() {
            "nginx" => assert_eq!(ports.len(), 1),
            other => assert!(ports.is_empty(), "{other} publishes {ports:?}"),
        }
        assert_eq!(svc["state"], "running");
    }
    let db_id = s.compose(&["ps", "-q", "db"]).stdout.trim().to_string();
    let bindings = run(std::process::Command::new("docker").args([
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}",
        &db_id,
    ]));
    assert_eq!(bindings.stdout.trim(), "{}", "db port bindings");

    // The generated secret (random, from a wide alphabet) reached the container verbatim.
    let want = countable::envfile::read_value(&s.root().join(".env"), "DJANGO_SECRET_KEY")
        .unwrap()
        .unwrap();
    let got = s.compose(&[
        "exec",
        "-T",
        "web",
        "python",
        "-c",
        "import os,sys; sys.stdout.write(os.environ['DJANGO_SECRET_KEY'])",
    ]);
    assert_eq!(got.stdout, want);

    // `up` again: nothing is recreated, and it is quick.
    let before = containers(&s);
    let t = Instant::now();
    run(s.countable().arg("up")).ok();
    let second = t.elapsed();
    assert_eq!(
        containers(&s),
        before,
        "a second up recreated or restarted containers"
    );
    assert!(second.as_secs() < 60, "second up took {second:?}");
    eprintln!("second `up` took {second:?}");

    // down keeps the data; up brings it back.
    s.sql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')");
    run(s.countable().arg("down")).ok();
    assert!(containers(&s).is_empty());
    run(s.countable().arg("up")).ok();
    assert_eq!(s.sql("SELECT v FROM kept"), "still here");

    // With HTTPS redirect on, a plain-http request forging X-Forwarded-Proto: https is
    // still redirected: nginx overwrote the header with the scheme it saw.
    let env_path = s.root().join(".env");
    let env = std::fs::read_to_string(&env_path).unwrap();
    std::fs::write(
        &env_path,
        env.replace(
            "DJANGO_SECURE_SSL_REDIRECT='0'",
            "DJANGO_SECURE_SSL_REDIRECT='1'",
        ),
    )
    .unwrap();
    run(s.countable().arg("up")).ok();
    let forged = s.get(
        "/",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
    );
    assert_eq!(forged.status, 301, "{forged:?}");
    assert!(
        forged.header("Location").unwrap().starts_with("https://"),
        "{forged:?}"
    );
    let healthz = s.get("/healthz", &[]);
    assert_eq!(healthz.status, 200, "healthz is exempt from the redirect");

    // Logs of one service come on stdout.
    let logs = run(s.countable().args(["logs", "web", "--tail", "200"])).ok();
    for line in [
        "entrypoint: migrate (holding the lock countable:migrate)",
        "entrypoint: collectstatic",
    ] {
        assert!(logs.stdout.contains(line), "{line}: {}", logs.stdout);
    }

    // down --volumes without a terminal needs --yes; with it the data is gone.
    run(s.countable().args(["down", "--volumes"])).fails();
    run(s.countable().args(["down", "--volumes", "--yes"])).ok();
    let vols = run(std::process::Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.name),
    ]));
    assert!(
        vols.stdout.trim().is_empty(),
        "volumes left: {}",
        vols.stdout
    );
}

#[test]
fn a_failed_migration_fails_up_and_shows_why() {
    let s = Scratch::new("badmig");
    let app = s.root().join("broken");
    std::fs::create_dir_all(app.join("migrations")).unwrap();
    std::fs::write(app.join("__init__.py"), "").unwrap();
    std::fs::write(app.join("migrations/__init__.py"), "").unwrap();
    std::fs::write(
        app.join("migrations/0001_initial.py"),
        "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    operations = [migrations.RunSQL(\"SELECT 1/0\")]\n",
    )
    .unwrap();
    let settings = s.root().join(&s.name).join("settings.py");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace(
            "\"django.contrib.staticfiles\",",
            "\"django.contrib.staticfiles\",\n    \"broken\",",
        ),
    )
    .unwrap();
    // Keep the crash loop short for the test.
    let compose = s.root().join("compose.yaml");
    let text = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(
        &compose,
        text.replace("start_period: 60s", "start_period: 5s")
            .replace(
                "retries: 40\n      start_period: 5s",
                "retries: 3\n      start_period: 5s",
            ),
    )
    .unwrap();

    let up = run(s.countable().arg("up")).fails();
    assert!(up.stderr.contains("could not bring"), "{}", up.stderr);
    assert!(
        up.stderr.contains("division by zero"),
        "the migration error is shown: {}",
        up.stderr
    );
    assert!(up.stderr.contains("countable logs web"), "{}", up.stderr);
    let logs = run(s.countable().args(["logs", "web"])).ok();
    assert!(logs.stdout.contains("division by zero"), "{}", logs.stdout);
}

/// The volumes of compose project `name`.
fn project_volumes(name: &str) -> String {
    run(std::process::Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={name}"),
    ]))
    .stdout
    .trim()
    .to_string()
}

#[test]
fn global_yes_confirms_down_volumes() {
    let s = Scratch::new("yesdown");
    // Containers and volumes created, nothing started (quick).
    let r = s.compose(&["create", "db"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!project_volumes(&s.name).is_empty(), "no volume to remove");
    run(s.countable().args(["--yes", "down", "--volumes"])).ok();
    assert_eq!(project_volumes(&s.name), "", "volumes left");
    // The same flag after the subcommand.
    let r = s.compose(&["create", "db"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    run(s.countable().args(["down", "--volumes", "-y"])).ok();
    assert_eq!(project_volumes(&s.name), "", "volumes left");
}

/// A project made by `countable new` with the stand-in images, except the db image
/// `db_image` when given; removed like any scratch project.
fn scratch_with(prefix: &str, port: u16, db_image: Option<&str>) -> Scratch {
    require_images();
    let tmp = tempfile::tempdir().unwrap();
    let name = unique_name(prefix);
    let mut flags = image_flags(port);
    if let Some(image) = db_image {
        let at = flags.iter().position(|f| f == "--db-image").unwrap();
        flags[at + 1] = image.to_string();
    }
    run(countable(tmp.path())
        .args(["new", &name, "--yes"])
        .args(flags))
    .ok();
    Scratch { tmp, name, port }
}

#[test]
fn up_reports_an_image_that_cannot_be_pulled() {
    // Nothing can be pulled on this machine: a missing image is exactly that case.
    let s = scratch_with(
        "nopull",
        free_port(),
        Some("countable-test/no-such-image:1"),
    );
    let r = run(s.countable().arg("up")).fails();
    assert!(
        r.stderr
            .contains("error: compose could not pull the image of `db`"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("no running"), "{}", r.stderr);
    let hint = &r.stderr[r.stderr.find("\n\nhint: ").unwrap()..];
    assert!(hint.contains("--db-image"), "{}", r.stderr);
    assert!(hint.contains("docker login"), "{}", r.stderr);
    assert!(!hint.contains("countable up"), "{}", r.stderr);
}

#[test]
fn up_reports_a_port_in_use() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = scratch_with("portbusy", port, None);
    let r = run(s.countable().arg("up")).fails();
    assert!(
        r.stderr.contains(&format!(
            "error: compose could not start `nginx`: port {port} is already in use"
        )),
        "{}",
        r.stderr
    );
    let hint = &r.stderr[r.stderr.find("\n\nhint: ").unwrap()..];
    assert!(hint.contains(&format!("port {port}")), "{}", r.stderr);
    assert!(hint.contains("`port:` in countable.yml"), "{}", r.stderr);
    drop(listener);
}

/// The web container's user id, and that of its PID 1 (gunicorn, exec'd by the entrypoint).
fn web_uids(s: &Scratch) -> String {
    let r = s.compose(&[
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "id -u; awk '/^Uid:/ {print $2}' /proc/1/status",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.trim().replace('\n', " ")
}

/// Poll `/healthz` through nginx until gunicorn answers (not a 502 from nginx).
fn healthz_once_up(s: &Scratch) -> Http {
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let r = s.get("/healthz", &[]);
        if !matches!(r.status, 0 | 502 | 504) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn production_contract_user_headers_lock_and_healthz() {
    let s = Scratch::new("prodc");
    // The production shape: gunicorn from the image, without the development override.
    std::fs::remove_file(s.root().join("compose.override.yaml")).unwrap();
    run(s.countable().arg("up")).ok();

    // gunicorn runs as the image's user, and the media volume is its own to write.
    assert_eq!(web_uids(&s), "10001 10001");
    let put = s.compose(&[
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "printf '<script>alert(1)</script>' > /app/media/evil.html && printf '<svg onload=alert(1)/>' > /app/media/evil.svg && printf 'PNG' > /app/media/pic.png",
    ]);
    assert_eq!(put.code, 0, "{}", put.stderr);

    // nginx: no version, security headers on its own files and on Django's pages.
    let home = s.get("/", &[]);
    assert_eq!(home.status, 200);
    assert_eq!(home.header("Server"), Some("nginx"), "server_tokens off");
    for r in [&home, &s.get("/static/admin/css/base.css", &[])] {
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{r:?}");
        assert_eq!(
            r.header("Content-Security-Policy"),
            Some("frame-ancestors 'self'"),
            "{r:?}"
        );
        assert_eq!(r.header("Referrer-Policy"), Some("same-origin"), "{r:?}");
    }
    // Uploads are files: nosniff, and a page or script type only as a download.
    for (path, want) in [
        ("/media/evil.html", "application/octet-stream"),
        ("/media/evil.svg", "application/octet-stream"),
        ("/media/pic.png", "image/png"),
    ] {
        let r = s.get(path, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.header("Content-Type"), Some(want), "{path}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // A hashed static name (ManifestStaticFilesStorage) is cached for a year.
    let hashed = s.compose(&[
        "exec",
        "-T",
        "web",
        "python",
        "-c",
        "import json; print(json.load(open('/app/staticfiles/staticfiles.json'))['paths']['admin/css/base.css'])",
    ]);
    assert_eq!(hashed.code, 0, "{}", hashed.stderr);
    let name = hashed.stdout.trim();
    assert_ne!(name, "admin/css/base.css");
    let css = s.get(&format!("/static/{name}"), &[]);
    assert_eq!(css.status, 200, "{name}");
    assert_eq!(
        css.header("Cache-Control"),
        Some("public, max-age=31536000, immutable")
    );

    // Two containers never migrate at once: while another session holds the lock, a
    // new web container's entrypoint waits for it; when that session dies (killed, as
    // a crashed container's would), the lock goes with it and the entrypoint goes on.
    let mut holder = std::process::Command::new("docker")
        .args(["compose", "-p", &s.name, "exec", "-T", "db", "sh", "-c"])
        .arg("psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"SELECT pg_advisory_lock(hashtext('countable:migrate')), pg_sleep(300)\"")
        .current_dir(s.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let advisory = |granted: bool| {
        s.sql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = {granted}"
        ))
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        while !ok() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    wait_for("the test session taking the lock", &|| {
        advisory(true) == "1"
    });
    let second = std::process::Command::new("docker")
        .args(["compose", "-p", &s.name, "run", "--rm", "-T", "web", "true"])
        .current_dir(s.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the entrypoint waiting for the lock", &|| {
        advisory(false) == "1"
    });
    assert_eq!(
        s.sql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND NOT l.granted AND a.query LIKE '%pg_advisory_lock%'"),
        "1",
        "the waiter is the entrypoint's pg_advisory_lock"
    );
    s.sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted");
    let second = second.wait_with_output().unwrap();
    let _ = holder.wait();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        out.contains(
            "entrypoint: waiting for the lock countable:migrate (another container is migrating)"
        ),
        "{out}"
    );
    assert!(
        out.contains("entrypoint: migrate (holding the lock countable:migrate)"),
        "{out}"
    );
    assert_eq!(advisory(true), "0", "the entrypoint released the lock");

    // New code with a migration, started without migrating: /healthz says 503 and
    // why; after migrate, 200. An echo view shows what Django got from nginx.
    let app = s.root().join("later");
    std::fs::create_dir_all(app.join("migrations")).unwrap();
    std::fs::write(app.join("__init__.py"), "").unwrap();
    std::fs::write(app.join("migrations/__init__.py"), "").unwrap();
    std::fs::write(
        app.join("migrations/0001_initial.py"),
        "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    operations = [migrations.RunSQL(\"CREATE TABLE later_t (id int)\", \"DROP TABLE later_t\")]\n",
    )
    .unwrap();
    std::fs::write(
        app.join("views.py"),
        "from django.http import JsonResponse\n\ndef echo(request):\n    return JsonResponse({\"proto\": request.META.get(\"HTTP_X_FORWARDED_PROTO\"), \"for\": request.META.get(\"HTTP_X_FORWARDED_FOR\"), \"scheme\": request.META[\"wsgi.url_scheme\"], \"secure\": request.is_secure()})\n",
    )
    .unwrap();
    let pkg = s.root().join(&s.name);
    let edit = |file: &str, from: &str, to: &str| {
        let path = pkg.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    };
    edit(
        "settings.py",
        "\"django.contrib.staticfiles\",",
        "\"django.contrib.staticfiles\",\n    \"later\",",
    );
    edit(
        "urls.py",
        "urlpatterns = [",
        "import later.views\n\nurlpatterns = [\n    path(\"echo/\", later.views.echo),",
    );
    let env_path = s.root().join(".env");
    let env = std::fs::read_to_string(&env_path).unwrap();
    assert!(env.contains("DJANGO_MIGRATE='1'"));
    std::fs::write(
        &env_path,
        env.replace("DJANGO_MIGRATE='1'", "DJANGO_MIGRATE='0'"),
    )
    .unwrap();
    let r = s.compose(&["up", "--detach", "--no-deps", "--build", "web"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pending = healthz_once_up(&s);
    assert_eq!(pending.status, 503, "{pending:?}");
    // (the body may come chunked: look for the text in it)
    assert!(
        pending
            .body
            .contains("unapplied migrations: later.0001_initial\n"),
        "{pending:?}"
    );

    let echo = s.get(
        "/echo/",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "6.6.6.6"),
        ],
    );
    assert_eq!(echo.status, 200, "{echo:?}");
    let seen: serde_json::Value = serde_json::from_str(&echo.body).unwrap();
    assert_eq!(
        seen["proto"], "http",
        "nginx overwrote the client's value: {seen}"
    );
    assert_eq!(seen["scheme"], "http", "{seen}");
    assert_eq!(seen["secure"], false, "{seen}");
    assert!(!seen["for"].as_str().unwrap().contains("6.6.6.6"), "{seen}");

    let migrate = s.compose(&[
        "exec",
        "-T",
        "web",
        "python",
        "manage.py",
        "migrate",
        "--noinput",
    ]);
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    assert!(
        migrate.stdout.contains("Applying later.0001_initial... OK"),
        "{}",
        migrate.stdout
    );
    let ok = s.get("/healthz", &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("ok\n"), "{ok:?}");
    assert_eq!(web_uids(&s), "10001 10001");
}
