//! A pooled Front End, put together: its configuration from the cluster description, its listeners, `build`,
//! `serve` and `run_node` (what `poolnode frontend` runs in cluster mode), and the [`Local`] side the pool calls.
//! The standalone Front End's counterpart is [`super::standalone`].

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use super::call_state::CallSettings;
use super::error::{FrontEndError, PoolError};
use super::pool::{BackendLink, Local, Pool, PoolSettings};
use super::server::{FrontEnd, FrontEndConfig};
use super::users::Credentials;
use crate::admin::AdminApi;
use crate::cluster::ClusterConfig;
use crate::frontend::store::{UserView, Write};
use crate::pairing::host::HostFuture;
use crate::pairing::{Host, Pairing, PairingConfig, PairingError};
use crate::sip::{BoxFuture, Listeners, Peer};

/// The Front End settings a pool member takes from the cluster description: its pool's users, a digest key shared
/// by the pool (a challenge from one Front End is answered at another), and the profile's registration timers.
pub fn frontend_config(cluster: &ClusterConfig, pool: &str) -> FrontEndConfig {
    let expires_max = Duration::from_millis(cluster.timings.registration_expiry_ms);
    FrontEndConfig {
        // The pair's users too: this pool is their backup registrar (the pairing decides when they are served).
        credentials: Credentials::from_pairs(
            cluster
                .users
                .iter()
                .filter(|u| {
                    u.home == pool
                        || cluster.pool(pool).and_then(|p| p.pair.as_ref()) == Some(&u.home)
                })
                .map(|u| (u.name.clone(), u.password.clone())),
        ),
        nonce_secret: format!("{}/{}/{}", cluster.name, pool, cluster.admin_token),
        expires_max,
        expires_default: expires_max.min(Duration::from_secs(3600)),
        keep_alive: Duration::from_millis(cluster.timings.keep_alive_timeout_ms),
        ..FrontEndConfig::default()
    }
}

/// A pooled Front End's whole configuration.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub frontend: FrontEndConfig,
    pub pool: PoolSettings,
}

/// The sockets a pooled Front End serves on.
pub struct PoolListeners {
    /// SIP, TCP and UDP.
    pub sip: Listeners,
    /// Peer links from the pool's other Front Ends.
    pub peer: TcpListener,
    /// The HTTP admin API, when served.
    pub admin: Option<TcpListener>,
}

impl PoolListeners {
    /// Binds SIP, peer and (optionally) admin addresses.
    pub async fn bind(
        sip: SocketAddr,
        peer: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> Result<Self, PoolError> {
        let bind_error = |what, addr| move |source| PoolError::Bind { what, addr, source };
        Ok(Self {
            sip: Listeners::bind(sip).await.map_err(bind_error("sip", sip))?,
            peer: TcpListener::bind(peer)
                .await
                .map_err(bind_error("peer", peer))?,
            admin: match admin {
                Some(addr) => Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(bind_error("admin", addr))?,
                ),
                None => None,
            },
        })
    }
}

