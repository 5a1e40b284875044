//! poolchaos: the chaos harness. It starts paired pools in containers, injects faults it can prove took
//! effect, drives simulated users, and turns what happened into a verdict and failover-latency percentiles.
//!
//! The harness knows topologies and faults, not the internals of the reference pool: it talks to nodes
//! through their images, their SIP ports and their status endpoints, so it could be pointed at another
//! system's images.
//!
//! # Words (one per concept, used the same way in code, logs, files and tests)
//!
//! - **topology**: the sites, pools, links and users of one run, read from a TOML file.
//! - **site**: a data centre; one Docker network per site, joined by the WAN.
//! - **pool**: servers of one role reached by one name (a network alias shared by its servers).
//! - **node**: one server of a pool, one container.
//! - **subject**: the system under test: the reference pool, or one a subject file describes.
//! - **cluster**: a topology running in containers, with its run id on every container and network.
//! - **fault**: a change to the running topology that has an inverse (`kill`/`restart`, …).
//! - **schedule**: when which fault starts and ends; scripted or drawn from a seed.
//! - **workload**: what the simulated users do.
//! - **history**: every operation and fault as it happened, with monotonic timestamps.
//! - **checker**: reads a history and returns a verdict.
//! - **verdict**: `valid`, `invalid` (with violations) or `unknown` (with a reason).
//! - **report**: the directory a run leaves: summary, latency histograms, HTML and Markdown.
//!
//! # Module map
//!
//! - [`check`]: judges a recorded report directory again with today's checkers and bounds.
//! - [`images`]: builds the static binaries and the `FROM scratch` images, tagged by content.
//! - [`exit`]: the process exit codes, in one place.
//! - [`fault`]: the fault catalogue: each fault a value with a target, and its inverse.
//! - [`partition`]: partition shapes (groups, one-way, bridge, majorities ring, halves) as directed cuts.
//! - [`history`]: the history of a run (operations, probes, faults) as JSON lines, its recorder and reader.
//! - [`checker`]: checkers that judge a history: registration, IM, durability, split brain, quorum, resiliency,
//!   calls, Back End claims, binding convergence.
//! - [`claims`]: a scenario's claim in parts, each naming the checker or bound that judges it, and the README's table
//!   of them.
//! - [`latency`]: failover latency metrics derived from a history, as HdrHistograms per fault and overall.
//! - [`report`]: the directory a run leaves (summary, .hgrm, HTML, Markdown), bounds, and comparing two runs.
//! - [`probe`]: each node's view of its role over time, read from its status and recorded on change.
//! - [`runner`]: runs a scenario end to end and writes its report.
//! - [`runtime`]: the Docker runtime: a topology started as a [`runtime::Cluster`], labels and sweep.
//! - [`workload`]: simulated users: SIP clients of their pools, many per process.
//! - [`scenario`]: scenario files: topology + workload + schedule + checkers + bounds.
//! - [`schedule`]: scripted and seeded fault schedules.
//! - [`subject`]: the systems judged, as data: how each role starts, what it offers over SIP, its probes.
//! - [`testing`]: a folder of scenarios as tests in a crate's own `cargo test`, and scenarios built in Rust.
//! - [`role`]: the roles a pool's servers play, shared by topology and subject files.
//! - [`file_error`]: where a mistake in a file is (file, line, field).
//! - [`topology`]: topology files (sites, pools, users, proxied links), validated with file/line/field errors.

pub mod check;
pub mod checker;
pub mod claims;
pub mod exit;
pub mod fault;
pub mod file_error;
pub mod history;
pub mod images;
pub mod latency;
pub mod partition;
pub mod probe;
pub mod report;
pub mod role;
pub mod runner;
pub mod runtime;
pub mod scenario;
pub mod schedule;
pub mod subject;
pub mod testing;
pub mod topology;
pub mod workload;
