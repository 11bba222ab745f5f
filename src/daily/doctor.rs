//! `countable doctor`: is everything countable needs in place? Each check says what it
//! found and, when something is wrong, the fix. Machine checks (engine, compose, disk,
//! lrzip) run anywhere; inside a project, also its port, files, local database and
//! every environment's `docker_host` and backup store.
//!
//! It only reads: nothing is started, stopped or changed (a port is probed by binding
//! it for an instant).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::engine::Engine;
use crate::environment::Local;
use crate::error::hint_of;

/// Below this, a check of free disk fails; below `DISK_LOW`, it warns.
const DISK_FAIL: u64 = 2 << 30;
const DISK_LOW: u64 = 10 << 30;
/// How long one environment may take to answer.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: countable (or part of it) will not work. `doctor` exits 1.
    Fail,
    /// Not applicable here (no project, not configured, not running).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        check: name.to_string(),
        status,
        detail: detail.into(),
        fix,
    }
}

/// An error as a failed check: its text (causes included) and its hint as the fix.
fn failed(name: &str, err: &anyhow::Error, fallback_fix: &str) -> Check {
    let text = err
        .chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    check(
        name,
        Status::Fail,
        text,
        Some(hint_of(err).unwrap_or_else(|| fallback_fix.to_string())),
    )
}

