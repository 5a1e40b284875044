//! An in-process Back End pool on 127.0.0.1 with a fault layer every peer connection goes through.
//!
//! Why our own shim rather than the workspace's `faultproxy`: a partition here must apply to every directed link
//! at once and take effect synchronously (no HTTP round trip to a proxy API between "cut" and the next
//! assertion), and `poolnode` should not depend on the harness's crates. Every link `from → to` gets its own
//! forwarding listener, named in the cluster description's routes exactly as the harness names proxy routes, so
//! the nodes run unchanged code.
//!
//! A cut link behaves like `docker network disconnect`: open connections fall silent (bytes are swallowed, and the
//! connection never speaks again even after `heal`, since a stream with a hole is garbage), and new connections
//! are accepted but never answered. `heal` is the undo of `cut`; `rejoin` the undo of `isolate`; `restart` the
//! undo of `kill`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolnode::backend::operator::http_json;
use poolnode::backend::{
    server::Backend, witness::Witness, BackendClient, BackendConfig, Batch, Listeners, Op,
    UserRecord,
};
use poolnode::cluster::{ClusterConfig, PoolConfig, Route, Timings, UserConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Generous: the machine is a busy 2-core box; the fast profile's failover takes about one second.
pub const WAIT: Duration = Duration::from_secs(30);
pub const TOKEN: &str = "test-admin-token";
/// The Front End stand-in's node name.
pub const FE: &str = "fe-1";
pub const P1: &str = "be-1";
pub const P2: &str = "be-2";
pub const W: &str = "be-witness";

#[derive(Debug, Default, Clone, Copy)]
struct Link {
    cut: bool,
    /// Bumped at every cut: a connection opened before it stays silent for good.
    generation: u64,
}

/// The partition table and the current address of every node.
#[derive(Debug, Default)]
pub struct Net {
    links: Mutex<HashMap<(String, String), Link>>,
    targets: Mutex<HashMap<String, SocketAddr>>,
}

impl Net {
    fn link(&self, from: &str, to: &str) -> Link {
        self.links
            .lock()
            .unwrap()
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Cuts both directions between `a` and `b`. Undo: [`Net::heal`].
    pub fn cut(&self, a: &str, b: &str) {
        let mut links = self.links.lock().unwrap();
        for key in [(a, b), (b, a)] {
            let l = links
                .entry((key.0.to_string(), key.1.to_string()))
                .or_default();
            assert!(!l.cut, "link {key:?} cut twice");
            l.cut = true;
            l.generation += 1;
        }
    }

    /// The undo of [`Net::cut`].
    pub fn heal(&self, a: &str, b: &str) {
        let mut links = self.links.lock().unwrap();
        for key in [(a, b), (b, a)] {
            let l = links
                .entry((key.0.to_string(), key.1.to_string()))
                .or_default();
            assert!(l.cut, "link {key:?} healed but not cut");
            l.cut = false;
        }
    }

    fn set_target(&self, node: &str, addr: Option<SocketAddr>) {
        let mut t = self.targets.lock().unwrap();
        match addr {
            Some(a) => t.insert(node.to_string(), a),
            None => t.remove(node),
        };
    }

    /// A forwarding listener for the link `from → to`.
    async fn proxy(self: &Arc<Self>, from: &str, to: &str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (net, from, to) = (self.clone(), from.to_string(), to.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (net, from, to) = (net.clone(), from.clone(), to.clone());
                tokio::spawn(async move { net.forward(client, &from, &to).await });
            }
        });
        addr
    }

    async fn forward(self: Arc<Self>, client: TcpStream, from: &str, to: &str) {
        let opened = self.link(from, to);
        let target = self.targets.lock().unwrap().get(to).copied();
        if opened.cut {
            // Accepted, never answered: hold it until the client gives up.
            hold_silent(client).await;
            return;
        }
        let Some(target) = target else { return };
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = client.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let up = pump(
            self.clone(),
            cr,
            sw,
            from.to_string(),
            to.to_string(),
            opened.generation,
        );
        let down = pump(
            self.clone(),
            sr,
            cw,
            from.to_string(),
            to.to_string(),
            opened.generation,
        );
        tokio::join!(up, down);
    }
}

