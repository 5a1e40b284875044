//! `poolnode`: one statically linked binary holding every role of the reference pool as a subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "poolnode",
    version,
    about = "The reference pool: every Lync 2013 HA/DR role as a subcommand"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and exit.
    Version,
    /// Run a Front End: SIP registrar, presence and IM server.
    Frontend(FrontendArgs),
    /// Run a Back End node (principal or mirror of its pool's store); cluster from POOLNODE_CLUSTER.
    Backend(ServerArgs),
    /// Run a Back End pool's witness; cluster from POOLNODE_CLUSTER.
    Witness(ServerArgs),
    /// Run a Director: digest, then 301 to the user's home pool and its pair; cluster from POOLNODE_CLUSTER.
    Director(poolnode::director::RoleArgs),
    /// Run an Edge server: relays remote users to the Director pool and the pools it names.
    Edge(poolnode::director::RoleArgs),
    /// Run a Mediation server: relays calls between the pool and the PSTN gateway pool.
    Mediation(poolnode::director::RoleArgs),
    /// Run the PSTN gateway stand-in: answers, holds and hangs up calls; calls users through Mediation.
    PstnGateway(poolnode::director::RoleArgs),
    /// Operator commands over the nodes' admin API.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Args)]
struct ServerArgs {
    /// Peer port: partner, witness and Front End traffic.
    #[arg(long, default_value = "0.0.0.0:5070")]
    listen_peer: SocketAddr,
    /// HTTP admin API (`GET /status`, `POST /admin/<command>`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen_admin: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, default_value = "/data")]
    data: PathBuf,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Show each Back End node's role, epoch, synchronization, exposure and lag.
    DbStatus {
        #[arg(long)]
        pool: String,
        /// Admin address `host:port` of a node (repeatable); default: the pool's nodes from POOLNODE_CLUSTER.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Print the raw JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Fail the pool's store over to the mirror (planned when the principal answers).
    DbFailover {
        #[arg(long)]
        pool: String,
        /// Only `mirror` exists.
        #[arg(long, default_value = "mirror")]
        new_principal: String,
        /// Promote an unsynchronized mirror, accepting the loss it reports.
        #[arg(long)]
        force: bool,
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Restart a Front End pool below its start-up count or quorum with the Front Ends running now (Lync's
    /// QuorumLossRecovery): `POST /admin/quorum-recovery` on each of them.
    QuorumRecovery {
        #[arg(long)]
        pool: String,
        /// Admin address `host:port` of a Front End (repeatable); default: the pool's nodes from POOLNODE_CLUSTER.
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Set the Director pool every server of an Edge pool relays to.
    EdgeNextHop {
        /// The Edge pool.
        #[arg(long)]
        pool: String,
        /// The Director pool to relay to.
        #[arg(long)]
        next_hop: String,
        /// Admin address `host:port` of a server (repeatable); default: the pool's nodes from POOLNODE_CLUSTER.
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Fail a lost Front End pool over to its pair (run at the pair): its users get full service there from the
    /// last backup copy; the failed pool becomes read-only for them.
    PoolFailover {
        /// The failed pool.
        #[arg(long)]
        pool: String,
        /// Admin address `host:port` of a server of the pair (repeatable); default: from POOLNODE_CLUSTER.
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Return a failed-over pool's users to it, with every change they made on the pair.
    PoolFailback {
        /// The pool that was failed over (their home).
        #[arg(long)]
        pool: String,
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Move the management store (the topology the pools run from) to a Front End pool.
    StoreFailover {
        /// The Front End pool that holds it from now on.
        #[arg(long)]
        to: String,
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Show the backup service of the direction `pool` → its pair: `steady` or `final`, with the lag.
    BackupStatus {
        #[arg(long)]
        pool: String,
        #[arg(long = "node")]
        nodes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Force a backup pass of the direction `pool` → its pair now.
    BackupSync {
        #[arg(long)]
        pool: String,
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
}

#[derive(Args)]
struct FrontendArgs {
    /// Run one Front End alone with in-memory state. Without it: a Front End of the pool the cluster description
    /// (POOLNODE_CLUSTER) puts this node in.
    #[arg(long)]
    standalone: bool,
    /// Pool mode: this node's name (default: POOLNODE_NODE).
    #[arg(long)]
    node: Option<String>,
    /// Pool mode: SIP address, TCP and UDP.
    #[arg(long, default_value = "0.0.0.0:5060")]
    sip_listen: SocketAddr,
    /// Pool mode: peer address (replication, forwarding, heartbeats).
    #[arg(long, default_value = "0.0.0.0:5070")]
    peer_listen: SocketAddr,
    /// Pool mode: HTTP admin API address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    /// Pool mode: a peer's peer address, overriding the cluster description's (repeatable).
    #[arg(long = "peer", value_name = "NAME=HOST:PORT")]
    peers: Vec<String>,
    /// Address for both TCP and UDP.
    #[arg(long, default_value = "127.0.0.1:5060")]
    listen: SocketAddr,
    /// No authentication: any user may register.
    #[arg(long)]
    open: bool,
    /// Users file: one `user:password` per line, `#` starts a comment line.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Digest realm.
    #[arg(long, default_value = "poolchaos")]
    realm: String,
}

/// The command line (also the entry of `poolnode-defects`, which includes this file as a module).
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(defect) = poolnode::defects::plant().map_err(anyhow::Error::msg)? {
        eprintln!(
            "poolnode: known-bad build, defect {} planted",
            defect.name()
        );
    }
    match cli.command {
        Command::Version => println!("{}", poolnode::version::line()),
        Command::Frontend(args) if !args.standalone => {
            init_logging();
            let peers = args
                .peers
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(n, a)| (n.to_owned(), a.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--peer takes NAME=HOST:PORT, not `{p}`"))
                })
                .collect::<anyhow::Result<_>>()?;
            let options = poolnode::frontend::pooled::NodeOptions {
                node: args.node,
                sip: args.sip_listen,
                peer: args.peer_listen,
                admin: args.admin_listen,
                peers,
                open: args.open,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(poolnode::frontend::pooled::run_node(
                options,
                shutdown_signal(),
            ))?;
        }
        Command::Frontend(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .init();
            let options = poolnode::frontend::StandaloneOptions {
                listen: args.listen,
                open: args.open,
                users_file: args.users,
                realm: args.realm,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(poolnode::frontend::run_standalone(
                options,
                shutdown_signal(),
            ))?;
        }
        Command::Backend(args) => run_backend_role(args, false)?,
        Command::Witness(args) => run_backend_role(args, true)?,
        Command::Admin(command) => run_admin(command)?,
        Command::Director(args) => {
            run_sip_role(poolnode::director::run_node(args, shutdown_signal()))?
        }
        Command::Edge(args) => run_sip_role(poolnode::edge::run_node(args, shutdown_signal()))?,
        Command::Mediation(args) => {
            run_sip_role(poolnode::mediation::run_node(args, shutdown_signal()))?
        }
        Command::PstnGateway(args) => {
            run_sip_role(poolnode::gateway::run_node(args, shutdown_signal()))?
        }
    }
    Ok(())
}

/// `poolnode backend` / `poolnode witness`: binds, prints the ready line, serves until SIGTERM.
fn run_backend_role(args: ServerArgs, witness: bool) -> anyhow::Result<()> {
    use poolnode::backend::{server, witness as w, BackendConfig, Listeners};
    init_logging();
    let cluster = std::sync::Arc::new(poolnode::cluster::ClusterConfig::from_env()?);
    let node = std::env::var(poolnode::cluster::NODE_ENV)
        .map_err(|_| anyhow::anyhow!("{} is not set", poolnode::cluster::NODE_ENV))?;
    let config = BackendConfig::new(cluster, &node, args.data);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let name = if witness { "witness" } else { "backend" };
        let listeners = Listeners::bind(args.listen_peer, args.listen_admin).await?;
        let (peer, admin) = (listeners.peer.local_addr()?, listeners.admin.local_addr()?);
        if witness {
            let opened = w::Witness::open(&config)?;
            println!(
                "poolnode {name} ready node={} peer={peer} admin={admin}",
                config.node
            );
            opened.run(listeners, shutdown_signal()).await?;
        } else {
            let opened = server::Backend::open(&config)?;
            println!(
                "poolnode {name} ready node={} peer={peer} admin={admin}",
                config.node
            );
            opened.run(listeners, shutdown_signal()).await?;
        }
        anyhow::Ok(())
    })
}

/// `poolnode admin …`: token from POOLNODE_ADMIN_TOKEN or the cluster description.
fn run_admin(command: AdminCommand) -> anyhow::Result<()> {
    use poolnode::backend::operator;
    let cluster = poolnode::cluster::ClusterConfig::from_env().ok();
    let targets = |pool: &str, nodes: Vec<String>| -> anyhow::Result<Vec<(String, String)>> {
        if !nodes.is_empty() {
            return Ok(nodes.into_iter().map(|n| (n.clone(), n)).collect());
        }
        let cluster = cluster
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("give --node host:port or set POOLNODE_CLUSTER"))?;
        operator::admin_targets(cluster, pool)
            .ok_or_else(|| anyhow::anyhow!("pool `{pool}` is not in the cluster description"))
    };
    let runtime = tokio::runtime::Runtime::new()?;
    match command {
        AdminCommand::DbStatus { pool, nodes, json } => {
            let statuses = runtime.block_on(operator::db_status(&targets(&pool, nodes)?));
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print!("{}", operator::render_status(&pool, &statuses));
            }
        }
        AdminCommand::DbFailover {
            pool,
            new_principal,
            force,
            nodes,
        } => {
            anyhow::ensure!(
                new_principal == "mirror",
                "--new-principal takes `mirror` only"
            );
            let token = std::env::var("POOLNODE_ADMIN_TOKEN")
                .ok()
                .or_else(|| cluster.as_ref().map(|c| c.admin_token.clone()))
                .ok_or_else(|| anyhow::anyhow!("set POOLNODE_ADMIN_TOKEN or POOLNODE_CLUSTER"))?;
            let report = runtime
                .block_on(operator::db_failover(
                    &targets(&pool, nodes)?,
                    &token,
                    force,
                ))
                .map_err(|e| anyhow::anyhow!("db-failover on {pool}: {e}"))?;
            if let Some(message) = report.get("message").and_then(|m| m.as_str()) {
                println!("{message}");
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        AdminCommand::QuorumRecovery { pool, nodes } => {
            let token = std::env::var("POOLNODE_ADMIN_TOKEN")
                .ok()
                .or_else(|| cluster.as_ref().map(|c| c.admin_token.clone()))
                .ok_or_else(|| anyhow::anyhow!("set POOLNODE_ADMIN_TOKEN or POOLNODE_CLUSTER"))?;
            let mut recovered = 0;
            for (name, address) in targets(&pool, nodes)? {
                let answer = runtime.block_on(operator::http_json(
                    &address,
                    "POST",
                    "/admin/quorum-recovery",
                    Some(&token),
                    Some(&serde_json::json!({})),
                ));
                match answer {
                    Ok((200, body)) => {
                        recovered += 1;
                        println!("{name}: {body}");
                    }
                    Ok((code, body)) => println!("{name}: refused ({code}): {body}"),
                    // A Front End that is down is what the command works around: say so and go on.
                    Err(error) => println!("{name}: unreachable: {error}"),
                }
            }
            anyhow::ensure!(
                recovered > 0,
                "no Front End of {pool} took the quorum recovery"
            );
        }
        AdminCommand::EdgeNextHop {
            pool,
            next_hop,
            nodes,
        } => {
            use poolnode::edge::operator;
            let token = std::env::var("POOLNODE_ADMIN_TOKEN")
                .ok()
                .or_else(|| cluster.as_ref().map(|c| c.admin_token.clone()))
                .ok_or_else(|| anyhow::anyhow!("set POOLNODE_ADMIN_TOKEN or POOLNODE_CLUSTER"))?;
            let targets = match (nodes.is_empty(), cluster.as_ref()) {
                (false, _) => nodes,
                (true, Some(cluster)) => operator::admin_targets(cluster, &pool)?,
                (true, None) => anyhow::bail!("give --node host:port or set POOLNODE_CLUSTER"),
            };
            let outcomes = runtime.block_on(operator::set_next_hop(&targets, &next_hop, &token));
            let mut refused = 0;
            for (target, outcome) in &outcomes {
                match outcome {
                    Ok((200, body)) => {
                        println!("{target}: next hop {next_hop} (was {})", body["previous"])
                    }
                    Ok((code, body)) => {
                        refused += 1;
                        println!("{target}: refused {code}: {}", body["error"]);
                    }
                    Err(e) => {
                        refused += 1;
                        println!("{target}: failed: {e}");
                    }
                }
            }
            anyhow::ensure!(
                refused == 0,
                "edge-next-hop on {pool}: {refused} of {} servers did not change",
                outcomes.len()
            );
        }
        AdminCommand::PoolFailover { pool, nodes } => pairing_command(
            cluster.as_ref(),
            &runtime,
            PairingOp::Failover,
            &pool,
            nodes,
        )?,
        AdminCommand::PoolFailback { pool, nodes } => pairing_command(
            cluster.as_ref(),
            &runtime,
            PairingOp::Failback,
            &pool,
            nodes,
        )?,
        AdminCommand::StoreFailover { to, nodes } => {
            pairing_command(cluster.as_ref(), &runtime, PairingOp::Store, &to, nodes)?
        }
        AdminCommand::BackupSync { pool, nodes } => {
            pairing_command(cluster.as_ref(), &runtime, PairingOp::Sync, &pool, nodes)?
        }
        AdminCommand::BackupStatus { pool, nodes, json } => {
            use poolnode::pairing::operator;
            let targets = pairing_targets(cluster.as_ref(), &pool, nodes, true)?;
            let sections = runtime.block_on(operator::backup_status(&targets));
            if json {
                println!("{}", serde_json::to_string_pretty(&sections)?);
            } else {
                print!("{}", operator::render_backup_status(&sections));
            }
        }
    }
    Ok(())
}

/// The pairing commands of `poolnode admin`.
enum PairingOp {
    Failover,
    Failback,
    Store,
    Sync,
}

/// Admin targets for a pairing command about `pool`: `--node` addresses, else the servers of `pool`'s pair
/// (`at_pair`) or of `pool` itself.
fn pairing_targets(
    cluster: Option<&poolnode::cluster::ClusterConfig>,
    pool: &str,
    nodes: Vec<String>,
    at_pair: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    use poolnode::pairing::operator;
    if !nodes.is_empty() {
        return Ok(nodes.into_iter().map(|n| (n.clone(), n)).collect());
    }
    let cluster =
        cluster.ok_or_else(|| anyhow::anyhow!("give --node host:port or set POOLNODE_CLUSTER"))?;
    let acting = if at_pair {
        operator::pair_of(cluster, pool)?
    } else {
        pool.to_owned()
    };
    Ok(operator::targets(cluster, &acting)?)
}

/// `pool-failover`, `pool-failback`, `store-failover`, `backup-sync`: one server of the acting pool decides.
fn pairing_command(
    cluster: Option<&poolnode::cluster::ClusterConfig>,
    runtime: &tokio::runtime::Runtime,
    op: PairingOp,
    pool: &str,
    nodes: Vec<String>,
) -> anyhow::Result<()> {
    use poolnode::pairing::operator;
    let token = std::env::var("POOLNODE_ADMIN_TOKEN")
        .ok()
        .or_else(|| cluster.map(|c| c.admin_token.clone()))
        .ok_or_else(|| anyhow::anyhow!("set POOLNODE_ADMIN_TOKEN or POOLNODE_CLUSTER"))?;
    let (command, body, at_pair) = match op {
        PairingOp::Failover => ("pool-failover", serde_json::json!({"pool": pool}), true),
        PairingOp::Failback => ("pool-failback", serde_json::json!({"pool": pool}), true),
        PairingOp::Store => ("store-failover", serde_json::json!({"to": pool}), false),
        PairingOp::Sync => ("backup-sync", serde_json::json!({"pool": pool}), true),
    };
    let targets = pairing_targets(cluster, pool, nodes, at_pair)?;
    let (node, answer) = runtime.block_on(operator::post(&targets, command, &body, &token))?;
    println!("{node}: {}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// `poolnode director|edge|mediation|pstn-gateway`: the role's `run_node` reads the cluster, binds, prints its
/// ready line and serves until SIGTERM.
fn run_sip_role(
    role: impl std::future::Future<Output = Result<(), poolnode::director::NodeError>>,
) -> anyhow::Result<()> {
    init_logging();
    tokio::runtime::Runtime::new()?.block_on(role)?;
    Ok(())
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
