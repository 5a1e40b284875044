//! Calls through Mediation with a real Front End pool: three pooled Front Ends, two Mediation servers and the PSTN
//! gateway stand-in, in-process over real sockets. A user calls a number (answered, held, hung up by the gateway);
//! the Mediation server of a call is killed (the caller gets a BYE); the gateway calls users whose connections are
//! on each of the Front Ends; a flood of calls stops at the Front End's `calls_max`.

#[path = "../frontend/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End tests' client is shared; this binary uses part of it"
)]
mod client;
#[path = "../frontend_backend/pool.rs"]
mod pool;
#[path = "../director/roles.rs"]
mod roles;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{register, request, TcpClient};
use pool::Fes;
use poolnode::cluster::{ClusterConfig, PoolConfig, Timings, UserConfig};
use poolnode::director::{NodeIdentity, Resolver};
use poolnode::frontend::call_state::CallSettings;
use poolnode::gateway::{self, Gateway, GatewayConfig};
use poolnode::mediation::{self, Mediation, MediationConfig};
use poolnode::sip::message::{self, header};
use roles::{listeners, Running};
use rsip::{Method, Request, Response};

/// Generous bound for a BYE after its cause, on a busy 2-core machine (the Front End checks every 100 ms).
const BYE_BOUND: Duration = Duration::from_secs(5);

fn pool_config(name: &str, role: &str, nodes: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        role: role.into(),
        site: "site1".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        pair: None,
        backend: None,
        witness: None,
        next_hop: None,
        gateway: None,
    }
}

/// Pool `pool1` (fe1–fe3) with users alice, bob and carol; Mediation pool `med` (med1, med2) → gateway `gw`.
fn cluster() -> Arc<ClusterConfig> {
    let mut med = pool_config("med", "mediation", &["med1", "med2"]);
    med.gateway = Some("gw".into());
    Arc::new(ClusterConfig {
        name: "calls".into(),
        timings: Timings::fast(),
        pools: vec![
            pool_config("pool1", "frontend", &["fe1", "fe2", "fe3"]),
            med,
            pool_config("gw", "pstn-gateway", &["gw1"]),
        ],
        users: ["alice", "bob", "carol"]
            .into_iter()
            .map(|u| UserConfig {
                name: u.into(),
                password: format!("{u}-pw"),
                home: "pool1".into(),
            })
            .collect(),
        routes: vec![],
        admin_token: roles::TOKEN.into(),
    })
}

struct Net {
    fes: Fes,
    gateway: Arc<Gateway>,
    _gw: Running,
    meds: Vec<(Arc<Mediation>, Running)>,
}

impl Net {
    async fn start() -> Net {
        Net::start_with_calls_max(poolnode::frontend::call_state::CALLS_MAX_DEFAULT).await
    }

    /// The network with each Front End holding at most `calls_max` calls.
    async fn start_with_calls_max(calls_max: usize) -> Net {
        let cluster = cluster();
        let identity = |node: &str, role: &'static str| {
            NodeIdentity::new(cluster.clone(), node, role).unwrap()
        };
        let med_listeners = [listeners().await, listeners().await];
        let med_addrs: Vec<SocketAddr> = med_listeners.iter().map(|l| l.sip_addr()).collect();
        let to_med = Resolver::dns().pin("med", med_addrs);
        let fe_resolver = to_med.clone();
        let mut fes = Fes::bind("pool1", 3, move |_, settings| {
            let mut calls = CallSettings::new("med", "med:5060", fe_resolver.clone());
            calls.leg_check_interval = Duration::from_millis(100);
            calls.calls_max = calls_max;
            settings.calls = Some(calls);
        })
        .await;
        let mut gw_config = GatewayConfig::new(identity("gw1", "pstn-gateway"), to_med);
        gw_config.keepalive_interval = Duration::from_millis(300);
        gw_config.keepalive_timeout = Duration::from_secs(2);
        gw_config.ring_delay = Duration::from_millis(20);
        let gateway = Gateway::new(gw_config);
        let g = gateway.clone();
        let gw = Running::start(move |l, stop| gateway::serve(l, g, stop)).await;
        let resolver = Resolver::dns()
            .pin("gw", vec![gw.sip])
            .pin("pool1", fes.sip.clone());
        let mut meds = Vec::new();
        for (node, l) in ["med1", "med2"].into_iter().zip(med_listeners) {
            let m = Mediation::new(MediationConfig::new(
                identity(node, "mediation"),
                resolver.clone(),
            ));
            let served = m.clone();
            meds.push((
                m,
                Running::start_on(l, move |l, stop| mediation::serve(l, served, stop)).await,
            ));
        }
        fes.start_all().await;
        fes.settled().await;
        Net {
            fes,
            gateway,
            _gw: gw,
            meds,
        }
    }
}

