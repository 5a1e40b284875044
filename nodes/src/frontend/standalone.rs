//! Standalone mode: one Front End alone with in-memory state, for SIP tools and benchmarks. It prints one ready line
//! on stdout once listening (`poolnode frontend ready sip=<addr>`), which the harness waits for in containers.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::dispatch::run;
use super::error::FrontEndError;
use super::server::FrontEndConfig;
use super::users::Credentials;
use crate::sip::Listeners;

/// What `poolnode frontend --standalone` was asked.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// TCP and UDP both listen here.
    pub listen: SocketAddr,
    /// No authentication: any user may register.
    pub open: bool,
    /// A users file (`user:password` per line).
    pub users_file: Option<PathBuf>,
    pub realm: String,
}

/// The ready line for a server listening on `addr`.
pub fn ready_line(addr: SocketAddr) -> String {
    format!("poolnode frontend ready sip={addr}")
}

/// Binds, prints the ready line, and serves until `shutdown` completes.
pub async fn run_standalone(
    options: StandaloneOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    let credentials = match (&options.users_file, options.open) {
        (_, true) => Credentials::open(),
        (Some(path), false) => Credentials::load(path)?,
        (None, false) => Credentials::from_pairs(Vec::<(String, String)>::new()),
    };
    let config = FrontEndConfig {
        credentials,
        realm: options.realm,
        ..FrontEndConfig::default()
    };
    let listeners =
        Listeners::bind(options.listen)
            .await
            .map_err(|source| FrontEndError::Bind {
                addr: options.listen,
                source,
            })?;
    let addr = listeners
        .local_addr()
        .map_err(|source| FrontEndError::Bind {
            addr: options.listen,
            source,
        })?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", ready_line(addr));
        let _ = stdout.flush();
    }
    run(listeners, config, shutdown).await
}
