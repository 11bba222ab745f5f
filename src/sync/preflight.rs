//! What must hold before a sync changes anything, checked in the order that costs least:
//! the target is not production (unless `sync_target: true`), the scrubs have what
//! they need (a domain, a target that sends no mail), every secret the fixups name is
//! in the target's secrets, both engines answer with a running database, and both
//! databases have applied the same migrations. The bucket plans and `--max-delete`
//! are checked by `run`, from `buckets::plan`.
//!
//! It reads, never writes; secret values are kept in memory for the fixups only.

use std::collections::BTreeSet;

use super::config::{Pair, Scrub};
use super::SyncError;
use crate::environment::Local;
use crate::restore::Db;
use crate::store::Store;

/// Both sides, resolved and answering.
pub struct Sides {
    pub from_db: Db,
    pub to_db: Db,
    pub to_engine: crate::engine::Engine,
    /// The target's compose project (its app services are stopped for the swap).
    pub to_project: String,
    pub to_store: Store,
    /// Secret name → value, for the fixups' parameters.
    pub secrets: Vec<(String, String)>,
    /// The target's first domain, for the `site` scrub.
    pub site_domain: Option<String>,
    /// The migrations both sides have applied.
    pub migrations: BTreeSet<String>,
    /// With `--from-backup`: the source's store and its newest backup.
    pub from_backup: Option<(Store, crate::store::Backup)>,
}

/// What the checks that need no engine found: the fixups' secret values (secret name →
/// value) and the target's first domain for the `site` scrub.
pub struct Configured {
    pub secrets: Vec<(String, String)>,
    pub site_domain: Option<String>,
}

/// The checks that need no engine: production, scrub prerequisites, secrets.
pub fn check_config(local: &Local, pair: &Pair) -> anyhow::Result<Configured> {
    let config = &local.project.config;
    let to = &config.environments[&pair.to];
    if to.branch.as_deref() == Some("master") && !to.sync_target {
        return Err(SyncError::Production {
            env: pair.to.to_string(),
        }
        .into());
    }
    let site_domain = if pair.scrub.contains(&Scrub::Site) {
        Some(
            to.domains
                .first()
                .cloned()
                .ok_or_else(|| SyncError::NoDomain {
                    pair: pair.name.clone(),
                    to: pair.to.to_string(),
                })?,
        )
    } else {
        None
    };
    let names = pair.secret_names();
    if names.is_empty() && !pair.scrub.contains(&Scrub::Mail) {
        return Ok(Configured {
            secrets: Vec::new(),
            site_domain,
        });
    }
    let secrets = crate::secrets::load(&local.project.root, &pair.to)?;
    let get = |k: &str| secrets.as_ref().and_then(|s| s.get(k));
    let missing: Vec<String> = names
        .iter()
        .filter(|n| get(n).is_none())
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(SyncError::MissingSecrets {
            pair: pair.name.clone(),
            to: pair.to.to_string(),
            names: missing,
        }
        .into());
    }
    if pair.scrub.contains(&Scrub::Mail) {
        if let Some(key) = sends_mail(get("EMAIL_URL"), get("EMAIL_HOST")) {
            return Err(SyncError::MailEnabled {
                pair: pair.name.clone(),
                to: pair.to.to_string(),
                key: key.into(),
            }
            .into());
        }
    }
    let secrets = names
        .iter()
        .map(|n| (n.to_string(), get(n).unwrap_or_default().to_string()))
        .collect();
    Ok(Configured {
        secrets,
        site_domain,
    })
}

/// Which setting makes the scaffold's settings send mail over SMTP (see its
/// `email_from_env`): an `EMAIL_URL` that is not `console://`, else an `EMAIL_HOST`.
pub fn sends_mail(email_url: Option<&str>, email_host: Option<&str>) -> Option<&'static str> {
    match email_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => {
            let scheme = u
                .split("://")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            (!matches!(scheme.as_str(), "console" | "consolemail")).then_some("EMAIL_URL")
        }
        None => email_host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|_| "EMAIL_HOST"),
    }
}

/// Resolve both environments (their engines answer, their databases run) and compare
/// their migrations; the config checks first. With `from_backup`, the source's newest
/// backup is picked now (none is a refusal, before the target is touched).
pub async fn check(local: &Local, pair: &Pair, from_backup: bool) -> anyhow::Result<Sides> {
    let Configured {
        secrets,
        site_domain,
    } = check_config(local, pair)?;
    let to_store = crate::data::store_of(local, &pair.to).await?;
    let ((_, from_db), (to_engine, to_db)) =
        tokio::try_join!(local.env_db(&pair.from), local.env_db(&pair.to))?;
    let (a, b) = tokio::try_join!(migrations(&from_db), migrations(&to_db))?;
    if a != b {
        return Err(SyncError::Migrations {
            from: pair.from.to_string(),
            to: pair.to.to_string(),
            only_from: a.difference(&b).cloned().collect(),
            only_to: b.difference(&a).cloned().collect(),
        }
        .into());
    }
    let from_backup = match from_backup {
        false => None,
        true => {
            let store = crate::data::store_of(local, &pair.from).await?;
            let newest = store.pick(None).await?;
            Some((store, newest))
        }
    };
    Ok(Sides {
        from_backup,
        from_db,
        to_db,
        to_engine,
        to_project: local.compose_project_of(&pair.to),
        to_store,
        secrets,
        site_domain,
        migrations: a,
    })
}

/// `app.name` of every applied Django migration (none when there is no
/// django_migrations table).
pub async fn migrations(db: &Db) -> anyhow::Result<BTreeSet<String>> {
    let exists = db
        .sql(
            &db.name,
            "SELECT to_regclass('django_migrations') IS NOT NULL",
        )
        .await?;
    if exists.trim() != "t" {
        return Ok(BTreeSet::new());
    }
    Ok(db
        .sql(&db.name, "SELECT app || '.' || name FROM django_migrations")
        .await?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sends_mail() {
        assert_eq!(sends_mail(None, None), None);
        assert_eq!(sends_mail(Some("console://"), None), None);
        assert_eq!(
            sends_mail(Some("Console://"), Some("smtp.example.com")),
            None
        );
        assert_eq!(
            sends_mail(Some("smtp+tls://u:p@smtp.example.com:587"), None),
            Some("EMAIL_URL")
        );
        assert_eq!(
            sends_mail(None, Some("smtp.example.com")),
            Some("EMAIL_HOST")
        );
        assert_eq!(sends_mail(Some(""), Some(" ")), None);
    }
}
