//! Support shared by the director, edge and mediation test binaries: a test cluster, each role started in-process
//! on 127.0.0.1:0 (and killed), a SIP connection for test clients, and the admin API over HTTP.

#![allow(dead_code, reason = "each test binary uses part of this support")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use poolnode::cluster::{ClusterConfig, PoolConfig, Timings, UserConfig};
use poolnode::director::{NodeIdentity, RoleListeners};
use poolnode::sip::codec::{Frame, Framer, Limits};
use poolnode::sip::message::{self, header};
use rsip::{Request, Response, SipMessage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the machine is a busy 2-core box; a correct server answers in milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);
pub const TOKEN: &str = "test-token";

fn pool(name: &str, role: &str, nodes: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        role: role.into(),
        site: "s1".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        pair: None,
        backend: None,
        witness: None,
        next_hop: None,
        gateway: None,
    }
}

/// Front End pools `fe1` ⇄ `fe2` (paired), Director pools `dir` (dir1, dir2) and `dirb` (dirb1), Edge pool `edge`
/// (edge1, edge2; next hop `dir`), Mediation pool `med` (med1, med2; gateway `gw`), gateway pool `gw` (gw1).
/// Users alice and bob on fe1, carol on fe2; passwords `<name>-pw`.
pub fn cluster() -> Arc<ClusterConfig> {
    let mut fe1 = pool("fe1", "frontend", &["fe1a"]);
    fe1.pair = Some("fe2".into());
    let mut fe2 = pool("fe2", "frontend", &["fe2a"]);
    fe2.pair = Some("fe1".into());
    let mut edge = pool("edge", "edge", &["edge1", "edge2"]);
    edge.next_hop = Some("dir".into());
    let mut med = pool("med", "mediation", &["med1", "med2"]);
    med.gateway = Some("gw".into());
    let user = |name: &str, home: &str| UserConfig {
        name: name.into(),
        password: format!("{name}-pw"),
        home: home.into(),
    };
    Arc::new(ClusterConfig {
        name: "test".into(),
        timings: Timings::fast(),
        pools: vec![
            fe1,
            fe2,
            pool("dir", "director", &["dir1", "dir2"]),
            pool("dirb", "director", &["dirb1"]),
            edge,
            med,
            pool("gw", "pstn-gateway", &["gw1"]),
        ],
        users: vec![
            user("alice", "fe1"),
            user("bob", "fe1"),
            user("carol", "fe2"),
        ],
        routes: vec![],
        admin_token: TOKEN.into(),
    })
}

pub fn identity(node: &str, role: &'static str) -> NodeIdentity {
    NodeIdentity::new(cluster(), node, role).unwrap()
}

pub async fn listeners() -> RoleListeners {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    RoleListeners::bind(any, any).await.unwrap()
}

/// A role serving in-process; [`Running::kill`] stops it as a killed process would look from outside (every
/// connection closes).
pub struct Running {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Starts `serve(listeners, shutdown)` on fresh listeners.
    pub async fn start<F, Fut, E>(serve: F) -> Running
    where
        F: FnOnce(RoleListeners, poolnode::sip::BoxFuture<()>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        Running::start_on(listeners().await, serve).await
    }

    /// As [`Running::start`], on listeners bound already (when others must know the address first).
    pub async fn start_on<F, Fut, E>(listeners: RoleListeners, serve: F) -> Running
    where
        F: FnOnce(RoleListeners, poolnode::sip::BoxFuture<()>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        let (sip, admin) = (listeners.sip_addr(), listeners.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let future = serve(
            listeners,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        );
        let task = tokio::spawn(async move { future.await.unwrap() });
        Running {
            sip,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("role did not stop")
                .unwrap();
        }
    }
}

/// What a read from a connection gave.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a short-lived test value; boxing would only complicate the matches on it"
)]
pub enum Read {
    Message(SipMessage),
    Closed,
    Nothing,
}

