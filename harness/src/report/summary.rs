//! `summary.json`: the machine-readable outcome of a run, and the source every other output renders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checker::Violation;
use crate::history::{Fault, OperatorOutcome, OperatorRecord};
use crate::latency::Percentiles;

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    /// `valid`, `invalid` or `unknown`.
    pub verdict: String,
    /// Why the verdict is unknown; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub violations: Vec<ViolationEntry>,
    /// By metric name; every metric is present, with null percentiles when it had no sample.
    pub metrics: BTreeMap<String, MetricSummary>,
    pub faults: Vec<FaultEntry>,
    /// The operator commands the run sent (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorEntry>,
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViolationEntry {
    pub checker: String,
    pub user: Option<String>,
    pub at_ms: Option<f64>,
    pub what: String,
}

impl From<&Violation> for ViolationEntry {
    fn from(v: &Violation) -> Self {
        ViolationEntry {
            checker: v.checker.clone(),
            user: v.user.clone(),
            at_ms: v.at_us.map(us_to_ms),
            what: v.what.clone(),
        }
    }
}

/// A metric's percentiles, in `unit` (always `ms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub unit: String,
    pub count: u64,
    /// Latencies that began and never ended within the run (a user signed out who never came back): no sample,
    /// but counted, and longer than any bound.
    #[serde(default)]
    pub never: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl MetricSummary {
    pub fn from_percentiles(p: Option<Percentiles>, never: u64) -> Self {
        MetricSummary {
            unit: "ms".into(),
            count: p.map_or(0, |p| p.count),
            never,
            p50: p.map(|p| p.p50_ms),
            p90: p.map(|p| p.p90_ms),
            p99: p.map(|p| p.p99_ms),
            p999: p.map(|p| p.p999_ms),
            max: p.map(|p| p.max_ms),
        }
    }

    /// Whether statistic `name` (a percentile or the max) falls among the latencies that never ended, which rank
    /// above every sample: the rank it takes, as `p99` takes the 99th percent of `count + never`.
    pub fn in_never(&self, name: &str) -> Option<String> {
        let quantile = match name {
            "p50" => 0.5,
            "p90" => 0.9,
            "p99" => 0.99,
            "p999" => 0.999,
            "max" => 1.0,
            _ => return None,
        };
        let total = self.count + self.never;
        let rank = ((quantile * total as f64).ceil() as u64).max(1);
        (self.never > 0 && rank > self.count).then(|| format!("rank {rank} of {total}"))
    }

    /// A statistic by its bound name (`count`, `never`, `p50`, `p90`, `p99`, `p999`, `max`).
    pub fn stat(&self, name: &str) -> Option<f64> {
        match name {
            "count" => Some(self.count as f64),
            "never" => Some(self.never as f64),
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p999" => self.p999,
            "max" => self.max,
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    pub kind: String,
    pub target: String,
    pub at_ms: f64,
    pub verified_ms: Option<f64>,
    pub undone_ms: Option<f64>,
}

impl From<&Fault> for FaultEntry {
    fn from(f: &Fault) -> Self {
        FaultEntry {
            kind: f.kind.clone(),
            target: f.target.clone(),
            at_ms: us_to_ms(f.requested_at_us),
            verified_ms: f.verified_at_us.map(us_to_ms),
            undone_ms: f.undone_at_us.map(us_to_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorEntry {
    pub command: String,
    pub node: String,
    pub at_ms: f64,
    /// When it was answered; `null` if never.
    pub done_ms: Option<f64>,
    /// `ok`, `pending`, or `failed: <why>`.
    pub outcome: String,
}

impl From<&OperatorRecord> for OperatorEntry {
    fn from(o: &OperatorRecord) -> Self {
        OperatorEntry {
            command: o.command.clone(),
            node: o.node.clone(),
            at_ms: us_to_ms(o.requested_at_us),
            done_ms: o.done_at_us.map(us_to_ms),
            outcome: match &o.outcome {
                OperatorOutcome::Ok { .. } => "ok".into(),
                OperatorOutcome::Pending => "pending".into(),
                OperatorOutcome::Failed { error } => format!("failed: {error}"),
            },
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub users: u64,
    pub ims_acked: u64,
    pub ims_delivered: u64,
    pub ims_lost: u64,
    pub writes_acked: u64,
    pub writes_lost: u64,
    /// Calls placed to numbers, answered (the setup succeeded), and ended by a BYE the caller received.
    #[serde(default)]
    pub calls_placed: u64,
    #[serde(default)]
    pub calls_answered: u64,
    #[serde(default)]
    pub calls_ended: u64,
    /// The observed RPO in ms: the largest time between a lost write's acknowledgement and the fault after it
    /// (0 when no acknowledged write was lost).
    #[serde(default)]
    pub rpo_ms: u64,
}

impl Counts {
    /// A count by its bound name.
    pub fn get(&self, name: &str) -> Option<u64> {
        match name {
            "users" => Some(self.users),
            "ims_acked" => Some(self.ims_acked),
            "ims_delivered" => Some(self.ims_delivered),
            "ims_lost" => Some(self.ims_lost),
            "writes_acked" => Some(self.writes_acked),
            "writes_lost" => Some(self.writes_lost),
            "calls_placed" => Some(self.calls_placed),
            "calls_answered" => Some(self.calls_answered),
            "calls_ended" => Some(self.calls_ended),
            "rpo_ms" => Some(self.rpo_ms),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 10] = [
        "users",
        "ims_acked",
        "ims_delivered",
        "ims_lost",
        "writes_acked",
        "writes_lost",
        "calls_placed",
        "calls_answered",
        "calls_ended",
        "rpo_ms",
    ];
}

/// µs → ms, keeping µs precision.
pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A number of ms as the report's tables show it, `—` when there was no sample.
pub(crate) fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"))
}
