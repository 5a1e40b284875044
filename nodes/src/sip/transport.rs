//! The SIP transport on tokio, shared by every role: TCP and UDP listeners, one task per TCP connection, a few
//! receive tasks per UDP socket, and a [`Handler`] that turns each request into a [`Reply`].
//!
//! A role also talks back: [`Peer::request`] sends a request to the client a request came from (over the same TCP
//! connection, or to the same UDP address) and awaits its final response, which is how the Front End relays an IM
//! to a registered client and sends NOTIFYs.
//!
//! The file holds one concept, moving SIP messages: the TCP and UDP loops, the UDP transactions and the
//! requests a role sends back share its connection table.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rsip::{Header, Request, Response, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::codec::{decode_datagram, Frame, FrameError, Framer, Limits};
use super::error::{RequestError, TransportError};
use super::message;
use super::transaction::{Arrival, TransactionCache, TransactionKey};
use crate::slots::{Slot, Slots};

/// A future a handler hands back for the transport to drive.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a handler answers one request.
pub enum Reply {
    /// Answer now.
    Response(Response),
    /// Answer now, then run a follow-up that must come after the response on the wire (the NOTIFY that follows a
    /// SUBSCRIBE's 200).
    ResponseThen(Response, BoxFuture<()>),
    /// Answer when the future completes, without holding up the messages behind this one (an IM relay waits for
    /// the recipient's client).
    Deferred(BoxFuture<Response>),
    /// Work the reply out off the connection's read loop: the request waits on something slow (a routing group's
    /// primary on another Front End) that must not hold up the requests behind it. Only for requests whose order
    /// against the next ones on the connection does not matter.
    Later(BoxFuture<Reply>),
    /// No answer (ACK).
    Nothing,
}

/// A role: turns a request from a peer into a reply. Called in arrival order per TCP connection, so a role's state
/// changes apply in the order the client sent them; anything slow belongs in [`Reply::Deferred`].
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request, peer: Peer) -> impl Future<Output = Reply> + Send;
}

/// The transport a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        })
    }
}

/// Names the path to one client: a TCP connection, or a UDP address on one of our sockets. Two requests with the
/// same flow came from the same client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub remote: SocketAddr,
    /// Our connection number (TCP) or socket number (UDP).
    pub link: u64,
}

/// Settings of the transport; every timer and bound is here so a fast profile can shorten them.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub limits: Limits,
    /// Accepted TCP connections open at once; one more is closed as soon as it is accepted, before anything is
    /// read from it. Connections this side dials (toward a binding's contact) are not counted.
    pub connections_max: usize,
    /// An accepted TCP connection that has not carried one complete SIP message this long after it was accepted is
    /// closed, so a connection that says nothing holds its place among `connections_max` only this long.
    pub first_message_timeout: Duration,
    /// A TCP connection that carries no byte for this long is closed; registered clients send keep-alives well
    /// within it.
    pub idle_timeout: Duration,
    /// Receive tasks per UDP socket: one per core keeps both cores busy under a SIPp load.
    pub udp_workers: usize,
    /// How long a UDP server transaction remembers its response (Timer J).
    pub transaction_lifetime: Duration,
    /// Most UDP transactions remembered at once.
    pub transactions_max: usize,
    /// Messages queued for one TCP connection's writer before the reader waits.
    pub write_queue_len: usize,
    /// First UDP retransmission interval of a request we send (T1); it doubles up to 4 s (T2).
    pub retransmit_first: Duration,
    /// What the transport run with this configuration holds now; every clone of the configuration shares it.
    pub counts: TransportCounts,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            connections_max: 10_000,
            first_message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(900),
            udp_workers: 2,
            transaction_lifetime: Duration::from_secs(32),
            transactions_max: 200_000,
            write_queue_len: 1024,
            retransmit_first: Duration::from_millis(500),
            counts: TransportCounts::default(),
        }
    }
}

/// What a running transport holds now, for `/status` and tests. Cheap to clone: clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct TransportCounts {
    connections: Slots,
}

impl TransportCounts {
    /// Accepted TCP connections open now (at most [`TransportConfig::connections_max`]).
    pub fn connections(&self) -> usize {
        self.connections.taken()
    }
}

