//! Integration tests of faultproxy, in-process and on loopback only. One binary, one module per
//! topic; names read as claims.

mod api;
mod binary;
mod client;
mod responsiveness;
mod seed;
mod sip;
mod support;
mod toxics;
mod udp;
