//! The report: the directory a run leaves, and the comparison of two runs.
//!
//! - [`run`]: `Report` — verdict, latencies, counts and bounds of one history.
//! - [`directory`]: the files a `Report` is written as, and writing them into its directory.
//! - [`summary`]: `Summary`, the `summary.json` every other output is rendered from.
//! - [`bounds`]: bounds a scenario declares (`reregister.p99 <= "2s"`, `ims_lost == 0`), parsed and judged.
//! - [`hgrm`]: HdrHistogram's percentile-distribution text, as its plotters read it.
//! - [`markdown`]: `report.md` for CI comments.
//! - [`html`]: `report.html`, one self-contained page with inline SVG charts.
//! - [`compare`](mod@compare): two runs' metrics side by side, failing on a p99 regression.
//!
//! Directory layout: `summary.json`, `latency/<metric>.hgrm`, `report.html`, `report.md`, beside the run's
//! `history.jsonl` and `faults.jsonl`.

pub mod bounds;
pub mod compare;
pub mod directory;
pub mod hgrm;
pub mod html;
pub mod markdown;
pub mod run;
pub mod summary;

pub use bounds::{Bound, BoundError};
pub use compare::{compare, CompareError, Comparison};
pub use run::{Report, ReportError};
pub use summary::Summary;
