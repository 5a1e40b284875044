//! The data plane of a UDP proxy: one listening socket, and one *flow* per client source address,
//! each with its own socket connected to the upstream, so the server tells clients apart and its
//! answers find their client. A flow is UDP's connection: it counts in the proxy's ordinals, keys
//! the toxics' random streams, and ends after `FLOW_IDLE` without a datagram either way.
//!
//! The listener task receives every client datagram. With no toxic acting upstream it sends the
//! datagrams on the flow's socket at once, in batches (`batch`) without copying them; otherwise it
//! hands copies to the flow's task. Each flow's task receives the server's datagrams (sending them
//! straight back in batches when no toxic acts downstream), plans datagrams through the toxics
//! (`datagram`), sends SIP replies back to the sender, and sends the planned copies when due from
//! one queue ordered by time. Messages a removed `sip_hold` kept are sent at once.
//!
//! A listening period ends when its stop sender is dropped, as for TCP: the listener stops, every
//! flow ends, and the period's task finishes once all of them are gone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::batch::{self, Batch};
use crate::datagram::Planned;
use crate::model::{Stream, Toxic};
use crate::proxy::ProxyShared;
use crate::toxic::{DirectionKey, DirectionToxics};

/// A flow with no datagram in either direction for this long ends (its upstream socket closes).
pub const FLOW_IDLE: Duration = Duration::from_secs(60);
/// Datagrams the listener may queue for a flow whose upstream toxics are busy; more are dropped.
const INBOX_DATAGRAMS: usize = 4096;
/// Flows are swept from the table once it grows past this (and past twice its live size).
const SWEEP_FLOWS: usize = 256;

/// What the listener knows of a flow.
struct Flow {
    /// Connected to the upstream.
    socket: Arc<UdpSocket>,
    /// Client datagrams for the flow's task while a toxic acts upstream.
    inbox: mpsc::Sender<(Bytes, Instant)>,
    /// No toxic acts upstream: the listener sends directly. Set by the flow's task.
    upstream_idle: AtomicBool,
    /// The flow's task has ended; a new datagram from the client opens a new flow.
    closed: AtomicBool,
    /// Client datagrams so far: the flow's task reads it to tell an idle flow.
    from_client: AtomicU64,
}

