//! Failover latency, derived from a history, as HdrHistograms in µs (1 µs .. 1 h, 3 significant digits): per
//! fault and overall. The metrics, by the names reports use:
//!
//! - `reregister`: from the fault's moment of effect (see `SignOut::outage_start_us`) to the first successful
//!   REGISTER of each user the fault signed out;
//! - `full_service`: the same, to the first sign-in not in resiliency mode;
//! - `presence_visible`: the same, to the first NOTIFY of that user's presence another user receives;
//! - `im_delivery`: from each IM's send to its first delivery (per fault: IMs sent while the fault was in force);
//! - `write_unavailable`: per user, from the invoke of a contact or presence write that failed or timed out to
//!   the acknowledgement of that user's next successful one;
//! - `call_setup`: from INVITE to answer of each answered call.
//!
//! Every user counts: a user a fault signed out who never registered again within the run is no sample of
//! `reregister` (nor of `full_service`, nor one never back in full service), but is counted as that metric's
//! `never`, shown beside its percentiles and judged by bounds (`reregister.never == 0`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::checker::registration::{fault_holding, sign_outs};
use crate::history::{Fault, History, Op, Outcome};

/// The longest latency a histogram holds: one hour, in µs. Longer samples are recorded as one hour.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant digits of every latency histogram.
pub const LATENCY_SIGFIG: u8 = 3;

/// A failover latency metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Reregister,
    FullService,
    PresenceVisible,
    ImDelivery,
    WriteUnavailable,
    CallSetup,
    /// From the last fault's undo until every registrar holds exactly the registered users' bindings, for good
    /// (a subject's bindings probe; see [`crate::checker::bindings::convergence`]).
    BindingsConverge,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Reregister,
        Metric::FullService,
        Metric::PresenceVisible,
        Metric::ImDelivery,
        Metric::WriteUnavailable,
        Metric::CallSetup,
        Metric::BindingsConverge,
    ];

    /// The metric's name in reports, file names and bounds.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Reregister => "reregister",
            Metric::FullService => "full_service",
            Metric::PresenceVisible => "presence_visible",
            Metric::ImDelivery => "im_delivery",
            Metric::WriteUnavailable => "write_unavailable",
            Metric::CallSetup => "call_setup",
            Metric::BindingsConverge => "bindings_converge",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// An empty latency histogram (µs, 1 µs .. 1 h, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
        .expect("the bounds are constants that hdrhistogram accepts")
}

/// One histogram per metric, every metric present (empty when it had no sample).
pub type Histograms = BTreeMap<Metric, Histogram<u64>>;

fn empty_histograms() -> Histograms {
    Metric::ALL
        .into_iter()
        .map(|m| (m, new_histogram()))
        .collect()
}

/// A fault's own latencies.
#[derive(Clone, Debug)]
pub struct FaultLatencies {
    pub fault: Fault,
    pub histograms: Histograms,
    /// By metric: the users whose latency never ended within the run.
    pub never: BTreeMap<Metric, u64>,
}

/// The latencies of one run.
#[derive(Clone, Debug)]
pub struct Latencies {
    pub overall: Histograms,
    pub per_fault: Vec<FaultLatencies>,
    /// By metric: the users whose latency never ended within the run (no sample in the histogram).
    pub never: BTreeMap<Metric, u64>,
}

impl Latencies {
    /// A latency that started and never ended within the run.
    fn record_never(&mut self, metric: Metric, fault: Option<u64>) {
        *self.never.entry(metric).or_default() += 1;
        if let Some(f) = fault.and_then(|id| self.per_fault.iter_mut().find(|f| f.fault.id == id)) {
            *f.never.entry(metric).or_default() += 1;
        }
    }

    /// How many of `metric`'s latencies never ended within the run.
    pub fn never(&self, metric: Metric) -> u64 {
        self.never.get(&metric).copied().unwrap_or(0)
    }

    fn record(&mut self, metric: Metric, fault: Option<u64>, value_us: u64) {
        // A zero latency (same stamp) is recorded as 1 µs, the histogram's lowest discernible value.
        let value_us = value_us.max(1);
        self.overall
            .get_mut(&metric)
            .expect("every metric is present")
            .saturating_record(value_us);
        if let Some(f) = fault.and_then(|id| self.per_fault.iter_mut().find(|f| f.fault.id == id)) {
            f.histograms
                .get_mut(&metric)
                .expect("every metric is present")
                .saturating_record(value_us);
        }
    }
}

