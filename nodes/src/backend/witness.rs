//! The witness: the third vote of a Back End pool. It serves no data; it records which node is principal at
//! which epoch and whether that principal's mirror is synchronized, and it grants a mirror's promotion only when
//! it, too, has not heard the principal for a whole partner timeout and the mirror is synchronized.
//!
//! Its record (`witness.json` in the data directory) is written durably before any answer that depends on it: a
//! restarted witness must not grant a second promotion in an epoch, nor forget that a principal ran exposed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::error::BackendError;
use super::protocol::{serve_connection, Request, Response, WitnessView};
use super::server::{accept_peers, BackendConfig, Listeners, PeerPort};
use super::store::DurableRole;
use crate::admin::AdminApi;

/// The witness's durable record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    pub epoch: u64,
    pub principal: Option<String>,
    pub mirror_synchronized: bool,
}

/// The witness of one Back End pool.
#[derive(Debug)]
pub struct Witness {
    node: String,
    pool: String,
    partner_timeout: Duration,
    started_at: Instant,
    file: PathBuf,
    admin_token: String,
    /// The pool's nodes: the only names whose heartbeats are recorded.
    nodes: Vec<String>,
    state: Mutex<(WitnessRecord, HashMap<String, Instant>)>,
    /// The peer port's bounds and counts.
    peer_port: PeerPort,
}

