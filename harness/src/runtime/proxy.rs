//! The fault proxy's Toxiproxy HTTP API, as the harness calls it from the host through the published port.
//! A tiny HTTP/1.1 client: the API is a handful of JSON calls, and `toxiproxy_rust` is blocking and panics
//! on connection errors, which a harness that must always clean up cannot afford.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::docker::RuntimeError;

/// Every API call gives up after this long: a control plane that hangs is a harness bug.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls the API; returns the status and the JSON body (`Null` when empty or not JSON).
pub async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), RuntimeError> {
    let what = format!("call the fault proxy {method} {path}");
    let fut = async {
        let stream = TcpStream::connect(api).await?;
        exchange(stream, &api.to_string(), method, path, body, None).await
    };
    tokio::time::timeout(API_TIMEOUT, fut)
        .await
        .map_err(|_| RuntimeError::Other(format!("{what}: no answer in {API_TIMEOUT:?}")))?
        .map_err(|e| RuntimeError::Other(format!("{what}: {e}")))
}

/// One HTTP/1.1 request with `Connection: close` on an open stream (a tunnelled one, say), with a bearer
/// token when given: the status and the JSON body (`Null` when empty or not JSON).
pub async fn exchange(
    mut stream: TcpStream,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "unreadable answer {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    })
}

fn parse(raw: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Some((status, value))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
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
    use super::*;

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"a\": true}";
        assert_eq!(parse(plain).unwrap(), (201, serde_json::json!({"a": true})));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n5\r\n true\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(
            parse(chunked).unwrap(),
            (200, serde_json::json!({"a": true}))
        );
    }
}
