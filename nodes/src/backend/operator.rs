//! The operator's commands on a Back End pool, as `poolnode admin …` runs them: `db-status` reads every node's
//! `/status`; `db-failover` asks the mirror to take over (planned when the principal answers, else from the
//! mirror's own log, refusing an unsynchronized mirror without `force`).

use std::time::Duration;

use serde_json::{json, Value};

use super::server::peer_address;
use crate::cluster::{ClusterConfig, ADMIN_PORT};

/// One HTTP call to an admin API is over well within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin addresses of a Back End pool's nodes (witness last), by node name.
pub fn admin_targets(cluster: &ClusterConfig, pool: &str) -> Option<Vec<(String, String)>> {
    let p = cluster.pool(pool)?;
    Some(
        p.nodes
            .iter()
            .chain(p.witness.iter())
            .map(|n| (n.clone(), peer_address(cluster, "operator", n, ADMIN_PORT)))
            .collect(),
    )
}

/// One HTTP/1.1 request on a connection of its own: the status code and the JSON body (its text as a JSON string
/// when it is not JSON).
pub async fn http_json(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let answer = tokio::time::timeout(
        HTTP_TIMEOUT,
        jsonhttp::call(address, method, path, token, body),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "admin API timed out"))??;
    Ok((answer.status, answer.json_or_text()))
}

/// `/status` of every target; an unreachable node gives `{"node", "error"}`.
pub async fn db_status(targets: &[(String, String)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (node, address) in targets {
        out.push(
            match http_json(address, "GET", "/status", None, None).await {
                Ok((200, v)) => v,
                Ok((code, v)) => json!({"node": node, "error": format!("HTTP {code}: {v}")}),
                Err(e) => json!({"node": node, "error": e.to_string()}),
            },
        );
    }
    out
}

/// The status table an operator reads.
pub fn render_status(pool: &str, statuses: &[Value]) -> String {
    // JSON values ignore width in `Display`: render each cell to a string first.
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = format!("Back End pool {pool}\n");
    out.push_str(&format!(
        "{:<20} {:<10} {:>6} {:<8} {:<13} {:<8} {:>12}\n",
        "node", "db_role", "epoch", "serving", "synchronized", "exposed", "lag_commits"
    ));
    for s in statuses {
        let node = cell(&s["node"]);
        if let Some(err) = s.get("error") {
            out.push_str(&format!("{node:<20} unreachable: {}\n", cell(err)));
            continue;
        }
        if s["role"] == "witness" {
            out.push_str(&format!(
                "{node:<20} {:<10} {:>6} principal={} mirror_synchronized={}\n",
                "witness",
                cell(&s["epoch"]),
                cell(&s["principal"]),
                cell(&s["mirror_synchronized"])
            ));
            continue;
        }
        out.push_str(&format!(
            "{node:<20} {:<10} {:>6} {:<8} {:<13} {:<8} {:>12}\n",
            cell(&s["db_role"]),
            cell(&s["epoch"]),
            cell(&s["serving"]),
            cell(&s["synchronized"]),
            cell(&s["exposed"]),
            cell(&s["lag_commits"])
        ));
    }
    out
}

/// Asks the pool's mirror to take over. Returns the mirror's report (what may be lost) or its refusal.
pub async fn db_failover(
    targets: &[(String, String)],
    token: &str,
    force: bool,
) -> Result<Value, String> {
    let statuses = db_status(targets).await;
    let mirror = targets
        .iter()
        .zip(&statuses)
        .find(|(_, s)| s["role"] == "backend" && s["db_role"] == "mirror")
        .map(|(t, _)| t.clone())
        .ok_or_else(|| format!("no node of the pool reports db_role mirror: {statuses:?}"))?;
    match http_json(
        &mirror.1,
        "POST",
        "/admin/db-failover",
        Some(token),
        Some(&json!({ "force": force })),
    )
    .await
    {
        Ok((200, report)) => Ok(report),
        Ok((code, body)) => Err(format!(
            "{} refused (HTTP {code}): {}",
            mirror.0,
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or(&body.to_string())
        )),
        Err(e) => Err(format!("reach {} at {}: {e}", mirror.0, mirror.1)),
    }
}
