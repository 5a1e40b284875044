//! Contact list over SIP: PUBLISH with `Event: vnd-poolchaos-contacts`, a persistent write.

use crate::support::*;

fn contacts(client: &TcpClient, user: &str, body: &str) -> String {
    request(
        "PUBLISH",
        &format!("sip:{user}@pool.test"),
        user,
        user,
        client.local(),
        "TCP",
        &[
            "Event: vnd-poolchaos-contacts".into(),
            "Content-Type: application/vnd.poolchaos.contacts".into(),
        ],
        body,
    )
}

/// Claim: add, remove and list change and show the stored list; a bad command writes nothing; a user cannot write
/// another user's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_list_add_remove_list() {
    let server = Server::with_users().await;
    let mut alice = TcpClient::connect(server.addr).await;
    register_tcp(server.addr, &mut alice, "alice", "alice-pw").await;

    let added = alice
        .request(&contacts(
            &alice,
            "alice",
            "add sip:bob@pool.test\r\nadd sip:carol@pool.test\r\n",
        ))
        .await;
    assert_eq!(added.status_code.code(), 200, "{added}");
    assert_eq!(
        value(&added, "Content-Type"),
        "application/vnd.poolchaos.contacts"
    );
    assert_eq!(added.body, b"sip:bob@pool.test\r\nsip:carol@pool.test\r\n");

    let removed = alice
        .request(&contacts(&alice, "alice", "remove sip:bob@pool.test"))
        .await;
    assert_eq!(removed.body, b"sip:carol@pool.test\r\n");

    let bad = alice
        .request(&contacts(
            &alice,
            "alice",
            "add sip:dave@pool.test\r\nadd dave",
        ))
        .await;
    assert_eq!(bad.status_code.code(), 400);
    let listed = alice.request(&contacts(&alice, "alice", "list")).await;
    assert_eq!(
        listed.body, b"sip:carol@pool.test\r\n",
        "the refused request wrote nothing"
    );
    assert_eq!(
        server.frontend.store.contacts("alice"),
        vec!["sip:carol@pool.test"]
    );

    let other = request(
        "PUBLISH",
        "sip:bob@pool.test",
        "alice",
        "bob",
        alice.local(),
        "TCP",
        &["Event: vnd-poolchaos-contacts".into()],
        "add sip:eve@pool.test",
    );
    let forbidden = alice.request(&other).await;
    assert!(
        matches!(forbidden.status_code.code(), 401 | 403),
        "{forbidden}"
    );
    assert!(server.frontend.store.contacts("bob").is_empty());
    server.stop().await;
}

/// Claim: a contact list holds at most 1,000 contacts (Lync's default); the request whose add would go beyond gets
/// `403 Contact List Full`, writes nothing, and the connection serves on; a list whose answer would pass the
/// transport's body limit is refused the same way, so the server never sends what its own limits would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_list_is_capped_and_its_answer_always_fits() {
    let server = Server::with_users().await;
    let mut alice = TcpClient::connect(server.addr).await;
    register_tcp(server.addr, &mut alice, "alice", "alice-pw").await;
    for batch in 0..10 {
        let body: String = (0..100)
            .map(|k| format!("add sip:c{}@pool.test\r\n", batch * 100 + k))
            .collect();
        let added = alice.request(&contacts(&alice, "alice", &body)).await;
        assert_eq!(added.status_code.code(), 200, "batch {batch}");
    }
    let beyond = alice
        .request(&contacts(&alice, "alice", "add sip:one-more@pool.test"))
        .await;
    assert_eq!(beyond.status_code.code(), 403, "{beyond}");
    assert!(
        value(&beyond, "Warning").contains("at most 1000 contacts"),
        "{beyond}"
    );
    // A swap within the cap passes: remove one, add another.
    let swapped = alice
        .request(&contacts(
            &alice,
            "alice",
            "remove sip:c0@pool.test\r\nadd sip:one-more@pool.test",
        ))
        .await;
    assert_eq!(swapped.status_code.code(), 200);
    let listed = alice.request(&contacts(&alice, "alice", "list")).await;
    assert_eq!(listed.status_code.code(), 200, "the connection serves on");
    assert_eq!(server.frontend.store.contacts("alice").len(), 1000);

    // Long URIs: the answer's size, not the count, is the limit.
    let mut bob = TcpClient::connect(server.addr).await;
    register_tcp(server.addr, &mut bob, "bob", "bob-pw").await;
    let long = "x".repeat(2000);
    let mut refused = None;
    for k in 0..40 {
        let answer = bob
            .request(&contacts(
                &bob,
                "bob",
                &format!("add sip:{long}{k}@pool.test"),
            ))
            .await;
        if answer.status_code.code() == 403 {
            refused = Some(k);
            break;
        }
        assert_eq!(answer.status_code.code(), 200, "{answer}");
    }
    let k =
        refused.expect("a list of 40 × 2 KB contacts is refused before its answer passes 48 KB");
    assert!(k < 25, "refused at {k}");
    let listed = bob.request(&contacts(&bob, "bob", "list")).await;
    assert_eq!(listed.status_code.code(), 200);
    assert!(listed.body.len() <= 48 * 1024);
}
