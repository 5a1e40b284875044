//! Registration continuity: every user whose registration broke during a fault registers again within the
//! scenario's bound, and no user is signed out while no fault is in force.
//!
//! A user is signed in by a `register` ok (or a `refresh` ok that is not `register-action="added"`), and signed
//! out by a failed or timed-out `register`/`refresh`, a `refresh` answered `added` (the server lost the binding)
//! or a `registration_lost` observation. A sign-out belongs to the last fault or operator command whose window
//! holds it: a fault's from its request to its undo plus `aftermath_ms`, or to the end if never undone; an operator
//! command's from its request to its answer plus `aftermath_ms` (a failback sends users home, signing them out), or
//! to the end if never answered.
//!
//! Who may be signed out by a fault is the scenario's claim ([`MaySignOut`]): nobody; only the users attached to
//! what the fault hit (the node their connection went to, the Front End that answered their REGISTER, their routing
//! group's primary, or a routing group the faults in force left below two live replicas); or anyone. Every user
//! must sign in within the bound of its start.
//!
//! The file holds one concept, sign-outs: when each user was signed in and out, the fault or operator command each
//! sign-out is put down to, and whom that cause may sign out. The checker judges them here; the latency metrics
//! and the report's timeline read the same sign-outs from here.

use std::fmt;

use super::compose::Checker;
use super::split_brain::round_of;
use super::verdict::{Verdict, Violation};
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::history::{Attachment, Fault, GroupRole, History, Op, Outcome, View};

/// What a sign-out is put down to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The fault with this id.
    Fault(u64),
    /// The operator command with this id.
    Operator(u64),
}

impl Cause {
    /// The fault's id, when a fault is the cause.
    pub fn fault(self) -> Option<u64> {
        match self {
            Cause::Fault(id) => Some(id),
            Cause::Operator(_) => None,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Fault(id) => write!(f, "fault {id}"),
            Cause::Operator(id) => write!(f, "operator command {id}"),
        }
    }
}

/// One break of one user's registration, and when the user came back.
#[derive(Clone, Debug, PartialEq)]
pub struct SignOut {
    pub user: String,
    pub at_us: u64,
    /// The fault or operator command whose window holds the sign-out, if any.
    pub cause: Option<Cause>,
    /// The first sign-in after the sign-out.
    pub back_at_us: Option<u64>,
    /// The first sign-in after the sign-out that is not in resiliency mode.
    pub full_service_at_us: Option<u64>,
    /// Where the user was attached when signed out, as its last REGISTER answer before showed it.
    pub attachment: Attachment,
}

impl SignOut {
    /// When the user's time away counts from: the fault's moment of effect — its proof, or the user's own
    /// sign-out when that came first (a killed server's connections close before Docker reports it dead).
    /// A sign-out after the fault's undo (failback) counts from itself. The `reregister` metric and the bound
    /// both count from here, so detection time is part of the outage, as a user lives it. An operator command
    /// takes effect when it is answered (or at the user's sign-out, when that came first).
    pub fn outage_start_us(&self, history: &History) -> u64 {
        match self.cause {
            Some(Cause::Fault(id)) => {
                let Some(fault) = history.faults.iter().find(|f| f.id == id) else {
                    return self.at_us;
                };
                if fault.undone_at_us.is_some_and(|undone| self.at_us > undone) {
                    return self.at_us;
                }
                fault
                    .effective_at_us()
                    .min(self.at_us.max(fault.requested_at_us))
            }
            Some(Cause::Operator(id)) => {
                let Some(operator) = history.operators.iter().find(|o| o.id == id) else {
                    return self.at_us;
                };
                operator
                    .done_at_us
                    .unwrap_or(operator.requested_at_us)
                    .min(self.at_us.max(operator.requested_at_us))
            }
            None => self.at_us,
        }
    }
}

/// Whom a scenario's faults may sign out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaySignOut {
    /// No fault signs anyone out: users do not notice it (a Back End failover with a witness, a slow link).
    Nobody,
    /// Only the users attached to what a fault hit (see the module's documentation); every other user keeps
    /// service.
    Attached,
    /// Any user: the claim is only that whoever is signed out comes back within the bound.
    #[default]
    Anyone,
}

#[derive(Clone, Debug, PartialEq)]
enum Event {
    SignedIn {
        resiliency: bool,
        attachment: Attachment,
    },
    SignedOut,
}

