//! The reference pool: a working model of Lync Server 2013's high availability and disaster recovery.
//!
//! Every role runs from the one `poolnode` binary as a subcommand; each role is a server with
//! `run(listener, shutdown)` so tests run it in-process and containers run the same code.
//!
//! Module map:
//! - [`version`]: the build's version line, printed by `poolnode version`.

pub mod version;
