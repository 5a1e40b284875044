//! Binding convergence: once the faults are over, every registrar of a pool holds exactly the bindings of the
//! users registered — none lost, none resurrected, all registrars alike. It reads the rounds of a subject's
//! bindings probe (`View::Bindings`, taken every half second through the quiet period after the last fault's
//! undo) against what the users did:
//!
//! - a user whose REGISTER (or refresh) was acknowledged at least `settle_ms` before a round, and less than
//!   `expires_s` before it, **must** be held by every registrar: missing on one is a lost binding;
//! - a user none of whose REGISTERs could have taken effect (none sent, or every one refused), whose every
//!   possible binding has expired by the round, or who signed off (an unregister acknowledged at least
//!   `settle_ms` before the round, with no REGISTER sent after it) **must not** be held: held, it is a
//!   resurrected binding;
//! - any other user (a REGISTER or unregister unanswered, or acknowledged within `settle_ms` of the round) may
//!   be held or not, but every registrar must say the same of it.
//!
//! The verdict is the last round's: converged is valid; anything else is invalid, naming each node's lost and
//! resurrected users. A last round in which a registrar did not answer is unknown, and so is a history without
//! any round. [`convergence`] is the figure: how long after the last fault's undo the rounds converged for good.

use std::collections::{BTreeMap, BTreeSet};

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{History, Op, Outcome, View};

/// The prefix of the error of a bindings probe that got no answer, which tells its records from other probes'.
pub const PROBE_ERROR: &str = "bindings probe: ";

/// Checks that every registrar holds exactly the registered users' bindings after the faults.
#[derive(Clone, Debug)]
pub struct BindingConvergence {
    /// The registration lifetime the users ask for (their REGISTER `Expires`), where the history does not say
    /// (`RunInfo::register_expires_s`).
    pub expires_s: u64,
    /// How long after a REGISTER's acknowledgement every registrar must hold its binding.
    pub settle_ms: u64,
}

impl Default for BindingConvergence {
    fn default() -> Self {
        BindingConvergence {
            expires_s: crate::workload::Settings::default().register_expires_s as u64,
            settle_ms: 2_000,
        }
    }
}

