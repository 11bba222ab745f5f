//! The compose model (`docker compose config --format json`, so `.env` and
//! interpolation have applied) turned into a stack file for `docker stack deploy`.
//! Pure: it reads files only through the `read` it is given (for configs' hashes).
//!
//! What changes, and why (Swarm's known traps):
//! - `build`, `depends_on`, `container_name`, `restart`, `env_file` (already inlined),
//!   `pull_policy`, `develop` and `profiles` are dropped: stack deploy ignores or
//!   refuses them. Restarts become `deploy.restart_policy`.
//! - web runs the release's image, `replicas` (default 2), with a rolling update that
//!   starts the new task first, rolls back on failure and watches each new task for at
//!   least its health window (`monitor`).
//! - Services with a volume (the db) and services publishing ports in host mode stop
//!   first (two copies cannot share the data or the port); the others start first.
//! - db is pinned to one node, the one holding its volume.
//! - nginx runs on every node (`mode: global`), without one host's release switch
//!   (the `live.conf` volume): the rolling update is the switch.
//! - Bind-mounted files become Swarm configs named by their content's hash, so a
//!   changed file is a new config instead of an update Swarm refuses.
//! - A `<web>-static` global job collects web's static files into each node's static
//!   volume, so nginx on a node without a web task serves them too.
//! - Volumes keep compose's names, so the data of a project that ran on one host is
//!   the stack's; network names are dropped (the stack names its own).
//!   Its networks are attachable, so a one-off container (a rollback's `migrate`) can
//!   reach the db.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::project::{EndpointMode, PublishMode};

/// Keys stack deploy ignores or refuses.
const DROPPED: &[&str] = &[
    "build",
    "depends_on",
    "container_name",
    "restart",
    "env_file",
    "pull_policy",
    "develop",
    "profiles",
    "links",
    "platform",
];

/// The most a config may hold (Swarm's limit is 500 KB).
const CONFIG_MAX: usize = 500 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("the compose model has no service `{0}`")]
    NoService(String),
    #[error(
        "service `{service}` bind-mounts the directory {path}: a Swarm node has no such directory"
    )]
    BindDirectory { service: String, path: String },
    #[error(
        "service `{service}` bind-mounts {path} ({size} bytes): more than a Swarm config may hold"
    )]
    BindTooLarge {
        service: String,
        path: String,
        size: usize,
    },
    #[error("reading {path}, bind-mounted by service `{service}`: {why}")]
    Read {
        service: String,
        path: String,
        why: String,
    },
    #[error("service `{0}` uses `network_mode`, which a Swarm service cannot")]
    NetworkMode(String),
}

crate::register_hint!(StackError);
impl crate::error::Hint for StackError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            StackError::NoService(s) => format!("name the service in countable.yml's `services:` (it is `{s}` now) or add it to the compose files"),
            StackError::BindDirectory { .. } => "mount a named volume instead, or copy the files into the image (a Swarm config carries single files only)".into(),
            StackError::BindTooLarge { .. } => "bake the file into the image instead".into(),
            StackError::Read { .. } => "check that the file exists in the deployed commit".into(),
            StackError::NetworkMode(_) => "remove `network_mode` from the service in the compose files (or deploy this environment with `mode: single`)".into(),
        })
    }
}

/// What the stack is made of, beyond the model.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub web: &'a str,
    pub db: &'a str,
    pub nginx: &'a str,
    /// The release's web image (in a registry the nodes reach, or on every node).
    pub web_image: &'a str,
    /// Labels for web's tasks (release, commit).
    pub labels: BTreeMap<String, String>,
    pub replicas: &'a BTreeMap<String, u32>,
    pub publish: PublishMode,
    pub endpoint: EndpointMode,
    /// The hostname of the node that runs the db.
    pub db_node: &'a str,
    /// The volume holding uploads (never written by the static job).
    pub media_volume: &'a str,
}

/// A stack file and what countable reads back from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub doc: Value,
    /// The configs it uses: keys (content-hashed) and, where set, names.
    pub configs: Vec<String>,
    /// web's rolling update's monitor window.
    pub monitor: Duration,
    /// The static job's service name, when there is one.
    pub static_job: Option<String>,
    /// web's service name.
    pub web: String,
}

