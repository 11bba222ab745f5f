//! The production nginx config (templates/nginx/tls.conf.j2): port 80 answers HTTP-01 and
//! redirects, port 443 serves the certificate with HSTS, and X-Forwarded-Proto is taken
//! only from trusted proxies. Every value is validated before it reaches the template,
//! so no setting can inject nginx directives. Renders text only; never writes files.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};

use super::TlsError;

const TEMPLATE: &str = include_str!("../../templates/nginx/tls.conf.j2");

/// Where nginx reads HTTP-01 answers (a volume the deploy writes token files into).
pub const ACME_WEBROOT: &str = "/var/www/acme";
/// Where the deploy puts the chain and key in the nginx container.
pub const DEFAULT_CERT_PATH: &str = "/etc/nginx/tls/fullchain.pem";
pub const DEFAULT_KEY_PATH: &str = "/etc/nginx/tls/privkey.pem";
/// Two years, the HSTS preload list's expectation (at least one year).
pub const HSTS_MAX_AGE: u32 = 63_072_000;

/// `tls:` in countable.yml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    LetsEncrypt,
    Manual,
    None,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::LetsEncrypt => "letsencrypt",
            TlsMode::Manual => "manual",
            TlsMode::None => "none",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "letsencrypt" => Ok(TlsMode::LetsEncrypt),
            "manual" => Ok(TlsMode::Manual),
            "none" => Ok(TlsMode::None),
            other => Err(format!(
                "tls must be letsencrypt, manual or none, not {other:?}"
            )),
        }
    }
}

/// Everything the TLS nginx config depends on.
#[derive(Debug, Clone)]
pub struct NginxTls<'a> {
    /// For the config's header comment.
    pub project: &'a str,
    /// The compose service gunicorn runs in (`$app` is `http://<web_service>:<web_port>`).
    pub web_service: &'a str,
    pub web_port: u16,
    pub domains: &'a [String],
    pub mode: TlsMode,
    pub cert_path: &'a str,
    pub key_path: &'a str,
    pub behind_proxy: bool,
    /// Addresses or CIDR ranges whose X-Forwarded-Proto/-For are believed.
    pub trusted_proxies: &'a [String],
}

impl<'a> NginxTls<'a> {
    /// The default paths, not behind a proxy.
    pub fn new(
        project: &'a str,
        web_service: &'a str,
        domains: &'a [String],
        mode: TlsMode,
    ) -> Self {
        Self {
            project,
            web_service,
            web_port: 8000,
            domains,
            mode,
            cert_path: DEFAULT_CERT_PATH,
            key_path: DEFAULT_KEY_PATH,
            behind_proxy: false,
            trusted_proxies: &[],
        }
    }
}

/// Render the config for /etc/nginx/conf.d/ (it replaces the scaffold's plain server).
pub fn nginx_tls_conf(site: &NginxTls<'_>) -> Result<String, TlsError> {
    if site.domains.is_empty() && site.mode != TlsMode::None {
        return Err(TlsError::NoDomains);
    }
    for d in site.domains {
        check_domain(d)?;
    }
    let proxies = site
        .trusted_proxies
        .iter()
        .map(|c| check_cidr(c))
        .collect::<Result<Vec<_>, _>>()?;
    if site.behind_proxy && proxies.is_empty() {
        return Err(TlsError::NoTrustedProxies);
    }
    for p in [
        site.cert_path,
        site.key_path,
        site.web_service,
        site.project,
    ] {
        check_path(p)?;
    }
    let server_names = if site.domains.is_empty() {
        "_".to_string()
    } else {
        site.domains.join(" ")
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.render_str(
        TEMPLATE,
        context! {
            project => site.project,
            web_service => site.web_service,
            web_port => site.web_port,
            mode => site.mode.as_str(),
            server_names,
            cert_path => site.cert_path,
            key_path => site.key_path,
            behind_proxy => site.behind_proxy,
            trusted_proxies => if site.behind_proxy { proxies } else { Vec::new() },
            acme_root => ACME_WEBROOT,
            hsts_max_age => HSTS_MAX_AGE,
        },
    )
    .map_err(|e| TlsError::Template(format!("{e:#}")))
}

/// A DNS name (optionally `*.` wildcard): letters, digits, `-` and dots (case does not matter).
pub(super) fn check_domain(d: &str) -> Result<(), TlsError> {
    let lower = d.to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.parse::<IpAddr>().is_err()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadDomain(d.to_string()))
    }
}

/// `addr` or `addr/prefix`, normalised as nginx reads it.
fn check_cidr(c: &str) -> Result<String, TlsError> {
    let bad = || TlsError::BadCidr(c.to_string());
    let (addr, prefix) = match c.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (c, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok(ip.to_string()),
        Some(p) => {
            let p: u8 = p.parse().map_err(|_| bad())?;
            if p > max {
                return Err(bad());
            }
            Ok(format!("{ip}/{p}"))
        }
    }
}

