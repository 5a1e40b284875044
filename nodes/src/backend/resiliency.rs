//! [`ResiliencyGate`]: turns "the Back End has had no serving principal for longer than `be_outage_grace_ms`"
//! into one boolean a Front End checks before persistent writes, and a watch channel it can react to (sign users
//! into resiliency mode, and back out when the Back End returns).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::client::BackendClient;
use crate::cluster::Timings;

/// Resiliency mode by Back End availability.
#[derive(Debug)]
pub struct ResiliencyGate {
    client: BackendClient,
    grace: Duration,
    probe_interval: Duration,
    mode: watch::Sender<bool>,
}

impl ResiliencyGate {
    /// A gate over `client` with the grace period `timings.be_outage_grace_ms` (Lync: 30 min).
    pub fn new(client: BackendClient, timings: &Timings) -> Self {
        let grace = Duration::from_millis(timings.be_outage_grace_ms);
        // Probe often enough to notice within a tenth of the grace, but never busier than the heartbeat.
        let probe_interval = (grace / 10)
            .min(Duration::from_millis(timings.be_write_interval_ms.max(1)))
            .max(
                Duration::from_millis(timings.be_partner_timeout_ms / 5)
                    .max(Duration::from_millis(10)),
            );
        ResiliencyGate {
            client,
            grace,
            probe_interval,
            mode: watch::channel(false).0,
        }
    }

    /// True while the Back End has been unavailable for longer than the grace period: users are in resiliency
    /// mode (persistent changes refused, contact list unavailable, presence unknown to others).
    pub fn in_resiliency_mode(&self) -> bool {
        self.decide(Instant::now())
    }

    fn decide(&self, now: Instant) -> bool {
        self.client
            .unavailable_since()
            .is_some_and(|since| now.duration_since(since) >= self.grace)
    }

    /// Changes of the mode (`true`: enter resiliency mode).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.mode.subscribe()
    }

    /// Re-evaluates the mode now and publishes a change; returns the mode.
    pub fn refresh(&self) -> bool {
        let mode = self.in_resiliency_mode();
        self.mode.send_if_modified(|m| {
            let changed = *m != mode;
            *m = mode;
            changed
        });
        mode
    }

    /// Probes the Back End every probe interval and publishes mode changes, until `shutdown`.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            self.client.probe().await;
            let mode = self.refresh();
            tracing::debug!(resiliency_mode = mode, "back end probe");
        }
    }
}
