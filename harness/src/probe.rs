//! Probes: each node's own view of its role (who is principal, which Front End is primary of which routing
//! group, whether the pool serves, whose users a paired pool serves), read from its `GET /status` through the
//! tunnel at a steady pace and recorded in the history whenever it changes. The split-brain and quorum checkers
//! judge these.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::history::{BeRole, GroupRole, Recorder, View};
use crate::runtime::{proxy, roles, tunnel};
use crate::topology::Topology;

/// How often every node is asked.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A full snapshot of every node's view is recorded this often even when nothing changed, so checkers
/// always find views after each fault (recording only changes would leave a quiet end unobserved).
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);

/// Probes `nodes` until `stop` turns true, then records one last full snapshot.
pub async fn run(
    tunnel_addr: SocketAddr,
    topology: Topology,
    nodes: Vec<String>,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<String, (Vec<View>, Option<String>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut last_snapshot = tokio::time::Instant::now();
    // Rounds are sequential: each asks every node at once and ends when all answered.
    for round in 0u64.. {
        let stopping = tokio::select! {
            _ = tick.tick() => *stop.borrow(),
            _ = stop.changed() => true,
        };
        let snapshot = stopping || last_snapshot.elapsed() >= SNAPSHOT_INTERVAL;
        if snapshot {
            last_snapshot = tokio::time::Instant::now();
        }
        let asks = nodes.iter().map(|n| ask(tunnel_addr, n));
        let answers = futures::future::join_all(asks).await;
        for (node, answer) in nodes.iter().zip(answers) {
            let now = match answer {
                Ok(status) => (views(&topology, &status), None),
                Err(e) => (Vec::new(), Some(e)),
            };
            if !snapshot && last.get(node) == Some(&now) {
                continue;
            }
            if let Some(error) = &now.1 {
                let _ = recorder.probe(node, None, Some(error.clone()), round);
            }
            for view in &now.0 {
                let _ = recorder.probe(node, Some(view.clone()), None, round);
            }
            last.insert(node.clone(), now);
        }
        if stopping {
            return;
        }
    }
}

/// Waits until every Front End of the topology says it serves (and hears its pair, where it has one), so
/// users start against formed pools rather than racing their first start. Gives up after `within`.
pub async fn wait_until_serving(
    tunnel_addr: SocketAddr,
    topology: &Topology,
    within: Duration,
) -> Result<(), String> {
    // A subject without the status probe is serving once its nodes printed their ready lines.
    if !topology.subject.probes.status {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + within;
    let pools: Vec<&crate::topology::PoolSpec> = topology
        .pools
        .iter()
        .filter(|p| p.pool.role == crate::topology::Role::Frontend)
        .collect();
    for pool in pools {
        loop {
            // Every server of the pool serves, and (for a paired pool) hears its pair's heartbeat.
            let mut ready = true;
            for node in &pool.nodes {
                let ok = match ask(tunnel_addr, &node.name).await {
                    Ok(status) => {
                        status["serving"].as_bool() == Some(true)
                            && status["pairing"]["pair_heartbeat"]["up"]
                                .as_bool()
                                .unwrap_or(true)
                    }
                    Err(_) => false,
                };
                ready &= ok;
            }
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "pool {} did not serve within {within:?} of start",
                    pool.pool.name
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    Ok(())
}

async fn ask(tunnel_addr: SocketAddr, node: &str) -> Result<Value, String> {
    let stream = tunnel::connect(
        tunnel_addr,
        node,
        roles::ADMIN_PORT,
        Duration::from_millis(500),
    )
    .await
    .map_err(|e| e.to_string())?;
    let fut = proxy::exchange(stream, node, "GET", "/status", None, None);
    match tokio::time::timeout(Duration::from_secs(1), fut).await {
        Ok(Ok((200, v))) => Ok(v),
        Ok(Ok((code, _))) => Err(format!("status {code}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// The views a node's status shows, in the history's terms.
pub fn views(topology: &Topology, status: &Value) -> Vec<View> {
    let pool = status["pool"].as_str().unwrap_or_default().to_string();
    match status["role"].as_str() {
        Some("frontend") => {
            let mut out: Vec<View> = status["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| View::GroupRole {
                    pool: pool.clone(),
                    group: g["group"].as_str().unwrap_or_default().to_string(),
                    role: match g["role"].as_str() {
                        Some("primary") => GroupRole::Primary,
                        Some("secondary") => GroupRole::Secondary,
                        _ => GroupRole::None,
                    },
                    epoch: g["epoch"].as_u64().unwrap_or(0),
                    accepting_writes: g["accepting_writes"].as_bool().unwrap_or(false),
                })
                .collect();
            let fes = topology
                .pool(&pool)
                .map(|p| p.nodes.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_default();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            };
            let pairing = &status["pairing"];
            // A paired pool's Front End says whose users it serves; one that does not say is not probed for it
            // (the split-brain checker then says unknown for the pairing of a paired topology).
            if pairing["serves_users_of"].is_array() {
                out.push(View::Pairing {
                    pool: pool.clone(),
                    serves_users_of: strings(&pairing["serves_users_of"]),
                    fenced: pairing["as_home"]["fence"] == "fenced",
                    pair_failed_over: pairing["as_backup"]["pair_failed_over"] == true,
                    resiliency: pairing["as_backup"]["resiliency_mode"] == true,
                });
            }
            out.push(View::PoolServing {
                pool,
                serving: status["serving"].as_bool().unwrap_or(false),
                fes,
                fes_running: strings(&status["fes_running"]),
            });
            out
        }
        Some("backend") | Some("witness") => {
            let role = match status["db_role"].as_str() {
                Some("principal") => BeRole::Principal,
                Some("mirror") => BeRole::Mirror,
                Some("witness") => BeRole::Witness,
                _ if status["role"] == "witness" => BeRole::Witness,
                _ => BeRole::None,
            };
            // A data node (not the witness) says where its log stands and whether the pair is synchronized.
            let data = status["role"] == "backend";
            vec![View::BeRole {
                pool,
                role,
                epoch: status["epoch"].as_u64().unwrap_or(0),
                accepting_writes: role == BeRole::Principal
                    && status["serving"].as_bool().unwrap_or(false),
                synchronized: status["synchronized"].as_bool().filter(|_| data),
                last_lsn: status["last_lsn"].as_u64().filter(|_| data),
            }]
        }
        _ => Vec::new(),
    }
}

/// Resolves a role-based target against the nodes' own views, at the moment of asking:
/// `primary-of:<pool>/<group>` (the Front End primary of a routing group), `principal-of:<pool>` and
/// `mirror-of:<pool>` (Back End), `busiest-of:<pool>` (the server with the most clients connected now, as its
/// `/status` counts them: an Edge server that users really come in through). Any other target is returned as
/// it is.
pub async fn resolve_target(
    tunnel_addr: SocketAddr,
    topology: &Topology,
    target: &str,
) -> Result<String, String> {
    let (want, rest) = match target.split_once(':') {
        Some((w @ ("primary-of" | "principal-of" | "mirror-of" | "busiest-of"), rest)) => (w, rest),
        _ => return Ok(target.to_string()),
    };
    let (pool, group) = rest.split_once('/').unwrap_or((rest, ""));
    let pool_spec = topology
        .pool(pool)
        .ok_or_else(|| format!("resolve `{target}`: no pool `{pool}`"))?;
    if want == "busiest-of" {
        let mut busiest: Option<(u64, &str)> = None;
        for node in &pool_spec.nodes {
            let Ok(status) = ask(tunnel_addr, &node.name).await else {
                continue;
            };
            let clients = status["clients"].as_u64().unwrap_or(0);
            if clients > 0 && busiest.is_none_or(|(most, _)| clients > most) {
                busiest = Some((clients, &node.name));
            }
        }
        return busiest.map(|(_, node)| node.to_string()).ok_or_else(|| {
            format!("resolve `{target}`: no node of `{pool}` has a client connected now")
        });
    }
    for node in &pool_spec.nodes {
        let Ok(status) = ask(tunnel_addr, &node.name).await else {
            continue;
        };
        for view in views(topology, &status) {
            let found = match (&view, want) {
                (
                    View::GroupRole {
                        group: g,
                        role: GroupRole::Primary,
                        accepting_writes: true,
                        ..
                    },
                    "primary-of",
                ) => g == group,
                (
                    View::BeRole {
                        role: BeRole::Principal,
                        accepting_writes: true,
                        ..
                    },
                    "principal-of",
                ) => true,
                (
                    View::BeRole {
                        role: BeRole::Mirror,
                        ..
                    },
                    "mirror-of",
                ) => true,
                _ => false,
            };
            if found {
                return Ok(node.name.clone());
            }
        }
    }
    Err(format!(
        "resolve `{target}`: no node of `{pool}` says so now"
    ))
}

/// Sends an operator command to a node's admin API with the run's token; the JSON answer, or why not.
pub async fn operator(
    tunnel_addr: SocketAddr,
    node: &str,
    token: &str,
    command: &str,
    body: &Value,
) -> Result<Value, String> {
    let stream = tunnel::connect(tunnel_addr, node, roles::ADMIN_PORT, Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    let path = format!("/admin/{command}");
    let call = proxy::exchange(stream, node, "POST", &path, Some(body), Some(token));
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Ok(Ok((200, json))) => Ok(json),
        Ok(Ok((status, json))) => Err(format!("{command} on {node}: status {status}, {json}")),
        Ok(Err(e)) => Err(format!("{command} on {node}: {e}")),
        Err(_) => Err(format!("{command} on {node}: no answer in 30 s")),
    }
}

/// How often a subject's bindings probe reads every registrar during the quiet period.
pub const BINDINGS_INTERVAL: Duration = Duration::from_millis(500);

/// Reads the bindings every node of the topology's pools holds with the subject's bindings probe, one round every
/// [`BINDINGS_INTERVAL`] (every node at once) for `during`, and at least once; records each answer as a
/// `View::Bindings` probe, and each node that did not answer with an error starting with
/// [`crate::checker::bindings::PROBE_ERROR`].
pub async fn bindings_rounds(
    cluster: &crate::runtime::Cluster,
    probe: &crate::subject::BindingsProbe,
    recorder: &Recorder,
    during: Duration,
) {
    let until = tokio::time::Instant::now() + during;
    let nodes: Vec<(String, String)> = cluster
        .topology
        .nodes()
        .map(|n| (n.name.clone(), n.pool.clone()))
        .collect();
    let mut tick = tokio::time::interval(BINDINGS_INTERVAL);
    for round in 0u64.. {
        tick.tick().await;
        let asks = nodes
            .iter()
            .map(|(node, _)| cluster.exec(node, &probe.exec, Duration::from_secs(5)));
        let answers = futures::future::join_all(asks).await;
        for ((node, pool), answer) in nodes.iter().zip(answers) {
            let _ = match answer {
                Ok(output) => recorder.probe(
                    node,
                    Some(View::Bindings {
                        pool: pool.clone(),
                        users: probe.users(&output).into_iter().collect(),
                    }),
                    None,
                    round,
                ),
                Err(e) => recorder.probe(
                    node,
                    None,
                    Some(format!("{}{e}", crate::checker::bindings::PROBE_ERROR)),
                    round,
                ),
            };
        }
        if tokio::time::Instant::now() >= until {
            return;
        }
    }
}
