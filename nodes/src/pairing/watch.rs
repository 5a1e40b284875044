//! [`PairWatch`]: the heartbeat between paired pools. Every Front End polls each Front End of its pair with
//! `GET /status` on the admin port (through the fault proxy where a route says so) once per heartbeat interval.
//! A serving answer from any of them means the pair pool is up. The answers also carry what the pair knows about
//! us (whether it has failed us over: our fence), its lazy writer's backlog (for the backup service's `final`)
//! and its management store record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One pair Front End's last answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub answered_at: Instant,
    /// Its pool serves (quorum held).
    pub serving: bool,
    /// It has read its pool's record from the Back End (before that its fence answer means nothing).
    pub record_loaded: bool,
    /// It holds us failed over (or is failing us over or back): we are fenced.
    pub fences_us: bool,
    pub failover_epoch: u64,
    /// Users its lazy writer has not written to its Back End yet.
    pub lazy_pending_users: u64,
    /// Users its lazy writer has written so far: a change here means its Back End changed.
    pub lazy_flushed_total: u64,
    pub store_location: Option<String>,
    pub store_version: u64,
}

impl NodeReport {
    /// Reads the `pairing` section of a pair Front End's `/status`.
    pub fn from_status(status: &Value, answered_at: Instant) -> Self {
        let pairing = &status["pairing"];
        let backup = &pairing["as_backup"];
        NodeReport {
            answered_at,
            serving: status["serving"] == true,
            record_loaded: backup["record_loaded"] == true,
            fences_us: backup["pair_failed_over"] == true || !backup["transition"].is_null(),
            failover_epoch: backup["failover_epoch"].as_u64().unwrap_or(0),
            // The Front End pool's lazy writer reports its backlog at the top of `/status`.
            lazy_pending_users: status["be_pending_users"].as_u64().unwrap_or(0),
            lazy_flushed_total: status["be_flushed_users_total"].as_u64().unwrap_or(0),
            store_location: pairing["management_store"]["location"]
                .as_str()
                .map(str::to_owned),
            store_version: pairing["management_store"]["version"].as_u64().unwrap_or(0),
        }
    }
}

/// What this Front End knows of its pair pool's liveness.
#[derive(Debug)]
pub struct PairWatch {
    /// An answer older than this is stale (the profile's Front End failure timeout).
    failure_timeout: Duration,
    started: Instant,
    /// The last serving answer from any pair Front End.
    last_seen: Option<Instant>,
    /// Start of the current run of serving answers without a gap longer than the failure timeout.
    up_since: Option<Instant>,
    reports: BTreeMap<String, NodeReport>,
    /// While every pair Front End heard lately has nothing unwritten: the send time of the last heartbeat that saw
    /// their lazy writers change anything (or of the first clean one). A backup pass that starts later reads
    /// everything they acknowledged. `None` while some backlog is pending.
    pending_clear_since: Option<Instant>,
    /// Send time of the last heartbeat whose answer showed a lazy writer's backlog or written count change.
    source_changed_at: Option<Instant>,
    /// Send time of the newest answered heartbeat: what the pair acknowledged before it is known here.
    last_answer_sent_at: Option<Instant>,
    /// When this Front End last came back from a stall of its own (paused, starved of CPU) or from being cut off
    /// from its own pool: silence from the pair counts from here, since what it did not hear meanwhile says
    /// nothing about the pair.
    resumed_at: Option<Instant>,
}

impl PairWatch {
    pub fn new(failure_timeout: Duration, started: Instant) -> Self {
        PairWatch {
            failure_timeout,
            started,
            last_seen: None,
            up_since: None,
            reports: BTreeMap::new(),
            pending_clear_since: None,
            source_changed_at: None,
            last_answer_sent_at: None,
            resumed_at: None,
        }
    }

    /// This Front End stood still, or was cut off from its own pool, until `now`: the pair's silence meanwhile says
    /// nothing about the pair, so it is counted again from `now`.
    pub fn resumed(&mut self, now: Instant) {
        self.resumed_at = Some(now);
    }

    /// Records answers to heartbeats sent at `sent_at` (one node's, or a whole round's).
    pub fn round(&mut self, sent_at: Instant, answers: Vec<(String, NodeReport)>) {
        let serving = answers.iter().any(|(_, r)| r.serving);
        if serving {
            let gap = self
                .last_seen
                .is_none_or(|seen| sent_at.saturating_duration_since(seen) > self.failure_timeout);
            if gap {
                self.up_since = Some(sent_at);
            }
            self.last_seen = Some(self.last_seen.map_or(sent_at, |s| s.max(sent_at)));
        }
        if answers.is_empty() {
            return;
        }
        self.last_answer_sent_at =
            Some(self.last_answer_sent_at.map_or(sent_at, |l| l.max(sent_at)));
        for (node, report) in answers {
            let changed = self.reports.get(&node).is_none_or(|before| {
                before.lazy_pending_users != report.lazy_pending_users
                    || before.lazy_flushed_total != report.lazy_flushed_total
            });
            if changed {
                self.source_changed_at =
                    Some(self.source_changed_at.map_or(sent_at, |c| c.max(sent_at)));
            }
            self.reports.insert(node, report);
        }
        // Per node: the backlog is clear when every pair Front End heard lately had nothing unwritten.
        let clear = self
            .reports
            .values()
            .filter(|r| sent_at.saturating_duration_since(r.answered_at) <= self.failure_timeout)
            .all(|r| r.lazy_pending_users == 0);
        self.pending_clear_since = clear.then(|| self.source_changed_at.unwrap_or(sent_at));
    }

