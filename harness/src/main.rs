//! `poolchaos`: the harness's command line. Each command is a thin call into the library; exit codes live
//! in `poolchaos::exit`.
//!
//! The file holds one concept, the command line: each command's flags and the few lines that turn them into
//! library calls and its outcome into an exit code, with the state file `up` leaves for `fault`, `heal` and `down`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use poolchaos::fault::{Fault, Toxic};
use poolchaos::runtime::cluster::{pause_at, PauseAt};
use poolchaos::runtime::{labels, roles, Cluster, Injector};
use poolchaos::topology::Topology;
use poolchaos::{exit, images};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(
    name = "poolchaos",
    version,
    about = "Chaos harness for paired SIP pools: faults in containers, per-user continuity, failover latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the static binaries and the FROM scratch images (only those whose content changed).
    Images,
    /// Start a topology in containers and print how to reach each pool and the fault proxy.
    Up {
        topology: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stay in the foreground and take the topology down on Ctrl-C or SIGTERM.
        #[arg(long)]
        hold: bool,
    },
    /// Take down the topology `poolchaos up` started (every container, network and volume of its run).
    Down,
    /// Remove the containers, networks and volumes of earlier runs whose process is gone (an `up` killed
    /// before its run was up included); a run `poolchaos up` left running stays until `down`.
    Sweep {
        /// Also remove runs that are still going, and detached ones.
        #[arg(long)]
        all: bool,
    },
    /// Apply a fault to the running topology and verify it took effect:
    /// `kill|stop|pause|isolate <node-or-pool>`, `site_down <site>`,
    /// `partition <group> <group>...` (a group: comma-separated nodes, pools or site:<name>),
    /// `link <from> <to> <toxic-json>` (e.g. '{"type":"latency","latency_ms":200}').
    Fault {
        kind: String,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Undo every fault still in force on the running topology, each undo verified.
    Heal,
    /// Run a scenario: topology, users, faults, checkers; write the report; exit 0 valid, 1 invalid,
    /// 2 unknown or harness error.
    Run {
        scenario: PathBuf,
        /// The seed of every random draw; drawn (and printed first) when absent.
        #[arg(long)]
        seed: Option<u64>,
        /// The report directory (default `reports/<scenario>-<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also judge the scenario's nightly bounds (the goal figures).
        #[arg(long)]
        nightly: bool,
        /// Run the known-bad pool with this defect planted (the image built with `poolnode`'s `defects`
        /// feature; the names are in `nodes/src/defects.rs`): the verdict should be `invalid`.
        #[arg(long)]
        defect: Option<String>,
    },
    /// Judge a recorded run again with today's checkers and bounds: reads `history.jsonl` and `faults.jsonl` in
    /// the report directory and the scenario the history names; writes nothing unless `--out` is given;
    /// exit 0 valid, 1 invalid, 2 unknown or error, as `run`.
    Check {
        /// A report directory left by `run` or `nightly`.
        dir: PathBuf,
        /// The scenario file (default `suites/scenarios/<the scenario the history names>.toml`).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Also judge the scenario's nightly bounds.
        #[arg(long)]
        nightly: bool,
        /// Write the new report (summary.json, report.md, report.html, latency/) into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Work with report directories (see `poolchaos report compare --help`).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The nightly chaos run: the randomized mix over the paired topology, with as many faults as fit in
    /// `--duration`; the same exit codes and replay line as `run`.
    Nightly {
        /// How long the fault schedule runs (`90s`, `30m`, `2h`).
        #[arg(long, default_value = "10m")]
        duration: String,
        #[arg(long)]
        seed: Option<u64>,
        /// The report directory (default `reports/nightly-<seed>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The scenario to stretch (default `suites/scenarios/random-mix.toml`).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Print the version and exit.
    Version,
}

/// What `poolchaos up` leaves for the commands after it.
#[derive(Serialize, Deserialize)]
struct UpState {
    run: String,
    topology: PathBuf,
    seed: u64,
    /// Faults applied by `poolchaos fault` and not yet healed, with their ids.
    faults: Vec<(usize, Fault)>,
}

fn state_path() -> PathBuf {
    PathBuf::from(".poolchaos").join("up.json")
}

fn read_state() -> anyhow::Result<UpState> {
    let path = state_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {}: is a topology up? start one with `poolchaos up <topology>`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn write_state(state: &UpState) -> anyhow::Result<()> {
    let path = state_path();
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("write {}", path.display()))
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Compare two runs' metrics (p50, p99) as a Markdown table; exit 1 when a p99 grew beyond the tolerance.
    Compare {
        base: PathBuf,
        new: PathBuf,
        /// Allowed p99 growth, as a fraction (0.2 = 20 %).
        #[arg(long, default_value_t = 0.2)]
        tolerance: f64,
    },
    /// One Markdown row per run found under `dir` (each a report directory): verdict, key latencies,
    /// losses, and the bounds its scenario declares (looked up in `--scenarios`).
    Table {
        dir: PathBuf,
        #[arg(long, default_value = "suites/scenarios")]
        scenarios: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("poolchaos {}", env!("CARGO_PKG_VERSION"));
            Ok(exit::VALID)
        }
        Command::Images => images_command(),
        Command::Report { command } => report_command(command),
        Command::Check {
            dir,
            scenario,
            nightly,
            out,
        } => check_command(&dir, scenario.as_deref(), nightly, out.as_deref()),
        command => tokio::runtime::Runtime::new()
            .context("start the async runtime")
            .and_then(|rt| rt.block_on(run_async(command))),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("poolchaos: failed to {e:#}");
            ExitCode::from(exit::UNKNOWN as u8)
        }
    }
}

fn images_command() -> anyhow::Result<i32> {
    for image in images::ensure(&images::workspace_root())? {
        let state = if image.built { "built" } else { "up to date" };
        println!("{}\t{state}", image.reference());
    }
    Ok(exit::VALID)
}

fn check_command(
    dir: &Path,
    scenario: Option<&Path>,
    nightly: bool,
    out: Option<&Path>,
) -> anyhow::Result<i32> {
    let root = images::workspace_root().join("suites/scenarios");
    let checked = poolchaos::check::check(dir, scenario, &root, nightly)?;
    let run = &checked.history.run;
    println!("seed={} scenario={}", run.seed, run.scenario);
    println!("judged with {}", checked.scenario.display());
    if let Some(recorded) = &checked.recorded {
        println!("recorded verdict: {}", recorded.verdict);
    }
    let report = &checked.report;
    println!("verdict: {}", report.verdict.name());
    for v in report.verdict.violations().iter().take(20) {
        println!("  violation: {v}");
    }
    if let poolchaos::checker::Verdict::Unknown(reason) = &report.verdict {
        println!("  unknown: {reason}");
    }
    let c = &report.summary.counts;
    println!(
        "counts: writes acknowledged {}, lost {}, observed RPO {} ms; IMs lost {}",
        c.writes_acked, c.writes_lost, c.rpo_ms, c.ims_lost
    );
    if let Some(out) = out {
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        report.write(out)?;
        println!("report: {}", out.join("report.html").display());
    }
    if checked.exit_code() != exit::VALID {
        println!(
            "replay: {}",
            poolchaos::runner::replay_command(&checked.scenario, run.seed)
        );
    }
    Ok(checked.exit_code())
}

fn report_command(command: ReportCommand) -> anyhow::Result<i32> {
    match command {
        ReportCommand::Compare {
            base,
            new,
            tolerance,
        } => {
            let comparison = poolchaos::report::compare(&base, &new, tolerance)?;
            print!("{}", comparison.markdown);
            Ok(comparison.exit_code())
        }
        ReportCommand::Table { dir, scenarios } => {
            let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("summary.json").is_file())
                .collect();
            runs.sort();
            println!("| scenario | verdict | reregister p50 / p99 | write_unavailable p99 | im_delivery p99 | IMs lost | writes lost | bounds (every run; nightly) |");
            println!("|---|---|---|---|---|---|---|---|");
            for run in runs {
                let s = poolchaos::report::run::read_summary(&run)?;
                let ms = |name: &str, p: fn(&poolchaos::report::summary::MetricSummary) -> Option<f64>| {
                    s.metrics
                        .get(name)
                        .and_then(p)
                        .map(|v| format!("{v:.0} ms"))
                        .unwrap_or_else(|| "–".into())
                };
                let bounds = poolchaos::scenario::Scenario::load(
                    &scenarios.join(format!("{}.toml", s.scenario)),
                )
                .map(|sc| {
                    let every = sc.file.bounds.join(", ");
                    let nightly = sc.file.nightly_bounds.join(", ");
                    if nightly.is_empty() {
                        every
                    } else {
                        format!("{every}; {nightly}")
                    }
                })
                .unwrap_or_default();
                println!(
                    "| {} | {} | {} / {} | {} | {} | {} | {} | {} |",
                    s.scenario,
                    s.verdict,
                    ms("reregister", |m| m.p50),
                    ms("reregister", |m| m.p99),
                    ms("write_unavailable", |m| m.p99),
                    ms("im_delivery", |m| m.p99),
                    s.counts.ims_lost,
                    s.counts.writes_lost,
                    bounds.replace('|', "\\|"),
                );
            }
            Ok(exit::VALID)
        }
    }
}

