//! One JSON request over HTTP/1.1 on a connection of its own (`Connection: close`), on hyper's client
//! connection: what the harness sends to the fault proxy's Toxiproxy API and to a node's admin API (through the
//! tunnel), and what `poolnode admin …` sends to the nodes. Plain HTTP only: every API it calls is inside a run's
//! networks or on the host's loopback, and the nodes' static binary takes no TLS.
//!
//! Timeouts are the caller's: each caller knows how long its API may take.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// An answer: its status and its body (a chunked body decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; `Null` when it is empty or not JSON.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as JSON; its text as a JSON string when it is not JSON.
    pub fn json_or_text(&self) -> Value {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_str(text.trim()).unwrap_or_else(|_| Value::String(text.into_owned()))
    }
}

/// Connects to `address` (`host:port`, which is also the `Host` header) and sends one request: `body` as JSON
/// (none: an empty body), with `Authorization: Bearer <token>` when `bearer` is given.
pub async fn call(
    address: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> io::Result<Answer> {
    let stream = TcpStream::connect(address).await?;
    exchange(stream, address, method, path, bearer, body).await
}

/// Sends one request on a stream already open (a tunnelled one, say) and reads its answer; the stream is closed
/// after it.
pub async fn exchange<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> io::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .header(CONNECTION, "close");
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    // The sender moves in, so it is dropped once the answer is read and the connection then ends by itself.
    let answer = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Answer { status, body })
    };
    // The connection is driven here, not in a task of its own: dropping this future closes the stream.
    let (answer, _) = tokio::join!(answer, connection);
    answer.map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Serves one canned answer on the other end of a pipe; returns the request as it arrived.
    async fn serve(mut server: DuplexStream, answer: &'static [u8]) -> String {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        // Bounded by the client, which sends one small request.
        loop {
            let n = server.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    break;
                }
            }
            assert!(n > 0, "the request ended early");
        }
        server.write_all(answer).await.unwrap();
        server.shutdown().await.unwrap();
        String::from_utf8(request).unwrap()
    }

    async fn ask(answer: &'static [u8]) -> (Answer, String) {
        let (client, server) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve(server, answer));
        let body = serde_json::json!({"force": true});
        let got = exchange(
            client,
            "node:8080",
            "POST",
            "/admin/x",
            Some("s3cret"),
            Some(&body),
        )
        .await
        .unwrap();
        (got, served.await.unwrap())
    }

    #[tokio::test]
    async fn reads_plain_and_chunked_answers() {
        let (plain, _) =
            ask(b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"a\": true}").await;
        assert_eq!(plain.status, 201);
        assert_eq!(plain.json_or_null(), serde_json::json!({"a": true}));
        let (chunked, _) = ask(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n5\r\n true\r\n1\r\n}\r\n0\r\n\r\n").await;
        assert_eq!(chunked.status, 200);
        assert_eq!(chunked.json_or_null(), serde_json::json!({"a": true}));
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_null_or_text() {
        let (answer, _) =
            ask(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno route\n").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json_or_null(), Value::Null);
        assert_eq!(answer.json_or_text(), Value::String("no route\n".into()));
    }

    #[tokio::test]
    async fn the_request_names_host_token_length_and_close() {
        let (_, request) = ask(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("POST /admin/x HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        for expected in [
            "host: node:8080",
            "authorization: Bearer s3cret",
            "content-type: application/json",
            "content-length: 14",
            "connection: close",
        ] {
            assert!(headers.contains(&expected), "{expected} in {headers:?}");
        }
        assert_eq!(body, r#"{"force":true}"#);
    }
}
