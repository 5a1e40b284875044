//! Back End claims, judged from the probes (each Back End node's own view of its role, epoch, log position and
//! whether the pair is synchronized) and the faults. Four parts, each turned on by a scenario's claim:
//!
//! - **`principal_within_ms`**: after a fault takes the serving principal away (it is killed, stopped, paused or
//!   isolated, or a partition cuts it from its partner), some node reports itself a serving principal within the
//!   bound. The lost node itself counts only once its fault is undone: an isolated principal still saying
//!   "principal" is no principal for anyone else.
//! - **`no_self_promotion`**: while a node has no witness (the pool has none, or a fault cuts the node from it
//!   for the whole time since the node was last seen as mirror) it never becomes principal by itself; only an
//!   operator's `db-failover` aimed at it promotes it (each command excuses one promotion).
//! - **`stops_within_ms`**: a serving principal of a pool with a witness that a fault cuts from both the witness
//!   and its partner stops serving within the bound (from the cut's verified effect), and does not serve again
//!   while cut off; it must have been serving when the cut was requested. Without a witness a
//!   principal has no lease and serves exposed by design, so this part applies only where a witness exists.
//! - **`mirror_catches_up`**: a mirror that comes back (from unreachable, another role or unsynchronized) and
//!   first reports itself synchronized has applied the principal's commits: its log position is at least the
//!   principal's as last reported in an earlier probe round, less the one commit that may be in flight (the
//!   principal commits one at a time). Judged only when the principal had moved at least two commits past where
//!   the mirror stood before it went away (otherwise there was nothing to catch up).
//!
//! Each part with no evidence (no Back End probes, no fault that exercised it, the history ending inside its
//! bound, probes without log positions) is undecided: unknown, never valid. A node's view holds from its probe
//! record until its next one (the probes record changes, and a snapshot every 2 s).
//!
//! The file holds one concept, the Back End checker: its four parts share one reading of the probes (each node's
//! view over time, the pool's principal at a moment) and of the faults (which one cuts which node from which, and
//! when), so they stay together.

use std::collections::{BTreeMap, BTreeSet};

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{BeRole, Fault, History, OperatorOutcome, ProbeRecord, View};

/// The command an operator fails a Back End over with.
pub const DB_FAILOVER: &str = "db-failover";

/// Checks the Back End claims a scenario turns on.
#[derive(Clone, Debug, Default)]
pub struct BackendClaims {
    pub principal_within_ms: Option<u64>,
    pub no_self_promotion: bool,
    pub stops_within_ms: Option<u64>,
    pub mirror_catches_up: bool,
}

/// One probe record of one node: its view, or `None` when it could not be asked.
#[derive(Clone, Copy)]
struct Seen<'a> {
    at_us: u64,
    round: u64,
    view: Option<BeView<'a>>,
}

#[derive(Clone, Copy)]
struct BeView<'a> {
    pool: &'a str,
    role: BeRole,
    epoch: u64,
    serving: bool,
    synchronized: Option<bool>,
    last_lsn: Option<u64>,
}

impl BeView<'_> {
    fn serving_principal(&self) -> bool {
        self.role == BeRole::Principal && self.serving
    }
}

/// The Back End pools of a history, as the probes show them.
struct Pools<'a> {
    /// Every probe record of each Back End node, in time order.
    seen: BTreeMap<&'a str, Vec<Seen<'a>>>,
    /// pool → its data nodes (principal and mirror) and its witness, if any.
    pools: BTreeMap<&'a str, (BTreeSet<&'a str>, Option<&'a str>)>,
}

