//! Userspace netem: packet faults on a node — delay with jitter and a distribution, random and bursty
//! (Gilbert-Elliott) loss, duplication, reordering, corruption and a rate limit — optionally only towards
//! given peers and in one direction, for kernels without the `netem` qdisc.
//!
//! iptables rules in chains of their own ([`rules`]) steer the node's packets into an NFQUEUE with
//! `--queue-bypass`, so that without a process on the queue traffic flows as if the rules were not there.
//! `netfault apply` ([`engine`]) binds the queue in the network namespace it runs in (entered with
//! `nsenter -t <pid> -n` or `ip netns exec`) and decides each packet's fate ([`model`]): verdicts are given
//! out of order by packet id, later for delayed packets; duplicates are sent through a marked raw socket
//! ([`inject`]). Its undo removes the rules first, then releases every held packet, so no packet is lost.
//!
//! The NFQUEUE protocol is spoken directly ([`nfqueue`]) on a `rustix` netlink socket: a handful of fixed
//! nfnetlink messages, and, unlike the `nfq` crate, the socket can be polled together with a timer, a signal
//! pipe and stdin in one thread, and its buffer size, fail-open flag and ENOBUFS handling are under this
//! crate's control. No C library (libnetfilter_queue) is needed on the host.
//!
//! [`probe`](mod@probe) measures a fault from inside the faulted node: `netfault probe` against `netfault echo`, giving a
//! [`ProbeReport`] that [`ProbeReport::matches`] checks against a [`FaultSpec`].
//!
//! # Command line
//!
//! ```text
//! netfault apply --queue <n> (--spec '<json>' | --spec-file <path>) [--ignore-stdin]
//!     prints `ready` once the queue is bound and the rules are in place; runs until SIGTERM, SIGINT, SIGHUP
//!     or the end of stdin (when stdin is a pipe or a socket); undoes the fault, prints its counts as JSON
//!     on stderr and exits 0. Errors: `netfault: <message>` on stderr, exit 1.
//! netfault clear --queue <n>       removes whatever is left of queue n's rules (idempotent)
//! netfault script --queue <n> --spec '<json>'   prints the install and remove scripts
//! netfault probe --to <ipv4> --port <p> [--count 100] [--interval-ms 10] [--size 64] [--timeout-ms 1000]
//!     prints one JSON line, a `ProbeReport`; ends by count * interval + timeout
//! netfault echo --port <p> [--for-s 3600]
//!     echoes UDP datagrams until the time is up or SIGTERM/SIGINT, then prints `{"echoed":N}`
//! ```
//!
//! # Limits
//!
//! - IPv4 only (iptables, not ip6tables).
//! - Within one network namespace, faults on different queues do not stack on one packet: the packet is
//!   queued by the chain inserted last whose filter matches it, and its verdict ends its walk through the
//!   hook. Faults with disjoint peers are independent.
//! - A process killed with SIGKILL cannot undo: the packets it held are dropped by the kernel, new ones pass
//!   (`--queue-bypass`), and the chains stay until `netfault clear`.
//! - A corrupted UDP or TCP packet fails its checksum at the receiver and is dropped there, so the probe
//!   sees it as lost (its `corrupted` count is for datagrams that arrive altered).
//! - A duplicate is sent through a raw socket right after the original is accepted; it is not itself
//!   subject to loss, delay or corruption.

pub mod cli;
pub mod engine;
pub mod inject;
pub mod model;
pub mod nfqueue;
pub mod probe;
pub mod rules;
pub mod spec;

pub use engine::{apply, ApplyStats};
pub use probe::{echo, probe, ProbeOptions, ProbeReport, Tolerance};
pub use rules::{chain_name, install_script, remove_script};
pub use spec::{Direction, Distribution, FaultSpec, GilbertElliott, Loss, Protocol};
