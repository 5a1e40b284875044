//! Benchmark (reported, not a timed test): how many simulated users one process carries, and the CPU it
//! takes. Goal: 10,000 users on this 2-core machine using at most one core.
//!
//! A standalone Front End (the static `poolnode`) and the tunnel (the static `faultproxy`) run as child
//! processes on loopback, so the CPU measured here is the users' alone. Users register, refresh, keep alive
//! and send IMs for a steady period; the benchmark reports registered users, CPU cores used and resident size.
//!
//! `cargo bench -p poolchaos --bench users [-- USERS [STEADY_S]]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolchaos::history::{Op, Outcome, Recorder, RunInfo};
use poolchaos::images;
use poolchaos::workload::{Settings, UserSpec, Workload};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let users = args.next().unwrap_or(10_000) as usize;
    let steady = Duration::from_secs(args.next().unwrap_or(30));
    let root = images::workspace_root();
    images::ensure(&root).expect("static binaries build");
    let fe_port = free_port();
    // Two tunnels: each holds both ends of its users' connections, and this machine's open-file limit
    // (20,000) would not let one process hold 2 × 10,000 sockets. In a run the tunnel lives in a container
    // with Docker's much larger limit.
    let tunnel_ports = [free_port(), free_port()];
    let mut fe = with_many_files(images::static_binary(&root, images::POOLNODE))
        .args([
            "frontend",
            "--standalone",
            "--open",
            "--listen",
            &format!("127.0.0.1:{fe_port}"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("poolnode starts");
    let mut tunnels: Vec<_> = tunnel_ports
        .iter()
        .map(|port| {
            with_many_files(images::static_binary(&root, images::TOXIPROXY))
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &free_port().to_string(),
                    "--tunnel",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("faultproxy starts")
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let names: Vec<String> = (1..=users).map(|n| format!("u{n:05}")).collect();
    let specs: Vec<UserSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| UserSpec {
            name: name.clone(),
            password: format!("pw-{name}"),
            home: "127.0.0.1".into(),
            backup: None,
            im_targets: vec![names[(i + 1) % users].clone()],
            contact: Some(names[(i + 1) % users].clone()),
            seed: i as u64,
            via: None,
            sign_off_at: None,
            director: None,
            calls: false,
            edges: Vec::new(),
            transport: Default::default(),
        })
        .collect();
    let settings = Settings {
        register_expires_s: 120,
        refresh_interval: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(5),
        dead_after: Duration::from_secs(20),
        im_interval: Some(Duration::from_secs(30)),
        start_spread: Duration::from_secs(10),
        sip_port: fe_port,
        ..Settings::default()
    };
    let recorder = Recorder::in_memory(RunInfo {
        scenario: "users-bench".into(),
        seed: 0,
        users: names.clone(),
        ..RunInfo::default()
    });

    let t0 = Instant::now();
    let registered = rt.block_on(async {
        let (even, odd): (Vec<_>, Vec<_>) = specs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let tunnel = |i: usize| std::net::SocketAddr::from(([127, 0, 0, 1], tunnel_ports[i]));
        let strip = |v: Vec<(usize, UserSpec)>| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>();
        let first = Workload::start(strip(even), tunnel(0), recorder.clone(), settings, Default::default());
        let second = Workload::start(strip(odd), tunnel(1), recorder.clone(), settings, Default::default());
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut registered = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            registered = count_registered(&recorder);
            if registered == users {
                break;
            }
        }
        let ramp = t0.elapsed();
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        tokio::time::sleep(steady).await;
        let cores = (cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
        let ims = recorder
            .snapshot()
            .operations()
            .iter()
            .filter(|o| matches!(o.op, Op::ImSend { .. }) && matches!(o.outcome, Outcome::Ok(_)))
            .count();
        println!("users {users}: registered {registered} in {ramp:.1?}");
        println!(
            "steady {steady:?}: {cores:.2} cores (goal ≤ 1.0), resident {} MiB, IMs acknowledged {ims}",
            rss_kib() / 1024
        );
        first.finish(Duration::from_secs(20)).await;
        second.finish(Duration::from_secs(20)).await;
        registered
    });
    let _ = fe.kill();
    let _ = fe.wait();
    for t in &mut tunnels {
        let _ = t.kill();
        let _ = t.wait();
    }
    assert_eq!(registered, users, "every user registered");
}

/// A command for `program` whose open-file limit allows two sockets per user (the tunnel holds both ends).
fn with_many_files(program: std::path::PathBuf) -> Command {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" \"$@\"",
    ])
    .arg(program);
    c
}

fn count_registered(recorder: &Recorder) -> usize {
    let mut users = std::collections::BTreeSet::new();
    for op in recorder.snapshot().operations() {
        if matches!(op.op, Op::Register { .. }) && matches!(op.outcome, Outcome::Ok(_)) {
            users.insert(op.user.clone());
        }
    }
    users.len()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// User + system CPU time of this process, from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
