//! The peer port's bounds seen from outside: calls answered later in flight, and accepted connections. A test
//! speaks the peer link itself (4-byte length, JSON frames), as another Front End of the pool would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use poolnode::frontend::pool::wire::{Answer, Call};
use poolnode::sip::message::{header, uri_in};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Generous for a busy 2-core machine: the node answers in milliseconds.
const WAIT: Duration = Duration::from_secs(30);

/// One connection to a Front End's peer port, speaking as the pool's node `from`.
struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawPeer {
    async fn connect(addr: SocketAddr, from: &str) -> RawPeer {
        let mut peer = RawPeer {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        peer.send(&json!({"Hello": {"from": from}})).await;
        peer
    }

    async fn send(&mut self, frame: &Value) {
        let body = serde_json::to_vec(frame).unwrap();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        self.stream.write_all(&bytes).await.unwrap();
    }

    async fn call(&mut self, id: u64, call: &Call) {
        self.send(&json!({"Call": {"id": id, "call": call}})).await;
    }

    /// The next answer and the id of its call; panics after [`WAIT`] or at end of stream.
    async fn answer(&mut self) -> (u64, Answer) {
        tokio::time::timeout(WAIT, async {
            loop {
                if self.buf.len() >= 4 {
                    let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() >= 4 + len {
                        self.buf.advance(4);
                        let frame: Value = serde_json::from_slice(&self.buf.split_to(len)).unwrap();
                        let answer = &frame["Answer"];
                        return (
                            answer["id"].as_u64().expect("an answer frame"),
                            serde_json::from_value(answer["answer"].clone()).unwrap(),
                        );
                    }
                }
                let read = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(read > 0, "the peer connection closed");
            }
        })
        .await
        .expect("an answer in time")
    }
}

/// Claim: a Front End answers at most `peer_calls_in_flight_max` of its peers' calls later at once; a call beyond
/// is refused at once with the refusal its caller handles (`Unavailable`), while calls answered at once go on,
/// and once the calls in flight end, such calls are answered again.
/// Proof: 64 IM deliveries over one peer connection to a client that never answers, against a cap of 8: 56 are
/// answered `Unavailable` at once, 8 stay in flight, the count never above 8; a heartbeat on the same connection and a
/// REGISTER over SIP are answered meanwhile; after the client's connection closes, the count is 0 and a delivery
/// is answered by the client's absence (`480`), not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_beyond_the_cap_are_refused_at_once_and_the_front_end_serves_on() {
    const CAP: usize = 8;
    const FLOOD: u64 = 64;
    let pool = TestPool::start_all_with(3, timings(60_000), |settings| {
        settings.peer_calls_in_flight_max = CAP;
    })
    .await;
    pool.settled().await;
    let fe1 = pool.pool(0);
    let mut bob = TcpClient::connect(pool.sip[0]).await;
    let bob_contact = bob.local();
    let registered = register_as(&mut bob, pool.sip[0], "bob", bob_contact).await;
    assert_eq!(registered.status_code.code(), 200, "{registered}");
    let contact = uri_in(header(&registered.headers, "Contact").unwrap()).to_owned();
    let im = request(
        "MESSAGE",
        "sip:bob@pool.test",
        "alice",
        "bob",
        pool.sip[1],
        "TCP",
        &["Content-Type: text/plain".into()],
        "hello",
    );
    let deliver = Call::Deliver {
        user: "bob".into(),
        contact: contact.clone(),
        message: im,
        timeout_ms: 120_000,
    };

    let mut peer = RawPeer::connect(pool.peer_address(0), "fe2").await;
    for id in 1..=FLOOD {
        peer.call(id, &deliver).await;
    }
    let mut refused = 0;
    // Bounded: one answer per refused call; the ones in flight wait for bob, who does not answer.
    while refused < FLOOD as usize - CAP {
        match peer.answer().await {
            (_, Answer::Unavailable { .. }) => refused += 1,
            other => panic!("a delivery answered before bob did: {other:?}"),
        }
        assert!(fe1.peer_calls_in_flight() <= CAP);
    }
    assert_eq!(fe1.peer_calls_in_flight(), CAP);
    println!(
        "{FLOOD} deliveries against a cap of {CAP}: {refused} refused at once, {CAP} in flight"
    );

    peer.call(1_000, &Call::Changed { user: "bob".into() })
        .await;
    let (id, answer) = peer.answer().await;
    assert!(matches!((id, answer), (1_000, Answer::Done)));
    let mut alice = TcpClient::connect(pool.sip[0]).await;
    let alice_contact = alice.local();
    assert_eq!(
        register_as(&mut alice, pool.sip[0], "alice", alice_contact)
            .await
            .status_code
            .code(),
        200
    );

    drop(bob);
    for _ in 0..CAP {
        let (id, answer) = peer.answer().await;
        assert!(
            id <= CAP as u64,
            "the first {CAP} deliveries were in flight: {id}"
        );
        assert!(matches!(answer, Answer::Delivered { .. }), "{answer:?}");
    }
    pool.until("the deliveries to bob are no longer counted", |p| {
        p.pool(0).peer_calls_in_flight() == 0
    })
    .await;
    peer.call(2_000, &deliver).await;
    let (id, answer) = peer.answer().await;
    assert_eq!(id, 2_000);
    assert!(
        matches!(answer, Answer::Delivered { .. }),
        "answered by bob's absence, not refused: {answer:?}"
    );
}

