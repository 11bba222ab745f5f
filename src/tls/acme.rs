//! ACME (RFC 8555) with HTTP-01 through `instant-acme`: decide whether a certificate is
//! due, and if so register or reuse the account, order, answer the challenges through the
//! caller's [`Challenges`], finalize with a fresh key and return the chain.
//!
//! It never orders while the current certificate covers every domain and has more than
//! the renewal window left (rate limits), and never writes files or reloads nginx itself.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::cert::{inspect, CertBundle};
use super::{nginx::check_domain, TlsError, RENEW_WITHIN_DAYS};
use crate::ui::Printer;

/// Where and for what to get certificates.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL (default: Let's Encrypt production).
    pub directory: String,
    /// Contact for expiry and policy mail (`acme_email`).
    pub email: Option<String>,
    pub domains: Vec<String>,
    /// The only root trusted for the ACME server's own HTTPS (a test CA such as pebble's
    /// listener certificate); `None` trusts the platform's roots.
    pub ca_root_pem: Option<String>,
    /// Renew when fewer than this many days are left.
    pub renew_within_days: i64,
    /// How long to wait for validation, then for the certificate.
    pub timeout: StdDuration,
}

impl AcmeConfig {
    /// Let's Encrypt production, renewal at 30 days left, 2 minutes per wait.
    pub fn new(domains: Vec<String>, email: Option<String>) -> Self {
        Self {
            directory: instant_acme::LetsEncrypt::Production.url().to_string(),
            email,
            domains,
            ca_root_pem: None,
            renew_within_days: RENEW_WITHIN_DAYS,
            timeout: StdDuration::from_secs(120),
        }
    }
}

/// An ACME account (its id, directory and private key), as JSON the caller stores with
/// the environment, like a secret. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AcmeAccount(String);

impl fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcmeAccount(<hidden>)")
    }
}

impl AcmeAccount {
    /// An account stored earlier with [`AcmeAccount::to_json`].
    pub fn from_json(json: &str) -> Result<Self, TlsError> {
        let _checked: AccountCredentials =
            serde_json::from_str(json).map_err(|e| TlsError::BadAccount(e.to_string()))?;
        Ok(Self(json.to_string()))
    }

    /// The text to store (it holds the account's private key).
    pub fn to_json(&self) -> &str {
        &self.0
    }

    /// The directory this account was registered with.
    pub fn directory(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.0).ok()?;
        v.get("directory")?.as_str().map(str::to_string)
    }

    fn credentials(&self) -> Result<AccountCredentials, TlsError> {
        serde_json::from_str(&self.0).map_err(|e| TlsError::BadAccount(e.to_string()))
    }
}

/// Where the HTTP-01 answers go: nginx must serve `key_auth` as the body of
/// `http://<domain>/.well-known/acme-challenge/<token>`. Tokens are checked to be
/// base64url before they reach the implementation, so they are safe as file names.
/// With tls.conf, nginx serves the file `<ACME_WEBROOT>/<token>` (plain text) there.
pub trait Challenges {
    fn publish(&self, token: &str, key_auth: &str) -> impl Future<Output = anyhow::Result<()>>;
    fn remove(&self, token: &str) -> impl Future<Output = anyhow::Result<()>>;
}

/// What [`ensure`] did.
#[derive(Debug)]
pub enum Outcome {
    /// The current certificate stays: no order was made.
    Reused {
        not_after: OffsetDateTime,
        days_left: i64,
    },
    /// A new certificate; `account` is the one used (new, or the one passed in).
    Issued {
        bundle: CertBundle,
        account: AcmeAccount,
    },
}

/// Whether a certificate is due, and why.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Reuse {
        not_after: OffsetDateTime,
        days_left: i64,
    },
    Missing,
    Unreadable(String),
    NotCovered(Vec<String>),
    Expiring {
        days_left: i64,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Reuse { days_left, .. } => write!(f, "{days_left} days left"),
            Decision::Missing => f.write_str("no certificate yet"),
            Decision::Unreadable(e) => write!(f, "the current certificate is unreadable ({e})"),
            Decision::NotCovered(d) => write!(f, "the certificate lacks {}", d.join(", ")),
            Decision::Expiring { days_left } => write!(f, "{days_left} days left"),
        }
    }
}

