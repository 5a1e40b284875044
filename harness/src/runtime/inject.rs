//! Applies faults to a running [`Cluster`], verifies each one took effect, and undoes them.
//!
//! Verification is independent of the fault's own call: Docker's view of the container (not running,
//! paused, no networks), a TCP probe from inside another node's network namespace that a cut really
//! cuts (and a heal really heals), and the proxy's toxic list. The time from request to verified effect is
//! recorded. A fault that cannot be verified is an error: the run ends `unknown`, never silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use testcontainers::bollard::models::{ContainerInspectResponse, NetworkDisconnectRequest};
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use tracing::info;

use super::cluster::{Cluster, NodeHandle, PROXY};
use super::docker::{ctx, RuntimeError};
use super::{labels, proxy};
use crate::fault::Fault;

/// How long a verification may take before the fault counts as unverified.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// A connect that does not complete within this is taken as cut.
const PROBE_CONNECT_TIMEOUT_S: u32 = 1;

/// One fault's life: when it was asked for, when its effect was seen, when its undo was seen.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub fault: Fault,
    pub requested: Instant,
    pub verified: Instant,
    pub undone: Option<Instant>,
}

impl FaultRecord {
    /// Request to verified effect.
    pub fn verify_latency(&self) -> Duration {
        self.verified - self.requested
    }
}

/// What an undo needs to know that the fault's value does not say.
#[derive(Debug, Clone)]
enum Undo {
    /// Nodes to start again, each with the number of ready lines it had printed before.
    Start(Vec<(String, usize)>),
    Resume(String),
    Rejoin(String),
    Heal { chain: String, nodes: Vec<String> },
    RemoveToxic { proxy: String, toxic: String },
    Enable { proxy: String },
}

/// Applies and undoes faults on one cluster, and undoes whatever is still in force at the end.
pub struct Injector<'a> {
    cluster: &'a Cluster,
    in_force: BTreeMap<usize, (FaultRecord, Undo)>,
    done: Vec<FaultRecord>,
    next: usize,
}

impl<'a> Injector<'a> {
    pub fn new(cluster: &'a Cluster) -> Self {
        Injector {
            cluster,
            in_force: BTreeMap::new(),
            done: Vec::new(),
            next: 0,
        }
    }

    /// Applies `fault`, waits until its effect is verified, and returns its id for [`Injector::undo`].
    pub async fn apply(&mut self, fault: &Fault) -> Result<usize, RuntimeError> {
        let id = self.next;
        self.next += 1;
        let requested = Instant::now();
        let undo = self.apply_verified(fault, id).await?;
        let record = FaultRecord {
            fault: fault.clone(),
            requested,
            verified: Instant::now(),
            undone: None,
        };
        info!(
            fault = fault.kind(),
            target = %fault.target(),
            verified_ms = record.verify_latency().as_millis() as u64,
            "fault verified"
        );
        self.in_force.insert(id, (record, undo));
        Ok(id)
    }

    /// Undoes fault `id` and waits until the undo is verified.
    pub async fn undo(&mut self, id: usize) -> Result<FaultRecord, RuntimeError> {
        let (mut record, undo) = self
            .in_force
            .remove(&id)
            .unwrap_or_else(|| panic!("fault {id} undone twice or never applied: a harness bug"));
        self.undo_verified(&undo).await?;
        record.undone = Some(Instant::now());
        info!(
            undo = record.fault.undo_name(),
            target = %record.fault.target(),
            undone_ms = (record.undone.unwrap_or(record.verified) - record.verified).as_millis() as u64,
            "undo verified"
        );
        self.done.push(record.clone());
        Ok(record)
    }

    /// Undoes every fault still in force, newest first, each verified.
    pub async fn undo_all(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<usize> = self.in_force.keys().rev().copied().collect();
        for id in ids {
            self.undo(id).await?;
        }
        Ok(())
    }

    /// Every fault applied so far and undone.
    pub fn records(&self) -> &[FaultRecord] {
        &self.done
    }

    /// Faults still in force.
    pub fn in_force(&self) -> Vec<&FaultRecord> {
        self.in_force.values().map(|(r, _)| r).collect()
    }

