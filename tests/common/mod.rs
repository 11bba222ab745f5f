//! Helpers for the integration tests: run the real binary, make scratch projects on the
//! real engine with the stand-in images (through the image flags, as a user would), talk
//! HTTP to nginx, and clean everything up.
#![allow(dead_code)]

pub mod hosts;
pub mod story;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const DB_IMAGE: &str = "countable-test/postgres:15";
pub const PYTHON_IMAGE: &str = "countable-test/python";
pub const NGINX_IMAGE: &str = "countable-test/nginx";
/// Debian trixie's python with Wagtail (tests/images/wagtail.txt), for `wagtail start`.
pub const WAGTAIL_IMAGE: &str = "countable-test/python-wagtail";

/// The countable binary under test, with a clean environment for its knobs.
pub fn countable(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_countable"));
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env_remove("COUNTABLE_COMPOSE")
        .env_remove("COUNTABLE_DB_IMAGE")
        .env_remove("COUNTABLE_PYTHON_IMAGE")
        .env_remove("COUNTABLE_NGINX_IMAGE");
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let out: Output = cmd.output().expect("spawn");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn fails(self) -> Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains("error: "),
            "no error line: {}",
            self.stderr
        );
        assert!(
            self.stderr.contains("\n\nhint: "),
            "no hint: {}",
            self.stderr
        );
        self
    }
}

/// Fail early with the fix when the stand-in images are missing.
pub fn require_images() {
    for image in [DB_IMAGE, PYTHON_IMAGE, NGINX_IMAGE] {
        require_image(image);
    }
}

/// Fail early with the fix when stand-in `image` is missing.
pub fn require_image(image: &str) {
    let ok = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "stand-in image {image} is missing: run tests/images/build"
    );
}

