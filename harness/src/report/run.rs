//! `Report`: one history judged — verdict, latencies, counts, bounds — and reading back a report directory's
//! `summary.json`. The files a `Report` is written as are `directory`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checker::durability::Durability;
use crate::checker::im::ImDelivery;
use crate::checker::registration::registered_over_time;
use crate::checker::{Composed, Verdict, Violation};
use crate::history::{History, Op};
use crate::latency::{self, Latencies, Metric};

use super::bounds::{Bound, BoundOutcome};
use super::summary::{Counts, FaultEntry, MetricSummary, OperatorEntry, Summary, ViolationEntry};

/// Errors of writing a report directory.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One judged run: what every output is rendered from.
#[derive(Clone, Debug)]
pub struct Report {
    pub summary: Summary,
    /// The merged verdict, checkers and bounds together.
    pub verdict: Verdict,
    pub latencies: Latencies,
    /// How many users were signed in over time, `(at_us, count)`, for the timeline.
    pub registered: Vec<(u64, usize)>,
    /// The last moment of the history, in µs: the timeline's right edge.
    pub end_us: u64,
}

impl Report {
    /// Runs the scenario's checkers on `history`, measures its latencies, and judges `bounds` against the
    /// summary. `aftermath_ms` attributes events shortly after a fault's undo to that fault (see
    /// [`crate::checker::RegistrationContinuity::aftermath_ms`]).
    pub fn build(
        history: &History,
        checkers: &Composed,
        bounds: &[Bound],
        aftermath_ms: u64,
    ) -> Report {
        let latencies = latency::measure(history, aftermath_ms);
        // Counts do not depend on the scenario's choice of checkers: every report shows them.
        let (_, ims) = ImDelivery::default().judge(history);
        let (_, loss) = Durability::default().judge(history);
        let operations = history.operations();
        let calls = |ok_only: bool| {
            operations
                .iter()
                .filter(|o| matches!(o.op, Op::CallSetup { .. }) && (!ok_only || o.is_ok()))
                .count() as u64
        };
        let counts = Counts {
            users: history.users().len() as u64,
            ims_acked: ims.acked,
            ims_delivered: ims.delivered,
            ims_lost: ims.lost,
            writes_acked: loss.writes_acked,
            writes_lost: loss.writes_lost,
            calls_placed: calls(false),
            calls_answered: calls(true),
            calls_ended: operations
                .iter()
                .filter(|o| matches!(o.op, Op::CallEnd { .. }))
                .count() as u64,
            rpo_ms: loss.rpo_observed_us.div_ceil(1000),
        };
        let metrics: BTreeMap<String, MetricSummary> = Metric::ALL
            .iter()
            .map(|m| {
                (
                    m.name().to_owned(),
                    MetricSummary::from_percentiles(
                        latency::percentiles(&latencies.overall[m]),
                        latencies.never(*m),
                    ),
                )
            })
            .collect();
        let mut summary = Summary {
            scenario: history.run.scenario.clone(),
            seed: history.run.seed,
            verdict: String::new(),
            reason: None,
            violations: Vec::new(),
            metrics,
            faults: history.faults.iter().map(FaultEntry::from).collect(),
            operators: history.operators.iter().map(OperatorEntry::from).collect(),
            counts,
        };
        let mut verdict = checkers.check_each(history).verdict;
        for bound in bounds {
            verdict = verdict.merge(match bound.evaluate(&summary) {
                BoundOutcome::Met => Verdict::Valid,
                BoundOutcome::Missed(actual) => Verdict::Invalid(vec![Violation::new(
                    "bounds",
                    None,
                    None,
                    format!("bound `{bound}` missed: {actual}"),
                )]),
                BoundOutcome::Undecided(reason) => Verdict::Unknown(reason),
            });
        }
        summary.verdict = verdict.name().to_owned();
        summary.violations = verdict
            .violations()
            .iter()
            .map(ViolationEntry::from)
            .collect();
        summary.reason = match &verdict {
            Verdict::Unknown(reason) => Some(reason.clone()),
            _ => None,
        };
        Report {
            summary,
            verdict,
            latencies,
            registered: registered_over_time(history),
            end_us: history.last_at_us(),
        }
    }
}

