//! Pool quorum: a Front End pool serves exactly when the quorum table says it should. The table is encoded
//! literally, as data, because it is the test oracle (a formula that reproduces it is what the pool uses; the
//! two must agree, so they must not share code).
//!
//! Which FEs run is taken from `pool_serving` probes, which name the pool's FEs in topology order and those
//! running. A pool needs time to notice an FE come or go: a mismatch within `settle_ms` of a change of the
//! running set is not judged.

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
        for probe in &history.probes {
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
            let Some(expected) = should_serve(fes, &running) else {
                undecided.push(format!(
                    "pool {pool} has {} FEs, outside the quorum table",
                    fes.len()
                ));
                continue;
            };
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
