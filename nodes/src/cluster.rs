//! The cluster description every node of a pool gets at start: the pools, their nodes, the users, the
//! timing profile and the routes through the fault proxy. The harness writes it (from a topology file) as
//! JSON into the `POOLNODE_CLUSTER` environment variable; a node reads it with [`ClusterConfig::from_env`]
//! and finds itself by `POOLNODE_NODE`. This is the whole contract between the harness and the pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// SIP over TCP and UDP, on every SIP role.
pub const SIP_PORT: u16 = 5060;
/// HTTP admin and status API of every node (`GET /status`; operator commands with a bearer token).
pub const ADMIN_PORT: u16 = 8080;
/// Peer traffic between servers: Front End replication and backup service, the Back End's store protocol
/// (Front End to principal, principal to mirror, witness votes).
pub const PEER_PORT: u16 = 5070;

/// The environment variable that carries the cluster description (JSON).
pub const CLUSTER_ENV: &str = "POOLNODE_CLUSTER";
/// The environment variable that names the node this process is.
pub const NODE_ENV: &str = "POOLNODE_NODE";

/// Everything a node knows about the cluster it is part of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub name: String,
    pub timings: Timings,
    pub pools: Vec<PoolConfig>,
    pub users: Vec<UserConfig>,
    /// Links that pass through the fault proxy: a node of pool `from` reaches pool `to` at `address`
    /// instead of `<to>:<port>`.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The bearer token of the HTTP admin API.
    pub admin_token: String,
}

/// One pool: its role, site and servers (in topology order: the first ones are the quorum's seed servers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    /// `frontend`, `backend`, `director`, `edge`, `mediation` or `pstn-gateway`.
    pub role: String,
    pub site: String,
    /// Node names; they resolve by DNS inside the networks, as does the pool name (to all of them).
    pub nodes: Vec<String>,
    /// Front End pools: the paired pool (backup registrar).
    #[serde(default)]
    pub pair: Option<String>,
    /// Front End pools: their Back End pool.
    #[serde(default)]
    pub backend: Option<String>,
    /// Back End pools: the witness node, if any.
    #[serde(default)]
    pub witness: Option<String>,
    /// Edge pools: the Director pool they relay to.
    #[serde(default)]
    pub next_hop: Option<String>,
    /// Mediation pools: the PSTN gateway pool.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A user account: credentials and home pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    pub home: String,
}

/// A link through the fault proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub from: String,
    pub to: String,
    /// `host:port` of the proxy's listener for this link.
    pub address: String,
}

/// Every timer of the pool model, in milliseconds. Two named profiles: [`Timings::lync2013`] (the
/// published values) and [`Timings::fast`] (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Back End: a partner not heard from for this long is lost (SQL Server: 10 s).
    pub be_partner_timeout_ms: u64,
    /// Front End: Back End unavailable this long puts users in resiliency mode (Lync: 30 min).
    pub be_outage_grace_ms: u64,
    /// Front End → Back End lazy write interval (not published: ours).
    pub be_write_interval_ms: u64,
    /// Front End: a peer not heard from for this long is dead (ours).
    pub fe_failure_timeout_ms: u64,
    /// Front End: heartbeat interval between peers of a pool (ours).
    pub fe_heartbeat_interval_ms: u64,
    /// Front End: a lost replica is rebuilt elsewhere after this delay (not published: ours).
    pub replica_rebuild_delay_ms: u64,
    /// Backup registrar: the pair's heartbeat missed this long before users are accepted (Lync: 300 s).
    pub backup_failover_interval_ms: u64,
    /// Backup registrar: home pool back this long before users are sent home (Lync: 240 s).
    pub backup_failback_interval_ms: u64,
    /// Backup service copy interval; 0 streams continuously (Lync: 120 s).
    pub backup_service_interval_ms: u64,
    /// Whether the backup pool fails over by itself after the failover interval (beyond Lync).
    pub automatic_pool_failover: bool,
    /// Registration expiry granted to clients (Lync: 7200 s).
    pub registration_expiry_ms: u64,
    /// Keep-alive timeout announced to clients (`ms-keep-alive`, Lync: 300 s).
    pub keep_alive_timeout_ms: u64,
}

