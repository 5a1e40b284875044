//! One pooled Front End: its settings, the [`Pool`] state that ties the other modules together, heartbeats and the
//! quorum state, the answers to peer calls, `/status`, and `run`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::backend::BackendLink;
use super::membership::{GroupReport, Membership, Report};
use super::placement::{self, group_name, GroupId};
use super::quorum::{self, AssumedVote, BackendVote, QuorumState};
use super::replication::{GroupConfig, Member, Replica, Slot};
use super::wire::{self, Answer, Call, Callee, LinkFaults, Links};
use crate::admin::AdminApi;
use crate::cluster::{ClusterConfig, Timings, PEER_PORT};
use crate::defects::{self, Defect};
use crate::frontend::calls::CallSettings;
use crate::frontend::error::{FrontEndError, PoolError};
use crate::frontend::server::{FrontEnd, FrontEndConfig};
use crate::frontend::store::{now_unix_ms, UserStore};
use crate::frontend::users::Credentials;
use crate::sip::{BoxFuture, Listeners};

/// What a pooled Front End knows of its pool.
#[derive(Clone)]
pub struct PoolSettings {
    /// The pool's name (what clients resolve).
    pub pool: String,
    /// This node's name.
    pub node: String,
    /// Every Front End of the pool, in topology order (the first ones are the quorum's seeds).
    pub nodes: Vec<String>,
    /// Where to reach each peer's peer port (`host:port`).
    pub peer_addresses: BTreeMap<String, String>,
    pub routing_groups: usize,
    pub heartbeat_interval: Duration,
    /// A peer not heard for this long is dead.
    pub failure_timeout: Duration,
    /// A replica lost this long is rebuilt on another Front End.
    pub rebuild_delay: Duration,
    /// The partition shim of the peer links (empty outside tests).
    pub faults: LinkFaults,
    /// The Back End's vote for pools with an even number of voters.
    pub backend_vote: Arc<dyn BackendVote>,
    /// The pool's Back End (lazy writes, reload, resiliency mode); `None` runs without one, as before.
    pub backend: Option<Arc<BackendLink>>,
    /// Where calls to numbers go (the site's Mediation pool); `None`: INVITEs to numbers get `503`.
    pub calls: Option<CallSettings>,
    /// Bearer token of the admin API.
    pub admin_token: String,
}

impl std::fmt::Debug for PoolSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSettings")
            .field("pool", &self.pool)
            .field("node", &self.node)
            .field("nodes", &self.nodes)
            .field("peer_addresses", &self.peer_addresses)
            .finish_non_exhaustive()
    }
}

impl PoolSettings {
    /// Settings for `node` of pool `pool` whose peers are at `peer_addresses`, timers from `timings`.
    pub fn new(
        pool: &str,
        node: &str,
        nodes: Vec<String>,
        peer_addresses: BTreeMap<String, String>,
        timings: &Timings,
        admin_token: &str,
    ) -> Self {
        Self {
            pool: pool.to_owned(),
            node: node.to_owned(),
            routing_groups: placement::groups_for(nodes.len()),
            nodes,
            peer_addresses,
            heartbeat_interval: Duration::from_millis(timings.fe_heartbeat_interval_ms),
            failure_timeout: Duration::from_millis(timings.fe_failure_timeout_ms),
            rebuild_delay: Duration::from_millis(timings.replica_rebuild_delay_ms),
            faults: LinkFaults::default(),
            backend_vote: Arc::new(AssumedVote(true)),
            backend: None,
            calls: None,
            admin_token: admin_token.to_owned(),
        }
    }

    /// Uses `backend` for lazy writes, reload and resiliency mode, and its principal's vote in the quorum.
    pub fn use_backend(&mut self, backend: Arc<BackendLink>) {
        self.backend_vote = backend.vote.clone();
        self.backend = Some(backend);
    }