impl<'a> Pools<'a> {
    fn of(history: &'a History) -> Pools<'a> {
        let mut seen: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
        let mut pools: BTreeMap<&str, (BTreeSet<&str>, Option<&str>)> = BTreeMap::new();
        let be_nodes: BTreeSet<&str> = history
            .probes
            .iter()
            .filter(|p| matches!(p.view, Some(View::BeRole { .. })))
            .map(|p| p.node.as_str())
            .collect();
        for (index, probe) in history.probes.iter().enumerate() {
            if !be_nodes.contains(probe.node.as_str()) {
                continue;
            }
            let view = be_view(probe);
            if let Some(v) = view {
                let entry = pools.entry(v.pool).or_default();
                if v.role == BeRole::Witness {
                    entry.1 = Some(probe.node.as_str());
                } else {
                    entry.0.insert(probe.node.as_str());
                }
            }
            seen.entry(probe.node.as_str()).or_default().push(Seen {
                at_us: probe.at_us,
                // Histories written before rounds: each record its own round, in time order.
                round: probe.round.unwrap_or(index as u64),
                view,
            });
        }
        Pools { seen, pools }
    }

    fn records(&self, node: &str) -> &[Seen<'a>] {
        self.seen.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The node's latest record at or before `at_us`.
    fn at(&self, node: &str, at_us: u64) -> Option<Seen<'a>> {
        self.records(node)
            .iter()
            .take_while(|s| s.at_us <= at_us)
            .last()
            .copied()
    }

    /// The node that was the serving principal of `pool` as last seen at or before `at_us`.
    fn principal_at(&self, pool: &str, at_us: u64) -> Option<&'a str> {
        let (data, _) = self.pools.get(pool)?;
        data.iter().copied().find(|n| {
            self.at(n, at_us)
                .and_then(|s| s.view)
                .is_some_and(|v| v.serving_principal())
        })
    }
}

fn be_view(probe: &ProbeRecord) -> Option<BeView<'_>> {
    match &probe.view {
        Some(View::BeRole {
            pool,
            role,
            epoch,
            accepting_writes,
            synchronized,
            last_lsn,
        }) => Some(BeView {
            pool,
            role: *role,
            epoch: *epoch,
            serving: *accepting_writes,
            synchronized: *synchronized,
            last_lsn: *last_lsn,
        }),
        _ => None,
    }
}

/// When the fault is in force: [effect, undone).
fn in_force(fault: &Fault) -> (u64, u64) {
    (
        fault.effective_at_us(),
        fault.undone_at_us.unwrap_or(u64::MAX),
    )
}

/// Whether `fault` takes `node` (of `pool`) down on its own: kill, stop, pause or isolate aimed at it or its pool.
fn takes_down(fault: &Fault, node: &str, pool: &str) -> bool {
    matches!(fault.kind.as_str(), "kill" | "stop" | "pause" | "isolate")
        && (fault.target == node || fault.target == pool)
}

/// Whether `fault` cuts `a` from `b` (both of `pool`): either is taken down, or a partition puts them in
/// different groups.
fn cuts(fault: &Fault, a: &str, b: &str, pool: &str) -> bool {
    if takes_down(fault, a, pool) || takes_down(fault, b, pool) {
        return true;
    }
    if let Some(severed) = fault.severs(a, b) {
        return severed;
    }
    if fault.kind != "partition" {
        return false;
    }
    let groups: Vec<Vec<&str>> = fault
        .target
        .split(" | ")
        .map(|g| g.split('+').map(str::trim).collect())
        .collect();
    let group_of = |n: &str| groups.iter().position(|g| g.contains(&n));
    match (group_of(a), group_of(b)) {
        (Some(x), Some(y)) => x != y,
        _ => false,
    }
}

/// A time some fault cuts one node from another: requested, in force (verified) and undone, in µs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Span {
    requested: u64,
    from: u64,
    to: u64,
}

/// The spans (merged) during which some fault cuts `a` from `b`.
fn cut_intervals(history: &History, a: &str, b: &str, pool: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = history
        .faults
        .iter()
        .filter(|f| cuts(f, a, b, pool))
        .map(|f| {
            let (from, to) = in_force(f);
            Span {
                requested: f.requested_at_us,
                from,
                to,
            }
        })
        .collect();
    spans.sort_by_key(|s| (s.from, s.to));
    let mut merged: Vec<Span> = Vec::new();
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.from <= last.to => {
                last.to = last.to.max(span.to);
                last.requested = last.requested.min(span.requested);
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// The spans during which both cuts hold: from the later request and effect to the earlier undo.
fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let span = Span {
                requested: x.requested.max(y.requested),
                from: x.from.max(y.from),
                to: x.to.min(y.to),
            };
            if span.from < span.to {
                out.push(span);
            }
        }
    }
    out.sort_by_key(|s| (s.from, s.to));
    out
}