/// Every user's sign-ins and sign-outs, in time order per user.
fn events(history: &History) -> Vec<(String, u64, Event)> {
    let mut events = Vec::new();
    for op in history.operations() {
        let at = op.complete_at_us;
        let event = match (&op.op, &op.outcome) {
            (
                Op::Register { .. },
                Outcome::Ok(Op::Register {
                    resiliency,
                    attachment,
                    ..
                }),
            ) => Some(Event::SignedIn {
                resiliency: *resiliency,
                attachment: attachment.clone(),
            }),
            (
                Op::Refresh { .. },
                Outcome::Ok(Op::Refresh {
                    action,
                    resiliency,
                    attachment,
                }),
            ) => {
                if action.as_deref() == Some("added") {
                    Some(Event::SignedOut)
                } else {
                    Some(Event::SignedIn {
                        resiliency: *resiliency,
                        attachment: attachment.clone(),
                    })
                }
            }
            (Op::Register { .. } | Op::Refresh { .. }, Outcome::Fail(_) | Outcome::Timeout) => {
                Some(Event::SignedOut)
            }
            (Op::RegistrationLost { .. }, Outcome::Ok(_)) => Some(Event::SignedOut),
            // Only a signed-in client hears the notice: it changes how, not whether, the user is served.
            (Op::ResiliencyNotice { on }, Outcome::Ok(_)) => Some(Event::SignedIn {
                resiliency: *on,
                attachment: Attachment::default(),
            }),
            _ => None,
        };
        if let (Some(event), Some(at)) = (event, at) {
            events.push((op.user.clone(), at, event));
        }
    }
    // Stable: same-stamp events keep their recorded order.
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    events
}

/// How many users were signed in over time: `(at_us, count)` at every change, starting at `(0, 0)`.
pub fn registered_over_time(history: &History) -> Vec<(u64, usize)> {
    let mut events = events(history);
    events.sort_by_key(|e| e.1);
    let mut signed_in: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let mut out = vec![(0, 0)];
    for (user, at_us, event) in &events {
        let changed = match event {
            Event::SignedIn { .. } => signed_in.insert(user.as_str()),
            Event::SignedOut => signed_in.remove(user.as_str()),
        };
        if changed {
            out.push((*at_us, signed_in.len()));
        }
    }
    out
}

/// Every sign-out of a signed-in user, with the fault it belongs to and when the user came back.
pub fn sign_outs(history: &History, aftermath_ms: u64) -> Vec<SignOut> {
    sign_outs_in(history, &events(history), aftermath_ms)
}

/// [`sign_outs`] from the history's [`events`].
fn sign_outs_in(
    history: &History,
    events: &[(String, u64, Event)],
    aftermath_ms: u64,
) -> Vec<SignOut> {
    let mut out = Vec::new();
    let mut signed_in = false;
    let mut attached = Attachment::default();
    let mut user: Option<&str> = None;
    for (index, (name, at_us, event)) in events.iter().enumerate() {
        if user != Some(name.as_str()) {
            user = Some(name);
            signed_in = false;
            attached = Attachment::default();
        }
        match event {
            Event::SignedIn { attachment, .. } => {
                signed_in = true;
                // A notice (no attachment of its own) keeps the attachment the user had.
                if attachment.is_known() {
                    attached = attachment.clone();
                }
            }
            Event::SignedOut if signed_in => {
                signed_in = false;
                let later = events[index + 1..].iter().take_while(|e| &e.0 == name);
                let mut back_at_us = None;
                let mut full_service_at_us = None;
                for (_, at, e) in later {
                    if let Event::SignedIn { resiliency, .. } = e {
                        back_at_us = back_at_us.or(Some(*at));
                        if !resiliency {
                            full_service_at_us = Some(*at);
                            break;
                        }
                    }
                }
                out.push(SignOut {
                    user: name.clone(),
                    at_us: *at_us,
                    cause: cause_holding(history, *at_us, aftermath_ms),
                    back_at_us,
                    full_service_at_us,
                    attachment: attached.clone(),
                });
            }
            Event::SignedOut => {}
        }
    }
    out
}

/// The last-requested fault whose window holds `at_us`.
pub fn fault_holding(faults: &[Fault], at_us: u64, aftermath_ms: u64) -> Option<u64> {
    faults
        .iter()
        .filter(|f| f.window_holds(at_us, aftermath_ms))
        .max_by_key(|f| f.requested_at_us)
        .map(|f| f.id)
}

/// The last-requested fault or operator command whose window holds `at_us`.
pub fn cause_holding(history: &History, at_us: u64, aftermath_ms: u64) -> Option<Cause> {
    let aftermath_us = aftermath_ms * 1000;
    let faults = history.faults.iter().map(|f| {
        (
            f.requested_at_us,
            f.window_end_us(aftermath_ms),
            Cause::Fault(f.id),
        )
    });
    let operators = history.operators.iter().map(|o| {
        let end = o
            .done_at_us
            .map_or(u64::MAX, |d| d.saturating_add(aftermath_us));
        (o.requested_at_us, end, Cause::Operator(o.id))
    });
    faults
        .chain(operators)
        .filter(|&(from, end, _)| from <= at_us && at_us <= end)
        .max_by_key(|&(from, _, _)| from)
        .map(|(_, _, cause)| cause)
}

