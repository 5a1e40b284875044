//! A store that cannot write (its disk full): nothing it could not keep is acknowledged, reads go on, and the
//! mirror never ends up holding other data than the principal under the same log position.

use std::sync::Arc;

use poolnode::backend::{Batch, Op, UserRecord};

use crate::support::*;

/// A record too big for the pages a capped store has left.
fn big(i: u64) -> Batch {
    let mut r = record(i);
    r.settings.insert("blob".into(), "x".repeat(256 * 1024));
    Batch::new(vec![Op::PutUser(r)])
}

/// Claim: a commit the principal's store refuses (`SQLITE_FULL`) is not acknowledged, reads are still served, the
/// principal takes writes again by itself once space returns, and the mirror — which may have applied the refused
/// entry — is brought back to the principal's data before it counts as synchronized, so a failover after that
/// loses nothing acknowledged.
/// Proof: with the principal's store capped, a big commit fails and a read succeeds; after the cap is lifted a
/// small commit (taking the refused entry's log position) is acknowledged; once the principal reports the mirror
/// synchronized it is killed, and the promoted mirror holds every acknowledged record, the last one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_principal_could_not_store_is_refused_and_the_mirror_stays_consistent() {
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let client = cluster.client();
    let mut acks = Acks::default();
    for i in 0..5 {
        let r = client.write(put(i)).await.unwrap();
        acks.acked.push((i, r.node, r.epoch));
    }

    cluster.limit_store(P1, Some(0)).await;
    let refused = client.write(big(100)).await;
    assert!(
        refused.is_err(),
        "a commit the principal's store could not hold was acknowledged: {refused:?}"
    );
    let read = client.load(&record(0).user).await.unwrap();
    assert_eq!(read.map(|r: UserRecord| r.user), Some(record(0).user));

    cluster.limit_store(P1, None).await;
    let r = client.write(put(5)).await.unwrap();
    acks.acked.push((5, r.node, r.epoch));
    cluster.wait_synchronized_principal(P1).await;

    cluster.kill(P1).await;
    cluster
        .wait_status(P2, "principal", |s| s["db_role"] == "principal")
        .await;
    let users = cluster.client().load_all("fe").await.unwrap();
    assert_all_acked_present(
        &acks,
        &users,
        "the mirror promoted after the disk-full episode",
    );
}
