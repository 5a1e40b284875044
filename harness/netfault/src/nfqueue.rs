//! A netfilter queue (NFQUEUE) socket: the nfnetlink messages that bind a queue, receive its packets and give
//! their verdicts, written directly on a `NETLINK_NETFILTER` socket of `rustix`.
//!
//! Verdicts may be given in any order (by packet id), which is how packets are held for a delay. The queue is
//! configured fail-open: a packet the kernel cannot hand over (queue full, socket buffer full) is accepted,
//! not dropped. Closing the socket makes the kernel drop every packet still awaiting a verdict, so the owner
//! gives every verdict first.

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// What to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// One packet handed over by the kernel.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The id the verdict names.
    pub id: u32,
    /// The firewall mark, when the kernel sent one.
    pub mark: u32,
    /// The IP packet.
    pub payload: Vec<u8>,
}

/// A bound NFQUEUE.
pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
    buf: Vec<u8>,
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
}

fn io_err(what: &str, e: Errno) -> String {
    format!("{what}: {}", std::io::Error::from(e))
}

impl Queue {
    /// Open a netlink socket, bind queue `num` in the current network namespace, copy whole packets, set the
    /// kernel's queue bound to `maxlen` and make the queue fail-open.
    pub fn bind(num: u16, maxlen: u32) -> Result<Queue, String> {
        let fd = rustix::net::socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            Some(netlink::NETFILTER),
        )
        .map_err(|e| io_err("cannot open a NETLINK_NETFILTER socket (root needed)", e))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))
            .map_err(|e| io_err("cannot bind netlink", e))?;
        // A large receive buffer so that bursts of packets are not refused; forcing it needs CAP_NET_ADMIN.
        let want = 16 << 20;
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, want).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, want);
        }
        let mut q = Queue {
            fd,
            num,
            seq: 0,
            buf: vec![0u8; 65536 + 8192],
        };
        q.config_cmd(NFQNL_CFG_CMD_BIND).map_err(|e| {
            format!("cannot bind NFQUEUE {num}: {e} (is another process bound to it? is nfnetlink_queue there?)")
        })?;
        let mut params = Vec::new();
        params.extend_from_slice(&0xffffu32.to_be_bytes());
        params.push(NFQNL_COPY_PACKET);
        q.config(&[(NFQA_CFG_PARAMS, &params)])
            .map_err(|e| format!("cannot set NFQUEUE copy mode: {e}"))?;
        q.config(&[(NFQA_CFG_QUEUE_MAXLEN, &maxlen.to_be_bytes())])
            .map_err(|e| format!("cannot set NFQUEUE max length: {e}"))?;
        q.config(&[
            (NFQA_CFG_FLAGS, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes()),
            (NFQA_CFG_MASK, &NFQA_CFG_F_FAIL_OPEN.to_be_bytes()),
        ])
        .map_err(|e| format!("cannot make NFQUEUE fail-open: {e}"))?;
        Ok(q)
    }

    /// The socket, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn header(&mut self, msg_type: u16, flags: u16, family: u8) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(&0u32.to_ne_bytes()); // length, set when sent
        m.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg_type).to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.push(family);
        m.push(0); // NFNETLINK_V0
        m.extend_from_slice(&self.num.to_be_bytes());
        m
    }

    fn send(&self, mut msg: Vec<u8>) -> Result<(), Errno> {
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        // A full kernel buffer clears within milliseconds; a second of it is a failure.
        for _ in 0..5000 {
            match rustix::net::send(&self.fd, &msg, SendFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) | Err(Errno::NOBUFS) | Err(Errno::AGAIN) => {
                    std::thread::sleep(std::time::Duration::from_micros(200))
                }
                Err(e) => return Err(e),
            }
        }
        Err(Errno::NOBUFS)
    }

    fn config_cmd(&mut self, cmd: u8) -> Result<(), String> {
        // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf; }
        self.config(&[(NFQA_CFG_CMD, &[cmd, 0, 0, 0])])
    }

    fn config(&mut self, attrs: &[(u16, &[u8])]) -> Result<(), String> {
        let mut m = self.header(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, 0);
        for (kind, data) in attrs {
            push_attr(&mut m, *kind, data);
        }
        let seq = self.seq;
        self.send(m).map_err(|e| io_err("netlink send", e))?;
        // Wait for the acknowledgement of this request (packets arriving meanwhile are not read: the
        // configuration is done before the rules exist, and after they are gone).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("no answer from the kernel within 5 s".into());
            }
            let timeout = Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(io_err("poll", e)),
            }
            let n = match self.recv_raw() {
                Ok(n) => n,
                Err(Errno::AGAIN) | Err(Errno::NOBUFS) => continue,
                Err(e) => return Err(io_err("netlink receive", e)),
            };
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(self.buf[off + 4..off + 6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(self.buf[off + 8..off + 12].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && mseq == seq && len >= 20 {
                    let errno =
                        i32::from_ne_bytes(self.buf[off + 16..off + 20].try_into().unwrap());
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::from_raw_os_error(-errno).to_string())
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Receive one datagram without blocking.
    fn recv_raw(&mut self) -> Result<usize, Errno> {
        loop {
            match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive the packets waiting on the socket without blocking; an empty list when there are none.
    /// A full socket buffer (ENOBUFS: the kernel let some packets pass unqueued, the queue being fail-open) is
    /// not an error.
    pub fn recv_ready(&mut self) -> Result<Vec<Packet>, String> {
        let mut out = Vec::new();
        loop {
            let n = match self.recv_raw() {
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(out),
                Err(Errno::NOBUFS) => continue,
                Err(e) => return Err(io_err("netlink receive", e)),
            };
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(self.buf[off + 4..off + 6].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    if let Some(p) = parse_packet(&self.buf[off + 16..off + len]) {
                        out.push(p);
                    }
                } else if kind == NLMSG_ERROR && len >= 20 {
                    let errno =
                        i32::from_ne_bytes(self.buf[off + 16..off + 20].try_into().unwrap());
                    // ENOENT answers a verdict for a packet the kernel no longer holds: it drops the
                    // queued packets of an interface that goes down. That packet is gone; the fault goes on.
                    if errno != 0 && -errno != Errno::NOENT.raw_os_error() {
                        return Err(format!(
                            "netlink error from the queue: {}",
                            std::io::Error::from_raw_os_error(-errno)
                        ));
                    }
                } else if kind == NLMSG_DONE {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Give the verdict of packet `id`; `payload`, when given, replaces the packet.
    pub fn verdict(
        &mut self,
        id: u32,
        verdict: Verdict,
        payload: Option<&[u8]>,
    ) -> Result<(), String> {
        let mut m = self.header(NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0);
        let mut hdr = Vec::with_capacity(8);
        hdr.extend_from_slice(
            &(if verdict == Verdict::Accept {
                NF_ACCEPT
            } else {
                NF_DROP
            })
            .to_be_bytes(),
        );
        hdr.extend_from_slice(&id.to_be_bytes());
        push_attr(&mut m, NFQA_VERDICT_HDR, &hdr);
        if let Some(p) = payload {
            push_attr(&mut m, NFQA_PAYLOAD, p);
        }
        self.send(m).map_err(|e| io_err("cannot send a verdict", e))
    }

    /// Unbind the queue. The socket closes when the queue is dropped.
    pub fn unbind(&mut self) -> Result<(), String> {
        self.config_cmd(NFQNL_CFG_CMD_UNBIND)
    }
}

/// Parse the attributes of an `NFQNL_MSG_PACKET` after its `nlmsghdr`.
fn parse_packet(body: &[u8]) -> Option<Packet> {
    let mut off = 4; // nfgenmsg
    let mut id = None;
    let mut mark = 0;
    let mut payload = Vec::new();
    while off + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[off], body[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[off + 2], body[off + 3]]) & 0x3fff;
        if len < 4 || off + len > body.len() {
            break;
        }
        let data = &body[off + 4..off + len];
        match kind {
            NFQA_PACKET_HDR if data.len() >= 4 => {
                id = Some(u32::from_be_bytes(data[0..4].try_into().unwrap()))
            }
            NFQA_MARK if data.len() >= 4 => {
                mark = u32::from_be_bytes(data[0..4].try_into().unwrap())
            }
            NFQA_PAYLOAD => payload = data.to_vec(),
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Some(Packet {
        id: id?,
        mark,
        payload,
    })
}
