//! The Mediation server: relays calls between the pool and the PSTN gateway pool, as a back-to-back user agent
//! (as Lync's Mediation Server is). Each call has two dialogs: leg A, on which the INVITE arrived, and leg B,
//! which this server opened:
//!
//! - an INVITE to a telephone number (`tel:+1555…`, `sip:+1555…@…`) goes to the pool's PSTN gateway pool;
//! - an INVITE to a user (`sip:alice@…`, from the gateway) goes to the user's home Front End pool, then its
//!   pair.
//!
//! Requests inside a call (OPTIONS keep-alives, BYE, re-INVITE) are relayed to the other leg and its answer
//! passed back, so each end's keep-alive tests the whole path. When one leg's connection closes, the other
//! leg gets a BYE. A Mediation server that dies takes its connections with it: both ends see their keep-alive
//! fail (or their connection close) and end the call; new calls go to the other servers of the pool name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rsip::{Method, Request, Response};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::dialog::{carried, number_of, reason_of, response_with_tag, DialogSide};
use super::link::{Leg, Link, OnRequest};
use crate::admin::AdminApi;
use crate::cluster::SIP_PORT;
use crate::director::node::{self, NodeError, NodeIdentity, Resolver, RoleArgs, RoleListeners};
use crate::sip::codec::Limits;
use crate::sip::message::{self, header, param, uri_in, user_of};
use crate::sip::{BoxFuture, Handler, Peer, Reply, RequestError, TransportConfig};
use crate::slots::{Slot, Slots};

/// Settings of one Mediation server.
#[derive(Debug, Clone)]
pub struct MediationConfig {
    pub identity: NodeIdentity,
    pub resolver: Resolver,
    /// Opening a connection to one server of a pool; past it the next address is tried.
    pub connect_timeout: Duration,
    /// How long an INVITE on leg B may wait for its final answer (RFC 3261 Timer B: 64 × T1).
    pub invite_timeout: Duration,
    /// How long a relayed request inside a call may wait for the other leg's answer.
    pub relay_timeout: Duration,
    /// How often each call checks that both legs' connections are still open.
    pub leg_check_interval: Duration,
    /// Calls at once, those being set up included; a new one beyond is answered `503` with `Retry-After`.
    pub calls_max: usize,
    /// Requests being answered at once, from either kind of leg (a relayed one waits for the other leg); one
    /// beyond is answered `503` with `Retry-After` at once.
    pub requests_in_flight_max: usize,
    /// What `Retry-After` tells a client refused at `calls_max` or `requests_in_flight_max`.
    pub retry_after: Duration,
    pub limits: Limits,
    pub transport: TransportConfig,
}

impl MediationConfig {
    pub fn new(identity: NodeIdentity, resolver: Resolver) -> Self {
        Self {
            identity,
            resolver,
            connect_timeout: Duration::from_secs(3),
            invite_timeout: Duration::from_secs(32),
            relay_timeout: Duration::from_secs(5),
            leg_check_interval: Duration::from_millis(200),
            calls_max: 1_000,
            requests_in_flight_max: 4_096,
            retry_after: Duration::from_secs(5),
            limits: Limits::default(),
            transport: TransportConfig::default(),
        }
    }
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// A user calls a telephone number: leg B goes to the gateway pool.
    ToPstn,
    /// The gateway calls a user: leg B goes to the user's home Front End pool.
    ToUser,
}

/// Which leg of a call a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

struct Call {
    a: DialogSide,
    b: DialogSide,
    ended: AtomicBool,
    /// The call's place among `calls_max`, given back when it ends.
    slot: Mutex<Option<Slot>>,
}

