//! `poolchaos`: the harness's command line. Each command is a thin call into the library; exit codes live
//! in `poolchaos::exit`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use poolchaos::{exit, images};

#[derive(Parser)]
#[command(
    name = "poolchaos",
    version,
    about = "Chaos harness for paired SIP pools: faults in containers, per-user continuity, failover latency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the static binaries and the FROM scratch images (only those whose content changed).
    Images,
    /// Print the version and exit.
    Version,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Version => {
            println!("poolchaos {}", env!("CARGO_PKG_VERSION"));
            exit::VALID
        }
        Command::Images => match images::ensure(&images::workspace_root()) {
            Ok(built) => {
                for image in built {
                    let state = if image.built { "built" } else { "up to date" };
                    println!("{}\t{state}", image.reference());
                }
                exit::VALID
            }
            Err(e) => {
                eprintln!("poolchaos: failed to {e}");
                exit::UNKNOWN
            }
        },
    };
    ExitCode::from(code as u8)
}