fn ms(us: u64) -> u64 {
    us / 1000
}

impl Checker for BackendClaims {
    fn name(&self) -> &'static str {
        "backend"
    }

    fn check(&self, history: &History) -> Verdict {
        let pools = Pools::of(history);
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        if pools.pools.is_empty() {
            return Verdict::Unknown("no Back End probes".into());
        }
        let end_us = history.last_at_us();
        if let Some(bound) = self.principal_within_ms {
            self.principal_within(
                history,
                &pools,
                bound,
                end_us,
                &mut violations,
                &mut undecided,
            );
        }
        if self.no_self_promotion {
            self.no_self_promotion(history, &pools, &mut violations, &mut undecided);
        }
        if let Some(bound) = self.stops_within_ms {
            self.stops_within(
                history,
                &pools,
                bound,
                end_us,
                &mut violations,
                &mut undecided,
            );
        }
        if self.mirror_catches_up {
            self.catches_up(&pools, &mut violations, &mut undecided);
        }
        if self.principal_within_ms.is_none()
            && !self.no_self_promotion
            && self.stops_within_ms.is_none()
            && !self.mirror_catches_up
        {
            undecided.push("no Back End claim was asked for".into());
        }
        Verdict::from_findings(violations, undecided)
    }
}

impl BackendClaims {
    /// (a) After the serving principal's loss, a serving principal within the bound.
    fn principal_within(
        &self,
        history: &History,
        pools: &Pools,
        bound_ms: u64,
        end_us: u64,
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<String>,
    ) {
        let mut judged = 0;
        for (pool, (data, _)) in &pools.pools {
            for fault in &history.faults {
                let Some(lost) = pools.principal_at(pool, fault.requested_at_us) else {
                    continue;
                };
                let partner_cut = (fault.kind == "partition" || !fault.cuts.is_empty())
                    && data
                        .iter()
                        .filter(|n| **n != lost)
                        .any(|n| cuts(fault, lost, n, pool));
                if !takes_down(fault, lost, pool) && !partner_cut {
                    continue;
                }
                let (from, to) = in_force(fault);
                let deadline = from.saturating_add(bound_ms * 1000);
                // Whose word counts at `at`: another node, or the lost one once its fault is undone.
                let counts = |n: &str, at: u64| n != lost || at >= to;
                // The first serving principal reported after the fault was requested (a promotion may show
                // before the harness has verified the fault's effect).
                let found = data
                    .iter()
                    .filter_map(|n| {
                        pools
                            .records(n)
                            .iter()
                            .filter(|s| s.at_us >= fault.requested_at_us && counts(n, s.at_us))
                            .find(|s| s.view.is_some_and(|v| v.serving_principal()))
                            .map(|s| (s.at_us, *n))
                    })
                    .min();
                // Once there, it stays while the fault is in force (and no later fault intervenes): every record
                // of the pool's other nodes from then on leaves some node serving as principal.
                if let Some((first, _)) = found {
                    let window_end = history
                        .faults
                        .iter()
                        .map(|f| f.requested_at_us)
                        .filter(|&at| at > fault.requested_at_us)
                        .min()
                        .unwrap_or(u64::MAX)
                        .min(to)
                        .min(end_us);
                    let mut changes: Vec<(u64, &str)> = data
                        .iter()
                        .flat_map(|n| {
                            pools
                                .records(n)
                                .iter()
                                .filter(|s| s.at_us > first && s.at_us < window_end)
                                .map(|s| (s.at_us, *n))
                        })
                        .collect();
                    changes.sort();
                    let mut gaps = 0u64;
                    let mut first_gap: Option<(u64, u64)> = None;
                    let mut gap_from: Option<u64> = None;
                    for (at, _) in changes {
                        let serving = data.iter().any(|n| {
                            counts(n, at)
                                && pools
                                    .at(n, at)
                                    .and_then(|s| s.view)
                                    .is_some_and(|v| v.serving_principal())
                        });
                        match (serving, gap_from) {
                            (false, None) => gap_from = Some(at),
                            (true, Some(start)) => {
                                gaps += 1;
                                first_gap.get_or_insert((start, at));
                                gap_from = None;
                            }
                            _ => {}
                        }
                    }
                    if let Some(start) = gap_from {
                        gaps += 1;
                        first_gap.get_or_insert((start, window_end));
                    }
                    if let Some((start, stop)) = first_gap {
                        violations.push(Violation::new(
                            self.name(),
                            None,
                            Some(start),
                            format!(
                                "Back End pool {pool}'s principal after {} {} stopped serving again while the \
                                 fault was in force: {gaps} times without a serving principal, the first for \
                                 {} ms",
                                fault.kind,
                                fault.target,
                                ms(stop - start)
                            ),
                        ));
                    }
                }
                match found {
                    Some((at, _)) if at <= deadline => judged += 1,
                    Some((at, node)) => {
                        judged += 1;
                        violations.push(Violation::new(
                            self.name(),
                            None,
                            Some(at),
                            format!(
                                "Back End pool {pool} had no serving principal for {} ms after {} {} took \
                                 principal {lost} away ({node} was the next), beyond {bound_ms} ms",
                                ms(at.saturating_sub(from)),
                                fault.kind,
                                fault.target
                            ),
                        ));
                    }
                    None if deadline <= end_us => {
                        judged += 1;
                        violations.push(Violation::new(
                            self.name(),
                            None,
                            Some(deadline),
                            format!(
                                "Back End pool {pool} had no serving principal after {} {} took principal \
                                 {lost} away, to the end of the run",
                                fault.kind, fault.target
                            ),
                        ));
                    }
                    None => undecided.push(format!(
                        "the run ended within {bound_ms} ms of the loss of {pool}'s principal {lost}"
                    )),
                }
            }
        }
        if judged == 0 && undecided.is_empty() {
            undecided.push("no fault took a serving Back End principal away".into());
        }
    }

