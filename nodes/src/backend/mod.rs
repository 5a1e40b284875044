//! The Back End role: the durable store of user data, mirrored synchronously from a principal to a mirror, with
//! an optional witness for automatic failover; and the client side a Front End uses.
//!
//! Nodes of a Back End pool `P` are `P-1` (the initial principal), `P-2` (the initial mirror) and optionally the
//! pool's witness. Roles, quorum and fencing: [`role`]. The peer wire format: [`protocol`].
//!
//! How a Front End uses it (one [`BackendClient`] per Front End node, shared by the three helpers):
//!
//! ```ignore
//! let client = BackendClient::for_pool(&cluster, my_node, fe_pool.backend.as_deref().unwrap())?;
//! // At start: reload the pool's users (retries within the client's budget; on error start empty and retry).
//! for record in client.load_all(&fe_pool.name).await? { /* seed the UserStore from record */ }
//! // Lazy writes: after every persistent change of a user, queue its whole current record.
//! let writer = Arc::new(LazyWriter::new(client.clone(), &cluster.timings));
//! tokio::spawn({ let w = writer.clone(); async move { w.run(shutdown).await } });
//! writer.mark_dirty(UserRecord { user, pool, password: None, contacts, presence, settings });
//! // metric: writer.stats().lag_ms (age of the oldest unwritten change)
//! // Resiliency mode: check before a persistent change, react to changes.
//! let gate = Arc::new(ResiliencyGate::new(client.clone(), &cluster.timings));
//! tokio::spawn({ let g = gate.clone(); async move { g.run(shutdown).await } });
//! if gate.in_resiliency_mode() { /* refuse the change with the explicit error */ }
//! let mut mode = gate.subscribe(); // mode.changed().await → NOTIFY users in or out of resiliency mode
//! // Quorum of a pool with an even number of voters: the Back End's extra vote.
//! let be_vote: bool = client.vote().await.is_some();
//! ```

pub mod client;
pub mod error;
pub mod lazy;
pub mod mirror;
pub mod operator;
pub mod protocol;
pub mod resiliency;
pub mod role;
pub mod server;
pub mod store;
pub mod witness;

pub use client::{BackendClient, ClientSettings, Receipt, Vote};
pub use error::{BackendError, PeerError, StoreError};
pub use lazy::{LazyStats, LazyWriter};
pub use resiliency::ResiliencyGate;
pub use role::{DbRole, RoleState, Settings};
pub use server::{peer_address, run, Backend, BackendConfig, Listeners};
pub use store::{Batch, Op, PresenceDoc, Store, UserRecord};
pub use witness::Witness;