/// The flags `new` and `init` take to use the stand-in images (as a user would) and
/// publish nginx on `port`.
pub fn image_flags(port: u16) -> Vec<String> {
    [
        "--postgres",
        "15",
        "--db-image",
        DB_IMAGE,
        "--python-image",
        PYTHON_IMAGE,
        "--nginx-image",
        NGINX_IMAGE,
        "--port",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([port.to_string()])
    .collect()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique, valid project name for this test process.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A project made by `countable new` in a temp dir; its containers and volumes are
/// removed when dropped.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
    pub name: String,
    pub port: u16,
}

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        require_images();
        let tmp = tempfile::tempdir().unwrap();
        let name = unique_name(prefix);
        let port = free_port();
        run(countable(tmp.path())
            .args(["new", &name, "--yes"])
            .args(image_flags(port)))
        .ok();
        Self { tmp, name, port }
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join(&self.name)
    }

    pub fn countable(&self) -> Command {
        countable(&self.root())
    }

    /// `docker compose` on this project, for checks the tests make from outside.
    pub fn compose(&self, args: &[&str]) -> Run {
        run(Command::new("docker")
            .args(["compose", "-p", &self.name, "--project-directory"])
            .arg(self.root())
            .args(args)
            .current_dir(self.root()))
    }

    /// A SQL query in the db container, answer trimmed.
    pub fn sql(&self, query: &str) -> String {
        let r = self.compose(&[
            "exec",
            "-T",
            "db",
            "sh",
            "-c",
            "psql -X -qAt -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"$1\"",
            "sh",
            query,
        ]);
        assert_eq!(r.code, 0, "psql failed: {}", r.stderr);
        r.stdout.trim().to_string()
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Http {
        http_get(self.port, path, headers)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([
                "compose",
                "-p",
                &self.name,
                "down",
                "--volumes",
                "--remove-orphans",
                "--rmi",
                "local",
            ])
            .current_dir(self.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port` (Connection: close), with extra headers.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Http {
    http_get_at("127.0.0.1", port, path, headers)
}

/// `http_get` to another address (a test host's, say).
pub fn http_get_at(addr: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> Http {
    let mut stream = TcpStream::connect((addr, port)).expect("connect to nginx");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let host = if addr == "127.0.0.1" {
        "localhost"
    } else {
        addr
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `(service, id, started_at)` of every container, from `countable status --json`.
pub fn containers(s: &Scratch) -> Vec<(String, String, String)> {
    let r = run(s.countable().args(["status", "--json"])).ok();
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("status --json is JSON");
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["service"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
                v["started_at"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A real S3-protocol server (moto) on a loopback port, killed when dropped.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    /// Start moto; `auth` makes it check credentials (every key is then unknown to it).
    pub fn start(auth: bool) -> Self {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd.spawn().expect("moto_server is installed (tests/setup)");
        let moto = Self { child, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `aws` CLI against this server, with the test credentials.
    pub fn aws(&self, args: &[&str]) -> Run {
        run(Command::new("aws")
            .arg("--endpoint-url")
            .arg(self.url())
            .args(args)
            .envs(aws_env()))
    }

    /// The keys in `bucket` that start with `prefix`, as the server lists them.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = self
            .aws(&[
                "s3api",
                "list-objects-v2",
                "--bucket",
                bucket,
                "--prefix",
                prefix,
                "--query",
                "Contents[].Key",
                "--output",
                "json",
            ])
            .ok();
        serde_json::from_str::<Option<Vec<String>>>(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
            .unwrap_or_default()
    }

    /// The bytes of object `url` (`s3://bucket/key`).
    pub fn read(&self, url: &str) -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("object");
        self.aws(&["s3", "cp", url, path.to_str().unwrap()]).ok();
        std::fs::read(path).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials for moto (any non-empty values do without auth checks).
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

impl Scratch {
    /// Append `environments:`/`data_from:` settings to countable.yml (replacing the
    /// scaffold's example environments).
    pub fn set_environments(&self, yaml: &str) {
        let path = self.root().join("countable.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        let head = &text[..text.find("environments:").unwrap()];
        std::fs::write(&path, format!("{head}{yaml}")).unwrap();
    }

    /// Start only the db service (what pull-db does itself too).
    pub fn db_up(&self) {
        let r = self.compose(&["up", "--detach", "--wait", "db"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    /// SQL in database `db` of the db container.
    pub fn sql_in(&self, db: &str, query: &str) -> String {
        let r = self.compose(&[
            "exec",
            "-T",
            "db",
            "sh",
            "-c",
            "psql -X -qAt -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$1\" -c \"$2\"",
            "sh",
            db,
            query,
        ]);
        assert_eq!(r.code, 0, "psql failed: {}", r.stderr);
        r.stdout.trim().to_string()
    }

    /// Every user table's row count and content hash, sequences' values, and the
    /// names of views, functions and triggers: equal fingerprints, equal databases.
    pub fn fingerprint(&self, db: &str) -> String {
        let tables = self.sql_in(db, "SELECT string_agg(format('%s.%s=%s', schemaname, tablename, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') AS c FROM %I.%I t', schemaname, tablename), false, true, '')))[1]::text), E'\\n' ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')");
        let seqs = self.sql_in(db, "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY schemaname, sequencename) FROM pg_sequences");
        let views = self.sql_in(db, "SELECT string_agg(schemaname || '.' || viewname, ',' ORDER BY schemaname, viewname) FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')");
        let funcs = self.sql_in(db, "SELECT string_agg(n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', ',' ORDER BY n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')");
        let triggers = self.sql_in(
            db,
            "SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE NOT tgisinternal",
        );
        format!("{tables}\nseq {seqs}\nviews {views}\nfunctions {funcs}\ntriggers {triggers}")
    }

    /// The databases on the server.
    pub fn databases(&self) -> Vec<String> {
        self.sql_in("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .map(String::from)
            .collect()
    }

    /// Create database `name` with several schemas, sequences, views, functions and
    /// triggers, and `rows` rows in its biggest table.
    pub fn seed(&self, name: &str, rows: u32) {
        self.sql_in("postgres", &format!("CREATE DATABASE {name}"));
        let script = format!(
            "CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA shop;
CREATE SCHEMA audit;
CREATE TABLE shop.items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2), data jsonb, made timestamptz DEFAULT '2026-01-01');
CREATE TABLE audit.log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id int REFERENCES shop.items(id), note text);
CREATE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit.log (item_id, note) VALUES (NEW.id, 'new ' || NEW.name); RETURN NEW; END $$;
CREATE TRIGGER items_audit AFTER INSERT ON shop.items FOR EACH ROW EXECUTE FUNCTION audit.record();
INSERT INTO shop.items (name, price, data) SELECT 'item ' || g || E' tab\\there', g * 1.5, jsonb_build_object('g', g, 'q', 'it''s \"quoted\"') FROM generate_series(1, {rows}) g;
CREATE VIEW shop.cheap AS SELECT id, name FROM shop.items WHERE price < 10;
CREATE TABLE public.notes (id serial PRIMARY KEY, body text, secret bytea);
INSERT INTO public.notes (body, secret) SELECT md5(g::text), gen_random_bytes(8) FROM generate_series(1, 500) g;
CREATE SEQUENCE shop.invoice_no START 1000;
SELECT nextval('shop.invoice_no') FROM generate_series(1, 7);
"
        );
        let r = run_with_stdin(
            &mut self.db_command(&[
                "sh",
                "-c",
                "psql -X -q -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d \"$1\"",
                "sh",
                name,
            ]),
            script.as_bytes(),
        );
        assert_eq!(r.code, 0, "seeding failed: {}", r.stderr);
    }

    /// `docker compose exec -T db <args>` on this project, to run and read as needed.
    pub fn db_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["compose", "-p", &self.name, "exec", "-T", "db"])
            .args(args)
            .current_dir(self.root());
        cmd
    }

    /// A shell script in the db container whose stdout goes into a host file.
    pub fn exec_to_file(&self, script: &str, to: &Path) {
        let out = self
            .db_command(&["sh", "-c", script])
            .stdout(std::fs::File::create(to).unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_dump <args> <db>` from the db container (the real pg_dump) into a host file.
    pub fn dump(&self, db: &str, args: &[&str], to: &Path) {
        let out = self
            .db_command(&[
                "sh",
                "-c",
                "db=\"$1\"; shift; pg_dump -U \"$POSTGRES_USER\" \"$@\" \"$db\"",
                "sh",
                db,
            ])
            .args(args)
            .stdout(std::fs::File::create(to).unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `<name>-prod` compose project beside a scratch project (its "production"),
/// taken down (volumes too) when dropped, also when a test fails.
pub struct Prod {
    pub project: String,
    pub dir: PathBuf,
}

impl std::ops::Deref for Prod {
    type Target = String;
    fn deref(&self) -> &String {
        &self.project
    }
}

impl Drop for Prod {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["compose", "-p", &self.project, "down", "--volumes"])
            .current_dir(&self.dir)
            .output();
    }
}

impl Scratch {
    /// Start the db service under compose project `<name>-prod`: environment `prod`'s
    /// database, reached like a remote engine's.
    pub fn start_prod(&self) -> Prod {
        let prod = format!("{}-prod", self.name);
        let r = run(Command::new("docker")
            .args(["compose", "-p", &prod, "up", "--detach", "--wait", "db"])
            .current_dir(self.root()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        Prod {
            project: prod,
            dir: self.root(),
        }
    }
}

/// Run `cmd` with `input` on its stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run a shell pipeline on the host (fixture making with the real gzip, lrzip, tar…).
pub fn sh(dir: &Path, script: &str) {
    let r = run(Command::new("sh").args(["-c", script]).current_dir(dir));
    assert_eq!(r.code, 0, "`{script}` failed: {}", r.stderr);
}

/// Run `script` (sh) in a throwaway container of the db image with `volume` at /m.
pub fn in_volume(volume: &str, script: &str) -> Run {
    let r = run(Command::new("docker").args([
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/m"),
        "--entrypoint",
        "sh",
        DB_IMAGE,
        "-c",
        script,
    ]));
    assert_eq!(r.code, 0, "`{script}`: {}", r.stderr);
    r
}

/// path → SHA-256 of every file below `dir` (host) or in a volume (`find` output).
pub fn parse_sums(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").unwrap();
            (path.trim_start_matches("./").to_string(), sum.to_string())
        })
        .collect()
}

/// path → SHA-256 of every file in `volume`.
pub fn volume_sums(volume: &str) -> std::collections::BTreeMap<String, String> {
    parse_sums(&in_volume(volume, "cd /m && find . -type f -exec sha256sum {} +").stdout)
}

/// The machine's docker CLI config (compose is a plugin there), whatever HOME says.
pub fn docker_config() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".docker"))
}
