//! The compose model of one release: the project's own compose files plus an override
//! countable writes. The override pins web to the release's image (no `build:` on the
//! host), names the compose project, gives the release's web containers their network
//! alias, passes SENTRY_RELEASE/SENTRY_ENVIRONMENT, and labels services whose bind
//! mounts changed so compose recreates them.
//!
//! Two renderings of one override: `Target` is what a person on the host finds in the
//! release directory (`env_file: .env` as the project wrote it); `Run` is what
//! countable hands compose from the deploying machine, where the secrets come from
//! compose's own environment, never from a file or a command line.

use std::collections::BTreeMap;

use anyhow::Context;

use super::settings::{Settings, LABEL_ENV, LABEL_PROJECT, LABEL_RELEASE, LABEL_SHA};

pub const OVERRIDE_FILE: &str = "compose.release.yaml";

/// What the project's compose files say that the override must know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Services that read an `env_file`.
    pub env_file_services: Vec<String>,
    /// Every service name, in file order.
    pub services: Vec<String>,
    /// The top-level volumes: key → the engine's name when the files give one.
    pub volumes: crate::media::Volumes,
    /// Named volumes mounted by services: (service, volume key) → path in the container.
    pub mounts: BTreeMap<(String, String), String>,
    /// Services' `image:` where the files give one.
    pub images: BTreeMap<String, String>,
}

/// Read the services and their `env_file`s from the compose files' text.
pub fn shape(files: &[(String, String)]) -> anyhow::Result<Shape> {
    let mut shape = Shape::default();
    for (name, text) in files {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).with_context(|| format!("reading {name}"))?;
        if let Some(volumes) = doc.get("volumes").and_then(|v| v.as_mapping()) {
            for (k, v) in volumes {
                if let Some(k) = k.as_str() {
                    let named = volume_name(k, v);
                    let known = shape.volumes.entry(k.to_string()).or_default();
                    if named.is_some() {
                        *known = named;
                    }
                }
            }
        }
        let Some(services) = doc.get("services").and_then(|s| s.as_mapping()) else {
            continue;
        };
        for (k, v) in services {
            let Some(k) = k.as_str() else { continue };
            if !shape.services.iter().any(|s| s == k) {
                shape.services.push(k.to_string());
            }
            if v.get("env_file").is_some() && !shape.env_file_services.iter().any(|s| s == k) {
                shape.env_file_services.push(k.to_string());
            }
            if let Some(image) = v.get("image").and_then(|i| i.as_str()) {
                shape.images.insert(k.to_string(), image.to_string());
            }
            for m in v
                .get("volumes")
                .and_then(|m| m.as_sequence())
                .into_iter()
                .flatten()
            {
                if let Some((volume, target)) = volume_mount(m) {
                    shape.mounts.insert((k.to_string(), volume), target);
                }
            }
        }
    }
    Ok(shape)
}

/// The engine's name of top-level volume `key` declared as `v`, when the files say it:
/// its `name:` (unless it interpolates a variable), or the key of an `external` one.
/// One `volumes:` entry of a service as (source, target): `src:/target[:ro]`, or the
/// long syntax (`source:`/`target:`); None for an anonymous volume (`/target`).
pub(crate) fn mount_parts(m: &serde_yaml_ng::Value) -> Option<(String, String)> {
    match m.as_str() {
        Some(short) => {
            let mut parts = short.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        }
        None => Some((
            m.get("source")?.as_str()?.to_string(),
            m.get("target")?.as_str()?.to_string(),
        )),
    }
}

/// A service's mount of a named volume: `media:/app/media[:ro]`, or the long syntax
/// (`source:`/`target:`); binds (`./x:/y`, `/x:/y`) are none.
fn volume_mount(m: &serde_yaml_ng::Value) -> Option<(String, String)> {
    let (source, target) = mount_parts(m)?;
    let named = source
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    named.then_some((source, target))
}

fn volume_name(key: &str, v: &serde_yaml_ng::Value) -> Option<String> {
    if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
        return (!name.contains('$')).then(|| name.to_string());
    }
    v.get("external")
        .and_then(|e| e.as_bool())
        .filter(|e| *e)
        .map(|_| key.to_string())
}

/// Which rendering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flavor {
    /// Written into the release directory on the host.
    Target,
    /// Given to compose on the deploying machine.
    Run,
}

/// One release, as the override describes it.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    pub settings: &'a Settings,
    pub number: u32,
    pub sha: &'a str,
    pub image: &'a str,
    /// The keys of the environment's secrets (values never enter the override).
    pub secret_keys: &'a [String],
    /// Per service, a hash of its bind-mounted files' contents.
    pub bind_hashes: &'a BTreeMap<String, String>,
}

fn q(s: &str) -> String {
    // A JSON string is a YAML string; `$` is doubled so compose does not interpolate.
    serde_json::to_string(&s.replace('$', "$$")).expect("a string serialises")
}

