//! Container tests of the disk faults: a Back End node's store disk filled up and freed on a real topology, each
//! effect checked here again from the container's view, and the disks removed by teardown and by `sweep`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use poolchaos::fault::Fault;
use poolchaos::runtime::{docker, labels, store_disk as disk, Cluster, Injector};
use poolchaos::topology::Topology;

fn topology(name: &str) -> Topology {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../suites/topologies")
        .join(name);
    Topology::load(&path).expect("the suite's topology file is valid")
}

/// Whether `path` is a mount point in the host's mount table.
fn mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("the mount table");
    let path = path.display().to_string();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_str()))
}

/// The node's store directory as its container sees it (through its root).
fn store_in_container(container: &str) -> PathBuf {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", container])
        .output()
        .expect("docker runs");
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && pid != "0", "{container} is running");
    PathBuf::from(format!("/proc/{pid}/root{}", disk::STORE_DIR))
}

/// What a 4 KiB synced write into the node's store directory, as its container sees it, does.
fn write_in_container(container: &str) -> std::io::Result<()> {
    let path = store_in_container(container).join("disk-test");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[1u8; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

/// Claim: each Back End node has a store disk of its own (no other node has one); `disk_full` fills it so that a
/// write from inside the container fails with `ENOSPC`, `disk_free` makes writes succeed again; `disk_read_only`
/// makes a new file and opening the database for writing fail with `EPERM` while the database is still read, and
/// `disk_writable` undoes it; a disk fault on a node without a store disk is refused; teardown leaves no disk, mount
/// or loop device.
/// Proof: the mount table, a write through the container's root after each step, the errors, and the disks'
/// directory and `losetup` after `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_faults_and_their_undos_are_verified_on_a_back_end_and_teardown_removes_the_disks() {
    let cluster = Cluster::up(topology("backend.toml"), 7)
        .await
        .expect("topology starts");
    let run = cluster.run.clone();
    let root = disk::disks_root().join(&run);
    for node in ["be1-1", "be1-2"] {
        assert!(mounted(&root.join(node).join("fs")), "{node} has its disk");
    }
    for node in ["be1-witness", "fe1-1"] {
        assert!(!root.join(node).exists(), "{node} has no store disk");
    }
    let container = cluster.nodes["be1-1"].container.clone();
    write_in_container(&container).expect("a fresh disk takes writes");

    let mut injector = Injector::new(&cluster);
    let full = injector
        .apply(&Fault::DiskFull {
            target: "be1-1".into(),
        })
        .await
        .expect("disk_full is verified");
    let err = write_in_container(&container).expect_err("a full disk refuses writes");
    assert_eq!(err.raw_os_error(), Some(28), "ENOSPC, not {err}");
    write_in_container(&cluster.nodes["be1-2"].container)
        .expect("the mirror's disk is another one, not full");
    injector.undo(full).await.expect("disk_free is verified");
    write_in_container(&container).expect("a freed disk takes writes again");

    let read_only = injector
        .apply(&Fault::DiskReadOnly {
            target: "be1-1".into(),
        })
        .await
        .expect("disk_read_only is verified");
    let err = write_in_container(&container).expect_err("a read-only store refuses writes");
    assert_eq!(err.raw_os_error(), Some(1), "EPERM, not {err}");
    let db = store_in_container(&container).join("backend.sqlite3");
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&db)
        .expect_err("the database does not open for writing");
    assert_eq!(err.raw_os_error(), Some(1), "EPERM, not {err}");
    assert!(
        std::fs::metadata(&db).expect("the database is read").len() > 0,
        "reads go on"
    );
    injector
        .undo(read_only)
        .await
        .expect("disk_writable is verified");
    write_in_container(&container).expect("a writable store takes writes again");

    let no_disk = injector
        .apply(&Fault::DiskFull {
            target: "fe1-1".into(),
        })
        .await
        .expect_err("a Front End has no store disk");
    assert!(no_disk.to_string().contains("no store disk"), "{no_disk}");
    assert!(injector.in_force().is_empty());
    drop(injector);

    cluster.down().await.expect("teardown");
    assert!(!root.exists(), "the run's disks are removed");
    let loops = Command::new("losetup")
        .arg("-a")
        .output()
        .expect("losetup runs");
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(!loops.contains(&run), "no loop device of the run: {loops}");
}

/// Claim: the store disks of a run whose process died are removed by a plain `sweep`; those of a live run are not.
/// Proof: two disks made as a run's (one labelled with a pid that does not exist, one with this process's);
/// after the sweep the first is unmounted and gone, the second still mounted (then removed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_the_disks_of_a_dead_run_and_keeps_a_live_one() {
    let tag = format!("{:08x}", rand::random::<u32>());
    let (dead, live) = (format!("dead{tag}"), format!("live{tag}"));
    for run in [&dead, &live] {
        let (r, node) = (run.clone(), "be1-1");
        tokio::task::spawn_blocking(move || disk::create_blocking(&r, node, &labels::for_run(&r)))
            .await
            .unwrap()
            .expect("a store disk is made");
    }
    let labels_path = disk::disks_root().join(&dead).join(disk::LABELS_FILE);
    let mut dead_labels: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&labels_path).unwrap()).unwrap();
    dead_labels.insert(labels::PID.into(), u32::MAX.to_string());
    std::fs::write(&labels_path, serde_json::to_string(&dead_labels).unwrap()).unwrap();

    let docker = docker::connect().await.expect("Docker answers");
    let swept = labels::sweep(&docker, labels::Scope::Dead)
        .await
        .expect("sweep");
    assert!(swept.runs.contains(&dead), "{swept:?}");
    assert!(!swept.runs.contains(&live), "{swept:?}");
    assert!(!disk::disks_root().join(&dead).exists());
    let live_mount = disk::disks_root().join(&live).join("be1-1").join("fs");
    assert!(mounted(&live_mount), "a live run's disk stays");

    let swept = labels::sweep(&docker, labels::Scope::Run(&live))
        .await
        .expect("sweep of one run");
    assert!(swept.runs.contains(&live), "{swept:?}");
    assert!(!disk::disks_root().join(&live).exists());
}
