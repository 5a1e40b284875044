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
    /// user → when its oldest change was queued, for records a flush took and the Back End has not yet
    /// confirmed: they are still unwritten, so they count as pending (a reader who sees nothing pending may rely
    /// on the Back End holding every change).
    in_flight: BTreeMap<String, Instant>,
    stats: LazyStats,
}

impl Queue {
    /// Takes every queued record for a flush; they stay pending until [`Queue::settle`].
    fn take(&mut self) -> Vec<(UserRecord, Instant)> {
        let taken: Vec<(UserRecord, Instant)> =
            std::mem::take(&mut self.dirty).into_values().collect();
        for (record, since) in &taken {
            let at = self.in_flight.entry(record.user.clone()).or_insert(*since);
            *at = (*at).min(*since);
        }
        taken
    }

    /// The Back End confirmed (`written`) or did not take (`failed`, queued again unless a newer version was
    /// queued meanwhile: the lag counts from the older change) records a flush took.
    fn settle(&mut self, written: &[(UserRecord, Instant)], failed: &[(UserRecord, Instant)]) {
        for (record, since) in failed {
            let entry = self
                .dirty
                .entry(record.user.clone())
                .or_insert_with(|| (record.clone(), *since));
            entry.1 = entry.1.min(*since);
        }
        for (record, _) in written.iter().chain(failed) {
            self.in_flight.remove(&record.user);
        }
    }

    fn pending_users(&self) -> usize {
        self.dirty.len()
            + self
                .in_flight
                .keys()
                .filter(|u| !self.dirty.contains_key(*u))
                .count()
    }

    /// Age of the oldest unwritten change, queued or in flight, in milliseconds (0 when nothing is pending).
    fn lag_ms(&self) -> u64 {
        self.dirty
            .values()
            .map(|(_, since)| since)
            .chain(self.in_flight.values())
            .map(|since| since.elapsed().as_millis() as u64)
            .max()
            .unwrap_or(0)
    }
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
        self.lock().lag_ms()
    }

    /// Users with changes the Back End has not confirmed: queued, or taken by a flush still under way.
    pub fn pending(&self) -> usize {
        self.lock().pending_users()
    }

    fn queued(&self) -> usize {
        self.lock().dirty.len()
    }

    pub fn stats(&self) -> LazyStats {
        let q = self.lock();
        LazyStats {
            pending_users: q.pending_users(),
            lag_ms: q.lag_ms(),
            ..q.stats.clone()
        }
    }

    /// Writes everything queued now. On failure the unwritten records go back in the queue (unless a newer
    /// version was queued meanwhile) and will be retried at the next flush.
    pub async fn flush(&self) -> Result<Vec<Receipt>, BackendError> {
        let taken = {
            let mut q = self.lock();
            if !q.dirty.is_empty() {
                q.stats.last_flush_lag_ms = q.lag_ms();
            }
            q.take()
        };
        let mut receipts = Vec::new();
        for (done, chunk) in taken.chunks(USERS_PER_BATCH).enumerate() {
            let batch = Batch::new(chunk.iter().map(|(r, _)| Op::PutUser(r.clone())).collect());
            match self.client.write(batch).await {
                Ok(receipt) => {
                    let mut q = self.lock();
                    q.stats.flushed_users_total += chunk.len() as u64;
                    q.settle(chunk, &[]);
                    receipts.push(receipt);
                }
                Err(e) => {
                    let mut q = self.lock();
                    q.stats.flush_failures_total += 1;
                    q.settle(&[], &taken[done * USERS_PER_BATCH..]);
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
            if self.queued() == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, contact: &str) -> UserRecord {
        UserRecord {
            user: user.into(),
            pool: "pool1".into(),
            password: None,
            contacts: vec![contact.into()],
            presence: Vec::new(),
            settings: Default::default(),
        }
    }

    fn queued(q: &mut Queue, r: UserRecord) {
        q.dirty.insert(r.user.clone(), (r, Instant::now()));
    }

    #[test]
    fn records_a_flush_took_stay_pending_until_the_back_end_confirms_them() {
        let mut q = Queue::default();
        queued(&mut q, record("alice", "sip:a1@p"));
        queued(&mut q, record("bob", "sip:b1@p"));
        let taken = q.take();
        assert_eq!(q.pending_users(), 2, "taken is not written");
        // A change while the flush is under way: alice counts once.
        queued(&mut q, record("alice", "sip:a2@p"));
        assert_eq!(q.pending_users(), 2);
        q.settle(&taken, &[]);
        assert_eq!(q.pending_users(), 1, "alice's newer change is still queued");
        assert_eq!(q.dirty["alice"].0.contacts, vec!["sip:a2@p".to_string()]);
        let again = q.take();
        q.settle(&again, &[]);
        assert_eq!(q.pending_users(), 0);
        assert_eq!(q.lag_ms(), 0);
    }

    #[test]
    fn a_failed_flush_queues_its_records_again_unless_a_newer_version_was_queued() {
        let mut q = Queue::default();
        queued(&mut q, record("alice", "sip:a1@p"));
        queued(&mut q, record("bob", "sip:b1@p"));
        let taken = q.take();
        queued(&mut q, record("alice", "sip:a2@p"));
        q.settle(&[], &taken);
        assert_eq!(q.pending_users(), 2);
        assert_eq!(q.dirty["alice"].0.contacts, vec!["sip:a2@p".to_string()]);
        assert_eq!(q.dirty["bob"].0.contacts, vec!["sip:b1@p".to_string()]);
        assert!(q.in_flight.is_empty());
    }
}
