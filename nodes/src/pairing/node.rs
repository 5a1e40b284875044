//! [`Pairing`]: one Front End's share of its pool's pairing. It answers the Front End's questions (the gate), runs
//! three loops (heartbeat to the pair, maintenance, the backup service), serves the pairing section of `/status`
//! and the admin commands, and runs failover and failback. The pool's own lazy writes to its Back End and its
//! reload at formation are the Front End pool's (`frontend::pool::backend`); this module reads their backlog.
//!
//! **Failover of pool A to its pair B** (`pool-failover --pool A`, at any Front End of B):
//! 1. preconditions: the management store is not in A; no surviving Edge server relays to a Director in A's site;
//! 2. B's record says `failing-over` (persisted in B's Back End; every Front End of B reads it within a heartbeat
//!    and refuses A's users meanwhile), then B waits two heartbeats;
//! 3. A's users' records are loaded from B's copy (A's namespace in B's Back End) into B's routing groups;
//! 4. B's record says `pair_failed_over`, epoch + 1. A's users get full service at B, their changes go to B's
//!    Back End under A's name. A learns it is fenced from B's heartbeat answers and redirects its users to B.
//!
//! **Failback** (`pool-failback --pool A`, at B): A must answer its heartbeat; B's record says `failing-back` (A's
//! users refused), B writes every A user's current state to A's Back End, clears `pair_failed_over` (epoch + 1),
//! removes A's users' registrations and tells their clients to register at A. A sees the fence lifted, reloads
//! its users from its Back End (replacing what its routing groups held) and serves them again.
//!
//! **Fencing**: a Front End serves its own pool's users only once its pair has answered that it does not hold
//! them failed over, or once the pair has been silent for the failover interval (then there is no one to fence
//! it), and after it reloaded them from its Back End.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rsip::{Request, Response};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::backup::{self, BackupStatus, STREAM_PAUSE};
use super::error::PairingError;
use super::gate::{self, Decision, RESILIENCY_HEADER};
use super::record::{PairRecord, Transition};
use super::restore::{self, Mode};
use super::watch::{NodeReport, PairWatch};
use crate::admin::AdminApi;
use crate::backend::operator::http_json;
use crate::backend::{BackendClient, Batch, Op, UserRecord};
use crate::cluster::{ClusterConfig, Timings, ADMIN_PORT, SIP_PORT};
use crate::defects::{self, Defect};
use crate::frontend::store::{now_unix_ms, UserView, Write};
use crate::frontend::FrontEnd;
use crate::sip::message::{self, header, uri_in, user_of};
use crate::sip::Peer;

/// Records per Back End commit when copying many users.
const USERS_PER_BATCH: usize = 200;
/// How long a client has to answer a resiliency NOTIFY.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
/// An Edge server's `/status` answers within this, or it counts as gone (not surviving).
const EDGE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a pooled Front End needs to pair: the cluster, its pool and its node name.
#[derive(Debug, Clone)]
pub struct PairingConfig {
    pub cluster: Arc<ClusterConfig>,
    pub pool: String,
    pub node: String,
}

/// Whether the pair holds this pool failed over, as far as this Front End knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// No answer from the pair yet, and the failover interval has not run out.
    Unknown,
    Open,
    Fenced,
}

#[derive(Debug)]
struct Inner {
    record: PairRecord,
    record_loaded: bool,
    watch: PairWatch,
    fence: Fence,
    /// The highest failover epoch the pair reported: above our record's `home_reloaded_epoch`, the pair held our
    /// users (failed over, then back) since the pool last reloaded them.
    pair_epoch: u64,
    /// Our own users' state is current and served: not fenced, and reloaded up to `pair_epoch` (true at start:
    /// the pool's formation loads them from the Back End).
    restored: bool,
    /// The pair is failed over to us and its users' copy is loaded into our routing groups (after a failover, or
    /// by the first maintenance turn of a Front End that starts while the pair is failed over).
    pair_restored: bool,
    /// We accept our pair's users in resiliency mode.
    resiliency: bool,
    backup: BackupStatus,
}

/// One Front End's share of its pool's pairing; see the module doc.
pub struct Pairing {
    cluster: Arc<ClusterConfig>,
    pool: String,
    node: String,
    pair: Option<String>,
    timings: Timings,
    homes: HashMap<String, String>,
    own_backend: Option<BackendClient>,
    pair_backend: Option<BackendClient>,
    frontend: OnceLock<Weak<FrontEnd>>,
    started: Instant,
    inner: Mutex<Inner>,
    /// One failover, failback or record refresh at a time on this Front End.
    commands: tokio::sync::Mutex<()>,
    /// One backup pass at a time; a failover waits for the running pass.
    passes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing")
            .field("pool", &self.pool)
            .field("node", &self.node)
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}

