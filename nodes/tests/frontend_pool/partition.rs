//! A partition between Front Ends that makes two of them think they are primary of one group.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

/// Claim: when a partition cuts a group's primary off from its two secondaries (but not from the rest of the pool,
/// so it keeps quorum and still thinks it is primary), a secondary is promoted and the old primary acknowledges
/// nothing more: never do both accept writes. Proved three ways: the two never report `accepting_writes` at once;
/// writes sent straight to the old primary are all refused once the new one accepted its first; and after the heal
/// every acknowledged write is in the group's state, and no write refused with `503` is (a write whose outcome
/// the pool does not know, applied by a primary whose secondaries did not confirm it, is answered `408`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_never_acknowledges_alongside_the_new_one() {
    let pool = TestPool::start_all(5, timings(60_000)).await;
    pool.settled().await;
    let group = 0;
    let home = pool.home(group);
    let (old, secondaries) = (home[0], [home[1], home[2]]);
    assert_eq!(pool.accepting_primaries(group), vec![(old, 1)]);
    let outside = (0..5).find(|i| !home.contains(i)).unwrap();
    let user = pool.user_in(group, 0);

    let mut at_old = TcpClient::connect(pool.sip[old]).await;
    let mut at_outside = TcpClient::connect(pool.sip[outside]).await;
    assert_eq!(
        contacts(&mut at_old, &user, "add sip:before@pool.test")
            .await
            .status_code
            .code(),
        200
    );
    let mut acked: BTreeSet<String> = ["sip:before@pool.test".to_owned()].into();
    let mut refused: BTreeSet<String> = BTreeSet::new();

    for s in secondaries {
        pool.faults.partition(&pool.names[old], &pool.names[s]);
    }
    let mut both_thought_primary = false;
    let mut new_primary_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    // Bounded by the deadline: a few seconds of writes on both sides of the partition.
    for i in 0.. {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let roles: Vec<(usize, serde_json::Value)> = pool
            .running()
            .into_iter()
            .map(|n| (n, pool.status(n)["groups"][group].clone()))
            .collect();
        let accepting: Vec<usize> = roles
            .iter()
            .filter(|(_, g)| g["role"] == "primary" && g["accepting_writes"] == true)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            accepting.len() <= 1,
            "two primaries accept writes: {roles:?}"
        );
        let thinking: Vec<usize> = roles
            .iter()
            .filter(|(_, g)| g["role"] == "primary")
            .map(|(n, _)| *n)
            .collect();
        both_thought_primary |= thinking.len() >= 2;
        new_primary_seen |= accepting.iter().any(|n| *n != old);

        let contact = format!("sip:old{i}@pool.test");
        let answer = contacts(&mut at_old, &user, &format!("add {contact}")).await;
        match answer.status_code.code() {
            200 => {
                assert!(
                    !new_primary_seen,
                    "the old primary acknowledged a write after the new one accepted"
                );
                acked.insert(contact);
            }
            503 => {
                refused.insert(contact);
            }
            _ => {}
        }
        let contact = format!("sip:new{i}@pool.test");
        match contacts(&mut at_outside, &user, &format!("add {contact}"))
            .await
            .status_code
            .code()
        {
            200 => {
                acked.insert(contact);
            }
            503 => {
                refused.insert(contact);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(new_primary_seen, "a secondary was promoted");
    assert!(
        both_thought_primary,
        "the partition made two Front Ends think they are primary"
    );

    for s in secondaries {
        pool.faults.heal(&pool.names[old], &pool.names[s]);
    }
    pool.settled().await;
    pool.until(
        "the old primary holds the current configuration again",
        |p| {
            // No accepting primary for a moment is possible: the role may move back to its desired primary.
            p.accepting_primaries(group)
                .first()
                .is_some_and(|(_, current)| {
                    p.status(old)["groups"][group]["epoch"].as_u64() == Some(*current)
                })
        },
    )
    .await;
    let list = contacts(&mut at_outside, &user, "list").await;
    assert_eq!(list.status_code.code(), 200);
    let held: BTreeSet<String> = listed(&list).into_iter().collect();
    let lost: Vec<_> = acked.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost across the partition: {lost:?}"
    );
    let done_anyway: Vec<_> = refused.intersection(&held).collect();
    assert!(
        done_anyway.is_empty(),
        "writes refused with 503 took effect: {done_anyway:?}"
    );
}
