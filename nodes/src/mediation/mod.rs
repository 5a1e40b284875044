//! The Mediation role: [`server`] (the back-to-back relay of calls between the pool and the PSTN gateway pool,
//! `/status`, `run`), [`dialog`] (one side of a call's dialog; numbers and the hold header), [`link`] (outgoing
//! SIP connections, and [`link::Leg`], one side of a call). The PSTN gateway stand-in (`crate::gateway`) uses
//! `dialog` and `link` too.

pub mod dialog;
pub mod link;
pub mod server;

pub use dialog::{number_of, DialogSide, HOLD_HEADER};
pub use link::{Leg, Link, OnRequest};
pub use server::{run, run_node, serve, Mediation, MediationConfig};
