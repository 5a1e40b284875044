use std::time::Duration;

use poolnode::sip::message::header;
use serde_json::json;

use crate::support::{timings, Sites, PA, PB, TOKEN};
use crate::{code, text, Ua};

/// The `SIP-ETag` of a `200` to a PUBLISH.
fn etag(answer: &rsip::Response) -> String {
    assert_eq!(code(answer), 200, "{}", text(answer));
    header(&answer.headers, "SIP-ETag")
        .expect("a 200 to a new publication carries its tag")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_failback_a_users_presence_is_the_last_one_published_on_the_backup_pool() {
    // Claim: a user whose pool was lost publishes presence on the backup pool after the failover; once failed
    // back, the home pool serves as their presence the last publication they made, not an older one. A user's
    // presence is their latest publication; each publication has a random tag, and the home pool's reload reads
    // them from its Back End: the order they were written must survive the Back End and the reload.
    // Proof: alice publishes at pa, then at pb until her last tag sorts before an earlier one of pb's (so an order
    // by tag would put another publication last); after the failback, bob's SUBSCRIBE at pa gets her last note.
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
    assert_eq!(code(&alice.register_until_ok(sites.sip("pa1")).await), 200);
    for k in 1..=3 {
        etag(&alice.publish(&format!("home#{k}")).await);
    }
    sites
        .backup_final_after("pb1", std::time::Instant::now())
        .await;

    // Site sa lost; the operator fails pa over to pb.
    sites.kill_site("sa").await;
    alice.reconnect(sites.sip("pb1")).await;
    let mut answer = alice.register(sites.sip("pb1")).await;
    for _ in 0..200 {
        if code(&answer) == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = alice.register(sites.sip("pb1")).await;
    }
    assert_eq!(code(&answer), 200, "{}", text(&answer));
    let (status, moved) = sites
        .command("pb1", "store-failover", json!({"to": PB}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{moved}");
    sites.edge_next_hop("dirb").await;
    let (status, done) = sites
        .command("pb1", "pool-failover", json!({"pool": PA}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(code(&alice.register_until_ok(sites.sip("pb1")).await), 200);

    // At the backup pool: until the last tag sorts before an earlier tag of pb's.
    let mut tags: Vec<String> = Vec::new();
    let mut last = String::new();
    for k in 1..=50 {
        last = format!("backup#{k}");
        tags.push(etag(&alice.publish(&last).await));
        let newest = tags.last().unwrap();
        if k >= 3 && tags.iter().any(|t| t > newest) {
            break;
        }
    }
    let newest = tags.last().unwrap();
    assert!(
        tags.iter().any(|t| t > newest),
        "50 random tags in rising order: {tags:?}"
    );

    // Site sa back, fenced; the operator fails back.
    sites.start_site("sa").await;
    sites.serving(&["pa1", "pa2"]).await;
    sites
        .until("pa knows it is failed over", |s| {
            s.status("pa1")["pairing"]["as_home"]["fence"] == "fenced"
        })
        .await;
    sites.hears_pair("pb1").await;
    let (status, back) = sites
        .command("pb1", "pool-failback", json!({"pool": PA}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{back}");

    // bob, at home, watches alice: her presence is the last she published, on the backup pool.
    let mut bob = Ua::connect("bob", sites.sip("pa1")).await;
    let mut answer = bob.register(sites.sip("pa1")).await;
    for _ in 0..200 {
        if code(&answer) == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = bob.register(sites.sip("pa1")).await;
    }
    assert_eq!(code(&answer), 200, "{}", text(&answer));
    assert_eq!(code(&bob.subscribe("alice").await), 200);
    bob.drain(Duration::from_millis(500)).await;
    assert_eq!(
        bob.last_presence_note().as_deref(),
        Some(last.as_str()),
        "alice's publications at pb had the tags {tags:?}"
    );
}