/// Derives the latencies of a history. `aftermath_ms` is how long after a fault's undo an event still belongs to
/// it (as in [`crate::checker::RegistrationContinuity::aftermath_ms`]).
pub fn measure(history: &History, aftermath_ms: u64) -> Latencies {
    let mut latencies = Latencies {
        overall: empty_histograms(),
        per_fault: history
            .faults
            .iter()
            .map(|f| FaultLatencies {
                fault: f.clone(),
                histograms: empty_histograms(),
                never: BTreeMap::new(),
            })
            .collect(),
        never: BTreeMap::new(),
    };
    let operations = history.operations();

    // Presence seen by others: user → times a watcher received a known presence of that user.
    let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for op in &operations {
        if let (
            Op::NotifyReceived {
                target,
                state: Some(_),
            },
            Some(at),
        ) = (&op.op, op.complete_at_us)
        {
            if *target != op.user {
                seen.entry(target.as_str()).or_default().push(at);
            }
        }
    }
    for s in sign_outs(history, aftermath_ms) {
        // A sign-out put down to an operator command (a failback) counts overall; per fault, only a fault's.
        let Some(cause) = s.cause else { continue };
        let fault = cause.fault();
        let start = s.outage_start_us(history);
        match s.back_at_us {
            Some(back) => latencies.record(Metric::Reregister, fault, back.saturating_sub(start)),
            None => latencies.record_never(Metric::Reregister, fault),
        }
        match s.full_service_at_us {
            Some(full) => latencies.record(Metric::FullService, fault, full.saturating_sub(start)),
            None => latencies.record_never(Metric::FullService, fault),
        }
        if let Some(at) = seen
            .get(s.user.as_str())
            .and_then(|t| t.iter().find(|&&t| t > s.at_us))
        {
            latencies.record(Metric::PresenceVisible, fault, at.saturating_sub(start));
        }
    }

    // IMs: send invoke → first delivery.
    let mut first_delivery: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for op in &operations {
        if let (Op::ImReceived { from, seq }, Some(at)) = (&op.op, op.complete_at_us) {
            first_delivery.entry((from.as_str(), *seq)).or_insert(at);
        }
    }
    for op in &operations {
        match (&op.op, &op.outcome) {
            (Op::ImSend { seq, .. }, _) => {
                if let Some(&at) = first_delivery.get(&(op.user.as_str(), *seq)) {
                    let sent = op.start_us();
                    latencies.record(
                        Metric::ImDelivery,
                        in_force(&history.faults, sent),
                        at.saturating_sub(sent),
                    );
                }
            }
            (Op::CallSetup { .. }, Outcome::Ok(_)) => {
                let invoked = op.start_us();
                let answered = op.complete_at_us.unwrap_or(invoked);
                latencies.record(
                    Metric::CallSetup,
                    in_force(&history.faults, invoked),
                    answered - invoked,
                );
            }
            _ => {}
        }
    }

    // Writes: per user, first failed write → next acknowledged one.
    let mut unavailable_since: BTreeMap<&str, u64> = BTreeMap::new();
    let mut writes: Vec<_> = operations
        .iter()
        .filter(|o| o.op.is_persistent_write() && o.invoke_at_us.is_some())
        .collect();
    writes.sort_by_key(|o| o.complete_at_us.unwrap_or(u64::MAX));
    for op in writes {
        match (&op.outcome, op.complete_at_us) {
            (Outcome::Ok(_), Some(acked)) => {
                if let Some(since) = unavailable_since.remove(op.user.as_str()) {
                    let fault = fault_holding(&history.faults, since, aftermath_ms);
                    latencies.record(Metric::WriteUnavailable, fault, acked.saturating_sub(since));
                }
            }
            _ => {
                unavailable_since
                    .entry(op.user.as_str())
                    .or_insert(op.start_us());
            }
        }
    }
    if let Some(took) = crate::checker::bindings::convergence(history, &Default::default()) {
        let last_undone = history
            .faults
            .iter()
            .filter(|f| f.undone_at_us.is_some())
            .max_by_key(|f| f.undone_at_us)
            .map(|f| f.id);
        latencies.record(Metric::BindingsConverge, last_undone, took);
    }
    latencies
}

/// The last-requested fault in force (requested, not yet undone) at `at_us`.
fn in_force(faults: &[Fault], at_us: u64) -> Option<u64> {
    fault_holding(faults, at_us, 0)
}

/// A histogram's percentiles in ms, as `summary.json` shows them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The percentiles of a histogram of µs, in ms; `None` when it holds no sample.
pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{clean, im, register};

    #[test]
    fn the_clean_run_has_its_failover_latencies() {
        let l = measure(&clean().build(), 5_000);
        let count = |m: Metric| l.overall[&m].len();
        // alice: fault proven at 10.2 s, signed out at 10.3 s, registered at 12.5 s → 2.3 s from the fault.
        assert_eq!(count(Metric::Reregister), 1);
        assert_eq!(
            l.overall[&Metric::Reregister].max(),
            l.overall[&Metric::Reregister].highest_equivalent(2_300_000)
        );
        assert_eq!(count(Metric::FullService), 1);
        assert_eq!(count(Metric::ImDelivery), 5);
        assert_eq!(count(Metric::CallSetup), 1);
        // The IM sent during the fault belongs to it.
        assert_eq!(l.per_fault[0].histograms[&Metric::ImDelivery].len(), 1);
    }

    #[test]
    fn a_user_who_never_came_back_is_counted_not_left_out() {
        // carol is signed in, loses her registration while the fault holds, and never registers again.
        let h = clean()
            .observe(
                "carol",
                Op::RegistrationLost {
                    reason: "gone".into(),
                },
                10_400,
            )
            .build();
        let l = measure(&h, 5_000);
        assert_eq!(
            l.overall[&Metric::Reregister].len(),
            1,
            "alice's sample alone"
        );
        assert_eq!(l.never(Metric::Reregister), 1);
        assert_eq!(l.never(Metric::FullService), 1);
        assert_eq!(l.per_fault[0].never[&Metric::Reregister], 1);
        assert_eq!(
            measure(&clean().build(), 5_000).never(Metric::Reregister),
            0
        );
    }

    #[test]
    fn write_unavailability_runs_from_the_first_refusal_to_the_next_success() {
        let h = clean()
            .ok("carol", register(true), 21_000, 21_100)
            .fail(
                "carol",
                crate::checker::fixtures::add("bob"),
                22_000,
                22_050,
                "403",
            )
            .timeout(
                "carol",
                crate::checker::fixtures::add("bob"),
                23_000,
                24_000,
            )
            .ok(
                "carol",
                crate::checker::fixtures::add("bob"),
                28_000,
                28_500,
            )
            .ok("carol", im("bob", 9), 29_000, 29_100)
            .build();
        let l = measure(&h, 5_000);
        let w = &l.per_fault[0].histograms[&Metric::WriteUnavailable];
        assert_eq!(w.len(), 1);
        assert!(w.equivalent(w.max(), 6_500_000));
    }
}
