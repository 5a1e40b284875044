//! The `netfault` command: `apply`, `clear`, `probe`, `echo`, `script`.

use clap::{Parser, Subcommand};
use netfault::{FaultSpec, ProbeOptions};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "netfault",
    about = "Packet faults like netem, through iptables and NFQUEUE"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply a fault in the current network namespace until SIGTERM/SIGINT/SIGHUP or the end of stdin.
    Apply {
        /// NFQUEUE number, also naming the chains (NETFAULT<n>-OUT, NETFAULT<n>-IN).
        #[arg(long)]
        queue: u16,
        /// The fault spec, JSON.
        #[arg(
            long,
            conflicts_with = "spec_file",
            required_unless_present = "spec_file"
        )]
        spec: Option<String>,
        /// A file holding the fault spec.
        #[arg(long)]
        spec_file: Option<std::path::PathBuf>,
        /// Do not stop at the end of stdin (for a stdin that is /dev/null).
        #[arg(long)]
        ignore_stdin: bool,
    },
    /// Remove the rules of a queue, whatever is left of them (idempotent).
    Clear {
        #[arg(long)]
        queue: u16,
    },
    /// Print the install and remove scripts of a fault without running them.
    Script {
        #[arg(long)]
        queue: u16,
        #[arg(long)]
        spec: String,
    },
    /// Send sequenced UDP datagrams to an echo and print one JSON line of what came back.
    Probe {
        #[arg(long)]
        to: Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 100)]
        count: u32,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Datagram size, bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long replies are awaited after the last datagram.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Echo UDP datagrams back to their sender; prints `{"echoed":N}` when it stops.
    Echo {
        #[arg(long)]
        port: u16,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 3600)]
        for_s: u64,
    },
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Apply {
            queue,
            spec,
            spec_file,
            ignore_stdin,
        } => {
            let text = match (spec, spec_file) {
                (Some(s), _) => s,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                (None, None) => return Err("--spec or --spec-file is required".into()),
            };
            let spec = FaultSpec::from_json(&text)?;
            let stats =
                netfault::apply(queue, &spec, !ignore_stdin, netfault::engine::print_ready)?;
            eprintln!(
                "netfault: queue {queue} undone: {}",
                serde_json::to_string(&stats).unwrap_or_default()
            );
            Ok(())
        }
        Command::Clear { queue } => netfault::rules::run_script(&netfault::remove_script(queue)),
        Command::Script { queue, spec } => {
            let spec = FaultSpec::from_json(&spec)?;
            println!(
                "# install\n{}# remove\n{}",
                netfault::install_script(queue, &spec),
                netfault::remove_script(queue)
            );
            Ok(())
        }
        Command::Probe {
            to,
            port,
            count,
            interval_ms,
            size,
            timeout_ms,
        } => {
            let report = netfault::probe(&ProbeOptions {
                to,
                port,
                count,
                interval: Duration::from_millis(interval_ms),
                size,
                timeout: Duration::from_millis(timeout_ms),
            })?;
            println!("{}", report.to_json());
            Ok(())
        }
        Command::Echo { port, for_s } => {
            let echoed = netfault::echo(port, Duration::from_secs(for_s))?;
            println!("{{\"echoed\":{echoed}}}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netfault: {e}");
            ExitCode::FAILURE
        }
    }
}
