//! Pool quorum: a Front End pool serves exactly when the quorum table says it should. The table is encoded
//! literally, as data, because it is the test oracle (a formula that reproduces it is what the pool uses; the
//! two must agree, so they must not share code).
//!
//! **Which FEs run is the harness's truth, never the pool's word.** The `pool_serving` probes give what each FE
//! says (serving or not, and the FEs it believes run, `fes_running`, kept only for the report); what it should
//! say is worked out from what the harness did and saw:
//!
//! - an FE is *up* unless a fault that stops it is in force (a `kill`, `stop`, `pause` or `isolate` aimed at it,
//!   its pool or its site, or a `site_down` of its site: in force from its proof of effect, or its request when
//!   never proven, until its undo was proven), and unless its own last status probe got no answer (an FE that
//!   died by itself is not running either);
//! - *running for the quorum table, as seen by the FE whose probe is judged*: the FEs of its pool that are up
//!   and that it can reach: not isolated, and not on another side of a partition in force (a partition cuts
//!   the nodes of each group from those of the other groups; a node in no group reaches everyone; a node named
//!   in two groups stays in the first, as the runtime places it). The FE itself counts. So on the majority side
//!   of a partition an FE counts the majority, and on a minority side it counts its side only and must not
//!   serve: "running" means reachable by the side the FE is on. Link toxics and operator commands change no
//!   FE's reachability to its peers. A fault whose target cannot be resolved (an unknown site or kind) leaves the
//!   verdict unknown, never valid.
//!
//! A pool needs time to notice an FE come or go: a probe within `notice_within_ms` of any change that concerns the
//! pool (a fault on one of its FEs requested, proven, its undo requested or proven, an FE's probe starting or
//! ceasing to answer, an operator's quorum recovery, the pool's first probe) is not judged.
//!
//! Starting a pool needs more FEs than keeping it (the start-up counts, also literal): they apply at the
//! first start and again after every FE of the pool was down at once, until the pool serves or an operator's
//! quorum recovery (a `quorum-recovery` operator command answered 200) lets it start below them.

use std::collections::{BTreeMap, BTreeSet};

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{Fault, History, View};

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

/// Checks pool quorum against the harness's truth (see the module doc).
#[derive(Clone, Debug)]
pub struct Quorum {
    pub notice_within_ms: u64,
    /// The nodes of each site (from the topology): resolves `site_down` faults and `site:<name>` targets.
    pub sites: BTreeMap<String, Vec<String>>,
    /// The nodes of each pool (from the topology): resolves faults aimed at a pool. The pools the probes name
    /// are known without it.
    pub pools: BTreeMap<String, Vec<String>>,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum {
            notice_within_ms: 5_000,
            sites: BTreeMap::new(),
            pools: BTreeMap::new(),
        }
    }
}

/// What a fault does to Front Ends' reachability of each other, resolved to node names.
#[derive(Clone, Debug, PartialEq)]
enum Effect {
    /// Not running (killed, stopped, paused, its site lost).
    Down(BTreeSet<String>),
    /// Running but cut from every network: it reaches nobody, nobody reaches it.
    Isolated(BTreeSet<String>),
    /// A partition: the nodes of each group reach only their own group's (and nodes in no group).
    Cut(Vec<BTreeSet<String>>),
    /// A partition shape by its recorded cuts: each pair cut in at least one direction, which a peer link (TCP, both
    /// ways) does not survive.
    Severed(BTreeSet<(String, String)>),
    /// Nothing a pool's quorum counts (a link toxic, an operator command).
    Nothing,
}

impl Effect {
    fn touches(&self, node: &str) -> bool {
        match self {
            Effect::Down(n) | Effect::Isolated(n) => n.contains(node),
            Effect::Cut(groups) => groups.iter().any(|g| g.contains(node)),
            Effect::Severed(pairs) => pairs.iter().any(|(a, b)| a == node || b == node),
            Effect::Nothing => false,
        }
    }
}

/// A fault's effect and when it is in force: `from_us` (proven, else requested) until `until_us` (its undo
/// proven; `None`: to the end). `events_us` are its request, proof and undo, which the pool must notice.
#[derive(Clone, Debug)]
struct InForce {
    effect: Effect,
    from_us: u64,
    until_us: Option<u64>,
    events_us: Vec<u64>,
}

