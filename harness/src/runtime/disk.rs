//! Disk faults on a Back End node's store.
//!
//! Every Back End node of the reference pool keeps its store (`/data` in its container) on a disk of its own: a
//! small ext4 filesystem ([`DISK_MB`] MiB, no blocks reserved for root) in an image file, loop-mounted on the host
//! under `<temp>/poolchaos-disks/<run>/<node>/fs` and bound into the container. So a fault fills or breaks that
//! node's disk alone, as a data volume of a real server would fill, and never the host's. Each run's directory
//! holds its labels (`labels.json`, as on its containers), so teardown, drop and `poolchaos sweep` find and remove
//! the disks of a run by its labels even after the process that made them died.
//!
//! - `disk_full`: a filler file next to the store's directory (out of the container's sight) takes every free
//!   block. Proven from the container's view (its root, `/proc/<pid>/root/data`): a new 4 KiB write there fails
//!   with `ENOSPC` and the filesystem reports no block available. `disk_free` deletes the filler; proven by a
//!   write there that succeeds (and is synced) and free blocks again.
//! - `disk_read_only`: the store's files and directory turn immutable (`chattr +i`; not SQLite's shared-memory
//!   index, which the node writes through a memory map): every write to them fails (`EPERM`) while reads go on.
//!   A remount read-only is not possible while the store holds its database and write-ahead log open for writing
//!   (the kernel answers `EBUSY`), and failing a mounted ext4's I/O aborts its journal, which no remount undoes
//!   while the node runs; immutable files refuse writes through descriptors already open, so the store sees what
//!   a read-only disk does, and the undo is exact. Proven from the container's view: a new file in the store's
//!   directory and opening the database for writing both fail with `EPERM`. `disk_writable` clears the flags;
//!   proven by a synced write there and the database opening for writing.

use std::path::PathBuf;

use super::cluster::{Cluster, NodeHandle};
use super::docker::RuntimeError;
use super::store_disk::{
    available_bytes, fill_blocking, is_mounted, mount_point, open_for_writing, probe_write,
    set_immutable, store_dir, DISK_MB, ENOSPC, EPERM, FILLER, STORE_DIR, STORE_FILE,
};
use crate::fault::Fault;

/// The node a disk fault is aimed at, and its disk's mount point on the host, once it is proven to have one.
async fn target(c: &Cluster, fault: &Fault) -> Result<(NodeHandle, PathBuf), RuntimeError> {
    let target = match fault {
        Fault::DiskFull { target } | Fault::DiskReadOnly { target } => target,
        other => {
            return Err(RuntimeError::Other(format!(
                "{} is not a disk fault: a harness bug",
                other.kind()
            )))
        }
    };
    let mut nodes = super::nodes::resolve(c, target).await?;
    if nodes.len() != 1 {
        return Err(RuntimeError::Other(format!(
            "target `{target}` names {} nodes; a disk fault takes one Back End node (`be1-1`, \
             `principal-of:be1`)",
            nodes.len()
        )));
    }
    let node = nodes.remove(0);
    let mount = mount_point(&c.run, &node.name);
    let has = tokio::task::spawn_blocking({
        let mount = mount.clone();
        move || is_mounted(&mount)
    })
    .await
    .unwrap_or(false);
    if !has {
        return Err(RuntimeError::Other(format!(
            "{}: {} has no store disk (only the reference pool's Back End nodes have one, at {}); aim disk \
             faults at a Back End node (`be1-1`, `principal-of:be1`)",
            fault.kind(),
            node.name,
            mount.display()
        )));
    }
    Ok((node, mount))
}

/// The node's store directory as its container sees it: through its root, in its mount namespace.
async fn container_view(c: &Cluster, node: &NodeHandle) -> Result<PathBuf, RuntimeError> {
    let pid = super::nodes::pid(c, node).await?;
    Ok(PathBuf::from(format!(
        "/proc/{pid}/root{}",
        STORE_DIR.trim_end_matches('/')
    )))
}

async fn blocking<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Other(format!("{what}: {e}")))?
        .map_err(|e| RuntimeError::Other(format!("{what}: {e}")))
}