    async fn apply_verified(&self, fault: &Fault, id: usize) -> Result<Undo, RuntimeError> {
        let c = self.cluster;
        match fault {
            Fault::Kill { target } => {
                let nodes = resolve(c, target).await?;
                kill(c, &nodes).await
            }
            Fault::SiteDown { site } => {
                let nodes = resolve(c, &format!("site:{site}")).await?;
                kill(c, &nodes).await
            }
            Fault::Stop { target, grace_s } => {
                let nodes = resolve(c, target).await?;
                let mut before = Vec::new();
                for n in &nodes {
                    before.push((n.name.clone(), c.ready_lines(n).await));
                }
                let stops = nodes.iter().map(|n| {
                    c.docker.stop_container(
                        &n.container,
                        Some(
                            StopContainerOptionsBuilder::new()
                                .t(*grace_s as i32)
                                .build(),
                        ),
                    )
                });
                for r in futures::future::join_all(stops).await {
                    ctx("stop a node", r)?;
                }
                for n in &nodes {
                    wait_state(c, n, "not running", |s| !running(s)).await?;
                }
                Ok(Undo::Start(before))
            }
            Fault::Pause { target } => {
                let node = single(c, target).await?;
                ctx(
                    format!("pause {}", node.name),
                    c.docker.pause_container(&node.container).await,
                )?;
                wait_state(c, &node, "paused", paused).await?;
                Ok(Undo::Resume(node.name))
            }
            Fault::Isolate { target } => {
                let node = single(c, target).await?;
                let ips = addresses(c, &node).await?;
                for logical in &node.networks {
                    let net = &c.networks[logical];
                    ctx(
                        format!("disconnect {} from {net}", node.name),
                        c.docker
                            .disconnect_network(
                                net,
                                NetworkDisconnectRequest {
                                    container: node.container.clone(),
                                    force: Some(true),
                                },
                            )
                            .await,
                    )?;
                }
                wait_state(c, &node, "on no network", |s| attached(s) == 0).await?;
                // Docker says so; a probe from a node that shared its networks proves it.
                let witness = c.node(PROXY)?.clone();
                for ip in ips {
                    probe_until(c, &witness, ip, probe_port(&node), false).await?;
                }
                Ok(Undo::Rejoin(node.name))
            }
            Fault::Partition { groups } => partition(c, groups, id).await,
            Fault::Link { from, to, toxic } => {
                let api = c.proxy_api().await?;
                let name = link_proxy_name(from, to);
                if c.topology.link(from, to).is_none() {
                    return Err(RuntimeError::UnknownTarget(format!(
                        "link {from} -> {to} (add a [[link]] for it to the topology)"
                    )));
                }
                match toxic.api_body(&format!("pc{id}_{}", toxic.kind())) {
                    Some(body) => {
                        let toxic_name = body["name"].as_str().unwrap_or_default().to_string();
                        proxy::expect(
                            api,
                            "POST",
                            &format!("/proxies/{name}/toxics"),
                            Some(&body),
                            &[200, 201],
                        )
                        .await?;
                        let list =
                            proxy::expect(api, "GET", &format!("/proxies/{name}/toxics"), None, &[200])
                                .await?;
                        let present = list
                            .as_array()
                            .is_some_and(|a| a.iter().any(|t| t["name"] == toxic_name));
                        if !present {
                            return Err(RuntimeError::Other(format!(
                                "verify toxic {toxic_name} on {name}: the proxy does not list it"
                            )));
                        }
                        Ok(Undo::RemoveToxic {
                            proxy: name,
                            toxic: toxic_name,
                        })
                    }
                    None => {
                        set_enabled(api, &name, false).await?;
                        Ok(Undo::Enable { proxy: name })
                    }
                }
            }
        }
    }

