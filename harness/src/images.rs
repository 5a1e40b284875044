//! Images built here, never pulled: the static binaries of the workspace and the `FROM scratch` images
//! around them, tagged by content so a changed binary gets a new image and an unchanged one is reused.
//!
//! Every run calls [`ensure`] first, so no user builds images by hand; `poolchaos images` calls it too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod packaged;
pub use packaged::ensure_packaged;

/// The target the static binaries are built for. The `crt-static` flag is given per target (not in
/// `[build] rustflags`) so that build scripts and proc-macros, which run on the host, stay dynamic.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// One image of the project: which binary goes in, and which Dockerfile wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpec {
    /// Repository name, e.g. `poolchaos/poolnode`.
    pub repository: &'static str,
    /// The cargo package that builds the binary.
    pub package: &'static str,
    /// The binary's file name, copied to `/` in the image.
    pub binary: &'static str,
    /// The cargo binary target that builds it (its name in `target/`): `binary` but for the known-bad pool.
    pub cargo_bin: &'static str,
    /// The Dockerfile text (also kept in `docker/` for readers); part of the tag's hash.
    pub dockerfile: &'static str,
    /// The cargo feature the binary is built with (`package/feature`). Its cargo binary target has a name of its
    /// own, so it lives beside the sound build in the same target directory (every dependency built once), and
    /// neither build ever overwrites the other's binary.
    pub features: Option<&'static str>,
}

/// The reference pool: every role as a subcommand of `poolnode`.
pub const POOLNODE: ImageSpec = ImageSpec {
    repository: "poolchaos/poolnode",
    package: "poolnode",
    binary: "poolnode",
    cargo_bin: "poolnode",
    dockerfile: include_str!("../../docker/poolnode.Dockerfile"),
    features: None,
};

/// The known-bad pool: `poolnode` built with the feature `defects`, which plants the one defect its
/// `POOLNODE_DEFECT` names. Never one of [`ALL`]: built only by [`ensure_known_bad`], when a run asks for a
/// defect (`RunOptions::defect`, `poolchaos run --defect`), so the default image cannot carry a defect.
pub const POOLNODE_DEFECTS: ImageSpec = ImageSpec {
    repository: "poolchaos/poolnode-defects",
    package: "poolnode",
    binary: "poolnode",
    cargo_bin: "poolnode-defects",
    dockerfile: include_str!("../../docker/poolnode.Dockerfile"),
    features: Some("poolnode/defects"),
};

/// The Toxiproxy-compatible fault proxy.
pub const TOXIPROXY: ImageSpec = ImageSpec {
    repository: "poolchaos/toxiproxy",
    package: "faultproxy",
    binary: "faultproxy",
    cargo_bin: "faultproxy",
    dockerfile: include_str!("../../docker/toxiproxy.Dockerfile"),
    features: None,
};

/// Every image a run needs.
pub const ALL: [ImageSpec; 2] = [POOLNODE, TOXIPROXY];

/// A built image, ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub spec: ImageSpec,
    /// Content tag: the first 16 hex digits of SHA-256 over the binary and the Dockerfile.
    pub tag: String,
    /// Whether this call built it (false: an image with this content tag already existed).
    pub built: bool,
}

impl Image {
    /// `repository:tag`, as Docker names it.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.spec.repository, self.tag)
    }
}

/// What went wrong while making images, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("run `docker`: it is not installed or not on PATH; install Docker Engine and try again ({0})")]
    DockerMissing(std::io::Error),
    #[error(
        "reach the Docker engine: {0}\n  start it (`sudo systemctl start docker` or `sudo dockerd &`), \
         or set DOCKER_HOST, and check that this user may use it (`docker info`)"
    )]
    DockerUnreachable(String),
    #[error("build the static binaries: `{command}` exited with {status}; its output is above")]
    Cargo { command: String, status: String },
    #[error("run cargo: {0}")]
    CargoMissing(std::io::Error),
    #[error("read the built binary {path}: {source}")]
    Binary {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("build image {reference}: {detail}")]
    Build { reference: String, detail: String },
    #[error("prepare the build context: {0}")]
    Context(std::io::Error),
    #[error("`{command}` did not end within {} s and was stopped; is the machine or the Docker engine stuck?", .after.as_secs())]
    TimedOut { command: String, after: Duration },
}

