//! `netfault apply`: binds the queue, installs the rules, gives each packet its fate until told to stop, then
//! undoes the fault without losing a packet.
//!
//! One thread polls three things: the queue's socket, a pipe written by the SIGTERM/SIGINT/SIGHUP handlers,
//! and (optionally) stdin, whose end also stops the fault. Held packets wait in a heap ordered by release
//! time; the poll's timeout is the next release. The undo removes the rules first (new packets flow
//! directly), then gives every packet still held or still arriving its verdict, accepting it, and only then
//! unbinds the queue (the kernel drops what is still queued when the queue goes away).

use crate::inject::Injector;
use crate::model::{flip_bit, Model};
use crate::nfqueue::{Packet, Queue, Verdict};
use crate::rules::{install_script, remove_script, run_script, DUPLICATE_MARK};
use crate::spec::FaultSpec;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Counts of what a fault did, printed as JSON on stderr when `apply` ends.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ApplyStats {
    pub packets: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub held: u64,
    pub over_limit: u64,
    pub released_at_undo: u64,
}

struct Held {
    release: Instant,
    order: u64,
    id: u32,
    payload: Option<Vec<u8>>,
    duplicate: Option<Vec<u8>>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // Reversed: the heap's top is the earliest release.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.order).cmp(&(self.release, self.order))
    }
}

struct Engine {
    queue: Queue,
    injector: Option<Injector>,
    model: Model,
    spec: FaultSpec,
    held: BinaryHeap<Held>,
    order: u64,
    link_free: Instant,
    stats: ApplyStats,
}

impl Engine {
    fn deliver(&mut self, h: Held) -> Result<(), String> {
        self.queue
            .verdict(h.id, Verdict::Accept, h.payload.as_deref())?;
        if let (Some(copy), Some(inj)) = (h.duplicate, self.injector.as_ref()) {
            // A copy that cannot be sent is a duplicate less, not a failure of the fault.
            let _ = inj.send(&copy);
        }
        Ok(())
    }

    fn handle(&mut self, p: Packet, now: Instant) -> Result<(), String> {
        if p.mark == DUPLICATE_MARK {
            return self.queue.verdict(p.id, Verdict::Accept, None);
        }
        self.stats.packets += 1;
        let fate = self.model.decide(&p.payload);
        if fate.drop {
            self.stats.dropped += 1;
            return self.queue.verdict(p.id, Verdict::Drop, None);
        }
        let mut release = now + fate.delay;
        if let Some(kbit) = self.spec.rate_kbit {
            let tx = Duration::from_secs_f64(p.payload.len() as f64 * 8.0 / (kbit as f64 * 1000.0));
            release = release.max(self.link_free) + tx;
        }
        if release > now && self.held.len() >= self.spec.limit() {
            self.stats.over_limit += 1;
            self.stats.dropped += 1;
            return self.queue.verdict(p.id, Verdict::Drop, None);
        }
        if self.spec.rate_kbit.is_some() {
            self.link_free = release;
        }
        let payload = fate.corrupt_bit.map(|bit| {
            self.stats.corrupted += 1;
            let mut v = p.payload.clone();
            flip_bit(&mut v, bit);
            v
        });
        let duplicate = if fate.duplicate && self.injector.is_some() {
            self.stats.duplicated += 1;
            Some(p.payload)
        } else {
            None
        };
        let h = Held {
            release,
            order: self.order,
            id: p.id,
            payload,
            duplicate,
        };
        self.order += 1;
        if release <= now {
            return self.deliver(h);
        }
        self.stats.held += 1;
        self.held.push(h);
        Ok(())
    }

    fn release_due(&mut self, now: Instant) -> Result<(), String> {
        while self.held.peek().is_some_and(|h| h.release <= now) {
            let h = self.held.pop().expect("peeked");
            self.deliver(h)?;
        }
        Ok(())
    }

    /// Accept every packet waiting on the socket, untouched.
    fn pass_arrivals(&mut self) -> Result<(), String> {
        for p in self.queue.recv_ready()? {
            self.stats.released_at_undo += 1;
            self.queue.verdict(p.id, Verdict::Accept, None)?;
        }
        Ok(())
    }

