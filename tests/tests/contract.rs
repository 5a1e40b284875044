//! The contract between harness and pool: the cluster description the harness writes into every node's
//! environment must read as the pool's `ClusterConfig`, with the same timers as the pool's own profiles.

use std::path::PathBuf;

use poolchaos::runtime::roles;
use poolchaos::topology::Topology;
use poolnode::cluster::{ClusterConfig, Timings};

/// Claim: for every topology in `suites/topologies`, the harness's description parses as the pool's type,
/// names every node and user, and carries exactly the pool's timer values for the topology's profile.
#[test]
fn the_harness_writes_what_the_pool_reads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../suites/topologies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("suites/topologies exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let topology = Topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let json = roles::cluster_json(&topology, "token");
        let config: ClusterConfig = serde_json::from_value(json)
            .unwrap_or_else(|e| panic!("{}: the pool cannot read it: {e}", path.display()));
        let profile = match topology.profile {
            poolchaos::topology::Profile::Fast => Timings::fast(),
            poolchaos::topology::Profile::Lync2013 => Timings::lync2013(),
        };
        // The profile's own values, with the topology's overrides on top.
        let mut expected = serde_json::to_value(profile).unwrap();
        for (key, value) in &topology.timings {
            expected[key] = serde_json::to_value(value).unwrap();
        }
        let expected: Timings = serde_json::from_value(expected).unwrap();
        assert_eq!(config.timings, expected, "{}", path.display());
        let nodes: usize = config
            .pools
            .iter()
            .map(|p| p.nodes.len() + p.witness.iter().count())
            .sum();
        assert_eq!(nodes, topology.nodes().count(), "{}", path.display());
        let users: usize = topology.users.iter().map(|u| u.count).sum();
        assert_eq!(config.users.len(), users);
        assert_eq!(config.routes.len(), topology.links.len());
        for node in topology.nodes() {
            assert_eq!(config.pool_of(&node.name).unwrap().name, node.pool);
        }
        seen += 1;
    }
    assert!(seen >= 2, "the suite's topologies were read");
}

/// Claim: the timers a topology may override are exactly the pool's timers, so an override always lands.
#[test]
fn overridable_timers_are_the_pools_timers() {
    let pool = serde_json::to_value(Timings::fast()).unwrap();
    let mut names: Vec<&str> = pool
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "automatic_pool_failover")
        .collect();
    names.sort();
    let mut ours = poolchaos::topology::TIMERS_MS.to_vec();
    ours.sort();
    assert_eq!(names, ours);
}
