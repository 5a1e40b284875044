//! Pool quorum: a Front End pool serves exactly when the quorum table says it should. The table is encoded
//! literally, as data, because it is the test oracle (a formula that reproduces it is what the pool uses; the
//! two must agree, so they must not share code).
//!
//! Which FEs run is taken from `pool_serving` probes, which name the pool's FEs in topology order and those
//! running. A pool needs time to notice an FE come or go: a mismatch within `settle_ms` of a change of the
//! running set is not judged.
//!
//! Starting a pool needs more FEs than keeping it (the start-up counts, also literal): they apply at the
//! first start and again after every FE of the pool was down at once (each one's probe failed), until the
//! pool serves or an operator's quorum recovery (a `quorum-recovery` operator command answered 200) lets it
//! start below them.

use std::collections::{BTreeMap, BTreeSet};

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{History, View};

/// One column of the quorum table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumRow {
    pub size_min: usize,
    pub size_max: usize,
    /// How many FEs must run.
    pub running_min: usize,
    /// Only the first `voters` FEs (the seed servers, in topology order) count; `None`: all of them.
    pub voters: Option<usize>,
}

/// The quorum table of the reference pool, literally: pool size N → FEs that must run.
pub const QUORUM_TABLE: [QuorumRow; 6] = [
    QuorumRow {
        size_min: 2,
        size_max: 2,
        running_min: 1,
        voters: None,
    },
    QuorumRow {
        size_min: 3,
        size_max: 4,
        running_min: 2,
        voters: None,
    },
    QuorumRow {
        size_min: 5,
        size_max: 6,
        running_min: 3,
        voters: None,
    },
    QuorumRow {
        size_min: 7,
        size_max: 7,
        running_min: 4,
        voters: None,
    },
    QuorumRow {
        size_min: 8,
        size_max: 9,
        running_min: 4,
        voters: Some(7),
    },
    QuorumRow {
        size_min: 10,
        size_max: 12,
        running_min: 5,
        voters: Some(9),
    },
];

/// FEs that must run to start a pool of N FEs the first time, for N = 2 … 12 (not a clean 85 %).
pub const START_UP_TABLE: [(usize, usize); 11] = [
    (2, 1),
    (3, 3),
    (4, 3),
    (5, 4),
    (6, 5),
    (7, 5),
    (8, 6),
    (9, 7),
    (10, 8),
    (11, 9),
    (12, 10),
];

/// Whether a pool of `fes` may start with `running` up: the start-up count, over all its FEs.
pub fn may_start(fes: &[String], running: &BTreeSet<&str>) -> Option<bool> {
    let (_, needed) = START_UP_TABLE.iter().find(|(n, _)| *n == fes.len())?;
    Some(
        fes.iter()
            .filter(|fe| running.contains(fe.as_str()))
            .count()
            >= *needed,
    )
}

/// The row for a pool of `size` FEs, if the table has one.
pub fn quorum_row(size: usize) -> Option<QuorumRow> {
    QUORUM_TABLE
        .iter()
        .copied()
        .find(|r| (r.size_min..=r.size_max).contains(&size))
}

/// Whether a pool whose FEs are `fes` (topology order) should serve with `running` up; `None` if the table has
/// no row for its size.
pub fn should_serve(fes: &[String], running: &BTreeSet<&str>) -> Option<bool> {
    let row = quorum_row(fes.len())?;
    let voters = &fes[..row.voters.unwrap_or(fes.len())];
    let up = voters
        .iter()
        .filter(|fe| running.contains(fe.as_str()))
        .count();
    Some(up >= row.running_min)
}

/// Checks pool quorum.
#[derive(Clone, Debug)]
pub struct Quorum {
    pub settle_ms: u64,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum { settle_ms: 5_000 }
    }
}

