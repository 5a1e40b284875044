//! The relay of one remote client's TCP connection: one upstream TCP connection inside the networks at a time,
//! and every message passed between the two with the Edge's Via added or removed.
//!
//! Binding the client to one upstream connection keeps the relay simple: requests the pool sends the client
//! (IMs, NOTIFYs, INVITEs) arrive on the upstream connection the client registered over, and have exactly one
//! place to go; no Record-Route or transaction state is needed. When either side closes, both close, so a
//! client sees its Edge server or its upstream die as a broken connection and signs in again (through another
//! Edge server of the pool name).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rsip::{Header, Headers, Method, Request, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::server::Edge;
use crate::cluster::SIP_PORT;
use crate::sip::codec::{Frame, FrameError, Framer};
use crate::sip::message::{self, header, host_port_of, name, split_list, uri_in, value};

/// Every Via the Edge adds has a branch starting so; a response is passed on only when its top Via is one.
pub const BRANCH_PREFIX: &str = "z9hG4bKedge";

/// Messages queued toward one side before the relay waits.
const QUEUE_LEN: usize = 256;

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

/// Counts a client connection for `/status` while it lives.
struct ClientGuard(Arc<Edge>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.client_left();
    }
}

/// Relays one accepted client connection until either side closes or `stop` fires.
pub async fn client_connection(
    stream: TcpStream,
    edge: Arc<Edge>,
    mut stop: watch::Receiver<bool>,
) {
    edge.client_joined();
    let _guard = ClientGuard(edge.clone());
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
        client_tx: client_tx.clone(),
        client_local,
        upstream: None,
        generations: 0,
        ended_tx,
    };
    let framer = Framer::new(edge.config.limits);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut keepalive = tokio::time::interval(edge.config.upstream_keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    // Bounded by the connection's life: each turn reads, or ends the relay.
    loop {
        tokio::select! {
            read = tokio::time::timeout(edge.config.idle_timeout, reader.read_buf(&mut buf)) => {
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

struct Relay {
    edge: Arc<Edge>,
    client_tx: mpsc::Sender<Bytes>,
    client_local: SocketAddr,
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
                        .client_tx
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
                    reply_error(&error, &self.client_tx).await;
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
                    let _ = self.client_tx.send(reply).await;
                }
            }
            Ok(SipMessage::Response(mut response)) => {
                // The client's answer to a request the pool sent it: back up, without our Via.
                if pop_own_via(&mut response.headers) {
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
            self.client_tx.clone(),
            self.client_local,
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
        let _ = self.client_tx.send(message::encode(response)).await;
    }
}

/// Reads the upstream connection: responses go down without our Via, requests go down with one.
async fn upstream_reader(
    mut reader: OwnedReadHalf,
    framer: Framer,
    up_tx: mpsc::Sender<Bytes>,
    client_tx: mpsc::Sender<Bytes>,
    client_local: SocketAddr,
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
                    push_via(
                        &mut request.headers,
                        format!(
                            "SIP/2.0/TCP {client_local};branch={BRANCH_PREFIX}{}",
                            message::token()
                        ),
                    );
                    message::encode(request)
                }
            };
            if client_tx.send(down).await.is_err() {
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
}
