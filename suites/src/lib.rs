//! The suites: every behaviour of the seed as a scenario file in `scenarios/` (topology + workload +
//! fault schedule + checkers + bounds), run by `tests/scenarios.rs` as one test each through
//! [`poolchaos::testing::Suite`], exactly as a user's own crate runs its folder of scenarios. The topologies
//! they use are in `topologies/`.
