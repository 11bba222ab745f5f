//! What a Swarm manager knows: its nodes, a stack's services with their update state,
//! and each service's tasks (where they run, how they ended). Read-only: a stack is
//! changed through `docker stack deploy` (compose.rs's `Stack`), never here.

use std::collections::HashMap;

use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};
use serde::Serialize;

use super::{Engine, EngineError};

/// A node of the Swarm.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    /// Its address in the Swarm (`Status.Addr`).
    pub addr: String,
    /// `ready`, `down`, …
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    pub manager: bool,
}

/// One service of a stack.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Service {
    pub id: String,
    /// The stack's name for it (`<stack>_<service>`).
    pub name: String,
    /// `replicated`, `global`, `replicated-job`, `global-job`.
    pub mode: String,
    pub running: u64,
    pub desired: u64,
    pub image: String,
    /// The last update's state (`updating`, `completed`, `rollback_completed`, …);
    /// none before the first update.
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    pub labels: HashMap<String, String>,
}

/// One task of a service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    pub id: String,
    pub node_id: String,
    pub slot: Option<i64>,
    /// `running`, `failed`, `complete`, `shutdown`, `rejected`, …
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub error: Option<String>,
    pub container_id: Option<String>,
    pub image: String,
    pub timestamp: String,
}

fn text<T: Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn filters(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut f: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in pairs {
        f.entry(k.to_string()).or_default().push(v.to_string());
    }
    f
}

impl Engine {
    /// This engine's Swarm role: its node ID and hostname when it is a manager; none
    /// when it is not in a Swarm or only a worker.
    pub async fn swarm_manager(&self) -> Result<Option<(String, String)>, EngineError> {
        let info = self.docker.info().await?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Ok(None);
        }
        Ok(Some((
            swarm.node_id.unwrap_or_default(),
            info.name.unwrap_or_default(),
        )))
    }

    /// The Swarm's nodes (this engine must be a manager).
    pub async fn swarm_nodes(&self) -> Result<Vec<Node>, EngineError> {
        let nodes = self.docker.list_nodes(None::<ListNodesOptions>).await?;
        let mut out: Vec<Node> = nodes
            .into_iter()
            .map(|n| {
                let status = n.status.unwrap_or_default();
                let spec = n.spec.unwrap_or_default();
                Node {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    addr: status.addr.unwrap_or_default(),
                    state: text(&status.state),
                    availability: text(&spec.availability),
                    manager: n.manager_status.is_some(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(out)
    }

    /// The services of stack `stack`, by name.
    pub async fn stack_services(&self, stack: &str) -> Result<Vec<Service>, EngineError> {
        let label = format!("com.docker.stack.namespace={stack}");
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters(&[("label", &label)])),
                status: Some(true),
            }))
            .await?;
        let mut out: Vec<Service> = services
            .into_iter()
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                let mode = spec.mode.unwrap_or_default();
                let mode = if mode.global.is_some() {
                    "global"
                } else if mode.replicated_job.is_some() {
                    "replicated-job"
                } else if mode.global_job.is_some() {
                    "global-job"
                } else {
                    "replicated"
                };
                let status = s.service_status.unwrap_or_default();
                let update = s.update_status.unwrap_or_default();
                let state = text(&update.state);
                Service {
                    id: s.id.unwrap_or_default(),
                    name: spec.name.unwrap_or_default(),
                    mode: mode.into(),
                    running: status.running_tasks.unwrap_or(0),
                    desired: status.desired_tasks.unwrap_or(0),
                    image: spec
                        .task_template
                        .and_then(|t| t.container_spec)
                        .and_then(|c| c.image)
                        .unwrap_or_default(),
                    update_state: (!state.is_empty()).then_some(state),
                    update_message: update.message.filter(|m| !m.is_empty()),
                    labels: spec.labels.unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The tasks of service `name` (its full name), newest first.
    pub async fn service_tasks(&self, name: &str) -> Result<Vec<Task>, EngineError> {
        let tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters(&[("service", name)])),
            }))
            .await?;
        let mut out: Vec<Task> = tasks
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                Task {
                    id: t.id.unwrap_or_default(),
                    node_id: t.node_id.unwrap_or_default(),
                    slot: t.slot,
                    state: text(&status.state),
                    desired_state: text(&t.desired_state),
                    message: status.message.unwrap_or_default(),
                    error: status.err.filter(|e| !e.is_empty()),
                    container_id: status.container_status.and_then(|c| c.container_id),
                    image: t
                        .spec
                        .and_then(|s| s.container_spec)
                        .and_then(|c| c.image)
                        .unwrap_or_default(),
                    timestamp: status
                        .timestamp
                        .as_ref()
                        .map(|t| format!("{t:?}").trim_matches('"').to_string())
                        .unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        Ok(out)
    }
}

impl Engine {
    /// Remove network `name`; one that does not exist is no error.
    pub async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
