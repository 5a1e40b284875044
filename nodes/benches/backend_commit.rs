//! Commit latency (p50, p99) and commits/s of the Back End, mirrored against the same store without a mirror,
//! in one run, through the same client and server code:
//!
//! - **mirrored**: principal `be-1` and mirror `be-2`, synchronized: a commit is acknowledged once both SQLite
//!   files have fsync'd it.
//! - **unmirrored**: the same pool with `be-2` never started (no witness): `be-1` runs exposed and a commit is
//!   acknowledged once its own file has fsync'd it.
//!
//! Each configuration runs sequential commits (one client, one at a time: the latency figures) and then
//! concurrent commits (several clients: throughput). Run: `cargo bench -p poolnode --bench backend_commit`;
//! `BENCH_COMMITS=N` changes the number of sequential commits (default 2000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use poolnode::backend::{
    server::Backend, BackendClient, BackendConfig, Batch, ClientSettings, Listeners, Op, UserRecord,
};
use poolnode::cluster::{ClusterConfig, PoolConfig, Route, Timings};

const CONCURRENT_CLIENTS: usize = 8;

/// One configuration's measurements, merged over the rounds.
struct Figures {
    histogram: Histogram<u64>,
    sequential_commits: u64,
    sequential_time: Duration,
    concurrent_commits: u64,
    concurrent_time: Duration,
}

impl Figures {
    fn merge(&mut self, other: Figures) {
        self.histogram.add(&other.histogram).unwrap();
        self.sequential_commits += other.sequential_commits;
        self.sequential_time += other.sequential_time;
        self.concurrent_commits += other.concurrent_commits;
        self.concurrent_time += other.concurrent_time;
    }

