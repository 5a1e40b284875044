//! [`Pairing`]: one Front End's share of its pool's pairing. It answers the Front End's questions (the gate), runs
//! three loops (heartbeat to the pair, maintenance, the backup service), serves the pairing section of `/status`
//! and the admin commands, and runs failover and failback. The pool's own lazy writes to its Back End and its
//! reload at formation are the Front End pool's (`frontend::pool::backend`); this module reads their backlog.
//!
//! **Failover of pool A to its pair B** (`pool-failover --pool A`, at any Front End of B):
//! 1. preconditions: the management store is not in A; no surviving Edge server relays to a Director in A's site;
//! 2. B's record says `failing-over` (persisted in B's Back End; every Front End of B reads it within a heartbeat
//!    and refuses A's users meanwhile), then B waits two heartbeats;
//! 3. A's users' records are loaded from B's copy (A's namespace in B's Back End) into B's routing groups;
//! 4. B's record says `pair_failed_over`, epoch + 1. A's users get full service at B, their changes go to B's
//!    Back End under A's name. A learns it is fenced from B's heartbeat answers and redirects its users to B.
//!
//! **Failback** (`pool-failback --pool A`, at B): A must answer its heartbeat; B's record says `failing-back` (A's
//! users refused), B writes every A user's current state to A's Back End, clears `pair_failed_over` (epoch + 1),
//! removes A's users' registrations and tells their clients to register at A. A sees the fence lifted, reloads
//! its users from its Back End (replacing what its routing groups held) and serves them again.
//!
//! **Fencing**: a Front End serves its own pool's users only once its pair has answered that it does not hold
//! them failed over, or once the pair has been silent for the failover interval (then there is no one to fence
//! it), and after it reloaded them from its Back End.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::backup::BackupStatus;
use super::error::PairingError;
use super::host::Host;
use super::record::PairRecord;
use super::watch::PairWatch;
use crate::backend::BackendClient;
use crate::cluster::{ClusterConfig, Timings};

/// Records per Back End commit when copying many users.
pub(super) const USERS_PER_BATCH: usize = 200;
/// How long a client has to answer a resiliency NOTIFY.
pub(super) const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
/// An Edge server's `/status` answers within this, or it counts as gone (not surviving).
pub(super) const EDGE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a pooled Front End needs to pair: the cluster, its pool and its node name.
#[derive(Debug, Clone)]
pub struct PairingConfig {
    pub cluster: Arc<ClusterConfig>,
    pub pool: String,
    pub node: String,
}

/// Whether the pair holds this pool failed over, as far as this Front End knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fence {
    /// No answer from the pair yet, and the failover interval has not run out.
    Unknown,
    Open,
    Fenced,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) record: PairRecord,
    pub(super) record_loaded: bool,
    pub(super) watch: PairWatch,
    pub(super) fence: Fence,
    /// The highest failover epoch the pair reported: above our record's `home_reloaded_epoch`, the pair held our
    /// users (failed over, then back) since the pool last reloaded them.
    pub(super) pair_epoch: u64,
    /// Our own users' state is current and served: not fenced, and reloaded up to `pair_epoch` (true at start:
    /// the pool's formation loads them from the Back End).
    pub(super) restored: bool,
    /// The pair is failed over to us and its users' copy is loaded into our routing groups (after a failover, or
    /// by the first maintenance turn of a Front End that starts while the pair is failed over).
    pub(super) pair_restored: bool,
    /// We accept our pair's users in resiliency mode.
    pub(super) resiliency: bool,
    pub(super) backup: BackupStatus,
}

/// One Front End's share of its pool's pairing; see the module doc.
pub struct Pairing {
    pub(super) cluster: Arc<ClusterConfig>,
    pub(super) pool: String,
    pub(super) node: String,
    pub(super) pair: Option<String>,
    pub(super) timings: Timings,
    pub(super) homes: HashMap<String, String>,
    pub(super) own_backend: Option<BackendClient>,
    pub(super) pair_backend: Option<BackendClient>,
    pub(super) host: OnceLock<Weak<dyn Host>>,
    pub(super) started: Instant,
    pub(super) inner: Mutex<Inner>,
    /// One failover, failback or record refresh at a time on this Front End.
    pub(super) commands: tokio::sync::Mutex<()>,
    /// One backup pass at a time; a failover waits for the running pass.
    pub(super) passes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing")
            .field("pool", &self.pool)
            .field("node", &self.node)
            .field("pair", &self.pair)
            .finish_non_exhaustive()
    }
}

/// The pairing of `host` (a pooled Front End of `config.pool`); the caller hands it to the Front End and runs
/// [`Pairing::run`] with the node's tasks.
pub fn attach(host: Weak<dyn Host>, config: PairingConfig) -> Result<Arc<Pairing>, PairingError> {
    let cluster = config.cluster;
    let pool = cluster
        .pool(&config.pool)
        .filter(|p| p.role == "frontend")
        .ok_or_else(|| PairingError::NotAFrontEndPool(config.pool.clone()))?;
    let client = |backend: Option<&String>| {
        backend.and_then(|b| BackendClient::for_pool(&cluster, &config.node, b).ok())
    };
    let own_backend = client(pool.backend.as_ref());
    let pair = pool.pair.clone();
    let pair_backend = client(
        pair.as_deref()
            .and_then(|p| cluster.pool(p))
            .and_then(|p| p.backend.as_ref()),
    );
    let timings = cluster.timings;
    let store_location = cluster
        .pools
        .iter()
        .find(|p| p.role == "frontend")
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let started = Instant::now();
    let pairing = Arc::new(Pairing {
        homes: cluster
            .users
            .iter()
            .map(|u| (u.name.clone(), u.home.clone()))
            .collect(),
        own_backend,
        pair_backend,
        pool: config.pool,
        node: config.node,
        timings,
        host: OnceLock::new(),
        started,
        inner: Mutex::new(Inner {
            record: PairRecord::new(&store_location),
            record_loaded: false,
            watch: PairWatch::new(
                Duration::from_millis(timings.fe_failure_timeout_ms),
                started,
            ),
            fence: if pair.is_some() {
                Fence::Unknown
            } else {
                Fence::Open
            },
            pair_epoch: 0,
            restored: true,
            pair_restored: false,
            resiliency: false,
            backup: BackupStatus::default(),
        }),
        pair,
        cluster,
        commands: tokio::sync::Mutex::new(()),
        passes: tokio::sync::Mutex::new(()),
    });
    let _ = pairing.host.set(host);
    Ok(pairing)
}

impl Pairing {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.get().and_then(Weak::upgrade)
    }

    pub(super) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.timings.fe_heartbeat_interval_ms.max(10))
    }

    pub(super) fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.timings.fe_failure_timeout_ms.max(10))
    }

    pub(super) fn failover_interval(&self) -> Duration {
        Duration::from_millis(self.timings.backup_failover_interval_ms)
    }

    /// Long enough for every Front End of the pool to read a record change (two heartbeats).
    pub(super) fn settle(&self) -> Duration {
        self.heartbeat_interval() * 2 + Duration::from_millis(100)
    }

    /// The pair pool, if any.
    pub fn pair(&self) -> Option<&str> {
        self.pair.as_deref()
    }
}
