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
