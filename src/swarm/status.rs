//! `countable status <env>` on a Swarm: each service of the stack with its replicas
//! (running/desired), the nodes its running tasks are on, and its last update's state.

use serde::Serialize;

use crate::engine::Engine;

/// One service, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The compose name (`web`), not the stack's (`shop-prod_web`).
    pub service: String,
    pub mode: String,
    pub running: u64,
    pub desired: u64,
    /// Hostnames of the nodes running its tasks (one per task).
    pub nodes: Vec<String>,
    pub update: Option<String>,
    pub message: Option<String>,
    pub image: String,
    /// The countable release its tasks run (web).
    pub release: Option<String>,
}

/// The stack's services and the Swarm's nodes.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub stack: String,
    pub services: Vec<ServiceStatus>,
    pub nodes: Vec<crate::engine::swarm::Node>,
}

pub async fn read(manager: &Engine, stack: &str) -> anyhow::Result<Status> {
    let nodes = manager.swarm_nodes().await?;
    let mut services = Vec::new();
    for svc in manager.stack_services(stack).await? {
        let tasks = manager.service_tasks(&svc.name).await?;
        // Running as far as the Swarm can tell: a task on a node that is down still
        // says `running` (the node cannot report otherwise) but is being replaced.
        let mut on: Vec<String> = tasks
            .iter()
            .filter(|t| t.state == "running" && t.desired_state == "running")
            .filter_map(|t| {
                let node = nodes.iter().find(|n| n.id == t.node_id);
                match node {
                    Some(n) if n.state == "down" => None,
                    Some(n) => Some(n.hostname.clone()),
                    None => Some(t.node_id.clone()),
                }
            })
            .collect();
        on.sort();
        let running = if svc.mode.ends_with("-job") {
            svc.running
        } else {
            on.len() as u64
        };
        services.push(ServiceStatus {
            service: svc
                .name
                .strip_prefix(&format!("{stack}_"))
                .unwrap_or(&svc.name)
                .to_string(),
            mode: svc.mode,
            running,
            desired: svc.desired,
            nodes: on,
            update: svc.update_state,
            message: svc.update_message,
            image: svc.image.split('@').next().unwrap_or_default().to_string(),
            release: svc
                .labels
                .get(crate::deploy::settings::LABEL_RELEASE)
                .cloned(),
        });
    }
    Ok(Status {
        stack: stack.to_string(),
        services,
        nodes,
    })
}

impl Status {
    /// The table `status` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{:<14} {:<14} {:<9} {:<20} {:<8} NODES",
            "SERVICE", "MODE", "REPLICAS", "UPDATE", "RELEASE"
        )];
        for s in &self.services {
            out.push(format!(
                "{:<14} {:<14} {:<9} {:<20} {:<8} {}",
                s.service,
                s.mode,
                format!("{}/{}", s.running, s.desired),
                s.update.as_deref().unwrap_or("-"),
                s.release.as_deref().unwrap_or("-"),
                if s.nodes.is_empty() {
                    "-".into()
                } else {
                    s.nodes.join(",")
                }
            ));
        }
        out.push(String::new());
        out.push(format!(
            "{:<20} {:<16} {:<8} {:<8} ROLE",
            "NODE", "ADDRESS", "STATE", "AVAIL"
        ));
        for n in &self.nodes {
            out.push(format!(
                "{:<20} {:<16} {:<8} {:<8} {}",
                n.hostname,
                n.addr,
                n.state,
                n.availability,
                if n.manager { "manager" } else { "worker" }
            ));
        }
        out
    }
}
