//! The daily loop on the real engine: live code (a view and a template edited in a
//! running project are served without `up`; a requirements change rebuilds under
//! `up --watch`), `exec`, `manage`, `shell`, `psql` (local, and read-only on another
//! environment), `export-db` → `import-db` round trips, `open`, and `doctor` on a
//! healthy project and on broken ones.

// Tests observe the engine from outside, with the docker CLI; the seam rule is for the product.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Poll `/` until its body contains `text`; the seconds it took.
fn served_within(s: &Scratch, text: &str, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let r = s.get("/", &[]);
        if r.status == 200 && r.body.contains(text) {
            let took = start.elapsed().as_secs_f64();
            // A restarted server answers before its reloader has taken its first look
            // at the files' times; an edit in that instant would go unseen (as it
            // would for a person too quick for it). Give it that look.
            std::thread::sleep(Duration::from_secs(2));
            return took;
        }
        assert!(
            start.elapsed() < limit,
            "`{text}` was not served within {limit:?}; last answer {} {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn web_image(s: &Scratch) -> String {
    let r = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{.Image}}",
        &format!("{}-web-1", s.name),
    ]));
    r.stdout.trim().to_string()
}

fn write(s: &Scratch, rel: &str, text: &str) {
    let p = s.root().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A doctor report: (exit code, the checks as JSON).
fn doctor(cmd: &mut Command) -> (i32, Vec<serde_json::Value>) {
    let r = run(cmd.args(["doctor", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    assert_eq!(doc["ok"], r.code == 0, "ok agrees with the exit code");
    (r.code, doc["checks"].as_array().unwrap().clone())
}

fn find<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[test]
fn live_code_and_the_daily_commands() {
    let s = Scratch::new("daily");
    run(s.countable().arg("up")).ok();
    assert!(s.get("/", &[]).body.contains("is running"));

    // 1. Live code: a view edited in place is served by the running container.
    let views = std::fs::read_to_string(s.root().join(format!("{}/views.py", s.name))).unwrap();
    write(
        &s,
        &format!("{}/views.py", s.name),
        &views.replace("is running", "is edited live"),
    );
    let view_s = served_within(&s, "is edited live", Duration::from_secs(30));
    // A template: the view renders it, then only the template changes.
    write(
        &s,
        "templates/home.html",
        "<h1>from a template, first</h1>\n",
    );
    write(
        &s,
        &format!("{}/views.py", s.name),
        "from django.shortcuts import render\n\n\ndef home(request):\n    return render(request, \"home.html\")\n",
    );
    served_within(&s, "from a template, first", Duration::from_secs(30));
    write(
        &s,
        "templates/home.html",
        "<h1>from a template, second</h1>\n",
    );
    let template_s = served_within(&s, "from a template, second", Duration::from_secs(30));
    eprintln!("live code: a view in {view_s:.1} s, a template in {template_s:.1} s");
    // Static files still come from nginx.
    let css = s.get("/static/admin/css/base.css", &[]);
    assert_eq!(css.status, 200);
    assert!(css.header("Server").unwrap_or("").starts_with("nginx"));
    // The production files alone run gunicorn: the override is development's only.
    let prod_model = run(Command::new("docker")
        .args([
            "compose",
            "-f",
            "compose.yaml",
            "config",
            "--format",
            "json",
        ])
        .current_dir(s.root()))
    .ok();
    assert!(!prod_model.stdout.contains("runserver"));
    assert!(run(s.countable().args(["up", "--dry-run"]))
        .ok()
        .stdout
        .contains("compose.override.yaml"));

    // 2. exec: web by default, the exit code passes through, stdin works.
    let r = run(s
        .countable()
        .args(["exec", "--", "sh", "-c", "pwd; exit 7"]));
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "/app");
    let r = run_with_stdin(
        s.countable().args(["exec", "--", "python", "-"]),
        b"print(6 * 7)\n",
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "42"), "{}", r.stderr);
    let r = run(s.countable().args(["exec", "db", "--", "pg_isready", "-q"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(s.countable().args(["exec", "worker", "--", "true"])).fails();
    assert!(
        r.stderr.contains("`worker`") && r.stderr.contains("hint:"),
        "{}",
        r.stderr
    );

    // 3. manage and shell.
    let r = run(s.countable().args(["manage", "check"])).ok();
    assert!(r.stdout.contains("no issues"), "{}", r.stdout);
    let r = run(s.countable().args(["manage", "no_such_command"]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Unknown command"), "{}", r.stderr);
    let r = run_with_stdin(
        s.countable().arg("shell"),
        b"from django.contrib.auth.models import Group\nprint('groups', Group.objects.count())\n",
    );
    assert!(r.stdout.contains("groups 0"), "{}\n{}", r.stdout, r.stderr);

    // 4. psql, local: -c, SQL on stdin (writable: the database is the developer's).
    let r = run(s
        .countable()
        .args(["psql", "-c", "select 40 + 2 as answer"]))
    .ok();
    assert!(r.stdout.contains("42"), "{}", r.stdout);
    let r = run_with_stdin(
        s.countable().args(["psql", "--", "-v", "ON_ERROR_STOP=1"]),
        b"CREATE TABLE notes (id serial PRIMARY KEY, body text);\nINSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 1000) g;\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sql("SELECT count(*) FROM notes"), "1000");
    let r = run(s.countable().args(["psql", "-c", "select no_such_column"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no_such_column"), "{}", r.stderr);
    // A script on stdin stops at its first error and says so by its exit code.
    let r = run_with_stdin(
        s.countable().arg("psql"),
        b"SELECT 1 / 0;\nSELECT 'went on after the error';\n",
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!r.stdout.contains("went on"), "{}", r.stdout);

    // psql on another environment (prod: compose project <name>-prod on this engine,
    // found as any environment's db is): read-only unless --write.
    let prod = s.start_prod();
    s.set_environments("environments:\n  prod:\n    branch: master\n");
    let r = run(s
        .countable()
        .args(["psql", "prod", "-c", "CREATE TABLE t (i int)"]));
    assert_eq!(r.code, 1, "a write on prod is refused: {}", r.stderr);
    assert!(r.stderr.contains("read-only transaction"), "{}", r.stderr);
    assert!(r.stderr.contains("--write"), "{}", r.stderr);
    let r = run_with_stdin(
        s.countable().args(["psql", "prod"]),
        b"SELECT 'reads ' || 'work';\n",
    );
    assert!(r.stdout.contains("reads work"), "{}", r.stdout);
    run(s
        .countable()
        .args(["psql", "prod", "--write", "-c", "CREATE TABLE t (i int)"]))
    .ok();
    let r = run(s
        .countable()
        .args(["psql", "prod", "-c", "select count(*) from t", "--", "-At"]))
    .ok();
    assert_eq!(r.stdout.trim(), "0", "{}", r.stdout);
    drop(prod);

    // 5. export-db → import-db, in three formats: identical rows every time.
    let before = s.fingerprint(&s.sql("SELECT current_database()"));
    let dir = tempfile::tempdir().unwrap();
    for (file, extra) in [
        ("data.dump.zst", vec![]),
        ("data.sql.gz", vec!["--format", "plain"]),
        ("data.dump.lrz", vec![]),
    ] {
        let path = dir.path().join(file);
        let path_s = path.to_str().unwrap();
        let r = run(s.countable().args(["export-db", path_s]).args(&extra)).ok();
        assert!(r.stderr.contains("exported"), "{}", r.stderr);
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{file}: the data is private"
        );
        let head = std::fs::read(&path).unwrap();
        let magic: &[u8] = match file {
            f if f.ends_with(".zst") => &[0x28, 0xb5, 0x2f, 0xfd],
            f if f.ends_with(".gz") => &[0x1f, 0x8b],
            _ => b"LRZI",
        };
        assert!(
            head.starts_with(magic),
            "{file} is compressed as its name says"
        );
        // Change the local data, then bring the export back.
        s.sql("DELETE FROM notes WHERE id % 3 = 0");
        assert_ne!(s.fingerprint(&s.sql("SELECT current_database()")), before);
        run(s.countable().args(["import-db", path_s, "--yes"])).ok();
        let db = s.sql("SELECT current_database()");
        assert_eq!(
            s.fingerprint(&db),
            before,
            "{file}: the round trip changed the data"
        );
    }
    // Stdout, and an existing file is never overwritten without --force.
    let out = Command::new(env!("CARGO_BIN_EXE_countable"))
        .args(["export-db", "-", "--format", "plain"])
        .current_dir(s.root())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("COPY public.notes"));
    let zst = dir.path().join("data.dump.zst");
    let r = run(s.countable().args(["export-db", zst.to_str().unwrap()])).fails();
    assert!(r.stderr.contains("--force"), "{}", r.stderr);

    // 6. open: the URL on stdout; a browser only where there is a display.
    let url = format!("http://localhost:{}/", s.port);
    let r = run(s
        .countable()
        .arg("open")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY"))
    .ok();
    assert_eq!(r.stdout.trim(), url);
    let bin = tempfile::tempdir().unwrap();
    let opened = bin.path().join("opened");
    let browser = bin.path().join("xdg-open");
    std::fs::write(
        &browser,
        // Written aside and renamed: the test never reads a file the shell has only
        // created so far.
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {0}.part && mv {0}.part {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    sh(bin.path(), "chmod +x xdg-open");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let r = run(s
        .countable()
        .arg("open")
        .env("DISPLAY", ":0")
        .env("PATH", &path))
    .ok();
    assert_eq!(r.stdout.trim(), url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !opened.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&opened).unwrap(), url);

    // 7. doctor on a healthy project.
    let (code, checks) = doctor(&mut s.countable());
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(find(&checks, "docker engine")["status"], "ok");
    assert_eq!(find(&checks, "docker compose")["status"], "ok");
    assert_eq!(find(&checks, "lrzip")["status"], "ok");
    assert_eq!(find(&checks, "project files")["status"], "ok");
    let port = find(&checks, "port");
    assert_eq!(port["status"], "ok");
    assert!(port["detail"]
        .as_str()
        .unwrap()
        .contains("this project's nginx"));
    assert_eq!(find(&checks, "local database")["status"], "ok");
    let table = run(s.countable().arg("doctor")).ok();
    assert!(table.stdout.starts_with("CHECK"), "{}", table.stdout);

    // 8. up --watch: a change to requirements.txt rebuilds web by itself.
    let image = web_image(&s);
    use std::os::unix::process::CommandExt;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_countable"))
        .args(["up", "--watch"])
        .process_group(0)
        .current_dir(s.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = watch.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("watching for changes") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(300))
        .expect("up --watch started watching");
    // compose's watcher needs a moment to subscribe after it starts.
    std::thread::sleep(Duration::from_secs(5));
    let reqs = std::fs::read_to_string(s.root().join("requirements.txt")).unwrap();
    write(
        &s,
        "requirements.txt",
        &format!("{reqs}# a new requirement would go here\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    while web_image(&s) == image {
        assert!(Instant::now() < deadline, "web was not rebuilt");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Ctrl-C at a terminal signals the whole group: countable and compose's watcher.
    let _ = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", watch.id())])
        .status();
    let ended = watch.wait().unwrap();
    assert!(
        ended.success(),
        "Ctrl-C ends watching, and up with it: {ended:?}"
    );
    let said = reader.join().unwrap();
    assert!(said.contains("web"), "{said}");
    served_within(&s, "from a template, second", Duration::from_secs(120));
}

#[test]
fn doctor_reports_what_is_broken() {
    let s = Scratch::new("doctor");
    // A real second engine, reached over ssh as a deployed environment's is.
    let host = common::hosts::TestHost::start("doctor", 17, &[]);
    let moto = Moto::start(true);
    s.set_environments(&format!(
        "environments:\n  prod:\n    docker_host: {}\n  qa:\n    docker_host: ssh://nobody@127.0.0.1\n  staging:\n    backups: s3://countable/backups/\n    endpoint_url: {}\n    region: us-east-1\n",
        host.docker_host(),
        moto.url()
    ));
    let doctor_cmd = || {
        let mut c = s.countable();
        c.env("PATH", host.path_env()).envs(aws_env());
        c
    };

    // prod's engine answers over ssh; qa's host does not; staging's store refuses
    // the credentials (moto checking keys, none of which it knows).
    let (code, checks) = doctor(&mut doctor_cmd());
    assert_eq!(code, 1);
    let prod = find(&checks, "prod: docker_host");
    assert_eq!(prod["status"], "ok", "{prod}");
    assert!(
        prod["detail"].as_str().unwrap().contains("Docker"),
        "{prod}"
    );
    let qa = find(&checks, "qa: docker_host");
    assert_eq!(qa["status"], "fail", "{qa}");
    assert!(
        qa["detail"]
            .as_str()
            .unwrap()
            .contains("ssh://nobody@127.0.0.1"),
        "{qa}"
    );
    assert!(
        qa["fix"].as_str().unwrap().contains("ssh nobody@127.0.0.1"),
        "{qa}"
    );
    let store = find(&checks, "staging: backups");
    assert_eq!(store["status"], "fail", "{store}");
    assert!(
        store["detail"].as_str().unwrap().contains("credentials"),
        "{store}"
    );
    assert_eq!(find(&checks, "docker engine")["status"], "ok");
    assert_eq!(find(&checks, "port")["status"], "ok");
    assert_eq!(find(&checks, "local database")["status"], "skip");

    // The daemon stopped: that host's engine, as this machine's (DOCKER_HOST) and as
    // prod's docker_host. Each fails with its fix; the other checks still run.
    host.stop_engine();
    let (code, checks) =
        doctor(doctor_cmd().env("DOCKER_HOST", format!("unix://{}", host.sock().display())));
    assert_eq!(code, 1);
    let engine = find(&checks, "docker engine");
    assert_eq!(engine["status"], "fail", "{engine}");
    assert!(
        engine["fix"].as_str().unwrap().contains("DOCKER_HOST"),
        "{engine}"
    );
    assert_eq!(find(&checks, "prod: docker_host")["status"], "fail");
    assert_eq!(find(&checks, "docker compose")["status"], "ok");
    assert_eq!(find(&checks, "lrzip")["status"], "ok");

    // The published port taken by another program.
    let listener = std::net::TcpListener::bind(("0.0.0.0", s.port)).unwrap();
    let (code, checks) = doctor(&mut doctor_cmd());
    assert_eq!(code, 1);
    let port = find(&checks, "port");
    assert_eq!(port["status"], "fail", "{port}");
    assert!(port["fix"].as_str().unwrap().contains("ss -ltnp"), "{port}");
    // The table says the same, each fix under its row, and exits 1.
    let r = run(doctor_cmd().arg("doctor"));
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("port") && l.contains("FAIL")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("fix: stop what listens there"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "nothing but the table: {}", r.stderr);
    drop(listener);

    // All put right: only environments that answer, a store that may be read.
    drop(host);
    let open_moto = Moto::start(false);
    open_moto.aws(&["s3", "mb", "s3://countable"]).ok();
    s.set_environments(&format!(
        "environments:\n  staging:\n    backups: s3://countable/backups/\n    endpoint_url: {}\n    region: us-east-1\n",
        open_moto.url()
    ));
    let (code, checks) = doctor(s.countable().envs(aws_env()));
    assert_eq!(find(&checks, "staging: backups")["status"], "ok");
    assert_eq!(code, 0, "{checks:#?}");

    // A countable.yml that does not parse is a failure, not "no project".
    let yml = s.root().join("countable.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    std::fs::write(&yml, text.replace("port:", "prot:")).unwrap();
    let (code, checks) = doctor(&mut s.countable());
    assert_eq!(code, 1);
    let project = find(&checks, "project");
    assert_eq!(project["status"], "fail", "{project}");
    assert!(
        project["detail"].as_str().unwrap().contains("prot"),
        "{project}"
    );
}
