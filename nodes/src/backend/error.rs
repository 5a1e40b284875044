//! Errors of the Back End, per boundary: the store, the peer wire, and what a caller of the Back End acts on.

use std::path::PathBuf;

/// Why the SQLite store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("create data directory {0}: {1}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("append lsn {got}: the log expects lsn {expected}")]
    Gap { expected: u64, got: u64 },
    #[error("read the store: {0}")]
    Corrupt(String),
    #[error("run a store task: {0}")]
    Task(String),
}

/// Why a request to a peer (Back End node or witness) failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connect to {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    #[error("talk to {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("hear from {0} within {1} ms")]
    Timeout(String, u64),
    #[error("read a frame over the limit of {0} bytes")]
    FrameTooLarge(usize),
    #[error("decode a message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("understand the answer from {0}: {1}")]
    Unexpected(String, String),
}

/// What a caller of the Back End (a Front End, an operator) acts on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("find a serving principal among {tried:?}: {last}")]
    NoPrincipal { tried: Vec<String>, last: String },
    #[error("commit: the node is not a serving principal ({0})")]
    Unavailable(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("peer: {0}")]
    Peer(#[from] PeerError),
    #[error("read the cluster description: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("find Back End pool `{0}` in the cluster description")]
    UnknownPool(String),
    #[error("bind or serve: {0}")]
    Io(#[from] std::io::Error),
}