/// Turn `model` into a stack (see the module doc).
pub fn transform(
    model: &Value,
    spec: &Spec,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Stack, StackError> {
    let services = model
        .get("services")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for needed in [spec.web, spec.db] {
        if !services.contains_key(needed) {
            return Err(StackError::NoService(needed.into()));
        }
    }
    let mut out_services = Map::new();
    let mut configs = Map::new();
    let mut monitor = Duration::from_secs(5);
    for (name, service) in &services {
        let mut svc = service.as_object().cloned().unwrap_or_default();
        if svc.contains_key("network_mode") {
            return Err(StackError::NetworkMode(name.clone()));
        }
        for k in DROPPED {
            svc.remove(*k);
        }
        // compose prints `command: null` and the like; the stack schema wants a value.
        svc.retain(|_, v| !v.is_null());
        if let Some(hc) = svc.get_mut("healthcheck").and_then(Value::as_object_mut) {
            hc.remove("start_interval");
        }
        let restart = service.get("restart").and_then(Value::as_str);
        let mounts = mounts(name, spec.nginx, &mut svc, &mut configs, read)?;
        let host_ports = ports(&mut svc, spec.publish);
        let has_volume = mounts.iter().any(|(kind, _)| kind == "volume");
        let mut deploy = svc
            .remove("deploy")
            .and_then(|d| d.as_object().cloned())
            .unwrap_or_default();
        // The compose file's own `deploy:` keys stand, but where countable.yml or the
        // issue's guarantees (web's rolling update) say otherwise.
        let own_replicas = deploy.remove("replicas").and_then(|r| r.as_u64());
        if !deploy.contains_key("restart_policy") {
            deploy.insert("restart_policy".into(), restart_policy(restart));
        }
        deploy.insert(
            "endpoint_mode".into(),
            json!(match spec.endpoint {
                EndpointMode::Vip => "vip",
                EndpointMode::Dnsrr => "dnsrr",
            }),
        );
        let replicas = |default: u64| {
            spec.replicas
                .get(name)
                .map(|n| *n as u64)
                .or(own_replicas)
                .unwrap_or(default)
        };
        let stop_first = has_volume && name != spec.web || host_ports;
        let order = if stop_first {
            "stop-first"
        } else {
            "start-first"
        };
        if name == spec.web {
            svc.insert("image".into(), json!(spec.web_image));
            monitor = health_window(service).max(monitor);
            let mut labels = deploy
                .remove("labels")
                .and_then(|l| l.as_object().cloned())
                .unwrap_or_default();
            for (k, v) in &spec.labels {
                labels.insert(k.clone(), json!(v));
            }
            deploy.insert("labels".into(), Value::Object(labels));
            deploy.insert("mode".into(), json!("replicated"));
            deploy.insert("replicas".into(), json!(replicas(2)));
            deploy.insert(
                "update_config".into(),
                json!({"parallelism": 1, "delay": "0s", "order": "start-first",
                       "failure_action": "rollback", "monitor": go_duration(monitor),
                       "max_failure_ratio": 0}),
            );
            deploy.insert(
                "rollback_config".into(),
                json!({"parallelism": 1, "delay": "0s", "order": "start-first",
                       "failure_action": "pause", "monitor": go_duration(monitor)}),
            );
        } else {
            let global =
                name == spec.nginx || deploy.get("mode").and_then(Value::as_str) == Some("global");
            if global {
                deploy.insert("mode".into(), json!("global"));
            } else {
                deploy.insert("mode".into(), json!("replicated"));
                deploy.insert("replicas".into(), json!(replicas(1)));
            }
            if !deploy.contains_key("update_config") {
                deploy.insert(
                    "update_config".into(),
                    json!({"parallelism": 1, "delay": "0s", "order": order, "failure_action": "rollback"}),
                );
            }
        }
        if name == spec.db {
            let mut placement = deploy
                .remove("placement")
                .and_then(|p| p.as_object().cloned())
                .unwrap_or_default();
            let mut constraints: Vec<Value> = placement
                .remove("constraints")
                .and_then(|c| c.as_array().cloned())
                .unwrap_or_default();
            constraints.push(json!(format!("node.hostname == {}", spec.db_node)));
            placement.insert("constraints".into(), Value::Array(constraints));
            deploy.insert("placement".into(), Value::Object(placement));
        }
        svc.insert("deploy".into(), Value::Object(deploy));
        out_services.insert(name.clone(), Value::Object(svc));
    }
    let static_job = static_job(&services, &out_services, spec);
    if let Some((name, job)) = &static_job {
        out_services.insert(name.clone(), job.clone());
    }
    let mut doc = Map::new();
    doc.insert("version".into(), json!("3.8"));
    doc.insert("services".into(), Value::Object(out_services));
    doc.insert("volumes".into(), top_level(model, "volumes"));
    doc.insert("networks".into(), top_level(model, "networks"));
    // The compose files' own configs and secrets: kept, each file-backed one named by
    // its content's hash (a changed file is a new object).
    configs.extend(carried(model, "configs", read)?);
    let secrets = carried(model, "secrets", read)?;
    if !secrets.is_empty() {
        doc.insert("secrets".into(), Value::Object(secrets));
    }
    // What the stack uses: keys (stack deploy names them `<stack>_<key>`) and names.
    let config_keys: Vec<String> = configs
        .iter()
        .flat_map(|(k, v)| {
            let name = v.get("name").and_then(Value::as_str).map(String::from);
            std::iter::once(k.clone()).chain(name)
        })
        .collect();
    if !configs.is_empty() {
        doc.insert("configs".into(), Value::Object(configs));
    }
    Ok(Stack {
        doc: Value::Object(doc),
        configs: config_keys,
        monitor,
        static_job: static_job.map(|(n, _)| n),
        web: spec.web.to_string(),
    })
}

/// Rewrite the service's mounts: named volumes stay, bind-mounted files become
/// configs. Returns (type, target) of what is left.
fn mounts(
    service: &str,
    nginx: &str,
    svc: &mut Map<String, Value>,
    configs: &mut Map<String, Value>,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<(String, String)>, StackError> {
    let Some(volumes) = svc.remove("volumes").and_then(|v| v.as_array().cloned()) else {
        return Ok(vec![]);
    };
    let mut kept = Vec::new();
    let mut out = Vec::new();
    let mut service_configs: Vec<Value> = svc
        .remove("configs")
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    for m in volumes {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
        let target = m.get("target").and_then(Value::as_str).unwrap_or_default();
        if kind == "bind" {
            let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
            let bytes = read(Path::new(source)).map_err(|e| match e.kind() {
                std::io::ErrorKind::IsADirectory => StackError::BindDirectory {
                    service: service.into(),
                    path: source.into(),
                },
                _ => StackError::Read {
                    service: service.into(),
                    path: source.into(),
                    why: e.to_string(),
                },
            })?;
            if bytes.len() > CONFIG_MAX {
                return Err(StackError::BindTooLarge {
                    service: service.into(),
                    path: source.into(),
                    size: bytes.len(),
                });
            }
            let key = config_key(target, &bytes);
            configs.insert(key.clone(), json!({ "file": source }));
            service_configs.push(json!({"source": key, "target": target, "mode": 0o444}));
            out.push(("config".to_string(), target.to_string()));
            continue;
        }
        // One host's release switch (`live.conf`, which names a release's alias) has
        // no place in a stack: the rolling update is the switch.
        if service == nginx && target == crate::deploy::target::LIVE_DIR {
            continue;
        }
        let mut m = m.as_object().cloned().unwrap_or_default();
        m.remove("bind");
        if let Some(v) = m.get_mut("volume").and_then(Value::as_object_mut) {
            v.remove("subpath");
        }
        // A read-only volume is no state of this service's own.
        let read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
        let kind = if kind == "volume" && read_only {
            "volume:ro"
        } else {
            kind
        };
        out.push((kind.to_string(), target.to_string()));
        kept.push(Value::Object(m));
    }
    if !kept.is_empty() {
        svc.insert("volumes".into(), Value::Array(kept));
    }
    if !service_configs.is_empty() {
        svc.insert("configs".into(), Value::Array(service_configs));
    }
    Ok(out)
}

/// The model's top-level `configs` or `secrets`: file-backed ones get a `name` with
/// their content's hash; the others (external, from the environment) as they are.
fn carried(
    model: &Value,
    key: &str,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Map<String, Value>, StackError> {
    let mut out = Map::new();
    for (k, v) in model
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut v = v.as_object().cloned().unwrap_or_default();
        if let Some(file) = v.get("file").and_then(Value::as_str).map(String::from) {
            let bytes = read(Path::new(&file)).map_err(|e| StackError::Read {
                service: format!("{key}.{k}"),
                path: file.clone(),
                why: e.to_string(),
            })?;
            v.insert("name".into(), json!(config_key(k, &bytes)));
        }
        out.insert(k.clone(), Value::Object(v));
    }
    Ok(out)
}

/// `<target's file name>_<12 hex of its SHA-256>`: a new name for new content.
fn config_key(target: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    let base: String = Path::new(target)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let hash = crate::digest::hex(&sha2::Sha256::digest(bytes));
    format!("{base}_{}", &hash[..12])
}

/// Set each published port's mode; true when a port is published in host mode.
fn ports(svc: &mut Map<String, Value>, publish: PublishMode) -> bool {
    let Some(ports) = svc.get_mut("ports").and_then(Value::as_array_mut) else {
        return false;
    };
    let mode = match publish {
        PublishMode::Ingress => "ingress",
        PublishMode::Host => "host",
    };
    for p in ports.iter_mut() {
        if let Some(p) = p.as_object_mut() {
            p.insert("mode".into(), json!(mode));
            p.remove("host_ip");
            p.remove("app_protocol");
            p.remove("name");
            if let Some(n) = p
                .get("published")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
            {
                p.insert("published".into(), json!(n));
            }
        }
    }
    publish == PublishMode::Host && !ports.is_empty()
}

/// compose's `restart:` as Swarm's restart policy.
fn restart_policy(restart: Option<&str>) -> Value {
    match restart.map(|r| r.split_once(':').unwrap_or((r, ""))) {
        Some(("no", _)) => json!({"condition": "none"}),
        Some(("on-failure", n)) => match n.parse::<u64>() {
            Ok(n) => json!({"condition": "on-failure", "delay": "5s", "max_attempts": n}),
            Err(_) => json!({"condition": "on-failure", "delay": "5s"}),
        },
        _ => json!({"condition": "any", "delay": "5s"}),
    }
}

/// How long a healthy task may take to be found unhealthy: interval × retries +
/// timeout (Docker's defaults: 30 s, 3, 30 s).
pub fn health_window(service: &Value) -> Duration {
    let hc = service.get("healthcheck");
    let get = |k: &str, d: Duration| {
        hc.and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .and_then(parse_duration)
            .unwrap_or(d)
    };
    let retries = hc
        .and_then(|h| h.get("retries"))
        .and_then(Value::as_u64)
        .unwrap_or(3) as u32;
    get("interval", Duration::from_secs(30)) * retries + get("timeout", Duration::from_secs(30))
}

/// A Go duration (`1m30s`, `500ms`, `3s`) as compose prints it.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest == "0" {
        return Some(total);
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += Duration::from_secs_f64(n * unit);
        rest = &rest[u_end..];
    }
    Some(total)
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The global job that collects web's static files on every node: web's image and
/// environment, the volumes web shares with nginx but the media volume, migrations
/// off (web's first new task runs them, under the entrypoint's lock).
fn static_job(
    model: &Map<String, Value>,
    out: &Map<String, Value>,
    spec: &Spec,
) -> Option<(String, Value)> {
    let web = out.get(spec.web)?;
    let nginx_volumes: Vec<String> = model
        .get(spec.nginx)?
        .get("volumes")?
        .as_array()?
        .iter()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("volume"))
        .filter_map(|m| m.get("source").and_then(Value::as_str).map(String::from))
        .collect();
    let shared: Vec<Value> = web
        .get("volumes")?
        .as_array()?
        .iter()
        .filter(|m| {
            m.get("source")
                .and_then(Value::as_str)
                .is_some_and(|s| nginx_volumes.iter().any(|n| n == s) && s != spec.media_volume)
        })
        .cloned()
        .collect();
    if shared.is_empty() {
        return None;
    }
    let mut env = web
        .get("environment")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    env.insert("DJANGO_MIGRATE".into(), json!("0"));
    env.insert("DJANGO_COLLECTSTATIC".into(), json!("1"));
    let mut job = Map::new();
    job.insert("image".into(), json!(spec.web_image));
    job.insert("command".into(), json!(["true"]));
    job.insert("environment".into(), Value::Object(env));
    job.insert("volumes".into(), Value::Array(shared));
    for k in ["networks", "user", "working_dir", "entrypoint"] {
        if let Some(v) = web.get(k) {
            job.insert(k.into(), v.clone());
        }
    }
    job.insert(
        "deploy".into(),
        json!({"mode": "global-job", "restart_policy": {"condition": "on-failure", "delay": "2s", "max_attempts": 3}}),
    );
    Some((format!("{}-static", spec.web), Value::Object(job)))
}

/// Top-level volumes (with compose's names) or networks (without: the stack names
/// them; `external` ones keep theirs).
fn top_level(model: &Value, key: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in model
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let mut v = v.as_object().cloned().unwrap_or_default();
        let external = v.get("external").and_then(Value::as_bool).unwrap_or(false);
        // Volumes keep compose's names (`<project>_<key>` or the files' own), so a
        // project that ran on one host keeps its data; networks are the stack's.
        if key == "networks" && !external {
            v.remove("name");
        }
        v.remove("ipam");
        if key == "networks" && !external {
            // Attachable: a rollback's one-off `manage.py migrate` joins it.
            v.insert("driver".into(), json!("overlay"));
            v.insert("attachable".into(), json!(true));
        }
        out.insert(k.clone(), Value::Object(v));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
