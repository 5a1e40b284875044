//! faultproxy: a Toxiproxy-compatible TCP fault proxy whose seed really makes its randomness
//! reproducible, and whose API stays responsive while proxies carry heavy traffic.
//!
//! Modules:
//! - `api`: the Toxiproxy 2.x HTTP API (axum) over the registry.
//! - `error`: [`Error`] for running the server, [`ApiError`] for one API call (Toxiproxy's texts).
//! - `link`: one direction of one connection: plain copy loop, or toxics applied chunk by chunk.
//! - `model`: proxies and toxics as the API writes them in JSON, and their parsing.
//! - `proxy`: a proxy's data plane: listener, upstream dial, both directions, cut on stop.
//! - `registry`: the control plane: proxies by name and every API operation on them.
//! - `splice`: the no-toxic path on Linux: socket → pipe → socket inside the kernel.
//! - `seed`: the seed and the per-(proxy, toxic, connection) random streams drawn from it.
//! - `toxic`: which toxics act on a direction, their state, and the plan for each chunk.
//! - [`tunnel`]: the harness's way into a run's networks (`CONNECT host:port`, `RESOLVE name`); not Toxiproxy.
//!
//! Words: a *proxy* listens and forwards to its *upstream*; a *connection* is one accepted client
//! with its upstream socket; each connection has two *directions* (*streams*): upstream (client →
//! server) and downstream (server → client); a *toxic* acts on one stream of every connection of a
//! proxy with probability *toxicity*; the connection *ordinal* counts a proxy's accepted
//! connections from 0.
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