    /// (b) Without a witness, no promotion but by an operator's failover.
    fn no_self_promotion(
        &self,
        history: &History,
        pools: &Pools,
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<String>,
    ) {
        // The operator's failovers (a command the node refused promotes nothing).
        let mut commands: Vec<(&str, u64)> = history
            .operators
            .iter()
            .filter(|o| o.command == DB_FAILOVER)
            .filter(|o| !matches!(o.outcome, OperatorOutcome::Failed { .. }))
            .map(|o| (o.node.as_str(), o.requested_at_us))
            .collect();
        commands.sort_by_key(|c| c.1);
        let mut used = vec![false; commands.len()];
        let mut exercised = false;
        for (pool, (data, witness)) in &pools.pools {
            for node in data {
                let away = match witness {
                    None => vec![Span {
                        requested: 0,
                        from: 0,
                        to: u64::MAX,
                    }],
                    Some(w) => cut_intervals(history, node, w, pool),
                };
                let away: Vec<(u64, u64)> = away.iter().map(|s| (s.from, s.to)).collect();
                exercised |= !away.is_empty();
                let mut previous: Option<BeView> = None;
                let mut previous_at = 0;
                for seen in pools.records(node) {
                    let Some(view) = seen.view else { continue };
                    let promoted = view.role == BeRole::Principal
                        && previous
                            .is_some_and(|p| p.role == BeRole::Mirror || p.epoch < view.epoch);
                    if promoted {
                        let witnessless = away
                            .iter()
                            .any(|&(from, to)| from <= previous_at && seen.at_us < to);
                        let command = (0..commands.len()).find(|&i| {
                            !used[i] && commands[i].0 == *node && commands[i].1 <= seen.at_us
                        });
                        match command {
                            Some(i) => used[i] = true,
                            None if witnessless => violations.push(Violation::new(
                                self.name(),
                                None,
                                Some(seen.at_us),
                                format!(
                                    "{node} of Back End pool {pool} promoted itself to principal at epoch {} \
                                     without a witness and without an operator's failover",
                                    view.epoch
                                ),
                            )),
                            None => {}
                        }
                    }
                    previous = Some(view);
                    previous_at = seen.at_us;
                }
            }
        }
        if !exercised {
            undecided.push("no Back End node was ever without its witness".into());
        }
    }