/// One round of the bindings probe: when it ended, and what each registrar answered (`None`: no answer).
#[derive(Debug)]
struct Round {
    at_us: u64,
    held: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// What one round found wrong, per node.
#[derive(Debug, Default)]
struct Findings {
    lost: BTreeMap<String, Vec<String>>,
    resurrected: BTreeMap<String, Vec<String>>,
    /// Users some registrars hold and others do not, among those that may go either way.
    disputed: Vec<String>,
    unanswered: Vec<String>,
}

impl Findings {
    fn converged(&self) -> bool {
        self.lost.is_empty()
            && self.resurrected.is_empty()
            && self.disputed.is_empty()
            && self.unanswered.is_empty()
    }
}

fn rounds(history: &History) -> Vec<Round> {
    let mut by_round: BTreeMap<u64, Round> = BTreeMap::new();
    for probe in &history.probes {
        let answer = match (&probe.view, &probe.error) {
            (Some(View::Bindings { users, .. }), _) => Some(users.iter().cloned().collect()),
            (None, Some(error)) if error.starts_with(PROBE_ERROR) => None,
            _ => continue,
        };
        let round = by_round
            .entry(probe.round.unwrap_or(probe.at_us))
            .or_insert(Round {
                at_us: 0,
                held: BTreeMap::new(),
            });
        round.at_us = round.at_us.max(probe.at_us);
        round.held.insert(probe.node.clone(), answer);
    }
    by_round.into_values().collect()
}

/// The users' registrations, as intervals a binding may exist in.
struct Registrations {
    /// Per user: acknowledgement times of REGISTERs and refreshes.
    acked: BTreeMap<String, Vec<u64>>,
    /// Per user: the latest time a REGISTER that may have taken effect (acknowledged, or unanswered) was sent
    /// or answered.
    possible: BTreeMap<String, u64>,
    /// Per user: when an unregister was sent, and when it was acknowledged (`None`: unanswered, or refused).
    unregistered: BTreeMap<String, (u64, Option<u64>)>,
}

fn registrations(history: &History) -> Registrations {
    let end = history.last_at_us();
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut possible: BTreeMap<String, u64> = BTreeMap::new();
    let mut unregistered: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
    for o in history.operations() {
        if matches!(o.op, Op::Unregister {}) {
            let acked = match (&o.outcome, o.complete_at_us) {
                (Outcome::Ok(_), Some(at)) => Some(at),
                // A refused unregister removed nothing: the binding stays as it was.
                (Outcome::Fail(_), _) => continue,
                _ => None,
            };
            unregistered.insert(o.user.clone(), (o.start_us(), acked));
            continue;
        }
        if !matches!(o.op, Op::Register { .. } | Op::Refresh { .. }) {
            continue;
        }
        let latest = match (&o.outcome, o.complete_at_us) {
            (Outcome::Ok(_), Some(at)) => {
                acked.entry(o.user.clone()).or_default().push(at);
                at
            }
            (Outcome::Fail(_), _) => continue,
            // Unanswered: it may have taken effect at any time up to the end.
            _ => end,
        };
        let slot = possible.entry(o.user.clone()).or_insert(latest);
        *slot = (*slot).max(latest);
    }
    Registrations {
        acked,
        possible,
        unregistered,
    }
}

impl BindingConvergence {
    fn judge(&self, history: &History, regs: &Registrations, round: &Round) -> Findings {
        let mut findings = Findings::default();
        let expires_us = history.run.register_expires_s.unwrap_or(self.expires_s) * 1_000_000;
        // The registrar's expiry timer runs every few seconds: a binding lives a little past its expiry.
        let expiry_slack_us = 10_000_000;
        let settle_us = self.settle_ms * 1000;
        let users: BTreeSet<&str> = history.run.users.iter().map(String::as_str).collect();
        let mut must = BTreeSet::new();
        let mut must_not = BTreeSet::new();
        for user in &history.run.users {
            // A user that signed off sends nothing after its unregister, so what it registered before is gone
            // once the unregister is acknowledged and settled, and may be gone once it was sent.
            let unregister = regs.unregistered.get(user).copied();
            let signed_off_for_sure = unregister
                .and_then(|(_, acked)| acked)
                .is_some_and(|at| at + settle_us <= round.at_us);
            let registered_before = |at: u64| unregister.is_none_or(|(sent, _)| at < sent);
            let held_for_sure = !signed_off_for_sure
                && unregister.is_none_or(|(sent, _)| round.at_us < sent)
                && regs.acked.get(user).is_some_and(|times| {
                    times.iter().any(|&at| {
                        registered_before(at)
                            && at + settle_us <= round.at_us
                            && round.at_us < at + expires_us
                    })
                });
            let may_exist = !signed_off_for_sure
                && regs
                    .possible
                    .get(user)
                    .is_some_and(|&latest| round.at_us <= latest + expires_us + expiry_slack_us);
            if held_for_sure {
                must.insert(user.as_str());
            } else if !may_exist {
                must_not.insert(user.as_str());
            }
        }
        let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
        let mut answered = 0;
        for (node, held) in &round.held {
            let Some(held) = held else {
                findings.unanswered.push(node.clone());
                continue;
            };
            answered += 1;
            let lost: Vec<String> = must
                .iter()
                .filter(|u| !held.contains(**u))
                .map(|u| u.to_string())
                .collect();
            let resurrected: Vec<String> = held
                .iter()
                .filter(|u| must_not.contains(u.as_str()) || !users.contains(u.as_str()))
                .cloned()
                .collect();
            if !lost.is_empty() {
                findings.lost.insert(node.clone(), lost);
            }
            if !resurrected.is_empty() {
                findings.resurrected.insert(node.clone(), resurrected);
            }
            for user in held {
                *holders.entry(user.as_str()).or_default() += 1;
            }
        }
        findings.disputed = holders
            .into_iter()
            .filter(|(u, n)| *n < answered && !must.contains(u) && !must_not.contains(u))
            .map(|(u, _)| u.to_string())
            .collect();
        findings
    }
}

impl Checker for BindingConvergence {
    fn name(&self) -> &'static str {
        "bindings"
    }

    fn check(&self, history: &History) -> Verdict {
        let rounds = rounds(history);
        let Some(last) = rounds.last() else {
            return Verdict::Unknown(
                "no bindings probe in the history: the subject has none, or it never ran".into(),
            );
        };
        let regs = registrations(history);
        let findings = self.judge(history, &regs, last);
        let mut violations = Vec::new();
        let at = Some(last.at_us);
        for (node, users) in &findings.lost {
            violations.push(Violation::new(
                self.name(),
                None,
                at,
                format!(
                    "{node} lost the bindings of {} registered user(s): {}",
                    users.len(),
                    sample(users)
                ),
            ));
        }
        for (node, users) in &findings.resurrected {
            violations.push(Violation::new(
                self.name(),
                None,
                at,
                format!(
                    "{node} holds bindings of {} user(s) with no registration in force: {}",
                    users.len(),
                    sample(users)
                ),
            ));
        }
        if !findings.disputed.is_empty() {
            violations.push(Violation::new(
                self.name(),
                None,
                at,
                format!(
                    "the registrars disagree on {} user(s): {}",
                    findings.disputed.len(),
                    sample(&findings.disputed)
                ),
            ));
        }
        let undecided = if findings.unanswered.is_empty() {
            vec![]
        } else {
            vec![format!(
                "in the last bindings round {} did not answer",
                findings.unanswered.join(", ")
            )]
        };
        Verdict::from_findings(violations, undecided)
    }
}