/// A SIP connection of a test client over TCP.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    framer: Framer,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).await.expect("connect")
    }

    pub async fn try_connect(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(addr).await.ok()?;
        Some(Conn {
            stream,
            buf: BytesMut::new(),
            framer: Framer::new(Limits::default()),
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends, telling whether the write went out (it fails on a connection the server already closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next message within `within`, or that the connection closed, or nothing.
    pub async fn read(&mut self, within: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(Frame::Message(bytes))) => {
                    return Read::Message(message::parse(&bytes).expect("malformed from server"))
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => panic!("unframeable from server: {e:?}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Read::Nothing,
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn message(&mut self) -> SipMessage {
        match self.read(WAIT).await {
            Read::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next response, skipping provisional ones when `final_only`.
    pub async fn response(&mut self) -> Response {
        match self.message().await {
            SipMessage::Response(r) => r,
            SipMessage::Request(r) => panic!("expected a response, got {r}"),
        }
    }

    pub async fn final_response(&mut self) -> Response {
        // Bounded: each turn waits at most WAIT and provisional responses are few.
        for _ in 0..8 {
            let r = self.response().await;
            if r.status_code.code() >= 200 {
                return r;
            }
        }
        panic!("no final response after 8 provisional ones")
    }

    pub async fn incoming(&mut self) -> Request {
        match self.message().await {
            SipMessage::Request(r) => r,
            SipMessage::Response(r) => panic!("expected a request, got {r}"),
        }
    }

    pub async fn request(&mut self, text: &str) -> Response {
        self.send(text.as_bytes()).await;
        self.final_response().await
    }

    /// Answers a request the server sent us, with extra header lines.
    pub async fn answer(&mut self, request: &Request, status: u16, extra: &[(&str, String)]) {
        let mut response = message::response(
            request,
            status,
            if status == 200 { "OK" } else { "Refused" },
        );
        for (n, v) in extra {
            message::push(&mut response.headers, n, v.clone());
        }
        self.send(&message::encode(response)).await;
    }

    /// True when the connection closes within `within`.
    pub async fn closes_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A request's text from `from_user` to `to_user`.
pub fn request(
    method: &str,
    uri: &str,
    from_user: &str,
    to_user: &str,
    via: impl std::fmt::Display,
    extra: &[String],
    body: &str,
) -> String {
    let mut text = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {via};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@pool.test>;tag={}\r\n\
         To: <sip:{to_user}@pool.test>\r\n\
         Call-ID: {}@test\r\n\
         CSeq: 1 {method}\r\n",
        message::token(),
        message::token(),
        message::token()
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

/// A REGISTER for `user` at Request-URI `uri`, Contact on the client's own address.
pub fn register(
    uri: &str,
    user: &str,
    contact: impl std::fmt::Display,
    extra: &[String],
) -> String {
    let mut lines = vec![
        format!("Contact: <sip:{user}@{contact};transport=tcp>"),
        "Expires: 300".to_owned(),
    ];
    lines.extend_from_slice(extra);
    request("REGISTER", uri, user, user, contact, &lines, "")
}

/// REGISTERs at `uri` over `conn`, answering a digest challenge; the final answer.
pub async fn register_with_auth(
    conn: &mut Conn,
    uri: &str,
    user: &str,
    password: &str,
) -> Response {
    let contact = conn.local();
    let first = conn.request(&register(uri, user, contact, &[])).await;
    if first.status_code.code() != 401 {
        return first;
    }
    answer_challenge(conn, &first, uri, user, password).await
}

/// Sends the REGISTER again with credentials for `challenge` (a 401).
pub async fn answer_challenge(
    conn: &mut Conn,
    challenge: &Response,
    uri: &str,
    user: &str,
    password: &str,
) -> Response {
    let contact = conn.local();
    answer_challenge_as(conn, challenge, uri, user, password, contact).await
}

/// As [`answer_challenge`], with the Contact (and Via) host given.
pub async fn answer_challenge_as(
    conn: &mut Conn,
    challenge: &Response,
    uri: &str,
    user: &str,
    password: &str,
    contact: impl std::fmt::Display,
) -> Response {
    let challenge = header(&challenge.headers, "WWW-Authenticate")
        .unwrap()
        .to_owned();
    let authorization = poolnode::sip::digest::answer(&challenge, "REGISTER", uri, user, password);
    conn.request(&register(
        uri,
        user,
        contact,
        &[format!("Authorization: {authorization}")],
    ))
    .await
}

/// Header value of a response, or "" when absent.
pub fn value<'a>(response: &'a Response, name: &str) -> &'a str {
    header(&response.headers, name).unwrap_or_default()
}

/// `GET /status` of an admin API.
pub async fn status(admin: SocketAddr) -> Value {
    http(admin, "GET", "/status", None, "").await.1
}

/// One HTTP/1.1 exchange: status code and JSON body.
pub async fn http(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        serde_json::from_str(rest.trim()).unwrap_or(Value::Null),
    )
}

/// Polls `check` every 50 ms until it holds or `within` passes; whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    // Bounded by the deadline.
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
