//! The Front End pool: N Front Ends serve one pool name, and losing one loses nothing acknowledged.
//!
//! - `placement`: user → routing group (stable hash), group → its desired three Front Ends (the group's ring).
//! - `membership`: heartbeats, who is alive, incarnations, the primary's lease.
//! - `quorum`: the pool quorum rule, the start-up counts and the [`BackendVote`] seam.
//! - `member`: [`member::Member`] (one Front End process) and a group's configuration (members at an epoch).
//! - `replica`: a group's slot and replica on this Front End (configuration, epoch, store), the secondary's side.
//! - `replication`: the primary's synchronous commit, fencing.
//! - `forwarding`: any Front End serves any client; writes, reads and IMs go where the state or connection is.
//! - `rebuild`: promotion, rebuild after the delay, rebalance when a Front End returns (reconfigurations).
//! - `wire`: the peer link protocol and the partition shim ([`LinkFaults`]).
//! - `settings`: [`PoolSettings`], what a Front End knows of its pool.
//! - `node`: [`Pool`], formation and the quorum state, heartbeats, the sweep, the node's tasks.
//! - `peer_calls`: the peers' calls to this Front End, dispatched to replicas and to [`Local`].
//! - `status`: `/status` and the admin API (`quorum-recovery`).
//! - `local`: [`Local`], what the pool asks of its Front End (the only way it reaches the SIP side).
//! - `backend`: the pool's Back End ([`BackendLink`]): lazy writes, reload at formation, the cached vote.

pub mod backend;
mod forwarding;
pub use forwarding::{CommitError, Delivery};
pub mod local;
pub mod member;
pub mod membership;
pub mod node;
mod peer_calls;
pub mod placement;
pub mod quorum;
mod rebuild;
pub mod replica;
pub mod replication;
pub mod settings;
mod status;
pub mod wire;

pub use backend::{BackendLink, CachedVote};
pub use local::Local;
pub use node::Pool;
pub use quorum::{AssumedVote, BackendVote, QuorumState};
pub use settings::PoolSettings;
pub use wire::LinkFaults;
