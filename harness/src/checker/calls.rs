//! Calls: every call the gateway answered ends cleanly at the caller — a BYE reaches the caller within
//! `end_bound_ms` of the answer (the hold time plus the time a failed Mediation server takes to be
//! noticed). A call still up when the history ends is judged only if it had that long.

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{History, Op};

/// Checks that answered calls end.
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
        let ended: BTreeMap<&str, u64> = operations
            .iter()
            .filter_map(|o| match (&o.op, o.complete_at_us) {
                (Op::CallEnd { call_id }, Some(at)) => Some((call_id.as_str(), at)),
                _ => None,
            })
            .collect();
        let end_us = history.last_at_us();
        let mut violations = Vec::new();
        let mut judged = 0;
        for o in &operations {
            let (Op::CallSetup { call_id, to }, true, Some(answered)) =
                (&o.op, o.is_ok(), o.complete_at_us)
            else {
                continue;
            };
            let deadline = answered + self.end_bound_ms * 1000;
            match ended.get(call_id.as_str()) {
                Some(at) if *at <= deadline => judged += 1,
                Some(at) => {
                    judged += 1;
                    violations.push(Violation::new(
                        self.name(),
                        Some(&o.user),
                        Some(*at),
                        format!(
                            "call {call_id} to {to} ended {} ms after it was answered, beyond {} ms",
                            (at - answered) / 1000,
                            self.end_bound_ms
                        ),
                    ));
                }
                None if deadline <= end_us => {
                    judged += 1;
                    violations.push(Violation::new(
                        self.name(),
                        Some(&o.user),
                        Some(answered),
                        format!(
                            "call {call_id} to {to} was answered and never ended at the caller"
                        ),
                    ));
                }
                None => {}
            }
        }
        let undecided = if judged == 0 {
            vec!["no answered call to judge".to_string()]
        } else {
            Vec::new()
        };
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
}