impl InForce {
    fn at(&self, t: u64) -> bool {
        self.from_us <= t && self.until_us.is_none_or(|u| t < u)
    }
}

impl Quorum {
    /// The nodes a target names: `site:<name>`, a pool, or a node. `None` for a site the topology does not know.
    fn resolve(
        &self,
        target: &str,
        probed_pools: &BTreeMap<&str, &[String]>,
    ) -> Option<BTreeSet<String>> {
        if let Some(site) = target.strip_prefix("site:") {
            return self.site(site);
        }
        if let Some(fes) = probed_pools.get(target) {
            return Some(fes.iter().cloned().collect());
        }
        if let Some(nodes) = self.pools.get(target) {
            return Some(nodes.iter().cloned().collect());
        }
        Some([target.to_string()].into())
    }

    fn site(&self, site: &str) -> Option<BTreeSet<String>> {
        self.sites.get(site).map(|n| n.iter().cloned().collect())
    }

    /// A fault's effect on reachability, or why it cannot be told.
    fn effect(
        &self,
        fault: &Fault,
        probed_pools: &BTreeMap<&str, &[String]>,
    ) -> Result<Effect, String> {
        let unknown_site = |site: &str| format!("site {site} of fault {} is unknown", fault.id);
        if !fault.cuts.is_empty() {
            return Ok(Effect::Severed(
                fault
                    .cuts
                    .iter()
                    .map(|[a, b]| (a.clone(), b.clone()))
                    .collect(),
            ));
        }
        match fault.kind.as_str() {
            "kill" | "stop" | "pause" => self
                .resolve(&fault.target, probed_pools)
                .map(Effect::Down)
                .ok_or_else(|| unknown_site(&fault.target)),
            "isolate" => self
                .resolve(&fault.target, probed_pools)
                .map(Effect::Isolated)
                .ok_or_else(|| unknown_site(&fault.target)),
            "site_down" => self
                .site(fault.target.trim_start_matches("site:"))
                .map(Effect::Down)
                .ok_or_else(|| unknown_site(&fault.target)),
            "partition" => {
                // `a+b | c`: as the runtime places them, a node named again in a later group stays in the first.
                let mut seen = BTreeSet::new();
                let mut groups = Vec::new();
                for group in fault.target.split('|') {
                    let mut nodes = BTreeSet::new();
                    for member in group.split('+').map(str::trim).filter(|m| !m.is_empty()) {
                        let resolved = self
                            .resolve(member, probed_pools)
                            .ok_or_else(|| unknown_site(member))?;
                        nodes.extend(resolved.into_iter().filter(|n| seen.insert(n.clone())));
                    }
                    groups.push(nodes);
                }
                Ok(Effect::Cut(groups))
            }
            // A degraded link, a packet fault or a store's disk: nothing the pool's quorum counts (as a link toxic).
            "link" | "packet" | "disk_full" | "disk_read_only" => Ok(Effect::Nothing),
            kind if kind.starts_with("operator:") => Ok(Effect::Nothing),
            kind => Err(format!(
                "fault {} of kind {kind} has no known effect on Front Ends",
                fault.id
            )),
        }
    }
}

