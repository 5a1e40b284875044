//! A Back End node: [`Backend::open`] reads its store, [`Backend::run`] serves the peer port (partner, witness
//! answers, Front End clients), runs the heartbeat and serves the admin API. [`run`] does both.
//!
//! Killing a node in a test is aborting the future `run` returns: every task of the node lives in one
//! `JoinSet` owned by that future, so dropping it drops the tasks and the listeners; the SQLite file stays.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::error::{BackendError, PeerError, StoreError};
use super::protocol::{serve_connection, PeerConn, Request, Response};
use super::role::{DbRole, RoleState, Settings};
use super::store::{DurableRole, Meta, Store};
use crate::admin::AdminApi;
use crate::cluster::{ClusterConfig, PoolConfig, ADMIN_PORT, PEER_PORT};
use crate::slots::Slots;

/// The sockets a Back End node serves.
#[derive(Debug)]
pub struct Listeners {
    /// Peer port: partner, Front End clients.
    pub peer: TcpListener,
    /// HTTP admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both (port 0 in tests).
    pub async fn bind(
        peer: std::net::SocketAddr,
        admin: std::net::SocketAddr,
    ) -> std::io::Result<Self> {
        Ok(Listeners {
            peer: TcpListener::bind(peer).await?,
            admin: TcpListener::bind(admin).await?,
        })
    }
}

/// What a Back End node (or a witness) needs to start.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub cluster: Arc<ClusterConfig>,
    /// This node's name (`POOLNODE_NODE`).
    pub node: String,
    /// Where the SQLite file (or the witness's record) lives; created if missing.
    pub data_dir: PathBuf,
    /// Accepted peer-port connections open at once (partner, witness traffic, Front Ends' clients); one more is
    /// closed as soon as it is accepted.
    pub peer_connections_max: usize,
    /// An accepted peer-port connection whose first request has not arrived complete within this is closed
    /// unanswered (the store protocol has no hello: the first request is the peer's first word).
    pub peer_first_frame_timeout: Duration,
}

impl BackendConfig {
    /// Node `node` of `cluster` keeping its data in `data_dir`, with the default bounds.
    pub fn new(cluster: Arc<ClusterConfig>, node: &str, data_dir: PathBuf) -> Self {
        Self {
            cluster,
            node: node.to_owned(),
            data_dir,
            peer_connections_max: 1_024,
            peer_first_frame_timeout: Duration::from_secs(10),
        }
    }
}

/// The Back End pool a node belongs to, its partner and its witness.
#[derive(Debug, Clone)]
pub struct Placement {
    pub pool: PoolConfig,
    pub partner: String,
    pub witness: Option<String>,
    /// True for `<pool>-1`, the initial principal.
    pub initial_principal: bool,
}

impl Placement {
    pub fn of(cluster: &ClusterConfig, node: &str) -> Result<Placement, BackendError> {
        let pool = cluster.pool_of(node)?.clone();
        let partner = pool
            .nodes
            .iter()
            .find(|n| n.as_str() != node)
            .cloned()
            .ok_or_else(|| {
                BackendError::UnknownPool(format!("{} has no partner for {node}", pool.name))
            })?;
        let initial_principal = pool.nodes.first().map(String::as_str) == Some(node);
        Ok(Placement {
            witness: pool.witness.clone(),
            partner,
            initial_principal,
            pool,
        })
    }
}

/// The address node `from` uses to reach node `to` on `port`: a route through the fault proxy (by node, then by
/// `from`'s pool), else the DNS name.
pub fn peer_address(cluster: &ClusterConfig, from: &str, to: &str, port: u16) -> String {
    let from_pool = cluster.pool_of(from).ok().map(|p| p.name.clone());
    cluster
        .routes
        .iter()
        .find(|r| r.to == to && (r.from == from || Some(&r.from) == from_pool.as_ref()))
        .map(|r| r.address.clone())
        .unwrap_or_else(|| format!("{to}:{port}"))
}

