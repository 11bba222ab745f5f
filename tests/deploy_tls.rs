//! `countable deploy` with `tls: letsencrypt` against real parts: a scaffolded project
//! deployed over ssh:// to a test host (a second dockerd in a network namespace),
//! Debian's pebble as the ACME server validating HTTP-01 at the host's address (its mock
//! DNS resolves shop.test there), and checks made from outside with curl and openssl:
//! HTTPS chains to pebble's issuing root, a second deploy makes no order, a forced
//! renewal installs a new certificate and reloads the same nginx, and HTTP redirects.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/pebble.rs"]
mod pebble;

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)]
use common::free_port;
use common::hosts::TestHost;
use common::{countable, image_flags, run, sh, unique_name, Run, DB_IMAGE, NGINX_IMAGE};
use pebble::Pebble;

const DOMAIN: &str = "shop.test";

struct Site {
    _tmp: tempfile::TempDir,
    name: String,
    backups: PathBuf,
    root: PathBuf,
    home: PathBuf,
    roots: PathBuf,
    issuing: PathBuf,
    host: TestHost,
}

impl Site {
    fn countable(&self, args: &[&str]) -> Command {
        let mut c = countable(&self.root);
        c.args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("COUNTABLE_AGE_KEY_FILE")
            .env_remove("COUNTABLE_TLS_RENEW_DAYS")
            .env("PATH", self.host.path_env())
            .env("COUNTABLE_ACME_CA_ROOT", &self.roots);
        c
    }

    fn deploy(&self, renew_days: Option<&str>) -> Run {
        let mut c = self.countable(&["deploy", "prod"]);
        if let Some(d) = renew_days {
            c.env("COUNTABLE_TLS_RENEW_DAYS", d);
        }
        let r = run(&mut c);
        eprintln!("--- deploy stderr ---\n{}", r.stderr);
        r.ok()
    }

    fn resolve(&self) -> String {
        format!("{DOMAIN}:443:{}", self.host.addr())
    }

    /// `curl` over HTTPS to shop.test at the host, trusting only pebble's root.
    fn https(&self, path: &str) -> Run {
        run(Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "--resolve",
                &self.resolve(),
            ])
            .arg("--cacert")
            .arg(&self.issuing)
            .arg(format!("https://{DOMAIN}{path}")))
    }

    /// The serial of the certificate nginx serves for shop.test.
    fn serial(&self) -> String {
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect {}:443 -servername {DOMAIN} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            self.host.addr()
        )));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().to_string()
    }

    fn nginx_id(&self, project: &str) -> String {
        let r = self.host.docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            "label=com.docker.compose.service=nginx",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout.trim().to_string()
    }
}

/// `curl -i` for `http://ADDR/` with `Host: shop.test` and the client's own
/// `X-Forwarded-Proto: https`, sent from this machine (10.231.0.1 on the test bridge) or,
/// with `ns`, from inside that network namespace (another address).
fn claims_https(addr: &str, ns: Option<&str>) -> Run {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    c.args(["-sS", "-i", "--max-time", "10", "-H", "Host: shop.test"])
        .args(["-H", "X-Forwarded-Proto: https"])
        .arg(format!("http://{addr}/"));
    let r = run(&mut c);
    assert_eq!(r.code, 0, "curl: {}", r.stderr);
    r
}

/// The scaffold's own .env values, as KEY=value pairs for `secrets set`.
fn env_pairs(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join(".env")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.starts_with('#') || k.trim().is_empty() {
            continue;
        }
        let v = v.trim().trim_matches('\'').trim_matches('"');
        let v = match k {
            "DJANGO_DEBUG" => "0",
            // Django redirects what it sees as plain HTTP: the scheme nginx passed shows.
            "DJANGO_SECURE_SSL_REDIRECT" => "1",
            "DJANGO_ALLOWED_HOSTS" => "shop.test,localhost,127.0.0.1",
            _ => v,
        };
        if v.is_empty() {
            continue;
        }
        out.push(format!("{k}={v}"));
    }
    out
}

