//! Bounds a scenario declares on its summary: `<metric>.<stat> <op> "<duration>"` (`reregister.p99 <= "2s"`)
//! or `<count> <op> <integer>` (`writes_lost == 0`, `reregister.count >= 1`). A missed bound is a violation.
//!
//! A metric with no sample (nothing was unavailable, nobody had to sign in again):
//! - an upper bound on a latency statistic (`<=`, `<`) holds — nobody waited longer than the bound, because
//!   nobody waited at all: a scenario whose best outcome is "nothing happened" passes on it;
//! - any other bound on a latency statistic (`>=`, `>`, `==`, `!=`) cannot be judged: the verdict is unknown;
//! - `<metric>.count` is 0, a number like any count: a scenario that needs samples says so explicitly with
//!   `<metric>.count >= 1` (for `fe-kill`, the killed server's users must have registered again), which is
//!   missed — a violation — when there were none.
//!
//! Latencies that began and never ended within the run (a user signed out who never came back) are no samples but
//! count: `<metric>.never` is their number, and they rank above every sample, so a percentile or the max that falls
//! among them misses any upper bound ("never"), and a metric whose every user never came back is not "no sample".

use std::fmt;

use crate::latency::Metric;

#[cfg(test)]
use super::summary::MetricSummary;
use super::summary::{Counts, Summary};

/// A bound that could not be parsed; the message names the bound's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse bound `{text}`: {reason}")]
pub struct BoundError {
    pub text: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
}

impl CmpOp {
    const ALL: [(&'static str, CmpOp); 6] = [
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ];

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Le => left <= right,
            CmpOp::Lt => left < right,
            CmpOp::Ge => left >= right,
            CmpOp::Gt => left > right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }
}

/// What a bound constrains.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// A statistic of a latency metric: `count`, `p50`, `p90`, `p99`, `p999` or `max`.
    Metric { metric: Metric, stat: String },
    /// One of the summary's counts.
    Count(String),
}

/// A parsed bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// The bound as written, for messages.
    pub text: String,
    pub subject: Subject,
    pub op: CmpOp,
    /// In ms for a latency statistic, else a plain number.
    pub limit: f64,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a bound fared against a summary.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundOutcome {
    Met,
    /// Missed, with what the summary holds.
    Missed(String),
    /// Could not be judged, and why.
    Undecided(String),
}

const STATS: [&str; 7] = ["count", "never", "p50", "p90", "p99", "p999", "max"];

impl Bound {
    /// Parses one bound.
    pub fn parse(text: &str) -> Result<Bound, BoundError> {
        let error = |reason: String| BoundError {
            text: text.to_owned(),
            reason,
        };
        let (position, symbol, op) = CmpOp::ALL
            .iter()
            .filter_map(|(symbol, op)| text.find(symbol).map(|p| (p, *symbol, *op)))
            // The leftmost operator; at one position the two-character one wins, being listed first.
            .min_by_key(|(p, _, _)| *p)
            .ok_or_else(|| error("no comparison (one of <=, <, >=, >, ==, !=)".into()))?;
        let left = text[..position].trim();
        let right = text[position + symbol.len()..].trim();
        if left.is_empty() || right.is_empty() {
            return Err(error(format!("nothing on one side of `{symbol}`")));
        }
        let subject = match left.split_once('.') {
            Some((metric, stat)) => {
                let metric = Metric::from_name(metric).ok_or_else(|| {
                    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                    error(format!(
                        "unknown metric `{metric}` (one of {})",
                        names.join(", ")
                    ))
                })?;
                if !STATS.contains(&stat) {
                    return Err(error(format!(
                        "unknown statistic `{stat}` (one of {})",
                        STATS.join(", ")
                    )));
                }
                Subject::Metric {
                    metric,
                    stat: stat.to_owned(),
                }
            }
            None if Counts::NAMES.contains(&left) => Subject::Count(left.to_owned()),
            None => {
                return Err(error(format!(
                    "unknown count `{left}` (one of {}, or <metric>.<statistic>)",
                    Counts::NAMES.join(", ")
                )))
            }
        };
        let is_duration =
            matches!(&subject, Subject::Metric { stat, .. } if stat != "count" && stat != "never");
        let limit = if let Some(quoted) = right.strip_prefix('"') {
            let inner = quoted
                .strip_suffix('"')
                .ok_or_else(|| error("unterminated quote".into()))?;
            if !is_duration {
                return Err(error(format!(
                    "`{left}` is a count, not a duration: write a number"
                )));
            }
            parse_duration_ms(inner).map_err(error)?
        } else {
            let number: f64 = right
                .parse()
                .map_err(|_| error(format!("`{right}` is not a number")))?;
            if !is_duration && number.fract() != 0.0 {
                return Err(error(format!(
                    "`{left}` is a count: `{right}` is not a whole number"
                )));
            }
            // A bare number on a latency means ms, the summary's unit.
            number
        };
        Ok(Bound {
            text: text.trim().to_owned(),
            subject,
            op,
            limit,
        })
    }

