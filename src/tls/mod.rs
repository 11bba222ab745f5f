//! TLS for an environment: obtain and renew certificates over ACME (HTTP-01), read
//! certificates a user provides, and render the nginx configuration that serves them.
//!
//! The ACME client is the `instant-acme` crate, inside countable: no certbot image to
//! pull and run on the target, and the account key and certificates stay values the
//! caller stores with the environment. This module never talks to Docker, never runs
//! a program and never prints a private key: placing files on the target and reloading
//! nginx is the caller's job (the [`Challenges`] it passes in, then `nginx -s reload`).

mod acme;
mod cert;
mod error;
mod nginx;

pub use acme::{decide, ensure, AcmeAccount, AcmeConfig, Challenges, Decision, Outcome};
pub use cert::{covers, inspect, inspect_der, CertBundle, CertInfo};
pub use error::TlsError;
pub use nginx::{
    nginx_tls_conf, NginxTls, TlsMode, ACME_WEBROOT, DEFAULT_CERT_PATH, DEFAULT_KEY_PATH,
    HSTS_MAX_AGE,
};

/// No new order while the certificate has more than this many days left (Let's Encrypt's
/// rate limits; its certificates last 90 days, so this renews at about two thirds).
pub const RENEW_WITHIN_DAYS: i64 = 30;
