//! TLS in a deploy (`tls: letsencrypt|manual`, `behind_proxy`): the release's nginx
//! config rendered by `crate::tls` in place of the project's plain one, the certificate
//! and key kept on the host in `<home>/tls/` and the HTTP-01 answers in `<home>/acme/`
//! (bind-mounted read-only into nginx at /etc/nginx/tls and /var/www/acme by the
//! release override, with port 443 published), a self-signed placeholder so nginx can
//! start before the first order, and `ensure` run with nginx up: the certificate nginx
//! serves is read back from the nginx container, so no order is made while it has more
//! than 30 days left; a new one is installed and nginx reloaded. The ACME account (it
//! holds a private key) lives in the environment's store as `tls.acme.json`, beside the
//! release ledger, so Jenkins and a laptop share one account.
//!
//! It never prints a private key, and never switches releases (run.rs does).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::gate::Probe;
use super::settings::Settings;
use crate::engine::{Engine, FileEntry};
use crate::error::Hint;
use crate::names::EnvName;
use crate::project::{Environment, Project, TlsMode as ConfigMode};
use crate::tls::{
    self, AcmeAccount, AcmeConfig, CertBundle, Challenges, NginxTls, Outcome, TlsMode,
    ACME_WEBROOT, DEFAULT_CERT_PATH, DEFAULT_KEY_PATH, RENEW_WITHIN_DAYS,
};
use crate::ui::Printer;

/// Where the ACME account is kept in the environment's store.
pub const ACCOUNT_KEY: &str = "tls.acme.json";
/// A PEM file of extra roots: the only roots trusted for the ACME server's own HTTPS,
/// and trusted besides the platform's for the health gate's HTTPS request (a test CA
/// such as pebble, or Let's Encrypt staging).
pub const CA_ROOT_ENV: &str = "COUNTABLE_ACME_CA_ROOT";
/// Renew when fewer than this many days are left (default 30).
pub const RENEW_DAYS_ENV: &str = "COUNTABLE_TLS_RENEW_DAYS";
/// The file the project's nginx config is mounted as; the TLS config replaces it.
pub const NGINX_CONF: &str = "/etc/nginx/conf.d/default.conf";
/// The certificate directory in nginx, from the default paths.
const TLS_IN_NGINX: &str = "/etc/nginx/tls";
const MOUNT: &str = "/countable-home";

/// An environment's TLS settings from countable.yml.
#[derive(Debug, Clone)]
pub struct Site {
    pub mode: TlsMode,
    pub domains: Vec<String>,
    pub acme_email: Option<String>,
    pub acme_directory: Option<String>,
    /// `tls: manual`: chain and key files, relative to the project.
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub behind_proxy: bool,
    pub trusted_proxies: Vec<String>,
    env_name: String,
    environment: Environment,
    root: PathBuf,
}

impl Site {
    pub fn resolve(project: &Project, env: &EnvName, e: &Environment) -> Self {
        Self {
            mode: match e.tls.unwrap_or_default() {
                ConfigMode::Letsencrypt => TlsMode::LetsEncrypt,
                ConfigMode::Manual => TlsMode::Manual,
                ConfigMode::None => TlsMode::None,
            },
            domains: e.domains.clone(),
            acme_email: e.acme_email.clone(),
            acme_directory: e.acme_directory.clone(),
            certificate: e.tls_certificate.clone(),
            key: e.tls_key.clone(),
            behind_proxy: e.behind_proxy,
            trusted_proxies: e.trusted_proxies.clone(),
            env_name: env.to_string(),
            environment: e.clone(),
            root: project.root.clone(),
        }
    }

    /// countable writes nginx's config (TLS here, or a proxy in front).
    pub fn active(&self) -> bool {
        self.mode != TlsMode::None || self.behind_proxy
    }

