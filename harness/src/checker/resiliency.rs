//! Resiliency mode: while a user is signed in in resiliency mode (its `register`/`refresh` ok or a
//! `resiliency_notice` says `resiliency: true`/`on`, until one says `false`/`off`), its contact-list changes are
//! refused with an explicit error, its contact list is not served, and IM works. While an operator's pool failover
//! or failback runs (from its request to its completion), the users being moved are not judged.
//!
//! Two parts, each undecided (unknown) when nothing was tried in the mode:
//!
//! - **persistent data**: a contact change that timed out counts as not refused (the reference pool promises an
//!   explicit error); an accepted one, or a contact list served, is a violation.
//! - **IM works**: an IM sent in resiliency mode must be acknowledged. A refusal by the pool is a violation; an
//!   IM failing because its recipient is not signed in (480) is not a refusal of the sender. An IM the sender
//!   got no answer for (`timeout`) counts against the pool: a pool that silently drops IMs in resiliency mode is
//!   invalid. The violation says whether the recipient got it (the answer was lost) or not (the IM was dropped).
//!   An IM still unanswered when the history ends is not judged.
//!
//! `publish` is not judged here: the pool shows the user's presence as unknown, which says nothing of the write.

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{History, Op, Outcome};

/// Checks resiliency mode.
#[derive(Clone, Debug, Default)]
pub struct ResiliencyMode;

