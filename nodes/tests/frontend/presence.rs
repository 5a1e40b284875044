//! Presence: PUBLISH stores a document, SUBSCRIBE gets it at once, and watchers hear of every change.

use rsip::{Method, Request};

use crate::support::*;

const OPEN: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@pool.test\"><tuple id=\"a\"><status><basic>open</basic></status><note>Available</note></tuple></presence>";
const BUSY: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@pool.test\"><tuple id=\"a\"><status><basic>open</basic></status><note>Busy</note></tuple></presence>";

async fn notify(client: &mut TcpClient) -> Request {
    let notify = client.incoming().await;
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(
        poolnode::sip::message::header(&notify.headers, "Event"),
        Some("presence")
    );
    client.answer(&notify, 200).await;
    notify
}

/// Claim: a watcher gets a NOTIFY with the current state after its 200, then one per change: publish, modify,
/// unpublish; and a final one when it unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_is_notified_of_every_change() {
    let server = Server::with_users().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let mut bob = TcpClient::connect(server.addr).await;
    register_tcp(server.addr, &mut alice, "alice", "alice-pw").await;
    register_tcp(server.addr, &mut bob, "bob", "bob-pw").await;

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
    let accepted = alice.request(&subscribe).await;
    assert_eq!(accepted.status_code.code(), 200, "{accepted}");
    let first = notify(&mut alice).await;
    assert!(value_of(&first, "Subscription-State").starts_with("active;expires="));
    assert!(
        String::from_utf8_lossy(&first.body).contains("<basic>open</basic>"),
        "bob is registered: open"
    );

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
        OPEN,
    );
    let published = bob.request(&publish).await;
    assert_eq!(published.status_code.code(), 200, "{published}");
    let etag = value(&published, "SIP-ETag").to_owned();
    assert!(!etag.is_empty());
    assert_eq!(notify(&mut alice).await.body, OPEN.as_bytes());

    let modify = request(
        "PUBLISH",
        "sip:bob@pool.test",
        "bob",
        "bob",
        bob.local(),
        "TCP",
        &[
            "Event: presence".into(),
            format!("SIP-If-Match: {etag}"),
            "Content-Type: application/pidf+xml".into(),
        ],
        BUSY,
    );
    let modified = bob.request(&modify).await;
    assert_eq!(modified.status_code.code(), 200);
    let etag = value(&modified, "SIP-ETag").to_owned();
    assert_eq!(notify(&mut alice).await.body, BUSY.as_bytes());

    let stale = request(
        "PUBLISH",
        "sip:bob@pool.test",
        "bob",
        "bob",
        bob.local(),
        "TCP",
        &["Event: presence".into(), "SIP-If-Match: nope".into()],
        "",
    );
    assert_eq!(bob.request(&stale).await.status_code.code(), 412);

    let remove = request(
        "PUBLISH",
        "sip:bob@pool.test",
        "bob",
        "bob",
        bob.local(),
        "TCP",
        &[
            "Event: presence".into(),
            format!("SIP-If-Match: {etag}"),
            "Expires: 0".into(),
        ],
        "",
    );
    assert_eq!(bob.request(&remove).await.status_code.code(), 200);
    assert!(String::from_utf8_lossy(&notify(&mut alice).await.body).contains("<basic>open</basic>"));

    // Unsubscribe inside the dialog: To carries the tag of the 200.
    let to = value(&accepted, "To").to_owned();
    let call_id = value(&accepted, "Call-ID").to_owned();
    let from = value(&accepted, "From").to_owned();
    let unsubscribe = subscribe
        .replace("To: <sip:bob@pool.test>\r\n", &format!("To: {to}\r\n"))
        .replace("Expires: 600", "Expires: 0")
        .replace("CSeq: 1 SUBSCRIBE", "CSeq: 2 SUBSCRIBE");
    assert!(unsubscribe.contains(&call_id) && unsubscribe.contains(&from));
    alice.send(unsubscribe.as_bytes()).await;
    // The 200 and the final NOTIFY may come in either order (RFC 6665 allows it).
    let mut saw_ok = false;
    let mut saw_final = false;
    for _ in 0..2 {
        match alice.message().await {
            rsip::SipMessage::Response(r) => saw_ok = r.status_code.code() == 200,
            rsip::SipMessage::Request(n) => {
                assert!(value_of(&n, "Subscription-State").starts_with("terminated"));
                alice.answer(&n, 200).await;
                saw_final = true;
            }
        }
    }
    assert!(saw_ok && saw_final);
    super::registrar::wait_until(|| server.frontend_subscriptions() == 0).await;
    server.stop().await;
}

/// Claim: SUBSCRIBE for an event other than presence gets 489.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_gets_489() {
    let server = Server::open().await;
    let mut alice = TcpClient::connect(server.addr).await;
    let subscribe = request(
        "SUBSCRIBE",
        "sip:bob@pool.test",
        "alice",
        "bob",
        alice.local(),
        "TCP",
        &["Event: dialog".into()],
        "",
    );
    assert_eq!(alice.request(&subscribe).await.status_code.code(), 489);
    server.stop().await;
}

fn value_of<'a>(request: &'a Request, name: &str) -> &'a str {
    poolnode::sip::message::header(&request.headers, name).unwrap_or_default()
}

trait Subscriptions {
    fn frontend_subscriptions(&self) -> usize;
}

impl Subscriptions for Server {
    fn frontend_subscriptions(&self) -> usize {
        self.frontend.subscription_count()
    }
}
