//! Calls through Mediation, the Front End's side (pool mode only; a standalone Front End answers INVITE `405`).
//!
//! - *Calls out.* An INVITE to a number (`sip:+1555…;user=phone`, or a numeric user part) goes to the Mediation
//!   pool of the Front End's site as `sip:<number>@<mediation pool>;user=phone`, trying every address of the pool
//!   name in turn: a connect failure, a connection closed before the answer, or a `503` moves to the next. One TCP
//!   connection per Mediation server carries every call placed on it.
//! - *Calls in.* An INVITE to a user (from Mediation) is relayed to the user's bindings over their registered
//!   connections, wherever in the pool they are (the IM path: the Front End holding the connection relays it), and
//!   the client's answer goes back with its To tag and Contact. `480` without a binding; `503` when the pool or
//!   the user's routing group cannot serve (Mediation then tries the pair).
//! - *In the call.* Requests with a call's Call-ID (ACK, BYE, OPTIONS, re-INVITE) are relayed to the other end and
//!   its answer passed back. Each Front End holding an end of a call watches it: when the Mediation connection closes
//!   (or the peer Front End holding the other end dies), the remaining end gets a BYE.
//!
//! A call is held as a [`CallEntry`](super::call_state::CallEntry) by Call-ID on each Front End that holds one of
//! its ends: the end toward the client and the end toward Mediation, each either a connection here
//! ([`End::Leg`](super::call_state::End::Leg)) or another Front End of the pool
//! ([`End::Node`](super::call_state::End::Node), reached with the peer link's `CallRelay`).
//!
//! The file holds one concept, the Front End's side of a call: placing, ringing, relaying inside the dialog and
//! ending; the calls held are in [`super::call_state`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsip::{Method, Request, Response, SipMessage};

use super::call_state::{CallEntry, CallSettings, Dialog, End, CALLS_MAX_DEFAULT};
use super::pool::wire::{Answer, Call};
use super::server::FrontEnd;
use super::store::now_unix_ms;
use crate::defects::{self, Defect};
use crate::mediation::dialog::reason_of;
use crate::mediation::{number_of, Leg, Link, OnRequest};
use crate::sip::codec::Limits;
use crate::sip::message::{self, header, name, uri_in, user_of, value};
use crate::sip::{Peer, Reply, RequestError, Transport};
use crate::slots::Slot;

/// Headers a relayed request does not carry: our hop's Via, credentials and routing, and Content-Length (computed
/// on encoding).
const NOT_RELAYED: [&str; 7] = [
    "Via",
    "Authorization",
    "Proxy-Authorization",
    "Content-Length",
    "Max-Forwards",
    "Route",
    "Record-Route",
];

/// Our own requests in a dialog (a BYE when an end is lost) start here: above any CSeq the far side has sent, so
/// a strict client does not take ours for an old one.
const OWN_CSEQ_FIRST: u32 = 100_000;

fn closed() -> RequestError {
    RequestError::Closed {
        peer: ([0, 0, 0, 0], 0).into(),
    }
}

fn call_id_of(request: &Request) -> &str {
    header(&request.headers, "Call-ID").unwrap_or_default()
}

/// `request` as relayed: same headers and body except our hop's, a new Request-URI when given, one hop less.
fn forwarded(request: &Request, uri: Option<&str>) -> Option<Request> {
    let hops = header(&request.headers, "Max-Forwards")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(70);
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|h| !NOT_RELAYED.iter().any(|n| name(h).eq_ignore_ascii_case(n)))
        .map(|h| (name(h).to_owned(), value(h).to_owned()))
        .collect();
    headers.push(("Max-Forwards".into(), hops.saturating_sub(1).to_string()));
    let uri = uri.map_or_else(|| request.uri.to_string(), str::to_owned);
    message::request(request.method, &uri, headers, request.body.clone()).ok()
}

