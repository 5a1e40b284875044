//! The Edge pool in-process over real sockets: a remote user signs in through an Edge server (Director's 301,
//! then the Front End it names), exchanges IMs and gets presence through it, moves to another Edge server when
//! its Edge server dies, the next hop changes only with the admin token, and client connections beyond
//! `clients_max` are closed. [`pool`]: remote users of a Front End pool of 3 exchanging IMs.

#[path = "../director/roles.rs"]
mod roles;

#[path = "../frontend/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End tests' client is shared; the pool support needs part of it"
)]
mod client;
#[path = "../frontend_pool/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End pool tests' support is shared; this binary uses part of it"
)]
mod pool_support;

mod pool;

use std::sync::Arc;
use std::time::Duration;

use poolnode::director::{self, DirectorConfig, Resolver};
use poolnode::edge::{self, EdgeConfig};
use poolnode::frontend::{self, Credentials, FrontEnd, FrontEndConfig};
use poolnode::sip::message::{self, header, split_list, uri_in};
use roles::*;
use rsip::{Method, SipMessage};

/// A Front End (pool fe1), Director pools `dir` and `dirb`, and two Edge servers of pool `edge`.
struct Net {
    fe: Running,
    dir: Running,
    dirb: Running,
    edges: Vec<Running>,
}

impl Net {
    async fn start() -> Net {
        Net::start_with(|_| {}).await
    }

    /// The network with each Edge server's settings finished by `configure`.
    async fn start_with(configure: impl Fn(&mut EdgeConfig)) -> Net {
        let credentials = Credentials::from_pairs([
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ]);
        let fe = Running::start(move |l, stop| async move {
            let config = FrontEndConfig {
                credentials,
                ..FrontEndConfig::default()
            };
            frontend::serve(l.sip, Arc::new(FrontEnd::new(config)), stop).await
        })
        .await;
        let dir = Running::start(|l, stop| {
            director::run(l, DirectorConfig::new(identity("dir1", "director")), stop)
        })
        .await;
        let dirb = Running::start(|l, stop| {
            director::run(l, DirectorConfig::new(identity("dirb1", "director")), stop)
        })
        .await;
        let resolver = Resolver::dns()
            .pin("fe1", vec![fe.sip])
            .pin("dir", vec![dir.sip])
            .pin("dirb", vec![dirb.sip]);
        let mut edges = Vec::new();
        for node in ["edge1", "edge2"] {
            let mut config = EdgeConfig::new(identity(node, "edge"), resolver.clone());
            configure(&mut config);
            edges.push(Running::start(move |l, stop| edge::run(l, config, stop)).await);
        }
        Net {
            fe,
            dir,
            dirb,
            edges,
        }
    }

    async fn stop(mut self) {
        for e in &mut self.edges {
            e.kill().await;
        }
        self.dir.kill().await;
        self.dirb.kill().await;
        self.fe.kill().await;
    }
}

/// A remote user's sign-in through an Edge connection: REGISTER to the domain (relayed to the Director: 401,
/// then 301), then REGISTER with the Request-URI set to the primary registrar the 301 named (relayed to that
/// Front End pool: 401, then 200). Returns the 301's Contact and the final answer.
async fn sign_in(conn: &mut Conn, user: &str) -> (String, rsip::Response) {
    let contact = format!("{user}.invalid");
    let password = format!("{user}-pw");
    let first = conn
        .request(&register("sip:pool.test", user, &contact, &[]))
        .await;
    assert_eq!(
        first.status_code.code(),
        401,
        "the Director challenges: {first}"
    );
    let redirect =
        answer_challenge_as(conn, &first, "sip:pool.test", user, &password, &contact).await;
    assert_eq!(redirect.status_code.code(), 301, "{redirect}");
    let contacts = value(&redirect, "Contact").to_owned();
    let registrar = uri_in(&split_list(&contacts)[0]).to_owned();
    let first = conn
        .request(&register(&registrar, user, &contact, &[]))
        .await;
    assert_eq!(
        first.status_code.code(),
        401,
        "the Front End challenges: {first}"
    );
    let done = answer_challenge_as(conn, &first, &registrar, user, &password, &contact).await;
    (contacts, done)
}