/// Whether `a` and `b` can reach each other at `t` under the faults in force.
fn reach(faults: &[InForce], a: &str, b: &str, t: u64) -> bool {
    a == b
        || faults.iter().filter(|f| f.at(t)).all(|f| match &f.effect {
            Effect::Isolated(n) => !n.contains(a) && !n.contains(b),
            Effect::Cut(groups) => {
                let side = |n: &str| groups.iter().position(|g| g.contains(n));
                match (side(a), side(b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
            }
            Effect::Severed(pairs) => {
                !pairs.contains(&(a.to_string(), b.to_string()))
                    && !pairs.contains(&(b.to_string(), a.to_string()))
            }
            Effect::Down(_) | Effect::Nothing => true,
        })
}

/// Whether `node` is up at `t`: no fault that stops it in force, and its last probe answered (`answered`).
fn up(faults: &[InForce], answered: &BTreeMap<&str, bool>, node: &str, t: u64) -> bool {
    let stopped = faults
        .iter()
        .any(|f| f.at(t) && matches!(&f.effect, Effect::Down(n) if n.contains(node)));
    !stopped && answered.get(node).copied().unwrap_or(true)
}

impl Checker for Quorum {
    fn name(&self) -> &'static str {
        "quorum"
    }

    fn check(&self, history: &History) -> Verdict {
        let name = self.name();
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        let mut judged = 0;
        let mut last_probe_us = 0;
        // Each pool's FEs in topology order (as the probes give them), and each FE's pool.
        let mut pool_fes: BTreeMap<&str, &[String]> = BTreeMap::new();
        let mut pool_of: BTreeMap<&str, &str> = BTreeMap::new();
        let mut first_probe: BTreeMap<&str, u64> = BTreeMap::new();
        for probe in &history.probes {
            if let Some(View::PoolServing { pool, fes, .. }) = &probe.view {
                pool_fes.entry(pool.as_str()).or_insert(fes.as_slice());
                first_probe.entry(pool.as_str()).or_insert(probe.at_us);
                for fe in fes {
                    pool_of.insert(fe.as_str(), pool.as_str());
                }
            }
        }
        let mut faults: Vec<InForce> = Vec::new();
        // Per pool, every moment something changed that the pool must notice.
        let mut changes: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for fault in &history.faults {
            let effect = match self.effect(fault, &pool_fes) {
                Ok(effect) => effect,
                Err(why) => {
                    undecided.push(why);
                    continue;
                }
            };
            let in_force = InForce {
                from_us: fault.effective_at_us(),
                until_us: fault.undone_at_us,
                events_us: [
                    Some(fault.requested_at_us),
                    fault.verified_at_us,
                    fault.undo_requested_at_us,
                    fault.undone_at_us,
                ]
                .into_iter()
                .flatten()
                .collect(),
                effect,
            };
            for (pool, fes) in &pool_fes {
                if fes.iter().any(|fe| in_force.effect.touches(fe)) {
                    changes.entry(pool).or_default().extend(&in_force.events_us);
                }
            }
            faults.push(in_force);
        }
        let mut recoveries: Vec<(u64, &str)> = history
            .operators
            .iter()
            .filter(|o| o.command == "quorum-recovery" && o.is_ok())
            .filter_map(|o| Some((o.done_at_us?, *pool_of.get(o.node.as_str())?)))
            .collect();
        recoveries.sort();
        for (at, pool) in &recoveries {
            changes.entry(pool).or_default().insert(*at);
        }
        let mut recoveries = recoveries.into_iter().peekable();
        // Whether each FE's last probe answered; pools "started" (keep the running quorum) or held to the
        // start-up counts (at first, and after all their FEs were down at once).
        let mut answered: BTreeMap<&str, bool> = BTreeMap::new();
        let mut started: BTreeMap<&str, bool> = BTreeMap::new();
        let mut recovered: BTreeMap<&str, bool> = BTreeMap::new();
        for probe in &history.probes {
            let t = probe.at_us;
            if let Some(&pool) = pool_of.get(probe.node.as_str()) {
                // An FE not probed yet counts as up: its first answer changes nothing.
                let now = probe.view.is_some();
                if answered.insert(probe.node.as_str(), now).unwrap_or(true) != now {
                    changes.entry(pool).or_default().insert(t);
                }
                let fes = pool_fes[pool];
                if !fes.iter().any(|fe| up(&faults, &answered, fe, t)) {
                    started.insert(pool, false);
                    recovered.insert(pool, false);
                }
            }
            while let Some((_, pool)) = recoveries.next_if(|(at, _)| *at <= t) {
                recovered.insert(pool, true);
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
            last_probe_us = last_probe_us.max(t);
            let me = probe.node.as_str();
            let running: BTreeSet<&str> = fes
                .iter()
                .map(String::as_str)
                .filter(|fe| {
                    (*fe == me || up(&faults, &answered, fe, t)) && reach(&faults, me, fe, t)
                })
                .collect();
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
            // The pool gets `notice_within_ms` to notice a change, and as long to form at its first start.
            let since = changes
                .get(pool.as_str())
                .and_then(|c| c.range(..=t).next_back().copied())
                .unwrap_or(0)
                .max(first_probe.get(pool.as_str()).copied().unwrap_or(0));
            if t.saturating_sub(since) < self.notice_within_ms * 1000 {
                continue;
            }
            judged += 1;
            if expected != *serving {
                let said = if *serving { "served" } else { "did not serve" };
                let running: Vec<&str> = running.into_iter().collect();
                violations.push(Violation::new(
                    name,
                    None,
                    Some(t),
                    format!(
                        "pool {pool} {said} on {me} with {} of {} FEs running as the harness knows it ({}), \
                         the quorum table says it should{} (the pool said running: {})",
                        running.len(),
                        fes.len(),
                        running.join(", "),
                        if expected { "" } else { " not" },
                        fes_running.join(", "),
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
        // Two of three FEs killed at 50 s; the pool still serves at 57 s (and says so).
        let h = clean()
            .fault("kill", "fe-a1", 50_000, Some(50_100), None)
            .fault("kill", "fe-a2", 50_000, Some(50_150), None)
            .probe("fe-a", serving(true, &["fe-a3"]), 50_500)
            .probe("fe-a", serving(true, &["fe-a3"]), 57_000)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains(
            "pool fe-a served on fe-a with 1 of 3 FEs running as the harness knows it (fe-a3)"
        ));
    }

    /// The pool says all three FEs run while the harness killed two, and keeps serving: the pool's own count
    /// must not decide (it did before: the table was judged against `fes_running`).
    #[test]
    fn a_pool_that_counts_killed_fes_as_running_and_serves_is_a_violation() {
        let all = ["fe-a1", "fe-a2", "fe-a3"];
        let h = clean()
            .fault("kill", "fe-a1", 50_000, Some(50_100), None)
            .fault("kill", "fe-a2", 50_000, Some(50_150), None)
            .probe("fe-a3", serving(true, &all), 50_500)
            .probe("fe-a3", serving(true, &all), 57_000)
            .probe("fe-a3", serving(true, &all), 59_000)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 2, "{v:?}");
        let what = &v.violations()[0].what;
        assert!(
            what.contains("pool fe-a served on fe-a3 with 1 of 3 FEs running as the harness knows it (fe-a3), the quorum table says it should not (the pool said running: fe-a1, fe-a2, fe-a3)"),
            "{what}"
        );
    }

    /// The converse: every FE runs, the pool counts fewer and stops serving.
    #[test]
    fn a_pool_that_counts_fewer_fes_than_run_and_stops_serving_is_a_violation() {
        let h = clean()
            .probe("fe-a3", serving(false, &["fe-a3"]), 50_000)
            .probe("fe-a3", serving(false, &["fe-a3"]), 52_000)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 2, "{v:?}");
        assert!(
            v.violations()[0].what.contains(
                "pool fe-a did not serve on fe-a3 with 3 of 3 FEs running as the harness knows it"
            ),
            "{v:?}"
        );
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
            .fault("kill", "fe-a1", 50_000, Some(50_100), None)
            .fault("kill", "fe-a2", 50_000, Some(50_150), None)
            .probe("fe-a", serving(true, &["fe-a3"]), 53_000)
            .probe("fe-a", serving(false, &["fe-a3"]), 54_000)
            .build();
        assert_eq!(Quorum::default().check(&h), Verdict::Valid);
    }

    /// Restarted FEs may be counted by the pool before their restart is proven: from the restart's request the
    /// pool gets `notice_within_ms` to agree, not before.
    #[test]
    fn the_pool_may_count_an_fe_from_the_request_to_restart_it() {
        let all = ["fe-a1", "fe-a2", "fe-a3"];
        let restarted = |undo_requested_ms: u64| {
            let mut h = clean()
                .fault("kill", "fe-a1", 50_000, Some(50_100), Some(59_000))
                .fault("kill", "fe-a2", 50_000, Some(50_150), Some(59_000))
                .probe("fe-a3", serving(true, &all), 57_000)
                .probe("fe-a3", serving(true, &all), 60_000)
                .build();
            for fault in &mut h.faults[1..] {
                fault.undo_requested_at_us = Some(undo_requested_ms * 1000);
            }
            Quorum::default().check(&h)
        };
        assert_eq!(restarted(56_000), Verdict::Valid);
        // Asked for only after the pool said they run: the pool counted FEs still down.
        assert_eq!(restarted(58_000).violations().len(), 1);
    }

    /// An FE that dies by itself (its probe stops answering, no fault) is not running either.
    #[test]
    fn an_fe_whose_probe_fails_is_not_running() {
        let h = clean()
            .unreachable_in("fe-a1", 55_500, 222)
            .unreachable_in("fe-a2", 55_501, 222)
            .probe("fe-a3", serving(true, &["fe-a1", "fe-a2", "fe-a3"]), 58_000)
            .build();
        let check = Quorum {
            notice_within_ms: 2_000,
            ..Quorum::default()
        };
        let v = check.check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains("with 1 of 3 FEs running"));
    }

    /// A partition: the FE on the majority side counts its side and serves; the one cut off alone counts
    /// itself and must not.
    #[test]
    fn running_means_reachable_from_the_fes_side_of_a_partition() {
        let two = ["fe-a2", "fe-a3"];
        let partitioned = || {
            clean().fault(
                "partition",
                "fe-a1 | fe-a2+fe-a3",
                50_000,
                Some(50_200),
                None,
            )
        };
        let h = partitioned()
            .probe("fe-a2", serving(true, &two), 56_000)
            .probe("fe-a1", serving(false, &["fe-a1"]), 56_001)
            .build();
        assert_eq!(Quorum::default().check(&h), Verdict::Valid);
        let h = partitioned()
            .probe("fe-a2", serving(true, &two), 56_000)
            .probe("fe-a1", serving(true, &["fe-a1"]), 56_001)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains(
            "pool fe-a served on fe-a1 with 1 of 3 FEs running as the harness knows it (fe-a1)"
        ));
    }

    /// A one-way cut (the recorded cuts of a partition shape) severs a peer link as a two-way one does: the FE
    /// whose packets to the others are dropped is cut off and must not serve alone; the others may.
    #[test]
    fn a_one_way_cut_severs_the_peer_links_it_crosses() {
        let two = ["fe-a2", "fe-a3"];
        let one_way = || {
            clean()
                .fault(
                    "one_way",
                    "fe-a1 => fe-a2+fe-a3",
                    50_000,
                    Some(50_200),
                    None,
                )
                .cutting(&[["fe-a1", "fe-a2"], ["fe-a1", "fe-a3"]])
        };
        let h = one_way()
            .probe("fe-a2", serving(true, &two), 56_000)
            .probe("fe-a1", serving(false, &["fe-a1"]), 56_001)
            .build();
        assert_eq!(Quorum::default().check(&h), Verdict::Valid);
        let h = one_way()
            .probe("fe-a2", serving(true, &two), 56_000)
            .probe("fe-a1", serving(true, &["fe-a1"]), 56_001)
            .build();
        let v = Quorum::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(
            v.violations()[0]
                .what
                .contains("served on fe-a1 with 1 of 3"),
            "{v:?}"
        );
    }

    /// A site lost takes its FEs down; a site the checker does not know leaves the verdict unknown.
    #[test]
    fn a_site_down_stops_its_fes_and_an_unknown_site_is_unknown() {
        let h = clean()
            .fault("site_down", "dc1", 50_000, Some(50_200), None)
            .probe("fe-a3", serving(true, &["fe-a3"]), 56_000)
            .build();
        assert!(
            matches!(Quorum::default().check(&h), Verdict::Unknown(r) if r.contains("site dc1 of fault 1 is unknown"))
        );
        let mut check = Quorum::default();
        check.sites.insert(
            "dc1".into(),
            vec!["fe-a1".into(), "fe-a2".into(), "be-a1".into()],
        );
        let v = check.check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
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
        let check = Quorum {
            notice_within_ms: 0,
            ..Quorum::default()
        };
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
