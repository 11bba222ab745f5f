//! The `sync:` section of countable.yml: named pairs of environments, each with the
//! bucket pairs it copies, its fixups and its scrub presets; as written (`Raw*`) and
//! validated ([`Pair`]). Validation runs once, when countable.yml is loaded, so a typo
//! surfaces before anything connects anywhere. Nothing here connects anywhere.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::names::EnvName;
use crate::project::Environment;
use crate::store::bucket::S3Url;

/// One pair as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<RawBuckets>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixups: Vec<RawFixup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrub: Vec<Scrub>,
}

/// One bucket pair as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBuckets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub from: String,
    pub to: String,
    /// One credential that reads the source and writes the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_profile: Option<String>,
    /// Remove what only the destination has.
    #[serde(default)]
    pub delete: bool,
}

/// One fixup as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFixup {
    pub description: String,
    pub sql: String,
    /// Parameter name in the SQL → secret name in the target's secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// Built-in scrubs, opt-in per pair.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scrub {
    /// `auth_user.email` → `user+<id>@example.invalid`.
    Emails,
    /// The target's secrets must configure no SMTP (checked before anything changes).
    Mail,
    /// `django_site.domain` → the target's first domain.
    Site,
}

/// Whose credentials reach a bucket pair.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// One credential (a profile, or the standard chain) reads the source and writes
    /// the destination: objects are copied server-side.
    One(Option<String>),
    /// Each side its own: bytes stream through countable.
    Two { from: String, to: String },
}

/// A validated bucket pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub description: String,
    pub from: S3Url,
    pub to: S3Url,
    pub access: Access,
    pub delete: bool,
}

impl Buckets {
    /// The profile that writes the destination.
    pub fn to_profile(&self) -> Option<&str> {
        match &self.access {
            Access::One(p) => p.as_deref(),
            Access::Two { to, .. } => Some(to),
        }
    }

    /// What names this pair in records: `s3://a/x/ → s3://b/y/`.
    pub fn id(&self) -> String {
        format!("{} → {}", self.from, self.to)
    }
}

/// A validated fixup: its SQL as psql runs it (see `sql::prepare`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fixup {
    pub description: String,
    pub sql: String,
    pub params: BTreeMap<String, String>,
}

/// A validated sync pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub name: String,
    pub from: EnvName,
    pub to: EnvName,
    pub buckets: Vec<Buckets>,
    pub fixups: Vec<Fixup>,
    pub scrub: BTreeSet<Scrub>,
}

impl Pair {
    /// Every secret name the fixups read.
    pub fn secret_names(&self) -> BTreeSet<&str> {
        self.fixups
            .iter()
            .flat_map(|f| f.params.values().map(String::as_str))
            .collect()
    }
}

/// A pair name: used in store keys (`sync/<name>/…`) and on the command line.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63
}

fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Check one pair against the environments; the message names what is wrong.
pub fn validate(
    name: &str,
    raw: RawPair,
    environments: &BTreeMap<EnvName, Environment>,
) -> Result<Pair, String> {
    let at = format!("sync.{name}");
    if !valid_name(name) {
        return Err(format!(
            "`{name}` is not a valid sync pair name (lowercase letters, digits, `-`, `_`; starting with a letter)"
        ));
    }
    let env = |which: &str, value: &str| -> Result<EnvName, String> {
        let e = EnvName::parse(value).map_err(|e| format!("{at}.{which}: {e}"))?;
        if !environments.contains_key(&e) {
            return Err(format!(
                "{at}.{which} names `{e}`, which is not under `environments:`"
            ));
        }
        Ok(e)
    };
    let from = env("from", &raw.from)?;
    let to = env("to", &raw.to)?;
    if from == to {
        return Err(format!("{at}: `from` and `to` are both `{from}`"));
    }
    let mut buckets = Vec::new();
    for (i, b) in raw.buckets.into_iter().enumerate() {
        let at = format!("{at}.buckets[{i}]");
        let url = |u: &str| S3Url::parse(u).map_err(|e| format!("{at}: {e}"));
        let (src, dst) = (url(&b.from)?, url(&b.to)?);
        let access = match (b.aws_profile, b.from_profile, b.to_profile) {
            (p, None, None) => Access::One(p),
            (None, Some(f), Some(t)) if f == t => Access::One(Some(f)),
            (None, Some(from), Some(to)) => Access::Two { from, to },
            (Some(_), _, _) => {
                return Err(format!(
                    "{at}: give either `aws_profile` (one credential for both sides) or `from_profile` and `to_profile`, not both"
                ))
            }
            _ => {
                return Err(format!(
                    "{at}: `from_profile` and `to_profile` go together (or use `aws_profile` for both sides)"
                ))
            }
        };
        if matches!(access, Access::One(_)) && src.overlaps(&dst) {
            return Err(format!(
                "{at}: {src} and {dst} overlap: a sync would copy into its own source"
            ));
        }
        buckets.push(Buckets {
            description: b
                .description
                .filter(|d| !d.trim().is_empty())
                .unwrap_or_else(|| format!("{src} → {dst}")),
            from: src,
            to: dst,
            access,
            delete: b.delete,
        });
    }
    let mut fixups = Vec::new();
    for (i, f) in raw.fixups.into_iter().enumerate() {
        let at = format!("{at}.fixups[{i}]");
        for (param, secret) in &f.params {
            if !super::sql::is_param_name(param) {
                return Err(format!(
                    "{at}.params: `{param}` is not a parameter name (lowercase letters, digits, `_`; not starting with `countable_`)"
                ));
            }
            if !valid_secret_name(secret) {
                return Err(format!(
                    "{at}.params.{param}: `{secret}` is not a secret name (a variable name such as STAGING_GOOGLE_SECRET)"
                ));
            }
        }
        let declared: BTreeSet<String> = f.params.keys().cloned().collect();
        let sql = super::sql::prepare(&f.sql, &declared).map_err(|e| format!("{at}.sql: {e}"))?;
        if sql.trim().is_empty() {
            return Err(format!("{at}.sql is empty"));
        }
        fixups.push(Fixup {
            description: f.description,
            sql,
            params: f.params,
        });
    }
    Ok(Pair {
        name: name.to_string(),
        from,
        to,
        buckets,
        fixups,
        scrub: raw.scrub.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs() -> BTreeMap<EnvName, Environment> {
        ["prod", "staging"]
            .iter()
            .map(|e| (EnvName::parse(e).unwrap(), Environment::default()))
            .collect()
    }

    fn parse(yaml: &str) -> Result<Pair, String> {
        let raw: RawPair = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        validate("prod-to-staging", raw, &envs())
    }

    #[test]
    fn the_issue_example() {
        let p = parse(
            "from: prod\nto: staging\nbuckets:\n  - description: media\n    from: s3://production-bucket/files/\n    to: s3://staging-bucket/files/\n    aws_profile: stage\n    delete: false\nfixups:\n  - description: staging OAuth app\n    sql: UPDATE socialaccount_socialapp SET client_id = :client_id, secret = :secret WHERE provider = 'google'\n    params: { client_id: STAGING_GOOGLE_CLIENT_ID, secret: STAGING_GOOGLE_SECRET }\nscrub: [emails, site]\n",
        )
        .unwrap();
        assert_eq!(p.buckets[0].access, Access::One(Some("stage".into())));
        assert_eq!(p.buckets[0].to.prefix, "files/");
        assert!(p.fixups[0].sql.contains("client_id = :'client_id'"));
        assert_eq!(
            p.secret_names().into_iter().collect::<Vec<_>>(),
            ["STAGING_GOOGLE_CLIENT_ID", "STAGING_GOOGLE_SECRET"]
        );
        assert!(p.scrub.contains(&Scrub::Site));
    }

    #[test]
    fn two_profiles_stream_and_one_copies_server_side() {
        let p = parse("from: prod\nto: staging\nbuckets:\n  - {from: s3://aaa/x, to: s3://bbb/x, from_profile: prod, to_profile: stage}\n  - {from: s3://aaa/x, to: s3://aaa/y, from_profile: s, to_profile: s}\n").unwrap();
        assert_eq!(
            p.buckets[0].access,
            Access::Two {
                from: "prod".into(),
                to: "stage".into()
            }
        );
        assert_eq!(p.buckets[0].to_profile(), Some("stage"));
        assert_eq!(p.buckets[1].access, Access::One(Some("s".into())));
        assert_eq!(p.buckets[0].description, "s3://aaa/x/ → s3://bbb/x/");
    }

    #[test]
    fn mistakes_are_named() {
        for (yaml, want) in [
            ("from: prod\nto: prod\n", "both `prod`"),
            ("from: prod\nto: qa\n", "not under `environments:`"),
            ("from: prod\nto: staging\nbuckets: [{from: s3://aaa/, to: s3://bbb/, aws_profile: x, to_profile: y}]\n", "not both"),
            ("from: prod\nto: staging\nbuckets: [{from: s3://aaa/, to: s3://bbb/, to_profile: y}]\n", "go together"),
            ("from: prod\nto: staging\nbuckets: [{from: s3://aaa/, to: s3://aaa/sub/}]\n", "overlap"),
            ("from: prod\nto: staging\nbuckets: [{from: /srv/media, to: s3://bbb/}]\n", "not an s3://"),
            ("from: prod\nto: staging\nfixups: [{description: x, sql: 'SELECT 1 \\g'}]\n", "meta-command"),
            ("from: prod\nto: staging\nfixups: [{description: x, sql: 'SELECT :X', params: {X: S}}]\n", "not a parameter name"),
            ("from: prod\nto: staging\nfixups: [{description: x, sql: 'SELECT :x', params: {x: 'a b'}}]\n", "not a secret name"),
            ("from: prod\nto: staging\nscrub: [passwords]\n", "unknown variant"),
            ("from: prod\nto: staging\nbukets: []\n", "unknown field"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let raw: RawPair = serde_yaml_ng::from_str("from: prod\nto: staging\n").unwrap();
        assert!(validate("Prod", raw, &envs())
            .unwrap_err()
            .contains("not a valid sync pair name"));
    }
}
