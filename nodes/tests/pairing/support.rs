//! Two paired sites in one process, over real sockets on 127.0.0.1: Front End pools `pa` (pa1, pa2) in site `sa`
//! and `pb` (pb1, pb2) in site `sb`, each with its Back End pool (`bea` / `beb`: principal, mirror, witness), an
//! Edge pool `edge` (edge1, site `sc`) whose next hop is the Director pool `dira` (site `sa`), and Director pools
//! `dira` and `dirb` (site `sb`, not running: only their site matters). Users alice and bob are homed on `pa`,
//! carol and dave on `pb`.
//!
//! Every address a node needs is in the cluster description's routes (as the harness writes them), so nodes run
//! unchanged code. `kill_site` stops every server of a site as a site loss would (Front Ends lose their memory,
//! Back Ends keep their data directory); `start_site` is its undo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use poolnode::backend::operator::http_json;
use poolnode::backend::{server::Backend, witness::Witness, BackendConfig, Listeners};
use poolnode::cluster::{ClusterConfig, PoolConfig, Route, Timings, UserConfig};
use poolnode::frontend::pool::{BackendLink, PoolSettings};
use poolnode::frontend::pooled::{self, PoolConfig as FePoolConfig, PoolListeners};
use poolnode::frontend::{Credentials, FrontEnd, FrontEndConfig};
use poolnode::pairing::PairingConfig;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "pairing-test-token";
/// Polls give up after this: generous for a busy 2-core machine (a failover interval here is 1.5 s).
pub const CONVERGE: Duration = Duration::from_secs(60);

pub const PA: &str = "pa";
pub const PB: &str = "pb";

/// The fast profile, shortened further: pair heartbeat missed 1.5 s before resiliency mode.
pub fn timings(automatic: bool) -> Timings {
    Timings {
        fe_heartbeat_interval_ms: 100,
        fe_failure_timeout_ms: 1_000,
        backup_failover_interval_ms: 1_500,
        backup_failback_interval_ms: 1_500,
        backup_service_interval_ms: 0,
        automatic_pool_failover: automatic,
        ..Timings::fast()
    }
}

fn pool(name: &str, role: &str, site: &str, nodes: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        role: role.into(),
        site: site.into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        pair: None,
        backend: None,
        witness: None,
        next_hop: None,
        gateway: None,
    }
}

struct FeSlot {
    pool: &'static str,
    sip: SocketAddr,
    peer: SocketAddr,
    admin: SocketAddr,
    parked: Option<PoolListeners>,
    running: Option<(Arc<FrontEnd>, JoinHandle<()>)>,
}

struct BeSlot {
    peer: SocketAddr,
    admin: SocketAddr,
    parked: Option<Listeners>,
    data_dir: PathBuf,
    witness: bool,
    task: Option<JoinHandle<()>>,
}

pub struct Sites {
    pub cluster: Arc<ClusterConfig>,
    fes: BTreeMap<String, FeSlot>,
    bes: BTreeMap<String, BeSlot>,
    pub edge_admin: SocketAddr,
    edge_stop: Option<tokio::sync::oneshot::Sender<()>>,
    edge_task: Option<JoinHandle<()>>,
}

