//! No split brain, from probes: never two principals of one Back End pool accepting writes at overlapping
//! times, never two primaries of one routing group accepting writes at overlapping times, never a writer of an
//! older epoch still accepting once a newer epoch's writer was seen, and never one epoch claimed by two nodes.
//!
//! Probes come in rounds: a round asks every node at once, and the next round starts after every answer, so what a
//! node said in a later round it said after anything said in an earlier one; within a round the order is unknown.
//! A node is recorded only when its views change, so its claim holds from the round that first shows it to the
//! round before its next record that does not. Two claims overlap when both hold over two common rounds (each was
//! held from the first to the second); one common round is a hand-over the probes cannot order, unless the older
//! epoch's claim is still seen in a round after the newer one's first. The checker reports only what probes show:
//! a split brain shorter than a probe round can go unseen (the durability checker still sees its lost writes).
//!
//! **Pairing.** Paired Front End pools must never both serve one pool's users at full service: each Front End of
//! a paired pool says whose users it serves as their registrar (`pairing.serves_users_of`: its own pool's unless
//! fenced, its pair's while it holds the pair failed over; resiliency mode refuses persistent changes and is not
//! full service). A claim here belongs to the serving pool, not to one server: the servers of one pool claim the
//! same users together. Two pools' claims to one pool's users overlap by the same round rule (two common rounds:
//! the fence failed); one common round is a failover or failback the probes cannot order. Where the topology
//! pairs pools ([`NoSplitBrain::paired_pools`]), a pool whose Front Ends never said so, or no pairing probe after
//! the last fault, leaves this part unknown.

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{BeRole, Fault, GroupRole, History, ProbeRecord, View};

/// Checks that no pool or routing group had two writers, and no pool's users two registrars.
#[derive(Clone, Debug, Default)]
pub struct NoSplitBrain {
    /// The Front End pools the topology pairs: each must have said whose users it serves.
    pub paired_pools: Vec<String>,
}

/// The scope of the pairing claims to `pool`'s users.
fn users_of(pool: &str) -> String {
    format!("the users of pool {pool}")
}

/// The probe rounds of a history without round numbers (written before they were recorded): the probes' pace.
const ROUND_US: u64 = 250_000;

/// (scope, node) → that node's probes about the scope: (round, the epoch when it claimed to be the writer).
type ProbesByScopeAndNode = BTreeMap<(String, String), Vec<(u64, Option<u64>)>>;

/// One node's uninterrupted claim to be the writer of a scope at `epoch`, over probe rounds `first..=last`.
#[derive(Clone, Debug)]
struct Claim {
    node: String,
    /// Who claims: the node itself, or for a pairing scope the pool the node serves in.
    owner: String,
    epoch: u64,
    first: u64,
    last: u64,
}

/// A probe's round (for histories written before rounds were recorded: its time in round lengths).
pub(super) fn round_of(probe: &ProbeRecord) -> u64 {
    probe.round.unwrap_or(probe.at_us / ROUND_US)
}