/// Gives `frontend` (a pooled Front End of `config.pool`) its pairing; the caller runs [`Pairing::run`] with the
/// node's tasks.
pub fn attach(
    frontend: &Arc<FrontEnd>,
    config: PairingConfig,
) -> Result<Arc<Pairing>, PairingError> {
    let cluster = config.cluster;
    let pool = cluster
        .pool(&config.pool)
        .filter(|p| p.role == "frontend")
        .ok_or_else(|| PairingError::NotAFrontEndPool(config.pool.clone()))?;
    let client = |backend: Option<&String>| {
        backend.and_then(|b| BackendClient::for_pool(&cluster, &config.node, b).ok())
    };
    let own_backend = client(pool.backend.as_ref());
    let pair = pool.pair.clone();
    let pair_backend = client(
        pair.as_deref()
            .and_then(|p| cluster.pool(p))
            .and_then(|p| p.backend.as_ref()),
    );
    let timings = cluster.timings;
    let store_location = cluster
        .pools
        .iter()
        .find(|p| p.role == "frontend")
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let started = Instant::now();
    let pairing = Arc::new(Pairing {
        homes: cluster
            .users
            .iter()
            .map(|u| (u.name.clone(), u.home.clone()))
            .collect(),
        own_backend,
        pair_backend,
        pool: config.pool,
        node: config.node,
        timings,
        frontend: OnceLock::new(),
        started,
        inner: Mutex::new(Inner {
            record: PairRecord::new(&store_location),
            record_loaded: false,
            watch: PairWatch::new(
                Duration::from_millis(timings.fe_failure_timeout_ms),
                started,
            ),
            fence: if pair.is_some() {
                Fence::Unknown
            } else {
                Fence::Open
            },
            pair_epoch: 0,
            restored: true,
            pair_restored: false,
            resiliency: false,
            backup: BackupStatus::default(),
        }),
        pair,
        cluster,
        commands: tokio::sync::Mutex::new(()),
        passes: tokio::sync::Mutex::new(()),
    });
    let _ = pairing.frontend.set(Arc::downgrade(frontend));
    frontend.set_pairing(pairing.clone());
    Ok(pairing)
}