/// Applies a disk fault and proves it took effect, from the container's view of its store.
pub(super) async fn apply(c: &Cluster, fault: &Fault, _id: usize) -> Result<(), RuntimeError> {
    let (node, mount) = target(c, fault).await?;
    match fault {
        Fault::DiskFull { .. } => {
            let m = mount.clone();
            blocking(format!("fill the store disk of {}", node.name), move || {
                fill_blocking(&m)
            })
            .await?;
            let view = container_view(c, &node).await?;
            let name = node.name.clone();
            blocking(format!("verify that the store disk of {name} is full"), move || {
                match probe_write(&view) {
                    Err(e) if e.raw_os_error() == Some(ENOSPC) => {}
                    Err(e) => {
                        return Err(format!(
                            "a write in {} failed with {e}, not ENOSPC",
                            view.display()
                        ))
                    }
                    Ok(()) => {
                        return Err(format!(
                            "a write in {} (the container's view) succeeded: the container does not see the \
                             disk the harness filled",
                            view.display()
                        ))
                    }
                }
                let left = available_bytes(&view)?;
                if left >= 4096 {
                    return Err(format!("{} still has {left} bytes available", view.display()));
                }
                Ok(())
            })
            .await
        }
        Fault::DiskReadOnly { .. } => {
            let data = store_dir(&c.run, &node.name);
            blocking(
                format!("turn the store of {} read-only", node.name),
                move || set_immutable(&data, true),
            )
            .await?;
            let view = container_view(c, &node).await?;
            let name = node.name.clone();
            blocking(
                format!("verify that the store of {name} is read-only"),
                move || {
                    match probe_write(&view) {
                        Err(e) if e.raw_os_error() == Some(EPERM) => {}
                        other => {
                            return Err(format!(
                                "a new file in {} (the container's view): {other:?}, not EPERM",
                                view.display()
                            ))
                        }
                    }
                    let db = view.join(STORE_FILE);
                    match open_for_writing(&db) {
                        Err(e) if e.raw_os_error() == Some(EPERM) => Ok(()),
                        other => Err(format!(
                            "opening {} for writing: {other:?}, not EPERM",
                            db.display()
                        )),
                    }
                },
            )
            .await
        }
        _ => unreachable!("target() admits disk faults only"),
    }
}

/// Undoes a disk fault and proves the undo, from the container's view of its store.
pub(super) async fn undo(c: &Cluster, fault: &Fault, _id: usize) -> Result<(), RuntimeError> {
    let (node, mount) = target(c, fault).await?;
    match fault {
        Fault::DiskFull { .. } => {
            let filler = mount.join(FILLER);
            blocking(format!("free the store disk of {}", node.name), move || {
                match std::fs::remove_file(&filler) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("remove {}: {e}", filler.display())),
                }
            })
            .await?;
            let view = container_view(c, &node).await?;
            let name = node.name.clone();
            blocking(
                format!("verify that the store disk of {name} takes writes again"),
                move || {
                    probe_write(&view)
                        .map_err(|e| format!("a write in {} still fails: {e}", view.display()))?;
                    let left = available_bytes(&view)?;
                    if left < (DISK_MB << 20) / 2 {
                        return Err(format!(
                            "{} has only {left} bytes available after the filler went",
                            view.display()
                        ));
                    }
                    Ok(())
                },
            )
            .await
        }
        Fault::DiskReadOnly { .. } => {
            let data = store_dir(&c.run, &node.name);
            blocking(
                format!("make the store of {} writable", node.name),
                move || set_immutable(&data, false),
            )
            .await?;
            let view = container_view(c, &node).await?;
            let name = node.name.clone();
            blocking(
                format!("verify that the store of {name} takes writes again"),
                move || {
                    probe_write(&view)
                        .map_err(|e| format!("a write in {} still fails: {e}", view.display()))?;
                    let db = view.join(STORE_FILE);
                    open_for_writing(&db)
                        .map(drop)
                        .map_err(|e| format!("opening {} for writing: {e}", db.display()))
                },
            )
            .await
        }
        _ => unreachable!("target() admits disk faults only"),
    }
}
