//! One part of a claim ([`ClaimPart`]), what a `checked_by` entry names ([`Check`]: a checker, a bound of every
//! run, a nightly bound), and why a part is not checked ([`unchecked`]), which the scenario loader asks of every
//! part.
//!
//! ```toml
//! [[claim_part]]
//! says = "only the killed server's users are signed out, and they register again within the bound"
//! checked_by = ["registration", "bound:reregister.p99", "bound:reregister.count"]
//! ```

use serde::Deserialize;

use crate::report::Bound;

/// One part of a claim and what judges it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimPart {
    /// The part, in words.
    pub says: String,
    /// Checker names, `bound:<subject>` or `nightly:<subject>`.
    #[serde(default)]
    pub checked_by: Vec<String>,
}

/// What a `checked_by` entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check<'a> {
    Checker(&'a str),
    /// A bound judged in every run, by its subject (`reregister.p99`, `writes_lost`).
    Bound(&'a str),
    /// A bound judged by the nightly profile only.
    Nightly(&'a str),
}

impl<'a> Check<'a> {
    pub fn parse(text: &'a str) -> Check<'a> {
        if let Some(subject) = text.strip_prefix("bound:") {
            Check::Bound(subject.trim())
        } else if let Some(subject) = text.strip_prefix("nightly:") {
            Check::Nightly(subject.trim())
        } else {
            Check::Checker(text.trim())
        }
    }
}

/// Why a part is not checked: nothing named, a checker the scenario does not run, a bound it does not have.
/// `checkers` are the names of the checkers the scenario runs.
pub fn unchecked(
    part: &ClaimPart,
    checkers: &[&str],
    bounds: &[Bound],
    nightly_bounds: &[Bound],
) -> Option<String> {
    if part.checked_by.is_empty() {
        return Some(format!(
            "part \"{}\" names no checker or bound in checked_by",
            part.says
        ));
    }
    let has = |bounds: &[Bound], subject: &str| bounds.iter().any(|b| b.subject_name() == subject);
    for entry in &part.checked_by {
        let missing = match Check::parse(entry) {
            Check::Checker(name) if !checkers.contains(&name) => format!(
                "checker `{name}`, which the scenario does not run (it runs: {})",
                checkers.join(", ")
            ),
            Check::Bound(subject) if !has(bounds, subject) => {
                format!("`{entry}`, but the scenario has no bound on `{subject}` in bounds")
            }
            Check::Nightly(subject) if !has(nightly_bounds, subject) => {
                format!("`{entry}`, but the scenario has no bound on `{subject}` in nightly_bounds")
            }
            _ => continue,
        };
        return Some(format!("part \"{}\" names {missing}", part.says));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(checked_by: &[&str]) -> ClaimPart {
        ClaimPart {
            says: "users come back".into(),
            checked_by: checked_by.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn bounds(texts: &[&str]) -> Vec<Bound> {
        Bound::parse_all(texts).unwrap()
    }

    #[test]
    fn a_part_checked_by_what_the_scenario_has_is_checked() {
        let every = bounds(&[r#"reregister.p99 <= "10s""#, "reregister.count >= 1"]);
        let nightly = bounds(&[r#"reregister.p99 <= "2s""#]);
        let p = part(&[
            "registration",
            "bound:reregister.p99",
            "bound:reregister.count",
            "nightly:reregister.p99",
        ]);
        assert_eq!(
            unchecked(&p, &["registration", "im"], &every, &nightly),
            None
        );
    }

    #[test]
    fn a_part_naming_nothing_is_unchecked() {
        let why = unchecked(&part(&[]), &["registration"], &[], &[]).unwrap();
        assert!(why.contains("names no checker or bound"), "{why}");
    }

    #[test]
    fn a_part_naming_a_checker_not_run_is_unchecked() {
        let why = unchecked(
            &part(&["registration", "quorum"]),
            &["registration", "im"],
            &[],
            &[],
        )
        .unwrap();
        assert!(
            why.contains(
                "checker `quorum`, which the scenario does not run (it runs: registration, im)"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_part_naming_a_bound_the_scenario_lacks_is_unchecked() {
        let every = bounds(&["ims_lost == 0"]);
        let nightly = bounds(&[r#"reregister.p99 <= "2s""#]);
        // Only nightly: not a bound of every run.
        let why = unchecked(&part(&["bound:reregister.p99"]), &[], &every, &nightly).unwrap();
        assert!(
            why.contains("no bound on `reregister.p99` in bounds"),
            "{why}"
        );
        let why = unchecked(&part(&["nightly:ims_lost"]), &[], &every, &nightly).unwrap();
        assert!(
            why.contains("no bound on `ims_lost` in nightly_bounds"),
            "{why}"
        );
    }
}
