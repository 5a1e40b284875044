//! The command line of `netfault` (`apply`, `clear`, `script`, `probe`, `echo`), and the argument lists the
//! harness passes to it, built here so that they always parse.

use crate::{FaultSpec, ProbeOptions};
use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "netfault",
    about = "Packet faults like netem, through iptables and NFQUEUE"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), String> {
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
            let stats = crate::apply(queue, &spec, !ignore_stdin, crate::engine::print_ready)?;
            eprintln!(
                "netfault: queue {queue} undone: {}",
                serde_json::to_string(&stats).unwrap_or_default()
            );
            Ok(())
        }
        Command::Clear { queue } => crate::rules::run_script(&crate::remove_script(queue)),
        Command::Script { queue, spec } => {
            let spec = FaultSpec::from_json(&spec)?;
            println!(
                "# install\n{}# remove\n{}",
                crate::install_script(queue, &spec),
                crate::remove_script(queue)
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
            let report = crate::probe(&ProbeOptions {
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
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, stop.clone())
                    .map_err(|e| format!("cannot handle signals: {e}"))?;
            }
            let echoed = crate::echo(port, Duration::from_secs(for_s), &stop)?;
            println!("{{\"echoed\":{echoed}}}");
            Ok(())
        }
    }
}

/// Arguments of `netfault apply` for `spec` on queue `queue`.
pub fn apply_args(queue: u16, spec: &FaultSpec) -> Vec<String> {
    vec![
        "apply".into(),
        "--queue".into(),
        queue.to_string(),
        "--spec".into(),
        spec.to_json(),
    ]
}

/// Arguments of `netfault clear` for queue `queue`.
pub fn clear_args(queue: u16) -> Vec<String> {
    vec!["clear".into(), "--queue".into(), queue.to_string()]
}

/// Arguments of `netfault probe`.
pub fn probe_args(opts: &ProbeOptions) -> Vec<String> {
    vec![
        "probe".into(),
        "--to".into(),
        opts.to.to_string(),
        "--port".into(),
        opts.port.to_string(),
        "--count".into(),
        opts.count.to_string(),
        "--interval-ms".into(),
        opts.interval.as_millis().to_string(),
        "--size".into(),
        opts.size.to_string(),
        "--timeout-ms".into(),
        opts.timeout.as_millis().to_string(),
    ]
}

/// Arguments of `netfault echo`.
pub fn echo_args(port: u16, duration: Duration) -> Vec<String> {
    vec![
        "echo".into(),
        "--port".into(),
        port.to_string(),
        "--for-s".into(),
        duration.as_secs().max(1).to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: Vec<String>) -> Command {
        Cli::try_parse_from(std::iter::once("netfault".to_string()).chain(args))
            .unwrap()
            .command
    }

    #[test]
    fn built_arguments_parse_back() {
        let spec = FaultSpec {
            delay_ms: 5.0,
            ..FaultSpec::default()
        };
        match parse(apply_args(4, &spec)) {
            Command::Apply {
                queue,
                spec: Some(json),
                ..
            } => {
                assert_eq!(queue, 4);
                assert_eq!(FaultSpec::from_json(&json).unwrap(), spec);
            }
            _ => panic!("not apply"),
        }
        assert!(matches!(parse(clear_args(4)), Command::Clear { queue: 4 }));
        let opts = ProbeOptions {
            to: Ipv4Addr::new(10, 0, 0, 2),
            port: 9,
            count: 7,
            interval: Duration::from_millis(3),
            size: 100,
            timeout: Duration::from_millis(500),
        };
        assert!(matches!(
            parse(probe_args(&opts)),
            Command::Probe {
                port: 9,
                count: 7,
                interval_ms: 3,
                size: 100,
                timeout_ms: 500,
                ..
            }
        ));
        assert!(matches!(
            parse(echo_args(9, Duration::from_secs(30))),
            Command::Echo { port: 9, for_s: 30 }
        ));
    }
}
