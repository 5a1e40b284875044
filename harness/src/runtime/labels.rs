//! Labels on every container and network of a run, and the sweep that removes earlier runs' leftovers.
//!
//! A run is live while the process that started it runs on this host; anything labelled by a run whose
//! process is gone is a leftover (a panic that skipped drop, a SIGKILL). `sweep` removes leftovers only,
//! so it is safe while other runs are going.

use std::collections::{BTreeMap, HashMap};

use testcontainers::bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::docker::{ctx, Docker, RuntimeError};

/// The run id; every object of a run carries it.
pub const RUN: &str = "org.poolchaos.run";
/// The pid of the process that owns the run.
pub const PID: &str = "org.poolchaos.pid";
/// The pid label of a run that `poolchaos up` left running on purpose: not a leftover until `down`.
pub const DETACHED: &str = "detached";
/// The host that process runs on (a pid means nothing elsewhere).
pub const HOST: &str = "org.poolchaos.host";
/// The node name (containers only).
pub const NODE: &str = "org.poolchaos.node";

/// The labels of a run owned by this process.
pub fn for_run(run: &str) -> HashMap<String, String> {
    HashMap::from([
        (RUN.to_string(), run.to_string()),
        (PID.to_string(), std::process::id().to_string()),
        (HOST.to_string(), hostname()),
    ])
}

/// This machine's hostname, as the kernel knows it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the run that set these labels still has its process on this host.
pub fn owner_alive(labels: &HashMap<String, String>) -> bool {
    if labels.get(PID).map(String::as_str) == Some(DETACHED) {
        return true;
    }
    let same_host = labels.get(HOST).map(String::as_str) == Some(hostname().as_str());
    let pid = labels.get(PID).and_then(|p| p.parse::<u32>().ok());
    match (same_host, pid) {
        (true, Some(pid)) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        // Another host's run, or labels we cannot read: not ours to judge as dead unless asked for all.
        _ => labels.get(HOST).is_some_and(|h| h != &hostname()),
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub runs: Vec<String>,
    pub containers: usize,
    pub networks: usize,
    /// Networks Docker would not remove even after their endpoints were cut (reported, not fatal).
    pub stuck: Vec<String>,
}

/// Removes the containers and networks of runs whose owner is gone (of every run when `all`; of one run,
/// whatever its owner, when `only_run` names it).
pub async fn sweep(
    docker: &Docker,
    all: bool,
    only_run: Option<&str>,
) -> Result<Swept, RuntimeError> {
    let filters = HashMap::from([("label".to_string(), vec![RUN.to_string()])]);
    let containers = ctx(
        "list labelled containers",
        docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await,
    )?;
    let networks = ctx(
        "list labelled networks",
        docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await,
    )?;
    let mut runs = BTreeMap::new();
    let mut swept = Swept::default();
    for c in containers {
        let labels = c.labels.unwrap_or_default();
        if only_run.is_some_and(|r| labels.get(RUN).map(String::as_str) != Some(r)) {
            continue;
        }
        if !all && only_run.is_none() && owner_alive(&labels) {
            continue;
        }
        if let (Some(id), Some(run)) = (c.id, labels.get(RUN)) {
            runs.insert(run.clone(), ());
            ctx(
                format!("remove leftover container {id}"),
                docker
                    .remove_container(
                        &id,
                        Some(
                            RemoveContainerOptionsBuilder::new()
                                .force(true)
                                .v(true)
                                .build(),
                        ),
                    )
                    .await,
            )?;
            swept.containers += 1;
        }
    }
    for n in networks {
        let labels = n.labels.unwrap_or_default();
        if only_run.is_some_and(|r| labels.get(RUN).map(String::as_str) != Some(r)) {
            continue;
        }
        if !all && only_run.is_none() && owner_alive(&labels) {
            continue;
        }
        if let (Some(id), Some(run)) = (n.id, labels.get(RUN)) {
            runs.insert(run.clone(), ());
            if docker.remove_network(&id).await.is_err() {
                // A network can keep a stale endpoint of a container already gone: cut it loose, then retry.
                force_disconnect_all(docker, &id).await;
                if let Err(e) = docker.remove_network(&id).await {
                    tracing::warn!(network = %id, "could not remove a leftover network: {e}");
                    swept.stuck.push(id);
                    continue;
                }
            }
            swept.networks += 1;
        }
    }
    swept.runs = runs.into_keys().collect();
    Ok(swept)
}

/// Force-disconnects every endpoint Docker still lists on a network.
async fn force_disconnect_all(docker: &Docker, network: &str) {
    use testcontainers::bollard::models::NetworkDisconnectRequest;
    use testcontainers::bollard::query_parameters::InspectNetworkOptions;
    let Ok(info) = docker
        .inspect_network(network, None::<InspectNetworkOptions>)
        .await
    else {
        return;
    };
    for container in info.containers.unwrap_or_default().into_keys() {
        let _ = docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container,
                    force: Some(true),
                },
            )
            .await;
    }
}
