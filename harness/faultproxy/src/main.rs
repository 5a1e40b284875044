//! The `faultproxy` binary: parses flags, binds the API, loads `--config`, prints the ready line,
//! and calls `Server::serve`. Logs go to stderr; stdout carries only the ready line.

use std::io::Write;

use anyhow::Context;
use clap::Parser;

/// A Toxiproxy-compatible TCP and UDP fault proxy with SIP-aware toxics and reproducible randomness.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the HTTP API binds.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Port of the HTTP API.
    #[arg(long, default_value_t = 8474)]
    port: u16,
    /// Seed of every random draw (toxicity, jitter, slicing); drawn and printed when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// JSON array of proxies to create at start, as `POST /populate` takes.
    #[arg(long)]
    config: Option<String>,
    /// Also serve a TCP echo server on this address: a known upstream inside the image, so a link's toxics
    /// can be measured end to end with nothing else running (the container tests use it).
    #[arg(long, value_name = "ADDR")]
    echo: Option<std::net::SocketAddr>,
    /// Also serve the harness's tunnel on this address: `CONNECT host:port [timeout_ms]` then raw bytes, or
    /// `RESOLVE name` for every address of a name. The proxy sits on every network of a run, so through one
    /// published port the harness reaches any node by name, even where the host cannot route to containers.
    #[arg(long, value_name = "ADDR")]
    tunnel: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in container logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // The API gets this thread's own runtime; the proxies get the server's data-plane runtime.
    let api_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the API runtime")?;
    api_runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let server = faultproxy::Server::new(args.seed)?;
    let seed = server.seed();
    tracing::info!(seed, "seed (replay with --seed {seed})");
    let api = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("failed to bind the API on {}:{}", args.host, args.port))?;
    let addr = api.local_addr()?;
    if let Some(path) = &args.config {
        let proxies = faultproxy::read_config(path)?;
        let created = server
            .populate(proxies)
            .await
            .context("failed to populate --config")?;
        tracing::info!(count = created.len(), path, "proxies from config");
    }
    if let Some(echo) = args.echo {
        let listener = tokio::net::TcpListener::bind(echo)
            .await
            .with_context(|| format!("failed to bind the echo server on {echo}"))?;
        tokio::spawn(serve_echo(listener));
    }
    if let Some(tunnel) = args.tunnel {
        let listener = tokio::net::TcpListener::bind(tunnel)
            .await
            .with_context(|| format!("failed to bind the tunnel on {tunnel}"))?;
        tokio::spawn(faultproxy::tunnel::serve(listener));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "faultproxy ready api={addr} seed={seed}")?;
    stdout.flush()?;
    drop(stdout);
    server.serve(api, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Echoes every byte back on each connection until the peer closes.
async fn serve_echo(listener: tokio::net::TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}

/// Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
