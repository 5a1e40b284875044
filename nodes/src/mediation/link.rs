//! [`Link`]: an outgoing SIP connection this node opened (to a PSTN gateway, a Front End pool, a Mediation
//! server), and [`Leg`]: one side of a call, either such a link or a connection a peer opened to us
//! ([`Peer`]).
//!
//! The shared transport serves the connections peers open to us, but offers no way to open one toward a pool
//! name and keep it (its dialer reuses one connection per address, reachable only from an existing peer).
//! A link is that: it frames with the same codec, answers keep-alives, routes final responses to the requests
//! that await them, and hands requests the far side sends to an [`OnRequest`] function.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rsip::{Header, Request, Response, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::sip::codec::{Frame, Framer, Limits};
use crate::sip::message;
use crate::sip::{BoxFuture, Peer, RequestError, Transport};

/// Answers a request that arrived on a link (or on any leg): `None` for no answer (ACK).
pub type OnRequest = Arc<dyn Fn(Request, Leg) -> BoxFuture<Option<Response>> + Send + Sync>;

/// Messages queued toward the far side before a sender waits.
const QUEUE_LEN: usize = 256;

/// An outgoing SIP connection. Cheap to clone; closes when the last clone is dropped or on [`Link::close`].
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    tx: mpsc::Sender<Bytes>,
    local: SocketAddr,
    remote: SocketAddr,
    /// Requests we sent that await a final response, by the branch of our Via.
    pending: Mutex<HashMap<String, oneshot::Sender<Response>>>,
    closed: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            task.abort();
        }
    }
}

impl Link {
    /// Serves a connected stream: requests from the far side go to `on_request`.
    pub fn start(
        stream: TcpStream,
        limits: Limits,
        on_request: OnRequest,
    ) -> std::io::Result<Link> {
        let _ = stream.set_nodelay(true);
        let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
        let (reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_LEN);
        let inner = Arc::new(LinkInner {
            tx,
            local,
            remote,
            pending: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let writer_task = tokio::spawn({
            let weak = weak.clone();
            async move {
                // Bounded by the senders: ends when the link is dropped.
                while let Some(bytes) = rx.recv().await {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown().await;
                if let Some(inner) = weak.upgrade() {
                    inner.fail_pending();
                }
            }
        });
        let reader_task = tokio::spawn(read_loop(reader, Framer::new(limits), weak, on_request));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([writer_task.abort_handle(), reader_task.abort_handle()]);
        Ok(Link { inner })
    }

    /// Connects to `addr` within `connect_timeout` and serves the connection.
    pub async fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        limits: Limits,
        on_request: OnRequest,
    ) -> std::io::Result<Link> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        Link::start(stream, limits, on_request)
    }

    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn remote(&self) -> SocketAddr {
        self.inner.remote
    }

    /// False once the connection closed, from either side.
    pub fn is_open(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire) && !self.inner.tx.is_closed()
    }

    /// Cuts the connection at once (as a killed process would): pending requests fail, nothing queued is sent.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            task.abort();
        }
        self.inner.fail_pending();
    }

    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), RequestError> {
        if !self.is_open() {
            return Err(RequestError::Closed {
                peer: self.remote(),
            });
        }
        self.inner
            .tx
            .send(bytes)
            .await
            .map_err(|_| RequestError::Closed {
                peer: self.remote(),
            })
    }

    /// Sends `request` with our Via on top and waits up to `timeout` for its final response.
    pub async fn request(
        &self,
        mut request: Request,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let branch = format!("z9hG4bK{}", message::token());
        push_via(
            &mut request,
            format!("SIP/2.0/TCP {};branch={branch}", self.local()),
        );
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(branch.clone(), tx);
        let result = async {
            self.send_raw(message::encode(request)).await?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => Err(RequestError::Closed {
                    peer: self.remote(),
                }),
                Err(_) => Err(RequestError::Timeout {
                    peer: self.remote(),
                }),
            }
        }
        .await;
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&branch);
        result
    }
}

