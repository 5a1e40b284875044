//! [`Cluster`]: a topology running in containers.
//!
//! Networks: one per site, a WAN that every node joins for cross-site traffic, and an external network for
//! remote users and the Edge pools. On every network a node is known by its node name and by its pool's
//! name, so a pool name resolves to all of its servers (DNS load balancing). Ports the harness needs are
//! published on 127.0.0.1 only, so the harness works where the host cannot route to container addresses.
//!
//! The file holds one concept, the cluster's life: creating its networks and containers and waiting for them
//! ready (`up`, with the stages a test can hold it at), finding them again (`attach`), reaching them (addresses,
//! published ports, logs), and removing them (`down`, drop, and the blocking removal a dying process falls back
//! on).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions,
};
use futures::StreamExt;
use tracing::{info, warn};

use super::docker::{self, ctx, Docker, RuntimeError};
use super::labels;
use super::roles::{self, Launch, LaunchImage};
use crate::images::{self, Image};
use crate::subject::SubjectImage;
use crate::topology::{NodeRole, NodeSpec, Role, Topology};

/// How long a node may take from start to its ready line before the run fails naming it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The networks of a run, by their role.
pub const WAN: &str = "wan";
pub const EXTERNAL: &str = "external";
/// The fault proxy's node name (and DNS alias on every network).
pub const PROXY: &str = "toxiproxy";

/// One running container of the run.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    /// Node name (`fe1-2`), also its hostname and an alias on each of its networks.
    pub name: String,
    /// The pool it belongs to (`fe1`), its other alias; `toxiproxy` for the proxy.
    pub pool: String,
    /// Docker container name: `pc-<run>-<node>`.
    pub container: String,
    /// Logical networks (`site:dc1`, `wan`, `external`) it is attached to.
    pub networks: Vec<String>,
    pub launch: Launch,
}

/// Start-up and teardown durations of a run, for the benchmark and the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub images: Duration,
    pub start_to_ready: Duration,
    pub teardown: Duration,
}

/// A topology running in containers. Dropping it removes every container and network of the run.
pub struct Cluster {
    /// The run id, in every label and Docker name.
    pub run: String,
    pub topology: Topology,
    pub docker: Docker,
    /// Logical network name → Docker network name.
    pub networks: BTreeMap<String, String>,
    /// Every node (pool nodes and the proxy), by node name.
    pub nodes: BTreeMap<String, NodeHandle>,
    pub timings: Timings,
    /// The bearer token of every node's admin API in this run.
    pub admin_token: String,
    /// The cluster description every node gets (`POOLNODE_CLUSTER`).
    cluster_json: String,
    /// The defect every pool node plants (`POOLNODE_DEFECT`), for a run of the known-bad pool.
    defect: Option<String>,
    /// Whether dropping this value removes the run: true for the process that started it, until `down` or
    /// [`Cluster::detach`]; false for a run attached to by another command.
    owned: bool,
    /// The processes that hold packet faults in force, by fault id (ended by the fault's undo, or killed when
    /// the cluster is dropped).
    pub(super) packet_faults: std::sync::Mutex<BTreeMap<usize, Vec<tokio::process::Child>>>,
}

/// Who owns a run's containers and networks, as their labels say: `sweep` leaves a run alone while its owner
/// lives. Always the process that starts it; a run outlives that process only once [`Cluster::detach`] has
/// marked it up and detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This process: the run goes when it ends, and is a leftover if it dies first.
    Process,
}

impl Cluster {
    /// Ensures the images, then starts every node of `topology` and waits until each is ready. Every container
    /// and network is labelled as this process's: if it dies before the run is torn down or detached, the run
    /// is a leftover for `sweep`.
    pub async fn up(topology: Topology, seed: u64) -> Result<Cluster, RuntimeError> {
        Cluster::up_planted(topology, seed, Owner::Process, None).await
    }

