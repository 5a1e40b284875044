//! What the Director, Edge, Mediation and PSTN gateway roles share as nodes: who the node is in the cluster
//! ([`NodeIdentity`]), how a pool or node name becomes addresses ([`Resolver`]), the sockets a role serves on
//! ([`RoleListeners`]), the command-line options every one of them takes ([`RoleArgs`]) and serving SIP plus the
//! admin API until shutdown ([`serve`]).
//!
//! It lives in `director` because these four roles were built together and the crate has no shared role
//! module yet; nothing in it is Director-specific.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::AdminApi;
use crate::cluster::{ClusterConfig, ClusterError, PoolConfig, NODE_ENV};
use crate::sip::{Handler, Listeners, TransportConfig, TransportError};

/// Why a role could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("read the cluster description: {0}")]
    Cluster(#[from] ClusterError),
    #[error("name this node: give --node or set {NODE_ENV}")]
    NoNodeName,
    #[error("run node `{node}` as {expected}: its pool `{pool}` has role `{role}`")]
    WrongRole {
        node: String,
        pool: String,
        role: String,
        expected: &'static str,
    },
    #[error("run pool `{pool}`: {what}")]
    Incomplete { pool: String, what: String },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("parse --resolve `{0}`: expected name=ip:port[,ip:port…]")]
    BadResolve(String),
    #[error("serve SIP: {0}")]
    Transport(#[from] TransportError),
    #[error("serve the admin API: {0}")]
    Admin(#[source] std::io::Error),
}

/// This node's place in the cluster: the description, its own name and its pool.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub cluster: Arc<ClusterConfig>,
    pub node: String,
    pub pool: String,
}

impl NodeIdentity {
    /// Finds `node` in `cluster` and checks that its pool has `role` (the name in [`PoolConfig::role`]).
    pub fn new(
        cluster: Arc<ClusterConfig>,
        node: &str,
        role: &'static str,
    ) -> Result<Self, NodeError> {
        let pool = cluster.pool_of(node)?;
        if pool.role != role {
            return Err(NodeError::WrongRole {
                node: node.to_owned(),
                pool: pool.name.clone(),
                role: pool.role.clone(),
                expected: role,
            });
        }
        let pool = pool.name.clone();
        Ok(Self {
            cluster,
            node: node.to_owned(),
            pool,
        })
    }

    /// This node's pool.
    pub fn pool_config(&self) -> &PoolConfig {
        self.cluster
            .pool(&self.pool)
            .expect("NodeIdentity::new found the pool in this same description")
    }

    /// Where this node reaches pool or node `to` on `port`: through the fault proxy when a route says so.
    pub fn address(&self, to: &str, port: u16) -> String {
        self.cluster.address(&self.pool, to, port)
    }
}

/// Turns `host:port` into socket addresses. A pool name resolves by DNS to all of its servers inside the run's
/// networks; tests (and runs without that DNS) pin names to addresses instead.
///
/// Like a SIP proxy's resolver (RFC 3263 section 4.3; Kamailio's `dst_blacklist`) it remembers two things, shared by
/// its clones: the last DNS answer of each name, used when the name stops resolving (the networks' DNS does not
/// answer at once for a name none of whose servers runs), and the addresses that refused a connection lately, which
/// are skipped for [`DOWN_KEPT`] so that a dead pool costs one connect timeout, not one per request.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pinned: HashMap<String, Vec<SocketAddr>>,
    answers: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    down: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
}

/// One DNS look-up of a name never answered before is over within this, or the name counts as unresolvable for
/// this attempt.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The same for a name with an earlier answer, which then stands.
const LOOKUP_AGAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an address that did not accept a connection is skipped.
pub const DOWN_KEPT: Duration = Duration::from_secs(5);

impl Resolver {
    /// DNS only.
    pub fn dns() -> Self {
        Self::default()
    }

    /// `host` (any port) resolves to `addrs`, in this order, instead of asking DNS.
    pub fn pin(mut self, host: &str, addrs: Vec<SocketAddr>) -> Self {
        self.pinned.insert(host.to_owned(), addrs);
        self
    }

    /// Parses `name=ip:port[,ip:port…]` (the `--resolve` option).
    pub fn pin_spec(self, spec: &str) -> Result<Self, NodeError> {
        let bad = || NodeError::BadResolve(spec.to_owned());
        let (name, list) = spec.split_once('=').ok_or_else(bad)?;
        let addrs = list
            .split(',')
            .map(|a| a.trim().parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad())?;
        if name.trim().is_empty() || addrs.is_empty() {
            return Err(bad());
        }
        Ok(self.pin(name.trim(), addrs))
    }

    /// Every address of `target` (`host:port`), starting at a random one so the servers of a pool share the
    /// load; empty when the name does not resolve.
    pub async fn resolve(&self, target: &str) -> Vec<SocketAddr> {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(target)
            .trim_matches(['[', ']']);
        let mut addrs = if let Some(pinned) = self.pinned.get(host) {
            pinned.clone()
        } else if let Ok(addr) = target.parse::<SocketAddr>() {
            vec![addr]
        } else {
            let earlier = lock(&self.answers).get(target).cloned();
            let timeout = if earlier.is_some() {
                LOOKUP_AGAIN_TIMEOUT
            } else {
                LOOKUP_TIMEOUT
            };
            match tokio::time::timeout(timeout, tokio::net::lookup_host(target)).await {
                Ok(Ok(found)) => {
                    let found: Vec<SocketAddr> = found.collect();
                    if !found.is_empty() {
                        lock(&self.answers).insert(target.to_owned(), found.clone());
                    }
                    found
                }
                _ => earlier.unwrap_or_default(),
            }
        };
        if addrs.len() > 1 {
            let start = rand::thread_rng().gen_range(0..addrs.len());
            addrs.rotate_left(start);
        }
        addrs
    }

