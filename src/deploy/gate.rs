//! The health gate a release passes before it takes traffic, in two parts: its
//! container becomes healthy (with a deadline that extends while Django prints
//! `Applying …` lines, up to `migrate_timeout`), then an HTTP request through nginx,
//! with the environment's `Host` and `X-Forwarded-Proto: https`, reaches the release's
//! health view and gets a 200.
//!
//! It only watches and asks; it never starts, stops or switches anything.

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Hint;
use crate::ui::Printer;

/// How long a container may go without progress (a migration line) and without
/// becoming healthy.
pub const QUIET_WINDOW: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the new web container stopped (exit code {code}) before it became healthy")]
    Exited { code: i64, log: String },
    #[error("the new web container is unhealthy: {check}")]
    Unhealthy { check: String, log: String },
    #[error("the new web container was not healthy {secs} s after its last sign of progress")]
    Stalled { secs: u64, log: String },
    #[error("migrations were still running after migrate_timeout ({secs} s)")]
    MigrateTimeout { secs: u64, log: String },
    #[error("{url} through nginx answered {status}, not 200")]
    Http { url: String, status: String },
}

impl GateError {
    /// The container's last log lines, when the failure has them.
    pub fn log(&self) -> Option<&str> {
        match self {
            GateError::Exited { log, .. }
            | GateError::Unhealthy { log, .. }
            | GateError::Stalled { log, .. }
            | GateError::MigrateTimeout { log, .. } => Some(log),
            GateError::Http { .. } => None,
        }
    }
}

impl Hint for GateError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            GateError::Exited { .. } | GateError::Unhealthy { .. } | GateError::Stalled { .. } => {
                "the old release still serves; read the log above, fix the cause, commit and deploy again".into()
            }
            GateError::MigrateTimeout { .. } => {
                "raise `migrate_timeout` of this environment in countable.yml if the migration needs longer, then deploy again".into()
            }
            GateError::Http { .. } => {
                "the old release still serves; check the health view (`health_path`) and ALLOWED_HOSTS for the environment's domains".into()
            }
        })
    }
}
crate::register_hint!(GateError);

/// What the gate saw: the migrations Django reported applying.
#[derive(Debug, Default)]
pub struct Watched {
    pub applying: Vec<String>,
}

/// `Applying shop.0002_price... OK` → `shop.0002_price`.
pub fn applying(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("Applying ")?;
    let name = rest.split("...").next()?.trim();
    (!name.is_empty() && name.contains('.')).then(|| name.to_string())
}

/// Wait until `container` is healthy.
pub async fn wait_healthy(
    engine: &Engine,
    container: &str,
    migrate_timeout: Duration,
    printer: &Printer,
) -> Result<Watched, GateError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    let follower = {
        let engine = engine.clone();
        let container = container.to_string();
        tokio::spawn(async move { engine.follow_log(&container, tx).await })
    };
    let spinner = printer.spinner("waiting for the new web container to become healthy");
    let started = Instant::now();
    let mut progress = Instant::now();
    let mut watched = Watched::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let tail = |engine: Engine, c: String| async move {
        engine.log_tail(&c, 30).await.unwrap_or_default()
    };
    let result = loop {
        tokio::select! {
            line = rx.recv() => {
                if let Some(line) = line {
                    if let Some(m) = applying(&line) {
                        spinner.set_message(format!("migrating: {m}"));
                        watched.applying.push(m);
                        progress = Instant::now();
                    }
                }
            }
            _ = tick.tick() => {
                let h = match engine.health(container).await {
                    Ok(h) => h,
                    Err(_) => continue,
                };
                let migrating = progress.elapsed() < Duration::from_secs(5) && !watched.applying.is_empty();
                if h.state == "running" && h.health.as_deref() == Some("healthy") {
                    break Ok(());
                }
                if h.state == "running" && h.health.is_none() && started.elapsed() > Duration::from_secs(10) {
                    // No healthcheck: running is all the engine can tell; the HTTP
                    // check that follows is the real test.
                    break Ok(());
                }
                if h.state == "exited" || h.state == "dead" {
                    break Err(GateError::Exited { code: h.exit_code.unwrap_or(-1), log: tail(engine.clone(), container.to_string()).await });
                }
                if h.health.as_deref() == Some("unhealthy") && !migrating {
                    break Err(GateError::Unhealthy { check: h.last_check.unwrap_or_default(), log: tail(engine.clone(), container.to_string()).await });
                }
                if started.elapsed() > migrate_timeout {
                    break Err(GateError::MigrateTimeout { secs: migrate_timeout.as_secs(), log: tail(engine.clone(), container.to_string()).await });
                }
                if progress.elapsed() > QUIET_WINDOW {
                    break Err(GateError::Stalled { secs: QUIET_WINDOW.as_secs(), log: tail(engine.clone(), container.to_string()).await });
                }
            }
        }
    };
    follower.abort();
    spinner.finish_and_clear();
    result.map(|()| watched)
}

/// Where the health request goes: `url`, and for HTTPS to a domain the address it
/// resolves to (`reqwest`'s `resolve`: SNI and the certificate check use the domain)
/// and extra roots to trust (PEM; `COUNTABLE_ACME_CA_ROOT`, see deploy::tls).
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub url: String,
    pub resolve: Option<(String, std::net::SocketAddr)>,
    pub roots: Option<Vec<u8>>,
}

/// One request through nginx: `probe.url` (the environment's address and the health
/// path), with `host` as the Host header, `X-Forwarded-Proto: https`, and the preview
/// header when the candidate is not live yet. Retries for a few seconds (nginx reloads).
pub async fn http_check(
    probe: &Probe,
    host: Option<&str>,
    preview: Option<&str>,
) -> Result<(), GateError> {
    let url = probe.url.as_str();
    let failed = |e: reqwest::Error| GateError::Http {
        url: url.into(),
        status: e.to_string(),
    };
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some((domain, addr)) = &probe.resolve {
        builder = builder.resolve(domain, *addr);
    }
    if let Some(pem) = &probe.roots {
        for root in reqwest::Certificate::from_pem_bundle(pem).map_err(failed)? {
            builder = builder.add_root_certificate(root);
        }
    }
    let client = builder.build().map_err(failed)?;
    let mut last = String::new();
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut req = client.get(url).header("X-Forwarded-Proto", "https");
        if let Some(h) = host {
            req = req.header(reqwest::header::HOST, h);
        }
        if let Some(t) = preview {
            req = req.header("X-Countable-Preview", t);
        }
        match req.send().await {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) => last = r.status().to_string(),
            Err(e) => last = format!("{e:#}"),
        }
    }
    Err(GateError::Http {
        url: url.into(),
        status: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_lines() {
        assert_eq!(
            applying("  Applying shop.0002_price... OK").as_deref(),
            Some("shop.0002_price")
        );
        assert_eq!(
            applying("Applying contenttypes.0001_initial...").as_deref(),
            Some("contenttypes.0001_initial")
        );
        assert_eq!(applying("Operations to perform:"), None);
        assert_eq!(applying("Applying nothing"), None);
    }
}
