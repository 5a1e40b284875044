//! Errors of the Front End.

use std::path::PathBuf;

/// Why a users file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("read users file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse users file {path}: line {line} is not `user:password`")]
    Line { path: PathBuf, line: usize },
}

/// Why a Front End could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrontEndError {
    #[error("bind {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("load the users")]
    Users(#[from] UsersFileError),
    #[error("run the SIP transport")]
    Transport(#[from] crate::sip::TransportError),
}

/// Why a call to another Front End of the pool got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("reach peer {peer}: the link is cut")]
    Cut { peer: String },
    #[error("hear from peer {peer}: the connection closed")]
    Closed { peer: String },
    #[error("hear from peer {peer} in time")]
    Timeout { peer: String },
    #[error("find peer {peer}: no address for it")]
    Unknown { peer: String },
    /// Refused before anything was sent: the connection's queue holds `queue_len` frames already.
    #[error("queue a call to peer {peer}: its queue is full")]
    QueueFull { peer: String },
}

/// Why a pooled Front End could not start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("find this node in the cluster description")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("find pool `{0}` with role frontend in the cluster description")]
    NotAFrontEndPool(String),
    #[error("bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve the admin API")]
    Admin(#[source] std::io::Error),
    #[error("run the Front End")]
    FrontEnd(#[from] FrontEndError),
    #[error("find the pool's Back End")]
    Backend(#[from] crate::backend::BackendError),
}
