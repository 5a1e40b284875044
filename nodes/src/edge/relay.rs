//! The relay of one remote client's TCP connection: one upstream TCP connection inside the networks at a time,
//! and every message passed between the two with the Edge's Via added or removed.
//!
//! Binding the client to one upstream connection keeps the relay simple: requests the pool sends the client
//! (IMs, NOTIFYs, INVITEs) arrive on the upstream connection the client registered over, and have exactly one
//! place to go; no Record-Route is needed. When either side closes, both close, so a client sees its Edge server
//! or its upstream die as a broken connection and signs in again (through another Edge server of the pool name).
//!
//! The one piece of transaction state: for each request sent down, the Via stack the pool put on it
//! ([`SentDown`]). The client's answer goes back up with that stack, not with the Vias the client echoed, so the
//! pool matches the answer to its request even when a client returns only the first Via line (the Edge's own)
//! or alters the Vias below it. Without this, the Front End never hears the recipient's 200 and tells the
//! sender of a delivered IM `408`/`480`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsip::{Header, Headers, Method, Request, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::node::Edge;
use crate::cluster::SIP_PORT;
use crate::sip::codec::{Frame, FrameError, Framer};
use crate::sip::message::{
    self, header, headers_all, host_port_of, name, split_list, uri_in, value,
};

/// Every Via the Edge adds has a branch starting so; a response is passed on only when its top Via is one.
pub const BRANCH_PREFIX: &str = "z9hG4bKedge";

/// Messages queued toward one side before the relay waits.
const QUEUE_LEN: usize = 256;

/// How long the Via stack of a request sent down is kept for the client's answers: 64 × T1, the life of a
/// non-INVITE client transaction (Timer F), also long enough for an INVITE's 2xx retransmissions.
const SENT_DOWN_KEPT: Duration = Duration::from_secs(32);

/// Requests sent down one connection whose answers are awaited at most; beyond, the oldest is forgotten (its
/// answer then goes up with the Vias the client echoed, as a stateless relay would pass it).
const SENT_DOWN_MAX: usize = 1024;

/// The Via stacks of the requests sent down one client's connection, by the branch of the Edge's Via on each.
#[derive(Default)]
struct SentDown(Mutex<HashMap<String, Stack>>);

/// The Vias the pool put on one request sent down (below the Edge's own), and when it went.
struct Stack {
    sent: Instant,
    vias: Vec<String>,
    /// An INVITE's 2xx may be retransmitted: its stack stays after a final answer.
    invite: bool,
}

impl SentDown {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stack>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `request`'s Vias (before the Edge's own goes on top with `branch`).
    fn remember(&self, branch: String, request: &Request) {
        let now = Instant::now();
        let mut sent = self.lock();
        if sent.len() >= SENT_DOWN_MAX {
            sent.retain(|_, s| now.duration_since(s.sent) < SENT_DOWN_KEPT);
        }
        if sent.len() >= SENT_DOWN_MAX {
            if let Some(oldest) = sent
                .iter()
                .min_by_key(|(_, s)| s.sent)
                .map(|(b, _)| b.clone())
            {
                sent.remove(&oldest);
            }
        }
        sent.insert(
            branch,
            Stack {
                sent: now,
                vias: headers_all(&request.headers, "Via"),
                invite: request.method == Method::Invite,
            },
        );
    }

    /// Readies the client's answer to go up: false (nothing changed) unless the Edge's Via is on top. Then every
    /// Via is replaced by the stack the pool sent, or, for a request no longer remembered, the Edge's Via removed.
    fn answer_up(&self, response: &mut rsip::Response) -> bool {
        let Some(branch) = message::top_branch(&response.headers) else {
            return false;
        };
        if !branch.starts_with(BRANCH_PREFIX) {
            return false;
        }
        let final_answer = response.status_code.code() >= 200;
        let vias = {
            let mut sent = self.lock();
            match sent.get(&branch) {
                Some(s) if s.sent.elapsed() >= SENT_DOWN_KEPT => {
                    sent.remove(&branch);
                    None
                }
                Some(s) if final_answer && !s.invite => sent.remove(&branch).map(|s| s.vias),
                Some(s) => Some(s.vias.clone()),
                None => None,
            }
        };
        match vias {
            Some(vias) => replace_vias(&mut response.headers, vias),
            None => pop_first_value(&mut response.headers, "Via"),
        }
        true
    }
}

