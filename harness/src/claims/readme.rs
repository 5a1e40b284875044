//! The README's table of claims: each scenario's claim parts and what checks each, rendered from the loaded
//! scenarios (`suites/tests/claims.rs` keeps the README in step with it).

use super::part::Check;
use crate::report::Bound;
use crate::scenario::Scenario;

/// The README's table: each scenario's claim parts and what checks each (Markdown).
pub fn table(scenarios: &[Scenario]) -> String {
    let mut out = String::from("| scenario | claim part | checked by |\n|---|---|---|\n");
    for s in scenarios {
        for (i, part) in s.file.claim_part.iter().enumerate() {
            let name = if i == 0 { s.name() } else { "" };
            let checks: Vec<String> = part
                .checked_by
                .iter()
                .map(|entry| match Check::parse(entry) {
                    Check::Checker(name) => format!("`{name}` checker"),
                    Check::Bound(subject) => bound_text(&s.bounds, subject, ""),
                    Check::Nightly(subject) => bound_text(&s.nightly_bounds, subject, " (nightly)"),
                })
                .collect();
            out.push_str(&format!(
                "| {name} | {} | {} |\n",
                part.says.replace('|', "\\|"),
                checks.join(", ")
            ));
        }
    }
    out
}

/// Every bound on `subject`, as written.
fn bound_text(bounds: &[Bound], subject: &str, suffix: &str) -> String {
    let texts: Vec<String> = bounds
        .iter()
        .filter(|b| b.subject_name() == subject)
        .map(|b| format!("`{}`{suffix}", b.text))
        .collect();
    texts.join(", ")
}
