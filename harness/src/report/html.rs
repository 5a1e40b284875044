//! `report.html`: one self-contained page — inline CSS and SVG, no script, no network — with the verdict, a
//! percentile curve per metric (log x axis of 1/(1-p), as HdrHistogram plots draw it), a timeline of faults
//! against how many users were signed in, and every violation.

use std::fmt::Write;

use crate::latency::Metric;

use super::hgrm::curve_points;
use super::run::Report;
use super::summary::ms;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;background:#fff}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;color:#fff;font-weight:bold}\
.valid{background:#2e7d32}.invalid{background:#c62828}.unknown{background:#ef6c00}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1em}\
svg{background:#fafafa;border:1px solid #ddd}.axis{stroke:#888;stroke-width:1}.grid{stroke:#e4e4e4;stroke-width:1}\
.curve{fill:none;stroke:#1565c0;stroke-width:2}.availability{fill:none;stroke:#2e7d32;stroke-width:2}\
.fault{fill:#c62828;fill-opacity:.15}.verified{stroke:#c62828;stroke-width:1.5;stroke-dasharray:4 3}\
text{font-size:11px;fill:#444}";

/// Escapes text for HTML content and attributes.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper limit for an axis holding `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * magnitude)
}

fn number(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

const PERCENTILE_LABELS: [&str; 7] = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];

fn percentile_chart(out: &mut String, report: &Report, metric: Metric) {
    let (w, h, left, right, top, bottom) = (460.0, 240.0, 60.0, 15.0, 25.0, 40.0);
    let points = curve_points(&report.latencies.overall[&metric]);
    let _ = write!(
        out,
        r#"<svg class="chart percentile" data-metric="{name}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#,
        name = metric.name()
    );
    let _ = write!(
        out,
        r#"<text x="{left}" y="15" font-weight="bold">{} (ms)</text>"#,
        metric.name()
    );
    if points.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}">no samples</text></svg>"#,
            w / 2.0 - 30.0,
            h / 2.0
        );
        return;
    }
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let decades = (max_x.log10().ceil() as usize).clamp(2, PERCENTILE_LABELS.len() - 1);
    let max_y = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let x = |v: f64| left + v.log10() / decades as f64 * (w - left - right);
    let y = |v: f64| top + (1.0 - v / max_y) * (h - top - bottom);
    for (d, label) in PERCENTILE_LABELS.iter().enumerate().take(decades + 1) {
        let gx = x(10f64.powi(d as i32));
        let _ = write!(
            out,
            r#"<line class="grid" x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{:.1}"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            h - bottom,
            h - bottom + 15.0
        );
    }
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let gy = y(v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{left}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - right,
            left - 5.0,
            gy + 4.0,
            number(v)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{b:.1}"/><line class="axis" x1="{left}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}"/>"#,
        w - right,
        b = h - bottom
    );
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        (w + left) / 2.0,
        h - 5.0
    );
    let mut d = String::new();
    for (i, (px, py)) in points.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(*px),
            y(*py)
        );
    }
    let _ = write!(out, r#"<path class="curve" d="{d}"/></svg>"#);
}

