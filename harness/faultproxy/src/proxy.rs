//! The data plane of one proxy: a listener that accepts clients, dials the upstream for each, and
//! carries both directions through [`link::pump`]. Runs on the data-plane runtime only.
//!
//! A listening period ends when its stop sender is dropped (`disable`, the opposite of `enable`, or
//! deletion): the listener closes, every connection of the period is cut, and the period's task
//! finishes only once all of them are gone, so the API answers after the fact, not before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::link::{self, Finish, Replies};
use crate::model::{Stream, Toxic};
use crate::toxic::{DirectionKey, DirectionToxics, Ending};

/// What a proxy's connections share with the control plane for the proxy's whole life.
#[derive(Debug)]
pub struct ProxyShared {
    pub name: String,
    pub seed: u64,
    /// The toxic list; live connections follow every change.
    pub toxics: watch::Sender<Arc<[Toxic]>>,
    /// Counts accepted connections: the ordinal that keys each connection's random streams.
    pub next_ordinal: AtomicU64,
}

impl ProxyShared {
    pub fn new(name: String, seed: u64) -> ProxyShared {
        ProxyShared {
            name,
            seed,
            toxics: watch::Sender::new(Arc::from(Vec::new())),
            next_ordinal: AtomicU64::new(0),
        }
    }
}

/// Accepts until `stop` closes, then cuts every connection and returns when all are gone.
pub async fn listen(
    listener: std::net::TcpListener,
    upstream: Arc<str>,
    shared: Arc<ProxyShared>,
    mut stop: watch::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(proxy = %shared.name, %err, "failed to register the listener");
            return;
        }
    };
    // Each connection holds a sender; when all are dropped, `recv` returns None: all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let ordinal = shared.next_ordinal.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(proxy = %shared.name, %peer, ordinal, "accepted");
                    let connection = connect(
                        client, upstream.clone(), shared.clone(), ordinal, stop.clone(),
                    );
                    let alive = alive_tx.clone();
                    tokio::spawn(async move {
                        connection.await;
                        drop(alive);
                    });
                }
                Err(err) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(proxy = %shared.name, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

async fn connect(
    client: TcpStream,
    upstream: Arc<str>,
    shared: Arc<ProxyShared>,
    ordinal: u64,
    mut stop: watch::Receiver<()>,
) {
    let server = tokio::select! {
        _ = stop.changed() => return,
        server = TcpStream::connect(&*upstream) => server,
    };
    let mut client = client;
    let mut server = match server {
        Ok(server) => server,
        Err(err) => {
            // Toxiproxy closes the client when the upstream cannot be reached.
            tracing::debug!(proxy = %shared.name, %upstream, %err, "upstream unreachable");
            return;
        }
    };
    // Small writes must not wait for Nagle: the proxy should add no latency of its own.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let ending = tokio::select! {
        _ = stop.changed() => Ending::Close,
        ending = carry(&mut client, &mut server, &shared, ordinal) => ending,
    };
    if ending == Ending::Reset {
        // SO_LINGER 0 turns the close into an RST: the peers see "connection reset".
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    tracing::debug!(proxy = %shared.name, ordinal, ?ending, "connection ended");
}

/// Runs both directions; returns when both passed their close on or one ended the connection.
async fn carry(
    client: &mut TcpStream,
    server: &mut TcpStream,
    shared: &ProxyShared,
    ordinal: u64,
) -> Ending {
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let direction = |stream| {
        DirectionToxics::new(DirectionKey {
            seed: shared.seed,
            proxy: shared.name.clone(),
            connection_ordinal: ordinal,
            stream,
        })
    };
    let (upstream_replies, downstream_replies) = Replies::pair();
    let upstream = link::pump(
        client_read,
        server_write,
        shared.toxics.subscribe(),
        direction(Stream::Upstream),
        upstream_replies,
    );
    let downstream = link::pump(
        server_read,
        client_write,
        shared.toxics.subscribe(),
        direction(Stream::Downstream),
        downstream_replies,
    );
    tokio::pin!(upstream, downstream);
    let (mut upstream_done, mut downstream_done) = (false, false);
    while !(upstream_done && downstream_done) {
        let finish = tokio::select! {
            finish = &mut upstream, if !upstream_done => { upstream_done = true; finish }
            finish = &mut downstream, if !downstream_done => { downstream_done = true; finish }
        };
        if let Finish::End(ending) = finish {
            return ending;
        }
    }
    Ending::Close
}
