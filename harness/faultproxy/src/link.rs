//! One direction of one connection: bytes from a reader to a writer through the toxics that act on
//! that direction.
//!
//! Two paths. With no toxic acting, a plain copy loop that only peeks at the toxic list between
//! reads: splice(2) through a pipe on Linux (`splice`), elsewhere one reused buffer (no allocation
//! per chunk). With toxics, a reader keeps pulling chunks
//! stamped with their arrival time into a bounded queue while a writer plays each chunk's plan
//! (sleeps, pieces, close); latency therefore counts from arrival, as in Toxiproxy, and does not
//! pile up across chunks. A change of the toxic list moves between the paths at a chunk boundary
//! without losing queued data.
//!
//! With a SIP toxic the toxic path frames the data into whole messages (`sip::Framer`); a
//! response the proxy makes on the server's behalf goes to the other direction through
//! [`Replies`], which writes it between two whole messages of its own.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::model::Toxic;
use crate::toxic::{Action, DirectionToxics, Ending};

/// Buffer of the plain copy loop: large, so bulk traffic costs few system calls.
const COPY_BUFFER_BYTES: usize = 128 * 1024;
/// Largest chunk the toxic path reads at once.
const TOXIC_READ_BYTES: usize = 32 * 1024;
/// Chunks the toxic path may hold between reader and writer (bounds memory at 8 MiB per direction).
const TOXIC_QUEUE_CHUNKS: usize = 256;

/// How one direction finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The sender closed and the close was passed on (half-close); the other direction goes on.
    Eof,
    /// A toxic or an error ends the whole connection.
    End(Ending),
}

enum Chunk {
    Data {
        bytes: Bytes,
        arrived: Instant,
    },
    Eof,
    /// Reading failed (e.g. the peer reset): the connection ends.
    Failed,
}

/// The SIP responses a connection's two directions make for each other.
pub struct Replies {
    /// Responses this direction makes, for the other direction to write.
    pub to_other: mpsc::UnboundedSender<Bytes>,
    /// Responses the other direction made, for this direction's writer.
    pub to_me: mpsc::UnboundedReceiver<Bytes>,
}

impl Replies {
    /// The two ends for one connection: (upstream's, downstream's).
    pub fn pair() -> (Replies, Replies) {
        let (to_down, from_up) = mpsc::unbounded_channel();
        let (to_up, from_down) = mpsc::unbounded_channel();
        (
            Replies {
                to_other: to_down,
                to_me: from_down,
            },
            Replies {
                to_other: to_up,
                to_me: from_up,
            },
        )
    }
}

enum Step {
    /// The toxic list changed: sync and choose the path again.
    Changed,
    Done(Finish),
}

/// Carries one direction until it finishes.
pub async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    mut toxics_rx: watch::Receiver<Arc<[Toxic]>>,
    mut toxics: DirectionToxics,
    mut replies: Replies,
) -> Finish
where
    R: AsyncRead + Unpin + AsRef<TcpStream>,
    W: AsyncWrite + Unpin + AsRef<TcpStream>,
{
    let initial = toxics_rx.borrow_and_update().clone();
    toxics.sync(&initial, Instant::now());
    // Chunks read by the toxic path but not yet written when the list changed.
    let mut pending = VecDeque::new();
    let mut buffer: Option<Vec<u8>> = None;
    #[cfg(target_os = "linux")]
    let mut pipe: Option<std::io::Result<crate::splice::Pipe>> = None;
    loop {
        let step = if toxics.is_idle() {
            if let Some(finish) = flush_pending(&mut writer, &mut pending).await {
                return finish;
            }
            #[cfg(target_os = "linux")]
            let spliced = match pipe.get_or_insert_with(crate::splice::Pipe::new) {
                Ok(pipe) => {
                    Some(copy_spliced(&mut reader, &mut writer, pipe, &mut toxics_rx).await)
                }
                // No pipe (descriptor limit): the buffered loop works everywhere.
                Err(_) => None,
            };
            #[cfg(not(target_os = "linux"))]
            let spliced = None;
            match spliced {
                Some(step) => step,
                None => {
                    let buffer = buffer.get_or_insert_with(|| vec![0; COPY_BUFFER_BYTES]);
                    copy_plain(&mut reader, &mut writer, &mut toxics_rx, buffer).await
                }
            }
        } else {
            copy_toxic(
                &mut reader,
                &mut writer,
                &mut toxics_rx,
                &mut toxics,
                &mut pending,
                &mut replies,
            )
            .await
        };
        match step {
            Step::Done(finish) => return finish,
            Step::Changed => {
                let list = toxics_rx.borrow_and_update().clone();
                if let Some(ending) = toxics.sync(&list, Instant::now()) {
                    return Finish::End(ending);
                }
                // Held messages and an unfinished message come before anything read after them.
                for bytes in toxics.take_released() {
                    if writer.write_all(&bytes).await.is_err() {
                        return Finish::End(Ending::Close);
                    }
                }
                tracing::debug!(applied = ?toxics.applied_names(), "toxics changed");
            }
        }
    }
}

