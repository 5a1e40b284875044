//! Transport behaviour seen by a client: keep-alive, compact headers, split writes, UDP retransmissions, and the
//! bounds on connections (the cap, the first-message timeout).

use std::time::Duration;

use poolnode::frontend::{Credentials, FrontEndConfig};
use poolnode::sip::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Claim: `CRLF CRLF` is answered with `CRLF` and the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_ping_is_answered_with_crlf() {
    let server = Server::open().await;
    let mut client = TcpClient::connect(server.addr).await;
    client.send(b"\r\n\r\n").await;
    // Read raw: a framer cannot tell a lone CRLF from the start of a ping until more bytes come.
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, client.stream.read_exact(&mut pong))
        .await
        .expect("no pong in time")
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    assert_eq!(
        client
            .request(&options(server.addr, "alice"))
            .await
            .status_code
            .code(),
        200
    );
    server.stop().await;
}

/// Claim: compact header names are understood (here a REGISTER written entirely in compact form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_header_names_are_understood() {
    let server = Server::open().await;
    let mut client = TcpClient::connect(server.addr).await;
    let local = client.local();
    let text = format!(
        "REGISTER sip:{0} SIP/2.0\r\nv: SIP/2.0/TCP {local};branch=z9hG4bKcompact\r\nf: <sip:alice@pool.test>;tag=1\r\n\
         t: <sip:alice@pool.test>\r\ni: compact-1\r\nCSeq: 1 REGISTER\r\nm: <sip:alice@{local}>\r\nl: 0\r\n\r\n",
        server.addr
    );
    let response = client.request(&text).await;
    assert_eq!(response.status_code.code(), 200, "{response}");
    assert_eq!(value(&response, "Call-ID"), "compact-1");
    assert_eq!(
        server
            .frontend
            .store
            .bindings("alice", crate::registrar::now())
            .len(),
        1
    );
    server.stop().await;
}

/// Claim: a message written one byte at a time, and messages pipelined in one write, are each answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_pipelined_writes_are_framed() {
    let server = Server::open().await;
    let mut client = TcpClient::connect(server.addr).await;
    for byte in options(server.addr, "alice").as_bytes() {
        client.send(&[*byte]).await;
    }
    assert_eq!(client.response().await.status_code.code(), 200);
    let batch: String = (0..20).map(|_| options(server.addr, "alice")).collect();
    client.send(batch.as_bytes()).await;
    for _ in 0..20 {
        assert_eq!(client.response().await.status_code.code(), 200);
    }
    server.stop().await;
}

/// Claim: a retransmitted UDP REGISTER is answered with the first response, byte for byte, and applied once
/// (a second application would have said `refreshed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_retransmission_is_answered_from_the_transaction() {
    let server = Server::open().await;
    let client = UdpClient::bind(server.addr).await;
    let text = register(server.addr, "alice", client.local(), "UDP", 300, &[]);
    client.send(text.as_bytes()).await;
    let (_, first) = client.try_message(WAIT).await.expect("no answer");
    client.send(text.as_bytes()).await;
    let (_, second) = client
        .try_message(WAIT)
        .await
        .expect("no answer to the retransmission");
    assert_eq!(first, second);
    assert!(String::from_utf8_lossy(&first).contains("register-action=\"added\""));
    assert!(
        client
            .try_message(Duration::from_millis(300))
            .await
            .is_none(),
        "answered more than once"
    );
    server.stop().await;
}

/// Polls `done` every 10 ms until it holds; false after [`WAIT`].
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(WAIT, async {
        // Bounded by the timeout around it.
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

/// A new connection that sends an OPTIONS: `Some` (still open) when it is answered `200`, `None` when the server
/// closed it unanswered. Writes may fail on a connection the server already closed.
async fn answered_connection(server: std::net::SocketAddr) -> Option<TcpClient> {
    let mut client = TcpClient::connect(server).await;
    let _ = client
        .stream
        .write_all(options(server, "flood").as_bytes())
        .await;
    match client.frame().await {
        Some(poolnode::sip::Frame::Message(bytes)) => {
            let response = match poolnode::sip::message::parse(&bytes).unwrap() {
                rsip::SipMessage::Response(r) => r,
                other => panic!("expected a response, got {other}"),
            };
            assert_eq!(response.status_code.code(), 200, "{response}");
            Some(client)
        }
        None => None,
        Some(other) => panic!("expected a message, got {other:?}"),
    }
}

/// Claim: beyond `connections_max` accepted connections a new connection is closed unanswered, so the server's
/// connections stay at the cap however many come; once some close, new ones are served again.
/// Proof: 64 connections one after another against a cap of 8: exactly the first 8 are answered and the other 56
/// closed, the server's count of connections never above 8; after they close, the count is 0 and a new one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_the_server_serves_on() {
    const CAP: usize = 8;
    let server = Server::start(FrontEndConfig {
        credentials: Credentials::open(),
        transport: TransportConfig {
            connections_max: CAP,
            ..TransportConfig::default()
        },
        ..FrontEndConfig::default()
    })
    .await;
    let counts = server.frontend.config.transport.counts.clone();
    let (mut kept, mut closed) = (Vec::new(), 0);
    for _ in 0..64 {
        match answered_connection(server.addr).await {
            Some(client) => kept.push(client),
            None => closed += 1,
        }
        assert!(
            counts.connections() <= CAP,
            "{} connections open, cap {CAP}",
            counts.connections()
        );
    }
    println!(
        "64 connections against a cap of {CAP}: {} served, {closed} closed",
        kept.len()
    );
    assert_eq!(kept.len(), CAP);
    assert_eq!(closed, 64 - CAP);
    drop(kept);
    assert!(
        eventually(|| counts.connections() == 0).await,
        "closed connections still counted: {}",
        counts.connections()
    );
    server.assert_serving().await;
    server.stop().await;
}

/// Claim: an accepted connection that sends no complete message within `first_message_timeout` is closed, so
/// silent connections hold the cap only that long; a connection that sent a message is not subject to it.
/// Proof: with a cap of 4 and a 300 ms first-message timeout, one client talks and 20 stay silent: the count never
/// passes 4, every silent connection is closed (the first one, which surely got a place, no sooner than 300 ms
/// after it connected), and afterwards the talking connection and a new one are both served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_first_message_timeout() {
    const CAP: usize = 4;
    const FIRST_MESSAGE: Duration = Duration::from_millis(300);
    let server = Server::start(FrontEndConfig {
        credentials: Credentials::open(),
        transport: TransportConfig {
            connections_max: CAP,
            first_message_timeout: FIRST_MESSAGE,
            ..TransportConfig::default()
        },
        ..FrontEndConfig::default()
    })
    .await;
    let counts = server.frontend.config.transport.counts.clone();
    let mut talking = answered_connection(server.addr)
        .await
        .expect("the first connection is served");
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push((
            std::time::Instant::now(),
            TcpClient::connect(server.addr).await,
        ));
        assert!(counts.connections() <= CAP);
    }
    for (i, (connected, client)) in silent.iter_mut().enumerate() {
        assert!(client.closed().await, "silent connection {i} still open");
        if i == 0 {
            let lived = connected.elapsed();
            assert!(lived >= FIRST_MESSAGE, "closed after {lived:?}");
        }
        assert!(counts.connections() <= CAP);
    }
    assert!(
        eventually(|| counts.connections() == 1).await,
        "{} connections counted, only the talking one is open",
        counts.connections()
    );
    assert_eq!(
        talking
            .request(&options(server.addr, "talking"))
            .await
            .status_code
            .code(),
        200
    );
    server.assert_serving().await;
    server.stop().await;
}