/// One Back End node, shared by its tasks.
pub struct Backend {
    pub(crate) name: String,
    pub(crate) placement: Placement,
    pub(crate) settings: Settings,
    admin_token: String,
    store: Arc<Mutex<Store>>,
    pub(crate) state: Mutex<RoleState>,
    /// Serializes commits on a principal and applies on a mirror with promotion and step-down, so an epoch check
    /// and the write it guards are one step.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
    /// Principal → mirror commits and catch-up; mirror → principal handover.
    pub(crate) partner_data: PeerConn,
    /// Heartbeats only, so they never wait behind a snapshot.
    partner_ping: PeerConn,
    /// Expose, Synchronized and Promote.
    pub(crate) witness_ctl: Option<PeerConn>,
    witness_ping: Option<PeerConn>,
    sync_running: AtomicBool,
    /// The peer port's bounds and counts.
    peer_port: PeerPort,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).finish()
    }
}

impl Backend {
    /// Opens the node's store (creating the data directory) and reads its durable role and epoch.
    pub fn open(config: &BackendConfig) -> Result<Arc<Backend>, BackendError> {
        let cluster = &config.cluster;
        let placement = Placement::of(cluster, &config.node)?;
        let initial = if placement.initial_principal {
            DurableRole::Principal
        } else {
            DurableRole::Mirror
        };
        let store = Store::open(&config.data_dir, initial)?;
        let settings = Settings::new(&cluster.timings, placement.witness.is_some());
        let state = RoleState::new(&config.node, settings, store.meta(), Instant::now());
        let partner_address = peer_address(cluster, &config.node, &placement.partner, PEER_PORT);
        let witness_address = placement
            .witness
            .as_ref()
            .map(|w| (w.clone(), peer_address(cluster, &config.node, w, PEER_PORT)));
        tracing::info!(node = %config.node, role = ?store.meta().role, epoch = store.meta().epoch, "back end opened");
        Ok(Arc::new(Backend {
            name: config.node.clone(),
            settings,
            admin_token: cluster.admin_token.clone(),
            store: Arc::new(Mutex::new(store)),
            state: Mutex::new(state),
            commit_lock: tokio::sync::Mutex::new(()),
            partner_data: PeerConn::new(&placement.partner, &partner_address),
            partner_ping: PeerConn::new(&placement.partner, &partner_address),
            witness_ctl: witness_address.as_ref().map(|(w, a)| PeerConn::new(w, a)),
            witness_ping: witness_address.map(|(w, a)| PeerConn::new(w, a)),
            sync_running: AtomicBool::new(false),
            peer_port: PeerPort::new(config),
            placement,
        }))
    }