impl Site {
    /// A scaffolded project on test host `n`, committed, with prod's secrets set and
    /// `env_yaml` (TLS keys) added to prod; `roots` becomes COUNTABLE_ACME_CA_ROOT and
    /// `trust` what curl trusts. `prepare` adds files to the project before the commit.
    fn new(n: u8, env_yaml: &str, roots: &str, trust: &str, prepare: impl FnOnce(&Path)) -> Self {
        common::require_images();
        let host = TestHost::start(&unique_name("tlsdep"), n, &[DB_IMAGE, NGINX_IMAGE]);
        let tmp = tempfile::tempdir().unwrap();
        let name = unique_name("tlsdeploy");
        run(countable(tmp.path())
            .args(["new", &name, "--yes"])
            .args(image_flags(80)))
        .ok();
        let root = tmp.path().join(&name);
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let issuing = tmp.path().join("trust.pem");
        std::fs::write(&issuing, trust).unwrap();
        let roots_file = tmp.path().join("roots.pem");
        std::fs::write(&roots_file, roots).unwrap();
        let backups = tmp.path().join("backups");
        std::fs::create_dir_all(&backups).unwrap();
        // The test host's engine shares this machine's filesystem: releases go to the temp dir.
        let release_root = tmp.path().join("srv");
        let yml = root.join("countable.yml");
        let text = std::fs::read_to_string(&yml).unwrap();
        let head = &text[..text.find("environments:").unwrap()];
        std::fs::write(
            &yml,
            format!(
                "{head}environments:\n  prod:\n    branch: master\n    docker_host: {}\n    backups: {}\n    release_root: {}\n    domains: [{DOMAIN}]\n{env_yaml}",
                host.docker_host(),
                backups.display(),
                release_root.display(),
            ),
        )
        .unwrap();
        prepare(&root);
        let site = Site {
            name,
            root: root.clone(),
            home,
            roots: roots_file,
            issuing,
            backups,
            host,
            _tmp: tmp,
        };
        run(&mut site.countable(&["secrets", "keygen", "--name", "ci"])).ok();
        let pairs = env_pairs(&root);
        let mut args = vec!["secrets", "set", "prod"];
        args.extend(pairs.iter().map(String::as_str));
        run(&mut site.countable(&args)).ok();
        if !root.join(".git").exists() {
            sh(&root, "git init -q -b master");
        }
        sh(
            &root,
            "git add -A && git -c user.email=t@shop.test -c user.name=t commit -qm init && git branch -M master",
        );
        site
    }
}

