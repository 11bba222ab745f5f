//! One environment's deploy settings, resolved once from countable.yml with their
//! defaults, and the names derived from them (image tags, release directories,
//! network aliases). Plain values; nothing here touches a host.

use std::time::Duration;

use crate::error::Hinted;
use crate::names::EnvName;
use crate::project::{Project, TlsMode};

pub const DEFAULT_KEEP: u32 = 5;
pub const DEFAULT_MIGRATE_TIMEOUT: u64 = 1800;
pub const DEFAULT_RELEASE_ROOT: &str = "/srv/countable";

/// Labels countable puts on release images and containers.
pub const LABEL_PROJECT: &str = "org.countable.project";
pub const LABEL_ENV: &str = "org.countable.env";
pub const LABEL_RELEASE: &str = "org.countable.release";
pub const LABEL_SHA: &str = "org.countable.git-sha";

#[derive(Debug, Clone)]
pub struct Settings {
    pub project: String,
    pub env: EnvName,
    pub compose_project: String,
    pub docker_host: Option<String>,
    pub compose_files: Vec<String>,
    pub branch: Option<String>,
    pub keep_releases: u32,
    pub migrate_timeout: Duration,
    pub health_path: String,
    pub release_root: String,
    pub url: Option<String>,
    pub domains: Vec<String>,
    pub tls: TlsMode,
    pub registry: Option<String>,
    pub web: String,
    /// The port web listens on (countable.yml's `services.web_port`).
    pub web_port: u16,
    pub db: String,
    pub nginx: String,
    /// TLS and proxy settings (deploy::tls).
    pub site: super::tls::Site,
    /// The environment as countable.yml describes it (its media and S3 settings, for
    /// the backup a deploy takes).
    pub environment: crate::project::Environment,
}

impl Settings {
    pub fn resolve(project: &Project, env: &EnvName) -> anyhow::Result<Self> {
        let config = &project.config;
        let e = config.environments.get(env).ok_or_else(|| {
            Hinted::new(
                format!("countable.yml has no environment `{env}`"),
                format!("add it under `environments:` in countable.yml (`{env}: {{branch: master, docker_host: ssh://deploy@host, backups: s3://bucket/prefix/}}`)"),
            )
        })?;
        let health_path = e.health_path.clone().unwrap_or_else(|| "/healthz".into());
        if !health_path.starts_with('/') {
            return Err(Hinted::new(
                format!("health_path of {env} is `{health_path}`: it must start with /"),
                "set `health_path: /healthz` (the scaffold's health view)",
            )
            .into());
        }
        let release_root = e
            .release_root
            .clone()
            .unwrap_or_else(|| DEFAULT_RELEASE_ROOT.into());
        if !release_root.starts_with('/') || release_root.contains("..") {
            return Err(Hinted::new(
                format!("release_root of {env} is `{release_root}`: it must be an absolute path"),
                format!("set `release_root: {DEFAULT_RELEASE_ROOT}` or another absolute directory on the host"),
            )
            .into());
        }
        Ok(Self {
            project: config.project.to_string(),
            env: env.clone(),
            compose_project: e
                .compose_project
                .clone()
                .unwrap_or_else(|| format!("{}-{env}", config.project)),
            docker_host: e.docker_host.clone(),
            compose_files: e
                .compose_files
                .clone()
                .unwrap_or_else(|| config.compose_files.clone()),
            branch: e.branch.clone(),
            keep_releases: e.keep_releases.unwrap_or(DEFAULT_KEEP).max(2),
            migrate_timeout: Duration::from_secs(
                e.migrate_timeout.unwrap_or(DEFAULT_MIGRATE_TIMEOUT),
            ),
            health_path,
            release_root,
            url: e.url.clone(),
            domains: e.domains.clone(),
            tls: e.tls.unwrap_or_default(),
            registry: e.registry.clone(),
            web: config.services.web.clone(),
            web_port: config.services.web_port,
            db: config.services.db.clone(),
            nginx: config.services.nginx.clone(),
            site: super::tls::Site::resolve(project, env, e),
            environment: e.clone(),
        })
    }

    /// `<release_root>/<compose_project>` on the host.
    pub fn home(&self) -> String {
        format!(
            "{}/{}",
            self.release_root.trim_end_matches('/'),
            self.compose_project
        )
    }

    /// The compose project directory on the host: `current`, a symlink to a release.
    pub fn current_dir(&self) -> String {
        format!("{}/current", self.home())
    }

    /// `<project>-web:<env>-<n>-<short sha>` (a registry's prefix when one is set).
    pub fn image_tag(&self, release: u32, sha: &str) -> String {
        let short = &sha[..sha.len().min(12)];
        let name = format!(
            "{}-{}:{}-{release}-{short}",
            self.project, self.web, self.env
        );
        match &self.registry {
            Some(r) => format!("{}/{name}", r.trim_end_matches('/')),
            None => name,
        }
    }

    /// The network alias of one release's web containers; nginx follows it.
    pub fn alias(&self, release: u32) -> String {
        format!("{}-r{release}", self.web)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        Project {
            root: "/srv/shop".into(),
            config: crate::project::Config::parse(yaml, std::path::Path::new("countable.yml"))
                .unwrap(),
        }
    }

    #[test]
    fn defaults_and_names() {
        let p = project("project: shop\nenvironments:\n  prod:\n    branch: master\n");
        let s = Settings::resolve(&p, &EnvName::parse("prod").unwrap()).unwrap();
        assert_eq!(s.compose_project, "shop-prod");
        assert_eq!(s.current_dir(), "/srv/countable/shop-prod/current");
        assert_eq!(s.keep_releases, 5);
        assert_eq!(s.health_path, "/healthz");
        assert_eq!(s.compose_files, vec!["compose.yaml"]);
        assert_eq!(
            s.image_tag(7, "0123456789abcdef0123"),
            "shop-web:prod-7-0123456789ab"
        );
        assert_eq!(s.alias(7), "web-r7");
    }

    #[test]
    fn environment_overrides() {
        let p = project("project: shop\nenvironments:\n  staging:\n    compose_files: [compose.yaml, compose.prod.yaml]\n    registry: localhost:5000\n    keep_releases: 3\n    release_root: /opt/apps/\n    health_path: /up\n    migrate_timeout: 60\n");
        let s = Settings::resolve(&p, &EnvName::parse("staging").unwrap()).unwrap();
        assert_eq!(s.compose_files.len(), 2);
        assert_eq!(s.home(), "/opt/apps/shop-staging");
        assert_eq!(
            s.image_tag(2, "abc"),
            "localhost:5000/shop-web:staging-2-abc"
        );
        assert_eq!(s.migrate_timeout, Duration::from_secs(60));
        let bad = project("project: shop\nenvironments:\n  prod:\n    health_path: healthz\n");
        assert!(Settings::resolve(&bad, &EnvName::parse("prod").unwrap()).is_err());
        let missing = Settings::resolve(&bad, &EnvName::parse("qa").unwrap()).unwrap_err();
        assert!(missing.to_string().contains("no environment `qa`"));
    }
}
