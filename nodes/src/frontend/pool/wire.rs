//! The peer link between Front Ends of one pool: length-prefixed JSON frames over TCP (a 4-byte big-endian length,
//! tokio-util's `LengthDelimitedCodec`), one connection per ordered pair of nodes, calls matched to answers by id.
//! Calls on one connection are sent in the order they were made, which is how a primary's replicated writes reach a
//! secondary in sequence order.
//!
//! Every frame in or out passes [`LinkFaults`], the test-only partition shim: a cut link closes its connection and
//! refuses new calls, as a network partition would. In production the set of cuts is empty.
//!
//! Nothing queues without bound: a connection's writer takes frames from a queue of at most `queue_len`. A call
//! toward a peer whose queue is full is refused at once ([`PeerError::QueueFull`]); an answer waits for room, so
//! a peer that does not read its answers stops being read from (TCP then slows its calls down).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::member::{GroupConfig, Member};
use super::membership::Report;
use super::placement::GroupId;
use crate::frames::{FrameCodec, FrameTooLarge};
use crate::frontend::error::PeerError;
use crate::frontend::store::{Applied, UserView, Write};
use crate::slots::{Slot, Slots};

/// Largest frame read or written. The largest legitimate frames carry a whole routing group's state (`Install`,
/// `Resync`, the `Snapshot` answering `Fetch`); every other frame holds one user's writes, one SIP message (at most
/// 64 KiB) or a heartbeat. A group holds a pool's users divided by 2 × N: at Lync 2013's 6,660 users per Front End,
/// about 3,330 users a group whatever N. A typical user (one binding, a 1 KiB presence document, 50 contacts) is
/// about 10 KiB of JSON here (a body is a JSON array of numbers), so such a group is about 31 MiB: 64 MiB holds it
/// twice over (`a_typical_routing_group_at_design_size_fits_in_a_frame`). A group bigger than
/// that (users with full 1,000-entry contact lists) cannot move between replicas: the sender's write fails and the
/// call with it. Reading never allocates more than the bytes that arrived (see [`FrameCodec`]).
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Frames queued for a peer go out together, up to about this many bytes a write.
const BATCH_BYTES: usize = 256 * 1024;

