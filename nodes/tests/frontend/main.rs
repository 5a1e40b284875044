//! In-process tests of the Front End over real sockets on 127.0.0.1, one module per topic.

mod contacts;
mod im;
mod malformed;
mod overload;
mod presence;
mod registrar;
mod support;
mod transport;
