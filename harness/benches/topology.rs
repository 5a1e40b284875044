//! Benchmark (reported, not a timed test): start-up (images already built, to every node ready) and teardown
//! of a 17-container paired topology, over several rounds. Goal: ready in under 5 s, gone in under 3 s.
//!
//! `cargo bench -p poolchaos --bench topology [-- ROUNDS]`

use std::path::PathBuf;
use std::time::Duration;

use poolchaos::runtime::Cluster;
use poolchaos::topology::Topology;

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/topologies/paired-17.toml");
    let topology = Topology::load(&path).expect("valid topology");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (mut ready, mut gone) = (Vec::new(), Vec::new());
    let mut containers = 0;
    for round in 0..=rounds {
        let cluster = rt
            .block_on(Cluster::up(topology.clone(), round as u64))
            .expect("up");
        containers = cluster.nodes.len();
        let t = rt.block_on(cluster.down()).expect("down");
        // Round 0 warms the images (and builds them if stale); it is not counted.
        if round > 0 {
            ready.push(t.start_to_ready);
            gone.push(t.teardown);
        }
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (r_min, r_med, r_max) = stats(&mut ready);
    let (g_min, g_med, g_max) = stats(&mut gone);
    println!(
        "topology {} ({containers} containers), {rounds} rounds",
        topology.name
    );
    println!("| phase | min | median | max | goal |");
    println!("|---|---|---|---|---|");
    println!("| start-up to all ready | {r_min:.2?} | {r_med:.2?} | {r_max:.2?} | < 5 s |");
    println!("| teardown | {g_min:.2?} | {g_med:.2?} | {g_max:.2?} | < 3 s |");
}
