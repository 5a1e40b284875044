use std::time::Duration;

use poolnode::sip::message::header;
use serde_json::json;

use crate::support::{timings, Sites, PA, PB, TOKEN};
use crate::{code, listed, text, Ua};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_automatic_failover_the_returning_pool_refuses_its_failed_over_users() {
    // Claim: with `automatic_pool_failover`, pb fails pa over by itself after the failover interval; when site sa
    // returns, pa accepts no write for its users (fenced) and sends them to pb, until failback.
    // Proof: pa answers alice's REGISTER 301 and her contact change 503, and pa's Back End never gets that change.
    let mut sites = Sites::start(timings(true)).await;
    sites.serving(&["pa1", "pa2", "pb1", "pb2"]).await;
    sites
        .until("pb hears pa", |s| {
            s.status("pb1")["pairing"]["pair_heartbeat"]["up"] == true
        })
        .await;
    // Each pool serves its own users at full service, and only them.
    let serves = |s: &Sites, node: &str| s.status(node)["pairing"]["serves_users_of"].clone();
    assert_eq!(serves(&sites, "pa1"), json!([PA]));
    assert_eq!(serves(&sites, "pb1"), json!([PB]));
    let mut alice = Ua::connect("alice", sites.sip("pa1")).await;
    let mut registered = alice.register(sites.sip("pa1")).await;
    for _ in 0..100 {
        if code(&registered) == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        registered = alice.register(sites.sip("pa1")).await;
    }
    assert_eq!(code(&registered), 200, "{}", text(&registered));
    assert_eq!(code(&alice.contacts("add sip:before@pool.test").await), 200);
    sites
        .backup_final_after("pb1", std::time::Instant::now())
        .await;

    sites.kill_site("sa").await;
    sites
        .until("pb failed pa over by itself", |s| {
            s.status("pb1")["pairing"]["as_backup"]["pair_failed_over"] == true
        })
        .await;
    sites.start_site("sa").await;
    sites.serving(&["pa1", "pa2"]).await;
    sites
        .until_fence("pa is fenced", &["pa1", "pa2"], "fenced")
        .await;
    // pb serves pa's users as their registrar; fenced pa serves nobody's.
    assert_eq!(serves(&sites, "pb1"), json!([PB, PA]));
    assert_eq!(serves(&sites, "pa2"), json!([]));
    let mut alice = Ua::connect("alice", sites.sip("pa2")).await;
    let redirected = alice.register(sites.sip("pa2")).await;
    assert_eq!(code(&redirected), 301, "{}", text(&redirected));
    assert!(
        header(&redirected.headers, "Contact").is_some_and(|c| c.contains(";q=0.7")),
        "{}",
        text(&redirected)
    );
    let refused = alice.contacts("add sip:at-fenced-pa@pool.test").await;
    assert_eq!(code(&refused), 503, "{}", text(&refused));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = poolnode::backend::BackendClient::for_pool(&sites.cluster, "pb1", "bea").unwrap();
    let records = client.load_all(PA).await.unwrap();
    let on_pa = records
        .iter()
        .find(|r| r.user == "alice")
        .unwrap_or_else(|| panic!("alice on pa Back End: {records:?}"));
    assert_eq!(
        on_pa.contacts,
        ["sip:before@pool.test"],
        "pa's Back End untouched while fenced"
    );

    // Failback lifts the fence.
    sites.hears_pair("pb2").await;
    let (status, back) = sites
        .command("pb2", "pool-failback", json!({"pool": PA}), Some(TOKEN))
        .await;
    assert_eq!(status, 200, "{back}");
    sites
        .until("pa is open again", |s| {
            s.status("pa1")["pairing"]["as_home"]["fence"] == "open"
                && s.status("pa1")["pairing"]["as_home"]["restored"] == true
        })
        .await;
    assert_eq!(serves(&sites, "pa1"), json!([PA]));
    assert_eq!(serves(&sites, "pb1"), json!([PB]));
    let mut alice = Ua::connect("alice", sites.sip("pa1")).await;
    let mut answer = alice.register(sites.sip("pa1")).await;
    for _ in 0..100 {
        if code(&answer) == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = alice.register(sites.sip("pa1")).await;
    }
    assert_eq!(code(&answer), 200, "{}", text(&answer));
    let list = alice.contacts("list").await;
    assert_eq!(listed(&list), ["sip:before@pool.test".to_owned()].into());
}