/// The connection toward the pool for one client.
struct Upstream {
    /// The pool it reaches (a Director or Front End pool).
    pool: String,
    tx: mpsc::Sender<Bytes>,
    local: SocketAddr,
    generation: u64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Relays one accepted client connection until either side closes or `stop` fires.
pub async fn client_connection(
    stream: TcpStream,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(client_local) = stream.local_addr() else {
        return;
    };
    let (mut reader, writer) = stream.into_split();
    let (client_tx, client_rx) = mpsc::channel::<Bytes>(QUEUE_LEN);
    let client_writer = tokio::spawn(write_all(writer, client_rx));
    let (ended_tx, mut ended_rx) = mpsc::channel::<u64>(4);
    let mut relay = Relay {
        edge: edge.clone(),
        client: Client {
            tx: client_tx.clone(),
            local: client_local,
            sent_down: Arc::default(),
        },
        upstream: None,
        generations: 0,
        ended_tx,
    };
    let framer = Framer::new(edge.config.limits);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut keepalive = tokio::time::interval(edge.config.upstream_keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let first_message_by = tokio::time::Instant::now() + edge.config.first_message_timeout;
    // Bounded by the connection's life: each turn reads, or ends the relay.
    loop {
        let idle_by = tokio::time::Instant::now() + edge.config.idle_timeout;
        // Until a request of the client's has gone upstream, the first-message timeout applies too.
        let read_by = if relay.generations == 0 {
            first_message_by.min(idle_by)
        } else {
            idle_by
        };
        tokio::select! {
            read = tokio::time::timeout_at(read_by, reader.read_buf(&mut buf)) => {
                let eof = match read {
                    Ok(Ok(0)) => true,
                    Ok(Ok(_)) => false,
                    Ok(Err(_)) | Err(_) => break,
                };
                if !relay.drain_client(&framer, &mut buf).await {
                    break;
                }
                if eof {
                    if let Some(error) = framer.decode_eof(&mut buf) {
                        reply_error(&error, &client_tx).await;
                    }
                    break;
                }
            }
            ended = ended_rx.recv() => {
                // The current upstream closed: close the client too, so it signs in again.
                if ended.is_some_and(|g| relay.upstream.as_ref().is_some_and(|u| u.generation == g)) {
                    break;
                }
            }
            _ = keepalive.tick() => {
                // A blank-line ping keeps the upstream connection from idling out while the client is quiet.
                if let Some(up) = &relay.upstream {
                    let _ = up.tx.try_send(Bytes::from_static(b"\r\n\r\n"));
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(relay);
    drop(client_tx);
    // The writer sends what is queued and closes; a client that does not read is cut off.
    let abort = client_writer.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(2), client_writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// The client's side of a relayed connection, as the relay and its upstream readers use it.
#[derive(Clone)]
struct Client {
    /// Queues a message down the client's connection.
    tx: mpsc::Sender<Bytes>,
    /// The Edge's address on the client's connection, for the Via on requests sent down.
    local: SocketAddr,
    /// Filled by the upstream readers, read when the client answers.
    sent_down: Arc<SentDown>,
}

struct Relay {
    edge: Arc<Edge>,
    client: Client,
    upstream: Option<Upstream>,
    generations: u64,
    ended_tx: mpsc::Sender<u64>,
}

impl Relay {
    /// Handles every whole message in `buf`; false when the connection must close.
    async fn drain_client(&mut self, framer: &Framer, buf: &mut BytesMut) -> bool {
        // Bounded: every successful decode consumes bytes from `buf`.
        loop {
            match framer.decode(buf) {
                Ok(None) => return true,
                Ok(Some(Frame::Ping)) => {
                    if self
                        .client
                        .tx
                        .send(Bytes::from_static(b"\r\n"))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                Ok(Some(Frame::Pong)) => {}
                Ok(Some(Frame::Message(bytes))) => self.on_client_message(&bytes).await,
                Err(error) => {
                    reply_error(&error, &self.client.tx).await;
                    if error.close {
                        return false;
                    }
                }
            }
        }
    }

    async fn on_client_message(&mut self, bytes: &[u8]) {
        match message::parse(bytes) {
            Err(rejection) => {
                if let Some(reply) =
                    message::error_response_raw(bytes, rejection.status, rejection.reason)
                {
                    let _ = self.client.tx.send(reply).await;
                }
            }
            Ok(SipMessage::Response(mut response)) => {
                // The client's answer to a request the pool sent it: back up, with the pool's Vias.
                if self.client.sent_down.answer_up(&mut response) {
                    if let Some(up) = &self.upstream {
                        let _ = up.tx.send(message::encode(response)).await;
                    }
                }
            }
            Ok(SipMessage::Request(request)) => self.on_client_request(request).await,
        }
    }

    async fn on_client_request(&mut self, mut request: Request) {
        let is_ack = request.method == Method::Ack;
        match header(&request.headers, "Max-Forwards").map(|v| v.trim().parse::<u32>()) {
            Some(Ok(0)) if !is_ack => {
                return self.answer(&request, 483, "Too Many Hops").await;
            }
            Some(Err(_)) if !is_ack => {
                return self.answer(&request, 400, "Bad Max-Forwards").await;
            }
            Some(Ok(n)) => set_header(
                &mut request.headers,
                "Max-Forwards",
                (n.max(1) - 1).to_string(),
            ),
            _ => {}
        }
        let pool = self.target_pool(&mut request);
        if !self
            .upstream
            .as_ref()
            .is_some_and(|u| u.pool == pool && !u.tx.is_closed())
        {
            self.upstream = None;
            match self.connect(&pool).await {
                Some(up) => self.upstream = Some(up),
                None if is_ack => return,
                None => {
                    return self
                        .answer(&request, 503, "Service Unavailable (Next Hop Unreachable)")
                        .await
                }
            }
        }
        let Some(up) = &self.upstream else { return };
        push_via(
            &mut request.headers,
            format!(
                "SIP/2.0/TCP {};branch={BRANCH_PREFIX}{}",
                up.local,
                message::token()
            ),
        );
        self.edge.relayed();
        let _ = up.tx.send(message::encode(request)).await;
    }

    /// Where a client's request goes: the pool its top Route names (that Route entry is consumed), else the
    /// pool its Request-URI names (how a client follows a Director's redirect), else the pool this client is
    /// already relayed to, else the Edge pool's next hop (the Director pool).
    fn target_pool(&self, request: &mut Request) -> String {
        if let Some(route) = message::headers_all(&request.headers, "Route").first() {
            if let Some(pool) = self.edge.pool_named(host_port_of(uri_in(route))) {
                pop_first_value(&mut request.headers, "Route");
                return pool;
            }
        }
        let uri = request.uri.to_string();
        if let Some(pool) = self.edge.pool_named(host_port_of(&uri)) {
            return pool;
        }
        if let Some(up) = &self.upstream {
            return up.pool.clone();
        }
        self.edge.next_hop()
    }

    /// Opens a connection to one server of `pool`, trying each address of its name in turn.
    async fn connect(&mut self, pool: &str) -> Option<Upstream> {
        let config = &self.edge.config;
        let target = config.identity.address(pool, SIP_PORT);
        let (stream, _) = config
            .resolver
            .connect(&target, config.connect_timeout)
            .await?;
        let local = stream.local_addr().ok()?;
        let (reader, writer) = stream.into_split();
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_LEN);
        self.generations += 1;
        let generation = self.generations;
        let writer_task = tokio::spawn(write_all(writer, rx));
        let reader_task = tokio::spawn(upstream_reader(
            reader,
            Framer::new(config.limits),
            tx.clone(),
            self.client.clone(),
            self.ended_tx.clone(),
            generation,
        ));
        Some(Upstream {
            pool: pool.to_owned(),
            tx,
            local,
            generation,
            tasks: [writer_task, reader_task],
        })
    }

    async fn answer(&self, request: &Request, status: u16, reason: &str) {
        let response = message::response(request, status, reason);
        let _ = self.client.tx.send(message::encode(response)).await;
    }
}

/// Reads the upstream connection: responses go down without our Via, requests go down with one.
async fn upstream_reader(
    mut reader: OwnedReadHalf,
    framer: Framer,
    up_tx: mpsc::Sender<Bytes>,
    client: Client,
    ended: mpsc::Sender<u64>,
    generation: u64,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'read: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Bounded: every successful decode consumes bytes from `buf`.
        loop {
            let frame = match framer.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => frame,
                Err(error) => {
                    reply_error(&error, &up_tx).await;
                    if error.close {
                        break 'read;
                    }
                    continue;
                }
            };
            let bytes = match frame {
                Frame::Ping => {
                    let _ = up_tx.send(Bytes::from_static(b"\r\n")).await;
                    continue;
                }
                Frame::Pong => continue,
                Frame::Message(bytes) => bytes,
            };
            let down = match message::parse(&bytes) {
                Err(rejection) => {
                    if let Some(reply) =
                        message::error_response_raw(&bytes, rejection.status, rejection.reason)
                    {
                        let _ = up_tx.send(reply).await;
                    }
                    continue;
                }
                Ok(SipMessage::Response(mut response)) => {
                    if !pop_own_via(&mut response.headers) {
                        continue;
                    }
                    message::encode(response)
                }
                Ok(SipMessage::Request(mut request)) => {
                    let branch = format!("{BRANCH_PREFIX}{}", message::token());
                    // An ACK gets no answer: nothing to remember.
                    if request.method != Method::Ack {
                        client.sent_down.remember(branch.clone(), &request);
                    }
                    push_via(
                        &mut request.headers,
                        format!("SIP/2.0/TCP {};branch={branch}", client.local),
                    );
                    message::encode(request)
                }
            };
            if client.tx.send(down).await.is_err() {
                break 'read;
            }
        }
    }
    let _ = ended.send(generation).await;
}

/// Writes queued messages in order until every sender is gone, then closes the write side.
async fn write_all(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    // Bounded by the senders: ends when the last one is dropped.
    while let Some(bytes) = rx.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn reply_error(error: &FrameError, tx: &mpsc::Sender<Bytes>) {
    if let Some(section) = &error.header_section {
        if let Some(reply) = message::error_response_raw(section, error.status, error.reason) {
            let _ = tx.send(reply).await;
        }
    }
}

/// Puts a Via on top.
fn push_via(headers: &mut Headers, via: String) {
    let mut all = vec![Header::Other("Via".into(), via)];
    all.extend(headers.iter().cloned());
    *headers = all.into();
}

/// Replaces every Via with `vias`, one line each, on top.
fn replace_vias(headers: &mut Headers, vias: Vec<String>) {
    let mut all: Vec<Header> = vias
        .into_iter()
        .map(|v| Header::Other("Via".into(), v))
        .collect();
    all.extend(
        headers
            .iter()
            .filter(|h| !name(h).eq_ignore_ascii_case("Via"))
            .cloned(),
    );
    *headers = all.into();
}

/// Removes the top Via when it is one the Edge added; false (and nothing removed) otherwise.
fn pop_own_via(headers: &mut Headers) -> bool {
    let own = message::top_branch(headers).is_some_and(|b| b.starts_with(BRANCH_PREFIX));
    if own {
        pop_first_value(headers, "Via");
    }
    own
}

/// Removes the first value of the first `wanted` header (a list header may carry several per line).
fn pop_first_value(headers: &mut Headers, wanted: &str) {
    let mut done = false;
    let mut all = Vec::new();
    for h in headers.iter() {
        if !done && name(h).eq_ignore_ascii_case(wanted) {
            done = true;
            let rest = split_list(value(h));
            if rest.len() > 1 {
                all.push(Header::Other(wanted.into(), rest[1..].join(", ")));
            }
            continue;
        }
        all.push(h.clone());
    }
    *headers = all.into();
}

fn set_header(headers: &mut Headers, wanted: &str, new_value: String) {
    headers.retain(|h| !name(h).eq_ignore_ascii_case(wanted));
    headers.push(Header::Other(wanted.into(), new_value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_via_is_removed_and_foreign_via_kept() {
        let mut headers: Headers = vec![
            Header::Other(
                "Via".into(),
                format!("SIP/2.0/TCP 10.0.0.1:5060;branch={BRANCH_PREFIX}1, SIP/2.0/TCP c;branch=z9hG4bKc"),
            ),
            Header::Other("Call-ID".into(), "x".into()),
        ]
        .into();
        assert!(pop_own_via(&mut headers));
        assert_eq!(
            message::header(&headers, "Via"),
            Some("SIP/2.0/TCP c;branch=z9hG4bKc")
        );
        assert!(!pop_own_via(&mut headers), "the client's own Via stays");
        assert_eq!(message::headers_all(&headers, "Via").len(), 1);
    }

    fn parsed(text: &str) -> SipMessage {
        message::parse(text.replace('\n', "\r\n").as_bytes()).expect("a valid message")
    }

    #[test]
    fn an_answer_goes_up_with_the_vias_the_pool_sent_whatever_the_client_echoed() {
        // The pool's MESSAGE carries the Front End's Via over the sender's; the client echoes only the first Via
        // line, the Edge's.
        let SipMessage::Request(request) = parsed(
            "MESSAGE sip:bob@b.invalid SIP/2.0\n\
             Via: SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bKfe\n\
             Via: SIP/2.0/TCP 10.0.0.9:40000;branch=z9hG4bKedgeA, SIP/2.0/TCP a.invalid;branch=z9hG4bKa\n\
             From: <sip:alice@pool.test>;tag=1\nTo: <sip:bob@pool.test>\nCall-ID: c1\nCSeq: 1 MESSAGE\n\
             Content-Length: 0\n\n",
        ) else {
            panic!("a request");
        };
        let sent_down = SentDown::default();
        let branch = format!("{BRANCH_PREFIX}down");
        sent_down.remember(branch.clone(), &request);
        let answer = |code: u16| {
            let SipMessage::Response(r) = parsed(&format!(
                "SIP/2.0 {code} OK\nVia: SIP/2.0/TCP 10.0.0.9:41000;branch={branch}\n\
                 From: <sip:alice@pool.test>;tag=1\nTo: <sip:bob@pool.test>;tag=2\nCall-ID: c1\n\
                 CSeq: 1 MESSAGE\nContent-Length: 0\n\n"
            )) else {
                panic!("a response");
            };
            r
        };
        let mut ok = answer(200);
        assert!(sent_down.answer_up(&mut ok));
        assert_eq!(
            headers_all(&ok.headers, "Via"),
            [
                "SIP/2.0/TCP 10.0.0.2:5060;branch=z9hG4bKfe",
                "SIP/2.0/TCP 10.0.0.9:40000;branch=z9hG4bKedgeA",
                "SIP/2.0/TCP a.invalid;branch=z9hG4bKa",
            ]
        );
        assert_eq!(
            message::top_branch(&ok.headers).as_deref(),
            Some("z9hG4bKfe")
        );

        // Answered: forgotten, so a second answer only loses the Edge's Via, as a stateless relay would do.
        let mut again = answer(200);
        assert!(sent_down.answer_up(&mut again));
        assert!(headers_all(&again.headers, "Via").is_empty(), "{again}");

        // An answer whose top Via is not the Edge's does not go up.
        let mut foreign = answer(200);
        replace_vias(
            &mut foreign.headers,
            vec!["SIP/2.0/TCP x;branch=z9hG4bKx".into()],
        );
        assert!(!sent_down.answer_up(&mut foreign));
    }
}
