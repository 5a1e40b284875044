//! Failover: a routing group's primary Front End dies; a secondary is promoted and nothing acknowledged is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

/// Claim: killing a group's primary in the middle of a stream of writes loses no acknowledged write, and the group
/// is served again. Three writers add contacts (each add unique) for users of one group through a surviving Front
/// End; every add that got a 200 must be in the list read after the failover, from the promoted primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_mid_stream_loses_no_acknowledged_write() {
    let mut pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    let group = 0;
    let primary = pool.accepting_primaries(group)[0].0;
    let entry = (0..3).find(|i| *i != primary).unwrap();
    let server = pool.sip[entry];
    let users: Vec<String> = (0..3).map(|k| pool.user_in(group, k)).collect();

    let (stop, _) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for user in users.clone() {
        let mut stop = stop.subscribe();
        writers.push(tokio::spawn(async move {
            let mut client = TcpClient::connect(server).await;
            let mut acked = BTreeSet::new();
            let mut refused = 0usize;
            // Bounded by the stop signal, which the test sends after a deadline.
            for i in 0.. {
                if *stop.borrow_and_update() {
                    break;
                }
                let contact = format!("sip:c{i}@pool.test");
                let answer = contacts(&mut client, &user, &format!("add {contact}")).await;
                match answer.status_code.code() {
                    200 => {
                        acked.insert(contact);
                        // Paced, so the list stays far below its cap on any machine (at most ~600 contacts in
                        // the test's ~3 s, release build or debug).
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    503 => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected {other} for {user}"),
                }
            }
            (user, acked, refused)
        }));
    }
    // Writes flow, then the primary dies in their middle.
    tokio::time::sleep(Duration::from_millis(700)).await;
    pool.kill(primary).await;
    pool.until("a secondary is promoted and accepts writes", |p| {
        p.accepting_primaries(group)
            .iter()
            .any(|(i, epoch)| *i != primary && *epoch > 1)
    })
    .await;
    // Writes go on against the new primary for a while.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.send(true).unwrap();
    let mut reader = TcpClient::connect(server).await;
    for writer in writers {
        let (user, acked, refused) = writer.await.unwrap();
        assert!(
            acked.len() > 10,
            "{user}: too few writes acknowledged to mean anything"
        );
        let list = contacts(&mut reader, &user, "list").await;
        assert_eq!(list.status_code.code(), 200, "the group serves again");
        let held: BTreeSet<String> = listed(&list).into_iter().collect();
        let lost: Vec<_> = acked.difference(&held).collect();
        assert!(
            lost.is_empty(),
            "{user} lost acknowledged writes {lost:?} ({refused} refused during the failover)"
        );
    }
    let primaries = pool.accepting_primaries(group);
    assert_eq!(primaries.len(), 1, "one primary: {primaries:?}");
}

/// Claim: a client whose Front End died registers again on another Front End of the pool and hears `refreshed`
/// (the binding survived, replicated), and IMs reach it over its new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_dead_front_end_registers_elsewhere_and_is_refreshed() {
    let mut pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    let contact: std::net::SocketAddr = "127.0.0.1:41000".parse().unwrap();
    let mut alice = TcpClient::connect(pool.sip[0]).await;
    let first = register_as(&mut alice, pool.sip[0], "alice", contact).await;
    assert_eq!(first.status_code.code(), 200);
    assert_eq!(value(&first, "presence-state"), "register-action=\"added\"");
    let mut bob = TcpClient::connect(pool.sip[2]).await;
    assert_eq!(
        register_as(
            &mut bob,
            pool.sip[2],
            "bob",
            "127.0.0.1:41001".parse().unwrap()
        )
        .await
        .status_code
        .code(),
        200
    );

    pool.kill(0).await;
    assert!(
        alice.closed().await,
        "the dead Front End's connection breaks"
    );
    // The client finds the pool again under its name: the next address answers.
    let mut alice = TcpClient::connect(pool.sip[1]).await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let again = loop {
        let answer = register_as(&mut alice, pool.sip[1], "alice", contact).await;
        if answer.status_code.code() == 200 {
            break answer;
        }
        assert_eq!(
            answer.status_code.code(),
            503,
            "only a refusal while the group fails over"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never registered again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(&again, "presence-state"),
        "register-action=\"refreshed\"",
        "the binding survived the Front End"
    );

    // Bob (on fe3) writes to alice, now on fe2: the IM goes over her new connection.
    bob.send(
        request(
            "MESSAGE",
            "sip:alice@pool.test",
            "bob",
            "alice",
            bob.local(),
            "TCP",
            &["Content-Type: text/plain".into()],
            "still there?",
        )
        .as_bytes(),
    )
    .await;
    let relayed = alice.incoming().await;
    assert_eq!(relayed.body, b"still there?");
    alice.answer(&relayed, 200).await;
    assert_eq!(bob.response().await.status_code.code(), 200);
}
