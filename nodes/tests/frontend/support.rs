//! A small SIP test client and an in-process Front End on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use poolnode::frontend::{serve, Credentials, FrontEnd, FrontEndConfig};
use poolnode::sip::codec::{decode_datagram, Frame, Framer, Limits};
use poolnode::sip::message::{self, header};
use poolnode::sip::Listeners;
use rsip::{Request, Response, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Generous: the machine is a busy 2-core box; a correct server answers in milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub frontend: Arc<FrontEnd>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Alice, Bob and Carol with passwords `alice-pw`, … .
    pub fn users() -> Credentials {
        Credentials::from_pairs([
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ])
    }

    pub async fn start(config: FrontEndConfig) -> Self {
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listeners.local_addr().unwrap();
        let frontend = Arc::new(FrontEnd::new(config));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let frontend = frontend.clone();
            async move {
                serve(listeners, frontend, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        Self {
            addr,
            frontend,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn with_users() -> Self {
        Self::start(FrontEndConfig {
            credentials: Self::users(),
            ..FrontEndConfig::default()
        })
        .await
    }

    pub async fn open() -> Self {
        Self::start(FrontEndConfig {
            credentials: Credentials::open(),
            ..FrontEndConfig::default()
        })
        .await
    }

    /// Proves the server still serves: a fresh TCP connection gets `200` to OPTIONS.
    pub async fn assert_serving(&self) {
        let mut client = TcpClient::connect(self.addr).await;
        let response = client.request(&options(self.addr, "probe")).await;
        assert_eq!(response.status_code.code(), 200, "server stopped serving");
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server did not stop")
                .unwrap();
        }
    }
}

/// A SIP client over one TCP connection.
pub struct TcpClient {
    pub stream: TcpStream,
    buf: BytesMut,
    framer: Framer,
}

impl TcpClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            framer: Framer::new(Limits::default()),
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` at end of stream. Panics after [`WAIT`].
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self
                    .framer
                    .decode(&mut self.buf)
                    .expect("server sent an unframeable message")
                {
                    return Some(frame);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("no message from the server in time")
    }

    pub async fn message(&mut self) -> SipMessage {
        match self.frame().await {
            Some(Frame::Message(bytes)) => {
                message::parse(&bytes).expect("server sent a malformed message")
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub async fn response(&mut self) -> Response {
        match self.message().await {
            SipMessage::Response(r) => r,
            SipMessage::Request(r) => panic!("expected a response, got {r}"),
        }
    }

    pub async fn incoming(&mut self) -> Request {
        match self.message().await {
            SipMessage::Request(r) => r,
            SipMessage::Response(r) => panic!("expected a request, got {r}"),
        }
    }

    pub async fn request(&mut self, text: &str) -> Response {
        self.send(text.as_bytes()).await;
        self.response().await
    }

    /// Answers a request the server sent us.
    pub async fn answer(&mut self, request: &Request, status: u16) {
        let response = message::response(
            request,
            status,
            if status == 200 { "OK" } else { "Refused" },
        );
        self.send(&message::encode(response)).await;
    }

    /// True when the server closed the connection (reads end) within [`WAIT`].
    pub async fn closed(&mut self) -> bool {
        let mut scratch = [0u8; 4096];
        tokio::time::timeout(WAIT, async {
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// A SIP client over one UDP socket.
pub struct UdpClient {
    pub socket: UdpSocket,
    server: SocketAddr,
}

impl UdpClient {
    pub async fn bind(server: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    pub async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.unwrap();
    }

    /// The next datagram's message, or `None` after `within`.
    pub async fn try_message(&self, within: Duration) -> Option<(SipMessage, Vec<u8>)> {
        let mut buf = vec![0u8; 65_536];
        let (len, _) = tokio::time::timeout(within, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        match decode_datagram(&buf[..len], &Limits::default())
            .expect("server sent an unframeable datagram")
        {
            Frame::Message(bytes) => Some((
                message::parse(&bytes).expect("malformed from server"),
                buf[..len].to_vec(),
            )),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub async fn response(&self) -> Response {
        match self
            .try_message(WAIT)
            .await
            .expect("no datagram from the server in time")
            .0
        {
            SipMessage::Response(r) => r,
            SipMessage::Request(r) => panic!("expected a response, got {r}"),
        }
    }

    pub async fn request(&self, text: &str) -> Response {
        self.send(text.as_bytes()).await;
        self.response().await
    }
}

/// A request's text. `via_host` is the client's address (also used in Contact).
#[expect(
    clippy::too_many_arguments,
    reason = "a test helper reads best with the start line and headers spelled out"
)]
pub fn request(
    method: &str,
    uri: &str,
    from_user: &str,
    to_user: &str,
    via: SocketAddr,
    transport: &str,
    extra: &[String],
    body: &str,
) -> String {
    let branch = message::token();
    let mut text = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {via};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@pool.test>;tag={}\r\n\
         To: <sip:{to_user}@pool.test>\r\n\
         Call-ID: {}@test\r\n\
         CSeq: 1 {method}\r\n",
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

/// An OPTIONS to the server.
pub fn options(server: SocketAddr, user: &str) -> String {
    request(
        "OPTIONS",
        &format!("sip:{server}"),
        user,
        user,
        server,
        "TCP",
        &[],
        "",
    )
}

/// A REGISTER for `user` with a Contact at `contact` and the given expiry, plus extra header lines.
pub fn register(
    server: SocketAddr,
    user: &str,
    contact: SocketAddr,
    transport: &str,
    expires_secs: u64,
    extra: &[String],
) -> String {
    let mut lines = vec![
        format!(
            "Contact: <sip:{user}@{contact};transport={}>",
            transport.to_lowercase()
        ),
        format!("Expires: {expires_secs}"),
    ];
    lines.extend_from_slice(extra);
    request(
        "REGISTER",
        &format!("sip:{server}"),
        user,
        user,
        contact,
        transport,
        &lines,
        "",
    )
}

/// Registers `user` over `client`'s connection, answering the digest challenge.
pub async fn register_tcp(
    server: SocketAddr,
    client: &mut TcpClient,
    user: &str,
    password: &str,
) -> Response {
    let first = client
        .request(&register(server, user, client.local(), "TCP", 300, &[]))
        .await;
    if first.status_code.code() != 401 {
        return first;
    }
    let challenge = header(&first.headers, "WWW-Authenticate")
        .unwrap()
        .to_owned();
    let uri = format!("sip:{server}");
    let authorization = poolnode::sip::digest::answer(&challenge, "REGISTER", &uri, user, password);
    client
        .request(&register(
            server,
            user,
            client.local(),
            "TCP",
            300,
            &[format!("Authorization: {authorization}")],
        ))
        .await
}

/// Header value of a response, or "" when absent.
pub fn value<'a>(response: &'a Response, name: &str) -> &'a str {
    header(&response.headers, name).unwrap_or_default()
}
