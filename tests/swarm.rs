//! `countable deploy`, `status`, `logs`, `backup`, `pull-db` and `rollback` against a
//! real three-node Docker Swarm on this machine: three test hosts (tests/hosts: a
//! dockerd and an sshd each in a network namespace), `swarm init` on the first and
//! `swarm join` on the others, overlay networks across them, and Debian's
//! docker-registry as `localhost:5000` everywhere. The rig has no IPVS, so the
//! environment publishes in host mode with DNS round robin (`publish_mode: host`,
//! `endpoint_mode: dnsrr`), as its README says a cluster without IPVS must.
//!
//! One story, in order; the last chapter stops a node's engine. `harness = false`: the
//! cluster is made once and taken down at the end.
//! `cargo test --test swarm -- NAME` runs the chapters up to and including NAME.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hosts::{TestHost, TestRegistry};
use common::story::Chapter;
use common::*;

/// The port nginx publishes on every node.
const PORT: u16 = 8080;

/// Where the one-host releases live on the manager (before the move to the Swarm).
const RELEASE_ROOT: &str = "/srv/countable-swarm-test";

struct Story {
    nodes: Vec<TestHost>,
    _registry: TestRegistry,
    tmp: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    secret_values: Vec<String>,
    printed: String,
}

impl Story {
    fn manager(&self) -> &TestHost {
        &self.nodes[0]
    }

    /// Panic with what a failed `what` said and what web's tasks said (`service ps`,
    /// their last log lines), read before the hosts go.
    fn failed(&self, what: &str, r: &Run) -> ! {
        let ps = self
            .manager()
            .docker(&["service", "ps", "--no-trunc", "shop-prod_web"]);
        let logs = self
            .manager()
            .docker(&["service", "logs", "--tail", "40", "shop-prod_web"]);
        panic!(
            "{what} failed:\n{}\nservice ps:\n{}\nservice logs:\n{}{}",
            r.stderr, ps.stdout, logs.stdout, logs.stderr
        );
    }

    fn countable(&self, args: &[&str]) -> Command {
        let mut c = countable(&self.root);
        c.args(args)
            .env("PATH", self.manager().path_env())
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
        std::fs::write(self.root.join(rel), text).unwrap();
    }

    fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", msg]);
    }

    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    fn status(&mut self) -> serde_json::Value {
        let r = self.run(&["status", "prod", "--json"]);
        assert_eq!(r.code, 0, "status prod: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap_or_else(|| panic!("no service {name} in {status}"))
    }

    /// The home page's text on every node (retried while a node's nginx starts).
    fn pages(&self) -> Vec<String> {
        self.addrs()
            .iter()
            .map(|a| {
                for _ in 0..100 {
                    if let Some((200, body)) = get(a, "/") {
                        return body;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
                panic!("{a}:{PORT} does not answer");
            })
            .collect()
    }

    /// SQL in the db task's container, on whichever node runs it.
    fn sql(&self, query: &str) -> String {
        for node in &self.nodes {
            let ps = node.docker(&[
                "ps",
                "-q",
                "--filter",
                "label=com.docker.swarm.service.name=shop-prod_db",
            ]);
            let Some(id) = ps.stdout.split_whitespace().next().map(String::from) else {
                continue;
            };
            let r = node.docker(&[
                "exec",
                &id,
                "sh",
                "-c",
                "psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"$1\"",
                "sh",
                query,
            ]);
            assert_eq!(r.code, 0, "psql: {}", r.stderr);
            return r.stdout.trim().to_string();
        }
        panic!("no node runs the db task");
    }
}

/// GET http://addr:PORT/path, never panicking: (status, body), or none when the
/// connection fails or times out.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock: std::net::SocketAddr = format!("{addr}:{PORT}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: shop.test\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A request loop through `addrs` in turn until stopped: (answered, failed, longest
/// gap between two good answers).
struct Looper {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u32, u32, Duration)>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Looper {
    fn start(addrs: Vec<String>) -> Looper {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (st, fl) = (stop.clone(), failures.clone());
        let handle = std::thread::spawn(move || {
            let (mut ok, mut bad) = (0u32, 0u32);
            let mut last_good = Instant::now();
            let mut gap = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(900);
            let mut i = 0;
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                let a = &addrs[i % addrs.len()];
                i += 1;
                match get(a, "/") {
                    Some((200, _)) => {
                        ok += 1;
                        gap = gap.max(last_good.elapsed());
                        last_good = Instant::now();
                    }
                    other => {
                        bad += 1;
                        fl.lock().unwrap().push(format!(
                            "{a}: {:?}",
                            other.map(|(s, b)| (s, b.chars().take(80).collect::<String>()))
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (
                ok,
                bad,
                // The stretch since the last good answer counts too: an outage
                // that lasts to the end is a gap.
                gap.max(last_good.elapsed()),
            )
        });
        Looper {
            stop,
            handle,
            failures,
        }
    }

    fn finish(self) -> (u32, u32, Duration, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, bad, gap) = self.handle.join().unwrap();
        let f = self.failures.lock().unwrap().clone();
        (ok, bad, gap, f)
    }
}

fn views(text: &str) -> String {
    format!("from django.http import HttpResponse\n\n\ndef home(request):\n    return HttpResponse(\"{text}\")\n")
}

fn setup() -> Story {
    require_images();
    // Three nodes; the stand-in images for db and nginx are on every node (they are
    // not in the registry: their names are the public ones' stand-ins).
    let load = [DB_IMAGE, NGINX_IMAGE];
    let nodes: Vec<TestHost> = (1..=3)
        .map(|i| TestHost::start(&format!("swarm{i}"), 10 + i, &load))
        .collect();
    let registry = TestRegistry::start();
    let init = nodes[0].docker(&["swarm", "init", "--advertise-addr", nodes[0].addr()]);
    assert!(
        init.code == 0 || init.stderr.contains("already part of a swarm"),
        "swarm init: {}",
        init.stderr
    );
    let token = nodes[0]
        .docker(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .stdout
        .trim()
        .to_string();
    for n in &nodes[1..] {
        let j = n.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{}:2377", nodes[0].addr()),
        ]);
        assert!(
            j.code == 0 || j.stderr.contains("already part of a swarm"),
            "swarm join: {}",
            j.stderr
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    run(countable(tmp.path())
        .args(["new", "shop", "--yes"])
        .args(image_flags(PORT)))
    .ok();
    let root = tmp.path().join("shop");
    let key = tmp.path().join("jenkins-age.key");
    let mut s = Story {
        nodes,
        _registry: registry,
        root,
        key,
        tmp,
        secret_values: vec![],
        printed: String::new(),
    };
    let key_s = s.key.display().to_string();
    s.run(&["secrets", "keygen", "--output", &key_s, "--name", "jenkins"])
        .ok();
    let local = std::fs::read_to_string(s.root.join(".env")).unwrap();
    let hosts = s.addrs().join(",");
    let mut args: Vec<String> = vec!["secrets".into(), "set".into(), "prod".into()];
    for line in local
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let k = line.split('=').next().unwrap();
        let v = match k {
            "DJANGO_SECRET_KEY" => "swarm-secret-K3y-0123456789abcdefghijklmnop".to_string(),
            "POSTGRES_PASSWORD" => "Sw4rmPassw0rdXYZ123".to_string(),
            "DJANGO_DEBUG" => "0".into(),
            "DJANGO_ALLOWED_HOSTS" => format!("{hosts},shop.test,localhost,127.0.0.1"),
            _ => line[k.len() + 1..].trim_matches('\'').to_string(),
        };
        if k == "DJANGO_SECRET_KEY" || k == "POSTGRES_PASSWORD" {
            s.secret_values.push(v.clone());
        }
        args.push(format!("{k}={v}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    s.run(&refs).ok();
    std::fs::create_dir_all(s.root.join("backups")).unwrap();
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    let env = format!(
        "  prod:\n    branch: master\n    docker_host: {}\n    registry: {}\n    url: http://{}:{PORT}\n    domains: [shop.test]\n    release_root: {RELEASE_ROOT}\n    backups: backups/\n",
        s.manager().docker_host(),
        TestRegistry::ADDR,
        s.manager().addr()
    );
    std::fs::write(
        s.root.join("countable.yml"),
        yml.replace("  prod:\n    branch: master\n", &env),
    )
    .unwrap();
    // A shorter health window than the scaffold's (3 s × 40, 60 s to start): each update is watched
    // for interval × retries + timeout, 2 s × 5 + 5 s here.
    let compose = std::fs::read_to_string(s.root.join("compose.yaml")).unwrap();
    let web_hc =
        "      interval: 3s\n      timeout: 5s\n      retries: 40\n      start_period: 60s\n";
    assert!(
        compose.contains(web_hc),
        "the scaffold's web healthcheck changed"
    );
    s.write(
        "compose.yaml",
        &compose.replacen(
            web_hc,
            "      interval: 2s\n      timeout: 5s\n      retries: 5\n      start_period: 30s\n",
            1,
        ),
    );
    s.git(&["init", "-q", "-b", "master"]);
    s.git(&["config", "user.name", "Jenkins"]);
    s.commit("first");
    s
}

fn one_host_moves_to_the_swarm_by_a_change_of_mode(s: &mut Story) {
    // prod runs on one host, the manager, as `mode: single` (the default) deploys it.
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "the one-host deploy failed:\n{}", r.stderr);
    assert_eq!(r.stdout.trim(), "1");
    assert!(get(s.manager().addr(), "/")
        .is_some_and(|(c, b)| c == 200 && b.contains("shop is running")));
    let marker = s.manager().docker(&[
        "exec", "shop-prod-db-1", "sh", "-c",
        "psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"CREATE TABLE moved (note text); INSERT INTO moved VALUES ('from one host')\"",
    ]);
    assert_eq!(marker.code, 0, "{}", marker.stderr);
    // The move: `mode: swarm` (and, on this rig without IPVS, host publishing with
    // DNS round robin).
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    s.write(
        "countable.yml",
        &yml.replace("    branch: master\n    docker_host:", "    branch: master\n    mode: swarm\n    publish_mode: host\n    endpoint_mode: dnsrr\n    docker_host:"),
    );
    s.commit("prod moves to the Swarm");
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "deploy failed:\n{}", r.stderr);
    assert_eq!(r.stdout.trim(), "2");
    assert!(
        r.stderr
            .contains("runs as compose project shop-prod on the manager"),
        "{}",
        r.stderr
    );
    assert_eq!(
        s.sql("SELECT note FROM moved"),
        "from one host",
        "the data moved with it"
    );
    // countable's own helpers (its file writer) may stay, and the stack's tasks carry
    // the project's label through web's image; the project's own containers are gone.
    let left = s.manager().docker(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project=shop-prod",
        "--format",
        "{{.Label \"countable.disposable\"}}{{.Label \"com.docker.swarm.task.id\"}}|{{.Names}}",
    ]);
    let services: Vec<&str> = left.stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert!(
        services.is_empty(),
        "the one-host containers are gone: {services:?}"
    );
    let st = s.status();
    let web = Story::service(&st, "web");
    assert_eq!(
        (web["running"].as_u64(), web["desired"].as_u64()),
        (Some(2), Some(2)),
        "{st}"
    );
    let mut on: Vec<&str> = web["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    on.dedup();
    assert_eq!(on.len(), 2, "the two web replicas run on two nodes: {st}");
    assert_eq!(web["release"], "2");
    let nginx = Story::service(&st, "nginx");
    assert_eq!(
        (nginx["mode"].as_str(), nginx["running"].as_u64()),
        (Some("global"), Some(3)),
        "{st}"
    );
    assert_eq!(Story::service(&st, "web-static")["mode"], "global-job");
    for page in s.pages() {
        assert!(page.contains("shop is running"), "{page}");
    }
    // Static files from every node, also the one without a web task (the static job).
    for a in s.addrs() {
        let r = get(&a, "/static/admin/css/base.css");
        assert_eq!(r.as_ref().map(|r| r.0), Some(200), "static on {a}: {r:?}");
    }
    let table = s.run(&["status", "prod"]).ok().stdout;
    assert!(
        table.contains("REPLICAS") && table.contains("2/2") && table.contains("manager"),
        "{table}"
    );
    let logs = s.run(&["logs", "web", "--env", "prod", "--tail", "50"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout.contains("entrypoint:") || logs.stderr.contains("entrypoint:"),
        "web's logs from its nodes:\n{}{}",
        logs.stdout,
        logs.stderr
    );
    let rel = &s.run(&["releases", "prod", "--json"]).ok().stdout;
    let rel: serde_json::Value = serde_json::from_str(rel).unwrap();
    assert_eq!(rel[0]["outcome"], "succeeded");
    assert!(
        rel[0]["migrations_after"].as_array().unwrap().len() > 5,
        "migrations ran"
    );
}

fn a_rolling_update_drops_no_request(s: &mut Story) {
    // The new code and a migration (a new table), as a real release has.
    s.write("shop/views.py", &views("shop v2 on the swarm"));
    std::fs::create_dir_all(s.root.join("catalog/migrations")).unwrap();
    s.write("catalog/__init__.py", "");
    s.write("catalog/migrations/__init__.py", "");
    s.write("catalog/models.py", "from django.db import models\n\n\nclass Item(models.Model):\n    name = models.CharField(max_length=50)\n");
    s.write("catalog/migrations/0001_initial.py", CATALOG_0001);
    let settings = std::fs::read_to_string(s.root.join("shop/settings.py")).unwrap();
    let with_app = settings.replace(
        "    \"django.contrib.staticfiles\",\n",
        "    \"django.contrib.staticfiles\",\n    \"catalog\",\n",
    );
    assert_ne!(settings, with_app, "the scaffold's INSTALLED_APPS changed");
    s.write("shop/settings.py", &with_app);
    s.commit("v2: catalog");
    let looper = Looper::start(s.addrs());
    let t = Instant::now();
    let r = s.run(&["deploy", "prod"]);
    let (ok, bad, gap, failures) = looper.finish();
    if r.code != 0 {
        s.failed("deploy", &r);
    }
    eprintln!("    rolling update: {:.1} s; requests through every node: {ok} answered, {bad} failed, longest gap {:.2} s", t.elapsed().as_secs_f64(), gap.as_secs_f64());
    assert!(ok > 50, "the loop ran ({ok})");
    assert_eq!(
        bad, 0,
        "no request may fail during a rolling update: {failures:?}"
    );
    for page in s.pages() {
        assert!(page.contains("shop v2 on the swarm"), "{page}");
    }
    assert_eq!(Story::service(&s.status(), "web")["release"], "3");
    assert_eq!(
        s.sql("SELECT count(*) FROM django_migrations WHERE app = 'catalog'"),
        "1",
        "the migration ran once"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM catalog_item"),
        "0",
        "its table is there"
    );
}

const CATALOG_0001: &str = "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    initial = True\n    dependencies = []\n    operations = [migrations.CreateModel(name=\"Item\", fields=[(\"id\", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name=\"ID\")), (\"name\", models.CharField(max_length=50))])]\n";

fn a_failing_health_check_rolls_back_and_says_so(s: &mut Story) {
    let health = std::fs::read_to_string(s.root.join("shop/health.py")).unwrap();
    let broken = health.replace(
        "def _answer(status, text):\n",
        "def _answer(status, text):\n    status, text = 503, \"broken on purpose\"\n",
    );
    assert_ne!(health, broken, "the scaffold's health view changed");
    s.write("shop/health.py", &broken);
    s.write("shop/views.py", &views("shop v3 broken"));
    s.commit("v3: broken health");
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(
        r.code, 1,
        "a release whose health check fails must fail the deploy:\n{}",
        r.stderr
    );
    // countable's own verdict, from the service's UpdateStatus and its task's error.
    assert!(
        r.stderr
            .contains("error: the Swarm did not take the release"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("shop-prod_web: the update was rollback completed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let st = s.status();
    assert_eq!(
        Story::service(&st, "web")["update"],
        "rollback_completed",
        "{st}"
    );
    assert_eq!(Story::service(&st, "web")["release"], "3", "{st}");
    for page in s.pages() {
        assert!(
            page.contains("shop v2 on the swarm"),
            "the old code still answers: {page}"
        );
    }
    let rel: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "prod", "--json"]).ok().stdout).unwrap();
    assert_eq!(rel[0]["release"], 4);
    assert_eq!(rel[0]["outcome"], "failed");
    // Put the health view back for what follows.
    s.write("shop/health.py", &health);
    s.write("shop/views.py", &views("shop v2 on the swarm"));
    s.commit("v4: health back");
}

fn backup_then_pull_db_locally(s: &mut Story) {
    s.sql("CREATE TABLE swarm_marker (note text); INSERT INTO swarm_marker VALUES ('from the cluster')");
    let r = s.run(&["backup", "prod"]);
    assert_eq!(r.code, 0, "backup prod:\n{}", r.stderr);
    let r = s.run(&["pull-db", "prod", "--yes"]);
    assert_eq!(r.code, 0, "pull-db prod:\n{}", r.stderr);
    let local = Command::new("docker")
        .args(["exec", "shop-db-1", "sh", "-c", "psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c 'SELECT note FROM swarm_marker'"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        "from the cluster",
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    // The local project goes again: later tests make one of the same name.
    let down = s.run(&["down", "--volumes", "--yes"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    let left = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.project=shop",
    ]));
    assert_eq!(
        left.stdout.trim(),
        "",
        "the local project's containers are gone"
    );
}

fn rollback_after_two_releases(s: &mut Story) {
    // Release 2 (the first on the Swarm) does not know catalog.0001_initial, which
    // release 3 applied: the rollback reverses it with release 3's image first.
    let dry = s.run(&["rollback", "prod", "2", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("reverse catalog.0001_initial"),
        "{}",
        dry.stdout
    );
    let r = s.run(&["rollback", "prod", "2"]);
    if r.code != 0 {
        s.failed("rollback", &r);
    }
    assert_eq!(
        s.sql("SELECT count(*) FROM django_migrations WHERE app = 'catalog'"),
        "0"
    );
    assert_eq!(
        s.sql("SELECT to_regclass('catalog_item') IS NULL"),
        "t",
        "the table went with its migration"
    );
    for page in s.pages() {
        assert!(
            page.contains("shop is running"),
            "release 2's code answers: {page}"
        );
    }
    let rel: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "prod", "--json"]).ok().stdout).unwrap();
    assert_eq!(rel[0]["kind"], "rollback");
    assert_eq!(rel[0]["rollback_to"], 2);
    assert_eq!(rel[0]["outcome"], "succeeded");
    // And forward again: release 2's code through a deploy of the newest commit.
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "deploy after the rollback:\n{}", r.stderr);
    for page in s.pages() {
        assert!(page.contains("shop v2 on the swarm"), "{page}");
    }
    assert_eq!(
        s.sql("SELECT count(*) FROM django_migrations WHERE app = 'catalog'"),
        "1",
        "the migration ran again"
    );
    assert_eq!(
        s.sql("SELECT count(*) FROM catalog_item"),
        "0",
        "its table is back"
    );
}

fn ship_every_node_streams_the_image_to_each_engine(s: &mut Story) {
    let yml = std::fs::read_to_string(s.root.join("countable.yml")).unwrap();
    s.write(
        "countable.yml",
        &yml.replace(
            "    publish_mode: host\n",
            "    publish_mode: host\n    ship: every-node\n",
        ),
    );
    s.write("shop/views.py", &views("shop v5 streamed"));
    s.commit("v5: shipped to every node");
    let r = s.run(&["deploy", "prod"]);
    assert_eq!(r.code, 0, "deploy with ship: every-node:\n{}", r.stderr);
    let shipped = r
        .stderr
        .matches("shipped localhost:5000/shop-web:prod-")
        .count();
    assert_eq!(
        shipped, 3,
        "the image went to each of the three engines:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("pushing"),
        "no registry push: {}",
        r.stderr
    );
    let rel: serde_json::Value =
        serde_json::from_str(&s.run(&["releases", "prod", "--json"]).ok().stdout).unwrap();
    let image = rel[0]["image"].as_str().unwrap().to_string();
    assert!(rel[0]["bytes_shipped"].as_u64().unwrap() > 0);
    for n in &s.nodes {
        assert_eq!(
            n.docker(&["image", "inspect", &image]).code,
            0,
            "{} has {image}",
            n.name()
        );
    }
    for page in s.pages() {
        assert!(page.contains("shop v5 streamed"), "{page}");
    }
}

fn a_lost_node_is_replaced(s: &mut Story) {
    let st = s.status();
    let db_node = Story::service(&st, "db")["nodes"][0]
        .as_str()
        .unwrap()
        .to_string();
    let web_nodes: Vec<String> = Story::service(&st, "web")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    // A node that runs web, and neither the manager nor the db.
    let victim = s.nodes.iter().position(|n| {
        let name = n.namespace().to_string();
        name != s.manager().namespace() && name != db_node && web_nodes.contains(&name)
    });
    let victim = victim.unwrap_or_else(|| {
        panic!("no worker runs web without the db: web on {web_nodes:?}, db on {db_node}")
    });
    let survivors: Vec<String> = s
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n.addr().to_string())
        .collect();
    let looper = Looper::start(survivors);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    s.nodes[victim].stop_engine();
    // Swarm finds the node down and starts its replica elsewhere.
    let mut replaced = None;
    while t.elapsed() < Duration::from_secs(180) {
        let st = s.status();
        let web = Story::service(&st, "web");
        let on: Vec<String> = web["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        if web["running"] == 2 && !on.contains(&s.nodes[victim].namespace().to_string()) {
            replaced = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (ok, bad, gap, failures) = looper.finish();
    let replaced = replaced.expect("the lost node's web replica was not rescheduled within 180 s");
    eprintln!(
        "    node loss: replica rescheduled after {:.1} s; requests through the other nodes: {ok} answered, {bad} failed, longest gap {:.2} s",
        replaced.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(ok > 50, "the loop ran ({ok})");
    assert!(
        gap < Duration::from_secs(15),
        "the site stopped answering for {gap:?}: {failures:?}"
    );
}

fn no_secret_in_any_output(s: &mut Story) {
    for v in &s.secret_values {
        assert!(
            !s.printed.contains(v.as_str()),
            "a secret value was printed"
        );
    }
}

fn main() {
    let chapters: &[Chapter<Story>] = &[
        (
            "one_host_moves_to_the_swarm_by_a_change_of_mode",
            one_host_moves_to_the_swarm_by_a_change_of_mode,
        ),
        (
            "a_rolling_update_drops_no_request",
            a_rolling_update_drops_no_request,
        ),
        (
            "a_failing_health_check_rolls_back_and_says_so",
            a_failing_health_check_rolls_back_and_says_so,
        ),
        ("backup_then_pull_db_locally", backup_then_pull_db_locally),
        ("rollback_after_two_releases", rollback_after_two_releases),
        (
            "ship_every_node_streams_the_image_to_each_engine",
            ship_every_node_streams_the_image_to_each_engine,
        ),
        ("a_lost_node_is_replaced", a_lost_node_is_replaced),
        ("no_secret_in_any_output", no_secret_in_any_output),
    ];
    common::story::run("swarm", chapters, setup, |s| {
        let _ = run(&mut s.countable(&["down", "--volumes", "--yes"]));
        drop(s);
        let root = std::path::Path::new(RELEASE_ROOT);
        if root.exists() {
            let _ = std::fs::remove_dir_all(root);
        }
    });
}