/// Checks registration continuity.
#[derive(Clone, Debug)]
pub struct RegistrationContinuity {
    /// How long an affected user may stay signed out, from the fault's proof of effect.
    pub reregister_bound_ms: u64,
    /// How long after a fault's undo a sign-out still belongs to it (failback).
    pub aftermath_ms: u64,
    /// Whom the scenario's faults may sign out. Unless `Nobody`, a run whose faults signed no one out did not
    /// observe continuity across a fault (`unknown`).
    pub may_sign_out: MaySignOut,
}

impl Default for RegistrationContinuity {
    fn default() -> Self {
        RegistrationContinuity {
            reregister_bound_ms: 30_000,
            aftermath_ms: 5_000,
            may_sign_out: MaySignOut::Anyone,
        }
    }
}

/// The nodes a fault hit: its target's node, pool or site (`site:<name>` too), both ends of a link, every side of
/// a partition.
fn hit_nodes<'h>(history: &'h History, fault: &'h Fault) -> BTreeSet<&'h str> {
    if !fault.cuts.is_empty() {
        return fault.cuts.iter().flatten().map(String::as_str).collect();
    }
    let target = fault.target.as_str();
    // A link's target is `from->to:toxic`.
    let target = match target.rsplit_once(':') {
        Some((ends, _)) if target.contains("->") => ends,
        _ => target,
    };
    target
        .split(['|', '+'])
        .flat_map(|part| part.split("->"))
        .map(|name| name.trim().trim_start_matches("site:"))
        .flat_map(|name| history.run.nodes_named(name))
        .collect()
}

/// A routing group's replicas as the probes said: its primary, if any, and every node holding a replica.
#[derive(Debug, Default)]
struct Replicas<'h> {
    primary: Option<&'h str>,
    holders: Vec<&'h str>,
}

/// The replicas of every routing group (by pool and group) as the probes last said at or before `at_us`.
fn replicas_before(history: &History, at_us: u64) -> BTreeMap<(&str, &str), Replicas<'_>> {
    // Each node's views of its latest round at or before `at_us` (a node is recorded whole when it changes).
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for p in history.probes.iter().filter(|p| p.at_us <= at_us) {
        let r = latest.entry(p.node.as_str()).or_insert(0);
        *r = (*r).max(round_of(p));
    }
    let mut replicas: BTreeMap<(&str, &str), Replicas<'_>> = BTreeMap::new();
    for p in history.probes.iter().filter(|p| p.at_us <= at_us) {
        if latest.get(p.node.as_str()) != Some(&round_of(p)) {
            continue;
        }
        if let Some(View::GroupRole {
            pool, group, role, ..
        }) = &p.view
        {
            let r = replicas.entry((pool.as_str(), group.as_str())).or_default();
            match role {
                GroupRole::Primary => {
                    r.primary = Some(p.node.as_str());
                    r.holders.push(p.node.as_str());
                }
                GroupRole::Secondary => r.holders.push(p.node.as_str()),
                GroupRole::None => {}
            }
        }
    }
    replicas
}

/// Whether a sign-out at `at_us` of a user attached as `attachment` may be put down to `fault`: the user's
/// connection or answering Front End was hit, or its routing group's primary was, or the faults in force at
/// `at_us` left its group below two live replicas. `replicas` are the groups' replicas before the fault
/// ([`replicas_before`] its request). `None` when the attachment is unknown.
fn attached_to<'h>(
    history: &'h History,
    fault: &Fault,
    replicas: &BTreeMap<(&'h str, &'h str), Replicas<'h>>,
    attachment: &Attachment,
    at_us: u64,
    aftermath_ms: u64,
) -> Option<bool> {
    if !attachment.is_known() {
        return None;
    }
    let hit = hit_nodes(history, fault);
    if attachment.nodes().any(|n| hit.contains(n)) {
        return Some(true);
    }
    let (Some(group), Some(pool)) = (
        attachment.group.as_deref(),
        attachment
            .server
            .as_deref()
            .and_then(|s| history.run.pool_of(s)),
    ) else {
        return Some(false);
    };
    let Some(group) = replicas.get(&(pool, group)) else {
        return Some(false);
    };
    let homed = group.primary.is_some_and(|primary| hit.contains(primary));
    let down: BTreeSet<&str> = history
        .faults
        .iter()
        .filter(|f| f.window_holds(at_us, aftermath_ms))
        .flat_map(|f| hit_nodes(history, f))
        .collect();
    let live = group.holders.iter().filter(|n| !down.contains(*n)).count();
    Some(homed || live < 2)
}