    /// Settings from the harness's cluster description: peers by node name on the peer port, or through the fault
    /// proxy where a route from this node (or its pool) to the peer says so.
    pub fn from_cluster(cluster: &ClusterConfig, node: &str) -> Result<Self, PoolError> {
        let pool = cluster.pool_of(node)?;
        if pool.role != "frontend" {
            return Err(PoolError::NotAFrontEndPool(pool.name.clone()));
        }
        let addresses = pool
            .nodes
            .iter()
            .filter(|n| *n != node)
            .map(|peer| {
                let address = cluster
                    .routes
                    .iter()
                    .find(|r| (r.from == node || r.from == pool.name) && &r.to == peer)
                    .map(|r| r.address.clone())
                    .unwrap_or_else(|| format!("{peer}:{PEER_PORT}"));
                (peer.clone(), address)
            })
            .collect();
        Ok(Self::new(
            &pool.name,
            node,
            pool.nodes.clone(),
            addresses,
            &cluster.timings,
            &cluster.admin_token,
        ))
    }
}

/// The Front End settings a pool member takes from the cluster description: its pool's users, a digest key shared
/// by the pool (a challenge from one Front End is answered at another), and the profile's registration timers.
pub fn frontend_config(cluster: &ClusterConfig, pool: &str) -> FrontEndConfig {
    let expires_max = Duration::from_millis(cluster.timings.registration_expiry_ms);
    FrontEndConfig {
        // The pair's users too: this pool is their backup registrar (the pairing decides when they are served).
        credentials: Credentials::from_pairs(
            cluster
                .users
                .iter()
                .filter(|u| {
                    u.home == pool
                        || cluster.pool(pool).and_then(|p| p.pair.as_ref()) == Some(&u.home)
                })
                .map(|u| (u.name.clone(), u.password.clone())),
        ),
        nonce_secret: format!("{}/{}/{}", cluster.name, pool, cluster.admin_token),
        expires_max,
        expires_default: expires_max.min(Duration::from_secs(3600)),
        keep_alive: Duration::from_millis(cluster.timings.keep_alive_timeout_ms),
        ..FrontEndConfig::default()
    }
}

/// A pooled Front End's whole configuration.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub frontend: FrontEndConfig,
    pub pool: PoolSettings,
}

/// The sockets a pooled Front End serves on.
pub struct PoolListeners {
    /// SIP, TCP and UDP.
    pub sip: Listeners,
    /// Peer links from the pool's other Front Ends.
    pub peer: TcpListener,
    /// The HTTP admin API, when served.
    pub admin: Option<TcpListener>,
}

impl PoolListeners {
    /// Binds SIP, peer and (optionally) admin addresses.
    pub async fn bind(
        sip: SocketAddr,
        peer: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> Result<Self, PoolError> {
        let bind_error = |what, addr| move |source| PoolError::Bind { what, addr, source };
        Ok(Self {
            sip: Listeners::bind(sip).await.map_err(bind_error("sip", sip))?,
            peer: TcpListener::bind(peer)
                .await
                .map_err(bind_error("peer", peer))?,
            admin: match admin {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(bind_error("admin", addr))?,
                ),
                None => None,
            },
        })
    }
}

/// Whether the pool started, and the operator's override.
#[derive(Debug, Default)]
pub(super) struct Formation {
    /// Whether this Front End serves as part of a started pool (it started or joined one, or a peer installed a
    /// replica here, which only a started pool does).
    formed: bool,
    /// Whether it knows the members the pool's first configurations were built from, and so holds its first
    /// configurations when it is among them. A Front End formed by an early `Install` has not joined yet: it must
    /// still hold the first configurations of the groups nobody has changed, or a group whose home replicas all
    /// joined that way would never exist.
    joined: bool,
    /// The members the first configurations were built from.
    members: Vec<Member>,
    /// `quorum-recovery` was run: serve below the start-up count and the quorum until the quorum holds again.
    recovered: bool,
}

