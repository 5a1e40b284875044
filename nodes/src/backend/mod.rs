//! The Back End role: the durable store of user data, mirrored synchronously from a principal to a mirror, with
//! an optional witness for automatic failover; and the client side a Front End uses.

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
