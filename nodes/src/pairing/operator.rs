//! The operator's pairing commands, over the Front Ends' admin API. Each command goes to the pool that acts (the
//! backup pool for a failover or failback, the destination for a store failover): its servers are tried in
//! topology order until one answers. A refusal (`400`, `409`) is final and its message says what to do first; an
//! unreachable server or a `503` moves on to the next.
//!
//! - `pool-failover --pool P` → the pair of P: `POST /admin/pool-failover {"pool": P}`
//! - `pool-failback --pool P` → the pair of P: `POST /admin/pool-failback {"pool": P}`
//! - `store-failover --to P` → P: `POST /admin/store-failover {"to": P}`
//! - `backup-status --pool P` → the pair of P: `GET /status`, the `pairing.backup_service` of the direction P → pair
//! - `backup-sync --pool P` → the pair of P: `POST /admin/backup-sync`

use serde_json::{json, Value};

use crate::backend::operator::http_json;
use crate::backend::peer_address;
use crate::cluster::{ClusterConfig, ADMIN_PORT};

/// Why an operator command did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("find pool `{0}` in the cluster description")]
    UnknownPool(String),
    #[error("find the pair of pool `{0}` (it has no `pair`)")]
    NoPair(String),
    #[error("{command} refused by {node} ({code}): {message}")]
    Refused {
        command: String,
        node: String,
        code: u16,
        message: String,
    },
    #[error("{command}: no server answered ({tried})")]
    Unreachable { command: String, tried: String },
}

/// Admin addresses `(name, host:port)` of `pool`'s servers as the operator reaches them.
pub fn targets(
    cluster: &ClusterConfig,
    pool: &str,
) -> Result<Vec<(String, String)>, OperatorError> {
    let p = cluster
        .pool(pool)
        .ok_or_else(|| OperatorError::UnknownPool(pool.to_owned()))?;
    Ok(p.nodes
        .iter()
        .map(|n| (n.clone(), peer_address(cluster, "operator", n, ADMIN_PORT)))
        .collect())
}

/// The pair of `pool`.
pub fn pair_of(cluster: &ClusterConfig, pool: &str) -> Result<String, OperatorError> {
    cluster
        .pool(pool)
        .ok_or_else(|| OperatorError::UnknownPool(pool.to_owned()))?
        .pair
        .clone()
        .ok_or_else(|| OperatorError::NoPair(pool.to_owned()))
}

/// `POST /admin/<command>` with `body` to the first of `targets` that decides: its answer, or the refusal.
pub async fn post(
    targets: &[(String, String)],
    command: &str,
    body: &Value,
    token: &str,
) -> Result<(String, Value), OperatorError> {
    let mut tried = Vec::new();
    for (name, address) in targets {
        let path = format!("/admin/{command}");
        match http_json(address, "POST", &path, Some(token), Some(body)).await {
            Ok((200, answer)) => return Ok((name.clone(), answer)),
            // Not serving, or not now: another server of the pool may.
            Ok((503, answer)) => tried.push(format!("{name}: {}", answer["error"])),
            Ok((code, answer)) => {
                return Err(OperatorError::Refused {
                    command: command.to_owned(),
                    node: name.clone(),
                    code,
                    message: answer["error"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| answer.to_string()),
                })
            }
            Err(error) => tried.push(format!("{name}: {error}")),
        }
    }
    Err(OperatorError::Unreachable {
        command: command.to_owned(),
        tried: tried.join("; "),
    })
}

/// The backup direction `pool` → its pair as the pair's servers report it: the runner's section first.
pub async fn backup_status(targets: &[(String, String)]) -> Vec<(String, Value)> {
    let mut sections = Vec::new();
    for (name, address) in targets {
        let section = match http_json(address, "GET", "/status", None, None).await {
            Ok((200, status)) => status["pairing"]["backup_service"].clone(),
            Ok((code, body)) => json!({"error": format!("{code}: {body}")}),
            Err(error) => json!({"error": error.to_string()}),
        };
        sections.push((name.clone(), section));
    }
    sections.sort_by_key(|(_, s)| s["runner"] != true);
    sections
}

/// One line per server: `node  direction  state  lag_ms  …`.
pub fn render_backup_status(sections: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (node, s) in sections {
        if let Some(error) = s.get("error") {
            out.push_str(&format!("{node}: unreachable: {error}\n"));
            continue;
        }
        out.push_str(&format!(
            "{node}: {} state={} lag_ms={} users={} last_pass_copied={} runner={}{}\n",
            s["direction"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["lag_ms"],
            s["users"],
            s["last_pass_copied"],
            s["runner"],
            s["last_error"]
                .as_str()
                .map(|e| format!(" last_error={e:?}"))
                .unwrap_or_default(),
        ));
    }
    out
}
