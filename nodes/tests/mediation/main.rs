//! The Mediation pool and the PSTN gateway stand-in in-process over real sockets: a call to a number answered,
//! held and hung up; a Mediation server killed with calls up (both ends see the end, new calls use the
//! survivor, the call-setup success ratio during the fault); a call from the gateway to a user's Front End; a
//! flood of calls at each server's `calls_max`.

#[path = "../director/roles.rs"]
mod roles;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolnode::director::Resolver;
use poolnode::gateway::{self, Gateway, GatewayConfig};
use poolnode::mediation::{self, Mediation, MediationConfig};
use poolnode::sip::message::{self, header, param, uri_in, user_of};
use poolnode::sip::{Handler, Listeners, Peer, Reply, TransportConfig};
use roles::*;
use rsip::{Method, Request, SipMessage};

/// Keep-alive interval of both ends in these tests.
const KEEPALIVE: Duration = Duration::from_millis(300);

fn gateway_config(resolver: Resolver) -> GatewayConfig {
    let mut config = GatewayConfig::new(identity("gw1", "pstn-gateway"), resolver);
    config.keepalive_interval = KEEPALIVE;
    config.keepalive_timeout = Duration::from_secs(1);
    config.ring_delay = Duration::from_millis(20);
    config
}

/// The gateway, and Mediation servers med1 and med2 relaying to it (`fe1` pinned to `fe1` if given).
struct Net {
    gateway: Arc<Gateway>,
    gw: Running,
    meds: Vec<(Arc<Mediation>, Running)>,
}

impl Net {
    async fn start(fe1: Option<SocketAddr>) -> Net {
        Net::start_with_calls_max(fe1, 1_000, 1_000).await
    }

    /// The network with the gateway holding at most `gateway_calls_max` calls and each Mediation server
    /// `mediation_calls_max`.
    async fn start_with_calls_max(
        fe1: Option<SocketAddr>,
        gateway_calls_max: usize,
        mediation_calls_max: usize,
    ) -> Net {
        // The gateway must know the Mediation servers' addresses before they exist: bind them first.
        let med_listeners = [listeners().await, listeners().await];
        let med_addrs: Vec<SocketAddr> = med_listeners.iter().map(|l| l.sip_addr()).collect();
        let mut gw_config = gateway_config(Resolver::dns().pin("med", med_addrs));
        gw_config.calls_max = gateway_calls_max;
        let gateway = Gateway::new(gw_config);
        let g = gateway.clone();
        let gw = Running::start(move |l, stop| gateway::serve(l, g, stop)).await;
        let mut resolver = Resolver::dns().pin("gw", vec![gw.sip]);
        if let Some(fe1) = fe1 {
            resolver = resolver.pin("fe1", vec![fe1]);
        }
        let mut meds = Vec::new();
        for (node, listeners) in ["med1", "med2"].into_iter().zip(med_listeners) {
            let mut config = MediationConfig::new(identity(node, "mediation"), resolver.clone());
            config.calls_max = mediation_calls_max;
            let m = Mediation::new(config);
            let served = m.clone();
            let running =
                Running::start_on(listeners, move |l, stop| mediation::serve(l, served, stop))
                    .await;
            meds.push((m, running));
        }
        Net { gateway, gw, meds }
    }

    fn med(&self, i: usize) -> SocketAddr {
        self.meds[i].1.sip
    }

    async fn stop(mut self) {
        for (_, m) in &mut self.meds {
            m.kill().await;
        }
        self.gw.kill().await;
    }
}

/// How a call ended, seen from the caller side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallEnd {
    /// A BYE came (the gateway hung up).
    Bye,
    /// The connection to the Mediation server closed.
    Closed,
    /// A keep-alive OPTIONS was refused.
    KeepAliveRefused,
    /// Still up when the watch ended.
    StillUp,
}

/// The Front End side of one call, over its own connection to a Mediation server (what the Front End does).
struct Caller {
    conn: Conn,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
}