#[tokio::test]
async fn a_remote_user_signs_in_through_the_edge_and_exchanges_ims_and_presence() {
    // Claim: everything a remote user does passes through its one Edge connection: sign-in via the Director's
    // 301, an IM out (delivered to bob's client), an IM in and a presence NOTIFY (both arriving on the Edge
    // connection). Each is checked at the receiving client, so relaying in both directions is proven.
    let net = Net::start().await;
    let mut alice = Conn::connect(net.edges[0].sip).await;
    let (contacts, registered) = sign_in(&mut alice, "alice").await;
    assert_eq!(
        contacts,
        "<sip:fe1:5060;transport=tcp>;q=0.7, <sip:fe2:5060;transport=tcp>;q=0.3"
    );
    assert_eq!(registered.status_code.code(), 200, "{registered}");
    let status = status(net.edges[0].admin).await;
    assert_eq!(
        (
            status["role"].as_str(),
            status["node"].as_str(),
            status["next_hop"].as_str(),
            status["clients"].as_u64()
        ),
        (Some("edge"), Some("edge1"), Some("dir"), Some(1))
    );

    let mut bob = Conn::connect(net.fe.sip).await;
    let bob_registered = register_with_auth(&mut bob, "sip:pool.test", "bob", "bob-pw").await;
    assert_eq!(bob_registered.status_code.code(), 200);

    // Out: alice → bob.
    let im = request(
        "MESSAGE",
        "sip:bob@pool.test",
        "alice",
        "bob",
        "alice.invalid",
        &["Content-Type: text/plain".into()],
        "hi bob",
    );
    alice.send(im.as_bytes()).await;
    let delivered = bob.incoming().await;
    assert_eq!(delivered.method, Method::Message);
    assert_eq!(delivered.body, b"hi bob");
    bob.answer(&delivered, 200, &[]).await;
    assert_eq!(
        alice.final_response().await.status_code.code(),
        200,
        "alice's IM acknowledged"
    );

    // In: bob → alice, over alice's Edge connection.
    let im = request(
        "MESSAGE",
        "sip:alice@pool.test",
        "bob",
        "alice",
        bob.local(),
        &["Content-Type: text/plain".into()],
        "hi alice",
    );
    bob.send(im.as_bytes()).await;
    let delivered = alice.incoming().await;
    assert_eq!(delivered.body, b"hi alice");
    assert_eq!(
        message::headers_all(&delivered.headers, "Via").len(),
        3,
        "Edge, Front End and bob's Via"
    );
    alice.answer(&delivered, 200, &[]).await;
    assert_eq!(
        bob.final_response().await.status_code.code(),
        200,
        "bob's IM acknowledged by alice"
    );

    // Presence: alice watches bob; the NOTIFY comes down the Edge connection.
    let subscribe = request(
        "SUBSCRIBE",
        "sip:bob@pool.test",
        "alice",
        "bob",
        "alice.invalid",
        &[
            "Event: presence".into(),
            "Expires: 300".into(),
            "Contact: <sip:alice@alice.invalid;transport=tcp>".into(),
        ],
        "",
    );
    alice.send(subscribe.as_bytes()).await;
    let (mut subscribed, mut notified) = (false, false);
    // Bounded: the 200 and the NOTIFY, in either order.
    for _ in 0..2 {
        match alice.message().await {
            SipMessage::Response(r) => {
                assert_eq!(r.status_code.code(), 200, "{r}");
                subscribed = true;
            }
            SipMessage::Request(n) => {
                assert_eq!(n.method, Method::Notify);
                assert_eq!(header(&n.headers, "Event"), Some("presence"));
                alice.answer(&n, 200, &[]).await;
                notified = true;
            }
        }
    }
    assert!(subscribed && notified);
    net.stop().await;
}

