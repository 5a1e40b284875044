//! One Edge server's settings ([`EdgeConfig`]) and state ([`Edge`]): its next hop, the pools it relays to, its
//! counters. [`super::relay`] relays one client's connection with it; [`super::server`] serves it.

use crate::director::node::{NodeError, NodeIdentity, Resolver};
use crate::sip::codec::Limits;
use crate::sip::TransportConfig;
use crate::slots::{Slot, Slots};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Settings of one Edge server.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub identity: NodeIdentity,
    pub resolver: Resolver,
    /// How long opening a connection to one server of the next hop may take before the next address is tried.
    pub connect_timeout: Duration,
    /// A client connection with no byte for this long is closed (clients send keep-alives well within it).
    pub idle_timeout: Duration,
    /// A client connection none of whose requests has gone upstream this long after it was accepted is closed, so a
    /// connection that says nothing holds its place among `clients_max` only this long.
    pub first_message_timeout: Duration,
    /// Client connections relayed at once; one more is closed as soon as it is accepted.
    pub clients_max: usize,
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
            first_message_timeout: Duration::from_secs(30),
            clients_max: 10_000,
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
    /// Client connections relayed now, at most `clients_max`.
    clients: Slots,
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
            clients: Slots::default(),
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

    /// Client connections relayed now (at most [`EdgeConfig::clients_max`]).
    pub fn clients(&self) -> usize {
        self.clients.taken()
    }

    /// A place for one more client connection, held while it is relayed; `None` when `clients_max` are.
    pub(crate) fn admit_client(&self) -> Option<Slot> {
        self.clients.take(self.config.clients_max)
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
