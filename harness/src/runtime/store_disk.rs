//! The store disks of the reference pool's Back End nodes: made, filled, probed and removed on the host.
//!
//! Every Back End node of the reference pool keeps its store (`/data` in its container) on a disk of its own: a
//! small ext4 filesystem ([`DISK_MB`] MiB, no blocks reserved for root) in an image file, loop-mounted on the host
//! under `<temp>/poolchaos-disks/<run>/<node>/fs` and bound into the container. So a fault fills or breaks that
//! node's disk alone, as a data volume of a real server would fill, and never the host's. Each run's directory
//! holds its labels (`labels.json`, as on its containers), so teardown, drop and `poolchaos sweep` find and remove
//! the disks of a run by its labels even after the process that made them died.
//!
//! This module knows files, mounts and host commands only; the faults that act on these disks are in
//! [`super::disk`], the labels are handed in by its callers.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::docker::RuntimeError;

/// The size of a Back End node's disk: room for its store many times over, small enough to fill at once.
pub const DISK_MB: u64 = 64;
/// The directory in the container the store lives in (`poolnode backend --data`).
pub const STORE_DIR: &str = "/data";
/// The longest one command on a disk (mkfs, mount, fallocate, umount) may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A run directory without its labels is taken for one being made (and kept) this long.
const UNLABELLED_GRACE: Duration = Duration::from_secs(120);
/// The file that takes a full disk's free space, beside (not in) the store's directory.
pub(super) const FILLER: &str = "filler";
/// The file a proof writes in the store's directory, and removes.
const PROBE: &str = ".poolchaos-disk-probe";
/// The run's labels in its disks' directory.
pub const LABELS_FILE: &str = "labels.json";
/// `ENOSPC`.
pub(super) const ENOSPC: i32 = 28;
/// `EPERM`: what ext4 answers a write to an immutable file or directory.
pub(super) const EPERM: i32 = 1;
/// The store's database in its directory (`poolnode::backend::store::DB_FILE`).
pub(super) const STORE_FILE: &str = "backend.sqlite3";

/// Where every run's disks live on the host.
pub fn disks_root() -> PathBuf {
    std::env::temp_dir().join("poolchaos-disks")
}

fn run_dir(run: &str) -> PathBuf {
    disks_root().join(run)
}

fn node_dir(run: &str, node: &str) -> PathBuf {
    run_dir(run).join(node)
}

pub(super) fn mount_point(run: &str, node: &str) -> PathBuf {
    node_dir(run, node).join("fs")
}

/// The host directory bound to the node's [`STORE_DIR`].
pub fn store_dir(run: &str, node: &str) -> PathBuf {
    mount_point(run, node).join("data")
}

/// Creates node `node`'s disk for `run` (image, filesystem, loop mount) and returns the directory to bind as its
/// [`STORE_DIR`]. The run's directory is labelled first (with `labels`, the run's), so a disk is never made where a sweep cannot find it.
pub fn create_blocking(
    run: &str,
    node: &str,
    labels: &HashMap<String, String>,
) -> Result<PathBuf, RuntimeError> {
    let what = |e: String| {
        RuntimeError::Other(format!(
            "create the store disk of {node}: {e}; a Back End node's disk is an ext4 image loop-mounted on the \
             host, which needs root, loop devices (/dev/loop-control), mkfs.ext4 (e2fsprogs) and mount (util-linux)"
        ))
    };
    let dir = run_dir(run);
    std::fs::create_dir_all(&dir).map_err(|e| what(format!("create {}: {e}", dir.display())))?;
    let labels_path = dir.join(LABELS_FILE);
    if !labels_path.exists() {
        let text = serde_json::to_string(labels).expect("labels are plain strings");
        let tmp = dir.join(format!("{LABELS_FILE}.{node}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| what(format!("write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &labels_path)
            .map_err(|e| what(format!("write {}: {e}", labels_path.display())))?;
    }
    let mount = mount_point(run, node);
    std::fs::create_dir_all(&mount)
        .map_err(|e| what(format!("create {}: {e}", mount.display())))?;
    let image = node_dir(run, node).join("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(DISK_MB << 20))
        .map_err(|e| what(format!("create {}: {e}", image.display())))?;
    let image_s = image.display().to_string();
    let mount_s = mount.display().to_string();
    command("mkfs.ext4", &["-q", "-F", "-m", "0", &image_s]).map_err(what)?;
    // `-o loop` sets the loop device to detach itself once the filesystem's last mount goes.
    command("mount", &["-o", "loop", &image_s, &mount_s]).map_err(what)?;
    let data = store_dir(run, node);
    std::fs::create_dir_all(&data).map_err(|e| what(format!("create {}: {e}", data.display())))?;
    Ok(data)
}

/// Removes the disks of every run whose labels have `key` = `value` (unmounted lazily, so a container still
/// holding one does not stop the removal; its loop device goes with the last mount). Errors are logged: what is
/// left is found again by the next sweep.
pub fn remove_labelled_blocking(key: &str, value: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for (run, labels) in runs_on_disk() {
        if labels.as_ref().and_then(|l| l.get(key)).map(String::as_str) == Some(value) {
            remove_run_blocking(&run);
            removed.push(run);
        }
    }
    removed
}

/// Removes every disk of `run` and its directory.
pub fn remove_run_blocking(run: &str) {
    let dir = run_dir(run);
    let Ok(nodes) = std::fs::read_dir(&dir) else {
        return;
    };
    for node in nodes.flatten() {
        let mount = node.path().join("fs");
        if is_mounted(&mount) {
            if let Err(e) = command("umount", &["-l", &mount.display().to_string()]) {
                warn!(mount = %mount.display(), "unmount a store disk: {e}");
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(dir = %dir.display(), "remove the store disks of run {run}: {e}");
        }
    }
}

/// Removes the disks of the runs `doomed` judges by their labels (`None`: a run directory without labels, older
/// than a start takes, judged by its run id alone, as label `run_key`). Returns the runs removed.
pub fn sweep_blocking(
    run_key: &str,
    doomed: impl Fn(&str, &HashMap<String, String>) -> bool,
) -> Vec<String> {
    let mut removed = Vec::new();
    for (run, found) in runs_on_disk() {
        let labels = match found {
            Some(l) => l,
            None => {
                let age = std::fs::metadata(run_dir(&run))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                if age < UNLABELLED_GRACE {
                    continue;
                }
                HashMap::from([(run_key.to_string(), run.clone())])
            }
        };
        if doomed(&run, &labels) {
            remove_run_blocking(&run);
            removed.push(run);
        }
    }
    removed
}

/// Every run with disks on this host, with its labels (`None` when they cannot be read).
fn runs_on_disk() -> Vec<(String, Option<HashMap<String, String>>)> {
    let Ok(entries) = std::fs::read_dir(disks_root()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let run = e.file_name().to_str()?.to_string();
            let labels = std::fs::read_to_string(e.path().join(LABELS_FILE))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            Some((run, labels))
        })
        .collect()
}

/// Whether `path` is a mount point now (the host's mount table).
pub(super) fn is_mounted(path: &Path) -> bool {
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mount(m)) == canonical)
}