/// Our answer to `request` carrying the far end's `answer`: its status, To (with its tag), Contact, Retry-After and
/// body.
fn answer_for(request: &Request, answer: &Response) -> Response {
    let mut response = message::response(request, answer.status_code.code(), &reason_of(answer));
    if let Some(to) = header(&answer.headers, "To") {
        response
            .headers
            .retain(|h| !name(h).eq_ignore_ascii_case("To"));
        message::push(&mut response.headers, "To", to.to_owned());
    }
    for carried in ["Contact", "Content-Type", "Retry-After"] {
        if let Some(v) = header(&answer.headers, carried) {
            message::push(&mut response.headers, carried, v.to_owned());
        }
    }
    response.body = answer.body.clone();
    response
}

fn parse_request(text: &str) -> Option<Request> {
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => Some(r),
        _ => None,
    }
}

fn parse_response(text: &str) -> Option<Response> {
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Response(r)) => Some(r),
        _ => None,
    }
}

fn encoded(message: impl Into<SipMessage>) -> String {
    String::from_utf8_lossy(&message::encode(message)).into_owned()
}

/// A relayed request (no Via) encoded for the peer link: with a placeholder Via, since the parser requires one; the
/// receiving Front End strips it with the rest of our hop's headers before sending.
fn encoded_for_peer(mut request: Request) -> String {
    message::push(
        &mut request.headers,
        "Via",
        format!(
            "SIP/2.0/TCP pool.invalid;branch=z9hG4bK{}",
            message::token()
        ),
    );
    encoded(request)
}

/// The way to a binding's client from its registered flow: the flow while open, else toward its contact.
async fn reach(flow: Peer, contact: &str) -> Option<Peer> {
    match flow.transport() {
        Transport::Tcp if flow.is_open() => Some(flow),
        Transport::Tcp => flow.toward(contact).await,
        Transport::Udp => Some(flow.toward(contact).await.unwrap_or(flow)),
    }
}

impl FrontEnd {
    fn call_settings(&self) -> Option<CallSettings> {
        self.pool().and_then(|p| p.settings().calls.clone())
    }

    fn call_timeouts(&self) -> (Duration, Duration) {
        self.call_settings()
            .map_or((Duration::from_secs(32), Duration::from_secs(5)), |s| {
                (s.invite_timeout, s.relay_timeout)
            })
    }

    /// A request inside a call this Front End holds an end of: relayed to the other end (pool mode). `None` when
    /// the Call-ID names no call here. An ACK is relayed on its own and gets [`Reply::Nothing`].
    pub(crate) fn in_call(&self, request: &Request, peer: &Peer) -> Option<Reply> {
        self.pool()?;
        let entry = self.calls.get(call_id_of(request))?;
        let this = self.arc()?;
        let toward_client = entry.mediation_flow == Some(peer.flow());
        let request = request.clone();
        if request.method == Method::Ack {
            tokio::spawn(async move {
                let _ = this.send_to_end(&entry, toward_client, request).await;
            });
            return Some(Reply::Nothing);
        }
        Some(Reply::Deferred(Box::pin(async move {
            this.relay(entry, toward_client, request).await
        })))
    }