/// The sockets a server serves on.
pub struct Listeners {
    pub tcp: Vec<TcpListener>,
    pub udp: Vec<UdpSocket>,
}

impl Listeners {
    /// Binds TCP and UDP on the same address; with port 0, UDP takes the port TCP got.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        // A port free for TCP may be taken for UDP: try a few fresh ports, a bounded number of times.
        let mut last_error = None;
        for _ in 0..16 {
            let tcp = TcpListener::bind(addr).await?;
            let local = tcp.local_addr()?;
            match UdpSocket::bind(local).await {
                Ok(udp) => {
                    return Ok(Self {
                        tcp: vec![tcp],
                        udp: vec![udp],
                    })
                }
                Err(e) if addr.port() == 0 => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| std::io::Error::other("no port free for both TCP and UDP")))
    }

    /// The address of the first listener (TCP and UDP share it when made by [`Listeners::bind`]).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match (self.tcp.first(), self.udp.first()) {
            (Some(tcp), _) => tcp.local_addr(),
            (None, Some(udp)) => udp.local_addr(),
            (None, None) => Err(std::io::Error::other("no listener")),
        }
    }
}

/// The client a request came from, and the way to send it requests of our own.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

struct PeerInner {
    flow: Flow,
    /// Opens TCP connections toward a binding's contact when its own flow is gone.
    dialer: Weak<Dialer>,
    local: SocketAddr,
    sink: Sink,
    pending: Arc<Pending>,
    retransmit_first: Duration,
}

enum Sink {
    Tcp(mpsc::Sender<Bytes>),
    Udp(Arc<UdpSocket>),
}

/// Requests we sent that await a final response, by the branch of our Via.
#[derive(Default)]
struct Pending(Mutex<HashMap<String, oneshot::Sender<Response>>>);

impl Pending {
    fn insert(&self, branch: String, tx: oneshot::Sender<Response>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(branch, tx);
    }

    /// Fails every waiting request (their receivers see the sender dropped): the connection is gone.
    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn remove(&self, branch: &str) -> Option<oneshot::Sender<Response>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(branch)
    }

    /// Routes a response to the request that awaits it; provisional responses are dropped (the waiter wants the
    /// final one) and strays are ignored.
    fn deliver(&self, response: Response) {
        if response.status_code.code() < 200 {
            return;
        }
        if let Some(branch) = message::top_branch(&response.headers) {
            if let Some(tx) = self.remove(&branch) {
                let _ = tx.send(response);
            }
        }
    }
}

/// Removes a pending entry however the waiting request ends, so a timed-out request leaves nothing behind.
struct PendingGuard<'a> {
    pending: &'a Pending,
    branch: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(&self.branch);
    }
}

/// Opens outgoing TCP connections, served by the same handler as accepted ones, and reuses one per address.
pub struct Dialer {
    open: Mutex<HashMap<SocketAddr, Peer>>,
    /// Starts serving a connected stream and hands back its peer.
    serve: Box<dyn Fn(TcpStream, SocketAddr) -> oneshot::Receiver<Peer> + Send + Sync>,
    connect_timeout: Duration,
}

