use std::time::{Duration, Instant};

use poolnode::sip::message::header;
use serde_json::json;

use crate::support::{timings, Sites, PA, PB, TOKEN};
use crate::{code, listed, text, Ua};

/// Registers until `200`, following `301`s to `redirect_to` and waiting out `503`s; the time it took.
async fn register_until_ok(ua: &mut Ua, at: std::net::SocketAddr) -> (rsip::Response, Duration) {
    let started = Instant::now();
    for _ in 0..600 {
        let answer = ua.register(at).await;
        if code(&answer) == 200 {
            return (answer, started.elapsed());
        }
        assert!(
            [301, 503].contains(&code(&answer)),
            "only redirects and refusals while the pools decide: {}",
            text(&answer)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never registered", ua.user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pool_users_get_resiliency_mode_then_full_service_and_fail_back_with_their_changes()
{
    // Claim: with every server of site `sa` gone, alice (homed on pa) signs in at pb in resiliency mode after the
    // failover interval, with the documented signals; failover is refused until the management store and the Edge
    // have moved, then gives her everything pa had acknowledged (the backup status said `final`); failback returns
    // her, with the change she made at pb, to pa, which refused her meanwhile.
    // Proof: each step is checked over SIP (codes, headers, NOTIFYs, listed contacts) and in the admin API.
    let mut sites = Sites::start(timings(false)).await;
    sites.serving(&["pa1", "pa2", "pb1", "pb2"]).await;
    sites
        .until("each pool hears its pair", |s| {
            ["pa1", "pb1"]
                .iter()
                .all(|n| s.status(n)["pairing"]["pair_heartbeat"]["up"] == true)
        })
        .await;

    let mut alice = Ua::connect("alice", sites.sip("pa1")).await;
    let (answer, _) = register_until_ok(&mut alice, sites.sip("pa1")).await;
    assert_eq!(
        header(&answer.headers, "X-Poolchaos-Resiliency"),
        Some("off")
    );
    let mut acknowledged = Vec::new();
    for k in 0..5 {
        let contact = format!("sip:friend{k}@pool.test");
        let answer = alice.contacts(&format!("add {contact}")).await;
        assert_eq!(code(&answer), 200, "{}", text(&answer));
        acknowledged.push((contact, Instant::now()));
    }
    let mut carol = Ua::connect("carol", sites.sip("pb1")).await;
    assert_eq!(
        code(&register_until_ok(&mut carol, sites.sip("pb1")).await.0),
        200
    );

    // The backup service pa → pb, as pb's runner reports it.
    let final_at = Instant::now();
    sites.backup_final_after("pb1", final_at).await;
    let backup = sites.status("pb1")["pairing"]["backup_service"].clone();
    println!(
        "backup pa->pb final {:?} after the last acknowledged change: {backup}",
        final_at.elapsed()
    );
    assert_eq!(backup["direction"], "pa->pb");
    assert_eq!(backup["lag_ms"], 0);

    // Site sa lost.
    sites.kill_site("sa").await;
    let lost = Instant::now();
    alice.reconnect(sites.sip("pb1")).await;
    let (answer, took) = register_until_ok(&mut alice, sites.sip("pb1")).await;
    println!(
        "alice in at the backup registrar {:?} after the site loss (failover interval {} ms)",
        lost.elapsed(),
        sites.cluster.timings.backup_failover_interval_ms
    );
    assert!(
        took >= Duration::from_millis(sites.cluster.timings.backup_failover_interval_ms - 200),
        "not before the failover interval: {took:?}"
    );
    assert_eq!(
        header(&answer.headers, "X-Poolchaos-Resiliency"),
        Some("on"),
        "{}",
        text(&answer)
    );
    alice.drain(Duration::from_millis(500)).await;
    assert!(
        alice
            .resiliency_notices()
            .iter()
            .any(|b| b.starts_with("resiliency-mode: on")),
        "told by NOTIFY: {:?}",
        alice.resiliency_notices()
    );

    // Resiliency mode: persistent changes refused explicitly, the contact list unavailable, IM works, presence
    // unknown to others.
    for body in ["add sip:refused@pool.test", "list"] {
        let refused = alice.contacts(body).await;
        assert_eq!(code(&refused), 503, "{}", text(&refused));
        assert_eq!(
            header(&refused.headers, "Warning"),
            Some("399 poolchaos \"resiliency mode: persistent changes unavailable\"")
        );
    }
    let (im, _) = tokio::join!(
        alice.im("carol", "still here"),
        carol.drain(Duration::from_secs(2))
    );
    assert_eq!(code(&im), 200, "IM between users works: {}", text(&im));
    assert_eq!(code(&carol.subscribe("alice").await), 200);
    carol.drain(Duration::from_millis(500)).await;
    let presence = carol
        .notifies
        .iter()
        .rev()
        .find(|r| header(&r.headers, "Event") == Some("presence"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .expect("a presence NOTIFY");
    assert!(presence.contains("<note>unknown</note>"), "{presence}");

    // Failover, refused until its preconditions hold.
    let failover = json!({"pool": PA});
    let (status, refusal) = sites
        .command("pb1", "pool-failover", failover.clone(), Some(TOKEN))
        .await;
    assert_eq!(status, 409, "{refusal}");
    let message = refusal["error"].as_str().unwrap();
    assert!(
        message.contains("run `poolnode admin store-failover --to pb` first"),
        "{message}"
    );
    let (status, moved) = sites
        .command("pb1", "store-failover", json!({"to": PB}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{moved}");
    let (status, refusal) = sites
        .command("pb1", "pool-failover", failover.clone(), Some(TOKEN))
        .await;
    assert_eq!(status, 409, "{refusal}");
    let message = refusal["error"].as_str().unwrap();
    assert!(
        message.contains("run `poolnode admin edge-next-hop --pool edge --next-hop dirb` first"),
        "{message}"
    );
    sites.edge_next_hop("dirb").await;
    let (status, done) = sites
        .command("pb1", "pool-failover", failover, Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{done}");
    println!("failover: {done}");

    // Full service from the last copy: RPO measured against what pa acknowledged.
    alice.drain(Duration::from_millis(500)).await;
    assert!(
        alice
            .resiliency_notices()
            .iter()
            .any(|b| b.starts_with("resiliency-mode: off")),
        "{:?}",
        alice.resiliency_notices()
    );
    let (answer, _) = register_until_ok(&mut alice, sites.sip("pb2")).await;
    assert_eq!(
        header(&answer.headers, "X-Poolchaos-Resiliency"),
        Some("off")
    );
    let list = alice.contacts("list").await;
    assert_eq!(code(&list), 200, "{}", text(&list));
    let have = listed(&list);
    let missing: Vec<&(String, Instant)> = acknowledged
        .iter()
        .filter(|(c, _)| !have.contains(c))
        .collect();
    let missing_ms = missing
        .iter()
        .map(|(_, at)| lost.duration_since(*at).as_millis())
        .max()
        .unwrap_or(0);
    println!(
        "RPO after failover with a final backup: {} of {} acknowledged changes missing, the oldest {missing_ms} ms \
         before the loss",
        missing.len(),
        acknowledged.len()
    );
    assert!(
        missing.is_empty(),
        "final means nothing missing: {missing:?}"
    );
    let answer = alice.contacts("add sip:made-at-pb@pool.test").await;
    assert_eq!(code(&answer), 200, "full service: {}", text(&answer));

    // Site sa back: pa is fenced for its users until failback.
    sites.start_site("sa").await;
    sites.serving(&["pa1", "pa2"]).await;
    sites
        .until("pa knows it is failed over", |s| {
            s.status("pa1")["pairing"]["as_home"]["fence"] == "fenced"
        })
        .await;
    let mut alice_at_home = Ua::connect("alice", sites.sip("pa1")).await;
    let redirected = alice_at_home.register(sites.sip("pa1")).await;
    assert_eq!(code(&redirected), 301, "{}", text(&redirected));
    let refused = alice_at_home
        .contacts("add sip:written-at-fenced-pa@pool.test")
        .await;
    assert_eq!(
        code(&refused),
        503,
        "no writes at the fenced home pool: {}",
        text(&refused)
    );

    // Failback: alice goes home with the change she made at pb.
    sites.hears_pair("pb1").await;
    let (status, back) = sites
        .command("pb1", "pool-failback", json!({"pool": PA}), Some(TOKEN))
        .await;
    assert_eq!(
        status,
        200,
        "{back}; pb1 sees {}; pa1 says {}",
        sites.status("pb1")["pairing"],
        sites.status("pa1")
    );
    alice.drain(Duration::from_millis(500)).await;
    assert!(
        alice
            .resiliency_notices()
            .iter()
            .any(|b| b.contains("register-at: pa")),
        "{:?}",
        alice.resiliency_notices()
    );
    alice.reconnect(sites.sip("pa1")).await;
    let (answer, took) = register_until_ok(&mut alice, sites.sip("pa1")).await;
    println!("alice home again {took:?} after the failback");
    assert_eq!(
        header(&answer.headers, "X-Poolchaos-Resiliency"),
        Some("off")
    );
    let list = alice.contacts("list").await;
    assert_eq!(code(&list), 200, "{}", text(&list));
    let have = listed(&list);
    assert!(have.contains("sip:made-at-pb@pool.test"), "{have:?}");
    for (contact, _) in &acknowledged {
        assert!(have.contains(contact), "{contact} after failback: {have:?}");
    }
    assert!(!have.contains("sip:written-at-fenced-pa@pool.test"));
    // Never rehomed.
    assert!(sites
        .cluster
        .users
        .iter()
        .all(|u| u.home == if u.name.as_str() < "c" { PA } else { PB }));
}
