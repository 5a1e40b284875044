//! `poolnode admin edge-next-hop`: sets the next hop of every server of an Edge pool over the admin API.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let body = json!({ "next_hop": next_hop }).to_string();
    let mut outcomes = Vec::new();
    for target in targets {
        let outcome = tokio::time::timeout(
            HTTP_TIMEOUT,
            post(target, "/admin/edge-next-hop", token, &body),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
        outcomes.push((target.clone(), outcome));
    }
    outcomes
}

/// A minimal HTTP/1.1 POST (one request per connection, `Connection: close`).
async fn post(address: &str, path: &str, token: &str, body: &str) -> std::io::Result<(u16, Value)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of the HTTP header"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    // axum answers a JSON body with Content-Length, never chunked, for these small bodies.
    Ok((
        code,
        serde_json::from_str(rest.trim()).unwrap_or(Value::String(rest.into())),
    ))
}