/// A Front End's share of its pool: membership, the replicas it holds, the links to its peers.
pub struct Pool {
    pub(super) settings: PoolSettings,
    pub(super) me: Member,
    pub(super) membership: Membership,
    pub(super) links: Links,
    pub(super) slots: Vec<Slot>,
    pub(super) formation: Mutex<Formation>,
    /// Since when each member of each group has been seen unhealthy (for the rebuild delay).
    pub(super) unhealthy: Mutex<HashMap<(GroupId, Member), Instant>>,
    frontend: OnceLock<Weak<FrontEnd>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        let me = Member {
            node: settings.node.clone(),
            incarnation: rand::random::<u64>() | 1,
        };
        Self {
            membership: Membership::new(
                settings.nodes.clone(),
                me.clone(),
                settings.failure_timeout,
            ),
            links: Links::new(
                &settings.node,
                settings.peer_addresses.clone(),
                settings.faults.clone(),
            ),
            slots: (0..settings.routing_groups).map(Slot::new).collect(),
            formation: Mutex::new(Formation::default()),
            unhealthy: Mutex::new(HashMap::new()),
            frontend: OnceLock::new(),
            tasks: Mutex::new(JoinSet::new()),
            me,
            settings,
        }
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.me.node
    }

    pub(super) fn attach(&self, frontend: &Arc<FrontEnd>) {
        let _ = self.frontend.set(Arc::downgrade(frontend));
    }

    fn frontend(&self) -> Option<Arc<FrontEnd>> {
        self.frontend.get().and_then(Weak::upgrade)
    }

    /// Runs `future` as one of this node's tasks (all end when the node stops or is killed).
    pub(super) fn spawn(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Finished tasks leave the set here, so it holds at most the running ones.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(future);
    }

    /// Stops every task of this node and closes its peer links.
    pub fn stop(&self) {
        self.links.stop();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }

    fn formation(&self) -> std::sync::MutexGuard<'_, Formation> {
        self.formation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pool serves now, by the quorum rule and the start-up count.
    pub fn quorum_state(&self) -> QuorumState {
        let (formed, recovered) = {
            let f = self.formation();
            (f.formed, f.recovered)
        };
        let running = self.membership.running();
        if !formed {
            return QuorumState::NotStarted {
                running: running.iter().filter(|r| **r).count(),
                needed: quorum::startup_running_min(running.len()),
            };
        }
        let votes = quorum::votes(&running, self.settings.backend_vote.vote());
        if defects::active(Defect::ServesBelowQuorum) {
            // The bug: quorum counted against half the pool rounded down, so one Front End of three is "half".
            let up = running.iter().filter(|r| **r).count();
            if up >= running.len() / 2 {
                return QuorumState::Serving;
            }
        }
        if votes.has_quorum() || recovered {
            QuorumState::Serving
        } else {
            QuorumState::BelowQuorum { votes }
        }
    }

    /// Starts the pool, joins a started one, or lifts the recovery override, as the running Front Ends allow.
    fn update_formation(&self) {
        let running = self.membership.running();
        let first_configurations = {
            let mut formation = self.formation();
            if formation.joined {
                if formation.recovered
                    && quorum::votes(&running, self.settings.backend_vote.vote()).has_quorum()
                {
                    formation.recovered = false;
                }
                return;
            }
            let waited = self.membership.started().elapsed() >= self.settings.failure_timeout;
            // First configurations are seeded from the Back End: none before its users are loaded.
            let loaded = self.settings.backend.as_ref().is_none_or(|b| b.is_loaded());
            let count = running.iter().filter(|r| **r).count();
            if let Some(peer) = self
                .membership
                .reports()
                .into_iter()
                // A peer reports `formed` once it joined, so its formation is the pool's.
                .find(|r| r.formed)
                .filter(|r| loaded || !r.formation.contains(&self.me))
            {
                // A started pool: in its formation, this process holds the first configurations like the others;
                // a Front End that restarted holds nothing until a rebalance installs its replicas.
                formation.formed = true;
                formation.joined = true;
                formation.members = peer.formation;
                let member = formation.members.contains(&self.me);
                tracing::info!(started_by = %peer.node, member, "joined the pool");
                member.then(|| formation.members.clone())
            } else if !formation.formed
                && waited
                && loaded
                // Wait one failure timeout after start, so every running peer has been heard.
                && (count >= quorum::startup_running_min(running.len()) || formation.recovered)
            {
                formation.formed = true;
                formation.joined = true;
                formation.members = self
                    .membership
                    .running_names()
                    .iter()
                    .filter_map(|n| self.membership.current(n))
                    .collect();
                let members: Vec<&str> =
                    formation.members.iter().map(|m| m.node.as_str()).collect();
                tracing::info!(running = count, ?members, "pool started");
                Some(formation.members.clone())
            } else {
                None
            }
        };
        // Outside the formation lock: status readers take a slot's lock, then the formation's.
        if let Some(members) = first_configurations {
            self.create_first_configurations(&members);
            if let Some(backend) = &self.settings.backend {
                backend.forget_loaded();
            }
        }
    }

    /// Epoch 1 of every group: its home placement, members named by the incarnations the formation saw (a node not
    /// seen is a lost member from the start).
    fn create_first_configurations(&self, formation: &[Member]) {
        let replicas = placement::replicas_target(self.settings.nodes.len());
        for slot in &self.slots {
            let members: Vec<Member> = placement::ring(slot.group, &self.settings.nodes)
                .into_iter()
                .take(replicas)
                .map(|node| {
                    formation
                        .iter()
                        .find(|m| m.node == node)
                        .cloned()
                        .unwrap_or(Member {
                            node,
                            incarnation: 0,
                        })
                })
                .collect();
            if !members.contains(&self.me) {
                continue;
            }
            // A group changed since (here, or at a peer this Front End has not heard from about it) is not
            // seeded again: its current configuration installs whatever this Front End should hold.
            if self.peers_epoch(slot.group) > 1 {
                continue;
            }
            let mut state = slot.lock();
            if state.replica.is_some() || state.promised_epoch > 1 {
                continue;
            }
            state.promised_epoch = 1;
            state.replica = Some(Replica {
                config: GroupConfig {
                    group: slot.group,
                    epoch: 1,
                    members,
                },
                seq: 0,
                // A pool starting afresh holds what reached the Back End (every replica seeds alike).
                store: match &self.settings.backend {
                    Some(backend) => backend.seed(slot.group, self.slots.len()),
                    None => UserStore::new(),
                },
                adopted_at: Instant::now(),
            });
        }
    }

    /// The operator's `quorum-recovery`: serve with the Front Ends running now, below the start-up count or the
    /// quorum, until the quorum holds again.
    pub fn recover(&self) -> Value {
        self.formation().recovered = true;
        self.update_formation();
        json!({"node": self.me.node, "recovered": true, "serving": self.quorum_state().serving()})
    }

    /// What this node tells its peers.
    pub(super) fn report(&self) -> Report {
        let (formed, formation) = {
            let f = self.formation();
            (f.joined, f.members.clone())
        };
        Report {
            node: self.me.node.clone(),
            incarnation: self.me.incarnation,
            formed,
            formation,
            groups: self
                .slots
                .iter()
                .filter_map(|slot| {
                    let state = slot.lock();
                    state.replica.as_ref().map(|r| GroupReport {
                        group: slot.group,
                        epoch: r.config.epoch,
                        primary: r.config.primary().clone(),
                    })
                })
                .collect(),
        }
    }

    /// One heartbeat round: a call to every peer, each answer recorded; then the formation is brought up to date.
    fn heartbeat(self: &Arc<Self>) {
        if defects::active(Defect::SignOutOnPeerDeath) {
            self.send_everyone_away_when_a_peer_dies();
        }
        let report = self.report();
        for node in &self.settings.nodes {
            if *node == self.me.node {
                continue;
            }
            let sent_at = Instant::now();
            let wait = self.links.call(
                node,
                Call::Heartbeat(report.clone()),
                self.settings.failure_timeout,
            );
            let (pool, node) = (self.clone(), node.clone());
            self.spawn(async move {
                if let Ok(Answer::Heartbeat(report)) = wait.await {
                    pool.membership.reported(report);
                    pool.membership.answered(&node, sent_at);
                }
            });
        }
        self.update_formation();
    }

    /// The bug of [`Defect::SignOutOnPeerDeath`]: when a peer is found dead, the notice that should send the dead
    /// peer's users to register again goes to every client connected here.
    fn send_everyone_away_when_a_peer_dies(&self) {
        static ALIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let alive: Vec<String> = self
            .settings
            .nodes
            .iter()
            .filter(|n| **n != self.me.node && self.membership.alive(n))
            .cloned()
            .collect();
        let died = {
            let mut before = ALIVE.lock().unwrap_or_else(|e| e.into_inner());
            let died = before.iter().any(|n| !alive.contains(n));
            *before = alive;
            died
        };
        let Some(frontend) = self.frontend().filter(|_| died) else {
            return;
        };
        let pool = self.settings.pool.clone();
        for (user, contact, peer) in frontend.locations.all() {
            let body = crate::pairing::gate::notice_body(false, &pool, Some(&pool));
            tokio::spawn(async move {
                if let Some(notice) = crate::pairing::gate::notice(&user, &contact, body) {
                    let _ = peer.request(notice, Duration::from_secs(5)).await;
                }
            });
        }
    }

    /// Expires what is past its time in every replica; a primary tells watchers of the users concerned.
    fn sweep(&self) {
        let now = now_unix_ms();
        let mut changed = Vec::new();
        for slot in &self.slots {
            let state = slot.lock();
            if let Some(replica) = &state.replica {
                let expired = replica.store.expire(now);
                if state.acting_primary(&self.me) {
                    changed.extend(expired.bindings.into_iter().map(|(u, _)| u));
                    changed.extend(expired.publications);
                }
            }
        }
        changed.sort();
        changed.dedup();
        if let Some(frontend) = self.frontend() {
            for user in changed {
                frontend.changed(&user);
            }
        }
    }

    /// The `/status` document the harness probes.
    pub fn status(&self) -> Value {
        let quorum_state = self.quorum_state();
        let mut users = 0;
        let groups: Vec<Value> = self
            .slots
            .iter()
            .map(|slot| {
                let state = slot.lock();
                let (role, epoch) = match &state.replica {
                    Some(r) if r.config.primary() == &self.me => ("primary", r.config.epoch),
                    Some(r) => ("secondary", r.config.epoch),
                    None => ("none", 0),
                };
                let accepting = self.writable(&state, slot.group).is_ok();
                if accepting {
                    users += state.replica.as_ref().map_or(0, |r| r.store.user_count());
                }
                json!({
                    "group": group_name(slot.group),
                    "role": role,
                    "epoch": epoch,
                    "accepting_writes": accepting,
                })
            })
            .collect();
        let mut status = json!({
            "role": "frontend",
            "pool": self.settings.pool,
            "node": self.me.node,
            "serving": quorum_state.serving(),
            "reason": quorum_state.reason(),
            "fes_running": self.membership.running_names(),
            "groups": groups,
            "users": users,
        });
        if let Some(backend) = &self.settings.backend {
            let stats = backend.writer.stats();
            let fields = json!({
                "be_write_lag_ms": stats.lag_ms,
                "be_pending_users": stats.pending_users,
                "be_last_flush_lag_ms": stats.last_flush_lag_ms,
                "be_flushed_users_total": stats.flushed_users_total,
                "be_flush_failures_total": stats.flush_failures_total,
                "be_available": backend.client.available(),
                "be_principal": backend.client.principal(),
                "be_vote": backend.vote.vote(),
                "be_loaded": backend.is_loaded(),
                "resiliency_mode": backend.gate.in_resiliency_mode(),
            });
            if let (Value::Object(status), Value::Object(fields)) = (&mut status, fields) {
                status.extend(fields);
            }
        }
        if let Some(pairing) = self.frontend().and_then(|f| f.pairing().cloned()) {
            status["pairing"] = pairing.status();
        }
        status
    }

    /// The admin API: `/status` and `POST /admin/quorum-recovery`.
    pub fn admin_api(self: &Arc<Self>) -> AdminApi {
        let (status, recover) = (self.clone(), self.clone());
        let api = AdminApi::new(&self.settings.admin_token, move || status.status()).command(
            "quorum-recovery",
            move |_| {
                let pool = recover.clone();
                async move { Ok(pool.recover()) }
            },
        );
        // A paired pool's commands: pool-failover, pool-failback, store-failover, backup-sync.
        match self.frontend().and_then(|f| f.pairing().cloned()) {
            Some(pairing) => pairing.admin_commands(api),
            None => api,
        }
    }

    /// The group's primary, per the highest epoch this node knows (for tests and tools).
    pub fn primary_of(&self, group: GroupId) -> Option<String> {
        self.route_known(group).1
    }

    /// The members (primary first) of this node's replica of `group`, if it holds one.
    pub fn replica_members(&self, group: GroupId) -> Option<Vec<String>> {
        let state = self.slots[group].lock();
        state
            .replica
            .as_ref()
            .map(|r| r.config.members.iter().map(|m| m.node.clone()).collect())
    }

    /// Routing groups of the pool.
    pub fn group_count(&self) -> usize {
        self.slots.len()
    }
}

