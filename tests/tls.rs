//! TLS against real parts: Debian's pebble as the ACME server, validating HTTP-01 over
//! its mock DNS against a real nginx container (the stand-in image) that serves the
//! challenge directory and the rendered tls.conf, with a header-echo web container
//! behind it. The HTTPS client trusts only pebble's issuing root and sends the domain
//! as SNI, so a certificate that does not chain to pebble fails the handshake.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/pebble.rs"]
mod pebble;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use countable::tls::{self, AcmeConfig, CertBundle, Challenges, NginxTls, Outcome, TlsMode};
use countable::ui::Printer;
use time::OffsetDateTime;

use common::{free_port, unique_name, Http, NGINX_IMAGE, PYTHON_IMAGE};
use pebble::{wait_for_port, Pebble};

const DOMAINS: [&str; 2] = ["shop.test", "www.shop.test"];

/// A web stand-in that answers every GET with the request headers it received.
const ECHO: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"#;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// nginx (stand-in image) and a header-echo `web` on their own network; removed on drop.
struct Site {
    name: String,
    dir: tempfile::TempDir,
    http: u16,
    https: u16,
}

impl Site {
    fn start(http: u16, conf: &str, bundle: Option<&CertBundle>) -> Self {
        common::require_images();
        let name = unique_name("tls");
        let dir = tempfile::tempdir().unwrap();
        for sub in ["conf", "acme", "tls", "countable"] {
            let p = dir.path().join(sub);
            std::fs::create_dir(&p).unwrap();
            set_mode(&p, 0o755);
        }
        set_mode(dir.path(), 0o755);
        let site = Self {
            name,
            dir,
            http,
            https: free_port(),
        };
        site.write_conf(conf);
        if let Some(b) = bundle {
            site.install(b);
        }
        docker(&["network", "create", &site.name]);
        docker(&[
            "run",
            "-d",
            "--name",
            &format!("{}-web", site.name),
            "--network",
            &site.name,
            "--network-alias",
            "web",
            PYTHON_IMAGE,
            "python3",
            "-c",
            ECHO,
        ]);
        let vol = |sub: &str, at: &str| format!("{}:{at}", site.dir.path().join(sub).display());
        docker(&[
            "run",
            "-d",
            "--name",
            &site.nginx(),
            "--network",
            &site.name,
            "-p",
            &format!("127.0.0.1:{}:80", site.http),
            "-p",
            &format!("127.0.0.1:{}:443", site.https),
            "-v",
            &vol("conf", "/etc/nginx/conf.d:ro"),
            "-v",
            &vol("acme", &format!("{}:ro", tls::ACME_WEBROOT)),
            "-v",
            &vol("tls", "/etc/nginx/tls:ro"),
            "-v",
            &vol("countable", "/etc/nginx/countable"),
            NGINX_IMAGE,
        ]);
        wait_for_port(site.http, Duration::from_secs(20));
        // The published port accepts before nginx does: wait for a real answer.
        let start = Instant::now();
        while matches!(
            http_get(site.http, "/", "shop.test", &[]).status,
            0 | 502 | 504
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nginx never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        site
    }

    fn nginx(&self) -> String {
        format!("{}-nginx", self.name)
    }

    fn write_conf(&self, conf: &str) {
        std::fs::write(self.dir.path().join("conf/default.conf"), conf).unwrap();
    }

    /// What the lead's deploy does after an issue: chain and key into nginx's directory.
    fn install(&self, b: &CertBundle) {
        let tls = self.dir.path().join("tls");
        std::fs::write(tls.join("fullchain.pem"), &b.cert_chain_pem).unwrap();
        std::fs::write(tls.join("privkey.pem"), &b.key_pem).unwrap();
        set_mode(&tls.join("privkey.pem"), 0o600);
    }

    /// `nginx -t && nginx -s reload` in the container, as deploy runs it.
    fn reload(&self) {
        docker(&[
            "exec",
            &self.nginx(),
            "sh",
            "-c",
            "nginx -t -q && nginx -s reload",
        ]);
    }

    fn gateway(&self) -> String {
        docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.name,
        ])
    }

    fn acme_dir(&self) -> PathBuf {
        self.dir.path().join("acme")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in [self.nginx(), format!("{}-web", self.name)] {
            let _ = Command::new("docker")
                .args(["rm", "-f", &c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The test's side of HTTP-01: token files in the directory nginx serves.
struct DirChallenges {
    dir: PathBuf,
    published: Arc<AtomicUsize>,
}

impl Challenges for DirChallenges {
    async fn publish(&self, token: &str, key_auth: &str) -> anyhow::Result<()> {
        let p = self.dir.join(token);
        std::fs::write(&p, key_auth)?;
        set_mode(&p, 0o644);
        self.published.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn remove(&self, token: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.dir.join(token))?;
        Ok(())
    }
}

fn parse_http(raw: &[u8]) -> Http {
    let text = String::from_utf8_lossy(raw).into_owned();
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

fn request(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req + "\r\n"
}

/// Plain HTTP to 127.0.0.1:`port`; status 0 when nothing answered.
fn http_get(port: u16, path: &str, host: &str, headers: &[(&str, &str)]) -> Http {
    let mut raw = Vec::new();
    let ok = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(request(path, host, headers).as_bytes())?;
        s.read_to_end(&mut raw)
    });
    if ok.is_err() {
        raw.clear();
    }
    parse_http(&raw)
}

/// HTTPS to 127.0.0.1:`port` with SNI `host`, trusting only `root_pem`: the answer and
/// the serial of the certificate nginx served, or why the handshake failed.
fn https_get(
    port: u16,
    host: &str,
    root_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Http, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request(path, host, headers).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let leaf = tls.conn.peer_certificates().unwrap()[0].clone();
    let serial = tls::inspect_der(&leaf).unwrap().serial;
    Ok((parse_http(&raw), serial))
}

/// After a reload, old workers may answer for a moment: poll until the new serial shows.
fn wait_for_serial(site: &Site, root: &str, serial: &str) {
    let start = Instant::now();
    loop {
        if let Ok((_, s)) = https_get(site.https, DOMAINS[0], root, "/", &[]) {
            if s == serial {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nginx does not serve certificate {serial} after the reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn domains() -> Vec<String> {
    DOMAINS.iter().map(|d| d.to_string()).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn letsencrypt_against_pebble_issues_serves_reuses_and_renews() {
    let http = free_port();
    let pebble = Pebble::start(http);
    for d in DOMAINS {
        pebble.add_a(d);
    }
    let domains = domains();
    let now = OffsetDateTime::now_utc();
    // First start: nginx runs the full TLS config on a placeholder, so port 80 answers HTTP-01.
    let placeholder = CertBundle::placeholder(&domains, now).unwrap();
    let conf = tls::nginx_tls_conf(&NginxTls::new(
        "shop",
        "web",
        &domains,
        TlsMode::LetsEncrypt,
    ))
    .unwrap();
    let site = Site::start(http, &conf, Some(&placeholder));
    let root = pebble.issuing_root();
    assert!(
        https_get(site.https, DOMAINS[0], &root, "/", &[]).is_err(),
        "the placeholder must not pass a client that trusts only pebble's root"
    );

    let mut cfg = AcmeConfig::new(domains.clone(), Some("ops@shop.test".into()));
    cfg.directory = pebble.directory.clone();
    cfg.ca_root_pem = Some(pebble.listener_pem.clone());
    let published = Arc::new(AtomicUsize::new(0));
    let challenges = DirChallenges {
        dir: site.acme_dir(),
        published: published.clone(),
    };
    let printer = Printer::new(true, true);

    // 1. Issue (real HTTP-01 through nginx), install, reload: HTTPS chains to pebble's root.
    let started = Instant::now();
    let outcome = tls::ensure(&cfg, None, &challenges, Some(&placeholder), now, &printer)
        .await
        .unwrap();
    let issue_time = started.elapsed();
    let Outcome::Issued {
        bundle: first,
        account,
    } = outcome
    else {
        panic!("expected a new certificate over the placeholder, got {outcome:?}");
    };
    assert!(
        published.load(Ordering::SeqCst) >= 1,
        "no HTTP-01 answer was published"
    );
    assert_eq!(
        std::fs::read_dir(site.acme_dir()).unwrap().count(),
        0,
        "answers are removed after the order"
    );
    let info = first.info().unwrap();
    let mut names = info.names.clone();
    names.sort();
    assert_eq!(
        names, domains,
        "the certificate names every domain (in any order)"
    );
    assert!(info.chain_len >= 2, "the chain includes the intermediate");
    assert!(
        info.issuer.contains("Pebble Intermediate CA"),
        "{}",
        info.issuer
    );
    CertBundle::from_pem(&first.cert_chain_pem, &first.key_pem).unwrap();
    site.install(&first);
    site.reload();
    wait_for_serial(&site, &root, &info.serial);
    eprintln!("issue time (order, HTTP-01 via nginx, finalize): {issue_time:?}");

    // 2. HTTPS answers with HSTS; a client's X-Forwarded-Proto is replaced by what nginx saw.
    let (answer, _) = https_get(
        site.https,
        DOMAINS[1],
        &root,
        "/page",
        &[
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let hsts = answer
        .header("Strict-Transport-Security")
        .expect("HSTS on HTTPS");
    let max_age: u64 = hsts
        .strip_prefix("max-age=")
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(max_age >= 31_536_000, "{hsts}");
    assert_eq!(answer.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(
        answer.body.contains("x-forwarded-proto: https\n"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("203.0.113.9"), "{}", answer.body);

    // 3. HTTP redirects to HTTPS (no HSTS over plain HTTP); the challenge path does not redirect.
    let plain = http_get(site.http, "/cart?x=1", DOMAINS[0], &[]);
    assert_eq!(plain.status, 301, "{plain:?}");
    assert_eq!(plain.header("Location"), Some("https://shop.test/cart?x=1"));
    assert_eq!(plain.header("Strict-Transport-Security"), None);
    let missing = http_get(
        site.http,
        "/.well-known/acme-challenge/none",
        DOMAINS[0],
        &[],
    );
    assert_eq!(missing.status, 404, "{missing:?}");

    // 4. A second run with the issued certificate makes no order.
    let orders = pebble.orders();
    assert!(
        orders >= 1,
        "pebble's log shows no order: {:?}",
        pebble.log_path()
    );
    let again = tls::ensure(
        &cfg,
        Some(&account),
        &challenges,
        Some(&first),
        now,
        &printer,
    )
    .await
    .unwrap();
    let Outcome::Reused { days_left, .. } = again else {
        panic!("expected the certificate to be kept, got {again:?}");
    };
    assert!(days_left > tls::RENEW_WITHIN_DAYS, "{days_left}");
    assert_eq!(
        pebble.orders(),
        orders,
        "a kept certificate made a new order"
    );

    // 5. Within the renewal window: a new order with the same account, and after the
    //    reload nginx serves the new serial.
    let later = first.not_after - time::Duration::days(10);
    let started = Instant::now();
    let renewed = tls::ensure(
        &cfg,
        Some(&account),
        &challenges,
        Some(&first),
        later,
        &printer,
    )
    .await
    .unwrap();
    let renew_time = started.elapsed();
    let Outcome::Issued {
        bundle: second,
        account: account2,
    } = renewed
    else {
        panic!("expected a renewal 10 days before expiry, got {renewed:?}");
    };
    assert_eq!(account2, account, "the stored account is reused");
    assert_eq!(pebble.orders(), orders + 1);
    let serial2 = second.info().unwrap().serial;
    assert_ne!(serial2, info.serial);
    site.install(&second);
    site.reload();
    wait_for_serial(&site, &root, &serial2);
    eprintln!("renewal time: {renew_time:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn behind_a_proxy_only_trusted_addresses_set_x_forwarded_proto() {
    let domains = domains();
    // 192.0.2.0/24 is documentation space: nobody in this test connects from it.
    let stranger = vec!["192.0.2.0/24".to_string()];
    let mut cfg = NginxTls::new("shop", "web", &domains, TlsMode::None);
    cfg.behind_proxy = true;
    cfg.trusted_proxies = &stranger;
    let site = Site::start(free_port(), &tls::nginx_tls_conf(&cfg).unwrap(), None);
    let sent = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];

    let untrusted = http_get(site.http, "/", DOMAINS[0], &sent);
    assert_eq!(untrusted.status, 200, "{untrusted:?}");
    assert!(
        untrusted.body.contains("x-forwarded-proto: http\n"),
        "{}",
        untrusted.body
    );
    assert!(
        !untrusted.body.contains("203.0.113.9"),
        "{}",
        untrusted.body
    );
    assert_eq!(untrusted.header("Strict-Transport-Security"), None);

    // Our connections reach nginx from the network's gateway: trust exactly that address.
    let gateway = vec![site.gateway()];
    cfg.trusted_proxies = &gateway;
    site.write_conf(&tls::nginx_tls_conf(&cfg).unwrap());
    site.reload();
    let start = Instant::now();
    let trusted = loop {
        let r = http_get(site.http, "/", DOMAINS[0], &sent);
        if r.body.contains("x-forwarded-proto: https\n")
            || start.elapsed() > Duration::from_secs(10)
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        trusted.body.contains("x-forwarded-proto: https\n"),
        "{}",
        trusted.body
    );
    assert!(
        trusted.body.contains("x-forwarded-for: 203.0.113.9\n"),
        "{}",
        trusted.body
    );
    assert!(
        trusted.header("Strict-Transport-Security").is_some(),
        "{trusted:?}"
    );
    // A trusted proxy still cannot send a made-up scheme.
    let odd = http_get(
        site.http,
        "/",
        DOMAINS[0],
        &[("X-Forwarded-Proto", "gopher")],
    );
    assert!(
        odd.body.contains("x-forwarded-proto: http\n"),
        "{}",
        odd.body
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_nginx_does_not_serve_fails_validation_naming_the_domain() {
    let http = free_port();
    let pebble = Pebble::start(http);
    pebble.add_a(DOMAINS[0]);
    let domains = vec![DOMAINS[0].to_string()];
    let now = OffsetDateTime::now_utc();
    let placeholder = CertBundle::placeholder(&domains, now).unwrap();
    let conf = tls::nginx_tls_conf(&NginxTls::new(
        "shop",
        "web",
        &domains,
        TlsMode::LetsEncrypt,
    ))
    .unwrap();
    let _site = Site::start(http, &conf, Some(&placeholder));
    let mut cfg = AcmeConfig::new(domains, None);
    cfg.directory = pebble.directory.clone();
    cfg.ca_root_pem = Some(pebble.listener_pem.clone());
    // The answers go somewhere nginx does not serve, so pebble's fetch gets a 404.
    let elsewhere = tempfile::tempdir().unwrap();
    let challenges = DirChallenges {
        dir: elsewhere.path().to_path_buf(),
        published: Arc::new(AtomicUsize::new(0)),
    };
    let err = tls::ensure(
        &cfg,
        None,
        &challenges,
        None,
        now,
        &Printer::new(true, true),
    )
    .await
    .unwrap_err();
    let tls::TlsError::Validation { domain, detail } = &err else {
        panic!("expected a validation failure, got {err:?}");
    };
    eprintln!("the error a user sees: {err}");
    assert_eq!(domain, DOMAINS[0]);
    assert!(detail.contains("404"), "{detail}");
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "answers are removed on failure too"
    );
}