impl Sites {
    /// Binds every socket, writes the cluster description, starts everything.
    pub async fn start(timings: Timings) -> Sites {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut fes = BTreeMap::new();
        for (p, n) in [(PA, "pa1"), (PA, "pa2"), (PB, "pb1"), (PB, "pb2")] {
            let listeners = PoolListeners::bind(any, any, Some(any)).await.unwrap();
            fes.insert(
                n.to_owned(),
                FeSlot {
                    pool: p,
                    sip: listeners.sip.local_addr().unwrap(),
                    peer: listeners.peer.local_addr().unwrap(),
                    admin: listeners.admin.as_ref().unwrap().local_addr().unwrap(),
                    parked: Some(listeners),
                    running: None,
                },
            );
        }
        let root = std::env::temp_dir().join(format!(
            "poolnode-pairing-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut bes = BTreeMap::new();
        for n in [
            "bea-1",
            "bea-2",
            "bea-witness",
            "beb-1",
            "beb-2",
            "beb-witness",
        ] {
            let listeners = Listeners::bind(any, any).await.unwrap();
            bes.insert(
                n.to_owned(),
                BeSlot {
                    peer: listeners.peer.local_addr().unwrap(),
                    admin: listeners.admin.local_addr().unwrap(),
                    parked: Some(listeners),
                    data_dir: root.join(n),
                    witness: n.ends_with("witness"),
                    task: None,
                },
            );
        }
        let edge_listeners = poolnode::director::RoleListeners::bind(any, any)
            .await
            .unwrap();
        let edge_admin = edge_listeners.admin_addr();

        let mut routes = Vec::new();
        let mut route = |from: &str, to: &str, address: SocketAddr| {
            routes.push(Route {
                from: from.into(),
                to: to.into(),
                address: address.to_string(),
            })
        };
        for (name, be) in &bes {
            for from in [PA, PB, "bea", "beb", "operator"] {
                route(
                    from,
                    name,
                    if from == "operator" {
                        be.admin
                    } else {
                        be.peer
                    },
                );
            }
        }
        for (name, fe) in &fes {
            // The pair's heartbeat and the operator reach a Front End's admin port; Directors its SIP port.
            route(if fe.pool == PA { PB } else { PA }, name, fe.admin);
            route("operator", name, fe.admin);
        }
        route(PB, "edge1", edge_admin);
        route("operator", "edge1", edge_admin);
        route("dira", PA, fes["pa1"].sip);
        route("dira", PB, fes["pb1"].sip);

        let mut pa = pool(PA, "frontend", "sa", &["pa1", "pa2"]);
        pa.pair = Some(PB.into());
        pa.backend = Some("bea".into());
        let mut pb = pool(PB, "frontend", "sb", &["pb1", "pb2"]);
        pb.pair = Some(PA.into());
        pb.backend = Some("beb".into());
        let mut bea = pool("bea", "backend", "sa", &["bea-1", "bea-2"]);
        bea.witness = Some("bea-witness".into());
        let mut beb = pool("beb", "backend", "sb", &["beb-1", "beb-2"]);
        beb.witness = Some("beb-witness".into());
        let mut edge = pool("edge", "edge", "sc", &["edge1"]);
        edge.next_hop = Some("dira".into());
        let user = |name: &str, home: &str| UserConfig {
            name: name.into(),
            password: format!("{name}-pw"),
            home: home.into(),
        };
        let cluster = Arc::new(ClusterConfig {
            name: "pairing-test".into(),
            timings,
            pools: vec![
                pa,
                pb,
                bea,
                beb,
                edge,
                pool("dira", "director", "sa", &["dira1"]),
                pool("dirb", "director", "sb", &["dirb1"]),
            ],
            users: vec![
                user("alice", PA),
                user("bob", PA),
                user("carol", PB),
                user("dave", PB),
            ],
            routes,
            admin_token: TOKEN.into(),
        });

        let identity =
            poolnode::director::NodeIdentity::new(cluster.clone(), "edge1", "edge").unwrap();
        let edge_config =
            poolnode::edge::EdgeConfig::new(identity, poolnode::director::Resolver::dns());
        let (edge_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let edge_task = tokio::spawn(async move {
            poolnode::edge::server::run(edge_listeners, edge_config, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });

        let mut sites = Sites {
            cluster,
            fes,
            bes,
            edge_admin,
            edge_stop: Some(edge_stop),
            edge_task: Some(edge_task),
        };
        for site in ["sa", "sb"] {
            sites.start_site(site).await;
        }
        sites
    }

    fn backend_nodes(site: &str) -> [&'static str; 3] {
        if site == "sa" {
            ["bea-1", "bea-2", "bea-witness"]
        } else {
            ["beb-1", "beb-2", "beb-witness"]
        }
    }

    fn frontend_nodes(site: &str) -> [&'static str; 2] {
        if site == "sa" {
            ["pa1", "pa2"]
        } else {
            ["pb1", "pb2"]
        }
    }

    /// Starts every server of `site` (again): Back Ends on their data, Front Ends empty. Undo: [`Sites::kill_site`].
    pub async fn start_site(&mut self, site: &str) {
        for name in Self::backend_nodes(site) {
            self.start_backend(name).await;
        }
        for name in Self::frontend_nodes(site) {
            self.start_frontend(name).await;
        }
    }

    /// Stops every server of `site`, as a site loss. Undo: [`Sites::start_site`].
    pub async fn kill_site(&mut self, site: &str) {
        for name in Self::frontend_nodes(site) {
            let slot = self.fes.get_mut(name).unwrap();
            let (frontend, task) = slot.running.take().expect("kill a running Front End");
            task.abort();
            let _ = task.await;
            if let Some(pool) = frontend.pool() {
                pool.stop();
            }
        }
        for name in Self::backend_nodes(site) {
            let slot = self.bes.get_mut(name).unwrap();
            let task = slot.task.take().expect("kill a running Back End node");
            task.abort();
            let _ = task.await;
        }
    }

    async fn start_backend(&mut self, name: &str) {
        let slot = self.bes.get_mut(name).unwrap();
        assert!(slot.task.is_none(), "{name} already runs");
        let listeners = match slot.parked.take() {
            Some(l) => l,
            None => Listeners::bind(slot.peer, slot.admin).await.unwrap(),
        };
        let config = BackendConfig::new(self.cluster.clone(), name, slot.data_dir.clone());
        slot.task = Some(if slot.witness {
            let w = Witness::open(&config).unwrap();
            tokio::spawn(async move { w.run(listeners, std::future::pending()).await.unwrap() })
        } else {
            let b = Backend::open(&config).unwrap();
            tokio::spawn(async move { b.run(listeners, std::future::pending()).await.unwrap() })
        });
    }

    async fn start_frontend(&mut self, name: &str) {
        let cluster = self.cluster.clone();
        let peers: BTreeMap<String, String> = self
            .fes
            .iter()
            .filter(|(n, s)| *n != name && s.pool == self.fes[name].pool)
            .map(|(n, s)| (n.clone(), s.peer.to_string()))
            .collect();
        let slot = self.fes.get_mut(name).unwrap();
        assert!(slot.running.is_none(), "{name} already runs");
        let listeners = match slot.parked.take() {
            Some(l) => l,
            None => PoolListeners::bind(slot.sip, slot.peer, Some(slot.admin))
                .await
                .unwrap(),
        };
        let pool_name = slot.pool;
        let nodes = cluster.pool(pool_name).unwrap().nodes.clone();
        let mut settings =
            PoolSettings::new(pool_name, name, nodes, peers, &cluster.timings, TOKEN);
        let backend_pool = cluster.pool(pool_name).unwrap().backend.clone().unwrap();
        let client =
            poolnode::backend::BackendClient::for_pool(&cluster, name, &backend_pool).unwrap();
        let link = BackendLink::new(
            client,
            pool_name,
            &cluster.timings,
            settings.heartbeat_interval,
            settings.failure_timeout,
        );
        settings.use_backend(link);
        let frontend = pooled::build(FePoolConfig {
            frontend: FrontEndConfig {
                credentials: Credentials::open(),
                nonce_secret: format!("{pool_name}-secret"),
                ..FrontEndConfig::default()
            },
            pool: settings,
        });
        pooled::pair(
            &frontend,
            PairingConfig {
                cluster: cluster.clone(),
                pool: pool_name.to_owned(),
                node: name.to_owned(),
            },
        )
        .unwrap();
        let task = tokio::spawn({
            let frontend = frontend.clone();
            async move {
                pooled::serve(listeners, frontend, std::future::pending())
                    .await
                    .unwrap()
            }
        });
        slot.running = Some((frontend, task));
    }

    pub fn sip(&self, node: &str) -> SocketAddr {
        self.fes[node].sip
    }

    pub fn admin(&self, node: &str) -> SocketAddr {
        self.fes[node].admin
    }

    pub fn frontend(&self, node: &str) -> Arc<FrontEnd> {
        self.fes[node]
            .running
            .as_ref()
            .expect("a running Front End")
            .0
            .clone()
    }

    /// `GET /status` of a running Front End, straight from the node (no HTTP).
    pub fn status(&self, node: &str) -> Value {
        pooled::status(&self.frontend(node))
    }

    /// `POST /admin/<command>` on a Front End: status code and body.
    pub async fn command(
        &self,
        node: &str,
        command: &str,
        body: Value,
        token: Option<&str>,
    ) -> (u16, Value) {
        http_json(
            &self.admin(node).to_string(),
            "POST",
            &format!("/admin/{command}"),
            token,
            Some(&body),
        )
        .await
        .unwrap()
    }

    pub async fn edge_next_hop(&self, next_hop: &str) {
        let (code, body) = http_json(
            &self.edge_admin.to_string(),
            "POST",
            "/admin/edge-next-hop",
            Some(TOKEN),
            Some(&json!({"next_hop": next_hop})),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{body}");
    }

    /// Waits until `done` holds, polling every 50 ms; panics after [`CONVERGE`] naming `what`.
    pub async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `node`'s backup of its pair is `final` and accounts for everything acknowledged before
    /// `since` (the pair's newest heartbeat answer was sent after it).
    pub async fn backup_final_after(&self, node: &str, since: std::time::Instant) {
        self.until(
            "the backup is final after the last acknowledged change",
            |s| {
                let b = &s.status(node)["pairing"]["backup_service"];
                b["state"] == "final"
                    && b["as_of_ms_ago"]
                        .as_u64()
                        .is_some_and(|ago| u128::from(ago) < since.elapsed().as_millis())
            },
        )
        .await;
    }

    /// Waits until `node` hears its pair serving (what a failback needs).
    /// Waits until every one of `nodes` reports its home pool's fence as `fence` (`fenced`, `open`).
    pub async fn until_fence(&self, what: &str, nodes: &[&str], fence: &str) {
        self.until(what, |s| {
            nodes
                .iter()
                .all(|n| s.status(n)["pairing"]["as_home"]["fence"] == fence)
        })
        .await;
    }

    pub async fn hears_pair(&self, node: &str) {
        self.until("the pair answers its heartbeat", |s| {
            s.status(node)["pairing"]["pair_heartbeat"]["up"] == true
        })
        .await;
    }

    /// Waits until both Front Ends of `pool` serve.
    pub async fn serving(&self, nodes: &[&str]) {
        self.until("the Front Ends serve", |s| {
            nodes.iter().all(|n| s.status(n)["serving"] == true)
        })
        .await;
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for slot in self.fes.values_mut() {
            if let Some((frontend, task)) = slot.running.take() {
                task.abort();
                if let Some(pool) = frontend.pool() {
                    pool.stop();
                }
            }
        }
        for slot in self.bes.values_mut() {
            if let Some(task) = slot.task.take() {
                task.abort();
            }
        }
        if let Some(stop) = self.edge_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.edge_task.take() {
            task.abort();
        }
    }
}