    /// A new INVITE (pool mode): to a number, out through Mediation; to a user, to the user's clients.
    pub(crate) fn invite(&self, request: Request, peer: Peer) -> Reply {
        let Some(this) = self.arc() else {
            return Reply::Response(message::response(&request, 503, "Service Unavailable"));
        };
        if header(&request.headers, "To").is_some_and(|t| message::param(t, "tag").is_some()) {
            // In a dialog we do not hold (a Front End restarted, or the call ended).
            return Reply::Response(message::response(
                &request,
                481,
                "Call/Transaction Does Not Exist",
            ));
        }
        let uri = request.uri.to_string();
        let Some(settings) = self.call_settings() else {
            return Reply::Response(message::response(
                &request,
                503,
                "Service Unavailable (No Mediation Pool)",
            ));
        };
        if let Some(number) = number_of(&uri) {
            let Some(sender) = FrontEnd::sender(&request) else {
                return Reply::Response(message::response(&request, 400, "Bad From"));
            };
            if let Err(refusal) = self.authenticate(&request, &peer, &sender) {
                return Reply::Response(refusal);
            }
            let Some(slot) = self.calls.reserve(settings.calls_max) else {
                return Reply::Response(self.too_many_calls(&request));
            };
            return Reply::Deferred(Box::pin(async move {
                this.call_out(request, peer, settings, number, slot).await
            }));
        }
        let Some(user) = user_of(&uri).map(str::to_owned) else {
            return Reply::Response(message::response(&request, 404, "Not Found"));
        };
        let from_host = header(&request.headers, "From")
            .map(|f| message::host_port_of(uri_in(f)))
            .unwrap_or_default();
        let from_mediation = settings.mediation_pools.iter().any(|p| {
            from_host == p
                || from_host
                    .rsplit_once(':')
                    .is_some_and(|(host, _)| host == p)
        });
        if !from_mediation {
            let Some(sender) = FrontEnd::sender(&request) else {
                return Reply::Response(message::response(&request, 400, "Bad From"));
            };
            if let Err(refusal) = self.authenticate(&request, &peer, &sender) {
                return Reply::Response(refusal);
            }
        }
        if !self.config.credentials.knows(&user) {
            return Reply::Response(message::response(&request, 404, "Not Found"));
        }
        let Some(slot) = self.calls.reserve(settings.calls_max) else {
            return Reply::Response(self.too_many_calls(&request));
        };
        Reply::Deferred(Box::pin(async move {
            this.call_in(request, peer, settings, user, slot).await
        }))
    }

    /// The answer to a new call beyond `calls_max`.
    fn too_many_calls(&self, request: &Request) -> Response {
        message::unavailable(request, "Too Many Calls", self.config.retry_after)
    }

    async fn call_out(
        self: Arc<Self>,
        request: Request,
        peer: Peer,
        settings: CallSettings,
        number: String,
        slot: Slot,
    ) -> Response {
        let _ = peer
            .send_raw(message::encode(message::response(&request, 100, "Trying")))
            .await;
        let uri = format!("sip:{number}@{};user=phone", settings.mediation_pool);
        let Some(invite) = forwarded(&request, Some(&uri)) else {
            return message::response(&request, 400, "Bad Request-URI");
        };
        let mut last = message::response(
            &request,
            503,
            "Service Unavailable (No Mediation Server Answered)",
        );
        // Bounded: one attempt per address of the Mediation pool name.
        for addr in settings.resolver.resolve(&settings.mediation_target).await {
            let Some(link) = self.mediation_link(addr, &settings).await else {
                continue;
            };
            let answer = match link.request(invite.clone(), settings.invite_timeout).await {
                Ok(answer) => answer,
                Err(RequestError::Closed { .. }) => continue,
                Err(RequestError::Timeout { .. }) => {
                    return message::response(&request, 408, "Request Timeout")
                }
            };
            let code = answer.status_code.code();
            if code == 503 {
                last = answer_for(&request, &answer);
                continue;
            }
            if (200..300).contains(&code) {
                self.hold(CallEntry {
                    dialog: Dialog::new(&request, &answer, true),
                    client: End::Leg(Leg::Peer(peer)),
                    mediation: End::Leg(Leg::Link(link)),
                    mediation_flow: None,
                    cseq: AtomicU32::new(OWN_CSEQ_FIRST),
                    ended: AtomicBool::new(false),
                    slot: Mutex::new(Some(slot)),
                });
            }
            return answer_for(&request, &answer);
        }
        last
    }

