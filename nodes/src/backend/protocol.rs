//! The Back End's wire format on [`crate::cluster::PEER_PORT`]: one request, one response, each a frame of a
//! 4-byte big-endian length and a JSON body (tokio-util's `LengthDelimitedCodec`). A connection carries one request
//! at a time; callers that must not wait behind each other (heartbeats behind a snapshot) use separate connections.
//!
//! Three kinds of traffic share the port: partner traffic between principal and mirror (`Ping`, `Replicate`,
//! `Snapshot`, `Handover`), witness traffic from a partner to the witness (`WitnessPing`, `Expose`,
//! `Synchronized`, `Promote`), and client traffic from Front Ends (`Commit`, `LoadUser`, `LoadPool`, `Vote`).
//! Every client request carries `min_epoch`, the highest epoch the client has seen: a node at a lower epoch is a
//! stale principal and refuses (fencing from the client's side).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::error::PeerError;
use super::store::{Batch, DurableRole, LogEntry, Snapshot, UserRecord};

/// A snapshot of a big store is one frame; anything larger is a broken peer.
pub const FRAME_MAX_BYTES: usize = 256 << 20;

/// A node's view of itself, carried by every partner and witness heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub role: DurableRole,
    /// A principal that holds quorum (its lease is valid); always false for a mirror.
    pub serving: bool,
    pub epoch: u64,
    pub last_lsn: u64,
    pub last_entry_epoch: u64,
    /// Principal: its mirror receives every commit synchronously. Mirror: its principal said so.
    pub synchronized: bool,
    /// Principal: it commits without its mirror (registered with the witness when there is one).
    pub exposed: bool,
}

/// What the witness knows, in every answer it gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessView {
    pub node: String,
    /// The highest epoch the witness has recorded (0: it knows no principal yet).
    pub epoch: u64,
    pub principal: Option<String>,
    /// The principal registered a synchronized mirror; false once it registered itself exposed.
    pub mirror_synchronized: bool,
    /// How long ago the witness last heard from the principal (`None`: not since the witness started).
    pub principal_heard_ms_ago: Option<u64>,
}

/// A request on the peer port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Partner heartbeat, both ways: the sender's view; answered with [`Response::Pong`].
    Ping(NodeView),
    /// Principal → mirror: entries continuing the log after `(prev_lsn, prev_epoch)`.
    Replicate {
        from: String,
        epoch: u64,
        prev_lsn: u64,
        prev_epoch: u64,
        entries: Vec<LogEntry>,
        /// Whether the principal counts the mirror as synchronized once these are applied.
        synchronized: bool,
    },
    /// Principal → mirror: replace everything (the mirror is too far behind, or its log diverged).
    Snapshot {
        from: String,
        epoch: u64,
        snapshot: Snapshot,
    },
    /// Mirror → principal (operator failover): step down to mirror at `epoch + 1` once the mirror has everything.
    Handover { from: String, epoch: u64 },
    /// Partner → witness heartbeat.
    WitnessPing(NodeView),
    /// Principal → witness: from now on it commits without its mirror; the mirror must not be promoted.
    Expose { node: String, epoch: u64, lsn: u64 },
    /// Principal → witness: the mirror has caught up and receives every commit again.
    Synchronized { node: String, epoch: u64, lsn: u64 },
    /// Mirror → witness: promote me to principal at `epoch + 1`.
    Promote {
        node: String,
        epoch: u64,
        lsn: u64,
        /// Operator's forced failover: promote even though the mirror is not synchronized.
        force: bool,
    },
    /// Client → principal: commit a batch.
    Commit { batch: Batch, min_epoch: u64 },
    /// Client → principal: one user's record.
    LoadUser { user: String, min_epoch: u64 },
    /// Client → principal: every user homed on a pool.
    LoadPool { pool: String, min_epoch: u64 },
    /// Client → principal: the Back End's quorum vote for a Front End pool.
    Vote { min_epoch: u64 },
    /// Anyone → node: its view (tests and diagnostics).
    View,
}

/// A response on the peer port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Pong(NodeView),
    /// The mirror durably holds the log up to `last_lsn`.
    Applied {
        last_lsn: u64,
        last_entry_epoch: u64,
    },
    /// The entries do not continue the mirror's log: this is where it stands.
    Mismatch {
        last_lsn: u64,
        last_entry_epoch: u64,
    },
    /// The receiver is at a higher epoch: the sender is a stale principal.
    Fenced {
        epoch: u64,
    },
    /// The principal stepped down; it holds the log up to `lsn`.
    HandedOver {
        lsn: u64,
        entry_epoch: u64,
    },
    /// A request understood and declined, with the reason.
    Refused {
        reason: String,
    },
    Witness(WitnessView),
    /// The witness recorded the requester as principal at `epoch`.
    Granted {
        epoch: u64,
    },
    Committed {
        lsn: u64,
        epoch: u64,
        node: String,
    },
    User {
        record: Option<UserRecord>,
        epoch: u64,
    },
    Users {
        records: Vec<UserRecord>,
        epoch: u64,
    },
    Vote {
        yes: bool,
        epoch: u64,
        node: String,
    },
    /// The node is not a serving principal; `principal` names the one it believes in, if any.
    NotPrincipal {
        node: String,
        epoch: u64,
        principal: Option<String>,
        reason: String,
    },
    Error {
        reason: String,
    },
}

