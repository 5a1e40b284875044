//! Runs a scenario end to end: draw the schedule from the seed (and log it before anything else), start the
//! topology, start the probes and the users, apply each fault and prove it, undo it and prove that, let the
//! quiet period pass, have every user read back its data, judge the history, write the report, take the
//! topology down. The verdict decides the exit code; anything other than valid prints the replay command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::checker::Verdict;
use crate::history::{Recorder, RunInfo};
use crate::report::Report;
use crate::runtime::{Cluster, Injector, RuntimeError};
use crate::scenario::Scenario;
use crate::schedule::{self, ScheduleSpec};
use crate::workload::{self, Workload};
use crate::{exit, probe};

/// How a run is asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    /// The report directory.
    pub out: PathBuf,
    /// Also judge the scenario's `nightly_bounds` (the goal figures).
    pub nightly: bool,
    /// Run the known-bad pool instead of the sound one: the image built with the `defects` feature, each
    /// node planting this defect (`POOLNODE_DEFECT`). For the harness's own tests (`tests/tests/known_bad.rs`):
    /// a checker proven to catch a planted bug.
    pub defect: Option<String>,
}

/// What a run ended with.
#[derive(Debug)]
pub struct RunOutcome {
    pub verdict: Verdict,
    pub report: Report,
    pub out: PathBuf,
}

impl RunOutcome {
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Valid => exit::VALID,
            Verdict::Invalid(_) => exit::INVALID,
            Verdict::Unknown(_) => exit::UNKNOWN,
        }
    }
}

/// Why a run could not produce a verdict: the harness failed (not the pool).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    History(#[from] crate::history::HistoryError),
    #[error("{0}")]
    Report(#[from] crate::report::ReportError),
    #[error("{0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
    #[error("create the report directory {0}: {1}")]
    Out(PathBuf, std::io::Error),
    /// The run outlived its time budget: a step of the harness (or Docker) hung. The containers are removed
    /// and the nodes' logs kept, so the stall can be read.
    #[error(
        "the run stalled: still at \"{stage}\" when its {budget_s} s budget ran out (a hung Docker call or \
         harness step); the nodes' logs are in {logs}"
    )]
    Stalled {
        stage: String,
        budget_s: u64,
        logs: PathBuf,
    },
}

/// Where a run is, for the watchdog's message when it stalls.
#[derive(Clone, Default)]
pub struct Stage(std::sync::Arc<std::sync::Mutex<String>>);

