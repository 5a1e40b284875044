//! The PSTN gateway stand-in: the telephone network's end of a call, so calls through the Mediation pool have a
//! far end that answers, holds and hangs up. No media.
//!
//! - An INVITE to a telephone number gets `100 Trying`, `180 Ringing`, `200 OK`; the gateway holds the call for
//!   the time `X-Hold-Ms` asks (else a default), then hangs up with BYE.
//! - [`Gateway::place_call`] (also `POST /admin/call`) calls a user: INVITE to a Mediation server of the pool
//!   whose `gateway` is this pool, each server of the pool name tried in turn.
//! - While a call is up the gateway sends an OPTIONS inside the dialog every keep-alive interval, through the
//!   Mediation server to the far end. A failed keep-alive (or the connection closing) ends the call as lost
//!   within about one interval plus one timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::http::StatusCode;
use rsip::{Method, Request, Response};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::admin::AdminApi;
use crate::cluster::SIP_PORT;
use crate::director::node::{self, NodeError, NodeIdentity, Resolver, RoleArgs, RoleListeners};
use crate::mediation::dialog::{
    hold_of, number_of, reason_of, response_with_tag, DialogSide, HOLD_HEADER,
};
use crate::mediation::link::{Leg, Link, OnRequest};
use crate::sip::codec::Limits;
use crate::sip::message::{self, header, param};
use crate::sip::{Handler, Peer, Reply, TransportConfig};
use crate::slots::{Slot, Slots};

/// Settings of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub identity: NodeIdentity,
    pub resolver: Resolver,
    /// Hold time of a call whose INVITE asks none.
    pub hold_default: Duration,
    /// Longest hold time an INVITE may ask.
    pub hold_max: Duration,
    /// From the INVITE to the 200 (the 180 goes out half-way).
    pub ring_delay: Duration,
    /// How often a call's keep-alive OPTIONS goes out.
    pub keepalive_interval: Duration,
    /// How long a keep-alive (and the final BYE) waits for its answer.
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long an INVITE the gateway sends may wait for its final answer.
    pub invite_timeout: Duration,
    /// Calls at once, both ways, those ringing or being placed included: an INVITE beyond is answered `503` with
    /// `Retry-After`, a call to place beyond is refused.
    pub calls_max: usize,
    /// What `Retry-After` tells a caller refused at `calls_max`.
    pub retry_after: Duration,
    pub limits: Limits,
    pub transport: TransportConfig,
}

impl GatewayConfig {
    /// Keep-alive timers follow the cluster's failure timeout (ours: half of it between keep-alives, all of it
    /// for an answer), so the fast profile notices a lost call within about 1.5 s.
    pub fn new(identity: NodeIdentity, resolver: Resolver) -> Self {
        let failure =
            Duration::from_millis(identity.cluster.timings.fe_failure_timeout_ms.max(200));
        Self {
            identity,
            resolver,
            hold_default: Duration::from_secs(3),
            hold_max: Duration::from_secs(3600),
            ring_delay: Duration::from_millis(100),
            keepalive_interval: failure / 2,
            keepalive_timeout: failure,
            connect_timeout: Duration::from_secs(3),
            invite_timeout: Duration::from_secs(32),
            calls_max: 1_000,
            retry_after: Duration::from_secs(5),
            limits: Limits::default(),
            transport: TransportConfig::default(),
        }
    }
}

/// Why the gateway could not place a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("find a Mediation pool whose gateway is `{0}`")]
    NoMediationPool(String),
    #[error("reach any server of Mediation pool `{0}`")]
    Unreachable(String),
    #[error("set up the call: refused with {status} {reason}")]
    Refused { status: u16, reason: String },
    #[error("hold another call: {0} calls are held already")]
    TooManyCalls(usize),
}

/// How a call ended, as counted in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A BYE from either side.
    Completed,
    /// The path failed: keep-alive unanswered or refused, or the connection closed.
    Lost,
}

struct Call {
    side: DialogSide,
    ended: AtomicBool,
    /// The call's place among `calls_max`, given back when it ends.
    slot: Mutex<Option<Slot>>,
    /// Wakes the call's keep-alive task when the far end hung up.
    hung_up: Notify,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    placed: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
}

