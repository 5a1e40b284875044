//! Topology files: sites, pools per role, pairing, back ends and witnesses, users, the timing profile and the
//! links that pass through the fault proxy. Read with serde from TOML; every mistake names the file, the line,
//! the field and what was expected.
//!
//! ```toml
//! name = "paired"
//! profile = "fast"                      # timing profile: "fast" or "lync2013"
//!
//! [[site]]
//! name = "dc1"
//!
//! [[pool]]
//! name = "fe1"                          # the pool's DNS name, shared by its servers
//! role = "frontend"
//! site = "dc1"
//! size = 3
//! pair = "fe2"                          # backup pool in another site (reciprocal)
//! backend = "be1"
//!
//! [[pool]]
//! name = "be1"
//! role = "backend"                      # a principal and a mirror
//! site = "dc1"
//! witness = true                        # a third node that only votes
//!
//! [[users]]
//! home = "fe1"
//! count = 50
//! remote = 5                            # of them, how many sit on the external network
//! udp = 10                              # of them, how many speak SIP over UDP (the others over TCP)
//!
//! [[link]]
//! from = "fe1"                          # a pool, or "users" for the simulated clients
//! to = "be1"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::file_error::{line_of, toml_error, FileError};
pub use crate::role::Role;
use crate::subject::Subject;

/// A whole topology as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    pub name: String,
    #[serde(default)]
    pub profile: Profile,
    /// The system under test: a subject file relative to this one (see [`crate::subject`]); the reference pool
    /// when absent.
    pub subject: Option<Spanned<PathBuf>>,
    #[serde(rename = "site")]
    pub sites: Vec<Spanned<Site>>,
    #[serde(rename = "pool")]
    pub pools: Vec<Spanned<Pool>>,
    #[serde(default)]
    pub users: Vec<Spanned<Users>>,
    #[serde(default, rename = "link")]
    pub links: Vec<Spanned<Link>>,
    /// Timers of the profile to override, by their names in ms (`backup_failover_interval_ms = 5000`) or
    /// as a flag (`automatic_pool_failover = false`).
    #[serde(default)]
    pub timings: BTreeMap<String, toml::Value>,
}

/// The timing profile the pool runs with: every timer of the pool model is a setting of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Seconds instead of minutes, for tests.
    #[default]
    Fast,
    /// The published Lync Server 2013 and SQL Server values.
    Lync2013,
}

/// A data centre: one Docker network.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
}

/// Servers of one role, reached by one name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    pub role: Role,
    pub site: String,
    /// Number of servers. Back ends are always a principal and a mirror; leave it out for them.
    pub size: Option<usize>,
    /// Front End pools: the paired pool in another site (its backup registrar).
    pub pair: Option<String>,
    /// Front End pools: the back end pool that stores their users' data.
    pub backend: Option<String>,
    /// Back end pools: whether a witness makes failover automatic.
    #[serde(default)]
    pub witness: bool,
    /// Edge pools: the Director pool they relay to.
    pub next_hop: Option<String>,
    /// Mediation pools: the PSTN gateway pool they relay calls to.
    pub gateway: Option<String>,
}

/// Simulated users homed on one Front End pool.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    pub home: String,
    pub count: usize,
    /// How many of them are remote: on the external network, in only through an Edge pool.
    #[serde(default)]
    pub remote: usize,
    /// How many of them speak SIP over UDP (transport `udp`; the last ones of the entry; the rest speak TCP).
    /// Remote users come in over TCP through an Edge pool, so `remote + udp` is at most `count`.
    #[serde(default)]
    pub udp: usize,
}

/// A link that passes through the fault proxy, so link faults can be applied to it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The client side: a pool name, or `users` for the simulated clients.
    pub from: String,
    /// The server side: a pool name.
    pub to: String,
}