    /// As [`Cluster::up`]; with a `defect`, the pool's nodes run the known-bad pool
    /// ([`images::POOLNODE_DEFECTS`], built here if needed) and plant that defect (`POOLNODE_DEFECT`).
    pub async fn up_planted(
        topology: Topology,
        seed: u64,
        owner: Owner,
        defect: Option<String>,
    ) -> Result<Cluster, RuntimeError> {
        // Every run is labelled as the starting process's: `Owner` has no other kind.
        let Owner::Process = owner;
        let docker = docker::connect().await?;
        let t0 = Instant::now();
        let planted = defect.is_some();
        let packaged = match &topology.subject.image {
            SubjectImage::Packaged(spec) => Some(spec.clone()),
            SubjectImage::Workspace => None,
        };
        let (built, subject_image) = tokio::task::spawn_blocking(move || {
            let root = images::workspace_root();
            let built = if planted {
                images::ensure_known_bad(&root)
            } else {
                images::ensure(&root)
            }?;
            let subject_image = packaged.as_ref().map(images::ensure_packaged).transpose()?;
            Ok::<_, images::ImageError>((built, subject_image))
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("join the image build: {e}")))??;
        let images_took = t0.elapsed();
        let run = new_run_id();
        info!(run = %run, topology = %topology.name, "starting");
        let admin_token = admin_token(&run);
        let cluster_json = roles::cluster_json(&topology, &admin_token).to_string();
        let mut cluster = Cluster {
            run,
            topology,
            admin_token,
            cluster_json,
            defect,
            docker,
            networks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            timings: Timings {
                images: images_took,
                ..Timings::default()
            },
            owned: true,
            packet_faults: Default::default(),
        };
        // From here on a failure must not leave anything behind: `cluster` is dropped on `?`, and its drop
        // removes what exists so far.
        let t1 = Instant::now();
        cluster.create_networks().await?;
        pause_at(PauseAt::Networks, &cluster.run).await?;
        // In a run of the known-bad pool, its image stands in for the pool's.
        let image_of = |image: &LaunchImage| -> String {
            match image {
                LaunchImage::Workspace(spec) => {
                    let wanted = |i: &&Image| {
                        i.spec == *spec
                            || (*spec == images::POOLNODE && i.spec == images::POOLNODE_DEFECTS)
                    };
                    built
                        .iter()
                        .find(wanted)
                        .map(Image::reference)
                        .expect("images::ensure (or ensure_known_bad) returns an image for every spec of images::ALL")
                }
                LaunchImage::Packaged(_) => subject_image
                    .clone()
                    .expect("a subject with a packaged image has it built before its nodes start"),
            }
        };
        let handles = cluster.handles(seed);
        for h in &handles {
            cluster.nodes.insert(h.name.clone(), h.clone());
        }
        // The proxy first (a start paused at `containers` has it alone), then the rest at once.
        cluster
            .create(&handles[0], image_of(&handles[0].launch.image))
            .await?;
        pause_at(PauseAt::Containers, &cluster.run).await?;
        let creates = handles[1..]
            .iter()
            .map(|h| cluster.create(h, image_of(&h.launch.image)));
        for r in futures::future::join_all(creates).await {
            r?;
        }
        // The proxy first: the links through it must exist before any node dials them.
        cluster.start_and_wait(&handles[0], 0).await?;
        cluster.create_links().await?;
        let starts = handles[1..].iter().map(|h| cluster.start_and_wait(h, 0));
        for r in futures::future::join_all(starts).await {
            r?;
        }
        cluster.timings.start_to_ready = t1.elapsed();
        info!(
            run = %cluster.run,
            containers = cluster.nodes.len(),
            ready_ms = cluster.timings.start_to_ready.as_millis() as u64,
            "ready"
        );
        pause_at(PauseAt::Started, &cluster.run).await?;
        Ok(cluster)
    }

