//! The operator's commands: pool failover and failback, store failover, a backup pass on demand.

use super::error::PairingError;
use super::node::{Pairing, EDGE_STATUS_TIMEOUT, USERS_PER_BATCH};
use super::record::Transition;
use super::restore::{self, Mode};
use crate::backend::operator::http_json;
use crate::backend::{Batch, Op};
use crate::cluster::ADMIN_PORT;
use crate::defects::{self, Defect};
use crate::frontend::store::now_unix_ms;
use serde_json::{json, Value};
use std::time::Instant;

impl Pairing {
    pub(super) fn check_pair(&self, pool: &str) -> Result<String, PairingError> {
        match &self.pair {
            Some(pair) if pair == pool => Ok(pair.clone()),
            _ => Err(PairingError::NotOurPair {
                pool: pool.to_owned(),
                me: self.pool.clone(),
            }),
        }
    }

    /// Fails our pair `pool` over to us (see the module doc); `automatic` skips the operator's preconditions.
    pub async fn failover(&self, pool: &str, automatic: bool) -> Result<Value, PairingError> {
        let pair = self.check_pair(pool)?;
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let record = self.lock().record.clone();
        if record.pair_failed_over {
            return Ok(self.command_answer("already failed over", 0));
        }
        if record.transition.is_some() {
            return Err(PairingError::Busy(pair));
        }
        if !automatic {
            self.failover_preconditions(&pair).await?;
        }
        self.persist(|r| r.transition = Some(Transition::FailingOver))
            .await?;
        let outcome = async {
            tokio::time::sleep(self.settle()).await;
            if automatic {
                // The decision was taken before the record was written, which may have waited on our Back End:
                // a pair that answers again, or a pool of ours that stopped serving, calls the failover off.
                let pair_up = self.lock().watch.up(Instant::now());
                if pair_up || !self.own_pool_serving() {
                    return Err(PairingError::CalledOff(pair.clone()));
                }
            }
            let _pass = self.passes.lock().await;
            let own = self.own_backend.as_ref();
            let records = match own {
                Some(own) => own
                    .load_all(&pair)
                    .await
                    .map_err(|e| PairingError::Backend {
                        pool: self.pool.clone(),
                        reason: e.to_string(),
                    })?,
                None => Vec::new(),
            };
            self.restore(&records, Mode::Replace).await
        }
        .await;
        match outcome {
            Ok(restored) => {
                self.lock().pair_restored = true;
                self.persist(|r| {
                    r.pair_failed_over = true;
                    r.failover_epoch += 1;
                    r.transition = None;
                })
                .await?;
                // The other Front Ends of the pool read the record each heartbeat: the command is done when
                // the whole pool serves the failed-over users, not just this server.
                tokio::time::sleep(self.settle()).await;
                Ok(self.command_answer("failed over", restored))
            }
            Err(error) => {
                let _ = self.persist(|r| r.transition = None).await;
                Err(error)
            }
        }
    }

