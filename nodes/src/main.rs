//! `poolnode`: one statically linked binary holding every role of the reference pool as a subcommand.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "poolnode", version, about = "The reference pool: every Lync 2013 HA/DR role as a subcommand")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and exit.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("{}", poolnode::version::line()),
    }
    Ok(())
}
