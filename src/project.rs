//! The project: its root (the directory holding `countable.yml`), and its validated
//! configuration. Loading turns YAML into typed settings once; commands then act on
//! plain values. This module never runs anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Hint;
use crate::names::{EnvName, ProjectName};

pub const CONFIG_FILE: &str = "countable.yml";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no countable.yml in {} or any directory above it", .0.display())]
    NotFound(PathBuf),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Hint for ProjectError {
    fn hint(&self) -> Option<String> {
        match self {
            ProjectError::NotFound(_) => Some(
                "run this inside a project, or create one with `countable new <name>` (or adopt an existing Django project with `countable init`)".into(),
            ),
            ProjectError::Read { path, .. } => Some(format!("check the permissions of {}", path.display())),
            ProjectError::Invalid { path, .. } => Some(format!(
                "fix {} (its schema is in countable's README, section `countable.yml`)",
                path.display()
            )),
        }
    }
}
crate::register_hint!(ProjectError);

/// Which compose services play which part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Services {
    #[serde(default = "default_db")]
    pub db: String,
    #[serde(default = "default_web")]
    pub web: String,
    #[serde(default = "default_nginx")]
    pub nginx: String,
    /// The port web's server listens on in its container (nginx passes requests
    /// there; `countable deploy` switches releases by it).
    #[serde(default = "default_web_port")]
    pub web_port: u16,
}

fn default_db() -> String {
    "db".into()
}
fn default_web() -> String {
    "web".into()
}
fn default_nginx() -> String {
    "nginx".into()
}
fn default_web_port() -> u16 {
    8000
}
/// The development-only compose file a plain `docker compose` merges by itself.
pub const DEV_FILE: &str = "compose.override.yaml";

fn default_files() -> Vec<String> {
    vec!["compose.yaml".into()]
}
fn default_port() -> u16 {
    8000
}

impl Default for Services {
    fn default() -> Self {
        Self {
            db: default_db(),
            web: default_web(),
            nginx: default_nginx(),
            web_port: default_web_port(),
        }
    }
}

/// One deployed environment (prod, staging, …). Later commands (pull-db, backup,
/// deploy) read these; unknown keys are refused so typos surface early.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The git branch that deploys here (`master` → prod, `develop` → staging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where backups live: `s3://bucket/prefix/` or a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The Docker engine that runs it (`ssh://user@host`, `tcp://…`); default: local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// The Docker engine `verify-backup` runs its disposable drill containers on;
    /// default: the one countable runs with (`DOCKER_HOST`, else the local socket),
    /// never the environment's own engine unless it is that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_host: Option<String>,
    /// The compose project name there; default `<project>-<env>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    /// The public URL, used for health checks after a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The site's domain names: nginx's `Host` for the health gate and TLS names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// `letsencrypt`, `manual` or `none` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// The ACME account's contact address (`tls: letsencrypt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
    /// The ACME directory; default Let's Encrypt production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_directory: Option<String>,
    /// Certificate chain and key files for `tls: manual` (paths in the project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// A load balancer in front terminates TLS: trust its `X-Forwarded-Proto`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub behind_proxy: bool,
    /// The addresses (CIDRs) whose `X-Forwarded-Proto` nginx believes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Release images kept on the target (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<u32>,
    /// The Django settings module web runs with here (default: the one the compose
    /// files set), e.g. a settings package's `production` when the team's compose file
    /// sets the dev one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_module: Option<String>,
    /// This environment's compose files (default: the top-level `compose_files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_files: Option<Vec<String>>,
    /// An image registry to push releases to (default: stream the image to the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The longest a release's migrations may run, in seconds (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_timeout: Option<u64>,
    /// The health view behind nginx (default `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Where releases live on the target host (default `/srv/countable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_root: Option<String>,
    /// Where the environment's uploaded media lives: `volume` (the default: the
    /// compose volume `media_volume` on its engine) or `s3://bucket/prefix/` (with
    /// this environment's `aws_profile`, `region` and `endpoint_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// The compose volume holding the media, mounted at web's media root (default
    /// `media`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_volume: Option<String>,
    /// `countable sync` may write into this environment although `master` deploys to
    /// it (a pre-production copy that tracks master).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_target: bool,
    /// `single` (the default: one engine, compose) or `swarm` (`docker_host` is a
    /// Swarm manager; the same compose files run as a stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeployMode>,
    /// Swarm: replicas per service (web defaults to 2, others to 1).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub replicas: std::collections::BTreeMap<String, u32>,
    /// Swarm: how the image reaches the nodes: `registry` (pushed to `registry`,
    /// pulled by the nodes; the default when `registry` is set) or `every-node`
    /// (streamed to each node's engine; the default without a registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship: Option<Ship>,
    /// Swarm: how published ports are published: `ingress` (the routing mesh, the
    /// default) or `host` (on the nodes that run a task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<PublishMode>,
    /// Swarm: how services find each other: `vip` (a virtual IP, the default) or
    /// `dnsrr` (DNS round robin, where the kernel has no IPVS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<EndpointMode>,
    /// Swarm: the node (hostname) that runs the database and holds its volume
    /// (default: the manager `docker_host` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_node: Option<String>,
}

