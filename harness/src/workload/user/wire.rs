//! What a session's messages travel on, for either transport: a TCP connection through the tunnel (messages cut
//! by Content-Length, `CRLF CRLF` keep-alives), or UDP datagrams through the tunnel's datagram flow (one message
//! per datagram, RFC 3261 section 18), and the client transaction's retransmission timers that UDP needs
//! ([`Resend`]: Timer A for an INVITE, Timer E for any other request; Timers B and F are the request's deadline).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::runtime::tunnel::{self, TunnelError};
use crate::workload::sip::{self, Frame, FrameError, Framer, Message, Transport};

/// RFC 3261's T1: the round trip estimate, the first retransmission interval.
pub(super) const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest retransmission interval of a non-INVITE request.
pub(super) const T2: Duration = Duration::from_secs(4);

/// Opens a way to `host:port` inside the networks for `transport`: a TCP connection, or a datagram flow.
pub(super) async fn open(
    tunnel: SocketAddr,
    host: &str,
    port: u16,
    timeout: Duration,
    transport: Transport,
) -> Result<(Reader, Writer), TunnelError> {
    let stream = match transport {
        Transport::Tcp => tunnel::connect(tunnel, host, port, timeout).await?,
        Transport::Udp => tunnel::datagrams(tunnel, host, port, timeout).await?,
    };
    let (read, write) = stream.into_split();
    Ok((
        Reader {
            half: read,
            transport,
            framer: Framer::default(),
            datagrams: Vec::new(),
            buf: vec![0u8; 8192],
        },
        Writer {
            half: write,
            transport,
            last_answer: None,
        },
    ))
}

/// The sending side.
pub(super) struct Writer {
    half: OwnedWriteHalf,
    pub(super) transport: Transport,
    /// The last response sent: kept to answer a retransmitted request again ([`Answers`]).
    last_answer: Option<Vec<u8>>,
}

impl Writer {
    /// Sends one message (over UDP: one datagram).
    pub(super) async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        let bytes = msg.to_bytes();
        if msg.status().is_some() {
            self.last_answer = Some(bytes.clone());
        }
        self.send_bytes(&bytes).await
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.transport {
            Transport::Tcp => self.half.write_all(bytes).await,
            Transport::Udp => self.half.write_all(&tunnel::frame_datagram(bytes)).await,
        }
    }

    /// The `CRLF CRLF` keep-alive of a connection (RFC 5626 section 4.4.1), which the server answers with `CRLF`.
    /// Over UDP the session pings with OPTIONS instead, which every SIP server answers.
    pub(super) async fn ping(&mut self) -> std::io::Result<()> {
        self.half.write_all(b"\r\n\r\n").await
    }

    /// The response sent last, taken.
    pub(super) fn take_last_answer(&mut self) -> Option<Vec<u8>> {
        self.last_answer.take()
    }
}

/// The receiving side.
pub(super) struct Reader {
    half: OwnedReadHalf,
    transport: Transport,
    framer: Framer,
    /// Bytes of the datagram flow not yet cut into datagrams.
    datagrams: Vec<u8>,
    buf: Vec<u8>,
}

impl Reader {
    /// Waits for more bytes; `Ok(0)` when the connection (or the datagram flow) closed. Cancel-safe: what one
    /// read returns is kept before anything else is awaited.
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        let n = self.half.read(&mut self.buf).await?;
        match self.transport {
            Transport::Tcp => self.framer.push(&self.buf[..n]),
            Transport::Udp => self.datagrams.extend_from_slice(&self.buf[..n]),
        }
        Ok(n)
    }

    /// The next whole frame read so far. A broken stream is an error; a datagram that is no SIP message is
    /// dropped, as a UDP endpoint drops it (RFC 3261 section 18.3), and the next one is read.
    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.transport {
            Transport::Tcp => self.framer.next_frame(),
            Transport::Udp => {
                while let Some(datagram) = tunnel::next_datagram(&mut self.datagrams) {
                    match sip::parse_datagram(&datagram) {
                        Ok(frame) => return Ok(Some(frame)),
                        Err(e) => tracing::debug!("a datagram dropped: {e}"),
                    }
                }
                Ok(None)
            }
        }
    }
}

/// The retransmission schedule of a request sent over UDP: first after T1, then at doubling intervals (an
/// INVITE's without bound, Timer A; any other request's up to T2, Timer E). A provisional answer stops an
/// INVITE's retransmissions and slows another request's to T2 (RFC 3261 sections 17.1.1.2 and 17.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resend {
    pub(super) at: Instant,
    interval: Duration,
    invite: bool,
}

impl Resend {
    /// The schedule of `request` sent now over `transport`: `None` over TCP, which retransmits itself.
    pub(super) fn first(transport: Transport, request: &Message) -> Option<Resend> {
        (transport == Transport::Udp).then(|| Resend {
            at: Instant::now() + T1,
            interval: T1,
            invite: request.method() == Some("INVITE"),
        })
    }

    /// The schedule after a retransmission now.
    pub(super) fn next(self) -> Resend {
        let interval = if self.invite {
            self.interval * 2
        } else {
            (self.interval * 2).min(T2)
        };
        Resend {
            at: Instant::now() + interval,
            interval,
            invite: self.invite,
        }
    }