impl Call {
    fn side(&self, side: Side) -> &DialogSide {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn other(&self, side: Side) -> &DialogSide {
        match side {
            Side::A => &self.b,
            Side::B => &self.a,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    attempted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// One Mediation server.
pub struct Mediation {
    pub config: MediationConfig,
    /// Calls by the Call-ID of either leg.
    calls: Mutex<HashMap<String, (Arc<Call>, Side)>>,
    /// Calls up or being set up: the places taken among `calls_max`.
    held: Slots,
    /// Requests being answered: the places taken among `requests_in_flight_max`.
    requests: Slots,
    /// One open link per pool this server places calls to (the gateway pool, Front End pools), reused by calls.
    links: Mutex<HashMap<String, Link>>,
    counters: Counters,
    this: OnceLock<Weak<Mediation>>,
    stop: watch::Sender<bool>,
}

impl Mediation {
    pub fn new(config: MediationConfig) -> Arc<Self> {
        let mediation = Arc::new(Self {
            config,
            calls: Mutex::new(HashMap::new()),
            held: Slots::default(),
            requests: Slots::default(),
            links: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            this: OnceLock::new(),
            stop: watch::channel(false).0,
        });
        let _ = mediation.this.set(Arc::downgrade(&mediation));
        mediation
    }

    fn this(&self) -> Option<Arc<Mediation>> {
        self.this.get().and_then(Weak::upgrade)
    }

    /// Calls up now (both legs answered, not yet ended).
    pub fn calls_in_progress(&self) -> usize {
        self.lock_calls().len() / 2
    }

    /// Calls up or being set up: the places taken among [`MediationConfig::calls_max`].
    pub fn calls_held(&self) -> usize {
        self.held.taken()
    }

    /// Requests being answered now (at most [`MediationConfig::requests_in_flight_max`]).
    pub fn requests_in_flight(&self) -> usize {
        self.requests.taken()
    }

    /// `/status`.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "role": "mediation",
            "pool": self.config.identity.pool,
            "node": self.config.identity.node,
            "gateway": self.config.identity.pool_config().gateway,
            "calls_in_progress": self.calls_in_progress(),
            "calls_held": self.calls_held(),
            "requests_in_flight": self.requests_in_flight(),
            "calls_attempted": c.attempted.load(Ordering::Relaxed),
            "calls_completed": c.completed.load(Ordering::Relaxed),
            "calls_failed": c.failed.load(Ordering::Relaxed),
        })
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Call>, Side)>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a request from either kind of leg; `None` for no answer (ACK).
    pub async fn on_request(self: Arc<Self>, request: Request, leg: Leg) -> Option<Response> {
        if request.method == Method::Ack {
            // Leg B was acknowledged when its 2xx came; leg A's ACK only confirms what we already hold.
            return None;
        }
        match self.admit(&request) {
            Ok(in_flight) => Some(self.answer(request, leg, in_flight).await),
            Err(refusal) => Some(refusal),
        }
    }

    /// A place among `requests_in_flight_max` for `request`, or the `503` that refuses it.
    fn admit(&self, request: &Request) -> Result<Slot, Response> {
        self.requests
            .take(self.config.requests_in_flight_max)
            .ok_or_else(|| message::unavailable(request, "Overloaded", self.config.retry_after))
    }

    /// Answers a request other than ACK, holding its place among `requests_in_flight_max` until then.
    async fn answer(self: Arc<Self>, request: Request, leg: Leg, _in_flight: Slot) -> Response {
        let call_id = header(&request.headers, "Call-ID")
            .unwrap_or_default()
            .to_owned();
        let known = self.lock_calls().get(&call_id).cloned();
        let in_dialog = header(&request.headers, "To").is_some_and(|t| param(t, "tag").is_some());
        match (request.method, known) {
            (Method::Invite, None) if !in_dialog => self.new_call(request, leg).await,
            (_, Some((call, side))) => self.relay(request, call, side).await,
            (Method::Options, None) if !in_dialog => {
                let mut response = message::response(&request, 200, "OK");
                message::push(&mut response.headers, "Allow", "INVITE, ACK, BYE, OPTIONS");
                response
            }
            (_, None) => message::response(&request, 481, "Call/Transaction Does Not Exist"),
        }
    }

    /// A new call: leg B to the gateway or the user's home pool, then the answer on leg A.
    async fn new_call(self: Arc<Self>, request: Request, a_leg: Leg) -> Response {
        self.counters.attempted.fetch_add(1, Ordering::Relaxed);
        let response = match self.held.take(self.config.calls_max) {
            Some(slot) => self.place(&request, a_leg, slot).await,
            None => message::unavailable(&request, "Too Many Calls", self.config.retry_after),
        };
        if response.status_code.code() >= 300 {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        response
    }

    async fn place(self: &Arc<Self>, request: &Request, a_leg: Leg, slot: Slot) -> Response {
        let identity = &self.config.identity;
        let uri = request.uri.to_string();
        let (direction, b_uri, pools) = if let Some(number) = number_of(&uri) {
            let Some(gateway) = identity.pool_config().gateway.clone() else {
                return message::response(request, 503, "Service Unavailable (No Gateway Pool)");
            };
            (
                Direction::ToPstn,
                format!("sip:{number}@{gateway};user=phone"),
                vec![gateway],
            )
        } else {
            let user = user_of(&uri).unwrap_or_default();
            let Some(home) = identity.cluster.users.iter().find(|u| u.name == user) else {
                return message::response(request, 404, "Not Found");
            };
            let mut pools = vec![home.home.clone()];
            pools.extend(
                identity
                    .cluster
                    .pool(&home.home)
                    .and_then(|p| p.pair.clone()),
            );
            (
                Direction::ToUser,
                format!("sip:{user}@{}", home.home),
                pools,
            )
        };
        let hops = match header(&request.headers, "Max-Forwards").map(|v| v.trim().parse::<u32>()) {
            Some(Ok(0)) => return message::response(request, 483, "Too Many Hops"),
            Some(Ok(n)) => n - 1,
            Some(Err(_)) => return message::response(request, 400, "Bad Max-Forwards"),
            None => 69,
        };
        let _ = a_leg
            .send_raw(message::encode(message::response(request, 100, "Trying")))
            .await;
        let caller = header(&request.headers, "From")
            .and_then(|f| user_of(uri_in(f)))
            .unwrap_or("anonymous")
            .to_owned();
        let (mut extra, body) = carried(request);
        extra.push(("Max-Forwards".into(), hops.to_string()));
        let mut last =
            message::response(request, 503, "Service Unavailable (Next Hop Unreachable)");
        // Bounded: the home pool, then its pair.
        for pool in pools {
            let Some(link) = self.link_to(&pool).await else {
                continue;
            };
            let b_tag = message::token();
            let b_leg = Leg::Link(link.clone());
            let mut headers = vec![
                (
                    "From".to_owned(),
                    format!("<sip:{caller}@{}>;tag={b_tag}", identity.pool),
                ),
                ("To".to_owned(), format!("<{b_uri}>")),
                (
                    "Call-ID".to_owned(),
                    format!("{}@{}", message::token(), identity.node),
                ),
                ("CSeq".to_owned(), "1 INVITE".to_owned()),
                (
                    "Contact".to_owned(),
                    format!("<sip:mediation@{};transport=tcp>", link.local()),
                ),
            ];
            headers.extend(extra.iter().cloned());
            let Ok(invite) = message::request(Method::Invite, &b_uri, headers, body.clone()) else {
                return message::response(request, 400, "Bad Request-URI");
            };
            let answer = match b_leg
                .request(invite.clone(), self.config.invite_timeout)
                .await
            {
                Ok(answer) => answer,
                Err(RequestError::Timeout { .. }) => {
                    last = message::response(request, 408, "Request Timeout");
                    continue;
                }
                Err(RequestError::Closed { .. }) => continue,
            };
            let code = answer.status_code.code();
            if !(200..300).contains(&code) {
                last = message::response(request, code, &reason_of(&answer));
                // A pool that cannot take the call now: its pair may (a user's backup registrar).
                if code == 503 && direction == Direction::ToUser {
                    continue;
                }
                return last;
            }
            let b = DialogSide::started(b_leg, &invite, &answer);
            let _ = b.ack(1).await;
            let a_tag = message::token();
            let a = DialogSide::answered(a_leg.clone(), request, &a_tag);
            let call = Arc::new(Call {
                a,
                b,
                ended: AtomicBool::new(false),
                slot: Mutex::new(Some(slot)),
            });
            {
                let mut calls = self.lock_calls();
                calls.insert(call.a.call_id.clone(), (call.clone(), Side::A));
                calls.insert(call.b.call_id.clone(), (call.clone(), Side::B));
            }
            tokio::spawn(self.clone().watch_legs(call));
            let mut ok = response_with_tag(request, 200, "OK", &a_tag);
            message::push(
                &mut ok.headers,
                "Contact",
                format!("<sip:mediation@{};transport=tcp>", a_leg.local()),
            );
            return ok;
        }
        last
    }

    /// An open link to a server of `pool`: the one already open, or a new one to the first address of the pool
    /// name that accepts.
    ///
    /// Boxed with an explicit `Send`: the link's request handler leads back into [`Mediation::on_request`], and
    /// the compiler cannot prove that cycle `Send` by inference.
    fn link_to(self: &Arc<Self>, pool: &str) -> BoxFuture<Option<Link>> {
        let (this, pool) = (self.clone(), pool.to_owned());
        Box::pin(async move {
            let existing = this
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&pool)
                .filter(|l| l.is_open())
                .cloned();
            if existing.is_some() {
                return existing;
            }
            let config = &this.config;
            let target = config.identity.address(&pool, SIP_PORT);
            let (stream, _) = config
                .resolver
                .connect(&target, config.connect_timeout)
                .await?;
            let weak = Arc::downgrade(&this);
            let on_request: OnRequest = Arc::new(move |request, leg| {
                let weak = weak.clone();
                Box::pin(async move {
                    match weak.upgrade() {
                        Some(m) => m.on_request(request, leg).await,
                        None => None,
                    }
                })
            });
            let link = Link::start(stream, config.limits, on_request).ok()?;
            this.links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pool, link.clone());
            Some(link)
        })
    }