/// One PSTN gateway.
pub struct Gateway {
    pub config: GatewayConfig,
    calls: Mutex<HashMap<String, Arc<Call>>>,
    /// Calls up, ringing or being placed: the places taken among `calls_max`.
    held: Slots,
    counters: Counters,
    this: OnceLock<Weak<Gateway>>,
    stop: watch::Sender<bool>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        let gateway = Arc::new(Self {
            config,
            calls: Mutex::new(HashMap::new()),
            held: Slots::default(),
            counters: Counters::default(),
            this: OnceLock::new(),
            stop: watch::channel(false).0,
        });
        let _ = gateway.this.set(Arc::downgrade(&gateway));
        gateway
    }

    fn lock_calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Call>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls_in_progress(&self) -> usize {
        self.lock_calls().len()
    }

    /// Calls up, ringing or being placed: the places taken among [`GatewayConfig::calls_max`].
    pub fn calls_held(&self) -> usize {
        self.held.taken()
    }

    /// `/status`: calls up, answered (from the pool), placed (to users), ended normally, failed, and of the
    /// failed those lost mid-call.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "role": "pstn-gateway",
            "pool": self.config.identity.pool,
            "node": self.config.identity.node,
            "calls_in_progress": self.calls_in_progress(),
            "calls_held": self.calls_held(),
            "calls_answered": c.answered.load(Ordering::Relaxed),
            "calls_placed": c.placed.load(Ordering::Relaxed),
            "calls_completed": c.completed.load(Ordering::Relaxed),
            "calls_failed": c.failed.load(Ordering::Relaxed),
            "calls_lost": c.lost.load(Ordering::Relaxed),
        })
    }

    /// Answers a request from a leg; `None` for no answer (ACK).
    pub async fn on_request(self: Arc<Self>, request: Request, leg: Leg) -> Option<Response> {
        let call_id = header(&request.headers, "Call-ID")
            .unwrap_or_default()
            .to_owned();
        let call = self.lock_calls().get(&call_id).cloned();
        let tag = header(&request.headers, "To")
            .and_then(|t| param(t, "tag"))
            .map(str::to_owned);
        match (request.method, call) {
            (Method::Ack, _) => None,
            (Method::Invite, None) if tag.is_none() => Some(self.answer(request, leg).await),
            (Method::Bye, Some(call)) => {
                self.end(&call, End::Completed);
                call.hung_up.notify_one();
                Some(message::response(&request, 200, "OK"))
            }
            // Keep-alives and session refreshes from the far end.
            (_, Some(_)) => Some(response_with_tag(
                &request,
                200,
                "OK",
                tag.as_deref().unwrap_or_default(),
            )),
            (Method::Options, None) if tag.is_none() => {
                Some(message::response(&request, 200, "OK"))
            }
            (_, None) => Some(message::response(
                &request,
                481,
                "Call/Transaction Does Not Exist",
            )),
        }
    }

    /// A call from the pool to a number: 100, 180, 200, then held until hang-up.
    async fn answer(self: Arc<Self>, request: Request, leg: Leg) -> Response {
        let uri = request.uri.to_string();
        if number_of(&uri).is_none() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return message::response(&request, 404, "Not Found (Not A Number)");
        }
        let Some(slot) = self.held.take(self.config.calls_max) else {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return message::unavailable(&request, "Too Many Calls", self.config.retry_after);
        };
        let hold = hold_of(&request, self.config.hold_max).unwrap_or(self.config.hold_default);
        let tag = message::token();
        let _ = leg
            .send_raw(message::encode(message::response(&request, 100, "Trying")))
            .await;
        tokio::time::sleep(self.config.ring_delay / 2).await;
        let _ = leg
            .send_raw(message::encode(response_with_tag(
                &request, 180, "Ringing", &tag,
            )))
            .await;
        tokio::time::sleep(self.config.ring_delay / 2).await;
        let mut ok = response_with_tag(&request, 200, "OK", &tag);
        message::push(
            &mut ok.headers,
            "Contact",
            format!("<sip:gateway@{};transport=tcp>", leg.local()),
        );
        if !leg.is_open() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            return ok;
        }
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
        let call = self.register(DialogSide::answered(leg, &request, &tag), slot);
        tokio::spawn(self.clone().hold(call, hold));
        ok
    }

    fn register(&self, side: DialogSide, slot: Slot) -> Arc<Call> {
        let call = Arc::new(Call {
            side,
            ended: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
            hung_up: Notify::new(),
        });
        self.lock_calls()
            .insert(call.side.call_id.clone(), call.clone());
        call
    }

    /// Ends a call once and counts how.
    fn end(&self, call: &Arc<Call>, how: End) -> bool {
        if call.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.lock_calls().remove(&call.side.call_id);
        call.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match how {
            End::Completed => self.counters.completed.fetch_add(1, Ordering::Relaxed),
            End::Lost => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        true
    }

    /// Holds an answered call: keep-alives every interval, BYE after `hold`, lost when a keep-alive fails.
    async fn hold(self: Arc<Self>, call: Arc<Call>, hold: Duration) {
        let mut stop = self.stop.subscribe();
        let deadline = tokio::time::Instant::now() + hold;
        let timeout = self.config.keepalive_timeout;
        // Bounded by `hold`: the deadline ends it at the latest.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if self.end(&call, End::Completed) {
                        let _ = call.side.send(Method::Bye, timeout).await;
                    }
                    return;
                }
                _ = tokio::time::sleep(self.config.keepalive_interval) => {}
                _ = call.hung_up.notified() => return,
                _ = stop.changed() => return,
            }
            if call.ended.load(Ordering::Acquire) {
                return;
            }
            let alive = call.side.leg.is_open()
                && matches!(
                    call.side.send(Method::Options, timeout).await,
                    Ok(answer) if (200..300).contains(&answer.status_code.code())
                );
            if !alive {
                if self.end(&call, End::Lost) && call.side.leg.is_open() {
                    // Best effort: the far end may still hear it, if only the answer was lost.
                    let _ = call.side.send(Method::Bye, timeout).await;
                }
                return;
            }
        }
    }

    /// Calls `user` through the Mediation pool (each of its servers in turn) and holds the call for `hold`;
    /// returns once the call is answered, with the gateway's Call-ID.
    pub async fn place_call(
        self: &Arc<Self>,
        user: &str,
        from_number: &str,
        hold: Duration,
    ) -> Result<String, CallError> {
        let result = self.try_place(user, from_number, hold).await;
        let counter = if result.is_ok() {
            &self.counters.placed
        } else {
            &self.counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn try_place(
        self: &Arc<Self>,
        user: &str,
        from_number: &str,
        hold: Duration,
    ) -> Result<String, CallError> {
        let slot = self
            .held
            .take(self.config.calls_max)
            .ok_or(CallError::TooManyCalls(self.config.calls_max))?;
        let identity = &self.config.identity;
        let mediation = identity
            .cluster
            .pools
            .iter()
            .find(|p| p.role == "mediation" && p.gateway.as_deref() == Some(identity.pool.as_str()))
            .map(|p| p.name.clone())
            .ok_or_else(|| CallError::NoMediationPool(identity.pool.clone()))?;
        let addrs = self
            .config
            .resolver
            .resolve(&identity.address(&mediation, SIP_PORT))
            .await;
        let weak = Arc::downgrade(self);
        let on_request: OnRequest = Arc::new(move |request, leg| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(g) => g.on_request(request, leg).await,
                    None => None,
                }
            })
        });
        let uri = format!("sip:{user}@{mediation}");
        let mut refused = None;
        // Bounded: one attempt per server of the pool name.
        for addr in addrs {
            let Ok(link) = Link::connect(
                addr,
                self.config.connect_timeout,
                self.config.limits,
                on_request.clone(),
            )
            .await
            else {
                continue;
            };
            let tag = message::token();
            let headers = vec![
                ("Max-Forwards".to_owned(), "70".to_owned()),
                (
                    "From".to_owned(),
                    format!("<sip:{from_number}@{};user=phone>;tag={tag}", identity.pool),
                ),
                ("To".to_owned(), format!("<{uri}>")),
                (
                    "Call-ID".to_owned(),
                    format!("{}@{}", message::token(), identity.node),
                ),
                ("CSeq".to_owned(), "1 INVITE".to_owned()),
                (
                    "Contact".to_owned(),
                    format!("<sip:gateway@{};transport=tcp>", link.local()),
                ),
                (HOLD_HEADER.to_owned(), hold.as_millis().to_string()),
            ];
            let invite =
                message::request(Method::Invite, &uri, headers, Vec::new()).map_err(|_| {
                    CallError::Refused {
                        status: 400,
                        reason: "Bad Request-URI".into(),
                    }
                })?;
            let leg = Leg::Link(link);
            let answer = match leg
                .request(invite.clone(), self.config.invite_timeout)
                .await
            {
                Ok(answer) => answer,
                Err(_) => continue,
            };
            let code = answer.status_code.code();
            if (200..300).contains(&code) {
                let side = DialogSide::started(leg, &invite, &answer);
                let _ = side.ack(1).await;
                let call = self.register(side, slot);
                let call_id = call.side.call_id.clone();
                tokio::spawn(self.clone().hold(call, hold));
                return Ok(call_id);
            }
            let error = CallError::Refused {
                status: code,
                reason: reason_of(&answer),
            };
            // An overloaded or cut-off Mediation server: the next one may carry the call.
            if code != 503 {
                return Err(error);
            }
            refused = Some(error);
        }
        Err(refused.unwrap_or(CallError::Unreachable(mediation)))
    }

    /// Stops as a killed gateway would: calls end without a word.
    pub fn halt(&self) {
        let _ = self.stop.send(true);
        self.lock_calls().clear();
    }
}

