//! The `Checker` trait and the composed checker a scenario runs.

use super::verdict::Verdict;
use crate::history::History;

/// Reads a history and judges one property of it.
pub trait Checker: Send + Sync {
    /// The checker's name, as violations and reports show it.
    fn name(&self) -> &'static str;
    fn check(&self, history: &History) -> Verdict;
}

/// Runs a scenario's checkers and merges their verdicts (invalid beats unknown beats valid).
///
/// A scenario lists only the checkers whose claims it makes: a checker with nothing to judge says unknown
/// (e.g. the quorum checker on a run without pool probes), which would make every run unknown if all ran.
#[derive(Default)]
pub struct Composed {
    checkers: Vec<Box<dyn Checker>>,
}

/// Each checker's own verdict, and the merged one.
#[derive(Clone, Debug, PartialEq)]
pub struct ComposedVerdict {
    pub verdict: Verdict,
    pub by_checker: Vec<(&'static str, Verdict)>,
}

impl Composed {
    pub fn new() -> Self {
        Composed::default()
    }

    /// Adds a checker.
    pub fn with(mut self, checker: impl Checker + 'static) -> Self {
        self.checkers.push(Box::new(checker));
        self
    }

    /// Replaces each checker for which `lacks` gives a reason by an [`Unsupported`] one of the same name.
    pub fn unsupported_where(self, lacks: impl Fn(&str) -> Option<String>) -> Self {
        let checkers = self
            .checkers
            .into_iter()
            .map(|c| match lacks(c.name()) {
                Some(reason) => Box::new(Unsupported {
                    name: c.name(),
                    reason,
                }) as Box<dyn Checker>,
                None => c,
            })
            .collect();
        Composed { checkers }
    }

    /// The names of the checkers, in the order they run.
    pub fn names(&self) -> Vec<&'static str> {
        self.checkers.iter().map(|c| c.name()).collect()
    }

    /// Runs every checker; with no checker at all it says unknown, since nothing was judged.
    pub fn check_each(&self, history: &History) -> ComposedVerdict {
        let by_checker: Vec<(&'static str, Verdict)> = self
            .checkers
            .iter()
            .map(|c| (c.name(), c.check(history)))
            .collect();
        let mut verdict = if by_checker.is_empty() {
            Verdict::Unknown("no checker was run".into())
        } else {
            Verdict::Valid
        };
        for (name, v) in &by_checker {
            verdict = verdict.merge(match v {
                Verdict::Unknown(reason) => Verdict::Unknown(format!("{name}: {reason}")),
                other => other.clone(),
            });
        }
        ComposedVerdict {
            verdict,
            by_checker,
        }
    }
}

impl Checker for Composed {
    fn name(&self) -> &'static str {
        "composed"
    }

    fn check(&self, history: &History) -> Verdict {
        self.check_each(history).verdict
    }
}

/// A checker the scenario asked for that cannot judge its subject (it needs a probe or a service the subject
/// does not have): always unknown, with the reason, so a claim it should judge is never passed unseen.
#[derive(Clone, Debug)]
pub struct Unsupported {
    pub name: &'static str,
    pub reason: String,
}

impl Checker for Unsupported {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, _history: &History) -> Verdict {
        Verdict::Unknown(self.reason.clone())
    }
}
