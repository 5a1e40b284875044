//! [`PoolSettings`]: what a pooled Front End knows of its pool (peers, groups, timers, Back End, calls), from the
//! cluster description or set by a test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::backend::BackendLink;
use super::placement;
use super::quorum::{AssumedVote, BackendVote};
use super::wire::LinkFaults;
use crate::cluster::{ClusterConfig, Timings, PEER_PORT};
use crate::frontend::call_state::CallSettings;
use crate::frontend::error::PoolError;

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
    /// Frames queued for one peer connection's writer at most: a call beyond is refused at once, an answer beyond
    /// waits (and the connection is not read meanwhile).
    pub peer_queue_len: usize,
    /// Peers' calls answered later (a forwarded commit, a relayed IM, a ring) in flight at once; one beyond is
    /// refused at once with the refusal its caller already handles.
    pub peer_calls_in_flight_max: usize,
    /// Accepted peer connections open at once; one more is closed as soon as it is accepted.
    pub peer_connections_max: usize,
    /// An accepted peer connection whose hello (its first frame, complete) has not arrived within this is closed.
    pub peer_hello_timeout: Duration,
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
            peer_queue_len: 4096,
            peer_calls_in_flight_max: 4096,
            peer_connections_max: 64,
            peer_hello_timeout: Duration::from_secs(10),
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
