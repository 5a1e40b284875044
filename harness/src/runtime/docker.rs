//! The Docker client and the runtime's errors. The runtime drives bollard directly: it needs network aliases,
//! multi-network create, kill with a signal and network connect/disconnect, which testcontainers lacks, and
//! does its own label-based cleanup.

pub use bollard::Docker;

/// What went wrong in the Docker runtime, phrased to read after "failed to", with what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "reach the Docker engine ({0}); start it (`sudo systemctl start docker`), or set DOCKER_HOST, \
         and check `docker info` works for this user"
    )]
    Connect(String),
    #[error("{action}: {source}")]
    Docker {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0}")]
    Images(#[from] crate::images::ImageError),
    #[error("start node {node}: {why}; its last log lines:\n{logs}")]
    NotReady {
        node: String,
        /// "it exited before …" or "it did not … within N s".
        why: String,
        logs: String,
    },
    #[error("find node or pool `{0}` in this run's topology")]
    UnknownTarget(String),
    #[error(
        "act on `{0}`: it does not carry this run's labels (the harness only touches its own containers)"
    )]
    OutsideBlastRadius(String),
    #[error("{0}")]
    Other(String),
}

/// How long the engine may take to answer the first ping.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Connects to the local engine (DOCKER_HOST honoured) and checks it answers.
pub async fn connect() -> Result<Docker, RuntimeError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|e| RuntimeError::Connect(e.to_string()))?;
    // A hung engine answers nothing: say so now rather than after bollard's own two-minute timeout.
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(RuntimeError::Connect(e.to_string())),
        Err(_) => Err(RuntimeError::Connect(format!(
            "the engine did not answer a ping within {} s; `sudo systemctl restart docker` if `docker ps` hangs too",
            PING_TIMEOUT.as_secs()
        ))),
    }
}

/// Wraps a bollard result with the action that failed.
pub fn ctx<T>(
    action: impl Into<String>,
    r: Result<T, bollard::errors::Error>,
) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Docker {
        action: action.into(),
        source,
    })
}
