//! Labels on every container, network and volume of a run, and the sweep that removes earlier runs' leftovers.
//!
//! A run is live while the process that started it runs on this host. A run `poolchaos up` left running is
//! detached: once it is up and its state is written, `up` creates the run's marker, a labelled volume
//! `pc-<run>-up`, and the run is live until `down` removes it. Until then a run started by `up` is owned by
//! that process like any other, so an `up` killed while it starts leaves a dead run. Anything labelled by a
//! run that is neither is a leftover (a panic that skipped drop, a SIGKILL). `sweep` removes leftovers only, so
//! it is safe while other runs are going. A run's store disks ([`super::disk`]) carry its labels in a file
//! beside them and go with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::errors::Error as DockerError;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};

use super::docker::{ctx, Docker, RuntimeError};

/// The run id; every object of a run carries it.
pub const RUN: &str = "org.poolchaos.run";
/// The pid of the process that owns the run.
pub const PID: &str = "org.poolchaos.pid";
/// In place of a pid: a run up and detached that carries no marker volume (how harness versions without the
/// marker labelled the runs `up` left running). Nothing tells whether it came up, so plain `sweep` keeps it.
pub const DETACHED: &str = "detached";
/// The host that process runs on (a pid means nothing elsewhere).
pub const HOST: &str = "org.poolchaos.host";
/// The node name (containers only).
pub const NODE: &str = "org.poolchaos.node";
/// On a run's marker volume only: the run is up and detached ([`UP`]).
pub const MARKER: &str = "org.poolchaos.marker";
/// The value of [`MARKER`] on the volume that marks a detached run.
pub const UP: &str = "up";

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

/// The name of the volume that marks `run` as up and detached.
pub fn marker_name(run: &str) -> String {
    format!("pc-{run}-up")
}

/// Marks `run` as up and detached: from now on it is live whatever becomes of the process that started it,
/// until `down` (or `sweep --all`) removes it with its marker.
pub async fn mark_detached(docker: &Docker, run: &str) -> Result<(), RuntimeError> {
    let labels = HashMap::from([
        (RUN.to_string(), run.to_string()),
        (HOST.to_string(), hostname()),
        (MARKER.to_string(), UP.to_string()),
    ]);
    ctx(
        format!("mark run {run} as up (volume {})", marker_name(run)),
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(marker_name(run)),
                labels: Some(labels),
                ..Default::default()
            })
            .await,
    )?;
    Ok(())
}

/// Whether `run` is marked up and detached.
pub async fn is_detached(docker: &Docker, run: &str) -> Result<bool, RuntimeError> {
    match docker.inspect_volume(&marker_name(run)).await {
        Ok(v) => Ok(is_marker(&v.labels, run)),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(RuntimeError::Docker {
            action: format!("look for the marker of run {run}"),
            source: e,
        }),
    }
}

fn is_marker(labels: &HashMap<String, String>, run: &str) -> bool {
    labels.get(MARKER).map(String::as_str) == Some(UP)
        && labels.get(RUN).map(String::as_str) == Some(run)
}

/// Which runs a sweep removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Runs whose process is gone and that are not marked up and detached.
    Dead,
    /// Every run, going or detached.
    All,
    /// This run, whatever its owner (`down`).
    Run(&'a str),
}

/// Whether a sweep of `scope` removes an object with these labels: `detached` are the runs marked up and
/// detached, listed after the owners were judged (an `up` marks its run before it ends, so a run whose owner
/// was already gone when judged and that is not in `detached` never will be).
fn doomed(
    scope: Scope<'_>,
    labels: &HashMap<String, String>,
    owner_alive: bool,
    detached: &BTreeSet<String>,
) -> bool {
    let Some(run) = labels.get(RUN) else {
        return false;
    };
    match scope {
        Scope::All => true,
        Scope::Run(r) => run == r,
        Scope::Dead => !owner_alive && !detached.contains(run),
    }
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub runs: Vec<String>,
    pub containers: usize,
    pub networks: usize,
    /// Volumes of the removed runs (the marker of a detached run).
    pub volumes: usize,
    /// Runs whose store disks were removed (unmounted, their images deleted).
    pub disks: usize,
    /// Networks Docker would not remove even after their endpoints were cut (reported, not fatal).
    pub stuck: Vec<String>,
}