/// How an environment runs: on one engine with compose, or on a Swarm.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    #[default]
    Single,
    Swarm,
}

/// How a Swarm's nodes get a release's image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ship {
    #[default]
    Registry,
    EveryNode,
}

/// Swarm's publish mode for published ports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

/// Swarm's endpoint mode for services.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

impl Environment {
    /// True when this environment runs on a Docker Swarm.
    pub fn is_swarm(&self) -> bool {
        self.mode == Some(DeployMode::Swarm)
    }
}

impl Environment {
    /// Where this environment's media lives, validated (`countable.yml` was checked
    /// when it was loaded, so this fails only for settings made by hand).
    pub fn media_location(&self) -> Result<crate::media::MediaLocation, crate::media::MediaError> {
        crate::media::MediaLocation::of(self.media.as_deref(), self.media_volume.as_deref())
    }
}

/// How an environment gets its certificates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Letsencrypt,
    Manual,
    #[default]
    None,
}

/// `countable.yml` as written by users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub project: String,
    #[serde(default = "default_files")]
    pub compose_files: Vec<String>,
    /// Compose files merged only locally, where they exist (default
    /// `[compose.override.yaml]`, the file a plain `docker compose` merges by itself);
    /// `deploy` never reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_compose_files: Option<Vec<String>>,
    #[serde(default)]
    pub services: Services,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from: Option<String>,
    /// The template restores create their database from (default `template0`; e.g.
    /// `template_postgis` on older PostGIS images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_template: Option<String>,
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
    /// Named `countable sync` pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sync: BTreeMap<String, crate::sync::config::RawPair>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: ProjectName,
    pub compose_files: Vec<String>,
    /// Development-only compose files (live code), merged locally when they exist.
    pub dev_compose_files: Vec<String>,
    pub services: Services,
    pub port: u16,
    pub data_from: Option<EnvName>,
    pub db_template: Option<String>,
    pub environments: BTreeMap<EnvName, Environment>,
    pub sync: BTreeMap<String, crate::sync::config::Pair>,
}

impl Config {
    /// Parse and validate `text` (the contents of `path`, named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProjectError> {
        let invalid = |message: String| ProjectError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let project = ProjectName::parse(&raw.project).map_err(|e| invalid(e.to_string()))?;
        if raw.compose_files.is_empty() {
            return Err(invalid(
                "compose_files is empty: list at least one compose file".into(),
            ));
        }
        if raw.port == 0 {
            return Err(invalid("port must be between 1 and 65535".into()));
        }
        let mut environments = BTreeMap::new();
        for (name, env) in raw.environments {
            let name = EnvName::parse(&name).map_err(|e| invalid(e.to_string()))?;
            env.media_location()
                .map_err(|e| invalid(format!("environments.{name}: {e}")))?;
            environments.insert(name, env);
        }
        let data_from = match raw.data_from {
            None => None,
            Some(d) => {
                let name = EnvName::parse(&d).map_err(|e| invalid(e.to_string()))?;
                if !environments.contains_key(&name) {
                    return Err(invalid(format!(
                        "data_from names `{name}`, which is not under `environments:`"
                    )));
                }
                Some(name)
            }
        };
        let mut sync = BTreeMap::new();
        for (name, pair) in raw.sync {
            let pair =
                crate::sync::config::validate(&name, pair, &environments).map_err(invalid)?;
            sync.insert(name, pair);
        }
        Ok(Self {
            project,
            sync,
            compose_files: raw.compose_files,
            dev_compose_files: raw
                .dev_compose_files
                .unwrap_or_else(|| vec![DEV_FILE.to_string()]),
            services: raw.services,
            port: raw.port,
            data_from,
            db_template: raw.db_template.filter(|t| !t.is_empty()),
            environments,
        })
    }
}

/// A loaded project: where it is and what it says.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub config: Config,
}

impl Project {
    /// Walk up from `start` to the first directory holding `countable.yml`.
    pub fn find(start: &Path) -> Result<Self, ProjectError> {
        let start = std::path::absolute(start).unwrap_or_else(|_| start.to_path_buf());
        let root = start
            .ancestors()
            .find(|d| d.join(CONFIG_FILE).is_file())
            .ok_or_else(|| ProjectError::NotFound(start.clone()))?
            .to_path_buf();
        Self::load(&root)
    }