    /// Connects to the first address of `target` that accepts, trying each in turn (a pool name's servers).
    pub async fn connect(
        &self,
        target: &str,
        connect_timeout: Duration,
    ) -> Option<(TcpStream, SocketAddr)> {
        // Bounded: one attempt per address not down lately.
        for addr in self.resolve(target).await {
            let down_lately = {
                let mut down = lock(&self.down);
                down.retain(|_, since| since.elapsed() < DOWN_KEPT);
                down.contains_key(&addr)
            };
            if down_lately {
                continue;
            }
            match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, addr));
                }
                _ => {
                    lock(&self.down).insert(addr, Instant::now());
                }
            }
        }
        None
    }
}

/// The sockets a role serves on: SIP (TCP and UDP at one address) and the HTTP admin API.
pub struct RoleListeners {
    pub sip: Listeners,
    pub admin: TcpListener,
}

impl RoleListeners {
    pub async fn bind(sip: SocketAddr, admin: SocketAddr) -> Result<Self, NodeError> {
        let sip_listeners = Listeners::bind(sip)
            .await
            .map_err(|source| NodeError::Bind { addr: sip, source })?;
        let admin = TcpListener::bind(admin)
            .await
            .map_err(|source| NodeError::Bind {
                addr: admin,
                source,
            })?;
        Ok(Self {
            sip: sip_listeners,
            admin,
        })
    }

    /// The SIP address (TCP and UDP share it).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
            .local_addr()
            .expect("a bound listener has a local address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has a local address")
    }
}

/// The options `poolnode director|edge|mediation|pstn-gateway` take.
#[derive(Debug, Clone, clap::Args)]
pub struct RoleArgs {
    /// This node's name in the cluster description (default: $POOLNODE_NODE).
    #[arg(long)]
    pub node: Option<String>,
    /// SIP address, TCP and UDP.
    #[arg(long, default_value = "0.0.0.0:5060")]
    pub listen_sip: SocketAddr,
    /// HTTP admin API (`GET /status`, `POST /admin/<command>`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen_admin: SocketAddr,
    /// Pin a pool or node name to addresses instead of DNS: `name=ip:port[,ip:port…]` (repeatable).
    #[arg(long = "resolve", value_name = "NAME=ADDRS")]
    pub resolve: Vec<String>,
}

impl RoleArgs {
    /// The node name: `--node`, else `$POOLNODE_NODE`.
    pub fn node_name(&self) -> Result<String, NodeError> {
        self.node
            .clone()
            .or_else(|| std::env::var(NODE_ENV).ok())
            .ok_or(NodeError::NoNodeName)
    }

    pub fn resolver(&self) -> Result<Resolver, NodeError> {
        self.resolve
            .iter()
            .try_fold(Resolver::dns(), |r, spec| r.pin_spec(spec))
    }
}

/// Prints the one line the harness waits for: `poolnode <role> ready node=… sip=… admin=…`.
pub fn print_ready(role: &str, node: &str, listeners: &RoleListeners) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "poolnode {role} ready node={node} sip={} admin={}",
        listeners.sip_addr(),
        listeners.admin_addr()
    );
    let _ = stdout.flush();
}

/// Serves SIP with `handler` and the admin API until `shutdown` completes; both stop together.
pub async fn serve<H: Handler>(
    listeners: RoleListeners,
    handler: Arc<H>,
    transport: TransportConfig,
    admin: AdminApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(admin.serve(listeners.admin, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let result = crate::sip::run(listeners.sip, handler, transport, shutdown).await;
    let _ = stop_tx.send(true);
    // Graceful HTTP shutdown waits for open keep-alive connections; a prober holding one must not hold us.
    let abort = admin_task.abort_handle();
    match tokio::time::timeout(Duration::from_secs(2), admin_task).await {
        Ok(Ok(Err(e))) => return Err(NodeError::Admin(e)),
        Err(_) => abort.abort(),
        _ => {}
    }
    Ok(result?)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_that_refused_is_skipped_for_a_while_and_its_clones_know() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let r = Resolver::dns().pin("fe1", vec![addr]);
        let clone = r.clone();
        assert!(r
            .connect("fe1:5060", Duration::from_secs(1))
            .await
            .is_none());
        // Listening again: the address is still down for this resolver and its clones, so nothing dials it.
        let listener = TcpListener::bind(addr).await.unwrap();
        assert!(clone
            .connect("fe1:5060", Duration::from_secs(1))
            .await
            .is_none());
        let dialled = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(dialled.is_err(), "a down address was dialled");
        // A fresh resolver dials it.
        assert!(Resolver::dns()
            .pin("fe1", vec![addr])
            .connect("fe1:5060", Duration::from_secs(1))
            .await
            .is_some());
    }

    #[tokio::test]
    async fn pinned_names_resolve_to_their_addresses_and_literals_to_themselves() {
        let r = Resolver::dns()
            .pin_spec("fe1=127.0.0.1:7001,127.0.0.1:7002")
            .unwrap();
        let mut got = r.resolve("fe1:5060").await;
        got.sort();
        assert_eq!(
            got,
            vec![
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap()
            ]
        );
        assert_eq!(
            r.resolve("127.0.0.1:9").await,
            vec!["127.0.0.1:9".parse().unwrap()]
        );
        assert!(Resolver::dns().pin_spec("fe1").is_err());
        assert!(Resolver::dns().pin_spec("fe1=nope").is_err());
    }
}
