//! The PSTN gateway stand-in ([`server`]): answers calls to telephone numbers (100, 180, 200, hold, BYE), places
//! calls to users through the Mediation pool, and keeps every call alive with in-dialog OPTIONS.

pub mod server;

pub use server::{run, run_node, serve, CallError, Gateway, GatewayConfig};
