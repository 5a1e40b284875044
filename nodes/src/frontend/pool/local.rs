//! [`Local`]: what the pool asks of the Front End it is part of. The pool reaches the SIP side (connections,
//! watchers, calls) only through this trait, so the dependency runs one way: the Front End's server uses the pool,
//! the pool never names the server. [`crate::frontend::pooled`] implements it for the Front End.

use std::sync::Arc;
use std::time::Duration;

use crate::sip::BoxFuture;

/// The local Front End, as its pool's peer calls and sweeps need it.
pub trait Local: Send + Sync {
    /// Relays an encoded request to the client of `user` bound at `contact` over its connection to this Front
    /// End: the client's final status and reason (`480` when there is no such connection, `408` without an answer).
    fn deliver(
        self: Arc<Self>,
        user: String,
        contact: String,
        message: String,
        timeout: Duration,
    ) -> BoxFuture<(u16, String)>;

    /// Rings the client of `user` bound at `contact` here for a call whose Mediation end Front End `from` holds;
    /// the client's answer, encoded.
    fn ring(
        self: Arc<Self>,
        from: String,
        user: String,
        contact: String,
        message: String,
        timeout_ms: u64,
    ) -> BoxFuture<Option<String>>;

    /// A request inside call `call_id` for the end held here; the answer, encoded (`None` for an ACK, an unknown
    /// call, or no answer).
    fn relay(
        self: Arc<Self>,
        call_id: String,
        toward_client: bool,
        message: String,
        timeout_ms: u64,
    ) -> BoxFuture<Option<String>>;

    /// `user`'s presence changed: tell its watchers on this Front End.
    fn changed_here(&self, user: &str);

    /// `user`'s presence changed: tell its watchers here and on every other Front End of the pool.
    fn changed(&self, user: &str);

    /// The bug of [`crate::defects::Defect::SignOutOnPeerDeath`]: the notice that should send a dead peer's users
    /// to register again goes to every client connected here.
    fn send_everyone_away(&self);
}