/// Claim: a Front End keeps at most `peer_connections_max` accepted peer connections; one more is closed at once,
/// and the pool serves on over the connections it has.
/// Proof: 20 silent connections to fe1's peer port against a cap of 4 (two taken by fe2 and fe3): the count never
/// passes 4 and at least 16 are closed at once; a REGISTER at fe1 whose routing group's primary is elsewhere is
/// answered; once the silent connections go, the count is back to what the pool's own links take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_beyond_the_cap_are_closed_and_the_pool_serves_on() {
    const CAP: usize = 4;
    const FLOOD: usize = 20;
    let pool = TestPool::start_all_with(3, timings(60_000), |settings| {
        settings.peer_connections_max = CAP;
    })
    .await;
    pool.settled().await;
    let fe1 = pool.pool(0);
    let links = fe1.peer_connections();
    assert!(links <= CAP);
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(pool.peer_address(0)).await.unwrap();
        assert!(fe1.peer_connections() <= CAP);
        // Each connection is watched for a close, and kept open (with its stream) when none comes.
        flood.spawn(async move {
            let mut scratch = [0u8; 64];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut scratch)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            (closed, stream)
        });
    }
    let mut kept = Vec::new();
    while let Some(watched) = flood.join_next().await {
        let (closed, stream) = watched.unwrap();
        if !closed {
            kept.push(stream);
        }
        assert!(fe1.peer_connections() <= CAP);
    }
    let closed = FLOOD - kept.len();
    println!(
        "{FLOOD} connections to a peer port with {links} of {CAP} taken: {closed} closed at once"
    );
    assert!(closed >= FLOOD - CAP, "{closed} closed");
    assert!(fe1.peer_connections() <= CAP);

    let group = (0..pool.groups())
        .find(|g| pool.accepting_primaries(*g).iter().all(|(i, _)| *i != 0))
        .expect("a group whose primary is not fe1");
    let user = pool.user_in(group, 0);
    let mut client = TcpClient::connect(pool.sip[0]).await;
    let contact = client.local();
    let registered = register_as(&mut client, pool.sip[0], &user, contact).await;
    assert_eq!(registered.status_code.code(), 200, "{registered}");
    assert!(fe1.peer_connections() <= CAP);

    drop(kept);
    pool.until("the silent connections are no longer counted", |p| {
        p.pool(0).peer_connections() <= links
    })
    .await;
}