impl LinkInner {
    /// Every waiting request fails now (their receivers see the sender dropped): the connection is gone.
    fn fail_pending(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    framer: Framer,
    link: Weak<LinkInner>,
    on_request: OnRequest,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'read: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Bounded: every successful decode consumes bytes from `buf`.
        loop {
            let Some(inner) = link.upgrade() else {
                break 'read;
            };
            let bytes =
                match framer.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(Frame::Ping)) => {
                        let _ = inner.tx.send(Bytes::from_static(b"\r\n")).await;
                        continue;
                    }
                    Ok(Some(Frame::Pong)) => continue,
                    Ok(Some(Frame::Message(bytes))) => bytes,
                    Err(error) => {
                        if let Some(reply) = error.header_section.as_ref().and_then(|s| {
                            message::error_response_raw(s, error.status, error.reason)
                        }) {
                            let _ = inner.tx.send(reply).await;
                        }
                        if error.close {
                            break 'read;
                        }
                        continue;
                    }
                };
            match message::parse(&bytes) {
                Ok(SipMessage::Response(response)) => {
                    // Provisional responses are not waited for: the caller wants the final one.
                    if response.status_code.code() >= 200 {
                        if let Some(branch) = message::top_branch(&response.headers) {
                            let waiter = inner
                                .pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&branch);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(response);
                            }
                        }
                    }
                }
                Ok(SipMessage::Request(request)) => {
                    let leg = Leg::Link(Link {
                        inner: inner.clone(),
                    });
                    let answer = on_request(request, leg);
                    let tx = inner.tx.clone();
                    // Answered when ready, so a slow answer does not hold up the requests behind it.
                    tokio::spawn(async move {
                        if let Some(response) = answer.await {
                            let _ = tx.send(message::encode(response)).await;
                        }
                    });
                }
                Err(rejection) => {
                    if let Some(reply) =
                        message::error_response_raw(&bytes, rejection.status, rejection.reason)
                    {
                        let _ = inner.tx.send(reply).await;
                    }
                }
            }
        }
    }
    if let Some(inner) = link.upgrade() {
        inner.fail_pending();
    }
}

fn push_via(request: &mut Request, via: String) {
    let mut all = vec![Header::Other("Via".into(), via)];
    all.extend(request.headers.iter().cloned());
    request.headers = all.into();
}

/// One side of a call: a connection the peer opened to us, or one we opened.
#[derive(Clone)]
pub enum Leg {
    Peer(Peer),
    Link(Link),
}

impl Leg {
    /// Sends a request and waits up to `timeout` for its final response.
    pub async fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        match self {
            Leg::Peer(peer) => peer.request(request, timeout).await,
            Leg::Link(link) => link.request(request, timeout).await,
        }
    }

    /// Sends a request that gets no response (ACK), with our Via on top.
    pub async fn send_without_answer(&self, mut request: Request) -> Result<(), RequestError> {
        push_via(
            &mut request,
            format!(
                "SIP/2.0/{} {};branch=z9hG4bK{}",
                self.transport(),
                self.local(),
                message::token()
            ),
        );
        self.send_raw(message::encode(request)).await
    }

    /// Sends a response or pre-encoded message as it is (a provisional response ahead of the final one).
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), RequestError> {
        match self {
            Leg::Peer(peer) => peer.send_raw(bytes).await,
            Leg::Link(link) => link.send_raw(bytes).await,
        }
    }

    /// False once the connection is known to be gone (a UDP peer always counts as open).
    pub fn is_open(&self) -> bool {
        match self {
            Leg::Peer(peer) => peer.is_open(),
            Leg::Link(link) => link.is_open(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            Leg::Peer(peer) => peer.local(),
            Leg::Link(link) => link.local(),
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Leg::Peer(peer) => peer.transport(),
            Leg::Link(_) => Transport::Tcp,
        }
    }
}
