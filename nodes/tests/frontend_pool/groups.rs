//! A routing group below two live replicas refuses its own users and no one else's.

use std::time::Duration;

use crate::support::*;

/// A settled pool of five (rebuilds delayed past the test) with the Front Ends holding replicas `which` (0: the
/// primary) of routing group `group` killed, once the survivors see them dead; the survivors' indexes.
async fn two_of_group_dead(group: usize, which: [usize; 2]) -> (TestPool, Vec<usize>) {
    let mut pool = TestPool::start_all(5, timings(600_000)).await;
    pool.settled().await;
    let home = pool.home(group);
    for replica in which {
        pool.kill(home[replica]).await;
    }
    let survivors: Vec<usize> = pool.running();
    pool.until("the survivors see the two Front Ends dead", |p| {
        survivors
            .iter()
            .all(|i| p.status(*i)["fes_running"].as_array().unwrap().len() == 3)
    })
    .await;
    (pool, survivors)
}

/// Claim: with two of a group's three replicas dead (the pool keeps quorum: 3 of 5 run), that group's users get
/// `503` naming the group, and the users of every group that kept two replicas are served. Rebuilds are delayed past
/// the test, so the refused group cannot heal itself meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_below_two_replicas_refuses_its_users_and_no_one_else() {
    let target = 0;
    let (pool, survivors) = two_of_group_dead(target, [1, 2]).await;
    let entry = survivors[0];
    let mut client = TcpClient::connect(pool.sip[entry]).await;
    for group in 0..pool.groups() {
        let user = pool.user_in(group, 0);
        // The replicas the group really has among the survivors (its placement is the ring's unless a Front End
        // came late to the pool's formation on a loaded machine): those reporting a role in it.
        let live = survivors
            .iter()
            .filter(|i| {
                let role = &pool.status(**i)["groups"][group]["role"];
                role == "primary" || role == "secondary"
            })
            .count();
        if live < 2 {
            // Several tries: a refusal must hold, not flicker.
            for _ in 0..3 {
                let answer = contacts(&mut client, &user, "add sip:x@pool.test").await;
                assert_eq!(
                    answer.status_code.code(),
                    503,
                    "group {group} ({live} live) must refuse {user}: {answer:?}"
                );
                let reason = value(&answer, "ms-diagnostics");
                assert!(
                    reason.contains("routing group") || reason.contains("is down"),
                    "{reason}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            let deadline = tokio::time::Instant::now() + CONVERGE;
            // Bounded by the deadline: a group whose primary died is served once a secondary is promoted.
            loop {
                let answer = contacts(&mut client, &user, "add sip:x@pool.test").await;
                if answer.status_code.code() == 200 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "group {group} ({live} live) never served {user}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let status = pool.status(entry);
    assert_eq!(status["serving"], true, "the pool itself serves: {status}");
}

/// Claim: a request that waits on a routing group without a primary (its primary and a secondary dead, the survivor
/// cannot be promoted alone) holds up nothing behind it on the sender's connection. An OPTIONS sent right after an
/// IM to a user of that group is answered first; the IM gets its `503` once the Front End gives up looking for a
/// primary. (A Front End that answered in arrival order left every later request of the sender waiting, and its
/// registration refresh timed out: a user signed out with no fault on its own Front End.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_group_without_primary_holds_up_nothing_behind_it() {
    let target = 0;
    let (pool, survivors) = two_of_group_dead(target, [0, 1]).await;
    let entry = survivors[0];
    let server = pool.sip[entry];
    let mut client = TcpClient::connect(server).await;
    let sender = pool.user_in((target + 1) % pool.groups(), 0);
    let recipient = pool.user_in(target, 0);
    let im = request(
        "MESSAGE",
        &format!("sip:{recipient}@pool.test"),
        &sender,
        &recipient,
        client.local(),
        "TCP",
        &["Content-Type: text/plain".into()],
        "hello",
    );
    client.send(im.as_bytes()).await;
    client.send(options(server, &sender).as_bytes()).await;
    let first = client.response().await;
    assert_eq!(
        value(&first, "CSeq"),
        "1 OPTIONS",
        "the OPTIONS must not wait behind the IM: {first:?}"
    );
    assert_eq!(first.status_code.code(), 200, "{first:?}");
    let second = client.response().await;
    assert_eq!(value(&second, "CSeq"), "1 MESSAGE", "{second:?}");
    assert_eq!(
        second.status_code.code(),
        503,
        "a group without a primary refuses: {second:?}"
    );
}

/// Claim: a pooled Front End's `200` to a REGISTER names, in its `Server` header, the node that answered and the
/// user's routing group, so a client knows which server and group it belongs to (the harness judges "only the
/// killed server's users are signed out" with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_answer_names_the_answering_node_and_the_users_group() {
    let pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    for entry in 0..pool.len() {
        let user = pool.user_in(entry % pool.groups(), entry);
        let contact: std::net::SocketAddr =
            format!("127.0.0.1:{}", 43_000 + entry).parse().unwrap();
        let mut client = TcpClient::connect(pool.sip[entry]).await;
        let answer = register_as(&mut client, pool.sip[entry], &user, contact).await;
        assert_eq!(answer.status_code.code(), 200, "{user}");
        let group = poolnode::frontend::pool::placement::group_name(pool.user_group(&user));
        let server = value(&answer, "Server");
        assert!(
            server.starts_with("poolnode/")
                && server.ends_with(&format!("({}; {group})", pool.names[entry])),
            "{user} at {}: Server {server:?}",
            pool.names[entry]
        );
    }
}