/// Every check, in order. `start` is where to look for a project.
pub async fn run(start: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let engine = engine_checks(&mut out).await;
    out.push(compose_check());
    let local = Local::open(start);
    out.push(disk_check(
        local
            .as_ref()
            .map(|l| l.project.root.as_path())
            .unwrap_or(start),
        "project",
    ));
    // The engine's data root is a path on the engine's machine: measured only when
    // that is this one.
    let local_engine =
        std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"));
    if let (Some((_, _, Some(root))), true) = (&engine, local_engine) {
        if Path::new(root).is_dir() {
            out.push(disk_check(Path::new(root), "engine"));
        }
    }
    out.push(lrzip_check());
    let mut local = match local {
        Ok(l) => l,
        Err(e) => {
            let not_found = matches!(
                e.downcast_ref::<crate::project::ProjectError>(),
                Some(crate::project::ProjectError::NotFound(_))
            );
            out.push(if not_found {
                check(
                    "project",
                    Status::Skip,
                    "no countable.yml here or above: project checks skipped",
                    None,
                )
            } else {
                failed("project", &e, "fix countable.yml")
            });
            return out;
        }
    };
    out.push(files_check(&local));
    let running = match &engine {
        Some(_) => match local.status().await {
            Ok(r) => r,
            Err(e) => {
                out.push(failed("project containers", &e, "`docker ps`"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    out.push(port_check(&local, &running));
    out.push(durability_check(&mut local, &running, engine.is_some()).await);
    let envs: Vec<_> = local.project.config.environments.keys().cloned().collect();
    for env in envs {
        out.push(env_engine_check(&local, &env).await);
        out.push(env_store_check(&local, &env).await);
    }
    out
}

/// The engine: reachable, its version and API version. `None` when it is not.
async fn engine_checks(out: &mut Vec<Check>) -> Option<(String, String, Option<String>)> {
    let engine = match Engine::connect().await {
        Ok(e) => e,
        Err(e) => {
            out.push(failed("docker engine", &e.into(), "start Docker"));
            return None;
        }
    };
    match engine.describe().await {
        Ok((version, api, root)) => {
            let old = api
                .split('.')
                .nth(1)
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|minor| api.starts_with("1.") && minor < 41);
            out.push(check(
                "docker engine",
                if old { Status::Warn } else { Status::Ok },
                format!("Docker {version}, API {api}"),
                old.then(|| "upgrade Docker: countable is tested with API 1.41 and later".into()),
            ));
            Some((version, api, root))
        }
        Err(e) => {
            out.push(failed("docker engine", &e.into(), "check `docker version`"));
            None
        }
    }
}

fn compose_check() -> Check {
    match crate::compose::detect() {
        Ok(program) => {
            let version = crate::compose::version_of(&program).unwrap_or_else(|| "?".into());
            check(
                "docker compose",
                Status::Ok,
                format!(
                    "Compose {} ({})",
                    version.trim_start_matches('v'),
                    program.join(" ")
                ),
                None,
            )
        }
        Err(e) => failed("docker compose", &e.into(), "install Compose v2"),
    }
}

fn disk_check(path: &Path, what: &str) -> Check {
    let name = format!("free disk ({what})");
    match crate::store::dir::free_bytes_at(path) {
        Ok(free) => {
            let detail = format!(
                "{} free on {}",
                crate::ui::human_bytes(free),
                path.display()
            );
            let fix = format!(
                "free space on {}: `docker system df` shows what Docker holds, `docker image prune` and `countable backups prune` give some back",
                path.display()
            );
            if free < DISK_FAIL {
                check(&name, Status::Fail, detail, Some(fix))
            } else if free < DISK_LOW {
                check(&name, Status::Warn, detail, Some(fix))
            } else {
                check(&name, Status::Ok, detail, None)
            }
        }
        Err(e) => check(
            &name,
            Status::Warn,
            format!("cannot read the free space of {}: {e}", path.display()),
            None,
        ),
    }
}

fn lrzip_check() -> Check {
    if crate::process::exists("lrzip") {
        check(
            "lrzip",
            Status::Ok,
            "found (reads and writes .lrz backups)",
            None,
        )
    } else {
        check(
            "lrzip",
            Status::Warn,
            "not found: .lrz backups cannot be read or written",
            Some("install lrzip (`apt-get install lrzip`, `brew install lrzip`)".into()),
        )
    }
}

/// The files the project's compose model and countable's conventions need.
fn files_check(local: &Local) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let root = &local.project.root;
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for f in &local.project.config.compose_files {
        if !root.join(f).is_file() {
            missing.push(f.clone());
        }
    }
    for f in ["Dockerfile", "entrypoint.sh", "nginx/default.conf", ".env"] {
        if !root.join(f).is_file() {
            missing.push(f.to_string());
        }
    }
    if let Ok(m) = std::fs::metadata(root.join("entrypoint.sh")) {
        if m.permissions().mode() & 0o111 == 0 {
            wrong.push("entrypoint.sh is not executable (`chmod +x entrypoint.sh`)".to_string());
        }
    }
    if let Ok(m) = std::fs::metadata(root.join(".env")) {
        if m.permissions().mode() & 0o077 != 0 {
            wrong.push(
                ".env is readable by others (`chmod 600 .env`: it holds secrets)".to_string(),
            );
        }
    }
    let files = local.project.local_compose_files();
    if !missing.is_empty() {
        return check(
            "project files",
            Status::Fail,
            format!("missing: {}", missing.join(", ")),
            Some("`countable init` adds what is missing (it never overwrites a file)".into()),
        );
    }
    if !wrong.is_empty() {
        return check(
            "project files",
            Status::Warn,
            wrong.join("; "),
            Some(wrong.join("; ")),
        );
    }
    check(
        "project files",
        Status::Ok,
        format!("compose files: {}", files.join(", ")),
        None,
    )
}

/// The published port: this project's nginx holds it, or it is free to take.
fn port_check(local: &Local, running: &[crate::engine::ServiceState]) -> Check {
    let port = local.project.config.port;
    let nginx = &local.project.config.services.nginx;
    if running
        .iter()
        .any(|s| &s.service == nginx && s.ports.contains(&port))
    {
        return check(
            "port",
            Status::Ok,
            format!("{port}: published by this project's {nginx}"),
            None,
        );
    }
    match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => check("port", Status::Ok, format!("{port}: free"), None),
        Err(e) => check(
            "port",
            Status::Fail,
            format!("{port}: taken by another program ({e})"),
            Some(format!(
                "stop what listens there (`ss -ltnp 'sport = :{port}'`, `docker ps --filter publish={port}`), or choose another: `port:` in countable.yml and `ports:` of {nginx} in compose.yaml"
            )),
        ),
    }
}

/// The local database's crash-safety settings are back to normal after restores.
async fn durability_check(
    local: &mut Local,
    running: &[crate::engine::ServiceState],
    engine_up: bool,
) -> Check {
    let name = "local database";
    let db_service = local.project.config.services.db.clone();
    if !engine_up
        || !running
            .iter()
            .any(|s| s.service == db_service && s.state == "running")
    {
        return check(
            name,
            Status::Skip,
            "not running (`countable up` starts it)",
            None,
        );
    }
    let project = local.project.compose_name().to_string();
    let found = async {
        let engine = local.engine().await?.clone();
        let container = engine.service_container(&project, &db_service).await?;
        let db = crate::restore::Db::discover(engine, container).await?;
        crate::restore::departures(&db).await
    }
    .await;
    let off = |d: &crate::restore::Departures| {
        d.off
            .iter()
            .map(|s| format!("{s} is off"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match found {
        Ok(d) if d.restore == Some(true) => check(
            name,
            Status::Warn,
            "a countable restore is running now (its settings are relaxed until it ends)",
            Some("wait for it to end, then run `countable doctor` again".into()),
        ),
        Ok(d) if d.restore == Some(false) => check(
            name,
            Status::Fail,
            format!("a killed restore left the server relaxed ({})", off(&d)),
            Some("`countable up` (or any command that opens the local database) puts the settings back, flushes, and drops the half-made database".into()),
        ),
        Ok(d) if !d.off.is_empty() => check(
            name,
            Status::Fail,
            format!("{}: a crash can corrupt the data", off(&d)),
            Some(format!(
                "if you did not set this on purpose: {} && countable psql -c 'SELECT pg_reload_conf()'",
                d.off
                    .iter()
                    .map(|s| format!("countable psql -c 'ALTER SYSTEM RESET {s}'"))
                    .collect::<Vec<_>>()
                    .join(" && ")
            )),
        ),
        Ok(_) => check(
            name,
            Status::Ok,
            "durable: fsync, synchronous_commit and full_page_writes on",
            None,
        ),
        Err(e) => failed(name, &e, "`countable logs db`"),
    }
}

/// An environment's `docker_host` answers (over ssh too).
async fn env_engine_check(local: &Local, env: &crate::names::EnvName) -> Check {
    let name = format!("{env}: docker_host");
    let Some(host) = local.project.config.environments[env].docker_host.clone() else {
        return check(
            &name,
            Status::Skip,
            "not set (deploys to this machine's engine)",
            None,
        );
    };
    match tokio::time::timeout(REMOTE_TIMEOUT, async {
        let engine = Engine::connect_to(Some(&host)).await?;
        engine.describe().await.map_err(anyhow::Error::from)
    })
    .await
    {
        Ok(Ok((version, api, _))) => check(
            &name,
            Status::Ok,
            format!("{host}: Docker {version}, API {api}"),
            None,
        ),
        Ok(Err(e)) => failed(
            &name,
            &e,
            &format!("check `docker_host` of {env} in countable.yml"),
        ),
        Err(_) => check(
            &name,
            Status::Fail,
            format!(
                "{host} did not answer within {} s",
                REMOTE_TIMEOUT.as_secs()
            ),
            Some(format!(
                "check the host is up and reachable (`DOCKER_HOST={host} docker info`)"
            )),
        ),
    }
}

/// An environment's backup store answers a listing with the credentials it is given.
async fn env_store_check(local: &Local, env: &crate::names::EnvName) -> Check {
    let name = format!("{env}: backups");
    if local.project.config.environments[env].backups.is_none() {
        return check(&name, Status::Skip, "no `backups:` location", None);
    }
    match tokio::time::timeout(REMOTE_TIMEOUT, async {
        let store = crate::data::store_of(local, env).await?;
        if let crate::store::Store::Dir(d) = &store {
            // The first backup makes the directory.
            if !d.exists() {
                return Ok((
                    format!("{} (made by the first backup)", store.location()),
                    Vec::new(),
                ));
            }
        }
        let list = store.list().await?;
        Ok::<_, anyhow::Error>((store.location(), list))
    })
    .await
    {
        Ok(Ok((location, list))) => {
            let newest = list
                .iter()
                .find(|b| b.taken_at().is_some())
                .map(|b| format!(", newest {}", b.key))
                .unwrap_or_default();
            check(
                &name,
                Status::Ok,
                format!("{location}: {} objects{newest}", list.len()),
                None,
            )
        }
        Ok(Err(e)) => failed(
            &name,
            &e,
            &format!("check `backups` of {env} in countable.yml"),
        ),
        Err(_) => check(
            &name,
            Status::Fail,
            format!(
                "the store did not answer within {} s",
                REMOTE_TIMEOUT.as_secs()
            ),
            Some("check the network and `endpoint_url` of the environment".into()),
        ),
    }
}

/// The table for a terminal: one row per check, each fix under its row.
pub fn table(checks: &[Check]) -> Vec<String> {
    let width = checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut lines = vec![format!("{:<width$}  {:<6}  DETAIL", "CHECK", "STATUS")];
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "-",
        };
        lines.push(format!("{:<width$}  {status:<6}  {}", c.check, c.detail));
        if let (Some(fix), Status::Warn | Status::Fail) = (&c.fix, c.status) {
            lines.push(format!("{:<width$}  {:<6}  fix: {fix}", "", ""));
        }
    }
    lines
}

/// Is anything broken?
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_each_fix_under_its_row() {
        let checks = vec![
            check("docker engine", Status::Ok, "Docker 28, API 1.41", None),
            check("port", Status::Fail, "8000: taken", Some("stop it".into())),
            check("lrzip", Status::Skip, "n/a", Some("never shown".into())),
        ];
        let t = table(&checks);
        assert!(t[0].starts_with("CHECK"));
        assert!(t[2].contains("FAIL") && t[2].contains("8000: taken"));
        assert!(t[3].trim_start().starts_with("fix: stop it"), "{t:?}");
        assert!(!t.iter().any(|l| l.contains("never shown")));
        assert!(any_failed(&checks));
        assert!(!any_failed(&checks[..1]));
    }
}