#[tokio::test]
async fn a_remote_user_moves_to_another_edge_server_when_its_edge_server_dies() {
    // Claim: killing alice's Edge server closes her connection at once; she signs in again through the next
    // address of the Edge pool name within a bound, and IMs reach her there. Measured from the kill.
    let mut net = Net::start().await;
    let pool = [net.edges[0].sip, net.edges[1].sip];
    let mut alice = Conn::connect(pool[0]).await;
    assert_eq!(sign_in(&mut alice, "alice").await.1.status_code.code(), 200);
    let killed = tokio::time::Instant::now();
    net.edges[0].kill().await;
    assert!(
        alice.closes_within(WAIT).await,
        "the dead Edge server's connection closes"
    );
    let noticed = killed.elapsed();
    let mut again = None;
    for addr in pool {
        if let Some(conn) = Conn::try_connect(addr).await {
            again = Some(conn);
            break;
        }
    }
    let mut alice = again.expect("the other Edge server accepts");
    let (_, registered) = sign_in(&mut alice, "alice").await;
    assert_eq!(registered.status_code.code(), 200);
    let back = killed.elapsed();
    println!("edge failover: connection loss noticed after {noticed:?}, signed in through edge2 after {back:?}");
    assert!(
        back < Duration::from_secs(5),
        "signed in again within 5 s (took {back:?})"
    );

    let mut bob = Conn::connect(net.fe.sip).await;
    assert_eq!(
        register_with_auth(&mut bob, "sip:pool.test", "bob", "bob-pw")
            .await
            .status_code
            .code(),
        200
    );
    let im = request(
        "MESSAGE",
        "sip:alice@pool.test",
        "bob",
        "alice",
        bob.local(),
        &[],
        "after failover",
    );
    bob.send(im.as_bytes()).await;
    let delivered = alice.incoming().await;
    assert_eq!(delivered.body, b"after failover");
    alice.answer(&delivered, 200, &[]).await;
    assert_eq!(bob.final_response().await.status_code.code(), 200);
    assert_eq!(status(net.edges[1].admin).await["clients"], 1);
    net.stop().await;
}

