//! How each node is started: the image, its command, the ports the harness publishes and the line it prints
//! when ready. This is the one place that knows the `poolnode` command line (the reference pool); any other
//! subject's launches come from its subject file ([`crate::subject`]).

use serde_json::{json, Value};

use crate::images::{self, ImageSpec};
use crate::subject::{Subject, SubjectImage};
use crate::topology::{NodeRole, NodeSpec, Role, Topology, USERS};

/// SIP over TCP and UDP, on every SIP role.
pub const SIP_PORT: u16 = crate::subject::DEFAULT_SIP_PORT;
/// Every node's HTTP admin API (`GET /status`, bearer-guarded commands).
pub const ADMIN_PORT: u16 = 8080;
/// Peer traffic between servers (replication, backup service, the Back End's store protocol).
pub const PEER_PORT: u16 = 5070;
/// The environment variables a node reads: the cluster description (JSON) and its own name.
pub const CLUSTER_ENV: &str = "POOLNODE_CLUSTER";
pub const NODE_ENV: &str = "POOLNODE_NODE";
/// The defect a node of the known-bad pool plants (only its image, `poolchaos/poolnode-defects`, knows it).
pub const DEFECT_ENV: &str = "POOLNODE_DEFECT";
/// The fault proxy's HTTP API.
pub const PROXY_API_PORT: u16 = 8474;
/// First port the fault proxy listens on for proxied links; link `i` gets `PROXY_LINK_PORT_BASE + i`.
pub const PROXY_LINK_PORT_BASE: u16 = 20000;

/// A published port of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: &'static str,
}

/// The image a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchImage {
    /// One of the workspace's images (the reference pool, the fault proxy).
    Workspace(ImageSpec),
    /// A subject's image made of installed packages (`images::ensure_packaged`), by repository.
    Packaged(String),
}

/// How one container is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub image: LaunchImage,
    pub cmd: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// A log line (stdout or stderr) containing this says the node is ready.
    pub ready_line: String,
    /// Whether the node serves the admin API (`GET /status`) the probes read.
    pub has_admin: bool,
    /// A TCP port the node always listens on: network faults prove a cut (or a heal) by dialling it.
    pub probe_port: u16,
    /// Whether it joins the WAN besides its site's network.
    pub wan: bool,
    /// Whether it reads the cluster description (`POOLNODE_CLUSTER`) and its name from the environment.
    pub cluster_env: bool,
}

/// The launch of a node of the topology's subject.
pub fn node(subject: &Subject, node: &NodeSpec) -> Launch {
    match (&subject.image, node.role) {
        (SubjectImage::Packaged(image), NodeRole::Pool(role)) => match subject.roles.get(&role) {
            Some(launch) => {
                // The node's number in its pool (`kam-2` → 2), for subjects that need a distinct id per node.
                let index = node
                    .name
                    .strip_prefix(&format!("{}-", node.pool))
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0)
                    .to_string();
                let fill = |word: &String| {
                    word.replace("{node}", &node.name)
                        .replace("{pool}", &node.pool)
                        .replace("{site}", &node.site)
                        .replace("{index}", &index)
                };
                Launch {
                    image: LaunchImage::Packaged(image.repository.clone()),
                    cmd: launch.command.iter().map(fill).collect(),
                    ports: vec![PortSpec {
                        port: launch.sip_port,
                        protocol: "tcp",
                    }],
                    ready_line: launch.ready.clone(),
                    has_admin: subject.probes.status,
                    probe_port: launch.probe_port,
                    wan: launch.wan,
                    cluster_env: false,
                }
            }
            // Topology validation admits only roles the subject plays.
            None => unreachable!("subject {} does not play {role}", subject.name),
        },
        _ => reference_node(node),
    }
}

/// The launch of a node of the reference pool.
fn reference_node(node: &NodeSpec) -> Launch {
    let role = node.role.as_str();
    // SIP roles publish SIP over TCP for people using `poolchaos up`; the harness itself goes through the
    // tunnel. Every published port costs a userland proxy process that slows start-up and teardown, so
    // nothing else is published.
    let sip_role = matches!(
        node.role,
        NodeRole::Pool(Role::Frontend | Role::Director | Role::Edge)
    );
    let ports = if sip_role {
        vec![PortSpec {
            port: SIP_PORT,
            protocol: "tcp",
        }]
    } else {
        Vec::new()
    };
    // Every role finds itself in the cluster description by POOLNODE_NODE; `--node` says it on the command
    // line too where the role takes it, so `docker ps` shows which node a container is.
    let cmd: Vec<String> = match node.role {
        NodeRole::Pool(Role::Backend) | NodeRole::Witness => vec![role.to_string()],
        _ => vec![role.to_string(), "--node".into(), node.name.clone()],
    };
    Launch {
        image: LaunchImage::Workspace(images::POOLNODE),
        cmd,
        ports,
        ready_line: format!("poolnode {role} ready"),
        has_admin: true,
        probe_port: ADMIN_PORT,
        wan: true,
        cluster_env: true,
    }
}

/// The port a link `from -> to` carries: SIP for clients, and for every SIP hop between pools (Director,
/// Edge, Mediation, gateway); the peer port between Front Ends and to Back Ends.
pub fn link_port(topology: &Topology, from: &str, to: &str) -> u16 {
    let role_of = |pool: &str| topology.pool(pool).map(|p| p.pool.role);
    match (from, role_of(to)) {
        (USERS, _) => SIP_PORT,
        (_, Some(Role::Backend)) => PEER_PORT,
        (_, Some(Role::Frontend)) if role_of(from) == Some(Role::Frontend) => PEER_PORT,
        _ => SIP_PORT,
    }
}

