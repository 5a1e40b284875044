//! Every scenario in `suites/scenarios/` as its own test, for `cargo test` and `cargo nextest run`
//! (libtest-mimic: filters — several at once, as libtest takes them —, `--list`, `--exact`, `--ignored` work as
//! usual), through [`poolchaos::testing::Suite`] as any user's crate runs its own folder. A test passes when
//! the run's verdict is `valid`: every checker satisfied and every declared bound met. Scenarios marked
//! `nightly_only` are ignored tests; `POOLCHAOS_NIGHTLY=1` also judges each scenario's `nightly_bounds`.
//!
//! `POOLCHAOS_SEED=N` replays a run; reports go to `target/suites/<scenario>-<seed>/`.

fn main() {
    poolchaos::testing::Suite::folder(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))
        .reports("suites")
        .replay_with("cargo test -p suites --test scenarios")
        .run()
}