impl Pairing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn frontend(&self) -> Option<Arc<FrontEnd>> {
        self.frontend.get().and_then(Weak::upgrade)
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.timings.fe_heartbeat_interval_ms.max(10))
    }

    fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.timings.fe_failure_timeout_ms.max(10))
    }

    fn failover_interval(&self) -> Duration {
        Duration::from_millis(self.timings.backup_failover_interval_ms)
    }

    /// Long enough for every Front End of the pool to read a record change (two heartbeats).
    fn settle(&self) -> Duration {
        self.heartbeat_interval() * 2 + Duration::from_millis(100)
    }

    /// The pair pool, if any.
    pub fn pair(&self) -> Option<&str> {
        self.pair.as_deref()
    }

    // ---------------------------------------------------------------------------------------------------------
    // The gate: what the Front End asks.

    /// How this pool serves `user` now.
    pub fn decide(&self, user: &str) -> Decision {
        match self.homes.get(user) {
            Some(home) => self.decide_for_home(home),
            None => Decision::Other,
        }
    }

    /// How this pool serves the users homed on pool `home` now (the answer is the same for each of them).
    fn decide_for_home(&self, home: &str) -> Decision {
        let inner = self.lock();
        let now = Instant::now();
        if home == self.pool {
            let pair = self.pair.as_deref().unwrap_or_default();
            return match inner.fence {
                Fence::Fenced => Decision::Redirect {
                    pool: pair.to_owned(),
                    reason: format!("pool {} is failed over to {pair}", self.pool),
                },
                Fence::Unknown => Decision::Unavailable {
                    reason: format!("waiting for pair pool {pair} to say whether it holds this pool failed over"),
                    retry_after_secs: 1,
                },
                Fence::Open if !inner.restored => Decision::Unavailable {
                    reason: "reloading users from the Back End".into(),
                    retry_after_secs: 1,
                },
                Fence::Open => Decision::Home,
            };
        }
        if Some(home) != self.pair.as_deref() {
            return Decision::Other;
        }
        if !inner.record_loaded {
            return Decision::Unavailable {
                reason: "reading the pairing record from the Back End".into(),
                retry_after_secs: 1,
            };
        }
        match inner.record.transition {
            Some(Transition::FailingOver) => {
                return Decision::Unavailable {
                    reason: format!("pool {home} is failing over to {}", self.pool),
                    retry_after_secs: 1,
                }
            }
            Some(Transition::FailingBack) => {
                return Decision::Unavailable {
                    reason: format!("pool {home} is failing back from {}", self.pool),
                    retry_after_secs: 1,
                }
            }
            None => {}
        }
        if inner.record.pair_failed_over {
            return Decision::Backup { resiliency: false };
        }
        if inner.resiliency {
            return Decision::Backup { resiliency: true };
        }
        if inner.watch.up(now) {
            return Decision::Redirect {
                pool: home.to_owned(),
                reason: format!("home pool {home} is up"),
            };
        }
        let missed = inner.watch.missed(now);
        let left = self.failover_interval().saturating_sub(missed);
        Decision::Unavailable {
            reason: format!(
                "home pool {home} unreachable for {} ms; the backup registrar accepts its users after {} ms",
                missed.as_millis(),
                self.failover_interval().as_millis()
            ),
            retry_after_secs: left.as_secs().max(1),
        }
    }

    /// The answer `request` gets instead of being served, if any.
    pub fn screen(&self, request: &Request) -> Option<Response> {
        let user = gate::subject(request)?;
        let decision = self.decide(&user);
        // A client is sent to the pool by its name, as clients reach it: the route this server takes to that
        // pool (through the fault proxy when a link says so) is no address for a client.
        gate::screen(request, &decision, |p| format!("{p}:{SIP_PORT}"))
    }

    /// Adds the resiliency header to a REGISTER's `200`, and tells a client newly registered in resiliency mode
    /// with a NOTIFY on its connection.
    pub fn registered(&self, request: &Request, peer: &Peer, mut response: Response) -> Response {
        if response.status_code.code() != 200 || self.pair.is_none() {
            return response;
        }
        let Some(user) = header(&request.headers, "To")
            .and_then(|t| user_of(uri_in(t)))
            .map(str::to_owned)
        else {
            return response;
        };
        let resiliency = self.decide(&user) == Decision::Backup { resiliency: true };
        // The Front End may have said `on` already (its Back End's outage): either source puts the user in
        // resiliency mode, and the client reads one header.
        let said_on =
            header(&response.headers, RESILIENCY_HEADER).is_some_and(|v| v.trim() == "on");
        response
            .headers
            .retain(|h| !message::name(h).eq_ignore_ascii_case(RESILIENCY_HEADER));
        message::push(
            &mut response.headers,
            RESILIENCY_HEADER,
            if resiliency || said_on { "on" } else { "off" },
        );
        let added =
            header(&response.headers, "presence-state").is_some_and(|v| v.contains("added"));
        let contact = header(&request.headers, "Contact")
            .filter(|c| *c != "*")
            .map(|c| uri_in(c).to_owned());
        if let (true, true, Some(contact)) = (resiliency, added, contact) {
            let home = self.homes.get(&user).cloned().unwrap_or_default();
            let (peer, body) = (peer.clone(), gate::notice_body(true, &home, None));
            tokio::spawn(async move {
                // After the 200, which the transport writes when this handler returns.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(notify) = gate::notice(&user, &contact, body) {
                    let _ = peer.request(notify, NOTICE_TIMEOUT).await;
                }
            });
        }
        response
    }

    /// A user in resiliency mode here has no persistent state to read: presence unknown, no contacts. (Every
    /// read of a user's state goes through this: a failback or failover copies what it gives.)
    pub fn shape_view(&self, user: &str, view: &mut UserView) {
        if self.pair.is_some() && matches!(self.decide(user), Decision::Backup { resiliency: true })
        {
            gate::unknown_presence(view, user);
        }
    }

    /// What watchers here are told of `user`: presence unknown unless this pool serves the user at full service
    /// (see [`gate::shows_unknown_presence`]). Only for presence notices, never for a read that is copied.
    pub fn shape_presence(&self, user: &str, view: &mut UserView) {
        if self.pair.is_some() && gate::shows_unknown_presence(&self.decide(user)) {
            gate::unknown_presence(view, user);
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Loops.

    /// Runs the heartbeat, maintenance and backup service loops until the node's tasks are aborted.
    pub async fn run(self: Arc<Self>) {
        tokio::join!(
            self.clone().heartbeat_loop(),
            self.clone().maintenance_loop(),
            self.clone().backup_loop(),
        );
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let Some(pair) = self.pair.clone() else {
            return;
        };
        let nodes = self
            .cluster
            .pool(&pair)
            .map(|p| p.nodes.clone())
            .unwrap_or_default();
        let mut tick = tokio::time::interval(self.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = JoinSet::new();
        // Ends when the node's tasks are aborted (dropping `beats` aborts the heartbeats in flight).
        loop {
            tick.tick().await;
            while beats.try_join_next().is_some() {}
            let sent_at = Instant::now();
            for node in &nodes {
                let address = self.cluster.address(&self.pool, node, ADMIN_PORT);
                let (this, node) = (self.clone(), node.clone());
                beats.spawn(async move {
                    let answer = tokio::time::timeout(
                        this.failure_timeout(),
                        http_json(&address, "GET", "/status", None, None),
                    )
                    .await;
                    match answer {
                        Ok(Ok((200, status))) => {
                            let report = NodeReport::from_status(&status, Instant::now());
                            this.lock().watch.round(sent_at, vec![(node, report)]);
                        }
                        other => {
                            tracing::debug!(%node, %address, answer = ?other, "no heartbeat answer")
                        }
                    }
                });
            }
        }
    }

    async fn maintenance_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        // Ends when the node's tasks are aborted.
        loop {
            tick.tick().await;
            let now = Instant::now();
            if !self.listened_since(last_tick, now) {
                tracing::warn!(pool = %self.pool, stalled_ms = now.saturating_duration_since(last_tick).as_millis() as u64, "this Front End stood still: the pair's silence is counted again from now");
            }
            last_tick = now;
            if let Ok(_guard) = self.commands.try_lock() {
                self.refresh_record().await;
                self.adopt_pair_store().await;
            }
            self.maintain_home().await;
            self.maintain_backup(now).await;
        }
    }

    /// Whether this Front End could hear its pair since `since`: it did not stand still (paused, starved, or held
    /// up by its own Back End) longer than the failure timeout, and it is not cut off from its own pool (isolated,
    /// below quorum). When it could not, what it did not hear from the pair meanwhile says nothing about the pair:
    /// the pair's silence is counted again from `now`. False only for a stall (cut off is said by the pool).
    fn listened_since(&self, since: Instant, now: Instant) -> bool {
        let stalled = now.saturating_duration_since(since) > self.failure_timeout();
        let own_pool_serving = self.own_pool_serving();
        if stalled || !own_pool_serving {
            self.lock().watch.resumed(now);
        }
        !stalled
    }

    fn own_pool_serving(&self) -> bool {
        self.frontend()
            .and_then(|f| f.pool().map(|p| p.quorum_state().serving()))
            .unwrap_or(true)
    }

    async fn backup_loop(self: Arc<Self>) {
        if self.pair.is_none() || self.own_backend.is_none() || self.pair_backend.is_none() {
            return;
        }
        let pause = match self.timings.backup_service_interval_ms {
            0 => STREAM_PAUSE,
            ms => Duration::from_millis(ms),
        };
        // Ends when the node's tasks are aborted.
        loop {
            tokio::time::sleep(pause).await;
            if self.is_runner() {
                self.backup_pass().await;
            }
        }
    }

    /// Whether this Front End runs the pool's single-runner jobs: the first running Front End in topology order.
    fn is_runner(&self) -> bool {
        let Some(pool) = self.frontend().and_then(|f| f.pool().cloned()) else {
            return false;
        };
        let nodes = self
            .cluster
            .pool(&self.pool)
            .map(|p| p.nodes.clone())
            .unwrap_or_default();
        nodes
            .iter()
            .find(|n| **n == self.node || pool.peer_alive(n))
            .is_some_and(|n| *n == self.node)
    }

    /// Reads our pool's record from our Back End (a pool without one keeps its record in memory).
    async fn refresh_record(&self) {
        let Some(own) = &self.own_backend else {
            self.lock().record_loaded = true;
            return;
        };
        let fresh = match own.load(&PairRecord::account(&self.pool)).await {
            Ok(Some(stored)) => PairRecord::from_user_record(&stored),
            // A new cluster: the record in memory is the initial one.
            Ok(None) => Some(self.lock().record.clone()),
            Err(error) => {
                tracing::debug!(%error, "pairing record not read");
                None
            }
        };
        if let Some(record) = fresh {
            self.set_record(record);
        }
    }

    /// Persists `change` applied to the freshest record, then adopts it.
    async fn persist(
        &self,
        change: impl FnOnce(&mut PairRecord),
    ) -> Result<PairRecord, PairingError> {
        let mut record = self.lock().record.clone();
        change(&mut record);
        if let Some(own) = &self.own_backend {
            own.write(Batch::new(vec![Op::PutUser(
                record.to_user_record(&self.pool),
            )]))
            .await
            .map_err(|e| PairingError::Backend {
                pool: self.pool.clone(),
                reason: e.to_string(),
            })?;
        }
        self.set_record(record.clone());
        Ok(record)
    }

    /// Adopts a record, telling clients what changed for them.
    fn set_record(&self, record: PairRecord) {
        let before = {
            let mut inner = self.lock();
            inner.record_loaded = true;
            if record.fences_pair() {
                inner.resiliency = false;
            }
            inner.backup.suspended = record.fences_pair();
            if !record.pair_failed_over {
                inner.pair_restored = false;
            }
            std::mem::replace(&mut inner.record, record.clone())
        };
        let pair = self.pair.clone().unwrap_or_default();
        if !before.pair_failed_over && record.pair_failed_over {
            tracing::info!(pool = %self.pool, %pair, "pair failed over to us: its users get full service");
            self.notify_pair_users(false, None);
        } else if before.pair_failed_over && !record.pair_failed_over {
            tracing::info!(pool = %self.pool, %pair, "pair failed back: its users go home");
            self.notify_pair_users(false, Some(&pair));
        }
    }

    /// Adopts a newer management store record the pair reported (the runner only, so one write per change).
    async fn adopt_pair_store(&self) {
        let newer = {
            let inner = self.lock();
            inner
                .watch
                .store()
                .filter(|(_, v)| inner.record_loaded && *v > inner.record.store_version)
        };
        if let (Some((location, version)), true) = (newer, self.is_runner()) {
            let _ = self
                .persist(|r| {
                    r.store_location = location;
                    r.store_version = version;
                })
                .await;
        }
    }

    /// As a home pool: follow the fence, and once it lifts after the pair held our users, have them reloaded from
    /// our Back End (where the failback wrote them) by one Front End for the whole pool.
    ///
    /// One reload for the pool, not one per Front End: a Front End that reloaded late would replace what users
    /// wrote through another that already served them. Every Front End refuses the users (`503`, reloading) from
    /// the fence until the pool's record says the reload is done. A fence that lifts without the pair ever holding
    /// our users (a failover that failed and was rolled back) reloads nothing: the routing groups are current, the
    /// Back End is written lazily and may be behind them.
    async fn maintain_home(&self) {
        let now = Instant::now();
        let (fence, behind, epoch) = {
            let mut inner = self.lock();
            let said = match self.pair {
                None => Some(false),
                Some(_) => inner.watch.fences_us(now).or_else(|| {
                    // Nobody to fence us: the pair has been silent since we started, for the failover interval.
                    (!inner.watch.ever_answered()
                        && now.saturating_duration_since(self.started) >= self.failover_interval())
                    .then_some(false)
                }),
            };
            // The bug of a known-bad pool: the pair's answer is read as "not failed over" whatever it says, so a
            // home pool back from a site loss reloads and serves its users while its pair still holds them.
            let said = said.map(|fenced| fenced && !defects::active(Defect::FailbackWithoutFence));
            match said {
                Some(true) => {
                    if inner.fence != Fence::Fenced {
                        tracing::warn!(pool = %self.pool, "fenced: the pair holds this pool failed over");
                    }
                    inner.fence = Fence::Fenced;
                }
                Some(false) => inner.fence = Fence::Open,
                None => {}
            }
            if let Some(epoch) = inner.watch.pair_epoch() {
                inner.pair_epoch = inner.pair_epoch.max(epoch);
            }
            let behind = inner.pair_epoch > 0
                && (!inner.record_loaded || inner.record.home_reloaded_epoch < inner.pair_epoch);
            let restored = inner.fence == Fence::Open && !behind;
            if restored && !inner.restored && inner.pair_epoch > 0 {
                tracing::info!(pool = %self.pool, epoch = inner.pair_epoch, "serving this pool's users again");
            }
            inner.restored = restored;
            (inner.fence, behind, inner.pair_epoch)
        };
        if fence != Fence::Open || !behind || !self.lock().record_loaded || !self.is_runner() {
            return;
        }
        let _command = self.commands.lock().await;
        let records = match &self.own_backend {
            None => Vec::new(),
            Some(own) => match own.load_all(&self.pool).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(%error, "users not reloaded from the Back End yet");
                    return;
                }
            },
        };
        if let Err(error) = self.restore(&records, Mode::Replace).await {
            tracing::debug!(%error, "users not reloaded into the routing groups yet");
            return;
        }
        match self
            .persist(|r| r.home_reloaded_epoch = r.home_reloaded_epoch.max(epoch))
            .await
        {
            Ok(_) => {
                tracing::info!(pool = %self.pool, users = records.len(), epoch, "reloaded this pool's users from the Back End after failback")
            }
            Err(error) => tracing::debug!(%error, "reload not recorded yet"),
        }
    }

    /// As a backup pool: enter and leave resiliency mode, fail over by ourselves when the profile says so.
    /// `turn_started` is when this maintenance turn began: a turn held up (reading our Back End while cut off)
    /// must not judge the pair's silence by a clock that ran on without us.
    async fn maintain_backup(self: &Arc<Self>, turn_started: Instant) {
        let Some(pair) = self.pair.clone() else {
            return;
        };
        let reload_pair = {
            let inner = self.lock();
            inner.record.pair_failed_over
                && inner.record.transition.is_none()
                && !inner.pair_restored
        };
        if reload_pair {
            // Started while the pair is failed over to us: its users' copy into our routing groups, without undoing
            // what other Front Ends of ours hold newer.
            if let Some(own) = &self.own_backend {
                if let Ok(records) = own.load_all(&pair).await {
                    if self.restore(&records, Mode::Fill).await.is_ok() {
                        self.lock().pair_restored = true;
                    }
                }
            }
        }
        let now = Instant::now();
        self.listened_since(turn_started, now);
        let (enter, leave, automatic) = {
            let mut inner = self.lock();
            if !inner.record_loaded || inner.record.fences_pair() {
                return;
            }
            let missed = inner.watch.missed(now) >= self.failover_interval();
            let back = inner.watch.up_for(now)
                >= Duration::from_millis(self.timings.backup_failback_interval_ms);
            let enter = missed && !inner.resiliency;
            let leave = inner.resiliency && back;
            if enter {
                inner.resiliency = true;
            }
            if leave {
                inner.resiliency = false;
            }
            (enter, leave, missed && self.timings.automatic_pool_failover)
        };
        if enter {
            tracing::warn!(pool = %self.pool, %pair, "pair missed its heartbeat for the failover interval: its users are accepted in resiliency mode");
        }
        if leave {
            tracing::info!(pool = %self.pool, %pair, "pair back for the failback interval: its users go home");
            self.send_pair_users_home().await;
        }
        if automatic && self.is_runner() {
            match self.failover(&pair, true).await {
                Ok(done) => tracing::warn!(%done, "automatic pool failover"),
                Err(error) => tracing::warn!(%error, "automatic pool failover not done"),
            }
        }
    }

    /// One backup pass: the pair's Back End → ours, in the pair's namespace.
    async fn backup_pass(&self) {
        let (Some(pair), Some(own), Some(source)) =
            (&self.pair, &self.own_backend, &self.pair_backend)
        else {
            return;
        };
        let _pass = self.passes.lock().await;
        if self.lock().record.fences_pair() {
            self.lock().backup.suspended = true;
            return;
        }
        let started = Instant::now();
        let result = async {
            let mut records = source
                .load_all(pair)
                .await
                .map_err(|e| format!("read {pair}'s Back End: {e}"))?;
            // Only the pair's own users: its Back End also holds ours under its name while it serves them after a
            // failover (the Front End pool's lazy writer names the serving pool), and those must not come back
            // to us as its data.
            records.retain(|r| self.homes.get(&r.user) == Some(pair));
            let copy = own
                .load_all(pair)
                .await
                .map_err(|e| format!("read our copy: {e}"))?;
            let users = records.len();
            let changed = backup::changed(records, &copy);
            for chunk in changed.chunks(USERS_PER_BATCH) {
                if self.lock().record.fences_pair() {
                    return Err("the pair was failed over during the pass".to_owned());
                }
                own.write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                    .await
                    .map_err(|e| format!("write our copy: {e}"))?;
            }
            Ok((users, changed.len()))
        }
        .await;
        let mut inner = self.lock();
        match result {
            Ok((users, copied)) => inner.backup.passed(started, users, copied),
            Err(error) => inner.backup.failed(error),
        }
    }

    /// Loads `records` into the routing groups.
    async fn restore(&self, records: &[UserRecord], mode: Mode) -> Result<usize, PairingError> {
        let frontend = self
            .frontend()
            .ok_or_else(|| PairingError::NotServing("the Front End stopped".into()))?;
        let mut changed = 0;
        for record in records {
            let now = now_unix_ms();
            let view = frontend
                .view(&record.user, now)
                .await
                .map_err(|r| PairingError::NotServing(r.0))?;
            let writes = restore::writes_for(record, &view, mode);
            if writes.is_empty() {
                continue;
            }
            frontend
                .commit(&record.user, writes, now)
                .await
                .map_err(|r| PairingError::NotServing(r.reason().to_owned()))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Sends a resiliency NOTIFY to every pair user's client connected to this Front End.
    fn notify_pair_users(&self, on: bool, register_at: Option<&str>) {
        let (Some(frontend), Some(pair)) = (self.frontend(), self.pair.as_deref()) else {
            return;
        };
        for user in self.cluster.users_of(pair) {
            for (contact, peer) in frontend.locations.flows_of(&user.name) {
                if !peer.is_open() {
                    continue;
                }
                let body = gate::notice_body(on, pair, register_at);
                let name = user.name.clone();
                tokio::spawn(async move {
                    if let Some(notify) = gate::notice(&name, &contact, body) {
                        let _ = peer.request(notify, NOTICE_TIMEOUT).await;
                    }
                });
            }
        }
    }

    /// Ends resiliency mode for the pair's users: their clients are told to register at home and their
    /// registrations here are removed (a REGISTER then gets `301` to the home pool).
    async fn send_pair_users_home(&self) {
        let (Some(frontend), Some(pair)) = (self.frontend(), self.pair.clone()) else {
            return;
        };
        self.notify_pair_users(false, Some(&pair));
        for user in self.cluster.users_of(&pair) {
            let now = now_unix_ms();
            if frontend
                .view(&user.name, now)
                .await
                .is_ok_and(|v| !v.bindings.is_empty())
            {
                let unbind = vec![Write::UnbindAll {
                    user: user.name.clone(),
                }];
                let _ = frontend.commit(&user.name, unbind, now).await;
                frontend.locations.remove_all(&user.name);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Commands.

    fn check_pair(&self, pool: &str) -> Result<String, PairingError> {
        match &self.pair {
            Some(pair) if pair == pool => Ok(pair.clone()),
            _ => Err(PairingError::NotOurPair {
                pool: pool.to_owned(),
                me: self.pool.clone(),
            }),
        }
    }

    /// Fails our pair `pool` over to us (see the module doc); `automatic` skips the operator's preconditions.
    pub async fn failover(&self, pool: &str, automatic: bool) -> Result<Value, PairingError> {
        let pair = self.check_pair(pool)?;
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let record = self.lock().record.clone();
        if record.pair_failed_over {
            return Ok(self.command_answer("already failed over", 0));
        }
        if record.transition.is_some() {
            return Err(PairingError::Busy(pair));
        }
        if !automatic {
            self.failover_preconditions(&pair).await?;
        }
        self.persist(|r| r.transition = Some(Transition::FailingOver))
            .await?;
        let outcome = async {
            tokio::time::sleep(self.settle()).await;
            if automatic {
                // The decision was taken before the record was written, which may have waited on our Back End:
                // a pair that answers again, or a pool of ours that stopped serving, calls the failover off.
                let pair_up = self.lock().watch.up(Instant::now());
                if pair_up || !self.own_pool_serving() {
                    return Err(PairingError::CalledOff(pair.clone()));
                }
            }
            let _pass = self.passes.lock().await;
            let own = self.own_backend.as_ref();
            let records = match own {
                Some(own) => own
                    .load_all(&pair)
                    .await
                    .map_err(|e| PairingError::Backend {
                        pool: self.pool.clone(),
                        reason: e.to_string(),
                    })?,
                None => Vec::new(),
            };
            self.restore(&records, Mode::Replace).await
        }
        .await;
        match outcome {
            Ok(restored) => {
                self.lock().pair_restored = true;
                self.persist(|r| {
                    r.pair_failed_over = true;
                    r.failover_epoch += 1;
                    r.transition = None;
                })
                .await?;
                // The other Front Ends of the pool read the record each heartbeat: the command is done when
                // the whole pool serves the failed-over users, not just this server.
                tokio::time::sleep(self.settle()).await;
                Ok(self.command_answer("failed over", restored))
            }
            Err(error) => {
                let _ = self.persist(|r| r.transition = None).await;
                Err(error)
            }
        }
    }

    async fn failover_preconditions(&self, failed: &str) -> Result<(), PairingError> {
        let store = {
            let inner = self.lock();
            let mut store = (
                inner.record.store_location.clone(),
                inner.record.store_version,
            );
            if let Some(reported) = inner.watch.store().filter(|(_, v)| *v > store.1) {
                store = reported;
            }
            store.0
        };
        if store == failed {
            return Err(PairingError::StoreOnFailedPool {
                failed: failed.to_owned(),
                to: self.pool.clone(),
            });
        }
        let site = self
            .cluster
            .pool(failed)
            .map(|p| p.site.clone())
            .unwrap_or_default();
        let suggestion = self
            .cluster
            .pools
            .iter()
            .find(|p| p.role == "director" && p.site != site)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "<a Director pool in a surviving site>".into());
        // Every Edge server at once: those of the failed site do not answer, and each would cost a timeout.
        let mut asked = tokio::task::JoinSet::new();
        for edge in self.cluster.pools.iter().filter(|p| p.role == "edge") {
            for node in &edge.nodes {
                let address = self.cluster.address(&self.pool, node, ADMIN_PORT);
                let (edge, node) = (edge.name.clone(), node.clone());
                asked.spawn(async move {
                    let answer = tokio::time::timeout(
                        EDGE_STATUS_TIMEOUT,
                        http_json(&address, "GET", "/status", None, None),
                    )
                    .await;
                    (edge, node, answer)
                });
            }
        }
        let mut answers = asked.join_all().await;
        answers.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (edge, node, answer) in answers {
            let Ok(Ok((200, status))) = answer else {
                continue;
            };
            let Some(hop) = status["next_hop"].as_str() else {
                continue;
            };
            let in_failed_site =
                hop == failed || self.cluster.pool(hop).is_some_and(|p| p.site == site);
            if in_failed_site {
                return Err(PairingError::EdgeRelaysToFailedSite {
                    edge,
                    node,
                    director: hop.to_owned(),
                    site,
                    suggestion,
                });
            }
        }
        Ok(())
    }

    /// Fails our pair `pool` back to its home (see the module doc).
    pub async fn failback(&self, pool: &str) -> Result<Value, PairingError> {
        let pair = self.check_pair(pool)?;
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let record = self.lock().record.clone();
        if !record.pair_failed_over {
            return Err(PairingError::NotFailedOver(pair));
        }
        if !self.lock().watch.up(Instant::now()) {
            return Err(PairingError::HomeUnreachable(pair));
        }
        let frontend = self
            .frontend()
            .ok_or_else(|| PairingError::NotServing("the Front End stopped".into()))?;
        self.persist(|r| r.transition = Some(Transition::FailingBack))
            .await?;
        let outcome = async {
            tokio::time::sleep(self.settle()).await;
            let mut records = Vec::new();
            for user in self.cluster.users_of(&pair) {
                let view = frontend
                    .view(&user.name, now_unix_ms())
                    .await
                    .map_err(|r| PairingError::NotServing(r.0))?;
                records.push(restore::record_of(&user.name, &pair, &view));
            }
            let home_backend = self
                .cluster
                .pool(&pair)
                .and_then(|p| p.backend.clone())
                .unwrap_or_default();
            // The bug of a known-bad pool: the last copy to the home pool's Back End is skipped, so the home pool
            // reloads what its Back End held before it was lost.
            let home = self
                .pair_backend
                .as_ref()
                .filter(|_| !defects::active(Defect::BackupLastPassDropped));
            if let Some(home) = home {
                for chunk in records.chunks(USERS_PER_BATCH) {
                    home.write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                        .await
                        .map_err(|e| PairingError::Backend {
                            pool: home_backend.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
            if let Some(own) = &self.own_backend {
                // Our copy becomes what we hand back, so the next passes start from it.
                for chunk in records.chunks(USERS_PER_BATCH) {
                    let _ = own
                        .write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                        .await;
                }
            }
            Ok::<usize, PairingError>(records.len())
        }
        .await;
        match outcome {
            Ok(copied) => {
                self.persist(|r| {
                    r.pair_failed_over = false;
                    r.failover_epoch += 1;
                    r.transition = None;
                })
                .await?;
                self.send_pair_users_home().await;
                // As for failover: done when every Front End of the pool has read the record.
                tokio::time::sleep(self.settle()).await;
                Ok(self.command_answer("failed back", copied))
            }
            Err(error) => {
                let _ = self.persist(|r| r.transition = None).await;
                Err(error)
            }
        }
    }

    /// Moves the management store to `to` (this pool or its pair).
    pub async fn store_failover(&self, to: &str) -> Result<Value, PairingError> {
        if self.cluster.pool(to).is_none_or(|p| p.role != "frontend") {
            return Err(PairingError::NotAFrontEndPool(to.to_owned()));
        }
        if to != self.pool && Some(to) != self.pair.as_deref() {
            return Err(PairingError::NotOurPair {
                pool: to.to_owned(),
                me: self.pool.clone(),
            });
        }
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let reported = self.lock().watch.store().map_or(0, |(_, v)| v);
        let record = self
            .persist(|r| {
                r.store_version = r.store_version.max(reported) + 1;
                r.store_location = to.to_owned();
            })
            .await?;
        Ok(json!({
            "node": self.node,
            "management_store": {"location": record.store_location, "version": record.store_version},
        }))
    }

    /// Runs a backup pass now and answers the direction's status.
    pub async fn backup_sync(&self) -> Value {
        self.backup_pass().await;
        self.status()["backup_service"].clone()
    }

    fn command_answer(&self, outcome: &str, users: usize) -> Value {
        let status = self.status();
        json!({
            "node": self.node,
            "pool": self.pool,
            "pair": self.pair,
            "outcome": outcome,
            "users": users,
            "as_backup": status["as_backup"],
            "backup_service": status["backup_service"],
        })
    }

    // ---------------------------------------------------------------------------------------------------------
    // Status and admin API.

    /// The pools whose users this Front End serves at full service now, as their registrar: its own pool's
    /// while its pool serves and it is neither fenced nor reloading them, its pair's while it holds the pair
    /// failed over with no failover or failback in progress. Resiliency mode (the backup registrar, persistent
    /// writes refused) is not full service. Two pools naming one pool's users at once is a split brain.
    pub fn serves_users_of(&self) -> Vec<String> {
        if !self.own_pool_serving() {
            return Vec::new();
        }
        std::iter::once(self.pool.as_str())
            .chain(self.pair.as_deref())
            .filter(|home| {
                matches!(
                    self.decide_for_home(home),
                    Decision::Home | Decision::Backup { resiliency: false }
                )
            })
            .map(str::to_owned)
            .collect()
    }

    /// The `pairing` section of the Front End's `/status`.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let runner = self.is_runner();
        let serves_users_of = self.serves_users_of();
        let inner = self.lock();
        json!({
            "pool": self.pool,
            "pair": self.pair,
            "serves_users_of": serves_users_of,
            "pair_heartbeat": {
                "up": inner.watch.up(now),
                "missed_ms": inner.watch.missed(now).as_millis() as u64,
                "up_for_ms": inner.watch.up_for(now).as_millis() as u64,
            },
            "as_home": {
                "fence": match inner.fence {
                    Fence::Unknown => "unknown",
                    Fence::Open => "open",
                    Fence::Fenced => "fenced",
                },
                "restored": inner.restored,
            },
            "as_backup": {
                "record_loaded": inner.record_loaded,
                "pair_failed_over": inner.record.pair_failed_over,
                "failover_epoch": inner.record.failover_epoch,
                "transition": inner.record.transition,
                "resiliency_mode": inner.resiliency,
                "automatic_pool_failover": self.timings.automatic_pool_failover,
            },
            "backup_service": self.pair.as_ref().map(|pair| {
                let mut section = inner.backup.to_json(
                    pair,
                    &self.pool,
                    runner,
                    now,
                    inner.watch.pending_clear_since(),
                );
                // `final` accounts for what the pair acknowledged before its newest heartbeat answer.
                section["as_of_ms_ago"] = json!(inner
                    .watch
                    .last_answer_sent_at()
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64));
                section
            }),
            "management_store": {
                "location": inner.record.store_location,
                "version": inner.record.store_version,
            },
        })
    }

    /// Adds the pairing commands to a Front End's admin API: `pool-failover {"pool"}`, `pool-failback {"pool"}`,
    /// `store-failover {"to"}`, `backup-sync`.
    pub fn admin_commands(self: &Arc<Self>, api: AdminApi) -> AdminApi {
        let field = |body: &Value, name: &str| body[name].as_str().unwrap_or_default().to_owned();
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        api.command("pool-failover", move |body| {
            let (this, pool) = (a.clone(), field(&body, "pool"));
            async move {
                this.failover(&pool, false)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("pool-failback", move |body| {
            let (this, pool) = (b.clone(), field(&body, "pool"));
            async move {
                this.failback(&pool)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("store-failover", move |body| {
            let (this, to) = (c.clone(), field(&body, "to"));
            async move {
                this.store_failover(&to)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("backup-sync", move |_| {
            let this = d.clone();
            async move { Ok(this.backup_sync().await) }
        })
    }
}
