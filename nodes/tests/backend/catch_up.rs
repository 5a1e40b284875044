//! The mirror's return: catch-up from the log, and the fenced old principal's rejoin.

use std::sync::Arc;
use std::time::Duration;

use poolnode::backend::peer_address;
use poolnode::backend::protocol::{PeerConn, Request, Response};

use crate::support::*;

/// Claim: a mirror away for a while catches up when it returns and counts as synchronized again only then.
/// Proof: while it is down the principal reports exposed and a growing lag; after its return the principal
/// reports it synchronized with lag 0; then the principal is killed and the mirror, promoted, holds every commit,
/// including those made while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_away_for_a_while_catches_up_and_is_synchronized_again() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    let mut acks = Acks::default();
    for i in 0..20 {
        let r = client.write(put(i)).await.unwrap();
        acks.acked.push((i, r.node, r.epoch));
    }
    cluster.kill(P2).await;
    for i in 20..1_200 {
        let r = client.write(put(i)).await.unwrap();
        acks.acked.push((i, r.node, r.epoch));
    }
    let away = cluster.status(P1).await;
    assert_eq!(away["synchronized"], false, "{away}");
    assert_eq!(away["exposed"], true, "{away}");
    idle(Duration::from_millis(300)).await;

    cluster.restart(P2).await;
    let back = cluster.wait_synchronized_principal(P1).await;
    assert_eq!(back["exposed"], false, "{back}");
    cluster
        .wait_status(W, "told the mirror is synchronized", |s| {
            s["mirror_synchronized"] == true
        })
        .await;

    cluster.kill(P1).await;
    cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    let users = cluster.client().load_all("fe").await.unwrap();
    assert_all_acked_present(&acks, &users, "the caught-up mirror, now principal");
}

/// Claim: an old principal that returns with a stale epoch cannot accept a write (it is fenced) and rejoins as
/// mirror, discarding the commit nobody acknowledged.
/// Proof: a write sent to it with the new epoch is refused; after rejoining it reports `mirror` at the new epoch,
/// synchronized, and its file equals the new principal's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_old_principal_is_fenced_and_rejoins_as_a_synchronized_mirror() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    for i in 0..10 {
        client.write(put(i)).await.unwrap();
    }
    cluster.isolate(P1);
    // A commit sent now reaches the old principal's own log only: unacknowledged, it must vanish on rejoin.
    let stranded = cluster.client_of(P1).write(put(500)).await;
    assert!(
        stranded.is_err(),
        "an isolated principal acknowledged a write: {stranded:?}"
    );
    cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    for i in 10..20 {
        let r = client.write(put(i)).await.unwrap();
        assert_eq!((r.node.as_str(), r.epoch), (P2, 2));
    }
    // The old principal, still cut off from its partners, is fenced by the epoch a client brings with it.
    assert_eq!(client.epoch(), 2, "the client followed the failover");
    let to_old = PeerConn::new(P1, peer_address(&cluster.config, FE, P1, 0));
    for min_epoch in [0, 2] {
        let answer = to_old
            .request(
                &Request::Commit {
                    batch: put(501),
                    min_epoch,
                },
                WAIT,
            )
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::NotPrincipal { .. }),
            "the old principal accepted a write with min_epoch {min_epoch}: {answer:?}"
        );
    }

    cluster.rejoin(P1);
    cluster
        .wait_status(P1, "mirror of epoch 2", |s| {
            s["db_role"] == "mirror" && s["epoch"] == 2 && s["synchronized"] == true
        })
        .await;
    cluster.wait_synchronized_principal(P2).await;
    cluster.kill(P1).await;
    cluster.kill(P2).await;
    let (old_file, new_file) = (cluster.store_users(P1), cluster.store_users(P2));
    assert_eq!(
        old_file, new_file,
        "the rejoined mirror holds exactly the principal's data"
    );
    assert!(
        new_file
            .iter()
            .all(|u| u.user != record(500).user && u.user != record(501).user),
        "the unacknowledged commit of the old epoch was discarded"
    );
}
