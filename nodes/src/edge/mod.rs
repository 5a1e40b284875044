//! The Edge role: [`node`] (an Edge server's settings and state), [`server`] (the Edge server, its next hop, `/status`, `run`), [`relay`] (one remote client's
//! connection relayed to one upstream connection), [`operator`] (`poolnode admin edge-next-hop`).

pub mod node;
pub mod operator;
pub mod relay;
pub mod server;

pub use node::{Edge, EdgeConfig};
pub use server::{run, run_node};
