//! The Edge server: the only way in for remote users. It accepts their TCP connections and relays each one
//! ([`super::relay`]) to its next hop, the Director pool, or to the pool a request names. The next hop changes at
//! run time (`POST /admin/edge-next-hop`), for new upstream connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use rsip::{Method, Request};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::relay;
use crate::admin::AdminApi;
use crate::director::node::{self, NodeError, NodeIdentity, Resolver, RoleArgs, RoleListeners};
use crate::sip::codec::Limits;
use crate::sip::message;
use crate::sip::{Handler, Listeners, Peer, Reply, TransportConfig};

/// Settings of one Edge server.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub identity: NodeIdentity,
    pub resolver: Resolver,
    /// How long opening a connection to one server of the next hop may take before the next address is tried.
    pub connect_timeout: Duration,
    /// A client connection with no byte for this long is closed (clients send keep-alives well within it).
    pub idle_timeout: Duration,
    /// How often a blank-line ping goes upstream, so the pool does not close an idle relayed connection.
    pub upstream_keepalive_interval: Duration,
    pub limits: Limits,
    /// The UDP side (which only answers OPTIONS: remote users come over TCP).
    pub transport: TransportConfig,
}

impl EdgeConfig {
    pub fn new(identity: NodeIdentity, resolver: Resolver) -> Self {
        Self {
            identity,
            resolver,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(900),
            upstream_keepalive_interval: Duration::from_secs(30),
            limits: Limits::default(),
            transport: TransportConfig::default(),
        }
    }
}

/// One Edge server.
pub struct Edge {
    pub config: EdgeConfig,
    next_hop: RwLock<String>,
    clients: AtomicUsize,
    relayed: AtomicU64,
}

impl Edge {
    /// An Edge server relaying to its pool's `next_hop`; an Edge pool without one cannot run.
    pub fn new(config: EdgeConfig) -> Result<Self, NodeError> {
        let next_hop = config
            .identity
            .pool_config()
            .next_hop
            .clone()
            .ok_or_else(|| NodeError::Incomplete {
                pool: config.identity.pool.clone(),
                what: "an Edge pool needs `next_hop` (its Director pool)".into(),
            })?;
        Ok(Self {
            config,
            next_hop: RwLock::new(next_hop),
            clients: AtomicUsize::new(0),
            relayed: AtomicU64::new(0),
        })
    }

    /// The Director pool new upstream connections go to.
    pub fn next_hop(&self) -> String {
        self.next_hop
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the next hop; refused unless `pool` is a Director pool of the cluster.
    pub fn set_next_hop(&self, pool: &str) -> Result<String, String> {
        match self.config.identity.cluster.pool(pool) {
            Some(p) if p.role == "director" => {
                let mut next_hop = self.next_hop.write().unwrap_or_else(|e| e.into_inner());
                Ok(std::mem::replace(&mut *next_hop, pool.to_owned()))
            }
            Some(p) => Err(format!(
                "`{pool}` is a {} pool; the next hop must be a Director pool",
                p.role
            )),
            None => Err(format!("`{pool}` is not a pool of the cluster")),
        }
    }

    /// The pool a request may name as its destination, from a URI's `host[:port]`: a Front End or Director pool
    /// by its name, or by the proxied address another pool reaches it at (a Director's redirect names that).
    /// Anything else is not relayed to: an Edge is no open relay into the networks.
    pub fn pool_named(&self, host_port: &str) -> Option<String> {
        let cluster = &self.config.identity.cluster;
        let reachable = |pool: &str| {
            cluster
                .pool(pool)
                .is_some_and(|p| p.role == "frontend" || p.role == "director")
        };
        let host = host_port.split(':').next().unwrap_or(host_port);
        if reachable(host) {
            return Some(host.to_owned());
        }
        cluster
            .routes
            .iter()
            .find(|r| r.address == host_port && reachable(&r.to))
            .map(|r| r.to.clone())
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub(crate) fn client_joined(&self) {
        self.clients.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_left(&self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// `/status`.
    pub fn status(&self) -> Value {
        json!({
            "role": "edge",
            "pool": self.config.identity.pool,
            "node": self.config.identity.node,
            "next_hop": self.next_hop(),
            "clients": self.clients(),
            "relayed_requests": self.relayed.load(Ordering::Relaxed),
        })
    }
}

/// The admin API: `/status` and `POST /admin/edge-next-hop {"next_hop": "<director pool>"}`.
pub fn admin_api(edge: &Arc<Edge>) -> AdminApi {
    let (for_status, for_command) = (edge.clone(), edge.clone());
    AdminApi::new(&edge.config.identity.cluster.admin_token, move || {
        for_status.status()
    })
    .command("edge-next-hop", move |body: Value| {
        let edge = for_command.clone();
        async move {
            let Some(pool) = body.get("next_hop").and_then(Value::as_str) else {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "the body must be {\"next_hop\": \"<director pool>\"}".to_owned(),
                ));
            };
            let previous = edge
                .set_next_hop(pool)
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            Ok(json!({"node": edge.config.identity.node, "previous": previous, "next_hop": pool}))
        }
    })
}

/// UDP at an Edge: remote users come over TCP (one relayed connection each); UDP answers OPTIONS only, so
/// tools probing the port get an answer.
struct UdpSide;

impl Handler for UdpSide {
    async fn handle(&self, request: Request, _peer: Peer) -> Reply {
        match request.method {
            Method::Ack => Reply::Nothing,
            Method::Options => Reply::Response(message::response(&request, 200, "OK")),
            _ => Reply::Response(message::response(
                &request,
                403,
                "Forbidden (Edge Relays TCP Only)",
            )),
        }
    }
}

/// Serves one Edge server on `listeners` until `shutdown` completes; every relayed connection closes then.
pub async fn run(
    listeners: RoleListeners,
    config: EdgeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let edge = Arc::new(Edge::new(config)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = {
        let mut stop = stop_rx.clone();
        tokio::spawn(admin_api(&edge).serve(listeners.admin, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let mut tasks = JoinSet::new();
    for listener in listeners.sip.tcp {
        tasks.spawn(accept_loop(listener, edge.clone(), stop_rx.clone()));
    }
    let udp = Listeners {
        tcp: Vec::new(),
        udp: listeners.sip.udp,
    };
    let transport = edge.config.transport.clone();
    let mut udp_stop = stop_rx.clone();
    tasks.spawn(async move {
        let _ = crate::sip::run(udp, Arc::new(UdpSide), transport, async move {
            let _ = udp_stop.wait_for(|s| *s).await;
        })
        .await;
    });
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let abort = admin.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), admin)
        .await
        .is_err()
    {
        abort.abort();
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                connections.spawn(relay::client_connection(stream, edge.clone(), stop.clone()));
                while connections.try_join_next().is_some() {}
            }
            _ = stop.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// `poolnode edge`: the cluster from `POOLNODE_CLUSTER`, binds, prints the ready line, serves until `shutdown`.
pub async fn run_node(
    args: RoleArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let cluster = Arc::new(crate::cluster::ClusterConfig::from_env()?);
    let identity = NodeIdentity::new(cluster, &args.node_name()?, "edge")?;
    let config = EdgeConfig::new(identity, args.resolver()?);
    let listeners = RoleListeners::bind(args.listen_sip, args.listen_admin).await?;
    node::print_ready("edge", &config.identity.node, &listeners);
    run(listeners, config, shutdown).await
}
