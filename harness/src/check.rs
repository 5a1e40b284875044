//! `poolchaos check <report dir>`: judges a recorded history again, with the checkers and bounds of today's
//! scenario file, so an old report can be re-read when a checker improves (Jepsen's analyze step).
//!
//! It reads `history.jsonl` and `faults.jsonl` from the directory, the scenario the history names (or the one
//! asked for), and the `summary.json` the run left (to say what the verdict was then). It writes nothing into
//! the report directory: the new report goes only where `--out` says.
//!
//! What the history cannot hold is the harness's own trouble: a fault it could not prove is in the history as
//! never verified (the checkers say unknown), an operator command that failed or never answered makes the
//! verdict unknown here as it did in the run.

use std::path::{Path, PathBuf};

use crate::checker::Verdict;
use crate::history::{History, HistoryError, OperatorOutcome};
use crate::report::run::read_summary;
use crate::report::summary::Summary;
use crate::report::Report;
use crate::scenario::Scenario;

/// Why a report directory could not be judged again.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("read the history in {dir}: {source}")]
    History {
        dir: PathBuf,
        #[source]
        source: HistoryError,
    },
    #[error("the history in {0} names no scenario; say which with --scenario")]
    NoScenario(PathBuf),
    #[error("read the scenario {path}: {reason}")]
    Scenario { path: PathBuf, reason: String },
}

/// A history judged again.
#[derive(Debug)]
pub struct Checked {
    /// The scenario file whose checkers and bounds judged it.
    pub scenario: PathBuf,
    pub history: History,
    /// Today's judgement.
    pub report: Report,
    /// What the run's own `summary.json` said, when the directory holds one.
    pub recorded: Option<Summary>,
}

impl Checked {
    pub fn exit_code(&self) -> i32 {
        match self.report.verdict {
            Verdict::Valid => crate::exit::VALID,
            Verdict::Invalid(_) => crate::exit::INVALID,
            Verdict::Unknown(_) => crate::exit::UNKNOWN,
        }
    }
}

/// The scenario file a history names: `suites/scenarios/<name>.toml` under `scenarios_root`.
pub fn scenario_of(history: &History, scenarios_root: &Path) -> Option<PathBuf> {
    let name = &history.run.scenario;
    (!name.is_empty()).then(|| scenarios_root.join(format!("{name}.toml")))
}

/// Judges the history in `dir` again: with the scenario at `scenario`, or else the one the history names under
/// `scenarios_root`; `nightly` adds the scenario's nightly bounds, as `run --nightly` does.
pub fn check(
    dir: &Path,
    scenario: Option<&Path>,
    scenarios_root: &Path,
    nightly: bool,
) -> Result<Checked, CheckError> {
    let history = History::load(dir).map_err(|source| CheckError::History {
        dir: dir.to_owned(),
        source,
    })?;
    let path = match scenario {
        Some(path) => path.to_owned(),
        None => scenario_of(&history, scenarios_root)
            .ok_or_else(|| CheckError::NoScenario(dir.to_owned()))?,
    };
    let scenario = Scenario::load(&path).map_err(|e| CheckError::Scenario {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut bounds = scenario.bounds.clone();
    if nightly {
        bounds.extend(scenario.nightly_bounds.iter().cloned());
    }
    let mut report = Report::build(
        &history,
        &scenario.checkers(),
        &bounds,
        scenario.aftermath_ms(),
    );
    // An operator command that did not go through stopped the run as a harness error: never valid.
    for operator in &history.operators {
        let why = match &operator.outcome {
            OperatorOutcome::Ok { .. } => continue,
            OperatorOutcome::Pending => "never answered".to_owned(),
            OperatorOutcome::Failed { error } => format!("failed: {error}"),
        };
        let reason = format!(
            "operator command {} ({} on {}) {why}",
            operator.id, operator.command, operator.node
        );
        report.verdict = report
            .verdict
            .clone()
            .merge(Verdict::Unknown(reason.clone()));
        report.summary.reason.get_or_insert(reason);
    }
    report.summary.verdict = report.verdict.name().to_owned();
    let recorded = read_summary(dir).ok();
    Ok(Checked {
        scenario: path,
        history,
        report,
        recorded,
    })
}
