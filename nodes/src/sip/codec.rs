//! Framing: cuts SIP messages out of a TCP byte stream or a UDP datagram, normalizes the header section
//! (compact names expanded, folded lines joined) and enforces the size limits, before `rsip` sees a byte.
//!
//! `rsip` ignores Content-Length and knows no compact names, so nothing reaches it unframed.

use bytes::{Buf, Bytes, BytesMut};

/// Size limits for one message. Beyond them the sender gets `513`/`413` (or a clean close where no reply can be
/// framed); the limits are what keeps a hostile peer from making a connection buffer grow without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole message, header section plus body: `513 Message Too Large` beyond.
    pub message_bytes_max: usize,
    /// Start line plus header lines plus the blank line: `513 Message Too Large` beyond.
    pub header_section_bytes_max: usize,
    /// One header line after unfolding: `513 Message Too Large` beyond.
    pub header_line_bytes_max: usize,
    /// Number of header lines: `513 Message Too Large` beyond.
    pub headers_max: usize,
    /// Body, as announced by Content-Length: `413 Request Entity Too Large` beyond.
    pub body_bytes_max: usize,
    /// Bytes read without a line end before the stream is judged not to be SIP and closed unanswered.
    pub start_line_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_bytes_max: 64 * 1024,
            header_section_bytes_max: 16 * 1024,
            header_line_bytes_max: 8 * 1024,
            headers_max: 128,
            body_bytes_max: 48 * 1024,
            start_line_bytes_max: 2 * 1024,
        }
    }
}

/// What the framer cut out of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `CRLF CRLF`: a keep-alive ping (RFC 5626), answered with one `CRLF`.
    Ping,
    /// A lone `CRLF`: the answer to our own ping.
    Pong,
    /// One whole message with a normalized header section, ready for `rsip`.
    Message(Bytes),
}

/// A message the framer refused. `header_section` (normalized as far as it could be read) lets the transport
/// frame an error response with the sender's Via, From, To, Call-ID and CSeq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub status: u16,
    pub reason: &'static str,
    /// Whatever header lines could be read, for framing the reply; `None` when nothing usable was read.
    pub header_section: Option<Bytes>,
    /// True when the stream cannot be resynchronized after this message, so the connection must close after the
    /// reply.
    pub close: bool,
}

/// Stream framer for one TCP connection.
#[derive(Debug, Clone)]
pub struct Framer {
    limits: Limits,
}

