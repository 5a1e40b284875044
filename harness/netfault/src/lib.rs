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
//! [`probe`] measures a fault from inside the faulted node: `netfault probe` against `netfault echo`, giving a
//! [`ProbeReport`] that [`ProbeReport::matches`] checks against a [`FaultSpec`].

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