/// Decide without any network call.
pub fn decide(cfg: &AcmeConfig, current: Option<&CertBundle>, now: OffsetDateTime) -> Decision {
    let Some(current) = current else {
        return Decision::Missing;
    };
    let info = match current.info() {
        Ok(i) => i,
        Err(e) => return Decision::Unreadable(e.to_string()),
    };
    let missing = info.missing(&cfg.domains);
    if !missing.is_empty() {
        return Decision::NotCovered(missing.into_iter().map(str::to_string).collect());
    }
    let days_left = info.days_left(now);
    if days_left > cfg.renew_within_days {
        Decision::Reuse {
            not_after: info.not_after,
            days_left,
        }
    } else {
        Decision::Expiring { days_left }
    }
}

/// Keep `current` while it is good, else order a new certificate for `cfg.domains`,
/// answering HTTP-01 through `challenges` (answers are removed again either way).
pub async fn ensure<C: Challenges>(
    cfg: &AcmeConfig,
    account: Option<&AcmeAccount>,
    challenges: &C,
    current: Option<&CertBundle>,
    now: OffsetDateTime,
    printer: &Printer,
) -> Result<Outcome, TlsError> {
    if cfg.domains.is_empty() {
        return Err(TlsError::NoDomains);
    }
    for d in &cfg.domains {
        check_domain(d)?;
    }
    let why = match decide(cfg, current, now) {
        Decision::Reuse {
            not_after,
            days_left,
        } => {
            return Ok(Outcome::Reused {
                not_after,
                days_left,
            })
        }
        other => other,
    };
    let names = cfg.domains.join(", ");
    printer.status(&format!("ordering a certificate for {names} ({why})"));
    let (acct, stored) = open_account(cfg, account).await?;
    let mut published = Vec::new();
    let result = order(cfg, &acct, challenges, &mut published).await;
    for token in &published {
        if let Err(e) = challenges.remove(token).await {
            printer.warn(&format!(
                "could not remove the HTTP-01 answer {token}: {e:#}"
            ));
        }
    }
    let bundle = result?;
    printer.success(&format!(
        "certificate for {names} issued, valid until {}",
        bundle.not_after.date()
    ));
    Ok(Outcome::Issued {
        bundle,
        account: stored,
    })
}

async fn order<C: Challenges>(
    cfg: &AcmeConfig,
    account: &Account,
    challenges: &C,
    published: &mut Vec<String>,
) -> Result<CertBundle, TlsError> {
    let domains = cfg.domains.join(", ");
    let failed = |source| TlsError::Order {
        domains: domains.clone(),
        source,
    };
    let identifiers: Vec<Identifier> = cfg
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.to_ascii_lowercase()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(failed)?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(failed)?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(TlsError::Validation {
                    domain,
                    detail: format!("authorization is {other:?}"),
                })
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| TlsError::NoHttpChallenge(domain.clone()))?;
        let token = challenge.token.clone();
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TlsError::Validation {
                domain,
                detail: format!("the server sent a token that is not base64url: {token:?}"),
            });
        }
        let key_auth = challenge.key_authorization();
        challenges
            .publish(&token, key_auth.as_str())
            .await
            .map_err(|source| TlsError::Publish {
                domain: domain.clone(),
                source,
            })?;
        published.push(token);
        challenge.set_ready().await.map_err(failed)?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(StdDuration::from_millis(250))
        .backoff(1.5)
        .timeout(cfg.timeout);
    let status = match order.poll_ready(&retries).await {
        Ok(s) => s,
        Err(instant_acme::Error::Api(problem)) => {
            return Err(validation_failure(&mut order, problem.to_string()).await)
        }
        Err(e) => return Err(failed(e)),
    };
    if status != OrderStatus::Ready {
        return Err(validation_failure(&mut order, format!("order is {status:?}")).await);
    }
    let key_pem = order.finalize().await.map_err(failed)?;
    let chain = order.poll_certificate(&retries).await.map_err(failed)?;
    let info = inspect(&chain)?;
    Ok(CertBundle {
        cert_chain_pem: chain,
        key_pem,
        not_after: info.not_after,
    })
}