impl Checker for RegistrationContinuity {
    fn name(&self) -> &'static str {
        "registration"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        if history.operations().is_empty() {
            return Verdict::Unknown("the history holds no operation".into());
        }
        let mut undecided = Vec::new();
        for fault in &history.faults {
            if fault.verified_at_us.is_none() {
                undecided.push(format!(
                    "fault {} ({} {}) was never verified to take effect",
                    fault.id, fault.kind, fault.target
                ));
            }
        }
        let end_us = history.last_at_us();
        let bound_us = self.reregister_bound_ms * 1000;
        let mut violations = Vec::new();
        let events = events(history);
        let sign_outs = sign_outs_in(history, &events, self.aftermath_ms);
        // The groups' replicas before each fault, read from the probes once per fault, not per sign-out.
        let mut replicas_by_fault = BTreeMap::new();
        self.check_signed_in_from_the_start(history, &events, &mut violations, &mut undecided);
        for s in &sign_outs {
            let Some(cause) = s.cause else {
                violations.push(Violation::new(
                    name,
                    Some(&s.user),
                    Some(s.at_us),
                    "signed out while no fault was in force",
                ));
                continue;
            };
            if let Some(fault) = cause
                .fault()
                .and_then(|id| history.faults.iter().find(|f| f.id == id))
            {
                let allowed = match self.may_sign_out {
                    MaySignOut::Anyone => Some(true),
                    MaySignOut::Nobody => Some(false),
                    // Any fault whose window holds the sign-out may have caused it, not only the last one
                    // requested: a user of a frozen server signed out while a later kill elsewhere was in force
                    // was signed out by the pause.
                    MaySignOut::Attached => {
                        let mut allowed = Some(false);
                        for holding in history
                            .faults
                            .iter()
                            .filter(|f| f.window_holds(s.at_us, self.aftermath_ms))
                        {
                            let replicas =
                                replicas_by_fault.entry(holding.id).or_insert_with(|| {
                                    replicas_before(history, holding.requested_at_us)
                                });
                            match attached_to(
                                history,
                                holding,
                                replicas,
                                &s.attachment,
                                s.at_us,
                                self.aftermath_ms,
                            ) {
                                Some(true) => {
                                    allowed = Some(true);
                                    break;
                                }
                                None => allowed = None,
                                Some(false) => {}
                            }
                        }
                        allowed
                    }
                };
                match allowed {
                    Some(true) => {}
                    Some(false) => violations.push(Violation::new(
                        name,
                        Some(&s.user),
                        Some(s.at_us),
                        match self.may_sign_out {
                            MaySignOut::Nobody => format!(
                                "signed out by {cause} ({} {}), which the scenario says signs nobody out",
                                fault.kind, fault.target
                            ),
                            _ => format!(
                                "signed out by {cause} ({} {}) while attached elsewhere ({}): only the users \
                                 attached to what the fault hit may be signed out",
                                fault.kind,
                                fault.target,
                                describe(&s.attachment)
                            ),
                        },
                    )),
                    None => undecided.push(format!(
                        "{} was signed out at {} ms by {cause}, and where the user was attached is unknown \
                         (its REGISTER answer named no server)",
                        s.user,
                        s.at_us / 1000
                    )),
                }
            }
            let start_us = s.outage_start_us(history);
            match s.back_at_us {
                Some(back) if back.saturating_sub(start_us) <= bound_us => {}
                Some(back) => violations.push(Violation::new(
                    name,
                    Some(&s.user),
                    Some(s.at_us),
                    format!(
                        "registered again {} ms after {cause}, over the bound of {} ms",
                        back.saturating_sub(start_us) / 1000,
                        self.reregister_bound_ms
                    ),
                )),
                None if end_us.saturating_sub(start_us) >= bound_us => {
                    violations.push(Violation::new(
                        name,
                        Some(&s.user),
                        Some(s.at_us),
                        format!("never registered again after {cause}"),
                    ))
                }
                None => undecided.push(format!(
                    "{} signed out at {} ms and the history ends before the bound of {} ms elapsed",
                    s.user,
                    s.at_us / 1000,
                    self.reregister_bound_ms
                )),
            }
        }
        if self.may_sign_out != MaySignOut::Nobody
            && !history.faults.is_empty()
            && sign_outs.iter().all(|s| s.cause.is_none())
        {
            undecided.push(
                "no user was affected by any fault, so continuity across a fault was not observed"
                    .into(),
            );
        }
        Verdict::from_findings(violations, undecided)
    }
}

