//! The files of a report directory, each rendered from a [`Report`] — `summary.json`, `latency/<metric>.hgrm`,
//! `report.html`, `report.md` — and writing them.

use std::path::{Path, PathBuf};

use crate::latency::Metric;

use super::run::{Report, ReportError};
use super::{hgrm, html, markdown};

impl Report {
    /// `summary.json`, pretty-printed.
    pub fn summary_json(&self) -> String {
        serde_json::to_string_pretty(&self.summary).expect("a summary always serializes") + "\n"
    }

    /// The `.hgrm` text of one metric's overall histogram, in ms.
    pub fn hgrm(&self, metric: Metric) -> String {
        hgrm::percentile_distribution(&self.latencies.overall[&metric], 1000.0)
    }

    pub fn markdown(&self) -> String {
        markdown::render(self)
    }

    pub fn html(&self) -> String {
        html::render(self)
    }

    /// Writes `summary.json`, `latency/<metric>.hgrm` (every metric), `report.html` and `report.md` into `dir`
    /// (created if missing). The history files are the recorder's to write.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|source| ReportError::Write { path, source })
        };
        let latency_dir = dir.join("latency");
        std::fs::create_dir_all(&latency_dir).map_err(|source| ReportError::Write {
            path: latency_dir.clone(),
            source,
        })?;
        write(dir.join("summary.json"), self.summary_json())?;
        for metric in Metric::ALL {
            write(
                latency_dir.join(format!("{}.hgrm", metric.name())),
                self.hgrm(metric),
            )?;
        }
        write(dir.join("report.html"), self.html())?;
        write(dir.join("report.md"), self.markdown())
    }
}