    /// Attaches to a run started earlier (by `poolchaos up`), to apply faults or take it down. The Docker
    /// names follow from the run id and the topology; dropping the value leaves the run alone.
    pub async fn attach(topology: Topology, run: &str, seed: u64) -> Result<Cluster, RuntimeError> {
        let docker = docker::connect().await?;
        let admin_token = admin_token(run);
        let cluster_json = roles::cluster_json(&topology, &admin_token).to_string();
        let mut cluster = Cluster {
            run: run.to_string(),
            topology,
            admin_token,
            cluster_json,
            defect: None,
            docker,
            networks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            timings: Timings::default(),
            owned: false,
            packet_faults: Default::default(),
        };
        for logical in cluster.logical_networks() {
            let name = cluster.network_name(&logical);
            cluster.networks.insert(logical, name);
        }
        let handles = cluster.handles(seed);
        for h in handles {
            cluster.nodes.insert(h.name.clone(), h);
        }
        Ok(cluster)
    }

    /// Leaves the run running after this value is dropped (`poolchaos up` without `--hold`): marks it up and
    /// detached ([`labels::mark_detached`]), so `sweep` keeps it after this process ends, until `down`. If
    /// the mark cannot be made the run is removed, as any run this process drops.
    pub async fn detach(mut self) -> Result<(), RuntimeError> {
        labels::mark_detached(&self.docker, &self.run).await?;
        self.owned = false;
        Ok(())
    }

    /// Removes every container and network of the run.
    pub async fn down(mut self) -> Result<Timings, RuntimeError> {
        let t0 = Instant::now();
        let removals = self.nodes.values().map(|n| {
            self.docker.remove_container(
                &n.container,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
        });
        for r in futures::future::join_all(removals).await {
            if let Err(e) = r {
                if !is_not_found(&e) {
                    return Err(RuntimeError::Docker {
                        action: "remove a container of the run".into(),
                        source: e,
                    });
                }
            }
        }
        for net in self.networks.values() {
            if let Err(e) = self.docker.remove_network(net).await {
                if !is_not_found(&e) {
                    return Err(RuntimeError::Docker {
                        action: format!("remove network {net}"),
                        source: e,
                    });
                }
            }
        }
        let run = self.run.clone();
        let _ =
            tokio::task::spawn_blocking(move || super::store_disk::remove_run_blocking(&run)).await;
        self.owned = false;
        self.timings.teardown = t0.elapsed();
        info!(run = %self.run, teardown_ms = self.timings.teardown.as_millis() as u64, "torn down");
        Ok(self.timings)
    }

    /// The node, if it is part of this run; anything else is outside the blast radius.
    pub fn node(&self, name: &str) -> Result<&NodeHandle, RuntimeError> {
        self.nodes
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownTarget(name.to_string()))
    }