    /// (c) A principal cut from witness and partner stops serving within the bound.
    fn stops_within(
        &self,
        history: &History,
        pools: &Pools,
        bound_ms: u64,
        end_us: u64,
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<String>,
    ) {
        let mut judged = 0;
        for (pool, (data, witness)) in &pools.pools {
            let Some(witness) = witness else { continue };
            for node in data {
                let from_witness = cut_intervals(history, node, witness, pool);
                let mut alone = from_witness.clone();
                for partner in data.iter().filter(|p| *p != node) {
                    alone = intersect(&alone, &cut_intervals(history, node, partner, pool));
                }
                for Span {
                    requested,
                    from,
                    to,
                } in alone
                {
                    let deadline = from.saturating_add(bound_ms * 1000);
                    // Only a node serving as principal when it was cut off; and only a cut-off that lasted.
                    let was_serving = pools
                        .at(node, requested)
                        .and_then(|s| s.view)
                        .is_some_and(|v| v.serving_principal());
                    if !was_serving || to.min(end_us) <= deadline {
                        continue;
                    }
                    // Its view at the deadline holds from its last record before it: still serving there, or
                    // serving again in any later record while cut off, is too long.
                    let at_deadline = pools.at(node, deadline);
                    let late = at_deadline
                        .filter(|s| s.view.is_some_and(|v| v.serving_principal()))
                        .or_else(|| {
                            pools
                                .records(node)
                                .iter()
                                .filter(|s| s.at_us > deadline && s.at_us < to)
                                .find(|s| s.view.is_some_and(|v| v.serving_principal()))
                                .copied()
                        });
                    let stopped_seen = at_deadline.is_some_and(|s| s.view.is_some());
                    match late {
                        Some(s) => {
                            let s = &s;
                            judged += 1;
                            violations.push(Violation::new(
                                self.name(),
                                None,
                                Some(s.at_us.max(deadline)),
                                format!(
                                    "{node} of Back End pool {pool}, cut from its witness and its partner, \
                                     still served as principal {} ms after it was cut off, beyond {bound_ms} ms",
                                    ms(s.at_us.max(deadline) - from)
                                ),
                            ));
                        }
                        None if stopped_seen => judged += 1,
                        None => undecided.push(format!(
                            "{node} of {pool} could not be asked while cut from its witness and partner"
                        )),
                    }
                }
            }
        }
        if judged == 0 && undecided.is_empty() {
            undecided.push(
                "no serving Back End principal was cut from both its witness and its partner for long enough"
                    .into(),
            );
        }
    }

