//! [`BackendClient`]: how a Front End talks to its Back End pool. It finds the serving principal among the pool's
//! nodes, follows a failover by itself (a refusal naming the new principal, or trying the other node), retries
//! within a budget, and fences stale principals by sending the highest epoch it has seen with every request.
//!
//! It also tracks availability: [`BackendClient::unavailable_since`] is set by the first request that found no
//! serving principal and cleared by the next one that did, which is what
//! [`super::resiliency::ResiliencyGate`] turns into resiliency mode after the grace period.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::BackendError;
use super::protocol::{PeerConn, Request, Response};
use super::server::peer_address;
use super::store::{Batch, UserRecord};
use crate::cluster::{ClusterConfig, Timings, PEER_PORT};

/// Rounds over all nodes per call, at most (the time budget usually ends it first).
const ROUNDS_MAX: usize = 1_000;

/// A commit's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub lsn: u64,
    pub epoch: u64,
    /// The principal that acknowledged it.
    pub node: String,
}

/// The Back End's quorum vote: the principal that gave it and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub epoch: u64,
    pub node: String,
}

/// The client's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// One request to one node.
    pub request_timeout: Duration,
    /// One call, over all nodes and retries: long enough to ride out an automatic failover.
    pub retry_budget: Duration,
    /// Pause between rounds over the nodes.
    pub retry_pause: Duration,
}

impl ClientSettings {
    /// From the timing profile: a request waits a partner timeout; a call rides out two (a failover takes one
    /// plus a heartbeat).
    pub fn from_timings(timings: &Timings) -> Self {
        let partner = Duration::from_millis(timings.be_partner_timeout_ms.max(50));
        ClientSettings {
            request_timeout: partner,
            retry_budget: partner * 3,
            retry_pause: partner / 5,
        }
    }
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<PeerConn>,
    preferred: AtomicUsize,
    max_epoch: AtomicU64,
    settings: ClientSettings,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    unavailable_since: Option<Instant>,
    principal: Option<String>,
}

/// A Front End's handle on its Back End pool; cheap to clone.
#[derive(Debug, Clone)]
pub struct BackendClient {
    inner: Arc<Inner>,
}

impl BackendClient {
    /// A client for the nodes `(name, "host:port")` of one Back End pool.
    pub fn new(nodes: Vec<(String, String)>, settings: ClientSettings) -> Self {
        assert!(!nodes.is_empty(), "a Back End pool has at least one node");
        BackendClient {
            inner: Arc::new(Inner {
                nodes: nodes
                    .into_iter()
                    .map(|(name, address)| PeerConn::new(name, address))
                    .collect(),
                preferred: AtomicUsize::new(0),
                max_epoch: AtomicU64::new(0),
                settings,
                health: Mutex::new(Health::default()),
            }),
        }
    }

    /// The client node `from` (a Front End) uses for Back End pool `backend_pool`: its nodes' peer addresses
    /// (through the fault proxy where a route says so) and the cluster's timing profile.
    pub fn for_pool(
        cluster: &ClusterConfig,
        from: &str,
        backend_pool: &str,
    ) -> Result<Self, BackendError> {
        let pool = cluster
            .pool(backend_pool)
            .ok_or_else(|| BackendError::UnknownPool(backend_pool.to_string()))?;
        let nodes = pool
            .nodes
            .iter()
            .map(|n| (n.clone(), peer_address(cluster, from, n, PEER_PORT)))
            .collect();
        Ok(BackendClient::new(
            nodes,
            ClientSettings::from_timings(&cluster.timings),
        ))
    }

    /// Commits `batch` on the principal, following a failover; `Ok` only once principal and (if synchronized)
    /// mirror hold it durably. Batches of [`super::store::Op::PutUser`] are idempotent, so retrying after an
    /// unknown outcome is safe.
    pub async fn write(&self, batch: Batch) -> Result<Receipt, BackendError> {
        let response = self
            .call(move |min_epoch| Request::Commit {
                batch: batch.clone(),
                min_epoch,
            })
            .await?;
        match response {
            Response::Committed { lsn, epoch, node } => Ok(Receipt { lsn, epoch, node }),
            other => Err(unexpected(other)),
        }
    }

    /// One user's record from the principal.
    pub async fn load(&self, user: &str) -> Result<Option<UserRecord>, BackendError> {
        let user = user.to_string();
        match self
            .call(move |min_epoch| Request::LoadUser {
                user: user.clone(),
                min_epoch,
            })
            .await?
        {
            Response::User { record, .. } => Ok(record),
            other => Err(unexpected(other)),
        }
    }

