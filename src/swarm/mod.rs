//! An environment on Docker Swarm (`mode: swarm`): the same compose files, rendered by
//! compose (so `.env` and interpolation apply), turned into a stack (`stack`), deployed
//! with `docker stack deploy` on the manager (`cli`), and judged by what Swarm says of
//! each service's update afterwards (`deploy`), never by the command's exit alone.
//! `locate` finds a service's running task on whichever node holds it; `status`
//! reports services, replicas and placement.
//!
//! Releases, the ledger, the deploy lock and backups are the one-host ones: the ledger
//! lives in the environment's backup store, the lock in its database.

pub mod cli;
pub mod deploy;
pub mod locate;
pub mod rollback;
pub mod stack;
pub mod status;

use std::collections::BTreeMap;

use crate::deploy::settings::Settings;
use crate::error::Hinted;
use crate::project::{EndpointMode, PublishMode, Ship};

/// The Swarm settings of one environment, checked.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub replicas: BTreeMap<String, u32>,
    pub ship: Ship,
    pub publish: PublishMode,
    pub endpoint: EndpointMode,
    pub db_node: Option<String>,
    pub media_volume: String,
}

impl Swarm {
    /// From the environment's settings: the image goes through `registry` when one is
    /// set, else it is streamed to every node (`ship` chooses explicitly).
    pub fn of(s: &Settings) -> anyhow::Result<Self> {
        let e = &s.environment;
        // Through the registry when there is one; else streamed to every node.
        let ship = e.ship.unwrap_or(if s.registry.is_some() {
            Ship::Registry
        } else {
            Ship::EveryNode
        });
        if ship == Ship::Registry && s.registry.is_none() {
            return Err(Hinted::new(
                format!("environment `{}` has `ship: registry` but no `registry`: its nodes could not get the image", s.env),
                format!("set `registry: registry.example.com:5000` of {} in countable.yml (a registry every node can pull from), or `ship: every-node` to stream the image to each node's engine", s.env),
            )
            .into());
        }
        if s.docker_host.is_none() {
            return Err(Hinted::new(
                format!("environment `{}` runs on a Swarm but has no `docker_host`", s.env),
                format!("set `docker_host: ssh://user@manager` of {} in countable.yml (a Swarm manager)", s.env),
            )
            .into());
        }
        for (service, n) in &e.replicas {
            if *n == 0 && *service == s.web {
                return Err(Hinted::new(
                    format!(
                        "replicas of {} in {} is 0: nothing would serve",
                        s.web, s.env
                    ),
                    "give web at least 1 replica (2 or more to update without a gap)",
                )
                .into());
            }
        }
        Ok(Self {
            replicas: e.replicas.clone(),
            ship,
            publish: e.publish_mode.unwrap_or_default(),
            endpoint: e.endpoint_mode.unwrap_or_default(),
            db_node: e.db_node.clone(),
            media_volume: e.media_volume.clone().unwrap_or_else(|| "media".into()),
        })
    }
}

/// The manager of Swarm environment `env` and its stack's name; an error with a hint
/// when `env` does not run on a Swarm.
async fn manager_of(
    local: &crate::environment::Local,
    env: &crate::names::EnvName,
) -> anyhow::Result<(crate::engine::Engine, Option<String>, String)> {
    let config = &local.project.config.environments[env];
    if !config.is_swarm() {
        return Err(Hinted::new(
            format!("environment `{env}` runs on one engine (mode: single), not on a Swarm"),
            format!("`countable status` shows the local environment; on {env}'s host: `docker compose -p {} ps`", local.compose_project_of(env)),
        )
        .into());
    }
    let host = config.docker_host.clone();
    let engine = crate::engine::Engine::connect_to(host.as_deref()).await?;
    Ok((engine, host, local.compose_project_of(env)))
}

/// `countable status <env>` of a Swarm environment.
pub async fn env_status(
    local: &crate::environment::Local,
    env: &crate::names::EnvName,
) -> anyhow::Result<status::Status> {
    let (manager, _, stack) = manager_of(local, env).await?;
    status::read(&manager, &stack).await
}

/// `countable logs --env <env> [service]` of a Swarm environment: every task's log,
/// from whichever node runs it.
pub async fn env_logs(
    local: &crate::environment::Local,
    env: &crate::names::EnvName,
    service: Option<&str>,
    follow: bool,
    tail: Option<u32>,
) -> anyhow::Result<()> {
    let (_, host, stack) = manager_of(local, env).await?;
    let service = service.unwrap_or(&local.project.config.services.web);
    cli::Docker::new(host)
        .service_logs(&format!("{stack}_{service}"), follow, tail)
        .await
}