impl Stage {
    pub fn set(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::debug!(stage = %what, "run stage");
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The most a topology may take to start (images are built before, outside this budget).
const START_BUDGET: Duration = Duration::from_secs(240);
/// Slack on top of a run's scripted length: waiting for the pools to serve (60 s), the users' final reads
/// (30 s), Docker calls of the faults and operator commands. Generous: it exists to end a hung run with a
/// clear error instead of eating the CI's time, not to judge speed.
const DRIVE_SLACK: Duration = Duration::from_secs(300);
/// The most the teardown (and keeping the logs) may take.
const TEARDOWN_BUDGET: Duration = Duration::from_secs(180);

/// The most a whole run may take before its own watchdog ends it: start, drive, keeping the logs, teardown.
/// A caller that watches from outside the run's runtime (a thread) waits a little longer than this.
pub fn run_budget(scenario: &Scenario, seed: u64) -> Result<Duration, RunError> {
    let plan = scenario.file.schedule.plan(seed)?;
    Ok(START_BUDGET + drive_budget(&scenario.file.schedule, &plan) + TEARDOWN_BUDGET * 2)
}

/// The time budget of a run's drive: its scripted length plus a slack of five minutes.
pub fn drive_budget(spec: &ScheduleSpec, plan: &[schedule::Planned]) -> Duration {
    let faults = ScheduleSpec::end_ms(plan);
    let operators = spec.operators.iter().map(|o| o.at_ms).max().unwrap_or(0);
    Duration::from_millis(spec.warmup_ms + faults.max(operators) + spec.quiet_ms) + DRIVE_SLACK
}

/// The fault with a role-based target (`primary-of:fe1/rg-1`, `principal-of:be1`, `busiest-of:edge1`) resolved to a node now.
async fn resolve(
    cluster: &Cluster,
    topology: &crate::topology::Topology,
    fault: &crate::fault::Fault,
) -> Result<crate::fault::Fault, String> {
    use crate::fault::Fault;
    let tunnel = cluster.tunnel().await.map_err(|e| e.to_string())?;
    let one = |t: &String| {
        let t = t.clone();
        async move { crate::probe::resolve_target(tunnel, topology, &t).await }
    };
    Ok(match fault {
        Fault::Kill { target } => Fault::Kill {
            target: one(target).await?,
        },
        Fault::Stop { target, grace_s } => Fault::Stop {
            target: one(target).await?,
            grace_s: *grace_s,
        },
        Fault::Pause { target } => Fault::Pause {
            target: one(target).await?,
        },
        Fault::Isolate { target } => Fault::Isolate {
            target: one(target).await?,
        },
        Fault::DiskFull { target } => Fault::DiskFull {
            target: one(target).await?,
        },
        Fault::DiskReadOnly { target } => Fault::DiskReadOnly {
            target: one(target).await?,
        },
        Fault::Partition { groups } => Fault::Partition {
            groups: resolve_groups(groups, &one).await?,
        },
        Fault::OneWay { from, to } => Fault::OneWay {
            from: resolve_all(from, &one).await?,
            to: resolve_all(to, &one).await?,
        },
        Fault::Bridge { groups, bridge } => Fault::Bridge {
            groups: resolve_groups(groups, &one).await?,
            bridge: one(bridge).await?,
        },
        Fault::Ring { nodes } => Fault::Ring {
            nodes: resolve_all(nodes, &one).await?,
        },
        Fault::Halves { among, seed } => Fault::Halves {
            among: resolve_all(among, &one).await?,
            seed: *seed,
        },
        other => other.clone(),
    })
}

async fn resolve_all<F, Fut>(targets: &[String], one: &F) -> Result<Vec<String>, String>
where
    F: Fn(&String) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut out = Vec::new();
    for t in targets {
        out.push(one(t).await?);
    }
    Ok(out)
}

async fn resolve_groups<F, Fut>(groups: &[Vec<String>], one: &F) -> Result<Vec<Vec<String>>, String>
where
    F: Fn(&String) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut out = Vec::new();
    for g in groups {
        out.push(resolve_all(g, one).await?);
    }
    Ok(out)
}

/// The directed cuts of a partition shape over the topology's node names, for the history; empty for other
/// faults.
fn cuts_of(
    topology: &crate::topology::Topology,
    fault: &crate::fault::Fault,
) -> Result<Vec<[String; 2]>, String> {
    let Some(cuts) = fault.cuts(|t| {
        let nodes = topology.expand(t);
        if nodes.is_empty() {
            Err(format!("target `{t}` names no node of the topology"))
        } else {
            Ok(nodes)
        }
    }) else {
        return Ok(Vec::new());
    };
    Ok(cuts?.into_iter().map(|(a, b)| [a, b]).collect())
}

/// The command that replays a run exactly.
pub fn replay_command(scenario: &Path, seed: u64) -> String {
    format!(
        "cargo run --release -p poolchaos -- run {} --seed {seed}",
        scenario.display()
    )
}

