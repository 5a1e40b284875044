//! Two runs side by side: each metric's p50 and p99, and a failure when a p99 grew beyond the tolerance.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::run::{read_summary, ReportError};
use super::summary::ms;

/// Errors of comparing two runs.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("read the base run")]
    Base(#[source] ReportError),
    #[error("read the new run")]
    New(#[source] ReportError),
    #[error("compare with tolerance {0}: it must be a finite number at least 0")]
    Tolerance(f64),
}

/// The comparison: a Markdown table, and the metrics whose p99 regressed.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub markdown: String,
    pub regressions: Vec<String>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }

    /// The exit code of `poolchaos report compare`: valid, or invalid on a regression.
    pub fn exit_code(&self) -> i32 {
        if self.passed() {
            crate::exit::VALID
        } else {
            crate::exit::INVALID
        }
    }
}

fn change(base: Option<f64>, new: Option<f64>) -> String {
    match (base, new) {
        (Some(b), Some(n)) if b > 0.0 => format!("{:+.1} %", (n - b) / b * 100.0),
        (Some(_), Some(_)) => "—".into(),
        _ => "—".into(),
    }
}

/// Compares the `summary.json` of `base_dir` and `new_dir`. A metric whose p99 grew by more than `tolerance`
/// (0.2 = 20 %) regressed; a metric missing on one side is shown, not judged.
pub fn compare(
    base_dir: &Path,
    new_dir: &Path,
    tolerance: f64,
) -> Result<Comparison, CompareError> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(CompareError::Tolerance(tolerance));
    }
    let base = read_summary(base_dir).map_err(CompareError::Base)?;
    let new = read_summary(new_dir).map_err(CompareError::New)?;
    let names: BTreeSet<&String> = base.metrics.keys().chain(new.metrics.keys()).collect();
    let mut out = String::new();
    let mut regressions = Vec::new();
    let _ = writeln!(
        out,
        "| metric | p50 base | p50 new | p50 change | p99 base | p99 new | p99 change | |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|");
    for name in names {
        let b = base.metrics.get(name);
        let n = new.metrics.get(name);
        let (b50, n50) = (b.and_then(|m| m.p50), n.and_then(|m| m.p50));
        let (b99, n99) = (b.and_then(|m| m.p99), n.and_then(|m| m.p99));
        let status = match (b99, n99) {
            (Some(bv), Some(nv)) if nv > bv * (1.0 + tolerance) => {
                regressions.push(format!("{name}: p99 {bv:.1} ms → {nv:.1} ms"));
                "regressed"
            }
            (Some(_), Some(_)) => "ok",
            _ => "not compared",
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {status} |",
            ms(b50),
            ms(n50),
            change(b50, n50),
            ms(b99),
            ms(n99),
            change(b99, n99)
        );
    }
    let _ = writeln!(
        out,
        "\n{} (p99 tolerance {:.0} %)",
        if regressions.is_empty() {
            "No p99 regression".to_owned()
        } else {
            format!("{} p99 regression(s)", regressions.len())
        },
        tolerance * 100.0
    );
    Ok(Comparison {
        markdown: out,
        regressions,
    })
}