async fn registered(fes: &Fes, i: usize, user: &str) -> TcpClient {
    let mut client = TcpClient::connect(fes.sip[i]).await;
    let response = client
        .request(&register(fes.sip[i], user, client.local(), "TCP", 300, &[]))
        .await;
    assert_eq!(response.status_code.code(), 200, "{response}");
    client
}

/// The final response on `client` (provisional ones skipped, requests of calls already up answered `200`).
async fn final_response(client: &mut TcpClient) -> Response {
    // Bounded: a few provisional responses, and the keep-alives of the calls up meanwhile.
    for _ in 0..100 {
        match client.message().await {
            rsip::SipMessage::Request(r) => client.answer(&r, 200).await,
            rsip::SipMessage::Response(r) if r.status_code.code() >= 200 => return r,
            rsip::SipMessage::Response(_) => {}
        }
    }
    panic!("no final response");
}

/// A caller's side of an answered call: the dialog's values for in-dialog requests.
struct Dialog {
    from: String,
    to: String,
    call_id: String,
}

impl Dialog {
    fn request(&self, client: &TcpClient, method: &str, cseq: u32) -> String {
        format!(
            "{method} sip:mediation@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            client.local(),
            message::token(),
            self.from,
            self.to,
            self.call_id
        )
    }
}

/// `alice` (on `client`) calls `number` with the hold time; the dialog once answered `200` and ACKed.
async fn call_number(client: &mut TcpClient, number: &str, hold_ms: u64) -> Dialog {
    let text = request(
        "INVITE",
        &format!("sip:{number}@pool.test;user=phone"),
        "alice",
        number,
        client.local(),
        "TCP",
        &[
            format!("X-Hold-Ms: {hold_ms}"),
            format!("Contact: <sip:alice@{};transport=tcp>", client.local()),
        ],
        "",
    );
    client.send(text.as_bytes()).await;
    let answer = final_response(client).await;
    assert_eq!(answer.status_code.code(), 200, "{answer}");
    let invite = match message::parse(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    };
    let dialog = Dialog {
        from: header(&invite.headers, "From").unwrap().to_owned(),
        to: header(&answer.headers, "To").unwrap().to_owned(),
        call_id: header(&invite.headers, "Call-ID").unwrap().to_owned(),
    };
    assert!(
        message::param(&dialog.to, "tag").is_some(),
        "the 200 carries a To tag"
    );
    let ack = dialog.request(client, "ACK", 1);
    client.send(ack.as_bytes()).await;
    dialog
}