    /// Relays a request inside a call to the other leg and passes its answer back.
    async fn relay(&self, request: Request, call: Arc<Call>, from: Side) -> Response {
        if call.ended.load(Ordering::Acquire) {
            return message::response(&request, 481, "Call/Transaction Does Not Exist");
        }
        let method = request.method;
        if method == Method::Bye {
            self.end(&call, true);
        }
        let other = call.other(from);
        let (extra, body) = carried(&request);
        let relayed = other.request(method, extra, body, None);
        let cseq = message::cseq(&relayed.headers).map(|(n, _)| n).unwrap_or(1);
        let outcome = other.leg.request(relayed, self.config.relay_timeout).await;
        match (method, outcome) {
            // The sender's call is over whatever the other leg says.
            (Method::Bye, _) => message::response(&request, 200, "OK"),
            (_, Ok(answer)) => {
                let code = answer.status_code.code();
                if method == Method::Invite && (200..300).contains(&code) {
                    let _ = other.ack(cseq).await;
                }
                if code == 481 {
                    // The other end no longer knows the call: end it here too, and tell the sender so.
                    self.end(&call, false);
                }
                let tag = header(&request.headers, "To")
                    .and_then(|t| param(t, "tag"))
                    .unwrap_or_default()
                    .to_owned();
                response_with_tag(&request, code, &reason_of(&answer), &tag)
            }
            (_, Err(RequestError::Timeout { .. })) => {
                message::response(&request, 408, "Request Timeout")
            }
            (_, Err(RequestError::Closed { .. })) => {
                self.end(&call, false);
                message::response(
                    &request,
                    481,
                    "Call/Transaction Does Not Exist (Other Leg Lost)",
                )
            }
        }
    }

