//! Applies faults to a running [`Cluster`], verifies each one took effect, and undoes them.
//!
//! Verification is independent of the fault's own call: Docker's view of the container (not running,
//! paused, no networks), a TCP probe from inside another node's network namespace that a cut really
//! cuts (and a heal really heals), and the proxy's toxic list. The time from request to verified effect is
//! recorded. A fault that cannot be verified is an error: the run ends `unknown`, never silently.
//!
//! The file holds one concept, the injector: each fault's application, its undo and the proof of each, which
//! share the ways to reach a node — its container's state, its network namespace, the fault proxy's API.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, NetworkDisconnectRequest};
use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
use serde_json::json;
use tracing::info;

use super::cluster::{Cluster, NodeHandle, PROXY};
use super::docker::{ctx, RuntimeError};
pub use super::nodes::VERIFY_TIMEOUT;
use super::nodes::{inspect, nsenter, pid, resolve};
use super::proxy::{self, link_proxy_name};
use crate::fault::Fault;

/// A connect that does not complete within this is taken as cut.
const PROBE_CONNECT_TIMEOUT_S: f32 = 0.5;

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

/// Applies and undoes faults on one cluster, and undoes whatever is still in force at the end.
pub struct Injector<'a> {
    cluster: &'a Cluster,
    in_force: BTreeMap<usize, FaultRecord>,
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

    /// Continues from faults applied earlier (by another process: `poolchaos fault`, then `heal`).
    pub fn resume(cluster: &'a Cluster, in_force: Vec<(usize, Fault)>) -> Self {
        let now = Instant::now();
        let next = in_force.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
        let in_force = in_force
            .into_iter()
            .map(|(id, fault)| {
                let record = FaultRecord {
                    fault,
                    requested: now,
                    verified: now,
                    undone: None,
                };
                (id, record)
            })
            .collect();
        Injector {
            cluster,
            in_force,
            done: Vec::new(),
            next,
        }
    }

    /// Applies `fault`, waits until its effect is verified, and returns its id for [`Injector::undo`].
    pub async fn apply(&mut self, fault: &Fault) -> Result<usize, RuntimeError> {
        let id = self.next;
        self.next += 1;
        let requested = Instant::now();
        apply_verified(self.cluster, fault, id).await?;
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
        self.in_force.insert(id, record);
        Ok(id)
    }

    /// Undoes fault `id` and waits until the undo is verified.
    pub async fn undo(&mut self, id: usize) -> Result<FaultRecord, RuntimeError> {
        let mut record = self
            .in_force
            .remove(&id)
            .unwrap_or_else(|| panic!("fault {id} undone twice or never applied: a harness bug"));
        undo_verified(self.cluster, &record.fault, id).await?;
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

    /// Faults still in force, by id.
    pub fn in_force(&self) -> Vec<(usize, &FaultRecord)> {
        self.in_force.iter().map(|(id, r)| (*id, r)).collect()
    }
}

/// Applies a fault and waits until its effect is verified.
async fn apply_verified(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    match fault {
        Fault::Kill { target } => kill(c, &resolve(c, target).await?).await,
        Fault::SiteDown { site } => kill(c, &resolve(c, &format!("site:{site}")).await?).await,
        Fault::Stop { target, grace_s } => {
            let nodes = resolve(c, target).await?;
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
            Ok(())
        }
        Fault::Pause { target } => {
            let node = single(c, target).await?;
            ctx(
                format!("pause {}", node.name),
                c.docker.pause_container(&node.container).await,
            )?;
            wait_state(c, &node, "paused", paused).await
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
            Ok(())
        }
        Fault::Partition { .. }
        | Fault::OneWay { .. }
        | Fault::Bridge { .. }
        | Fault::Ring { .. }
        | Fault::Halves { .. } => super::partition::apply(c, fault, id).await,
        Fault::Packet { .. } => super::packet::apply(c, fault, id).await,
        Fault::DiskFull { .. } | Fault::DiskReadOnly { .. } => {
            super::disk::apply(c, fault, id).await
        }
        Fault::Link { from, to, toxic } => {
            if c.topology.link(from, to).is_none() {
                return Err(RuntimeError::UnknownTarget(format!(
                    "link {from} -> {to} (add a [[link]] for it to the topology)"
                )));
            }
            let api = c.proxy_api().await?;
            let name = link_proxy_name(from, to);
            match toxic.api_body(&toxic_name(id, toxic)) {
                Some(body) => {
                    let path = format!("/proxies/{name}/toxics");
                    proxy::expect(api, "POST", &path, Some(&body), &[200, 201]).await?;
                    if !lists_toxic(api, &name, &toxic_name(id, toxic)).await? {
                        return Err(RuntimeError::Other(format!(
                            "verify toxic {} on {name}: the proxy does not list it",
                            toxic_name(id, toxic)
                        )));
                    }
                    Ok(())
                }
                None => set_enabled(api, &name, false).await,
            }
        }
    }
}

