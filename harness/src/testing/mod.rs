//! poolchaos in a crate's own tests: every scenario of a folder as one test (libtest-mimic underneath, so
//! `cargo test` and `cargo nextest run` list, filter, `--exact` and `--ignored` them as usual), plus scenarios
//! written in Rust with [`ScenarioBuilder`].
//!
//! A crate that tests its own SIP service adds `poolchaos` as a dev-dependency, declares the test binary with
//! the standard harness off, and writes a `main` of one statement:
//!
//! ```toml
//! [[test]]
//! name = "chaos"
//! harness = false
//! ```
//!
//! ```text
//! // tests/chaos.rs
//! fn main() {
//!     poolchaos::testing::Suite::folder(concat!(env!("CARGO_MANIFEST_DIR"), "/chaos")).run()
//! }
//! ```
//!
//! A test passes when its run's verdict is `valid`: every checker satisfied and every bound met; `invalid` and
//! `unknown` fail it with the violations (or the reason), the report's path and the command that replays the
//! run. Runs take the seed from `POOLCHAOS_SEED` (else the suite's default, so `cargo test` is repeatable);
//! `POOLCHAOS_NIGHTLY=1` also judges each scenario's nightly bounds. Scenarios marked `nightly_only` are ignored
//! tests. Each report goes to `<target>/<reports>/<scenario>-<seed>/`.

mod builder;
mod filters;
mod watchdog;

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};

pub use builder::{CheckerSettings, ScenarioBuilder};
pub use filters::{selected, split_filters};

use crate::checker::Verdict;
use crate::runner::{self, RunOptions};
use crate::scenario::{self, Scenario};
use crate::topology::FileError;
use watchdog::Watchdog;

/// The seed of a suite's runs when `POOLCHAOS_SEED` is not set.
pub const DEFAULT_SEED: u64 = 20131;

/// Scenarios to run as tests: the files of some folders and scenarios built in Rust.
#[derive(Debug)]
pub struct Suite {
    folders: Vec<PathBuf>,
    built: Vec<(String, Result<Scenario, FileError>)>,
    seed: u64,
    reports: PathBuf,
    replay: Option<String>,
}

impl Default for Suite {
    fn default() -> Self {
        Suite {
            folders: Vec::new(),
            built: Vec::new(),
            seed: DEFAULT_SEED,
            reports: PathBuf::from("chaos"),
            replay: None,
        }
    }
}

impl Suite {
    /// An empty suite: add folders and scenarios to it.
    pub fn new() -> Suite {
        Suite::default()
    }

    /// A suite of every scenario file (`*.toml`) in `dir`.
    pub fn folder(dir: impl Into<PathBuf>) -> Suite {
        Suite::new().with_folder(dir)
    }

    /// Adds every scenario file (`*.toml`) of `dir`, each a test named after its file.
    pub fn with_folder(mut self, dir: impl Into<PathBuf>) -> Suite {
        self.folders.push(dir.into());
        self
    }

    /// Adds a scenario written in Rust ([`ScenarioBuilder::build`]); a scenario that did not build is a
    /// failing test that says why.
    pub fn with_scenario(mut self, name: &str, scenario: Result<Scenario, FileError>) -> Suite {
        self.built.push((name.to_owned(), scenario));
        self
    }

    /// The seed when `POOLCHAOS_SEED` is not set (default [`DEFAULT_SEED`]).
    pub fn seed(mut self, seed: u64) -> Suite {
        self.seed = seed;
        self
    }

    /// Where reports go, relative to the cargo target directory unless absolute (default `chaos`).
    pub fn reports(mut self, dir: impl Into<PathBuf>) -> Suite {
        self.reports = dir.into();
        self
    }

    /// The command a failure prints to replay one test, without the seed and the test's name (default
    /// `cargo test --test <this binary>`).
    pub fn replay_with(mut self, command: &str) -> Suite {
        self.replay = Some(command.to_owned());
        self
    }

    /// One trial per scenario, selected by `filters` (see [`selected`]); a scenario file that does not load is
    /// a failing trial that names the file, line and field.
    pub fn trials(&self, filters: &[String], exact: bool) -> Vec<Trial> {
        let mut loaded: Vec<(String, Result<Scenario, FileError>)> = Vec::new();
        for dir in &self.folders {
            match scenario::list(dir) {
                Ok(paths) => {
                    for path in paths {
                        let name = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().to_string())
                            .unwrap_or_default();
                        loaded.push((name, Scenario::load(&path)));
                    }
                }
                Err(e) => loaded.push((
                    dir.display().to_string(),
                    Err(FileError {
                        file: dir.clone(),
                        line: 0,
                        field: "(folder)".into(),
                        expected: format!("a readable folder of scenario files ({e})"),
                    }),
                )),
            }
        }
        loaded.extend(self.built.iter().cloned());
        let replay = self.replay.clone().unwrap_or_else(default_replay);
        let reports = if self.reports.is_absolute() {
            self.reports.clone()
        } else {
            target_dir().join(&self.reports)
        };
        let mut trials = Vec::new();
        for (name, scenario) in loaded {
            if !selected(&name, filters, exact) {
                continue;
            }
            let trial = match scenario {
                Ok(s) => {
                    let ignored = s.file.nightly_only;
                    let run = Run {
                        default_seed: self.seed,
                        reports: reports.clone(),
                        replay: replay.clone(),
                    };
                    Trial::test(name, move || run.run(&s)).with_ignored_flag(ignored)
                }
                Err(e) => Trial::test(name, move || Err(Failed::from(e.to_string()))),
            };
            trials.push(trial);
        }
        trials
    }

    /// Runs the suite as the test binary's `main`: reads the command line as libtest does, runs the selected
    /// scenarios one at a time (unless `--test-threads` says otherwise: two topologies at once measure each
    /// other's failover times) and exits with libtest's status.
    pub fn run(self) -> ! {
        let (rest, filters) = split_filters(std::env::args());
        let mut args = Arguments::from_iter(rest);
        if args.test_threads.is_none() {
            args.test_threads = Some(1);
        }
        let trials = self.trials(&filters, args.exact);
        libtest_mimic::run(&args, trials).exit()
    }
}