/// The timers a topology may override (ms), as the pool's timing profiles name them.
pub const TIMERS_MS: [&str; 11] = [
    "be_partner_timeout_ms",
    "be_outage_grace_ms",
    "be_write_interval_ms",
    "fe_failure_timeout_ms",
    "fe_heartbeat_interval_ms",
    "replica_rebuild_delay_ms",
    "backup_failover_interval_ms",
    "backup_failback_interval_ms",
    "backup_service_interval_ms",
    "registration_expiry_ms",
    "keep_alive_timeout_ms",
];

/// The pseudo-pool name that stands for the simulated users in links and partitions.
pub const USERS: &str = "users";

/// A validated topology: references resolved, pairing reciprocal, node names assigned.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub name: String,
    pub profile: Profile,
    /// The system its nodes run.
    pub subject: Subject,
    pub sites: Vec<String>,
    pub pools: Vec<PoolSpec>,
    pub users: Vec<Users>,
    pub links: Vec<Link>,
    /// Timer overrides on top of the profile.
    pub timings: BTreeMap<String, toml::Value>,
}

/// One pool with its nodes named.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSpec {
    #[serde(flatten)]
    pub pool: Pool,
    /// Its servers, in topology order (the first ones are the seed servers of the quorum rule).
    pub nodes: Vec<NodeSpec>,
}

/// One server: one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// `<pool>-<n>`, or `<pool>-witness`: its hostname and network alias.
    pub name: String,
    pub pool: String,
    pub role: NodeRole,
    pub site: String,
}

/// What a single node runs: a pool role, or the back end's witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Pool(Role),
    Witness,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Pool(role) => role.as_str(),
            NodeRole::Witness => "witness",
        }
    }
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: path.to_path_buf(),
            line: 0,
            field: "(file)".into(),
            expected: format!("a readable TOML file ({e})"),
        })?;
        Topology::parse(path, &text)
    }

    /// Parses and validates topology text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Topology, FileError> {
        let file: TopologyFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        validate(path, text, file)
    }

    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.iter().find(|p| p.pool.name == name)
    }

    /// Every node of every pool, in topology order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.pools.iter().flat_map(|p| p.nodes.iter())
    }

    /// The nodes a fault target names: `site:<name>`, a pool (every node of it) or a node; empty if none.
    pub fn expand(&self, target: &str) -> Vec<String> {
        let nodes = self.nodes();
        let hit: Vec<&NodeSpec> = if let Some(site) = target.strip_prefix("site:") {
            nodes.filter(|n| n.site == site).collect()
        } else if let Some(node) = self.node(target) {
            vec![node]
        } else {
            self.pool(target)
                .map(|p| p.nodes.iter().collect())
                .unwrap_or_default()
        };
        hit.into_iter().map(|n| n.name.clone()).collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes().find(|n| n.name == name)
    }

    /// Whether a link named `from -> to` passes through the fault proxy.
    pub fn link(&self, from: &str, to: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.from == from && l.to == to)
    }
}