/// The override's YAML.
pub fn render(r: &Release, shape: &Shape, flavor: Flavor) -> String {
    let s = r.settings;
    let mut out = format!(
        "# Written by countable deploy: release {} of {} ({}).\nname: {}\nservices:\n",
        r.number,
        s.env,
        r.sha,
        q(&s.compose_project)
    );
    for service in &shape.services {
        let web = *service == s.web;
        let env_file = shape.env_file_services.contains(service);
        let hash = r.bind_hashes.get(service);
        let needs_env = env_file && flavor == Flavor::Run;
        let tls = if *service == s.nginx {
            super::tls::nginx_override(s)
        } else {
            String::new()
        };
        if !(web || needs_env || hash.is_some() || !tls.is_empty()) {
            continue;
        }
        out.push_str(&format!("  {}:\n", q(service)));
        if web {
            out.push_str(&format!(
                "    image: {}\n    build: !reset null\n",
                q(r.image)
            ));
        }
        if env_file && flavor == Flavor::Run {
            out.push_str("    env_file: !reset []\n");
        }
        let mut env: Vec<(String, Option<String>)> = Vec::new();
        if env_file && flavor == Flavor::Run {
            env.extend(r.secret_keys.iter().map(|k| (k.clone(), None)));
        }
        if web {
            env.push(("SENTRY_RELEASE".into(), Some(r.sha.to_string())));
            env.push(("SENTRY_ENVIRONMENT".into(), Some(s.env.to_string())));
            if let Some(m) = &s.environment.settings_module {
                env.push(("DJANGO_SETTINGS_MODULE".into(), Some(m.clone())));
            }
        }
        if !env.is_empty() {
            out.push_str("    environment:\n");
            for (k, v) in env {
                match v {
                    Some(v) => out.push_str(&format!("      {}: {}\n", q(&k), q(&v))),
                    None => out.push_str(&format!("      {}: null\n", q(&k))),
                }
            }
        }
        let mut labels: Vec<(&str, String)> = Vec::new();
        if web {
            labels.push((LABEL_PROJECT, s.project.clone()));
            labels.push((LABEL_ENV, s.env.to_string()));
            labels.push((LABEL_RELEASE, r.number.to_string()));
            labels.push((LABEL_SHA, r.sha.to_string()));
        }
        if let Some(h) = hash {
            labels.push(("org.countable.files", h.clone()));
        }
        if !labels.is_empty() {
            out.push_str("    labels:\n");
            for (k, v) in labels {
                out.push_str(&format!("      {}: {}\n", q(k), q(&v)));
            }
        }
        if web {
            out.push_str(&format!(
                "    networks:\n      default:\n        aliases: [{}]\n",
                q(&s.alias(r.number))
            ));
        }
        out.push_str(&tls);
    }
    out
}

/// The override for building the release's image where countable runs: the tag and
/// the labels a prune finds it by (project, environment, commit) (and no `.env` needed: the secrets are compose's
/// environment).
pub fn render_build(s: &Settings, number: u32, sha: &str, image: &str, shape: &Shape) -> String {
    let mut out = format!(
        "services:\n  {}:\n    image: {}\n    build:\n      labels:\n        {}: {}\n        {}: {}\n        {}: {}\n",
        q(&s.web),
        q(image),
        q(LABEL_PROJECT),
        q(&s.project),
        q(LABEL_ENV),
        q(s.env.as_str()),
        q(LABEL_SHA),
        q(sha),
    );
    // The release number is in the tag and on the containers, not in the image: a
    // rebuild of the same commit is the same image, and ships nothing.
    let _ = number;
    if shape.env_file_services.contains(&s.web) {
        out.push_str("    env_file: !reset []\n");
    }
    for service in shape.env_file_services.iter().filter(|x| **x != s.web) {
        out.push_str(&format!("  {}:\n    env_file: !reset []\n", q(service)));
    }
    out
}

