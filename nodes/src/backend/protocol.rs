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
use tokio_util::codec::Framed;

use super::error::PeerError;
use super::store::{Batch, DurableRole, LogEntry, Snapshot, UserRecord};
use crate::frames::{FrameCodec, FrameTooLarge};

/// Largest frame read or written. The largest legitimate frames carry many users' records: a `Snapshot` (every
/// user the store holds, for a mirror too far behind), a `Users` answer to `LoadPool` (every user of a pool, what
/// `BackendClient::load_all` reads), and `Commit`s of at most 200 records (the lazy writer's and the backup
/// service's batches, far below). A typical record (a 1 KiB presence document, 50 contacts) is about 6 KiB of JSON
/// (a body is a JSON array of numbers), so 64 MiB holds 10,000 such users in one snapshot (the most users the
/// harness's benchmark runs in one process; its topologies hold tens), and a pool's reload of them
/// (`a_typical_store_of_design_size_fits_in_a_frame`). A store bigger than that cannot be sent whole: the sender's
/// write fails, and the mirror's catch-up or the Front End's reload fails with it (paging `LoadPool` and `Snapshot`
/// is what a larger store needs). Reading never allocates more than the bytes that arrived (see
/// [`FrameCodec`]).
pub const FRAME_MAX_BYTES: usize = 64 << 20;

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
type PeerStream = Framed<TcpStream, FrameCodec>;

