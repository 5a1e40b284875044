//! The fault-proxy image, started with testcontainers: a proxy in front of a real TCP server (the image's
//! own echo server), every toxic added and removed through the Toxiproxy API, each one's effect measured on
//! a real TCP stream.
//!
//! The API is reached through its published port; the stream goes to the container's bridge address, so no
//! userland port proxy of Docker's sits in the measured path (it would turn a reset into a plain close).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use poolchaos::images;
use poolchaos::runtime::proxy;
use serde_json::json;
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LINK_PORT: u16 = 21000;
/// Upper bounds leave room for a busy 2-core machine; lower bounds are the toxic's promise.
const SLACK: Duration = Duration::from_millis(700);

async fn round_trip(addr: SocketAddr, payload: &[u8]) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect through the proxy");
    s.write_all(payload).await.unwrap();
    let mut got = vec![0; payload.len()];
    s.read_exact(&mut got).await.expect("the echo comes back");
    (t0.elapsed(), got)
}

/// The container's address on Docker's default bridge.
fn bridge_address(id: &str) -> IpAddr {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
        .output()
        .expect("docker inspect runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the container has a bridge address")
}

async fn add(api: SocketAddr, body: serde_json::Value) {
    proxy::expect(api, "POST", "/proxies/link/toxics", Some(&body), &[200])
        .await
        .expect("toxic added");
}

async fn remove(api: SocketAddr, name: &str) {
    proxy::expect(
        api,
        "DELETE",
        &format!("/proxies/link/toxics/{name}"),
        None,
        &[204],
    )
    .await
    .expect("toxic removed");
    let list = proxy::expect(api, "GET", "/proxies/link/toxics", None, &[200])
        .await
        .unwrap();
    assert_eq!(list, json!([]), "no toxic left after removing {name}");
}

