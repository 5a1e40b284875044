//! The pool quorum against the pool model's table, literally, on real pools of 2 to 12 Front Ends.

use std::time::Duration;

use poolnode::cluster::Timings;

use crate::support::*;

/// Pool size N → (Front Ends that must run, counted among the first `seeds`): the table of the pool model.
fn table_says(running: &[bool]) -> bool {
    let n = running.len();
    let (must_run, seeds) = match n {
        2 => (1, 2),
        3..=4 => (2, n),
        5..=6 => (3, n),
        7 => (4, 7),
        8..=9 => (4, 7),
        10..=12 => (5, 9),
        _ => unreachable!("pools of 2 to 12"),
    };
    running.iter().take(seeds).filter(|r| **r).count() >= must_run
}

/// Starting a pool the first time needs this many running, N = 2 … 12.
const STARTUP: [usize; 11] = [1, 3, 3, 4, 5, 5, 6, 7, 8, 9, 10];

/// Faster heartbeats than the other tests: this one kills 66 Front Ends one after another.
fn quorum_timings() -> Timings {
    Timings {
        fe_heartbeat_interval_ms: 50,
        fe_failure_timeout_ms: 600,
        replica_rebuild_delay_ms: 600_000,
        ..Timings::fast()
    }
}

/// Waits until every running node sees exactly the running set, then checks that each serves exactly when
/// `expected` says, by its status and by SIP (`200` or `503` to OPTIONS).
async fn check(pool: &TestPool, expected: bool, what: &str) {
    let names: Vec<String> = pool
        .running()
        .iter()
        .map(|i| pool.names[*i].clone())
        .collect();
    pool.until(&format!("{what}: every node sees {names:?}"), |p| {
        p.running().iter().all(|i| {
            let seen: Vec<String> =
                serde_json::from_value(p.status(*i)["fes_running"].clone()).unwrap();
            seen == names
        })
    })
    .await;
    if expected {
        pool.until(&format!("{what}: every node serves"), |p| {
            p.running().iter().all(|i| p.status(*i)["serving"] == true)
        })
        .await;
    } else {
        // It must not serve now, nor a little later.
        for _ in 0..2 {
            for i in pool.running() {
                let status = pool.status(i);
                assert_eq!(status["serving"], false, "{what}: {status}");
                assert!(
                    status["reason"].is_string(),
                    "{what}: a reason is given: {status}"
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let probe = pool.running()[0];
    let mut client = TcpClient::connect(pool.sip[probe]).await;
    let answer = client.request(&options(pool.sip[probe], "probe")).await;
    assert_eq!(
        answer.status_code.code(),
        if expected { 200 } else { 503 },
        "{what}: SIP answer of {}",
        pool.names[probe]
    );
    if !expected {
        let reason = value(&answer, "ms-diagnostics");
        assert!(
            reason.contains("pool "),
            "{what}: the 503 says why: {reason}"
        );
    }
}

/// Claim: for every pool size from 2 to 12 and every running count, the pool serves exactly when the table says so:
/// at first start from the start-up count on, then while the table's count of (seed) Front Ends runs. Front Ends
/// start in topology order and are then killed from the first one on, so that for N ≥ 8 the non-seed Front Ends
/// still run when too few of the first 7 (or 9) do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_serves_exactly_when_the_quorum_table_says() {
    for n in 2..=12usize {
        let mut pool = TestPool::new(n, quorum_timings()).await;
        for k in 1..=n {
            pool.start(k - 1).await;
            check(
                &pool,
                k >= STARTUP[n - 2],
                &format!("N={n}, first start, {k} running"),
            )
            .await;
        }
        for dead in 0..n - 1 {
            pool.kill(dead).await;
            let running: Vec<bool> = (0..n).map(|i| i > dead).collect();
            check(
                &pool,
                table_says(&running),
                &format!("N={n}, fe1..fe{} killed", dead + 1),
            )
            .await;
        }
    }
}

/// Claim: a pool below its start-up count serves once an operator runs quorum recovery (`POST
/// /admin/quorum-recovery` on each running Front End), and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_recovery_starts_a_pool_below_the_start_up_count() {
    let mut pool = TestPool::new(5, quorum_timings()).await;
    for i in 0..3 {
        pool.start(i).await;
    }
    check(&pool, false, "N=5, 3 running at first start").await;
    for i in pool.running() {
        pool.pool(i).recover();
    }
    check(&pool, true, "N=5, 3 running after quorum recovery").await;
}
