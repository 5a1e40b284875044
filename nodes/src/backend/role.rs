//! The role state machine of one Back End node: principal or mirror (durable, with the epoch), whether a
//! principal is serving (it holds quorum), whether its mirror is synchronized, whether it runs exposed.
//!
//! The quorum rules, and why they never allow two serving principals:
//! - With a witness, a principal serves only under a **lease**: a heartbeat answered by the mirror or the witness
//!   at time `s` (when it was sent) lets it serve until `s + lease`, with `lease` = 3/5 of the partner timeout.
//!   A mirror is promoted only when it *and* the witness have not heard from the principal for a whole partner
//!   timeout; both heard the principal no earlier than `s`, so the old lease ran out at least 2/5 of a timeout
//!   before the new principal exists. A principal that sees neither partner therefore stops serving within the
//!   partner timeout.
//! - The witness grants a promotion only to a synchronized mirror: a principal that loses its mirror registers
//!   itself *exposed* with the witness before its first commit without the mirror, and only its explicit
//!   "synchronized" message (after the mirror caught up) clears that.
//! - Without a witness there is no automatic failover, so no lease: the principal serves (exposed when its mirror is
//!   gone), and only an operator promotes the mirror.
//! - Every promotion raises the epoch; a node that hears of a higher epoch steps down to mirror at once (in memory
//!   first, so it stops serving before the durable write), and a mirror fences writes from a lower epoch.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::protocol::{NodeView, WitnessView};
use super::store::{DurableRole, Meta};
use crate::cluster::Timings;
use crate::defects::{self, Defect};

/// The role a node reports: a principal that lost quorum (or has not yet found it after a restart) is `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    Principal,
    Mirror,
    Stopped,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Principal => "principal",
            DbRole::Mirror => "mirror",
            DbRole::Stopped => "stopped",
        }
    }
}

/// The Back End timers, all derived from [`Timings::be_partner_timeout_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A partner not heard from for this long is lost.
    pub partner_timeout: Duration,
    /// How long one answered heartbeat lets a principal serve (3/5 of the partner timeout).
    pub lease: Duration,
    /// Heartbeat period (1/5 of the partner timeout).
    pub heartbeat_interval: Duration,
    /// Wait for one heartbeat answer (2 heartbeat periods).
    pub heartbeat_timeout: Duration,
    /// Wait for the mirror to apply one commit before counting it lost (1/2 of the partner timeout).
    pub replicate_timeout: Duration,
    /// Wait for one catch-up step or snapshot (5 partner timeouts: a snapshot can be big).
    pub catch_up_timeout: Duration,
    pub has_witness: bool,
}

impl Settings {
    pub fn new(timings: &Timings, has_witness: bool) -> Settings {
        let partner_timeout = Duration::from_millis(timings.be_partner_timeout_ms.max(50));
        let heartbeat_interval = partner_timeout / 5;
        Settings {
            partner_timeout,
            lease: partner_timeout * 3 / 5,
            heartbeat_interval,
            heartbeat_timeout: heartbeat_interval * 2,
            replicate_timeout: partner_timeout / 2,
            catch_up_timeout: partner_timeout * 5,
            has_witness,
        }
    }
}

/// The in-memory role state of one node. The durable part (role, epoch, log position) is written to the store
/// by the caller; this struct decides.
#[derive(Debug, Clone)]
pub struct RoleState {
    pub node: String,
    pub settings: Settings,
    pub role: DurableRole,
    pub epoch: u64,
    pub last_lsn: u64,
    pub last_entry_epoch: u64,
    started_at: Instant,
    /// Principal with a witness: serving until then.
    lease_until: Option<Instant>,
    /// Principal: the mirror receives every commit synchronously.
    pub mirror_synchronized: bool,
    /// Principal: registered (with the witness, if any) as committing without its mirror.
    pub exposed: bool,
    /// Principal: the witness recorded the mirror as synchronized (else a message is owed to it).
    pub witness_knows_synchronized: bool,
    /// Principal: where the mirror's log stands, as last reported by it.
    pub mirror_position: Option<(u64, u64)>,
    /// Principal: a commit failed here after it was sent to the mirror, so the mirror may hold an entry this
    /// principal does not, under an `(lsn, epoch)` this principal will give another entry. Such a mirror gets a
    /// snapshot before anything else, and is not synchronized until it has installed one.
    pub mirror_diverged: bool,
    /// Mirror: the principal said this mirror is synchronized.
    pub synchronized_as_mirror: bool,
    /// Mirror: the principal's log position, as last heard (what a forced failover may lose).
    pub principal_lsn_known: u64,
    pub partner_heard_at: Option<Instant>,
    pub partner: Option<NodeView>,
    pub witness_heard_at: Option<Instant>,
    pub witness: Option<WitnessView>,
}