    async fn call_in(
        self: Arc<Self>,
        request: Request,
        peer: Peer,
        settings: CallSettings,
        user: String,
        slot: Slot,
    ) -> Response {
        let view = match self.view(&user, now_unix_ms()).await {
            Ok(view) => view,
            Err(refusal) => return refusal.response(&request),
        };
        if view.bindings.is_empty() {
            return message::response(&request, 480, "Temporarily Unavailable");
        }
        let _ = peer
            .send_raw(message::encode(message::response(&request, 100, "Trying")))
            .await;
        let me = self.node_name();
        let mut last = message::response(&request, 480, "Temporarily Unavailable");
        // Bounded: one attempt per binding.
        for binding in view.bindings {
            let Some(invite) = forwarded(&request, Some(&binding.contact)) else {
                continue;
            };
            let outcome = match binding.front_end.clone().filter(|n| Some(n) != me.as_ref()) {
                None => {
                    let flow = self
                        .locations
                        .flows(&user, std::slice::from_ref(&binding))
                        .into_iter()
                        .next();
                    let Some(target) = (match flow {
                        Some((_, flow)) => reach(flow, &binding.contact).await,
                        None => None,
                    }) else {
                        continue;
                    };
                    match target
                        .request(invite.clone(), settings.invite_timeout)
                        .await
                    {
                        Ok(answer) => Some((answer, End::Leg(Leg::Peer(target)))),
                        Err(RequestError::Timeout { .. }) => {
                            last = message::response(&request, 408, "Request Timeout");
                            None
                        }
                        Err(RequestError::Closed { .. }) => None,
                    }
                }
                Some(node) => {
                    let call = Call::Ring {
                        user: user.clone(),
                        contact: binding.contact.clone(),
                        message: encoded_for_peer(invite.clone()),
                        timeout_ms: settings.invite_timeout.as_millis() as u64,
                    };
                    let wait = settings.invite_timeout + settings.relay_timeout;
                    let pool = self.pool().cloned();
                    let answer = match pool {
                        Some(pool) => pool.call_peer(&node, call, wait).await,
                        None => None,
                    };
                    match answer {
                        Some(Answer::Relayed {
                            response: Some(text),
                        }) => parse_response(&text).map(|a| (a, End::Node(node))),
                        Some(Answer::Unavailable { reason }) => {
                            last = message::unavailable(&request, &reason, self.config.retry_after);
                            None
                        }
                        _ => None,
                    }
                }
            };
            let Some((answer, client)) = outcome else {
                continue;
            };
            if (200..300).contains(&answer.status_code.code()) {
                self.hold(CallEntry {
                    dialog: Dialog::new(&request, &answer, false),
                    client,
                    mediation: End::Leg(Leg::Peer(peer.clone())),
                    mediation_flow: Some(peer.flow()),
                    cseq: AtomicU32::new(OWN_CSEQ_FIRST),
                    ended: AtomicBool::new(false),
                    slot: Mutex::new(Some(slot)),
                });
                return answer_for(&request, &answer);
            }
            last = answer_for(&request, &answer);
        }
        last
    }

    /// Peer link: rings the client of `user` bound at `contact` on this Front End for a call whose Mediation end
    /// `from` holds; the client's answer, encoded.
    pub(crate) async fn ring_here(
        &self,
        from: &str,
        user: &str,
        contact: &str,
        encoded_invite: &str,
        timeout_ms: u64,
    ) -> Option<String> {
        let invite = forwarded(&parse_request(encoded_invite)?, None)?;
        let calls_max = self
            .call_settings()
            .map_or(CALLS_MAX_DEFAULT, |s| s.calls_max);
        let Some(slot) = self.calls.reserve(calls_max) else {
            return Some(encoded(self.too_many_calls(&invite)));
        };
        let (_, flow) = self
            .locations
            .flows_of(user)
            .into_iter()
            .find(|(c, _)| c == contact)?;
        let target = reach(flow, contact).await?;
        let answer = target
            .request(invite.clone(), Duration::from_millis(timeout_ms))
            .await
            .ok()?;
        if (200..300).contains(&answer.status_code.code()) {
            self.hold(CallEntry {
                dialog: Dialog::new(&invite, &answer, false),
                client: End::Leg(Leg::Peer(target)),
                mediation: End::Node(from.to_owned()),
                mediation_flow: None,
                cseq: AtomicU32::new(OWN_CSEQ_FIRST),
                ended: AtomicBool::new(false),
                slot: Mutex::new(Some(slot)),
            });
        }
        Some(encoded(answer))
    }