/// Stops the node's tasks however `serve` ends, including when its task is aborted (a test's kill).
struct StopOnDrop(Arc<Pool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A pooled Front End ready to serve (tests keep it to read its state).
pub fn build(config: PoolConfig) -> Arc<FrontEnd> {
    let pool = Arc::new(Pool::new(config.pool));
    let frontend = FrontEnd::pooled(config.frontend, pool.clone());
    let local: Weak<dyn Local> = Arc::downgrade(&frontend) as Weak<dyn Local>;
    pool.attach(local);
    frontend
}

/// Serves a pooled Front End on `listeners` until `shutdown` completes.
pub async fn serve(
    listeners: PoolListeners,
    frontend: Arc<FrontEnd>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    let pool = frontend
        .pool()
        .cloned()
        .expect("serve needs a pooled Front End (see `build`)");
    let _stop = StopOnDrop(pool.clone());
    pool.start(listeners.peer);
    if let Some(admin) = listeners.admin {
        let api = admin_api(&frontend, &pool);
        pool.spawn(async move {
            if let Err(error) = api.serve(admin, std::future::pending()).await {
                tracing::error!(%error, "admin API stopped");
            }
        });
    }
    if let Some(backend) = pool.settings().backend.clone() {
        let mut mode = backend.gate.subscribe();
        let weak = Arc::downgrade(&frontend);
        pool.spawn(async move {
            // One turn per mode change; ends with the node.
            while mode.changed().await.is_ok() {
                let on = *mode.borrow_and_update();
                tracing::info!(resiliency_mode = on, "back end availability changed");
                let Some(frontend) = weak.upgrade() else {
                    return;
                };
                frontend.tell_resiliency(on);
            }
        });
    }
    if let Some(pairing) = frontend.pairing().cloned() {
        pool.spawn(pairing.run());
    }
    super::dispatch::serve(listeners.sip, frontend, shutdown).await
}

/// The `/status` document of a pooled Front End: its pool's, what its SIP side holds (accepted connections, calls),
/// and the pairing's section in a paired pool.
pub fn status(frontend: &FrontEnd) -> Value {
    let Some(pool) = frontend.pool() else {
        return Value::Null;
    };
    let mut status = pool.status();
    status["sip_connections"] = frontend.config.transport.counts.connections().into();
    status["calls_held"] = frontend.calls_held().into();
    if let Some(pairing) = frontend.pairing() {
        status["pairing"] = pairing.status();
    }
    status
}

/// The admin API of a pooled Front End: its `/status` and `quorum-recovery`, and a paired pool's commands
/// (pool-failover, pool-failback, store-failover, backup-sync).
fn admin_api(frontend: &Arc<FrontEnd>, pool: &Arc<Pool>) -> AdminApi {
    let weak = Arc::downgrade(frontend);
    let api = pool.admin_api(move || weak.upgrade().map_or(Value::Null, |f| status(&f)));
    match frontend.pairing().cloned() {
        Some(pairing) => pairing.admin_commands(api),
        None => api,
    }
}

/// Gives `frontend` its pool's pairing (backup registrar, backup service, failover and fencing); `serve` runs it.
pub fn pair(frontend: &Arc<FrontEnd>, config: PairingConfig) -> Result<Arc<Pairing>, PairingError> {
    let host: Weak<dyn Host> = Arc::downgrade(frontend) as Weak<dyn Host>;
    let pairing = crate::pairing::attach(host, config)?;
    frontend.set_pairing(pairing.clone());
    Ok(pairing)
}

/// Serves a pooled Front End built from `config` until `shutdown` completes.
pub async fn run(
    listeners: PoolListeners,
    config: PoolConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    serve(listeners, build(config), shutdown).await
}

/// What `poolnode frontend` (cluster mode) was asked.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's name; `POOLNODE_NODE` when `None`.
    pub node: Option<String>,
    pub sip: SocketAddr,
    pub peer: SocketAddr,
    pub admin: SocketAddr,
    /// Peer addresses that override the cluster description's (`name`, `host:port`): tests run several nodes on
    /// one host.
    pub peers: Vec<(String, String)>,
    /// No authentication: any user may register (SIP tools and benchmarks).
    pub open: bool,
}

