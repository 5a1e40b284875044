//! The Back End as a Front End uses it: a small Front End stand-in holding user data in memory, writing it lazily
//! through `LazyWriter`, reloading it with `BackendClient::load_all`, and asking `ResiliencyGate` about mode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolnode::backend::{LazyWriter, ResiliencyGate, UserRecord};

use crate::support::*;

/// The Front End stand-in: its users' persistent data, and the lazy writer it owns.
struct FrontEndStandIn {
    users: BTreeMap<String, UserRecord>,
    writer: Arc<LazyWriter>,
}

impl FrontEndStandIn {
    /// A (re)started Front End: reloads its pool's users from the Back End.
    async fn start(cluster: &Cluster) -> Self {
        let client = cluster.client();
        let users = client
            .load_all("fe")
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.user.clone(), u))
            .collect();
        FrontEndStandIn {
            users,
            writer: Arc::new(LazyWriter::new(client, &cluster.config.timings)),
        }
    }

    /// A persistent change (adding a contact): applied here at once, queued for the Back End.
    fn add_contact(&mut self, user: &str, contact: &str) {
        let record = self
            .users
            .entry(user.to_string())
            .or_insert_with(|| UserRecord {
                user: user.to_string(),
                pool: "fe".into(),
                ..UserRecord::default()
            });
        record.contacts.push(contact.to_string());
        record.contacts.sort();
        self.writer.mark_dirty(record.clone());
    }
}

/// Claim: a Front End restarted after the Back End has its data reloads it.
/// Proof: the stand-in's changes reach the Back End by the lazy writer alone (lag reported, then 0); a new
/// stand-in with empty memory reloads exactly the same users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_restarted_after_the_back_end_has_its_data_reloads_it() {
    let cluster = Cluster::start(true).await;
    cluster.wait_synchronized_principal(P1).await;
    let mut fe = FrontEndStandIn::start(&cluster).await;
    assert!(fe.users.is_empty());
    for i in 0..30 {
        fe.add_contact(&format!("user{i}"), &format!("friend{i}"));
        fe.add_contact(&format!("user{i}"), "zoe");
    }
    assert_eq!(
        fe.writer.pending(),
        30,
        "two changes of one user are one pending write"
    );
    idle(Duration::from_millis(30)).await;
    assert!(
        fe.writer.lag_ms() >= 30,
        "the lag counts from the oldest unwritten change"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = fe.writer.clone();
    let running = tokio::spawn(async move {
        writer
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    idle(Duration::from_millis(50)).await;
    let deadline = Instant::now() + WAIT;
    while fe.writer.pending() > 0 {
        assert!(Instant::now() < deadline, "the lazy writer never flushed");
        idle(Duration::from_millis(20)).await;
    }
    let stats = fe.writer.stats();
    assert_eq!(stats.lag_ms, 0, "{stats:?}");
    assert_eq!(stats.flushed_users_total, 30, "{stats:?}");
    assert!(
        stats.last_flush_lag_ms > 0,
        "the lag of the flush is reported: {stats:?}"
    );
    let _ = stop_tx.send(());
    running.await.unwrap();
    let before = fe.users.clone();
    drop(fe);

    let restarted = FrontEndStandIn::start(&cluster).await;
    assert_eq!(
        restarted.users, before,
        "the restarted Front End reloads what it had"
    );
}

/// Claim: the lazy writer follows a failover by itself and keeps what it could not write.
/// Proof: with the principal killed, queued changes stay queued (lag grows) until the mirror takes over, then
/// they land on the new principal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lazy_writer_follows_a_failover_and_loses_no_queued_change() {
    let cluster = Cluster::start(true).await;
    cluster.wait_synchronized_principal(P1).await;
    let mut fe = FrontEndStandIn::start(&cluster).await;
    fe.add_contact("alice", "bob");
    fe.writer.flush().await.unwrap();
    cluster.kill(P1).await;
    fe.add_contact("alice", "carol");
    fe.add_contact("bob", "alice");
    // The flush rides out the failover within its retry budget, or leaves the changes queued for the next one.
    let deadline = Instant::now() + WAIT;
    while fe.writer.flush().await.is_err() || fe.writer.pending() > 0 {
        assert!(
            Instant::now() < deadline,
            "never flushed after the failover"
        );
    }
    let reloaded = FrontEndStandIn::start(&cluster).await;
    assert_eq!(reloaded.users, fe.users);
    assert_eq!(cluster.status(P2).await["db_role"], "principal");
}

/// Claim: a Back End outage past the grace period puts users in resiliency mode, and they leave it when the Back
/// End returns.
/// Proof: with every link from the Front End to the Back End cut, the gate turns on no earlier than the grace
/// after the cut (the client cannot have noticed before) and within a generous bound; after healing it turns off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_outage_past_the_grace_period_puts_users_in_resiliency_mode_and_back() {
    let cluster = Cluster::start(true).await;
    cluster.wait_synchronized_principal(P1).await;
    let gate = Arc::new(ResiliencyGate::new(
        cluster.client(),
        &cluster.config.timings,
    ));
    let mut mode = gate.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let g = gate.clone();
    let running = tokio::spawn(async move {
        g.run(async {
            let _ = stop_rx.await;
        })
        .await
    });
    idle(Duration::from_millis(300)).await;
    assert!(!gate.in_resiliency_mode());

    let grace = Duration::from_millis(cluster.config.timings.be_outage_grace_ms);
    let cut_at = Instant::now();
    cluster.net.cut(FE, P1);
    cluster.net.cut(FE, P2);
    tokio::time::timeout(grace + WAIT, mode.wait_for(|on| *on))
        .await
        .expect("resiliency mode never came")
        .unwrap();
    assert!(
        cut_at.elapsed() >= grace,
        "resiliency mode before the grace period: {:?}",
        cut_at.elapsed()
    );
    assert!(gate.in_resiliency_mode());

    cluster.net.heal(FE, P1);
    cluster.net.heal(FE, P2);
    tokio::time::timeout(WAIT, mode.wait_for(|on| !*on))
        .await
        .expect("resiliency mode never ended")
        .unwrap();
    assert!(!gate.in_resiliency_mode());
    let _ = stop_tx.send(());
    running.await.unwrap();
}

/// Claim: the principal gives the Back End's quorum vote with its epoch; after a failover the new principal does;
/// with no principal nobody does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_principal_gives_the_back_end_vote_with_its_epoch() {
    let cluster = Cluster::start(true).await;
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    let vote = client.vote().await.expect("the principal votes");
    assert_eq!((vote.node.as_str(), vote.epoch), (P1, 1));
    cluster.kill(P1).await;
    cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    let vote = client.vote().await.expect("the new principal votes");
    assert_eq!((vote.node.as_str(), vote.epoch), (P2, 2));
    cluster.kill(W).await;
    cluster.kill(P2).await;
    assert!(client.vote().await.is_none());
    assert!(!client.available());
}
