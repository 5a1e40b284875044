//! Pool pairing and disaster recovery: each Front End pool is the backup registrar of its pair (`pair` in the
//! cluster description), a backup service copies each pool's Back End to its pair, and an operator (or the
//! backup pool itself, with `automatic_pool_failover`) fails a lost pool over to its pair and back.
//!
//! - `record`: [`PairRecord`], the durable state a pool keeps about its pair (failed over to us, the failover
//!   epoch, an operation in progress, where the management store lives), stored in the pool's own Back End.
//! - `watch`: [`PairWatch`], the heartbeat: every Front End polls its pair's Front Ends' `GET /status`.
//! - `backup`: the backup service, one direction per pool (the pair's Back End → our Back End, in the pair's
//!   namespace), `steady` / `final` with the lag.
//! - `restore`: loads Back End records into the pool's routing groups (a restarted pool, a failover, a failback).
//! - `gate`: [`Decision`], what the Front End asks before serving a user, and the SIP answers it implies
//!   (redirects, the resiliency-mode refusal, header and NOTIFY).
//! - `host`: [`Host`], what the pairing asks of its Front End (the only way it reaches it).
//! - `node`: [`Pairing`], one Front End's share, and `attach`; its methods by concept: `screening` (how a user is
//!   served now: the decision, the SIP answers, fencing), `loops` (heartbeat, maintenance and automatic failover,
//!   the backup service), `persist` (the pool's record in its Back End), `transitions` (failover, failback, store
//!   failover, backup sync), `status` (`/status`, the admin commands).
//! - `operator`: `poolnode admin pool-failover | pool-failback | store-failover | backup-status | backup-sync`.

mod backup;
pub mod error;
pub mod gate;
pub mod host;
mod loops;
mod node;
pub mod operator;
mod persist;
pub mod record;
mod restore;
mod screening;
mod status;
mod transitions;
pub mod watch;

pub use backup::{BackupState, BackupStatus};
pub use error::PairingError;
pub use gate::{Decision, RESILIENCY_EVENT, RESILIENCY_HEADER};
pub use host::Host;
pub use node::{attach, Pairing, PairingConfig};
pub use record::{PairRecord, Transition};
pub use watch::PairWatch;
