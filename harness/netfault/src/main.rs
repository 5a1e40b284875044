//! The `netfault` command; see the crate docs for its subcommands.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match netfault::cli::run(netfault::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netfault: {e}");
            ExitCode::FAILURE
        }
    }
}