#[tokio::test]
async fn the_next_hop_changes_only_with_the_admin_token() {
    // Claim: `edge-next-hop` without the token is refused 401 and changes nothing; with it the next hop becomes
    // `dirb` (in /status, and new sign-ins are challenged by dirb's Director); a pool that is no Director is
    // refused 400.
    let net = Net::start().await;
    let admin = net.edges[0].admin;
    let (code, _) = http(
        admin,
        "POST",
        "/admin/edge-next-hop",
        None,
        r#"{"next_hop":"dirb"}"#,
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(
        status(admin).await["next_hop"],
        "dir",
        "a refused command changes nothing"
    );
    let (code, _) = http(
        admin,
        "POST",
        "/admin/edge-next-hop",
        Some(TOKEN),
        r#"{"next_hop":"fe1"}"#,
    )
    .await;
    assert_eq!(code, 400, "a Front End pool is no next hop");
    let outcomes =
        poolnode::edge::operator::set_next_hop(&[admin.to_string()], "dirb", TOKEN).await;
    assert_eq!(
        outcomes[0].1.as_ref().map(|(c, _)| *c),
        Ok(200),
        "{outcomes:?}"
    );
    assert_eq!(status(admin).await["next_hop"], "dirb");

    let mut carol = Conn::connect(net.edges[0].sip).await;
    let first = carol
        .request(&register("sip:pool.test", "carol", "carol.invalid", &[]))
        .await;
    assert_eq!(first.status_code.code(), 401);
    assert_eq!(
        status(net.dirb.admin).await["challenged"],
        1,
        "dirb's Director answered"
    );
    assert_eq!(status(net.dir.admin).await["challenged"], 0);
    net.stop().await;
}

#[tokio::test]
async fn malformed_input_at_the_edge_gets_400_and_the_connection_serves_on() {
    // Claim: the Edge frames and checks with the shared codec before relaying: a request without Call-ID gets 400
    // from the Edge itself, and the same connection then relays an OPTIONS to the Director (200).
    let net = Net::start().await;
    let mut conn = Conn::connect(net.edges[0].sip).await;
    let bad = "OPTIONS sip:dir SIP/2.0\r\nVia: SIP/2.0/TCP x.invalid;branch=z9hG4bKa\r\n\
               From: <sip:a@pool.test>;tag=1\r\nTo: <sip:a@pool.test>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(conn.request(bad).await.status_code.code(), 400);
    let ok = conn
        .request(&request(
            "OPTIONS",
            "sip:dir",
            "a",
            "a",
            "x.invalid",
            &[],
            "",
        ))
        .await;
    assert_eq!(ok.status_code.code(), 200, "{ok}");
    assert_eq!(
        value(&ok, "Allow"),
        poolnode::director::server::ALLOW,
        "answered by the Director"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_beyond_the_cap_are_closed_and_the_edge_relays_on() {
    // Claim: an Edge server relays at most `clients_max` client connections; one more is closed at once, and once
    // connections go, a remote user signs in through it again.
    // Proof: 40 connections one after another against a cap of 4, each sending an OPTIONS: exactly 4 answered and
    // 36 closed, `/status` never counting more than 4 clients; after they close the count is 0 and alice signs in.
    const CAP: usize = 4;
    const FLOOD: usize = 40;
    let net = Net::start_with(|config| config.clients_max = CAP).await;
    let edge = &net.edges[0];
    let (mut kept, mut closed) = (Vec::new(), 0);
    for _ in 0..FLOOD {
        let mut conn = Conn::connect(edge.sip).await;
        let options = request(
            "OPTIONS",
            "sip:pool.test",
            "probe",
            "probe",
            conn.local(),
            &[],
            "",
        );
        // A write may fail on a connection the Edge already closed; the read tells.
        let _ = conn.try_send(options.as_bytes()).await;
        match conn.read(WAIT).await {
            Read::Message(SipMessage::Response(r)) => {
                assert_eq!(r.status_code.code(), 200, "{r}");
                kept.push(conn);
            }
            Read::Closed => closed += 1,
            other => panic!("neither answered nor closed: {other:?}"),
        }
        let clients = status(edge.admin).await["clients"].as_u64().unwrap();
        assert!(clients <= CAP as u64, "{clients} clients, cap {CAP}");
    }
    println!(
        "{FLOOD} connections against an Edge cap of {CAP}: {} relayed, {closed} closed",
        kept.len()
    );
    assert_eq!((kept.len(), closed), (CAP, FLOOD - CAP));
    drop(kept);
    assert!(
        eventually(WAIT, || async {
            status(edge.admin).await["clients"].as_u64() == Some(0)
        })
        .await,
        "closed connections still counted"
    );
    let mut alice = Conn::connect(edge.sip).await;
    let (_, done) = sign_in(&mut alice, "alice").await;
    assert_eq!(done.status_code.code(), 200, "{done}");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_connections_are_closed_after_the_first_message_timeout() {
    // Claim: a client connection none of whose requests went upstream within `first_message_timeout` is closed, so
    // silent connections hold the cap only that long; a connection that sent a request is not subject to it.
    // Proof: with a 300 ms timeout, a silent connection is closed, no sooner than 300 ms after it connected, while a
    // connection whose OPTIONS was relayed is still relayed afterwards; `/status` then counts only that one.
    const FIRST_MESSAGE: Duration = Duration::from_millis(300);
    let net = Net::start_with(|config| config.first_message_timeout = FIRST_MESSAGE).await;
    let edge = &net.edges[0];
    let options = |conn: &Conn| {
        request(
            "OPTIONS",
            "sip:pool.test",
            "probe",
            "probe",
            conn.local(),
            &[],
            "",
        )
    };
    let mut talking = Conn::connect(edge.sip).await;
    let first = options(&talking);
    assert_eq!(talking.request(&first).await.status_code.code(), 200);
    let connected = tokio::time::Instant::now();
    let mut silent = Conn::connect(edge.sip).await;
    assert!(
        silent.closes_within(WAIT).await,
        "the silent connection is closed"
    );
    let lived = connected.elapsed();
    assert!(lived >= FIRST_MESSAGE, "closed after {lived:?}");
    let again = options(&talking);
    assert_eq!(talking.request(&again).await.status_code.code(), 200);
    assert!(
        eventually(WAIT, || async {
            status(edge.admin).await["clients"].as_u64() == Some(1)
        })
        .await
    );
    net.stop().await;
}
