//! `poolnode-defects`: the known-bad pool's binary — `poolnode`'s own command line, built only with the cargo
//! feature `defects` (see `poolnode::defects`), so it can plant the one defect `POOLNODE_DEFECT` names. The
//! harness wraps it in `poolchaos/poolnode-defects`, never in the default image.

#[path = "../main.rs"]
mod cli;

fn main() -> anyhow::Result<()> {
    cli::main()
}
