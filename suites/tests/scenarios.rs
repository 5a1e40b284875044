//! Every scenario in `suites/` as its own test, for `cargo test` and `cargo nextest run` (libtest-mimic:
//! filters — several at once, as libtest takes them —, `--list`, `--exact`, `--ignored` work as usual). A test passes when the run's verdict is
//! `valid`: every checker satisfied and every declared bound met. Scenarios marked `nightly_only` are
//! ignored tests; `POOLCHAOS_NIGHTLY=1` also judges each scenario's `nightly_bounds` (the goal figures).
//!
//! `POOLCHAOS_SEED=N` replays a run; reports go to `target/suites/<scenario>-<seed>/`.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use poolchaos::runner::{self, RunOptions};
use poolchaos::scenario::{self, Scenario};

/// The seed of the default runs: fixed, so `cargo test` is repeatable; override with POOLCHAOS_SEED.
const DEFAULT_SEED: u64 = 20131;

fn main() {
    // Several filters, as libtest takes them (`cargo test -- fe-kill site-loss`): applied here.
    let (rest, filters) = suites::split_filters(std::env::args());
    let mut args = Arguments::from_iter(rest);
    // Each scenario starts a whole topology and measures failover times: on a 2-core machine two at once
    // would measure each other. One at a time unless asked otherwise (nextest runs one per process anyway).
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trials = Vec::new();
    for path in scenario::list(&dir.join("scenarios")).expect("suites/scenarios is readable") {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if !suites::selected(&name, &filters, args.exact) {
            continue;
        }
        match Scenario::load(&path) {
            Ok(s) => {
                let ignored = s.file.nightly_only;
                trials.push(Trial::test(name, move || run(&s)).with_ignored_flag(ignored));
            }
            // A broken scenario file is a failing test that says where.
            Err(e) => trials.push(Trial::test(name, move || Err(Failed::from(e.to_string())))),
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn run(scenario: &Scenario) -> Result<(), Failed> {
    let seed = std::env::var("POOLCHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let nightly = std::env::var("POOLCHAOS_NIGHTLY").is_ok_and(|v| v == "1");
    let out = target_dir()
        .join("suites")
        .join(format!("{}-{seed}", scenario.name()));
    let opts = RunOptions {
        seed,
        out,
        nightly,
        defect: None,
    };
    eprintln!("{}: {}", scenario.name(), scenario.file.claim);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("start a runtime: {e}")))?;
    let replay = format!(
        "POOLCHAOS_SEED={seed} cargo test -p suites --test scenarios -- --exact {}",
        scenario.name()
    );
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
    if outcome.exit_code() == poolchaos::exit::VALID {
        return Ok(());
    }
    let mut message = format!("verdict {}", outcome.verdict.name());
    for v in outcome.verdict.violations().iter().take(15) {
        message.push_str(&format!("\n  {v}"));
    }
    if let poolchaos::checker::Verdict::Unknown(reason) = &outcome.verdict {
        message.push_str(&format!("\n  unknown: {reason}"));
    }
    message.push_str(&format!(
        "\nreport: {}\nreplay: {replay}",
        outcome.out.display()
    ));
    Err(Failed::from(message))
}

/// The last resort against a hang the run's own (tokio) watchdog cannot end, such as a runtime whose threads
/// are all blocked: a thread that, past the run's budget and a minute more, removes this process's containers
/// and networks and exits with a failure that names the scenario and its replay, so a CI run ends with a reason
/// instead of at its own time limit. Dropping it (the run returned) stops it.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    fn start(scenario: &Scenario, seed: u64, replay: &str) -> Result<Watchdog, Failed> {
        let limit = runner::run_budget(scenario, seed).map_err(|e| Failed::from(e.to_string()))?
            + std::time::Duration::from_secs(60);
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let name = scenario.name().to_string();
        let replay = replay.to_string();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                eprintln!(
                    "{name}: hung: still running after {} s, past its watchdog; removing this process's \
                     containers and exiting\nreplay: {replay}",
                    limit.as_secs()
                );
                poolchaos::runtime::remove_own_blocking();
                std::process::exit(101);
            }
        });
        Ok(Watchdog(Some(done)))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