/// Runs `scenario` and writes its report to `opts.out`.
pub async fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    let plan = scenario.file.schedule.plan(opts.seed)?;
    // The seed and every drawn value first, before the topology starts: a run that dies later still
    // leaves what replays it.
    eprintln!(
        "poolchaos: scenario {} {}",
        scenario.name(),
        schedule::describe(opts.seed, &plan)
    );
    let defect_arg = opts
        .defect
        .as_ref()
        .map(|d| format!(" --defect {d}"))
        .unwrap_or_default();
    eprintln!(
        "poolchaos: replay with `{}{defect_arg}`",
        replay_command(&scenario.path, opts.seed)
    );
    std::fs::create_dir_all(&opts.out).map_err(|e| RunError::Out(opts.out.clone(), e))?;

    if opts.defect.is_some() {
        // The known-bad image is one more static release build (minutes), outside the start budget.
        tokio::task::spawn_blocking(|| {
            crate::images::ensure_known_bad(&crate::images::workspace_root())
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("join the image build: {e}")))?
        .map_err(RuntimeError::from)?;
    }
    // Every step below is bounded: a hung Docker call or harness step ends the run with an error that says
    // where, instead of holding a CI run until its own timeout. Dropping a cluster removes its containers.
    let cluster = match tokio::time::timeout(
        START_BUDGET,
        Cluster::up_planted(
            scenario.topology.clone(),
            opts.seed,
            crate::runtime::cluster::Owner::Process,
            opts.defect.clone(),
        ),
    )
    .await
    {
        Ok(c) => c?,
        Err(_) => {
            return Err(RunError::Runtime(RuntimeError::Other(format!(
                "start the topology within {} s: a Docker call hung; check `docker info` and \
                     `docker ps`, then `cargo run -p poolchaos -- sweep`",
                START_BUDGET.as_secs()
            ))))
        }
    };
    let stage = Stage::default();
    let budget = drive_budget(&scenario.file.schedule, &plan);
    let result = tokio::time::timeout(budget, drive(scenario, opts, &cluster, &plan, &stage)).await;
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            let stalled = stage.get();
            warn!(stage = %stalled, budget_s = budget.as_secs(), "run stalled; keeping the nodes' logs");
            let _ = tokio::time::timeout(TEARDOWN_BUDGET, save_logs(&cluster, &opts.out)).await;
            Err(RunError::Stalled {
                stage: stalled,
                budget_s: budget.as_secs(),
                logs: opts.out.join("logs"),
            })
        }
    };
    match tokio::time::timeout(TEARDOWN_BUDGET, cluster.down()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!("teardown: {e}"),
        // The cluster was dropped with the timed-out future: its Drop removes what is left by label.
        Err(_) => warn!(
            "teardown took over {} s; what was left is removed by label",
            TEARDOWN_BUDGET.as_secs()
        ),
    }
    result
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The most lines of one node's log kept beside a report.
const LOG_LINES_KEPT: usize = 200_000;

/// Every node's log, for a run that was not valid: `logs/<node>.log` beside the report (what Jepsen users
/// expect to read next to a failed verdict). Best effort: a log that cannot be read or written is skipped.
async fn save_logs(cluster: &Cluster, out: &Path) {
    let dir = out.join("logs");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!("keep the nodes' logs: create {}: {e}", dir.display());
        return;
    }
    for name in cluster.nodes.keys() {
        let text = cluster.logs(name, LOG_LINES_KEPT).await;
        if let Err(e) = std::fs::write(dir.join(format!("{name}.log")), text) {
            warn!("keep the log of {name}: {e}");
        }
    }
}

