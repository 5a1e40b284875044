//! The harness's way into a run's networks: the fault proxy's tunnel (one published port). Through it the
//! harness and its simulated users reach any node or pool by name, as a client inside the networks would,
//! and it works where the host cannot route to container addresses (Docker Desktop).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The tunnel's port inside the proxy container.
pub const TUNNEL_PORT: u16 = 8475;

/// Why a tunnelled connect or lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("reach the tunnel at {0}: {1}")]
    Tunnel(SocketAddr, String),
    #[error("connect to {target} through the tunnel: {reason}")]
    Refused { target: String, reason: String },
    #[error("connect to {0} through the tunnel: no answer in time")]
    Timeout(String),
}

/// Opens a TCP stream to `host:port` inside the networks; `timeout` bounds the whole set-up.
pub async fn connect(
    tunnel: SocketAddr,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, TunnelError> {
    let target = format!("{host}:{port}");
    let fut = async {
        let mut stream = TcpStream::connect(tunnel)
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(format!("CONNECT {target} {}\n", timeout.as_millis()).as_bytes())
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        let line = read_line(&mut stream)
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        match line.strip_prefix("OK") {
            Some(_) => Ok(stream),
            None => Err(TunnelError::Refused {
                target: target.clone(),
                reason: line.trim_start_matches("ERR ").to_string(),
            }),
        }
    };
    tokio::time::timeout(timeout + Duration::from_millis(500), fut)
        .await
        .map_err(|_| TunnelError::Timeout(target.clone()))?
}

/// Opens a datagram flow to `host:port` inside the networks: the proxy sends what is written on the returned
/// stream from a UDP socket of this flow's own, and writes back what that socket receives, each datagram as a
/// 2-byte big-endian length and its bytes ([`frame_datagram`]). Nothing is dialled: a flow opens whether or not
/// anything listens there, as UDP does.
pub async fn datagrams(
    tunnel: SocketAddr,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, TunnelError> {
    let target = format!("{host}:{port}");
    let fut = async {
        let mut stream = TcpStream::connect(tunnel)
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(format!("DATAGRAM {target}\n").as_bytes())
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        let line = read_line(&mut stream)
            .await
            .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
        match line.strip_prefix("OK") {
            Some(_) => Ok(stream),
            None => Err(TunnelError::Refused {
                target: target.clone(),
                reason: line.trim_start_matches("ERR ").to_string(),
            }),
        }
    };
    tokio::time::timeout(timeout + Duration::from_millis(500), fut)
        .await
        .map_err(|_| TunnelError::Timeout(target.clone()))?
}

/// One datagram as a [`datagrams`] flow carries it: its length (2 bytes, big-endian), then its bytes.
pub fn frame_datagram(datagram: &[u8]) -> Vec<u8> {
    let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(2 + len as usize);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&datagram[..len as usize]);
    frame
}

/// The next whole datagram at the front of `buf` (taken out of it), if `buf` holds one.
pub fn next_datagram(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    if buf.len() < 2 + len {
        return None;
    }
    let datagram = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(datagram)
}

/// Every address a name resolves to inside the networks (a pool name gives all of its servers).
pub async fn resolve(tunnel: SocketAddr, name: &str) -> Result<Vec<IpAddr>, TunnelError> {
    resolve_within(tunnel, name, Duration::from_secs(3)).await
}

/// [`resolve`] giving up after `timeout`: a name none of whose servers runs any more is not answered by the
/// networks' DNS at once (it asks further, and nothing further answers), so callers that keep the last answer
/// ask with a short bound.
pub async fn resolve_within(
    tunnel: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, TunnelError> {
    let fut = async {
        let mut stream = TcpStream::connect(tunnel).await?;
        stream
            .write_all(format!("RESOLVE {name}\n").as_bytes())
            .await?;
        read_line(&mut stream).await
    };
    let line = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| TunnelError::Timeout(name.to_string()))?
        .map_err(|e| TunnelError::Tunnel(tunnel, e.to_string()))?;
    match line.strip_prefix("OK") {
        Some(rest) => Ok(rest
            .split_whitespace()
            .filter_map(|ip| ip.parse().ok())
            .collect()),
        None => Err(TunnelError::Refused {
            target: name.to_string(),
            reason: line,
        }),
    }
}

/// Reads the tunnel's one-line answer byte by byte, so no byte of the stream after it is consumed.
async fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut reader = BufReader::with_capacity(1, stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    Ok(line.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_cut_where_their_lengths_say() {
        let mut buf = frame_datagram(b"REGISTER");
        buf.extend(frame_datagram(b""));
        let options = frame_datagram(b"OPTIONS");
        buf.extend(&options[..4]);
        assert_eq!(next_datagram(&mut buf), Some(b"REGISTER".to_vec()));
        assert_eq!(next_datagram(&mut buf), Some(Vec::new()));
        assert_eq!(next_datagram(&mut buf), None, "half a datagram waits");
        buf.extend(&options[4..]);
        assert_eq!(next_datagram(&mut buf), Some(b"OPTIONS".to_vec()));
        assert!(buf.is_empty());
    }
}