async fn run_async(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Up {
            topology,
            seed,
            hold,
        } => up(&topology, seed, hold).await,
        Command::Down => {
            let state = read_state()?;
            let docker = poolchaos::runtime::docker::connect().await?;
            let swept = labels::sweep(&docker, labels::Scope::Run(&state.run)).await?;
            std::fs::remove_file(state_path()).ok();
            println!(
                "run {}: removed {} containers, {} networks and {} volumes",
                state.run, swept.containers, swept.networks, swept.volumes
            );
            Ok(exit::VALID)
        }
        Command::Sweep { all } => {
            let docker = poolchaos::runtime::docker::connect().await?;
            let scope = if all {
                labels::Scope::All
            } else {
                labels::Scope::Dead
            };
            let swept = labels::sweep(&docker, scope).await?;
            println!(
                "swept {} runs: {} containers, {} networks, {} volumes",
                swept.runs.len(),
                swept.containers,
                swept.networks,
                swept.volumes
            );
            for id in &swept.stuck {
                println!("network {id} would not go: `sudo systemctl restart docker` clears stale endpoints");
            }
            Ok(exit::VALID)
        }
        Command::Fault { kind, args } => {
            let mut state = read_state()?;
            let fault = parse_fault(&kind, &args)?;
            let cluster = attach(&state).await?;
            let mut injector = Injector::resume(&cluster, state.faults.clone());
            let id = injector.apply(&fault).await?;
            let record = injector
                .in_force()
                .into_iter()
                .find(|(i, _)| *i == id)
                .map(|(_, r)| r.verify_latency())
                .unwrap_or_default();
            state.faults.push((id, fault.clone()));
            write_state(&state)?;
            println!(
                "{} {}: verified after {} ms (undo: {}; `poolchaos heal`)",
                fault.kind(),
                fault.target(),
                record.as_millis(),
                fault.undo_name()
            );
            Ok(exit::VALID)
        }
        Command::Heal => {
            let mut state = read_state()?;
            let cluster = attach(&state).await?;
            let mut injector = Injector::resume(&cluster, state.faults.clone());
            let result = injector.undo_all().await;
            let healed: Vec<usize> = injector
                .records()
                .iter()
                .filter_map(|r| {
                    state
                        .faults
                        .iter()
                        .find(|(_, f)| *f == r.fault)
                        .map(|(id, _)| *id)
                })
                .collect();
            for r in injector.records() {
                println!(
                    "{} {}: undone and verified",
                    r.fault.undo_name(),
                    r.fault.target()
                );
            }
            state.faults.retain(|(id, _)| !healed.contains(id));
            write_state(&state)?;
            result?;
            Ok(exit::VALID)
        }
        Command::Run {
            scenario,
            seed,
            out,
            nightly,
            defect,
        } => run_scenario(&scenario, seed, out, nightly, None, defect).await,
        Command::Nightly {
            duration,
            seed,
            out,
            scenario,
        } => {
            let scenario = scenario.unwrap_or_else(|| {
                images::workspace_root().join("suites/scenarios/random-mix.toml")
            });
            let length = poolchaos::report::bounds::parse_duration_ms(&duration)
                .map_err(|e| anyhow::anyhow!("read --duration: {e}"))?
                as u64;
            let out =
                out.or_else(|| seed.map(|s| PathBuf::from("reports").join(format!("nightly-{s}"))));
            run_scenario(&scenario, seed, out, true, Some((length, duration)), None).await
        }
        Command::Images | Command::Version | Command::Report { .. } | Command::Check { .. } => {
            unreachable!("handled without a runtime")
        }
    }
}

