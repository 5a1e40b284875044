//! No split brain, from probes: never two principals of one Back End pool accepting writes at overlapping
//! times, never two primaries of one routing group accepting writes at overlapping times, and never one epoch
//! claimed by two nodes.
//!
//! A node's claim holds over each run of its consecutive probes that show it, from the first and widened forward
//! by `probe_skew_ms` (one probe round asks the nodes one after another, so two claims seen in one round overlap
//! whichever node was asked first), but never past the node's own next probe that no longer shows it: a hand-over
//! between two close probes is not an overlap. Between a claim and the node's next probe nothing is
//! known, so the checker does not assume the claim went on: it reports only what probes show.

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{BeRole, Fault, GroupRole, History, View};

/// Checks that no pool or routing group had two writers.
#[derive(Clone, Debug)]
pub struct NoSplitBrain {
    pub probe_skew_ms: u64,
}

impl Default for NoSplitBrain {
    fn default() -> Self {
        NoSplitBrain { probe_skew_ms: 100 }
    }
}

/// (scope, node) → that node's probes about the scope: (at, the epoch when it claimed to be the writer).
type ProbesByScopeAndNode = BTreeMap<(String, String), Vec<(u64, Option<u64>)>>;

/// One node's uninterrupted claim to be the writer of `scope` at `epoch`.
#[derive(Clone, Debug)]
struct Claim {
    node: String,
    epoch: u64,
    from_us: u64,
    to_us: u64,
}

impl Checker for NoSplitBrain {
    fn name(&self) -> &'static str {
        "split_brain"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        // (scope, node) → the node's probes about that scope: (at, Some(epoch) when claiming writer).
        let mut seen: ProbesByScopeAndNode = BTreeMap::new();
        let mut unreachable: Vec<(String, u64)> = Vec::new();
        for probe in &history.probes {
            let (scope, claim) = match &probe.view {
                Some(View::BeRole {
                    pool,
                    role,
                    epoch,
                    accepting_writes,
                }) => (
                    format!("BE pool {pool}"),
                    (*role == BeRole::Principal && *accepting_writes).then_some(*epoch),
                ),
                Some(View::GroupRole {
                    pool,
                    group,
                    role,
                    epoch,
                    accepting_writes,
                }) => (
                    format!("routing group {group} of {pool}"),
                    (*role == GroupRole::Primary && *accepting_writes).then_some(*epoch),
                ),
                Some(View::PoolServing { .. }) => continue,
                None => {
                    unreachable.push((probe.node.clone(), probe.at_us));
                    continue;
                }
            };
            seen.entry((scope, probe.node.clone()))
                .or_default()
                .push((probe.at_us, claim));
        }
        // An unreachable node claims nothing: it ends its claims in every scope.
        for (node, at_us) in unreachable {
            for ((_, n), probes) in seen.iter_mut() {
                if *n == node {
                    probes.push((at_us, None));
                }
            }
        }
        if seen.is_empty() {
            return Verdict::Unknown("no probe of any Back End or routing group role".into());
        }
        let skew_us = self.probe_skew_ms * 1000;
        let mut claims: BTreeMap<&str, Vec<Claim>> = BTreeMap::new();
        for ((scope, node), probes) in seen.iter_mut() {
            probes.sort_by_key(|p| p.0);
            let mut open: Option<Claim> = None;
            for &(at_us, claim) in probes.iter() {
                match (claim, open.as_mut()) {
                    (Some(epoch), Some(c)) if c.epoch == epoch => c.to_us = at_us + skew_us,
                    (claim, _) => {
                        if let Some(mut done) = open.take() {
                            done.to_us = done.to_us.min(at_us);
                            claims.entry(scope).or_default().push(done);
                        }
                        open = claim.map(|epoch| Claim {
                            node: node.clone(),
                            epoch,
                            from_us: at_us,
                            to_us: at_us + skew_us,
                        });
                    }
                }
            }
            if let Some(done) = open {
                claims.entry(scope).or_default().push(done);
            }
        }
        let mut violations = Vec::new();
        for (scope, claims) in &claims {
            let writer = if scope.starts_with("BE") {
                "principals"
            } else {
                "primaries"
            };
            for (i, a) in claims.iter().enumerate() {
                for b in &claims[i + 1..] {
                    if a.node == b.node {
                        continue;
                    }
                    let overlap = a.from_us <= b.to_us && b.from_us <= a.to_us;
                    if overlap {
                        let epochs = if a.epoch == b.epoch {
                            format!("the same epoch {}", a.epoch)
                        } else {
                            format!("epochs {} and {}", a.epoch, b.epoch)
                        };
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(a.from_us.max(b.from_us) + skew_us),
                            format!("two {writer} of {scope} accepting writes at once: {} and {}, {epochs}", a.node, b.node),
                        ));
                    } else if a.epoch == b.epoch {
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(b.from_us + skew_us),
                            format!(
                                "epoch {} of {scope} claimed by two nodes: {} and {}",
                                a.epoch, a.node, b.node
                            ),
                        ));
                    }
                }
            }
        }
        // The effect of the last fault must have been probed, or a split brain after it would go unseen.
        let mut undecided = Vec::new();
        if let Some(last) = history.faults.iter().max_by_key(|f| f.effective_at_us()) {
            let probed_after = seen
                .values()
                .flatten()
                .any(|(at, _)| *at >= last_probe_due(last));
            if !probed_after {
                undecided.push(format!(
                    "no role probe after fault {} ({} {}), so its effect on roles was not observed",
                    last.id, last.kind, last.target
                ));
            }
        }
        Verdict::from_findings(violations, undecided)
    }
}

