//! Each toxic's effect, measured on real TCP through a proxy to a real echo server. Lower time
//! bounds are strict (a toxic can only add delay); upper bounds leave seconds of headroom for a
//! busy 2-core machine.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn proxy_to_echo(server: &TestServer) -> std::net::SocketAddr {
    create_proxy(server.api, "db", echo_server().await).await
}

#[tokio::test]
async fn latency_delays_each_round_trip_by_its_amount() {
    // Claim: a 200 ms downstream latency makes every round trip take 200 ms more, no less.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"latency","attributes":{"latency":200}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    for _ in 0..3 {
        let rtt = round_trip(&mut stream, b"ping").await;
        assert!(rtt >= 199 * MS && rtt < 1200 * MS, "rtt {rtt:?}");
    }
}

#[tokio::test]
async fn latency_does_not_pile_up_over_pipelined_chunks() {
    // Claim: latency counts from each chunk's arrival, so 5 chunks sent 20 ms apart arrive
    // about 200 ms after their own send, not 5 × 200 ms after the first.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"latency","attributes":{"latency":200}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    let started = Instant::now();
    for _ in 0..5 {
        stream.write_all(b"x").await.unwrap();
        tokio::time::sleep(20 * MS).await;
    }
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= 280 * MS && elapsed < 900 * MS,
        "elapsed {elapsed:?}"
    );
}

#[tokio::test]
async fn bandwidth_limits_throughput() {
    // Claim: at 200 KB/s, 100 kB take at least ~0.4 s to come back (the first 100 ms piece is free).
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"bandwidth","attributes":{"rate":200}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    let message = vec![7u8; 100_000];
    let rtt = round_trip(&mut stream, &message).await;
    assert!(rtt >= 390 * MS && rtt < 5 * 1000 * MS, "rtt {rtt:?}");
}

#[tokio::test]
async fn slicer_splits_one_write_into_delayed_pieces() {
    // Claim: one 100-byte write comes back as 20-byte pieces 50 ms apart: several reads, ≥ 200 ms.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"slicer","attributes":{"average_size":20,"size_variation":0,"delay":50000}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    let message: Vec<u8> = (0..100u8).collect();
    let started = Instant::now();
    stream.write_all(&message).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buffer = [0u8; 1000];
    while got.len() < message.len() {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "no early EOF");
        assert!(n % 20 == 0, "pieces are 20 bytes, read {n}");
        got.extend_from_slice(&buffer[..n]);
        reads += 1;
    }
    assert_eq!(got, message);
    assert!(reads >= 3, "one write came back in {reads} reads");
    assert!(started.elapsed() >= 195 * MS, "{:?}", started.elapsed());
}

#[tokio::test]
async fn limit_data_closes_after_the_limit() {
    // Claim: with a 100-byte downstream limit, exactly the first 100 bytes come back, then the end.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"limit_data","attributes":{"bytes":100}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    let message: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    stream.write_all(&message).await.unwrap();
    let (got, _) = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut stream))
        .await
        .expect("the connection ends");
    assert_eq!(got, message[..100]);
}

#[tokio::test]
async fn reset_peer_resets_the_connection() {
    // Claim: reset_peer ends the connection with an RST, which the client reads as ECONNRESET.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"reset_peer","attributes":{"timeout":100}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    stream.write_all(b"x").await.unwrap();
    let (_, end) = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut stream))
        .await
        .expect("the connection ends");
    assert_eq!(
        end.map_err(|err| err.kind()),
        Err(ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn timeout_zero_stalls_until_removed_then_closes() {
    // Claim: timeout 0 swallows data and holds the connection; removing it closes the connection.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"timeout","attributes":{"timeout":0}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    stream.write_all(b"ping").await.unwrap();
    let mut buffer = [0u8; 16];
    let stalled = tokio::time::timeout(700 * MS, stream.read(&mut buffer)).await;
    assert!(
        stalled.is_err(),
        "no data and no close while the toxic is present: {stalled:?}"
    );
    assert_eq!(
        delete(server.api, "/proxies/db/toxics/timeout_downstream")
            .await
            .status,
        204
    );
    let (got, end) = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut stream))
        .await
        .expect("the connection closes once the toxic is removed");
    assert!(got.is_empty(), "swallowed data stays swallowed");
    assert!(end.is_ok(), "a close, not a reset: {end:?}");
}