async fn finish_eof<W: AsyncWrite + Unpin>(writer: &mut W) -> Finish {
    // A failed shutdown means the peer is gone; the connection ends either way.
    match writer.shutdown().await {
        Ok(()) => Finish::Eof,
        Err(_) => Finish::End(Ending::Close),
    }
}

/// Writes what the toxic path had read but not written; `Some` when that ends the direction.
async fn flush_pending<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pending: &mut VecDeque<Chunk>,
) -> Option<Finish> {
    while let Some(chunk) = pending.pop_front() {
        match chunk {
            Chunk::Data { bytes, .. } => {
                if writer.write_all(&bytes).await.is_err() {
                    return Some(Finish::End(Ending::Close));
                }
            }
            Chunk::Eof => return Some(finish_eof(writer).await),
            Chunk::Failed => return Some(Finish::End(Ending::Close)),
        }
    }
    None
}

#[cfg(target_os = "linux")]
async fn copy_spliced<R, W>(
    reader: &mut R,
    writer: &mut W,
    pipe: &crate::splice::Pipe,
    toxics_rx: &mut watch::Receiver<Arc<[Toxic]>>,
) -> Step
where
    R: AsRef<TcpStream>,
    W: AsyncWrite + Unpin + AsRef<TcpStream>,
{
    use crate::splice::Spliced;
    match crate::splice::copy(reader.as_ref(), writer.as_ref(), pipe, toxics_rx).await {
        Spliced::Changed(Ok(())) => Step::Changed,
        Spliced::Changed(Err(_)) | Spliced::Failed => Step::Done(Finish::End(Ending::Close)),
        Spliced::Eof => Step::Done(finish_eof(writer).await),
    }
}

async fn copy_plain<R, W>(
    reader: &mut R,
    writer: &mut W,
    toxics_rx: &mut watch::Receiver<Arc<[Toxic]>>,
    buffer: &mut [u8],
) -> Step
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        // Reads are cancel-safe, so a change of toxics can interrupt a waiting read; a write is
        // never interrupted, so no byte is lost or reordered.
        let read = tokio::select! {
            biased;
            changed = toxics_rx.changed() => {
                return match changed {
                    Ok(()) => Step::Changed,
                    Err(_) => Step::Done(Finish::End(Ending::Close)),
                };
            }
            read = reader.read(buffer) => read,
        };
        match read {
            Ok(0) => return Step::Done(finish_eof(writer).await),
            Ok(n) => {
                if writer.write_all(&buffer[..n]).await.is_err() {
                    return Step::Done(Finish::End(Ending::Close));
                }
            }
            Err(_) => return Step::Done(Finish::End(Ending::Close)),
        }
    }
}