/// When a probe must exist after a fault: after its undo if undone, else after its proof of effect.
fn last_probe_due(fault: &Fault) -> u64 {
    fault.undone_at_us.unwrap_or(fault.effective_at_us())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{be, clean, group};

    #[test]
    fn the_clean_run_is_valid() {
        assert_eq!(
            NoSplitBrain::default().check(&clean().build()),
            Verdict::Valid
        );
    }

    #[test]
    fn two_principals_at_once_are_a_violation() {
        let h = clean()
            .probe("be-a2", be("be-a", BeRole::Principal, 2), 20_001)
            .probe("be-a2", be("be-a", BeRole::Principal, 2), 25_000)
            .build();
        let v = NoSplitBrain::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0]
            .what
            .contains("two principals of BE pool be-a"));
        assert!(v.violations()[0].what.contains("epochs 1 and 2"));
    }

    #[test]
    fn two_primaries_at_once_are_a_violation() {
        let h = clean()
            .probe("fe-a3", group("rg-1", GroupRole::Primary, 2), 40_010)
            .build();
        let v = NoSplitBrain::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0]
            .what
            .contains("two primaries of routing group rg-1"));
        assert!(v.violations()[0].what.contains("the same epoch 2"));
    }

    #[test]
    fn a_hand_over_between_two_close_probes_is_not_an_overlap() {
        // fe-a1 is primary at epoch 5, then (50 ms later) secondary at 6; fe-a2 is primary at 6 a moment after.
        let h = clean()
            .probe("fe-a1", group("rg-9", GroupRole::Primary, 5), 100_000)
            .probe("fe-a1", group("rg-9", GroupRole::Secondary, 6), 100_050)
            .probe("fe-a2", group("rg-9", GroupRole::Primary, 6), 100_051)
            .build();
        assert_eq!(NoSplitBrain::default().check(&h), Verdict::Valid);
        // Seen in one round (fe-a2 asked a moment earlier), both claiming: an overlap.
        let h = clean()
            .probe("fe-a2", group("rg-9", GroupRole::Primary, 6), 99_999)
            .probe("fe-a1", group("rg-9", GroupRole::Primary, 5), 100_000)
            .build();
        assert_eq!(NoSplitBrain::default().check(&h).violations().len(), 1);
    }

    #[test]
    fn one_epoch_claimed_by_two_nodes_is_a_violation() {
        // be-a1 steps down, then be-a2 takes over without a new epoch.
        let h = clean()
            .probe("be-a1", be("be-a", BeRole::Mirror, 1), 56_000)
            .probe("be-a2", be("be-a", BeRole::Principal, 1), 57_000)
            .build();
        let v = NoSplitBrain::default().check(&h);
        assert!(
            v.violations()[0]
                .what
                .contains("epoch 1 of BE pool be-a claimed by two nodes"),
            "{v:?}"
        );
    }

    #[test]
    fn no_probe_or_none_after_the_fault_is_unknown() {
        assert!(matches!(
            NoSplitBrain::default().check(&History::default()),
            Verdict::Unknown(_)
        ));
        let h = clean()
            .fault("kill", "be-a1", 58_000, Some(58_100), None)
            .build();
        assert!(
            matches!(NoSplitBrain::default().check(&h), Verdict::Unknown(r) if r.contains("no role probe after"))
        );
    }
}