/// How long a question to the Docker engine may take.
const DOCKER_QUERY_LIMIT: Duration = Duration::from_secs(60);
/// How long one `docker build` of a `FROM scratch` image may take.
const IMAGE_BUILD_LIMIT: Duration = Duration::from_secs(600);
/// How long the static release build may take (a few minutes from scratch on two cores).
const CARGO_BUILD_LIMIT: Duration = Duration::from_secs(3600);

/// A child process that is killed and reaped when dropped: a panic or an early return never leaves it running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `command` to its end within `limit`; past it the process is killed. Stdout and stderr are captured where
/// the command pipes them (read on threads of their own, so a full pipe never stalls the child).
fn run_bounded(command: &mut Command, limit: Duration) -> Result<Output, RunFailure> {
    let started = Instant::now();
    let mut child = Child(command.spawn().map_err(RunFailure::Spawn)?);
    let capture = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut pipe| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        })
    };
    let stdout = capture(
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = capture(
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // Bounded by `limit`: the child is killed (on drop) once it is spent.
    let status: ExitStatus = loop {
        if let Some(status) = child.0.try_wait().map_err(RunFailure::Spawn)? {
            break status;
        }
        if started.elapsed() >= limit {
            return Err(RunFailure::TimedOut(limit));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let joined = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: joined(stdout),
        stderr: joined(stderr),
    })
}

/// Why [`run_bounded`] has no output.
#[derive(Debug)]
enum RunFailure {
    Spawn(std::io::Error),
    TimedOut(Duration),
}

impl RunFailure {
    /// The image error for this failure of `command` (`missing` when it could not be started).
    fn into_error(self, command: &str, missing: fn(std::io::Error) -> ImageError) -> ImageError {
        match self {
            RunFailure::Spawn(e) => missing(e),
            RunFailure::TimedOut(after) => ImageError::TimedOut {
                command: command.to_string(),
                after,
            },
        }
    }
}

/// Runs `docker <args>` within `limit`, output captured.
fn docker(args: &[&str], limit: Duration) -> Result<Output, ImageError> {
    run_bounded(
        Command::new("docker")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        limit,
    )
    .map_err(|f| {
        f.into_error(
            &format!("docker {}", args.join(" ")),
            ImageError::DockerMissing,
        )
    })
}

/// Where the workspace lives: `POOLCHAOS_WORKSPACE` if set, else the tree this harness was built from.
pub fn workspace_root() -> PathBuf {
    match std::env::var_os("POOLCHAOS_WORKSPACE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the harness crate lives one level below the workspace root")
            .to_path_buf(),
    }
}

/// Builds the static binaries (a no-op for cargo when nothing changed), then builds each image whose content
/// tag does not exist yet. Progress goes to stderr.
///
/// With `POOLCHAOS_NO_BUILD=1` nothing is built: the newest images (`:latest`) are used as they are, for
/// working on the harness while the pool's code does not compile.
pub fn ensure(workspace: &Path) -> Result<Vec<Image>, ImageError> {
    docker_reachable()?;
    if std::env::var_os("POOLCHAOS_NO_BUILD").is_some_and(|v| v == "1") {
        return ALL
            .iter()
            .map(|spec| {
                let image = Image {
                    spec: *spec,
                    tag: "latest".into(),
                    built: false,
                };
                if image_exists(&image.reference())? {
                    eprintln!(
                        "poolchaos: POOLCHAOS_NO_BUILD=1: using {}",
                        image.reference()
                    );
                    Ok(image)
                } else {
                    Err(ImageError::Build {
                        reference: image.reference(),
                        detail:
                            "POOLCHAOS_NO_BUILD=1 but no such image: run `poolchaos images` once"
                                .into(),
                    })
                }
            })
            .collect();
    }
    build_static_binaries(workspace, &ALL)?;
    ALL.iter()
        .map(|spec| ensure_image(workspace, *spec))
        .collect()
}

