//! Every scenario's claim is checked: each file in `suites/scenarios/` splits its claim into
//! `[[claim_part]]`s, each naming a checker the scenario runs or a bound it declares (the loader rejects a part
//! that names nothing, a checker not run or a bound not declared), and the README's table shows them.
//! `POOLCHAOS_BLESS=1` rewrites the README's table from the files.

use std::path::Path;

use poolchaos::scenario::{self, Scenario};

const BEGIN: &str =
    "<!-- claim parts: generated from suites/scenarios by suites/tests/claims.rs -->\n";
const END: &str = "<!-- end of claim parts -->";

fn scenarios() -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files = scenario::list(&dir).expect("suites/scenarios is readable");
    assert!(files.len() >= 20, "{} scenario files", files.len());
    files
        .iter()
        .map(|f| Scenario::load(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn every_scenario_splits_its_claim_into_checked_parts() {
    let mut unsplit = Vec::new();
    for s in scenarios() {
        assert!(!s.file.claim.is_empty(), "{}: no claim", s.path.display());
        if s.file.claim_part.is_empty() {
            unsplit.push(s.name().to_owned());
        }
        for part in &s.file.claim_part {
            // The loader has checked every name; a part must also say something.
            assert!(
                !part.says.trim().is_empty(),
                "{}: a part says nothing",
                s.name()
            );
            assert!(!part.checked_by.is_empty(), "{}: {}", s.name(), part.says);
        }
    }
    assert!(
        unsplit.is_empty(),
        "scenarios whose claim has no [[claim_part]]: {unsplit:?}"
    );
}

#[test]
fn the_readme_shows_each_claim_part_and_its_check() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let table = poolchaos::claims::table(&scenarios());
    let start = readme
        .find(BEGIN)
        .unwrap_or_else(|| panic!("README.md lacks the line {BEGIN:?}"))
        + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .unwrap_or_else(|| panic!("README.md lacks the line {END:?}"));
    if readme[start..end] == table {
        return;
    }
    if std::env::var("POOLCHAOS_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&readme_path, updated).unwrap();
        return;
    }
    panic!(
        "README.md's claim-part table is out of date with suites/scenarios; rerun with POOLCHAOS_BLESS=1 to \
         rewrite it. Expected:\n{table}"
    );
}
