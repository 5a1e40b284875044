//! The peer port's bounds: a Back End node keeps at most `peer_connections_max` accepted connections, whatever
//! connects, and closes one whose first request is not complete within `peer_first_frame_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use poolnode::backend::protocol::{PeerConn, Request, Response};
use poolnode::backend::{Backend, BackendConfig, Listeners};
use poolnode::cluster::{ClusterConfig, PoolConfig, Timings};

use crate::support::{P1, P2, TOKEN, WAIT};

/// A lone Back End node `be-1` (its partner never started) on 127.0.0.1, with its bounds set by `configure`.
async fn lone_node(
    configure: impl FnOnce(&mut BackendConfig),
) -> (Arc<Backend>, std::net::SocketAddr, std::path::PathBuf) {
    let cluster = Arc::new(ClusterConfig {
        name: "peer-port-test".into(),
        timings: Timings::fast(),
        pools: vec![PoolConfig {
            name: "be".into(),
            role: "backend".into(),
            site: "site1".into(),
            nodes: vec![P1.into(), P2.into()],
            pair: None,
            backend: None,
            witness: None,
            next_hop: None,
            gateway: None,
        }],
        users: vec![],
        routes: vec![],
        admin_token: TOKEN.into(),
    });
    let root = std::env::temp_dir().join(format!(
        "poolnode-peer-port-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut config = BackendConfig::new(cluster, P1, root.join(P1));
    configure(&mut config);
    let backend = Backend::open(&config).unwrap();
    let listeners = Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let peer = listeners.peer.local_addr().unwrap();
    let running = backend.clone();
    tokio::spawn(async move {
        let _ = running.run(listeners, std::future::pending()).await;
    });
    (backend, peer, root)
}

/// A `View` request on a new connection: `Some` (the connection, still open) when answered, `None` when the node
/// closed it.
async fn answered(peer: std::net::SocketAddr) -> Option<PeerConn> {
    let conn = PeerConn::new(P1, peer.to_string());
    match conn.request(&Request::View, WAIT).await {
        Ok(Response::Pong(_)) => Some(conn),
        Ok(other) => panic!("expected the node's view, got {other:?}"),
        Err(_) => None,
    }
}

/// Claim: a Back End node keeps at most `peer_connections_max` accepted connections; one more is closed at once,
/// and once connections go, new ones are served.
/// Proof: 40 connections one after another against a cap of 4, each asking the node's view: exactly 4 answered and
/// 36 closed, the node's count (also in `/status`) never above 4; after they close the count is 0 and a new
/// connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_beyond_the_cap_are_closed_and_the_node_serves_on() {
    const CAP: usize = 4;
    const FLOOD: usize = 40;
    let (backend, peer, root) = lone_node(|config| config.peer_connections_max = CAP).await;
    let (mut kept, mut closed) = (Vec::new(), 0);
    for _ in 0..FLOOD {
        match answered(peer).await {
            Some(stream) => kept.push(stream),
            None => closed += 1,
        }
        assert!(backend.peer_connections() <= CAP);
    }
    println!(
        "{FLOOD} connections against a cap of {CAP}: {} answered, {closed} closed",
        kept.len()
    );
    assert_eq!((kept.len(), closed), (CAP, FLOOD - CAP));
    assert_eq!(backend.status()["peer_connections"], CAP);
    drop(kept);
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.peer_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered(peer).await.is_some(), "served after the flood");
    let _ = std::fs::remove_dir_all(root);
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

/// Claim: a Back End node closes an accepted connection whose first request is not complete within
/// `peer_first_frame_timeout`, whether it sent nothing or part of a frame, counts it, and serves others on.
/// Proof: with a 500 ms deadline, a silent connection and one that sent a header announcing 1,000 bytes and 10 of them
/// are both closed (after the deadline, well before 10 s), neither counted any more and both counted as silent (also
/// in `/status`); then a new connection's `View` is answered and stays open past the deadline between requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_first_request_in_time_are_closed_and_the_node_serves_on() {
    const DEADLINE: Duration = Duration::from_millis(500);
    let (backend, peer, root) =
        lone_node(|config| config.peer_first_frame_timeout = DEADLINE).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(peer).await.unwrap();
    let mut partial = TcpStream::connect(peer).await.unwrap();
    partial.write_all(&1_000u32.to_be_bytes()).await.unwrap();
    partial.write_all(&[b'{'; 10]).await.unwrap();
    for stream in [&mut silent, &mut partial] {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "closed by the node"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= DEADLINE,
        "closed after the deadline: {elapsed:?}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.peer_connections() > 0 || backend.peer_connections_silent() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connections counted as open or not as silent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend.status()["peer_connections_silent"], 2);

    let normal = answered(peer)
        .await
        .expect("served after the silent connections");
    tokio::time::sleep(DEADLINE * 2).await;
    assert!(
        matches!(
            normal.request(&Request::View, WAIT).await,
            Ok(Response::Pong(_))
        ),
        "a served connection may stay quiet between requests"
    );
    assert_eq!(backend.peer_connections_silent(), 2);
    let _ = std::fs::remove_dir_all(root);
}