/// Removes the containers, networks and volumes of the runs `scope` names. An object that goes away while
/// the sweep works (another sweep, a `down`, a run's own teardown) is no error. A run's marker goes last, so
/// a `down` that is killed halfway leaves a detached run that `down` can finish.
pub async fn sweep(docker: &Docker, scope: Scope<'_>) -> Result<Swept, RuntimeError> {
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
    // Each run's owner is judged once, from the first of its objects listed; the markers are listed after.
    let mut alive: BTreeMap<String, bool> = BTreeMap::new();
    let containers: Vec<(Option<String>, HashMap<String, String>)> = containers
        .into_iter()
        .map(|c| (c.id, c.labels.unwrap_or_default()))
        .collect();
    let networks: Vec<(Option<String>, HashMap<String, String>)> = networks
        .into_iter()
        .map(|n| (n.id, n.labels.unwrap_or_default()))
        .collect();
    for (_, labels) in containers.iter().chain(&networks) {
        if let Some(run) = labels.get(RUN) {
            alive
                .entry(run.clone())
                .or_insert_with(|| owner_alive(labels));
        }
    }
    let volumes = ctx(
        "list labelled volumes",
        docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await,
    )?
    .volumes
    .unwrap_or_default();
    let detached: BTreeSet<String> = volumes
        .iter()
        .filter_map(|v| {
            v.labels
                .get(RUN)
                .filter(|run| is_marker(&v.labels, run))
                .cloned()
        })
        .collect();
    let judged = |labels: &HashMap<String, String>| {
        let owner = labels
            .get(RUN)
            .and_then(|r| alive.get(r))
            .copied()
            .unwrap_or(false);
        doomed(scope, labels, owner, &detached)
    };
    let mut runs = BTreeSet::new();
    let mut swept = Swept::default();
    for (id, labels) in &containers {
        let Some(id) = id.as_deref().filter(|_| judged(labels)) else {
            continue;
        };
        runs.extend(labels.get(RUN).cloned());
        let removed = docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        match removed {
            Ok(()) => swept.containers += 1,
            Err(e) if is_gone(&e) => {}
            Err(e) => {
                return Err(RuntimeError::Docker {
                    action: format!("remove leftover container {id}"),
                    source: e,
                })
            }
        }
    }
    for (id, labels) in &networks {
        let Some(id) = id.as_deref().filter(|_| judged(labels)) else {
            continue;
        };
        runs.extend(labels.get(RUN).cloned());
        match docker.remove_network(id).await {
            Ok(()) => swept.networks += 1,
            Err(e) if is_gone(&e) => {}
            Err(_) => {
                // A network can keep a stale endpoint of a container already gone: cut it loose, then retry.
                force_disconnect_all(docker, id).await;
                match docker.remove_network(id).await {
                    Ok(()) => swept.networks += 1,
                    Err(e) if is_gone(&e) => {}
                    Err(e) => {
                        tracing::warn!(network = %id, "could not remove a leftover network: {e}");
                        swept.stuck.push(id.to_string());
                    }
                }
            }
        }
    }
    // Volumes last: those of the runs removed, and a marker left alone by a `down` that was cut short.
    let has_objects: BTreeSet<&String> = alive.keys().collect();
    for v in &volumes {
        let Some(run) = v.labels.get(RUN) else {
            continue;
        };
        let orphan_marker =
            scope == Scope::Dead && is_marker(&v.labels, run) && !has_objects.contains(run);
        let gone_with_run = match scope {
            Scope::All => true,
            Scope::Run(r) => run == r,
            Scope::Dead => runs.contains(run),
        };
        if !(gone_with_run || orphan_marker) {
            continue;
        }
        runs.insert(run.clone());
        match docker
            .remove_volume(&v.name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => swept.volumes += 1,
            Err(e) if is_gone(&e) => {}
            Err(e) => {
                return Err(RuntimeError::Docker {
                    action: format!("remove volume {} of run {run}", v.name),
                    source: e,
                })
            }
        }
    }
    // The store disks of the runs judged the same way, by the labels kept beside them.
    let (all, only, dead_detached) = match scope {
        Scope::All => (true, None, detached.clone()),
        Scope::Run(r) => (false, Some(r.to_string()), detached.clone()),
        Scope::Dead => (false, None, detached.clone()),
    };
    let disk_runs = tokio::task::spawn_blocking(move || {
        super::store_disk::sweep_blocking(RUN, |_, labels| {
            let scope = match (&only, all) {
                (_, true) => Scope::All,
                (Some(r), _) => Scope::Run(r),
                (None, _) => Scope::Dead,
            };
            doomed(scope, labels, owner_alive(labels), &dead_detached)
        })
    })
    .await
    .map_err(|e| RuntimeError::Other(format!("sweep the store disks: {e}")))?;
    swept.disks = disk_runs.len();
    runs.extend(disk_runs);
    swept.runs = runs.into_iter().collect();
    Ok(swept)
}

