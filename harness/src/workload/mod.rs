//! The workload: simulated users, many per process, each a SIP client of its home pool.
//!
//! - [`sip`]: the users' own small SIP (framing, requests, digest), apart from the pool's.
//! - [`user`]: one user's life: find the pool, register, refresh, keep alive, notice loss, register again,
//!   publish, subscribe, change contacts, send IMs, place calls; a module per concept (its loop across
//!   connections, finding a server, one connection's session, what the server sends, what the user does, requests).
//!
//! The harness moves every user along with a [`Directive`]: work while `Running`, read back at `Final`, `Stop`.

pub mod sip;
pub mod user;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::Recorder;
use crate::runtime::roles;
use crate::topology::{Role, Topology};
use sip::Transport;
pub use user::UserSpec;

/// What every user does, and how fast (a scenario's `[workload]` table, through `Scenario::settings`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// REGISTER `Expires`.
    pub register_expires_s: u32,
    /// How often a registered user refreshes.
    pub refresh_interval: Duration,
    /// `CRLF CRLF` keep-alive interval.
    pub keepalive_interval: Duration,
    /// Silence from the server longer than this is a lost registration.
    pub dead_after: Duration,
    /// On a new connection, silence this long (no answer to the REGISTER or to a keep-alive) gives it up.
    pub first_answer: Duration,
    /// A request without a final answer this long is a timeout.
    pub request_timeout: Duration,
    /// Connect timeout per server address.
    pub connect_timeout: Duration,
    /// Each user sends one IM per interval (none if absent).
    pub im_interval: Option<Duration>,
    /// Each user publishes its presence once per interval (besides once after each registration).
    pub publish_interval: Option<Duration>,
    /// Each user adds a new contact to its list once per interval (none if absent): writes that no later write
    /// supersedes, so the final read of the list shows any that was lost.
    pub contact_interval: Option<Duration>,
    /// Each user able to call places one call per interval (none if absent).
    pub call_interval: Option<Duration>,
    /// How long the gateway holds each call before hanging up.
    pub call_hold: Duration,
    /// Users start spread over this long.
    pub start_spread: Duration,
    /// After a lost registration or a failed connect, a user waits between half this and this.
    pub retry_backoff: Duration,
    /// The SIP port of the pools.
    pub sip_port: u16,
    /// Whether the subject serves presence (PUBLISH, SUBSCRIBE): users publish and subscribe only if so.
    pub presence: bool,
    /// Whether the subject keeps contact lists: users add their contact and read their list at the end only if so.
    pub contacts: bool,
    /// Users that sign off during the run (REGISTER `Expires: 0`) and do nothing more (none if absent).
    pub sign_off: Option<SignOff>,
}

/// Who signs off, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignOff {
    /// How long after the users were started.
    pub after: Duration,
    /// The share of the users (0.0–1.0), drawn from the seed.
    pub share: f64,
    /// Whether they leave without a word (close their connection, send no unregister), so their bindings
    /// expire, instead of signing off with `Expires: 0`.
    pub silently: bool,
}

impl SignOff {
    /// Whether the user with this seed is one of those that sign off.
    pub fn picks(&self, user_seed: u64) -> bool {
        // The user's seed is a mix of the run's seed and the user's index: its low bits are as good as a draw.
        ((user_seed % 10_000) as f64) < self.share * 10_000.0
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            register_expires_s: 60,
            refresh_interval: Duration::from_secs(20),
            keepalive_interval: Duration::from_millis(500),
            dead_after: Duration::from_millis(2500),
            first_answer: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(1000),
            im_interval: Some(Duration::from_secs(2)),
            publish_interval: None,
            contact_interval: None,
            start_spread: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(400),
            call_interval: None,
            call_hold: Duration::from_secs(3),
            sip_port: roles::SIP_PORT,
            presence: true,
            contacts: true,
            sign_off: None,
        }
    }
}

/// What the harness tells every user to do: work while `Running`, read back its data at `Final`, and stop at
/// `Stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Running,
    Final,
    Stop,
}

