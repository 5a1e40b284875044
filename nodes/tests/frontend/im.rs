//! IM relay: MESSAGE reaches the recipient's registered connection; the sender's 200 follows the recipient's 200.

use std::time::Duration;

use poolnode::frontend::{Credentials, FrontEndConfig};
use rsip::Method;

use crate::support::*;

fn im(
    _server: std::net::SocketAddr,
    from: &str,
    to: &str,
    via: std::net::SocketAddr,
    transport: &str,
    text: &str,
) -> String {
    request(
        "MESSAGE",
        &format!("sip:{to}@pool.test"),
        from,
        to,
        via,
        transport,
        &["Content-Type: text/plain".into()],
        text,
    )
}

/// Claim: an IM between two authenticated users arrives with its body, and the sender's 200 comes only after the
/// recipient answered (the recipient holds its answer; the sender must see nothing meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_is_relayed_and_acknowledged_only_after_delivery() {
    let server = Server::with_users().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let mut bob = TcpClient::connect(server.addr).await;
    assert_eq!(
        register_tcp(server.addr, &mut alice, "alice", "alice-pw")
            .await
            .status_code
            .code(),
        200
    );
    assert_eq!(
        register_tcp(server.addr, &mut bob, "bob", "bob-pw")
            .await
            .status_code
            .code(),
        200
    );

    // Trusted on the flow alice registered over: no new challenge.
    alice
        .send(
            im(
                server.addr,
                "alice",
                "bob",
                alice.local(),
                "TCP",
                "hello bob",
            )
            .as_bytes(),
        )
        .await;
    let relayed = bob.incoming().await;
    assert_eq!(relayed.method, Method::Message);
    assert_eq!(relayed.body, b"hello bob");
    assert!(
        relayed.uri.to_string().contains(&bob.local().to_string()),
        "sent to bob's contact: {}",
        relayed.uri
    );

    let early = tokio::time::timeout(Duration::from_millis(500), alice.response()).await;
    assert!(
        early.is_err(),
        "alice got an answer before bob's client answered"
    );
    bob.answer(&relayed, 200).await;
    assert_eq!(alice.response().await.status_code.code(), 200);
    server.stop().await;
}

/// Claim: an IM from a user on a flow it never registered over, without credentials, is challenged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_from_an_unregistered_flow_is_challenged() {
    let server = Server::with_users().await;
    let mut stranger = TcpClient::connect(server.addr).await;
    let response = stranger
        .request(&im(
            server.addr,
            "alice",
            "bob",
            stranger.local(),
            "TCP",
            "hi",
        ))
        .await;
    assert_eq!(response.status_code.code(), 401);
    server.stop().await;
}

/// Claim: a recipient with no registration gets the sender a 480.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_an_unregistered_user_gets_480() {
    let server = Server::open().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let response = alice
        .request(&im(
            server.addr,
            "alice",
            "carol",
            alice.local(),
            "TCP",
            "anyone?",
        ))
        .await;
    assert_eq!(response.status_code.code(), 480);
    server.stop().await;
}

/// Claim: a recipient whose connection closed is unreachable: 480, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_a_closed_connection_gets_480() {
    let server = Server::open().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let mut bob = TcpClient::connect(server.addr).await;
    bob.request(&register(server.addr, "bob", bob.local(), "TCP", 300, &[]))
        .await;
    drop(bob);
    // The server notices the close asynchronously; poll with fresh IMs.
    for _ in 0..100 {
        let response = alice
            .request(&im(
                server.addr,
                "alice",
                "bob",
                alice.local(),
                "TCP",
                "gone?",
            ))
            .await;
        if response.status_code.code() == 480 {
            return server.stop().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("IM to a closed connection never got 480");
}

/// Claim: a recipient that never answers gets the sender a 408 after the IM answer timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_without_an_answer_gets_408() {
    let server = Server::start(FrontEndConfig {
        credentials: Credentials::open(),
        im_answer_timeout: Duration::from_secs(1),
        ..FrontEndConfig::default()
    })
    .await;
    let mut alice = TcpClient::connect(server.addr).await;
    let mut bob = TcpClient::connect(server.addr).await;
    bob.request(&register(server.addr, "bob", bob.local(), "TCP", 300, &[]))
        .await;
    let response = alice
        .request(&im(
            server.addr,
            "alice",
            "bob",
            alice.local(),
            "TCP",
            "silence",
        ))
        .await;
    assert_eq!(response.status_code.code(), 408);
    let unanswered = bob.incoming().await;
    assert_eq!(unanswered.body, b"silence");
    server.stop().await;
}

/// Claim: a recipient's refusal is passed on to the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_refused_by_the_recipient_passes_the_refusal_on() {
    let server = Server::open().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let mut bob = TcpClient::connect(server.addr).await;
    bob.request(&register(server.addr, "bob", bob.local(), "TCP", 300, &[]))
        .await;
    alice
        .send(im(server.addr, "alice", "bob", alice.local(), "TCP", "spam").as_bytes())
        .await;
    let relayed = bob.incoming().await;
    bob.answer(&relayed, 486).await;
    assert_eq!(alice.response().await.status_code.code(), 486);
    server.stop().await;
}

/// Claim: IM works over UDP both ways: a UDP sender, a UDP recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_is_relayed_over_udp() {
    let server = Server::open().await;
    let alice = UdpClient::bind(server.addr).await;
    let bob = UdpClient::bind(server.addr).await;
    let registered = bob
        .request(&register(server.addr, "bob", bob.local(), "UDP", 300, &[]))
        .await;
    assert_eq!(registered.status_code.code(), 200);
    alice
        .send(
            im(
                server.addr,
                "alice",
                "bob",
                alice.local(),
                "UDP",
                "over udp",
            )
            .as_bytes(),
        )
        .await;
    let (relayed, _) = bob.try_message(WAIT).await.expect("bob got nothing");
    let rsip::SipMessage::Request(relayed) = relayed else {
        panic!("bob got a response")
    };
    assert_eq!(relayed.body, b"over udp");
    let answer = poolnode::sip::message::response(&relayed, 200, "OK");
    bob.socket
        .send_to(&poolnode::sip::message::encode(answer), server.addr)
        .await
        .unwrap();
    assert_eq!(alice.response().await.status_code.code(), 200);
    server.stop().await;
}
