//! Overload protection: a bounded number of requests in flight; beyond it the answer is `503` with `Retry-After`
//! at once, never an unbounded queue (Lync answers 503 when its queue to the Back End reaches 12 s).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The in-flight budget of one Front End.
#[derive(Debug, Clone)]
pub struct Overload {
    permits: Arc<Semaphore>,
    /// What `Retry-After` tells a refused client.
    pub retry_after: Duration,
}

impl Overload {
    pub fn new(requests_in_flight_max: usize, retry_after: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(requests_in_flight_max)),
            retry_after,
        }
    }

    /// A permit for one request, held until its response is sent; `None` when the budget is spent.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Requests in flight now.
    pub fn in_flight(&self, requests_in_flight_max: usize) -> usize {
        requests_in_flight_max - self.permits.available_permits()
    }
}
