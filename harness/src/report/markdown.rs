//! `report.md`: the verdict, the metrics table, the faults and the violations, for a CI comment.

use std::fmt::Write;

use super::run::Report;
use super::summary::ms;

pub fn render(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(out, "# poolchaos: {} (seed {})\n", s.scenario, s.seed);
    let _ = writeln!(out, "**Verdict: {}**", s.verdict.to_uppercase());
    if let Some(reason) = &s.reason {
        let _ = writeln!(out, "\nUndecided: {reason}");
    }
    let _ = writeln!(out, "\n## Failover latency (ms)\n");
    let _ = writeln!(
        out,
        "| metric | count | never | p50 | p90 | p99 | p99.9 | max |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, m) in &s.metrics {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            m.count,
            m.never,
            ms(m.p50),
            ms(m.p90),
            ms(m.p99),
            ms(m.p999),
            ms(m.max)
        );
    }
    let c = &s.counts;
    let _ = writeln!(out, "\n## Counts\n");
    let _ = writeln!(
        out,
        "users {} · IMs acknowledged {}, delivered {}, lost {} · writes acknowledged {}, lost {} (observed RPO {} ms)",
        c.users, c.ims_acked, c.ims_delivered, c.ims_lost, c.writes_acked, c.writes_lost, c.rpo_ms
    );
    let _ = writeln!(out, "\n## Faults\n");
    if s.faults.is_empty() {
        let _ = writeln!(out, "None.");
    } else {
        let _ = writeln!(
            out,
            "| kind | target | at (ms) | verified (ms) | undone (ms) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|");
        for f in &s.faults {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {} |",
                f.kind,
                f.target,
                f.at_ms,
                f.verified_ms
                    .map_or("never".to_owned(), |v| format!("{v:.1}")),
                f.undone_ms.map_or("—".to_owned(), |v| format!("{v:.1}"))
            );
        }
    }
    if !s.operators.is_empty() {
        let _ = writeln!(out, "\n## Operator commands\n");
        let _ = writeln!(out, "| command | node | at (ms) | done (ms) | outcome |");
        let _ = writeln!(out, "|---|---|---:|---:|---|");
        for o in &s.operators {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {} |",
                o.command,
                o.node,
                o.at_ms,
                o.done_ms.map_or("never".to_owned(), |v| format!("{v:.1}")),
                o.outcome
            );
        }
    }
    let _ = writeln!(out, "\n## Violations\n");
    if s.violations.is_empty() {
        let _ = writeln!(out, "None.");
    } else {
        for v in &s.violations {
            let at = v.at_ms.map_or(String::new(), |t| format!(" at {t:.1} ms"));
            let user = v.user.as_deref().map_or(String::new(), |u| format!(" {u}"));
            let _ = writeln!(out, "- **{}**{user}{at}: {}", v.checker, v.what);
        }
    }
    out
}
