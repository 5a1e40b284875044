//! The operator's commands: `db-status`, `db-failover` (planned, forced), and the admin token.

use std::sync::Arc;
use std::time::Duration;

use poolnode::backend::operator::{db_failover, db_status, http_json, render_status};
use serde_json::json;

use crate::support::*;

/// Claim: without a witness an operator fails over by command: planned, with the principal handing over,
/// nothing lost, and the old principal carries on as the new principal's mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_witness_the_operator_fails_over_to_a_synchronized_mirror_losing_nothing() {
    let cluster = Arc::new(Cluster::start(false).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    let mut acks = Acks::default();
    for i in 0..20 {
        let r = client.write(put(i)).await.unwrap();
        acks.acked.push((i, r.node, r.epoch));
    }
    let report = db_failover(&cluster.admin_targets(), TOKEN, false)
        .await
        .unwrap();
    assert_eq!(report["new_principal"], P2, "{report}");
    assert_eq!(report["planned"], true, "{report}");
    assert_eq!(report["commits_possibly_lost"], 0, "{report}");
    cluster.wait_synchronized_principal(P2).await;
    let old = cluster.status(P1).await;
    assert_eq!(
        (old["db_role"].as_str(), old["epoch"].as_u64()),
        (Some("mirror"), Some(2)),
        "{old}"
    );
    for i in 20..30 {
        let r = client.write(put(i)).await.unwrap();
        assert_eq!((r.node.as_str(), r.epoch), (P2, 2));
        acks.acked.push((i, r.node, r.epoch));
    }
    let users = client.load_all("fe").await.unwrap();
    assert_all_acked_present(&acks, &users, "the new principal");
    let table = render_status("be", &db_status(&cluster.admin_targets()).await);
    assert!(
        table.contains("principal") && table.contains("mirror"),
        "{table}"
    );
}

/// Claim: a failover from an unsynchronized mirror needs `--force`, reports what may be lost, and the old
/// principal discards its unshared commits when it rejoins.
/// Proof: the mirror misses commits made while it was down; with the principal then dead the plain command is
/// refused with the reason, the forced one succeeds and says it is forced; the restarted old principal becomes
/// a mirror of the new epoch and its file equals the new principal's (without the unshared commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_from_an_unsynchronized_mirror_needs_the_flag_and_reports_the_loss() {
    let cluster = Arc::new(Cluster::start(false).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    for i in 0..10 {
        client.write(put(i)).await.unwrap();
    }
    cluster.kill(P2).await;
    for i in 10..15 {
        client
            .write(put(i))
            .await
            .expect("an exposed principal without a witness commits");
    }
    cluster.kill(P1).await;
    cluster.restart(P2).await;
    idle(Duration::from_millis(
        cluster.config.timings.be_partner_timeout_ms * 2,
    ))
    .await;

    let refused = db_failover(&cluster.admin_targets(), TOKEN, false)
        .await
        .unwrap_err();
    assert!(
        refused.contains("not synchronized") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(
        cluster.status(P2).await["db_role"],
        "mirror",
        "a refused failover changes nothing"
    );

    let report = db_failover(&cluster.admin_targets(), TOKEN, true)
        .await
        .unwrap();
    assert_eq!(report["forced"], true, "{report}");
    assert_eq!(report["synchronized"], false, "{report}");
    assert!(
        report["message"].as_str().unwrap().contains("lost"),
        "{report}"
    );
    let s = cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    assert_eq!(s["epoch"], 2, "{s}");
    client
        .write(put(100))
        .await
        .expect("the forced principal serves");

    cluster.restart(P1).await;
    cluster
        .wait_status(P1, "mirror of epoch 2", |s| {
            s["db_role"] == "mirror" && s["epoch"] == 2
        })
        .await;
    cluster.wait_synchronized_principal(P2).await;
    cluster.kill(P1).await;
    cluster.kill(P2).await;
    let (old_file, new_file) = (cluster.store_users(P1), cluster.store_users(P2));
    assert_eq!(old_file, new_file);
    assert!(
        new_file.iter().all(|u| u.user != record(12).user),
        "commits the mirror never had are gone, as reported"
    );
}

/// Claim: admin commands need the bearer token; without it (or with a wrong one) nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_without_the_token_are_refused_and_change_nothing() {
    let cluster = Cluster::start(false).await;
    cluster.wait_synchronized_principal(P1).await;
    let mirror = cluster.admin_address(P2).unwrap().to_string();
    for token in [None, Some("wrong")] {
        let (code, _) = http_json(
            &mirror,
            "POST",
            "/admin/db-failover",
            token,
            Some(&json!({"force": true})),
        )
        .await
        .unwrap();
        assert_eq!(code, 401);
    }
    idle(Duration::from_millis(300)).await;
    assert_eq!(cluster.status(P2).await["db_role"], "mirror");
    assert_eq!(cluster.status(P1).await["db_role"], "principal");
    let status = cluster.status(P1).await;
    for key in [
        "role",
        "pool",
        "node",
        "db_role",
        "epoch",
        "synchronized",
        "exposed",
        "lag_commits",
        "serving",
    ] {
        assert!(status.get(key).is_some(), "/status lacks {key}: {status}");
    }
    assert_eq!(status["role"], "backend");
    assert_eq!(status["pool"], "be");
}
