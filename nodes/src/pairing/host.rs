//! [`Host`]: what a pairing asks of the pooled Front End it belongs to. The pairing reaches the Front End only
//! through this trait, so the dependency runs one way: the Front End uses its pairing (the gate, the shaping of
//! views, `/status`, the admin commands), the pairing never names the Front End.
//! [`crate::frontend::pooled`] implements it for the Front End.

use std::future::Future;
use std::pin::Pin;

use crate::frontend::store::{UserView, Write};
use crate::sip::Peer;

/// A future borrowing the host.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The pooled Front End, as failover, failback and the pair's users' notices need it.
pub trait Host: Send + Sync {
    /// `user`'s state read at its routing group's primary, as this Front End shows it; the reason when the group
    /// cannot serve.
    fn view<'a>(
        &'a self,
        user: &'a str,
        now_unix_ms: u64,
    ) -> HostFuture<'a, Result<UserView, String>>;

    /// Applies `writes` of `user` at its routing group's primary (replicated before it answers); the reason when
    /// it was not confirmed.
    fn commit<'a>(
        &'a self,
        user: &'a str,
        writes: Vec<Write>,
        now_unix_ms: u64,
    ) -> HostFuture<'a, Result<(), String>>;

    /// The connections `user`'s clients registered over at this Front End, by contact.
    fn flows_of(&self, user: &str) -> Vec<(String, Peer)>;

    /// Forgets every connection `user`'s clients registered over here.
    fn forget_flows(&self, user: &str);

    /// Whether the Front End's own pool serves (its quorum rule).
    fn pool_serving(&self) -> bool;

    /// Whether Front End `node` of the own pool is alive.
    fn peer_alive(&self, node: &str) -> bool;
}
