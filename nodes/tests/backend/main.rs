//! In-process tests of the Back End: a principal, a mirror and (optionally) a witness on 127.0.0.1, every peer
//! connection through a fault layer (see `support`), the fast timing profile. One module per topic; each quorum
//! rule is its own test.

mod catch_up;
mod disk;
mod failover;
mod frontend;
mod operator;
mod peer_port;
mod quorum;
mod support;
