//! [`LazyWriter`]: the Front End's queue of dirty user data, written to the Back End every
//! `be_write_interval_ms` (Lync publishes no interval: ours is a setting). Each user's latest record replaces the
//! queued one, so a burst of changes costs one write; the age of the oldest unwritten change is the lag metric.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{BackendClient, Receipt};
use super::error::BackendError;
use super::store::{Batch, Op, UserRecord};
use crate::cluster::Timings;

/// Users per commit, so one flush of a big pool does not become one huge transaction.
const USERS_PER_BATCH: usize = 200;

/// What the writer has done, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Users with changes not yet on the Back End.
    pub pending_users: usize,
    /// Age of the oldest unwritten change (0 when nothing is pending).
    pub lag_ms: u64,
    /// The lag the last successful flush had when it started.
    pub last_flush_lag_ms: u64,
    pub flushed_users_total: u64,
    pub flush_failures_total: u64,
}

#[derive(Debug, Default)]
struct Queue {
    /// user → (latest record, when the oldest unwritten change was queued).
    dirty: BTreeMap<String, (UserRecord, Instant)>,
    stats: LazyStats,
}

/// The Front End's lazy writer to the Back End.
#[derive(Debug)]
pub struct LazyWriter {
    client: BackendClient,
    interval: Duration,
    queue: Mutex<Queue>,
}

impl LazyWriter {
    /// A writer flushing every `timings.be_write_interval_ms` through `client`.
    pub fn new(client: BackendClient, timings: &Timings) -> Self {
        LazyWriter {
            client,
            interval: Duration::from_millis(timings.be_write_interval_ms.max(1)),
            queue: Mutex::new(Queue::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the user's current persistent data (replacing a queued older version; the lag keeps counting
    /// from the oldest unwritten change).
    pub fn mark_dirty(&self, record: UserRecord) {
        let mut q = self.lock();
        let since = q
            .dirty
            .get(&record.user)
            .map_or_else(Instant::now, |(_, since)| *since);
        q.dirty.insert(record.user.clone(), (record, since));
    }

    /// Age of the oldest unwritten change, in milliseconds (0 when nothing is pending).
    pub fn lag_ms(&self) -> u64 {
        let q = self.lock();
        oldest_ms(&q.dirty)
    }

    pub fn pending(&self) -> usize {
        self.lock().dirty.len()
    }

    pub fn stats(&self) -> LazyStats {
        let q = self.lock();
        LazyStats {
            pending_users: q.dirty.len(),
            lag_ms: oldest_ms(&q.dirty),
            ..q.stats.clone()
        }
    }

    /// Writes everything queued now. On failure the unwritten records go back in the queue (unless a newer
    /// version was queued meanwhile) and will be retried at the next flush.
    pub async fn flush(&self) -> Result<Vec<Receipt>, BackendError> {
        let taken: Vec<(UserRecord, Instant)> = {
            let mut q = self.lock();
            let lag = oldest_ms(&q.dirty);
            if !q.dirty.is_empty() {
                q.stats.last_flush_lag_ms = lag;
            }
            std::mem::take(&mut q.dirty).into_values().collect()
        };
        let mut receipts = Vec::new();
        let mut chunks = taken.chunks(USERS_PER_BATCH);
        while let Some(chunk) = chunks.next() {
            let batch = Batch::new(chunk.iter().map(|(r, _)| Op::PutUser(r.clone())).collect());
            match self.client.write(batch).await {
                Ok(receipt) => {
                    self.lock().stats.flushed_users_total += chunk.len() as u64;
                    receipts.push(receipt);
                }
                Err(e) => {
                    let mut q = self.lock();
                    q.stats.flush_failures_total += 1;
                    for (record, since) in chunk.iter().chain(chunks.flatten()) {
                        // A newer version queued meanwhile wins, but the lag counts from the older change.
                        let entry = q
                            .dirty
                            .entry(record.user.clone())
                            .or_insert_with(|| (record.clone(), *since));
                        entry.1 = entry.1.min(*since);
                    }
                    return Err(e);
                }
            }
        }
        Ok(receipts)
    }

    /// Flushes every interval until `shutdown`, then once more. When nothing is queued it probes the Back End
    /// instead, so availability (and with it resiliency mode) is known without traffic.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            if self.pending() == 0 {
                self.client.probe().await;
            } else if let Err(e) = self.flush().await {
                tracing::warn!("lazy write to the Back End failed (retried next interval): {e}");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!("final lazy write to the Back End failed: {e}");
        }
    }
}

fn oldest_ms(dirty: &BTreeMap<String, (UserRecord, Instant)>) -> u64 {
    dirty
        .values()
        .map(|(_, since)| since.elapsed().as_millis() as u64)
        .max()
        .unwrap_or(0)
}