/// The first challenge error the server recorded, naming its domain.
async fn validation_failure(order: &mut instant_acme::Order, fallback: String) -> TlsError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        let domain = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(problem) = &c.error {
                return TlsError::Validation {
                    domain,
                    detail: problem.to_string(),
                };
            }
        }
    }
    TlsError::Validation {
        domain: "the order".into(),
        detail: fallback,
    }
}

/// Restore the stored account when it belongs to this directory, else register one.
async fn open_account(
    cfg: &AcmeConfig,
    stored: Option<&AcmeAccount>,
) -> Result<(Account, AcmeAccount), TlsError> {
    let unusable = |source| TlsError::Directory {
        directory: cfg.directory.clone(),
        source,
    };
    if let Some(stored) = stored.filter(|a| a.directory().as_deref() == Some(&cfg.directory)) {
        let account = builder(cfg)?
            .from_credentials(stored.credentials()?)
            .await
            .map_err(unusable)?;
        return Ok((account, stored.clone()));
    }
    let contact: Vec<String> = cfg.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder(cfg)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await
        .map_err(unusable)?;
    let json =
        serde_json::to_string(&credentials).map_err(|e| TlsError::BadAccount(e.to_string()))?;
    Ok((account, AcmeAccount(json)))
}

/// An HTTPS client for the ACME server: the platform's roots, or only `ca_root_pem`.
/// The crypto provider is named explicitly, so other TLS users in the process cannot
/// make rustls' process default ambiguous.
fn builder(cfg: &AcmeConfig) -> Result<AccountBuilder, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Some(pem) = &cfg.ca_root_pem else {
        let _ = rustls::crypto::CryptoProvider::install_default((*provider).clone());
        return Account::builder().map_err(|source| TlsError::Directory {
            directory: cfg.directory.clone(),
            source,
        });
    };
    let bad = |e: String| TlsError::BadRoot(e);
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(der.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    Ok(Account::builder_with_http(Box::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AcmeConfig {
        AcmeConfig::new(vec!["shop.test".into(), "www.shop.test".into()], None)
    }

    #[test]
    fn decides_from_days_left_and_names() {
        let now = OffsetDateTime::now_utc();
        let c = cfg();
        assert_eq!(decide(&c, None, now), Decision::Missing);
        let b = CertBundle::placeholder(&c.domains, now).unwrap();
        assert_eq!(
            decide(&c, Some(&b), now),
            Decision::Expiring { days_left: 0 }
        );
        let mut c1 = c.clone();
        c1.renew_within_days = -1;
        assert!(matches!(decide(&c1, Some(&b), now), Decision::Reuse { .. }));
        let mut c2 = c1.clone();
        c2.domains.push("new.test".into());
        assert_eq!(
            decide(&c2, Some(&b), now),
            Decision::NotCovered(vec!["new.test".into()])
        );
    }

    #[test]
    fn defaults_to_lets_encrypt_production() {
        let c = cfg();
        assert!(
            c.directory.starts_with("https://acme-v02."),
            "{}",
            c.directory
        );
        assert_eq!(c.renew_within_days, 30);
    }

    /// The platform-roots client for Let's Encrypt builds without a network call and
    /// without rustls' "no process-level CryptoProvider" panic.
    #[test]
    fn platform_roots_client_builds() {
        builder(&cfg()).unwrap();
        let mut c = cfg();
        c.ca_root_pem = Some("not pem".into());
        assert!(matches!(builder(&c), Err(TlsError::BadRoot(_))));
    }

    #[test]
    fn account_json_is_checked_and_hidden() {
        assert!(matches!(
            AcmeAccount::from_json("{}"),
            Err(TlsError::BadAccount(_))
        ));
        let a = AcmeAccount("{\"directory\":\"x\"}".into());
        assert_eq!(a.directory().as_deref(), Some("x"));
        assert_eq!(format!("{a:?}"), "AcmeAccount(<hidden>)");
    }
}
