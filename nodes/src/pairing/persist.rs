//! The pool's [`PairRecord`], kept in its own Back End: read, changed durably, adopted from the pair.

use super::error::PairingError;
use super::node::Pairing;
use super::record::PairRecord;
use crate::backend::{Batch, Op};

impl Pairing {
    /// Reads our pool's record from our Back End (a pool without one keeps its record in memory).
    pub(super) async fn refresh_record(&self) {
        let Some(own) = &self.own_backend else {
            self.lock().record_loaded = true;
            return;
        };
        let fresh = match own.load(&PairRecord::account(&self.pool)).await {
            Ok(Some(stored)) => PairRecord::from_user_record(&stored),
            // A new cluster: the record in memory is the initial one.
            Ok(None) => Some(self.lock().record.clone()),
            Err(error) => {
                tracing::debug!(%error, "pairing record not read");
                None
            }
        };
        if let Some(record) = fresh {
            self.set_record(record);
        }
    }

    /// Persists `change` applied to the freshest record, then adopts it.
    pub(super) async fn persist(
        &self,
        change: impl FnOnce(&mut PairRecord),
    ) -> Result<PairRecord, PairingError> {
        let mut record = self.lock().record.clone();
        change(&mut record);
        if let Some(own) = &self.own_backend {
            own.write(Batch::new(vec![Op::PutUser(
                record.to_user_record(&self.pool),
            )]))
            .await
            .map_err(|e| PairingError::Backend {
                pool: self.pool.clone(),
                reason: e.to_string(),
            })?;
        }
        self.set_record(record.clone());
        Ok(record)
    }

    /// Adopts a record, telling clients what changed for them.
    pub(super) fn set_record(&self, record: PairRecord) {
        let before = {
            let mut inner = self.lock();
            inner.record_loaded = true;
            if record.fences_pair() {
                inner.resiliency = false;
            }
            inner.backup.suspended = record.fences_pair();
            if !record.pair_failed_over {
                inner.pair_restored = false;
            }
            std::mem::replace(&mut inner.record, record.clone())
        };
        let pair = self.pair.clone().unwrap_or_default();
        if !before.pair_failed_over && record.pair_failed_over {
            tracing::info!(pool = %self.pool, %pair, "pair failed over to us: its users get full service");
            self.notify_pair_users(false, None);
        } else if before.pair_failed_over && !record.pair_failed_over {
            tracing::info!(pool = %self.pool, %pair, "pair failed back: its users go home");
            self.notify_pair_users(false, Some(&pair));
        }
    }

    /// Adopts a newer management store record the pair reported (the runner only, so one write per change).
    pub(super) async fn adopt_pair_store(&self) {
        let newer = {
            let inner = self.lock();
            inner
                .watch
                .store()
                .filter(|(_, v)| inner.record_loaded && *v > inner.record.store_version)
        };
        if let (Some((location, version)), true) = (newer, self.is_runner()) {
            let _ = self
                .persist(|r| {
                    r.store_location = location;
                    r.store_version = version;
                })
                .await;
        }
    }
}
