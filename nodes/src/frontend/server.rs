//! The Front End server: its settings, its state, and what every handler uses: commit and read at the user's
//! home, authenticate, tell watchers of a change. The request dispatch is in [`super::dispatch`].

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rsip::{Method, Request, Response};

use super::call_state::Calls;
use super::locations::Locations;
use super::overload::Overload;
use super::pool::{CommitError, Pool};
use super::resiliency;
use super::store::{now_unix_ms, Applied, UserStore, UserView, Write};
use super::users::Credentials;
use super::watchers::Presence;
use crate::sip::digest::{Authentication, Digest};
use crate::sip::message::{self, header, uri_in, user_of};
use crate::sip::{Peer, TransportConfig};

/// Methods a Front End serves, for `Allow`.
pub const ALLOW: &str = "REGISTER, OPTIONS, MESSAGE, PUBLISH, SUBSCRIBE, ACK";

/// Settings of one Front End. Every timer is a setting so tests run a fast profile.
#[derive(Debug, Clone)]
pub struct FrontEndConfig {
    /// Who may register; [`Credentials::open`] turns authentication off.
    pub credentials: Credentials,
    /// Digest realm.
    pub realm: String,
    /// Key of the stateless nonces; Front Ends of one pool share it so a challenge from one is answered at another.
    pub nonce_secret: String,
    pub nonce_lifetime: Duration,
    /// Registration lifetime when the client asks none.
    pub expires_default: Duration,
    /// Shorter asks get `423 Interval Too Brief`.
    pub expires_min: Duration,
    /// Longer asks are cut to this.
    pub expires_max: Duration,
    /// The keep-alive interval announced in `ms-keep-alive` (Lync: 300 s).
    pub keep_alive: Duration,
    /// How long an IM waits for the recipient's client before the sender gets `408`.
    pub im_answer_timeout: Duration,
    /// How long a NOTIFY waits for the watcher's answer before the subscription is dropped.
    pub notify_answer_timeout: Duration,
    /// Presence subscription lifetime when the client asks none.
    pub subscription_expires_default: Duration,
    /// Publication lifetime when the client asks none.
    pub publication_expires_default: Duration,
    /// Requests in flight at once; beyond, `503`.
    pub requests_in_flight_max: usize,
    /// Contacts in one user's list (Lync's default: 1,000); an `add` beyond is refused with `403`, as is one
    /// that would make the list's answer larger than the transport's body limit.
    pub contacts_max: usize,
    /// `Retry-After` of a `503`.
    pub retry_after: Duration,
    /// How often expired bindings, publications and subscriptions are swept.
    pub sweep_interval: Duration,
    pub transport: TransportConfig,
}

impl Default for FrontEndConfig {
    fn default() -> Self {
        Self {
            credentials: Credentials::default(),
            realm: "poolchaos".into(),
            nonce_secret: message::token(),
            nonce_lifetime: Duration::from_secs(300),
            expires_default: Duration::from_secs(3600),
            expires_min: Duration::from_secs(1),
            expires_max: Duration::from_secs(7200),
            keep_alive: Duration::from_secs(300),
            im_answer_timeout: Duration::from_secs(10),
            notify_answer_timeout: Duration::from_secs(5),
            subscription_expires_default: Duration::from_secs(3600),
            publication_expires_default: Duration::from_secs(3600),
            requests_in_flight_max: 4096,
            contacts_max: 1000,
            retry_after: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(1),
            transport: TransportConfig::default(),
        }
    }
}

/// Where a Front End's users' persistent state lives.
pub enum Home {
    /// In this Front End's own store.
    Standalone,
    /// In the routing groups of a pool, each at its primary.
    Pool(Arc<Pool>),
}

/// Why a request could not be served by the user's home: the reason phrase of a `503`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    /// `503 Service Unavailable (<reason>)` with `Retry-After`, and the reason again in `ms-diagnostics` (where
    /// Lync puts its own), since many SIP stacks drop reason phrases.
    pub fn response(&self, request: &Request) -> Response {
        let mut response =
            message::response(request, 503, &format!("Service Unavailable ({})", self.0));
        message::push(&mut response.headers, "Retry-After", "5");
        message::push(
            &mut response.headers,
            "ms-diagnostics",
            format!("1000;reason=\"{}\"", self.0.replace('"', "'")),
        );
        response
    }
}

/// Why a write was not confirmed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCommitted {
    /// Nothing changed: `503` (see [`Refusal`]).
    Refused(Refusal),
    /// It may or may not have taken effect (applied at a primary, replication not confirmed): `408 Request
    /// Timeout`, which tells a client the outcome is unknown and that it may repeat the request, never `503`,
    /// which would say it was not done.
    Unknown(String),
}

