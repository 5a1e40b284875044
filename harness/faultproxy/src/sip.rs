//! SIP on the wire, as much as the SIP toxics need: a message's start line and headers, the
//! framing of a TCP byte stream into messages (RFC 3261 §18.3: the head ends at an empty line,
//! the body is `Content-Length` bytes, CRLF keep-alives between messages), and the response the
//! proxy sends on a server's behalf (§8.2.6: Via, From, To, Call-ID and CSeq copied, To-tag added).
//!
//! No toxic logic here: this module only reads and writes bytes.

use bytes::{Bytes, BytesMut};

/// A head larger than this without its empty line is not SIP: the framer passes the bytes on raw.
const HEAD_MAX_BYTES: usize = 64 * 1024;
/// A body larger than this is not believed: the framer passes the bytes on raw.
const BODY_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The start line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String },
    Response { status: u16 },
}

/// A parsed message head: start line and headers in order (names as written, values trimmed).
#[derive(Clone, Debug)]
pub struct Head {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
}

/// Compact header forms (RFC 3261 §7.3.3 and extensions) and their full names.
const COMPACT: &[(&str, &str)] = &[
    ("i", "call-id"),
    ("m", "contact"),
    ("e", "content-encoding"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("f", "from"),
    ("s", "subject"),
    ("k", "supported"),
    ("t", "to"),
    ("v", "via"),
    ("o", "event"),
    ("r", "refer-to"),
    ("u", "allow-events"),
];

/// The full lower-case name of a header name written in any case or compact form.
pub fn full_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    COMPACT
        .iter()
        .find(|(compact, _)| *compact == lower)
        .map_or(lower, |(_, full)| (*full).to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl Head {
    /// Parses the head of `message` (the bytes up to its empty line); None when it is not SIP.
    pub fn parse(message: &[u8]) -> Option<Head> {
        let end = find(message, b"\r\n\r\n").unwrap_or(message.len());
        let text = std::str::from_utf8(&message[..end]).ok()?;
        let mut lines = text.split("\r\n");
        let first = lines.next()?;
        let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let status = rest.get(..3)?.parse().ok()?;
            StartLine::Response { status }
        } else {
            let mut words = first.split(' ');
            let method = words.next().filter(|m| !m.is_empty())?;
            let _uri = words.next()?;
            if words.next() != Some("SIP/2.0") {
                return None;
            }
            StartLine::Request {
                method: method.to_owned(),
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // A folded line continues the previous header's value.
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Some(Head { start, headers })
    }

    /// Values of the header `name` (full or compact form, any case), in order.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let wanted = full_name(name);
        self.headers
            .iter()
            .filter(move |(header, _)| full_name(header) == wanted)
            .map(|(_, value)| value.as_str())
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// The method named in `CSeq` (`1 REGISTER` → `REGISTER`).
    pub fn cseq_method(&self) -> Option<&str> {
        self.value("cseq")?.split_whitespace().nth(1)
    }

    pub fn is_request(&self, method: &str) -> bool {
        matches!(&self.start, StartLine::Request { method: m } if m.eq_ignore_ascii_case(method))
    }

    /// The response to this request with `code`, as the server would send it: Via, From, To,
    /// Call-ID and CSeq copied, `tag` added to To when it has none, an optional `Retry-After`,
    /// no body.
    pub fn response(
        &self,
        code: u16,
        reason: &str,
        tag: &str,
        retry_after_s: Option<u64>,
    ) -> Bytes {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in self.values("via") {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        if let Some(from) = self.value("from") {
            out.push_str(&format!("From: {from}\r\n"));
        }
        if let Some(to) = self.value("to") {
            let tagged = to
                .split(';')
                .skip(1)
                .any(|param| param.trim().to_ascii_lowercase().starts_with("tag="));
            if tagged {
                out.push_str(&format!("To: {to}\r\n"));
            } else {
                out.push_str(&format!("To: {to};tag={tag}\r\n"));
            }
        }
        for name in ["call-id", "cseq"] {
            if let Some(value) = self.value(name) {
                let written = if name == "call-id" { "Call-ID" } else { "CSeq" };
                out.push_str(&format!("{written}: {value}\r\n"));
            }
        }
        if let Some(seconds) = retry_after_s {
            out.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        out.push_str("Server: faultproxy\r\nContent-Length: 0\r\n\r\n");
        Bytes::from(out)
    }
}

/// One piece of a framed byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A whole message: head, empty line, body.
    Message(Bytes),
    /// Bytes between messages (keep-alive CRLFs) or bytes that are not SIP: passed on as they are.
    Raw(Bytes),
}

/// Cuts a TCP byte stream into whole messages; keeps the bytes of an incomplete one.
#[derive(Debug, Default)]
pub struct Framer {
    buffer: BytesMut,
}

impl Framer {
    /// Adds `data` and returns every piece now complete, in stream order.
    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        self.buffer.extend_from_slice(data);
        let mut pieces = Vec::new();
        loop {
            let blank = self
                .buffer
                .iter()
                .take_while(|byte| **byte == b'\r' || **byte == b'\n')
                .count();
            if blank > 0 {
                pieces.push(Piece::Raw(self.buffer.split_to(blank).freeze()));
            }
            if self.buffer.is_empty() {
                break;
            }
            let Some(head_end) = find(&self.buffer, b"\r\n\r\n") else {
                if self.buffer.len() > HEAD_MAX_BYTES {
                    pieces.push(Piece::Raw(self.buffer.split().freeze()));
                }
                break;
            };
            let body_bytes = Head::parse(&self.buffer[..head_end])
                .map(|head| {
                    head.value("content-length")
                        .and_then(|length| length.parse::<usize>().ok())
                        .unwrap_or(0)
                })
                .filter(|length| *length <= BODY_MAX_BYTES);
            match body_bytes {
                Some(body_bytes) => {
                    let total = head_end + 4 + body_bytes;
                    if self.buffer.len() < total {
                        break;
                    }
                    pieces.push(Piece::Message(self.buffer.split_to(total).freeze()));
                }
                None => {
                    // Not SIP: pass the head on raw and look again after it.
                    pieces.push(Piece::Raw(self.buffer.split_to(head_end + 4).freeze()));
                }
            }
        }
        pieces
    }

    /// The bytes of an incomplete message, taken out (when framing stops or the sender closes).
    pub fn take_rest(&mut self) -> Bytes {
        self.buffer.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
        v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\n\
        f: <sip:alice@example.com>;tag=a1\r\n\
        To: <sip:alice@example.com>\r\n\
        i: call-1\r\n\
        CSeq: 7 REGISTER\r\n\
        l: 4\r\n\r\nbody";

    #[test]
    fn head_reads_requests_responses_and_compact_names() {
        let head = Head::parse(REGISTER.as_bytes()).unwrap();
        assert!(head.is_request("register"));
        assert_eq!(head.cseq_method(), Some("REGISTER"));
        assert_eq!(head.value("Call-ID"), Some("call-1"));
        assert_eq!(head.values("VIA").count(), 2);
        let ok = Head::parse(b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n").unwrap();
        assert_eq!(ok.start, StartLine::Response { status: 200 });
        assert!(Head::parse(b"GET / HTTP/1.1\r\n\r\n").is_none());
    }

    #[test]
    fn response_copies_the_dialog_headers_and_adds_a_tag() {
        let head = Head::parse(REGISTER.as_bytes()).unwrap();
        let reply = head.response(503, "Service Unavailable", "fp1", Some(5));
        let text = std::str::from_utf8(&reply).unwrap();
        assert!(text.starts_with("SIP/2.0 503 Service Unavailable\r\n"));
        let vias: Vec<_> = text.lines().filter(|l| l.starts_with("Via: ")).collect();
        assert_eq!(
            vias,
            [
                "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
                "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2"
            ]
        );
        for line in [
            "From: <sip:alice@example.com>;tag=a1\r\n",
            "To: <sip:alice@example.com>;tag=fp1\r\n",
            "Call-ID: call-1\r\n",
            "CSeq: 7 REGISTER\r\n",
            "Retry-After: 5\r\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn framer_cuts_split_and_joined_messages_and_passes_keep_alives() {
        let two = format!("{REGISTER}\r\n\r\n{REGISTER}");
        let mut framer = Framer::default();
        let mut pieces = Vec::new();
        for piece in two.as_bytes().chunks(7) {
            pieces.extend(framer.push(piece));
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Message(Bytes::from(REGISTER)),
                Piece::Raw(Bytes::from("\r\n\r\n")),
                Piece::Message(Bytes::from(REGISTER)),
            ]
        );
        assert!(framer.take_rest().is_empty());
        let whole = framer.push(two.as_bytes());
        assert_eq!(whole.len(), 3);
        let partial = framer.push(&REGISTER.as_bytes()[..20]);
        assert!(partial.is_empty());
        assert_eq!(framer.take_rest(), REGISTER.as_bytes()[..20]);
    }
}
