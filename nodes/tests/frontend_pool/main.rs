//! In-process tests of the Front End pool: several pooled Front Ends on 127.0.0.1 with real sockets, our own SIP
//! client, kills by aborting a node's tasks, partitions through the peer links' fault shim. One module per claim.

#[path = "../frontend/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End tests' client is shared; this binary uses part of it"
)]
mod client;
mod support;

mod failover;
mod groups;
mod partition;
mod peer_link;
mod presence;
mod quorum;
mod rejoin;
mod returning_pair;