/// Runs a scenario; with `stretch = (length_ms, as_written)` its random schedule is stretched to fill that
/// long (the nightly run).
async fn run_scenario(
    path: &Path,
    seed: Option<u64>,
    out: Option<PathBuf>,
    nightly: bool,
    stretch: Option<(u64, String)>,
    defect: Option<String>,
) -> anyhow::Result<i32> {
    let seed = seed.unwrap_or_else(rand::random);
    println!("seed={seed}");
    let mut scenario = poolchaos::scenario::Scenario::load(path)?;
    let mut replay = poolchaos::runner::replay_command(path, seed);
    if let Some((length_ms, written)) = &stretch {
        scenario.stretch_to(*length_ms)?;
        replay = format!(
            "cargo run --release -p poolchaos -- nightly --scenario {} --duration {written} --seed {seed}",
            path.display()
        );
    }
    let out =
        out.unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-{seed}", scenario.name())));
    if let Some(d) = &defect {
        replay.push_str(&format!(" --defect {d}"));
    }
    let opts = poolchaos::runner::RunOptions {
        seed,
        out,
        nightly,
        defect,
    };
    match poolchaos::runner::run(&scenario, &opts).await {
        Ok(outcome) => {
            println!("verdict: {}", outcome.verdict.name());
            for v in outcome.verdict.violations().iter().take(20) {
                println!("  violation: {v}");
            }
            if let poolchaos::checker::Verdict::Unknown(reason) = &outcome.verdict {
                println!("  unknown: {reason}");
            }
            println!("report: {}", outcome.out.join("report.html").display());
            if outcome.exit_code() != exit::VALID {
                println!("replay: {replay}");
            }
            Ok(outcome.exit_code())
        }
        Err(e) => {
            eprintln!("poolchaos: failed to run {}: {e}", path.display());
            println!("replay: {replay}");
            Ok(exit::UNKNOWN)
        }
    }
}