    /// Serves until `shutdown` completes (or the future is dropped: that is a kill).
    pub async fn run(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BackendError> {
        let mut tasks = JoinSet::new();
        let node = self.clone();
        tasks.spawn(async move { node.accept_loop(listeners.peer).await });
        let node = self.clone();
        tasks.spawn(async move {
            node.heartbeat_loop().await;
            Ok(())
        });
        let api = self.clone().admin_api();
        tasks.spawn(async move {
            api.serve(listeners.admin, std::future::pending())
                .await
                .map_err(BackendError::Io)
        });
        tokio::select! {
            _ = shutdown => Ok(()),
            Some(done) = tasks.join_next() => match done {
                Ok(result) => result,
                Err(e) => Err(BackendError::Io(std::io::Error::other(e))),
            },
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) -> Result<(), BackendError> {
        let port = self.peer_port.clone();
        let first_frame_timeout = port.first_frame_timeout;
        accept_peers(listener, port, move |stream| {
            let node = self.clone();
            async move {
                serve_connection(stream, first_frame_timeout, |request| {
                    let node = node.clone();
                    async move { node.handle(request).await }
                })
                .await
            }
        })
        .await
    }

    /// Caps this node's store at about `bytes` ([`Store::limit_size`]), so that writes beyond fail as on a full
    /// disk; `None` lifts the cap.
    pub async fn limit_store_size(&self, bytes: Option<u64>) -> Result<(), StoreError> {
        self.with_store(move |s| s.limit_size(bytes)).await
    }

    /// Accepted peer-port connections open now (at most [`BackendConfig::peer_connections_max`]).
    pub fn peer_connections(&self) -> usize {
        self.peer_port.open.taken()
    }

    /// Accepted peer-port connections closed since the start for sending no complete request within
    /// [`BackendConfig::peer_first_frame_timeout`].
    pub fn peer_connections_silent(&self) -> u64 {
        self.peer_port.silent()
    }

    async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping(view) => {
                let now = Instant::now();
                let step_down = self.lock_state().on_partner_view(&view, None, now);
                if let Some(epoch) = step_down {
                    self.persist_mirror(epoch).await;
                }
                Response::Pong(self.lock_state().view(Instant::now()))
            }
            Request::Replicate {
                from,
                epoch,
                prev_lsn,
                prev_epoch,
                entries,
                synchronized,
            } => {
                self.on_replicate(&from, epoch, prev_lsn, prev_epoch, entries, synchronized)
                    .await
            }
            Request::Snapshot {
                from,
                epoch,
                snapshot,
            } => self.on_snapshot(&from, epoch, snapshot).await,
            Request::Handover { from, epoch } => self.on_handover(&from, epoch).await,
            Request::Commit { batch, min_epoch } => self.commit(batch, min_epoch).await,
            Request::LoadUser { user, min_epoch } => {
                self.read(min_epoch, move |s, epoch| {
                    Ok(Response::User {
                        record: s.load_user(&user)?,
                        epoch,
                    })
                })
                .await
            }
            Request::LoadPool { pool, min_epoch } => {
                self.read(min_epoch, move |s, epoch| {
                    Ok(Response::Users {
                        records: s.load_pool(&pool)?,
                        epoch,
                    })
                })
                .await
            }
            Request::Vote { min_epoch } => match self.check_serving(min_epoch).await {
                Ok(epoch) => Response::Vote {
                    yes: true,
                    epoch,
                    node: self.name.clone(),
                },
                Err(refusal) => refusal,
            },
            Request::View => Response::Pong(self.lock_state().view(Instant::now())),
            Request::WitnessPing(_)
            | Request::Expose { .. }
            | Request::Synchronized { .. }
            | Request::Promote { .. } => Response::Error {
                reason: format!("{} is a Back End node, not a witness", self.name),
            },
        }
    }

    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, RoleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store in a blocking thread.
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The reason this node does not serve, as a client answer; `Ok(epoch)` when it does.
    pub(crate) async fn check_serving(&self, min_epoch: u64) -> Result<u64, Response> {
        let refusal = {
            let state = self.lock_state();
            let now = Instant::now();
            if min_epoch > state.epoch && state.role == DurableRole::Principal {
                Some((
                    true,
                    "a client has seen a newer epoch: this principal is stale".to_string(),
                ))
            } else if state.serving(now) {
                return Ok(state.epoch);
            } else {
                Some((
                    false,
                    match state.role {
                        DurableRole::Mirror => "this node is the mirror".to_string(),
                        DurableRole::Principal => "this principal has no quorum".to_string(),
                    },
                ))
            }
        };
        let (stale, reason) = refusal.expect("set above");
        if stale {
            // Fencing from the client side: a newer principal exists, so step down rather than wait to hear it.
            self.persist_mirror(min_epoch).await;
        }
        Err(self.not_principal(reason))
    }

    pub(crate) fn not_principal(&self, reason: String) -> Response {
        let state = self.lock_state();
        let principal = match state.role {
            DurableRole::Principal => None,
            DurableRole::Mirror => state
                .partner
                .as_ref()
                .filter(|p| p.role == DurableRole::Principal)
                .map(|p| p.node.clone())
                .or_else(|| state.witness.as_ref().and_then(|w| w.principal.clone()))
                .filter(|p| *p != self.name),
        };
        Response::NotPrincipal {
            node: self.name.clone(),
            epoch: state.epoch,
            principal,
            reason,
        }
    }

    async fn read<F>(&self, min_epoch: u64, f: F) -> Response
    where
        F: FnOnce(&mut Store, u64) -> Result<Response, StoreError> + Send + 'static,
    {
        let epoch = match self.check_serving(min_epoch).await {
            Ok(e) => e,
            Err(refusal) => return refusal,
        };
        match self.with_store(move |s| f(s, epoch)).await {
            Ok(r) => r,
            Err(e) => Response::Error {
                reason: e.to_string(),
            },
        }
    }