    /// What the bound constrains, as written on its left: `reregister.p99`, `writes_lost`.
    pub fn subject_name(&self) -> String {
        match &self.subject {
            Subject::Metric { metric, stat } => format!("{}.{stat}", metric.name()),
            Subject::Count(name) => name.clone(),
        }
    }

    /// Parses every bound, stopping at the first mistake.
    pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Bound>, BoundError> {
        texts.iter().map(|t| Bound::parse(t.as_ref())).collect()
    }

    /// Judges the bound against a summary.
    pub fn evaluate(&self, summary: &Summary) -> BoundOutcome {
        let (actual, shown) = match &self.subject {
            Subject::Count(name) => {
                let value = summary
                    .counts
                    .get(name)
                    .expect("parse accepts only known counts");
                (value as f64, format!("{name} = {value}"))
            }
            Subject::Metric { metric, stat } => {
                let Some(m) = summary.metrics.get(metric.name()) else {
                    return BoundOutcome::Undecided(format!(
                        "bound `{}`: no {} metric",
                        self.text,
                        metric.name()
                    ));
                };
                // Users who never came back wait longer than any bound: a percentile (or the max) that falls among
                // them is missed, however fast the others were.
                if let Some(rank) = m.in_never(stat) {
                    let outcome = if matches!(self.op, CmpOp::Ge | CmpOp::Gt) {
                        BoundOutcome::Met
                    } else {
                        BoundOutcome::Missed(format!(
                            "{}.{stat} = never ({rank}: {} of {} never came back within the run)",
                            metric.name(),
                            m.never,
                            m.count + m.never
                        ))
                    };
                    return outcome;
                }
                match m.stat(stat) {
                    Some(value) if stat == "count" || stat == "never" => {
                        (value, format!("{}.{stat} = {value}", metric.name()))
                    }
                    Some(value) => (value, format!("{}.{stat} = {value} ms", metric.name())),
                    // Nobody waited, so nobody waited longer than the bound.
                    None if matches!(self.op, CmpOp::Le | CmpOp::Lt) => return BoundOutcome::Met,
                    None => {
                        return BoundOutcome::Undecided(format!(
                            "bound `{}`: {} had no sample",
                            self.text,
                            metric.name()
                        ))
                    }
                }
            }
        };
        if self.op.holds(actual, self.limit) {
            BoundOutcome::Met
        } else {
            BoundOutcome::Missed(shown)
        }
    }
}

