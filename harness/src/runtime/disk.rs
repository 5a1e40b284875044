//! Disk faults on a node's store (in progress).

use super::cluster::Cluster;
use super::docker::RuntimeError;
use crate::fault::Fault;

/// Applies a disk fault and proves it took effect.
pub(super) async fn apply(_c: &Cluster, fault: &Fault, _id: usize) -> Result<(), RuntimeError> {
    Err(RuntimeError::Other(format!(
        "{}: not available",
        fault.kind()
    )))
}

/// Undoes a disk fault and proves the undo.
pub(super) async fn undo(_c: &Cluster, fault: &Fault, _id: usize) -> Result<(), RuntimeError> {
    Err(RuntimeError::Other(format!(
        "{}: not available",
        fault.kind()
    )))
}