    /// Steps down to mirror at `epoch`: in memory at once, then durably.
    pub(crate) async fn persist_mirror(&self, epoch: u64) {
        let epoch = {
            let mut state = self.lock_state();
            if state.role == DurableRole::Principal {
                tracing::warn!(node = %self.name, old = state.epoch, new = epoch, "principal fenced by a newer epoch: stepping down to mirror");
            }
            state.become_mirror(epoch);
            state.epoch
        };
        if let Err(e) = self
            .with_store(move |s| s.set_role(DurableRole::Mirror, epoch))
            .await
        {
            tracing::error!(node = %self.name, "persist step-down: {e}");
        }
    }

    pub(crate) fn set_position(&self, meta: &Meta) {
        self.lock_state().set_position(meta);
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Runs for the node's life; each round is bounded by the heartbeat timeout.
        loop {
            tick.tick().await;
            self.heartbeat().await;
        }
    }

    /// One heartbeat round: ping partner and witness, then act on what changed.
    async fn heartbeat(self: &Arc<Self>) {
        let now = Instant::now();
        let view = self.lock_state().view(now);
        let timeout = self.settings.heartbeat_timeout;
        let ping = Request::Ping(view.clone());
        let witness_ping = Request::WitnessPing(view);
        // Each answer is acted on as soon as it arrives: a witness answer renews a principal's lease at once,
        // rather than after a silent partner's ping has timed out (with the partner's ping taking the whole
        // heartbeat timeout, a lease renewed only at the end of the round would lapse between rounds).
        let partner = async {
            match self.partner_ping.request(&ping, timeout).await {
                Ok(Response::Pong(v)) => {
                    self.lock_state()
                        .on_partner_view(&v, Some(now), Instant::now())
                }
                Ok(other) => {
                    tracing::debug!(node = %self.name, "partner answered a ping with {other:?}");
                    None
                }
                Err(e) => {
                    tracing::debug!(node = %self.name, "partner ping: {e}");
                    None
                }
            }
        };
        let witness = async {
            let w = self.witness_ping.as_ref()?;
            match w.request(&witness_ping, timeout).await {
                Ok(Response::Witness(view)) => {
                    self.lock_state()
                        .on_witness_view(&view, now, Instant::now())
                }
                Ok(Response::Fenced { epoch }) => Some(epoch),
                Ok(other) => {
                    tracing::debug!(node = %self.name, "witness answered {other:?}");
                    None
                }
                Err(e) => {
                    tracing::debug!(node = %self.name, "witness ping: {e}");
                    None
                }
            }
        };
        let (from_partner, from_witness) = tokio::join!(partner, witness);
        let step_down = from_partner.or(from_witness);
        if let Some(epoch) = step_down {
            self.persist_mirror(epoch).await;
        }

        let (role, promote, needs_sync) = {
            let mut state = self.lock_state();
            let now = Instant::now();
            if state.mirror_lost(now) {
                tracing::warn!(node = %self.name, "mirror lost: principal no longer synchronized");
                state.mirror_synchronized = false;
            }
            let partner_is_my_mirror = state.partner.as_ref().is_some_and(|p| {
                p.role == DurableRole::Mirror
                    && state.partner_silent_for(now) < self.settings.partner_timeout
            });
            // Work for a synchronization pass: catch a present mirror up, register an absent one's loss with
            // the witness, or tell the witness the mirror is synchronized.
            let needs_sync = state.role == DurableRole::Principal
                && if state.mirror_synchronized {
                    self.settings.has_witness && !state.witness_knows_synchronized
                } else {
                    partner_is_my_mirror || !state.exposed
                };
            (state.role, state.should_request_promotion(now), needs_sync)
        };
        if role == DurableRole::Principal && needs_sync {
            self.spawn_sync();
        }
        if promote {
            match self.request_promotion(false).await {
                Ok(epoch) => {
                    tracing::warn!(node = %self.name, epoch, "mirror promoted to principal by the witness")
                }
                Err(reason) => tracing::info!(node = %self.name, "promotion refused: {reason}"),
            }
        }
    }

