//! The no-toxic path on Linux: socket → pipe → socket with splice(2), so bytes move between the
//! two sockets inside the kernel instead of being copied up into the proxy and back down. This is
//! what brings bulk throughput through the proxy close to a direct connection on a small machine.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::model::Toxic;

/// Pipe capacity asked for; the kernel may grant less (pipe-max-size), which only means more calls.
const PIPE_BYTES: usize = 1024 * 1024;

/// A pipe between two splices.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity_bytes: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let capacity_bytes = fcntl_setpipe_size(&write, PIPE_BYTES).unwrap_or(64 * 1024);
        Ok(Pipe {
            read,
            write,
            capacity_bytes,
        })
    }
}

/// How a spliced copy stopped.
pub enum Spliced {
    /// The toxic list changed (Ok) or its sender is gone (Err); the pipe is empty.
    Changed(Result<(), watch::error::RecvError>),
    /// The sender closed its side; the pipe is empty.
    Eof,
    /// A socket failed.
    Failed,
}

fn is_would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// Moves bytes from `reader` to `writer` until EOF, failure, or a change of the toxic list. A
/// change is only seen while waiting to read, with the pipe empty, so nothing is left behind.
pub async fn copy(
    reader: &TcpStream,
    writer: &TcpStream,
    pipe: &Pipe,
    toxics_rx: &mut watch::Receiver<Arc<[Toxic]>>,
) -> Spliced {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    // One wait for a change across all chunks: registered once, not once per chunk.
    let changed = toxics_rx.changed();
    tokio::pin!(changed);
    loop {
        tokio::select! {
            biased;
            changed = &mut changed => return Spliced::Changed(changed),
            ready = reader.readable() => if ready.is_err() { return Spliced::Failed },
        }
        // try_io clears the readiness on WouldBlock, so the next `readable` really waits.
        let filled = reader.try_io(Interest::READABLE, || {
            Ok(splice(
                reader,
                None,
                &pipe.write,
                None,
                pipe.capacity_bytes,
                flags,
            )?)
        });
        let mut in_pipe = match filled {
            Ok(0) => return Spliced::Eof,
            Ok(n) => n,
            Err(err) if is_would_block(&err) => continue,
            Err(_) => return Spliced::Failed,
        };
        while in_pipe > 0 {
            if writer.writable().await.is_err() {
                return Spliced::Failed;
            }
            let drained = writer.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.read, None, writer, None, in_pipe, flags)?)
            });
            match drained {
                Ok(n) => in_pipe -= n,
                Err(err) if is_would_block(&err) => {}
                Err(_) => return Spliced::Failed,
            }
        }
    }
}
