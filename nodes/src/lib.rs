//! The reference pool: a working model of Lync Server 2013's high availability and disaster recovery.
//!
//! Every role runs from the one `poolnode` binary as a subcommand; each role is a server with
//! `run(listeners, shutdown)` so tests run it in-process and containers run the same code.
//!
//! Module map:
//! - [`version`]: the build's version line, printed by `poolnode version`.
//! - [`admin`]: the HTTP admin API every node serves: `GET /status` for probes, bearer-guarded commands.
//! - [`cluster`]: the cluster description every node gets from the harness (pools, users, timing profile,
//!   routes through the fault proxy): the whole contract between harness and pool.
//! - [`sip`]: SIP for every role: [`sip::codec`] frames TCP streams and UDP datagrams (compact names, size
//!   limits), [`sip::message`] parses with the mandatory checks and builds messages, [`sip::digest`] checks digest
//!   credentials, [`sip::transaction`] answers UDP retransmissions, [`sip::transport`] runs a [`sip::Handler`]
//!   over TCP and UDP and lets it send requests back to a client ([`sip::Peer`]).
//! - [`backend`]: the Back End role: [`backend::store`] (SQLite: accounts, contacts, presence, settings, the
//!   commit log), [`backend::role`] (principal / mirror / stopped, lease, epoch), [`backend::mirror`] (synchronous
//!   mirroring, catch-up, promotion, operator failover), [`backend::witness`], [`backend::protocol`] (the peer
//!   wire format), [`backend::server`] (`run`), and for Front Ends [`backend::client`] (`BackendClient`),
//!   [`backend::lazy`] (`LazyWriter`), [`backend::resiliency`] (`ResiliencyGate`); [`backend::operator`] runs
//!   `poolnode admin db-status` / `db-failover`.
//! - [`director`]: the Director role ([`director::server`]: digest, then `301` to the home pool and its pair) and
//!   [`director::node`], the node plumbing the Director, Edge, Mediation and gateway roles share.
//! - [`edge`]: the Edge role: [`edge::relay`] (each remote client's connection relayed to one upstream
//!   connection), [`edge::server`] (next hop, `/status`, `run`), [`edge::operator`] (`admin edge-next-hop`).
//! - [`mediation`]: the Mediation role: [`mediation::server`] (calls relayed back to back between the pool and
//!   the PSTN gateway pool), [`mediation::dialog`], [`mediation::link`] (outgoing SIP connections, call legs).
//! - [`gateway`]: the PSTN gateway stand-in (`poolnode pstn-gateway`): answers, holds and hangs up calls.
//! - [`frontend`]: the Front End role: [`frontend::store`] (the persistent user state, changed only by
//!   [`frontend::Write`]s), [`frontend::registrar`], [`frontend::presence`], [`frontend::im`],
//!   [`frontend::contacts`], [`frontend::overload`], [`frontend::users`] (credentials),
//!   [`frontend::server`] (dispatch and `run`), [`frontend::standalone`] (one Front End alone, for SIP tools),
//!   [`frontend::pool`] (N Front Ends serving one pool: routing groups with three replicas, epoch-fenced synchronous
//!   replication, forwarding to the primary, pool quorum, promotion, rebuild and rebalance).
//! - [`pairing`]: pool pairing and disaster recovery: the heartbeat between paired pools, the backup service
//!   (each pool's Back End copied to its pair's), the backup registrar and resiliency mode, operator and
//!   automatic pool failover and failback with fencing, the management store's location ([`pairing::Pairing`]).
//! - [`frames`]: the length-prefixed frames of both peer ports ([`frames::FrameCodec`]), which allocate with the
//!   bytes that arrive, never with the length announced.
//! - [`slots`]: places among a cap ([`slots::Slots`]), how every bound on what the network feeds a node is kept.
//! - [`defects`]: known-bad pools (cargo feature `defects` only): which defects exist and how one is planted.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod defects;
pub mod director;
pub mod edge;
pub mod frames;
pub mod frontend;
pub mod gateway;
pub mod mediation;
pub mod pairing;
pub mod sip;
pub mod slots;
pub mod version;