impl RegistrationContinuity {
    /// Every user of the run signs in within the bound of its start, as a signed-out user must sign in again
    /// within it: a user never signed in is a violation, not invisible. Without a recorded start (older
    /// histories): by the end of the run, once the run lasted the bound.
    fn check_signed_in_from_the_start(
        &self,
        history: &History,
        events: &[(String, u64, Event)],
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<String>,
    ) {
        let mut first_in: BTreeMap<&str, u64> = BTreeMap::new();
        for (user, at_us, event) in events {
            if matches!(event, Event::SignedIn { .. }) {
                first_in.entry(user.as_str()).or_insert(*at_us);
            }
        }
        let bound_us = self.reregister_bound_ms * 1000;
        let deadline_us = history
            .run
            .users_started_by_us
            .unwrap_or(0)
            .saturating_add(bound_us);
        let end_us = history.last_at_us();
        for user in &history.run.users {
            match first_in.get(user.as_str()) {
                Some(at) if *at <= deadline_us || history.run.users_started_by_us.is_none() => {}
                Some(at) => violations.push(Violation::new(
                    self.name(),
                    Some(user),
                    Some(*at),
                    format!(
                        "first signed in at {} ms, over the bound of {} ms after every user had started ({} ms)",
                        at / 1000,
                        self.reregister_bound_ms,
                        (deadline_us - bound_us) / 1000
                    ),
                )),
                None if end_us >= deadline_us => violations.push(Violation::new(
                    self.name(),
                    Some(user),
                    None,
                    "never signed in",
                )),
                None => undecided.push(format!(
                    "{user} had not signed in when the history ended, before the bound after the users' start"
                )),
            }
        }
    }
}