    /// Ends a call once: forgets both legs and counts it.
    fn end(&self, call: &Arc<Call>, completed: bool) -> bool {
        if call.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        {
            let mut calls = self.lock_calls();
            calls.remove(&call.a.call_id);
            calls.remove(&call.b.call_id);
        }
        call.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let counter = if completed {
            &self.counters.completed
        } else {
            &self.counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// While the call lasts: when one leg's connection closes, the other leg gets a BYE and the call ends.
    async fn watch_legs(self: Arc<Self>, call: Arc<Call>) {
        let mut stop = self.stop.subscribe();
        let mut tick = tokio::time::interval(self.config.leg_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded by the call: ends when the call ends or the server stops.
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if call.ended.load(Ordering::Acquire) {
                return;
            }
            let lost = [Side::A, Side::B]
                .into_iter()
                .find(|s| !call.side(*s).leg.is_open());
            if let Some(lost) = lost {
                if self.end(&call, false) {
                    let _ = call
                        .other(lost)
                        .send(Method::Bye, self.config.relay_timeout)
                        .await;
                }
                return;
            }
        }
    }

    /// Stops as a killed server would: every link closes at once, nothing more is sent.
    pub fn halt(&self) {
        let _ = self.stop.send(true);
        for link in self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, l)| l)
        {
            link.close();
        }
        self.lock_calls().clear();
    }
}

impl Handler for Mediation {
    async fn handle(&self, request: Request, peer: Peer) -> Reply {
        if request.method == Method::Ack {
            return Reply::Nothing;
        }
        let Some(this) = self.this() else {
            return Reply::Response(message::response(&request, 503, "Service Unavailable"));
        };
        let in_flight = match self.admit(&request) {
            Ok(in_flight) => in_flight,
            Err(refusal) => return Reply::Response(refusal),
        };
        // Every answer may wait on the other leg: deferred, so the connection's next requests are not held up.
        Reply::Deferred(Box::pin(async move {
            this.answer(request, Leg::Peer(peer), in_flight).await
        }))
    }
}

/// The admin API: `/status` only.
pub fn admin_api(mediation: &Arc<Mediation>) -> AdminApi {
    let m = mediation.clone();
    AdminApi::new(&mediation.config.identity.cluster.admin_token, move || {
        m.status()
    })
}

/// Serves one Mediation server on `listeners` until `shutdown` completes.
pub async fn run(
    listeners: RoleListeners,
    config: MediationConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    serve(listeners, Mediation::new(config), shutdown).await
}

/// Serves with a Mediation server the caller keeps a handle on (tests read its counters).
pub async fn serve(
    listeners: RoleListeners,
    mediation: Arc<Mediation>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let transport = mediation.config.transport.clone();
    let admin = admin_api(&mediation);
    let result = node::serve(listeners, mediation.clone(), transport, admin, shutdown).await;
    mediation.halt();
    result
}

/// `poolnode mediation`: the cluster from `POOLNODE_CLUSTER`, binds, prints the ready line, serves until
/// `shutdown`.
pub async fn run_node(
    args: RoleArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let cluster = Arc::new(crate::cluster::ClusterConfig::from_env()?);
    let identity = NodeIdentity::new(cluster, &args.node_name()?, "mediation")?;
    let config = MediationConfig::new(identity, args.resolver()?);
    let listeners = RoleListeners::bind(args.listen_sip, args.listen_admin).await?;
    node::print_ready("mediation", &config.identity.node, &listeners);
    run(listeners, config, shutdown).await
}