impl RoleState {
    pub fn new(node: &str, settings: Settings, meta: Meta, now: Instant) -> RoleState {
        RoleState {
            node: node.to_string(),
            settings,
            role: meta.role,
            epoch: meta.epoch,
            last_lsn: meta.last_lsn,
            last_entry_epoch: meta.last_entry_epoch,
            started_at: now,
            lease_until: None,
            mirror_synchronized: false,
            exposed: false,
            witness_knows_synchronized: false,
            mirror_position: None,
            mirror_diverged: false,
            synchronized_as_mirror: false,
            principal_lsn_known: 0,
            partner_heard_at: None,
            partner: None,
            witness_heard_at: None,
            witness: None,
        }
    }

    /// Whether this node may accept a commit or answer a read now.
    pub fn serving(&self, now: Instant) -> bool {
        if self.role != DurableRole::Principal {
            return false;
        }
        if self.settings.has_witness {
            if defects::active(Defect::PrincipalServesWithoutQuorum) {
                // The bug: the lease is taken once and never checked again, so a principal cut from its mirror and
                // its witness serves on while the mirror is promoted.
                return self.lease_until.is_some();
            }
            self.lease_until.is_some_and(|t| now < t)
        } else {
            // No lease without a witness, but a restarted principal first gives its partner a chance to tell it
            // of a newer epoch (an operator failover while it was down).
            self.partner_heard_at.is_some()
                || now.duration_since(self.started_at) >= self.settings.partner_timeout
        }
    }

    pub fn db_role(&self, now: Instant) -> DbRole {
        match self.role {
            DurableRole::Mirror => DbRole::Mirror,
            DurableRole::Principal if self.serving(now) => DbRole::Principal,
            DurableRole::Principal => DbRole::Stopped,
        }
    }

    /// A heartbeat sent at `sent_at` was answered by a partner that cannot be a newer principal.
    pub fn renew_lease(&mut self, sent_at: Instant) {
        if self.role != DurableRole::Principal {
            return;
        }
        let until = sent_at + self.settings.lease;
        if self.lease_until.is_none_or(|t| t < until) {
            self.lease_until = Some(until);
        }
    }

    /// In memory, at once: this node is now a mirror at `epoch` (never lowers the epoch).
    pub fn become_mirror(&mut self, epoch: u64) {
        self.role = DurableRole::Mirror;
        self.epoch = self.epoch.max(epoch);
        self.lease_until = None;
        self.mirror_synchronized = false;
        self.exposed = false;
        self.witness_knows_synchronized = false;
        self.mirror_position = None;
        self.synchronized_as_mirror = false;
    }

    /// In memory: this node is now the principal of `epoch`, its mirror not yet synchronized. The witness (if
    /// any) recorded it exposed when it granted the promotion.
    pub fn become_principal(&mut self, epoch: u64, granted_at: Instant) {
        assert!(epoch > self.epoch, "a promotion always raises the epoch");
        self.role = DurableRole::Principal;
        self.epoch = epoch;
        self.mirror_synchronized = false;
        self.exposed = true;
        self.witness_knows_synchronized = false;
        self.mirror_position = None;
        self.synchronized_as_mirror = false;
        self.lease_until = None;
        self.renew_lease(granted_at);
    }

    pub fn set_position(&mut self, meta: &Meta) {
        self.last_lsn = meta.last_lsn;
        self.last_entry_epoch = meta.last_entry_epoch;
    }

    /// This node's view, for heartbeats.
    pub fn view(&self, now: Instant) -> NodeView {
        NodeView {
            node: self.node.clone(),
            role: self.role,
            serving: self.serving(now),
            epoch: self.epoch,
            last_lsn: self.last_lsn,
            last_entry_epoch: self.last_entry_epoch,
            synchronized: match self.role {
                DurableRole::Principal => self.mirror_synchronized,
                DurableRole::Mirror => self.synchronized_as_mirror,
            },
            exposed: self.role == DurableRole::Principal && self.exposed,
        }
    }

    pub fn partner_silent_for(&self, now: Instant) -> Duration {
        now.duration_since(self.partner_heard_at.unwrap_or(self.started_at))
    }