async fn hold_silent(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Copies one direction; once the link is cut (or was cut since the connection opened) it swallows everything.
async fn pump(
    net: Arc<Net>,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: String,
    to: String,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut silent = false;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if !silent {
                    let _ = w.shutdown().await;
                }
                return;
            }
            Ok(n) => n,
        };
        let link = net.link(&from, &to);
        silent = silent || link.cut || link.generation != generation;
        if !silent && w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

struct Slot {
    data_dir: PathBuf,
    /// The running Back End node (not a witness).
    backend: Option<Arc<Backend>>,
    admin: Option<SocketAddr>,
    task: Option<JoinHandle<()>>,
    witness: bool,
}

/// A Back End pool `be` (nodes `be-1`, `be-2`, optionally `be-witness`) and a Front End pool `fe` with one
/// stand-in node `fe-1`, in one process.
pub struct Cluster {
    pub config: Arc<ClusterConfig>,
    pub net: Arc<Net>,
    slots: Mutex<BTreeMap<String, Slot>>,
    root: PathBuf,
}

impl Cluster {
    pub async fn start(with_witness: bool) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let net = Arc::new(Net::default());
        let mut servers = vec![P1, P2];
        if with_witness {
            servers.push(W);
        }
        let clients: Vec<&str> = servers.iter().copied().chain([FE]).collect();
        let mut routes = Vec::new();
        for from in &clients {
            for to in &servers {
                if from != to {
                    routes.push(Route {
                        from: from.to_string(),
                        to: to.to_string(),
                        address: net.proxy(from, to).await.to_string(),
                    });
                }
            }
        }
        let config = Arc::new(ClusterConfig {
            name: "backend-test".into(),
            timings: Timings::fast(),
            pools: vec![
                PoolConfig {
                    name: "be".into(),
                    role: "backend".into(),
                    site: "site1".into(),
                    nodes: vec![P1.into(), P2.into()],
                    pair: None,
                    backend: None,
                    witness: with_witness.then(|| W.to_string()),
                    next_hop: None,
                    gateway: None,
                },
                PoolConfig {
                    name: "fe".into(),
                    role: "frontend".into(),
                    site: "site1".into(),
                    nodes: vec![FE.into()],
                    pair: None,
                    backend: Some("be".into()),
                    witness: None,
                    next_hop: None,
                    gateway: None,
                },
            ],
            users: vec![UserConfig {
                name: "alice".into(),
                password: "alice-pw".into(),
                home: "fe".into(),
            }],
            routes,
            admin_token: TOKEN.into(),
        });
        let root = std::env::temp_dir().join(format!(
            "poolnode-backend-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let cluster = Cluster {
            config,
            net,
            slots: Mutex::new(BTreeMap::new()),
            root,
        };
        for s in servers {
            cluster.slots.lock().unwrap().insert(
                s.to_string(),
                Slot {
                    data_dir: cluster.root.join(s),
                    backend: None,
                    admin: None,
                    task: None,
                    witness: s == W,
                },
            );
            cluster.restart(s).await;
        }
        cluster
    }

    /// Starts (again) a node that is not running, on its data directory. Undo: [`Cluster::kill`].
    pub async fn restart(&self, node: &str) {
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let peer = listeners.peer.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(node).expect("a node of the cluster");
        assert!(slot.task.is_none(), "{node} restarted while running");
        let config = BackendConfig::new(self.config.clone(), node, slot.data_dir.clone());
        let task = if slot.witness {
            let w = Witness::open(&config).unwrap();
            tokio::spawn(async move {
                w.run(listeners, std::future::pending()).await.unwrap();
            })
        } else {
            let b = Backend::open(&config).unwrap();
            slot.backend = Some(b.clone());
            tokio::spawn(async move {
                b.run(listeners, std::future::pending()).await.unwrap();
            })
        };
        slot.task = Some(task);
        slot.admin = Some(admin);
        self.net.set_target(node, Some(peer));
    }

