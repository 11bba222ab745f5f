//! `countable deploy`, `releases` and `rollback` against a real second Docker engine
//! reached over ssh:// (tests/hosts: a dockerd and an sshd in a network namespace), so
//! the image really travels. One story, in order, on one project: each chapter builds
//! on the state the one before left, as production does. `harness = false`: the host
//! is brought up once and taken down at the end.
//!
//! `cargo test --test deploy -- NAME` runs the chapters up to and including NAME.

#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hosts::TestHost;
use common::story::Chapter;
use common::*;

/// The port nginx publishes inside the host's namespace.
const PORT: u16 = 8080;

struct Story {
    host: TestHost,
    tmp: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    /// Every secret value: none may appear in any output.
    secret_values: Vec<String>,
    /// Everything countable printed, to check for secrets at the end.
    printed: String,
    /// `secrets set prod …` arguments, to give staging the same values.
    secret_args: Vec<String>,
}

impl Story {
    fn countable(&self, args: &[&str]) -> Command {
        let mut c = countable(&self.root);
        c.args(args)
            .env("PATH", self.host.path_env())
            .env("COUNTABLE_AGE_KEY_FILE", &self.key)
            .env("HOME", self.tmp.path().join("home"))
            .env("DOCKER_CONFIG", docker_config());
        c
    }

    fn run(&mut self, args: &[&str]) -> Run {
        let r = run(&mut self.countable(args));
        self.printed.push_str(&r.stdout);
        self.printed.push_str(&r.stderr);
        r
    }

    fn git(&self, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.name=Jenkins", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(&self.root)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", msg]);
    }

    fn get(&self, path: &str) -> Http {
        http_get_at(
            self.host.addr(),
            PORT,
            path,
            &[("X-Forwarded-Proto", "https")],
        )
    }

    fn home_page(&self) -> String {
        self.get("/").body
    }

    /// SQL in the environment's db container, on the host's engine.
    fn sql(&self, query: &str) -> String {
        let r = self.host.docker(&[
            "exec",
            "shop-prod-db-1",
            "sh",
            "-c",
            "psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"$1\"",
            "sh",
            query,
        ]);
        assert_eq!(r.code, 0, "psql on the host: {}", r.stderr);
        r.stdout.trim().to_string()
    }

    fn releases(&mut self) -> Vec<serde_json::Value> {
        let r = self.run(&["releases", "prod", "--json"]).ok();
        serde_json::from_str(&r.stdout).unwrap()
    }
}

fn views(text: &str) -> String {
    format!("from django.http import HttpResponse\n\n\ndef home(request):\n    return HttpResponse(\"{text}\")\n")
}

fn catalog_migration(n: &str, deps: &str, op: &str) -> String {
    format!("from django.db import migrations, models\n\n\ndef forward(apps, schema_editor):\n    pass\n\n\nclass Migration(migrations.Migration):\n    dependencies = [{deps}]\n    operations = [{op}]\n").replace("NAME", n)
}

const CREATE_ITEM: &str = "migrations.CreateModel(name=\"Item\", fields=[(\"id\", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name=\"ID\")), (\"name\", models.CharField(max_length=50))])";