impl Caller {
    /// Places a call to `uri` at one Mediation server; the final status when it is not answered.
    async fn place(addr: SocketAddr, uri: &str, hold_ms: u64) -> Result<Caller, u16> {
        let mut conn = Conn::try_connect(addr).await.ok_or(0u16)?;
        let text = request(
            "INVITE",
            uri,
            "alice",
            "pstn",
            conn.local(),
            &[
                format!("X-Hold-Ms: {hold_ms}"),
                format!("Contact: <sip:alice@{};transport=tcp>", conn.local()),
            ],
            "",
        );
        let Ok(SipMessage::Request(invite)) = message::parse(text.as_bytes()) else {
            unreachable!()
        };
        conn.send(text.as_bytes()).await;
        // Bounded: 100 Trying, then the final answer.
        let answer = loop {
            match conn.read(WAIT).await {
                Read::Message(SipMessage::Response(r)) if r.status_code.code() < 200 => continue,
                Read::Message(SipMessage::Response(r)) => break r,
                _ => return Err(0),
            }
        };
        if answer.status_code.code() != 200 {
            return Err(answer.status_code.code());
        }
        let mut caller = Caller {
            conn,
            from: header(&invite.headers, "From").unwrap().to_owned(),
            to: header(&answer.headers, "To").unwrap().to_owned(),
            call_id: header(&invite.headers, "Call-ID").unwrap().to_owned(),
            cseq: 1,
        };
        assert!(
            param(&caller.to, "tag").is_some(),
            "the 200 carries a To tag"
        );
        let ack = caller.in_dialog("ACK", 1);
        caller.conn.send(ack.as_bytes()).await;
        Ok(caller)
    }

    /// Tries each Mediation server in turn, as the Front End does.
    async fn place_any(pool: &[SocketAddr], uri: &str, hold_ms: u64) -> Option<Caller> {
        for addr in pool {
            if let Ok(caller) = Caller::place(*addr, uri, hold_ms).await {
                return Some(caller);
            }
        }
        None
    }

    fn in_dialog(&self, method: &str, cseq: u32) -> String {
        format!(
            "{method} sip:mediation@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            self.conn.local(),
            message::token(),
            self.from,
            self.to,
            self.call_id
        )
    }

    /// Answers what the call brings and sends a keep-alive every [`KEEPALIVE`], until the call ends or `within`.
    async fn watch(&mut self, within: Duration) -> CallEnd {
        let deadline = tokio::time::Instant::now() + within;
        // Bounded by the deadline.
        while tokio::time::Instant::now() < deadline {
            match self.conn.read(KEEPALIVE).await {
                Read::Closed => return CallEnd::Closed,
                Read::Message(SipMessage::Request(r)) => {
                    self.conn.answer(&r, 200, &[]).await;
                    if r.method == Method::Bye {
                        return CallEnd::Bye;
                    }
                }
                Read::Message(SipMessage::Response(r)) => {
                    if r.status_code.code() != 200 {
                        return CallEnd::KeepAliveRefused;
                    }
                }
                Read::Nothing => {
                    self.cseq += 1;
                    let options = self.in_dialog("OPTIONS", self.cseq);
                    self.conn.send(options.as_bytes()).await;
                }
            }
        }
        CallEnd::StillUp
    }
}

