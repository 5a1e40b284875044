//! Registrar semantics: digest authentication, bindings, `Expires`, de-registration, expiry, `presence-state`.

use std::time::Duration;

use poolnode::frontend::FrontEndConfig;
use poolnode::sip::message::{header, headers_all};

use crate::support::*;

/// Claim: REGISTER without credentials is challenged, with wrong ones refused, with right ones bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_requires_digest_credentials() {
    let server = Server::with_users().await;
    let mut client = TcpClient::connect(server.addr).await;
    let first = client
        .request(&register(
            server.addr,
            "alice",
            client.local(),
            "TCP",
            300,
            &[],
        ))
        .await;
    assert_eq!(first.status_code.code(), 401);
    let challenge = value(&first, "WWW-Authenticate").to_owned();
    assert!(
        challenge.starts_with("Digest realm=\"poolchaos\""),
        "{challenge}"
    );

    let uri = format!("sip:{}", server.addr);
    let wrong = poolnode::sip::digest::answer(&challenge, "REGISTER", &uri, "alice", "not-it");
    let refused = client
        .request(&register(
            server.addr,
            "alice",
            client.local(),
            "TCP",
            300,
            &[format!("Authorization: {wrong}")],
        ))
        .await;
    assert_eq!(refused.status_code.code(), 403);
    let as_bob = poolnode::sip::digest::answer(&challenge, "REGISTER", &uri, "bob", "bob-pw");
    let mismatch = client
        .request(&register(
            server.addr,
            "alice",
            client.local(),
            "TCP",
            300,
            &[format!("Authorization: {as_bob}")],
        ))
        .await;
    assert_eq!(
        mismatch.status_code.code(),
        403,
        "bob's credentials must not register alice"
    );
    assert_eq!(server.frontend.store.bindings("alice", now()).len(), 0);

    let ok = register_tcp(server.addr, &mut client, "alice", "alice-pw").await;
    assert_eq!(ok.status_code.code(), 200);
    assert_eq!(value(&ok, "presence-state"), "register-action=\"added\"");
    assert!(value(&ok, "ms-keep-alive").contains("timeout=300"));
    assert_eq!(server.frontend.store.bindings("alice", now()).len(), 1);
    server.stop().await;
}

/// Claim: `added` for a new binding, `refreshed` for a refresh the server still knew, `added` again once the
/// server lost the binding (here: it expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_action_is_added_then_refreshed_then_added_after_loss() {
    let server = Server::open().await;
    let mut client = TcpClient::connect(server.addr).await;
    let contact = client.local();
    let first = client
        .request(&register(server.addr, "alice", contact, "TCP", 300, &[]))
        .await;
    assert_eq!(value(&first, "presence-state"), "register-action=\"added\"");
    let refresh = client
        .request(&register(server.addr, "alice", contact, "TCP", 300, &[]))
        .await;
    assert_eq!(
        value(&refresh, "presence-state"),
        "register-action=\"refreshed\""
    );
    // A short binding the server then loses: the refresh after it must say `added`.
    let short = client
        .request(&register(server.addr, "alice", contact, "TCP", 1, &[]))
        .await;
    assert_eq!(
        value(&short, "presence-state"),
        "register-action=\"refreshed\""
    );
    wait_until(|| server.frontend.store.bindings("alice", now()).is_empty()).await;
    let after_loss = client
        .request(&register(server.addr, "alice", contact, "TCP", 300, &[]))
        .await;
    assert_eq!(
        value(&after_loss, "presence-state"),
        "register-action=\"added\""
    );
    server.stop().await;
}

/// Claim: a user holds several bindings; `Expires: 0` removes one; `Contact: *` removes all; the 200 lists the
/// bindings left with their remaining lifetimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_bindings_and_deregistration() {
    let server = Server::open().await;
    let mut phone = TcpClient::connect(server.addr).await;
    let mut laptop = TcpClient::connect(server.addr).await;
    phone
        .request(&register(
            server.addr,
            "alice",
            phone.local(),
            "TCP",
            300,
            &[],
        ))
        .await;
    let both = laptop
        .request(&register(
            server.addr,
            "alice",
            laptop.local(),
            "TCP",
            600,
            &[],
        ))
        .await;
    let contacts = headers_all(&both.headers, "Contact");
    assert_eq!(contacts.len(), 2, "{both}");
    assert!(
        contacts
            .iter()
            .any(|c| c.ends_with(";expires=600") || c.ends_with(";expires=599")),
        "{contacts:?}"
    );

    let one_left = phone
        .request(&register(
            server.addr,
            "alice",
            phone.local(),
            "TCP",
            0,
            &[],
        ))
        .await;
    assert_eq!(one_left.status_code.code(), 200);
    assert_eq!(headers_all(&one_left.headers, "Contact").len(), 1);
    assert_eq!(server.frontend.store.bindings("alice", now()).len(), 1);

    let wildcard = request(
        "REGISTER",
        &format!("sip:{}", server.addr),
        "alice",
        "alice",
        phone.local(),
        "TCP",
        &["Contact: *".into(), "Expires: 0".into()],
        "",
    );
    let none_left = phone.request(&wildcard).await;
    assert_eq!(none_left.status_code.code(), 200);
    assert!(header(&none_left.headers, "Contact").is_none());
    assert!(server.frontend.store.bindings("alice", now()).is_empty());

    let bad_wildcard = request(
        "REGISTER",
        &format!("sip:{}", server.addr),
        "alice",
        "alice",
        phone.local(),
        "TCP",
        &["Contact: *".into(), "Expires: 60".into()],
        "",
    );
    assert_eq!(phone.request(&bad_wildcard).await.status_code.code(), 400);
    server.stop().await;
}

/// Claim: stale bindings expire on their own; a too-short expiry gets 423 with Min-Expires; a long one is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_expire_and_expiry_is_bounded() {
    let server = Server::start(FrontEndConfig {
        credentials: poolnode::frontend::Credentials::open(),
        expires_min: Duration::from_secs(10),
        expires_max: Duration::from_secs(3600),
        sweep_interval: Duration::from_millis(100),
        ..FrontEndConfig::default()
    })
    .await;
    let mut client = TcpClient::connect(server.addr).await;
    let brief = client
        .request(&register(
            server.addr,
            "alice",
            client.local(),
            "TCP",
            5,
            &[],
        ))
        .await;
    assert_eq!(brief.status_code.code(), 423);
    assert_eq!(value(&brief, "Min-Expires"), "10");
    let long = client
        .request(&register(
            server.addr,
            "alice",
            client.local(),
            "TCP",
            99_999,
            &[],
        ))
        .await;
    assert!(value(&long, "Contact").ends_with(";expires=3600"), "{long}");

    let contact = "sip:bob@127.0.0.1:9;transport=tcp";
    let expiring = request(
        "REGISTER",
        &format!("sip:{}", server.addr),
        "bob",
        "bob",
        client.local(),
        "TCP",
        &[format!("Contact: <{contact}>;expires=10")],
        "",
    );
    assert_eq!(client.request(&expiring).await.status_code.code(), 200);
    assert_eq!(server.frontend.store.bindings("bob", now()).len(), 1);
    // Swept within its 10 s lifetime plus a generous margin.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.frontend.store.binding_count(0) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's binding was never swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

pub fn now() -> u64 {
    poolnode::frontend::store::now_unix_ms()
}

/// Polls `done` every 100 ms for up to 20 s.
pub async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 20 s");
}