/// How one scenario test runs.
#[derive(Clone)]
struct Run {
    default_seed: u64,
    reports: PathBuf,
    replay: String,
}

impl Run {
    fn run(&self, scenario: &Scenario) -> Result<(), Failed> {
        let seed = std::env::var("POOLCHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.default_seed);
        let nightly = std::env::var("POOLCHAOS_NIGHTLY").is_ok_and(|v| v == "1");
        let opts = RunOptions {
            seed,
            out: self.reports.join(format!("{}-{seed}", scenario.name())),
            nightly,
            defect: None,
        };
        eprintln!("{}: {}", scenario.name(), scenario.file.claim);
        let replay = format!(
            "POOLCHAOS_SEED={seed} {} -- --exact {}",
            self.replay,
            scenario.name()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failed::from(format!("start a runtime: {e}")))?;
        let started = std::time::Instant::now();
        let _watchdog = Watchdog::start(scenario, seed, &replay)?;
        let outcome = rt
            .block_on(runner::run(scenario, &opts))
            .map_err(|e| Failed::from(format!("the harness failed: {e}\nreplay: {replay}")))?;
        let metrics: Vec<String> = outcome
            .report
            .summary
            .metrics
            .iter()
            .filter(|(_, m)| m.count > 0)
            .map(|(name, m)| {
                format!(
                    "{name} n={} p50={:.0}ms p99={:.0}ms",
                    m.count,
                    m.p50.unwrap_or_default(),
                    m.p99.unwrap_or_default()
                )
            })
            .collect();
        eprintln!(
            "{}: {} in {:.0} s ({})",
            scenario.name(),
            outcome.verdict.name(),
            started.elapsed().as_secs_f64(),
            metrics.join(", ")
        );
        eprintln!(
            "{}: report {}",
            scenario.name(),
            outcome.out.join("report.html").display()
        );
        if let Some(known) = &scenario.file.known_defect {
            let caught = outcome
                .verdict
                .violations()
                .iter()
                .any(|v| v.checker == known.checker);
            if caught {
                eprintln!(
                    "{}: the known defect is still there ({}), caught by {}",
                    scenario.name(),
                    known.finding,
                    known.checker
                );
                return Ok(());
            }
            return Err(Failed::from(format!(
                "the known defect ({}) was not caught by {}: verdict {}. If the subject no longer shows it, \
                 remove `known_defect` from the scenario and close the finding.\nreport: {}\nreplay: {replay}",
                known.finding,
                known.checker,
                outcome.verdict.name(),
                outcome.out.display()
            )));
        }
        if outcome.exit_code() == crate::exit::VALID {
            return Ok(());
        }
        let mut message = format!("verdict {}", outcome.verdict.name());
        for v in outcome.verdict.violations().iter().take(15) {
            message.push_str(&format!("\n  {v}"));
        }
        if let Verdict::Unknown(reason) = &outcome.verdict {
            message.push_str(&format!("\n  unknown: {reason}"));
        }
        message.push_str(&format!(
            "\nreport: {}\nreplay: {replay}",
            outcome.out.display()
        ));
        Err(Failed::from(message))
    }
}

/// The cargo target directory of the running test binary: `CARGO_TARGET_DIR` if set, else found from the
/// binary's own path (`<target>/<profile>/deps/<test>-<hash>`), else `target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| target_of(&exe))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn target_of(exe: &Path) -> Option<PathBuf> {
    let deps = exe.parent()?;
    (deps.file_name()? == "deps").then_some(())?;
    Some(deps.parent()?.parent()?.to_path_buf())
}

/// `cargo test [-p <package>] --test <binary>`, from the running test binary.
fn default_replay() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().to_string()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "chaos".into());
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) => format!("cargo test -p {package} --test {binary}"),
        Err(_) => format!("cargo test --test {binary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_directory_is_found_from_a_test_binary_path() {
        assert_eq!(
            target_of(Path::new("/w/target/debug/deps/chaos-0123abcd")),
            Some(PathBuf::from("/w/target"))
        );
        assert_eq!(target_of(Path::new("/usr/bin/chaos")), None);
    }

    #[test]
    fn a_folder_gives_one_trial_per_file_and_a_broken_file_a_failing_trial() {
        let dir = std::env::temp_dir().join(format!("poolchaos-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("broken.toml"), "name = \"broken\"\nclaim = 3\n").unwrap();
        std::fs::write(dir.join("other.toml"), "name = ").unwrap();
        let suite = Suite::folder(&dir);
        let all = suite.trials(&[], false);
        let names: Vec<&str> = all.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["broken", "other"]);
        let only = suite.trials(&["other".to_owned()], true);
        assert_eq!(only.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