#[tokio::test]
async fn a_call_to_a_number_is_answered_held_and_hung_up_by_the_gateway() {
    // Claim: an INVITE to a number at a Mediation server reaches the gateway, is answered 200, carried with
    // keep-alives both ways for the X-Hold-Ms time, then ended by the gateway's BYE at the caller. Counters on
    // both servers say completed; the `;user=phone` form with separators works the same way.
    let net = Net::start(None).await;
    for uri in ["sip:+15551234@med", "sip:+1-555-1234@med;user=phone"] {
        let started = tokio::time::Instant::now();
        let mut caller = Caller::place(net.med(0), uri, 1500)
            .await
            .expect("answered");
        assert_eq!(caller.watch(WAIT).await, CallEnd::Bye);
        let held = started.elapsed();
        println!("{uri}: answered and hung up after {held:?}");
        assert!(
            held >= Duration::from_millis(1400) && held < Duration::from_secs(8),
            "held {held:?}"
        );
    }
    assert!(eventually(WAIT, || async { net.gateway.calls_in_progress() == 0 }).await);
    let gw = status(net.gw.admin).await;
    assert_eq!(
        (
            gw["calls_answered"].as_u64(),
            gw["calls_completed"].as_u64(),
            gw["calls_lost"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    let med = status(net.meds[0].1.admin).await;
    assert_eq!(
        (
            med["role"].as_str(),
            med["calls_completed"].as_u64(),
            med["calls_in_progress"].as_u64()
        ),
        (Some("mediation"), Some(2), Some(0))
    );
    let unknown = Caller::place(net.med(0), "sip:nobody@med", 100).await.err();
    assert_eq!(unknown, Some(404), "a call to no number and no user");
    net.stop().await;
}

#[tokio::test]
async fn killing_a_mediation_server_ends_its_calls_on_both_sides_and_new_calls_use_the_survivor() {
    // Claim: when med1 dies, each of its calls ends at the caller (connection closed) and at the gateway (lost)
    // within a bound, med2's calls stay up, and every call placed after the kill is set up through med2. The
    // call-setup success ratio is measured over a steady load of short calls around the kill.
    let mut net = Net::start(None).await;
    let pool = [net.med(0), net.med(1)];
    let mut on_med1 = Vec::new();
    let mut on_med2 = Vec::new();
    for _ in 0..3 {
        on_med1.push(
            Caller::place(pool[0], "sip:+15550001@med", 60_000)
                .await
                .expect("call via med1"),
        );
        on_med2.push(
            Caller::place(pool[1], "sip:+15550002@med", 60_000)
                .await
                .expect("call via med2"),
        );
    }
    assert_eq!(net.gateway.calls_in_progress(), 6);

    // A load of short calls, one every 100 ms, each trying med1 then med2, from 1 s before the kill to 2 s after.
    let attempts: Arc<Mutex<Vec<(tokio::time::Instant, bool)>>> = Arc::default();
    let load = {
        let attempts = attempts.clone();
        tokio::spawn(async move {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..30 {
                let attempts = attempts.clone();
                calls.spawn(async move {
                    let at = tokio::time::Instant::now();
                    let caller = Caller::place_any(&pool, "sip:+15550003@med", 200).await;
                    attempts.lock().unwrap().push((at, caller.is_some()));
                    if let Some(mut caller) = caller {
                        caller.watch(WAIT).await;
                    }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            while calls.join_next().await.is_some() {}
        })
    };
    let watchers: Vec<_> = on_med1
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                (
                    c.watch(Duration::from_secs(20)).await,
                    tokio::time::Instant::now(),
                )
            })
        })
        .collect();
    let survivors: Vec<_> = on_med2
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.watch(Duration::from_secs(4)).await }))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lost_before = status(net.gw.admin).await["calls_lost"].as_u64().unwrap();
    let killed = tokio::time::Instant::now();
    net.meds[0].1.kill().await;

    let mut caller_ends = Vec::new();
    for w in watchers {
        let (end, at) = w.await.unwrap();
        assert_eq!(end, CallEnd::Closed, "the caller side saw med1's calls end");
        caller_ends.push(at - killed);
    }
    let gateway_saw = eventually(Duration::from_secs(10), || async {
        status(net.gw.admin).await["calls_lost"].as_u64().unwrap() >= lost_before + 3
    })
    .await;
    let gateway_end = killed.elapsed();
    assert!(gateway_saw, "the gateway saw med1's three calls end");
    for s in survivors {
        assert_eq!(
            s.await.unwrap(),
            CallEnd::StillUp,
            "med2's calls are untouched"
        );
    }
    load.await.unwrap();
    let attempts = attempts.lock().unwrap().clone();
    let after_kill: Vec<_> = attempts.iter().filter(|(at, _)| *at > killed).collect();
    assert!(!after_kill.is_empty());
    assert!(
        after_kill.iter().all(|(_, ok)| *ok),
        "every call placed after the kill went through med2"
    );
    let ok = attempts.iter().filter(|(_, ok)| *ok).count();
    println!(
        "mediation failover: caller side saw the end after {:?} (max), gateway within {gateway_end:?}; \
         call setup during the fault {ok}/{} = {:.1} %",
        caller_ends.iter().max().unwrap(),
        attempts.len(),
        100.0 * ok as f64 / attempts.len() as f64
    );
    assert!(*caller_ends.iter().max().unwrap() < Duration::from_secs(3));
    net.stop().await;
}