/// Frames a peer connection: a 4-byte big-endian length, then that many bytes, at most [`FRAME_MAX_BYTES`].
fn framed(stream: TcpStream) -> PeerStream {
    Framed::new(stream, FrameCodec::new(FRAME_MAX_BYTES))
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
        Some(Err(e)) => match FrameTooLarge::of(&e) {
            Some(too_large) => Err(PeerError::FrameTooLarge(too_large.announced)),
            None => Err(PeerError::Io("peer".into(), e)),
        },
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

/// Serves one connection: each request frame is answered by `handle`, in order, until the peer closes. The first
/// request must be complete within `first_frame_timeout`, or the connection closes unanswered with
/// [`PeerError::Timeout`]; after it, a connection may stay quiet between requests (callers keep theirs open). A
/// frame over [`FRAME_MAX_BYTES`] or one that is not a request closes the connection with its error.
pub async fn serve_connection<H, F>(
    stream: TcpStream,
    first_frame_timeout: Duration,
    handle: H,
) -> Result<(), PeerError>
where
    H: Fn(Request) -> F,
    F: std::future::Future<Output = Response>,
{
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "peer".to_owned(), |a| a.to_string());
    let mut stream = framed(stream);
    let first = tokio::time::timeout(first_frame_timeout, read_frame::<Request>(&mut stream))
        .await
        .map_err(|_| PeerError::Timeout(peer, first_frame_timeout.as_millis() as u64))?;
    let mut next = Some(first);
    // Bounded by the peer: a connection lives while it sends requests.
    loop {
        let read = match next.take() {
            Some(first) => first,
            None => read_frame::<Request>(&mut stream).await,
        };
        let Some(request) = read? else {
            return Ok(());
        };
        let response = handle(request).await;
        if write_frame(&mut stream, &response).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::store::PresenceDoc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// Generous for a busy 2-core machine: every wait below ends in milliseconds when the code is right.
    const WAIT: Duration = Duration::from_secs(30);

    /// A server on loopback serving every connection, each request answered with an error naming it (its first
    /// 64 characters); how each connection ended arrives on the receiver.
    async fn server(
        first_frame_timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        mpsc::UnboundedReceiver<Result<(), PeerError>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (ended, endings) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Ends with the test's runtime.
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let result =
                        serve_connection(stream, first_frame_timeout, |request| async move {
                            let mut reason = format!("{request:?}");
                            reason.truncate(64);
                            Response::Error { reason }
                        })
                        .await;
                    let _ = ended.send(result);
                });
            }
        });
        (address, endings)
    }

    /// Writes `body` as one frame.
    async fn send_frame(stream: &mut TcpStream, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        stream.write_all(&frame).await.unwrap();
    }

    /// The reason of the error answering the next frame.
    async fn answer(stream: &mut TcpStream) -> String {
        let length = stream.read_u32().await.unwrap() as usize;
        let mut answer = vec![0; length];
        stream.read_exact(&mut answer).await.unwrap();
        match serde_json::from_slice(&answer).unwrap() {
            Response::Error { reason } => reason,
            other => panic!("expected an error naming the request, got {other:?}"),
        }
    }

    /// Whether the server closes `stream` (end of stream or reset) within `within`, having sent nothing.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// A normal client's `View` is answered.
    async fn served(address: std::net::SocketAddr) -> bool {
        let conn = PeerConn::new("server", address.to_string());
        matches!(conn.request(&Request::View, WAIT).await, Ok(Response::Error { reason }) if reason == "View")
    }

    #[tokio::test]
    async fn a_frame_is_a_big_endian_length_and_json() {
        let (address, _) = server(WAIT).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        send_frame(&mut stream, &serde_json::to_vec(&Request::View).unwrap()).await;
        assert_eq!(answer(&mut stream).await, "View");
    }

    /// Claim: a header announcing one byte more than [`FRAME_MAX_BYTES`] closes the connection with
    /// `FrameTooLarge`, nothing answered and nothing of it allocated (see `frames`), and the server serves others.
    #[tokio::test]
    async fn a_frame_over_the_limit_closes_the_connection_and_the_server_serves_on() {
        let (address, mut endings) = server(WAIT).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let length = (FRAME_MAX_BYTES + 1) as u32;
        stream.write_all(&length.to_be_bytes()).await.unwrap();
        assert!(
            closed_within(&mut stream, WAIT).await,
            "no answer, the connection closed"
        );
        let ended = endings.recv().await.unwrap();
        assert!(
            matches!(ended, Err(PeerError::FrameTooLarge(n)) if n == FRAME_MAX_BYTES + 1),
            "{ended:?}"
        );
        assert!(served(address).await, "served after the oversized frame");
    }

    /// Claim: a request of exactly [`FRAME_MAX_BYTES`] is read and answered.
    #[tokio::test]
    async fn a_frame_at_the_limit_is_answered() {
        let (address, _) = server(WAIT).await;
        let request = |user: String| Request::LoadUser { user, min_epoch: 0 };
        let overhead = serde_json::to_vec(&request(String::new())).unwrap().len();
        let body = serde_json::to_vec(&request("u".repeat(FRAME_MAX_BYTES - overhead))).unwrap();
        assert_eq!(body.len(), FRAME_MAX_BYTES);
        let mut stream = TcpStream::connect(address).await.unwrap();
        send_frame(&mut stream, &body).await;
        assert!(answer(&mut stream).await.starts_with("LoadUser"));
    }

    /// Claim: a connection whose first request is not complete within the deadline is closed unanswered with
    /// `Timeout`, whether it sent nothing or part of a frame, and a normal client is served afterwards.
    /// Proof: with a 300 ms deadline, a silent connection and one that sent a header announcing 100 bytes and 10 of
    /// them are both closed within a few seconds; then a `View` on a new connection is answered.
    #[tokio::test]
    async fn a_connection_without_a_first_request_in_time_is_closed_and_the_server_serves_on() {
        const DEADLINE: Duration = Duration::from_millis(300);
        let (address, mut endings) = server(DEADLINE).await;
        let mut silent = TcpStream::connect(address).await.unwrap();
        let mut partial = TcpStream::connect(address).await.unwrap();
        partial.write_all(&100u32.to_be_bytes()).await.unwrap();
        partial.write_all(&[b'{'; 10]).await.unwrap();
        for stream in [&mut silent, &mut partial] {
            assert!(closed_within(stream, Duration::from_secs(10)).await);
        }
        for _ in 0..2 {
            let ended = endings.recv().await.unwrap();
            assert!(
                matches!(ended, Err(PeerError::Timeout(_, 300))),
                "{ended:?}"
            );
        }
        assert!(served(address).await, "served after the silent connections");
    }

    /// Claim: the biggest legitimate frames (a `Snapshot` of the store, the `Users` answering `LoadPool`) fit in
    /// [`FRAME_MAX_BYTES`] for the store size its documentation names.
    /// Proof: a typical record (a 1 KiB presence document, 50 contacts) times 10,000 users is under the limit.
    #[test]
    fn a_typical_store_of_design_size_fits_in_a_frame() {
        const USERS: usize = 10_000;
        let record = UserRecord {
            user: "user-00001".into(),
            pool: "pool1.site1.example".into(),
            password: Some("secret-password".into()),
            contacts: (0..50)
                .map(|i| format!("sip:contact-{i:05}@pool1.site1.example"))
                .collect(),
            presence: vec![PresenceDoc {
                etag: "etag-0123456789".into(),
                content_type: "application/pidf+xml".into(),
                body: vec![b'x'; 1024],
                expires_at_unix_ms: 1_700_000_000_000,
            }],
            settings: Default::default(),
        };
        let one = serde_json::to_vec(&record).unwrap().len();
        println!(
            "a typical user record: {one} bytes of JSON; {USERS} of them: {} bytes",
            one * USERS
        );
        assert!(one * USERS < FRAME_MAX_BYTES, "{one} bytes a record");
    }
}