/// Cluster mode: reads the cluster description from `POOLNODE_CLUSTER`, finds this node's pool, binds, prints the
/// ready line (`poolnode frontend ready sip=<addr>`) and serves until `shutdown` completes.
pub async fn run_node(
    options: NodeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), PoolError> {
    let cluster = ClusterConfig::from_env()?;
    let node = match options.node {
        Some(node) => node,
        None => std::env::var(crate::cluster::NODE_ENV)
            .map_err(|_| crate::cluster::ClusterError::UnknownNode(String::new()))?,
    };
    let mut settings = PoolSettings::from_cluster(&cluster, &node)?;
    settings.peer_addresses.extend(options.peers);
    if let Some(backend_pool) = cluster.pool(&settings.pool).and_then(|p| p.backend.clone()) {
        let client = crate::backend::BackendClient::for_pool(&cluster, &node, &backend_pool)?;
        settings.use_backend(BackendLink::new(
            client,
            &settings.pool,
            &cluster.timings,
            settings.heartbeat_interval,
            settings.failure_timeout,
        ));
    }
    settings.calls =
        CallSettings::from_cluster(&cluster, &settings.pool, crate::director::Resolver::dns());
    let mut frontend = frontend_config(&cluster, &settings.pool);
    if options.open {
        frontend.credentials = Credentials::open();
    }
    let config = PoolConfig {
        frontend,
        pool: settings,
    };
    let listeners = PoolListeners::bind(options.sip, options.peer, Some(options.admin)).await?;
    let addr = listeners
        .sip
        .local_addr()
        .map_err(|source| PoolError::Bind {
            what: "sip",
            addr: options.sip,
            source,
        })?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", crate::frontend::standalone::ready_line(addr));
        let _ = stdout.flush();
    }
    let pool_name = config.pool.pool.clone();
    let frontend = build(config);
    if cluster.pool(&pool_name).is_some_and(|p| p.pair.is_some()) {
        // A paired pool: backup registrar, backup service, failover and fencing.
        let pairing = crate::pairing::PairingConfig {
            cluster: Arc::new(cluster.clone()),
            pool: pool_name,
            node,
        };
        if let Err(error) = pair(&frontend, pairing) {
            tracing::error!(%error, "pool pairing not started");
        }
    }
    Ok(serve(listeners, frontend, shutdown).await?)
}

impl Local for FrontEnd {
    fn deliver(
        self: Arc<Self>,
        user: String,
        contact: String,
        message: String,
        timeout: Duration,
    ) -> BoxFuture<(u16, String)> {
        Box::pin(async move { self.deliver_local(&user, &contact, &message, timeout).await })
    }

    fn ring(
        self: Arc<Self>,
        from: String,
        user: String,
        contact: String,
        message: String,
        timeout_ms: u64,
    ) -> BoxFuture<Option<String>> {
        Box::pin(async move {
            self.ring_here(&from, &user, &contact, &message, timeout_ms)
                .await
        })
    }

    fn relay(
        self: Arc<Self>,
        call_id: String,
        toward_client: bool,
        message: String,
        timeout_ms: u64,
    ) -> BoxFuture<Option<String>> {
        Box::pin(async move {
            self.call_relay_here(&call_id, toward_client, &message, timeout_ms)
                .await
        })
    }

    fn changed_here(&self, user: &str) {
        FrontEnd::changed_here(self, user);
    }

    fn changed(&self, user: &str) {
        FrontEnd::changed(self, user);
    }

    fn send_everyone_away(&self) {
        let Some(pool) = self.pool() else {
            return;
        };
        let pool = pool.settings().pool.clone();
        for (user, contact, peer) in self.locations.all() {
            let body = crate::pairing::gate::notice_body(false, &pool, Some(&pool));
            tokio::spawn(async move {
                if let Some(notice) = crate::pairing::gate::notice(&user, &contact, body) {
                    let _ = peer.request(notice, Duration::from_secs(5)).await;
                }
            });
        }
    }
}

impl Host for FrontEnd {
    fn view<'a>(
        &'a self,
        user: &'a str,
        now_unix_ms: u64,
    ) -> HostFuture<'a, Result<UserView, String>> {
        Box::pin(async move {
            FrontEnd::view(self, user, now_unix_ms)
                .await
                .map_err(|r| r.0)
        })
    }

    fn commit<'a>(
        &'a self,
        user: &'a str,
        writes: Vec<Write>,
        now_unix_ms: u64,
    ) -> HostFuture<'a, Result<(), String>> {
        Box::pin(async move {
            FrontEnd::commit(self, user, writes, now_unix_ms)
                .await
                .map(|_| ())
                .map_err(|e| e.reason().to_owned())
        })
    }

    fn flows_of(&self, user: &str) -> Vec<(String, Peer)> {
        self.locations.flows_of(user)
    }

    fn forget_flows(&self, user: &str) {
        self.locations.remove_all(user);
    }

    fn pool_serving(&self) -> bool {
        self.pool().is_none_or(|p| p.quorum_state().serving())
    }

    fn peer_alive(&self, node: &str) -> bool {
        self.pool().is_some_and(|p| p.peer_alive(node))
    }
}