impl Dialer {
    async fn dial(&self, addr: SocketAddr) -> Option<Peer> {
        let known = self.lock().get(&addr).filter(|p| p.is_open()).cloned();
        if known.is_some() {
            return known;
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let _ = stream.set_nodelay(true);
        let peer = (self.serve)(stream, addr).await.ok()?;
        let mut open = self.lock();
        // Closed connections leave the map here, so it holds at most the live ones plus this one.
        open.retain(|_, p| p.is_open());
        open.insert(addr, peer.clone());
        Some(peer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Peer>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Peer {
    /// A peer for a binding's contact URI on this peer's transport: over UDP our same socket toward the contact's
    /// address; over TCP an open connection to it (reused, or dialled). `None` when the contact has no IP address
    /// or cannot be reached.
    pub async fn toward(&self, contact_uri: &str) -> Option<Peer> {
        let host_port = message::host_port_of(contact_uri);
        let addr: SocketAddr = host_port
            .parse()
            .ok()
            .or_else(|| format!("{host_port}:5060").parse().ok())?;
        match &self.inner.sink {
            Sink::Udp(socket) => Some(Peer {
                inner: Arc::new(PeerInner {
                    flow: Flow {
                        remote: addr,
                        ..self.inner.flow
                    },
                    dialer: self.inner.dialer.clone(),
                    local: self.inner.local,
                    sink: Sink::Udp(socket.clone()),
                    pending: self.inner.pending.clone(),
                    retransmit_first: self.inner.retransmit_first,
                }),
            }),
            Sink::Tcp(_) => self.inner.dialer.upgrade()?.dial(addr).await,
        }
    }

    pub fn flow(&self) -> Flow {
        self.inner.flow
    }

    pub fn remote(&self) -> SocketAddr {
        self.inner.flow.remote
    }

    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn transport(&self) -> Transport {
        self.inner.flow.transport
    }

    /// False once a TCP connection has closed; a UDP peer is always reachable as far as we can know.
    pub fn is_open(&self) -> bool {
        match &self.inner.sink {
            Sink::Tcp(tx) => !tx.is_closed(),
            Sink::Udp(_) => true,
        }
    }

    /// Sends bytes as they are (a keep-alive answer, a pre-encoded message).
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), RequestError> {
        let closed = RequestError::Closed {
            peer: self.remote(),
        };
        match &self.inner.sink {
            Sink::Tcp(tx) => tx.send(bytes).await.map_err(|_| closed),
            Sink::Udp(socket) => socket
                .send_to(&bytes, self.remote())
                .await
                .map(drop)
                .map_err(|_| closed),
        }
    }

    /// Sends `request` to this peer with our own Via on top and waits up to `timeout` for its final response;
    /// over UDP the request is retransmitted (T1 doubling to T2) until answered.
    pub async fn request(
        &self,
        mut request: Request,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let branch = format!("z9hG4bK{}", message::token());
        let rport = if self.transport() == Transport::Udp {
            ";rport"
        } else {
            ""
        };
        let via = format!(
            "SIP/2.0/{} {};branch={branch}{rport}",
            self.transport(),
            self.local()
        );
        let mut headers = vec![Header::Other("Via".into(), via)];
        headers.extend(request.headers);
        request.headers = headers.into();
        let bytes = message::encode(request);

        let (tx, mut rx) = oneshot::channel();
        self.inner.pending.insert(branch.clone(), tx);
        let _guard = PendingGuard {
            pending: &self.inner.pending,
            branch,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = RequestError::Timeout {
            peer: self.remote(),
        };
        match &self.inner.sink {
            Sink::Tcp(_) => {
                self.send_raw(bytes).await?;
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(_)) => Err(RequestError::Closed {
                        peer: self.remote(),
                    }),
                    Err(_) => Err(timed_out),
                }
            }
            Sink::Udp(_) => {
                let mut interval = self.inner.retransmit_first;
                // Bounded by the deadline: each turn sleeps at least T1.
                loop {
                    self.send_raw(bytes.clone()).await?;
                    let wake = (tokio::time::Instant::now() + interval).min(deadline);
                    tokio::select! {
                        answer = &mut rx => {
                            return answer.map_err(|_| RequestError::Closed { peer: self.remote() });
                        }
                        _ = tokio::time::sleep_until(wake) => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(timed_out);
                    }
                    interval = (interval * 2).min(Duration::from_secs(4));
                }
            }
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({} {})", self.transport(), self.remote())
    }
}

/// Serves `listeners` with `handler` until `shutdown` completes, then closes every connection and returns.
pub async fn run<H: Handler>(
    listeners: Listeners,
    handler: Arc<H>,
    config: TransportConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = Arc::new(config);
    let links = Arc::new(AtomicU64::new(1));
    let dialer = Arc::new_cyclic(|weak: &Weak<Dialer>| {
        let (weak, handler, config, links, stop) = (
            weak.clone(),
            handler.clone(),
            config.clone(),
            links.clone(),
            stop_rx.clone(),
        );
        Dialer {
            open: Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(5),
            serve: Box::new(move |stream, remote| {
                let (ready_tx, ready_rx) = oneshot::channel();
                let local = stream.local_addr().unwrap_or(remote);
                let flow = Flow {
                    transport: Transport::Tcp,
                    remote,
                    link: links.fetch_add(1, Ordering::Relaxed),
                };
                tokio::spawn(connection(
                    stream,
                    flow,
                    local,
                    handler.clone(),
                    config.clone(),
                    stop.clone(),
                    weak.clone(),
                    Opened::Dialled(ready_tx),
                ));
                ready_rx
            }),
        }
    });
    let mut tasks = JoinSet::new();
    for listener in listeners.tcp {
        let local = listener.local_addr().map_err(TransportError::LocalAddr)?;
        tasks.spawn(accept_loop(
            listener,
            local,
            handler.clone(),
            config.clone(),
            links.clone(),
            stop_rx.clone(),
            Arc::downgrade(&dialer),
        ));
    }
    for socket in listeners.udp {
        let local = socket.local_addr().map_err(TransportError::LocalAddr)?;
        enlarge_receive_buffer(&socket, UDP_RECEIVE_BUFFER);
        let socket = Arc::new(socket);
        let shared = Arc::new(UdpShared {
            socket,
            local,
            link: links.fetch_add(1, Ordering::Relaxed),
            pending: Arc::new(Pending::default()),
            transactions: TransactionCache::new(
                config.transaction_lifetime,
                config.transactions_max,
            ),
        });
        for _ in 0..config.udp_workers.max(1) {
            tasks.spawn(udp_loop(
                shared.clone(),
                handler.clone(),
                config.clone(),
                stop_rx.clone(),
                Arc::downgrade(&dialer),
            ));
        }
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    // Every task watches the stop signal; wait for them so the ports are free when `run` returns.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    local: SocketAddr,
    handler: Arc<H>,
    config: Arc<TransportConfig>,
    links: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    dialer: Weak<Dialer>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let Some(slot) = config.counts.connections.take(config.connections_max) else {
                    // At the cap: closed unread. The client sees the connection end, as from a server that is full.
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let link = links.fetch_add(1, Ordering::Relaxed);
                let flow = Flow { transport: Transport::Tcp, remote, link };
                connections.spawn(connection(stream, flow, local, handler.clone(), config.clone(), stop.clone(), dialer.clone(), Opened::Accepted(slot)));
            }
            _ = stop.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// How a TCP connection came to be.
enum Opened {
    /// Accepted on a listener: it holds a place among the accepted connections and must send a message soon.
    Accepted(Slot),
    /// Dialled by this side: whoever dialled awaits its peer.
    Dialled(oneshot::Sender<Peer>),
}

/// One TCP connection: a reader that frames and handles messages in order, and a writer that drains the queue of
/// outgoing messages in batches. Both end together.
#[expect(
    clippy::too_many_arguments,
    reason = "one call for accepted and one for dialled connections; a struct would only rename them"
)]
async fn connection<H: Handler>(
    stream: TcpStream,
    flow: Flow,
    local: SocketAddr,
    handler: Arc<H>,
    config: Arc<TransportConfig>,
    mut stop: watch::Receiver<bool>,
    dialer: Weak<Dialer>,
    opened: Opened,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(config.write_queue_len);
    let peer = Peer {
        inner: Arc::new(PeerInner {
            flow,
            local,
            dialer,
            sink: Sink::Tcp(tx.clone()),
            pending: Arc::new(Pending::default()),
            retransmit_first: config.retransmit_first,
        }),
    };
    // An accepted connection must say something within the first-message timeout; its slot goes with it.
    let (mut first_message_by, _slot) = match opened {
        Opened::Accepted(slot) => (
            Some(tokio::time::Instant::now() + config.first_message_timeout),
            Some(slot),
        ),
        Opened::Dialled(ready) => {
            let _ = ready.send(peer.clone());
            (None, None)
        }
    };
    // Dropped when the reader ends: the writer then sends what is queued and drops its receiver, which is how
    // every `Peer` clone (held by registrations) learns the connection is gone.
    let (closing_tx, mut closing_rx) = oneshot::channel::<()>();
    let writer_task = tokio::spawn(async move {
        let mut batch = BytesMut::new();
        let mut closing = false;
        while !closing {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(first) => batch.extend_from_slice(&first),
                    None => closing = true,
                },
                _ = &mut closing_rx => closing = true,
            }
            // Pipelined answers leave together: fewer syscalls under load. Bounded by the batch size.
            while batch.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(next) => batch.extend_from_slice(&next),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() && writer.write_all(&batch).await.is_err() {
                return;
            }
            batch.clear();
        }
        let _ = writer.shutdown().await;
    });
    let read = async {
        let framer = Framer::new(config.limits);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        loop {
            let idle_by = tokio::time::Instant::now() + config.idle_timeout;
            let read_by = first_message_by.map_or(idle_by, |first| first.min(idle_by));
            let read = tokio::time::timeout_at(read_by, reader.read_buf(&mut buf)).await;
            let eof = match read {
                Ok(Ok(0)) => true,
                Ok(Ok(_)) => false,
                Ok(Err(_)) | Err(_) => return,
            };
            // Bounded: every successful decode consumes bytes from `buf`.
            loop {
                match framer.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(Frame::Ping)) => {
                        if tx.send(Bytes::from_static(b"\r\n")).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(Frame::Pong)) => {}
                    Ok(Some(Frame::Message(bytes))) => {
                        first_message_by = None;
                        dispatch(&bytes, &peer, &*handler, &tx).await;
                    }
                    Err(error) => {
                        reject(&error, &tx).await;
                        if error.close {
                            return;
                        }
                    }
                }
            }
            if eof {
                if let Some(error) = framer.decode_eof(&mut buf) {
                    reject(&error, &tx).await;
                }
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = stop.changed() => {}
    }
    drop(closing_tx);
    // The writer sends what is queued, bounded by the queue's length; a peer that does not read gets cut off.
    let abort = writer_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), writer_task)
        .await
        .is_err()
    {
        abort.abort();
    }
    // The writer's receiver is gone, so any later send fails at once; requests already waiting fail now rather
    // than at their timeout (an IM to a client that just disconnected gets its 480 without delay).
    peer.inner.pending.clear();
}