    /// Load the project whose root is `root`.
    pub fn load(root: &Path) -> Result<Self, ProjectError> {
        let path = root.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
            path: path.clone(),
            source,
        })?;
        let config = Config::parse(&text, &path)?;
        Ok(Self {
            root: root.to_path_buf(),
            config,
        })
    }

    /// The compose project name of the local environment.
    pub fn compose_name(&self) -> &str {
        self.config.project.as_str()
    }

    /// The compose files of the local environment: `compose_files`, then the
    /// development-only files that exist.
    pub fn local_compose_files(&self) -> Vec<String> {
        let dev = self
            .config
            .dev_compose_files
            .iter()
            .filter(|f| !self.config.compose_files.contains(f) && self.root.join(f).is_file());
        self.config
            .compose_files
            .iter()
            .chain(dev)
            .cloned()
            .collect()
    }

    /// The URL nginx publishes locally.
    pub fn url(&self) -> String {
        format!("http://localhost:{}/", self.config.port)
    }

    pub fn env_file(&self) -> PathBuf {
        self.root.join(".env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_files_are_merged_locally_only_where_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("countable.yml"), "project: shop\n").unwrap();
        std::fs::write(root.join("compose.yaml"), "services: {}\n").unwrap();
        let p = Project::load(root).unwrap();
        assert_eq!(p.config.dev_compose_files, vec![DEV_FILE]);
        assert_eq!(
            p.local_compose_files(),
            vec!["compose.yaml"],
            "no override yet"
        );
        std::fs::write(root.join(DEV_FILE), "services: {}\n").unwrap();
        assert_eq!(p.local_compose_files(), vec!["compose.yaml", DEV_FILE]);
        // An explicit empty list turns them off; deploys read `compose_files` only.
        std::fs::write(
            root.join("countable.yml"),
            "project: shop\ndev_compose_files: []\n",
        )
        .unwrap();
        let p = Project::load(root).unwrap();
        assert_eq!(p.local_compose_files(), vec!["compose.yaml"]);
        assert_eq!(p.config.compose_files, vec!["compose.yaml"]);
    }

    fn parse(text: &str) -> Result<Config, ProjectError> {
        Config::parse(text, Path::new("countable.yml"))
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse("project: shop\n").unwrap();
        assert_eq!(c.project.as_str(), "shop");
        assert_eq!(c.compose_files, vec!["compose.yaml"]);
        assert_eq!(c.services, Services::default());
        assert_eq!(c.port, 8000);
        assert!(c.environments.is_empty());
    }

    #[test]
    fn full_config() {
        let c = parse(
            "project: shop\nport: 8080\ndata_from: prod\nenvironments:\n  prod:\n    branch: master\n    backups: s3://countable/backups/shop/\n    region: us-east-1\n  staging:\n    branch: develop\n    docker_host: ssh://deploy@staging.example.com\n    drill_host: unix:///var/run/docker.sock\n",
        )
        .unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.data_from.unwrap().as_str(), "prod");
        assert_eq!(c.environments.len(), 2);
        let staging = &c.environments[&EnvName::parse("staging").unwrap()];
        assert_eq!(
            staging.drill_host.as_deref(),
            Some("unix:///var/run/docker.sock")
        );
        // Media: a volume unless said otherwise.
        use crate::media::MediaLocation;
        assert_eq!(
            staging.media_location().unwrap(),
            MediaLocation::Volume {
                volume: "media".into()
            }
        );
        let c = parse("project: shop\nenvironments:\n  prod:\n    media: s3://shop-media/files\n  staging:\n    media: volume\n    media_volume: uploads\n").unwrap();
        let env = |n: &str| {
            c.environments[&EnvName::parse(n).unwrap()]
                .media_location()
                .unwrap()
        };
        assert_eq!(
            env("prod"),
            MediaLocation::Bucket {
                bucket: "shop-media".into(),
                prefix: "files/".into()
            }
        );
        assert_eq!(
            env("staging"),
            MediaLocation::Volume {
                volume: "uploads".into()
            }
        );
    }

    #[test]
    fn loading_errors_name_the_problem() {
        let cases = [
            ("project: Shop\n", "not a valid project name"),
            ("project: shop\nprot: 80\n", "unknown field `prot`"),
            ("project: shop\nport: 0\n", "port must be"),
            (
                "project: shop\ndata_from: prod\n",
                "not under `environments:`",
            ),
            (
                "project: shop\nenvironments:\n  Prod: {}\n",
                "not a valid environment name",
            ),
            (
                "project: shop\nenvironments:\n  prod:\n    bakups: x\n",
                "unknown field `bakups`",
            ),
            (
                "project: shop\nenvironments:\n  prod:\n    media: ftp://x/\n",
                "environments.prod: media is `ftp://x/`",
            ),
            (
                "project: shop\nenvironments:\n  prod:\n    media_volume: \"a b\"\n",
                "not a compose volume name",
            ),
            ("project: [\n", "not valid"),
            ("port: 80\n", "missing field `project`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(err.hint().unwrap().contains("countable.yml"));
        }
    }

    #[test]
    fn find_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "project: shop\n").unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let p = Project::find(&deep).unwrap();
        assert_eq!(p.root, dir.path());
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(matches!(
            Project::find(elsewhere.path()),
            Err(ProjectError::NotFound(_))
        ));
    }
}