    /// The nodes of a pool, in topology order.
    pub fn pool_nodes(&self, pool: &str) -> Vec<&NodeHandle> {
        match self.topology.pool(pool) {
            Some(p) => p
                .nodes
                .iter()
                .filter_map(|n| self.nodes.get(&n.name))
                .collect(),
            None if pool == PROXY => self.nodes.get(PROXY).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Where the host reaches a node's port now (a restart may change it, so this asks Docker each time).
    pub async fn published(
        &self,
        node: &str,
        port: u16,
        protocol: &str,
    ) -> Result<SocketAddr, RuntimeError> {
        let handle = self.node(node)?;
        let info = ctx(
            format!("inspect {}", handle.container),
            self.docker
                .inspect_container(&handle.container, None::<InspectContainerOptions>)
                .await,
        )?;
        let binding = info
            .network_settings
            .and_then(|s| s.ports)
            .and_then(|p| p.get(&format!("{port}/{protocol}")).cloned().flatten())
            .and_then(|b| b.into_iter().next());
        let host_port = binding
            .and_then(|b| b.host_port)
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| {
                RuntimeError::Other(format!(
                    "find the published {port}/{protocol} of {node}: it is not running or not published"
                ))
            })?;
        Ok(SocketAddr::from(([127, 0, 0, 1], host_port)))
    }

    /// The harness's tunnel into the networks, as the host reaches it.
    pub async fn tunnel(&self) -> Result<SocketAddr, RuntimeError> {
        self.published(PROXY, super::tunnel::TUNNEL_PORT, "tcp")
            .await
    }

    /// The fault proxy's API as the host reaches it.
    pub async fn proxy_api(&self) -> Result<SocketAddr, RuntimeError> {
        self.published(PROXY, roles::PROXY_API_PORT, "tcp").await
    }

    /// The last `lines` lines a node printed (stdout and stderr).
    pub async fn logs(&self, node: &str, lines: usize) -> String {
        let Ok(handle) = self.node(node) else {
            return String::new();
        };
        let mut stream = self.docker.logs(
            &handle.container,
            Some(
                LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&lines.to_string())
                    .build(),
            ),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out
    }

    /// Runs `cmd` inside a node's container (`docker exec`) and returns what it printed (stdout and stderr),
    /// within `limit`. A command that exits non-zero is an error with its output.
    pub async fn exec(
        &self,
        node: &str,
        cmd: &[String],
        limit: Duration,
    ) -> Result<String, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let handle = self.node(node)?;
        let action = format!("run {cmd:?} in {}", handle.container);
        let run = async {
            let exec = ctx(
                action.clone(),
                self.docker
                    .create_exec(
                        &handle.container,
                        CreateExecOptions {
                            attach_stdout: Some(true),
                            attach_stderr: Some(true),
                            cmd: Some(cmd.to_vec()),
                            ..Default::default()
                        },
                    )
                    .await,
            )?;
            let mut out = String::new();
            if let StartExecResults::Attached { mut output, .. } =
                ctx(action.clone(), self.docker.start_exec(&exec.id, None).await)?
            {
                while let Some(Ok(chunk)) = output.next().await {
                    out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
            let inspect = ctx(action.clone(), self.docker.inspect_exec(&exec.id).await)?;
            match inspect.exit_code {
                Some(0) => Ok(out),
                code => Err(RuntimeError::Other(format!(
                    "{action}: exited with {code:?}: {}",
                    out.trim()
                ))),
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| RuntimeError::Other(format!("{action}: no end within {limit:?}")))?
    }

    /// Starts a created or stopped node and waits for its next ready line. `seen` is how many ready lines
    /// it printed before (0 at first start), so an old line is never taken for a new start.
    pub async fn start_and_wait(
        &self,
        handle: &NodeHandle,
        seen: usize,
    ) -> Result<(), RuntimeError> {
        ctx(
            format!("start {}", handle.container),
            self.docker
                .start_container(&handle.container, None::<StartContainerOptions>)
                .await,
        )?;
        self.wait_ready(handle, seen).await
    }

    /// How many ready lines a node has printed so far.
    pub async fn ready_lines(&self, handle: &NodeHandle) -> usize {
        let logs = self.logs(&handle.name, 100_000).await;
        logs.lines()
            .filter(|l| l.contains(&handle.launch.ready_line))
            .count()
    }

    async fn wait_ready(&self, handle: &NodeHandle, seen: usize) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut stream = self.docker.logs(
            &handle.container,
            Some(
                LogsOptionsBuilder::new()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .tail("all")
                    .build(),
            ),
        );
        let mut found = 0;
        let mut partial = String::new();
        loop {
            let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
            match next {
                Ok(Some(Ok(chunk))) => {
                    partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    while let Some(end) = partial.find('\n') {
                        let line: String = partial.drain(..=end).collect();
                        if line.contains(&handle.launch.ready_line) {
                            found += 1;
                            if found > seen {
                                return Ok(());
                            }
                        }
                    }
                }
                // The stream ends when the container exits: it will never be ready.
                Ok(Some(Err(_))) | Ok(None) => {
                    return Err(RuntimeError::NotReady {
                        node: handle.name.clone(),
                        why: "it exited before printing its ready line".into(),
                        logs: self.logs(&handle.name, 20).await,
                    })
                }
                Err(_) => {
                    return Err(RuntimeError::NotReady {
                        node: handle.name.clone(),
                        why: format!(
                            "it did not print its ready line within {} s",
                            READY_TIMEOUT.as_secs()
                        ),
                        logs: self.logs(&handle.name, 20).await,
                    })
                }
            }
        }
    }

    /// Creates one proxy per topology link, listening on its own port and forwarding to the pool name.
    async fn create_links(&self) -> Result<(), RuntimeError> {
        let api = self.proxy_api().await?;
        for (i, link) in self.topology.links.iter().enumerate() {
            let body = serde_json::json!({
                "name": super::proxy::link_proxy_name(&link.from, &link.to),
                "listen": format!("0.0.0.0:{}", roles::PROXY_LINK_PORT_BASE + i as u16),
                "upstream": format!("{}:{}", link.to, roles::link_port(&self.topology, &link.from, &link.to)),
                "enabled": true,
            });
            super::proxy::expect(api, "POST", "/proxies", Some(&body), &[200, 201]).await?;
        }
        Ok(())
    }

    fn logical_networks(&self) -> Vec<String> {
        let mut wanted: Vec<String> = self
            .topology
            .sites
            .iter()
            .map(|s| format!("site:{s}"))
            .collect();
        wanted.push(WAN.into());
        wanted.push(EXTERNAL.into());
        wanted
    }

    fn network_name(&self, logical: &str) -> String {
        format!("pc-{}-{}", self.run, logical.replace(':', "-"))
    }

    fn labels(&self) -> HashMap<String, String> {
        labels::for_run(&self.run)
    }

    async fn create_networks(&mut self) -> Result<(), RuntimeError> {
        for logical in self.logical_networks() {
            let name = self.network_name(&logical);
            ctx(
                format!("create network {name}"),
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(self.labels()),
                        ..Default::default()
                    })
                    .await,
            )?;
            self.networks.insert(logical, name);
        }
        Ok(())
    }