impl Callee for Pool {
    fn answer(self: &Arc<Self>, from: &str, call: Call) -> Result<Answer, BoxFuture<Answer>> {
        self.membership.heard(from);
        let mine = |incarnation: u64| incarnation == self.me.incarnation;
        let not_me = || Answer::Refused {
            epoch: 0,
            reason: "another incarnation".into(),
        };
        Ok(match call {
            Call::Heartbeat(report) => {
                self.membership.reported(report);
                Answer::Heartbeat(self.report())
            }
            Call::Promise {
                group,
                epoch,
                from,
                to_incarnation,
            } => {
                if !mine(to_incarnation) || group >= self.slots.len() {
                    return Ok(not_me());
                }
                let primary_healthy = {
                    let state = self.slots[group].lock();
                    state.replica.as_ref().is_some_and(|r| {
                        self.member_healthy(&r.config, r.config.primary(), r.adopted_at)
                    })
                };
                self.slots[group].promise(epoch, &from, primary_healthy)
            }
            Call::Fetch { group, epoch, from } if group < self.slots.len() => {
                self.slots[group].fetch(epoch, &from)
            }
            Call::Install {
                config,
                seq,
                snapshot,
                from,
                to_incarnation,
            } if config.group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                let group = config.group;
                let answer = self.slots[group].install(config, seq, &snapshot, &from, &self.me);
                if matches!(answer, Answer::Done) {
                    self.formation().formed = true;
                }
                answer
            }
            Call::Replicate {
                group,
                epoch,
                seq,
                writes,
                now_unix_ms,
                from,
                to_incarnation,
            } if group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                self.slots[group].replicate(epoch, seq, &writes, now_unix_ms, &from)
            }
            Call::Resync {
                group,
                epoch,
                seq,
                snapshot,
                from,
                to_incarnation,
            } if group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                self.slots[group].resync(epoch, seq, &snapshot, &from)
            }
            Call::Commit {
                group,
                user,
                writes,
                now_unix_ms,
            } if group < self.slots.len() => {
                let pool = self.clone();
                return Err(Box::pin(async move {
                    pool.commit_local(group, user, writes, now_unix_ms).await
                }));
            }
            Call::View {
                group,
                user,
                now_unix_ms,
            } if group < self.slots.len() => self.view_local(group, &user, now_unix_ms),
            Call::Deliver {
                user,
                contact,
                message,
                timeout_ms,
            } => {
                let Some(frontend) = self.frontend() else {
                    return Ok(Answer::Delivered {
                        code: 480,
                        reason: "Temporarily Unavailable".into(),
                    });
                };
                return Err(Box::pin(async move {
                    let (code, reason) = frontend
                        .deliver_local(&user, &contact, &message, Duration::from_millis(timeout_ms))
                        .await;
                    Answer::Delivered { code, reason }
                }));
            }
            Call::Ring {
                user,
                contact,
                message,
                timeout_ms,
            } => {
                let Some(frontend) = self.frontend() else {
                    return Ok(Answer::Relayed { response: None });
                };
                let from = from.to_owned();
                return Err(Box::pin(async move {
                    let response = frontend
                        .ring_here(&from, &user, &contact, &message, timeout_ms)
                        .await;
                    Answer::Relayed { response }
                }));
            }
            Call::CallRelay {
                call_id,
                toward_client,
                message,
                timeout_ms,
            } => {
                let Some(frontend) = self.frontend() else {
                    return Ok(Answer::Relayed { response: None });
                };
                return Err(Box::pin(async move {
                    let response = frontend
                        .call_relay_here(&call_id, toward_client, &message, timeout_ms)
                        .await;
                    Answer::Relayed { response }
                }));
            }
            Call::Changed { user } => {
                if let Some(frontend) = self.frontend() {
                    frontend.changed_here(&user);
                }
                Answer::Done
            }
            _ => Answer::Refused {
                epoch: 0,
                reason: "no such routing group".into(),
            },
        })
    }
}