async fn drive(
    scenario: &Scenario,
    opts: &RunOptions,
    cluster: &Cluster,
    plan: &[schedule::Planned],
    stage: &Stage,
) -> Result<RunOutcome, RunError> {
    stage.set("start the probes");
    let users = workload::users_of(&scenario.topology, opts.seed);
    let info = RunInfo {
        scenario: scenario.name().to_string(),
        seed: opts.seed,
        users: users.iter().map(|u| u.name.clone()).collect(),
        nodes: scenario
            .topology
            .nodes()
            .map(|n| crate::history::RunNode {
                name: n.name.clone(),
                pool: n.pool.clone(),
                site: n.site.clone(),
            })
            .collect(),
        users_started_by_us: None,
        register_expires_s: Some(scenario.settings().register_expires_s as u64),
    };
    let recorder = Recorder::to_dir(info, &opts.out)?;
    let tunnel = cluster.tunnel().await?;

    let (probe_stop, probe_rx) = watch::channel(false);
    let probed: Vec<String> = cluster
        .topology
        .nodes()
        .filter(|n| crate::runtime::roles::node(&cluster.topology.subject, n).has_admin)
        .map(|n| n.name.clone())
        .collect();
    // Aborted if the run is dropped (the watchdog), so no probe outlives its run.
    let mut probes = AbortOnDrop(tokio::spawn(probe::run(
        tunnel,
        scenario.topology.clone(),
        probed,
        recorder.clone(),
        probe_rx,
    )));
    stage.set("wait until every Front End pool serves");
    // Users start once every Front End pool serves: the scenario is about faults, not about racing the
    // pools' first start (which would also wake the backup registrars before anything failed).
    if let Err(e) =
        crate::probe::wait_until_serving(tunnel, &scenario.topology, Duration::from_secs(60)).await
    {
        return Err(RunError::Runtime(RuntimeError::Other(e)));
    }
    let nodes = crate::workload::node_addresses(tunnel, &scenario.topology).await;
    let spread = scenario.settings().start_spread;
    recorder.amend_run(|run, now_us| {
        run.users_started_by_us = Some(now_us + spread.as_micros() as u64);
    })?;
    let workload = Workload::start(users, tunnel, recorder.clone(), scenario.settings(), nodes);

    let spec: &ScheduleSpec = &scenario.file.schedule;
    stage.set("warm-up");
    tokio::time::sleep(Duration::from_millis(spec.warmup_ms)).await;
    let faults_start = Instant::now();
    let mut injector = Injector::new(cluster);
    let mut harness_error = None;
    // Each planned fault: apply at its time, undo at its time; operator commands at theirs. Faults of a
    // plan do not overlap in time unless the scenario scripts them so, and then they are applied in order.
    #[derive(Clone, Copy)]
    enum Step {
        Apply(usize),
        Undo(usize),
        Operator(usize),
    }
    let mut events: Vec<(u64, u8, Step)> = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        events.push((p.at_ms, 1, Step::Apply(i)));
        if let Some(u) = p.undo_at_ms {
            events.push((u, 0, Step::Undo(i)));
        }
    }
    for (i, o) in spec.operators.iter().enumerate() {
        events.push((o.at_ms, 2, Step::Operator(i)));
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut ids: Vec<Option<(usize, u64)>> = vec![None; plan.len()];
    // The node each fault hit, once role-based targets (`primary-of:…`) are resolved.
    let mut applied: Vec<Option<crate::fault::Fault>> = vec![None; plan.len()];
    for (at_ms, _, step) in events {
        tokio::time::sleep_until(faults_start + Duration::from_millis(at_ms)).await;
        match step {
            Step::Apply(i) => {
                stage.set(format!(
                    "apply {} {}",
                    plan[i].fault.kind(),
                    plan[i].fault.target()
                ));
                let fault = match resolve(cluster, &scenario.topology, &plan[i].fault).await {
                    Ok(f) => f,
                    Err(e) => {
                        harness_error = Some(e);
                        break;
                    }
                };
                let cuts = match cuts_of(&scenario.topology, &fault) {
                    Ok(c) => c,
                    Err(e) => {
                        harness_error = Some(format!("{} {}: {e}", fault.kind(), fault.target()));
                        break;
                    }
                };
                let hid = recorder.fault_requested(fault.kind(), &fault.target(), cuts)?;
                match injector.apply(&fault).await {
                    Ok(id) => {
                        recorder.fault_verified(hid)?;
                        ids[i] = Some((id, hid));
                        applied[i] = Some(fault);
                    }
                    Err(e) => {
                        harness_error = Some(format!(
                            "{} {} could not be verified: {e}",
                            fault.kind(),
                            fault.target()
                        ));
                        break;
                    }
                }
            }
            Step::Undo(i) => {
                stage.set(format!(
                    "undo {} {}",
                    plan[i].fault.kind(),
                    plan[i].fault.target()
                ));
                if let Some((id, hid)) = ids[i].take() {
                    let fault = applied[i].clone().unwrap_or_else(|| plan[i].fault.clone());
                    recorder.fault_undo_requested(hid)?;
                    match injector.undo(id).await {
                        Ok(_) => recorder.fault_undone(hid)?,
                        Err(e) => {
                            harness_error = Some(format!(
                                "{} {} could not be verified: {e}",
                                fault.undo_name(),
                                fault.target()
                            ));
                            break;
                        }
                    }
                }
            }
            Step::Operator(i) => {
                let action = &spec.operators[i];
                stage.set(format!("operator {} on {}", action.command, action.node));
                let node =
                    match crate::probe::resolve_target(tunnel, &scenario.topology, &action.node)
                        .await
                    {
                        Ok(n) => n,
                        Err(e) => {
                            harness_error = Some(e);
                            break;
                        }
                    };
                let body = action
                    .body
                    .as_ref()
                    .and_then(|b| serde_json::to_value(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                let hid = recorder.operator_requested(&action.command, &node, body.clone())?;
                match crate::probe::operator(
                    tunnel,
                    &node,
                    &cluster.admin_token,
                    &action.command,
                    &body,
                )
                .await
                {
                    Ok(answer) => {
                        info!(command = %action.command, node = %node, %answer, "operator command done");
                        recorder.operator_done(hid, Ok(answer))?;
                    }
                    Err(e) => {
                        recorder.operator_done(hid, Err(e.clone()))?;
                        harness_error = Some(format!("operator command {e}"));
                        break;
                    }
                }
            }
        }
    }
    // Whatever is still in force is undone (and proven) before the quiet period and the final reads.
    stage.set("undo what is still in force");
    for (i, slot) in ids.iter_mut().enumerate() {
        if let Some((id, hid)) = slot.take() {
            recorder.fault_undo_requested(hid)?;
            match injector.undo(id).await {
                Ok(_) => recorder.fault_undone(hid)?,
                Err(e) => {
                    harness_error.get_or_insert(format!(
                        "{} {}: {e}",
                        plan[i].fault.undo_name(),
                        plan[i].fault.target()
                    ));
                }
            }
        }
    }
    stage.set("quiet period");
    let quiet = Duration::from_millis(spec.quiet_ms);
    match &scenario.topology.subject.probes.bindings {
        // Through the quiet period, the bindings every registrar holds, for the bindings checker.
        Some(probe) => crate::probe::bindings_rounds(cluster, probe, &recorder, quiet).await,
        None => tokio::time::sleep(quiet).await,
    }
    stage.set("the users' final reads");
    workload.finish(Duration::from_secs(20)).await;
    stage.set("stop the probes");
    let _ = probe_stop.send(true);
    let _ = (&mut probes.0).await;
    stage.set("judge the history");
    let history = recorder.finish()?;

    let mut bounds = scenario.bounds.clone();
    if opts.nightly {
        bounds.extend(scenario.nightly_bounds.iter().cloned());
    }
    let mut report = Report::build(
        &history,
        &scenario.checkers(),
        &bounds,
        scenario.aftermath_ms(),
    );
    if let Some(reason) = harness_error {
        // A fault that could not be proven makes the whole run undecided, never valid.
        report.verdict = report
            .verdict
            .clone()
            .merge(Verdict::Unknown(reason.clone()));
        report.summary.verdict = report.verdict.name().to_owned();
        report.summary.reason.get_or_insert(reason);
    }
    stage.set("write the report");
    report.write(&opts.out)?;
    if report.verdict != Verdict::Valid {
        stage.set("keep the nodes' logs");
        save_logs(cluster, &opts.out).await;
    }
    info!(verdict = report.verdict.name(), out = %opts.out.display(), "report written");
    Ok(RunOutcome {
        verdict: report.verdict.clone(),
        report,
        out: opts.out.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_covers_the_scripted_run_and_the_operator_commands() {
        let spec: ScheduleSpec = toml::from_str(
            r#"
            warmup_ms = 6000
            quiet_ms = 8000
            [[fault]]
            at_ms = 0
            for_ms = 6000
            kind = "kill"
            target = "fe1-1"
            [[operator]]
            at_ms = 20000
            node = "fe2-1"
            command = "failover"
            "#,
        )
        .unwrap();
        let plan = spec.plan(1).unwrap();
        // warm-up 6 s + last event 20 s (the operator's, after the fault's undo at 6 s) + quiet 8 s.
        assert_eq!(
            drive_budget(&spec, &plan),
            Duration::from_secs(34) + DRIVE_SLACK
        );
    }

    #[test]
    fn the_stage_reads_back_what_was_set_last() {
        let stage = Stage::default();
        assert_eq!(stage.get(), "");
        stage.clone().set("apply kill fe1-1");
        assert_eq!(stage.get(), "apply kill fe1-1");
    }
}