fn setup() -> Story {
    require_images();
    let host = TestHost::start("deploy", 3, &[DB_IMAGE, NGINX_IMAGE]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    run(countable(tmp.path())
        .args(["new", "shop", "--yes"])
        .args(image_flags(PORT)))
    .ok();
    let root = tmp.path().join("shop");
    let key = tmp.path().join("jenkins-age.key");
    let mut s = Story {
        host,
        root,
        key,
        tmp,
        secret_values: vec![],
        printed: String::new(),
        secret_args: vec![],
    };
    let key_s = s.key.display().to_string();
    s.run(&["secrets", "keygen", "--output", &key_s, "--name", "jenkins"])
        .ok();
    // The production secrets: the local .env's keys, fresh values.
    let local = std::fs::read_to_string(s.root.join(".env")).unwrap();
    let mut args: Vec<String> = vec!["secrets".into(), "set".into(), "prod".into()];
    for line in local
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let k = line.split('=').next().unwrap();
        let v = match k {
            "DJANGO_SECRET_KEY" => "prod-secret-$ecret=#'\"-K3y-0123456789abcdefghij".to_string(),
            "POSTGRES_PASSWORD" => "Pr0dPassw0rdXYZ123".to_string(),
            "DJANGO_DEBUG" => "0".into(),
            "DJANGO_ALLOWED_HOSTS" => format!("{},shop.test,localhost,127.0.0.1", s.host.addr()),
            _ => {
                let v = line[k.len() + 1..].trim_matches('\'').to_string();
                args.push(format!("{k}={v}"));
                continue;
            }
        };
        if k == "DJANGO_SECRET_KEY" || k == "POSTGRES_PASSWORD" {
            s.secret_values.push(v.clone());
        }
        args.push(format!("{k}={v}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    s.run(&refs).ok();
    s.secret_args = args[3..].to_vec();
    std::fs::create_dir_all(s.root.join("backups")).unwrap();
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    let env = format!(
        "  prod:\n    branch: master\n    docker_host: {}\n    backups: backups/\n    url: http://{}:{PORT}\n    domains: [shop.test]\n    keep_releases: 3\n    release_root: /srv/countable-deploy-test\n",
        s.host.docker_host(),
        s.host.addr()
    );
    let yml = yml.replace("  prod:\n    branch: master\n", &env);
    std::fs::write(s.root.join("countable.yml"), yml).unwrap();
    s.git(&["init", "-q", "-b", "master"]);
    s.git(&["config", "user.name", "Jenkins"]);
    s.commit("first");
    s
}

fn first_deploy_ships_the_image_migrates_and_answers(s: &mut Story) {
    assert!(
        !s.host
            .docker(&["image", "ls", "-q", "shop-web"])
            .stdout
            .contains(char::is_alphanumeric),
        "the host starts without the web image"
    );
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "deploy failed:\n{}", r.stderr);
    assert!(
        r.stderr.contains("shipped shop-web:prod-1-"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout.trim(), "1");
    assert!(
        s.home_page().contains("shop is running"),
        "{}",
        s.home_page()
    );
    assert_eq!(s.get("/healthz").status, 200);
    let rel = &s.releases()[0];
    assert_eq!(rel["outcome"], "succeeded");
    let key = rel["backup_key"]
        .as_str()
        .expect("a backup key in the ledger");
    assert!(s.root.join("backups").join(key).is_file(), "{key}");
    assert!(rel["migrations_after"].as_array().unwrap().len() > 5);
    // The release directory on the host, read through the host's engine: the .env
    // is exactly the decrypted secrets, mode 0600. (`--reveal` prints them: on
    // purpose, so its output is not in what the last chapter checks.)
    let shown = run(&mut s.countable(&["secrets", "show", "prod", "--reveal"]))
        .ok()
        .stdout;
    let on_host = s.host.docker(&[
        "run", "--rm", "--entrypoint", "sh", "-v", "/srv/countable-deploy-test:/r", NGINX_IMAGE,
        "-c", "stat -c %a /r/shop-prod/current/.env && cat /r/shop-prod/current/.env && readlink /r/shop-prod/current",
    ]);
    assert_eq!(on_host.code, 0, "{}", on_host.stderr);
    let (mode, rest) = on_host.stdout.split_once('\n').unwrap();
    assert_eq!(mode, "600");
    assert!(rest.ends_with("releases/1\n"), "{rest}");
    let env_text = rest.trim_end_matches("releases/1\n");
    let parse = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains('=') && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        parse(env_text),
        parse(&shown),
        "the host's .env is the decrypted secrets"
    );
    // The containers get the values verbatim.
    let web_env = s
        .host
        .docker(&["exec", "shop-prod-web-1", "printenv", "DJANGO_SECRET_KEY"]);
    assert_eq!(web_env.stdout.trim_end(), s.secret_values[0]);
    let sentry = s
        .host
        .docker(&["exec", "shop-prod-web-1", "printenv", "SENTRY_ENVIRONMENT"]);
    assert_eq!(sentry.stdout.trim(), "prod");
}

fn psql_on_prod_reads_and_writes_only_with_write(s: &mut Story) {
    // Over ssh, on the deployed db: a write is refused without --write.
    let r = s.run(&["psql", "prod", "-c", "CREATE TABLE psql_probe (i int)"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("read-only transaction"), "{}", r.stderr);
    let r = s.run(&[
        "psql",
        "prod",
        "-c",
        "SELECT count(*) FROM django_migrations",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sql("SELECT to_regclass('psql_probe') IS NULL"), "t");
    let r = s.run(&[
        "psql",
        "prod",
        "--write",
        "-c",
        "CREATE TABLE psql_probe (i int)",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sql("SELECT to_regclass('psql_probe') IS NULL"), "f");
    s.run(&["psql", "prod", "--write", "-c", "DROP TABLE psql_probe"])
        .ok();
}

fn second_deploy_with_a_migration_drops_no_request(s: &mut Story) {
    s.write("shop/views.py", &views("shop v2"));
    s.write("catalog/__init__.py", "");
    s.write("catalog/migrations/__init__.py", "");
    s.write("catalog/models.py", "from django.db import models\n\n\nclass Item(models.Model):\n    name = models.CharField(max_length=50)\n");
    s.write(
        "catalog/migrations/0001_initial.py",
        &catalog_migration("0001", "", CREATE_ITEM),
    );
    let settings = std::fs::read_to_string(s.root.join("shop/settings.py")).unwrap();
    s.write(
        "shop/settings.py",
        &settings.replace(
            "    \"django.contrib.staticfiles\",\n",
            "    \"django.contrib.staticfiles\",\n    \"catalog\",\n",
        ),
    );
    s.commit("v2: catalog");
    // A bounded request loop through nginx for the whole deploy.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let addr = s.host.addr().to_string();
    let looper = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let r = std::panic::catch_unwind(|| http_get_at(&addr, PORT, "/", &[]));
                match r {
                    Ok(h) if h.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let r = s.run(&["deploy", "prod"]);
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    assert_eq!(r.code, 0, "deploy failed:\n{}", r.stderr);
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("    request loop during the deploy: {ok} answered, {bad} failed");
    assert!(ok > 50, "the loop ran ({ok})");
    assert_eq!(bad, 0, "no request may fail during a deploy");
    assert!(s.home_page().contains("shop v2"));
    assert_eq!(s.sql("SELECT count(*) FROM catalog_item"), "0");
    let rel = &s.releases()[0];
    assert_eq!(rel["release"], 2);
    assert!(rel["migrations_after"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "catalog.0001_initial"));
}

fn failed_migration_keeps_the_old_release_serving(s: &mut Story) {
    s.write("shop/views.py", &views("shop v3-broken"));
    s.write(
        "catalog/migrations/0002_broken.py",
        &catalog_migration(
            "0002",
            "(\"catalog\", \"0001_initial\")",
            "migrations.RunSQL(\"SELECT 1/0\")",
        ),
    );
    s.commit("v3: a migration that fails");
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(
        r.code, 1,
        "a failed migration fails the deploy:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("stopped") || r.stderr.contains("unhealthy"),
        "{}",
        r.stderr
    );
    assert!(
        s.home_page().contains("shop v2"),
        "the old code still answers"
    );
    let rel = &s.releases()[0];
    assert_eq!(
        (rel["release"].as_u64(), rel["outcome"].as_str()),
        (Some(3), Some("failed"))
    );
    // The failed candidate is gone; one web container serves.
    let webs = s.host.docker(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.compose.service=web",
    ]);
    assert_eq!(webs.stdout.lines().count(), 1, "{}", webs.stdout);
    // Fix forward: drop the broken migration.
    std::fs::remove_file(s.root.join("catalog/migrations/0002_broken.py")).unwrap();
    s.write("shop/views.py", &views("shop v4"));
    s.commit("v4: fixed");
    s.run(&["deploy", "prod"]).ok();
    assert!(s.home_page().contains("shop v4"));
}

fn rollback_code_only(s: &mut Story) {
    // Live: 4 (catalog.0001). The succeeded release before it: 2, same migrations.
    let dry = s.run(&["rollback", "prod", "--dry-run"]).ok();
    assert!(dry.stdout.contains("code only"), "{}", dry.stdout);
    let r = s.run(&["rollback", "prod"]).ok();
    assert_eq!(r.stdout.trim(), "5");
    assert!(s.home_page().contains("shop v2"));
    let rel = &s.releases()[0];
    assert_eq!(
        (rel["kind"].as_str(), rel["rollback_to"].as_u64()),
        (Some("rollback"), Some(2))
    );
}

fn rollback_reverses_a_reversible_migration(s: &mut Story) {
    // Back to release 1: it knows no catalog, so catalog.0001 is reversed first.
    let r = s.run(&["rollback", "prod", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("migrate catalog zero"), "{}", r.stderr);
    assert!(s.home_page().contains("shop is running"));
    assert_eq!(s.sql("SELECT to_regclass('catalog_item') IS NULL"), "t");
    assert_eq!(
        s.sql("SELECT count(*) FROM django_migrations WHERE app = 'catalog'"),
        "0"
    );
}

fn rollback_refuses_an_irreversible_migration_then_restores_the_backup(s: &mut Story) {
    s.write(
        "catalog/migrations/0002_fill.py",
        &catalog_migration(
            "0002",
            "(\"catalog\", \"0001_initial\")",
            "migrations.RunPython(forward)",
        ),
    );
    s.write("shop/views.py", &views("shop v7"));
    s.commit("v7: an irreversible data migration");
    s.run(&["deploy", "prod"]).ok();
    assert!(s.home_page().contains("shop v7"));
    s.sql("INSERT INTO catalog_item (name) VALUES ('written after the backup')");
    let r = s.run(&["rollback", "prod", "6"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot be reversed: catalog.0002_fill"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--restore-db"), "{}", r.stderr);
    assert!(s.home_page().contains("shop v7"), "nothing changed");
    let r = s.run(&["rollback", "prod", "6", "--restore-db"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("are lost"),
        "it says data time is lost: {}",
        r.stderr
    );
    assert!(s.home_page().contains("shop is running"));
    assert_eq!(
        s.sql("SELECT to_regclass('catalog_item') IS NULL"),
        "t",
        "{}",
        r.stderr
    );
}

fn concurrent_deploys_and_a_killed_one(s: &mut Story) {
    s.write("shop/views.py", &views("shop v9"));
    s.commit("v9");
    let mut first = s.countable(&["deploy", "prod"]);
    let mut first = first
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it holds the lock (its session names itself in pg_stat_activity).
    let until = Instant::now() + Duration::from_secs(120);
    let holder = loop {
        let h = s.sql("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'countable deploy%'");
        if !h.is_empty() {
            break h;
        }
        assert!(
            Instant::now() < until,
            "the first deploy never took the lock"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(holder.contains("prod release 9 by Jenkins"), "{holder}");
    let second = s.run(&["deploy", "prod"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains(
            "another deploy, rollback or sync of prod holds the lock: countable deploy prod release 9 by Jenkins"
        ),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("--lock-wait"), "{}", second.stderr);
    // kill -9 of the holder releases the lock by itself.
    let _ = Command::new("kill")
        .args(["-9", &first.id().to_string()])
        .status();
    let _ = first.wait();
    let until = Instant::now() + Duration::from_secs(30);
    while !s.sql("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'countable deploy%'").is_empty() {
        assert!(Instant::now() < until, "the killed deploy's lock was not released");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = s.run(&["deploy", "prod", "--lock-wait", "30"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s.home_page().contains("shop v9"));
    let list = s.releases();
    let killed = list.iter().find(|r| r["release"] == 9).unwrap();
    assert_eq!(
        killed["outcome"], "failed",
        "an abandoned release is recorded as failed"
    );
}

fn a_noop_redeploy_ships_nothing(s: &mut Story) {
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("(0 bytes shipped)"),
        "the same commit again ships nothing: {}",
        r.stderr
    );
    assert_eq!(s.releases()[0]["bytes_shipped"], 0);
}

fn prune_keeps_n_releases(s: &mut Story) {
    let images = s.host.docker(&[
        "image",
        "ls",
        "-q",
        "--filter",
        "label=org.countable.project=shop",
    ]);
    let n = images
        .stdout
        .lines()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        n <= 4,
        "keep_releases 3 (+ the previous one when older): {n} images:\n{}",
        images.stdout
    );
    assert!(n >= 2);
    let dirs = s.host.docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "ls",
        "-v",
        "/srv/countable-deploy-test:/r",
        NGINX_IMAGE,
        "/r/shop-prod/releases",
    ]);
    assert!(dirs.stdout.lines().count() <= 5, "{}", dirs.stdout);
}

/// A host whose Docker disk is nearly full refuses the deploy before the backup and
/// with the serving release untouched: below the 256 MiB reserve before a byte is sent;
/// above it, when the image's new layers (40 MiB here) would cross it, while they stream.
fn a_host_without_room_refuses_before_anything_changes(s: &mut Story) {
    s.write("shop/views.py", &views("shop roomless"));
    // 40 MiB of new layer (incompressible or not: a layer travels as a plain tar).
    let blob: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(s.root.join("shop/blob.bin"), blob).unwrap();
    s.commit("a change that must wait for disk");
    let before = s.home_page();
    let root = s.host.docker(&["info", "-f", "{{.DockerRootDir}}"]);
    let root = PathBuf::from(root.stdout.trim());
    let free = |p: &Path| -> u64 {
        let r = run(Command::new("df").args(["-B1", "--output=avail"]).arg(p));
        r.stdout.lines().nth(1).unwrap().trim().parse().unwrap()
    };
    let dir = s.root.join("backups");
    let backups = move || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let backups_before = backups();
    let fill = root.join("countable-test-fill");
    for (leave, says) in [
        (
            128u64 << 20,
            "needs some room there, and 256.0 MiB must stay free",
        ),
        ((256 + 20) << 20, "the release's image needs more than"),
    ] {
        let size = free(&root).saturating_sub(leave);
        let r = run(Command::new("fallocate")
            .args(["-l", &size.to_string()])
            .arg(&fill));
        assert_eq!(r.code, 0, "fallocate: {}", r.stderr);
        let r = s.run(&["deploy", "prod"]);
        std::fs::remove_file(&fill).unwrap();
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(
                "not enough disk to deploy prod, so nothing was changed: the host's Docker disk"
            ),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(says), "{says}: {}", r.stderr);
        assert!(r.stderr.contains("hint:"), "{}", r.stderr);
        assert_eq!(backups(), backups_before, "no backup was taken");
        assert_eq!(s.home_page(), before, "the serving release is untouched");
        let rel = &s.releases()[0];
        assert_eq!(rel["outcome"], "failed");
        assert!(
            rel["error"].as_str().unwrap().contains("not enough disk"),
            "{rel}"
        );
        let tag = rel["image"].as_str().unwrap();
        let on_host = s.host.docker(&["image", "inspect", tag]);
        assert_ne!(on_host.code, 0, "{tag} never reached the host");
    }
    // The blob goes again; the next deploy ships the change alone.
    std::fs::remove_file(s.root.join("shop/blob.bin")).unwrap();
    s.commit("without the blob");
}

/// The `sh` steps of the Jenkinsfile for `branch`, in order, as Jenkins would run
/// them: the stages whose `when { branch … }` matches (or that have none), then
/// `post`'s `always`. Groovy reads `\\` in a triple-quoted string as one backslash.
fn jenkins_steps(jenkinsfile: &str, branch: &str) -> Vec<(String, String)> {
    let mut steps = Vec::new();
    let (mut stage, mut when): (String, Option<String>) = (String::new(), None);
    let mut lines = jenkinsfile.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("stage('") {
            stage = rest.split('\'').next().unwrap().to_string();
            when = None;
        } else if t.starts_with("post {") {
            stage = "post".into();
            when = None;
        } else if let Some(rest) = t.strip_prefix("when { branch '") {
            when = Some(rest.split('\'').next().unwrap().to_string());
        }
        let script = if t == "sh '''" {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim() == "'''" {
                    break;
                }
                body.push_str(l.trim_start());
                body.push('\n');
            }
            Some(body)
        } else {
            t.strip_prefix("sh '")
                .and_then(|r| r.strip_suffix('\''))
                .map(String::from)
        };
        if let Some(sc) = script {
            if when.as_deref().is_none_or(|b| b == branch) {
                steps.push((stage.clone(), sc.replace("\\\\", "\\")));
            }
        }
    }
    steps
}

fn jenkinsfile_steps_run_as_jenkins_runs_them(s: &mut Story) {
    // staging: develop's environment, on the same host on another port, through a
    // per-environment compose file.
    s.write(
        "compose.staging.yaml",
        "services:\n  nginx:\n    ports: !override\n      - \"8081:80\"\n",
    );
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    let staging = format!(
        "  staging:\n    branch: develop\n    docker_host: {}\n    backups: backups/staging/\n    url: http://{}:8081\n    compose_files: [compose.yaml, compose.staging.yaml]\n    release_root: /srv/countable-deploy-test\n",
        s.host.docker_host(),
        s.host.addr()
    );
    let start = yml
        .find("  staging:\n")
        .expect("the scaffold has a staging environment");
    let after = start + "  staging:\n".len();
    let end = yml[after..]
        .lines()
        .scan(after, |at, l| {
            let here = *at;
            *at += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| !l.starts_with("    "))
        .map(|(at, _)| at)
        .unwrap_or(yml.len());
    let yml = format!("{}{staging}{}", &yml[..start], &yml[end..]);
    std::fs::write(s.root.join("countable.yml"), yml).unwrap();
    std::fs::create_dir_all(s.root.join("backups/staging")).unwrap();
    let mut args = vec!["secrets".to_string(), "set".into(), "staging".into()];
    args.extend(s.secret_args.clone());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    s.run(&refs).ok();
    s.write("shop/views.py", &views("shop from jenkins"));
    s.commit("through Jenkins");
    s.git(&["branch", "-f", "develop"]);
    let bin = Path::new(env!("CARGO_BIN_EXE_countable"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!("{}:{}", bin.display(), s.host.path_env());
    let jenkinsfile = std::fs::read_to_string(s.root.join("Jenkinsfile")).unwrap();
    for (branch, port, deploy_stage) in [
        ("develop", 8081, "Deploy to staging"),
        ("master", PORT, "Deploy to production"),
    ] {
        s.git(&["checkout", "-q", branch]);
        let steps = jenkins_steps(&jenkinsfile, branch);
        let stages: Vec<&str> = steps.iter().map(|(st, _)| st.as_str()).collect();
        assert_eq!(stages, ["Test", deploy_stage, "post"], "{branch}");
        for (stage, script) in &steps {
            // What the test stage generates is a secret too: read it before `post` removes it.
            let test_secrets: Vec<String> = std::fs::read_to_string(s.root.join(".env"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(k, _)| k.ends_with("SECRET_KEY") || k.ends_with("PASSWORD"))
                .map(|(_, v)| v.trim_matches('\'').to_string())
                .filter(|v| v.len() >= 16)
                .collect();
            let out = Command::new("sh")
                .args(["-xe", "-c", script])
                .current_dir(&s.root)
                .env("PATH", &path)
                .env("BRANCH_NAME", branch)
                .env("BUILD_NUMBER", "7")
                .env("CI_PROJECT", format!("shop-ci-{}", std::process::id()))
                .env("COUNTABLE_AGE_KEY_FILE", &s.key)
                .env("HOME", s.tmp.path().join("home"))
                .env("DOCKER_CONFIG", docker_config())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let console = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{branch}: stage {stage} failed:\n{console}"
            );
            assert!(console.contains("+ "), "sh -x traced the commands");
            for v in s.secret_values.iter().chain(&test_secrets) {
                assert!(
                    !console.contains(v.as_str()),
                    "{branch}: stage {stage} printed a secret"
                );
            }
            if *stage == "Test" {
                let fresh = std::fs::read_to_string(s.root.join(".env")).unwrap();
                for l in fresh.lines().filter(|l| {
                    l.starts_with("DJANGO_SECRET_KEY=") || l.starts_with("POSTGRES_PASSWORD=")
                }) {
                    let v = l.split_once('=').unwrap().1.trim_matches('\'');
                    assert!(
                        v.len() >= 16 && !console.contains(v),
                        "{branch}: the test stage's secret reached the console"
                    );
                }
            }
            s.printed.push_str(&console);
        }
        let page = http_get_at(s.host.addr(), port, "/", &[]).body;
        assert!(page.contains("shop from jenkins"), "{branch}: {page}");
    }
    s.git(&["checkout", "-q", "master"]);
}

fn with_a_registry_the_host_pulls(s: &mut Story) {
    let registry = common::hosts::TestRegistry::start();
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    std::fs::write(
        s.root.join("countable.yml"),
        yml.replace(
            "    keep_releases: 3\n",
            "    keep_releases: 3\n    registry: localhost:5000\n",
        ),
    )
    .unwrap();
    s.write("shop/views.py", &views("shop from the registry"));
    s.commit("through a registry");
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the host pulled localhost:5000/shop-web:prod-"),
        "{}",
        r.stderr
    );
    assert!(s.home_page().contains("shop from the registry"));
    drop(registry);
}

fn no_secret_in_any_output(s: &mut Story) {
    let dry = s
        .run(&["deploy", "prod", "--dry-run", "--allow-dirty"])
        .ok();
    assert!(dry.stdout.contains("docker compose"), "{}", dry.stdout);
    for v in &s.secret_values {
        assert!(
            !s.printed.contains(v.as_str()),
            "a secret value was printed"
        );
    }
}

fn cleanup(s: &Story) {
    let _ = s
        .host
        .docker(&["rm", "-f", "-v", "shop-prod-db-1", "shop-staging-db-1"]);
    let _ = Command::new("docker")
        .args(["image", "rm", "-f"])
        .args(
            String::from_utf8_lossy(
                &Command::new("docker")
                    .args([
                        "image",
                        "ls",
                        "-q",
                        "--filter",
                        "label=org.countable.project=shop",
                    ])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .split_whitespace(),
        )
        .output();
    let _ = Path::new("/srv/countable-deploy-test")
        .exists()
        .then(|| std::fs::remove_dir_all("/srv/countable-deploy-test"));
}

fn main() {
    let chapters: &[Chapter<Story>] = &[
        (
            "first_deploy_ships_the_image_migrates_and_answers",
            first_deploy_ships_the_image_migrates_and_answers,
        ),
        (
            "psql_on_prod_reads_and_writes_only_with_write",
            psql_on_prod_reads_and_writes_only_with_write,
        ),
        (
            "second_deploy_with_a_migration_drops_no_request",
            second_deploy_with_a_migration_drops_no_request,
        ),
        (
            "failed_migration_keeps_the_old_release_serving",
            failed_migration_keeps_the_old_release_serving,
        ),
        ("rollback_code_only", rollback_code_only),
        (
            "rollback_reverses_a_reversible_migration",
            rollback_reverses_a_reversible_migration,
        ),
        (
            "rollback_refuses_an_irreversible_migration_then_restores_the_backup",
            rollback_refuses_an_irreversible_migration_then_restores_the_backup,
        ),
        (
            "concurrent_deploys_and_a_killed_one",
            concurrent_deploys_and_a_killed_one,
        ),
        (
            "a_noop_redeploy_ships_nothing",
            a_noop_redeploy_ships_nothing,
        ),
        ("prune_keeps_n_releases", prune_keeps_n_releases),
        (
            "a_host_without_room_refuses_before_anything_changes",
            a_host_without_room_refuses_before_anything_changes,
        ),
        (
            "jenkinsfile_steps_run_as_jenkins_runs_them",
            jenkinsfile_steps_run_as_jenkins_runs_them,
        ),
        (
            "with_a_registry_the_host_pulls",
            with_a_registry_the_host_pulls,
        ),
        ("no_secret_in_any_output", no_secret_in_any_output),
    ];
    common::story::run("deploy", chapters, setup, |story| {
        cleanup(&story);
        drop(story);
    });
}
