//! Errors of the SIP layer.

use std::net::SocketAddr;

/// A request refused before a handler saw it, with the status and reason phrase to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refused with {status} {reason}")]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

impl Rejection {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// Why a request we sent to a peer got no final response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("get a final response from {peer} in time")]
    Timeout { peer: SocketAddr },
    #[error("reach {peer}: its connection is closed")]
    Closed { peer: SocketAddr },
}

/// Why a transport could not run.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("read the local address of a listener")]
    LocalAddr(#[source] std::io::Error),
}