fn check_path(p: &str) -> Result<(), TlsError> {
    let ok = !p.is_empty()
        && !p
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"';{}$#\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadPath(p.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["shop.test".into(), "www.shop.test".into()]
    }

    #[test]
    fn letsencrypt_config_has_challenge_redirect_and_hsts() {
        let d = domains();
        let conf = nginx_tls_conf(&NginxTls::new("shop", "web", &d, TlsMode::LetsEncrypt)).unwrap();
        assert!(conf
            .contains("location ^~ /.well-known/acme-challenge/ {\n        alias /var/www/acme/;"));
        assert!(conf.contains("return 301 https://$host$request_uri;"));
        assert!(conf.contains("listen 443 ssl default_server;"));
        assert!(conf.contains("server_name shop.test www.shop.test;"));
        assert!(conf.contains("ssl_certificate /etc/nginx/tls/fullchain.pem;"));
        assert!(conf.contains("https \"max-age=63072000\";"));
        assert!(conf.contains("set $app http://web:8000;"));
        let mut other = NginxTls::new("shop", "app", &d, TlsMode::LetsEncrypt);
        other.web_port = 8080;
        assert!(nginx_tls_conf(&other)
            .unwrap()
            .contains("set $app http://app:8080;"));
        assert!(conf.contains("include /etc/nginx/countable/*.conf;"));
        assert!(conf.contains("resolver 127.0.0.11 valid=1s ipv6=off;"));
        assert!(!conf.contains("set_real_ip_from"));
        // One shared macro for both servers' locations: port 80 only redirects.
        assert_eq!(conf.matches("proxy_pass $app;").count(), 1);
    }

    #[test]
    fn behind_proxy_trusts_only_the_listed_ranges() {
        let d = domains();
        let proxies = vec!["10.0.0.0/8".to_string(), "192.0.2.7".to_string()];
        let mut site = NginxTls::new("shop", "web", &d, TlsMode::None);
        site.behind_proxy = true;
        site.trusted_proxies = &proxies;
        let conf = nginx_tls_conf(&site).unwrap();
        assert!(conf.contains("geo $realip_remote_addr $countable_trusted_proxy {"));
        assert!(conf.contains("    10.0.0.0/8 1;\n    192.0.2.7 1;\n}"));
        assert!(conf.contains("set_real_ip_from 10.0.0.0/8;"));
        assert!(!conf.contains("listen 443"));
        assert!(!conf.contains("return 301"));
        // With TLS behind a proxy, port 80 redirects only what did not arrive as https.
        site.mode = TlsMode::Manual;
        let conf = nginx_tls_conf(&site).unwrap();
        assert!(conf.contains("if ($countable_forwarded_proto != \"https\") {"));
        assert_eq!(conf.matches("proxy_pass $app;").count(), 2);
    }

    #[test]
    fn values_cannot_inject_directives() {
        let d = vec!["shop.test; include /etc/passwd".to_string()];
        assert!(matches!(
            nginx_tls_conf(&NginxTls::new("shop", "web", &d, TlsMode::Manual)),
            Err(TlsError::BadDomain(_))
        ));
        let d = domains();
        let bad = vec!["10.0.0.0/8 1; default 1".to_string()];
        let mut site = NginxTls::new("shop", "web", &d, TlsMode::None);
        site.behind_proxy = true;
        site.trusted_proxies = &bad;
        assert!(matches!(nginx_tls_conf(&site), Err(TlsError::BadCidr(_))));
        site.trusted_proxies = &[];
        assert!(matches!(
            nginx_tls_conf(&site),
            Err(TlsError::NoTrustedProxies)
        ));
        let mut site = NginxTls::new("shop", "web", &d, TlsMode::Manual);
        site.cert_path = "/x.pem; ssl_verify_client off";
        assert!(matches!(nginx_tls_conf(&site), Err(TlsError::BadPath(_))));
        assert!(check_domain("Shop.test").is_ok());
        assert!(check_domain("shop_test").is_err());
        assert!(check_domain("-shop.test").is_err());
        assert!(check_domain("*.shop.test").is_ok());
        assert!(check_domain("127.0.0.1").is_err());
    }

    /// Compare the three shapes with tests/golden/tls/; UPDATE_GOLDEN=1 rewrites them.
    #[test]
    fn renders_match_golden_files() {
        let d = domains();
        let proxies = vec!["10.0.0.0/8".to_string()];
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tls");
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for (name, mode, behind) in [
            ("letsencrypt", TlsMode::LetsEncrypt, false),
            ("proxy-none", TlsMode::None, true),
            ("proxy-manual", TlsMode::Manual, true),
        ] {
            let mut site = NginxTls::new("shop", "web", &d, mode);
            site.behind_proxy = behind;
            site.trusted_proxies = &proxies;
            let conf = nginx_tls_conf(&site).unwrap();
            let path = golden.join(format!("{name}.conf.golden"));
            if update {
                std::fs::create_dir_all(&golden).unwrap();
                std::fs::write(&path, &conf).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!("missing {} (UPDATE_GOLDEN=1 cargo test)", path.display())
            });
            assert_eq!(conf, want, "{name} differs from its golden file");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("letsencrypt".parse::<TlsMode>(), Ok(TlsMode::LetsEncrypt));
        assert!("lets-encrypt".parse::<TlsMode>().is_err());
    }
}
