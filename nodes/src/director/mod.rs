//! The Director role ([`server`]) and the node plumbing the Director, Edge, Mediation and PSTN gateway roles
//! share ([`node`]: identity in the cluster, name resolution, listeners, command-line options, serving).

pub mod node;
pub mod server;

pub use node::{NodeError, NodeIdentity, Resolver, RoleArgs, RoleListeners};
pub use server::{run, run_node, Director, DirectorConfig};