impl Timings {
    /// The published Lync Server 2013 and SQL Server values; ours where nothing is published.
    pub fn lync2013() -> Timings {
        Timings {
            be_partner_timeout_ms: 10_000,
            be_outage_grace_ms: 30 * 60_000,
            be_write_interval_ms: 60_000,
            fe_failure_timeout_ms: 10_000,
            fe_heartbeat_interval_ms: 2_000,
            replica_rebuild_delay_ms: 5 * 60_000,
            backup_failover_interval_ms: 300_000,
            backup_failback_interval_ms: 240_000,
            backup_service_interval_ms: 120_000,
            automatic_pool_failover: false,
            registration_expiry_ms: 7_200_000,
            keep_alive_timeout_ms: 300_000,
        }
    }

    /// Seconds instead of minutes, for tests.
    pub fn fast() -> Timings {
        Timings {
            be_partner_timeout_ms: 1_000,
            be_outage_grace_ms: 5_000,
            be_write_interval_ms: 200,
            fe_failure_timeout_ms: 1_000,
            fe_heartbeat_interval_ms: 200,
            replica_rebuild_delay_ms: 2_000,
            backup_failover_interval_ms: 3_000,
            backup_failback_interval_ms: 3_000,
            backup_service_interval_ms: 0,
            automatic_pool_failover: true,
            registration_expiry_ms: 60_000,
            keep_alive_timeout_ms: 5_000,
        }
    }

    /// A profile by its name in topology files.
    pub fn named(name: &str) -> Option<Timings> {
        match name {
            "fast" => Some(Timings::fast()),
            "lync2013" => Some(Timings::lync2013()),
            _ => None,
        }
    }
}

/// Why the cluster description could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("read {CLUSTER_ENV}: it is not set (the harness sets it; for a pool alone use --standalone)")]
    Missing,
    #[error("parse {CLUSTER_ENV}: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("find node `{0}` in the cluster description")]
    UnknownNode(String),
}

impl ClusterConfig {
    /// Reads the description from `POOLNODE_CLUSTER`.
    pub fn from_env() -> Result<ClusterConfig, ClusterError> {
        let text = std::env::var(CLUSTER_ENV).map_err(|_| ClusterError::Missing)?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pool a node belongs to (a Back End's witness belongs to its Back End pool).
    pub fn pool_of(&self, node: &str) -> Result<&PoolConfig, ClusterError> {
        self.pools
            .iter()
            .find(|p| p.nodes.iter().any(|n| n == node) || p.witness.as_deref() == Some(node))
            .ok_or_else(|| ClusterError::UnknownNode(node.to_string()))
    }

    /// Where a node of pool `from` reaches pool (or node) `to` on `port`: through the fault proxy when a
    /// route says so, else by DNS name.
    pub fn address(&self, from: &str, to: &str, port: u16) -> String {
        self.routes
            .iter()
            .find(|r| r.from == from && r.to == to)
            .map(|r| r.address.clone())
            .unwrap_or_else(|| format!("{to}:{port}"))
    }

    /// Users by home pool.
    pub fn users_of<'a>(&'a self, pool: &'a str) -> impl Iterator<Item = &'a UserConfig> + 'a {
        self.users.iter().filter(move |u| u.home == pool)
    }

    /// Credentials by user name.
    pub fn credentials(&self) -> BTreeMap<String, String> {
        self.users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_profile_is_shorter_than_lync_in_every_timer() {
        let (f, l) = (Timings::fast(), Timings::lync2013());
        assert!(f.be_partner_timeout_ms < l.be_partner_timeout_ms);
        assert!(f.backup_failover_interval_ms < l.backup_failover_interval_ms);
        assert_eq!(l.backup_failover_interval_ms, 300_000);
        assert_eq!(l.backup_failback_interval_ms, 240_000);
        assert_eq!(l.be_outage_grace_ms, 1_800_000);
        assert!(
            !l.automatic_pool_failover,
            "automatic pool failover is beyond Lync: off in lync2013"
        );
    }

    #[test]
    fn routes_override_dns_names() {
        let c = ClusterConfig {
            name: "t".into(),
            timings: Timings::fast(),
            pools: vec![],
            users: vec![],
            routes: vec![Route {
                from: "fe1".into(),
                to: "be1".into(),
                address: "toxiproxy:20001".into(),
            }],
            admin_token: "t".into(),
        };
        assert_eq!(c.address("fe1", "be1", PEER_PORT), "toxiproxy:20001");
        assert_eq!(c.address("fe2", "be1", PEER_PORT), "be1:5070");
    }
}