/// `"2s"`, `"150ms"`, `"500us"`, `"1.5m"`, `"1h"` → ms, in humantime's syntax (which also reads `"1m 30s"`).
pub fn parse_duration_ms(text: &str) -> Result<f64, String> {
    use humantime::DurationError;
    let text = text.trim();
    match humantime::parse_duration(text) {
        // From whole nanoseconds, so `"150ms"` is exactly 150.0.
        Ok(duration) => Ok(duration.as_nanos() as f64 / 1e6),
        Err(DurationError::UnknownUnit { unit, .. }) if unit.is_empty() => {
            Err(format!("duration `{text}` has no unit (us, ms, s, m, h)"))
        }
        Err(DurationError::UnknownUnit { unit, .. }) => {
            Err(format!("unknown duration unit `{unit}` (us, ms, s, m, h)"))
        }
        Err(_) => Err(format!(
            "`{text}` is not a duration like \"2s\" or \"150ms\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_into_subject_operator_and_limit() {
        let b = Bound::parse(r#"reregister.p99 <= "2s""#).unwrap();
        assert_eq!(
            b.subject,
            Subject::Metric {
                metric: Metric::Reregister,
                stat: "p99".into()
            }
        );
        assert_eq!((b.op, b.limit), (CmpOp::Le, 2000.0));
        let b = Bound::parse("writes_lost == 0").unwrap();
        assert_eq!(
            (b.subject, b.op, b.limit),
            (Subject::Count("writes_lost".into()), CmpOp::Eq, 0.0)
        );
        assert_eq!(
            Bound::parse(r#"im_delivery.max < "150ms""#).unwrap().limit,
            150.0
        );
        assert_eq!(Bound::parse("call_setup.count >= 1").unwrap().op, CmpOp::Ge);
    }

    /// A summary whose `reregister` metric has the given samples (ms) and every other metric none.
    fn summary(reregister_ms: &[u64], writes_lost: u64) -> Summary {
        let metrics = Metric::ALL
            .iter()
            .map(|m| {
                let mut h = crate::latency::new_histogram();
                if *m == Metric::Reregister {
                    for ms in reregister_ms {
                        h.record(ms * 1000).unwrap();
                    }
                }
                let p = crate::latency::percentiles(&h);
                (m.name().to_owned(), MetricSummary::from_percentiles(p, 0))
            })
            .collect();
        Summary {
            scenario: "s".into(),
            seed: 1,
            verdict: "valid".into(),
            reason: None,
            violations: vec![],
            metrics,
            faults: vec![],
            operators: vec![],
            counts: Counts {
                writes_lost,
                ..Counts::default()
            },
        }
    }

    fn judge(bound: &str, summary: &Summary) -> BoundOutcome {
        Bound::parse(bound).unwrap().evaluate(summary)
    }

    #[test]
    fn users_who_never_came_back_miss_every_latency_bound_that_reaches_them() {
        // 99 users back in 1 s, one never: p50 and p90 are met, p99 lands on rank 99 (a sample), max on the one
        // who never came back. With everyone gone for good, the p99 is no longer "no sample, so met".
        let mut s = summary(&[1000; 99], 0);
        s.metrics.get_mut("reregister").unwrap().never = 1;
        assert_eq!(judge(r#"reregister.p50 <= "2s""#, &s), BoundOutcome::Met);
        assert_eq!(judge(r#"reregister.p99 <= "2s""#, &s), BoundOutcome::Met);
        match judge(r#"reregister.max <= "1h""#, &s) {
            BoundOutcome::Missed(why) => assert!(why.contains("1 of 100 never came back"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge("reregister.never == 0", &s),
            BoundOutcome::Missed("reregister.never = 1".into())
        );
        let mut gone = summary(&[], 0);
        gone.metrics.get_mut("reregister").unwrap().never = 3;
        assert!(matches!(
            judge(r#"reregister.p99 <= "10s""#, &gone),
            BoundOutcome::Missed(_)
        ));
        assert!(
            Bound::parse(r#"reregister.never == "1s""#).is_err(),
            "a count"
        );
    }

    #[test]
    fn an_upper_latency_bound_without_samples_holds() {
        // Nobody was signed out: nobody waited longer than 2 s.
        let none = summary(&[], 0);
        for bound in [
            r#"reregister.p99 <= "2s""#,
            r#"write_unavailable.p99 <= "3s""#,
            r#"reregister.max < "1ms""#,
        ] {
            assert_eq!(judge(bound, &none), BoundOutcome::Met, "{bound}");
        }
    }

    #[test]
    fn an_upper_latency_bound_with_samples_is_judged_on_them() {
        let some = summary(&[500, 1_000, 4_000], 0);
        assert_eq!(judge(r#"reregister.max <= "5s""#, &some), BoundOutcome::Met);
        match judge(r#"reregister.p99 <= "2s""#, &some) {
            BoundOutcome::Missed(shown) => {
                assert!(shown.starts_with("reregister.p99 = 4"), "{shown}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_required_count_of_samples_is_missed_when_there_were_none() {
        let none = summary(&[], 0);
        assert_eq!(
            judge("reregister.count >= 1", &none),
            BoundOutcome::Missed("reregister.count = 0".into())
        );
        assert_eq!(
            judge("reregister.count == 0", &none),
            BoundOutcome::Met,
            "nobody signed out, as a scenario may require"
        );
        let some = summary(&[700, 900], 0);
        assert_eq!(judge("reregister.count >= 1", &some), BoundOutcome::Met);
        assert_eq!(
            judge("reregister.count == 0", &some),
            BoundOutcome::Missed("reregister.count = 2".into())
        );
    }

    #[test]
    fn a_lower_or_exact_latency_bound_without_samples_is_undecided() {
        // "at least 300 ms" needs a sample to be seen at all: unknown, never met.
        let none = summary(&[], 0);
        for bound in [
            r#"reregister.p50 >= "300ms""#,
            r#"reregister.p50 > "0ms""#,
            "reregister.max == 0",
            "reregister.max != 0",
        ] {
            match judge(bound, &none) {
                BoundOutcome::Undecided(why) => {
                    assert!(why.contains("reregister had no sample"), "{why}")
                }
                other => panic!("{bound}: {other:?}"),
            }
        }
        let some = summary(&[200], 0);
        assert!(matches!(
            judge(r#"reregister.p50 >= "300ms""#, &some),
            BoundOutcome::Missed(_)
        ));
        assert_eq!(
            judge(r#"reregister.p50 >= "100ms""#, &some),
            BoundOutcome::Met
        );
    }

    #[test]
    fn counts_are_judged_as_numbers() {
        assert_eq!(
            judge("writes_lost == 0", &summary(&[], 0)),
            BoundOutcome::Met
        );
        assert_eq!(
            judge("writes_lost == 0", &summary(&[], 3)),
            BoundOutcome::Missed("writes_lost = 3".into())
        );
        assert_eq!(
            judge("writes_lost <= 3", &summary(&[], 3)),
            BoundOutcome::Met
        );
    }

    #[test]
    fn a_mistake_names_the_bound() {
        let cases = [
            (r#"reregister.p99 <= "2x""#, "unknown duration unit `x`"),
            (r#"reregistr.p99 <= "2s""#, "unknown metric `reregistr`"),
            ("reregister.p98 <= 5", "unknown statistic `p98`"),
            ("ims_lost = 0", "no comparison"),
            (r#"ims_lost == "0s""#, "is a count, not a duration"),
            ("users_lost == 0", "unknown count `users_lost`"),
            ("ims_lost == zero", "`zero` is not a number"),
        ];
        for (text, reason) in cases {
            let e = Bound::parse(text).unwrap_err();
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("parse bound `{text}`: ")),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
    }
}