/// A user's attachment, for a violation's text.
fn describe(a: &Attachment) -> String {
    let mut parts = Vec::new();
    if let Some(entry) = &a.entry {
        parts.push(format!("in through {entry}"));
    }
    if let Some(server) = &a.server {
        parts.push(format!("served by {server}"));
    }
    if let Some(group) = &a.group {
        parts.push(format!("group {group}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{clean, group, register, register_at, Build};
    use crate::history::GroupRole;
    use crate::history::Op;

    /// The clean run, with carol's connection reset by the fault at 10.4 s.
    fn carol_signed_out() -> Build {
        clean().observe(
            "carol",
            Op::RegistrationLost {
                reason: "reset".into(),
            },
            10_400,
        )
    }

    fn check(h: &History) -> Verdict {
        RegistrationContinuity {
            reregister_bound_ms: 5_000,
            ..Default::default()
        }
        .check(h)
    }

    #[test]
    fn the_clean_run_is_valid() {
        assert_eq!(check(&clean().build()), Verdict::Valid);
    }

    #[test]
    fn an_affected_user_never_back_is_a_violation() {
        let h = carol_signed_out()
            .fail("carol", register(false), 11_000, 11_100, "503")
            .build();
        let v = check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert_eq!(v.violations()[0].user.as_deref(), Some("carol"));
        assert!(v.violations()[0].what.contains("never registered again"));
    }

    #[test]
    fn full_service_comes_with_the_notice_that_ends_resiliency_mode() {
        let h = carol_signed_out()
            .ok("carol", register(true), 12_000, 12_100)
            .observe("carol", Op::ResiliencyNotice { on: false }, 14_000)
            .ok(
                "carol",
                Op::Refresh {
                    action: Some("refreshed".into()),
                    resiliency: false,
                    attachment: Default::default(),
                },
                30_000,
                30_010,
            )
            .build();
        let carol: Vec<SignOut> = sign_outs(&h, 0)
            .into_iter()
            .filter(|s| s.user == "carol")
            .collect();
        assert_eq!(carol.len(), 1, "{carol:?}");
        assert_eq!(carol[0].back_at_us, Some(12_100_000));
        assert_eq!(carol[0].full_service_at_us, Some(14_000_000));
    }

    #[test]
    fn a_user_back_after_the_bound_is_a_violation() {
        let h = carol_signed_out()
            .ok("carol", register(false), 19_000, 19_100)
            .build();
        let v = check(&h);
        assert!(
            v.violations()[0].what.contains("8900 ms after fault 0"),
            "{v:?}"
        );
    }

    #[test]
    fn an_unaffected_user_signed_out_is_a_violation() {
        let h = clean()
            .ok(
                "bob",
                Op::Refresh {
                    action: Some("added".into()),
                    resiliency: false,
                    attachment: Default::default(),
                },
                50_000,
                50_010,
            )
            .ok("bob", register(false), 50_100, 50_200)
            .build();
        let v = check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert_eq!(v.violations()[0].user.as_deref(), Some("bob"));
        assert!(v.violations()[0].what.contains("no fault was in force"));
    }

    /// bob signed out by the failback (answered at 60 s) at `signed_out_ms`, back 200 ms later.
    fn sent_home(signed_out_ms: u64) -> History {
        clean()
            .operator("pool-failback", "fe-b1", 59_000, Some(60_000))
            .observe(
                "bob",
                Op::RegistrationLost {
                    reason: "register-at fe-a".into(),
                },
                signed_out_ms,
            )
            .ok(
                "bob",
                register(false),
                signed_out_ms + 100,
                signed_out_ms + 200,
            )
            .end(signed_out_ms + 10_000)
            .build()
    }

    #[test]
    fn a_sign_out_by_a_failback_belongs_to_it_within_its_aftermath() {
        let h = sent_home(61_000);
        assert_eq!(check(&h), Verdict::Valid);
        let bob: Vec<SignOut> = sign_outs(&h, 5_000)
            .into_iter()
            .filter(|s| s.user == "bob")
            .collect();
        assert_eq!(bob[0].cause, Some(Cause::Operator(0)), "{bob:?}");
        // Counted from the command's answer.
        assert_eq!(bob[0].outage_start_us(&h), 60_000_000);
    }

    /// An operator command is done once answered: it does not stay in force for the rest of the run.
    #[test]
    fn an_operator_command_does_not_excuse_a_sign_out_long_after_it() {
        let v = check(&sent_home(90_000));
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains("no fault was in force"));
        // The same read from a history written before operator commands had their own record.
        let legacy = clean()
            .fault(
                "operator:pool-failback",
                "fe-b1",
                59_000,
                Some(60_000),
                None,
            )
            .observe(
                "bob",
                Op::RegistrationLost {
                    reason: "register-at fe-a".into(),
                },
                90_000,
            )
            .ok("bob", register(false), 90_100, 90_200)
            .end(100_000)
            .build();
        assert_eq!(check(&legacy).violations().len(), 1);
    }

    #[test]
    fn undecidable_histories_are_unknown() {
        assert!(matches!(check(&History::default()), Verdict::Unknown(_)));
        // A fault that signed nobody out: the run did not observe continuity across a fault.
        let h = Build::new(&["bob"])
            .ok("bob", register(false), 0, 10)
            .fault("kill", "fe-a1", 1_000, Some(1_100), Some(2_000))
            .end(10_000)
            .build();
        assert!(matches!(check(&h), Verdict::Unknown(r) if r.contains("no user was affected")));
        // A fault never proven to take effect.
        let h = clean().fault("kill", "fe-a2", 50_000, None, None).build();
        assert!(matches!(check(&h), Verdict::Unknown(r) if r.contains("never verified")));
        // Signed out near the end: the bound has not elapsed.
        let h = Build::new(&["bob"])
            .ok("bob", register(false), 0, 10)
            .fault("kill", "fe-a1", 1_000, Some(1_100), None)
            .observe(
                "bob",
                Op::RegistrationLost {
                    reason: "reset".into(),
                },
                1_200,
            )
            .end(2_000)
            .build();
        assert!(matches!(check(&h), Verdict::Unknown(r) if r.contains("before the bound")));
    }

    /// Five Front Ends `fe-a1..5` of pool `fe-a`, an Edge server `edge-1`; routing group `rg-1` on fe-a1
    /// (primary), fe-a2, fe-a3; `rg-2` on fe-a3 (primary), fe-a1, fe-a2; `rg-3` on fe-a3 (primary), fe-a4, fe-a5.
    fn five_front_ends(users: &[&str]) -> Build {
        let mut b = Build::new(users).nodes(&[
            ("fe-a1", "fe-a", "site-a"),
            ("fe-a2", "fe-a", "site-a"),
            ("fe-a3", "fe-a", "site-a"),
            ("fe-a4", "fe-a", "site-a"),
            ("fe-a5", "fe-a", "site-a"),
            ("edge-1", "edge", "site-a"),
        ]);
        let placement = [
            ("rg-1", ["fe-a1", "fe-a2", "fe-a3"]),
            ("rg-2", ["fe-a3", "fe-a1", "fe-a2"]),
            ("rg-3", ["fe-a3", "fe-a4", "fe-a5"]),
        ];
        for (g, holders) in placement {
            for (i, node) in holders.iter().enumerate() {
                let role = if i == 0 {
                    GroupRole::Primary
                } else {
                    GroupRole::Secondary
                };
                b = b.probe_in(node, group(g, role, 1), 500, 2);
            }
        }
        b
    }

    fn scoped(h: &History, may_sign_out: MaySignOut) -> Verdict {
        RegistrationContinuity {
            reregister_bound_ms: 5_000,
            may_sign_out,
            ..Default::default()
        }
        .check(h)
    }

    /// `user` signed in as `op` at 100 ms, signed out at `out_ms` by a reset, back 200 ms later.
    fn out_and_back(b: Build, user: &str, op: Op, out_ms: u64) -> Build {
        b.ok(user, op.clone(), 100, 150)
            .observe(
                user,
                Op::RegistrationLost {
                    reason: "connection reset".into(),
                },
                out_ms,
            )
            .ok(user, op, out_ms + 100, out_ms + 200)
    }

    #[test]
    fn only_the_killed_servers_users_may_be_signed_out_where_the_scenario_says_so() {
        // alice is served by the killed fe-a1; bob by fe-a2 in group rg-3, whose replicas all live.
        let b = five_front_ends(&["alice", "bob"]).fault(
            "kill",
            "fe-a1",
            1_000,
            Some(1_100),
            Some(8_000),
        );
        let b = out_and_back(b, "alice", register_at("fe-a1", "rg-3", None), 1_200);
        let h = b
            .ok("bob", register_at("fe-a2", "rg-3", None), 100, 150)
            .end(20_000)
            .build();
        assert_eq!(scoped(&h, MaySignOut::Attached), Verdict::Valid);

        let b = five_front_ends(&["alice", "bob"]).fault(
            "kill",
            "fe-a1",
            1_000,
            Some(1_100),
            Some(8_000),
        );
        let b = out_and_back(b, "alice", register_at("fe-a1", "rg-3", None), 1_200);
        let h = out_and_back(b, "bob", register_at("fe-a2", "rg-3", None), 1_300)
            .end(20_000)
            .build();
        let v = scoped(&h, MaySignOut::Attached);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert_eq!(v.violations()[0].user.as_deref(), Some("bob"));
        assert!(
            v.violations()[0]
                .what
                .contains("attached elsewhere (in through fe-a2, served by fe-a2, group rg-3)"),
            "{v:?}"
        );
        // The same history where anyone may be signed out: bob came back in time.
        assert_eq!(scoped(&h, MaySignOut::Anyone), Verdict::Valid);
    }

    #[test]
    fn a_sign_out_is_put_down_to_any_fault_in_force_that_hit_the_user_not_only_the_last() {
        // fe-a1 frozen from 1 s, edge-1 killed from 1.5 s; alice (on the frozen fe-a1) notices at 3.5 s, while
        // both are in force: the freeze signed her out. bob, on fe-a2, was hit by neither.
        let faults = |b: Build| {
            b.fault("pause", "fe-a1", 1_000, Some(1_100), Some(8_000))
                .fault("kill", "edge-1", 1_500, Some(1_600), Some(6_000))
        };
        let b = out_and_back(
            faults(five_front_ends(&["alice", "bob"])),
            "alice",
            register_at("fe-a1", "rg-3", None),
            3_500,
        );
        let h = b
            .ok("bob", register_at("fe-a2", "rg-3", None), 100, 150)
            .end(20_000)
            .build();
        assert_eq!(scoped(&h, MaySignOut::Attached), Verdict::Valid);

        let b = out_and_back(
            faults(five_front_ends(&["alice", "bob"])),
            "bob",
            register_at("fe-a2", "rg-3", None),
            3_500,
        );
        let h = b
            .ok("alice", register_at("fe-a1", "rg-3", None), 100, 150)
            .end(20_000)
            .build();
        let v = scoped(&h, MaySignOut::Attached);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert_eq!(v.violations()[0].user.as_deref(), Some("bob"));
    }

    #[test]
    fn a_user_whose_groups_primary_was_killed_or_who_came_in_through_it_may_be_signed_out() {
        // carol is served by fe-a2, but her group rg-1 had its primary on the killed fe-a1; dave came in through
        // the killed Edge server edge-1 (a remote user) to fe-a4.
        let b = five_front_ends(&["carol"]).fault("kill", "fe-a1", 1_000, Some(1_100), Some(8_000));
        let h = out_and_back(b, "carol", register_at("fe-a2", "rg-1", None), 1_300)
            .end(20_000)
            .build();
        assert_eq!(scoped(&h, MaySignOut::Attached), Verdict::Valid);

        let b = five_front_ends(&["dave"]).fault("kill", "edge-1", 1_000, Some(1_100), Some(8_000));
        let h = out_and_back(
            b,
            "dave",
            register_at("fe-a4", "rg-3", Some("edge-1")),
            1_300,
        )
        .end(20_000)
        .build();
        assert_eq!(scoped(&h, MaySignOut::Attached), Verdict::Valid);
    }

    #[test]
    fn only_the_users_of_a_group_left_below_two_replicas_may_be_signed_out() {
        // fe-a1 and fe-a2 killed: rg-2 (primary fe-a3) keeps one live replica; rg-3 keeps all three.
        let killed = || {
            five_front_ends(&["erin", "frank"])
                .fault("kill", "fe-a1", 1_000, Some(1_100), Some(8_000))
                .fault("kill", "fe-a2", 1_000, Some(1_100), Some(8_000))
        };
        let h = out_and_back(killed(), "erin", register_at("fe-a3", "rg-2", None), 1_300)
            .ok("frank", register_at("fe-a3", "rg-3", None), 100, 150)
            .end(20_000)
            .build();
        assert_eq!(scoped(&h, MaySignOut::Attached), Verdict::Valid);

        let b = out_and_back(killed(), "erin", register_at("fe-a3", "rg-2", None), 1_300);
        let h = out_and_back(b, "frank", register_at("fe-a3", "rg-3", None), 1_400)
            .end(20_000)
            .build();
        let v = scoped(&h, MaySignOut::Attached);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert_eq!(v.violations()[0].user.as_deref(), Some("frank"));
    }

    #[test]
    fn a_sign_out_is_a_violation_where_the_scenario_says_nobody_notices() {
        let v = scoped(
            &carol_signed_out()
                .ok("carol", register(false), 11_000, 11_100)
                .build(),
            MaySignOut::Nobody,
        );
        assert_eq!(v.violations().len(), 2, "{v:?}");
        assert!(
            v.violations()
                .iter()
                .all(|v| v.what.contains("signs nobody out")),
            "{v:?}"
        );
    }

    #[test]
    fn a_sign_out_of_a_user_whose_attachment_is_unknown_is_undecided() {
        let b = five_front_ends(&["gina"]).fault("kill", "fe-a1", 1_000, Some(1_100), Some(8_000));
        let h = out_and_back(b, "gina", register(false), 1_300)
            .end(20_000)
            .build();
        assert!(
            matches!(scoped(&h, MaySignOut::Attached), Verdict::Unknown(r) if r.contains("where the user was attached is unknown")),
        );
    }

    #[test]
    fn a_user_who_never_signs_in_is_a_violation() {
        // dave is a user of the run and never signed in; every user had started by 1 s (bound: 5 s).
        let h = Build::new(&["alice", "dave"])
            .ok("alice", register(false), 100, 150)
            .fail(
                "dave",
                register(false),
                100,
                5_100,
                "503 Service Unavailable",
            )
            .users_started_by(1_000)
            .end(20_000)
            .build();
        let v = scoped(&h, MaySignOut::Anyone);
        assert!(
            v.violations()
                .iter()
                .any(|v| v.user.as_deref() == Some("dave") && v.what.contains("never signed in")),
            "{v:?}"
        );
        // Signed in only over the bound after the start: also a violation.
        let h = Build::new(&["alice", "dave"])
            .ok("alice", register(false), 100, 150)
            .ok("dave", register(false), 6_000, 6_100)
            .users_started_by(1_000)
            .end(20_000)
            .build();
        let v = scoped(&h, MaySignOut::Anyone);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(
            v.violations()[0]
                .what
                .contains("first signed in at 6100 ms"),
            "{v:?}"
        );
        // Within the bound: valid.
        let h = Build::new(&["alice", "dave"])
            .ok("alice", register(false), 100, 150)
            .ok("dave", register(false), 5_800, 5_900)
            .users_started_by(1_000)
            .end(20_000)
            .build();
        assert_eq!(scoped(&h, MaySignOut::Anyone), Verdict::Valid);
        // A history that ends within the bound cannot tell.
        let h = Build::new(&["alice", "dave"])
            .ok("alice", register(false), 100, 150)
            .users_started_by(1_000)
            .end(5_000)
            .build();
        assert!(
            matches!(scoped(&h, MaySignOut::Anyone), Verdict::Unknown(r) if r.contains("dave had not signed in"))
        );
    }

    #[test]
    fn a_fault_hits_the_nodes_its_target_names() {
        let h = Build::new(&[])
            .nodes(&[
                ("fe1-1", "fe1", "dc1"),
                ("fe1-2", "fe1", "dc1"),
                ("fe2-1", "fe2", "dc2"),
            ])
            .fault("kill", "fe1-2", 1_000, Some(1_100), None)
            .fault("link", "users->fe1:reset_peer", 1_000, Some(1_100), None)
            .fault("partition", "site:dc1 | site:dc2", 1_000, Some(1_100), None)
            .fault("site_down", "dc2", 1_000, Some(1_100), None)
            .fault("one_way", "fe1-1 => fe1", 1_000, Some(1_100), None)
            .cutting(&[["fe1-1", "fe1-2"]])
            .build();
        let hit: Vec<Vec<&str>> = h
            .faults
            .iter()
            .map(|f| hit_nodes(&h, f).into_iter().collect())
            .collect();
        assert_eq!(
            hit,
            [
                vec!["fe1-2"],
                vec!["fe1-1", "fe1-2"],
                vec!["fe1-1", "fe1-2", "fe2-1"],
                vec!["fe2-1"],
                vec!["fe1-1", "fe1-2"],
            ]
        );
    }
}