impl Checker for Quorum {
    fn name(&self) -> &'static str {
        "quorum"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        // pool → (running set, since when).
        let mut last_change: BTreeMap<&str, (BTreeSet<&str>, u64)> = BTreeMap::new();
        let mut judged = 0;
        let mut last_probe_us = 0;
        // Which pool each FE belongs to, and whether each pool is "started" (keeps the running quorum) or
        // must meet the start-up counts (at first, and after all its FEs were down at once).
        let mut pool_of: BTreeMap<&str, &str> = BTreeMap::new();
        for probe in &history.probes {
            if let Some(View::PoolServing { pool, fes, .. }) = &probe.view {
                for fe in fes {
                    pool_of.insert(fe.as_str(), pool.as_str());
                }
            }
        }
        let mut started: BTreeMap<&str, bool> = BTreeMap::new();
        let mut recovered: BTreeMap<&str, bool> = BTreeMap::new();
        let mut down: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let recoveries: Vec<(u64, &str)> = history
            .operators
            .iter()
            .filter(|o| o.command == "quorum-recovery" && o.is_ok())
            .filter_map(|o| Some((o.done_at_us?, o.node.as_str())))
            .collect();
        for probe in &history.probes {
            if let Some(&pool) = pool_of.get(probe.node.as_str()) {
                let set = down.entry(pool).or_default();
                if probe.view.is_none() {
                    set.insert(probe.node.as_str());
                } else {
                    set.remove(probe.node.as_str());
                }
                let all_down = pool_of
                    .iter()
                    .filter(|(_, p)| **p == pool)
                    .all(|(fe, _)| set.contains(fe));
                if all_down {
                    started.insert(pool, false);
                    recovered.insert(pool, false);
                }
            }
            for (at, node) in &recoveries {
                if *at <= probe.at_us {
                    if let Some(&pool) = pool_of.get(node) {
                        recovered.insert(pool, true);
                    }
                }
            }
            let Some(View::PoolServing {
                pool,
                serving,
                fes,
                fes_running,
            }) = &probe.view
            else {
                continue;
            };
            last_probe_us = last_probe_us.max(probe.at_us);
            let running: BTreeSet<&str> = fes_running.iter().map(String::as_str).collect();
            let since_us = match last_change.get(pool.as_str()) {
                Some((set, since)) if *set == running => *since,
                _ => {
                    last_change.insert(pool, (running.clone(), probe.at_us));
                    probe.at_us
                }
            };
            let Some(keeps) = should_serve(fes, &running) else {
                undecided.push(format!(
                    "pool {pool} has {} FEs, outside the quorum table",
                    fes.len()
                ));
                continue;
            };
            let is_started = *started.get(pool.as_str()).unwrap_or(&false);
            let is_recovered = *recovered.get(pool.as_str()).unwrap_or(&false);
            let expected = if is_started || is_recovered {
                keeps
            } else {
                keeps && may_start(fes, &running).unwrap_or(false)
            };
            if *serving {
                started.insert(pool, true);
            }
            // The pool gets `settle_ms` to notice a change, and as long to form at its first start.
            if probe.at_us.saturating_sub(since_us) < self.settle_ms * 1000 {
                continue;
            }
            judged += 1;
            if expected != *serving {
                let said = if *serving { "served" } else { "did not serve" };
                violations.push(Violation::new(
                    name,
                    None,
                    Some(probe.at_us),
                    format!(
                        "pool {pool} {said} with {} of {} FEs running ({}), the quorum table says it should{}",
                        running.len(),
                        fes.len(),
                        fes_running.join(", "),
                        if expected { "" } else { " not" }
                    ),
                ));
            }
        }
        if judged == 0 {
            undecided.push("no settled probe of whether a pool serves".into());
        }
        if let Some(last) = history.faults.iter().max_by_key(|f| f.effective_at_us()) {
            if last_probe_us < last.undone_at_us.unwrap_or(last.effective_at_us()) {
                undecided.push(format!(
                    "no pool probe after fault {} ({} {})",
                    last.id, last.kind, last.target
                ));
            }
        }
        undecided.dedup();
        Verdict::from_findings(violations, undecided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("fe{i}")).collect()
    }

    /// The table, row by row, as the reference page states it.
    #[test]
    fn the_table_says_how_many_fes_must_run() {
        let needed = [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (6, 3),
            (7, 4),
            (8, 4),
            (9, 4),
            (10, 5),
            (11, 5),
            (12, 5),
        ];
        for (n, k) in needed {
            let all = fes(n);
            let up: BTreeSet<&str> = all[..k].iter().map(String::as_str).collect();
            assert_eq!(should_serve(&all, &up), Some(true), "N={n} with {k} up");
            let short: BTreeSet<&str> = all[..k - 1].iter().map(String::as_str).collect();
            assert_eq!(
                should_serve(&all, &short),
                Some(false),
                "N={n} with {} up",
                k - 1
            );
        }
        assert_eq!(should_serve(&fes(1), &BTreeSet::new()), None);
        assert_eq!(should_serve(&fes(13), &BTreeSet::new()), None);
    }

    #[test]
    fn only_the_first_seven_or_nine_vote() {
        let nine = fes(9);
        // fe8 and fe9 run but are not seed servers: 3 of the first 7 is not enough.
        let up: BTreeSet<&str> = ["fe1", "fe2", "fe3", "fe8", "fe9"].into();
        assert_eq!(should_serve(&nine, &up), Some(false));
        let twelve = fes(12);
        let up: BTreeSet<&str> = ["fe1", "fe2", "fe3", "fe4", "fe10", "fe11", "fe12"].into();
        assert_eq!(should_serve(&twelve, &up), Some(false));
        let up: BTreeSet<&str> = ["fe1", "fe2", "fe3", "fe4", "fe9"].into();
        assert_eq!(should_serve(&twelve, &up), Some(true));
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use crate::checker::fixtures::{clean, serving};

    #[test]
    fn the_clean_run_is_valid() {
        assert_eq!(Quorum::default().check(&clean().build()), Verdict::Valid);
    }

    #[test]
    fn serving_below_quorum_is_a_violation() {
        // Two of three FEs killed at 50 s; the pool still serves at 57 s.
        let h = clean()
            .probe("fe-a", serving(true, &["fe-a3"]), 50_000)
            .probe("fe-a", serving(true, &["fe-a3"]), 57_000)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0]
            .what
            .contains("pool fe-a served with 1 of 3 FEs running"));
    }

    #[test]
    fn not_serving_with_quorum_is_a_violation() {
        let h = clean()
            .probe("fe-a", serving(false, &["fe-a1", "fe-a2", "fe-a3"]), 50_000)
            .build();
        let v = Quorum::default().check(&h);
        assert!(v.violations()[0].what.contains("did not serve"), "{v:?}");
    }

    #[test]
    fn a_mismatch_while_settling_is_not_judged() {
        let h = clean()
            .probe("fe-a", serving(true, &["fe-a3"]), 50_000)
            .build();
        assert_eq!(Quorum::default().check(&h), Verdict::Valid);
    }

    #[test]
    fn no_pool_probe_is_unknown() {
        assert!(matches!(
            Quorum::default().check(&History::default()),
            Verdict::Unknown(_)
        ));
    }
}