async fn attach(state: &UpState) -> anyhow::Result<Cluster> {
    let topology = Topology::load(&state.topology)?;
    Ok(Cluster::attach(topology, &state.run, state.seed).await?)
}

async fn up(path: &Path, seed: u64, hold: bool) -> anyhow::Result<i32> {
    if !hold && state_path().exists() {
        let state = read_state()?;
        let docker = poolchaos::runtime::docker::connect().await?;
        if labels::is_detached(&docker, &state.run).await? {
            bail!(
                "start a topology: run {} is already up ({}); take it down first with `poolchaos down`",
                state.run,
                state_path().display()
            );
        }
        // The state of a run that is not up: its `up` died before marking it, or it was swept since.
        eprintln!(
            "poolchaos: {} named run {}, which is not up; replacing it (`poolchaos sweep` removes what is \
             left of that run)",
            state_path().display(),
            state.run
        );
        std::fs::remove_file(state_path())
            .with_context(|| format!("remove {}", state_path().display()))?;
    }
    let topology = Topology::load(path)?;
    // Owned by this process until it is up and detached: an `up` that dies before leaves a dead run.
    let cluster = Cluster::up(topology, seed).await?;
    println!(
        "run {} is up ({} containers, ready in {} ms)",
        cluster.run,
        cluster.nodes.len(),
        cluster.timings.start_to_ready.as_millis()
    );
    for pool in &cluster.topology.pools {
        let mut addrs = Vec::new();
        for node in &pool.nodes {
            match cluster.nodes[&node.name].launch.ports.first() {
                Some(port) => {
                    let addr = cluster
                        .published(&node.name, port.port, port.protocol)
                        .await?;
                    addrs.push(format!("{}=sip:{addr};transport=tcp", node.name));
                }
                None => addrs.push(node.name.clone()),
            }
        }
        println!(
            "pool {} ({}): {}",
            pool.pool.name,
            pool.pool.role,
            addrs.join(" ")
        );
    }
    println!(
        "fault proxy API (Toxiproxy): http://{}",
        cluster.proxy_api().await?
    );
    println!(
        "tunnel into the networks: {} (send `CONNECT <node>:<port>` or `RESOLVE <name>`)",
        cluster.tunnel().await?
    );
    if cluster.topology.subject.probes.status {
        println!(
            "admin API: http://<node>:{} through the tunnel, token {}",
            roles::ADMIN_PORT,
            cluster.admin_token
        );
    }
    for (i, link) in cluster.topology.links.iter().enumerate() {
        let port = roles::PROXY_LINK_PORT_BASE + i as u16;
        println!(
            "link {} -> {}: through toxiproxy:{port}",
            link.from, link.to
        );
    }
    if hold {
        println!("holding; Ctrl-C takes it down");
        shutdown_signal().await;
        cluster.down().await?;
    } else {
        // The state first, then the mark: an `up` killed between the two leaves a dead run (swept) and a
        // state `up` and `down` both see is stale; the other way round it would leave a detached run no
        // state names.
        write_state(&UpState {
            run: cluster.run.clone(),
            topology: path.to_path_buf(),
            seed,
            faults: Vec::new(),
        })?;
        let run = cluster.run.clone();
        if let Err(e) = cluster.detach().await {
            std::fs::remove_file(state_path()).ok();
            return Err(e.into());
        }
        pause_at(PauseAt::State, &run).await?;
        println!("take it down with `poolchaos down`");
    }
    Ok(exit::VALID)
}