    /// (d) A returning mirror has caught up when it first reports synchronized.
    fn catches_up(
        &self,
        pools: &Pools,
        violations: &mut Vec<Violation>,
        undecided: &mut Vec<String>,
    ) {
        let mut judged = 0;
        let mut unpositioned = false;
        for (pool, (data, _)) in &pools.pools {
            for node in data {
                // A record is in sync when the node is a synchronized mirror or the serving principal; a spell
                // out of sync starts where the node's log stood at its last record before it.
                let mut last_lsn: Option<u64> = None;
                let mut spell: Option<Option<u64>> = None;
                for seen in pools.records(node) {
                    let view = seen.view;
                    let synchronized_mirror = view
                        .is_some_and(|v| v.role == BeRole::Mirror && v.synchronized == Some(true));
                    let in_sync =
                        synchronized_mirror || view.is_some_and(|v| v.serving_principal());
                    let lsn = view.and_then(|v| v.last_lsn);
                    if !in_sync {
                        if spell.is_none() {
                            spell = Some(last_lsn.or(lsn));
                        }
                    } else if let (Some(before), true) = (spell.take(), synchronized_mirror) {
                        let view = view.expect("a synchronized mirror has a view");
                        // The principal of this epoch, as last reported in an earlier round.
                        let principal = data
                            .iter()
                            .filter(|n| *n != node)
                            .flat_map(|n| pools.records(n).iter().filter(|s| s.round < seen.round))
                            .filter(|s| {
                                s.view.is_some_and(|v| {
                                    v.role == BeRole::Principal && v.epoch == view.epoch
                                })
                            })
                            .max_by_key(|s| (s.round, s.at_us))
                            .and_then(|s| s.view);
                        match (before, lsn, principal.map(|p| p.last_lsn)) {
                            (Some(lsn_before), Some(lsn), Some(Some(principal_lsn)))
                                if principal_lsn >= lsn_before + 2 =>
                            {
                                judged += 1;
                                if lsn + 1 < principal_lsn {
                                    violations.push(Violation::new(
                                        self.name(),
                                        None,
                                        Some(seen.at_us),
                                        format!(
                                            "mirror {node} of Back End pool {pool} reported synchronized at \
                                             log position {lsn} while its principal was at {principal_lsn} \
                                             (it stood at {lsn_before} before it went away): it had not caught up"
                                        ),
                                    ));
                                }
                            }
                            (None, _, _) | (_, None, _) | (_, _, Some(None)) => unpositioned = true,
                            _ => {}
                        }
                    }
                    if lsn.is_some() {
                        last_lsn = lsn;
                    }
                }
            }
        }
        if judged == 0 {
            undecided.push(if unpositioned {
                "the probes show no log positions to judge a returning mirror's catch-up by".into()
            } else {
                "no mirror came back behind its principal to catch up".into()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{be_at, Build};

    const P: BeRole = BeRole::Principal;
    const M: BeRole = BeRole::Mirror;

    fn witness() -> View {
        View::BeRole {
            pool: "be1".into(),
            role: BeRole::Witness,
            epoch: 1,
            accepting_writes: false,
            synchronized: None,
            last_lsn: None,
        }
    }

    /// be1-1 principal and be1-2 synchronized mirror at epoch 1 (log at 10), with a witness unless `witness` is
    /// false, probed from 0 to 2 s.
    fn pair(witness_node: bool) -> Build {
        let mut b = Build::new(&[]);
        for at in [0, 1_000, 2_000] {
            b = b
                .probe("be1-1", be_at("be1", P, 1, true, true, 10), at)
                .probe("be1-2", be_at("be1", M, 1, false, true, 10), at);
            if witness_node {
                b = b.probe("be1-witness", witness(), at);
            }
        }
        b
    }

    #[test]
    fn no_principal_within_the_bound_after_the_principals_loss_is_invalid() {
        let check = BackendClaims {
            principal_within_ms: Some(3_000),
            ..BackendClaims::default()
        };
        // The principal is killed at 5 s; the mirror promotes only at 12 s.
        let late = pair(true)
            .fault("kill", "be1-1", 5_000, Some(5_100), Some(15_000))
            .unreachable("be1-1", 5_250)
            .probe("be1-2", be_at("be1", P, 2, true, false, 10), 12_000)
            .end(20_000)
            .build();
        let v = check.check(&late);
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("no serving principal for 6900 ms")),
            "{v:?}"
        );
        // Never any principal again: invalid too.
        let never = pair(true)
            .fault("kill", "be1-1", 5_000, Some(5_100), None)
            .unreachable("be1-1", 5_250)
            .end(20_000)
            .build();
        assert_eq!(check.check(&never).violations().len(), 1);
        // Promoted 1.2 s after the kill: valid.
        let quick = pair(true)
            .fault("kill", "be1-1", 5_000, Some(5_100), Some(15_000))
            .unreachable("be1-1", 5_250)
            .probe("be1-2", be_at("be1", P, 2, true, false, 10), 6_300)
            .end(20_000)
            .build();
        assert_eq!(check.check(&quick), Verdict::Valid);
        // An isolated principal still saying "principal" is no principal for the others.
        let isolated = pair(true)
            .fault(
                "partition",
                "be1-1 | be1-witness+be1-2+fe1",
                5_000,
                Some(5_100),
                Some(15_000),
            )
            .probe("be1-1", be_at("be1", P, 1, true, true, 11), 5_250)
            .end(20_000)
            .build();
        assert_eq!(check.check(&isolated).violations().len(), 1);
        // A one-way cut of the principal from its mirror, by its recorded cuts: the same claim.
        let one_way = pair(true)
            .fault(
                "one_way",
                "be1-1 => be1-2",
                5_000,
                Some(5_100),
                Some(15_000),
            )
            .cutting(&[["be1-1", "be1-2"]])
            .probe("be1-1", be_at("be1", P, 1, true, true, 11), 5_250)
            .end(20_000)
            .build();
        assert_eq!(check.check(&one_way).violations().len(), 1);
        // No fault on the principal, or no Back End probes at all: unknown.
        assert!(matches!(
            check.check(&pair(true).end(20_000).build()),
            Verdict::Unknown(_)
        ));
        assert!(matches!(
            check.check(&Build::new(&[]).end(20_000).build()),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn a_mirror_promoting_itself_without_a_witness_is_invalid() {
        let check = BackendClaims {
            no_self_promotion: true,
            ..BackendClaims::default()
        };
        let promoted = |with_command: bool| {
            let mut b = pair(false)
                .fault("kill", "be1-1", 5_000, Some(5_100), Some(15_000))
                .unreachable("be1-1", 5_250);
            if with_command {
                b = b.operator(DB_FAILOVER, "be1-2", 8_000, Some(8_200));
            }
            b.probe("be1-2", be_at("be1", P, 2, true, false, 10), 8_250)
                .end(20_000)
                .build()
        };
        let v = check.check(&promoted(false));
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("promoted itself")),
            "{v:?}"
        );
        assert_eq!(check.check(&promoted(true)), Verdict::Valid);
        // With a witness that was killed for the whole time the mirror was mirror: the same.
        let witness_gone = pair(true)
            .fault("kill", "be1-witness", 3_000, Some(3_100), Some(15_000))
            .fault("kill", "be1-1", 5_000, Some(5_100), Some(15_000))
            .probe("be1-2", be_at("be1", M, 1, false, true, 10), 4_000)
            .probe("be1-2", be_at("be1", P, 2, true, false, 10), 8_250)
            .end(20_000)
            .build();
        assert_eq!(check.check(&witness_gone).violations().len(), 1);
        // A witness that was never away: nothing to judge.
        assert!(matches!(
            check.check(&pair(true).end(20_000).build()),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn a_principal_serving_without_witness_and_partner_is_invalid() {
        let check = BackendClaims {
            stops_within_ms: Some(2_000),
            ..BackendClaims::default()
        };
        let base = || {
            pair(true)
                .fault("kill", "be1-witness", 3_000, Some(3_100), Some(13_000))
                .fault("kill", "be1-2", 6_000, Some(6_100), Some(13_000))
                .unreachable("be1-witness", 3_250)
                .unreachable("be1-2", 6_250)
        };
        // It keeps serving: at 8.1 s its last word (at 2 s) was still "serving principal".
        let serving = base().end(20_000).build();
        let v = check.check(&serving);
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("still served as principal 2000 ms")),
            "{v:?}"
        );
        // It stops, then serves again while still cut off.
        let again = base()
            .probe(
                "be1-1",
                be_at("be1", BeRole::None, 1, false, false, 12),
                6_700,
            )
            .probe("be1-1", be_at("be1", P, 1, true, false, 12), 10_000)
            .end(20_000)
            .build();
        assert_eq!(check.check(&again).violations().len(), 1);
        // It stops within the bound: valid.
        let stops = base()
            .probe(
                "be1-1",
                be_at("be1", BeRole::None, 1, false, false, 12),
                6_700,
            )
            .end(20_000)
            .build();
        assert_eq!(check.check(&stops), Verdict::Valid);
        // Only the witness lost: nothing to judge.
        let witness_only = pair(true)
            .fault("kill", "be1-witness", 3_000, Some(3_100), Some(13_000))
            .end(20_000)
            .build();
        assert!(matches!(check.check(&witness_only), Verdict::Unknown(_)));
    }

    #[test]
    fn a_returning_mirror_synchronized_before_it_caught_up_is_invalid() {
        let check = BackendClaims {
            mirror_catches_up: true,
            ..BackendClaims::default()
        };
        // The mirror is away from 3 s to 8 s while the principal commits from 10 to 30.
        let returning = |lsn_at_return: u64| {
            pair(true)
                .fault("kill", "be1-2", 3_000, Some(3_100), Some(8_000))
                .unreachable("be1-2", 3_250)
                .probe("be1-1", be_at("be1", P, 1, true, false, 20), 4_000)
                .probe("be1-1", be_at("be1", P, 1, true, false, 30), 7_000)
                .probe(
                    "be1-2",
                    be_at("be1", M, 1, false, true, lsn_at_return),
                    8_500,
                )
                .end(20_000)
                .build()
        };
        let v = check.check(&returning(10));
        assert!(
            v.violations()
                .iter()
                .any(|v| v.what.contains("had not caught up")),
            "{v:?}"
        );
        assert_eq!(check.check(&returning(30)), Verdict::Valid);
        // One commit in flight is allowed for.
        assert_eq!(check.check(&returning(29)), Verdict::Valid);
        // Probes without log positions: unknown.
        let unpositioned = Build::new(&[])
            .probe("be1-1", crate::checker::fixtures::be("be1", P, 1), 0)
            .probe("be1-2", crate::checker::fixtures::be("be1", M, 1), 0)
            .unreachable("be1-2", 3_250)
            .probe("be1-2", crate::checker::fixtures::be("be1", M, 1), 8_500)
            .end(20_000)
            .build();
        assert!(matches!(check.check(&unpositioned), Verdict::Unknown(_)));
    }

    #[test]
    fn a_new_principal_that_keeps_stopping_while_the_old_one_is_cut_off_is_invalid() {
        let check = BackendClaims {
            principal_within_ms: Some(3_000),
            ..BackendClaims::default()
        };
        // The old principal is partitioned away at 5 s (verified only at 6.4 s; it stopped at 5.7 s); the mirror
        // takes over at 6.2 s.
        let base = || {
            pair(true)
                .fault(
                    "partition",
                    "be1-1 | be1-witness+be1-2+fe1",
                    5_000,
                    Some(6_400),
                    Some(12_000),
                )
                .probe(
                    "be1-1",
                    be_at("be1", BeRole::None, 1, false, true, 10),
                    5_700,
                )
                .probe("be1-2", be_at("be1", P, 2, true, false, 10), 6_200)
        };
        assert_eq!(check.check(&base().end(20_000).build()), Verdict::Valid);
        // Its lease lapses between heartbeats: it serves, stops, serves again.
        let flapping = base()
            .probe(
                "be1-2",
                be_at("be1", BeRole::None, 2, false, false, 10),
                6_700,
            )
            .probe("be1-2", be_at("be1", P, 2, true, false, 10), 6_950)
            .probe(
                "be1-2",
                be_at("be1", BeRole::None, 2, false, false, 10),
                7_450,
            )
            .probe("be1-2", be_at("be1", P, 2, true, false, 10), 7_700)
            .end(20_000)
            .build();
        let v = check.check(&flapping);
        assert!(
            v.violations().iter().any(|v| v
                .what
                .contains("2 times without a serving principal, the first for 250 ms")),
            "{v:?}"
        );
        // The cut-off principal stopped before the partition was verified: judged, and valid.
        let stops = BackendClaims {
            stops_within_ms: Some(2_000),
            ..BackendClaims::default()
        };
        assert_eq!(stops.check(&base().end(20_000).build()), Verdict::Valid);
    }
}