/// Receives until `stop` closes, then ends every flow and returns when all are gone.
pub async fn listen(
    socket: std::net::UdpSocket,
    upstream: Arc<str>,
    shared: Arc<ProxyShared>,
    mut stop: watch::Receiver<()>,
) {
    let listener = match UdpSocket::from_std(socket) {
        Ok(listener) => Arc::new(listener),
        Err(err) => {
            tracing::error!(proxy = %shared.name, %err, "failed to register the UDP socket");
            return;
        }
    };
    // Each flow's task holds a sender; when all are dropped, `recv` returns None: all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let flow_stop = stop.clone();
    // One long-lived future: a wake-up carries on with every datagram ready, and the stop branch
    // costs nothing per datagram.
    let receive = async {
        let mut flows: HashMap<SocketAddr, Arc<Flow>> = HashMap::new();
        let mut batch = Batch::new();
        loop {
            if let Err(err) = batch.receive_from(&listener).await {
                tracing::debug!(proxy = %shared.name, %err, "receive failed");
                continue;
            }
            // Runs of datagrams from one client go to its flow together.
            let count = batch.datagrams.len();
            let mut first = 0;
            while first < count {
                let client = batch.datagrams[first].1;
                let end = (first + 1..count)
                    .find(|i| batch.datagrams[*i].1 != client)
                    .unwrap_or(count);
                let run = first..end;
                first = end;
                let flow = match flows.get(&client) {
                    Some(flow) if !flow.closed.load(Ordering::Acquire) => flow,
                    _ => {
                        let opened = open(
                            client,
                            &upstream,
                            &listener,
                            &shared,
                            &flow_stop,
                            alive_tx.clone(),
                        )
                        .await;
                        let Some(flow) = opened else { continue };
                        if flows.len() >= SWEEP_FLOWS {
                            flows.retain(|_, flow| !flow.closed.load(Ordering::Acquire));
                        }
                        flows.insert(client, flow);
                        &flows[&client]
                    }
                };
                flow.from_client
                    .fetch_add(run.len() as u64, Ordering::Relaxed);
                let payloads = batch.payloads(run);
                if flow.upstream_idle.load(Ordering::Acquire) {
                    batch::send_all(&flow.socket, None, &payloads).await;
                } else {
                    let arrived = Instant::now();
                    for payload in payloads {
                        let _ = flow
                            .inbox
                            .try_send((Bytes::copy_from_slice(payload), arrived));
                    }
                }
            }
        }
    };
    tokio::select! {
        biased;
        _ = stop.changed() => {}
        () = receive => {}
    }
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

/// Opens a flow for `client`: its upstream socket and its task.
async fn open(
    client: SocketAddr,
    upstream: &str,
    listener: &Arc<UdpSocket>,
    shared: &Arc<ProxyShared>,
    stop: &watch::Receiver<()>,
    alive: mpsc::Sender<()>,
) -> Option<Arc<Flow>> {
    let opened = async {
        let server = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("upstream resolves to nothing"))?;
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        std::io::Result::Ok(socket)
    }
    .await;
    let socket = match opened {
        Ok(socket) => Arc::new(socket),
        Err(err) => {
            tracing::debug!(proxy = %shared.name, %upstream, %err, "upstream socket failed");
            return None;
        }
    };
    let ordinal = shared.next_ordinal.fetch_add(1, Ordering::Relaxed);
    // The toxics are taken here, before the first datagram goes anywhere, so whether the listener
    // may send directly is known from the first datagram on.
    let direction = |stream| {
        DirectionToxics::new(DirectionKey {
            seed: shared.seed,
            proxy: shared.name.clone(),
            connection_ordinal: ordinal,
            stream,
        })
    };
    let (mut up, mut down) = (direction(Stream::Upstream), direction(Stream::Downstream));
    let mut toxics_rx = shared.toxics.subscribe();
    let list = toxics_rx.borrow_and_update().clone();
    let now = Instant::now();
    up.sync(&list, now);
    down.sync(&list, now);
    let (inbox, inbox_rx) = mpsc::channel(INBOX_DATAGRAMS);
    let flow = Arc::new(Flow {
        socket,
        inbox,
        upstream_idle: AtomicBool::new(up.is_idle()),
        closed: AtomicBool::new(false),
        from_client: AtomicU64::new(0),
    });
    tracing::debug!(proxy = %shared.name, %client, ordinal, "flow opened");
    let task = FlowTask {
        flow: flow.clone(),
        listener: listener.clone(),
        client,
        up,
        down,
        queue: BinaryHeap::new(),
        sequence: 0,
    };
    let ending = FlowEnding {
        name: shared.name.clone(),
        ordinal,
        stop: stop.clone(),
        alive,
    };
    tokio::spawn(task.run(inbox_rx, toxics_rx, ending));
    Some(flow)
}

/// How a flow's task learns it must end, and how its end is counted.
struct FlowEnding {
    name: String,
    ordinal: u64,
    stop: watch::Receiver<()>,
    /// Dropped when the task ends: the listening period waits for all of them.
    alive: mpsc::Sender<()>,
}