/// The name of simulated user `n` (from 1) homed on `home`.
pub fn user_name(home: &str, n: usize) -> String {
    format!("{home}-u{n:04}")
}

/// A user's password: derived from the name, so the harness and the pool agree without a file.
pub fn user_password(name: &str) -> String {
    format!("pw-{name}")
}

/// The cluster description every node reads from `POOLNODE_CLUSTER` (the pool's side of it is
/// `poolnode::cluster::ClusterConfig`; a test in `tests/` checks the two agree).
pub fn cluster_json(topology: &Topology, admin_token: &str) -> Value {
    let pools: Vec<Value> = topology
        .pools
        .iter()
        .map(|p| {
            let nodes: Vec<&str> = p
                .nodes
                .iter()
                .filter(|n| n.role != NodeRole::Witness)
                .map(|n| n.name.as_str())
                .collect();
            let witness = p
                .nodes
                .iter()
                .find(|n| n.role == NodeRole::Witness)
                .map(|n| n.name.clone());
            json!({
                "name": p.pool.name,
                "role": p.pool.role.as_str(),
                "site": p.pool.site,
                "nodes": nodes,
                "pair": p.pool.pair,
                "backend": p.pool.backend,
                "witness": witness,
                "next_hop": p.pool.next_hop,
                "gateway": p.pool.gateway,
            })
        })
        .collect();
    let users: Vec<Value> = topology
        .users
        .iter()
        .flat_map(|u| {
            (1..=u.count).map(move |n| {
                let name = user_name(&u.home, n);
                json!({"name": name, "password": user_password(&name), "home": u.home})
            })
        })
        .collect();
    let routes: Vec<Value> = topology
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "from": l.from,
                "to": l.to,
                "address": format!("toxiproxy:{}", PROXY_LINK_PORT_BASE + i as u16),
            })
        })
        .collect();
    json!({
        "name": topology.name,
        "timings": timings(topology),
        "pools": pools,
        "users": users,
        "routes": routes,
        "admin_token": admin_token,
    })
}

/// The timers of the topology's profile with its overrides, as the pool reads them (milliseconds).
/// Mirrors `poolnode::cluster::Timings`; the contract test in `tests/` checks they agree.
fn timings(topology: &Topology) -> Value {
    let mut t = profile_timings(topology.profile);
    for (key, value) in &topology.timings {
        if let Ok(v) = serde_json::to_value(value) {
            t[key] = v;
        }
    }
    t
}

fn profile_timings(profile: crate::topology::Profile) -> Value {
    use crate::topology::Profile;
    match profile {
        Profile::Lync2013 => json!({
            "be_partner_timeout_ms": 10_000, "be_outage_grace_ms": 1_800_000, "be_write_interval_ms": 60_000,
            "fe_failure_timeout_ms": 10_000, "fe_heartbeat_interval_ms": 2_000, "replica_rebuild_delay_ms": 300_000,
            "backup_failover_interval_ms": 300_000, "backup_failback_interval_ms": 240_000,
            "backup_service_interval_ms": 120_000, "automatic_pool_failover": false,
            "registration_expiry_ms": 7_200_000, "keep_alive_timeout_ms": 300_000,
        }),
        Profile::Fast => json!({
            "be_partner_timeout_ms": 1_000, "be_outage_grace_ms": 5_000, "be_write_interval_ms": 200,
            "fe_failure_timeout_ms": 1_000, "fe_heartbeat_interval_ms": 200, "replica_rebuild_delay_ms": 2_000,
            "backup_failover_interval_ms": 3_000, "backup_failback_interval_ms": 3_000,
            "backup_service_interval_ms": 0, "automatic_pool_failover": true,
            "registration_expiry_ms": 60_000, "keep_alive_timeout_ms": 5_000,
        }),
    }
}

/// The launch of the fault proxy, which also serves the harness's tunnel into the networks.
pub fn proxy(seed: u64) -> Launch {
    Launch {
        image: LaunchImage::Workspace(images::TOXIPROXY),
        cmd: vec![
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            PROXY_API_PORT.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--tunnel".into(),
            format!("0.0.0.0:{}", super::tunnel::TUNNEL_PORT),
        ],
        ports: [PROXY_API_PORT, super::tunnel::TUNNEL_PORT]
            .into_iter()
            .map(|port| PortSpec {
                port,
                protocol: "tcp",
            })
            .collect(),
        ready_line: "faultproxy ready".into(),
        has_admin: false,
        probe_port: PROXY_API_PORT,
        wan: true,
        cluster_env: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::Subject;

    #[test]
    fn a_subjects_command_gets_each_nodes_names_and_number() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let subject = Subject::load(&root.join("suites/kamailio/subject.toml")).unwrap();
        let node = NodeSpec {
            name: "kam-2".into(),
            pool: "kam".into(),
            role: NodeRole::Pool(Role::Frontend),
            site: "dc1".into(),
        };
        let launch = super::node(&subject, &node);
        let cmd = launch.cmd.join(" ");
        assert!(
            cmd.contains("-A NODE=kam-2 -A POOL=kam -A SERVER_ID=2"),
            "{cmd}"
        );
        assert!(cmd.contains(r#"NODE_URI="sip:kam-2:5060""#), "{cmd}");
        assert!(!launch.wan && !launch.cluster_env && !launch.has_admin);
        assert_eq!(
            launch.image,
            LaunchImage::Packaged("poolchaos/kamailio".into())
        );
        // The reference pool's nodes are launched as ever.
        let reference = super::node(&Subject::reference(), &node);
        assert!(reference.cluster_env && reference.has_admin && reference.wan);
        assert_eq!(reference.image, LaunchImage::Workspace(images::POOLNODE));
    }
}
