//! Membership: which Front Ends of the pool are alive, heard through heartbeats, and what each last reported
//! (its incarnation, whether it formed the pool, the routing groups it holds). A peer not heard from for
//! `failure_timeout` is dead. A restarted process has a new *incarnation*: the replicas its previous incarnation held
//! are gone, so group configurations name members by node and incarnation.
//!
//! Leases come from here too: a primary may acknowledge writes only while a secondary answered one of its calls
//! sent less than half a failure timeout ago. A secondary grants a promotion only after a full failure timeout
//! without hearing the primary, so the old primary's lease has run out first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::member::Member;
use super::placement::GroupId;

/// What a Front End tells its peers with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node: String,
    pub incarnation: u64,
    /// Whether it has started the pool (or joined a started one): its `formation` is then the pool's.
    pub formed: bool,
    /// The members the pool's first configurations were built from: a Front End that starts late joins them with
    /// the same configurations when it is among them.
    pub formation: Vec<Member>,
    /// The routing groups it holds a replica of.
    pub groups: Vec<GroupReport>,
}

/// One replica a Front End holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: GroupId,
    /// Epoch of the replica's configuration.
    pub epoch: u64,
    pub primary: Member,
}

impl Report {
    /// The reporter's replica of `group`, if it holds one.
    pub fn group(&self, group: GroupId) -> Option<&GroupReport> {
        self.groups.iter().find(|g| g.group == group)
    }
}

struct PeerState {
    last_heard: Instant,
    /// Since when it has been heard without a gap longer than the failure timeout.
    alive_since: Instant,
    report: Option<Report>,
    /// When the latest call it answered was sent (the lease clock).
    answered_call_sent_at: Option<Instant>,
}

/// One Front End's view of its pool.
pub struct Membership {
    nodes: Vec<String>,
    me: Member,
    failure_timeout: Duration,
    started: Instant,
    peers: Mutex<HashMap<String, PeerState>>,
}

impl Membership {
    pub fn new(nodes: Vec<String>, me: Member, failure_timeout: Duration) -> Self {
        Self {
            nodes,
            me,
            failure_timeout,
            started: Instant::now(),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool's nodes in topology order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// When this node started (a node that was never heard counts as dead since then).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Something arrived from `node`.
    pub fn heard(&self, node: &str) {
        // Only the pool's nodes are tracked: a name from the network that is not one of them adds nothing.
        if node == self.me.node || !self.nodes.iter().any(|n| n == node) {
            return;
        }
        let now = Instant::now();
        let timeout = self.failure_timeout;
        let mut peers = self.lock();
        let state = peers.entry(node.to_owned()).or_insert(PeerState {
            last_heard: now,
            alive_since: now,
            report: None,
            answered_call_sent_at: None,
        });
        if now.duration_since(state.last_heard) > timeout {
            state.alive_since = now;
        }
        state.last_heard = now;
    }

    /// A heartbeat's report from its sender.
    pub fn reported(&self, report: Report) {
        if report.node == self.me.node {
            return;
        }
        self.heard(&report.node);
        let mut peers = self.lock();
        if let Some(state) = peers.get_mut(&report.node) {
            if state
                .report
                .as_ref()
                .is_some_and(|r| r.incarnation != report.incarnation)
            {
                // A new process: whatever its lease was, it holds nothing now.
                state.answered_call_sent_at = None;
                state.alive_since = Instant::now();
            }
            state.report = Some(report);
        }
    }

    /// `node` answered a call sent at `sent_at`: renews the lease it grants.
    pub fn answered(&self, node: &str, sent_at: Instant) {
        self.heard(node);
        if let Some(state) = self.lock().get_mut(node) {
            if state.answered_call_sent_at.is_none_or(|t| t < sent_at) {
                state.answered_call_sent_at = Some(sent_at);
            }
        }
    }

    /// Whether `node` was heard within the failure timeout (this node always is).
    pub fn alive(&self, node: &str) -> bool {
        node == self.me.node
            || self
                .lock()
                .get(node)
                .is_some_and(|s| s.last_heard.elapsed() <= self.failure_timeout)
    }

    /// Alive, for at least `for_at_least` without a gap.
    pub fn alive_for(&self, node: &str, for_at_least: Duration) -> bool {
        node == self.me.node
            || self.lock().get(node).is_some_and(|s| {
                s.last_heard.elapsed() <= self.failure_timeout
                    && s.alive_since.elapsed() >= for_at_least
            })
    }

    /// The incarnation `node` last reported.
    pub fn incarnation(&self, node: &str) -> Option<u64> {
        if node == self.me.node {
            return Some(self.me.incarnation);
        }
        self.lock()
            .get(node)
            .and_then(|s| s.report.as_ref().map(|r| r.incarnation))
    }

    /// Whether `member`'s node has reported another incarnation since: that process is gone for good (a node runs one
    /// process at a time), and with it the replicas it held. It can promise nothing and act on nothing any more.
    pub fn replaced(&self, member: &Member) -> bool {
        self.incarnation(&member.node)
            .is_some_and(|incarnation| incarnation != member.incarnation)
    }

    /// The member as it runs now: alive, and the same process the configuration named.
    pub fn live(&self, member: &Member) -> bool {
        self.alive(&member.node) && self.incarnation(&member.node) == Some(member.incarnation)
    }

    /// The node's current identity, if it is alive and has reported.
    pub fn current(&self, node: &str) -> Option<Member> {
        if !self.alive(node) {
            return None;
        }
        self.incarnation(node).map(|incarnation| Member {
            node: node.to_owned(),
            incarnation,
        })
    }

    /// The latest report of an alive peer.
    pub fn report(&self, node: &str) -> Option<Report> {
        if !self.alive(node) {
            return None;
        }
        self.lock().get(node).and_then(|s| s.report.clone())
    }

    /// Reports of every alive peer.
    pub fn reports(&self) -> Vec<Report> {
        let peers = self.lock();
        peers
            .values()
            .filter(|s| s.last_heard.elapsed() <= self.failure_timeout)
            .filter_map(|s| s.report.clone())
            .collect()
    }

    /// Which nodes run, by topology index.
    pub fn running(&self) -> Vec<bool> {
        self.nodes.iter().map(|n| self.alive(n)).collect()
    }

    /// Names of the nodes that run, in topology order.
    pub fn running_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| self.alive(n))
            .cloned()
            .collect()
    }

    /// Whether `node` answered a call sent less than half a failure timeout ago: it grants a lease.
    pub fn grants_lease(&self, node: &str) -> bool {
        self.lock()
            .get(node)
            .and_then(|s| s.answered_call_sent_at)
            .is_some_and(|sent| sent.elapsed() < self.failure_timeout / 2)
    }
}
