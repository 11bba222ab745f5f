//! Where a stack's service runs: the node of its running task, that node's engine
//! (reached the way the manager is: the manager's `docker_host` with the node's Swarm
//! address), and the task's container there. `backup`, `verify-backup`, `sync` and
//! `deploy` find the db this way, on whichever node runs it.

use crate::engine::Engine;
use crate::error::Hinted;

/// `docker_host` of the node at `addr`, reached as the manager is: same scheme and
/// user (`ssh://deploy@manager` → `ssh://deploy@10.0.0.12`). None for a local socket.
pub fn node_host(manager: Option<&str>, addr: &str) -> Option<String> {
    let manager = manager?;
    let (scheme, rest) = manager.split_once("://")?;
    match scheme {
        "ssh" => {
            let user = rest.rsplit_once('@').map(|(u, _)| format!("{u}@"));
            Some(format!("ssh://{}{addr}", user.unwrap_or_default()))
        }
        "tcp" => {
            let port = rest.rsplit_once(':').map(|(_, p)| p).unwrap_or("2376");
            Some(format!("tcp://{addr}:{port}"))
        }
        _ => None,
    }
}

/// The engine of the node running service `service` of `stack`, and the task's
/// container there.
pub async fn running(
    manager: &Engine,
    manager_host: Option<&str>,
    stack: &str,
    service: &str,
) -> anyhow::Result<(Engine, String)> {
    let full = format!("{stack}_{service}");
    let tasks = manager.service_tasks(&full).await?;
    let task = tasks
        .iter()
        .find(|t| t.state == "running" && t.desired_state == "running" && t.container_id.is_some())
        .ok_or_else(|| {
            let last = tasks
                .first()
                .map(|t| {
                    format!(
                        " (its newest task: {} {})",
                        t.state,
                        t.error.as_deref().unwrap_or(&t.message)
                    )
                })
                .unwrap_or_default();
            Hinted::new(
                format!("stack {stack} has no running `{service}` task{last}"),
                format!(
                    "see `countable status <env>` and `docker service ps {full}` on the manager"
                ),
            )
        })?;
    let container = task.container_id.clone().unwrap_or_default();
    let (own_id, _) = manager.swarm_manager().await?.unwrap_or_default();
    if task.node_id == own_id {
        return Ok((manager.clone(), container));
    }
    let nodes = manager.swarm_nodes().await?;
    let node = nodes.iter().find(|n| n.id == task.node_id).ok_or_else(|| {
        anyhow::anyhow!("the Swarm has no node {} (its task's node)", task.node_id)
    })?;
    let host = node_host(manager_host, &node.addr).ok_or_else(|| {
        Hinted::new(
            format!("{full} runs on node {} ({}), which countable cannot reach from a local socket", node.hostname, node.addr),
            "set `docker_host: ssh://user@manager` (the nodes are then reached as ssh://user@<node address>), or pin the service to the manager with `db_node`",
        )
    })?;
    let engine = Engine::connect_to(Some(&host)).await?;
    Ok((engine, container))
}

#[cfg(test)]
mod tests {
    use super::node_host;

    #[test]
    fn nodes_are_reached_as_the_manager_is() {
        assert_eq!(
            node_host(Some("ssh://deploy@mgr.example.com"), "10.0.0.12").as_deref(),
            Some("ssh://deploy@10.0.0.12")
        );
        assert_eq!(
            node_host(Some("ssh://mgr"), "10.0.0.12").as_deref(),
            Some("ssh://10.0.0.12")
        );
        assert_eq!(
            node_host(Some("tcp://mgr:2376"), "10.0.0.12").as_deref(),
            Some("tcp://10.0.0.12:2376")
        );
        assert_eq!(
            node_host(Some("unix:///var/run/docker.sock"), "10.0.0.12"),
            None
        );
        assert_eq!(node_host(None, "10.0.0.12"), None);
    }
}