impl NotCommitted {
    pub fn response(&self, request: &Request) -> Response {
        match self {
            NotCommitted::Refused(refusal) => refusal.response(request),
            NotCommitted::Unknown(reason) => {
                let mut response = message::response(
                    request,
                    408,
                    &format!("Request Timeout ({reason}; the change may have taken effect)"),
                );
                message::push(
                    &mut response.headers,
                    "ms-diagnostics",
                    format!(
                        "1001;reason=\"outcome unknown: {}\"",
                        reason.replace('"', "'")
                    ),
                );
                response
            }
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            NotCommitted::Refused(Refusal(reason)) | NotCommitted::Unknown(reason) => reason,
        }
    }
}

impl From<Refusal> for NotCommitted {
    fn from(refusal: Refusal) -> Self {
        NotCommitted::Refused(refusal)
    }
}

/// One Front End: registrar, presence and IM server for the users it holds.
pub struct FrontEnd {
    pub config: FrontEndConfig,
    /// Persistent user state of a standalone Front End; changed only through [`super::store::Write`]s. A pooled
    /// Front End keeps its users' state in its pool's routing groups instead.
    pub store: Arc<UserStore>,
    pub home: Home,
    /// The `Arc` this Front End lives in, for work that outlives a request's borrow (pool mode).
    this: OnceLock<Weak<FrontEnd>>,
    /// Transient: the flow each binding registered over, for relaying to it.
    pub(crate) locations: Locations,
    /// Transient: presence subscriptions and their NOTIFY queues.
    pub(crate) presence: Presence,
    pub(crate) digest: Digest,
    pub(crate) overload: Overload,
    /// Transient, pool mode: the calls this Front End holds an end of.
    pub(crate) calls: Calls,
    /// Pool pairing: the backup registrar's and the fence's say on who is served here (see [`crate::pairing`]).
    pairing: OnceLock<Arc<crate::pairing::Pairing>>,
}

impl FrontEnd {
    pub fn new(config: FrontEndConfig) -> Self {
        Self::with_home(config, Home::Standalone)
    }

    /// A Front End of a pool: its users' state lives in `pool`'s routing groups.
    pub fn pooled(config: FrontEndConfig, pool: Arc<Pool>) -> Arc<Self> {
        let frontend = Arc::new(Self::with_home(config, Home::Pool(pool)));
        let _ = frontend.this.set(Arc::downgrade(&frontend));
        frontend
    }

    fn with_home(config: FrontEndConfig, home: Home) -> Self {
        Self {
            store: Arc::new(UserStore::new()),
            home,
            this: OnceLock::new(),
            locations: Locations::default(),
            presence: Presence::default(),
            digest: Digest::new(
                config.realm.clone(),
                config.nonce_secret.clone(),
                config.nonce_lifetime,
            ),
            overload: Overload::new(config.requests_in_flight_max, config.retry_after),
            calls: Calls::default(),
            pairing: OnceLock::new(),
            config,
        }
    }

