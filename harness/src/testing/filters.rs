//! Test filters as libtest takes them, for a libtest-mimic binary.

/// The test filters of a test binary's command line, split from the rest: libtest takes several
/// (`cargo test -- fe-kill site-loss` runs both), libtest-mimic only one, so the scenarios binary applies them
/// itself and hands libtest-mimic the rest. Returns `(other arguments, filters)`; the program name stays first.
pub fn split_filters(args: impl IntoIterator<Item = String>) -> (Vec<String>, Vec<String>) {
    // libtest's options that take a value as the next argument.
    const TAKE_A_VALUE: [&str; 6] = [
        "--test-threads",
        "--logfile",
        "--skip",
        "--color",
        "--format",
        "-Z",
    ];
    let mut args = args.into_iter();
    let mut rest: Vec<String> = args.next().into_iter().collect();
    let mut filters = Vec::new();
    while let Some(arg) = args.next() {
        if TAKE_A_VALUE.contains(&arg.as_str()) {
            rest.push(arg);
            rest.extend(args.next());
        } else if arg.starts_with('-') {
            rest.push(arg);
        } else {
            filters.push(arg);
        }
    }
    (rest, filters)
}

/// Whether a test named `name` runs under `filters`: all run without filters; else any filter matches, as a
/// substring of the name or, with `exact`, the whole name.
pub fn selected(name: &str, filters: &[String], exact: bool) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn several_filters_are_split_from_the_options() {
        let (rest, filters) = split_filters(strings(&[
            "scenarios",
            "fe-kill",
            "--test-threads",
            "2",
            "--exact",
            "site-loss",
            "--skip",
            "mix",
            "--color=never",
        ]));
        assert_eq!(
            rest,
            strings(&[
                "scenarios",
                "--test-threads",
                "2",
                "--exact",
                "--skip",
                "mix",
                "--color=never"
            ])
        );
        assert_eq!(filters, strings(&["fe-kill", "site-loss"]));
    }

    #[test]
    fn a_test_runs_when_any_filter_matches() {
        let filters = strings(&["fe-kill", "site-loss"]);
        assert!(selected("fe-kill", &filters, true));
        assert!(selected("site-loss-operator", &filters, false));
        assert!(!selected("site-loss-operator", &filters, true));
        assert!(!selected("be-no-witness", &filters, false));
        assert!(selected("be-no-witness", &[], true));
    }
}
