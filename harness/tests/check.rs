//! `poolchaos check <report dir>` on small report directories made here from synthetic histories: a run the
//! harness once judged valid is judged again with today's checkers, and a lost write acknowledged by the
//! backup pool after the site came back flips it to invalid. Nothing in the directory is rewritten.

use std::path::{Path, PathBuf};
use std::process::Command;

use poolchaos::history::{Fault, History, Op, OpRecord, Phase, Record, RunInfo};

/// A fresh directory under the system's temp dir.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolchaos-check-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn line(id: u64, phase: Phase, at_ms: u64, user: &str, op: Op) -> Record {
    Record::Op(OpRecord {
        id,
        phase,
        at_us: at_ms * 1000,
        user: user.into(),
        op,
        error: None,
    })
}

fn publish(state: &str) -> Op {
    Op::Publish {
        state: state.into(),
        granted_s: None,
    }
}

/// A site lost from 6 s to 26 s, written as the harness wrote histories before operator commands had their own
/// record (`operator:<command>` faults, never undone). alice publishes `open#1` at 1 s and, on the backup pool
/// after the site came back, `busy#2` at 33.1 s; the failback runs at 34 s; bob then reads `read_back`.
fn site_loss(read_back: &str) -> History {
    let records = vec![
        Record::Run(RunInfo {
            scenario: "site-loss-operator".into(),
            seed: 11,
            users: vec!["alice".into(), "bob".into()],
            ..RunInfo::default()
        }),
        line(1, Phase::Invoke, 1_000, "alice", publish("open#1")),
        line(1, Phase::Ok, 1_020, "alice", publish("open#1")),
        line(2, Phase::Invoke, 33_000, "alice", publish("busy#2")),
        line(2, Phase::Ok, 33_100, "alice", publish("busy#2")),
        line(
            3,
            Phase::Ok,
            36_000,
            "bob",
            Op::NotifyReceived {
                target: "alice".into(),
                state: Some(read_back.into()),
            },
        ),
        Record::End { at_us: 50_000_000 },
    ];
    let fault =
        |id, kind: &str, target: &str, at_ms: u64, verified_ms: u64, undone_ms: Option<u64>| {
            Fault {
                id,
                kind: kind.into(),
                target: target.into(),
                cuts: Vec::new(),
                requested_at_us: at_ms * 1000,
                verified_at_us: Some(verified_ms * 1000),
                undo_requested_at_us: undone_ms.map(|u| u * 1000),
                undone_at_us: undone_ms.map(|u| u * 1000),
            }
        };
    History::from_records(
        records,
        vec![
            fault(0, "site_down", "dc1", 6_000, 6_500, Some(26_000)),
            fault(1, "operator:pool-failover", "fe2-1", 16_000, 16_400, None),
            fault(2, "operator:pool-failback", "fe2-1", 34_000, 34_800, None),
        ],
    )
}

/// Writes a report directory as an older harness left it: the history files in the old layout (operator
/// commands as faults in `faults.jsonl`) and a `summary.json` that said `valid`.
fn recorded_dir(name: &str, history: &History) -> PathBuf {
    let dir = dir(name);
    let mut old = history.clone();
    for (i, o) in history.operators.iter().enumerate() {
        old.faults.push(Fault {
            id: 10 + i as u64,
            kind: format!("operator:{}", o.command),
            target: o.node.clone(),
            cuts: Vec::new(),
            requested_at_us: o.requested_at_us,
            verified_at_us: o.done_at_us,
            undo_requested_at_us: None,
            undone_at_us: None,
        });
    }
    old.operators.clear();
    old.save(&dir).unwrap();
    let summary = serde_json::json!({
        "scenario": "site-loss-operator",
        "seed": 11,
        "verdict": "valid",
        "violations": [],
        "metrics": {},
        "faults": [],
        "counts": {
            "users": 2, "ims_acked": 0, "ims_delivered": 0, "ims_lost": 0,
            "writes_acked": 2, "writes_lost": 1, "rpo_ms": 0
        }
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    dir
}

/// A scenario judging durability alone, against the paired topology: the synthetic history has no probes or
/// registrations for the other checkers to judge.
fn durability_scenario(dir: &Path) -> PathBuf {
    let topology = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../suites/topologies/paired-manual.toml")
        .canonicalize()
        .unwrap();
    let path = dir.join("durability-only.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "site-loss-operator"
claim = "Every change made on the backup pool survives the failback."
topology = {topology:?}
bounds = []

[schedule]

[checkers]
durability = {{ rpo_bound_ms = 5000 }}
"#,
            topology = topology.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn check(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_poolchaos"))
        .arg("check")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), format!("{stdout}{stderr}"))
}

#[test]
fn check_flips_a_run_once_judged_valid_when_its_history_lost_a_write() {
    let scenarios = dir("scenarios");
    let scenario = durability_scenario(&scenarios);
    let scenario = scenario.to_str().unwrap();

    // The backup pool's last change read back after the failback: valid, then and now.
    let kept = recorded_dir("kept", &site_loss("busy#2"));
    let (code, out) = check(&kept, &["--scenario", scenario]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("seed=11 scenario=site-loss-operator\n"),
        "{out}"
    );
    assert!(out.contains("verdict: valid"), "{out}");

    // Read back as the value from before the site was lost: the run said valid, today's checkers say invalid.
    let lost = recorded_dir("lost", &site_loss("open#1"));
    let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&lost)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let (code, out) = check(&lost, &["--scenario", scenario]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("recorded verdict: valid"), "{out}");
    assert!(out.contains("verdict: invalid"), "{out}");
    assert!(
        out.contains("violation: durability")
            && out.contains("busy#2")
            && out.contains("after the last fault"),
        "{out}"
    );
    assert!(out.contains("lost 1, observed RPO 0 ms"), "{out}");
    assert!(
        out.contains("replay: cargo run --release -p poolchaos -- run"),
        "{out}"
    );
    // Nothing in the report directory changed.
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    assert_eq!(std::fs::read_dir(&lost).unwrap().count(), before.len());

    // Asked to, it writes the new report elsewhere.
    let out_dir = dir("rejudged");
    let (code, _) = check(
        &lost,
        &["--scenario", scenario, "--out", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["verdict"], "invalid");
    assert_eq!(summary["operators"][1]["command"], "pool-failback");

    for d in [scenarios, kept, lost, out_dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn check_of_a_directory_without_a_history_is_an_error() {
    let empty = dir("empty");
    let (code, out) = check(&empty, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("history.jsonl"), "{out}");
    std::fs::remove_dir_all(empty).unwrap();
}