/// A call from one Front End to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    /// Liveness and gossip: the sender's view of itself; answered with the receiver's.
    Heartbeat(Report),
    /// Promise to refuse anything of an epoch below `epoch` for `group` (the first phase of a reconfiguration).
    Promise {
        group: GroupId,
        epoch: u64,
        from: Member,
        to_incarnation: u64,
    },
    /// The state of a replica that promised `epoch` to the caller.
    Fetch {
        group: GroupId,
        epoch: u64,
        from: Member,
    },
    /// Become a replica of `config` with this state (a reconfiguration's second phase).
    Install {
        config: GroupConfig,
        seq: u64,
        snapshot: Vec<Write>,
        from: Member,
        to_incarnation: u64,
    },
    /// Apply the writes numbered `seq` of the group at `epoch` (primary to secondary, before the client's 200).
    Replicate {
        group: GroupId,
        epoch: u64,
        seq: u64,
        writes: Vec<Write>,
        now_unix_ms: u64,
        from: Member,
        to_incarnation: u64,
    },
    /// Replace the replica's state with the primary's (a secondary that missed writes).
    Resync {
        group: GroupId,
        epoch: u64,
        seq: u64,
        snapshot: Vec<Write>,
        from: Member,
        to_incarnation: u64,
    },
    /// A client's writes, forwarded to the group's primary by the Front End serving the client.
    Commit {
        group: GroupId,
        user: String,
        writes: Vec<Write>,
        now_unix_ms: u64,
    },
    /// A user's state, read at the group's primary.
    View {
        group: GroupId,
        user: String,
        now_unix_ms: u64,
    },
    /// Relay a SIP request (encoded) to the client of `user` bound at `contact`, whose connection is on the callee.
    Deliver {
        user: String,
        contact: String,
        message: String,
        timeout_ms: u64,
    },
    /// The user's presence changed: tell your watchers.
    Changed { user: String },
    /// Relay a new call's INVITE (encoded) to the client of `user` bound at `contact`, whose connection is on the
    /// callee; the caller holds the call's Mediation side.
    Ring {
        user: String,
        contact: String,
        message: String,
        timeout_ms: u64,
    },
    /// Relay a request (encoded) inside call `call_id` to the end of the call the callee holds.
    CallRelay {
        call_id: String,
        toward_client: bool,
        message: String,
        timeout_ms: u64,
    },
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    Heartbeat(Report),
    /// The promise holds; the replica's last configuration epoch and write number (0, 0 without a replica).
    Promised {
        config_epoch: u64,
        seq: u64,
        has_replica: bool,
    },
    /// Refused because of a higher epoch (or another reason in `reason`).
    Refused {
        epoch: u64,
        reason: String,
    },
    Snapshot {
        seq: u64,
        writes: Vec<Write>,
    },
    Done,
    /// A replicated write arrived out of sequence: the secondary needs a resync.
    Gap,
    Committed {
        applied: Vec<Applied>,
        view: UserView,
    },
    Viewed(UserView),
    /// The callee is not the group's acting primary; `primary` is the one it knows of, if any.
    NotPrimary {
        epoch: u64,
        primary: Option<String>,
    },
    /// The group cannot serve (too few live replicas, no lease, pool below quorum), or the callee refused a call
    /// answered later at its cap of those in flight: nothing was done for the call.
    Unavailable {
        reason: String,
    },
    /// A write whose outcome is unknown: the primary applied it but no secondary acknowledged it in time, or the
    /// primary it was forwarded to stopped answering. It may or may not survive.
    Indeterminate {
        reason: String,
    },
    /// A relayed request's final status.
    Delivered {
        code: u16,
        reason: String,
    },
    /// A relayed call request's final response (encoded); `None` when it could not be sent or gets no answer.
    Relayed {
        response: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    /// The first frame of a connection: who dials.
    Hello {
        from: String,
    },
    Call {
        id: u64,
        call: Call,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
}

/// A frame's body: its JSON (the codec adds the length).
fn encode(frame: &Frame) -> Bytes {
    Bytes::from(serde_json::to_vec(frame).expect("frames are plain data"))
}

fn codec() -> FrameCodec {
    FrameCodec::new(FRAME_BYTES_MAX)
}

/// The writing half of a peer connection, which sends a batch of frames in one write.
fn frame_writer<W: AsyncWrite>(writer: W) -> FramedWrite<W, FrameCodec> {
    let mut frames = FramedWrite::new(writer, codec());
    frames.set_backpressure_boundary(BATCH_BYTES);
    frames
}

/// Reads one frame; `None` at end of stream or on a malformed frame (the connection is then dropped; a frame
/// announced over [`FRAME_BYTES_MAX`] is logged).
async fn read_frame<R: AsyncRead + Unpin>(frames: &mut FramedRead<R, FrameCodec>) -> Option<Frame> {
    let body = match frames.next().await? {
        Ok(body) => body,
        Err(e) => {
            if let Some(too_large) = FrameTooLarge::of(&e) {
                tracing::debug!("peer connection closed: {too_large}");
            }
            return None;
        }
    };
    serde_json::from_slice(&body).ok()
}

/// An answer waiting in an incoming connection's queue, counted while it waits.
struct QueuedAnswer {
    frame: Bytes,
    _counted: Slot,
}

impl From<QueuedAnswer> for Bytes {
    /// The frame, taken out of the queue: it is no longer counted.
    fn from(queued: QueuedAnswer) -> Bytes {
        queued.frame
    }
}

/// Writes the queued frames, those queued together in one batch, until the queue closes (the connection was
/// replaced or the node stops), the socket fails or the link from `me` to `peer` is cut.
async fn write_queued<W: AsyncWrite + Unpin, Q: Into<Bytes>>(
    frames: &mut FramedWrite<W, FrameCodec>,
    queue: &mut mpsc::Receiver<Q>,
    faults: &LinkFaults,
    me: &str,
    peer: &str,
) {
    while let Some(first) = queue.recv().await {
        let first: Bytes = first.into();
        let mut size = first.len();
        let mut batch = vec![first];
        while size < BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    let next: Bytes = next.into();
                    size += next.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        if faults.is_cut(me, peer) {
            return;
        }
        for frame in batch {
            if frames.feed(frame).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(frames).await.is_err() {
            return;
        }
    }
}

/// The partition shim: directed links that are cut. Shared by every node of an in-process test pool.
#[derive(Debug, Clone, Default)]
pub struct LinkFaults {
    cut: Arc<Mutex<HashSet<(String, String)>>>,
}

impl LinkFaults {
    /// Cuts both directions between `a` and `b`; undone by [`LinkFaults::heal`].
    pub fn partition(&self, a: &str, b: &str) {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.insert((a.to_owned(), b.to_owned()));
        cut.insert((b.to_owned(), a.to_owned()));
    }

    /// Restores both directions between `a` and `b`; the opposite of [`LinkFaults::partition`].
    pub fn heal(&self, a: &str, b: &str) {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.remove(&(a.to_owned(), b.to_owned()));
        cut.remove(&(b.to_owned(), a.to_owned()));
    }

    /// Whether frames from `from` to `to` are dropped.
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        let cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        !cut.is_empty() && cut.contains(&(from.to_owned(), to.to_owned()))
    }
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// One outgoing connection: a queue of encoded frames (at most `queue_len`) and the calls awaiting answers.
struct Connection {
    queue: mpsc::Sender<Bytes>,
    waiting: Waiting,
}

/// The outgoing side: one connection per peer, dialled on first use and again after it closed.
pub struct Links {
    me: String,
    addresses: BTreeMap<String, String>,
    faults: LinkFaults,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// Frames queued for one connection's writer at most.
    queue_len: usize,
    next_id: AtomicU64,
    tasks: Mutex<JoinSet<()>>,
}

impl Links {
    /// Links from `me` to the peers at `addresses` (node → `host:port`), each queueing at most `queue_len` frames.
    pub fn new(
        me: &str,
        addresses: BTreeMap<String, String>,
        faults: LinkFaults,
        queue_len: usize,
    ) -> Self {
        Self {
            me: me.to_owned(),
            addresses,
            faults,
            connections: Mutex::new(HashMap::new()),
            queue_len: queue_len.max(1),
            next_id: AtomicU64::new(1),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    pub fn faults(&self) -> &LinkFaults {
        &self.faults
    }

    /// Frames queued now toward `to` (at most `queue_len`).
    pub fn queued(&self, to: &str) -> usize {
        self.lock()
            .get(to)
            .map_or(0, |c| c.queue.max_capacity() - c.queue.capacity())
    }

    /// Sends `call` to `to` now (so calls to one peer leave in the order they were made) and returns the wait for its
    /// answer, at most `timeout`.
    pub fn call(
        &self,
        to: &str,
        call: Call,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Answer, PeerError>> + Send + 'static {
        let sent = self.send(to, call);
        let to = to.to_owned();
        async move {
            let rx = sent?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(PeerError::Closed { peer: to }),
                Err(_) => Err(PeerError::Timeout { peer: to }),
            }
        }
    }

    fn send(&self, to: &str, call: Call) -> Result<oneshot::Receiver<Answer>, PeerError> {
        if self.faults.is_cut(&self.me, to) {
            self.lock().remove(to);
            return Err(PeerError::Cut {
                peer: to.to_owned(),
            });
        }
        let connection = self.connection(to)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        connection
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        match connection.queue.try_send(encode(&Frame::Call { id, call })) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Refused before anything was sent: the call leaves no trace on the connection.
                connection
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(PeerError::QueueFull {
                    peer: to.to_owned(),
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lock().remove(to);
                Err(PeerError::Closed {
                    peer: to.to_owned(),
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection to `to`, or a new one whose task dials and then drains the queue.
    fn connection(&self, to: &str) -> Result<Arc<Connection>, PeerError> {
        let mut connections = self.lock();
        if let Some(open) = connections.get(to).filter(|c| !c.queue.is_closed()) {
            return Ok(open.clone());
        }
        let address = self
            .addresses
            .get(to)
            .cloned()
            .ok_or_else(|| PeerError::Unknown {
                peer: to.to_owned(),
            })?;
        let (queue, frames) = mpsc::channel(self.queue_len);
        let waiting: Waiting = Arc::default();
        let connection = Arc::new(Connection {
            queue,
            waiting: waiting.clone(),
        });
        connections.insert(to.to_owned(), connection.clone());
        let (me, peer, faults) = (self.me.clone(), to.to_owned(), self.faults.clone());
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Finished connection tasks leave the set here, so it holds at most the live ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(outgoing(me, peer, address, frames, waiting, faults));
        Ok(connection)
    }

    /// Closes every connection (the node is stopping or killed).
    pub fn stop(&self) {
        self.lock().clear();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

/// Dials `address`, says hello, then writes queued frames and routes answers until either side closes or the link is
/// cut. Dropping `waiting` at the end fails every call still waiting.
async fn outgoing(
    me: String,
    peer: String,
    address: String,
    mut frames: mpsc::Receiver<Bytes>,
    waiting: Waiting,
    faults: LinkFaults,
) {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&address)).await
    else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let mut writer = frame_writer(writer);
    if writer
        .send(encode(&Frame::Hello { from: me.clone() }))
        .await
        .is_err()
    {
        return;
    }
    let write = write_queued(&mut writer, &mut frames, &faults, &me, &peer);
    let read = async {
        let mut reader = FramedRead::new(reader, codec());
        // Ends at end of stream, on a bad frame or on a cut.
        while let Some(frame) = read_frame(&mut reader).await {
            if faults.is_cut(&peer, &me) {
                return;
            }
            if let Frame::Answer { id, answer } = frame {
                let tx = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(answer);
                }
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    frames.close();
    waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// What serves incoming calls: answers at once when it can (replication must keep arrival order), or hands back a
/// future for calls that wait on others.
pub trait Callee: Send + Sync + 'static {
    /// Handles a call from `from`, in arrival order; `Err` carries a future answered later, off the reading task.
    fn answer(
        self: &Arc<Self>,
        from: &str,
        call: Call,
    ) -> Result<Answer, crate::sip::BoxFuture<Answer>>;
}

/// How an accepted peer connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No hello within the deadline: silence, a partial frame, or a first frame that is not a hello.
    NoHello,
    /// Closed after its hello: by the peer, on a malformed frame or on a cut.
    Closed,
}

/// What bounds an accepted peer connection.
#[derive(Debug, Clone)]
pub struct IncomingBounds {
    /// The dialling peer's hello must arrive within this, or the connection closes unserved.
    pub hello_timeout: Duration,
    /// Answers waiting for the connection's writer at most.
    pub queue_len: usize,
    /// Counts the answers waiting, shared by the node's incoming connections.
    pub answers: Slots,
}

/// Serves one accepted peer connection until it closes, a frame is malformed or the link is cut. Its first frame
/// must be a hello, complete within `bounds.hello_timeout`, or the connection closes at once ([`Ended::NoHello`]).
/// At most `bounds.queue_len` answers wait for the writer, each counted in `bounds.answers`; with the queue full,
/// the next call is not read until there is room.
pub async fn incoming<C: Callee>(
    stream: TcpStream,
    me: String,
    callee: Arc<C>,
    faults: LinkFaults,
    bounds: IncomingBounds,
) -> Ended {
    let IncomingBounds {
        hello_timeout,
        queue_len,
        answers,
    } = bounds;
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let mut reader = FramedRead::new(reader, codec());
    let Ok(Some(Frame::Hello { from })) =
        tokio::time::timeout(hello_timeout, read_frame(&mut reader)).await
    else {
        return Ended::NoHello;
    };
    let (tx, mut rx) = mpsc::channel::<QueuedAnswer>(queue_len.max(1));
    let mut writer = frame_writer(writer);
    let write = write_queued(&mut writer, &mut rx, &faults, &me, &from);
    let read = async {
        let mut later = JoinSet::new();
        while let Some(frame) = read_frame(&mut reader).await {
            if faults.is_cut(&from, &me) {
                return;
            }
            let Frame::Call { id, call } = frame else {
                continue;
            };
            match callee.answer(&from, call) {
                Ok(answer) => {
                    let Ok(room) = tx.reserve().await else {
                        return;
                    };
                    room.send(QueuedAnswer {
                        frame: encode(&Frame::Answer { id, answer }),
                        _counted: answers.count(),
                    });
                }
                Err(future) => {
                    let (tx, answers) = (tx.clone(), answers.clone());
                    later.spawn(async move {
                        let answer = future.await;
                        if let Ok(room) = tx.reserve().await {
                            room.send(QueuedAnswer {
                                frame: encode(&Frame::Answer { id, answer }),
                                _counted: answers.count(),
                            });
                        }
                    });
                    while later.try_join_next().is_some() {}
                }
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    Ended::Closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    /// Generous for a busy 2-core machine: every wait below ends in milliseconds when the code is right.
    const WAIT: Duration = Duration::from_secs(30);

    /// A callee answering every call at once with `answer`.
    struct Answering(Answer);

    impl Callee for Answering {
        fn answer(
            self: &Arc<Self>,
            _from: &str,
            _call: Call,
        ) -> Result<Answer, crate::sip::BoxFuture<Answer>> {
            Ok(self.0.clone())
        }
    }

    /// Bounds with a hello deadline no test reaches.
    fn bounds(queue_len: usize, answers: Slots) -> IncomingBounds {
        IncomingBounds {
            hello_timeout: WAIT,
            queue_len,
            answers,
        }
    }

    fn changed(user: &str) -> Call {
        Call::Changed {
            user: user.to_owned(),
        }
    }

    /// Claim: calls toward a peer that does not read queue at most `queue_len` frames; one more is refused at once
    /// with `QueueFull` and nothing of it stays; once the peer reads, the link answers calls again.
    /// Proof: 20 rounds of 50 calls of 64 KiB to a peer holding its connection unread, with pauses for the writer
    /// to fill the socket: the queue never holds more than 16 frames, calls are refused, and after the peer starts
    /// reading a new call is answered.
    #[tokio::test]
    async fn calls_beyond_a_full_queue_are_refused_and_the_link_answers_once_the_peer_reads() {
        const QUEUE: usize = 16;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let reading = Arc::new(tokio::sync::Notify::new());
        let peer = tokio::spawn({
            let reading = reading.clone();
            async move {
                let (stream, _) = listener.accept().await.unwrap();
                reading.notified().await;
                let callee = Arc::new(Answering(Answer::Done));
                incoming(
                    stream,
                    "b".into(),
                    callee,
                    LinkFaults::default(),
                    bounds(QUEUE, Slots::default()),
                )
                .await;
            }
        });
        let links = Links::new(
            "a",
            BTreeMap::from([("b".to_owned(), address)]),
            LinkFaults::default(),
            QUEUE,
        );
        let big = "x".repeat(64 * 1024);
        let (mut queued, mut refused) = (0, 0);
        for _ in 0..20 {
            for _ in 0..50 {
                // `call` queues at once; its answer is not awaited (the peer does not read).
                match links.send("b", changed(&big)) {
                    Ok(_) => queued += 1,
                    Err(PeerError::QueueFull { .. }) => refused += 1,
                    Err(other) => panic!("neither queued nor refused as full: {other}"),
                }
                assert!(links.queued("b") <= QUEUE, "{} queued", links.queued("b"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("1,000 calls of 64 KiB to a peer not reading: {queued} queued, {refused} refused");
        assert!(refused > 0, "a full queue refuses calls");

        reading.notify_one();
        let answered = tokio::time::timeout(WAIT, async {
            // Bounded by the timeout: the queue drains once the peer reads.
            loop {
                match links.call("b", changed("after"), WAIT).await {
                    Err(PeerError::QueueFull { .. }) => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    other => return other,
                }
            }
        })
        .await
        .expect("a call answered once the peer reads");
        assert!(matches!(answered, Ok(Answer::Done)), "{answered:?}");
        assert!(links.queued("b") <= QUEUE);
        links.stop();
        peer.abort();
    }

    /// Claim: a peer that sends calls but does not read their answers gets at most `queue_len` answers queued for it;
    /// the connection is then not read until there is room, and once the peer reads, every call is answered.
    /// Proof: 128 calls each answered with 256 KiB, from a client with a small receive buffer that reads nothing:
    /// the node's count of queued answers reaches 16 and never passes it; then every call's answer arrives, and the
    /// count is back to 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_beyond_a_full_queue_wait_and_every_call_is_answered_once_the_peer_reads() {
        const QUEUE: usize = 16;
        const CALLS: u64 = 128;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let answers = Slots::default();
        let node = tokio::spawn({
            let answers = answers.clone();
            async move {
                let (stream, _) = listener.accept().await.unwrap();
                let big = Answer::Refused {
                    epoch: 0,
                    reason: "x".repeat(256 * 1024),
                };
                let callee = Arc::new(Answering(big));
                incoming(
                    stream,
                    "a".into(),
                    callee,
                    LinkFaults::default(),
                    bounds(QUEUE, answers),
                )
                .await;
            }
        });
        // A small receive buffer (set before connecting, so the kernel does not grow it): the node's answers stop
        // flowing after a few megabytes at most.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let stream = socket.connect(address).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut calls = Vec::new();
        let frames =
            std::iter::once(Frame::Hello { from: "b".into() }).chain((1..=CALLS).map(|id| {
                Frame::Call {
                    id,
                    call: changed("u"),
                }
            }));
        for frame in frames {
            let body = encode(&frame);
            calls.extend_from_slice(&(body.len() as u32).to_be_bytes());
            calls.extend_from_slice(&body);
        }
        writer.write_all(&calls).await.unwrap();

        let full = tokio::time::timeout(WAIT, async {
            // Bounded by the timeout.
            while answers.taken() < QUEUE {
                assert!(
                    answers.taken() <= QUEUE,
                    "{} answers queued",
                    answers.taken()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            full.is_ok(),
            "the answer queue fills while the peer reads nothing"
        );
        for _ in 0..20 {
            assert!(
                answers.taken() <= QUEUE,
                "{} answers queued",
                answers.taken()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let mut ids = HashSet::new();
        let mut reader = FramedRead::new(reader, codec());
        tokio::time::timeout(WAIT, async {
            // Bounded: one frame per call.
            while (ids.len() as u64) < CALLS {
                match read_frame(&mut reader).await {
                    Some(Frame::Answer { id, .. }) => assert!(ids.insert(id), "answered twice"),
                    other => panic!("expected an answer, got {other:?}"),
                }
                assert!(
                    answers.taken() <= QUEUE,
                    "{} answers queued",
                    answers.taken()
                );
            }
        })
        .await
        .expect("every call answered once the peer reads");
        assert_eq!(answers.taken(), 0);
        node.abort();
    }

    /// A node on loopback serving every accepted connection with `Answering(Answer::Done)`.
    async fn serving_node() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            // Ends with the test's runtime.
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let callee = Arc::new(Answering(Answer::Done));
                tokio::spawn(incoming(
                    stream,
                    "b".into(),
                    callee,
                    LinkFaults::default(),
                    bounds(4, Slots::default()),
                ));
            }
        });
        address
    }

    /// A connection to `address` that said hello as `a`.
    async fn hello(address: &str) -> TcpStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        write_frame(&mut stream, &encode(&Frame::Hello { from: "a".into() })).await;
        stream
    }

    async fn write_frame(stream: &mut TcpStream, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        stream.write_all(&frame).await.unwrap();
    }

    /// Whether the node closes `stream` within [`WAIT`], having sent nothing on it.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// A call over a new link from `a` is answered.
    async fn answered(address: &str) -> bool {
        let links = Links::new(
            "a",
            BTreeMap::from([("b".to_owned(), address.to_owned())]),
            LinkFaults::default(),
            4,
        );
        let answer = links.call("b", changed("u"), WAIT).await;
        links.stop();
        matches!(answer, Ok(Answer::Done))
    }

    /// Claim: a header announcing one byte more than [`FRAME_BYTES_MAX`] closes the connection unanswered, as the
    /// first frame or after the hello, and the node answers other peers on.
    #[tokio::test]
    async fn a_frame_over_the_limit_closes_the_connection_and_the_node_serves_on() {
        let address = serving_node().await;
        let header = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        let mut first = TcpStream::connect(&address).await.unwrap();
        first.write_all(&header).await.unwrap();
        let mut after_hello = hello(&address).await;
        after_hello.write_all(&header).await.unwrap();
        for stream in [&mut first, &mut after_hello] {
            assert!(closed(stream).await, "no answer, the connection closed");
        }
        assert!(
            answered(&address).await,
            "served after the oversized frames"
        );
    }

    /// Claim: a call of exactly [`FRAME_BYTES_MAX`] bytes is read and answered.
    #[tokio::test]
    async fn a_frame_at_the_limit_is_answered() {
        let address = serving_node().await;
        let frame = |user: &str| Frame::Call {
            id: 7,
            call: changed(user),
        };
        let overhead = encode(&frame("")).len();
        let body = encode(&frame(&"u".repeat(FRAME_BYTES_MAX - overhead)));
        assert_eq!(body.len(), FRAME_BYTES_MAX);
        let mut stream = hello(&address).await;
        write_frame(&mut stream, &body).await;
        drop(body);
        let mut reader = FramedRead::new(stream, codec());
        let answer = tokio::time::timeout(WAIT, read_frame(&mut reader)).await;
        assert!(
            matches!(
                answer,
                Ok(Some(Frame::Answer {
                    id: 7,
                    answer: Answer::Done
                }))
            ),
            "{answer:?}"
        );
    }

    /// Claim: the biggest legitimate frames (a routing group's state in `Install`, `Resync` or `Snapshot`) fit in
    /// [`FRAME_BYTES_MAX`] twice over for a group of the size its documentation names.
    /// Proof: a typical user's writes (one binding, a 1 KiB presence document, 50 contacts) times 3,330 users, twice,
    /// is under the limit.
    #[test]
    fn a_typical_routing_group_at_design_size_fits_in_a_frame() {
        use crate::frontend::store::{Binding, Publication};
        const USERS: usize = 3_330;
        let user = "user-00001@pool1.site1.example".to_owned();
        let mut writes = vec![
            Write::Bind {
                user: user.clone(),
                binding: Binding {
                    contact:
                        "sip:user-00001@192.168.100.200:50123;transport=tcp;ms-opaque=0123456789"
                            .into(),
                    call_id: "0123456789abcdef0123456789abcdef".into(),
                    cseq: 12,
                    expires_at_unix_ms: 1_700_000_000_000,
                    front_end: Some("fe1".into()),
                },
            },
            Write::Publish {
                user: user.clone(),
                publication: Publication {
                    etag: "etag-0123456789".into(),
                    content_type: "application/pidf+xml".into(),
                    body: vec![b'x'; 1024],
                    expires_at_unix_ms: 1_700_000_000_000,
                },
                replaces: None,
            },
        ];
        writes.extend((0..50).map(|i| Write::ContactAdd {
            user: user.clone(),
            contact: format!("sip:contact-{i:05}@pool1.site1.example"),
        }));
        let one = serde_json::to_vec(&writes).unwrap().len();
        println!(
            "a typical user's writes: {one} bytes of JSON; {USERS} of them: {} bytes",
            one * USERS
        );
        assert!(2 * one * USERS < FRAME_BYTES_MAX, "{one} bytes a user");
    }
}