/// Stops the node's tasks however `serve` ends, including when its task is aborted (a test's kill).
struct StopOnDrop(Arc<Pool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A pooled Front End ready to serve (tests keep it to read its state).
pub fn build(config: PoolConfig) -> Arc<FrontEnd> {
    let pool = Arc::new(Pool::new(config.pool));
    let frontend = FrontEnd::pooled(config.frontend, pool.clone());
    pool.attach(&frontend);
    frontend
}

/// Serves a pooled Front End on `listeners` until `shutdown` completes.
pub async fn serve(
    listeners: PoolListeners,
    frontend: Arc<FrontEnd>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    let pool = frontend
        .pool()
        .cloned()
        .expect("serve needs a pooled Front End (see `build`)");
    let _stop = StopOnDrop(pool.clone());
    {
        let pool = pool.clone();
        let peer = listeners.peer;
        let me = pool.me.node.clone();
        let faults = pool.settings.faults.clone();
        pool.clone().spawn(async move {
            // Ends when the node's tasks are aborted.
            loop {
                let Ok((stream, _)) = peer.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                pool.spawn(wire::incoming(
                    stream,
                    me.clone(),
                    pool.clone(),
                    faults.clone(),
                ));
            }
        });
    }
    for (period, job) in [
        (pool.settings.heartbeat_interval, 0u8),
        (pool.settings.heartbeat_interval, 1),
        (Duration::from_secs(1), 2),
    ] {
        let pool2 = pool.clone();
        pool.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Ends when the node's tasks are aborted.
            loop {
                tick.tick().await;
                match job {
                    0 => pool2.heartbeat(),
                    1 => pool2.reconcile().await,
                    _ => pool2.sweep(),
                }
            }
        });
    }
    if let Some(admin) = listeners.admin {
        let api = pool.admin_api();
        pool.spawn(async move {
            if let Err(error) = api.serve(admin, std::future::pending()).await {
                tracing::error!(%error, "admin API stopped");
            }
        });
    }
    if let Some(backend) = pool.settings.backend.clone() {
        pool.spawn(backend.clone().load(pool.settings.heartbeat_interval));
        pool.spawn(backend.vote.clone().run());
        let writer = backend.writer.clone();
        pool.spawn(async move { writer.run(std::future::pending()).await });
        let gate = backend.gate.clone();
        pool.spawn(async move { gate.run(std::future::pending()).await });
        let mut mode = backend.gate.subscribe();
        let weak = Arc::downgrade(&frontend);
        pool.spawn(async move {
            // One turn per mode change; ends with the node.
            while mode.changed().await.is_ok() {
                let on = *mode.borrow_and_update();
                tracing::info!(resiliency_mode = on, "back end availability changed");
                let Some(frontend) = weak.upgrade() else {
                    return;
                };
                frontend.tell_resiliency(on);
            }
        });
    }
    if let Some(pairing) = frontend.pairing().cloned() {
        pool.spawn(pairing.run());
    }
    crate::frontend::server::serve(listeners.sip, frontend, shutdown).await
}