    fn p(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    fn sequential_per_s(&self) -> f64 {
        self.sequential_commits as f64 / self.sequential_time.as_secs_f64()
    }

    fn concurrent_per_s(&self) -> f64 {
        self.concurrent_commits as f64 / self.concurrent_time.as_secs_f64()
    }
}

/// Configurations alternate, so a slow spell of the shared disk does not land on one of them only.
const ROUNDS: usize = 3;

fn batch(i: u64) -> Batch {
    Batch::new(vec![Op::PutUser(UserRecord {
        user: format!("bench{i:07}"),
        pool: "fe".into(),
        password: Some("pw".into()),
        contacts: vec!["alice".into(), "bob".into()],
        presence: vec![],
        settings: [("lang".to_string(), "de".to_string())].into(),
    })])
}

async fn run_configuration(mirrored: bool, commits: u64, round: usize) -> Figures {
    let root = std::env::temp_dir().join(format!(
        "poolnode-bench-{}-{}-{round}",
        std::process::id(),
        if mirrored { "mirrored" } else { "unmirrored" }
    ));
    let _ = std::fs::remove_dir_all(&root);
    let nodes = ["be-1", "be-2"];
    let mut listeners = Vec::new();
    for _ in nodes {
        listeners.push(
            Listeners::bind(
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .unwrap(),
        );
    }
    let peer: Vec<String> = listeners
        .iter()
        .map(|l| l.peer.local_addr().unwrap().to_string())
        .collect();
    let mut routes = Vec::new();
    for from in ["be-1", "be-2", "fe-1"] {
        for (to, address) in nodes.iter().zip(&peer) {
            routes.push(Route {
                from: from.into(),
                to: to.to_string(),
                address: address.clone(),
            });
        }
    }
    let cluster = Arc::new(ClusterConfig {
        name: "bench".into(),
        timings: Timings::fast(),
        pools: vec![PoolConfig {
            name: "be".into(),
            role: "backend".into(),
            site: "s".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            pair: None,
            backend: None,
            witness: None,
            next_hop: None,
            gateway: None,
        }],
        users: vec![],
        routes,
        admin_token: "bench".into(),
    });
    let mut tasks = Vec::new();
    for (node, l) in nodes.iter().zip(listeners) {
        if !mirrored && *node == "be-2" {
            continue; // its listener is dropped: the principal runs exposed
        }
        let backend =
            Backend::open(&BackendConfig::new(cluster.clone(), node, root.join(node))).unwrap();
        tasks.push(tokio::spawn(async move {
            let _ = backend.run(l, std::future::pending()).await;
        }));
    }
    let client = BackendClient::new(
        vec![("be-1".into(), peer[0].clone())],
        ClientSettings::from_timings(&cluster.timings),
    );
    // Wait for service: mirrored until the mirror is synchronized, unmirrored until the start-up hold is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = poolnode::backend::protocol::PeerConn::new("be-1", peer[0].clone());
    loop {
        if let Ok(poolnode::backend::protocol::Response::Pong(v)) = probe
            .request(
                &poolnode::backend::protocol::Request::View,
                Duration::from_secs(5),
            )
            .await
        {
            if v.serving && v.synchronized == mirrored {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the principal never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up.
    for i in 0..50 {
        client.write(batch(1_000_000 + i)).await.unwrap();
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let started = Instant::now();
    for i in 0..commits {
        let t = Instant::now();
        let receipt = client.write(batch(i)).await.unwrap();
        histogram.record(t.elapsed().as_micros() as u64).unwrap();
        assert_eq!(receipt.node, "be-1");
    }
    let sequential_time = started.elapsed();

    let per_client = commits / CONCURRENT_CLIENTS as u64;
    let started = Instant::now();
    let mut writers = Vec::new();
    for c in 0..CONCURRENT_CLIENTS as u64 {
        let client = BackendClient::new(
            vec![("be-1".into(), peer[0].clone())],
            ClientSettings::from_timings(&cluster.timings),
        );
        writers.push(tokio::spawn(async move {
            for i in 0..per_client {
                client
                    .write(batch(2_000_000 + c * 100_000 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let concurrent_time = started.elapsed();
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_dir_all(&root);
    Figures {
        histogram,
        sequential_commits: commits,
        sequential_time,
        concurrent_commits: per_client * CONCURRENT_CLIENTS as u64,
        concurrent_time,
    }
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less arguments; a quick smoke run is enough then.
    let quick = std::env::args().any(|a| a == "--test");
    let commits: u64 = std::env::var("BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100 } else { 2_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mirrored, unmirrored) = runtime.block_on(async {
        let mut unmirrored = run_configuration(false, commits, 0).await;
        let mut mirrored = run_configuration(true, commits, 0).await;
        for round in 1..ROUNDS {
            unmirrored.merge(run_configuration(false, commits, round).await);
            mirrored.merge(run_configuration(true, commits, round).await);
        }
        (mirrored, unmirrored)
    });
    println!(
        "backend_commit: {ROUNDS} alternating rounds of {commits} sequential commits per configuration, then {CONCURRENT_CLIENTS} concurrent clients"
    );
    println!(
        "{:<11} {:>9} {:>9} {:>9} {:>14} {:>14}",
        "config", "p50_us", "p99_us", "max_us", "seq_commits/s", "conc_commits/s"
    );
    for (name, f) in [("unmirrored", &unmirrored), ("mirrored", &mirrored)] {
        println!(
            "{name:<11} {:>9} {:>9} {:>9} {:>14.0} {:>14.0}",
            f.p(0.5),
            f.p(0.99),
            f.histogram.max(),
            f.sequential_per_s(),
            f.concurrent_per_s()
        );
    }
    println!(
        "ratio mirrored/unmirrored: p50 x{:.2}, p99 x{:.2}, sequential commits/s x{:.2}, concurrent commits/s x{:.2}",
        mirrored.p(0.5) as f64 / unmirrored.p(0.5) as f64,
        mirrored.p(0.99) as f64 / unmirrored.p(0.99) as f64,
        mirrored.sequential_per_s() / unmirrored.sequential_per_s(),
        mirrored.concurrent_per_s() / unmirrored.concurrent_per_s(),
    );
}
