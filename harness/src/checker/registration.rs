//! Registration continuity: every user whose registration broke during a fault registers again within the
//! scenario's bound, and no user is signed out while no fault is in force.
//!
//! A user is signed in by a `register` ok (or a `refresh` ok that is not `register-action="added"`), and signed
//! out by a failed or timed-out `register`/`refresh`, a `refresh` answered `added` (the server lost the binding)
//! or a `registration_lost` observation. A sign-out belongs to the last fault or operator command whose window
//! holds it: a fault's from its request to its undo plus `settle_ms`, or to the end if never undone; an operator
//! command's from its request to its answer plus `settle_ms` (a failback sends users home, signing them out), or
//! to the end if never answered.

use std::fmt;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{Fault, History, Op, Outcome};

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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    SignedIn { resiliency: bool },
    SignedOut,
}

/// Every user's sign-ins and sign-outs, in time order per user.
fn events(history: &History) -> Vec<(String, u64, Event)> {
    let mut events = Vec::new();
    for op in history.operations() {
        let at = op.complete_at_us;
        let event = match (&op.op, &op.outcome) {
            (Op::Register { .. }, Outcome::Ok(Op::Register { resiliency, .. })) => {
                Some(Event::SignedIn {
                    resiliency: *resiliency,
                })
            }
            (Op::Refresh { .. }, Outcome::Ok(Op::Refresh { action, resiliency })) => {
                if action.as_deref() == Some("added") {
                    Some(Event::SignedOut)
                } else {
                    Some(Event::SignedIn {
                        resiliency: *resiliency,
                    })
                }
            }
            (Op::Register { .. } | Op::Refresh { .. }, Outcome::Fail(_) | Outcome::Timeout) => {
                Some(Event::SignedOut)
            }
            (Op::RegistrationLost { .. }, Outcome::Ok(_)) => Some(Event::SignedOut),
            // Only a signed-in client hears the notice: it changes how, not whether, the user is served.
            (Op::ResiliencyNotice { on }, Outcome::Ok(_)) => {
                Some(Event::SignedIn { resiliency: *on })
            }
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
pub fn sign_outs(history: &History, settle_ms: u64) -> Vec<SignOut> {
    let events = events(history);
    let mut out = Vec::new();
    let mut signed_in = false;
    let mut user: Option<&str> = None;
    for (index, (name, at_us, event)) in events.iter().enumerate() {
        if user != Some(name.as_str()) {
            user = Some(name);
            signed_in = false;
        }
        match event {
            Event::SignedIn { .. } => signed_in = true,
            Event::SignedOut if signed_in => {
                signed_in = false;
                let later = events[index + 1..].iter().take_while(|e| &e.0 == name);
                let mut back_at_us = None;
                let mut full_service_at_us = None;
                for (_, at, e) in later {
                    if let Event::SignedIn { resiliency } = e {
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
                    cause: cause_holding(history, *at_us, settle_ms),
                    back_at_us,
                    full_service_at_us,
                });
            }
            Event::SignedOut => {}
        }
    }
    out
}

/// The last-requested fault whose window holds `at_us`.
pub fn fault_holding(faults: &[Fault], at_us: u64, settle_ms: u64) -> Option<u64> {
    faults
        .iter()
        .filter(|f| {
            let end = f
                .undone_at_us
                .map_or(u64::MAX, |u| u.saturating_add(settle_ms * 1000));
            f.requested_at_us <= at_us && at_us <= end
        })
        .max_by_key(|f| f.requested_at_us)
        .map(|f| f.id)
}

/// The last-requested fault or operator command whose window holds `at_us`.
pub fn cause_holding(history: &History, at_us: u64, settle_ms: u64) -> Option<Cause> {
    let settle_us = settle_ms * 1000;
    let faults = history.faults.iter().map(|f| {
        let end = f
            .undone_at_us
            .map_or(u64::MAX, |u| u.saturating_add(settle_us));
        (f.requested_at_us, end, Cause::Fault(f.id))
    });
    let operators = history.operators.iter().map(|o| {
        let end = o
            .done_at_us
            .map_or(u64::MAX, |d| d.saturating_add(settle_us));
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
    pub settle_ms: u64,
    /// Whether the scenario's faults must sign someone out. True for FE and pool faults; false for faults users
    /// should not notice (a BE failover with a witness), where "nobody was affected" is the claim itself.
    pub expect_affected: bool,
}

impl Default for RegistrationContinuity {
    fn default() -> Self {
        RegistrationContinuity {
            reregister_bound_ms: 30_000,
            settle_ms: 5_000,
            expect_affected: true,
        }
    }
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
        let sign_outs = sign_outs(history, self.settle_ms);
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
        if self.expect_affected
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{clean, register, Build};
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
    fn a_sign_out_by_a_failback_belongs_to_it_within_the_settle_window() {
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
}