const CRLF: &[u8] = b"\r\n";
const CRLFCRLF: &[u8] = b"\r\n\r\n";

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Cuts the next frame out of `buf`: `Ok(None)` means more bytes are needed. On error the offending bytes
    /// were consumed when `close` is false, so decoding may go on.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.starts_with(CRLF) {
            if buf.starts_with(CRLFCRLF) {
                buf.advance(4);
                return Ok(Some(Frame::Ping));
            }
            // "\r\n" alone or "\r\n\r" may still grow into a ping: wait for one more byte.
            if buf.len() < 4 && CRLFCRLF.starts_with(buf) {
                return Ok(None);
            }
            buf.advance(2);
            return Ok(Some(Frame::Pong));
        }
        let Some(header_end) = find(buf, CRLFCRLF) else {
            return self.incomplete_header_section(buf).map(|()| None);
        };
        let header_len = header_end + 4;
        if header_len > self.limits.header_section_bytes_max {
            return Err(too_large(buf, &self.limits));
        }
        let section = match normalize(&buf[..header_len], &self.limits) {
            Ok(section) => section,
            Err(mut error) => {
                // The body length may still be known; without it the stream cannot be resynchronized.
                match content_length(&buf[..header_len]) {
                    Some(Ok(length)) if header_len + length <= buf.len() => {
                        buf.advance(header_len + length);
                    }
                    _ => error.close = true,
                }
                return Err(error);
            }
        };
        let body_len = match section.content_length {
            None => {
                // RFC 3261 18.3: Content-Length is mandatory on streams. Assume no body and carry on.
                buf.advance(header_len);
                return Err(FrameError {
                    status: 400,
                    reason: "Missing Content-Length",
                    header_section: Some(section.bytes),
                    close: false,
                });
            }
            Some(Err(())) => {
                return Err(FrameError {
                    status: 400,
                    reason: "Bad Content-Length",
                    header_section: Some(section.bytes),
                    close: true,
                })
            }
            Some(Ok(length)) => length,
        };
        if body_len > self.limits.body_bytes_max {
            return Err(FrameError {
                status: 413,
                reason: "Request Entity Too Large",
                header_section: Some(section.bytes),
                close: true,
            });
        }
        if section.bytes.len() + body_len > self.limits.message_bytes_max {
            return Err(FrameError {
                status: 513,
                reason: "Message Too Large",
                header_section: Some(section.bytes),
                close: true,
            });
        }
        if buf.len() < header_len + body_len {
            return Ok(None);
        }
        buf.advance(header_len);
        let body = buf.split_to(body_len);
        Ok(Some(Frame::Message(join(section.bytes, &body))))
    }

    /// Called at end of stream with bytes left over: a truncated message gets `400` when its header section is
    /// readable (the peer may only have half-closed), otherwise nothing.
    pub fn decode_eof(&self, buf: &mut BytesMut) -> Option<FrameError> {
        let rest = std::mem::take(buf);
        let header_end = find(&rest, CRLFCRLF)?;
        let section = normalize(&rest[..header_end + 4], &self.limits).ok()?;
        Some(FrameError {
            status: 400,
            reason: "Truncated Message",
            header_section: Some(section.bytes),
            close: true,
        })
    }

    /// No blank line yet: decides whether waiting for more bytes can still make a message.
    fn incomplete_header_section(&self, buf: &BytesMut) -> Result<(), FrameError> {
        match find(buf, CRLF) {
            None if buf.len() > self.limits.start_line_bytes_max => Err(FrameError {
                status: 400,
                reason: "Bad Request Line",
                header_section: None,
                close: true,
            }),
            None if buf.contains(&0) => Err(FrameError {
                status: 400,
                reason: "Bad Request Line",
                header_section: None,
                close: true,
            }),
            None => Ok(()),
            Some(line_end) if !valid_start_line(&buf[..line_end]) => Err(FrameError {
                status: 400,
                reason: "Bad Request Line",
                header_section: None,
                close: true,
            }),
            Some(_) if buf.len() > self.limits.header_section_bytes_max => {
                Err(too_large(buf, &self.limits))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Frames one UDP datagram: the body is what Content-Length says (RFC 3261 18.3: extra bytes are dropped; a missing
/// Content-Length means "the rest of the datagram").
pub fn decode_datagram(datagram: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
    if datagram.iter().all(|b| *b == b'\r' || *b == b'\n') {
        return Ok(if datagram.len() >= 4 {
            Frame::Ping
        } else {
            Frame::Pong
        });
    }
    if datagram.len() > limits.message_bytes_max {
        return Err(too_large(datagram, limits));
    }
    let Some(header_end) = find(datagram, CRLFCRLF) else {
        let first_line_ok =
            find(datagram, CRLF).is_some_and(|end| valid_start_line(&datagram[..end]));
        return Err(FrameError {
            status: 400,
            reason: if first_line_ok {
                "Truncated Message"
            } else {
                "Bad Request Line"
            },
            header_section: None,
            close: false,
        });
    };
    let header_len = header_end + 4;
    if header_len > limits.header_section_bytes_max {
        return Err(too_large(datagram, limits));
    }
    let section = normalize(&datagram[..header_len], limits)?;
    let rest = &datagram[header_len..];
    let body_len = match section.content_length {
        None => rest.len(),
        Some(Err(())) => {
            return Err(FrameError {
                status: 400,
                reason: "Bad Content-Length",
                header_section: Some(section.bytes),
                close: false,
            })
        }
        Some(Ok(length)) if length > rest.len() => {
            return Err(FrameError {
                status: 400,
                reason: "Truncated Message",
                header_section: Some(section.bytes),
                close: false,
            })
        }
        Some(Ok(length)) => length,
    };
    if body_len > limits.body_bytes_max {
        return Err(FrameError {
            status: 413,
            reason: "Request Entity Too Large",
            header_section: Some(section.bytes),
            close: false,
        });
    }
    Ok(Frame::Message(join(section.bytes, &rest[..body_len])))
}

/// The full name of a compact header name (RFC 3261 7.3.3 and the registrations since), if `name` is one.
pub fn expand_compact(name: &[u8]) -> Option<&'static str> {
    let [c] = name else { return None };
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

struct Section {
    /// Start line and `Name: value` lines, each ending in CRLF, then the blank line.
    bytes: Bytes,
    /// `None`: absent; `Some(Err)`: present but not a non-negative integer.
    content_length: Option<Result<usize, ()>>,
}

/// Rewrites a header section (ending in the blank line) into the form `rsip` parses: full header names, one
/// `Name: value` per line, folded lines joined.
fn normalize(raw: &[u8], limits: &Limits) -> Result<Section, FrameError> {
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut lines = raw[..raw.len() - 4]
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let start = lines.next().unwrap_or_default();
    let fail = |status: u16, reason: &'static str, out: &[u8]| FrameError {
        status,
        reason,
        header_section: valid_start_line(start).then(|| Bytes::copy_from_slice(out)),
        close: false,
    };
    if !valid_start_line(start) {
        return Err(fail(400, "Bad Request Line", &out));
    }
    out.extend_from_slice(start);
    out.extend_from_slice(CRLF);
    // Unfold first: a line starting with whitespace continues the previous header's value.
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            match headers.last_mut() {
                Some(previous) => {
                    previous.push(b' ');
                    previous.extend_from_slice(trim(line));
                }
                None => return Err(fail(400, "Malformed Header Line", &out)),
            }
        } else {
            headers.push(line.to_vec());
        }
        if headers.len() > limits.headers_max {
            return Err(fail(513, "Message Too Large", &out));
        }
    }
    let mut content_length = None;
    let mut errors = None;
    for line in &headers {
        if line.len() > limits.header_line_bytes_max {
            errors.get_or_insert((513, "Message Too Large"));
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            errors.get_or_insert((400, "Malformed Header Line"));
            continue;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            errors.get_or_insert((400, "Malformed Header Line"));
            continue;
        }
        if value
            .iter()
            .any(|b| *b == 0 || (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            errors.get_or_insert((400, "Invalid Character in Header"));
            continue;
        }
        let full: &[u8] = expand_compact(name).map(str::as_bytes).unwrap_or(name);
        if full.eq_ignore_ascii_case(b"Content-Length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(());
            // Two different Content-Lengths make the framing ambiguous: treat as invalid.
            content_length = match content_length {
                Some(Ok(previous)) if parsed != Ok(previous) => Some(Err(())),
                _ => Some(parsed),
            };
        }
        out.extend_from_slice(full);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(CRLF);
    }
    if let Some((status, reason)) = errors {
        return Err(FrameError {
            status,
            reason,
            header_section: Some(Bytes::from(terminated(out))),
            close: false,
        });
    }
    Ok(Section {
        bytes: Bytes::from(terminated(out)),
        content_length,
    })
}

fn terminated(mut section: Vec<u8>) -> Vec<u8> {
    section.extend_from_slice(CRLF);
    section
}

/// A cheap pre-parse of Content-Length, for skipping a body after a header error.
fn content_length(raw: &[u8]) -> Option<Result<usize, ()>> {
    raw.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = trim(&line[..colon]);
        let full: &[u8] = expand_compact(name).map(str::as_bytes).unwrap_or(name);
        full.eq_ignore_ascii_case(b"Content-Length").then(|| {
            std::str::from_utf8(trim(&line[colon + 1..]))
                .ok()
                .and_then(|v| v.trim_end_matches('\r').trim().parse::<usize>().ok())
                .ok_or(())
        })
    })
}