    /// Peer link: a request inside call `call_id`, for the end this Front End holds; the answer, encoded (`None`
    /// for an ACK, an unknown call, or no answer).
    pub(crate) async fn call_relay_here(
        &self,
        call_id: &str,
        toward_client: bool,
        encoded_request: &str,
        timeout_ms: u64,
    ) -> Option<String> {
        let request = parse_request(encoded_request)?;
        let entry = self.calls.get(call_id)?;
        if matches!(entry.end(toward_client), End::Node(_)) {
            // Both ends elsewhere would bounce between Front Ends.
            return None;
        }
        if request.method == Method::Bye {
            self.calls.end(&entry);
        }
        let timeout = Duration::from_millis(timeout_ms);
        let answer = self
            .send_within(&entry, toward_client, request, timeout)
            .await;
        match answer {
            Ok(Some(answer)) => {
                if answer.status_code.code() == 481 {
                    self.calls.end(&entry);
                }
                Some(encoded(answer))
            }
            Ok(None) => None,
            Err(_) => {
                self.calls.end(&entry);
                None
            }
        }
    }

    /// Starts holding a call: in the table, and watched.
    fn hold(&self, entry: CallEntry) {
        let entry = Arc::new(entry);
        self.calls.insert(entry.clone());
        if let Some(this) = self.arc() {
            tokio::spawn(this.watch(entry));
        }
    }

    /// Relays `request` to the other end and answers it with the far end's answer.
    async fn relay(
        &self,
        entry: Arc<CallEntry>,
        toward_client: bool,
        request: Request,
    ) -> Response {
        if entry.ended.load(Ordering::Acquire) {
            return message::response(&request, 481, "Call/Transaction Does Not Exist");
        }
        let method = request.method;
        if method == Method::Bye {
            self.calls.end(&entry);
        }
        let outcome = self
            .send_to_end(&entry, toward_client, request.clone())
            .await;
        match (method, outcome) {
            // The sender's call is over whatever the other end says.
            (Method::Bye, _) => message::response(&request, 200, "OK"),
            (_, Ok(Some(answer))) => {
                if answer.status_code.code() == 481 {
                    self.calls.end(&entry);
                }
                answer_for(&request, &answer)
            }
            (_, Err(RequestError::Timeout { .. })) => {
                message::response(&request, 408, "Request Timeout")
            }
            (_, Ok(None) | Err(RequestError::Closed { .. })) => {
                self.calls.end(&entry);
                message::response(
                    &request,
                    481,
                    "Call/Transaction Does Not Exist (Other End Lost)",
                )
            }
        }
    }

    async fn send_to_end(
        &self,
        entry: &CallEntry,
        toward_client: bool,
        request: Request,
    ) -> Result<Option<Response>, RequestError> {
        let (_, relay_timeout) = self.call_timeouts();
        self.send_within(entry, toward_client, request, relay_timeout)
            .await
    }

    /// Sends `request` (relayed form) to one end: `Ok(None)` for an ACK (no answer).
    async fn send_within(
        &self,
        entry: &CallEntry,
        toward_client: bool,
        request: Request,
        timeout: Duration,
    ) -> Result<Option<Response>, RequestError> {
        let is_ack = request.method == Method::Ack;
        let relayed = forwarded(&request, None).ok_or_else(closed)?;
        match entry.end(toward_client) {
            End::Leg(leg) if is_ack => leg.send_without_answer(relayed).await.map(|()| None),
            End::Leg(leg) => leg.request(relayed, timeout).await.map(Some),
            End::Node(node) => {
                let pool = self.pool().cloned().ok_or_else(closed)?;
                let call = Call::CallRelay {
                    call_id: entry.dialog.call_id.clone(),
                    toward_client,
                    message: encoded_for_peer(relayed),
                    timeout_ms: timeout.as_millis() as u64,
                };
                let wait = timeout + pool.settings().failure_timeout;
                match pool.call_peer(node, call, wait).await {
                    Some(Answer::Relayed {
                        response: Some(text),
                    }) => Ok(parse_response(&text)),
                    Some(Answer::Relayed { response: None }) if is_ack => Ok(None),
                    // The Front End holding the end is at one of its bounds: the call lives on, the request is
                    // refused.
                    Some(Answer::Unavailable { reason }) => Ok(Some(message::unavailable(
                        &request,
                        &reason,
                        self.config.retry_after,
                    ))),
                    Some(_) => Err(closed()),
                    None => Err(RequestError::Timeout {
                        peer: ([0, 0, 0, 0], 0).into(),
                    }),
                }
            }
        }
    }

