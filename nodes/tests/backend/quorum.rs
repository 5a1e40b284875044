//! The quorum rules, one test each: isolation, witness then mirror lost, mirror lost (exposed), no promotion of
//! an unsynchronized mirror.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolnode::backend::BackendError;

use crate::support::*;

/// Claim: a principal cut off from mirror and witness stops serving within the partner timeout, the mirror takes
/// over, and no write is acknowledged by both sides.
/// Proof: a client that talks only to the old principal keeps writing through the isolation; after healing, the
/// old principal has rejoined as mirror and every write either side acknowledged is in the final data of both
/// files (a write acknowledged by the losing side would have been discarded on rejoin); status probes never
/// saw two principals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_principal_stops_serving_and_the_mirror_takes_over_without_split_acknowledgements(
) {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let watch = PrincipalWatch::start(&cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let to_old = stream_commits(cluster.client_of(P1), 0, stop.clone());
    let to_pool = stream_commits(cluster.client(), 100_000, stop.clone());
    idle(Duration::from_millis(500)).await;

    let isolated_at = Instant::now();
    cluster.isolate(P1);
    let stopped = cluster
        .wait_status(P1, "stopped", |s| s["serving"] == false)
        .await;
    let stopped_after = isolated_at.elapsed();
    assert_eq!(stopped["db_role"], "stopped", "{stopped}");
    let promoted = cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    assert_eq!(promoted["epoch"], 2, "{promoted}");
    let old = cluster.status(P1).await;
    assert_ne!(
        old["db_role"], "principal",
        "the old principal still serves: {old}"
    );
    // A write to the isolated old principal carrying the new epoch is refused (fenced by the client).
    idle(Duration::from_millis(500)).await;

    cluster.rejoin(P1);
    cluster
        .wait_status(P1, "the new principal's synchronized mirror", |s| {
            s["db_role"] == "mirror" && s["epoch"] == 2 && s["synchronized"] == true
        })
        .await;
    cluster.wait_synchronized_principal(P2).await;
    stop.store(true, Ordering::SeqCst);
    let (old_acks, pool_acks) = (to_old.await.unwrap(), to_pool.await.unwrap());
    watch.assert_never_two_principals().await;
    assert!(
        old_acks.acked.iter().all(|a| a.1 == P1 && a.2 == 1),
        "the old principal acknowledged only in its own epoch"
    );
    assert!(
        pool_acks.acked.iter().any(|a| a.1 == P2 && a.2 == 2),
        "the new principal served"
    );
    eprintln!("isolated principal stopped serving after {stopped_after:?}");

    cluster.kill(P1).await;
    cluster.kill(P2).await;
    let (old_file, new_file) = (cluster.store_users(P1), cluster.store_users(P2));
    assert_eq!(
        old_file, new_file,
        "mirror and principal hold the same data after catch-up"
    );
    assert_all_acked_present(&old_acks, &new_file, "the new principal");
    assert_all_acked_present(&pool_acks, &new_file, "the new principal");
}

/// Claim: after losing the witness, then the mirror, the principal stops (both partners lose quorum) and the
/// mirror does not promote itself.
/// Proof: the principal keeps serving with the mirror alone; once the mirror link is cut too, the principal
/// reports `stopped` and refuses writes, and the mirror stays `mirror` for several partner timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_witness_then_the_mirror_stops_the_principal_and_promotes_nobody() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    cluster.kill(W).await;
    let client = cluster.client();
    idle(Duration::from_millis(
        cluster.config.timings.be_partner_timeout_ms * 2,
    ))
    .await;
    client
        .write(put(1))
        .await
        .expect("principal and mirror still hold quorum");
    assert_eq!(cluster.status(P1).await["db_role"], "principal");

    cluster.net.cut(P1, P2);
    cluster
        .wait_status(P1, "stopped", |s| s["db_role"] == "stopped")
        .await;
    let err = cluster.client_of(P1).write(put(2)).await.unwrap_err();
    assert!(matches!(err, BackendError::NoPrincipal { .. }), "{err}");
    let until =
        Instant::now() + Duration::from_millis(cluster.config.timings.be_partner_timeout_ms * 5);
    while Instant::now() < until {
        let (p, m) = (cluster.status(P1).await, cluster.status(P2).await);
        assert_ne!(p["db_role"], "principal", "{p}");
        assert_eq!(
            m["db_role"], "mirror",
            "the mirror promoted itself without the witness: {m}"
        );
        idle(Duration::from_millis(100)).await;
    }
    // Undo: with the mirror back the principal has quorum again, in the same epoch.
    cluster.net.heal(P1, P2);
    let s = cluster.wait_synchronized_principal(P1).await;
    assert_eq!(s["epoch"], 1, "{s}");
    client.write(put(3)).await.expect("served again");
}

/// Claim: a principal that loses its mirror but still sees the witness runs exposed and keeps committing; the
/// witness then refuses to promote the unsynchronized mirror when the principal dies.
/// Proof: status shows `exposed` and writes succeed during the cut; after killing the principal and healing the
/// mirror's links, the mirror stays `mirror` for several partner timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_its_mirror_runs_exposed_and_the_stale_mirror_is_never_promoted() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    cluster.net.cut(P1, P2);
    let exposed = cluster
        .wait_status(P1, "exposed", |s| s["exposed"] == true)
        .await;
    assert_eq!(exposed["db_role"], "principal", "{exposed}");
    assert_eq!(exposed["synchronized"], false, "{exposed}");
    for i in 0..10 {
        let r = client
            .write(put(i))
            .await
            .expect("an exposed principal commits");
        assert_eq!(r.node, P1);
    }
    cluster.kill(P1).await;
    cluster.net.heal(P1, P2);
    let until =
        Instant::now() + Duration::from_millis(cluster.config.timings.be_partner_timeout_ms * 5);
    while Instant::now() < until {
        let m = cluster.status(P2).await;
        assert_eq!(
            m["db_role"], "mirror",
            "an unsynchronized mirror was promoted: {m}"
        );
        idle(Duration::from_millis(100)).await;
    }
    let w = cluster.status(W).await;
    assert_eq!(w["mirror_synchronized"], false, "{w}");
    // Undo: the principal returns and catches the mirror up.
    cluster.restart(P1).await;
    cluster.wait_synchronized_principal(P1).await;
}

/// Claim: a principal whose mirror falls silent (its connections hang rather than fail) serves without a break
/// while the witness answers: the witness's answer renews the lease as soon as it arrives, not after the silent
/// mirror's ping has timed out (a lease renewed only at the end of such a round lapses before the next one).
/// Proof: from the moment it runs exposed, every look at its status for five partner timeouts says `serving`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_whose_mirror_falls_silent_serves_without_a_break() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    cluster.net.cut(P1, P2);
    cluster
        .wait_status(P1, "exposed", |s| s["exposed"] == true)
        .await;
    let until =
        Instant::now() + Duration::from_millis(cluster.config.timings.be_partner_timeout_ms * 5);
    let mut looks = 0;
    let mut breaks = Vec::new();
    while Instant::now() < until {
        let s = cluster.status(P1).await;
        looks += 1;
        if s["serving"] != true || s["db_role"] != "principal" {
            breaks.push(s);
        }
        idle(Duration::from_millis(20)).await;
    }
    assert!(
        breaks.is_empty(),
        "{} of {looks} looks found the principal not serving; the first: {}",
        breaks.len(),
        breaks[0]
    );
    // Undo: the mirror's links heal and it catches up.
    cluster.net.heal(P1, P2);
    cluster.wait_synchronized_principal(P1).await;
}