/// Whether Docker says the object is gone already (404), or going (409: removal already in progress).
fn is_gone(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }
    )
}

/// Force-disconnects every endpoint Docker still lists on a network.
async fn force_disconnect_all(docker: &Docker, network: &str) {
    use bollard::models::NetworkDisconnectRequest;
    use bollard::query_parameters::InspectNetworkOptions;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(run: &str) -> HashMap<String, String> {
        HashMap::from([(RUN.to_string(), run.to_string())])
    }

    #[test]
    fn plain_sweep_removes_a_run_whose_owner_is_gone_unless_it_is_marked_up() {
        let detached = BTreeSet::from(["up1".to_string()]);
        // Killed while starting: the owner is gone, no marker.
        assert!(doomed(Scope::Dead, &labelled("dead"), false, &detached));
        // Still starting, or a foreground run.
        assert!(!doomed(Scope::Dead, &labelled("going"), true, &detached));
        // Up and detached, its `up` long gone.
        assert!(!doomed(Scope::Dead, &labelled("up1"), false, &detached));
    }

    #[test]
    fn all_removes_every_run_and_a_named_run_goes_whatever_its_owner() {
        let detached = BTreeSet::from(["up1".to_string()]);
        for (run, alive) in [("dead", false), ("going", true), ("up1", false)] {
            assert!(doomed(Scope::All, &labelled(run), alive, &detached));
        }
        assert!(doomed(
            Scope::Run("up1"),
            &labelled("up1"),
            false,
            &detached
        ));
        assert!(doomed(
            Scope::Run("going"),
            &labelled("going"),
            true,
            &detached
        ));
        assert!(!doomed(
            Scope::Run("up1"),
            &labelled("dead"),
            false,
            &detached
        ));
        assert!(!doomed(Scope::All, &HashMap::new(), false, &detached));
    }

    #[test]
    fn the_owner_is_judged_by_pid_on_this_host_only() {
        let mut l = labelled("r");
        l.insert(HOST.into(), hostname());
        l.insert(PID.into(), "not-a-pid".into());
        assert!(!owner_alive(&l));
        l.insert(PID.into(), u32::MAX.to_string());
        assert!(!owner_alive(&l), "a process that does not exist");
        l.insert(PID.into(), DETACHED.into());
        assert!(
            owner_alive(&l),
            "a detached run labelled without a marker is kept"
        );
        l.insert(PID.into(), std::process::id().to_string());
        assert!(owner_alive(&l));
        l.insert(HOST.into(), format!("{}-elsewhere", hostname()));
        assert!(owner_alive(&l), "another host's run is not judged here");
    }
}
