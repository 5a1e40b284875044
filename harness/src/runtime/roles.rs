//! How each node role is started: the image, its command, the ports the harness publishes and the line it
//! prints when ready. This is the one place that knows the `poolnode` command line; pointing the harness at
//! another system's images means changing this file, not the topology format.

use crate::images::{self, ImageSpec};
use crate::topology::{NodeRole, NodeSpec, Role};

/// SIP over TCP and UDP, on every SIP role.
pub const SIP_PORT: u16 = 5060;
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

/// How one container is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub image: ImageSpec,
    pub cmd: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// A stdout line starting with this says the node is ready.
    pub ready_prefix: String,
}

/// The launch of a pool node.
pub fn node(node: &NodeSpec) -> Launch {
    let role = node.role.as_str();
    // Only SIP over TCP is published: the harness's users speak TCP, and every published port costs a
    // userland proxy process that slows start-up and teardown (UDP stays reachable inside the networks).
    let sip = vec![PortSpec {
        port: SIP_PORT,
        protocol: "tcp",
    }];
    let listen = format!("0.0.0.0:{SIP_PORT}");
    let cmd: Vec<String> = match node.role {
        // Until the Front End pool lands, each Front End runs alone with open registration.
        NodeRole::Pool(Role::Frontend) => vec![
            "frontend".into(),
            "--standalone".into(),
            "--open".into(),
            "--listen".into(),
            listen,
        ],
        _ => vec![
            role.to_string(),
            "--listen".into(),
            listen,
            "--node".into(),
            node.name.clone(),
        ],
    };
    Launch {
        image: images::POOLNODE,
        cmd,
        ports: sip,
        ready_prefix: format!("poolnode {role} ready"),
    }
}

/// The launch of the fault proxy.
pub fn proxy(seed: u64, links: usize) -> Launch {
    Launch {
        image: images::TOXIPROXY,
        cmd: vec![
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            PROXY_API_PORT.to_string(),
            "--seed".into(),
            seed.to_string(),
        ],
        ports: std::iter::once(PROXY_API_PORT)
            .chain((0..links as u16).map(|i| PROXY_LINK_PORT_BASE + i))
            .map(|port| PortSpec {
                port,
                protocol: "tcp",
            })
            .collect(),
        ready_prefix: "faultproxy ready".into(),
    }
}
