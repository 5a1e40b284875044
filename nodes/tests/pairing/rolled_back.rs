use poolnode::backend::{BackendClient, Batch, Op, UserRecord};
use poolnode::pairing::{PairRecord, Transition};

use crate::support::{timings, Sites, PA, PB};
use crate::{code, listed, text, Ua};

/// Puts pb's pairing record, as pb's Front Ends read it from pb's Back End, into `transition`.
async fn set_pb_transition(sites: &Sites, transition: Option<Transition>) {
    let client = BackendClient::for_pool(&sites.cluster, "pb1", "beb").unwrap();
    let account = PairRecord::account(PB);
    // A new cluster's record is not written yet: then it is the initial one, as pb1 reports it.
    let store = sites.status("pb1")["pairing"]["management_store"]["location"]
        .as_str()
        .expect("pb1 reports its management store")
        .to_owned();
    let mut record = client
        .load(&account)
        .await
        .unwrap()
        .and_then(|stored| PairRecord::from_user_record(&stored))
        .unwrap_or_else(|| PairRecord::new(&store));
    record.transition = transition;
    client
        .write(Batch::new(vec![Op::PutUser(record.to_user_record(PB))]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_rolled_back_before_it_completed_loses_nothing_at_the_home_pool() {
    // Claim: a failover of pa that pb starts and rolls back (its restore failed, or it was called off) fences pa
    // only while it runs; when the fence lifts, pa serves its users from its routing groups as they were, and
    // reloads nothing from its Back End, which the lazy writer keeps behind them.
    // Proof: with a 60 s lazy-write interval pa's Back End holds an older state of alice (written there by the
    // test, as an earlier flush would have) and not the contact she adds just before the fence; after the fence
    // comes and goes, pa lists what she added, not the Back End's older state.
    let sites = Sites::start(poolnode::cluster::Timings {
        be_write_interval_ms: 60_000,
        ..timings(false)
    })
    .await;
    sites.serving(&["pa1", "pa2", "pb1", "pb2"]).await;
    sites.hears_pair("pb1").await;
    let mut alice = Ua::connect("alice", sites.sip("pa1")).await;
    let registered = alice.register_until_ok(sites.sip("pa1")).await;
    assert_eq!(code(&registered), 200, "{}", text(&registered));
    let pa_backend = BackendClient::for_pool(&sites.cluster, "pa1", "bea").unwrap();
    let older = UserRecord {
        user: "alice".into(),
        pool: PA.into(),
        contacts: vec!["sip:older@pool.test".into()],
        ..UserRecord::default()
    };
    pa_backend
        .write(Batch::new(vec![Op::PutUser(older)]))
        .await
        .unwrap();
    let added = alice.contacts("add sip:just-before@pool.test").await;
    assert_eq!(code(&added), 200, "{}", text(&added));
    let stored = pa_backend.load("alice").await.unwrap();
    assert_eq!(
        stored.map(|r| r.contacts),
        Some(vec!["sip:older@pool.test".to_owned()]),
        "the lazy writer is behind"
    );

    set_pb_transition(&sites, Some(Transition::FailingOver)).await;
    sites
        .until_fence(
            "pa is fenced by the failover in progress",
            &["pa1", "pa2"],
            "fenced",
        )
        .await;
    set_pb_transition(&sites, None).await;
    sites
        .until("pa serves its users again", |s| {
            ["pa1", "pa2"].iter().all(|n| {
                s.status(n)["pairing"]["as_home"]["fence"] == "open"
                    && s.status(n)["pairing"]["as_home"]["restored"] == true
            })
        })
        .await;

    let mut alice = Ua::connect("alice", sites.sip("pa2")).await;
    let answer = alice.register_until_ok(sites.sip("pa2")).await;
    assert_eq!(code(&answer), 200, "{}", text(&answer));
    let list = alice.contacts("list").await;
    assert_eq!(
        listed(&list),
        ["sip:just-before@pool.test".to_owned()].into(),
        "{}",
        text(&list)
    );
}