    pub(super) async fn failover_preconditions(&self, failed: &str) -> Result<(), PairingError> {
        let store = {
            let inner = self.lock();
            let mut store = (
                inner.record.store_location.clone(),
                inner.record.store_version,
            );
            if let Some(reported) = inner.watch.store().filter(|(_, v)| *v > store.1) {
                store = reported;
            }
            store.0
        };
        if store == failed {
            return Err(PairingError::StoreOnFailedPool {
                failed: failed.to_owned(),
                to: self.pool.clone(),
            });
        }
        let site = self
            .cluster
            .pool(failed)
            .map(|p| p.site.clone())
            .unwrap_or_default();
        let suggestion = self
            .cluster
            .pools
            .iter()
            .find(|p| p.role == "director" && p.site != site)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "<a Director pool in a surviving site>".into());
        // Every Edge server at once: those of the failed site do not answer, and each would cost a timeout.
        let mut asked = tokio::task::JoinSet::new();
        for edge in self.cluster.pools.iter().filter(|p| p.role == "edge") {
            for node in &edge.nodes {
                let address = self.cluster.address(&self.pool, node, ADMIN_PORT);
                let (edge, node) = (edge.name.clone(), node.clone());
                asked.spawn(async move {
                    let answer = tokio::time::timeout(
                        EDGE_STATUS_TIMEOUT,
                        http_json(&address, "GET", "/status", None, None),
                    )
                    .await;
                    (edge, node, answer)
                });
            }
        }
        let mut answers = asked.join_all().await;
        answers.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (edge, node, answer) in answers {
            let Ok(Ok((200, status))) = answer else {
                continue;
            };
            let Some(hop) = status["next_hop"].as_str() else {
                continue;
            };
            let in_failed_site =
                hop == failed || self.cluster.pool(hop).is_some_and(|p| p.site == site);
            if in_failed_site {
                return Err(PairingError::EdgeRelaysToFailedSite {
                    edge,
                    node,
                    director: hop.to_owned(),
                    site,
                    suggestion,
                });
            }
        }
        Ok(())
    }

    /// Fails our pair `pool` back to its home (see the module doc).
    pub async fn failback(&self, pool: &str) -> Result<Value, PairingError> {
        let pair = self.check_pair(pool)?;
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let record = self.lock().record.clone();
        if !record.pair_failed_over {
            return Err(PairingError::NotFailedOver(pair));
        }
        if !self.lock().watch.up(Instant::now()) {
            return Err(PairingError::HomeUnreachable(pair));
        }
        let host = self
            .host()
            .ok_or_else(|| PairingError::NotServing("the Front End stopped".into()))?;
        self.persist(|r| r.transition = Some(Transition::FailingBack))
            .await?;
        let outcome = async {
            tokio::time::sleep(self.settle()).await;
            let mut records = Vec::new();
            for user in self.cluster.users_of(&pair) {
                let view = host
                    .view(&user.name, now_unix_ms())
                    .await
                    .map_err(PairingError::NotServing)?;
                records.push(restore::record_of(&user.name, &pair, &view));
            }
            let home_backend = self
                .cluster
                .pool(&pair)
                .and_then(|p| p.backend.clone())
                .unwrap_or_default();
            // The bug of a known-bad pool: the last copy to the home pool's Back End is skipped, so the home pool
            // reloads what its Back End held before it was lost.
            let home = self
                .pair_backend
                .as_ref()
                .filter(|_| !defects::active(Defect::BackupLastPassDropped));
            if let Some(home) = home {
                for chunk in records.chunks(USERS_PER_BATCH) {
                    home.write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                        .await
                        .map_err(|e| PairingError::Backend {
                            pool: home_backend.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
            if let Some(own) = &self.own_backend {
                // Our copy becomes what we hand back, so the next passes start from it.
                for chunk in records.chunks(USERS_PER_BATCH) {
                    let _ = own
                        .write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                        .await;
                }
            }
            Ok::<usize, PairingError>(records.len())
        }
        .await;
        match outcome {
            Ok(copied) => {
                self.persist(|r| {
                    r.pair_failed_over = false;
                    r.failover_epoch += 1;
                    r.transition = None;
                })
                .await?;
                self.send_pair_users_home().await;
                // As for failover: done when every Front End of the pool has read the record.
                tokio::time::sleep(self.settle()).await;
                Ok(self.command_answer("failed back", copied))
            }
            Err(error) => {
                let _ = self.persist(|r| r.transition = None).await;
                Err(error)
            }
        }
    }

    /// Moves the management store to `to` (this pool or its pair).
    pub async fn store_failover(&self, to: &str) -> Result<Value, PairingError> {
        if self.cluster.pool(to).is_none_or(|p| p.role != "frontend") {
            return Err(PairingError::NotAFrontEndPool(to.to_owned()));
        }
        if to != self.pool && Some(to) != self.pair.as_deref() {
            return Err(PairingError::NotOurPair {
                pool: to.to_owned(),
                me: self.pool.clone(),
            });
        }
        let _command = self.commands.lock().await;
        self.refresh_record().await;
        let reported = self.lock().watch.store().map_or(0, |(_, v)| v);
        let record = self
            .persist(|r| {
                r.store_version = r.store_version.max(reported) + 1;
                r.store_location = to.to_owned();
            })
            .await?;
        Ok(json!({
            "node": self.node,
            "management_store": {"location": record.store_location, "version": record.store_version},
        }))
    }

    /// Runs a backup pass now and answers the direction's status.
    pub async fn backup_sync(&self) -> Value {
        self.backup_pass().await;
        self.status()["backup_service"].clone()
    }

    pub(super) fn command_answer(&self, outcome: &str, users: usize) -> Value {
        let status = self.status();
        json!({
            "node": self.node,
            "pool": self.pool,
            "pair": self.pair,
            "outcome": outcome,
            "users": users,
            "as_backup": status["as_backup"],
            "backup_service": status["backup_service"],
        })
    }
}