/// A header section over the limit: replied with 513 when the lines read so far carry what a reply needs.
fn too_large(buf: &[u8], limits: &Limits) -> FrameError {
    // Only whole lines within the limit are kept, so a reply can still carry Via, Call-ID and CSeq when they came
    // before the oversized part.
    let head = &buf[..buf.len().min(limits.header_section_bytes_max)];
    let mut section = Vec::new();
    let mut lines = head.split(|b| *b == b'\n');
    let start = lines
        .next()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .unwrap_or_default();
    let mut usable = false;
    if valid_start_line(start) && find(head, CRLF).is_some() {
        section.extend_from_slice(start);
        section.extend_from_slice(CRLF);
        for line in lines {
            let Some(line) = line.strip_suffix(b"\r") else {
                break;
            };
            if line.is_empty() || line.len() > limits.header_line_bytes_max {
                break;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                let name = trim(&line[..colon]);
                if name.iter().all(|b| is_token(*b)) && !line.contains(&0) {
                    section
                        .extend_from_slice(expand_compact(name).map(str::as_bytes).unwrap_or(name));
                    section.extend_from_slice(b": ");
                    section.extend_from_slice(trim(&line[colon + 1..]));
                    section.extend_from_slice(CRLF);
                }
            }
        }
        usable = true;
    }
    FrameError {
        status: 513,
        reason: "Message Too Large",
        header_section: usable.then(|| Bytes::from(terminated(section))),
        close: true,
    }
}

