//! The Director pool in-process over real sockets: digest, `301` with the home pool (`q=0.7`) and its pair
//! (`q=0.3`), refusals, malformed input, and a client moving to the other Director of the pool.

mod roles;

use std::time::Duration;

use poolnode::director::{self, DirectorConfig};
use roles::*;

async fn start_director(node: &str) -> Running {
    let config = DirectorConfig::new(identity(node, "director"));
    Running::start(move |l, stop| director::run(l, config, stop)).await
}

#[tokio::test]
async fn each_user_is_redirected_to_its_home_pool_then_its_pair() {
    // Claim: after digest, alice (fe1) and carol (fe2) each get 301 naming their own home pool at q=0.7 and the
    // pair at q=0.3. The exact Contact text is compared, so order, q-values and host names are all checked.
    let mut d = start_director("dir1").await;
    for (user, expected) in [
        (
            "alice",
            "<sip:fe1:5060;transport=tcp>;q=0.7, <sip:fe2:5060;transport=tcp>;q=0.3",
        ),
        (
            "carol",
            "<sip:fe2:5060;transport=tcp>;q=0.7, <sip:fe1:5060;transport=tcp>;q=0.3",
        ),
    ] {
        let mut conn = Conn::connect(d.sip).await;
        let first = conn
            .request(&register("sip:pool.test", user, conn.local(), &[]))
            .await;
        assert_eq!(
            first.status_code.code(),
            401,
            "a REGISTER without credentials is challenged"
        );
        let answer = answer_challenge(
            &mut conn,
            &first,
            "sip:pool.test",
            user,
            &format!("{user}-pw"),
        )
        .await;
        assert_eq!(answer.status_code.code(), 301, "{answer}");
        assert_eq!(value(&answer, "Contact"), expected);
    }
    let status = status(d.admin).await;
    assert_eq!(status["role"], "director");
    assert_eq!(status["pool"], "dir");
    assert_eq!(status["node"], "dir1");
    assert_eq!(status["redirected"], 2);
    d.kill().await;
}

#[tokio::test]
async fn unknown_users_get_404_and_wrong_passwords_403() {
    // Claim: the Director refuses as a registrar would: an unknown user 404 (no challenge), a wrong password 403,
    // another user's credentials 403; OPTIONS is answered 200.
    let mut d = start_director("dir1").await;
    let mut conn = Conn::connect(d.sip).await;
    let unknown = conn
        .request(&register("sip:pool.test", "dave", conn.local(), &[]))
        .await;
    assert_eq!(unknown.status_code.code(), 404);
    let first = conn
        .request(&register("sip:pool.test", "alice", conn.local(), &[]))
        .await;
    let wrong = answer_challenge(&mut conn, &first, "sip:pool.test", "alice", "nope").await;
    assert_eq!(wrong.status_code.code(), 403);
    let first = conn
        .request(&register("sip:pool.test", "alice", conn.local(), &[]))
        .await;
    let challenge = value(&first, "WWW-Authenticate").to_owned();
    let bobs =
        poolnode::sip::digest::answer(&challenge, "REGISTER", "sip:pool.test", "bob", "bob-pw");
    let mismatch = conn
        .request(&register(
            "sip:pool.test",
            "alice",
            conn.local(),
            &[format!("Authorization: {bobs}")],
        ))
        .await;
    assert_eq!(mismatch.status_code.code(), 403);
    let options = conn
        .request(&request(
            "OPTIONS",
            "sip:dir",
            "alice",
            "alice",
            conn.local(),
            &[],
            "",
        ))
        .await;
    assert_eq!(options.status_code.code(), 200);
    d.kill().await;
}

#[tokio::test]
async fn malformed_input_gets_400_and_the_director_lives_on() {
    // Claim: the Director shares the transport's malformed-input handling: a request without Call-ID and one whose
    // CSeq names another method get 400 on a connection that then still serves, and the server serves others.
    let mut d = start_director("dir1").await;
    let mut conn = Conn::connect(d.sip).await;
    let no_call_id = "REGISTER sip:pool.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKa\r\n\
                      From: <sip:alice@pool.test>;tag=1\r\nTo: <sip:alice@pool.test>\r\nCSeq: 1 REGISTER\r\n\
                      Content-Length: 0\r\n\r\n";
    let r = conn.request(no_call_id).await;
    assert_eq!(r.status_code.code(), 400);
    let mismatch = request(
        "REGISTER",
        "sip:pool.test",
        "alice",
        "alice",
        conn.local(),
        &[],
        "",
    )
    .replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE");
    assert_eq!(conn.request(&mismatch).await.status_code.code(), 400);
    let ok = conn
        .request(&request(
            "OPTIONS",
            "sip:dir",
            "a",
            "a",
            conn.local(),
            &[],
            "",
        ))
        .await;
    assert_eq!(ok.status_code.code(), 200, "the connection still serves");
    let mut other = Conn::connect(d.sip).await;
    let ok = other
        .request(&request(
            "OPTIONS",
            "sip:dir",
            "a",
            "a",
            other.local(),
            &[],
            "",
        ))
        .await;
    assert_eq!(ok.status_code.code(), 200, "the server still serves");
    d.kill().await;
}

#[tokio::test]
async fn a_client_finishes_at_the_other_director_when_its_director_dies() {
    // Claim: Directors are stateless and share their nonce key: a client challenged by dir1, which then dies,
    // connects to the next address of the pool name (dir2) and its answer to dir1's challenge gets the 301 there.
    let mut d1 = start_director("dir1").await;
    let mut d2 = start_director("dir2").await;
    let pool = [d1.sip, d2.sip];
    let mut conn = Conn::connect(pool[0]).await;
    let challenge = conn
        .request(&register("sip:pool.test", "bob", conn.local(), &[]))
        .await;
    assert_eq!(challenge.status_code.code(), 401);
    d1.kill().await;
    assert!(
        conn.closes_within(WAIT).await,
        "the killed Director's connection closes"
    );
    let started = tokio::time::Instant::now();
    let mut retry = None;
    // The client tries the pool name's addresses in turn: dir1 refuses, dir2 accepts.
    for addr in pool {
        if let Some(c) = Conn::try_connect(addr).await {
            retry = Some(c);
            break;
        }
    }
    let mut conn = retry.expect("a Director of the pool accepts");
    let answer = answer_challenge(&mut conn, &challenge, "sip:pool.test", "bob", "bob-pw").await;
    assert_eq!(answer.status_code.code(), 301, "{answer}");
    assert!(value(&answer, "Contact").starts_with("<sip:fe1:5060;transport=tcp>;q=0.7"));
    println!(
        "redirected by the surviving Director {:?} after the kill",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    d2.kill().await;
}
