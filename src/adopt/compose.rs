//! A project's own compose files, read before `init` writes anything: which file a
//! plain `docker compose` would use, its services, and the role each plays for
//! countable (the postgres image is the db, the service that builds the code is web;
//! the rest, redis or a worker, are the team's and stay).

use std::path::{Path, PathBuf};

/// The names compose looks for, in its order of preference.
pub const CANDIDATES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// One service of the team's file.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    pub builds: bool,
    pub role: Role,
    /// Its own `command:`, as words (it then outlives an `entrypoint:` override).
    pub command: Option<Vec<String>>,
    /// Its `build:`: the context directory and the Dockerfile in it.
    pub build: Option<(String, String)>,
    /// It reads an `env_file:` (variables absent from `environment:` may come from it).
    pub env_file: bool,
    /// The container side of its first `ports:` entry.
    pub container_port: Option<u16>,
    /// Its `entrypoint:`, as words (a string form split as compose splits it).
    pub entrypoint: Option<Vec<String>>,
    /// Its `environment:` (map or list form); values as written, `${…}` unresolved; a
    /// bare key (`- KEY`, `KEY:`), whose value compose takes from the shell or `.env`,
    /// is None.
    pub environment: std::collections::BTreeMap<String, Option<String>>,
    /// Its `working_dir:`.
    pub working_dir: Option<String>,
    /// Container paths its `volumes:` mount something at.
    pub mount_targets: Vec<String>,
    /// The container path it bind-mounts the project directory (`.`) at, if any:
    /// live code, a development setting.
    pub mounts_project_at: Option<String>,
    /// It publishes ports on the host (`ports:`).
    pub publishes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Db,
    Web,
    /// redis, a worker, a mail catcher: kept as the team wrote it.
    Other,
}

/// The compose file a plain `docker compose` would read here, and its services.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub file: PathBuf,
    /// The override file compose merges by itself beside `file`
    /// (`docker-compose.override.yml` …), when there is one.
    pub override_file: Option<PathBuf>,
    pub services: Vec<Service>,
    /// The services of `override_file` (what it changes), roles left as Other.
    pub override_services: Vec<Service>,
}

impl Existing {
    pub fn role(&self, role: Role) -> Option<&Service> {
        self.services.iter().find(|s| s.role == role)
    }

    /// `db → db (postgres:16), app → web (build), redis → kept (redis:7)`.
    pub fn mapping(&self) -> String {
        self.services
            .iter()
            .map(|s| {
                let what = match (&s.image, s.builds) {
                    (_, true) => "build".to_string(),
                    (Some(i), false) => i.clone(),
                    (None, false) => "?".into(),
                };
                let role = match s.role {
                    Role::Db => "db",
                    Role::Web => "web",
                    Role::Other => "kept",
                };
                format!("{} → {role} ({what})", s.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The first of [`CANDIDATES`] under `root` with its services; None when there is none.
/// A file that does not parse is an error: `init` must not guess around it.
pub fn read(root: &Path) -> anyhow::Result<Option<Existing>> {
    let Some(file) = CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|f| root.join(f).is_file())
    else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(root.join(&file))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} does not parse as YAML: {e}", file.display()))?;
    // compose merges `<stem>.override.yml` or `.yaml` of the file it picked, when it
    // exists (either extension, whichever the file itself has).
    let name = file.to_string_lossy();
    let override_file = ["yaml", "yml"]
        .iter()
        .map(|ext| PathBuf::from(override_name(&name, ext)))
        .find(|o| root.join(o).is_file());
    let override_services = match &override_file {
        Some(o) => {
            let text = std::fs::read_to_string(root.join(o))?;
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} does not parse as YAML: {e}", o.display()))?;
            services(&doc)
        }
        None => Vec::new(),
    };
    Ok(Some(Existing {
        services: services(&doc),
        override_file,
        override_services,
        file,
    }))
}

/// `<stem>.override.<ext>` beside compose file `file`.
pub fn override_name(file: &str, ext: &str) -> String {
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    format!("{stem}.override.{ext}")
}

/// `["a", "b"]`, or a string split the way compose splits it (no shell).
fn words(v: &serde_yaml_ng::Value) -> Option<Vec<String>> {
    match v {
        serde_yaml_ng::Value::String(s) => shlex::split(s),
        serde_yaml_ng::Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

/// `environment:` as a map (`KEY: value`) or a list (`KEY=value`); a key without a value
/// (`KEY` alone, `KEY:`) takes the shell's or `.env`'s: None.
fn environment(
    v: Option<&serde_yaml_ng::Value>,
) -> std::collections::BTreeMap<String, Option<String>> {
    let scalar = |v: &serde_yaml_ng::Value| match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Some(serde_yaml_ng::Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v))))
            .collect(),
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| {
                let item = i.as_str()?;
                Some(match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item.to_string(), None),
                })
            })
            .collect(),
        _ => Default::default(),
    }
}