    /// The pool this Front End belongs to, if any.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match &self.home {
            Home::Pool(pool) => Some(pool),
            Home::Standalone => None,
        }
    }

    /// Gives this Front End its pool's pairing (once).
    pub fn set_pairing(&self, pairing: Arc<crate::pairing::Pairing>) {
        let _ = self.pairing.set(pairing);
    }

    /// The pool's pairing, if it has a pair.
    pub fn pairing(&self) -> Option<&Arc<crate::pairing::Pairing>> {
        self.pairing.get()
    }

    /// The `Arc` this Front End lives in (pool mode), for work that outlives a request.
    pub(crate) fn arc(&self) -> Option<Arc<FrontEnd>> {
        self.this.get().and_then(Weak::upgrade)
    }

    /// Whether this Front End's users are in resiliency mode (its Back End unavailable past the grace period);
    /// `None` without a Back End (standalone, or a pool run without one).
    pub fn resiliency_mode(&self) -> Option<bool> {
        let backend = self.pool()?.settings().backend.clone()?;
        Some(backend.gate.in_resiliency_mode())
    }

    /// Tells every client registered over a connection to this Front End that resiliency mode is `on` or off.
    pub(crate) fn tell_resiliency(&self, on: bool) {
        let home = self
            .pool()
            .map(|p| p.settings().pool.clone())
            .unwrap_or_default();
        resiliency::tell(
            self.locations.all(),
            &home,
            on,
            self.config.notify_answer_timeout,
        );
    }

    /// Calls up now with an end held by this Front End.
    pub fn calls_in_progress(&self) -> usize {
        self.calls.count()
    }

    /// Calls up or being set up here: the places taken among [`CallSettings::calls_max`](super::call_state::CallSettings).
    pub fn calls_held(&self) -> usize {
        self.calls.held()
    }

    /// This Front End's node name in its pool (what bindings record as the Front End holding the connection).
    pub fn node_name(&self) -> Option<String> {
        self.pool().map(|p| p.node().to_owned())
    }

    /// Applies `writes` of `user` at the user's home and returns what each did and the user's state after: here in
    /// standalone mode, at the routing group's primary (replicated before it answers) in pool mode.
    pub(crate) async fn commit(
        &self,
        user: &str,
        writes: Vec<Write>,
        now_unix_ms: u64,
    ) -> Result<(Vec<Applied>, UserView), NotCommitted> {
        match &self.home {
            Home::Standalone => {
                let applied = writes
                    .iter()
                    .map(|w| self.store.apply(w, now_unix_ms))
                    .collect();
                Ok((applied, self.store.view(user, now_unix_ms)))
            }
            Home::Pool(pool) => pool
                .commit(user, writes, now_unix_ms)
                .await
                .map_err(|e| match e {
                    CommitError::NotDone(reason) => NotCommitted::Refused(Refusal(reason)),
                    CommitError::Unknown(reason) => NotCommitted::Unknown(reason),
                }),
        }
    }

    /// The user's persistent state, read at the user's home.
    pub(crate) async fn view(&self, user: &str, now_unix_ms: u64) -> Result<UserView, Refusal> {
        match &self.home {
            Home::Standalone => Ok(self.store.view(user, now_unix_ms)),
            Home::Pool(pool) => {
                let mut view = pool.view(user, now_unix_ms).await.map_err(Refusal)?;
                if let Some(pairing) = self.pairing() {
                    pairing.shape_view(user, &mut view);
                }
                Ok(view)
            }
        }
    }

    /// The user's presence changed: tell the watchers here and, in a pool, on every other Front End.
    pub(crate) fn changed(&self, user: &str) {
        self.changed_here(user);
        if let Some(pool) = self.pool() {
            pool.broadcast_changed(user);
        }
    }

    /// Tells the watchers of `user` on this Front End its current state.
    pub(crate) fn changed_here(&self, user: &str) {
        match &self.home {
            Home::Standalone => self.presence.changed(&self.store, user),
            Home::Pool(pool) => {
                let Some(notify) = self.presence.watchers_of(user) else {
                    return;
                };
                let (pool, user) = (pool.clone(), user.to_owned());
                let pairing = self.pairing().cloned();
                tokio::spawn(async move {
                    let now = now_unix_ms();
                    if let Ok(mut view) = pool.view(&user, now).await {
                        if let Some(pairing) = &pairing {
                            // A user not at full service in this pool shows as unknown.
                            pairing.shape_presence(&user, &mut view);
                        }
                        notify(&view, now);
                    }
                });
            }
        }
    }

    /// Checks that `request` comes from `user`: open mode trusts everyone; otherwise a request other than REGISTER
    /// is trusted on a flow the user registered over, and anything else needs digest credentials. The error is the
    /// response to send (`401` with a challenge, or `403`).
    pub(crate) fn authenticate(
        &self,
        request: &Request,
        peer: &Peer,
        user: &str,
    ) -> Result<(), Response> {
        if self.config.credentials.is_open() {
            return Ok(());
        }
        if request.method != Method::Register && self.locations.has_flow(user, peer.flow()) {
            return Ok(());
        }
        let Some(authorization) = header(&request.headers, "Authorization") else {
            return Err(self.challenge(request, false));
        };
        let method = request.method.to_string();
        match self.digest.verify(authorization, &method, |u| {
            self.config.credentials.password(u)
        }) {
            Authentication::Valid { username } if username == user => Ok(()),
            Authentication::Valid { .. } => Err(message::response(
                request,
                403,
                "Forbidden (Identity Mismatch)",
            )),
            Authentication::Stale => Err(self.challenge(request, true)),
            Authentication::Invalid => Err(message::response(request, 403, "Forbidden")),
        }
    }

    fn challenge(&self, request: &Request, stale: bool) -> Response {
        let mut response = message::response(request, 401, "Unauthorized");
        message::push(
            &mut response.headers,
            "WWW-Authenticate",
            self.digest.challenge(stale),
        );
        response
    }

    /// The user a request is from (user part of From).
    pub(crate) fn sender(request: &Request) -> Option<String> {
        header(&request.headers, "From")
            .and_then(|f| user_of(uri_in(f)))
            .map(str::to_owned)
    }

    /// Number of live presence subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.presence.subscription_count()
    }

    /// Removes what expired and tells watchers. In a pool each replica expires its own copy (see the pool's sweep);
    /// here only subscriptions and the flows of closed connections go.
    pub fn sweep(&self) {
        let now = now_unix_ms();
        if self.pool().is_some() {
            self.locations.forget_closed();
            self.presence.expire(now);
            return;
        }
        let expired = self.store.expire(now);
        for (user, binding) in &expired.bindings {
            self.locations.remove(user, &binding.contact);
        }
        let mut changed: Vec<&String> = expired
            .bindings
            .iter()
            .map(|(u, _)| u)
            .chain(expired.publications.iter())
            .collect();
        changed.sort();
        changed.dedup();
        for user in changed {
            self.presence.changed(&self.store, user);
        }
        self.presence.expire(now);
    }
}
