//! The backup service, one direction per pool: the pair's users' records are read from the pair's Back End
//! (`load_all(pair)`) and those that differ from our copy are written to our own Back End, where they keep the
//! pair's pool name (`UserRecord::pool`): our Back End holds the pair's users in the pair's namespace, never mixed
//! with ours. One Front End of the pool runs it (the first running one in topology order), so two passes never
//! race each other's writes.
//!
//! The interval is `backup_service_interval_ms`; 0 streams: a pass starts [`STREAM_PAUSE`] after the last one.
//!
//! State: `final` when the last pass found nothing left to copy *and* started after the heartbeat last saw the
//! pair's lazy writers change anything, with no backlog since (so what they acknowledged was in their Back End
//! when we read it);
//! `steady` otherwise; `suspended` while the pair is failed over to us (the copy is then ours to change, and a
//! returning pair's stale Back End must not overwrite it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::backend::UserRecord;

/// Pause between passes when the service streams.
pub const STREAM_PAUSE: Duration = Duration::from_millis(50);

/// `steady`, `final` or `suspended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    Steady,
    Final,
    Suspended,
}

/// One direction's progress, as `/status` shows it.
#[derive(Debug, Clone, Default)]
pub struct BackupStatus {
    pub passes_total: u64,
    pub failures_total: u64,
    pub users_copied_total: u64,
    /// Start of the last pass that completed.
    pub last_pass_started: Option<Instant>,
    pub last_pass_copied: usize,
    pub last_pass_users: usize,
    pub suspended: bool,
    pub last_error: Option<String>,
}

impl BackupStatus {
    /// The state, given the pair's backlog as the heartbeat knows it now
    /// ([`super::PairWatch::pending_clear_since`]): `final` when the last pass copied nothing and started after the
    /// pair's lazy writers last changed anything.
    pub fn state(&self, pending_clear_since: Option<Instant>) -> BackupState {
        let final_ = self.last_pass_copied == 0
            && self
                .last_pass_started
                .is_some_and(|started| pending_clear_since.is_some_and(|c| c <= started));
        if self.suspended {
            BackupState::Suspended
        } else if final_ {
            BackupState::Final
        } else {
            BackupState::Steady
        }
    }

    /// How far behind the copy may be: 0 when `final`, else the age of the last completed pass's start (the copy
    /// holds everything the pair's Back End held then). `None` before the first pass.
    pub fn lag_ms(&self, now: Instant, pending_clear_since: Option<Instant>) -> Option<u64> {
        if self.state(pending_clear_since) == BackupState::Final {
            return Some(0);
        }
        self.last_pass_started
            .map(|s| now.saturating_duration_since(s).as_millis() as u64)
    }

    /// Records a completed pass.
    pub fn passed(&mut self, started: Instant, users: usize, copied: usize) {
        self.passes_total += 1;
        self.users_copied_total += copied as u64;
        self.last_pass_started = Some(started);
        self.last_pass_users = users;
        self.last_pass_copied = copied;
        self.last_error = None;
    }

    pub fn failed(&mut self, error: String) {
        self.failures_total += 1;
        self.last_error = Some(error);
    }

    pub fn to_json(
        &self,
        source: &str,
        destination: &str,
        runner: bool,
        now: Instant,
        pending_clear_since: Option<Instant>,
    ) -> Value {
        json!({
            "direction": format!("{source}->{destination}"),
            "source": source,
            "runner": runner,
            "state": self.state(pending_clear_since),
            "lag_ms": self.lag_ms(now, pending_clear_since),
            "passes": self.passes_total,
            "failures": self.failures_total,
            "users": self.last_pass_users,
            "last_pass_copied": self.last_pass_copied,
            "users_copied_total": self.users_copied_total,
            "last_error": self.last_error,
        })
    }
}

/// The source records that differ from the copy (contacts, presence and settings; the credential is the
/// cluster description's).
pub fn changed(source: Vec<UserRecord>, copy: &[UserRecord]) -> Vec<UserRecord> {
    let copied: BTreeMap<&str, &UserRecord> = copy.iter().map(|r| (r.user.as_str(), r)).collect();
    source
        .into_iter()
        .filter(|r| {
            copied.get(r.user.as_str()).is_none_or(|c| {
                c.contacts != r.contacts || c.presence != r.presence || c.settings != r.settings
            })
        })
        .map(|r| UserRecord {
            password: None,
            ..r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, contacts: &[&str]) -> UserRecord {
        UserRecord {
            user: user.into(),
            pool: "pa".into(),
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            ..UserRecord::default()
        }
    }

    #[test]
    fn only_differing_records_are_copied() {
        let copy = vec![rec("alice", &["sip:bob@x"]), rec("bob", &[])];
        let source = vec![
            rec("alice", &["sip:bob@x"]),
            rec("bob", &["sip:alice@x"]),
            rec("carol", &[]),
        ];
        let users: Vec<String> = changed(source, &copy).into_iter().map(|r| r.user).collect();
        assert_eq!(users, ["bob", "carol"]);
    }

    #[test]
    fn final_needs_an_empty_pass_after_the_backlog_cleared() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut s = BackupStatus::default();
        s.passed(t0, 3, 0);
        assert_eq!(s.state(None), BackupState::Steady, "backlog pending");
        s.passed(t0 + ms, 3, 0);
        let cleared = Some(t0 + 2 * ms);
        assert_eq!(
            s.state(cleared),
            BackupState::Steady,
            "pass began before it cleared"
        );
        s.passed(t0 + 3 * ms, 3, 1);
        assert_eq!(s.state(cleared), BackupState::Steady, "it copied something");
        s.passed(t0 + 4 * ms, 3, 0);
        assert_eq!(s.state(cleared), BackupState::Final);
        assert_eq!(s.lag_ms(t0 + 100 * ms, cleared), Some(0));
        let later = Some(t0 + 5 * ms);
        assert_eq!(
            s.state(later),
            BackupState::Steady,
            "a later write undoes final"
        );
    }
}
