//! Why a pairing operation was refused or failed: each variant is what an operator acts on, and its message
//! says what to do first.

use axum::http::StatusCode;

/// A refused or failed pairing command.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error("pool `{pool}` is not the pair of `{me}` (send the command to the pair of the pool to fail over)")]
    NotOurPair { pool: String, me: String },
    #[error("pool `{0}` is not a Front End pool of the cluster")]
    NotAFrontEndPool(String),
    #[error(
        "the management store lives in pool `{failed}`, the failed pool: run `poolnode admin store-failover --to {to}` first"
    )]
    StoreOnFailedPool { failed: String, to: String },
    #[error(
        "Edge pool `{edge}` (server {node}) still relays to Director pool `{director}` in site `{site}`, the failed pool's site: run `poolnode admin edge-next-hop --pool {edge} --next-hop {suggestion}` first"
    )]
    EdgeRelaysToFailedSite {
        edge: String,
        node: String,
        director: String,
        site: String,
        suggestion: String,
    },
    #[error("pool `{0}` is not failed over to this pool: nothing to fail back")]
    NotFailedOver(String),
    #[error("home pool `{0}` does not answer its heartbeat: start its Front Ends, then run the failback again")]
    HomeUnreachable(String),
    #[error("write to the Back End of `{pool}`: {reason} (bring that Back End back, then retry)")]
    Backend { pool: String, reason: String },
    #[error("this Front End is not serving yet: {0}")]
    NotServing(String),
    #[error("another failover or failback of `{0}` is in progress")]
    Busy(String),
    #[error(
        "automatic failover of `{0}` called off: it answers again, or this pool stopped serving"
    )]
    CalledOff(String),
}

impl PairingError {
    /// The HTTP status of the admin API's answer.
    pub fn status(&self) -> StatusCode {
        match self {
            PairingError::NotOurPair { .. } | PairingError::NotAFrontEndPool(_) => {
                StatusCode::BAD_REQUEST
            }
            PairingError::StoreOnFailedPool { .. }
            | PairingError::EdgeRelaysToFailedSite { .. }
            | PairingError::NotFailedOver(_)
            | PairingError::HomeUnreachable(_)
            | PairingError::Busy(_)
            | PairingError::CalledOff(_) => StatusCode::CONFLICT,
            PairingError::Backend { .. } | PairingError::NotServing(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}
