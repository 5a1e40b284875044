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
}

#[derive(Args)]
struct FrontendArgs {
    /// Run one Front End alone with in-memory state (the only mode so far).
    #[arg(long)]
    standalone: bool,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("{}", poolnode::version::line()),
        Command::Frontend(args) => {
            anyhow::ensure!(args.standalone, "only `poolnode frontend --standalone` exists so far; pool mode comes with replication");
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
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
