//! The harness's tunnel into a run's networks. One line in, then either raw bytes both ways or one line out:
//!
//! - `CONNECT <host>:<port> [<timeout_ms>]\n` → `OK <ip>:<port>\n` and the stream is joined to that address,
//!   or `ERR <reason>\n` and the connection closes (the timeout bounds the connect; default 2000 ms);
//! - `RESOLVE <name>\n` → `OK <ip> <ip> …\n` (every address DNS gives, as a client trying each one needs) or
//!   `ERR <reason>\n`;
//! - `DATAGRAM <host>:<port>\n` → `OK <ip>:<port>\n`, and the stream carries datagrams both ways, each as a
//!   2-byte big-endian length and its bytes: what the client writes leaves a UDP socket of this connection's own
//!   for that address, and every datagram that socket receives comes back the same way. So a client outside the
//!   networks speaks real UDP inside them, from an address and port of its own, for as long as the stream lives.
//!
//! A closed or reset node is seen by the harness as the same event on its tunnelled stream.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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
        ["DATAGRAM", target] => {
            let found = tokio::net::lookup_host(*target)
                .await
                .map(|mut addrs| addrs.find(|a| a.is_ipv4()));
            let upstream = match found {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    let msg = format!("ERR {target}: no IPv4 address\n");
                    return reader.get_mut().write_all(msg.as_bytes()).await;
                }
                Err(e) => {
                    let msg = format!("ERR {e}\n");
                    return reader.get_mut().write_all(msg.as_bytes()).await;
                }
            };
            let socket = UdpSocket::bind("0.0.0.0:0").await?;
            reader
                .get_mut()
                .write_all(format!("OK {upstream}\n").as_bytes())
                .await?;
            relay_datagrams(reader, socket, upstream).await
        }
        _ => {
            reader
                .get_mut()
                .write_all(
                    b"ERR expected `CONNECT host:port [timeout_ms]`, `DATAGRAM host:port` or `RESOLVE name`\n",
                )
                .await
        }
    }
}

/// Largest datagram relayed (what a 2-byte length can say).
const DATAGRAM_MAX_BYTES: usize = u16::MAX as usize;

/// Relays length-prefixed datagrams between the tunnel stream and `socket` (sending to `upstream`), until the
/// stream closes. A datagram the socket cannot send (an ICMP error from an earlier one, no route) is lost, as on
/// any UDP path; the relay goes on.
async fn relay_datagrams(
    reader: BufReader<TcpStream>,
    socket: UdpSocket,
    upstream: std::net::SocketAddr,
) -> std::io::Result<()> {
    let buffered = reader.buffer().to_vec();
    let (mut from_client, mut to_client) = reader.into_inner().into_split();
    let mut pending = buffered;
    let mut read_buf = vec![0u8; 8192];
    let mut udp_buf = vec![0u8; DATAGRAM_MAX_BYTES];
    loop {
        // Every whole datagram the client has written goes out first.
        while pending.len() >= 2 {
            let len = u16::from_be_bytes([pending[0], pending[1]]) as usize;
            if pending.len() < 2 + len {
                break;
            }
            let _ = socket.send_to(&pending[2..2 + len], upstream).await;
            pending.drain(..2 + len);
        }
        tokio::select! {
            read = from_client.read(&mut read_buf) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => pending.extend_from_slice(&read_buf[..n]),
            },
            received = socket.recv_from(&mut udp_buf) => match received {
                Ok((n, _)) => {
                    let mut frame = Vec::with_capacity(2 + n);
                    frame.extend_from_slice(&(n as u16).to_be_bytes());
                    frame.extend_from_slice(&udp_buf[..n]);
                    to_client.write_all(&frame).await?;
                }
                // ICMP port unreachable for an earlier datagram surfaces here on Linux: the path's business.
                Err(_) => continue,
            },
        }
    }
}
