//! Helpers for the integration tests: run the real binary, make scratch projects on the
//! real engine with the stand-in images (through the image flags, as a user would), talk
//! HTTP to nginx, and clean everything up.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const DB_IMAGE: &str = "countable-test/postgres:15";
pub const PYTHON_IMAGE: &str = "countable-test/python";
pub const NGINX_IMAGE: &str = "countable-test/nginx";

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
        run(countable(tmp.path()).args([
            "new",
            &name,
            "--yes",
            "--postgres",
            "15",
            "--db-image",
            DB_IMAGE,
            "--python-image",
            PYTHON_IMAGE,
            "--nginx-image",
            NGINX_IMAGE,
            "--port",
            &port.to_string(),
        ]))
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
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n");
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
