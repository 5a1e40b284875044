//! `poolnode admin edge-next-hop`: sets the next hop of every server of an Edge pool over the admin API.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster::{ClusterConfig, ADMIN_PORT};

/// One HTTP exchange with an admin API is over within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the command failed for a pool as a whole.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("find Edge pool `{0}` in the cluster description")]
    UnknownPool(String),
}

/// The admin address of every server of `pool`, as the operator reaches them.
pub fn admin_targets(cluster: &ClusterConfig, pool: &str) -> Result<Vec<String>, OperatorError> {
    let p = cluster
        .pool(pool)
        .filter(|p| p.role == "edge")
        .ok_or_else(|| OperatorError::UnknownPool(pool.to_owned()))?;
    Ok(p.nodes
        .iter()
        .map(|n| cluster.address("operator", n, ADMIN_PORT))
        .collect())
}

/// Posts the new next hop to each admin address; one `(address, outcome)` per server, the outcome being the
/// HTTP status and JSON body or the I/O error's text.
pub async fn set_next_hop(
    targets: &[String],
    next_hop: &str,
    token: &str,
) -> Vec<(String, Result<(u16, Value), String>)> {
    let body = json!({ "next_hop": next_hop });
    let mut outcomes = Vec::new();
    for target in targets {
        let post = jsonhttp::call(
            target,
            "POST",
            "/admin/edge-next-hop",
            Some(token),
            Some(&body),
        );
        let outcome = tokio::time::timeout(HTTP_TIMEOUT, post)
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(|answer| (answer.status, answer.json_or_text()));
        outcomes.push((target.clone(), outcome));
    }
    outcomes
}