/// Bind mounts under the project directory, per service, from `docker compose config
/// --format json`: (service, path relative to the project directory).
pub fn bind_sources(config_json: &str, project_dir: &str) -> anyhow::Result<Vec<(String, String)>> {
    let v: serde_json::Value =
        serde_json::from_str(config_json).context("reading `docker compose config` output")?;
    let prefix = format!("{}/", project_dir.trim_end_matches('/'));
    let mut out = Vec::new();
    if let Some(services) = v.get("services").and_then(|s| s.as_object()) {
        for (name, svc) in services {
            for vol in svc
                .get("volumes")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if vol.get("type").and_then(|t| t.as_str()) != Some("bind") {
                    continue;
                }
                if let Some(rel) = vol
                    .get("source")
                    .and_then(|s| s.as_str())
                    .and_then(|s| s.strip_prefix(&prefix))
                {
                    out.push((name.clone(), rel.to_string()));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::EnvName;

    fn settings() -> Settings {
        let p = crate::project::Project {
            root: "/srv/shop".into(),
            config: crate::project::Config::parse(
                "project: shop\nenvironments:\n  prod:\n    branch: master\n",
                std::path::Path::new("countable.yml"),
            )
            .unwrap(),
        };
        Settings::resolve(&p, &EnvName::parse("prod").unwrap()).unwrap()
    }

    const BASE: &str = "name: shop\nservices:\n  db:\n    image: postgres:16\n    env_file: .env\n    environment:\n      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}\n  web:\n    build: {context: .}\n    env_file: .env\n  nginx:\n    image: nginx\n    volumes:\n      - ./nginx/default.conf:/etc/nginx/conf.d/default.conf:ro\n";

    #[test]
    fn shape_of_compose_files() {
        let s = shape(&[("compose.yaml".into(), BASE.into())]).unwrap();
        assert_eq!(s.services, ["db", "web", "nginx"]);
        assert_eq!(s.env_file_services, ["db", "web"]);
        assert!(s.volumes.is_empty());
        let s = shape(&[
            ("compose.yaml".into(), format!("{BASE}volumes:\n  db-data:\n  media:\n")),
            (
                "compose.prod.yaml".into(),
                "volumes:\n  media:\n    name: shop_uploads\n  old:\n    external: true\n  env:\n    name: ${X}\n".into(),
            ),
        ])
        .unwrap();
        assert_eq!(
            s.volumes,
            BTreeMap::from([
                ("db-data".to_string(), None),
                ("env".to_string(), None),
                ("media".to_string(), Some("shop_uploads".to_string())),
                ("old".to_string(), Some("old".to_string())),
            ])
        );
    }

    #[test]
    fn mounts_of_named_volumes_and_images() {
        let text = "services:\n  web:\n    build: .\n    volumes:\n      - media:/app/media\n      - ./src:/app/src\n  nginx:\n    image: nginx\n    volumes:\n      - type: volume\n        source: media\n        target: /srv/media\n        read_only: true\n      - /etc/x:/x:ro\n";
        let s = shape(&[("compose.yaml".into(), text.into())]).unwrap();
        let key = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            s.mounts,
            BTreeMap::from([
                (key("nginx", "media"), "/srv/media".to_string()),
                (key("web", "media"), "/app/media".to_string()),
            ])
        );
        assert_eq!(
            s.images,
            BTreeMap::from([("nginx".to_string(), "nginx".to_string())])
        );
    }

    #[test]
    fn overrides_pin_the_image_and_keep_secrets_out() {
        let st = settings();
        let sh = shape(&[("compose.yaml".into(), BASE.into())]).unwrap();
        let keys = vec!["DJANGO_SECRET_KEY".to_string()];
        let hashes = BTreeMap::from([("nginx".to_string(), "abc".to_string())]);
        let r = Release {
            settings: &st,
            number: 3,
            sha: "f00d",
            image: "shop-web:prod-3-f00d",
            secret_keys: &keys,
            bind_hashes: &hashes,
        };
        let run = render(&r, &sh, Flavor::Run);
        assert!(run.contains("name: \"shop-prod\""), "{run}");
        assert!(
            run.contains("image: \"shop-web:prod-3-f00d\"\n    build: !reset null"),
            "{run}"
        );
        assert!(run.contains("env_file: !reset []"), "{run}");
        assert!(run.contains("\"DJANGO_SECRET_KEY\": null"), "{run}");
        assert!(run.contains("aliases: [\"web-r3\"]"), "{run}");
        assert!(run.contains("\"org.countable.files\": \"abc\""), "{run}");
        let target = render(&r, &sh, Flavor::Target);
        assert!(
            !target.contains("  \"db\":"),
            "db needs nothing there: {target}"
        );
        assert!(!target.contains("env_file"), "{target}");
        assert!(!target.contains("DJANGO_SECRET_KEY"), "{target}");
        assert!(target.contains("SENTRY_RELEASE\": \"f00d\""), "{target}");
        assert!(!target.contains("DJANGO_SETTINGS_MODULE"), "{target}");
        // An environment's settings_module (an adopted project's production settings).
        let mut with_module = st.clone();
        with_module.environment.settings_module = Some("shop.settings.production".into());
        let r2 = Release {
            settings: &with_module,
            ..r.clone()
        };
        assert!(
            render(&r2, &sh, Flavor::Target)
                .contains("\"DJANGO_SETTINGS_MODULE\": \"shop.settings.production\""),
            "{}",
            render(&r2, &sh, Flavor::Target)
        );
        // Both parse as YAML.
        for y in [
            run,
            target,
            render_build(&st, 3, "f00d", "shop-web:prod-3-f00d", &sh),
        ] {
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&y).unwrap();
        }
    }

    #[test]
    fn bind_sources_under_the_project_only() {
        let json = r#"{"services":{"nginx":{"volumes":[{"type":"bind","source":"/srv/countable/shop-prod/current/nginx/default.conf","target":"/x"},{"type":"volume","source":"static","target":"/s"},{"type":"bind","source":"/etc/localtime","target":"/etc/localtime"}]}}}"#;
        let b = bind_sources(json, "/srv/countable/shop-prod/current").unwrap();
        assert_eq!(
            b,
            vec![("nginx".to_string(), "nginx/default.conf".to_string())]
        );
    }
}
