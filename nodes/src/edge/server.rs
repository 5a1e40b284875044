//! The Edge server: the only way in for remote users. It accepts their TCP connections and relays each one
//! ([`super::relay`]) to its next hop, the Director pool, or to the pool a request names. The next hop changes at
//! run time (`POST /admin/edge-next-hop`), for new upstream connections.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use rsip::{Method, Request};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::node::{Edge, EdgeConfig};
use super::relay;
use crate::admin::AdminApi;
use crate::director::node::{self, NodeError, NodeIdentity, RoleArgs, RoleListeners};
use crate::sip::message;
use crate::sip::{Handler, Listeners, Peer, Reply};

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
                while connections.try_join_next().is_some() {}
                let Some(slot) = edge.admit_client() else {
                    // At the cap: closed unread; the client tries another Edge server, as after a lost one.
                    drop(stream);
                    continue;
                };
                let relayed = relay::client_connection(stream, edge.clone(), stop.clone());
                connections.spawn(async move {
                    relayed.await;
                    drop(slot);
                });
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
