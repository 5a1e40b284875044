//! Reaching a run's nodes: a fault's target resolved to the run's own containers (never one without the run's
//! label), their state as Docker reports it, and shell commands in their network namespaces with the host's tools.
//! Every fault kind's runtime (`inject`, `partition`, `packet`, `disk`) reaches nodes through here.

use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;

use super::cluster::{Cluster, NodeHandle};
use super::docker::{ctx, RuntimeError};
use super::labels;

/// How long a verification may take before the fault counts as unverified.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// Resolves a target to the run's nodes: a node name, a pool name, or `site:<name>` (never the proxy).
pub async fn resolve(c: &Cluster, target: &str) -> Result<Vec<NodeHandle>, RuntimeError> {
    let nodes: Vec<NodeHandle> = if let Some(site) = target.strip_prefix("site:") {
        c.topology
            .nodes()
            .filter(|n| n.site == site)
            .filter_map(|n| c.nodes.get(&n.name).cloned())
            .collect()
    } else if let Some(node) = c.nodes.get(target) {
        vec![node.clone()]
    } else {
        c.pool_nodes(target).into_iter().cloned().collect()
    };
    if nodes.is_empty() {
        return Err(RuntimeError::UnknownTarget(target.to_string()));
    }
    for n in &nodes {
        in_blast_radius(c, n).await?;
    }
    Ok(nodes)
}

/// Refuses any container that does not carry this run's label, whatever the topology says.
async fn in_blast_radius(c: &Cluster, node: &NodeHandle) -> Result<(), RuntimeError> {
    let info = inspect(c, node).await?;
    let run = info
        .config
        .and_then(|cfg| cfg.labels)
        .and_then(|l| l.get(labels::RUN).cloned());
    if run.as_deref() == Some(c.run.as_str()) {
        Ok(())
    } else {
        Err(RuntimeError::OutsideBlastRadius(node.container.clone()))
    }
}

pub async fn inspect(
    c: &Cluster,
    node: &NodeHandle,
) -> Result<ContainerInspectResponse, RuntimeError> {
    ctx(
        format!("inspect {}", node.container),
        c.docker
            .inspect_container(&node.container, None::<InspectContainerOptions>)
            .await,
    )
}

/// The node's address on each Docker network it is attached to now.
pub async fn on_networks(
    c: &Cluster,
    node: &NodeHandle,
) -> Result<std::collections::BTreeMap<String, std::net::IpAddr>, RuntimeError> {
    Ok(inspect(c, node)
        .await?
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(net, e)| Some((net, e.ip_address?.parse().ok()?)))
        .collect())
}

/// The pid of the node's process (its namespaces are this process's).
pub async fn pid(c: &Cluster, node: &NodeHandle) -> Result<i64, RuntimeError> {
    inspect(c, node)
        .await?
        .state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            RuntimeError::Other(format!("find the process of {}: not running", node.name))
        })
}

/// Runs a shell script in a container's network namespace with the host's tools (iptables, bash). Needs
/// root on a Linux host: a scratch image has no tools, and Docker Desktop's VM is out of the host's reach.
pub async fn netns_sh(pid: i64, script: &str) -> Result<(), RuntimeError> {
    let out = nsenter(pid, script)
        .await
        .map_err(|e| {
            RuntimeError::Other(format!(
                "run nsenter (util-linux) for a network fault: {e}; partitions need root on a Linux host"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!(
            "change the packet filter in a node's network namespace (`{script}`): {}; \
             partitions need root and iptables on a Linux host",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs a shell script in a container's network namespace and returns what it printed.
pub async fn netns_output(pid: i64, script: &str) -> Result<String, RuntimeError> {
    let out = nsenter(pid, script).await.map_err(|e| {
        RuntimeError::Other(format!(
            "run nsenter (util-linux) to read a node's packet filter: {e}; network faults need root on a Linux host"
        ))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RuntimeError::Other(format!(
            "read the packet filter in a node's network namespace (`{script}`): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Longest a command in a node's network namespace may run (a packet filter change or a connect probe takes
/// milliseconds; a hung one is killed).
pub const NSENTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `bash -c script` in the network namespace of process `pid`, killed if it outlives [`NSENTER_TIMEOUT`] or
/// its caller is dropped.
pub async fn nsenter(pid: i64, script: &str) -> std::io::Result<std::process::Output> {
    let run = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "bash", "-c", script])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(NSENTER_TIMEOUT, run)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "nsenter ran over {} s and was killed",
                    NSENTER_TIMEOUT.as_secs()
                ),
            )
        })?
}