    /// Every container of the run: the proxy first, then the topology's nodes in order.
    fn handles(&self, seed: u64) -> Vec<NodeHandle> {
        std::iter::once(self.handle_for_proxy(seed))
            .chain(self.topology.nodes().map(|n| self.handle_for_node(n)))
            .collect()
    }

    fn handle_for_node(&self, node: &NodeSpec) -> NodeHandle {
        let launch = roles::node(&self.topology.subject, node);
        let mut networks = vec![format!("site:{}", node.site)];
        if launch.wan {
            networks.push(WAN.to_string());
        }
        if node.role == NodeRole::Pool(Role::Edge) {
            networks.push(EXTERNAL.into());
        }
        NodeHandle {
            name: node.name.clone(),
            pool: node.pool.clone(),
            container: format!("pc-{}-{}", self.run, node.name),
            networks,
            launch,
        }
    }

    fn handle_for_proxy(&self, seed: u64) -> NodeHandle {
        // The proxy sits on every network so any link of the topology can pass through it.
        NodeHandle {
            name: PROXY.into(),
            pool: PROXY.into(),
            container: format!("pc-{}-{PROXY}", self.run),
            networks: self
                .topology
                .sites
                .iter()
                .map(|s| format!("site:{s}"))
                .chain([WAN.to_string(), EXTERNAL.to_string()])
                .collect(),
            launch: roles::proxy(seed),
        }
    }