/// Undoes a fault and waits until the undo is verified. Everything it needs follows from the fault and
/// its id, so a later process (`poolchaos heal`) can undo what an earlier one applied.
async fn undo_verified(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    match fault {
        Fault::Kill { target } | Fault::Stop { target, .. } => {
            start(c, &resolve(c, target).await?).await
        }
        Fault::SiteDown { site } => start(c, &resolve(c, &format!("site:{site}")).await?).await,
        Fault::Pause { target } => {
            let node = single(c, target).await?;
            ctx(
                format!("resume {}", node.name),
                c.docker.unpause_container(&node.container).await,
            )?;
            wait_state(c, &node, "running, not paused", |s| {
                running(s) && !paused(s)
            })
            .await
        }
        Fault::Isolate { target } => {
            let node = single(c, target).await?;
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
        Fault::Partition { .. }
        | Fault::OneWay { .. }
        | Fault::Bridge { .. }
        | Fault::Ring { .. }
        | Fault::Halves { .. } => super::partition::heal(c, fault, id).await,
        Fault::Packet { .. } => super::packet::undo(c, fault, id).await,
        Fault::DiskFull { .. } | Fault::DiskReadOnly { .. } => {
            super::disk::undo(c, fault, id).await
        }
        Fault::Link { from, to, toxic } => {
            let api = c.proxy_api().await?;
            let name = link_proxy_name(from, to);
            if matches!(toxic, crate::fault::Toxic::Down) {
                return set_enabled(api, &name, true).await;
            }
            let sip = toxic.kind().starts_with("sip_");
            let toxic = toxic_name(id, toxic);
            // A SIP toxic acts only on the messages its rule picks: one that picked none never took effect.
            let picked = if sip {
                picked(api, &name, &toxic).await?
            } else {
                None
            };
            let path = format!("/proxies/{name}/toxics/{toxic}");
            proxy::expect(api, "DELETE", &path, None, &[200, 204]).await?;
            if picked == Some(0) {
                return Err(RuntimeError::Other(format!(
                    "verify SIP toxic {toxic} on {name}: it picked no message while it was set (nothing on the \
                     link matched its rule), so the fault never took effect"
                )));
            }
            if lists_toxic(api, &name, &toxic).await? {
                return Err(RuntimeError::Other(format!(
                    "verify removal of toxic {toxic} on {name}: the proxy still lists it"
                )));
            }
            Ok(())
        }
    }
}

fn toxic_name(id: usize, toxic: &crate::fault::Toxic) -> String {
    format!("pc{id}_{}", toxic.kind())
}

/// How many messages a SIP toxic has picked, as the proxy counts them (`None`: the proxy does not say).
async fn picked(
    api: std::net::SocketAddr,
    proxy_name: &str,
    toxic: &str,
) -> Result<Option<u64>, RuntimeError> {
    let path = format!("/proxies/{proxy_name}/toxics");
    let list = proxy::expect(api, "GET", &path, None, &[200]).await?;
    Ok(list
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == toxic))
        .and_then(|t| t["picked"].as_u64()))
}

async fn lists_toxic(
    api: std::net::SocketAddr,
    proxy_name: &str,
    toxic: &str,
) -> Result<bool, RuntimeError> {
    let path = format!("/proxies/{proxy_name}/toxics");
    let list = proxy::expect(api, "GET", &path, None, &[200]).await?;
    Ok(list
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t["name"] == toxic)))
}

async fn set_enabled(
    api: std::net::SocketAddr,
    name: &str,
    enabled: bool,
) -> Result<(), RuntimeError> {
    let path = format!("/proxies/{name}");
    proxy::expect(
        api,
        "POST",
        &path,
        Some(&json!({"enabled": enabled})),
        &[200],
    )
    .await?;
    let now = proxy::expect(api, "GET", &path, None, &[200]).await?;
    if now["enabled"] != enabled {
        return Err(RuntimeError::Other(format!(
            "verify proxy {name} enabled={enabled}: it says {}",
            now["enabled"]
        )));
    }
    Ok(())
}

async fn kill(c: &Cluster, nodes: &[NodeHandle]) -> Result<(), RuntimeError> {
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
    Ok(())
}

/// Starts stopped nodes and waits for each one's next ready line (counted while it is down, so a line
/// of its earlier life never passes for the new one).
async fn start(c: &Cluster, nodes: &[NodeHandle]) -> Result<(), RuntimeError> {
    let starts = nodes.iter().map(|n| async move {
        let seen = c.ready_lines(n).await;
        c.start_and_wait(n, seen).await
    });
    for r in futures::future::join_all(starts).await {
        r?;
    }
    Ok(())
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

/// The port a reachability probe dials: one the node always listens on.
fn probe_port(node: &NodeHandle) -> u16 {
    node.launch.probe_port
}

/// What a TCP connect from inside a node's network namespace found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Connected,
    /// Refused: the packets got there (a port nobody listens on), so the path is not cut.
    Refused,
    /// No answer within the probe's timeout, or no route: the path is cut.
    Cut,
}

async fn reach(pid: i64, ip: IpAddr, port: u16) -> Result<Reach, RuntimeError> {
    let script =
        format!("timeout {PROBE_CONNECT_TIMEOUT_S} bash -c 'exec 3<>/dev/tcp/{ip}/{port}'");
    let out = nsenter(pid, &script)
        .await
        .map_err(|e| {
            RuntimeError::Other(format!(
                "run nsenter (util-linux) for a reachability probe: {e}; network faults need root on a Linux host"
            ))
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    Ok(if out.status.success() {
        Reach::Connected
    } else if stderr.contains("refused") {
        Reach::Refused
    } else {
        Reach::Cut
    })
}

/// Probes a TCP connect from inside `from`'s network namespace until it connects (`want_connect`) or is
/// proven cut (no answer or no route; a refusal means packets still pass, so it does not count as cut).
async fn probe_until(
    c: &Cluster,
    from: &NodeHandle,
    ip: IpAddr,
    port: u16,
    want_connect: bool,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    let pid = pid(c, from).await?;
    let want = if want_connect {
        Reach::Connected
    } else {
        Reach::Cut
    };
    loop {
        let found = reach(pid, ip, port).await?;
        if found == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if want_connect {
                "reaches"
            } else {
                "no longer reaches"
            };
            return Err(RuntimeError::Other(format!(
                "verify that {} {what} {ip}:{port}: the probe still says {found:?} after {VERIFY_TIMEOUT:?}",
                from.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