/// Answers requests on `client` until a BYE comes; how many OPTIONS came before it.
async fn until_bye(client: &mut TcpClient) -> usize {
    let mut options = 0;
    // Bounded: each read waits at most the client's WAIT, and a call sends a few keep-alives a second.
    for _ in 0..1_000 {
        let incoming = client.incoming().await;
        client.answer(&incoming, 200).await;
        match incoming.method {
            Method::Bye => return options,
            Method::Options => options += 1,
            _ => {}
        }
    }
    panic!("no BYE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_calls_a_number_through_the_pool_and_the_gateway_hangs_up() {
    // Claim: a registered user's INVITE to a number goes through its Front End to a Mediation server and the
    // gateway, is answered, carries in-dialog requests both ways, and the gateway's BYE reaches the client.
    // Proof: the client's 200 with a To tag, its own OPTIONS answered 200 end to end, the BYE after the hold time.
    let net = Net::start().await;
    let mut alice = registered(&net.fes, 1, "alice").await;
    let started = Instant::now();
    let dialog = call_number(&mut alice, "+15551234", 1500).await;
    assert_eq!(net.gateway.calls_in_progress(), 1);
    let options = dialog.request(&alice, "OPTIONS", 2);
    alice.send(options.as_bytes()).await;
    // The gateway's keep-alives may come first: answer them until our OPTIONS' answer.
    let mut keepalives = 0;
    let own = loop {
        match alice.message().await {
            rsip::SipMessage::Response(r) => break r,
            rsip::SipMessage::Request(r) => {
                keepalives += usize::from(r.method == Method::Options);
                alice.answer(&r, 200).await;
            }
        }
    };
    assert_eq!(
        own.status_code.code(),
        200,
        "the client's OPTIONS reached the gateway: {own}"
    );
    keepalives += until_bye(&mut alice).await;
    let held = started.elapsed();
    println!("call out: answered, {keepalives} gateway keep-alives reached the client, BYE after {held:?}");
    assert!(
        held >= Duration::from_millis(1400) && held < Duration::from_secs(10),
        "held {held:?}"
    );
    assert!(
        keepalives >= 1,
        "the gateway's in-dialog OPTIONS reach the client"
    );
    assert!(
        roles::eventually(roles::WAIT, || async {
            net.gateway.calls_in_progress() == 0
        })
        .await
    );
    net.fes
        .until("the Front End forgot the call", |f| {
            f.frontend(1).calls_in_progress() == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_mediation_server_of_a_call_sends_the_caller_a_bye() {
    // Claim: when the Mediation server carrying a call dies, the caller gets a BYE within a bound, and the next
    // call goes through the other Mediation server.
    // Proof: the BYE's arrival time after the kill; a second call answered 200.
    let mut net = Net::start().await;
    let mut alice = registered(&net.fes, 0, "alice").await;
    let _dialog = call_number(&mut alice, "+15550001", 60_000).await;
    let carrying = net
        .meds
        .iter()
        .position(|(m, _)| m.calls_in_progress() == 1)
        .expect("one Mediation server carries the call");
    let killed = Instant::now();
    net.meds[carrying].1.kill().await;
    tokio::time::timeout(BYE_BOUND, until_bye(&mut alice))
        .await
        .expect("a BYE within the bound");
    let bye_after = killed.elapsed();
    println!(
        "mediation server killed mid-call: the caller's BYE came {bye_after:?} after the kill"
    );
    let mut bob = registered(&net.fes, 2, "bob").await;
    let _again = call_number(&mut bob, "+15550002", 60_000).await;
    assert_eq!(
        net.meds[1 - carrying].0.calls_in_progress(),
        1,
        "the survivor carries the new call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_calls_users_of_the_pool_wherever_their_connections_are() {
    // Claim: a call from the gateway to a user of the pool rings the user's client on whichever Front End its
    // connection is, the answer goes back, the gateway's keep-alives and BYE reach the client.
    // Proof: three users registered on three different Front Ends, each called, each answering and getting the BYE
    // (Mediation's connection lands on one Front End, so at least two calls cross the pool).
    let net = Net::start().await;
    for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
        let mut client = registered(&net.fes, i, user).await;
        let callee = tokio::spawn(async move {
            let invite: Request = client.incoming().await;
            assert_eq!(invite.method, Method::Invite);
            assert_eq!(header(&invite.headers, "X-Hold-Ms"), Some("800"));
            let mut ok = message::response(&invite, 200, "OK");
            message::push(
                &mut ok.headers,
                "Contact",
                format!("<sip:callee@{};transport=tcp>", client.local()),
            );
            client.send(&message::encode(ok)).await;
            let started = Instant::now();
            let keepalives = until_bye(&mut client).await;
            (started.elapsed(), keepalives)
        });
        let call_id = net
            .gateway
            .place_call(user, "+15550100", Duration::from_millis(800))
            .await
            .expect("answered");
        assert!(!call_id.is_empty());
        let (held, keepalives) = tokio::time::timeout(roles::WAIT, callee)
            .await
            .unwrap()
            .unwrap();
        println!(
            "gateway → {user} on fe{}: held {held:?}, {keepalives} keep-alives, then the BYE",
            i + 1
        );
        assert!(held >= Duration::from_millis(700));
    }
    let unknown = net
        .gateway
        .place_call("dave", "+15550100", Duration::from_millis(100))
        .await;
    assert!(unknown.is_err(), "no such user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_front_ends_cap_get_503_and_the_front_end_calls_on() {
    // Claim: a Front End holds at most `calls_max` calls; a new call beyond gets `503` with `Retry-After` at once,
    // and once a call ends a new one is answered.
    // Proof: 24 INVITEs pipelined on one connection against a cap of 4: exactly 4 answered, 20 refused with
    // Retry-After, the Front End's calls (held and up) never above 4; after one BYE a new call is answered.
    const CAP: usize = 4;
    const FLOOD: usize = 24;
    let net = Net::start_with_calls_max(CAP).await;
    let fe = net.fes.frontend(0);
    let mut alice = registered(&net.fes, 0, "alice").await;
    let mut invites = HashMap::new();
    let mut flood = String::new();
    for i in 0..FLOOD {
        let text = request(
            "INVITE",
            &format!("sip:+1555{i:04}@pool.test;user=phone"),
            "alice",
            "pstn",
            alice.local(),
            "TCP",
            &[
                "X-Hold-Ms: 600000".to_owned(),
                format!("Contact: <sip:alice@{};transport=tcp>", alice.local()),
            ],
            "",
        );
        let invite = match message::parse(text.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        invites.insert(
            header(&invite.headers, "Call-ID").unwrap().to_owned(),
            invite,
        );
        flood.push_str(&text);
    }
    alice.send(flood.as_bytes()).await;
    let (mut answered, mut refused) = (Vec::new(), 0);
    // Bounded: one final answer per INVITE, and the gateway's keep-alives (answered) in between.
    while answered.len() + refused < FLOOD {
        match alice.message().await {
            rsip::SipMessage::Request(r) => alice.answer(&r, 200).await,
            rsip::SipMessage::Response(r) if r.status_code.code() < 200 => {}
            rsip::SipMessage::Response(r) => {
                let call_id = header(&r.headers, "Call-ID").unwrap().to_owned();
                let invite = invites
                    .remove(&call_id)
                    .expect("one final answer per INVITE");
                match r.status_code.code() {
                    200 => {
                        let dialog = Dialog {
                            from: header(&invite.headers, "From").unwrap().to_owned(),
                            to: header(&r.headers, "To").unwrap().to_owned(),
                            call_id,
                        };
                        alice
                            .send(dialog.request(&alice, "ACK", 1).as_bytes())
                            .await;
                        answered.push(dialog);
                    }
                    503 => {
                        assert!(header(&r.headers, "Retry-After").is_some(), "{r}");
                        refused += 1;
                    }
                    _ => panic!("a call answered neither 200 nor 503: {r}"),
                }
            }
        }
        assert!(
            fe.calls_held() <= CAP,
            "{} calls held, cap {CAP}",
            fe.calls_held()
        );
        assert!(fe.calls_in_progress() <= CAP);
    }
    println!(
        "{FLOOD} calls against a cap of {CAP}: {} answered, {refused} refused",
        answered.len()
    );
    assert_eq!(answered.len(), CAP);
    assert_eq!(refused, FLOOD - CAP);
    assert_eq!(fe.calls_in_progress(), CAP);

    let bye = answered[0].request(&alice, "BYE", 2);
    alice.send(bye.as_bytes()).await;
    let bye_answer = loop {
        match alice.message().await {
            rsip::SipMessage::Request(r) => alice.answer(&r, 200).await,
            rsip::SipMessage::Response(r) => break r,
        }
    };
    assert_eq!(bye_answer.status_code.code(), 200, "{bye_answer}");
    net.fes
        .until("the ended call's place is free", |f| {
            f.frontend(0).calls_held() < CAP
        })
        .await;
    let _again = call_number(&mut alice, "+15559999", 600_000).await;
    assert_eq!(fe.calls_in_progress(), CAP);
}
