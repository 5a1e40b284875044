//! SIP over TCP and UDP for every role: framing, message helpers, digest authentication, the UDP transaction
//! cache and the transport that runs a [`Handler`].

pub mod codec;
pub mod digest;
pub mod error;
pub mod message;
pub mod transaction;
pub mod transport;

pub use codec::{Frame, FrameError, Framer, Limits};
pub use digest::{Authentication, Digest};
pub use error::{Rejection, RequestError, TransportError};
pub use transport::{
    run, BoxFuture, Flow, Handler, Listeners, Peer, Reply, Transport, TransportConfig,
    TransportCounts,
};