#[test]
fn behind_a_proxy_then_letsencrypt_serves_https_reuses_and_renews() {
    let pebble = Pebble::start(80);
    let issuing = pebble.issuing_root();
    let letsencrypt = format!(
        "    tls: letsencrypt\n    acme_email: ops@shop.test\n    acme_directory: {}\n",
        pebble.directory
    );
    // First behind a load balancer that ends TLS: only this machine (10.231.0.1, the
    // test bridge's address) is a trusted proxy.
    let site = Site::new(
        6,
        "    tls: none\n    behind_proxy: true\n    trusted_proxies: [10.231.0.1/32]\n",
        &format!("{}{issuing}", pebble.listener_pem),
        &issuing,
        |_| {},
    );
    pebble.add_a_at(DOMAIN, site.host.addr());
    let name = site.name.clone();
    let backups = site.backups.clone();
    site.deploy(None);
    assert_eq!(pebble.orders(), 0, "tls: none orders nothing");
    // The trusted proxy's X-Forwarded-Proto is believed: Django sees HTTPS (no redirect)
    // and nginx adds HSTS, as it does for HTTPS.
    let trusted = claims_https(site.host.addr(), None);
    assert!(trusted.stdout.starts_with("HTTP/1.1 200"), "{}", trusted.stdout);
    assert!(
        trusted.stdout.to_ascii_lowercase().contains("strict-transport-security:"),
        "{}",
        trusted.stdout
    );
    // Anyone else's is overwritten with what nginx saw (http): Django redirects to HTTPS.
    let other = claims_https(site.host.addr(), Some(site.host.namespace()));
    assert!(other.stdout.starts_with("HTTP/1.1 301"), "untrusted X-Forwarded-Proto is ignored: {}", other.stdout);
    assert!(
        other.stdout.to_ascii_lowercase().contains("location: https://shop.test/"),
        "{}",
        other.stdout
    );
    assert!(
        !other.stdout.to_ascii_lowercase().contains("strict-transport-security:"),
        "{}",
        other.stdout
    );

    // Then TLS on the host itself: a running environment moves from `tls: none` to
    // `tls: letsencrypt` in one deploy (nginx is recreated with port 443 before the order).
    let yml = site.root.join("countable.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    let cut = text.find("    tls: none").unwrap();
    std::fs::write(&yml, format!("{}{letsencrypt}", &text[..cut])).unwrap();
    sh(&site.root, "git -c user.email=t@shop.test -c user.name=t commit -qam 'tls: letsencrypt'");
    let r = site.deploy(None);
    assert!(r.stderr.contains("recreating nginx with release 2"), "{}", r.stderr);
    // pebble rejects 5% of nonces and the client retries, so one order can be logged
    // twice: counts are compared, never taken as exact.
    let ordered = pebble.orders();
    assert!(ordered >= 1, "the first deploy orders");
    let account = std::fs::read(backups.join("tls.acme.json")).expect("the account is stored");
    let r = site.https("/healthz");
    assert_eq!(r.code, 0, "HTTPS with pebble's root only: {}", r.stderr);
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    let lower = r.stdout.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=63072000"),
        "{}",
        r.stdout
    );
    let plain = run(Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-H", "Host: shop.test"])
        .arg(format!("http://{}/some/page?x=1", site.host.addr())));
    assert!(
        plain.stdout.starts_with("HTTP/1.1 301"),
        "HTTP redirects: {}",
        plain.stdout
    );
    assert!(
        plain
            .stdout
            .to_ascii_lowercase()
            .contains("location: https://shop.test/some/page?x=1"),
        "{}",
        plain.stdout
    );
    let first = site.serial();
    let project = format!("{name}-prod");
    let nginx = site.nginx_id(&project);
    assert!(!nginx.is_empty());

    // Second deploy: the certificate has years left, so no order.
    let r = site.deploy(None);
    assert!(r.stderr.contains("no new order"), "{}", r.stderr);
    assert_eq!(
        pebble.orders(),
        ordered,
        "a second deploy makes no new order"
    );
    assert_eq!(site.serial(), first);

    // Forced renewal: a new certificate, installed by a reload of the same nginx.
    let r = site.deploy(Some("100000"));
    assert!(r.stderr.contains("nginx reloaded"), "{}", r.stderr);
    assert!(pebble.orders() > ordered, "renewal orders");
    let renewed = site.serial();
    assert_ne!(renewed, first, "nginx serves the renewed certificate");
    assert_eq!(site.nginx_id(&project), nginx, "reloaded, not recreated");
    let r = site.https("/healthz");
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    // The stored account was reused for the renewal, not replaced.
    assert_eq!(
        std::fs::read(backups.join("tls.acme.json")).unwrap(),
        account,
        "one ACME account for both orders"
    );
}

#[test]
fn manual_certificate_is_served() {
    let made = |root: &Path| {
        std::fs::create_dir_all(root.join("tls")).unwrap();
        let r = run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "90", "-subj", "/CN=shop.test"])
            .args(["-addext", "subjectAltName=DNS:shop.test"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-keyout", "tls/privkey.pem", "-out", "tls/fullchain.pem"])
            .current_dir(root));
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    // The certificate is made inside `prepare`; read it back for the trust files.
    let dir = tempfile::tempdir().unwrap();
    made(dir.path());
    let cert = std::fs::read_to_string(dir.path().join("tls/fullchain.pem")).unwrap();
    let key = std::fs::read(dir.path().join("tls/privkey.pem")).unwrap();
    let site = Site::new(
        7,
        "    tls: manual\n    tls_certificate: tls/fullchain.pem\n    tls_key: tls/privkey.pem\n",
        &cert,
        &cert,
        |root| {
            std::fs::create_dir_all(root.join("tls")).unwrap();
            std::fs::write(root.join("tls/fullchain.pem"), &cert).unwrap();
            std::fs::write(root.join("tls/privkey.pem"), &key).unwrap();
        },
    );
    let r = site.deploy(None);
    assert!(
        r.stderr
            .contains("installed the certificate from tls/fullchain.pem"),
        "{}",
        r.stderr
    );
    let r = site.https("/healthz");
    assert_eq!(r.code, 0, "HTTPS with the user's certificate: {}", r.stderr);
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    let want = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(dir.path().join("tls/fullchain.pem")));
    assert_eq!(site.serial(), want.stdout.trim());
    let plain = run(Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-H", "Host: shop.test"])
        .arg(format!("http://{}/", site.host.addr())));
    assert!(plain.stdout.starts_with("HTTP/1.1 301"), "{}", plain.stdout);
}