/// Works a reply out to the response it sends and the follow-up that comes after it on the wire (`None`: no
/// answer).
async fn response_of(mut reply: Reply) -> Option<(Response, Option<BoxFuture<()>>)> {
    loop {
        match reply {
            Reply::Later(next) => reply = next.await,
            Reply::Deferred(future) => return Some((future.await, None)),
            Reply::Response(response) => return Some((response, None)),
            Reply::ResponseThen(response, then) => return Some((response, Some(then))),
            Reply::Nothing => return None,
        }
    }
}

async fn reject(error: &FrameError, tx: &mpsc::Sender<Bytes>) {
    if let Some(section) = &error.header_section {
        if let Some(reply) = message::error_response_raw(section, error.status, error.reason) {
            let _ = tx.send(reply).await;
        }
    }
}

/// Parses one framed TCP message and answers it through the connection's writer.
async fn dispatch<H: Handler>(bytes: &[u8], peer: &Peer, handler: &H, tx: &mpsc::Sender<Bytes>) {
    let request = match message::parse(bytes) {
        Ok(SipMessage::Response(response)) => return peer.inner.pending.deliver(response),
        Ok(SipMessage::Request(request)) => request,
        Err(rejection) => {
            if let Some(reply) =
                message::error_response_raw(bytes, rejection.status, rejection.reason)
            {
                let _ = tx.send(reply).await;
            }
            return;
        }
    };
    match handler.handle(request, peer.clone()).await {
        Reply::Response(response) => {
            let _ = tx.send(message::encode(response)).await;
        }
        Reply::ResponseThen(response, then) => {
            let _ = tx.send(message::encode(response)).await;
            tokio::spawn(then);
        }
        reply @ (Reply::Deferred(_) | Reply::Later(_)) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some((response, then)) = response_of(reply).await {
                    let _ = tx.send(message::encode(response)).await;
                    if let Some(then) = then {
                        tokio::spawn(then);
                    }
                }
            });
        }
        Reply::Nothing => {}
    }
}