/// The images of a run of the known-bad pool: [`POOLNODE_DEFECTS`] (its binary and the poolnode library built
/// once more with the feature; every dependency's build is shared with the sound one) and every image of [`ALL`]
/// but the sound pool's, each built if its content changed.
pub fn ensure_known_bad(workspace: &Path) -> Result<Vec<Image>, ImageError> {
    docker_reachable()?;
    let others: Vec<ImageSpec> = ALL.into_iter().filter(|s| *s != POOLNODE).collect();
    // With the other binaries in the same build, every dependency is built with the same features as in the
    // sound build (cargo unifies features over the packages built together), so none is rebuilt.
    let mut with_defects = others.clone();
    with_defects.push(POOLNODE_DEFECTS);
    build_static_binaries(workspace, &with_defects)?;
    others
        .into_iter()
        .chain([POOLNODE_DEFECTS])
        .map(|spec| ensure_image(workspace, spec))
        .collect()
}

/// Checks the Docker engine answers, so the first error a user sees says what to do.
pub fn docker_reachable() -> Result<(), ImageError> {
    let out = docker(
        &["version", "--format", "{{.Server.Version}}"],
        DOCKER_QUERY_LIMIT,
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::DockerUnreachable(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Builds the binaries of `specs` in one cargo build, with the features any of them needs.
fn build_static_binaries(workspace: &Path, specs: &[ImageSpec]) -> Result<(), ImageError> {
    let mut args = vec!["build", "--release", "--locked", "--target", STATIC_TARGET];
    for spec in specs {
        args.extend(["-p", spec.package, "--bin", spec.cargo_bin]);
    }
    // The packet faults' tool runs on the host (in a node's namespace), not in an image; static, it runs on any
    // Linux host whatever its libc.
    args.extend(["-p", "netfault", "--bin", "netfault"]);
    for feature in specs.iter().filter_map(|s| s.features) {
        args.extend(["--features", feature]);
    }
    eprintln!(
        "poolchaos: building static binaries: cargo {}",
        args.join(" ")
    );
    let status = run_bounded(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .current_dir(workspace)
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .stdout(Stdio::null()),
        CARGO_BUILD_LIMIT,
    )
    .map_err(|f| {
        f.into_error(
            &format!("cargo {}", args.join(" ")),
            ImageError::CargoMissing,
        )
    })?
    .status;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Cargo {
            command: format!("cargo {}", args.join(" ")),
            status: status.to_string(),
        })
    }
}

/// The path of the `netfault` binary (packet faults) after [`ensure`] built it.
pub fn netfault_binary(workspace: &Path) -> PathBuf {
    target_dir(workspace)
        .join(STATIC_TARGET)
        .join("release")
        .join("netfault")
}

/// The path of a static binary after [`ensure`] built it.
pub fn static_binary(workspace: &Path, spec: ImageSpec) -> PathBuf {
    target_dir(workspace)
        .join(STATIC_TARGET)
        .join("release")
        .join(spec.cargo_bin)
}

fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

fn ensure_image(workspace: &Path, spec: ImageSpec) -> Result<Image, ImageError> {
    let path = static_binary(workspace, spec);
    let binary = std::fs::read(&path).map_err(|source| ImageError::Binary {
        path: path.clone(),
        source,
    })?;
    let tag = content_tag(&binary, spec.dockerfile);
    let mut image = Image {
        spec,
        tag,
        built: false,
    };
    let reference = image.reference();
    if image_exists(&reference)? {
        eprintln!("poolchaos: image {reference} is up to date");
        return Ok(image);
    }
    eprintln!("poolchaos: building image {reference}");
    let context = tempdir(spec.binary).map_err(ImageError::Context)?;
    let result = build_image(&context, &binary, spec, &reference);
    let _ = std::fs::remove_dir_all(&context);
    result?;
    image.built = true;
    Ok(image)
}

/// The tag follows the content: the same binary and Dockerfile always give the same tag.
pub fn content_tag(binary: &[u8], dockerfile: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(binary);
    hash.update(dockerfile.as_bytes());
    hex::encode(&hash.finalize()[..8])
}

fn image_exists(reference: &str) -> Result<bool, ImageError> {
    let out = docker(
        &["image", "inspect", "--format", "{{.Id}}", reference],
        DOCKER_QUERY_LIMIT,
    )?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such image") || stderr.contains("No such object") {
        Ok(false)
    } else {
        Err(ImageError::DockerUnreachable(stderr.trim().to_string()))
    }
}

