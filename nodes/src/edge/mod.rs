//! The Edge role: [`server`] (the Edge server, its next hop, `/status`, `run`), [`relay`] (one remote client's
//! connection relayed to one upstream connection), [`operator`] (`poolnode admin edge-next-hop`).

pub mod operator;
pub mod relay;
pub mod server;

pub use server::{run, run_node, Edge, EdgeConfig};