/// What the Front End must do for calls from Mediation, as a stand-in: REGISTER binds a user to its connection;
/// an INVITE (or any request) for a registered user goes to that user's connection and the answer comes back.
#[derive(Default)]
struct StandInFrontEnd {
    clients: Mutex<HashMap<String, Peer>>,
}

impl Handler for StandInFrontEnd {
    async fn handle(&self, request: Request, peer: Peer) -> Reply {
        if request.method == Method::Ack {
            return Reply::Nothing;
        }
        if request.method == Method::Register {
            let to = header(&request.headers, "To").unwrap_or_default();
            let user = user_of(uri_in(to)).unwrap_or_default().to_owned();
            self.clients.lock().unwrap().insert(user, peer);
            return Reply::Response(message::response(&request, 200, "OK"));
        }
        let uri = request.uri.to_string();
        let client = user_of(&uri).and_then(|u| self.clients.lock().unwrap().get(u).cloned());
        let Some(client) = client else {
            return Reply::Response(message::response(&request, 480, "Temporarily Unavailable"));
        };
        Reply::Deferred(Box::pin(async move {
            match client
                .request(request.clone(), Duration::from_secs(5))
                .await
            {
                Ok(answer) => {
                    let mut response =
                        message::response(&request, answer.status_code.code(), "Relayed");
                    response
                        .headers
                        .retain(|h| !message::name(h).eq_ignore_ascii_case("To"));
                    for name in ["To", "Contact"] {
                        if let Some(v) = header(&answer.headers, name) {
                            message::push(&mut response.headers, name, v.to_owned());
                        }
                    }
                    response
                }
                Err(_) => message::response(&request, 408, "Request Timeout"),
            }
        }))
    }
}

