//! A Front End returns: groups rebalance back to it without signing anyone out.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// Claim: when a killed Front End returns, its groups move back to it (it is their primary again) and no one is
/// signed out: every refresh, before, during and after the rebalance, says `refreshed`, never `added`, and an IM
/// still reaches its recipient. The clients are on the other Front Ends, as a dead Front End's clients would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_front_end_signs_no_one_out() {
    let mut pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    let returning = 0;
    let mut clients = Vec::new();
    for (k, user) in (0..12).map(|k| (k, format!("member{k}"))) {
        let server = pool.sip[1 + k % 2];
        let contact: SocketAddr = format!("127.0.0.1:{}", 42_000 + k).parse().unwrap();
        let mut client = TcpClient::connect(server).await;
        let answer = register_as(&mut client, server, &user, contact).await;
        assert_eq!(answer.status_code.code(), 200, "{user}");
        clients.push((user, server, contact, client));
    }
    let refresh_all = |clients: &mut Vec<(String, SocketAddr, SocketAddr, TcpClient)>| {
        let clients = std::mem::take(clients);
        async move {
            let mut back = Vec::new();
            let mut refused = 0;
            for (user, server, contact, mut client) in clients {
                let answer = register_as(&mut client, server, &user, contact).await;
                match answer.status_code.code() {
                    200 => assert_eq!(
                        value(&answer, "presence-state"),
                        "register-action=\"refreshed\"",
                        "{user} was signed out"
                    ),
                    503 => refused += 1,
                    other => panic!("{user}: unexpected {other}"),
                }
                back.push((user, server, contact, client));
            }
            (back, refused)
        }
    };

    pool.kill(returning).await;
    pool.until("the groups of the dead Front End fail over", |p| {
        (0..p.groups()).all(|g| {
            let primaries = p.accepting_primaries(g);
            primaries.len() == 1 && primaries[0].0 != returning
        })
    })
    .await;
    let (back, refused) = refresh_all(&mut clients).await;
    clients = back;
    assert_eq!(refused, 0, "every group serves after the failover");

    pool.start(returning).await;
    let home_groups: Vec<usize> = (0..pool.groups())
        .filter(|g| pool.home(*g)[0] == returning)
        .collect();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    // Bounded by the deadline: refresh everyone while the groups move back.
    loop {
        let (back, _) = refresh_all(&mut clients).await;
        clients = back;
        let rebalanced = home_groups.iter().all(|g| {
            pool.accepting_primaries(*g)
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>()
                == [returning]
        });
        if rebalanced {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returning Front End never got its groups back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.settled().await;
    let (back, refused) = refresh_all(&mut clients).await;
    clients = back;
    assert_eq!(refused, 0, "every group serves after the rebalance");
    // Every binding is still there: an IM from the first member reaches the second.
    let (first, second) = clients.split_at_mut(1);
    let (sender, recipient) = (&mut first[0], &mut second[0]);
    sender
        .3
        .send(
            request(
                "MESSAGE",
                &format!("sip:{}@pool.test", recipient.0),
                &sender.0,
                &recipient.0,
                sender.3.local(),
                "TCP",
                &["Content-Type: text/plain".into()],
                "welcome back",
            )
            .as_bytes(),
        )
        .await;
    let relayed = recipient.3.incoming().await;
    assert_eq!(relayed.body, b"welcome back");
    recipient.3.answer(&relayed, 200).await;
    assert_eq!(sender.3.response().await.status_code.code(), 200);
}