/// The users of a topology, as the harness and the pool both name them. Of each `[[users]]` entry, the
/// first `remote` users are remote (in through the Edge pools only).
pub fn users_of(topology: &Topology, seed: u64) -> Vec<UserSpec> {
    let names: Vec<(String, String, bool, Transport)> = topology
        .users
        .iter()
        .flat_map(|u| {
            (1..=u.count).map(move |n| {
                let transport = if n + u.udp > u.count {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                (
                    roles::user_name(&u.home, n),
                    u.home.clone(),
                    n <= u.remote,
                    transport,
                )
            })
        })
        .collect();
    // Pools of a role, those in `site` first: DNS SRV priorities as a client of that site gets them.
    let by_site = |role: Role, site: &str| -> Vec<String> {
        let mut pools: Vec<(bool, String)> = topology
            .pools
            .iter()
            .filter(|p| p.pool.role == role)
            .map(|p| (p.pool.site != site, p.pool.name.clone()))
            .collect();
        pools.sort();
        pools.into_iter().map(|(_, name)| name).collect()
    };
    names
        .iter()
        .enumerate()
        .map(|(i, (name, home, remote, transport))| {
            let pool = topology.pool(home);
            let site = pool.map(|p| p.pool.site.clone()).unwrap_or_default();
            let backup = pool.and_then(|p| p.pool.pair.clone());
            let via = topology
                .links
                .iter()
                .position(|l| l.from == crate::topology::USERS && l.to == *home)
                .map(|i| {
                    (
                        crate::runtime::cluster::PROXY.to_string(),
                        roles::PROXY_LINK_PORT_BASE + i as u16,
                    )
                });
            // Each user writes to and watches its neighbour in the same home pool, so every user is both a
            // sender and a recipient. (Presence across pools is not part of the pool model's claims: the
            // Front End serves presence of its own pool's users.)
            let same_home: Vec<&String> = names
                .iter()
                .filter(|(_, h, _, _)| h == home)
                .map(|(n, _, _, _)| n)
                .collect();
            let me = same_home.iter().position(|n| *n == name).unwrap_or(0);
            let next = same_home[(me + 1) % same_home.len()].clone();
            UserSpec {
                name: name.clone(),
                password: roles::user_password(name),
                home: home.clone(),
                backup,
                im_targets: if same_home.len() > 1 {
                    vec![next.clone()]
                } else {
                    vec![]
                },
                contact: (same_home.len() > 1).then_some(next),
                seed: seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                director: by_site(Role::Director, &site).into_iter().next(),
                calls: !*remote
                    && topology
                        .pools
                        .iter()
                        .any(|p| p.pool.role == Role::Mediation),
                edges: if *remote {
                    by_site(Role::Edge, &site)
                } else {
                    Vec::new()
                },
                via,
                transport: *transport,
                sign_off_at: None,
            }
        })
        .collect()
}

/// Running users: tell them what to do next and wait for them.
pub struct Workload {
    directive: watch::Sender<Directive>,
    tasks: JoinSet<()>,
}

impl Workload {
    /// Starts every user. `nodes` names every node by its addresses (see [`node_addresses`]).
    pub fn start(
        users: Vec<UserSpec>,
        tunnel: SocketAddr,
        recorder: Recorder,
        settings: Settings,
        nodes: Arc<HashMap<String, String>>,
    ) -> Workload {
        let (directive, rx) = watch::channel(Directive::Running);
        let mut tasks = JoinSet::new();
        let started = tokio::time::Instant::now() + settings.start_spread;
        for mut spec in users {
            spec.sign_off_at = settings
                .sign_off
                .filter(|s| s.picks(spec.seed))
                .map(|s| started + s.after);
            tasks.spawn(user::run(
                spec,
                tunnel,
                recorder.clone(),
                settings,
                nodes.clone(),
                rx.clone(),
            ));
        }
        Workload { directive, tasks }
    }

    /// Every registered user reads back its contact list, then stops; users still away stop at `deadline`.
    pub async fn finish(mut self, deadline: Duration) {
        let _ = self.directive.send(Directive::Final);
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, all_done).await.is_err() {
            let _ = self.directive.send(Directive::Stop);
            let rest = async { while self.tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(Duration::from_secs(10), rest)
                .await
                .is_err()
            {
                self.tasks.abort_all();
            }
        }
    }
}

/// Every node's name by each address it has in the networks (as the tunnel resolves its name), so a user can say
/// which node it dialled. A node that does not resolve is left out (its users' `entry` stays unknown).
pub async fn node_addresses(
    tunnel: SocketAddr,
    topology: &Topology,
) -> Arc<HashMap<String, String>> {
    // Every name asked at once: this runs before the users start.
    let asks = topology.nodes().map(|node| async move {
        let ips =
            crate::runtime::tunnel::resolve_within(tunnel, &node.name, Duration::from_secs(3))
                .await;
        (node.name.clone(), ips.unwrap_or_default())
    });
    let mut nodes = HashMap::new();
    for (name, ips) in futures::future::join_all(asks).await {
        for ip in ips {
            nodes.insert(ip.to_string(), name.clone());
        }
    }
    Arc::new(nodes)
}
