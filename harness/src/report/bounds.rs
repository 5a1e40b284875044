//! Bounds a scenario declares on its summary: `<metric>.<stat> <op> "<duration>"` (`reregister.p99 <= "2s"`)
//! or `<count> <op> <integer>` (`writes_lost == 0`). A missed bound is a violation; a bound on a metric with no
//! sample cannot be judged and makes the verdict unknown.

use std::fmt;

use crate::latency::Metric;

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

const STATS: [&str; 6] = ["count", "p50", "p90", "p99", "p999", "max"];

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
        let is_duration = matches!(&subject, Subject::Metric { stat, .. } if stat != "count");
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
                match m.stat(stat) {
                    Some(value) if stat == "count" => {
                        (value, format!("{}.count = {value}", metric.name()))
                    }
                    Some(value) => (value, format!("{}.{stat} = {value} ms", metric.name())),
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

/// `"2s"`, `"150ms"`, `"500us"`, `"1.5m"`, `"1h"` → ms.
pub fn parse_duration_ms(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"2s\" or \"150ms\""))?;
    let per_unit_ms = match unit.trim() {
        "us" | "µs" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "" => return Err(format!("duration `{text}` has no unit (us, ms, s, m, h)")),
        other => return Err(format!("unknown duration unit `{other}` (us, ms, s, m, h)")),
    };
    Ok(number * per_unit_ms)
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
