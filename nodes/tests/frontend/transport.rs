//! Transport behaviour seen by a client: keep-alive, compact headers, split writes, UDP retransmissions.

use std::time::Duration;

use tokio::io::AsyncReadExt;

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
