//! Presence across the pool: watcher and presentity on different Front Ends.

use rsip::Method;

use crate::support::*;

const BUSY: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@pool.test\"><tuple id=\"a\"><status><basic>open</basic></status><note>Busy</note></tuple></presence>";

/// Claim: a watcher subscribed through one Front End hears of a publication made through another: the state is
/// read at the presentity's primary, and the change reaches the watcher's Front End.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_front_end_hears_a_publication_on_another() {
    let pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    let mut alice = TcpClient::connect(pool.sip[0]).await;
    let mut bob = TcpClient::connect(pool.sip[2]).await;
    let bob_contact = "127.0.0.1:43001".parse().unwrap();
    assert_eq!(
        register_as(&mut bob, pool.sip[2], "bob", bob_contact)
            .await
            .status_code
            .code(),
        200
    );
    let subscribe = request(
        "SUBSCRIBE",
        "sip:bob@pool.test",
        "alice",
        "bob",
        alice.local(),
        "TCP",
        &[
            "Event: presence".into(),
            "Expires: 600".into(),
            format!("Contact: <sip:alice@{}>", alice.local()),
        ],
        "",
    );
    assert_eq!(alice.request(&subscribe).await.status_code.code(), 200);
    let first = alice.incoming().await;
    assert_eq!(first.method, Method::Notify);
    assert!(
        String::from_utf8_lossy(&first.body).contains("<basic>open</basic>"),
        "bob is registered (on another Front End): open"
    );
    alice.answer(&first, 200).await;

    let publish = request(
        "PUBLISH",
        "sip:bob@pool.test",
        "bob",
        "bob",
        bob.local(),
        "TCP",
        &[
            "Event: presence".into(),
            "Expires: 600".into(),
            "Content-Type: application/pidf+xml".into(),
        ],
        BUSY,
    );
    assert_eq!(bob.request(&publish).await.status_code.code(), 200);
    // A NOTIFY of the state before may still be on its way (bob's registration reached the other Front Ends
    // meanwhile): the publication's is one of the next few.
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let changed = alice.incoming().await;
        assert_eq!(changed.method, Method::Notify);
        alice.answer(&changed, 200).await;
        bodies.push(String::from_utf8_lossy(&changed.body).into_owned());
        if changed.body == BUSY.as_bytes() {
            return;
        }
    }
    panic!("no NOTIFY carried bob's publication: {bodies:?}");
}
