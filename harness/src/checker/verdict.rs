//! Verdicts and violations.

use serde::{Deserialize, Serialize};

/// One thing a checker found wrong: who, when, what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The checker (or `bounds`) that found it.
    pub checker: String,
    /// The user concerned, when one is.
    pub user: Option<String>,
    /// When it happened, in µs since the run's start, when a moment is known.
    pub at_us: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Violation {
    /// `checker: [user] [at 12.345 s] what`, as the command line prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.checker)?;
        if let Some(user) = &self.user {
            write!(f, " {user}")?;
        }
        if let Some(at) = self.at_us {
            write!(f, " at {:.3} s", at as f64 / 1e6)?;
        }
        write!(f, " {}", self.what)
    }
}

impl Violation {
    pub fn new(
        checker: &str,
        user: Option<&str>,
        at_us: Option<u64>,
        what: impl Into<String>,
    ) -> Self {
        Violation {
            checker: checker.to_owned(),
            user: user.map(str::to_owned),
            at_us,
            what: what.into(),
        }
    }
}

/// The outcome of a checker: valid, invalid with the violations found, or unknown with the reason it could not
/// decide.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Valid,
    Invalid(Vec<Violation>),
    Unknown(String),
}

impl Verdict {
    /// `valid`, `invalid` or `unknown`, as `summary.json` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unknown(_) => "unknown",
        }
    }

    /// The process exit code of this verdict (see [`crate::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Valid => crate::exit::VALID,
            Verdict::Invalid(_) => crate::exit::INVALID,
            Verdict::Unknown(_) => crate::exit::UNKNOWN,
        }
    }

    pub fn violations(&self) -> &[Violation] {
        match self {
            Verdict::Invalid(v) => v,
            _ => &[],
        }
    }

    /// Merges two verdicts: invalid beats unknown beats valid; violations add up, unknown reasons join.
    pub fn merge(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Invalid(mut a), Verdict::Invalid(b)) => {
                a.extend(b);
                Verdict::Invalid(a)
            }
            (Verdict::Invalid(a), _) | (_, Verdict::Invalid(a)) => Verdict::Invalid(a),
            (Verdict::Unknown(a), Verdict::Unknown(b)) => Verdict::Unknown(format!("{a}; {b}")),
            (Verdict::Unknown(a), Verdict::Valid) | (Verdict::Valid, Verdict::Unknown(a)) => {
                Verdict::Unknown(a)
            }
            (Verdict::Valid, Verdict::Valid) => Verdict::Valid,
        }
    }

    /// The verdict of a checker that found `violations` and, separately, could not decide for `undecided`
    /// reasons: any violation makes it invalid; otherwise any undecided reason makes it unknown.
    pub fn from_findings(violations: Vec<Violation>, undecided: Vec<String>) -> Verdict {
        if !violations.is_empty() {
            Verdict::Invalid(violations)
        } else if !undecided.is_empty() {
            Verdict::Unknown(undecided.join("; "))
        } else {
            Verdict::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid() -> Verdict {
        Verdict::Invalid(vec![Violation::new("im", Some("alice"), Some(1), "lost")])
    }

    #[test]
    fn invalid_beats_unknown_beats_valid() {
        assert_eq!(Verdict::Valid.merge(Verdict::Valid), Verdict::Valid);
        assert_eq!(
            Verdict::Valid.merge(Verdict::Unknown("x".into())),
            Verdict::Unknown("x".into())
        );
        assert_eq!(Verdict::Unknown("x".into()).merge(invalid()), invalid());
        assert_eq!(invalid().merge(Verdict::Valid), invalid());
        assert_eq!(invalid().merge(invalid()).violations().len(), 2);
        assert_eq!(
            Verdict::Unknown("a".into()).merge(Verdict::Unknown("b".into())),
            Verdict::Unknown("a; b".into())
        );
    }
}