    /// nginx serves HTTPS itself (port 443, port 80 redirects).
    pub fn https(&self) -> bool {
        self.mode != TlsMode::None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployTlsError {
    #[error("the {service} service mounts no file at {NGINX_CONF}, so countable cannot give nginx its TLS config")]
    NoConf { service: String },
    #[error("tls: manual needs `{0}` in countable.yml (a file in the project)")]
    ManualUnset(&'static str),
    #[error("cannot read {path} (tls: manual): {source}")]
    ManualRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{CA_ROOT_ENV} names {path}, which cannot be read: {source}")]
    CaRoot {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{RENEW_DAYS_ENV} is {0:?}, not a whole number of days")]
    RenewDays(String),
    #[error("the health gate needs an address for {0}, and none was found")]
    NoAddress(String),
    #[error("on the host, {what} failed: {detail}")]
    Host { what: String, detail: String },
}

impl Hint for DeployTlsError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            DeployTlsError::NoConf { .. } => format!(
                "mount the project's nginx config as in the scaffold: `- ./nginx/default.conf:{NGINX_CONF}:ro`"
            ),
            DeployTlsError::ManualUnset(key) => {
                format!("add `{key}: tls/fullchain.pem`-style paths to the environment, or set `tls: letsencrypt`")
            }
            DeployTlsError::ManualRead { .. } => {
                "commit the certificate chain, and keep the key out of git (e.g. a path Jenkins provides); check the paths in countable.yml".into()
            }
            DeployTlsError::CaRoot { .. } => format!("point {CA_ROOT_ENV} at a PEM file, or unset it"),
            DeployTlsError::RenewDays(_) => format!("unset {RENEW_DAYS_ENV}, or give days, e.g. `{RENEW_DAYS_ENV}=30`"),
            DeployTlsError::NoAddress(_) => {
                "set the environment's `url` (e.g. `url: https://shop.example.com`)".into()
            }
            DeployTlsError::Host { .. } => {
                "check the host's disk and that nginx runs: `docker compose ps` on the host".into()
            }
        })
    }
}
crate::register_hint!(DeployTlsError);

/// Lines for the nginx service in the release override: port 443 and the two
/// directories on the host. Empty when nginx serves no TLS.
pub fn nginx_override(s: &Settings) -> String {
    if !s.site.https() {
        return String::new();
    }
    let home = s.home();
    format!(
        "    ports:\n      - \"443:443\"\n    volumes:\n      - \"{home}/tls:{TLS_IN_NGINX}:ro\"\n      - \"{home}/acme:{ACME_WEBROOT}:ro\"\n"
    )
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The project's file mounted at [`NGINX_CONF`], relative to the project directory.
fn conf_source(config_json: &str, s: &Settings) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let prefix = format!("{}/", s.current_dir().trim_end_matches('/'));
    v.get("services")?
        .get(&s.nginx)?
        .get("volumes")?
        .as_array()?
        .iter()
        .find(|m| m.get("target").and_then(|t| t.as_str()) == Some(NGINX_CONF))
        .and_then(|m| m.get("source")?.as_str()?.strip_prefix(&prefix))
        .map(str::to_string)
}

/// The nginx config for the environment.
pub fn render_conf(s: &Settings) -> Result<String, tls::TlsError> {
    let site = &s.site;
    let mut n = NginxTls::new(&s.project, &s.web, &site.domains, site.mode);
    n.web_port = s.web_port;
    n.behind_proxy = site.behind_proxy;
    n.trusted_proxies = &site.trusted_proxies;
    tls::nginx_tls_conf(&n)
}