fn timeline_chart(out: &mut String, report: &Report) {
    let (w, h, left, right, top, bottom) = (940.0, 260.0, 60.0, 20.0, 25.0, 40.0);
    let end_s = (report.end_us as f64 / 1e6).max(1.0);
    let max_x = nice_ceiling(end_s);
    let users = report.summary.counts.users.max(1) as f64;
    let max_y = nice_ceiling(users);
    let x = |s: f64| left + s / max_x * (w - left - right);
    let y = |v: f64| top + (1.0 - v / max_y) * (h - top - bottom);
    let _ = write!(
        out,
        r#"<svg class="chart timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        out,
        r#"<text x="{left}" y="15" font-weight="bold">users signed in, and faults</text>"#
    );
    for f in &report.summary.faults {
        let from = x(f.at_ms / 1000.0);
        let to = x(f.undone_ms.map_or(end_s, |u| u / 1000.0));
        let _ = write!(
            out,
            r#"<rect class="fault" x="{from:.1}" y="{top}" width="{:.1}" height="{:.1}"><title>{}</title></rect><text x="{:.1}" y="{:.1}">{}</text>"#,
            (to - from).max(1.0),
            h - top - bottom,
            esc(&format!("{} {}", f.kind, f.target)),
            from + 3.0,
            top + 12.0,
            esc(&format!("{} {}", f.kind, f.target))
        );
        if let Some(v) = f.verified_ms {
            let vx = x(v / 1000.0);
            let _ = write!(
                out,
                r#"<line class="verified" x1="{vx:.1}" y1="{top}" x2="{vx:.1}" y2="{:.1}"/>"#,
                h - bottom
            );
        }
    }
    for o in &report.summary.operators {
        let ox = x(o.done_ms.unwrap_or(o.at_ms) / 1000.0);
        let what = esc(&format!(
            "operator {} on {} ({})",
            o.command, o.node, o.outcome
        ));
        let _ = write!(
            out,
            r##"<line class="operator" stroke="#1565c0" stroke-width="1.5" x1="{ox:.1}" y1="{top}" x2="{ox:.1}" y2="{:.1}"><title>{what}</title></line><text x="{:.1}" y="{:.1}">{}</text>"##,
            h - bottom,
            ox + 3.0,
            top + 24.0,
            esc(&o.command)
        );
    }
    for i in 0..=5 {
        let s = max_x * f64::from(i) / 5.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
            x(s),
            h - bottom + 15.0,
            number(s)
        );
    }
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{left}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            w - right,
            left - 5.0,
            y(v) + 4.0,
            number(v),
            gy = y(v)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{b:.1}"/><line class="axis" x1="{left}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}"/>"#,
        w - right,
        b = h - bottom
    );
    let mut d = format!("M{:.1},{:.1}", x(0.0), y(0.0));
    let mut last = 0usize;
    for &(at_us, count) in &report.registered {
        let _ = write!(d, " H{:.1} V{:.1}", x(at_us as f64 / 1e6), y(count as f64));
        last = count;
    }
    let _ = write!(d, " H{:.1}", x(end_s));
    let _ = write!(
        out,
        r#"<path class="availability" d="{d}"><title>{last} signed in at the end</title></path></svg>"#
    );
}

/// Renders the page.
pub fn render(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>poolchaos: {scenario}</title><style>{CSS}</style></head><body>\n",
        scenario = esc(&s.scenario)
    );
    let _ = writeln!(
        out,
        "<h1>poolchaos: {} (seed {})</h1>",
        esc(&s.scenario),
        s.seed
    );
    let _ = writeln!(
        out,
        r#"<p><span class="verdict {v}">{v}</span></p>"#,
        v = esc(&s.verdict)
    );
    if let Some(reason) = &s.reason {
        let _ = writeln!(out, "<p>Undecided: {}</p>", esc(reason));
    }
    let _ = writeln!(out, "<h2>Timeline</h2>");
    timeline_chart(&mut out, report);
    let _ = writeln!(out, "\n<h2>Failover latency</h2>\n<table><tr><th>metric</th><th>count</th><th title=\"began and never ended within the run\">never</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for (name, m) in &s.metrics {
        let _ = writeln!(
            out,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.count,
            m.never,
            ms(m.p50),
            ms(m.p90),
            ms(m.p99),
            ms(m.p999),
            ms(m.max)
        );
    }
    let _ = writeln!(out, "</table>\n<div class=\"charts\">");
    for metric in Metric::ALL {
        percentile_chart(&mut out, report, metric);
        out.push('\n');
    }
    let _ = writeln!(out, "</div>\n<h2>Violations</h2>");
    if s.violations.is_empty() {
        let _ = writeln!(out, "<p>None.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><tr><th>checker</th><th>user</th><th>at (ms)</th><th>what</th></tr>"
        );
        for v in &s.violations {
            let _ = writeln!(
                out,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td style="text-align:left">{}</td></tr>"#,
                esc(&v.checker),
                esc(v.user.as_deref().unwrap_or("—")),
                v.at_ms.map_or("—".to_owned(), |t| format!("{t:.1}")),
                esc(&v.what)
            );
        }
        let _ = writeln!(out, "</table>");
    }
    let c = &s.counts;
    let _ = writeln!(
        out,
        "<h2>Counts</h2><p>users {} · IMs acknowledged {}, delivered {}, lost {} · writes acknowledged {}, lost {} (observed RPO {} ms)</p>",
        c.users, c.ims_acked, c.ims_delivered, c.ims_lost, c.writes_acked, c.writes_lost, c.rpo_ms
    );
    out.push_str("</body></html>\n");
    out
}