#[tokio::test]
async fn timeout_closes_after_its_time() {
    // Claim: timeout 300 closes the connection no sooner than 300 ms after it started acting.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"timeout","attributes":{"timeout":300}}"#,
    )
    .await;
    let started = Instant::now();
    let mut stream = connect(listen).await;
    stream.write_all(b"ping").await.unwrap();
    let (got, _) = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut stream))
        .await
        .expect("the connection closes");
    assert!(got.is_empty());
    assert!(started.elapsed() >= 299 * MS, "{:?}", started.elapsed());
}

#[tokio::test]
async fn slow_close_delays_the_close() {
    // Claim: the echo's close reaches the client no sooner than 300 ms after the data did.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"slow_close","attributes":{"delay":300}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    round_trip(&mut stream, b"bye").await;
    let started = Instant::now();
    stream.shutdown().await.unwrap();
    let (got, end) = tokio::time::timeout(Duration::from_secs(10), read_until_end(&mut stream))
        .await
        .expect("the close arrives");
    assert!(got.is_empty() && end.is_ok());
    let elapsed = started.elapsed();
    assert!(elapsed >= 299 * MS && elapsed < 3000 * MS, "{elapsed:?}");
}

#[tokio::test]
async fn toxicity_zero_never_applies() {
    // Claim: a 1 s latency toxic with toxicity 0 leaves every connection fast.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"latency","toxicity":0,"attributes":{"latency":1000}}"#,
    )
    .await;
    for _ in 0..10 {
        let mut stream = connect(listen).await;
        let rtt = round_trip(&mut stream, b"x").await;
        assert!(rtt < 900 * MS, "rtt {rtt:?}");
    }
}

#[tokio::test]
async fn down_refuses_new_connections_and_cuts_open_ones() {
    // Claim: enabled=false closes the listener and every open connection; true listens again on
    // the same address.
    let server = TestServer::start(1);
    let api = server.api;
    let listen = proxy_to_echo(&server).await;
    let mut open = connect(listen).await;
    round_trip(&mut open, b"x").await;

    assert_eq!(
        post(api, "/proxies/db", r#"{"enabled":false}"#)
            .await
            .status,
        200
    );
    let (_, _) = tokio::time::timeout(Duration::from_secs(5), read_until_end(&mut open))
        .await
        .expect("the open connection is cut");
    let refused = tokio::net::TcpStream::connect(listen).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|err| err.kind()),
        Err(ErrorKind::ConnectionRefused)
    );

    let reply = post(api, "/proxies/db", r#"{"enabled":true}"#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["listen"], listen.to_string());
    let mut again = connect(listen).await;
    round_trip(&mut again, b"y").await;
}

#[tokio::test]
async fn toxics_changed_live_act_on_open_connections() {
    // Claim: adding, updating and removing a toxic changes an already open connection.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let api = server.api;
    let listen = proxy_to_echo(&server).await;
    let mut stream = connect(listen).await;
    assert!(round_trip(&mut stream, b"a").await < 250 * MS);

    add_toxic(
        api,
        "db",
        r#"{"type":"latency","stream":"upstream","attributes":{"latency":300}}"#,
    )
    .await;
    let rtt = round_trip(&mut stream, b"b").await;
    assert!(rtt >= 299 * MS, "added: {rtt:?}");

    let reply = post(
        api,
        "/proxies/db/toxics/latency_upstream",
        r#"{"attributes":{"latency":600}}"#,
    )
    .await;
    assert_eq!(reply.status, 200);
    let rtt = round_trip(&mut stream, b"c").await;
    assert!(rtt >= 599 * MS, "updated: {rtt:?}");

    assert_eq!(
        delete(api, "/proxies/db/toxics/latency_upstream")
            .await
            .status,
        204
    );
    let rtt = round_trip(&mut stream, b"d").await;
    assert!(rtt < 250 * MS, "removed: {rtt:?}");
}

#[tokio::test]
async fn bulk_data_passes_intact_through_the_plain_path() {
    // Claim: the copy loop neither loses nor reorders bytes: 8 MiB of a pattern come back equal.
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    let stream = connect(listen).await;
    let (mut read, mut write) = stream.into_split();
    let message: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = message.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == message, "8 MiB came back equal");
}

#[tokio::test]
async fn bulk_data_passes_intact_through_a_slicer() {
    // Claim: the toxic path also keeps every byte in order (slices of ~1 kB, no delay).
    let server = TestServer::start(1);
    let listen = proxy_to_echo(&server).await;
    add_toxic(
        server.api,
        "db",
        r#"{"type":"slicer","attributes":{"average_size":1000,"size_variation":500,"delay":0}}"#,
    )
    .await;
    let stream = connect(listen).await;
    let (mut read, mut write) = stream.into_split();
    let message: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let sent = message.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == message, "1 MiB came back equal");
}
