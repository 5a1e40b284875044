//! A Front End pool with its Back End pair (and witness), in-process over real sockets: lazy writes and their lag,
//! a pool restarted as a whole reloading from the Back End, a Back End failover followed with nothing acknowledged
//! lost, resiliency mode past the grace period (refusals, NOTIFYs, IM still working) and back, and the Back End's
//! quorum vote in a pool of two. The Back End is cut off from the Front Ends with the Back End tests' link shim.

#[path = "../frontend/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End tests' client is shared; this binary uses part of it"
)]
mod client;
mod pool;
#[path = "../backend/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{register, request, TcpClient};
use pool::Fes;
use poolnode::frontend::pool::BackendLink;
use poolnode::frontend::resiliency;
use poolnode::sip::message::header;
use rsip::{Method, Response};
use support::{Cluster, FE, P1, P2};

/// The Front End pool of the Back End tests' cluster (`load_all` finds its users by this name).
const POOL: &str = "fe";

/// A pool of `n` Front Ends, each with its own client of `cluster`'s Back End (through the shim's `fe-1` links).
async fn pool_with_backend(cluster: &Arc<Cluster>, n: usize) -> Fes {
    let c = cluster.clone();
    let mut fes = Fes::bind(POOL, n, move |_, settings| {
        let link = BackendLink::new(
            c.client(),
            POOL,
            &c.config.timings,
            settings.heartbeat_interval,
            settings.failure_timeout,
        );
        settings.use_backend(link);
    })
    .await;
    fes.start_all().await;
    fes
}

async fn contacts(client: &mut TcpClient, user: &str, body: &str) -> Response {
    client
        .request(&request(
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
        ))
        .await
}

async fn publish(client: &mut TcpClient, user: &str, note: &str) -> Response {
    let body = format!("<presence entity=\"sip:{user}@pool.test\"><note>{note}</note></presence>");
    client
        .request(&request(
            "PUBLISH",
            &format!("sip:{user}@pool.test"),
            user,
            user,
            client.local(),
            "TCP",
            &[
                "Event: presence".into(),
                "Content-Type: application/pidf+xml".into(),
                "Expires: 3600".into(),
            ],
            &body,
        ))
        .await
}

async fn registered(client: &mut TcpClient, fes: &Fes, i: usize, user: &str) -> Response {
    let response = client
        .request(&register(fes.sip[i], user, client.local(), "TCP", 300, &[]))
        .await;
    assert_eq!(response.status_code.code(), 200, "{response}");
    response
}

fn listed(response: &Response) -> BTreeSet<String> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn total(fes: &Fes, field: &str) -> u64 {
    fes.running()
        .iter()
        .map(|i| fes.status(*i)[field].as_u64().unwrap())
        .sum()
}