/// Before the release directory is written: replace the project's nginx config in
/// `bundle` by the TLS one (changing nginx's hash so compose recreates it), and make
/// sure the host has a certificate nginx can start with: the user's (`manual`, checked),
/// else the one there, else a placeholder.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    host: &Engine,
    s: &Settings,
    tree: &Path,
    image: &str,
    config_json: &str,
    bundle: &mut Vec<FileEntry>,
    hashes: &mut BTreeMap<String, String>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let site = &s.site;
    if !site.active() {
        return Ok(());
    }
    let rel = conf_source(config_json, s).ok_or_else(|| DeployTlsError::NoConf {
        service: s.nginx.clone(),
    })?;
    let conf = render_conf(s)?;
    bundle.retain(|f| f.path != rel);
    bundle.push(FileEntry {
        path: rel,
        bytes: conf.clone().into_bytes(),
        mode: 0o644,
    });
    let before = hashes.get(&s.nginx).cloned().unwrap_or_default();
    hashes.insert(
        s.nginx.clone(),
        short_hash(&[before.as_bytes(), conf.as_bytes()]),
    );
    if !site.https() {
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let helper = Helper::open(host, s, image).await?;
    let result = async {
        helper
            .sh(&format!(
                "mkdir -p {MOUNT}/tls {MOUNT}/acme && chmod 0700 {MOUNT}/tls && chmod 0755 {MOUNT}/acme"
            ))
            .await?;
        match site.mode {
            TlsMode::Manual => {
                let read = |key: &'static str, v: &Option<String>| -> anyhow::Result<String> {
                    let v = v.as_ref().ok_or(DeployTlsError::ManualUnset(key))?;
                    let path = tree.join(v);
                    std::fs::read_to_string(&path).map_err(|source| {
                        DeployTlsError::ManualRead {
                            path: path.display().to_string(),
                            source,
                        }
                        .into()
                    })
                };
                let chain = read("tls_certificate", &site.certificate)?;
                let key = read("tls_key", &site.key)?;
                let b = CertBundle::manual(&chain, &key, &site.domains, now)?;
                if helper.read("tls/fullchain.pem").await?.as_deref() != Some(chain.as_str()) {
                    helper.install(&b).await?;
                    printer.status(&format!(
                        "installed the certificate from {} (valid until {})",
                        site.certificate.as_deref().unwrap_or_default(),
                        b.not_after.date()
                    ));
                }
            }
            _ => {
                let current = helper.read("tls/fullchain.pem").await?;
                let usable = current.as_deref().and_then(|c| tls::inspect(c).ok());
                if usable.is_none() {
                    helper
                        .install(&CertBundle::placeholder(&site.domains, now)?)
                        .await?;
                    printer.status("a self-signed placeholder certificate lets nginx start before the first order");
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    helper.close().await;
    result
}

/// With nginx up on the release's config (`tls: letsencrypt`): keep the certificate
/// nginx serves while it has more than the renewal window left, else order one over
/// HTTP-01, install it and reload nginx.
pub async fn ensure(
    host: &Engine,
    s: &Settings,
    image: &str,
    nginx: &str,
    printer: &Printer,
) -> anyhow::Result<()> {
    let site = &s.site;
    if site.mode != TlsMode::LetsEncrypt {
        return Ok(());
    }
    let mut cfg = AcmeConfig::new(site.domains.clone(), site.acme_email.clone());
    if let Some(d) = &site.acme_directory {
        cfg.directory = d.clone();
    }
    cfg.ca_root_pem = extra_roots()?.map(|b| String::from_utf8_lossy(&b).into_owned());
    cfg.renew_within_days = renew_days()?;

    // What nginx serves now, read back from its container.
    let served = host
        .exec_capture(nginx, &["cat", DEFAULT_CERT_PATH], &[])
        .await?;
    let current = (served.code == 0)
        .then(|| {
            tls::inspect(&served.stdout)
                .ok()
                .map(|i| (served.stdout.clone(), i))
        })
        .flatten()
        .map(|(pem, info)| CertBundle {
            cert_chain_pem: pem,
            key_pem: String::new(),
            not_after: info.not_after,
        });
    let now = time::OffsetDateTime::now_utc();
    if let tls::Decision::Reuse { days_left, .. } = tls::decide(&cfg, current.as_ref(), now) {
        printer.status(&format!(
            "the certificate for {} has {days_left} days left: no new order",
            site.domains.join(", ")
        ));
        return Ok(());
    }
    let store =
        crate::store::Store::for_environment(&site.env_name, &site.environment, &site.root).await?;
    let account = match store.get_small(ACCOUNT_KEY).await? {
        Some(b) => Some(AcmeAccount::from_json(&String::from_utf8_lossy(&b))?),
        None => None,
    };
    let helper = Helper::open(host, s, image).await?;
    let result = async {
        let outcome = tls::ensure(
            &cfg,
            account.as_ref(),
            &helper,
            current.as_ref(),
            now,
            printer,
        )
        .await?;
        if let Outcome::Issued {
            bundle,
            account: used,
        } = outcome
        {
            helper.install(&bundle).await?;
            if account.as_ref() != Some(&used) {
                store
                    .put_small(ACCOUNT_KEY, used.to_json().as_bytes().to_vec())
                    .await?;
            }
            reload(host, nginx).await?;
            printer.status("nginx reloaded with the new certificate");
        }
        anyhow::Ok(())
    }
    .await;
    helper.close().await;
    result
}

/// `nginx -t`, then a graceful reload.
pub async fn reload(host: &Engine, nginx: &str) -> anyhow::Result<()> {
    let out = host
        .exec_capture(nginx, &["sh", "-c", "nginx -t -q && nginx -s reload"], &[])
        .await?;
    if out.code != 0 {
        return Err(DeployTlsError::Host {
            what: "reloading nginx".into(),
            detail: out.stderr.trim().to_string(),
        }
        .into());
    }
    Ok(())
}

/// The extra roots of [`CA_ROOT_ENV`], if set.
pub fn extra_roots() -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = std::env::var_os(CA_ROOT_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    std::fs::read(&path).map(Some).map_err(|source| {
        DeployTlsError::CaRoot {
            path: PathBuf::from(path).display().to_string(),
            source,
        }
        .into()
    })
}

fn renew_days() -> anyhow::Result<i64> {
    match std::env::var(RENEW_DAYS_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| DeployTlsError::RenewDays(v).into()),
        _ => Ok(RENEW_WITHIN_DAYS),
    }
}

/// The health gate's request: with nginx serving HTTPS and no `url`, it goes to
/// `https://<first domain>` with the domain resolved to the host's address (from
/// `plain`, run.rs's `http://<host>:<port>/<health_path>`) on nginx's published 443.
pub fn probe(s: &Settings, config_json: &str, plain: String) -> anyhow::Result<Probe> {
    let roots = extra_roots()?;
    if !s.site.https() || s.url.is_some() {
        return Ok(Probe {
            url: plain,
            resolve: None,
            roots,
        });
    }
    let domain = s
        .site
        .domains
        .first()
        .cloned()
        .ok_or(tls::TlsError::NoDomains)?;
    let rest = plain.split_once("://").map(|x| x.1).unwrap_or(&plain);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_part = authority
        .rsplit_once(':')
        .map(|x| x.0)
        .unwrap_or(authority)
        .trim_matches(['[', ']']);
    let port = published_443(config_json, &s.nginx).unwrap_or(443);
    let addr: SocketAddr = (host_part, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| DeployTlsError::NoAddress(host_part.to_string()))?;
    let url = if port == 443 {
        format!("https://{domain}{}", s.health_path)
    } else {
        format!("https://{domain}:{port}{}", s.health_path)
    };
    Ok(Probe {
        url,
        resolve: Some((domain, addr)),
        roots,
    })
}

fn published_443(config_json: &str, nginx: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    v.get("services")?
        .get(nginx)?
        .get("ports")?
        .as_array()?
        .iter()
        .find(|p| p.get("target").and_then(|t| t.as_u64()) == Some(443))?
        .get("published")
        .and_then(|p| {
            p.as_str()
                .map(str::to_string)
                .or_else(|| p.as_u64().map(|n| n.to_string()))
        })?
        .parse()
        .ok()
}

/// A short-lived container on the host with `<home>` mounted: writes the certificate,
/// the key and the HTTP-01 answers nginx reads through its read-only binds.
struct Helper<'a> {
    engine: &'a Engine,
    id: String,
}

impl<'a> Helper<'a> {
    async fn open(engine: &'a Engine, s: &Settings, image: &str) -> anyhow::Result<Helper<'a>> {
        let id = engine
            .run_helper(
                &format!("{}-countable-tls", s.compose_project),
                image,
                &[format!("{}:{MOUNT}", s.home())],
            )
            .await?;
        Ok(Self { engine, id })
    }

    async fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self
            .engine
            .exec_capture(&self.id, &["sh", "-c", script], &[])
            .await?;
        if out.code != 0 {
            return Err(DeployTlsError::Host {
                what: format!("`{script}`"),
                detail: out.stderr.trim().to_string(),
            }
            .into());
        }
        Ok(out.stdout)
    }

    /// A file under `<home>`, if it exists.
    async fn read(&self, rel: &str) -> anyhow::Result<Option<String>> {
        let out = self
            .engine
            .exec_capture(&self.id, &["cat", &format!("{MOUNT}/{rel}")], &[])
            .await?;
        Ok((out.code == 0).then_some(out.stdout))
    }

    /// Chain and key into `<home>/tls`, each replaced by a rename (nginx never reads
    /// half a file); the key is readable by root only.
    async fn install(&self, b: &CertBundle) -> anyhow::Result<()> {
        let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        let (chain, key) = (name(DEFAULT_CERT_PATH), name(DEFAULT_KEY_PATH));
        self.engine
            .put_files(
                &self.id,
                &format!("{MOUNT}/tls"),
                &[
                    FileEntry {
                        path: format!("{chain}.new"),
                        bytes: b.cert_chain_pem.clone().into_bytes(),
                        mode: 0o644,
                    },
                    FileEntry {
                        path: format!("{key}.new"),
                        bytes: b.key_pem.clone().into_bytes(),
                        mode: 0o600,
                    },
                ],
            )
            .await?;
        self.sh(&format!(
            "cd {MOUNT}/tls && chown 0:0 {key}.new {chain}.new && chmod 0600 {key}.new && mv -f {key}.new {key} && mv -f {chain}.new {chain}"
        ))
        .await?;
        Ok(())
    }

    async fn close(self) {
        let _ = self.engine.remove(&self.id).await;
    }
}

impl Challenges for Helper<'_> {
    async fn publish(&self, token: &str, key_auth: &str) -> anyhow::Result<()> {
        self.engine
            .put_files(
                &self.id,
                &format!("{MOUNT}/acme"),
                &[FileEntry {
                    path: token.to_string(),
                    bytes: key_auth.as_bytes().to_vec(),
                    mode: 0o644,
                }],
            )
            .await?;
        Ok(())
    }

    async fn remove(&self, token: &str) -> anyhow::Result<()> {
        self.sh(&format!("rm -f {MOUNT}/acme/{token}")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let p = Project {
            root: "/srv/shop".into(),
            config: crate::project::Config::parse(
                &format!(
                    "project: shop\nenvironments:\n  prod:\n    domains: [shop.test]\n{extra}"
                ),
                Path::new("countable.yml"),
            )
            .unwrap(),
        };
        Settings::resolve(&p, &EnvName::parse("prod").unwrap()).unwrap()
    }

    #[test]
    fn override_and_probe() {
        let plain = settings("");
        assert!(!plain.site.active());
        assert_eq!(nginx_override(&plain), "");
        let p = probe(&plain, "{}", "http://10.0.0.5:8080/healthz".into()).unwrap();
        assert_eq!(p.url, "http://10.0.0.5:8080/healthz");
        assert!(p.resolve.is_none());

        let s = settings("    tls: letsencrypt\n");
        let o = nginx_override(&s);
        assert!(o.contains("\"443:443\""), "{o}");
        assert!(
            o.contains("/srv/countable/shop-prod/tls:/etc/nginx/tls:ro"),
            "{o}"
        );
        assert!(
            o.contains("/srv/countable/shop-prod/acme:/var/www/acme:ro"),
            "{o}"
        );
        let config = r#"{"services":{"nginx":{"ports":[{"target":80,"published":"8080"},{"target":443,"published":"8443"}],"volumes":[{"type":"bind","source":"/srv/countable/shop-prod/current/nginx/default.conf","target":"/etc/nginx/conf.d/default.conf"}]}}}"#;
        let p = probe(&s, config, "http://10.0.0.5:8080/healthz".into()).unwrap();
        assert_eq!(p.url, "https://shop.test:8443/healthz");
        assert_eq!(
            p.resolve,
            Some(("shop.test".into(), "10.0.0.5:8443".parse().unwrap()))
        );
        assert_eq!(
            conf_source(config, &s).as_deref(),
            Some("nginx/default.conf")
        );
        let conf = render_conf(&s).unwrap();
        assert!(conf.contains("listen 443 ssl"), "{conf}");
    }
}