    /// The endpoint of a node on one network: reachable by node name and pool name.
    pub fn endpoint(&self, handle: &NodeHandle) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(vec![handle.name.clone(), handle.pool.clone()]),
            ..Default::default()
        }
    }

    async fn create(&self, handle: &NodeHandle, image: String) -> Result<(), RuntimeError> {
        let mut node_labels = self.labels();
        node_labels.insert(labels::NODE.into(), handle.name.clone());
        let first = &self.networks[&handle.networks[0]];
        let exposed: HashMap<String, HashMap<(), ()>> = handle
            .launch
            .ports
            .iter()
            .map(|p| (format!("{}/{}", p.port, p.protocol), HashMap::new()))
            .collect();
        let bindings = handle
            .launch
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{}/{}", p.port, p.protocol),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect();
        let mut env = Vec::new();
        if handle.launch.cluster_env {
            env.push(format!("{}={}", roles::NODE_ENV, handle.name));
            env.push(format!("{}={}", roles::CLUSTER_ENV, self.cluster_json));
            env.push("RUST_LOG=info".to_string());
        }
        if let Some(defect) = self
            .defect
            .as_ref()
            .filter(|_| handle.launch.image == LaunchImage::Workspace(images::POOLNODE))
        {
            env.push(format!("{}={defect}", roles::DEFECT_ENV));
        }
        // A Back End node of the reference pool keeps its store on a disk of its own, for the disk faults.
        let binds = if self.has_store_disk(handle) {
            let (run, node) = (self.run.clone(), handle.name.clone());
            let data = tokio::task::spawn_blocking(move || {
                super::store_disk::create_blocking(&run, &node, &labels::for_run(&run))
            })
            .await
            .map_err(|e| {
                RuntimeError::Other(format!("join the creation of a store disk: {e}"))
            })??;
            Some(vec![format!(
                "{}:{}",
                data.display(),
                super::store_disk::STORE_DIR
            )])
        } else {
            None
        };
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(handle.launch.cmd.clone()),
            hostname: Some(handle.name.clone()),
            env: Some(env),
            labels: Some(node_labels),
            exposed_ports: Some(exposed.into_keys().collect()),
            host_config: Some(HostConfig {
                network_mode: Some(first.clone()),
                port_bindings: Some(bindings),
                binds,
                init: Some(false),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(first.clone(), self.endpoint(handle))])),
            }),
            ..Default::default()
        };
        ctx(
            format!("create container {}", handle.container),
            self.docker
                .create_container(
                    Some(
                        CreateContainerOptionsBuilder::new()
                            .name(&handle.container)
                            .build(),
                    ),
                    body,
                )
                .await,
        )?;
        for logical in &handle.networks[1..] {
            self.connect(handle, logical).await?;
        }
        Ok(())
    }

    /// Whether the node keeps its store on a disk of its own ([`super::disk`]): the reference pool's Back End
    /// nodes.
    pub fn has_store_disk(&self, handle: &NodeHandle) -> bool {
        handle.launch.image == LaunchImage::Workspace(images::POOLNODE)
            && self
                .topology
                .node(&handle.name)
                .is_some_and(|n| n.role == NodeRole::Pool(Role::Backend))
    }

    /// Attaches a node to one of the run's networks under its node and pool aliases.
    pub async fn connect(&self, handle: &NodeHandle, logical: &str) -> Result<(), RuntimeError> {
        let net = &self.networks[logical];
        ctx(
            format!("connect {} to {net}", handle.container),
            self.docker
                .connect_network(
                    net,
                    NetworkConnectRequest {
                        container: handle.container.clone(),
                        endpoint_config: Some(self.endpoint(handle)),
                    },
                )
                .await,
        )
    }
}

impl Drop for Cluster {
    /// A run that ends without `down` (a panic, an early return) still leaves nothing: remove by label with
    /// the Docker CLI, which needs no runtime (drop may run outside one, or inside one that is shutting down).
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        warn!(run = %self.run, "run dropped without teardown: removing its containers and networks");
        // On a worker of a multi-threaded runtime, say so first, so the runtime moves its other tasks off this
        // thread while the Docker CLI calls (each bounded by `CLI_TIMEOUT`) run.
        let in_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if in_worker {
            tokio::task::block_in_place(|| remove_by_label_blocking(&self.run));
        } else {
            remove_by_label_blocking(&self.run);
        }
    }
}