/// The receive buffer asked for on each UDP socket (the kernel caps it at `net.core.rmem_max`, 4 MiB on most
/// distributions). The default, about 200 KB, holds only a few hundred datagrams: a SIPp burst of 200 MESSAGEs plus
/// their recipients' 200s overflowed it while our receive tasks waited for a core, and a recipient's 200 dropped
/// there is lost for good when its client does not answer retransmissions. Kamailio enlarges its buffers the same
/// way.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Sets SO_RCVBUF on `socket`, best effort (a refusal leaves the default).
fn enlarge_receive_buffer(socket: &UdpSocket, bytes: usize) {
    // Best effort: the kernel caps it at net.core.rmem_max, and a smaller buffer only means drops under load.
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(bytes);
}

/// What the receive tasks of one UDP socket share.
struct UdpShared {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    link: u64,
    pending: Arc<Pending>,
    transactions: TransactionCache,
}

async fn udp_loop<H: Handler>(
    shared: Arc<UdpShared>,
    handler: Arc<H>,
    config: Arc<TransportConfig>,
    mut stop: watch::Receiver<bool>,
    dialer: Weak<Dialer>,
) {
    // One byte more than any datagram can carry: nothing is ever cut short silently.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, source) = tokio::select! {
            received = shared.socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP port unreachable from an earlier send surfaces here on Linux: not our socket's fault.
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let bytes = match decode_datagram(&buf[..len], &config.limits) {
            Ok(Frame::Ping) | Ok(Frame::Pong) => continue,
            Ok(Frame::Message(bytes)) => bytes,
            Err(error) => {
                if let Some(section) = &error.header_section {
                    if let Some(reply) =
                        message::error_response_raw(section, error.status, error.reason)
                    {
                        let _ = shared.socket.send_to(&reply, source).await;
                    }
                }
                continue;
            }
        };
        let peer = Peer {
            inner: Arc::new(PeerInner {
                flow: Flow {
                    transport: Transport::Udp,
                    remote: source,
                    link: shared.link,
                },
                dialer: dialer.clone(),
                local: shared.local,
                sink: Sink::Udp(shared.socket.clone()),
                pending: shared.pending.clone(),
                retransmit_first: config.retransmit_first,
            }),
        };
        udp_dispatch(&bytes, &peer, &shared, &*handler).await;
    }
}

