//! The Front End pool: N Front Ends serve one pool name, and losing one loses nothing acknowledged.
//!
//! - `placement`: user → routing group (stable hash), group → its desired three Front Ends (the group's ring).
//! - `membership`: heartbeats, who is alive, incarnations, the primary's lease.
//! - `quorum`: the pool quorum rule, the start-up counts and the [`BackendVote`] seam.
//! - `replication`: a group's replica (configuration, epoch, store), the primary's synchronous commit, fencing.
//! - `forwarding`: any Front End serves any client; writes, reads and IMs go where the state or connection is.
//! - `rebuild`: promotion, rebuild after the delay, rebalance when a Front End returns (reconfigurations).
//! - `wire`: the peer link protocol and the partition shim ([`LinkFaults`]).
//! - `node`: [`Pool`], formation, `/status`, the admin command, `run`.
//! - `backend`: the pool's Back End ([`BackendLink`]): lazy writes, reload at formation, the cached vote.

pub mod backend;
mod forwarding;
pub use forwarding::CommitError;
pub mod membership;
pub mod node;
pub mod placement;
pub mod quorum;
mod rebuild;
pub mod replication;
pub mod wire;

pub use backend::{BackendLink, CachedVote};
pub use node::{
    build, frontend_config, run, run_node, serve, NodeOptions, Pool, PoolConfig, PoolListeners,
    PoolSettings,
};
pub use quorum::{AssumedVote, BackendVote, QuorumState};
pub use wire::LinkFaults;