/// A mount point as the mount table spells it (`\040` for a space, …).
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a command on the host, killed past [`COMMAND_TIMEOUT`]; its standard output, or what went wrong.
fn command(program: &str, args: &[&str]) -> Result<String, String> {
    let shown = format!("`{program} {}`", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {shown}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not end within {} s and was killed",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("run {shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Bytes a filesystem has available (`statvfs`: available blocks times block size).
pub(super) fn available_bytes(path: &Path) -> Result<u64, String> {
    let out = command("stat", &["-f", "-c", "%a %S", &path.display().to_string()])?;
    let mut words = out.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
        _ => Err(format!(
            "read the free space of {}: `stat -f` printed {out:?}",
            path.display()
        )),
    }
}

/// Takes every free block of the filesystem at `mount` into its filler: preallocated in halving steps, then
/// written 4 KiB at a time until the filesystem says `ENOSPC`.
pub(super) fn fill_blocking(mount: &Path) -> Result<(), String> {
    let filler = mount.join(FILLER);
    let filler_s = filler.display().to_string();
    let mut offset = 0u64;
    let mut len = available_bytes(mount)?;
    while len >= 4096 {
        let (o, l) = (offset.to_string(), len.to_string());
        if command("fallocate", &["-o", &o, "-l", &l, &filler_s]).is_ok() {
            offset += len;
        } else {
            len /= 2;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&filler)
        .map_err(|e| format!("open {filler_s}: {e}"))?;
    let chunk = [0u8; 4096];
    for _ in 0..100_000 {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(ENOSPC) => return Ok(()),
            Err(e) => return Err(format!("write {filler_s}: {e}")),
        }
    }
    Err(format!(
        "fill {}: it still takes writes after {} MiB more",
        mount.display(),
        100_000 * 4096 / (1 << 20)
    ))
}

/// What a 4 KiB write (synced) into `dir` does: `Ok(())`, or the error the filesystem gave. The file is removed.
pub(super) fn probe_write(dir: &Path) -> Result<(), std::io::Error> {
    let path = dir.join(PROBE);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(&[7u8; 4096])?;
            f.sync_all()
        });
    let _ = std::fs::remove_file(&path);
    written
}

/// The store's files in `dir` (every regular file but SQLite's shared-memory index, which the node maps and
/// writes through memory: an immutable one would kill it) and `dir` itself made immutable (`chattr +i`: no write,
/// no new file, no removal; reads go on) or mutable again. Turning on, the directory goes last and the files are
/// listed again after it, so a file made meanwhile is caught.
pub(super) fn set_immutable(dir: &Path, on: bool) -> Result<(), String> {
    let flag = if on { "+i" } else { "-i" };
    let files = |dir: &Path| -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("list {}: {e}", dir.display()))?;
        Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
            .map(|e| e.path().display().to_string())
            .collect())
    };
    let dir_s = dir.display().to_string();
    if on {
        for f in files(dir)? {
            command("chattr", &[flag, &f])?;
        }
        command("chattr", &[flag, &dir_s])?;
        for f in files(dir)? {
            command("chattr", &[flag, &f])?;
        }
    } else {
        command("chattr", &[flag, &dir_s])?;
        for f in files(dir)? {
            command("chattr", &[flag, &f])?;
        }
    }
    Ok(())
}

/// Opens a file for appending (writing nothing).
pub(super) fn open_for_writing(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_back_from_their_escaped_form() {
        assert_eq!(unescape_mount("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn a_node_s_store_lives_under_its_run_s_directory() {
        let data = store_dir("0000abcd", "be1-1");
        assert!(data.starts_with(run_dir("0000abcd")));
        assert!(data.ends_with("be1-1/fs/data"));
    }
}
