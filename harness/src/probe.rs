//! Probes: each node's own view of its role (who is principal, which Front End is primary of which routing
//! group, whether the pool serves), read from its `GET /status` through the tunnel at a steady pace and
//! recorded in the history whenever it changes. The split-brain and quorum checkers judge these.

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

/// Probes `nodes` until `stop` turns true.
pub async fn run(
    tunnel_addr: SocketAddr,
    topology: Topology,
    nodes: Vec<String>,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<String, (Vec<View>, Option<String>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let asks = nodes.iter().map(|n| ask(tunnel_addr, n));
        let answers = futures::future::join_all(asks).await;
        for (node, answer) in nodes.iter().zip(answers) {
            let now = match answer {
                Ok(status) => (views(&topology, &status), None),
                Err(e) => (Vec::new(), Some(e)),
            };
            if last.get(node) == Some(&now) {
                continue;
            }
            if let Some(error) = &now.1 {
                let _ = recorder.probe(node, None, Some(error.clone()));
            }
            for view in &now.0 {
                let _ = recorder.probe(node, Some(view.clone()), None);
            }
            last.insert(node.clone(), now);
        }
    }
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
    let fut = proxy::exchange(stream, node, "GET", "/status", None);
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
            vec![View::BeRole {
                pool,
                role,
                epoch: status["epoch"].as_u64().unwrap_or(0),
                accepting_writes: role == BeRole::Principal
                    && status["serving"].as_bool().unwrap_or(false),
            }]
        }
        _ => Vec::new(),
    }
}