    /// Kills a node: its tasks are aborted and its listeners dropped; its data directory stays. Undo:
    /// [`Cluster::restart`].
    pub async fn kill(&self, node: &str) {
        let task = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.get_mut(node).expect("a node of the cluster");
            slot.admin = None;
            slot.backend = None;
            slot.task
                .take()
                .unwrap_or_else(|| panic!("{node} killed twice"))
        };
        self.net.set_target(node, None);
        task.abort();
        let _ = task.await;
    }

    /// Caps a running Back End node's store at about `bytes`, as a full disk would (writes beyond fail with
    /// `SQLITE_FULL`). Undo: the same with `None`.
    pub async fn limit_store(&self, node: &str, bytes: Option<u64>) {
        let backend = self.slots.lock().unwrap()[node]
            .backend
            .clone()
            .unwrap_or_else(|| panic!("{node} is not a running Back End node"));
        backend.limit_store_size(bytes).await.unwrap();
    }

    /// Cuts `node` off from every other Back End node and the witness (not from the Front End). Undo:
    /// [`Cluster::rejoin`].
    pub fn isolate(&self, node: &str) {
        for other in self.servers() {
            if other != node {
                self.net.cut(node, &other);
            }
        }
    }

    /// The undo of [`Cluster::isolate`].
    pub fn rejoin(&self, node: &str) {
        for other in self.servers() {
            if other != node {
                self.net.heal(node, &other);
            }
        }
    }

    pub fn servers(&self) -> Vec<String> {
        self.slots.lock().unwrap().keys().cloned().collect()
    }

    pub fn admin_address(&self, node: &str) -> Option<SocketAddr> {
        self.slots.lock().unwrap().get(node).and_then(|s| s.admin)
    }

    /// Admin targets `(node, host:port)` of the running nodes, for the operator commands.
    pub fn admin_targets(&self) -> Vec<(String, String)> {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(n, s)| s.admin.map(|a| (n.clone(), a.to_string())))
            .collect()
    }

    /// `GET /status` of a running node.
    pub async fn status(&self, node: &str) -> Value {
        let addr = self
            .admin_address(node)
            .unwrap_or_else(|| panic!("{node} is not running"));
        let (code, v) = http_json(&addr.to_string(), "GET", "/status", None, None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{v}");
        v
    }

    /// The Front End stand-in's client.
    pub fn client(&self) -> BackendClient {
        BackendClient::for_pool(&self.config, FE, "be").unwrap()
    }

    /// A client that talks to one node only (to see what that node acknowledges).
    pub fn client_of(&self, node: &str) -> BackendClient {
        let address = poolnode::backend::peer_address(&self.config, FE, node, 0);
        let mut settings = poolnode::backend::ClientSettings::from_timings(&self.config.timings);
        settings.retry_budget = Duration::from_millis(300);
        BackendClient::new(vec![(node.to_string(), address)], settings)
    }

    /// Waits until `node`'s status satisfies `pred`.
    pub async fn wait_status(
        &self,
        node: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status(node).await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{node} never became {what}: last status {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `node` is the serving principal with a synchronized mirror.
    pub async fn wait_synchronized_principal(&self, node: &str) -> Value {
        self.wait_status(node, "a synchronized principal", |s| {
            s["db_role"] == "principal" && s["synchronized"] == true && s["lag_commits"] == 0
        })
        .await
    }

    /// The data of a node's store, read from its SQLite file (the node must be killed first).
    pub fn store_users(&self, node: &str) -> Vec<UserRecord> {
        let slots = self.slots.lock().unwrap();
        let slot = &slots[node];
        assert!(
            slot.task.is_none(),
            "read {node}'s file only while it is down"
        );
        let store = poolnode::backend::Store::open(
            &slot.data_dir,
            poolnode::backend::store::DurableRole::Mirror,
        )
        .unwrap();
        store.snapshot().unwrap().users
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in self.slots.lock().unwrap().values_mut() {
            if let Some(t) = slot.task.take() {
                t.abort();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One user's record, unique per `i`: what the commit streams write.
pub fn record(i: u64) -> UserRecord {
    UserRecord {
        user: format!("user{i:05}"),
        pool: "fe".into(),
        password: Some(format!("pw{i}")),
        contacts: vec![format!("friend{i}")],
        presence: vec![],
        settings: [("n".to_string(), i.to_string())].into(),
    }
}

pub fn put(i: u64) -> Batch {
    Batch::new(vec![Op::PutUser(record(i))])
}

/// What a stream of commits saw: the acknowledged ones, by index, with the acknowledging node and epoch.
#[derive(Debug, Default, Clone)]
pub struct Acks {
    pub acked: Vec<(u64, String, u64)>,
    pub failed: u64,
}

/// Writes `put(i)` for i = base, base+1, … through `client` until `stop` flips; records every acknowledgement.
pub fn stream_commits(
    client: BackendClient,
    base: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<Acks> {
    tokio::spawn(async move {
        let mut acks = Acks::default();
        let mut i = base;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            match client.write(put(i)).await {
                Ok(r) => acks.acked.push((i, r.node, r.epoch)),
                Err(_) => {
                    acks.failed += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            i += 1;
        }
        acks
    })
}

/// Polls every Back End node's status and keeps what each said, to check that two principals never serve.
pub struct PrincipalWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<Vec<Sample>>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub node: String,
    pub sent: Instant,
    pub received: Instant,
    pub serving: bool,
    pub epoch: u64,
}

impl PrincipalWatch {
    pub fn start(cluster: &Arc<Cluster>) -> PrincipalWatch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (cluster.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                for node in [P1, P2] {
                    let Some(addr) = c.admin_address(node) else {
                        continue;
                    };
                    let sent = Instant::now();
                    if let Ok((200, v)) =
                        http_json(&addr.to_string(), "GET", "/status", None, None).await
                    {
                        samples.push(Sample {
                            node: node.to_string(),
                            sent,
                            received: Instant::now(),
                            serving: v["db_role"] == "principal" && v["serving"] == true,
                            epoch: v["epoch"].as_u64().unwrap(),
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            samples
        });
        PrincipalWatch { stop, task }
    }

    /// Stops and checks: no two nodes serve as principal of one epoch, and no node serves at an older epoch in a
    /// probe sent after another node was seen serving at a newer one (the new principal keeps serving in these
    /// tests, so such a sample would prove two principals at once).
    pub async fn assert_never_two_principals(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let samples = self.task.await.unwrap();
        let serving: Vec<&Sample> = samples.iter().filter(|s| s.serving).collect();
        for a in &serving {
            for b in &serving {
                if a.node == b.node {
                    continue;
                }
                assert_ne!(
                    a.epoch, b.epoch,
                    "two principals in one epoch: {a:?} and {b:?}"
                );
                if a.epoch < b.epoch {
                    assert!(
                        a.sent < b.received,
                        "{} still served at epoch {} after {} served at epoch {}: {a:?} {b:?}",
                        a.node,
                        a.epoch,
                        b.node,
                        b.epoch
                    );
                }
            }
        }
        samples
    }
}

/// Waits `d` (for "nothing happens during" checks).
pub async fn idle(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Every acknowledged commit of `acks` is in `users` with the data it wrote.
pub fn assert_all_acked_present(acks: &Acks, users: &[UserRecord], whose: &str) {
    let by_name: HashMap<&str, &UserRecord> = users.iter().map(|u| (u.user.as_str(), u)).collect();
    for (i, node, epoch) in &acks.acked {
        let want = record(*i);
        let got = by_name.get(want.user.as_str()).unwrap_or_else(|| {
            panic!("commit {i} acknowledged by {node} at epoch {epoch} is missing from {whose}")
        });
        assert_eq!(**got, want, "commit {i} differs in {whose}");
    }
}
