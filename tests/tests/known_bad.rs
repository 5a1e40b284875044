//! The checkers proven end to end against known-bad pools: each test runs the scenario that should catch one
//! planted defect (`poolnode`'s `defects` feature, its own image `poolchaos/poolnode-defects`, the defect named by
//! `POOLNODE_DEFECT`; see `nodes/src/defects.rs`) and expects `invalid` with a violation from the checker that
//! exists to catch it. The same scenarios on the sound image are valid: `suites/tests/scenarios.rs` runs them.
//!
//! Each test prints how many seconds into the run the checker caught the defect (its first violation's time);
//! the README's known-bad table records them. `POOLCHAOS_SEED=N` replays a run; reports go to
//! `target/known-bad/<defect>-<seed>/`. The runs take one at a time (a shared lock; nextest runs them in the
//! `containers` group).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use poolchaos::checker::Verdict;
use poolchaos::runner::{self, RunOptions};
use poolchaos::scenario::Scenario;

/// The seed of the default runs: the scenarios' own default, so a known-bad run differs from the sound one by
/// its image only.
const DEFAULT_SEED: u64 = 20131;

/// Container runs measure timings: never two at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Runs `scenario` against the pool with `defect` planted and asserts that `checker` caught it; returns the
/// seconds into the run of its first violation.
fn caught(defect: &str, scenario: &str, checker: &str) -> f64 {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("POOLCHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let path = workspace()
        .join("suites/scenarios")
        .join(format!("{scenario}.toml"));
    let loaded = Scenario::load(&path).expect("the scenario file loads");
    let out = target_dir()
        .join("known-bad")
        .join(format!("{defect}-{seed}"));
    let replay = format!(
        "POOLCHAOS_SEED={seed} cargo test -p poolchaos-tests --test known_bad -- --exact {}",
        defect.replace('-', "_")
    );
    eprintln!(
        "known-bad: seed={seed} defect {defect}, scenario {scenario}, expected checker {checker}"
    );
    let opts = RunOptions {
        seed,
        out: out.clone(),
        nightly: false,
        defect: Some(defect.to_owned()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime starts");
    let outcome = rt
        .block_on(runner::run(&loaded, &opts))
        .unwrap_or_else(|e| panic!("the harness failed: {e}\nreplay: {replay}"));
    let listed: Vec<String> = outcome
        .verdict
        .violations()
        .iter()
        .take(15)
        .map(|v| format!("  {v}"))
        .collect();
    let Verdict::Invalid(violations) = &outcome.verdict else {
        panic!(
            "defect {defect} not caught: {scenario} was {} ({:?}), expected invalid by {checker}\nreport: {}\nreplay: {replay}",
            outcome.verdict.name(),
            outcome.verdict,
            out.display()
        );
    };
    let first = violations
        .iter()
        .filter(|v| v.checker == checker)
        .filter_map(|v| v.at_us)
        .min()
        .unwrap_or_else(|| {
            panic!(
                "defect {defect}: {scenario} is invalid but no timed violation comes from {checker}:\n{}\nreport: {}\nreplay: {replay}",
                listed.join("\n"),
                out.display()
            )
        });
    let seconds = first as f64 / 1e6;
    eprintln!(
        "known-bad: {defect} caught by {checker} in {scenario} at {seconds:.1} s into the run ({} violations):\n{}",
        violations.len(),
        listed.join("\n")
    );
    seconds
}

/// A routing group's primary that acknowledges a write before its secondaries have it loses the write with itself.
#[test]
fn ack_before_replicate() {
    caught("ack-before-replicate", "fe-kill", "durability");
}

/// The backup service that skips its last pass before the failback: what users changed on the backup pool is
/// lost when they go home.
#[test]
fn backup_last_pass_dropped() {
    caught("backup-last-pass-dropped", "site-loss", "durability");
}

/// A Front End that signs its own (healthy) users out when a peer dies.
#[test]
fn sign_out_on_peer_death() {
    caught("sign-out-on-peer-death", "fe-kill", "registration");
}

/// A home pool back from a site loss that does not heed the fence serves its users beside its pair.
#[test]
fn failback_without_fence() {
    caught("failback-without-fence", "site-loss", "split_brain");
}

/// A pool that counts one Front End of three as a quorum serves below the quorum table.
#[test]
fn serves_below_quorum() {
    caught("serves-below-quorum", "fe-quorum", "quorum");
}

/// One relayed IM in 50 acknowledged and dropped.
#[test]
fn im_dropped_one_in_50() {
    caught("im-dropped-one-in-50", "fe-kill", "im");
}

/// A call whose Mediation leg is lost ends without a BYE to the caller.
#[test]
fn no_bye_on_lost_leg() {
    caught("no-bye-on-lost-leg", "mediation-kill", "calls");
}

/// A principal cut from its mirror and its witness that keeps serving beside the promoted mirror.
#[test]
fn principal_serves_without_quorum() {
    caught(
        "principal-serves-without-quorum",
        "be-principal-isolated",
        "split_brain",
    );
}