/// Reads a run directory's `summary.json`.
pub fn read_summary(dir: &Path) -> Result<Summary, ReportError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{clean, im, register};
    use crate::checker::{ImDelivery, NoSplitBrain, Quorum, RegistrationContinuity};
    use crate::history::Op;

    fn checkers() -> Composed {
        Composed::new()
            .with(RegistrationContinuity {
                reregister_bound_ms: 5_000,
                ..Default::default()
            })
            .with(ImDelivery::default())
            .with(Durability::default())
            .with(NoSplitBrain::default())
            .with(Quorum::default())
    }

    fn bounds() -> Vec<Bound> {
        Bound::parse_all(&[
            r#"reregister.p99 <= "5s""#,
            "ims_lost == 0",
            "writes_lost == 0",
        ])
        .unwrap()
    }

    fn clean_report() -> Report {
        Report::build(&clean().build(), &checkers(), &bounds(), 5_000)
    }

    /// The clean run with a lost IM, a user back too late and a missed latency bound.
    fn invalid_report() -> Report {
        let history = clean()
            .ok("carol", im("alice", 1), 20_000, 20_050)
            .observe(
                "carol",
                Op::RegistrationLost {
                    reason: "connection reset".into(),
                },
                10_350,
            )
            .fail(
                "carol",
                register(false),
                11_000,
                11_500,
                "503 Service Unavailable",
            )
            .ok("carol", register(false), 19_000, 19_100)
            .build();
        let bounds = Bound::parse_all(&[r#"reregister.p99 <= "2s""#, "ims_lost == 0"]).unwrap();
        Report::build(&history, &checkers(), &bounds, 5_000)
    }

    #[test]
    fn the_clean_run_is_valid_and_its_outputs_read_as_snapshotted() {
        let report = clean_report();
        assert_eq!(report.verdict, Verdict::Valid, "{:?}", report.verdict);
        insta::assert_snapshot!("clean_summary_json", report.summary_json());
        insta::assert_snapshot!("clean_report_md", report.markdown());
        insta::assert_snapshot!("clean_reregister_hgrm", report.hgrm(Metric::Reregister));
        insta::assert_snapshot!("clean_im_delivery_hgrm", report.hgrm(Metric::ImDelivery));
        insta::assert_snapshot!("clean_report_html", report.html());
    }

    #[test]
    fn an_invalid_run_lists_its_violations_and_missed_bounds() {
        let report = invalid_report();
        assert_eq!(report.summary.verdict, "invalid");
        let whats: Vec<&str> = report
            .summary
            .violations
            .iter()
            .map(|v| v.what.as_str())
            .collect();
        assert!(
            whats
                .iter()
                .any(|w| w.contains("over the bound of 5000 ms")),
            "{whats:?}"
        );
        assert!(
            whats.iter().any(|w| w.contains("never delivered")),
            "{whats:?}"
        );
        assert!(
            whats
                .iter()
                .any(|w| w.contains("bound `ims_lost == 0` missed: ims_lost = 1")),
            "{whats:?}"
        );
        insta::assert_snapshot!("invalid_summary_json", report.summary_json());
        insta::assert_snapshot!("invalid_report_md", report.markdown());
        insta::assert_snapshot!("invalid_report_html", report.html());
    }

    #[test]
    fn operator_commands_are_listed_apart_from_the_faults() {
        let history = clean()
            .operator("pool-failback", "fe-b1", 40_000, Some(40_500))
            .build();
        let report = Report::build(&history, &checkers(), &bounds(), 5_000);
        assert_eq!(report.summary.faults.len(), 1);
        assert_eq!(report.summary.operators.len(), 1);
        assert_eq!(report.summary.operators[0].command, "pool-failback");
        assert_eq!(report.summary.operators[0].done_ms, Some(40_500.0));
        let md = report.markdown();
        assert!(
            md.contains("## Operator commands") && md.contains("| pool-failback | fe-b1 |"),
            "{md}"
        );
        assert!(report.html().contains(r#"class="operator""#));
        let back: Summary = serde_json::from_str(&report.summary_json()).unwrap();
        assert_eq!(back, report.summary);
    }

    #[test]
    fn an_upper_bound_without_samples_holds_and_a_lower_one_is_unknown() {
        // Nothing was unavailable: nobody waited longer than a second.
        let upper = Bound::parse_all(&[r#"write_unavailable.max <= "1s""#]).unwrap();
        let report = Report::build(&clean().build(), &checkers(), &upper, 5_000);
        assert_eq!(
            report.summary.verdict, "valid",
            "{:?}",
            report.summary.reason
        );
        let lower = Bound::parse_all(&[r#"write_unavailable.p50 >= "1ms""#]).unwrap();
        let report = Report::build(&clean().build(), &checkers(), &lower, 5_000);
        assert_eq!(report.summary.verdict, "unknown");
        assert!(report
            .summary
            .reason
            .as_deref()
            .unwrap()
            .contains("write_unavailable had no sample"));
        let required = Bound::parse_all(&["write_unavailable.count >= 1"]).unwrap();
        let report = Report::build(&clean().build(), &checkers(), &required, 5_000);
        assert_eq!(report.summary.verdict, "invalid");
    }

    #[test]
    fn the_directory_holds_every_output_and_compares_with_itself() {
        let root = std::env::temp_dir().join(format!("poolchaos-report-{}", std::process::id()));
        let (base, new) = (root.join("base"), root.join("new"));
        clean_report().write(&base).unwrap();
        invalid_report().write(&new).unwrap();
        for file in [
            "summary.json",
            "report.html",
            "report.md",
            "latency/reregister.hgrm",
            "latency/call_setup.hgrm",
        ] {
            assert!(base.join(file).is_file(), "{file} missing");
        }
        assert_eq!(read_summary(&base).unwrap(), clean_report().summary);
        let same = crate::report::compare(&base, &base, 0.2).unwrap();
        assert!(same.passed(), "{}", same.markdown);
        // The new run's carol took far longer to come back than the base's alice: reregister's p99 regressed.
        let worse = crate::report::compare(&base, &new, 0.2).unwrap();
        assert_eq!(worse.exit_code(), crate::exit::INVALID);
        insta::assert_snapshot!("compare_md", worse.markdown);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
