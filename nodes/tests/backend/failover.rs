//! Killing the principal during a stream of commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

/// Claim: with a witness, the mirror takes over when the principal is killed and no acknowledged commit is lost.
/// Proof: every commit the stream saw acknowledged (by either node, before or after) is read back from the new
/// principal, and the status probes never saw two principals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_witness_the_mirror_takes_over_a_killed_principal_and_loses_no_acknowledged_commit()
{
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let watch = PrincipalWatch::start(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_commits(cluster.client(), 0, stop.clone());
    idle(Duration::from_millis(800)).await;
    cluster.kill(P1).await;
    let promoted = cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    assert_eq!(
        promoted["epoch"], 2,
        "a promotion raises the epoch: {promoted}"
    );
    // Keep writing until the new principal has acknowledged a good number of commits.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        idle(Duration::from_millis(200)).await;
        let s = cluster.status(P2).await;
        if s["last_lsn"].as_u64().unwrap() > promoted["last_lsn"].as_u64().unwrap() + 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new principal does not commit: {s}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let acks = stream.await.unwrap();
    watch.assert_never_two_principals().await;
    assert!(
        acks.acked.iter().any(|a| a.1 == P1),
        "the old principal acknowledged commits"
    );
    assert!(
        acks.acked.iter().any(|a| a.1 == P2 && a.2 == 2),
        "the new principal acknowledged commits"
    );
    let users = cluster.client().load_all("fe").await.unwrap();
    assert_all_acked_present(&acks, &users, "the new principal");
}

/// Claim: without a witness nothing promotes itself when the principal is killed.
/// Proof: for ten partner timeouts after the kill the mirror reports `mirror` and the client finds no principal;
/// the restarted principal then serves again with every acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_witness_nothing_promotes_itself_when_the_principal_is_killed() {
    let cluster = Arc::new(Cluster::start(false).await);
    cluster.wait_synchronized_principal(P1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_commits(cluster.client(), 0, stop.clone());
    idle(Duration::from_millis(500)).await;
    cluster.kill(P1).await;
    let timeout_ms = cluster.config.timings.be_partner_timeout_ms;
    let until = std::time::Instant::now() + Duration::from_millis(timeout_ms * 10);
    while std::time::Instant::now() < until {
        let s = cluster.status(P2).await;
        assert_eq!(
            s["db_role"], "mirror",
            "the mirror promoted itself without a witness: {s}"
        );
        assert_eq!(s["epoch"], 1, "{s}");
        idle(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let acks = stream.await.unwrap();
    assert!(
        acks.acked.iter().all(|a| a.1 == P1 && a.2 == 1),
        "only the old principal acknowledged"
    );
    assert!(
        cluster.client().vote().await.is_none(),
        "no principal gives the vote"
    );
    cluster.restart(P1).await;
    cluster.wait_synchronized_principal(P1).await;
    let users = cluster.client().load_all("fe").await.unwrap();
    assert_all_acked_present(&acks, &users, "the restarted principal");
}

/// Claim: a restart loses nothing committed: both nodes killed and restarted hold every acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_restarted_from_its_files_loses_nothing_committed() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    let mut acks = Acks::default();
    for i in 0..40 {
        let r = client.write(put(i)).await.unwrap();
        acks.acked.push((i, r.node, r.epoch));
    }
    for node in [P1, P2, W] {
        cluster.kill(node).await;
    }
    assert_all_acked_present(&acks, &cluster.store_users(P1), "the principal's file");
    assert_all_acked_present(&acks, &cluster.store_users(P2), "the mirror's file");
    for node in [W, P2, P1] {
        cluster.restart(node).await;
    }
    let s = cluster.wait_synchronized_principal(P1).await;
    assert_eq!(s["epoch"], 1, "no failover happened: {s}");
    let users = cluster.client().load_all("fe").await.unwrap();
    assert_all_acked_present(&acks, &users, "the restarted pool");
}
