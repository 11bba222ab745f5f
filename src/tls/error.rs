//! What can go wrong with certificates, ACME and the TLS nginx config, each with its fix.

use crate::error::Hint;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no domains to put in a certificate")]
    NoDomains,
    #[error("{0:?} is not a domain name a certificate can hold")]
    BadDomain(String),
    #[error("{0:?} is not an address or CIDR range (trusted_proxies)")]
    BadCidr(String),
    #[error("behind_proxy is set but trusted_proxies lists no address")]
    NoTrustedProxies,
    #[error("{0:?} is not a usable path for nginx (no spaces, quotes, `;`, braces or `$`)")]
    BadPath(String),
    #[error("cannot read the certificate: {0}")]
    BadCertificate(String),
    #[error("cannot read the private key: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate does not cover {}", .0.join(", "))]
    NotCovered(Vec<String>),
    #[error("the certificate is not valid now (it expires on {0})")]
    Expired(String),
    #[error("the trusted root for the ACME directory is not a PEM certificate: {0}")]
    BadRoot(String),
    #[error("the stored ACME account cannot be read: {0}")]
    BadAccount(String),
    #[error("the ACME server at {directory} cannot be used: {source}")]
    Directory {
        directory: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the ACME order for {domains} failed: {source}")]
    Order {
        domains: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the ACME server offers no HTTP-01 challenge for {0}")]
    NoHttpChallenge(String),
    #[error("cannot publish the HTTP-01 answer for {domain}")]
    Publish {
        domain: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("the ACME server could not validate {domain}: {detail}")]
    Validation { domain: String, detail: String },
    #[error("rendering the TLS nginx config failed: {0}")]
    Template(String),
}

impl Hint for TlsError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            TlsError::NoDomains | TlsError::BadDomain(_) => {
                "list the environment's domains in countable.yml, e.g. `domains: [shop.example.com]`".into()
            }
            TlsError::BadCidr(_) | TlsError::NoTrustedProxies => {
                "write trusted_proxies as addresses or CIDR ranges, e.g. `trusted_proxies: [10.0.0.0/8]`".into()
            }
            TlsError::BadPath(_) => "use a plain absolute path such as /etc/nginx/tls/fullchain.pem".into(),
            TlsError::BadCertificate(_) | TlsError::BadKey(_) | TlsError::KeyMismatch => {
                "give the full chain (PEM, leaf first) and its own private key; check with `openssl x509 -noout -text -in fullchain.pem`".into()
            }
            TlsError::NotCovered(_) | TlsError::Expired(_) => {
                "get a certificate that names every domain in countable.yml and is still valid, or set `tls: letsencrypt`".into()
            }
            TlsError::BadRoot(_) => "give the test CA's root certificate as PEM text".into(),
            TlsError::BadAccount(_) => {
                "remove the stored ACME account so the next deploy registers a new one".into()
            }
            TlsError::Directory { directory, .. } => format!(
                "check `acme_directory` in countable.yml and that this machine reaches it: `curl {directory}`"
            ),
            TlsError::Order { .. } => {
                "wait and run the deploy again; if it repeats, check the ACME server's status page and rate limits".into()
            }
            TlsError::NoHttpChallenge(_) => {
                "use an ACME server that offers HTTP-01, or `tls: manual` with your own certificate".into()
            }
            TlsError::Publish { .. } => {
                "check that nginx's ACME volume is writable on the target: `countable status <env>`".into()
            }
            TlsError::Validation { domain, .. } => format!(
                "make {domain} resolve to the target and port 80 reach its nginx: `curl -i http://{domain}/.well-known/acme-challenge/x` must come from nginx"
            ),
            TlsError::Template(_) => return None,
        })
    }
}
crate::register_hint!(TlsError);
