//! What every topic needs: a server on its own thread (as the binary runs it), a tiny HTTP/1.1
//! client, an echo server, and timing helpers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Timing claims hold only on a machine that is not saturated by our own bulk test: timing tests
/// take this shared, the bulk test takes it exclusively.
pub static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A faultproxy server on its own OS thread and runtime, stopped on drop.
pub struct TestServer {
    pub api: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(seed: u64) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the API");
        listener.set_nonblocking(true).expect("non-blocking API");
        let api = listener.local_addr().expect("API address");
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("faultproxy-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("API runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("register the API");
                    faultproxy::run(listener, Some(seed), async move {
                        let _ = shutdown_rx.await;
                    })
                    .await
                    .expect("server runs");
                });
            })
            .expect("spawn the server thread");
        TestServer {
            api,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
pub async fn http(api: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(api).await.expect("connect to the API");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("response has a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply { status, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

pub async fn get(api: SocketAddr, path: &str) -> Reply {
    http(api, "GET", path, None).await
}

pub async fn post(api: SocketAddr, path: &str, body: &str) -> Reply {
    http(api, "POST", path, Some(body)).await
}

pub async fn delete(api: SocketAddr, path: &str) -> Reply {
    http(api, "DELETE", path, None).await
}

/// Creates a proxy on a free loopback port and returns the address it listens on.
pub async fn create_proxy(api: SocketAddr, name: &str, upstream: SocketAddr) -> SocketAddr {
    let body = format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#);
    let reply = post(api, "/proxies", &body).await;
    assert_eq!(reply.status, 201, "create proxy: {}", reply.body);
    reply.json()["listen"]
        .as_str()
        .expect("listen is a string")
        .parse()
        .expect("listen is an address")
}

pub async fn add_toxic(api: SocketAddr, proxy: &str, toxic: &str) -> Value {
    let reply = post(api, &format!("/proxies/{proxy}/toxics"), toxic).await;
    assert_eq!(reply.status, 200, "add toxic: {}", reply.body);
    reply.json()
}

/// An echo server on a free loopback port: every byte back, and the close passed on.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// Connects to a proxy, with Nagle off so small writes go at once.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect through the proxy");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Sends `message` and reads the same number of bytes back; returns the round-trip time.
pub async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).await.expect("send");
    let mut back = vec![0; message.len()];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut back))
        .await
        .expect("echo answers within 20 s")
        .expect("echo answers");
    assert_eq!(back, message, "echo returns the bytes sent");
    started.elapsed()
}

/// Reads until EOF or error; returns the bytes and how it ended.
pub async fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(err) => return (got, Err(err)),
        }
    }
}

pub const MS: Duration = Duration::from_millis(1);

/// Creates a UDP proxy on a free loopback port and returns the address it listens on.
pub async fn create_udp_proxy(api: SocketAddr, name: &str, upstream: SocketAddr) -> SocketAddr {
    let body = format!(
        r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}","protocol":"udp"}}"#
    );
    let reply = post(api, "/proxies", &body).await;
    assert_eq!(reply.status, 201, "create UDP proxy: {}", reply.body);
    assert_eq!(reply.json()["protocol"], "udp");
    reply.json()["listen"]
        .as_str()
        .expect("listen is a string")
        .parse()
        .expect("listen is an address")
}

/// A UDP echo server on a free loopback port: every datagram back to its sender, and a record of
/// what arrived from where and when.
pub struct UdpEcho {
    pub addr: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Arrival>>>,
}

/// A datagram as an echo server received it: source, payload, arrival.
pub type Arrival = (SocketAddr, Vec<u8>, Instant);

impl UdpEcho {
    pub async fn start() -> UdpEcho {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP echo");
        let addr = socket.local_addr().expect("UDP echo address");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_535];
            while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                record
                    .lock()
                    .unwrap()
                    .push((from, buffer[..len].to_vec(), Instant::now()));
                let _ = socket.send_to(&buffer[..len], from).await;
            }
        });
        UdpEcho { addr, seen }
    }

    /// Everything received so far: (source, payload, arrival).
    pub fn seen(&self) -> Vec<Arrival> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until no datagram arrived for `quiet`, then returns everything received.
    pub async fn settle(&self, quiet: Duration) -> Vec<Arrival> {
        let mut count = usize::MAX;
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.seen.lock().unwrap().len();
            if now == count {
                return self.seen();
            }
            count = now;
        }
    }
}

/// A UDP socket on a free loopback port.
pub async fn udp_client() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind UDP client")
}

/// Receives one datagram within `wait`, or None.
pub async fn udp_receive(socket: &tokio::net::UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buffer = vec![0u8; 65_535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, _))) => Some(buffer[..len].to_vec()),
        _ => None,
    }
}

/// Sends `count` numbered datagrams (4-byte big-endian sequence, padded to `size`), pausing
/// 1 ms after every 10 so no socket buffer on the way overflows.
pub async fn udp_send_numbered(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    count: u32,
    size: usize,
) {
    for seq in 0..count {
        let mut payload = vec![0u8; size.max(4)];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        socket.send_to(&payload, to).await.expect("send datagram");
        if seq % 10 == 9 {
            tokio::time::sleep(MS).await;
        }
    }
}

/// The sequence number of a numbered datagram.
pub fn sequence(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))
}
