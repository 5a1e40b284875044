//! The harness's tunnel into a run's networks. One line in, then either raw bytes both ways or one line out:
//!
//! - `CONNECT <host>:<port> [<timeout_ms>]\n` → `OK <ip>:<port>\n` and the stream is joined to that address,
//!   or `ERR <reason>\n` and the connection closes (the timeout bounds the connect; default 2000 ms);
//! - `RESOLVE <name>\n` → `OK <ip> <ip> …\n` (every address DNS gives, as a client trying each one needs) or
//!   `ERR <reason>\n`.
//!
//! A closed or reset node is seen by the harness as the same event on its tunnelled stream.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest first line accepted.
const LINE_MAX_BYTES: usize = 512;
const CONNECT_TIMEOUT_DEFAULT_MS: u64 = 2000;

/// Serves tunnel connections until the listener fails.
pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = handle(stream).await;
        });
    }
}

async fn handle(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let n = (&mut reader)
        .take(LINE_MAX_BYTES as u64)
        .read_line(&mut line)
        .await?;
    let words: Vec<&str> = line[..n].split_whitespace().collect();
    match words.as_slice() {
        ["RESOLVE", name] => {
            let answer = match tokio::net::lookup_host(format!("{name}:0")).await {
                Ok(addrs) => {
                    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                    ips.dedup();
                    format!("OK {}\n", ips.join(" "))
                }
                Err(e) => format!("ERR {e}\n"),
            };
            reader.get_mut().write_all(answer.as_bytes()).await
        }
        ["CONNECT", target, rest @ ..] => {
            let timeout_ms = rest
                .first()
                .and_then(|t| t.parse().ok())
                .unwrap_or(CONNECT_TIMEOUT_DEFAULT_MS);
            let connected = tokio::time::timeout(
                Duration::from_millis(timeout_ms),
                TcpStream::connect(*target),
            )
            .await;
            let mut upstream = match connected {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let msg = format!("ERR {e}\n");
                    return reader.get_mut().write_all(msg.as_bytes()).await;
                }
                Err(_) => {
                    let msg = format!("ERR connect timed out after {timeout_ms} ms\n");
                    return reader.get_mut().write_all(msg.as_bytes()).await;
                }
            };
            let _ = upstream.set_nodelay(true);
            let peer = upstream.peer_addr()?;
            reader
                .get_mut()
                .write_all(format!("OK {peer}\n").as_bytes())
                .await?;
            // Bytes the client sent after its line are already buffered: pass them on first.
            let buffered = reader.buffer().to_vec();
            upstream.write_all(&buffered).await?;
            let mut client = reader.into_inner();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            Ok(())
        }
        _ => {
            reader
                .get_mut()
                .write_all(b"ERR expected `CONNECT host:port [timeout_ms]` or `RESOLVE name`\n")
                .await
        }
    }
}