    /// Every user homed on Front End pool `pool`: what a restarted Front End reloads.
    pub async fn load_all(&self, pool: &str) -> Result<Vec<UserRecord>, BackendError> {
        let pool = pool.to_string();
        match self
            .call(move |min_epoch| Request::LoadPool {
                pool: pool.clone(),
                min_epoch,
            })
            .await?
        {
            Response::Users { records, .. } => Ok(records),
            other => Err(unexpected(other)),
        }
    }

    /// The Back End's vote for a Front End pool with an even number of voters: `Some` when a serving principal
    /// answers yes. Asks each node once, without the retry budget: a quorum check must not wait out a failover.
    pub async fn vote(&self) -> Option<Vote> {
        let n = self.inner.nodes.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            let request = Request::Vote {
                min_epoch: self.epoch(),
            };
            if let Ok(Response::Vote {
                yes: true,
                epoch,
                node,
            }) = self.inner.nodes[i]
                .request(&request, self.inner.settings.request_timeout)
                .await
            {
                if epoch >= self.epoch() {
                    self.succeeded(i, epoch, &node);
                    return Some(Vote { epoch, node });
                }
            }
        }
        self.failed();
        None
    }

    /// Checks now whether a serving principal answers (updates [`Self::available`]).
    pub async fn probe(&self) -> bool {
        self.vote().await.is_some()
    }

    /// Whether the last call found a serving principal (true before the first call).
    pub fn available(&self) -> bool {
        self.unavailable_since().is_none()
    }

    /// Since when no call has found a serving principal.
    pub fn unavailable_since(&self) -> Option<Instant> {
        self.health().unavailable_since
    }

    /// The highest epoch this client has seen.
    pub fn epoch(&self) -> u64 {
        self.inner.max_epoch.load(Ordering::SeqCst)
    }

    /// The principal that answered last.
    pub fn principal(&self) -> Option<String> {
        self.health().principal.clone()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn succeeded(&self, index: usize, epoch: u64, node: &str) {
        self.inner.preferred.store(index, Ordering::Relaxed);
        self.inner.max_epoch.fetch_max(epoch, Ordering::SeqCst);
        let mut health = self.health();
        health.unavailable_since = None;
        health.principal = Some(node.to_string());
    }

    fn failed(&self) {
        let mut health = self.health();
        health.unavailable_since.get_or_insert_with(Instant::now);
        health.principal = None;
    }

    /// Sends `make(min_epoch)` to the principal: the preferred node first, the one a refusal names next, the
    /// others after, in rounds until the retry budget is spent.
    async fn call(&self, make: impl Fn(u64) -> Request) -> Result<Response, BackendError> {
        let settings = self.inner.settings;
        let deadline = Instant::now() + settings.retry_budget;
        let n = self.inner.nodes.len();
        let mut tried = Vec::new();
        let mut last = String::from("no node answered");
        let mut next = self.inner.preferred.load(Ordering::Relaxed) % n;
        for _round in 0..ROUNDS_MAX {
            let mut hint = None;
            for k in 0..n {
                let i = hint.take().unwrap_or((next + k) % n);
                let node = &self.inner.nodes[i];
                let request = make(self.epoch());
                match node.request(&request, settings.request_timeout).await {
                    Ok(Response::NotPrincipal {
                        node: name,
                        epoch,
                        principal,
                        reason,
                    }) => {
                        self.inner.max_epoch.fetch_max(epoch, Ordering::SeqCst);
                        last = format!("{name}: {reason}");
                        hint = principal
                            .and_then(|p| self.inner.nodes.iter().position(|c| c.name() == p));
                    }
                    Ok(Response::Error { reason }) => last = format!("{}: {reason}", node.name()),
                    Ok(response) => {
                        let (epoch, name) = match &response {
                            Response::Committed { epoch, node, .. } => (*epoch, node.clone()),
                            Response::User { epoch, .. } | Response::Users { epoch, .. } => {
                                (*epoch, node.name().to_string())
                            }
                            _ => (self.epoch(), node.name().to_string()),
                        };
                        self.succeeded(i, epoch, &name);
                        return Ok(response);
                    }
                    Err(e) => last = e.to_string(),
                }
                if !tried.iter().any(|t| t == node.name()) {
                    tried.push(node.name().to_string());
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            next = (next + 1) % n;
            tokio::time::sleep(settings.retry_pause).await;
        }
        self.failed();
        Err(BackendError::NoPrincipal { tried, last })
    }
}

fn unexpected(response: Response) -> BackendError {
    BackendError::Unavailable(format!("unexpected answer {response:?}"))
}
