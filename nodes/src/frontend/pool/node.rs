//! [`Pool`]: a Front End's share of its pool, the state that ties the other modules together; formation and the
//! quorum state, heartbeats, the sweep, and the node's tasks. Peer calls are answered in `peer_calls`, `/status`
//! in `status`; the pooled Front End is put together in [`crate::frontend::pooled`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::local::Local;
use super::member::{GroupConfig, Member};
use super::membership::{GroupReport, Membership, Report};
use super::placement::{self, GroupId};
use super::quorum::{self, QuorumState};
use super::replica::{Replica, Slot};
use super::settings::PoolSettings;
use super::wire::{self, Answer, Call, Links};
use crate::defects::{self, Defect};
use crate::frontend::store::{now_unix_ms, UserStore};
use crate::slots::Slots;

/// Whether the pool started, and the operator's override.
#[derive(Debug, Default)]
pub(super) struct Formation {
    /// Whether this Front End serves as part of a started pool (it started or joined one, or a peer installed a
    /// replica here, which only a started pool does).
    pub(super) formed: bool,
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
    pub(super) peer_load: PeerLoad,
    local: OnceLock<Weak<dyn Local>>,
    tasks: Mutex<JoinSet<()>>,
}

/// What the peers' connections and calls hold of this node now, each within its bound in [`PoolSettings`].
#[derive(Debug, Default)]
pub(super) struct PeerLoad {
    /// Accepted peer connections (at most `peer_connections_max`).
    pub(super) connections: Slots,
    /// Peers' calls answered later, in flight (at most `peer_calls_in_flight_max`).
    pub(super) calls: Slots,
    /// Answers queued on the accepted connections (at most `peer_queue_len` on each).
    pub(super) answers: Slots,
    /// Accepted connections closed since the start for sending no hello within `peer_hello_timeout`.
    pub(super) without_hello: AtomicU64,
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
                settings.peer_queue_len,
            ),
            peer_load: PeerLoad::default(),
            slots: (0..settings.routing_groups).map(Slot::new).collect(),
            formation: Mutex::new(Formation::default()),
            unhealthy: Mutex::new(HashMap::new()),
            local: OnceLock::new(),
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

    /// Ties the pool to the Front End it is part of (once).
    pub fn attach(&self, local: Weak<dyn Local>) {
        let _ = self.local.set(local);
    }

    pub(super) fn local(&self) -> Option<Arc<dyn Local>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// Starts this node's own work: the peer links accepted on `peer`, heartbeats, reconciliation, the sweep, and
    /// with a Back End its loader, vote, lazy writer and resiliency gate. All of it ends with [`Pool::stop`].
    pub fn start(self: &Arc<Self>, peer: TcpListener) {
        {
            let pool = self.clone();
            let me = self.me.node.clone();
            let faults = self.settings.faults.clone();
            self.spawn(async move {
                // Ends when the node's tasks are aborted.
                loop {
                    let Ok((stream, _)) = peer.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let settings = &pool.settings;
                    let Some(slot) = pool
                        .peer_load
                        .connections
                        .take(settings.peer_connections_max)
                    else {
                        // At the cap: closed unread; the dialling peer sees its connection close.
                        drop(stream);
                        continue;
                    };
                    let served = wire::incoming(
                        stream,
                        me.clone(),
                        pool.clone(),
                        faults.clone(),
                        wire::IncomingBounds {
                            hello_timeout: settings.peer_hello_timeout,
                            queue_len: settings.peer_queue_len,
                            answers: pool.peer_load.answers.clone(),
                        },
                    );
                    let counted = pool.clone();
                    pool.spawn(async move {
                        if served.await == wire::Ended::NoHello {
                            let load = &counted.peer_load;
                            let total = load.without_hello.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::debug!(
                                total,
                                "peer connection closed: no hello within {:?}",
                                counted.settings.peer_hello_timeout
                            );
                        }
                        drop(slot);
                    });
                }
            });
        }
        for (period, job) in [
            (self.settings.heartbeat_interval, 0u8),
            (self.settings.heartbeat_interval, 1),
            (Duration::from_secs(1), 2),
        ] {
            let pool = self.clone();
            self.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Ends when the node's tasks are aborted.
                loop {
                    tick.tick().await;
                    match job {
                        0 => pool.heartbeat(),
                        1 => pool.reconcile().await,
                        _ => pool.sweep(),
                    }
                }
            });
        }
        if let Some(backend) = self.settings.backend.clone() {
            self.spawn(backend.clone().load(self.settings.heartbeat_interval));
            self.spawn(backend.vote.clone().run());
            let writer = backend.writer.clone();
            self.spawn(async move { writer.run(std::future::pending()).await });
            let gate = backend.gate.clone();
            self.spawn(async move { gate.run(std::future::pending()).await });
        }
    }

    /// Runs `future` as one of this node's tasks (all end when the node stops or is killed).
    pub fn spawn(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
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

    pub(super) fn formation(&self) -> std::sync::MutexGuard<'_, Formation> {
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
        if let Some(local) = self.local().filter(|_| died) {
            local.send_everyone_away();
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
        if let Some(local) = self.local() {
            for user in changed {
                local.changed(&user);
            }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::wire::Callee;
    use super::*;
    use crate::cluster::Timings;

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