impl Checker for NoSplitBrain {
    fn name(&self) -> &'static str {
        "split_brain"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        // (scope, node) → the node's probes about that scope: (round, Some(epoch) when claiming writer).
        let mut seen: ProbesByScopeAndNode = BTreeMap::new();
        let mut unreachable: Vec<(String, u64)> = Vec::new();
        // When each round was recorded (its first record), and the rounds each node was recorded in.
        let mut round_at: BTreeMap<u64, u64> = BTreeMap::new();
        let mut rounds_of: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        // The pool of each node that said whose users it serves, and whether any BE or group role was probed.
        let mut pool_of: BTreeMap<&str, &str> = BTreeMap::new();
        let mut roles_probed = false;
        for probe in &history.probes {
            let round = round_of(probe);
            round_at
                .entry(round)
                .and_modify(|at| *at = (*at).min(probe.at_us))
                .or_insert(probe.at_us);
            rounds_of
                .entry(probe.node.as_str())
                .or_default()
                .push(round);
            let (scope, claim) = match &probe.view {
                Some(View::BeRole {
                    pool,
                    role,
                    epoch,
                    accepting_writes,
                    ..
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
                Some(View::Pairing {
                    pool,
                    serves_users_of,
                    ..
                }) => {
                    pool_of.insert(probe.node.as_str(), pool.as_str());
                    for served in serves_users_of {
                        seen.entry((users_of(served), probe.node.clone()))
                            .or_default()
                            .push((round, Some(0)));
                    }
                    continue;
                }
                Some(View::PoolServing { .. } | View::Bindings { .. }) => continue,
                None => {
                    unreachable.push((probe.node.clone(), round));
                    continue;
                }
            };
            roles_probed = true;
            seen.entry((scope, probe.node.clone()))
                .or_default()
                .push((round, claim));
        }
        // An unreachable node claims nothing: it ends its claims in every scope.
        for (node, round) in unreachable {
            for ((_, n), probes) in seen.iter_mut() {
                if *n == node {
                    probes.push((round, None));
                }
            }
        }
        // A node's record lists all its views: a scope missing from one of its rounds is no longer claimed there.
        for ((_, node), probes) in seen.iter_mut() {
            let shown: std::collections::BTreeSet<u64> = probes.iter().map(|p| p.0).collect();
            for round in rounds_of.get(node.as_str()).into_iter().flatten() {
                if !shown.contains(round) {
                    probes.push((*round, None));
                }
            }
        }
        let mut undecided = Vec::new();
        if !roles_probed {
            undecided.push("no probe of any Back End or routing group role".to_string());
        }
        let mut claims: BTreeMap<&str, Vec<Claim>> = BTreeMap::new();
        for ((scope, node), probes) in seen.iter_mut() {
            probes.sort_by_key(|p| p.0);
            let mut open: Option<Claim> = None;
            for &(round, claim) in probes.iter() {
                if matches!((claim, &open), (Some(epoch), Some(c)) if c.epoch == epoch) {
                    continue;
                }
                if let Some(mut done) = open.take() {
                    done.last = round.saturating_sub(1).max(done.first);
                    claims.entry(scope).or_default().push(done);
                }
                let owner = match pool_of.get(node.as_str()) {
                    Some(pool) if scope.starts_with("the users of") => pool.to_string(),
                    _ => node.clone(),
                };
                open = claim.map(|epoch| Claim {
                    node: node.clone(),
                    owner,
                    epoch,
                    first: round,
                    last: round,
                });
            }
            if let Some(mut done) = open {
                let last = rounds_of.get(node.as_str()).and_then(|r| r.iter().max());
                done.last = last.copied().unwrap_or(done.first);
                claims.entry(scope).or_default().push(done);
            }
        }
        let at = |round: u64| {
            round_at
                .range(round..)
                .next()
                .map_or(history.last_at_us(), |(_, at)| *at)
        };
        let mut violations = Vec::new();
        for (scope, claims) in &claims {
            let writer = if scope.starts_with("BE") {
                "principals"
            } else {
                "primaries"
            };
            let pairing = scope.starts_with("the users of");
            for (i, a) in claims.iter().enumerate() {
                for b in &claims[i + 1..] {
                    if a.owner == b.owner {
                        continue;
                    }
                    let (older, newer) = if a.epoch <= b.epoch { (a, b) } else { (b, a) };
                    let (from, to) = (a.first.max(b.first), a.last.min(b.last));
                    if pairing {
                        if from < to {
                            violations.push(Violation::new(
                                name,
                                None,
                                Some(at(from + 1)),
                                format!(
                                    "two pools serving {scope} at full service at once: {} (on {}) and {} \
                                     (on {}), over probe rounds {from} to {to}",
                                    a.owner, a.node, b.owner, b.node
                                ),
                            ));
                        }
                        continue;
                    }
                    if a.epoch == b.epoch && from <= to {
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(at(from)),
                            format!(
                                "two {writer} of {scope} accepting writes at once: {} and {}, the same epoch {}",
                                a.node, b.node, a.epoch
                            ),
                        ));
                    } else if a.epoch == b.epoch {
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(at(a.first.max(b.first))),
                            format!(
                                "epoch {} of {scope} claimed by two nodes: {} and {}",
                                a.epoch, a.node, b.node
                            ),
                        ));
                    } else if from < to {
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(at(from + 1)),
                            format!(
                                "two {writer} of {scope} accepting writes at once: {} and {}, epochs {} and {}",
                                older.node, newer.node, older.epoch, newer.epoch
                            ),
                        ));
                    } else if older.last > newer.first {
                        violations.push(Violation::new(
                            name,
                            None,
                            Some(at(newer.first + 1)),
                            format!(
                                "{} still accepting writes for {scope} at epoch {} after {} accepted them at epoch {}",
                                older.node, older.epoch, newer.node, newer.epoch
                            ),
                        ));
                    }
                }
            }
        }
        // The effect of the last fault must have been probed, or a split brain after it would go unseen.
        if let Some(last) = history.faults.iter().max_by_key(|f| f.effective_at_us()) {
            let probed_after = |pairing: bool| {
                history.probes.iter().any(|p| {
                    p.at_us >= last_probe_due(last)
                        && match &p.view {
                            Some(View::BeRole { .. } | View::GroupRole { .. }) => !pairing,
                            Some(View::Pairing { .. }) => pairing,
                            _ => false,
                        }
                })
            };
            if !probed_after(false) {
                undecided.push(format!(
                    "no role probe after fault {} ({} {}), so its effect on roles was not observed",
                    last.id, last.kind, last.target
                ));
            }
            if !self.paired_pools.is_empty() && !probed_after(true) {
                undecided.push(format!(
                    "no pairing probe after fault {} ({} {}), so its effect on who serves whose users was \
                     not observed",
                    last.id, last.kind, last.target
                ));
            }
        }
        // A paired pool whose Front Ends never said whose users they serve: its claims were not observed.
        for pool in &self.paired_pools {
            if !pool_of.values().any(|p| p == pool) {
                undecided.push(format!(
                    "no probe of whose users paired pool {pool} serves (its pairing state)"
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
    use crate::checker::fixtures::{be, clean, group, pairing, Build};

    /// rg-9 of fe-a as `node` said it in `round` (answered a millisecond apart per round).
    fn rg9(b: Build, node: &str, role: GroupRole, epoch: u64, round: u64) -> Build {
        b.probe_in(node, group("rg-9", role, epoch), round * 250 + 1, round)
    }

    /// The one violation the checker finds in `b`'s history.
    fn only_violation(b: Build) -> String {
        let v = NoSplitBrain::default().check(&b.build());
        assert_eq!(v.violations().len(), 1, "{v:?}");
        v.violations()[0].what.clone()
    }

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
    fn a_hand_over_the_probes_cannot_order_is_not_an_overlap() {
        // fe-x1 is primary at epoch 5 in round 400; in round 401 fe-x2 is primary at 6 and fe-x1 secondary at 6,
        // fe-x2 recorded first (the round's answers are recorded one after another). The hand-over happened between
        // the two rounds.
        let b = rg9(clean(), "fe-x1", GroupRole::Primary, 5, 400);
        let b = rg9(b, "fe-x2", GroupRole::Primary, 6, 401);
        let b = rg9(b, "fe-x1", GroupRole::Secondary, 6, 401);
        assert_eq!(NoSplitBrain::default().check(&b.build()), Verdict::Valid);
        // Both seen claiming in one round: the round's asks are answered in an unknown order, so the hand-over may
        // have come between them.
        let b = rg9(clean(), "fe-x1", GroupRole::Primary, 5, 400);
        let b = rg9(b, "fe-x2", GroupRole::Primary, 6, 400);
        let b = rg9(b, "fe-x1", GroupRole::Secondary, 6, 401);
        assert_eq!(NoSplitBrain::default().check(&b.build()), Verdict::Valid);
    }

    #[test]
    fn an_older_writer_seen_after_a_newer_one_is_a_violation() {
        // fe-x1 still accepts at epoch 5 in round 401, after fe-x2 accepted at 6 in round 400 (and no longer does).
        let b = rg9(clean(), "fe-x1", GroupRole::Primary, 5, 399);
        let b = rg9(b, "fe-x2", GroupRole::Primary, 6, 400);
        let b = rg9(b, "fe-x2", GroupRole::Secondary, 7, 401);
        let b = rg9(b, "fe-x1", GroupRole::Primary, 5, 401);
        let what = only_violation(b);
        assert!(
            what.contains("fe-x1 still accepting writes for routing group rg-9 of fe-a at epoch 5 after fe-x2"),
            "{what}"
        );
    }

    #[test]
    fn two_writers_over_two_common_rounds_are_a_violation() {
        // Unchanged views are not recorded again: fe-x1's claim from round 399 holds until its next record.
        let b = rg9(clean(), "fe-x1", GroupRole::Primary, 5, 399);
        let b = rg9(b, "fe-x2", GroupRole::Primary, 6, 400);
        let b = rg9(b, "fe-x1", GroupRole::Secondary, 6, 402);
        let b = rg9(b, "fe-x2", GroupRole::Primary, 6, 402);
        let what = only_violation(b);
        assert!(
            what.contains("two primaries of routing group rg-9 of fe-a accepting writes at once: fe-x1 and fe-x2, epochs 5 and 6"),
            "{what}"
        );
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

    /// The split-brain checker of the paired topology (fe1 ↔ fe2).
    fn paired() -> NoSplitBrain {
        NoSplitBrain {
            paired_pools: vec!["fe1".into(), "fe2".into()],
        }
    }

    /// What `node` of `pool` said in `round` about whose users it serves.
    fn serves(b: Build, node: &str, pool: &str, users_of: &[&str], round: u64) -> Build {
        b.probe_in(node, pairing(pool, users_of), round * 250 + 2, round)
    }

    /// fe1-1 and fe2-1 each serve their own pool's users from round 0, with snapshots through the run.
    fn pools_at_home() -> Build {
        let mut b = clean();
        for round in [0, 8, 16] {
            b = serves(b, "fe1-1", "fe1", &["fe1"], round);
            b = serves(b, "fe2-1", "fe2", &["fe2"], round);
        }
        b
    }

    #[test]
    fn two_pools_serving_one_pools_users_over_two_common_rounds_are_a_violation() {
        // fe2 holds fe1 failed over from round 100, while fe1 (never fenced) still serves its own users in rounds
        // 100 to 102.
        let mut b = pools_at_home();
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 100);
        b = serves(b, "fe1-1", "fe1", &["fe1"], 102);
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 102);
        b = serves(b, "fe1-1", "fe1", &["fe1"], 220);
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 220);
        let v = paired().check(&b.build());
        assert_eq!(v.violations().len(), 1, "{v:?}");
        let what = &v.violations()[0].what;
        assert!(
            what.contains("two pools serving the users of pool fe1 at full service at once: fe1 (on fe1-1) and fe2 (on fe2-1)"),
            "{what}"
        );
    }

    #[test]
    fn a_clean_failover_and_failback_are_no_overlap() {
        // Site dc1 lost at round 40 (fe1-1 unreachable); fe2 fails fe1 over in round 41; dc1 returns fenced in
        // round 60; fe1 serves its users again in round 80, the last round fe2 still does (a failback the probes
        // cannot order); snapshots until round 220.
        let mut b = pools_at_home();
        b = b.unreachable_in("fe1-1", 40 * 250 + 2, 40);
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 41);
        b = serves(b, "fe1-1", "fe1", &[], 60);
        b = serves(b, "fe1-1", "fe1", &["fe1"], 80);
        b = serves(b, "fe2-1", "fe2", &["fe2"], 81);
        for round in [120, 220] {
            b = serves(b, "fe1-1", "fe1", &["fe1"], round);
            b = serves(b, "fe2-1", "fe2", &["fe2"], round);
        }
        assert_eq!(paired().check(&b.build()), Verdict::Valid);
        // The home pool's claim seen in the round after the backup's first is an overlap.
        let mut b = pools_at_home();
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 41);
        b = serves(b, "fe1-1", "fe1", &["fe1"], 42);
        b = serves(b, "fe1-1", "fe1", &[], 43);
        b = serves(b, "fe1-1", "fe1", &[], 220);
        b = serves(b, "fe2-1", "fe2", &["fe2", "fe1"], 220);
        assert_eq!(paired().check(&b.build()).violations().len(), 1);
    }

    #[test]
    fn the_servers_of_one_pool_serving_its_users_together_are_no_split_brain() {
        let mut b = pools_at_home();
        for round in [0, 220] {
            b = serves(b, "fe1-2", "fe1", &["fe1"], round);
            b = serves(b, "fe1-3", "fe1", &["fe1"], round);
            b = serves(b, "fe2-1", "fe2", &["fe2"], round);
        }
        assert_eq!(paired().check(&b.build()), Verdict::Valid);
    }

    #[test]
    fn no_pairing_probe_in_a_paired_topology_is_unknown() {
        // The roles are all valid, but nothing says whose users each pool served.
        let v = paired().check(&clean().build());
        assert!(
            matches!(&v, Verdict::Unknown(r) if r.contains("no probe of whose users paired pool fe1 serves")),
            "{v:?}"
        );
        // One pool probed, its pair never.
        let mut b = clean();
        for round in [0, 220] {
            b = serves(b, "fe1-1", "fe1", &["fe1"], round);
        }
        let v = paired().check(&b.build());
        assert!(
            matches!(&v, Verdict::Unknown(r) if r.contains("paired pool fe2") && !r.contains("pool fe1 ")),
            "{v:?}"
        );
        // Both probed, but none after the last fault was undone (30 s, round 120).
        let v = paired().check(&pools_at_home().build());
        assert!(
            matches!(&v, Verdict::Unknown(r) if r.contains("no pairing probe after fault 0")),
            "{v:?}"
        );
        // Without a paired topology, the clean run is valid.
        assert_eq!(
            NoSplitBrain::default().check(&clean().build()),
            Verdict::Valid
        );
    }
}