    /// A serving answer came within the failure timeout.
    pub fn up(&self, now: Instant) -> bool {
        self.last_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) <= self.failure_timeout)
    }

    /// How long no serving answer came (since this Front End started, if none ever did).
    pub fn missed(&self, now: Instant) -> Duration {
        let since = self.last_seen.unwrap_or(self.started);
        let since = self.resumed_at.map_or(since, |r| since.max(r));
        now.saturating_duration_since(since)
    }

    /// How long the pair has been up without a gap (zero while it is down).
    pub fn up_for(&self, now: Instant) -> Duration {
        match self.up_since {
            Some(since) if self.up(now) => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        }
    }

    /// Whether the pair holds us failed over, by its fresh answers that read their record: `Some(true)` if any
    /// does, `Some(false)` if at least one answered and none does, `None` without a fresh answer.
    pub fn fences_us(&self, now: Instant) -> Option<bool> {
        let fresh: Vec<&NodeReport> = self
            .reports
            .values()
            .filter(|r| {
                r.record_loaded
                    && now.saturating_duration_since(r.answered_at) <= self.failure_timeout
            })
            .collect();
        if fresh.is_empty() {
            return None;
        }
        Some(fresh.iter().any(|r| r.fences_us))
    }

    /// Whether some pair Front End ever answered (since this one started).
    /// The highest failover epoch the pair reported (it only grows: every failover and failback bumps it).
    pub fn pair_epoch(&self) -> Option<u64> {
        self.reports
            .values()
            .filter(|r| r.record_loaded)
            .map(|r| r.failover_epoch)
            .max()
    }

    pub fn ever_answered(&self) -> bool {
        !self.reports.is_empty()
    }

    /// Send time of the newest answered heartbeat (the moment up to which the pair's acknowledged writes are
    /// accounted for in [`PairWatch::pending_clear_since`]).
    pub fn last_answer_sent_at(&self) -> Option<Instant> {
        self.last_answer_sent_at
    }

    /// See [`PairWatch::pending_clear_since`] (the field).
    pub fn pending_clear_since(&self) -> Option<Instant> {
        self.pending_clear_since
    }

    /// The newest management store record the pair reported: `(location, version)`.
    pub fn store(&self) -> Option<(String, u64)> {
        self.reports
            .values()
            .filter_map(|r| Some((r.store_location.clone()?, r.store_version)))
            .max_by_key(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at: Instant, serving: bool, pending: u64) -> NodeReport {
        NodeReport {
            answered_at: at,
            serving,
            record_loaded: true,
            fences_us: false,
            failover_epoch: 0,
            lazy_pending_users: pending,
            lazy_flushed_total: 0,
            store_location: None,
            store_version: 0,
        }
    }

    #[test]
    fn missed_counts_from_the_last_serving_answer_and_up_for_restarts_after_a_gap() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = PairWatch::new(s, t0);
        assert_eq!(
            w.missed(t0 + 3 * s),
            3 * s,
            "never seen: counted from start"
        );
        w.round(t0 + s, vec![("a1".into(), report(t0 + s, true, 0))]);
        assert!(w.up(t0 + s));
        assert_eq!(w.missed(t0 + 4 * s), 3 * s);
        // A stall of this Front End restarts the count: the silence was its own.
        w.resumed(t0 + 4 * s);
        assert_eq!(w.missed(t0 + 5 * s), s);
        assert!(!w.up(t0 + 4 * s));
        w.round(t0 + 5 * s, vec![("a1".into(), report(t0 + 5 * s, true, 0))]);
        assert_eq!(w.up_for(t0 + 5 * s + s / 2), s / 2, "a gap restarts up_for");
    }

    #[test]
    fn a_backlog_clears_pending_since_and_a_write_seen_later_moves_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut w = PairWatch::new(Duration::from_secs(1), t0);
        w.round(t0, vec![("a1".into(), report(t0, true, 2))]);
        assert_eq!(w.pending_clear_since(), None);
        w.round(t0 + ms, vec![("a1".into(), report(t0 + ms, true, 0))]);
        w.round(
            t0 + 2 * ms,
            vec![("a1".into(), report(t0 + 2 * ms, true, 0))],
        );
        assert_eq!(w.pending_clear_since(), Some(t0 + ms));
        // A write flushed between two heartbeats: only the written count shows it.
        let mut flushed = report(t0 + 3 * ms, true, 0);
        flushed.lazy_flushed_total = 1;
        w.round(t0 + 3 * ms, vec![("a1".into(), flushed)]);
        assert_eq!(w.pending_clear_since(), Some(t0 + 3 * ms));
    }
}