/// `METHOD SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason`.
fn valid_start_line(line: &[u8]) -> bool {
    if line.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return false;
    }
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
        return false;
    };
    let third = parts.next().unwrap_or_default();
    if first == b"SIP/2.0" {
        return second.len() == 3 && second.iter().all(u8::is_ascii_digit);
    }
    !first.is_empty()
        && first.iter().all(|b| is_token(*b))
        && !second.is_empty()
        && third == b"SIP/2.0"
}

/// RFC 3261 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn join(section: Bytes, body: &[u8]) -> Bytes {
    if body.is_empty() {
        return section;
    }
    let mut whole = Vec::with_capacity(section.len() + body.len());
    whole.extend_from_slice(&section);
    whole.extend_from_slice(body);
    Bytes::from(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/TCP a;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: c1\r\nCSeq: 1 REGISTER\r\nl: 4\r\n\r\nbody";

    fn framer() -> Framer {
        Framer::new(Limits::default())
    }

    #[test]
    fn pipelined_messages_split_at_content_length() {
        let mut buf = BytesMut::from(format!("{REGISTER}{REGISTER}").as_str());
        let first = framer().decode(&mut buf).unwrap().unwrap();
        let second = framer().decode(&mut buf).unwrap().unwrap();
        assert_eq!(first, second);
        assert!(buf.is_empty());
        let Frame::Message(bytes) = first else {
            panic!("not a message")
        };
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains("\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 4\r\n\r\nbody"), "{text}");
    }

    #[test]
    fn partial_reads_wait_for_the_whole_body() {
        let whole = REGISTER.as_bytes();
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let frame = framer().decode(&mut buf).unwrap();
            assert_eq!(frame.is_some(), i == whole.len() - 1, "byte {i}");
        }
    }

    #[test]
    fn keep_alive_ping_and_pong() {
        let mut buf = BytesMut::from("\r\n\r\n\r\nREG");
        assert_eq!(framer().decode(&mut buf).unwrap(), Some(Frame::Ping));
        assert_eq!(framer().decode(&mut buf).unwrap(), Some(Frame::Pong));
        assert_eq!(framer().decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn negative_content_length_closes() {
        let mut buf = BytesMut::from(REGISTER.replace("l: 4", "l: -4").as_str());
        let error = framer().decode(&mut buf).unwrap_err();
        assert_eq!((error.status, error.close), (400, true));
    }

    #[test]
    fn garbage_start_line_is_refused_once_a_line_ends() {
        let mut buf = BytesMut::from(&b"\x00\x01\xffgarbage\r\n"[..]);
        let error = framer().decode(&mut buf).unwrap_err();
        assert_eq!((error.status, error.close), (400, true));
    }

    #[test]
    fn datagram_with_short_body_is_truncated() {
        let datagram = REGISTER.replace("l: 4", "l: 40");
        let error = decode_datagram(datagram.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!((error.status, error.reason), (400, "Truncated Message"));
    }
}