impl Handler for Gateway {
    async fn handle(&self, request: Request, peer: Peer) -> Reply {
        if request.method == Method::Ack {
            // Confirms a 2xx we sent; the call is already held.
            return Reply::Nothing;
        }
        let Some(this) = self.this.get().and_then(Weak::upgrade) else {
            return Reply::Response(message::response(&request, 503, "Service Unavailable"));
        };
        // An INVITE rings before its answer: deferred, so the connection's other requests go on meanwhile.
        Reply::Deferred(Box::pin(async move {
            let fallback = message::response(&request, 500, "Server Internal Error");
            this.on_request(request, Leg::Peer(peer))
                .await
                .unwrap_or(fallback)
        }))
    }
}

/// The admin API: `/status` and `POST /admin/call {"to": "<user>", "hold_ms": 3000, "from": "+15550100"}`.
pub fn admin_api(gateway: &Arc<Gateway>) -> AdminApi {
    let (for_status, for_call) = (gateway.clone(), gateway.clone());
    AdminApi::new(&gateway.config.identity.cluster.admin_token, move || {
        for_status.status()
    })
    .command("call", move |body: Value| {
        let gateway = for_call.clone();
        async move {
            let Some(to) = body.get("to").and_then(Value::as_str) else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "the body must name the user: {\"to\": \"alice\"}".to_owned(),
                ));
            };
            let hold = body
                .get("hold_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
                .unwrap_or(gateway.config.hold_default)
                .min(gateway.config.hold_max);
            let from = body
                .get("from")
                .and_then(Value::as_str)
                .unwrap_or("+15550100");
            match gateway.place_call(to, from, hold).await {
                Ok(call_id) => {
                    Ok(json!({"call_id": call_id, "to": to, "hold_ms": hold.as_millis() as u64}))
                }
                Err(e @ CallError::TooManyCalls(_)) => {
                    Err((StatusCode::SERVICE_UNAVAILABLE, format!("failed to {e}")))
                }
                Err(e) => Err((StatusCode::BAD_GATEWAY, format!("failed to {e}"))),
            }
        }
    })
}

/// Serves one gateway on `listeners` until `shutdown` completes.
pub async fn run(
    listeners: RoleListeners,
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    serve(listeners, Gateway::new(config), shutdown).await
}

/// Serves with a gateway the caller keeps a handle on (tests place calls and read its counters).
pub async fn serve(
    listeners: RoleListeners,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let transport = gateway.config.transport.clone();
    let admin = admin_api(&gateway);
    let result = node::serve(listeners, gateway.clone(), transport, admin, shutdown).await;
    gateway.halt();
    result
}

/// `poolnode pstn-gateway`: the cluster from `POOLNODE_CLUSTER`, binds, prints the ready line, serves until
/// `shutdown`.
pub async fn run_node(
    args: RoleArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let cluster = Arc::new(crate::cluster::ClusterConfig::from_env()?);
    let identity = NodeIdentity::new(cluster, &args.node_name()?, "pstn-gateway")?;
    let config = GatewayConfig::new(identity, args.resolver()?);
    let listeners = RoleListeners::bind(args.listen_sip, args.listen_admin).await?;
    node::print_ready("pstn-gateway", &config.identity.node, &listeners);
    run(listeners, config, shutdown).await
}
