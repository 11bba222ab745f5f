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
    assert!(
        css.header("Expires").is_some(),
        "nginx's static location answered"
    );
    assert!(css.body.contains("body"), "real CSS came back");

    // Migrations ran at startup.
    let migrations: u64 = s
        .sql("SELECT count(*) FROM django_migrations")
        .parse()
        .unwrap();
    assert!(migrations > 10, "django_migrations has {migrations} rows");

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
    assert!(
        logs.stdout
            .contains("entrypoint: python manage.py migrate --noinput"),
        "{}",
        logs.stdout
    );

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
