//! The Docker runtime: a topology started as containers on per-site networks, a WAN and an external network,
//! every object labelled with its run so teardown, drop and `poolchaos sweep` find them all.
//!
//! - [`labels`]: the labels every container and network carries, and the sweep of earlier runs' leftovers.
//! - [`roles`]: how each node role is started (command, ports, ready line): the one place that knows the image.
//! - [`cluster`]: [`Cluster`], a topology running in containers: `up`, `down`, addresses, logs.
//! - [`disk`]: disk faults on a node's store: its disk filled up, or turned read-only, each proven and undone.
//! - [`docker`]: the Docker client and its errors, each saying what to do.
//! - [`inject`]: applies each fault, verifies it took effect, undoes it ([`Injector`]).
//! - [`nodes`]: reaching a run's nodes: targets resolved within the blast radius, container state, commands in their namespaces.
//! - [`packet`]: packet faults (`netfault` in a node's namespace), each effect and undo measured by a probe stream.
//! - [`partition`]: partition shapes as packet filters in the nodes' namespaces, each direction proven by witnesses.
//! - [`proxy`]: the fault proxy's Toxiproxy API, as the harness calls it, and the names of the links' proxies.
//! - [`tunnel`]: the harness's way into the networks through the proxy (`CONNECT`, `RESOLVE`).

pub mod cluster;
pub mod disk;
pub mod docker;
pub mod inject;
pub mod labels;
pub mod nodes;
pub mod packet;
pub mod partition;
pub mod proxy;
pub mod roles;
pub mod store_disk;
pub mod tunnel;

pub use cluster::{remove_own_blocking, Cluster, NodeHandle};
pub use docker::RuntimeError;
pub use inject::{FaultRecord, Injector};