fn parse_fault(kind: &str, args: &[String]) -> anyhow::Result<Fault> {
    let list = |arg: &String| -> Vec<String> { arg.split(',').map(String::from).collect() };
    let one = || -> anyhow::Result<String> {
        match args {
            [target] => Ok(target.clone()),
            _ => bail!("parse the fault: `{kind}` takes one target"),
        }
    };
    Ok(match kind {
        "kill" => Fault::Kill { target: one()? },
        "stop" => Fault::Stop {
            target: one()?,
            grace_s: 5,
        },
        "pause" => Fault::Pause { target: one()? },
        "isolate" => Fault::Isolate { target: one()? },
        "site_down" => Fault::SiteDown { site: one()? },
        "partition" => Fault::Partition {
            groups: args
                .iter()
                .map(|g| g.split(',').map(String::from).collect())
                .collect(),
        },
        "one_way" => match args {
            [from, to] => Fault::OneWay {
                from: list(from),
                to: list(to),
            },
            _ => bail!("parse the fault: `one_way` takes <from,…> <to,…>"),
        },
        "bridge" => match args {
            [a, b, bridge] => Fault::Bridge {
                groups: vec![list(a), list(b)],
                bridge: bridge.clone(),
            },
            _ => bail!("parse the fault: `bridge` takes <half,…> <half,…> <bridge>"),
        },
        "ring" => Fault::Ring {
            nodes: args.iter().flat_map(&list).collect(),
        },
        "halves" => match args {
            [among, seed] => Fault::Halves {
                among: list(among),
                seed: Some(
                    seed.parse()
                        .with_context(|| format!("parse the fault: `halves` seed `{seed}`"))?,
                ),
            },
            _ => bail!("parse the fault: `halves` takes <target,…> <seed>"),
        },
        "link" => match args {
            [from, to, toxic] => Fault::Link {
                from: from.clone(),
                to: to.clone(),
                toxic: serde_json::from_str::<Toxic>(toxic)
                    .with_context(|| format!("parse the toxic `{toxic}`"))?,
            },
            _ => bail!("parse the fault: `link` takes <from> <to> <toxic-json>"),
        },
        "packet" => match args {
            [target, spec] => Fault::Packet {
                target: target.clone(),
                peers: Vec::new(),
                packet: serde_json::from_str::<netfault::FaultSpec>(spec)
                    .with_context(|| format!("parse the packet fault `{spec}`"))?,
            },
            [target, peers, spec] => Fault::Packet {
                target: target.clone(),
                peers: list(peers),
                packet: serde_json::from_str::<netfault::FaultSpec>(spec)
                    .with_context(|| format!("parse the packet fault `{spec}`"))?,
            },
            _ => bail!("parse the fault: `packet` takes <target> [<peer,…>] <packet-json>"),
        },
        "disk_full" => Fault::DiskFull { target: one()? },
        "disk_read_only" => Fault::DiskReadOnly { target: one()? },
        other => bail!(
            "parse the fault: unknown kind `{other}`; expected kill, stop, pause, isolate, site_down, partition, \
             one_way, bridge, ring, halves, link, packet, disk_full or disk_read_only"
        ),
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn disk_and_packet_faults_are_named_on_the_command_line() {
        assert!(matches!(
            parse_fault("disk_full", &args(&["be1-1"])).unwrap(),
            Fault::DiskFull { target } if target == "be1-1"
        ));
        assert!(matches!(
            parse_fault("disk_read_only", &args(&["principal-of:be1"])).unwrap(),
            Fault::DiskReadOnly { target } if target == "principal-of:be1"
        ));
        match parse_fault("packet", &args(&["fe1-1", "users", r#"{"delay_ms": 40}"#])).unwrap() {
            Fault::Packet {
                target,
                peers,
                packet,
            } => {
                assert_eq!(target, "fe1-1");
                assert_eq!(peers, vec!["users".to_string()]);
                assert_eq!(packet.delay_ms, 40.0);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_bad_fault_says_what_it_takes() {
        let e = parse_fault("disk_full", &args(&["be1-1", "be1-2"])).unwrap_err();
        assert!(e.to_string().contains("takes one target"), "{e}");
        let e = parse_fault("packet", &args(&["fe1-1", "{not json"])).unwrap_err();
        assert!(format!("{e:#}").contains("parse the packet fault"), "{e:#}");
        let e = parse_fault("flood", &args(&["fe1-1"])).unwrap_err();
        assert!(e.to_string().contains("disk_read_only"), "{e}");
    }
}
