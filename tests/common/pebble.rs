//! Let's Encrypt's test CA for the TLS tests: Debian's `pebble` on loopback with a
//! certificate made here for its HTTPS listener, and `pebble-challtestsrv` as its DNS so
//! real HTTP-01 validation reaches a test nginx on a published loopback port.
//! Both processes are killed when the value is dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Pebble {
    dir: tempfile::TempDir,
    pebble: Child,
    challtestsrv: Child,
    port: u16,
    mgmt_port: u16,
    dns_mgmt_port: u16,
    /// The ACME directory URL.
    pub directory: String,
    /// The self-made certificate of pebble's HTTPS listener: the root an ACME client
    /// must trust to talk to this pebble.
    pub listener_pem: String,
}

impl Pebble {
    /// Start both programs; pebble validates HTTP-01 on `http_port` of whatever address
    /// the mock DNS gives (127.0.0.1 for every name).
    pub fn start(http_port: u16) -> Self {
        for program in ["pebble", "pebble-challtestsrv", "openssl", "curl"] {
            assert!(
                which::which(program).is_ok(),
                "{program} is missing: run tests/setup (Debian packages pebble, openssl, curl)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=pebble listener"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            // Not a CA: rustls (webpki) refuses a CA certificate as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(path("key.pem"))
            .arg("-out")
            .arg(path("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(made.success(), "openssl req -x509 failed");
        let (port, mgmt_port, dns_port, dns_mgmt_port) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": path("cert.pem"),
            "privateKey": path("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(path("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(path(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No artificial validation delays; nonces are still rejected 5% of the time.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let me = Self {
            listener_pem: std::fs::read_to_string(path("cert.pem")).unwrap(),
            directory: format!("https://127.0.0.1:{port}/dir"),
            dir,
            pebble,
            challtestsrv,
            port,
            mgmt_port,
            dns_mgmt_port,
        };
        for p in [port, mgmt_port, dns_mgmt_port] {
            wait_for_port(p, Duration::from_secs(20));
        }
        me
    }

    /// The root pebble issues under (made at its start), from the management port.
    pub fn issuing_root(&self) -> String {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(self.dir.path().join("cert.pem"))
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /roots/0 failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Make `host` resolve to 127.0.0.1 for pebble's validation.
    pub fn add_a(&self, host: &str) {
        self.add_a_at(host, "127.0.0.1")
    }

    /// Make `host` resolve to `addr` (a test host's address) for pebble's validation.
    pub fn add_a_at(&self, host: &str, addr: &str) {
        let body = serde_json::json!({"host": host, "addresses": [addr]}).to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.dns_mgmt_port)).unwrap();
        write!(
            s,
            "POST /add-a HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "add-a failed: {reply}");
    }

    /// New orders pebble has received so far (from its request log).
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            // Orders made, not requests: a POST pebble refused for its nonce (5% of
            // them, on purpose) is sent again by the client and makes no order.
            .filter(|l| l.contains("Added order"))
            .count()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("pebble.log")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listens on {port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
