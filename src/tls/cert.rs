//! Certificates as PEM text: what a chain's leaf says (validity, names, serial), whether a
//! key belongs to it, and a short-lived self-signed placeholder so nginx can start before
//! the first ACME order. Never prints or logs a private key (`Debug` hides it).

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::TlsError;

/// A certificate chain (leaf first) and its private key, both PEM, as nginx reads them.
#[derive(Clone)]
pub struct CertBundle {
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("not_after", &self.not_after)
            .field("key_pem", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl CertBundle {
    /// A bundle from PEM text (`tls: manual`, or files read back from the target): the
    /// chain must parse and the key must be the leaf's.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let info = inspect(cert_chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
            .map_err(|e| TlsError::BadKey(e.to_string()))?;
        let public = signer
            .public_key()
            .ok_or_else(|| TlsError::BadKey("unsupported key type".into()))?;
        if public.as_ref() != info.public_key_der.as_slice() {
            return Err(TlsError::KeyMismatch);
        }
        Ok(Self {
            cert_chain_pem: cert_chain_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after: info.not_after,
        })
    }

    /// `tls: manual`: the user's chain and key, checked to belong together, to name every
    /// domain and to be valid at `now`.
    pub fn manual(
        cert_chain_pem: &str,
        key_pem: &str,
        domains: &[String],
        now: OffsetDateTime,
    ) -> Result<Self, TlsError> {
        let bundle = Self::from_pem(cert_chain_pem, key_pem)?;
        let info = bundle.info()?;
        let missing = info.missing(domains);
        if !missing.is_empty() {
            return Err(TlsError::NotCovered(
                missing.into_iter().map(str::to_string).collect(),
            ));
        }
        if info.not_after <= now || info.not_before > now {
            return Err(TlsError::Expired(info.not_after.date().to_string()));
        }
        Ok(bundle)
    }

    /// What the leaf says.
    pub fn info(&self) -> Result<CertInfo, TlsError> {
        inspect(&self.cert_chain_pem)
    }

    /// A self-signed certificate for `domains`, valid for one day from `now`: lets nginx
    /// start with the TLS config (and answer HTTP-01) before the first real certificate.
    /// [`super::ensure`] always replaces it (it is within the renewal window).
    pub fn placeholder(domains: &[String], now: OffsetDateTime) -> Result<Self, TlsError> {
        if domains.is_empty() {
            return Err(TlsError::NoDomains);
        }
        let mut params = rcgen::CertificateParams::new(domains.to_vec())
            .map_err(|e| TlsError::BadDomain(e.to_string()))?;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(1);
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            "countable placeholder (not trusted)",
        );
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::BadKey(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        let cert_chain_pem = cert.pem();
        Ok(Self {
            not_after: inspect(&cert_chain_pem)?.not_after,
            cert_chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// What a chain's leaf certificate says.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// DNS names from subjectAltName, lowercase.
    pub names: Vec<String>,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    pub issuer: String,
    /// How many certificates the PEM holds (leaf plus intermediates).
    pub chain_len: usize,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
}

impl CertInfo {
    /// Whole days from `now` to expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// The `domains` this certificate does not cover.
    pub fn missing<'a>(&self, domains: &'a [String]) -> Vec<&'a str> {
        domains
            .iter()
            .filter(|d| !covers(&self.names, d))
            .map(String::as_str)
            .collect()
    }
}

/// Read the leaf (the first certificate) of a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<CertInfo, TlsError> {
    let bad = |e: String| TlsError::BadCertificate(e);
    let pems: Vec<Pem> = Pem::iter_from_buffer(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let pems: Vec<&Pem> = pems.iter().filter(|p| p.label == "CERTIFICATE").collect();
    let leaf = pems
        .first()
        .ok_or_else(|| bad("no CERTIFICATE block in the PEM text".into()))?;
    let mut info = inspect_der(&leaf.contents)?;
    info.chain_len = pems.len();
    Ok(info)
}

/// Read one DER certificate (as a TLS peer sends it).
pub fn inspect_der(der: &[u8]) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: validity.not_before.to_datetime(),
        not_after: validity.not_after.to_datetime(),
        names,
        serial: cert
            .tbs_certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .trim_start_matches("00")
            .to_string(),
        issuer: cert.issuer().to_string(),
        chain_len: 1,
        public_key_der: cert.public_key().raw.to_vec(),
    })
}

/// Does a certificate naming `names` cover `domain`? Exact names, or a `*.` wildcard
/// for exactly one label (RFC 6125).
pub fn covers(names: &[String], domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    names.iter().any(|n| {
        n == &domain
            || n.strip_prefix("*.").is_some_and(|base| {
                domain
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == base)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_cover_one_label() {
        let n = names(&["shop.test", "*.shop.test"]);
        assert!(covers(&n, "shop.test"));
        assert!(covers(&n, "WWW.shop.test"));
        assert!(!covers(&n, "a.b.shop.test"));
        assert!(!covers(&n, "other.test"));
    }

    #[test]
    fn placeholder_names_the_domains_and_lasts_a_day() {
        let now = OffsetDateTime::now_utc();
        let b = CertBundle::placeholder(&names(&["shop.test", "www.shop.test"]), now).unwrap();
        let info = b.info().unwrap();
        assert_eq!(info.names, names(&["shop.test", "www.shop.test"]));
        assert_eq!(info.days_left(now), 0);
        assert!(info.missing(&names(&["shop.test", "x.test"])) == vec!["x.test"]);
        // Its own key matches; another placeholder's key does not.
        CertBundle::from_pem(&b.cert_chain_pem, &b.key_pem).unwrap();
        let other = CertBundle::placeholder(&names(&["shop.test"]), now).unwrap();
        assert!(matches!(
            CertBundle::from_pem(&b.cert_chain_pem, &other.key_pem),
            Err(TlsError::KeyMismatch)
        ));
        assert!(!format!("{b:?}").contains("PRIVATE KEY"));
        // tls: manual checks names and dates too.
        let d = names(&["shop.test"]);
        CertBundle::manual(&b.cert_chain_pem, &b.key_pem, &d, now).unwrap();
        let more = names(&["shop.test", "x.test"]);
        assert!(matches!(
            CertBundle::manual(&b.cert_chain_pem, &b.key_pem, &more, now),
            Err(TlsError::NotCovered(m)) if m == vec!["x.test".to_string()]
        ));
        let later = now + Duration::days(2);
        assert!(matches!(
            CertBundle::manual(&b.cert_chain_pem, &b.key_pem, &d, later),
            Err(TlsError::Expired(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(inspect("hello"), Err(TlsError::BadCertificate(_))));
    }
}