fn validate(path: &Path, text: &str, file: TopologyFile) -> Result<Topology, FileError> {
    let err = |span: std::ops::Range<usize>, field: String, expected: String| FileError {
        file: path.to_path_buf(),
        line: line_of(text, span.start),
        field,
        expected,
    };
    let sites: Vec<String> = file
        .sites
        .iter()
        .map(|s| s.get_ref().name.clone())
        .collect();
    if sites.is_empty() {
        return Err(err(0..0, "site".into(), "at least one [[site]]".into()));
    }
    let subject = match &file.subject {
        None => Subject::reference(),
        Some(spanned) => {
            let at = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(spanned.get_ref());
            Subject::load(&at).map_err(|e| {
                err(
                    spanned.span(),
                    "subject".into(),
                    format!("a readable subject file: {e}"),
                )
            })?
        }
    };
    let mut seen = BTreeSet::new();
    for (i, site) in file.sites.iter().enumerate() {
        if !seen.insert(site.get_ref().name.clone()) {
            return Err(err(
                site.span(),
                format!("site[{i}].name"),
                format!(
                    "a unique site name; `{}` is used twice",
                    site.get_ref().name
                ),
            ));
        }
    }
    let roles: BTreeMap<String, (Role, String)> = file
        .pools
        .iter()
        .map(|p| {
            let p = p.get_ref();
            (p.name.clone(), (p.role, p.site.clone()))
        })
        .collect();
    let mut names = BTreeSet::new();
    let mut pools = Vec::new();
    for (i, spanned) in file.pools.iter().enumerate() {
        let span = spanned.span();
        let pool = spanned.get_ref();
        let at = |field: &str| format!("pool[{i}].{field} (pool `{}`)", pool.name);
        if pool.name.is_empty()
            || pool.name == USERS
            || !pool
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(err(
                span,
                at("name"),
                "a DNS label of lowercase letters, digits and '-', not `users`".into(),
            ));
        }
        if !names.insert(pool.name.clone()) {
            return Err(err(span, at("name"), "a pool name used only once".into()));
        }
        if !sites.contains(&pool.site) {
            return Err(err(
                span,
                at("site"),
                format!("one of the sites {sites:?}, not `{}`", pool.site),
            ));
        }
        if !subject.plays(pool.role) {
            return Err(err(
                span,
                at("role"),
                format!(
                    "a role the subject `{}` plays ({}), not {}",
                    subject.name,
                    subject
                        .roles
                        .keys()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    pool.role
                ),
            ));
        }
        let reference = |field: &str, value: &Option<String>, want: Role| match value {
            None => Ok(None),
            Some(name) => match roles.get(name) {
                Some((role, site)) if *role == want => Ok(Some(site.clone())),
                Some((role, _)) => Err(err(
                    span.clone(),
                    at(field),
                    format!("a {want} pool; `{name}` is a {role} pool"),
                )),
                None => Err(err(
                    span.clone(),
                    at(field),
                    format!("the name of a {want} pool in this file; there is no pool `{name}`"),
                )),
            },
        };
        let only = |field: &str, set: bool, role: Role| {
            if set && pool.role != role {
                Err(err(
                    span.clone(),
                    at(field),
                    format!("`{field}` only on {role} pools"),
                ))
            } else {
                Ok(())
            }
        };
        only("pair", pool.pair.is_some(), Role::Frontend)?;
        only("backend", pool.backend.is_some(), Role::Frontend)?;
        only("witness", pool.witness, Role::Backend)?;
        only("next_hop", pool.next_hop.is_some(), Role::Edge)?;
        only("gateway", pool.gateway.is_some(), Role::Mediation)?;
        if let Some(pair_site) = reference("pair", &pool.pair, Role::Frontend)? {
            let pair = pool.pair.as_deref().unwrap_or_default();
            if pair == pool.name {
                return Err(err(span, at("pair"), "another pool, not itself".into()));
            }
            if pair_site == pool.site {
                return Err(err(
                    span,
                    at("pair"),
                    format!(
                        "a pool in another site; `{pair}` is also in `{}`",
                        pool.site
                    ),
                ));
            }
            let back = file
                .pools
                .iter()
                .find(|p| p.get_ref().name == pair)
                .and_then(|p| p.get_ref().pair.clone());
            if back.as_deref() != Some(pool.name.as_str()) {
                return Err(err(
                    span,
                    at("pair"),
                    format!(
                        "reciprocal pairing: pool `{pair}` must say pair = \"{}\"",
                        pool.name
                    ),
                ));
            }
        }
        reference("backend", &pool.backend, Role::Backend)?;
        reference("next_hop", &pool.next_hop, Role::Director)?;
        reference("gateway", &pool.gateway, Role::PstnGateway)?;
        let size = match (pool.role, pool.size) {
            (Role::Backend, None) => 2,
            (Role::Backend, Some(_)) => {
                return Err(err(
                    span,
                    at("size"),
                    "no size: a back end is always a principal and a mirror".into(),
                ))
            }
            (Role::Frontend, Some(n)) if !(1..=12).contains(&n) => {
                return Err(err(
                    span,
                    at("size"),
                    format!("1 to 12 Front Ends (the quorum table's range), not {n}"),
                ))
            }
            (_, Some(0)) => return Err(err(span, at("size"), "at least 1 server".into())),
            (_, Some(n)) if n > 16 => {
                return Err(err(
                    span,
                    at("size"),
                    format!("at most 16 servers, not {n}"),
                ))
            }
            (_, Some(n)) => n,
            (_, None) => return Err(err(span, at("size"), "the number of servers".into())),
        };
        let mut nodes: Vec<NodeSpec> = (1..=size)
            .map(|n| NodeSpec {
                name: format!("{}-{n}", pool.name),
                pool: pool.name.clone(),
                role: NodeRole::Pool(pool.role),
                site: pool.site.clone(),
            })
            .collect();
        if pool.witness {
            nodes.push(NodeSpec {
                name: format!("{}-witness", pool.name),
                pool: pool.name.clone(),
                role: NodeRole::Witness,
                site: pool.site.clone(),
            });
        }
        pools.push(PoolSpec {
            pool: pool.clone(),
            nodes,
        });
    }
    for (i, spanned) in file.users.iter().enumerate() {
        let users = spanned.get_ref();
        let field = |f: &str| format!("users[{i}].{f}");
        match roles.get(&users.home) {
            Some((Role::Frontend, _)) => {}
            _ => {
                return Err(err(
                    spanned.span(),
                    field("home"),
                    format!("the name of a frontend pool; `{}` is not one", users.home),
                ))
            }
        }
        if users.remote > users.count {
            return Err(err(
                spanned.span(),
                field("remote"),
                format!("at most count ({}) remote users", users.count),
            ));
        }
        if users.remote + users.udp > users.count {
            return Err(err(
                spanned.span(),
                field("udp"),
                format!(
                    "at most count ({}) less the remote users ({}): remote users speak TCP through an Edge pool",
                    users.count, users.remote
                ),
            ));
        }
        let proxied = file.links.iter().any(|l| {
            let l = l.get_ref();
            l.from == USERS && l.to == users.home
        });
        if users.udp > 0 && proxied {
            return Err(err(
                spanned.span(),
                field("udp"),
                format!(
                    "0: the users of `{}` reach it through a proxied TCP link (`[[link]] from = \"users\"`)",
                    users.home
                ),
            ));
        }
        if users.remote > 0 && !roles.values().any(|(r, _)| *r == Role::Edge) {
            return Err(err(
                spanned.span(),
                field("remote"),
                "an edge pool: remote users get in only through one".into(),
            ));
        }
    }
    for (i, spanned) in file.links.iter().enumerate() {
        let link = spanned.get_ref();
        if link.from != USERS && !roles.contains_key(&link.from) {
            return Err(err(
                spanned.span(),
                format!("link[{i}].from"),
                format!("a pool name or `users`, not `{}`", link.from),
            ));
        }
        if !roles.contains_key(&link.to) {
            return Err(err(
                spanned.span(),
                format!("link[{i}].to"),
                format!("a pool name, not `{}`", link.to),
            ));
        }
    }
    for (key, value) in &file.timings {
        let ok = match value {
            toml::Value::Integer(v) => TIMERS_MS.contains(&key.as_str()) && *v >= 0,
            toml::Value::Boolean(_) => key == "automatic_pool_failover",
            _ => false,
        };
        if !ok {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key.as_str()))
                .map(|i| i + 1)
                .unwrap_or(0);
            return Err(FileError {
                file: path.to_path_buf(),
                line,
                field: format!("timings.{key}"),
                expected: format!(
                    "one of the timers {TIMERS_MS:?} as milliseconds, or `automatic_pool_failover = true|false`"
                ),
            });
        }
    }
    Ok(Topology {
        name: file.name,
        profile: file.profile,
        subject,
        timings: file.timings,
        sites,
        pools,
        users: file.users.into_iter().map(Spanned::into_inner).collect(),
        links: file.links.into_iter().map(Spanned::into_inner).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIRED: &str = r#"
name = "paired"

[[site]]
name = "dc1"

[[site]]
name = "dc2"

[[pool]]
name = "fe1"
role = "frontend"
site = "dc1"
size = 3
pair = "fe2"
backend = "be1"

[[pool]]
name = "fe2"
role = "frontend"
site = "dc2"
size = 3
pair = "fe1"

[[pool]]
name = "be1"
role = "backend"
site = "dc1"
witness = true

[[users]]
home = "fe1"
count = 10

[[link]]
from = "users"
to = "fe1"
"#;

    fn parse(text: &str) -> Result<Topology, FileError> {
        Topology::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn a_paired_topology_names_its_nodes_in_order() {
        let t = parse(PAIRED).unwrap();
        let names: Vec<_> = t.nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fe1-1",
                "fe1-2",
                "fe1-3",
                "fe2-1",
                "fe2-2",
                "fe2-3",
                "be1-1",
                "be1-2",
                "be1-witness"
            ]
        );
        assert_eq!(t.node("be1-witness").unwrap().role, NodeRole::Witness);
        assert!(t.link(USERS, "fe1").is_some());
    }

    #[test]
    fn a_misspelt_field_names_file_line_and_field() {
        let text = PAIRED.replace("size = 3\npair = \"fe2\"", "sise = 3\npair = \"fe2\"");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "sise");
        assert_eq!(e.line, 14, "{e}");
        assert!(
            e.to_string()
                .starts_with("read t.toml:14: sise: unknown field `sise`"),
            "{e}"
        );
    }

    #[test]
    fn a_one_sided_pairing_is_refused() {
        let text = PAIRED.replacen("pair = \"fe1\"\n", "", 1);
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "pool[0].pair (pool `fe1`)");
        assert!(e.expected.contains("reciprocal"), "{e}");
        assert_eq!(e.line, 10, "{e}");
    }

    #[test]
    fn a_reference_to_a_missing_pool_says_what_exists() {
        let text = PAIRED.replace("backend = \"be1\"", "backend = \"be9\"");
        let e = parse(&text).unwrap_err();
        assert!(e.expected.contains("there is no pool `be9`"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_reported_not_panicked() {
        let text = PAIRED.replace("count = 10", "count = \"ten\"");
        let e = parse(&text).unwrap_err();
        assert!(e.expected.contains("invalid type"), "{e}");
        assert_eq!(e.line, 33, "{e}");
    }

    #[test]
    fn a_misspelt_timer_override_is_refused() {
        let text = format!("{PAIRED}\n[timings]\nbackup_failover_intervl_ms = 5000\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "timings.backup_failover_intervl_ms", "{e}");
        let ok = format!("{PAIRED}\n[timings]\nbackup_failover_interval_ms = 5000\nautomatic_pool_failover = false\n");
        assert_eq!(parse(&ok).unwrap().timings.len(), 2);
    }

    #[test]
    fn udp_users_are_a_share_of_the_entry_and_never_behind_a_tcp_link() {
        let unproxied = PAIRED.replace("[[link]]\nfrom = \"users\"", "[[link]]\nfrom = \"fe1\"");
        let ok = parse(&unproxied.replace("count = 10", "count = 10\nudp = 4")).unwrap();
        assert_eq!(ok.users[0].udp, 4);
        let e = parse(&unproxied.replace("count = 10", "count = 10\nudp = 11")).unwrap_err();
        assert_eq!(e.field, "users[0].udp");
        let e = parse(&PAIRED.replace("count = 10", "count = 10\nudp = 2")).unwrap_err();
        assert_eq!(e.field, "users[0].udp");
        assert!(e.to_string().contains("proxied TCP link"), "{e}");
    }

    #[test]
    fn remote_users_need_an_edge_pool() {
        let text = PAIRED.replace("count = 10", "count = 10\nremote = 2");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field, "users[0].remote");
    }
}