impl Checker for ResiliencyMode {
    fn name(&self) -> &'static str {
        "resiliency"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        let operations = history.operations();
        // user → spans [from, to) in resiliency mode, from sign-ins in time order.
        let mut sign_ins: Vec<(&str, u64, bool)> = operations
            .iter()
            .filter_map(|op| match op.ok_value() {
                Some(Op::Register { resiliency, .. }) => {
                    Some((op.user.as_str(), op.complete_at_us?, *resiliency))
                }
                Some(Op::Refresh {
                    action, resiliency, ..
                }) if action.as_deref() != Some("added") => {
                    Some((op.user.as_str(), op.complete_at_us?, *resiliency))
                }
                Some(Op::ResiliencyNotice { on }) => {
                    Some((op.user.as_str(), op.complete_at_us?, *on))
                }
                _ => None,
            })
            .collect();
        sign_ins.sort_by_key(|s| s.1);
        let mut spans: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        let mut open: BTreeMap<&str, u64> = BTreeMap::new();
        for (user, at, resiliency) in sign_ins {
            match (resiliency, open.get(user).copied()) {
                (true, None) => {
                    open.insert(user, at);
                }
                (false, Some(from)) => {
                    open.remove(user);
                    spans.entry(user).or_default().push((from, at));
                }
                _ => {}
            }
        }
        for (user, from) in open {
            spans.entry(user).or_default().push((from, u64::MAX));
        }
        if spans.is_empty() {
            return Verdict::Unknown("no user entered resiliency mode".into());
        }
        // While an operator's pool failover or failback runs, the pool moves these users and may turn
        // them away (Lync signs them out): that window is the transition, not resiliency mode.
        let transitions: Vec<(u64, u64)> = history
            .operators
            .iter()
            .filter(|o| o.command == "pool-failover" || o.command == "pool-failback")
            .map(|o| (o.requested_at_us, o.done_at_us.unwrap_or(u64::MAX)))
            .collect();
        let in_mode = |user: &str, at: u64| {
            spans
                .get(user)
                .is_some_and(|s| s.iter().any(|&(from, to)| from <= at && at < to))
        };
        let moving = |start: u64, end: u64| {
            transitions
                .iter()
                .any(|&(from, to)| start <= to && end >= from)
        };
        let delivered: std::collections::BTreeSet<(&str, u64)> = operations
            .iter()
            .filter_map(|op| match (&op.op, &op.outcome) {
                (Op::ImReceived { from, seq }, Outcome::Ok(_)) => Some((from.as_str(), *seq)),
                _ => None,
            })
            .collect();
        let mut violations = Vec::new();
        let mut tried_data = 0;
        let mut tried_im = 0;
        for op in &operations {
            let Some(invoked) = op.invoke_at_us else {
                continue;
            };
            if !in_mode(&op.user, invoked) || moving(invoked, op.complete_at_us.unwrap_or(invoked))
            {
                continue;
            }
            let at = op.complete_at_us.or(Some(invoked));
            let problem = match (&op.op, &op.outcome) {
                (Op::ContactAdd { .. } | Op::ContactRemove { .. }, outcome) => {
                    tried_data += 1;
                    match outcome {
                        Outcome::Ok(_) => {
                            Some(format!("{} accepted in resiliency mode", op.op.name()))
                        }
                        Outcome::Timeout | Outcome::Pending => Some(format!(
                            "{} in resiliency mode not refused with an explicit error",
                            op.op.name()
                        )),
                        Outcome::Fail(_) => None,
                    }
                }
                (Op::ContactList { .. }, Outcome::Ok(_)) => {
                    tried_data += 1;
                    Some("contact list served in resiliency mode".to_owned())
                }
                (Op::ImSend { to, seq }, outcome) => {
                    if !matches!(outcome, Outcome::Pending) {
                        tried_im += 1;
                    }
                    match outcome {
                        // The recipient not signed in anywhere says nothing about resiliency mode; a refusal by
                        // the pool does.
                        Outcome::Fail(Some(error)) if error.starts_with("480") => None,
                        Outcome::Fail(error) => Some(format!(
                            "IM ({}, {seq}) to {to} refused in resiliency mode ({})",
                            op.user,
                            error.as_deref().unwrap_or("no reason")
                        )),
                        Outcome::Timeout if delivered.contains(&(op.user.as_str(), *seq)) => {
                            Some(format!(
                                "IM ({}, {seq}) to {to} in resiliency mode got no answer (it reached {to}: \
                                 the answer was lost)",
                                op.user
                            ))
                        }
                        Outcome::Timeout => Some(format!(
                            "IM ({}, {seq}) to {to} in resiliency mode got no answer and never reached {to}: \
                             dropped",
                            op.user
                        )),
                        Outcome::Ok(_) | Outcome::Pending => None,
                    }
                }
                _ => None,
            };
            if let Some(what) = problem {
                violations.push(Violation::new(name, Some(&op.user), at, what));
            }
        }
        let mut undecided = Vec::new();
        if tried_data == 0 {
            undecided.push(
                "no contact change or contact list read was tried in resiliency mode".to_owned(),
            );
        }
        if tried_im == 0 {
            undecided.push("no IM was sent in resiliency mode".to_owned());
        }
        Verdict::from_findings(violations, undecided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{add, clean, got, im, list, list_invoke, register};

    fn in_resiliency() -> crate::checker::fixtures::Build {
        clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .ok("carol", im("bob", 1), 23_000, 23_050)
            .observe("bob", got("carol", 1), 23_040)
            .ok("carol", register(false), 29_000, 29_100)
    }

    #[test]
    fn refusals_and_working_im_are_valid() {
        assert_eq!(
            ResiliencyMode.check(&in_resiliency().build()),
            Verdict::Valid
        );
    }

    #[test]
    fn an_accepted_contact_change_or_a_refused_im_is_a_violation() {
        let h = in_resiliency()
            .ok("carol", add("alice"), 24_000, 24_050)
            .fail(
                "carol",
                im("alice", 1),
                25_000,
                25_050,
                "503 Service Unavailable (Resiliency Mode)",
            )
            .ok_with("carol", list_invoke(), list(&["bob"]), 26_000, 26_050)
            .build();
        let v = ResiliencyMode.check(&h);
        let whats: Vec<&str> = v.violations().iter().map(|v| v.what.as_str()).collect();
        assert_eq!(whats.len(), 3, "{whats:?}");
        assert!(whats[0].contains("contact_add accepted"));
        assert!(whats[1].contains("refused in resiliency mode"));
        assert!(whats[2].contains("contact list served"));
    }

    #[test]
    fn a_notice_ends_the_mode_without_a_new_register() {
        // The pool failed over and told carol so: her contact change is served, as it should be.
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .ok("carol", im("bob", 1), 22_500, 22_550)
            .observe("bob", got("carol", 1), 22_540)
            .observe("carol", Op::ResiliencyNotice { on: false }, 23_000)
            .ok("carol", add("bob"), 24_000, 24_050)
            .build();
        assert_eq!(ResiliencyMode.check(&h), Verdict::Valid);
        // Without the notice the same accepted change would be a violation.
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .ok("carol", add("bob"), 24_000, 24_050)
            .build();
        assert_eq!(ResiliencyMode.check(&h).violations().len(), 1);
    }

    #[test]
    fn no_user_in_resiliency_mode_is_unknown() {
        assert!(matches!(
            ResiliencyMode.check(&clean().build()),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn ims_dropped_silently_in_resiliency_mode_are_invalid() {
        // Every IM carol sends in resiliency mode gets no answer and never arrives: the pool drops them.
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .timeout("carol", im("bob", 1), 23_000, 38_000)
            .timeout("carol", im("alice", 2), 24_000, 39_000)
            .ok("carol", register(false), 45_000, 45_100)
            .build();
        let v = ResiliencyMode.check(&h);
        let whats: Vec<&str> = v.violations().iter().map(|v| v.what.as_str()).collect();
        assert_eq!(whats.len(), 2, "{v:?}");
        assert!(whats.iter().all(|w| w.contains("dropped")), "{whats:?}");
        // An IM that arrived but whose answer never came back still counts against the pool, said apart.
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .timeout("carol", im("bob", 1), 23_000, 38_000)
            .observe("bob", got("carol", 1), 23_040)
            .build();
        let v = ResiliencyMode.check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains("answer was lost"));
    }

    #[test]
    fn ims_delivered_in_resiliency_mode_are_valid_and_none_sent_is_unknown() {
        // Delivered (and one to a recipient not signed in anywhere, 480): valid.
        let h = in_resiliency()
            .fail(
                "carol",
                im("dave", 2),
                24_000,
                24_010,
                "480 Temporarily Unavailable",
            )
            .build();
        assert_eq!(ResiliencyMode.check(&h), Verdict::Valid);
        // Contact changes refused as they should be, but no IM tried in the mode: the IM part is undecided.
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail("carol", add("bob"), 22_000, 22_050, "403 resiliency mode")
            .ok("carol", im("bob", 1), 30_000, 30_050)
            .observe("bob", got("carol", 1), 30_040)
            .ok("carol", register(false), 29_000, 29_100)
            .build();
        match ResiliencyMode.check(&h) {
            Verdict::Unknown(why) => assert!(why.contains("no IM was sent"), "{why}"),
            other => panic!("expected unknown, got {other:?}"),
        }
    }
}