#[cfg(test)]
mod start_up_tests {
    use super::*;
    use crate::history::{Recorder, RunInfo};

    fn serving(r: &Recorder, running: &[&str], serving: bool) {
        for fe in running {
            r.probe(
                fe,
                Some(View::PoolServing {
                    pool: "fe1".into(),
                    serving,
                    fes: vec!["a".into(), "b".into(), "c".into()],
                    fes_running: running.iter().map(|s| s.to_string()).collect(),
                }),
                None,
                r.now_us() / 250_000,
            )
            .unwrap();
        }
    }

    fn down(r: &Recorder, fes: &[&str]) {
        for fe in fes {
            r.probe(fe, None, Some("unreachable".into()), r.now_us() / 250_000)
                .unwrap();
        }
    }

    /// After every FE of a pool of three was down, two back are below the start-up count (3): not serving
    /// is right, serving is a violation — until an operator's quorum recovery.
    #[test]
    fn after_a_total_loss_the_start_up_counts_apply_until_recovery() {
        let check = Quorum { settle_ms: 0 };
        let r = Recorder::in_memory(RunInfo::default());
        serving(&r, &["a", "b", "c"], true);
        down(&r, &["a", "b", "c"]);
        serving(&r, &["a", "b"], false);
        assert_eq!(check.check(&r.snapshot()), Verdict::Valid);
        let r2 = Recorder::in_memory(RunInfo::default());
        serving(&r2, &["a", "b", "c"], true);
        down(&r2, &["a", "b", "c"]);
        serving(&r2, &["a", "b"], true);
        assert!(matches!(check.check(&r2.snapshot()), Verdict::Invalid(_)));
        let id = r2
            .operator_requested("quorum-recovery", "a", serde_json::Value::Null)
            .unwrap();
        r2.operator_done(id, Ok(serde_json::Value::Null)).unwrap();
        serving(&r2, &["a", "b"], true);
        let v = check.check(&r2.snapshot());
        assert_eq!(
            v.violations().len(),
            1,
            "only the start before the recovery: {v:?}"
        );
    }
}