    fn run(&mut self, signals: &UnixStream, watch_stdin: bool) -> Result<(), String> {
        let stdin = std::io::stdin();
        let mut stdin_open = watch_stdin && stdin_can_close(&stdin);
        let mut scratch = [0u8; 512];
        loop {
            let now = Instant::now();
            self.release_due(now)?;
            let timeout = self.held.peek().map(|h| {
                let d = h.release.saturating_duration_since(now);
                Timespec {
                    tv_sec: d.as_secs() as _,
                    tv_nsec: d.subsec_nanos() as _,
                }
            });
            let mut fds = vec![
                PollFd::from_borrowed_fd(self.queue.fd(), PollFlags::IN),
                PollFd::new(signals, PollFlags::IN),
            ];
            if stdin_open {
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("poll: {}", std::io::Error::from(e))),
            }
            let queue_ready = !fds[0].revents().is_empty();
            if !fds[1].revents().is_empty() {
                return Ok(());
            }
            if stdin_open && !fds[2].revents().is_empty() {
                match rustix::io::read(&stdin, &mut scratch) {
                    Ok(0) => return Ok(()),
                    Ok(_) | Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(_) => stdin_open = false,
                }
            }
            if queue_ready {
                let packets = self.queue.recv_ready()?;
                let now = Instant::now();
                for p in packets {
                    self.handle(p, now)?;
                }
            }
        }
    }

    /// The undo: rules first, then every packet still held or arriving is accepted, then the queue goes.
    fn undo(&mut self, queue: u16) -> Result<(), String> {
        let removed = run_script(&remove_script(queue));
        let mut result = self.pass_arrivals();
        while let Some(h) = self.held.pop() {
            self.stats.released_at_undo += 1;
            let r = self.deliver(h);
            if result.is_ok() {
                result = r;
            }
        }
        // Packets that were in a hook while the rules went away still reach the queue; let them through.
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            let r = self.pass_arrivals();
            if result.is_ok() {
                result = r;
            }
            let mut fds = [PollFd::from_borrowed_fd(self.queue.fd(), PollFlags::IN)];
            let _ = poll(
                &mut fds,
                Some(&Timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                }),
            );
        }
        let r = self.pass_arrivals();
        if result.is_ok() {
            result = r;
        }
        let _ = self.queue.unbind();
        removed.and(result)
    }
}

/// Whether the end of stdin means something: only a pipe or a socket is ended by its writer; /dev/null, a file
/// or a terminal is not watched (SIGINT covers the terminal).
fn stdin_can_close(stdin: &std::io::Stdin) -> bool {
    use rustix::fs::FileType;
    rustix::fs::fstat(stdin)
        .map(|st| {
            matches!(
                FileType::from_raw_mode(st.st_mode),
                FileType::Fifo | FileType::Socket
            )
        })
        .unwrap_or(false)
}

/// Run `apply`: bind queue `queue`, install the rules of `spec`, call `ready` once both are in place, apply the
/// fault until SIGTERM, SIGINT, SIGHUP or (when `watch_stdin` and stdin is a pipe or a socket) the end of
/// stdin, then undo it.
pub fn apply(
    queue: u16,
    spec: &FaultSpec,
    watch_stdin: bool,
    ready: impl FnOnce(),
) -> Result<ApplyStats, String> {
    spec.validate()?;
    let (sig_read, sig_write) =
        UnixStream::pair().map_err(|e| format!("cannot make the signal pipe: {e}"))?;
    sig_read.set_nonblocking(true).map_err(|e| e.to_string())?;
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        let w = sig_write.try_clone().map_err(|e| e.to_string())?;
        signal_hook::low_level::pipe::register(signal, w)
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let injector = if spec.duplicate > 0.0 {
        Some(Injector::new()?)
    } else {
        None
    };
    let maxlen = u32::try_from(spec.limit())
        .unwrap_or(u32::MAX)
        .saturating_add(4096);
    let q = Queue::bind(queue, maxlen)?;
    let mut engine = Engine {
        queue: q,
        injector,
        model: Model::new(spec),
        spec: spec.clone(),
        held: BinaryHeap::new(),
        order: 0,
        link_free: Instant::now(),
        stats: ApplyStats::default(),
    };
    // A chain left by an earlier run of the same queue would make `-N` fail; it is not ours to keep.
    run_script(&remove_script(queue))?;
    if let Err(e) = run_script(&install_script(queue, spec)) {
        let _ = run_script(&remove_script(queue));
        return Err(e);
    }
    ready();
    let ran = engine.run(&sig_read, watch_stdin);
    let undone = engine.undo(queue);
    ran.and(undone)?;
    Ok(engine.stats)
}

/// Print `ready` on stdout and flush it.
pub fn print_ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}