async fn copy_toxic<R, W>(
    reader: &mut R,
    writer: &mut W,
    toxics_rx: &mut watch::Receiver<Arc<[Toxic]>>,
    toxics: &mut DirectionToxics,
    pending: &mut VecDeque<Chunk>,
    replies: &mut Replies,
) -> Step
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Chunk>(TOXIC_QUEUE_CHUNKS);
    let step = {
        let read_side = async {
            let mut buffer = vec![0u8; TOXIC_READ_BYTES];
            loop {
                // Reserve before reading: if this future is dropped mid-read, nothing read is lost.
                let Ok(permit) = tx.reserve().await else {
                    break;
                };
                match reader.read(&mut buffer).await {
                    Ok(0) => {
                        permit.send(Chunk::Eof);
                        break;
                    }
                    Ok(n) => permit.send(Chunk::Data {
                        bytes: Bytes::copy_from_slice(&buffer[..n]),
                        arrived: Instant::now(),
                    }),
                    Err(_) => {
                        permit.send(Chunk::Failed);
                        break;
                    }
                }
            }
            std::future::pending::<()>().await
        };
        let write_side = async {
            let mut eof_held = false;
            loop {
                let chunk = match pending.pop_front() {
                    Some(chunk) => chunk,
                    None => {
                        let deadline = toxics.deadline();
                        tokio::select! {
                            biased;
                            changed = toxics_rx.changed() => {
                                return match changed {
                                    Ok(()) => Step::Changed,
                                    Err(_) => Step::Done(Finish::End(Ending::Close)),
                                };
                            }
                            _ = sleep_until_opt(deadline.map(|(at, _)| at)) => {
                                let (_, ending) = deadline.expect("sleep only ends with a deadline");
                                return Step::Done(Finish::End(ending));
                            }
                            Some(reply) = replies.to_me.recv() => {
                                if writer.write_all(&reply).await.is_err() {
                                    return Step::Done(Finish::End(Ending::Close));
                                }
                                continue;
                            }
                            chunk = rx.recv(), if !eof_held => {
                                chunk.expect("the read side holds the sender while writing runs")
                            }
                        }
                    }
                };
                // A deadline already passed (reset_peer or timeout of 0 ms) ends the link before any
                // byte of this chunk goes out: such a toxic lets nothing through.
                if let Some((at, ending)) = toxics.deadline() {
                    if at <= Instant::now() {
                        return Step::Done(Finish::End(ending));
                    }
                }
                match chunk {
                    Chunk::Data { .. } if toxics.is_blackholed() => {}
                    Chunk::Data { bytes, arrived } => {
                        for action in toxics.plan(bytes, arrived) {
                            match action {
                                Action::Write(bytes) => {
                                    if writer.write_all(&bytes).await.is_err() {
                                        return Step::Done(Finish::End(Ending::Close));
                                    }
                                }
                                Action::SleepUntil(at) => tokio::time::sleep_until(at).await,
                                Action::Sleep(pause) => tokio::time::sleep(pause).await,
                                Action::Close => {
                                    let _ = writer.flush().await;
                                    return Step::Done(Finish::End(Ending::Close));
                                }
                                Action::Reply(bytes) => {
                                    // The other direction is gone only when the connection ends.
                                    let _ = replies.to_other.send(bytes);
                                }
                            }
                        }
                    }
                    // A blackhole holds the close back until it times out or goes away.
                    Chunk::Eof if toxics.is_blackholed() => {
                        pending.push_front(Chunk::Eof);
                        eof_held = true;
                    }
                    Chunk::Eof => {
                        let rest = toxics.take_rest();
                        if !rest.is_empty() && writer.write_all(&rest).await.is_err() {
                            return Step::Done(Finish::End(Ending::Close));
                        }
                        tokio::time::sleep(toxics.close_delay()).await;
                        return Step::Done(finish_eof(writer).await);
                    }
                    Chunk::Failed => return Step::Done(Finish::End(Ending::Close)),
                }
                if eof_held {
                    // Wait for a change or the deadline only; the held EOF stays first in line.
                    let deadline = toxics.deadline();
                    tokio::select! {
                        biased;
                        changed = toxics_rx.changed() => {
                            return match changed {
                                Ok(()) => Step::Changed,
                                Err(_) => Step::Done(Finish::End(Ending::Close)),
                            };
                        }
                        _ = sleep_until_opt(deadline.map(|(at, _)| at)) => {
                            let (_, ending) = deadline.expect("sleep only ends with a deadline");
                            return Step::Done(Finish::End(ending));
                        }
                    }
                }
            }
        };
        tokio::select! {
            step = write_side => step,
            () = read_side => unreachable!("the read side never finishes"),
        }
    };
    // Keep what was read but not written, in order, for the next path.
    rx.close();
    while let Ok(chunk) = rx.try_recv() {
        pending.push_back(chunk);
    }
    step
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