    async fn undo_verified(&self, undo: &Undo) -> Result<(), RuntimeError> {
        let c = self.cluster;
        match undo {
            Undo::Start(nodes) => {
                let starts = nodes.iter().map(|(name, seen)| async move {
                    let node = c.node(name)?.clone();
                    c.start_and_wait(&node, *seen).await
                });
                for r in futures::future::join_all(starts).await {
                    r?;
                }
                Ok(())
            }
            Undo::Resume(name) => {
                let node = c.node(name)?.clone();
                ctx(
                    format!("resume {name}"),
                    c.docker.unpause_container(&node.container).await,
                )?;
                wait_state(c, &node, "running, not paused", |s| {
                    running(s) && !paused(s)
                })
                .await
            }
            Undo::Rejoin(name) => {
                let node = c.node(name)?.clone();
                for logical in &node.networks {
                    c.connect(&node, logical).await?;
                }
                let want = node.networks.len();
                wait_state(c, &node, "on all its networks", |s| attached(s) == want).await?;
                let witness = c.node(PROXY)?.clone();
                for ip in addresses(c, &node).await? {
                    probe_until(c, &witness, ip, probe_port(&node), true).await?;
                }
                Ok(())
            }
            Undo::Heal { chain, nodes } => {
                for name in nodes {
                    let node = c.node(name)?.clone();
                    let pid = pid(c, &node).await?;
                    let script = format!(
                        "iptables -D INPUT -j {chain} && iptables -F {chain} && iptables -X {chain}"
                    );
                    netns_sh(pid, &script).await?;
                }
                // Every pair that was cut must connect again.
                for name in nodes {
                    let from = c.node(name)?.clone();
                    for other in nodes.iter().filter(|o| *o != name).take(1) {
                        let to = c.node(other)?.clone();
                        for ip in addresses(c, &to).await?.into_iter().take(1) {
                            probe_until(c, &from, ip, probe_port(&to), true).await?;
                        }
                    }
                }
                Ok(())
            }
            Undo::RemoveToxic { proxy: name, toxic } => {
                let api = c.proxy_api().await?;
                proxy::expect(
                    api,
                    "DELETE",
                    &format!("/proxies/{name}/toxics/{toxic}"),
                    None,
                    &[200, 204],
                )
                .await?;
                let list =
                    proxy::expect(api, "GET", &format!("/proxies/{name}/toxics"), None, &[200]).await?;
                if list
                    .as_array()
                    .is_some_and(|a| a.iter().any(|t| t["name"] == *toxic))
                {
                    return Err(RuntimeError::Other(format!(
                        "verify removal of toxic {toxic} on {name}: the proxy still lists it"
                    )));
                }
                Ok(())
            }
            Undo::Enable { proxy: name } => set_enabled(c.proxy_api().await?, name, true).await,
        }
    }
}

/// The proxy that carries link `from -> to`.
pub fn link_proxy_name(from: &str, to: &str) -> String {
    format!("{from}-to-{to}")
}

async fn set_enabled(
    api: std::net::SocketAddr,
    name: &str,
    enabled: bool,
) -> Result<(), RuntimeError> {
    let path = format!("/proxies/{name}");
    proxy::expect(api, "POST", &path, Some(&json!({"enabled": enabled})), &[200]).await?;
    let now = proxy::expect(api, "GET", &path, None, &[200]).await?;
    if now["enabled"] != enabled {
        return Err(RuntimeError::Other(format!(
            "verify proxy {name} enabled={enabled}: it says {}",
            now["enabled"]
        )));
    }
    Ok(())
}

async fn kill(c: &Cluster, nodes: &[NodeHandle]) -> Result<Undo, RuntimeError> {
    let mut before = Vec::new();
    for n in nodes {
        before.push((n.name.clone(), c.ready_lines(n).await));
    }
    let kills = nodes.iter().map(|n| {
        c.docker.kill_container(
            &n.container,
            Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
        )
    });
    for r in futures::future::join_all(kills).await {
        ctx("kill a node", r)?;
    }
    for n in nodes {
        wait_state(c, n, "not running", |s| !running(s)).await?;
    }
    Ok(Undo::Start(before))
}

async fn partition(c: &Cluster, groups: &[Vec<String>], id: usize) -> Result<Undo, RuntimeError> {
    if groups.len() < 2 {
        return Err(RuntimeError::Other(
            "partition: give at least two groups of nodes".into(),
        ));
    }
    let mut resolved: Vec<Vec<NodeHandle>> = Vec::new();
    for group in groups {
        let mut nodes = Vec::new();
        for target in group {
            nodes.extend(resolve(c, target).await?);
        }
        resolved.push(nodes);
    }
    let mut ips: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for n in resolved.iter().flatten() {
        ips.insert(n.name.clone(), addresses(c, n).await?);
    }
    let chain = format!("PC{id}");
    let mut touched = Vec::new();
    for (i, group) in resolved.iter().enumerate() {
        for node in group {
            let others: Vec<IpAddr> = resolved
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, g)| g.iter().flat_map(|n| ips[&n.name].clone()))
                .collect();
            let mut script = format!("iptables -N {chain} && iptables -I INPUT -j {chain}");
            for ip in others {
                script.push_str(&format!(" && iptables -A {chain} -s {ip} -j DROP"));
            }
            netns_sh(pid(c, node).await?, &script).await?;
            touched.push(node.name.clone());
        }
    }
    // Prove the cut from both sides of the first two groups.
    let (a, b) = (&resolved[0][0], &resolved[1][0]);
    probe_until(c, a, ips[&b.name][0], probe_port(b), false).await?;
    probe_until(c, b, ips[&a.name][0], probe_port(a), false).await?;
    Ok(Undo::Heal {
        chain,
        nodes: touched,
    })
}