fn build_image(
    context: &Path,
    binary: &[u8],
    spec: ImageSpec,
    reference: &str,
) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let bin_path = context.join(spec.binary);
    std::fs::write(&bin_path, binary).map_err(ImageError::Context)?;
    std::fs::set_permissions(&bin_path, std::fs::Permissions::from_mode(0o755))
        .map_err(ImageError::Context)?;
    std::fs::write(context.join("Dockerfile"), spec.dockerfile).map_err(ImageError::Context)?;
    docker_build(context, reference, spec.repository)
}

/// `docker build` of a prepared context (its `Dockerfile` included), tagged `reference` and
/// `<repository>:latest`.
fn docker_build(context: &Path, reference: &str, repository: &str) -> Result<(), ImageError> {
    let latest = format!("{repository}:latest");
    let context = context.to_string_lossy();
    let out = docker(
        &["build", "--quiet", "-t", reference, "-t", &latest, &context],
        IMAGE_BUILD_LIMIT,
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Build {
            reference: reference.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn tempdir(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "poolchaos-image-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_limit_is_stopped_and_reaped() {
        let started = Instant::now();
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo $$; exec sleep 30"])
            .stdout(Stdio::piped());
        let failure = run_bounded(&mut command, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(failure, RunFailure::TimedOut(_)), "{failure:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it was not waited out"
        );
        let error = failure.into_error("sleep 30", ImageError::DockerMissing);
        assert!(
            error.to_string().contains("did not end within 0 s"),
            "{error}"
        );
    }

    #[test]
    fn a_command_within_its_limit_gives_its_status_and_output() {
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(&mut command, Duration::from_secs(60)).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let missing = run_bounded(
            &mut Command::new("/nonexistent/poolchaos-no-such-tool"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(missing, RunFailure::Spawn(_)));
    }

    #[test]
    fn tag_follows_the_binary_and_the_dockerfile() {
        let a = content_tag(b"binary one", "FROM scratch");
        assert_eq!(a, content_tag(b"binary one", "FROM scratch"));
        assert_ne!(a, content_tag(b"binary two", "FROM scratch"));
        assert_ne!(a, content_tag(b"binary one", "FROM scratch\nLABEL x=y"));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn the_known_bad_pool_is_its_own_image_and_build() {
        assert!(!ALL.contains(&POOLNODE_DEFECTS));
        assert_ne!(POOLNODE_DEFECTS.repository, POOLNODE.repository);
        let root = Path::new("/w");
        assert_ne!(
            static_binary(root, POOLNODE_DEFECTS),
            static_binary(root, POOLNODE)
        );
    }

    #[test]
    fn every_dockerfile_starts_from_scratch() {
        for spec in ALL.into_iter().chain([POOLNODE_DEFECTS]) {
            assert!(
                spec.dockerfile.lines().any(|l| l.trim() == "FROM scratch"),
                "{} must be FROM scratch: no registry can be reached",
                spec.repository
            );
        }
    }
}