/// Whether the node closes `stream` within `within`, having sent nothing on it.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Claim: a Front End closes an accepted peer connection whose hello is not complete within `peer_hello_timeout`,
/// whether it sent nothing, part of a frame, or a complete frame that is not a hello, counts it, and its peers'
/// links and a well-behaved peer are served on.
/// Proof: with a 500 ms deadline, three such connections to fe1's peer port are closed (the last after the deadline,
/// well before 10 s); fe1 counts 3 connections without hello (also in `/status`) and no longer counts them open; then a
/// raw peer that says hello gets its call answered after the deadline has passed, and a REGISTER at fe1 whose
/// routing group's primary is elsewhere is answered over the pool's links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_without_a_hello_in_time_are_closed_and_the_pool_serves_on() {
    const DEADLINE: Duration = Duration::from_millis(500);
    let pool = TestPool::start_all_with(3, timings(60_000), |settings| {
        settings.peer_hello_timeout = DEADLINE;
    })
    .await;
    pool.settled().await;
    let fe1 = pool.pool(0);
    let links = fe1.peer_connections();
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(pool.peer_address(0)).await.unwrap();
    let mut partial = TcpStream::connect(pool.peer_address(0)).await.unwrap();
    partial.write_all(&1_000u32.to_be_bytes()).await.unwrap();
    partial.write_all(&[b'{'; 10]).await.unwrap();
    let mut not_hello = TcpStream::connect(pool.peer_address(0)).await.unwrap();
    let garbage = b"GET / HTTP/1.1\r\n\r\n";
    not_hello
        .write_all(&(garbage.len() as u32).to_be_bytes())
        .await
        .unwrap();
    not_hello.write_all(garbage).await.unwrap();
    for stream in [&mut silent, &mut partial, &mut not_hello] {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "closed by fe1"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= DEADLINE,
        "closed after the deadline: {elapsed:?}"
    );
    pool.until(
        "the connections without hello are counted and no longer open",
        |p| {
            let fe1 = p.pool(0);
            fe1.peer_connections_without_hello() == 3 && fe1.peer_connections() <= links
        },
    )
    .await;
    assert_eq!(pool.status(0)["peer_connections_without_hello"], 3);

    let mut peer = RawPeer::connect(pool.peer_address(0), "fe2").await;
    tokio::time::sleep(DEADLINE * 2).await;
    peer.call(1, &Call::Changed { user: "bob".into() }).await;
    let (id, answer) = peer.answer().await;
    assert!(matches!((id, answer), (1, Answer::Done)));
    assert_eq!(fe1.peer_connections_without_hello(), 3);

    let group = (0..pool.groups())
        .find(|g| pool.accepting_primaries(*g).iter().all(|(i, _)| *i != 0))
        .expect("a group whose primary is not fe1");
    let user = pool.user_in(group, 0);
    let mut client = TcpClient::connect(pool.sip[0]).await;
    let contact = client.local();
    let registered = register_as(&mut client, pool.sip[0], &user, contact).await;
    assert_eq!(registered.status_code.code(), 200, "{registered}");
}

/// Claim: an IM refused because the Front End holding the recipient's connection is at `peer_calls_in_flight_max`
/// gets `503` with `Retry-After`, like the pool's other refusals under load, and IMs flow again once the calls in
/// flight end.
/// Proof: against a cap of 2, bob registered at fe1 never answers; alice at fe2 sends 3 IMs to bob: the third is
/// answered `503` with `Retry-After: 5` (the Front End's `retry_after`) while the first two
/// wait; once bob's connection closes, those two are answered (not `503`) and a fourth IM is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_im_refused_at_the_peer_call_cap_gets_503_with_retry_after() {
    const CAP: usize = 2;
    let pool = TestPool::start_all_with(3, timings(60_000), |settings| {
        settings.peer_calls_in_flight_max = CAP;
    })
    .await;
    pool.settled().await;
    let mut bob = TcpClient::connect(pool.sip[0]).await;
    let bob_contact = bob.local();
    let registered = register_as(&mut bob, pool.sip[0], "bob", bob_contact).await;
    assert_eq!(registered.status_code.code(), 200, "{registered}");
    let mut alice = TcpClient::connect(pool.sip[1]).await;
    let im = |alice: &TcpClient| {
        request(
            "MESSAGE",
            "sip:bob@pool.test",
            "alice",
            "bob",
            alice.local(),
            "TCP",
            &["Content-Type: text/plain".into()],
            "hello",
        )
    };
    for _ in 0..CAP {
        alice.send(im(&alice).as_bytes()).await;
    }
    pool.until("both IMs are in flight at fe1", |p| {
        p.pool(0).peer_calls_in_flight() == CAP
    })
    .await;
    alice.send(im(&alice).as_bytes()).await;
    let refused = alice.response().await;
    assert_eq!(refused.status_code.code(), 503, "{refused}");
    assert_eq!(value(&refused, "Retry-After"), "5", "{refused}");

    drop(bob);
    for _ in 0..CAP {
        let answered = alice.response().await;
        assert_ne!(answered.status_code.code(), 503, "{answered}");
    }
    pool.until("the deliveries to bob are no longer counted", |p| {
        p.pool(0).peer_calls_in_flight() == 0
    })
    .await;
    alice.send(im(&alice).as_bytes()).await;
    let after = alice.response().await;
    assert_ne!(
        after.status_code.code(),
        503,
        "not refused once the calls ended: {after}"
    );
}