    pub fn witness_recent(&self, now: Instant) -> bool {
        self.witness_heard_at
            .is_some_and(|t| now.duration_since(t) < self.settings.partner_timeout)
    }

    /// A heartbeat answer (or request) from the partner. `answer_to` is the send time of this node's own
    /// request when `view` answers it, `None` when the partner's request carried it: only an answer renews a
    /// principal's lease, since only then did the partner hear this node at or after that time (with a one-way
    /// partition the partner's requests still arrive while it no longer hears this node, and may promote).
    /// Returns `Some(epoch)` when this node must step down to mirror at that epoch (the caller persists it).
    pub fn on_partner_view(
        &mut self,
        view: &NodeView,
        answer_to: Option<Instant>,
        now: Instant,
    ) -> Option<u64> {
        self.partner_heard_at = Some(now);
        self.partner = Some(view.clone());
        if view.epoch > self.epoch {
            self.become_mirror(view.epoch);
            return Some(view.epoch);
        }
        match (self.role, view.role) {
            (DurableRole::Principal, DurableRole::Mirror) => {
                if let Some(sent_at) = answer_to {
                    self.renew_lease(sent_at);
                }
            }
            (DurableRole::Principal, DurableRole::Principal) if view.epoch < self.epoch => {
                // A stale principal: it steps down when it reads this node's answer.
                if let Some(sent_at) = answer_to {
                    self.renew_lease(sent_at);
                }
            }
            (DurableRole::Mirror, DurableRole::Principal) if view.epoch == self.epoch => {
                self.synchronized_as_mirror = view.synchronized;
                self.principal_lsn_known = self.principal_lsn_known.max(view.last_lsn);
            }
            (DurableRole::Principal, DurableRole::Principal) => {
                tracing::error!(
                    node = %self.node,
                    partner = %view.node,
                    epoch = self.epoch,
                    "two principals claim one epoch; this cannot happen by the rules"
                );
            }
            _ => {}
        }
        None
    }

    /// A heartbeat answer from the witness. Returns `Some(epoch)` when this node must step down.
    pub fn on_witness_view(
        &mut self,
        view: &WitnessView,
        sent_at: Instant,
        now: Instant,
    ) -> Option<u64> {
        self.witness_heard_at = Some(now);
        self.witness = Some(view.clone());
        if self.role == DurableRole::Principal {
            if view.epoch > self.epoch {
                self.become_mirror(view.epoch);
                return Some(view.epoch);
            }
            if view.epoch == self.epoch && view.principal.as_deref() == Some(&self.node) {
                self.renew_lease(sent_at);
                if !view.mirror_synchronized {
                    self.witness_knows_synchronized = false;
                }
            }
        }
        None
    }

    /// Mirror with a witness: the principal has been silent for a whole partner timeout, the mirror is
    /// synchronized as far as it or the witness knows, and the witness is in reach: ask the witness for
    /// promotion. The witness's record decides (it grants only a mirror it has recorded synchronized); the
    /// mirror's own flag can lag by a heartbeat (a ping sent before the last catch-up step may arrive after it),
    /// so either one is reason enough to ask.
    pub fn should_request_promotion(&self, now: Instant) -> bool {
        let witness_says_synchronized = self
            .witness
            .as_ref()
            .is_some_and(|w| w.epoch == self.epoch && w.mirror_synchronized);
        self.settings.has_witness
            && self.role == DurableRole::Mirror
            && (self.synchronized_as_mirror || witness_says_synchronized)
            && self.partner_silent_for(now) >= self.settings.partner_timeout
            && self.witness_recent(now)
    }

    /// Principal: the mirror is gone (silent for a partner timeout) and still counted as synchronized.
    pub fn mirror_lost(&self, now: Instant) -> bool {
        self.role == DurableRole::Principal
            && self.mirror_synchronized
            && self.partner_silent_for(now) >= self.settings.partner_timeout
    }

