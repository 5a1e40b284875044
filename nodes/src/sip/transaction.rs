//! The UDP server transaction cache: a retransmitted request is answered with the transaction's last response
//! instead of being handled twice (RFC 3261 17.2.2), so a REGISTER or MESSAGE retransmitted over a lossy path is
//! applied once.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Names one server transaction: who sent it, its top Via branch, its method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub source: SocketAddr,
    pub branch: String,
    pub method: String,
}

/// What to do with a request that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// First sight of the transaction: handle it.
    New,
    /// A retransmission while the first copy is still being handled: drop it.
    InProgress,
    /// A retransmission after the final response: send this again.
    Answered(Bytes),
}

/// Bounded in both time (entries live `lifetime`, RFC 3261's Timer J of 64×T1 = 32 s) and count (`capacity`; when
/// full, new transactions are simply not cached, which costs only duplicate handling of their retransmissions).
pub struct TransactionCache {
    lifetime: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<TransactionKey, Option<Bytes>>,
    /// Insertion order, for expiry without a scan.
    order: VecDeque<(Instant, TransactionKey)>,
}

impl TransactionCache {
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            lifetime,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records the arrival of a request and says whether it is new.
    pub fn arrive(&self, key: &TransactionKey, now: Instant) -> Arrival {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(now, self.lifetime);
        match inner.entries.get(key) {
            Some(Some(response)) => return Arrival::Answered(response.clone()),
            Some(None) => return Arrival::InProgress,
            None => {}
        }
        if inner.entries.len() < self.capacity {
            inner.entries.insert(key.clone(), None);
            inner.order.push_back((now, key.clone()));
        }
        Arrival::New
    }

    /// Stores the final response for retransmissions.
    pub fn answer(&self, key: &TransactionKey, response: Bytes) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = inner.entries.get_mut(key) {
            *slot = Some(response);
        }
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, lifetime: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < lifetime {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> TransactionKey {
        TransactionKey {
            source: "127.0.0.1:5060".parse().unwrap(),
            branch: branch.into(),
            method: "REGISTER".into(),
        }
    }

    #[test]
    fn retransmission_gets_the_stored_response_until_expiry() {
        let cache = TransactionCache::new(Duration::from_secs(32), 10);
        let t0 = Instant::now();
        assert_eq!(cache.arrive(&key("a"), t0), Arrival::New);
        assert_eq!(cache.arrive(&key("a"), t0), Arrival::InProgress);
        cache.answer(&key("a"), Bytes::from_static(b"SIP/2.0 200 OK"));
        assert_eq!(
            cache.arrive(&key("a"), t0),
            Arrival::Answered(Bytes::from_static(b"SIP/2.0 200 OK"))
        );
        assert_eq!(
            cache.arrive(&key("a"), t0 + Duration::from_secs(33)),
            Arrival::New
        );
    }

    #[test]
    fn full_cache_still_lets_requests_through() {
        let cache = TransactionCache::new(Duration::from_secs(32), 1);
        let t0 = Instant::now();
        assert_eq!(cache.arrive(&key("a"), t0), Arrival::New);
        assert_eq!(cache.arrive(&key("b"), t0), Arrival::New);
        assert_eq!(cache.len(), 1);
    }
}