/// `build: ./dir` or `build: {context: dir, dockerfile: File}` → (context, dockerfile).
fn build(v: Option<&serde_yaml_ng::Value>) -> Option<(String, String)> {
    let v = v?;
    let (context, dockerfile) = match v.as_str() {
        Some(context) => (context.to_string(), None),
        None => (
            v.get("context")
                .and_then(|c| c.as_str())
                .unwrap_or(".")
                .to_string(),
            v.get("dockerfile")
                .and_then(|d| d.as_str())
                .map(str::to_string),
        ),
    };
    Some((context, dockerfile.unwrap_or_else(|| "Dockerfile".into())))
}

/// The container side of the first `ports:` entry: `"8000:5000"` → 5000, `5000` →
/// 5000, `{target: 5000}` → 5000.
fn container_port(v: Option<&serde_yaml_ng::Value>) -> Option<u16> {
    let first = v?.as_sequence()?.first()?;
    match first {
        serde_yaml_ng::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        serde_yaml_ng::Value::String(s) => {
            s.rsplit(':').next()?.split(['/', '-']).next()?.parse().ok()
        }
        other => other
            .get("target")
            .and_then(|t| t.as_u64())
            .and_then(|n| u16::try_from(n).ok()),
    }
}

/// Where a `volumes:` entry mounts the project directory itself (`.:/code`, `./:/code`,
/// or the long form with `source: .`).
fn project_mount(v: Option<&serde_yaml_ng::Value>) -> Option<String> {
    v.and_then(|v| v.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(crate::deploy::model::mount_parts)
        .find_map(|(source, target)| matches!(source.as_str(), "." | "./").then_some(target))
}

/// The container side of each `volumes:` entry (an anonymous volume is its target).
fn mount_targets(v: Option<&serde_yaml_ng::Value>) -> Vec<String> {
    v.and_then(|v| v.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|m| {
            crate::deploy::model::mount_parts(m)
                .map(|(_, target)| target)
                .or_else(|| m.as_str().map(str::to_string))
        })
        .collect()
}

fn services(doc: &serde_yaml_ng::Value) -> Vec<Service> {
    let Some(map) = doc.get("services").and_then(|s| s.as_mapping()) else {
        return Vec::new();
    };
    let mut out: Vec<Service> = map
        .iter()
        .filter_map(|(k, v)| {
            Some(Service {
                name: k.as_str()?.to_string(),
                image: v.get("image").and_then(|i| i.as_str()).map(str::to_string),
                builds: v.get("build").is_some(),
                role: Role::Other,
                command: v.get("command").and_then(words),
                build: build(v.get("build")),
                env_file: v.get("env_file").is_some_and(|e| !e.is_null()),
                container_port: container_port(v.get("ports")),
                entrypoint: v.get("entrypoint").and_then(words),
                environment: environment(v.get("environment")),
                working_dir: v
                    .get("working_dir")
                    .and_then(|w| w.as_str())
                    .map(str::to_string),
                mount_targets: mount_targets(v.get("volumes")),
                mounts_project_at: project_mount(v.get("volumes")),
                publishes: v
                    .get("ports")
                    .and_then(|p| p.as_sequence())
                    .is_some_and(|p| !p.is_empty()),
            })
        })
        .collect();
    let is_postgres = |s: &Service| {
        s.image
            .as_deref()
            .is_some_and(|i| i.contains("postgres") || i.contains("postgis"))
    };
    if let Some(db) = out.iter_mut().find(|s| is_postgres(s)) {
        db.role = Role::Db;
    }
    // Of several services that build the code (web and a worker share a Dockerfile),
    // the one named like a web server, else the first.
    let web = out
        .iter()
        .position(|s| s.builds && ["web", "app", "django", "backend"].contains(&s.name.as_str()))
        .or_else(|| out.iter().position(|s| s.builds));
    if let Some(i) = web {
        out[i].role = Role::Web;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_roles_in_compose_order_of_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            "services:\n  worker:\n    build: .\n    command: celery -A x worker\n  db:\n    image: postgres:16\n  redis:\n    image: redis:7\n  app:\n    build:\n      context: .\n    ports: ['8000:8000']\n",
        )
        .unwrap();
        let e = read(dir.path()).unwrap().unwrap();
        assert_eq!(e.file, PathBuf::from("docker-compose.yml"));
        assert_eq!(e.role(Role::Db).unwrap().name, "db");
        assert_eq!(e.role(Role::Web).unwrap().name, "app");
        assert_eq!(
            e.mapping(),
            "worker → kept (build), db → db (postgres:16), redis → kept (redis:7), app → web (build)"
        );
        std::fs::write(dir.path().join("compose.yaml"), "services: [").unwrap();
        assert!(read(dir.path())
            .unwrap_err()
            .to_string()
            .contains("compose.yaml does not parse"));
    }
}