async fn udp_dispatch<H: Handler>(
    bytes: &Bytes,
    peer: &Peer,
    shared: &Arc<UdpShared>,
    handler: &H,
) {
    let source = peer.remote();
    let request = match message::parse(bytes) {
        Ok(SipMessage::Response(response)) => return shared.pending.deliver(response),
        Ok(SipMessage::Request(request)) => request,
        Err(rejection) => {
            if let Some(reply) =
                message::error_response_raw(bytes, rejection.status, rejection.reason)
            {
                let _ = shared.socket.send_to(&reply, source).await;
            }
            return;
        }
    };
    let key = (request.method != rsip::Method::Ack).then(|| TransactionKey {
        source,
        branch: message::top_branch(&request.headers).unwrap_or_else(|| {
            // RFC 2543 clients have no branch: Call-ID and CSeq name the transaction instead.
            format!(
                "{}/{}",
                message::header(&request.headers, "Call-ID").unwrap_or_default(),
                message::header(&request.headers, "CSeq").unwrap_or_default()
            )
        }),
        method: request.method.to_string(),
    });
    if let Some(key) = &key {
        match shared.transactions.arrive(key, Instant::now()) {
            Arrival::New => {}
            Arrival::InProgress => return,
            Arrival::Answered(response) => {
                let _ = shared.socket.send_to(&response, source).await;
                return;
            }
        }
    }
    let send = move |shared: Arc<UdpShared>, key: Option<TransactionKey>, response: Response| async move {
        let bytes = message::encode(response);
        if let Some(key) = &key {
            shared.transactions.answer(key, bytes.clone());
        }
        let _ = shared.socket.send_to(&bytes, source).await;
    };
    match handler.handle(request, peer.clone()).await {
        Reply::Response(response) => send(shared.clone(), key, response).await,
        Reply::ResponseThen(response, then) => {
            send(shared.clone(), key, response).await;
            tokio::spawn(then);
        }
        reply @ (Reply::Deferred(_) | Reply::Later(_)) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Some((response, then)) = response_of(reply).await {
                    send(shared, key, response).await;
                    if let Some(then) = then {
                        tokio::spawn(then);
                    }
                }
            });
        }
        Reply::Nothing => {}
    }
}