/// Resolves a target to the run's nodes: a node name, a pool name, or `site:<name>` (never the proxy).
async fn resolve(c: &Cluster, target: &str) -> Result<Vec<NodeHandle>, RuntimeError> {
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

async fn single(c: &Cluster, target: &str) -> Result<NodeHandle, RuntimeError> {
    let mut nodes = resolve(c, target).await?;
    if nodes.len() != 1 {
        return Err(RuntimeError::Other(format!(
            "target `{target}` names {} nodes; this fault takes one node",
            nodes.len()
        )));
    }
    Ok(nodes.remove(0))
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

async fn inspect(c: &Cluster, node: &NodeHandle) -> Result<ContainerInspectResponse, RuntimeError> {
    ctx(
        format!("inspect {}", node.container),
        c.docker
            .inspect_container(&node.container, None::<InspectContainerOptions>)
            .await,
    )
}

fn running(s: &ContainerInspectResponse) -> bool {
    s.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

fn paused(s: &ContainerInspectResponse) -> bool {
    s.state.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn attached(s: &ContainerInspectResponse) -> usize {
    s.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.len())
        .unwrap_or(0)
}

/// Polls Docker until the node is in the wanted state.
async fn wait_state(
    c: &Cluster,
    node: &NodeHandle,
    what: &str,
    ok: impl Fn(&ContainerInspectResponse) -> bool,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    loop {
        if ok(&inspect(c, node).await?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Other(format!(
                "verify that {} is {what}: Docker still says otherwise after {VERIFY_TIMEOUT:?}",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node's current addresses on the run's networks.
async fn addresses(c: &Cluster, node: &NodeHandle) -> Result<Vec<IpAddr>, RuntimeError> {
    let info = inspect(c, node).await?;
    Ok(info
        .network_settings
        .and_then(|n| n.networks)
        .map(|nets| {
            nets.values()
                .filter_map(|e| e.ip_address.as_deref().and_then(|ip| ip.parse().ok()))
                .collect()
        })
        .unwrap_or_default())
}

async fn pid(c: &Cluster, node: &NodeHandle) -> Result<i64, RuntimeError> {
    inspect(c, node)
        .await?
        .state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .ok_or_else(|| RuntimeError::Other(format!("find the process of {}: not running", node.name)))
}

fn probe_port(node: &NodeHandle) -> u16 {
    node.launch
        .ports
        .iter()
        .find(|p| p.protocol == "tcp")
        .map(|p| p.port)
        .unwrap_or(super::roles::SIP_PORT)
}

/// Runs a shell script in a container's network namespace with the host's tools (iptables, bash). Needs
/// root on a Linux host: a scratch image has no tools, and Docker Desktop's VM is out of the host's reach.
async fn netns_sh(pid: i64, script: &str) -> Result<bool, RuntimeError> {
    let out = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "bash", "-c", script])
        .output()
        .await
        .map_err(|e| {
            RuntimeError::Other(format!(
                "run nsenter (util-linux) for a network fault: {e}; partitions need root on a Linux host"
            ))
        })?;
    if out.status.success() {
        Ok(true)
    } else if script.contains("/dev/tcp/") {
        Ok(false)
    } else {
        Err(RuntimeError::Other(format!(
            "change the packet filter in a node's network namespace (`{script}`): {}; \
             partitions need root and iptables on a Linux host",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Probes a TCP connect from inside `from`'s network namespace until it gives the wanted answer.
async fn probe_until(
    c: &Cluster,
    from: &NodeHandle,
    ip: IpAddr,
    port: u16,
    want_connect: bool,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    let pid = pid(c, from).await?;
    let script = format!("timeout {PROBE_CONNECT_TIMEOUT_S} bash -c 'exec 3<>/dev/tcp/{ip}/{port}'");
    loop {
        let connected = netns_sh(pid, &script).await?;
        if connected == want_connect {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if want_connect { "reaches" } else { "no longer reaches" };
            return Err(RuntimeError::Other(format!(
                "verify that {} {what} {ip}:{port}: the probe says otherwise after {VERIFY_TIMEOUT:?}",
                from.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_proxies_are_named_by_their_ends() {
        assert_eq!(super::link_proxy_name("users", "fe1"), "users-to-fe1");
    }
}
