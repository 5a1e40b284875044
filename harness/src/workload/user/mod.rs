//! One simulated user: a SIP client that behaves as a client of the pool would.
//!
//! It finds its pool by name (every address the name resolves to, tried in turn, then its backup registrar),
//! registers with digest authentication, refreshes before expiry, sends `CRLF CRLF` keep-alives, and
//! notices loss — a closed connection, silence past `dead_after`, a request without answer, a refresh
//! answered `register-action="added"` — and then registers again. Registered, it adds a contact, subscribes to
//! that contact's presence, publishes its own, and sends IMs at the workload's rate. Every operation goes
//! into the history as invoke → ok / fail / timeout.
//!
//! - `state`: who the user is ([`UserSpec`]) and what it keeps from one connection to the next (`Life`), which
//!   every other part reads and changes.
//! - `life`: [`run`], the user's loop: find a server, hold a session, then go where it was sent or back off, until
//!   told to stop.
//! - `locate`: finding a server: the registrars a Director names (directly or through an Edge server), the
//!   addresses of a pool (DNS answers kept a while, addresses that refused lately tried last), the connection
//!   through the tunnel.
//! - `session`: one connection: the REGISTER that opens it, keep-alives, refreshes, the timed activities while
//!   registered, the final read, and the loss that ends it.
//! - `incoming`: what the server's messages mean: answers to the user's requests (a challenge, a redirect, a lost
//!   binding, a publication to repeat) and the server's own requests (IMs, presence and resiliency notices, calls).
//! - `activity`: what a registered user does: add contacts, watch and publish presence, send IMs, place calls.
//! - `wire`: what the messages travel on, TCP or UDP (datagrams through the tunnel), and UDP's retransmission
//!   timers and answers to retransmitted requests.
//! - `request`: building requests (Call-ID, CSeq, digest credentials), sending them, and tracking each one in the
//!   history until its answer.

mod activity;
mod incoming;
mod life;
mod locate;
mod request;
mod session;
mod state;
mod wire;

pub use life::run;
pub use state::UserSpec;