    /// The schedule once a provisional answer came: none for an INVITE, every T2 for another request.
    pub(super) fn proceeding(self) -> Option<Resend> {
        (!self.invite).then(|| Resend {
            at: Instant::now() + T2,
            interval: T2,
            invite: false,
        })
    }
}

/// The answers a UDP session gave to the server's requests, by transaction, so a retransmitted request (our
/// answer was lost) is answered again the same way and not taken for a second IM or notice.
#[derive(Default)]
pub(super) struct Answers {
    sent: HashMap<String, Vec<u8>>,
    order: VecDeque<String>,
}

/// How many transactions' answers a session keeps (a server retransmits for 32 s at most).
const ANSWERS_KEPT: usize = 256;

impl Answers {
    /// A request's transaction: its Via branch, else (RFC 2543) its Call-ID and CSeq.
    pub(super) fn key(request: &Message) -> String {
        let branch = request
            .header("Via")
            .and_then(|via| {
                via.split(';')
                    .find_map(|p| p.trim().strip_prefix("branch="))
            })
            .map(str::to_string);
        let method = request.method().unwrap_or_default();
        match branch {
            Some(b) => format!("{b} {method}"),
            None => format!(
                "{} {}",
                request.header("Call-ID").unwrap_or_default(),
                request.header("CSeq").unwrap_or_default()
            ),
        }
    }

    /// The answer already given to this transaction, if any.
    pub(super) fn get(&self, key: &str) -> Option<&[u8]> {
        self.sent.get(key).map(Vec::as_slice)
    }

    /// Keeps the answer given, forgetting the oldest past [`ANSWERS_KEPT`].
    pub(super) fn keep(&mut self, key: String, answer: Vec<u8>) {
        if self.sent.insert(key.clone(), answer).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > ANSWERS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.sent.remove(&old);
            }
        }
    }
}

impl Writer {
    /// Sends an answer kept in [`Answers`] again.
    pub(super) async fn resend_answer(&mut self, answer: &[u8]) -> std::io::Result<()> {
        self.send_bytes(answer).await
    }
}

/// Sends one request on a way that has no session yet and waits for its final answer (over UDP retransmitting
/// it on [`Resend`]'s schedule).
pub(super) async fn transact(
    reader: &mut Reader,
    writer: &mut Writer,
    req: &Message,
    timeout: Duration,
) -> Option<Message> {
    writer.send(req).await.ok()?;
    let cseq = req.cseq();
    let deadline = Instant::now() + timeout;
    let mut resend = Resend::first(writer.transport, req);
    loop {
        while let Ok(Some(frame)) = reader.next_frame() {
            if let Frame::Message(m) = frame {
                match m.status() {
                    Some(s) if s >= 200 && m.cseq() == cseq => return Some(m),
                    Some(_) if m.cseq() == cseq => resend = resend.and_then(Resend::proceeding),
                    _ => {}
                }
            }
        }
        let wake = resend.map_or(deadline, |r| r.at.min(deadline));
        match tokio::time::timeout_at(wake, reader.fill()).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => {
                writer.send(req).await.ok()?;
                resend = resend.map(Resend::next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str) -> Message {
        sip::request(
            method,
            "sip:example.com",
            "alice",
            "sip:bob@example.com",
            "c1",
            "t1",
            1,
            "b1",
            Transport::Udp,
        )
    }

    #[tokio::test]
    async fn a_non_invite_request_is_resent_at_doubling_intervals_up_to_t2() {
        let mut r = Resend::first(Transport::Udp, &request("REGISTER")).unwrap();
        let mut intervals = vec![r.interval];
        for _ in 0..5 {
            r = r.next();
            intervals.push(r.interval);
        }
        let ms: Vec<u128> = intervals.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(r.proceeding().unwrap().interval, T2);
        assert_eq!(Resend::first(Transport::Tcp, &request("REGISTER")), None);
    }

    #[tokio::test]
    async fn an_invite_is_resent_without_bound_until_a_provisional_answer() {
        let mut r = Resend::first(Transport::Udp, &request("INVITE")).unwrap();
        for _ in 0..4 {
            r = r.next();
        }
        assert_eq!(r.interval, Duration::from_secs(8));
        assert_eq!(r.proceeding(), None);
    }

    #[test]
    fn a_retransmitted_request_is_the_same_transaction() {
        let mut answers = Answers::default();
        let req = request("MESSAGE");
        let key = Answers::key(&req);
        assert_eq!(key, "z9hG4bKb1 MESSAGE");
        answers.keep(key.clone(), b"SIP/2.0 200 OK\r\n\r\n".to_vec());
        assert_eq!(
            answers.get(&Answers::key(&req.clone())),
            Some(&b"SIP/2.0 200 OK\r\n\r\n"[..])
        );
        for i in 0..ANSWERS_KEPT {
            answers.keep(format!("other{i}"), Vec::new());
        }
        assert_eq!(
            answers.get(&key),
            None,
            "the oldest answer is forgotten first"
        );
        assert_eq!(answers.sent.len(), ANSWERS_KEPT);
    }
}