#[tokio::test]
async fn the_gateway_calls_a_user_through_mediation_to_a_front_end_stand_in() {
    // Claim: a call from the gateway reaches the user's home pool (fe1) through a Mediation server, is answered by
    // the user's client, carried with keep-alives, and ended by the gateway's BYE at the client. The Front End is
    // a stand-in doing exactly what the README asks of the Front End for calls from Mediation.
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sip = listeners.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        poolnode::sip::run(
            listeners,
            Arc::new(StandInFrontEnd::default()),
            TransportConfig::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let net = Net::start(Some(sip)).await;
    let mut alice = Conn::connect(sip).await;
    let registered = alice
        .request(&register("sip:pool.test", "alice", alice.local(), &[]))
        .await;
    assert_eq!(registered.status_code.code(), 200);
    let callee = tokio::spawn(async move {
        let invite = alice.incoming().await;
        assert_eq!(invite.method, Method::Invite);
        assert_eq!(user_of(&invite.uri.to_string()), Some("alice"));
        assert_eq!(header(&invite.headers, "X-Hold-Ms"), Some("1000"));
        let contact = format!("<sip:alice@{};transport=tcp>", alice.local());
        alice.answer(&invite, 200, &[("Contact", contact)]).await;
        let started = tokio::time::Instant::now();
        let deadline = started + WAIT;
        let mut keepalives = 0;
        // Bounded by the deadline.
        while tokio::time::Instant::now() < deadline {
            match alice.read(WAIT).await {
                Read::Message(SipMessage::Request(r)) => {
                    alice.answer(&r, 200, &[]).await;
                    match r.method {
                        Method::Bye => return (started.elapsed(), keepalives),
                        Method::Options => keepalives += 1,
                        _ => {}
                    }
                }
                Read::Message(_) => {}
                other => panic!("the callee's connection: {other:?}"),
            }
        }
        panic!("no BYE reached the callee");
    });
    let call_id = net
        .gateway
        .place_call("alice", "+15550100", Duration::from_millis(1000))
        .await
        .expect("answered");
    assert!(!call_id.is_empty());
    let (held, keepalives) = callee.await.unwrap();
    println!("gateway → alice: held {held:?}, {keepalives} keep-alives reached her, then the BYE");
    assert!(held >= Duration::from_millis(900) && keepalives >= 1);
    assert!(eventually(WAIT, || async { net.gateway.calls_in_progress() == 0 }).await);
    let gw = status(net.gw.admin).await;
    assert_eq!(
        (gw["calls_placed"].as_u64(), gw["calls_completed"].as_u64()),
        (Some(1), Some(1))
    );
    net.stop().await;
    let _ = stop.send(());
    task.await.unwrap();
}

/// What a flood of INVITEs on one connection got: the calls answered (each a caller's dialog on `conn`) and how
/// many were refused with `503` and `Retry-After`.
struct Flood {
    conn: Conn,
    answered: Vec<(String, String, String)>,
    refused: usize,
}

impl Flood {
    /// `n` INVITEs to numbers, pipelined on one connection to `addr`, each held for minutes when answered;
    /// requests the answered calls bring meanwhile are answered `200`. After each final answer `within_cap`
    /// must hold.
    async fn invites(addr: SocketAddr, n: usize, within_cap: impl Fn() -> bool) -> Flood {
        let mut conn = Conn::connect(addr).await;
        let mut froms = HashMap::new();
        let mut text = String::new();
        for i in 0..n {
            let invite = request(
                "INVITE",
                &format!("sip:+1555{i:04}@med"),
                "alice",
                "pstn",
                conn.local(),
                &[
                    "X-Hold-Ms: 600000".to_owned(),
                    format!("Contact: <sip:alice@{};transport=tcp>", conn.local()),
                ],
                "",
            );
            let Ok(SipMessage::Request(parsed)) = message::parse(invite.as_bytes()) else {
                unreachable!()
            };
            froms.insert(
                header(&parsed.headers, "Call-ID").unwrap().to_owned(),
                header(&parsed.headers, "From").unwrap().to_owned(),
            );
            text.push_str(&invite);
        }
        conn.send(text.as_bytes()).await;
        let (mut answered, mut refused) = (Vec::new(), 0);
        // Bounded: one final answer per INVITE, and the answered calls' keep-alives in between.
        while answered.len() + refused < n {
            match conn.message().await {
                SipMessage::Request(r) => conn.answer(&r, 200, &[]).await,
                SipMessage::Response(r) if r.status_code.code() < 200 => {}
                SipMessage::Response(r) => {
                    let call_id = header(&r.headers, "Call-ID").unwrap().to_owned();
                    let from = froms.remove(&call_id).expect("one final answer per INVITE");
                    match r.status_code.code() {
                        200 => {
                            let to = header(&r.headers, "To").unwrap().to_owned();
                            let ack = in_dialog(&conn, "ACK", 1, &from, &to, &call_id);
                            conn.send(ack.as_bytes()).await;
                            answered.push((from, to, call_id));
                        }
                        503 => {
                            assert!(header(&r.headers, "Retry-After").is_some(), "{r}");
                            refused += 1;
                        }
                        _ => panic!("a call answered neither 200 nor 503: {r}"),
                    }
                }
            }
            assert!(within_cap(), "above the cap");
        }
        Flood {
            conn,
            answered,
            refused,
        }
    }

    /// Hangs up the first answered call: its BYE's final answer.
    async fn hang_up_one(&mut self) -> u16 {
        let (from, to, call_id) = self.answered.remove(0);
        let bye = in_dialog(&self.conn, "BYE", 2, &from, &to, &call_id);
        self.conn.send(bye.as_bytes()).await;
        // Bounded: the BYE's answer comes after at most a few keep-alives.
        loop {
            match self.conn.message().await {
                SipMessage::Request(r) => self.conn.answer(&r, 200, &[]).await,
                SipMessage::Response(r) if header(&r.headers, "Call-ID") == Some(&call_id) => {
                    return r.status_code.code()
                }
                SipMessage::Response(_) => {}
            }
        }
    }
}

/// A request inside a caller's dialog on `conn`.
fn in_dialog(conn: &Conn, method: &str, cseq: u32, from: &str, to: &str, call_id: &str) -> String {
    format!(
        "{method} sip:mediation@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
         From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        conn.local(),
        message::token(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_a_mediation_servers_cap_get_503_and_it_carries_calls_on() {
    // Claim: a Mediation server holds at most `calls_max` calls (those being set up included); a new call beyond
    // gets `503` with `Retry-After`, and once a call ends a new one goes through.
    // Proof: 24 INVITEs pipelined against a cap of 4: exactly 4 answered and 20 refused, the server's calls (held
    // and up) never above 4; after one BYE a new call is answered 200.
    const CAP: usize = 4;
    const FLOOD: usize = 24;
    let net = Net::start_with_calls_max(None, 1_000, CAP).await;
    let med = net.meds[0].0.clone();
    let mut flood = Flood::invites(net.med(0), FLOOD, || {
        med.calls_held() <= CAP && med.calls_in_progress() <= CAP
    })
    .await;
    println!(
        "{FLOOD} calls against a Mediation server's cap of {CAP}: {} answered, {} refused",
        flood.answered.len(),
        flood.refused
    );
    assert_eq!((flood.answered.len(), flood.refused), (CAP, FLOOD - CAP));
    assert_eq!(med.calls_in_progress(), CAP);
    assert_eq!(
        status(net.meds[0].1.admin).await["calls_held"].as_u64(),
        Some(CAP as u64)
    );
    assert_eq!(flood.hang_up_one().await, 200);
    assert!(eventually(WAIT, || async { med.calls_held() < CAP }).await);
    let again = Caller::place(net.med(0), "sip:+15559999@med", 600_000).await;
    assert!(
        again.is_ok(),
        "a new call after one ended: {:?}",
        again.err()
    );
    assert!(med.calls_held() <= CAP);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_gateways_cap_get_503_and_it_answers_on() {
    // Claim: the gateway holds at most `calls_max` calls (those ringing included); an INVITE beyond gets `503` with
    // `Retry-After`, a call it is asked to place beyond is refused, and once a call ends a new one is answered.
    // Proof: 24 INVITEs pipelined straight to the gateway against a cap of 4: exactly 4 answered and 20 refused,
    // its calls (held and up) never above 4; `place_call` refused while full; after one BYE a new call is answered.
    const CAP: usize = 4;
    const FLOOD: usize = 24;
    let net = Net::start_with_calls_max(None, CAP, 1_000).await;
    let gateway = net.gateway.clone();
    let mut flood = Flood::invites(net.gw.sip, FLOOD, || {
        gateway.calls_held() <= CAP && gateway.calls_in_progress() <= CAP
    })
    .await;
    println!(
        "{FLOOD} calls against the gateway's cap of {CAP}: {} answered, {} refused",
        flood.answered.len(),
        flood.refused
    );
    assert_eq!((flood.answered.len(), flood.refused), (CAP, FLOOD - CAP));
    assert_eq!(gateway.calls_in_progress(), CAP);
    let refused = gateway
        .place_call("alice", "+15550100", Duration::from_secs(1))
        .await;
    assert_eq!(refused, Err(gateway::CallError::TooManyCalls(CAP)));
    assert_eq!(flood.hang_up_one().await, 200);
    assert!(eventually(WAIT, || async { gateway.calls_held() < CAP }).await);
    let again = Caller::place(net.gw.sip, "sip:+15559999@gw", 600_000).await;
    assert!(
        again.is_ok(),
        "a new call after one ended: {:?}",
        again.err()
    );
    assert!(gateway.calls_held() <= CAP);
    net.stop().await;
}

/// A gateway that answers a call and then never answers anything inside it: every request Mediation relays to it
/// waits for the relay timeout.
struct SilentGateway;

impl Handler for SilentGateway {
    async fn handle(&self, request: Request, _peer: Peer) -> Reply {
        match request.method {
            Method::Ack => Reply::Nothing,
            Method::Invite => {
                let mut ok = message::response(&request, 200, "OK");
                message::push(
                    &mut ok.headers,
                    "Contact",
                    "<sip:gw@127.0.0.1;transport=tcp>",
                );
                Reply::Response(ok)
            }
            _ => Reply::Deferred(Box::pin(std::future::pending())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_mediation_servers_in_flight_cap_get_503_and_it_answers_on() {
    // Claim: a Mediation server answers at most `requests_in_flight_max` requests at once (a relayed one waits for
    // the other leg); one beyond gets `503` with `Retry-After` at once, and once the waiting ones end, requests are
    // answered again.
    // Proof: a call whose far end never answers inside it; 64 OPTIONS pipelined in the call against a cap of 8: 56
    // refused at once, the server's count never above 8; the 8 waiting ones end `408` after the relay timeout;
    // then an OPTIONS in the call is answered (`408`, not refused) and one outside any call gets `200`.
    const CAP: usize = 8;
    const FLOOD: u32 = 64;
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let silent = listeners.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gw = tokio::spawn(async move {
        poolnode::sip::run(
            listeners,
            Arc::new(SilentGateway),
            TransportConfig::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let mut config = MediationConfig::new(
        identity("med1", "mediation"),
        Resolver::dns().pin("gw", vec![silent]),
    );
    config.requests_in_flight_max = CAP;
    config.relay_timeout = Duration::from_secs(2);
    let med = Mediation::new(config);
    let served = med.clone();
    let mut running = Running::start(move |l, stop| mediation::serve(l, served, stop)).await;
    let mut caller = Caller::place(running.sip, "sip:+15551234@med", 600_000)
        .await
        .expect("answered by the silent gateway");

    let flood: String = (0..FLOOD)
        .map(|i| caller.in_dialog("OPTIONS", 10 + i))
        .collect();
    caller.conn.send(flood.as_bytes()).await;
    let (mut refused, mut timed_out) = (0, 0);
    // Bounded: one answer per OPTIONS.
    while refused + timed_out < FLOOD as usize {
        let answer = caller.conn.response().await;
        match answer.status_code.code() {
            503 => {
                assert!(header(&answer.headers, "Retry-After").is_some(), "{answer}");
                refused += 1;
            }
            408 => timed_out += 1,
            _ => panic!("neither refused nor timed out: {answer}"),
        }
        assert!(
            med.requests_in_flight() <= CAP,
            "{} in flight",
            med.requests_in_flight()
        );
    }
    println!(
        "{FLOOD} requests in a call against a cap of {CAP}: {refused} refused, {timed_out} waited"
    );
    assert_eq!((refused, timed_out), (FLOOD as usize - CAP, CAP));
    assert!(eventually(WAIT, || async { med.requests_in_flight() == 0 }).await);

    let again = caller.in_dialog("OPTIONS", 1_000);
    assert_eq!(caller.conn.request(&again).await.status_code.code(), 408);
    let mut other = Conn::connect(running.sip).await;
    let options = request(
        "OPTIONS",
        "sip:med",
        "probe",
        "probe",
        other.local(),
        &[],
        "",
    );
    assert_eq!(other.request(&options).await.status_code.code(), 200);
    running.kill().await;
    let _ = stop.send(());
    gw.await.unwrap();
}
