//! Container tests of the Docker runtime and the fault catalogue: a real two-site topology in Docker.
//! They build the images first if needed (the same code every run uses).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use poolchaos::fault::{Fault, Stream, Toxic};
use poolchaos::runtime::{labels, Cluster, Injector, NodeHandle, RuntimeError};
use poolchaos::topology::Topology;

fn topology(name: &str) -> Topology {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../suites/topologies")
        .join(name);
    Topology::load(&path).expect("the suite's topology file is valid")
}

/// Containers and networks that carry `run`'s label, as Docker lists them.
fn leftovers(run: &str) -> (usize, usize) {
    let filter = format!("label={}={run}", labels::RUN);
    let count = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
    };
    (
        count(&["ps", "-aq", "--filter", &filter]),
        count(&["network", "ls", "-q", "--filter", &filter]),
    )
}

/// A packet fault on `target`, only towards `peers` when given, with netfault's spec as JSON.
fn packet(target: &str, peers: &[&str], spec: &str) -> Fault {
    Fault::Packet {
        target: target.into(),
        peers: peers.iter().map(|p| p.to_string()).collect(),
        packet: netfault::FaultSpec::from_json(spec).expect("a valid spec"),
    }
}

/// Held by the tests that leave a dead run and then run plain `sweep`: one test's sweep would remove the
/// other's dead run before it was counted.
static KILL_AND_SWEEP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Claim: every fault kind takes effect on a live server of a two-site topology, is proven by an independent
/// check, and its undo is proven too; teardown then leaves nothing. `apply`/`undo` return only after the
/// verification passed, so reaching the end with every record present proves each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_verified_and_undone_on_a_two_site_topology() {
    let cluster = Cluster::up(topology("two-sites.toml"), 7)
        .await
        .expect("topology starts");
    let run = cluster.run.clone();
    assert_eq!(cluster.nodes.len(), 7, "six Front Ends and the fault proxy");
    let stream = Stream::Downstream;
    let faults = vec![
        Fault::Kill {
            target: "fe1-1".into(),
        },
        Fault::Stop {
            target: "fe1-2".into(),
            grace_s: 2,
        },
        Fault::Pause {
            target: "fe1-3".into(),
        },
        Fault::Isolate {
            target: "fe2-1".into(),
        },
        Fault::Partition {
            groups: vec![vec!["site:dc1".into()], vec!["site:dc2".into()]],
        },
        Fault::Partition {
            groups: vec![vec!["fe1-1".into()], vec!["fe1-2".into(), "fe1-3".into()]],
        },
        Fault::OneWay {
            from: vec!["fe1-1".into()],
            to: vec!["fe1".into()],
        },
        Fault::Bridge {
            groups: vec![vec!["site:dc1".into()], vec!["site:dc2".into()]],
            bridge: "fe1-1".into(),
        },
        Fault::Ring {
            nodes: vec!["fe1".into(), "fe2".into()],
        },
        Fault::Halves {
            among: vec!["fe1".into(), "fe2".into()],
            seed: Some(3),
        },
        Fault::SiteDown { site: "dc2".into() },
        packet("fe1-1", &["fe1-2"], r#"{"direction":"egress","delay_ms":100,"jitter_ms":5}"#),
        packet(
            "fe1-1",
            &[],
            r#"{"direction":"both","loss":{"gilbert_elliott":{"p":0.02,"r":0.3,"loss_good":0,"loss_bad":1}}}"#,
        ),
        packet("fe2-1", &["fe2-2"], r#"{"direction":"ingress","duplicate":0.3}"#),
        packet(
            "fe2-1",
            &["site:dc1"],
            r#"{"direction":"egress","delay_ms":40,"reorder":0.3}"#,
        ),
        packet("fe1-2", &["fe1-3"], r#"{"direction":"egress","corrupt":0.2}"#),
        packet("fe1-2", &["fe1-3"], r#"{"direction":"egress","rate_kbit":1000}"#),
    ]
    .into_iter()
    .chain(
        [
            Toxic::Latency {
                latency_ms: 200,
                jitter_ms: 20,
                stream,
            },
            Toxic::Bandwidth {
                rate_kbps: 64,
                stream,
            },
            Toxic::Timeout {
                timeout_ms: 0,
                stream,
            },
            Toxic::ResetPeer {
                timeout_ms: 0,
                stream,
            },
            Toxic::Slicer {
                average_size: 16,
                size_variation: 4,
                delay_us: 100,
                stream,
            },
            Toxic::LimitData {
                bytes: 1000,
                stream,
            },
            Toxic::SlowClose {
                delay_ms: 100,
                stream,
            },
            Toxic::Down,
        ]
        .into_iter()
        .map(|toxic| Fault::Link {
            from: "users".into(),
            to: "fe1".into(),
            toxic,
        }),
    )
    .collect::<Vec<_>>();
    let mut injector = Injector::new(&cluster);
    for fault in &faults {
        let id = injector
            .apply(fault)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", fault.kind(), fault.target()));
        injector
            .undo(id)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", fault.undo_name(), fault.target()));
    }
    // A packet fault towards `users` slows what the simulated users send and receive: they reach the nodes
    // through the tunnel, so a connection to fe1-1 made through it waits for the delayed SYN-ACK.
    let tunnel = cluster.tunnel().await.expect("the tunnel");
    let id = injector
        .apply(&packet(
            "fe1-1",
            &["users"],
            r#"{"direction":"egress","delay_ms":300}"#,
        ))
        .await
        .expect("packet delay towards the users");
    let started = std::time::Instant::now();
    poolchaos::runtime::tunnel::connect(tunnel, "fe1-1", 5060, Duration::from_secs(5))
        .await
        .expect("a connection through the tunnel");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "a connect from the users' side took {took:?} under a 300 ms delay towards them"
    );
    injector.undo(id).await.expect("clear the delay");
    // Two faults in force at once, left for the final undo of everything still in force.
    injector
        .apply(&Fault::Pause {
            target: "fe2-2".into(),
        })
        .await
        .expect("pause");
    injector
        .apply(&Fault::Kill {
            target: "fe2-3".into(),
        })
        .await
        .expect("kill");
    assert_eq!(injector.in_force().len(), 2);
    injector.undo_all().await.expect("undo everything in force");
    assert!(injector.in_force().is_empty());
    let records = injector.records();
    assert_eq!(records.len(), faults.len() + 3);
    for r in records {
        assert!(
            r.verified >= r.requested && r.undone.is_some_and(|u| u >= r.verified),
            "{r:?}"
        );
    }
    drop(injector);
    let timings = cluster.down().await.expect("teardown");
    assert!(timings.teardown > Duration::ZERO);
    assert_eq!(
        leftovers(&run),
        (0, 0),
        "teardown leaves no container or network of the run"
    );
}

/// Claim: the harness acts only on containers that carry its run's labels, whatever it is asked. A node
/// handle pointing at a foreign container must be refused before any Docker call changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_aimed_outside_the_run_is_refused() {
    let mut cluster = Cluster::up(topology("two-sites.toml"), 8)
        .await
        .expect("topology starts");
    let foreign = format!("poolchaos-foreign-{}", std::process::id());
    let status = Command::new("docker")
        .args([
            "create",
            "--name",
            &foreign,
            "poolchaos/poolnode:latest",
            "version",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("docker runs");
    assert!(status.success());
    let mut intruder: NodeHandle = cluster.nodes["fe1-1"].clone();
    intruder.name = "intruder".into();
    intruder.container = foreign.clone();
    cluster.nodes.insert("intruder".into(), intruder);
    let refused = Injector::new(&cluster)
        .apply(&Fault::Kill {
            target: "intruder".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(RuntimeError::OutsideBlastRadius(ref c)) if *c == foreign),
        "{refused:?}"
    );
    let unknown = Injector::new(&cluster)
        .apply(&Fault::Kill {
            target: "fe9-9".into(),
        })
        .await;
    assert!(
        matches!(unknown, Err(RuntimeError::UnknownTarget(_))),
        "{unknown:?}"
    );
    cluster.nodes.remove("intruder");
    let _ = Command::new("docker").args(["rm", "-f", &foreign]).output();
    cluster.down().await.expect("teardown");
}

/// Claim: a harness killed mid-run (SIGKILL: no drop, no teardown) leaves its containers behind, and
/// `poolchaos sweep` then removes every one of them and every network.
#[test]
fn a_killed_harness_leaves_nothing_after_sweep() {
    let _one_at_a_time = KILL_AND_SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    let topology =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/topologies/two-sites.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolchaos"))
        .args(["up", "--hold", "--seed", "9"])
        .arg(&topology)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("poolchaos starts");
    let mut run = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.expect("stdout of poolchaos");
        if let Some(rest) = line.strip_prefix("run ") {
            run = rest.split_whitespace().next().map(String::from);
        }
        if line.starts_with("holding") {
            break;
        }
    }
    let run = run.expect("poolchaos printed its run id before holding");
    child.kill().expect("SIGKILL the harness");
    child.wait().expect("reap it");
    let (containers, networks) = leftovers(&run);
    assert_eq!(containers, 7, "a killed harness leaves its containers");
    assert!(networks >= 3);
    let swept = Command::new(env!("CARGO_BIN_EXE_poolchaos"))
        .arg("sweep")
        .output()
        .expect("sweep runs");
    assert!(
        swept.status.success(),
        "{}",
        String::from_utf8_lossy(&swept.stderr)
    );
    assert_eq!(
        leftovers(&run),
        (0, 0),
        "sweep removes every leftover of the killed run"
    );
}

/// Volumes that carry `run`'s label, as Docker lists them.
fn volumes(run: &str) -> usize {
    let out = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter"])
        .arg(format!("label={}={run}", labels::RUN))
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

/// Removes whatever is left of a run when a test ends, passed or not.
struct RemoveRun(String);

impl Drop for RemoveRun {
    fn drop(&mut self) {
        poolchaos::runtime::cluster::remove_by_label_blocking(&self.0);
    }
}

/// Runs `poolchaos <args>` in `dir` and returns its stdout; panics with its stderr when it fails.
fn poolchaos_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_poolchaos"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("poolchaos runs");
    assert!(
        out.status.success(),
        "poolchaos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Claim: `poolchaos up` killed (SIGKILL: no drop, no teardown) at any moment before its run is up — networks
/// made, the first container created, every node started — leaves a dead run, and plain `poolchaos sweep`
/// removes every container, network and volume of it. Killed once the run is up (its state written), it leaves
/// a detached run: plain `sweep` keeps all of it, and `poolchaos down` removes all of it.
#[test]
fn up_killed_at_any_stage_leaves_a_dead_run_that_sweep_removes() {
    let _one_at_a_time = KILL_AND_SWEEP.lock().unwrap_or_else(|e| e.into_inner());
    use poolchaos::runtime::cluster::PAUSE_ENV;
    let topology =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/topologies/fe-pool.toml");
    let nodes = Topology::load(&topology)
        .expect("the suite's topology file is valid")
        .nodes()
        .count();
    // `up` keeps its state in the working directory: one of the test's own.
    let dir = std::env::temp_dir().join(format!("poolchaos-up-killed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    let state = dir.join(".poolchaos/up.json");
    for (stage, seed) in [
        ("networks", "21"),
        ("containers", "22"),
        ("started", "23"),
        ("state", "24"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_poolchaos"))
            .args(["up", "--seed", seed])
            .arg(&topology)
            .env(PAUSE_ENV, stage)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("poolchaos starts");
        let paused = format!("paused at {stage}: run ");
        let run = BufReader::new(child.stdout.take().expect("piped"))
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix(&paused).map(String::from));
        let Some(run) = run else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`poolchaos up` ended before it paused at {stage}");
        };
        let _cleanup = RemoveRun(run.clone());
        child.kill().expect("SIGKILL `poolchaos up`");
        child.wait().expect("reap it");
        let (containers, networks) = leftovers(&run);
        let expected = match stage {
            "networks" => 0,
            "containers" => 1,
            _ => nodes + 1,
        };
        assert_eq!(
            (containers, networks),
            (expected, 3),
            "killed at {stage}, `up` leaves its containers and its networks (site, WAN, external)"
        );
        let swept = poolchaos_in(&dir, &["sweep"]);
        if stage != "state" {
            assert!(
                !state.exists(),
                "killed at {stage}, `up` wrote no state, so nothing takes this run for one that is up"
            );
            assert_eq!(
                (leftovers(&run), volumes(&run)),
                ((0, 0), 0),
                "killed at {stage}, the run is dead and plain sweep removes all of it ({swept})"
            );
            continue;
        }
        assert!(state.exists(), "the state of the run that is up is kept");
        assert_eq!(
            (leftovers(&run), volumes(&run)),
            ((nodes + 1, 3), 1),
            "killed once its state is written, the run is up and detached: plain sweep keeps all of it \
             (its containers, networks and the volume that marks it up) ({swept})"
        );
        let down = poolchaos_in(&dir, &["down"]);
        assert_eq!(
            (leftovers(&run), volumes(&run)),
            ((0, 0), 0),
            "`poolchaos down` removes all of the detached run ({down})"
        );
        assert!(!state.exists(), "`down` removes the state");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
