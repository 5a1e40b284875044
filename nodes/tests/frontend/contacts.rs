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