/// The test hook of a start: with `POOLCHAOS_UP_PAUSE_AT=<stage>` a start stops at that stage (printing
/// `paused at <stage>: run <id>` on stdout) so a test can kill the process there.
pub const PAUSE_ENV: &str = "POOLCHAOS_UP_PAUSE_AT";

/// How long a start stays stopped at its pause; then it fails (a run still starting is removed as it fails).
pub const PAUSE_LIMIT: Duration = Duration::from_secs(120);

/// The stages of a start [`PAUSE_ENV`] can stop it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseAt {
    /// Every network of the run exists, no container does.
    Networks,
    /// The fault proxy's container exists, no other container does, none is started.
    Containers,
    /// Every node is started and ready.
    Started,
    /// `poolchaos up` wrote its state and marked the run up: the run is detached.
    State,
}

impl PauseAt {
    /// The stage's name, as [`PAUSE_ENV`] gives it.
    pub fn name(self) -> &'static str {
        match self {
            PauseAt::Networks => "networks",
            PauseAt::Containers => "containers",
            PauseAt::Started => "started",
            PauseAt::State => "state",
        }
    }
}

/// Stops for at most [`PAUSE_LIMIT`] when [`PAUSE_ENV`] names `stage`, then fails; returns at once otherwise.
pub async fn pause_at(stage: PauseAt, run: &str) -> Result<(), RuntimeError> {
    if std::env::var(PAUSE_ENV).ok().as_deref() != Some(stage.name()) {
        return Ok(());
    }
    println!("paused at {}: run {run}", stage.name());
    tokio::time::sleep(PAUSE_LIMIT).await;
    Err(RuntimeError::Other(format!(
        "start run {run}: it stayed paused at {} ({PAUSE_ENV}) for {} s and nobody ended it",
        stage.name(),
        PAUSE_LIMIT.as_secs()
    )))
}

/// The most one Docker CLI call of the drop cleanup may take: a hung engine must not hang the process.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes every container, network and volume labelled with `run` (and the run's store disks), through the Docker CLI, each call bounded by
/// the CLI timeout (60 s) (what is left then is swept by label on the next run).
pub fn remove_by_label_blocking(run: &str) {
    remove_labelled_blocking(labels::RUN, run);
    super::store_disk::remove_run_blocking(run);
}

/// Removes every container and network of every run this process owns (a last resort before it exits on a
/// hang), as [`remove_by_label_blocking`] does.
pub fn remove_own_blocking() {
    let pid = std::process::id().to_string();
    remove_labelled_blocking(labels::PID, &pid);
    super::store_disk::remove_labelled_blocking(labels::PID, &pid);
}

fn remove_labelled_blocking(key: &str, value: &str) {
    let filter = format!("label={key}={value}");
    let list = |args: &[&str]| -> Vec<String> {
        docker_cli(args)
            .map(|out| out.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        let _ = docker_cli(&args);
    }
    let networks = list(&["network", "ls", "-q", "--filter", &filter]);
    if !networks.is_empty() {
        let mut args = vec!["network", "rm"];
        args.extend(networks.iter().map(String::as_str));
        let _ = docker_cli(&args);
    }
    let volumes = list(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        let _ = docker_cli(&args);
    }
}

/// Runs `docker <args>` and returns its standard output, or `None` when it failed or outlived [`CLI_TIMEOUT`]
/// (it is killed then).
fn docker_cli(args: &[&str]) -> Option<String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + CLI_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                warn!(
                    ?args,
                    "docker CLI did not answer within {CLI_TIMEOUT:?}; killed it"
                );
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut()?, &mut out).ok()?;
    Some(out)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The run's admin token: derived from the run id, so a later command attached to the run knows it.
fn admin_token(run: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(format!("poolchaos admin token of run {run}").as_bytes())[..16])
}

/// A short random run id: 8 hex digits, enough to tell concurrent runs apart.
fn new_run_id() -> String {
    use rand::Rng;
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}