impl Witness {
    pub fn open(config: &BackendConfig) -> Result<Arc<Witness>, BackendError> {
        let pool = config.cluster.pool_of(&config.node)?;
        if pool.witness.as_deref() != Some(config.node.as_str()) {
            return Err(BackendError::UnknownPool(format!(
                "{} is not the witness of {}",
                config.node, pool.name
            )));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let file = config.data_dir.join("witness.json");
        let record = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BackendError::Io(std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WitnessRecord::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(Arc::new(Witness {
            node: config.node.clone(),
            pool: pool.name.clone(),
            partner_timeout: Duration::from_millis(
                config.cluster.timings.be_partner_timeout_ms.max(50),
            ),
            started_at: Instant::now(),
            file,
            admin_token: config.cluster.admin_token.clone(),
            nodes: pool.nodes.clone(),
            state: Mutex::new((record, HashMap::new())),
            peer_port: PeerPort::new(config),
        }))
    }

    pub async fn run(
        self: Arc<Self>,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BackendError> {
        let mut tasks = JoinSet::new();
        let witness = self.clone();
        tasks.spawn(async move { witness.accept_loop(listeners.peer).await });
        let status = self.clone();
        let api = AdminApi::new(&self.admin_token, move || status.status());
        tasks.spawn(async move {
            api.serve(listeners.admin, std::future::pending())
                .await
                .map_err(BackendError::Io)
        });
        tokio::select! {
            _ = shutdown => Ok(()),
            Some(done) = tasks.join_next() => match done {
                Ok(result) => result,
                Err(e) => Err(BackendError::Io(std::io::Error::other(e))),
            },
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) -> Result<(), BackendError> {
        let port = self.peer_port.clone();
        let first_frame_timeout = port.first_frame_timeout;
        accept_peers(listener, port, move |stream| {
            let witness = self.clone();
            async move {
                serve_connection(stream, first_frame_timeout, |request| {
                    let witness = witness.clone();
                    // Small and quick: the record write is one fsync'd file of a few bytes.
                    async move {
                        tokio::task::spawn_blocking(move || witness.handle(request))
                            .await
                            .unwrap_or_else(|e| Response::Error {
                                reason: e.to_string(),
                            })
                    }
                })
                .await
            }
        })
        .await
    }

    /// Accepted peer-port connections open now (at most [`BackendConfig::peer_connections_max`]).
    pub fn peer_connections(&self) -> usize {
        self.peer_port.open.taken()
    }

    /// Accepted peer-port connections closed since the start for sending no complete request within
    /// [`BackendConfig::peer_first_frame_timeout`].
    pub fn peer_connections_silent(&self) -> u64 {
        self.peer_port.silent()
    }

    /// Records that `node` was heard at `now`, when it is one of the pool's nodes (the map holds no other name).
    fn hear(&self, heard: &mut HashMap<String, Instant>, node: String, now: Instant) {
        if self.nodes.contains(&node) {
            heard.insert(node, now);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (WitnessRecord, HashMap<String, Instant>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request; the lock is held across the durable write so decisions are serial.
    pub fn handle(&self, request: Request) -> Response {
        let mut guard = self.lock();
        let now = Instant::now();
        let (record, heard) = &mut *guard;
        let before = record.clone();
        let response = match request {
            Request::WitnessPing(view) => {
                self.hear(heard, view.node.clone(), now);
                if view.role == DurableRole::Principal {
                    if view.epoch > record.epoch {
                        // A principal of a newer epoch (first contact, or after an operator failover): adopt it,
                        // with its mirror unsynchronized until it says otherwise.
                        *record = WitnessRecord {
                            epoch: view.epoch,
                            principal: Some(view.node.clone()),
                            mirror_synchronized: false,
                        };
                    } else if view.epoch < record.epoch {
                        return Response::Fenced {
                            epoch: record.epoch,
                        };
                    }
                }
                Response::Witness(self.view(record, heard, now))
            }
            Request::Expose { node, epoch, .. } | Request::Synchronized { node, epoch, .. }
                if epoch < record.epoch =>
            {
                self.hear(heard, node, now);
                Response::Fenced {
                    epoch: record.epoch,
                }
            }
            Request::Expose { node, epoch, lsn } => {
                self.hear(heard, node.clone(), now);
                if epoch > record.epoch || record.principal.as_deref() == Some(&node) {
                    record.epoch = epoch;
                    record.principal = Some(node.clone());
                    record.mirror_synchronized = false;
                    tracing::warn!(witness = %self.node, %node, epoch, lsn, "principal registered exposed");
                    Response::Witness(self.view(record, heard, now))
                } else {
                    Response::Refused {
                        reason: format!("{node} is not the principal of epoch {epoch}"),
                    }
                }
            }
            Request::Synchronized { node, epoch, lsn } => {
                self.hear(heard, node.clone(), now);
                if epoch == record.epoch && record.principal.as_deref() == Some(&node) {
                    record.mirror_synchronized = true;
                    tracing::info!(witness = %self.node, %node, epoch, lsn, "mirror registered synchronized");
                    Response::Witness(self.view(record, heard, now))
                } else {
                    Response::Refused {
                        reason: format!("{node} is not the principal of epoch {epoch}"),
                    }
                }
            }
            Request::Promote {
                node,
                epoch,
                lsn,
                force,
            } => {
                self.hear(heard, node.clone(), now);
                self.decide_promotion(record, heard, now, &node, epoch, lsn, force)
            }
            Request::View => Response::Witness(self.view(record, heard, now)),
            other => Response::Error {
                reason: format!("{} is a witness; it does not serve {other:?}", self.node),
            },
        };
        if *record != before {
            if let Err(e) = persist(&self.file, record) {
                // Undo: an answer must never rest on a record that is not durable.
                tracing::error!(witness = %self.node, "persist the witness record: {e}");
                *record = before;
                return Response::Error {
                    reason: format!("persist the witness record: {e}"),
                };
            }
        }
        response
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one decision over the whole request and record"
    )]
    fn decide_promotion(
        &self,
        record: &mut WitnessRecord,
        heard: &HashMap<String, Instant>,
        now: Instant,
        node: &str,
        epoch: u64,
        lsn: u64,
        force: bool,
    ) -> Response {
        // A retry of a promotion already granted (its answer was lost): grant it again.
        if record.principal.as_deref() == Some(node) && record.epoch == epoch + 1 {
            return Response::Granted {
                epoch: record.epoch,
            };
        }
        let Some(principal) = record.principal.clone() else {
            return Response::Refused {
                reason: "the witness knows no principal yet".into(),
            };
        };
        if epoch != record.epoch {
            return Response::Refused {
                reason: format!(
                    "the mirror is at epoch {epoch}, the witness at {}",
                    record.epoch
                ),
            };
        }
        if principal == node {
            return Response::Refused {
                reason: format!("{node} is already the principal"),
            };
        }
        let silent = now.duration_since(heard.get(&principal).copied().unwrap_or(self.started_at));
        if silent < self.partner_timeout {
            return Response::Refused {
                reason: format!(
                    "the witness heard the principal {principal} {} ms ago",
                    silent.as_millis()
                ),
            };
        }
        if !record.mirror_synchronized && !force {
            return Response::Refused {
                reason: "the mirror is not synchronized (the principal ran exposed)".into(),
            };
        }
        *record = WitnessRecord {
            epoch: record.epoch + 1,
            principal: Some(node.to_string()),
            mirror_synchronized: false,
        };
        tracing::warn!(witness = %self.node, %node, epoch = record.epoch, lsn, force, "promotion granted");
        Response::Granted {
            epoch: record.epoch,
        }
    }

    fn view(
        &self,
        record: &WitnessRecord,
        heard: &HashMap<String, Instant>,
        now: Instant,
    ) -> WitnessView {
        WitnessView {
            node: self.node.clone(),
            epoch: record.epoch,
            principal: record.principal.clone(),
            mirror_synchronized: record.mirror_synchronized,
            principal_heard_ms_ago: record
                .principal
                .as_ref()
                .and_then(|p| heard.get(p))
                .map(|t| now.duration_since(*t).as_millis() as u64),
        }
    }

    /// The witness's `/status` document.
    pub fn status(&self) -> Value {
        let guard = self.lock();
        let now = Instant::now();
        let (record, heard) = &*guard;
        let seen: serde_json::Map<String, Value> = heard
            .iter()
            .map(|(n, t)| (n.clone(), json!(now.duration_since(*t).as_millis() as u64)))
            .collect();
        json!({
            "role": "witness",
            "pool": self.pool,
            "node": self.node,
            "epoch": record.epoch,
            "principal": record.principal,
            "mirror_synchronized": record.mirror_synchronized,
            "heard_ms_ago": seen,
            "peer_connections": self.peer_connections(),
            "peer_connections_silent": self.peer_connections_silent(),
        })
    }
}

/// Writes the record durably: a temporary file, fsync, rename, fsync of the directory.
fn persist(file: &Path, record: &WitnessRecord) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Opens the witness and serves until `shutdown`: the whole witness role.
pub async fn run(
    listeners: Listeners,
    config: BackendConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BackendError> {
    Witness::open(&config)?.run(listeners, shutdown).await
}
