//! Calls: every call the gateway answered ends cleanly at the caller — a BYE from the pool reaches the caller
//! within `end_bound_ms` of the answer (the hold time plus the time a failed Mediation server takes to be
//! noticed). That is the promise a scenario such as `mediation-kill` makes, and only a BYE keeps it:
//!
//! - a call the caller saw end because its own connection or registration was lost first (`call_end` with
//!   `by: caller_lost`) was not ended by the pool: a violation. The pool either dropped the caller, or let the
//!   call hang until the caller's connection went; both break the promise whatever caused the loss (the
//!   registration checker judges the loss itself). A scenario whose faults cut callers' own connections on
//!   purpose makes no BYE promise and does not run this checker;
//! - a call that ended without a recorded cause (histories written before the cause was recorded) cannot be
//!   told apart: unknown, never valid;
//! - a call still up when the history ends is judged only if it had `end_bound_ms`.

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{CallEndedBy, History, Op};

/// Checks that answered calls end with a BYE from the pool.
#[derive(Clone, Debug)]
pub struct CallsEnd {
    pub end_bound_ms: u64,
}

impl Default for CallsEnd {
    fn default() -> Self {
        CallsEnd {
            end_bound_ms: 15_000,
        }
    }
}

impl Checker for CallsEnd {
    fn name(&self) -> &'static str {
        "calls"
    }

    fn check(&self, history: &History) -> Verdict {
        let operations = history.operations();
        // The first end of each call at the caller, and how it ended.
        let mut ended: BTreeMap<&str, (u64, Option<CallEndedBy>)> = BTreeMap::new();
        for o in &operations {
            if let (Op::CallEnd { call_id, by }, Some(at)) = (&o.op, o.complete_at_us) {
                ended.entry(call_id.as_str()).or_insert((at, *by));
            }
        }
        let end_us = history.last_at_us();
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        let mut judged = 0;
        for o in &operations {
            let (Op::CallSetup { call_id, to }, true, Some(answered)) =
                (&o.op, o.is_ok(), o.complete_at_us)
            else {
                continue;
            };
            let deadline = answered + self.end_bound_ms * 1000;
            let violation =
                |at: u64, what: String| Violation::new(self.name(), Some(&o.user), Some(at), what);
            match ended.get(call_id.as_str()) {
                Some((at, Some(CallEndedBy::Bye))) if *at <= deadline => judged += 1,
                Some((at, Some(CallEndedBy::Bye))) => {
                    judged += 1;
                    violations.push(violation(
                        *at,
                        format!(
                            "call {call_id} to {to} ended {} ms after it was answered, beyond {} ms",
                            (at - answered) / 1000,
                            self.end_bound_ms
                        ),
                    ));
                }
                Some((at, Some(CallEndedBy::CallerLost))) => {
                    judged += 1;
                    violations.push(violation(
                        *at,
                        format!(
                            "call {call_id} to {to} ended {} ms after it was answered by the loss of the \
                             caller's own connection, not by a BYE from the pool",
                            (at - answered) / 1000
                        ),
                    ));
                }
                Some((_, None)) => undecided.push(format!(
                    "call {call_id} to {to} ended at the caller with no recorded cause (BYE or lost connection)"
                )),
                None if deadline <= end_us => {
                    judged += 1;
                    violations.push(violation(
                        answered,
                        format!(
                            "call {call_id} to {to} was answered and never ended at the caller"
                        ),
                    ));
                }
                None => {}
            }
        }
        if judged == 0 && undecided.is_empty() {
            undecided.push("no answered call to judge".to_string());
        }
        Verdict::from_findings(violations, undecided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Recorder, RunInfo};

    #[test]
    fn an_answered_call_that_never_ends_is_found() {
        let r = Recorder::in_memory(RunInfo::default());
        let setup = |id: &str| Op::CallSetup {
            to: "+15550000001".into(),
            call_id: id.into(),
        };
        r.invoke("alice", setup("c1")).unwrap().ok().unwrap();
        r.observe(
            "alice",
            Op::CallEnd {
                call_id: "c1".into(),
                by: Some(CallEndedBy::Bye),
            },
        )
        .unwrap();
        let clean = r.snapshot();
        assert_eq!(
            CallsEnd {
                end_bound_ms: 1_000
            }
            .check(&clean),
            Verdict::Valid
        );
        r.invoke("bob", setup("c2")).unwrap().ok().unwrap();
        let hung = r.snapshot();
        // With a bound of 1 s the ended call is fine; the other one never ended.
        let v = CallsEnd {
            end_bound_ms: 1_000,
        }
        .check(&hung);
        assert_eq!(
            v.violations().len(),
            0,
            "bob's call still has its second: {v:?}"
        );
        let v = CallsEnd { end_bound_ms: 0 }.check(&hung);
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("c2") && v.what.contains("never ended")),
            "{v:?}"
        );
        let undecided = Recorder::in_memory(RunInfo::default()).snapshot();
        assert!(matches!(
            CallsEnd::default().check(&undecided),
            Verdict::Unknown(_)
        ));
    }

    /// The lines the workload writes for a call whose caller lost its connection before any BYE: the call's end
    /// is recorded (`by: caller_lost`), then the lost registration.
    const CALLER_LOST: &str = r#"{"type":"run","scenario":"mediation-kill","seed":1,"users":["alice"]}
{"type":"op","id":0,"phase":"invoke","at_us":1000000,"user":"alice","op":"call_setup","value":{"to":"+15550000001","call_id":"c1"}}
{"type":"op","id":0,"phase":"ok","at_us":1200000,"user":"alice","op":"call_setup","value":{"to":"+15550000001","call_id":"c1"}}
{"type":"op","id":1,"phase":"ok","at_us":3000000,"user":"alice","op":"call_end","value":{"call_id":"c1","by":"caller_lost"}}
{"type":"op","id":2,"phase":"ok","at_us":3000001,"user":"alice","op":"registration_lost","value":{"reason":"connection reset"}}
{"type":"end","at_us":20000000}"#;

    fn parse(lines: &str) -> History {
        History::from_records(
            lines
                .lines()
                .map(|l| serde_json::from_str::<crate::history::Record>(l).unwrap()),
            Vec::new(),
        )
    }

    #[test]
    fn a_call_ended_by_the_callers_own_connection_loss_is_not_a_bye() {
        let v = CallsEnd {
            end_bound_ms: 12_000,
        }
        .check(&parse(CALLER_LOST));
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("c1") && v.what.contains("not by a BYE")),
            "{v:?}"
        );
        // The same call ended by the pool's BYE keeps the promise.
        let bye = CALLER_LOST.replace("caller_lost", "bye");
        assert_eq!(
            CallsEnd {
                end_bound_ms: 12_000
            }
            .check(&parse(&bye)),
            Verdict::Valid
        );
    }

    #[test]
    fn a_call_end_without_a_recorded_cause_is_unknown() {
        let old = CALLER_LOST.replace(r#","by":"caller_lost""#, "");
        let v = CallsEnd {
            end_bound_ms: 12_000,
        }
        .check(&parse(&old));
        assert!(matches!(v, Verdict::Unknown(_)), "{v:?}");
    }
}