    /// Runs one synchronization pass (expose, catch the mirror up, tell the witness) unless one runs already.
    fn spawn_sync(self: &Arc<Self>) {
        if self.sync_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _done = Done(&node.sync_running);
            node.synchronize().await;
        });
    }

    /// This node's `/status` document.
    pub fn status(&self) -> Value {
        let state = self.lock_state();
        let now = Instant::now();
        let db_role = state.db_role(now);
        let synchronized = match state.role {
            DurableRole::Principal => state.mirror_synchronized,
            DurableRole::Mirror => state.synchronized_as_mirror,
        };
        json!({
            "role": "backend",
            "pool": self.placement.pool.name,
            "node": self.name,
            "db_role": db_role.as_str(),
            "epoch": state.epoch,
            "synchronized": synchronized,
            "exposed": db_role == DbRole::Principal && state.exposed,
            "lag_commits": state.lag_commits(),
            "serving": state.serving(now),
            "last_lsn": state.last_lsn,
            "partner": self.placement.partner,
            "partner_heard_ms_ago": state.partner_heard_at.map(|t| now.duration_since(t).as_millis() as u64),
            "witness": self.placement.witness,
            "witness_heard_ms_ago": state.witness_heard_at.map(|t| now.duration_since(t).as_millis() as u64),
            "peer_connections": self.peer_connections(),
            "peer_connections_silent": self.peer_connections_silent(),
        })
    }

    fn admin_api(self: Arc<Self>) -> AdminApi {
        let status_node = self.clone();
        let failover_node = self.clone();
        let status_cmd = self.clone();
        AdminApi::new(&self.admin_token, move || status_node.status())
            .command("db-status", move |_| {
                let node = status_cmd.clone();
                async move { Ok(node.status()) }
            })
            .command("db-failover", move |body| {
                let node = failover_node.clone();
                async move {
                    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
                    node.operator_failover(force)
                        .await
                        .map_err(|e| (axum::http::StatusCode::CONFLICT, e))
                }
            })
    }
}

/// The bounds of a node's peer port (a Back End node's or a witness's) and what it counts.
#[derive(Debug, Clone)]
pub(crate) struct PeerPort {
    /// Accepted connections open now, at most `max`.
    pub(crate) open: Slots,
    max: usize,
    /// A connection's first request must be complete within this.
    pub(crate) first_frame_timeout: Duration,
    /// Connections closed since the start for sending no complete request within `first_frame_timeout`.
    silent: Arc<AtomicU64>,
}

impl PeerPort {
    pub(crate) fn new(config: &BackendConfig) -> Self {
        Self {
            open: Slots::default(),
            max: config.peer_connections_max,
            first_frame_timeout: config.peer_first_frame_timeout,
            silent: Arc::default(),
        }
    }

    pub(crate) fn silent(&self) -> u64 {
        self.silent.load(Ordering::Relaxed)
    }
}

/// Accepts peer-port connections and serves each with `serve`, at most `port.max` open at once (counted in
/// `port.open`): one more is closed as soon as it is accepted, and its client sees the connection close, as from a
/// lost node. A connection `serve` ends with an error is logged; one silent past the first-frame deadline is
/// counted too.
pub(crate) async fn accept_peers<F, Fut>(
    listener: TcpListener,
    port: PeerPort,
    serve: F,
) -> Result<(), BackendError>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), PeerError>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = listener.accept().await?;
        // Reap finished connections so the set stays as big as the live ones.
        while connections.try_join_next().is_some() {}
        let Some(slot) = port.open.take(port.max) else {
            drop(stream);
            continue;
        };
        let served = serve(stream);
        let silent = port.silent.clone();
        connections.spawn(async move {
            match served.await {
                Ok(()) => {}
                Err(e @ PeerError::Timeout(..)) => {
                    let total = silent.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(total, "peer connection closed: no first request: {e}");
                }
                Err(e) => tracing::debug!("peer connection dropped: {e}"),
            }
            drop(slot);
        });
    }
}

/// Opens the node and serves until `shutdown`: the whole Back End role.
pub async fn run(
    listeners: Listeners,
    config: BackendConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BackendError> {
    Backend::open(&config)?.run(listeners, shutdown).await
}

/// The default listen addresses of the role binaries.
pub fn default_addresses() -> (std::net::SocketAddr, std::net::SocketAddr) {
    (
        std::net::SocketAddr::from(([0, 0, 0, 0], PEER_PORT)),
        std::net::SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)),
    )
}