/// A datagram copy waiting for its time; ordered by time, then by planning order.
struct Scheduled {
    at: Instant,
    sequence: u64,
    stream: Stream,
    bytes: Bytes,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// A flow's own task: the server's datagrams, the toxics of both directions, the send queue.
struct FlowTask {
    flow: Arc<Flow>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    up: DirectionToxics,
    down: DirectionToxics,
    queue: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
}

impl FlowTask {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<(Bytes, Instant)>,
        mut toxics_rx: watch::Receiver<Arc<[Toxic]>>,
        ending: FlowEnding,
    ) {
        let FlowEnding {
            name,
            ordinal,
            mut stop,
            alive,
        } = ending;
        let socket = self.flow.socket.clone();
        let mut batch = Batch::new();
        // Written only by this task; atomic so the relay future may borrow it across awaits.
        let from_server = AtomicU64::new(0);
        let mut seen = (0u64, 0u64);
        let idle = tokio::time::sleep(FLOW_IDLE);
        tokio::pin!(idle);
        loop {
            let event = if self.up.is_idle() && self.down.is_idle() && self.queue.is_empty() {
                // No toxic either way: the server's datagrams go straight back, many per wake-up.
                tokio::select! {
                    biased;
                    _ = stop.changed() => Event::Stop,
                    changed = toxics_rx.changed() => Event::Changed(changed.is_ok()),
                    _ = &mut idle => Event::IdleCheck,
                    Some(datagram) = inbox.recv() => Event::FromClient(datagram),
                    () = relay_downstream(&socket, &self.listener, self.client, &mut batch, &from_server) => Event::Stop,
                }
            } else {
                let due = self.queue.peek().map(|Reverse(next)| next.at);
                // A change of the toxics is taken before any datagram that is ready with it: the API answers once
                // the change is published, so a datagram sent after that answer never meets a removed toxic.
                tokio::select! {
                    biased;
                    _ = stop.changed() => Event::Stop,
                    changed = toxics_rx.changed() => Event::Changed(changed.is_ok()),
                    received = socket.recv(&mut batch.buffer) => Event::FromServer(received),
                    Some(datagram) = inbox.recv() => Event::FromClient(datagram),
                    _ = sleep_until_opt(due) => Event::Due,
                    _ = &mut idle => Event::IdleCheck,
                }
            };
            match event {
                Event::Stop | Event::Changed(false) => break,
                Event::Changed(true) => {
                    let list = toxics_rx.borrow_and_update().clone();
                    let now = Instant::now();
                    self.up.sync(&list, now);
                    self.down.sync(&list, now);
                    for bytes in self.up.take_released() {
                        self.send(Stream::Upstream, &bytes).await;
                    }
                    for bytes in self.down.take_released() {
                        self.send(Stream::Downstream, &bytes).await;
                    }
                    self.flow
                        .upstream_idle
                        .store(self.up.is_idle(), Ordering::Release);
                }
                // An error is an ICMP report of an earlier send (upstream not listening).
                Event::FromServer(Err(_)) => {}
                Event::FromServer(Ok(len)) => {
                    from_server.fetch_add(1, Ordering::Relaxed);
                    if self.down.is_idle() && self.queue.is_empty() {
                        let _ = self
                            .listener
                            .send_to(&batch.buffer[..len], self.client)
                            .await;
                    } else {
                        let bytes = Bytes::copy_from_slice(&batch.buffer[..len]);
                        let planned = self.down.plan_datagram(bytes, Instant::now());
                        self.carry(Stream::Downstream, planned).await;
                    }
                }
                Event::FromClient((bytes, arrived)) => {
                    if self.up.is_idle() && self.queue.is_empty() {
                        self.send(Stream::Upstream, &bytes).await;
                    } else {
                        let planned = self.up.plan_datagram(bytes, arrived);
                        self.carry(Stream::Upstream, planned).await;
                    }
                }
                Event::Due => self.send_due().await,
                Event::IdleCheck => {
                    let now_seen = (
                        self.flow.from_client.load(Ordering::Relaxed),
                        from_server.load(Ordering::Relaxed),
                    );
                    if now_seen == seen && self.queue.is_empty() {
                        tracing::debug!(proxy = %name, ordinal, "flow idle, closed");
                        break;
                    }
                    seen = now_seen;
                    idle.as_mut().reset(Instant::now() + FLOW_IDLE);
                }
            }
        }
        self.flow.closed.store(true, Ordering::Release);
        drop(alive);
    }

    /// Sends one datagram on: upstream to the server, downstream to the client.
    async fn send(&self, stream: Stream, bytes: &[u8]) {
        let _ = match stream {
            Stream::Upstream => self.flow.socket.send(bytes).await,
            Stream::Downstream => self.listener.send_to(bytes, self.client).await,
        };
    }

    /// Queues a plan's copies, sends the reply back to the sender, and sends what is due.
    async fn carry(&mut self, stream: Stream, planned: Planned) {
        if let Some(reply) = planned.reply {
            let back = match stream {
                Stream::Upstream => Stream::Downstream,
                Stream::Downstream => Stream::Upstream,
            };
            self.send(back, &reply).await;
        }
        for (at, bytes) in planned.sends {
            self.sequence += 1;
            self.queue.push(Reverse(Scheduled {
                at,
                sequence: self.sequence,
                stream,
                bytes,
            }));
        }
        self.send_due().await;
    }

    async fn send_due(&mut self) {
        let now = Instant::now();
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(next)| next.at <= now)
        {
            let Reverse(next) = self.queue.pop().expect("peeked");
            self.send(next.stream, &next.bytes).await;
        }
    }
}

/// What woke a flow's task.
enum Event {
    Stop,
    /// The toxic list changed (true), or its sender is gone (false).
    Changed(bool),
    FromServer(std::io::Result<usize>),
    FromClient((Bytes, Instant)),
    /// A queued copy is due.
    Due,
    IdleCheck,
}

/// Sends every server datagram straight to the client, in batches; never returns.
async fn relay_downstream(
    socket: &UdpSocket,
    listener: &UdpSocket,
    client: SocketAddr,
    batch: &mut Batch,
    from_server: &AtomicU64,
) {
    loop {
        // An error is an ICMP report of an earlier send (upstream not listening).
        if batch.receive_from(socket).await.is_ok() {
            let count = batch.datagrams.len();
            from_server.fetch_add(count as u64, Ordering::Relaxed);
            batch::send_all(listener, Some(client), &batch.payloads(0..count)).await;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
