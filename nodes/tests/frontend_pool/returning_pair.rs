//! Two Front Ends that share routing groups die together and return as new processes: every group heals.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// A user's client: name, the Front End it registers at, its fixed contact, its connection.
type Client = (String, SocketAddr, SocketAddr, TcpClient);

/// Refreshes every client once: the statuses, and the users whose 200 did not say `refreshed`.
async fn refresh_all(clients: &mut [Client]) -> (Vec<u16>, Vec<String>) {
    let mut codes = Vec::new();
    let mut signed_out = Vec::new();
    for (user, server, contact, client) in clients.iter_mut() {
        let answer = register_as(client, *server, user, *contact).await;
        let code = answer.status_code.code();
        if code == 200 && value(&answer, "presence-state") != "register-action=\"refreshed\"" {
            signed_out.push(user.clone());
        }
        codes.push(code);
    }
    (codes, signed_out)
}

/// Claim: in a pool of five, when two Front Ends that share four routing groups are killed together and return (new
/// processes, holding nothing) after the rebuild delay, every group gets a primary accepting writes and at least two
/// replicas again, and every user registered before the kill refreshes with `refreshed`, none refused. The groups
/// that kept one replica cannot serve while the pair is down; once the pair's new processes run, the old
/// processes are known gone, so the survivor's state (all there is) must carry the group on, not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_of_front_ends_returning_together_signs_no_one_out() {
    let rebuild_delay = Duration::from_millis(2_000);
    let mut pool = TestPool::start_all(5, timings(rebuild_delay.as_millis() as u64)).await;
    pool.settled().await;
    let pair = [0, 1];
    let survivors = [2, 3, 4];
    let shared: Vec<usize> = (0..pool.groups())
        .filter(|g| pair.iter().all(|p| pool.home(*g).contains(p)))
        .collect();
    assert!(shared.len() >= 2, "the pair shares groups: {shared:?}");

    // Two users per group, registered at the survivors (a dead Front End's clients would move there anyway).
    let mut clients: Vec<Client> = Vec::new();
    for group in 0..pool.groups() {
        for k in 0..2 {
            let user = pool.user_in(group, k);
            let server = pool.sip[survivors[clients.len() % survivors.len()]];
            let contact: SocketAddr = format!("127.0.0.1:{}", 43_000 + clients.len())
                .parse()
                .unwrap();
            let mut client = TcpClient::connect(server).await;
            let answer = register_as(&mut client, server, &user, contact).await;
            assert_eq!(answer.status_code.code(), 200, "{user}");
            clients.push((user, server, contact, client));
        }
    }
    let (codes, signed_out) = refresh_all(&mut clients).await;
    assert!(
        codes.iter().all(|c| *c == 200),
        "before the kill: {codes:?}"
    );
    assert!(signed_out.is_empty(), "before the kill: {signed_out:?}");
    // Every replica has every write by now: the third replica's copy follows the acknowledgement within a
    // round trip on 127.0.0.1.
    tokio::time::sleep(Duration::from_secs(1)).await;

    for i in pair {
        pool.kill(i).await;
    }
    pool.until("the groups that kept two replicas fail over", |p| {
        (0..p.groups()).filter(|g| !shared.contains(g)).all(|g| {
            let primaries = p.accepting_primaries(g);
            primaries.len() == 1 && !pair.contains(&primaries[0].0)
        })
    })
    .await;
    // Down for longer than the rebuild delay: the rebuilds run (or try to) before the pair returns.
    tokio::time::sleep(rebuild_delay * 2).await;
    pool.until(
        "the groups that kept two replicas are rebuilt to three",
        |p| {
            (0..p.groups())
                .filter(|g| !shared.contains(g))
                .all(|g| holders(p, g) >= 3)
        },
    )
    .await;
    // Only the shared groups refuse, saying why: too few replicas or a dead primary, not a primary change.
    let (codes, signed_out) = refresh_all(&mut clients).await;
    assert!(
        signed_out.is_empty(),
        "signed out while down: {signed_out:?}"
    );
    for ((user, ..), code) in clients.iter().zip(&codes) {
        let group = pool.user_group(user);
        let expected = if shared.contains(&group) { 503 } else { 200 };
        assert_eq!(
            *code, expected,
            "{user} of group {group} while the pair is down"
        );
    }
    for (user, server, contact, client) in clients.iter_mut() {
        if shared.contains(&pool.user_group(user)) {
            let answer = register_as(client, *server, user, *contact).await;
            let reason = value(&answer, "ms-diagnostics");
            assert!(
                reason.contains("live replica") || reason.contains("is down"),
                "{user}: {reason}"
            );
        }
    }
    for i in pair {
        pool.start(i).await;
    }

    pool.until(
        "every group has one primary accepting writes and two live replicas at its epoch",
        |p| (0..p.groups()).all(|g| healthy_group(p, g)),
    )
    .await;
    let (codes, signed_out) = refresh_all(&mut clients).await;
    let refused: Vec<&String> = clients
        .iter()
        .zip(&codes)
        .filter(|(_, c)| **c != 200)
        .map(|((user, ..), _)| user)
        .collect();
    assert!(
        refused.is_empty(),
        "refused after the return: {refused:?} ({codes:?})"
    );
    assert!(signed_out.is_empty(), "signed out: {signed_out:?}");
}

/// One running node accepts writes for `group`, and at least two running nodes hold its replica at that epoch.
fn healthy_group(pool: &TestPool, group: usize) -> bool {
    holders(pool, group) >= 2
}

/// Running nodes holding `group`'s replica at the epoch of its one accepting primary (0 without exactly one).
fn holders(pool: &TestPool, group: usize) -> usize {
    let primaries = pool.accepting_primaries(group);
    let [(_, epoch)] = primaries[..] else {
        return 0;
    };
    pool.running()
        .into_iter()
        .filter(|i| {
            let status = pool.status(*i);
            let g = &status["groups"][group];
            g["role"] != "none" && g["epoch"].as_u64() == Some(epoch)
        })
        .count()
}