/// The Back End's copy of the pool's users: user → contacts.
async fn backend_contacts(
    cluster: &Cluster,
) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    cluster
        .client()
        .load_all(POOL)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.user, r.contacts.into_iter().collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_back_end_lazily_and_a_pool_restarted_as_a_whole_reloads_them() {
    // Claim: contact and presence changes reach the Back End by the lazy writer alone, with the lag in `/status`;
    // after every Front End is killed and started again, the contact lists and the publication are back.
    // Proof: the Back End's own copy holds every change; the restarted pool answers the same lists over SIP.
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let mut fes = pool_with_backend(&cluster, 3).await;
    fes.settled().await;
    let users: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    let mut expected = std::collections::BTreeMap::new();
    let mut client = TcpClient::connect(fes.sip[0]).await;
    let written = Instant::now();
    for (k, user) in users.iter().enumerate() {
        let body = format!("add sip:friend{k}@pool.test\r\nadd sip:zoe@pool.test\r\n");
        let answer = contacts(&mut client, user, &body).await;
        assert_eq!(answer.status_code.code(), 200, "{answer}");
        expected.insert(user.clone(), listed(&answer));
    }
    assert_eq!(
        publish(&mut client, "user0", "at lunch")
            .await
            .status_code
            .code(),
        200
    );
    let mut lag_seen_ms = 0;
    fes.until("every change is on the Back End", |f| {
        lag_seen_ms = lag_seen_ms.max(total(f, "be_write_lag_ms"));
        total(f, "be_pending_users") == 0 && total(f, "be_flushed_users_total") >= 6
    })
    .await;
    let reached = written.elapsed();
    let last_flush_lag = fes
        .running()
        .iter()
        .map(|i| fes.status(*i)["be_last_flush_lag_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    println!(
        "lazy writes: all on the Back End {reached:?} after the first change (interval {} ms); \
         largest lag seen {lag_seen_ms} ms, last flush lag {last_flush_lag} ms",
        cluster.config.timings.be_write_interval_ms
    );
    assert!(last_flush_lag <= 5_000, "the lag stays near the interval");
    let on_backend = backend_contacts(&cluster).await;
    for (user, list) in &expected {
        assert_eq!(on_backend.get(user), Some(list), "{user} on the Back End");
    }

    for i in 0..3 {
        fes.kill(i).await;
    }
    fes.start_all().await;
    fes.settled().await;
    let mut client = TcpClient::connect(fes.sip[1]).await;
    for (user, list) in &expected {
        let answer = contacts(&mut client, user, "list").await;
        assert_eq!(answer.status_code.code(), 200);
        assert_eq!(
            &listed(&answer),
            list,
            "{user}'s contact list after the restart"
        );
    }
    let view = fes
        .frontend(0)
        .pool()
        .unwrap()
        .view("user0", poolnode::frontend::store::now_unix_ms())
        .await
        .unwrap();
    let note = String::from_utf8_lossy(&view.presence().expect("a publication").body).into_owned();
    assert!(
        note.contains("at lunch"),
        "user0's presence after the restart: {note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_ends_follow_a_back_end_failover_and_lose_nothing_acknowledged() {
    // Claim: killing the Back End principal mid-stream, the Front Ends follow the mirror's promotion by themselves
    // and every contact add acknowledged to a client reaches the Back End.
    // Proof: after the stream, the Back End (now be-2) holds every acknowledged add.
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let fes = pool_with_backend(&cluster, 3).await;
    fes.settled().await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), fes.sip[w]);
        writers.push(tokio::spawn(async move {
            let mut client = TcpClient::connect(addr).await;
            let user = format!("writer{w}");
            // Bounded by the stop flag, set a few seconds from now.
            for k in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let contact = format!("sip:c{k}@pool.test");
                let answer = contacts(&mut client, &user, &format!("add {contact}")).await;
                if answer.status_code.code() == 200 {
                    acked.lock().unwrap().push((user.clone(), contact));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(P1).await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    fes.until("the Front Ends write to the promoted principal", |f| {
        f.running()
            .iter()
            .all(|i| f.status(*i)["be_principal"] == P2 && f.status(*i)["be_pending_users"] == 0)
    })
    .await;
    let followed = killed.elapsed();
    let on_backend = backend_contacts(&cluster).await;
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(u, c)| !on_backend.get(u).is_some_and(|l| l.contains(c)))
        .collect();
    println!(
        "back end failover: {} adds acknowledged, all on {P2} within {followed:?} of the kill; missing {}",
        acked.len(),
        missing.len()
    );
    assert!(acked.len() > 30, "the stream wrote");
    assert!(missing.is_empty(), "acknowledged adds lost: {missing:?}");
}

/// Reads requests on `client` until one has `Event: vnd-poolchaos-resiliency`, answering each; its body.
async fn resiliency_notify(client: &mut TcpClient) -> String {
    // Bounded: each turn reads one request or panics after the client's wait.
    for _ in 0..20 {
        let incoming = client.incoming().await;
        client.answer(&incoming, 200).await;
        if incoming.method == Method::Notify
            && header(&incoming.headers, "Event") == Some(resiliency::EVENT)
        {
            let body = String::from_utf8_lossy(&incoming.body).into_owned();
            assert!(body.ends_with("home: fe\r\n"), "{body}");
            return body.lines().next().unwrap_or_default().to_owned();
        }
    }
    panic!("no resiliency NOTIFY");
}

async fn incoming_within(client: &mut TcpClient, within: Duration) -> String {
    let started = Instant::now();
    // Bounded by `within`: the client's own wait is 10 s per read.
    loop {
        match tokio::time::timeout(Duration::from_secs(9), resiliency_notify(client)).await {
            Ok(body) => return body,
            Err(_) => assert!(
                started.elapsed() < within,
                "no resiliency NOTIFY within {within:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_users_go_into_resiliency_mode_and_back_out_when_the_back_end_returns(
) {
    // Claim: with the Back End unreachable past `be_outage_grace_ms`, clients get the NOTIFY `on`, persistent
    // changes get `503` with the resiliency Warning, IM and contact listing still work, and REGISTER says `on`;
    // when the Back End is reachable again, clients get `off` and changes are accepted.
    // Proof: the exact wire signals on two clients on different Front Ends, and the IM's 200 end to end.
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let fes = pool_with_backend(&cluster, 3).await;
    fes.settled().await;
    let mut alice = TcpClient::connect(fes.sip[0]).await;
    let mut bob = TcpClient::connect(fes.sip[1]).await;
    let first = registered(&mut alice, &fes, 0, "alice").await;
    assert_eq!(header(&first.headers, resiliency::HEADER), Some("off"));
    registered(&mut bob, &fes, 1, "bob").await;
    assert_eq!(
        contacts(&mut alice, "alice", "add sip:bob@pool.test")
            .await
            .status_code
            .code(),
        200
    );

    cluster.net.cut(FE, P1);
    cluster.net.cut(FE, P2);
    let cut = Instant::now();
    let grace = Duration::from_millis(cluster.config.timings.be_outage_grace_ms);
    assert_eq!(
        incoming_within(&mut alice, grace * 4).await,
        "resiliency-mode: on"
    );
    let entered = cut.elapsed();
    assert!(entered >= grace, "not before the grace period: {entered:?}");
    let refused = contacts(&mut alice, "alice", "add sip:carol@pool.test").await;
    assert_eq!(refused.status_code.code(), 503, "{refused}");
    assert_eq!(
        header(&refused.headers, "Warning"),
        Some(resiliency::WARNING)
    );
    let refused = publish(&mut alice, "alice", "away").await;
    assert_eq!(refused.status_code.code(), 503, "{refused}");
    assert_eq!(
        header(&refused.headers, "Warning"),
        Some(resiliency::WARNING)
    );
    let list = contacts(&mut alice, "alice", "list").await;
    assert_eq!(list.status_code.code(), 200);
    assert_eq!(
        listed(&list),
        BTreeSet::from(["sip:bob@pool.test".to_owned()])
    );
    assert_eq!(resiliency_notify(&mut bob).await, "resiliency-mode: on");
    // IM still works: alice → bob, across Front Ends.
    alice
        .send(
            request(
                "MESSAGE",
                "sip:bob@pool.test",
                "alice",
                "bob",
                alice.local(),
                "TCP",
                &["Content-Type: text/plain".into()],
                "still here?",
            )
            .as_bytes(),
        )
        .await;
    let im = bob.incoming().await;
    assert_eq!(im.method, Method::Message);
    bob.answer(&im, 200).await;
    assert_eq!(
        alice.response().await.status_code.code(),
        200,
        "IM in resiliency mode"
    );
    let again = registered(&mut alice, &fes, 0, "alice").await;
    assert_eq!(header(&again.headers, resiliency::HEADER), Some("on"));

    cluster.net.heal(FE, P1);
    cluster.net.heal(FE, P2);
    let healed = Instant::now();
    assert_eq!(
        incoming_within(&mut alice, Duration::from_secs(30)).await,
        "resiliency-mode: off"
    );
    let left = healed.elapsed();
    let accepted = contacts(&mut alice, "alice", "add sip:carol@pool.test").await;
    assert_eq!(accepted.status_code.code(), 200, "{accepted}");
    println!(
        "resiliency mode: entered {entered:?} after the cut (grace {grace:?}), left {left:?} after the heal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_two_serves_with_one_front_end_only_while_the_back_end_votes() {
    // Claim: in a pool of two Front Ends the Back End's principal is the third vote: one Front End with the Back
    // End's vote serves, the same Front End without it does not, and serves again when the vote returns.
    // Proof: `/status` serving and `be_vote`, and a SIP answer (200 / 503) at each step.
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let mut fes = pool_with_backend(&cluster, 2).await;
    fes.settled().await;
    fes.kill(1).await;
    fes.until("fe1 alone serves with the Back End's vote", |f| {
        let s = f.status(0);
        s["fes_running"] == serde_json::json!(["fe1"])
            && s["serving"] == true
            && s["be_vote"] == true
    })
    .await;
    let mut client = TcpClient::connect(fes.sip[0]).await;
    let options = client::options(fes.sip[0], "probe");
    assert_eq!(client.request(&options).await.status_code.code(), 200);

    cluster.net.cut(FE, P1);
    cluster.net.cut(FE, P2);
    fes.until("fe1 without the vote stops serving", |f| {
        f.status(0)["serving"] == false
    })
    .await;
    assert_eq!(client.request(&options).await.status_code.code(), 503);
    cluster.net.heal(FE, P1);
    cluster.net.heal(FE, P2);
    fes.until("fe1 serves again with the vote back", |f| {
        f.status(0)["serving"] == true
    })
    .await;
    assert_eq!(client.request(&options).await.status_code.code(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_that_cannot_store_makes_the_front_ends_refuse_changes_past_the_backlog_bound_and_recover(
) {
    // Claim: while the Back End principal's store cannot take writes (full), the Front Ends' changes wait in their
    // queue; once the oldest has waited `BACKEND_BACKLOG_MAX`, persistent changes are refused with `503` and
    // `Retry-After` (never taken on without bound) while a contact listing is still served; when space returns
    // the queue drains by itself, changes are accepted again, and the Back End holds every acknowledged one.
    // Proof: the wire answers on one client, the pool's `/status` counters, and the Back End's own copy.
    use poolnode::frontend::pool::backend::BACKEND_BACKLOG_MAX;
    let cluster = Arc::new(Cluster::start(true).await);
    cluster.wait_synchronized_principal(P1).await;
    let fes = pool_with_backend(&cluster, 3).await;
    fes.settled().await;
    let mut alice = TcpClient::connect(fes.sip[0]).await;
    registered(&mut alice, &fes, 0, "alice").await;
    let add = |k: usize| format!("add sip:friend{k}@pool.test");
    assert_eq!(
        contacts(&mut alice, "alice", &add(0))
            .await
            .status_code
            .code(),
        200
    );
    fes.until("the first change is on the Back End", |f| {
        total(f, "be_pending_users") == 0
    })
    .await;

    cluster.limit_store(P1, Some(0)).await;
    // Publications big enough that the capped store has no room for one.
    let note = "n".repeat(8 * 1024);
    let mut k = 1;
    let mut acknowledged = 1;
    let full = Instant::now();
    let refused = loop {
        assert!(
            full.elapsed() < BACKEND_BACKLOG_MAX + Duration::from_secs(60),
            "no change refused {:?} after the store filled up",
            full.elapsed()
        );
        let published = publish(&mut alice, "alice", &format!("{k} {note}")).await;
        let answer = contacts(&mut alice, "alice", &add(k)).await;
        match (published.status_code.code(), answer.status_code.code()) {
            (200, 200) => acknowledged = k + 1,
            (_, 503) => break answer,
            other => panic!("unexpected answers {other:?}: {answer}"),
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        full.elapsed() >= BACKEND_BACKLOG_MAX,
        "refused before the backlog bound: {:?}",
        full.elapsed()
    );
    assert!(total(&fes, "be_flush_failures_total") > 0);
    assert!(
        refused.to_string().contains("Back End Backlog"),
        "{refused}"
    );
    assert!(
        header(&refused.headers, "Retry-After").is_some(),
        "{refused}"
    );
    let listing = contacts(&mut alice, "alice", "list").await;
    assert_eq!(listing.status_code.code(), 200, "{listing}");
    let expected: BTreeSet<String> = listed(&listing);
    assert_eq!(expected.len(), acknowledged, "{listing}");

    cluster.limit_store(P1, None).await;
    fes.until("the queue drained", |f| total(f, "be_pending_users") == 0)
        .await;
    let on_backend = backend_contacts(&cluster).await;
    assert_eq!(on_backend.get("alice"), Some(&expected));
    assert_eq!(
        contacts(&mut alice, "alice", &add(k))
            .await
            .status_code
            .code(),
        200,
        "changes are accepted again"
    );
}