/// How long after the last fault's undo the bindings rounds converged for good (µs), if the last round
/// converged and a fault was undone. `None` also for a history without bindings rounds.
pub fn convergence(history: &History, checker: &BindingConvergence) -> Option<u64> {
    let undone = history.faults.iter().filter_map(|f| f.undone_at_us).max()?;
    let rounds = rounds(history);
    let regs = registrations(history);
    let mut since = None;
    for round in rounds.iter().filter(|r| r.at_us >= undone) {
        if checker.judge(history, &regs, round).converged() {
            since.get_or_insert(round.at_us);
        } else {
            since = None;
        }
    }
    since.map(|at| at - undone)
}

fn sample(users: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = users
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if users.len() > SHOWN {
        text.push_str(&format!(", … ({} more)", users.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{register, Build};

    fn held(users: &[&str]) -> View {
        View::Bindings {
            pool: "kam".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// alice and bob registered at 1 s; kam-1 was killed at 5 s and restarted at 11 s; rounds from 12 s.
    fn run() -> Build {
        Build::new(&["alice", "bob", "carol"])
            .ok("alice", register(false), 900, 1_000)
            .ok("bob", register(false), 900, 1_000)
            .fault("kill", "kam-1", 5_000, Some(5_100), Some(11_000))
    }

    fn round(build: Build, round: u64, at_ms: u64, views: [&[&str]; 3]) -> Build {
        views.iter().enumerate().fold(build, |b, (i, users)| {
            b.probe_in(
                &format!("kam-{}", i + 1),
                held(users),
                at_ms + i as u64,
                round,
            )
        })
    }

    #[test]
    fn every_registrar_holding_every_registered_user_is_valid_and_converged_at_that_round() {
        let h = round(
            round(
                run(),
                1000,
                12_000,
                [&["alice"], &["alice", "bob"], &["alice", "bob"]],
            ),
            1001,
            12_500,
            [&["alice", "bob"], &["alice", "bob"], &["alice", "bob"]],
        )
        .end(13_000)
        .build();
        let checker = BindingConvergence::default();
        assert_eq!(checker.check(&h), Verdict::Valid);
        assert_eq!(convergence(&h, &checker), Some(1_502_000));
    }

    #[test]
    fn a_registrar_that_lost_a_binding_is_invalid() {
        let h = round(
            run(),
            1000,
            12_000,
            [&["alice"], &["alice", "bob"], &["alice", "bob"]],
        )
        .end(13_000)
        .build();
        let checker = BindingConvergence::default();
        let v = checker.check(&h);
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(
            v.violations()[0]
                .what
                .contains("kam-1 lost the bindings of 1")
                && v.violations()[0].what.contains("bob"),
            "{v:?}"
        );
        assert_eq!(convergence(&h, &checker), None);
    }

    #[test]
    fn a_binding_of_a_user_never_registered_is_invalid() {
        let h = round(
            run(),
            1000,
            12_000,
            [
                &["alice", "bob", "carol"],
                &["alice", "bob"],
                &["alice", "bob"],
            ],
        )
        .end(13_000)
        .build();
        let v = BindingConvergence::default().check(&h);
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(v.violations()[0].what.contains("carol"), "{v:?}");
    }

    #[test]
    fn a_binding_past_its_expiry_is_invalid() {
        let h = round(
            Build::new(&["alice", "bob", "carol"])
                .ok("alice", register(false), 900, 1_000)
                .fault("kill", "kam-1", 5_000, Some(5_100), Some(11_000)),
            1000,
            90_000,
            [&["alice"], &[], &[]],
        )
        .end(91_000)
        .build();
        let v = BindingConvergence::default().check(&h);
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(v.violations()[0].what.contains("kam-1 holds"), "{v:?}");
    }

    #[test]
    fn the_expiry_the_users_asked_for_is_the_one_judged() {
        // Bindings of 10 s: alice's, last refreshed at 1 s, must be gone by 25 s; held, she is resurrected.
        let held_at_25 = |b: Build| {
            round(
                b,
                1000,
                25_000,
                [&["alice", "bob"], &["alice", "bob"], &["alice", "bob"]],
            )
            .ok("bob", register(false), 20_000, 20_100)
            .end(26_000)
            .build()
        };
        let v = BindingConvergence::default().check(&held_at_25(run().register_expires(10)));
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(v.violations()[0].what.contains("alice"), "{v:?}");
        // With the default 60 s the same readings are right.
        assert_eq!(
            BindingConvergence::default().check(&held_at_25(run())),
            Verdict::Valid
        );
    }

    #[test]
    fn registrars_that_disagree_on_an_unanswered_registration_are_invalid() {
        let h = run()
            .timeout("carol", register(false), 10_000, 15_000)
            .probe_in("kam-1", held(&["alice", "bob", "carol"]), 12_000, 1000)
            .probe_in("kam-2", held(&["alice", "bob"]), 12_001, 1000)
            .probe_in("kam-3", held(&["alice", "bob", "carol"]), 12_002, 1000)
            .end(16_000)
            .build();
        let v = BindingConvergence::default().check(&h);
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(v.violations()[0].what.contains("disagree"), "{v:?}");
        // All alike, either way, is fine.
        let h = run()
            .timeout("carol", register(false), 10_000, 15_000)
            .probe_in("kam-1", held(&["alice", "bob", "carol"]), 12_000, 1000)
            .probe_in("kam-2", held(&["alice", "bob", "carol"]), 12_001, 1000)
            .probe_in("kam-3", held(&["alice", "bob", "carol"]), 12_002, 1000)
            .end(16_000)
            .build();
        assert_eq!(BindingConvergence::default().check(&h), Verdict::Valid);
    }

    #[test]
    fn a_registration_acknowledged_just_before_the_round_may_not_have_reached_every_registrar() {
        let h = run()
            .ok("carol", register(false), 11_800, 11_900)
            .probe_in("kam-1", held(&["alice", "bob", "carol"]), 12_000, 1000)
            .probe_in("kam-2", held(&["alice", "bob", "carol"]), 12_001, 1000)
            .probe_in("kam-3", held(&["alice", "bob", "carol"]), 12_002, 1000)
            .end(16_000)
            .build();
        assert_eq!(BindingConvergence::default().check(&h), Verdict::Valid);
    }

    fn unregister() -> Op {
        Op::Unregister {}
    }

    #[test]
    fn a_binding_of_a_user_who_signed_off_is_resurrected_where_a_registrar_still_holds_it() {
        // bob signed off at 8 s (acknowledged 8.1 s), during the partition of kam-1; after the heal kam-2 and
        // kam-3 still hold him.
        let h = round(
            run().ok("bob", unregister(), 8_000, 8_100),
            1000,
            12_000,
            [&["alice"], &["alice", "bob"], &["alice", "bob"]],
        )
        .end(13_000)
        .build();
        let v = BindingConvergence::default().check(&h);
        assert_eq!(v.name(), "invalid", "{v:?}");
        assert!(
            v.violations()
                .iter()
                .any(|x| x.what.contains("kam-2 holds") && x.what.contains("bob")),
            "{v:?}"
        );
        // Gone everywhere: valid.
        let h = round(
            run().ok("bob", unregister(), 8_000, 8_100),
            1000,
            12_000,
            [&["alice"], &["alice"], &["alice"]],
        )
        .end(13_000)
        .build();
        assert_eq!(BindingConvergence::default().check(&h), Verdict::Valid);
    }

    #[test]
    fn an_unanswered_unregister_may_go_either_way_but_every_registrar_says_the_same() {
        let both = |views: [&[&str]; 3]| {
            round(
                run().timeout("bob", unregister(), 8_000, 13_000),
                1000,
                12_000,
                views,
            )
            .end(14_000)
            .build()
        };
        let checker = BindingConvergence::default();
        assert_eq!(
            checker.check(&both([
                &["alice", "bob"],
                &["alice", "bob"],
                &["alice", "bob"]
            ])),
            Verdict::Valid
        );
        assert_eq!(
            checker.check(&both([&["alice"], &["alice"], &["alice"]])),
            Verdict::Valid
        );
        assert_eq!(
            checker
                .check(&both([&["alice"], &["alice", "bob"], &["alice", "bob"]]))
                .name(),
            "invalid"
        );
    }

    #[test]
    fn no_rounds_or_a_silent_registrar_is_unknown_never_valid() {
        let h = run().end(13_000).build();
        assert_eq!(BindingConvergence::default().check(&h).name(), "unknown");
        let h = run()
            .probe_in("kam-1", held(&["alice", "bob"]), 12_000, 1000)
            .probe_in("kam-2", held(&["alice", "bob"]), 12_001, 1000)
            .bindings_unanswered_in("kam-3", 12_002, 1000)
            .end(13_000)
            .build();
        assert_eq!(BindingConvergence::default().check(&h).name(), "unknown");
    }
}