/// Claim: the image speaks Toxiproxy's API and each toxic does to a live TCP stream what it says; removing
/// it restores a clean stream. Each assertion times or reads the stream itself, not the API's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_toxic_acts_on_a_stream_through_the_proxy_image() {
    let built = tokio::task::spawn_blocking(|| images::ensure(&images::workspace_root()))
        .await
        .unwrap()
        .expect("images build");
    let image = built.iter().find(|i| i.spec == images::TOXIPROXY).unwrap();
    let container = GenericImage::new(image.spec.repository, image.tag.as_str())
        .with_wait_for(WaitFor::message_on_stdout("faultproxy ready"))
        .with_exposed_port(ContainerPort::Tcp(8474))
        .with_cmd([
            "--host",
            "0.0.0.0",
            "--port",
            "8474",
            "--seed",
            "11",
            "--echo",
            "127.0.0.1:7000",
        ])
        .with_label("org.poolchaos.test", "proxy_image")
        .start()
        .await
        .expect("the fault proxy image starts (built here, never pulled)");
    let api = SocketAddr::from((
        [127, 0, 0, 1],
        container.get_host_port_ipv4(8474).await.unwrap(),
    ));
    let ip = bridge_address(container.id());
    let link = SocketAddr::new(ip, LINK_PORT);

    let version = proxy::expect(api, "GET", "/version", None, &[200])
        .await
        .unwrap();
    assert!(version.is_object() || version.is_null(), "{version}");
    let created = proxy::expect(
        api,
        "POST",
        "/proxies",
        Some(&json!({"name": "link", "listen": format!("0.0.0.0:{LINK_PORT}"), "upstream": "127.0.0.1:7000"})),
        &[201],
    )
    .await
    .unwrap();
    assert_eq!(created["name"], "link");
    let dup = proxy::call(
        api,
        "POST",
        "/proxies",
        Some(&json!({"name": "link", "listen": "0.0.0.0:21001", "upstream": "127.0.0.1:7000"})),
    )
    .await
    .unwrap();
    assert_eq!(dup.0, 409, "a duplicate proxy is a conflict: {}", dup.1);
    let missing = proxy::call(api, "GET", "/proxies/nope", None)
        .await
        .unwrap();
    assert_eq!(missing.0, 404);
    assert!(
        missing.1["error"].is_string(),
        "Toxiproxy-shaped error: {}",
        missing.1
    );
    let bad = proxy::call(
        api,
        "POST",
        "/proxies/link/toxics",
        Some(&json!({"type": "nonsense"})),
    )
    .await
    .unwrap();
    assert_eq!(bad.0, 400, "{}", bad.1);

    let (clean, echoed) = round_trip(link, b"hello").await;
    assert_eq!(echoed, b"hello");
    assert!(clean < SLACK, "a clean round trip takes {clean:?}");

    // latency: 200 ms downstream delays each round trip by 200 ms.
    add(api, json!({"name": "lat", "type": "latency", "stream": "downstream", "attributes": {"latency": 200, "jitter": 0}})).await;
    let (t, _) = round_trip(link, b"ping").await;
    assert!(
        t >= Duration::from_millis(199) && t < Duration::from_millis(200) + SLACK,
        "latency 200 ms gave {t:?}"
    );
    remove(api, "lat").await;
    let (t, _) = round_trip(link, b"ping").await;
    assert!(
        t < Duration::from_millis(150),
        "after removal the delay is gone: {t:?}"
    );

    // toxicity 0: the toxic never applies.
    add(api, json!({"name": "never", "type": "latency", "toxicity": 0.0, "attributes": {"latency": 1000}})).await;
    let (t, _) = round_trip(link, b"ping").await;
    assert!(
        t < Duration::from_millis(500),
        "toxicity 0 delayed by {t:?}"
    );
    remove(api, "never").await;

    // bandwidth: 20 KB/s downstream makes 20 KB take about a second.
    add(
        api,
        json!({"name": "bw", "type": "bandwidth", "attributes": {"rate": 20}}),
    )
    .await;
    let payload = vec![7u8; 20 * 1024];
    let (t, got) = round_trip(link, &payload).await;
    assert_eq!(got, payload, "bandwidth limits, it does not corrupt");
    assert!(
        t >= Duration::from_millis(800),
        "20 KB at 20 KB/s took only {t:?}"
    );
    remove(api, "bw").await;

    // slicer: 10-byte slices 20 ms apart make 100 bytes arrive in several reads over ~180 ms.
    add(api, json!({"name": "slice", "type": "slicer", "attributes": {"average_size": 10, "size_variation": 0, "delay": 20000}})).await;
    let mut s = TcpStream::connect(link).await.unwrap();
    let t0 = Instant::now();
    s.write_all(&[1u8; 100]).await.unwrap();
    let (mut reads, mut total, mut buf) = (0, 0, [0u8; 200]);
    while total < 100 {
        total += s.read(&mut buf).await.unwrap();
        reads += 1;
    }
    assert!(reads >= 3, "slices arrive apart: {reads} reads");
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    drop(s);
    remove(api, "slice").await;

    // limit_data: exactly 100 bytes pass, then the connection closes.
    add(
        api,
        json!({"name": "limit", "type": "limit_data", "attributes": {"bytes": 100}}),
    )
    .await;
    let mut s = TcpStream::connect(link).await.unwrap();
    s.write_all(&[2u8; 300]).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed");
    assert_eq!(got.len(), 100, "limit_data passes exactly its bytes");
    remove(api, "limit").await;

    // timeout 0: a blackhole: nothing comes back while it is in force; removing it closes the connection.
    add(
        api,
        json!({"name": "hole", "type": "timeout", "attributes": {"timeout": 0}}),
    )
    .await;
    let mut s = TcpStream::connect(link).await.unwrap();
    s.write_all(b"anyone?").await.unwrap();
    let mut buf = [0u8; 16];
    let stalled = tokio::time::timeout(Duration::from_millis(800), s.read(&mut buf)).await;
    assert!(stalled.is_err(), "a blackhole answered: {stalled:?}");
    remove(api, "hole").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed once removed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // reset_peer: the connection is reset (ECONNRESET), not closed politely.
    add(
        api,
        json!({"name": "reset", "type": "reset_peer", "attributes": {"timeout": 0}}),
    )
    .await;
    let mut s = TcpStream::connect(link).await.unwrap();
    let _ = s.write_all(b"x").await;
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "reset_peer gave {r:?}"
    );
    remove(api, "reset").await;

    // slow_close: after the server side closes, the close reaches the client only after the delay.
    add(
        api,
        json!({"name": "slow", "type": "slow_close", "attributes": {"delay": 500}}),
    )
    .await;
    let mut s = TcpStream::connect(link).await.unwrap();
    s.write_all(b"bye").await.unwrap();
    let mut got = [0u8; 3];
    s.read_exact(&mut got).await.unwrap();
    let t0 = Instant::now();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "slow_close closed after {:?}",
        t0.elapsed()
    );
    remove(api, "slow").await;

    // down: the proxy stops listening; enabled again, it carries traffic again.
    proxy::expect(
        api,
        "POST",
        "/proxies/link",
        Some(&json!({"enabled": false})),
        &[200],
    )
    .await
    .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(link)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "a down proxy accepted a connection: {refused:?}"
    );
    proxy::expect(
        api,
        "POST",
        "/proxies/link",
        Some(&json!({"enabled": true})),
        &[200],
    )
    .await
    .unwrap();
    let (_, echoed) = round_trip(link, b"back").await;
    assert_eq!(echoed, b"back");

    // reset: every toxic gone in one call.
    add(api, json!({"name": "a", "type": "latency", "stream": "upstream", "attributes": {"latency": 500}})).await;
    add(api, json!({"name": "b", "type": "latency", "stream": "downstream", "attributes": {"latency": 500}})).await;
    proxy::expect(api, "POST", "/reset", None, &[204, 200])
        .await
        .unwrap();
    let list = proxy::expect(api, "GET", "/proxies/link/toxics", None, &[200])
        .await
        .unwrap();
    assert_eq!(list, json!([]), "reset clears both streams");
    let (t, _) = round_trip(link, b"ping").await;
    assert!(t < Duration::from_millis(400), "{t:?}");
}