/// Serves a pooled Front End built from `config` until `shutdown` completes.
pub async fn run(
    listeners: PoolListeners,
    config: PoolConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    serve(listeners, build(config), shutdown).await
}

/// What `poolnode frontend` (cluster mode) was asked.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's name; `POOLNODE_NODE` when `None`.
    pub node: Option<String>,
    pub sip: SocketAddr,
    pub peer: SocketAddr,
    pub admin: SocketAddr,
    /// Peer addresses that override the cluster description's (`name`, `host:port`): tests run several nodes on
    /// one host.
    pub peers: Vec<(String, String)>,
    /// No authentication: any user may register (SIP tools and benchmarks).
    pub open: bool,
}

/// Cluster mode: reads the cluster description from `POOLNODE_CLUSTER`, finds this node's pool, binds, prints the
/// ready line (`poolnode frontend ready sip=<addr>`) and serves until `shutdown` completes.
pub async fn run_node(
    options: NodeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), PoolError> {
    let cluster = ClusterConfig::from_env()?;
    let node = match options.node {
        Some(node) => node,
        None => std::env::var(crate::cluster::NODE_ENV)
            .map_err(|_| crate::cluster::ClusterError::UnknownNode(String::new()))?,
    };
    let mut settings = PoolSettings::from_cluster(&cluster, &node)?;
    settings.peer_addresses.extend(options.peers);
    if let Some(backend_pool) = cluster.pool(&settings.pool).and_then(|p| p.backend.clone()) {
        let client = crate::backend::BackendClient::for_pool(&cluster, &node, &backend_pool)?;
        settings.use_backend(BackendLink::new(
            client,
            &settings.pool,
            &cluster.timings,
            settings.heartbeat_interval,
            settings.failure_timeout,
        ));
    }
    settings.calls =
        CallSettings::from_cluster(&cluster, &settings.pool, crate::director::Resolver::dns());
    let mut frontend = frontend_config(&cluster, &settings.pool);
    if options.open {
        frontend.credentials = Credentials::open();
    }
    let config = PoolConfig {
        frontend,
        pool: settings,
    };
    let listeners = PoolListeners::bind(options.sip, options.peer, Some(options.admin)).await?;
    let addr = listeners
        .sip
        .local_addr()
        .map_err(|source| PoolError::Bind {
            what: "sip",
            addr: options.sip,
            source,
        })?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", crate::frontend::standalone::ready_line(addr));
        let _ = stdout.flush();
    }
    let pool_name = config.pool.pool.clone();
    let frontend = build(config);
    if cluster.pool(&pool_name).is_some_and(|p| p.pair.is_some()) {
        // A paired pool: backup registrar, backup service, failover and fencing.
        let pairing = crate::pairing::PairingConfig {
            cluster: Arc::new(cluster.clone()),
            pool: pool_name,
            node,
        };
        if let Err(error) = crate::pairing::attach(&frontend, pairing) {
            tracing::error!(%error, "pool pairing not started");
        }
    }
    Ok(serve(listeners, frontend, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, incarnation: u64) -> Member {
        Member {
            node: node.to_owned(),
            incarnation,
        }
    }

    /// Claim: a Front End of the pool's formation that got an `Install` before it learnt the formation (the Front
    /// End that started the pool changed a group at once) still holds the first configuration of every other group
    /// it is a home replica of (but one a peer already reports at a later epoch), and does not tell its peers it
    /// knows a formation it does not. (Formed by the install
    /// alone, it held nothing else and reported an empty formation that others joined: groups whose home replicas
    /// all joined that way never existed.)
    #[test]
    fn an_early_install_does_not_cost_a_front_end_its_first_configurations() {
        let nodes: Vec<String> = ["fe1", "fe2", "fe3"].map(String::from).to_vec();
        let pool = Arc::new(Pool::new(PoolSettings::new(
            "fe",
            "fe2",
            nodes,
            BTreeMap::new(),
            &Timings::fast(),
            "token",
        )));
        let starter = member("fe1", 7);
        let formation = vec![starter.clone(), pool.me.clone(), member("fe3", 9)];
        let changed = GroupConfig {
            group: 0,
            epoch: 2,
            members: formation.clone(),
        };
        let install = Call::Install {
            config: changed,
            seq: 0,
            snapshot: Vec::new(),
            from: starter.clone(),
            to_incarnation: pool.me.incarnation,
        };
        assert!(matches!(pool.answer("fe1", install), Ok(Answer::Done)));
        assert!(
            !pool.report().formed,
            "an install alone does not tell which formation the pool has"
        );

        pool.membership.reported(Report {
            node: "fe1".into(),
            incarnation: starter.incarnation,
            formed: true,
            formation,
            // Group 1 moved on without this Front End hearing of it: not seeded here.
            groups: vec![GroupReport {
                group: 1,
                epoch: 3,
                primary: starter.clone(),
            }],
        });
        pool.update_formation();
        assert!(pool.report().formed);
        let epochs: Vec<Option<u64>> = pool
            .slots
            .iter()
            .map(|slot| slot.lock().replica.as_ref().map(|r| r.config.epoch))
            .collect();
        let mut expected = vec![Some(1); pool.slots.len()];
        expected[0] = Some(2);
        expected[1] = None;
        assert_eq!(
            epochs, expected,
            "every group of a pool of three has a replica here, but the one that changed elsewhere"
        );
    }
}