/// A peer connection, read and written a frame at a time.
type PeerStream = Framed<TcpStream, LengthDelimitedCodec>;

/// Frames a peer connection: a 4-byte big-endian length, then that many bytes, at most [`FRAME_MAX_BYTES`].
fn framed(stream: TcpStream) -> PeerStream {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_MAX_BYTES)
        .new_framed(stream)
}

/// Writes one frame.
async fn write_frame<T: Serialize>(stream: &mut PeerStream, message: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    stream.send(Bytes::from(body)).await
}

/// Reads one frame; `Ok(None)` at a clean end of stream between frames.
async fn read_frame<T: DeserializeOwned>(stream: &mut PeerStream) -> Result<Option<T>, PeerError> {
    match stream.next().await {
        None => Ok(None),
        Some(Ok(body)) => Ok(Some(serde_json::from_slice(&body)?)),
        Some(Err(e))
            if e.get_ref()
                .is_some_and(|e| e.is::<LengthDelimitedCodecError>()) =>
        {
            Err(PeerError::FrameTooLarge(FRAME_MAX_BYTES))
        }
        Some(Err(e)) => Err(PeerError::Io("peer".into(), e)),
    }
}

/// A persistent connection to one peer, reconnected on demand. Any failure or timeout drops the connection,
/// so a half-read answer can never be taken for the next request's.
#[derive(Debug)]
pub struct PeerConn {
    /// The peer's node name, for messages.
    name: String,
    /// `host:port` (a DNS name in containers, a fault-proxy address when a route says so).
    address: String,
    stream: tokio::sync::Mutex<Option<PeerStream>>,
}

impl PeerConn {
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        PeerConn {
            name: name.into(),
            address: address.into(),
            stream: tokio::sync::Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` and awaits the response, all within `timeout` (connecting included).
    pub async fn request(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        let mut guard = self.stream.lock().await;
        // Taken out while in use: if this future is dropped half-way, the stream is dropped with it.
        let taken = guard.take();
        let exchange = async {
            let mut stream = match taken {
                Some(s) => s,
                None => {
                    let s = TcpStream::connect(&self.address)
                        .await
                        .map_err(|e| PeerError::Connect(self.address.clone(), e))?;
                    s.set_nodelay(true)
                        .map_err(|e| PeerError::Io(self.name.clone(), e))?;
                    framed(s)
                }
            };
            write_frame(&mut stream, request)
                .await
                .map_err(|e| PeerError::Io(self.name.clone(), e))?;
            match read_frame::<Response>(&mut stream).await {
                Ok(Some(r)) => Ok((stream, r)),
                Ok(None) => Err(PeerError::Io(
                    self.name.clone(),
                    std::io::ErrorKind::UnexpectedEof.into(),
                )),
                Err(PeerError::Io(_, e)) => Err(PeerError::Io(self.name.clone(), e)),
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((stream, response))) => {
                *guard = Some(stream);
                Ok(response)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PeerError::Timeout(
                self.name.clone(),
                timeout.as_millis() as u64,
            )),
        }
    }

    /// Drops the connection (the next request reconnects).
    pub async fn reset(&self) {
        *self.stream.lock().await = None;
    }
}

/// Serves one connection: each request frame is answered by `handle`, in order, until the peer closes.
pub async fn serve_connection<H, F>(stream: TcpStream, handle: H)
where
    H: Fn(Request) -> F,
    F: std::future::Future<Output = Response>,
{
    let _ = stream.set_nodelay(true);
    let mut stream = framed(stream);
    // Bounded by the peer: a connection lives while it sends requests.
    loop {
        let request = match read_frame::<Request>(&mut stream).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("peer connection dropped: {e}");
                return;
            }
        };
        let response = handle(request).await;
        if write_frame(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A served connection on loopback whose every request is answered with an error naming it.
    async fn served() -> TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve_connection(stream, |request| async move {
                Response::Error {
                    reason: format!("{request:?}"),
                }
            })
            .await;
        });
        TcpStream::connect(address).await.unwrap()
    }

    #[tokio::test]
    async fn a_frame_is_a_big_endian_length_and_json() {
        let mut stream = served().await;
        let body = serde_json::to_vec(&Request::View).unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await.unwrap();
        let length = stream.read_u32().await.unwrap() as usize;
        let mut answer = vec![0; length];
        stream.read_exact(&mut answer).await.unwrap();
        let answer: Response = serde_json::from_slice(&answer).unwrap();
        assert!(matches!(answer, Response::Error { reason } if reason == "View"));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_closes_the_connection() {
        let mut stream = served().await;
        let length = (FRAME_MAX_BYTES + 1) as u32;
        stream.write_all(&length.to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no answer, the connection closed");
    }
}
