//! The fault proxy's Toxiproxy HTTP API, as the harness calls it from the host through the published port, over
//! `jsonhttp`: the API is a handful of JSON calls, and `toxiproxy_rust` is blocking and panics on connection
//! errors, which a harness that must always clean up cannot afford. Also the name each topology link's proxy goes
//! by, which the cluster creates it under and a link fault finds it by.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpStream;

use super::docker::RuntimeError;

/// Every API call gives up after this long: a control plane that hangs is a harness bug.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy that carries link `from -> to`: the cluster creates it under this name, faults on the link find it
/// by it.
pub fn link_proxy_name(from: &str, to: &str) -> String {
    format!("{from}-to-{to}")
}

/// Calls the API; returns the status and the JSON body (`Null` when empty or not JSON).
pub async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), RuntimeError> {
    let what = format!("call the fault proxy {method} {path}");
    let address = api.to_string();
    let fut = jsonhttp::call(&address, method, path, None, body);
    let answer = tokio::time::timeout(API_TIMEOUT, fut)
        .await
        .map_err(|_| RuntimeError::Other(format!("{what}: no answer in {API_TIMEOUT:?}")))?
        .map_err(|e| RuntimeError::Other(format!("{what}: {e}")))?;
    Ok((answer.status, answer.json_or_null()))
}

/// One HTTP/1.1 request with `Connection: close` on an open stream (a tunnelled one, say), with a bearer
/// token when given: the status and the JSON body (`Null` when empty or not JSON).
pub async fn exchange(
    stream: TcpStream,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let answer = jsonhttp::exchange(stream, host, method, path, bearer, body).await?;
    Ok((answer.status, answer.json_or_null()))
}

/// Calls the API and fails unless the status is one of `ok`.
pub async fn expect(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    ok: &[u16],
) -> Result<Value, RuntimeError> {
    let (status, value) = call(api, method, path, body).await?;
    if ok.contains(&status) {
        Ok(value)
    } else {
        Err(RuntimeError::Other(format!(
            "call the fault proxy {method} {path}: status {status}, {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_proxies_are_named_by_their_ends() {
        assert_eq!(super::link_proxy_name("users", "fe1"), "users-to-fe1");
    }
}