    /// Whether an end is still there: its connection open, or its Front End alive.
    fn end_alive(&self, end: &End) -> bool {
        match end {
            End::Leg(leg) => leg.is_open(),
            End::Node(node) => self.pool().is_some_and(|p| p.peer_alive(node)),
        }
    }

    /// While the call lasts: when one end is lost, the other gets a BYE and the call ends.
    async fn watch(self: Arc<Self>, entry: Arc<CallEntry>) {
        let interval = self
            .call_settings()
            .map_or(Duration::from_millis(200), |s| s.leg_check_interval);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded by the call: ends when the call ends.
        loop {
            tick.tick().await;
            if entry.ended.load(Ordering::Acquire) {
                return;
            }
            let lost_client = !self.end_alive(&entry.client);
            let lost_mediation = !self.end_alive(&entry.mediation);
            if !lost_client && !lost_mediation {
                continue;
            }
            // The bug (a known-bad pool only): the call is ended here, but the end still there is never told.
            if self.calls.end(&entry)
                && lost_client != lost_mediation
                && !defects::active(Defect::NoByeOnLostLeg)
            {
                // Tell the end that is still there.
                let toward_client = lost_mediation;
                let cseq = entry.cseq.fetch_add(1, Ordering::Relaxed);
                if let Some(bye) = entry
                    .dialog
                    .request_toward(toward_client, Method::Bye, cseq)
                {
                    tracing::info!(call_id = %entry.dialog.call_id, toward_client, "call end lost: BYE");
                    let _ = self.send_to_end(&entry, toward_client, bye).await;
                }
            }
            return;
        }
    }

    /// An open connection to the Mediation server at `addr`: the one calls already use, or a new one.
    async fn mediation_link(&self, addr: SocketAddr, settings: &CallSettings) -> Option<Link> {
        let existing = self
            .calls
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .filter(|l| l.is_open())
            .cloned();
        if existing.is_some() {
            return existing;
        }
        let weak = self.arc().map(|a| Arc::downgrade(&a))?;
        let on_request: OnRequest = Arc::new(move |request, _leg| {
            let frontend = weak.upgrade();
            Box::pin(async move {
                let frontend = frontend?;
                frontend.on_mediation_link(request).await
            })
        });
        let link = Link::connect(
            addr,
            settings.connect_timeout,
            Limits::default(),
            on_request,
        )
        .await
        .ok()?;
        let mut links = self.calls.links.lock().unwrap_or_else(|e| e.into_inner());
        // Closed connections leave the map here, so it holds at most one per Mediation server.
        links.retain(|_, l| l.is_open());
        links.insert(addr, link.clone());
        Some(link)
    }

    /// A request Mediation sent on a connection we opened: inside one of our calls out.
    async fn on_mediation_link(&self, request: Request) -> Option<Response> {
        let entry = self.calls.get(call_id_of(&request));
        match (request.method, entry) {
            (Method::Ack, Some(entry)) => {
                let _ = self.send_to_end(&entry, true, request).await;
                None
            }
            (Method::Ack, None) => None,
            (_, Some(entry)) => Some(self.relay(entry, true, request).await),
            (Method::Options, None) => Some(message::response(&request, 200, "OK")),
            (_, None) => Some(message::response(
                &request,
                481,
                "Call/Transaction Does Not Exist",
            )),
        }
    }
}
