//! faultproxy: a Toxiproxy-compatible fault proxy for TCP and UDP whose seed really makes its
//! randomness reproducible, whose API stays responsive while proxies carry heavy traffic, and whose
//! SIP toxics act on whole SIP messages.
//!
//! Extensions of the Toxiproxy API (its clients keep working; `README.md` has the JSON):
//! - `"protocol": "udp"` in the body of `POST /proxies` (and `/populate`) makes a UDP proxy; the
//!   default is `"tcp"`. Every proxy view shows its `protocol`.
//! - Datagram toxics, UDP only: `loss` and `duplicate` (`probability`), `loss_burst` (Gilbert-Elliott:
//!   `p`, `r`, `loss_good`, `loss_bad`), `reorder` (`probability`, `delay` ms), `corrupt`
//!   (`probability`, one bit flipped). `latency` and `bandwidth` act on both protocols; Toxiproxy's
//!   other types are TCP only. A type added to a proxy it does not act on gets a 400 naming both.
//! - SIP toxics, both protocols: `sip_drop`, `sip_delay` (`delay` ms), `sip_respond` (`code`,
//!   `reason`, `retry_after`), `sip_hold`; each picks messages by `method`, `status`,
//!   `cseq_method`, `header` (`{"name","contains"}`), then `every`, `first`, `probability`.
//!
//! Modules:
//! - `api`: the Toxiproxy 2.x HTTP API (axum) over the registry.
//! - `batch`: the UDP no-toxic path's batches: queued datagrams received together, sent with sendmmsg.
//! - `datagram`: the plan for one UDP datagram through a direction's toxics.
//! - `error`: [`Error`] for running the server, [`ApiError`] for one API call (Toxiproxy's texts).
//! - `kind`: every toxic type, its JSON attributes and defaults, and the protocols it acts on.
//! - `link`: one direction of one TCP connection: plain copy loop, or toxics applied chunk by chunk.
//! - `model`: proxies and toxics as the API writes them in JSON, and their parsing.
//! - `proxy`: a TCP proxy's data plane: listener, upstream dial, both directions, cut on stop.
//! - `registry`: the control plane: proxies by name and every API operation on them.
//! - `splice`: the TCP no-toxic path on Linux: socket → pipe → socket inside the kernel.
//! - `seed`: the seed and the per-(proxy, toxic, connection) random streams drawn from it.
//! - `sip`: SIP on the wire: heads, TCP framing, the response made on a server's behalf.
//! - `sip_rule`: how SIP toxics pick a message and what becomes of it.
//! - `toxic`: which toxics act on a direction, their state, and the plan for each TCP chunk.
//! - [`tunnel`]: the harness's way into a run's networks (`CONNECT host:port`, `RESOLVE name`); not Toxiproxy.
//! - `udp`: a UDP proxy's data plane: one socket, a flow per client, toxics and timed sends.
//!
//! Words: a *proxy* listens and forwards to its *upstream*; a *connection* is one accepted TCP
//! client with its upstream socket, a *flow* one UDP client source address with its own upstream
//! socket (it ends after a minute without datagrams); both count in the proxy's *ordinal* (from 0)
//! and have two *directions* (*streams*): upstream (client → server) and downstream (server →
//! client). A *toxic* acts on one stream of every connection or flow of a proxy with probability
//! *toxicity*. A *chunk* is what one TCP read gave, a *datagram* one UDP payload, a *message* one
//! whole SIP message (a datagram on UDP; framed by its head and `Content-Length` on TCP). A SIP
//! toxic's *rule* *matches* messages and *picks* some of them; a picked message is dropped,
//! delayed, answered (a *reply* goes back to its sender) or *held* until the toxic is removed,
//! when it is *released*.
//!
//! Threads: the API runs on the caller's runtime; the data plane on its own multi-thread runtime,
//! so bulk traffic cannot starve API tasks of a worker.

mod api;
mod batch;
mod datagram;
mod error;
mod kind;
mod link;
mod model;
mod proxy;
mod registry;
mod seed;
mod sip;
mod sip_rule;
#[cfg(target_os = "linux")]
mod splice;
mod toxic;
pub mod tunnel;
mod udp;

use std::future::Future;
use std::sync::Arc;

pub use api::VERSION;
pub use error::{ApiError, Error};
pub use model::{Protocol, ProxyConfig, ProxyView, Stream, ToxicView};
pub use seed::resolve_seed;

use registry::Registry;

/// A server: the data-plane runtime and the proxies on it, before and while the API serves.
pub struct Server {
    registry: Arc<Registry>,
    data: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Starts the data-plane runtime. `seed` None draws one; read it back with [`Server::seed`].
    pub fn new(seed: Option<u64>) -> Result<Server, Error> {
        let seed = resolve_seed(seed);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let data = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("faultproxy-data")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let registry = Arc::new(Registry::new(seed, data.handle().clone()));
        Ok(Server {
            registry,
            data: Some(data),
        })
    }

    pub fn seed(&self) -> u64 {
        self.registry.seed()
    }

    /// Creates or replaces proxies, as `POST /populate` does (used for `--config`).
    pub async fn populate(&self, proxies: Vec<ProxyConfig>) -> Result<Vec<ProxyView>, ApiError> {
        self.registry.populate(proxies).await
    }

    /// Serves the API on `api` until `shutdown` completes, then stops every proxy.
    pub async fn serve(
        mut self,
        api: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = api::router(self.registry.clone());
        let served = axum::serve(api, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve);
        self.registry.stop_all().await;
        if let Some(data) = self.data.take() {
            // Dropping a runtime inside async code panics; every proxy is already stopped.
            data.shutdown_background();
        }
        served
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            data.shutdown_background();
        }
    }
}

/// Runs a server with no proxies on `api` until `shutdown`: the whole server behind the binary.
pub async fn run(
    api: tokio::net::TcpListener,
    seed: Option<u64>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::new(seed)?.serve(api, shutdown).await
}

/// Reads a `--config` file: a JSON array of proxies, as `POST /populate` takes.
pub fn read_config(path: &str) -> Result<Vec<ProxyConfig>, Error> {
    let body = std::fs::read(path).map_err(|source| Error::ConfigRead {
        path: path.to_owned(),
        source,
    })?;
    ProxyConfig::parse_list(&body).map_err(Error::Config)
}