    /// Commits the mirror lacks: on a principal, behind its own log; on a mirror, behind the principal's as last
    /// heard.
    pub fn lag_commits(&self) -> u64 {
        match self.role {
            DurableRole::Principal => match self.mirror_position {
                Some((lsn, _)) => self.last_lsn.saturating_sub(lsn),
                None => self
                    .partner
                    .as_ref()
                    .map_or(0, |p| self.last_lsn.saturating_sub(p.last_lsn)),
            },
            DurableRole::Mirror => self.principal_lsn_known.saturating_sub(self.last_lsn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(role: DurableRole) -> Meta {
        Meta {
            role,
            epoch: 1,
            last_lsn: 0,
            last_entry_epoch: 0,
            base_lsn: 0,
            base_epoch: 0,
        }
    }

    fn settings(has_witness: bool) -> Settings {
        Settings::new(&Timings::fast(), has_witness)
    }

    fn view(node: &str, role: DurableRole, epoch: u64, synchronized: bool) -> NodeView {
        NodeView {
            node: node.into(),
            role,
            serving: false,
            epoch,
            last_lsn: 0,
            last_entry_epoch: 0,
            synchronized,
            exposed: false,
        }
    }

    #[test]
    fn a_principal_with_a_witness_serves_only_within_its_lease() {
        let t0 = Instant::now();
        let mut s = RoleState::new("be-1", settings(true), meta(DurableRole::Principal), t0);
        assert!(!s.serving(t0), "no quorum heard yet");
        s.on_partner_view(&view("be-2", DurableRole::Mirror, 1, false), Some(t0), t0);
        assert!(s.serving(t0 + s.settings.lease / 2));
        assert!(
            !s.serving(t0 + s.settings.lease),
            "stops when the lease runs out"
        );
        assert!(
            s.settings.lease < s.settings.partner_timeout,
            "stops before a mirror may be promoted"
        );
    }

    #[test]
    fn a_principal_renews_its_lease_only_on_answers_to_its_own_heartbeats() {
        let t0 = Instant::now();
        let mut s = RoleState::new("be-1", settings(true), meta(DurableRole::Principal), t0);
        s.on_partner_view(&view("be-2", DurableRole::Mirror, 1, false), None, t0);
        assert!(
            !s.serving(t0),
            "a request from the mirror proves nothing about what the mirror hears"
        );
        s.on_partner_view(&view("be-2", DurableRole::Mirror, 1, false), Some(t0), t0);
        assert!(s.serving(t0));
    }

    #[test]
    fn a_principal_hearing_a_higher_epoch_steps_down_at_once() {
        let t0 = Instant::now();
        let mut s = RoleState::new("be-1", settings(true), meta(DurableRole::Principal), t0);
        s.on_partner_view(&view("be-2", DurableRole::Mirror, 1, false), Some(t0), t0);
        assert_eq!(
            s.on_partner_view(
                &view("be-2", DurableRole::Principal, 2, false),
                Some(t0),
                t0
            ),
            Some(2)
        );
        assert_eq!(
            (s.role, s.epoch, s.serving(t0)),
            (DurableRole::Mirror, 2, false)
        );
    }

    #[test]
    fn a_mirror_asks_for_promotion_only_when_synchronized_silent_and_near_the_witness() {
        let t0 = Instant::now();
        let mut s = RoleState::new("be-2", settings(true), meta(DurableRole::Mirror), t0);
        s.on_partner_view(&view("be-1", DurableRole::Principal, 1, true), Some(t0), t0);
        let later = t0 + s.settings.partner_timeout;
        assert!(!s.should_request_promotion(later), "witness not heard");
        s.on_witness_view(
            &WitnessView {
                node: "be-witness".into(),
                epoch: 1,
                principal: Some("be-1".into()),
                mirror_synchronized: true,
                principal_heard_ms_ago: None,
            },
            later,
            later,
        );
        assert!(s.should_request_promotion(later));
        assert!(
            !s.should_request_promotion(t0 + s.settings.partner_timeout / 2),
            "principal heard recently"
        );
        s.synchronized_as_mirror = false;
        assert!(
            s.should_request_promotion(later),
            "the witness's record is reason enough to ask"
        );
        s.witness.as_mut().unwrap().mirror_synchronized = false;
        assert!(
            !s.should_request_promotion(later),
            "an unsynchronized mirror never asks"
        );
    }

    #[test]
    fn without_a_witness_a_mirror_never_asks_for_promotion() {
        let t0 = Instant::now();
        let mut s = RoleState::new("be-2", settings(false), meta(DurableRole::Mirror), t0);
        s.on_partner_view(&view("be-1", DurableRole::Principal, 1, true), Some(t0), t0);
        assert!(!s.should_request_promotion(t0 + s.settings.partner_timeout * 100));
    }

    #[test]
    fn without_a_witness_a_principal_serves_alone_after_its_start_up_hold() {
        let t0 = Instant::now();
        let s = RoleState::new("be-1", settings(false), meta(DurableRole::Principal), t0);
        assert!(!s.serving(t0));
        assert!(s.serving(t0 + s.settings.partner_timeout));
    }
}
