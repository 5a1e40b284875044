//! Support shared by the integration tests: tools the tests drive (SIPp, sipsak, chromium, Kamailio) are
//! installed on first use, so the README's one test command needs no separate set-up step.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// Returns the path of `binary`, installing Debian package `package` first when it is missing.
///
/// Installing needs root (CI and the project's machines run as root) or password-less sudo; anywhere
/// else this panics with the exact command to run, because a test that silently skips proves nothing.
pub fn ensure_tool(binary: &str, package: &str) -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = which(binary) {
        return path;
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend_from_slice(args);
        let status = Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        matches!(status, Ok(s) if s.success())
    };
    // A fresh machine's package lists may be empty or stale; update once, then install.
    let ok = run(&["apt-get", "-qq", "update"])
        && run(&[
            "apt-get",
            "-qq",
            "install",
            "-y",
            "--no-install-recommends",
            package,
        ]);
    match (ok, which(binary)) {
        (true, Some(path)) => path,
        _ => panic!(
            "this test needs `{binary}` from the Debian package `{package}` and could not install it; \
             run `sudo apt-get update && sudo apt-get install -y {package}` and test again"
        ),
    }
}

fn which(binary: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
