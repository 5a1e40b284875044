//! The simulated users' SIP: just what a client needs — build requests and responses, cut messages out of a
//! TCP stream by Content-Length (with `CRLF` keep-alive answers), read headers (compact names too), and answer
//! a digest challenge. Kept apart from the pool's SIP code on purpose: the harness must not share the
//! implementation it is testing.

use std::fmt::Write as _;
use std::time::Duration;

use md5::{Digest, Md5};

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `SIP/2.0 200 OK` or `MESSAGE sip:bob@pool SIP/2.0`.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the framer found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message),
    /// A bare `CRLF`: the answer to our `CRLF CRLF` keep-alive.
    Pong,
}

/// Longest message the client accepts (the pool's own limit is 64 KiB).
const MESSAGE_MAX_BYTES: usize = 256 * 1024;

/// Why the stream could not be read as SIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read SIP from the server: {0}")]
pub struct FrameError(pub String);

/// Cuts messages out of a TCP byte stream.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.starts_with(b"\r\n") && !self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..2);
            return Ok(Some(Frame::Pong));
        }
        if self.buf.starts_with(b"\r\n\r\n") {
            // A keep-alive ping from the server; nothing to answer on the client side but the pong.
            self.buf.drain(..4);
            return Ok(Some(Frame::Pong));
        }
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MESSAGE_MAX_BYTES {
                return Err(FrameError("header section too long".into()));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| FrameError("header section is not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.push((long_name(name.trim()), value.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>())
            .transpose()
            .map_err(|_| FrameError("bad Content-Length".into()))?
            .unwrap_or(0);
        if length > MESSAGE_MAX_BYTES {
            return Err(FrameError(format!("Content-Length {length} too large")));
        }
        let total = head_end + 4 + length;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body = self.buf[head_end + 4..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Frame::Message(Message {
            start,
            headers,
            body,
        })))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Expands a compact header name.
fn long_name(name: &str) -> String {
    match name {
        "i" | "I" => "Call-ID",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "l" | "L" => "Content-Length",
        "m" | "M" => "Contact",
        "c" | "C" => "Content-Type",
        "o" | "O" => "Event",
        "k" | "K" => "Supported",
        other => other,
    }
    .to_string()
}

impl Message {
    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0") {
            None
        } else {
            self.start.split(' ').next()
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The CSeq number.
    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.split_whitespace().next()?.parse().ok()
    }

    /// The whole message as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + self.body.len());
        out.push_str(&self.start);
        out.push_str("\r\n");
        for (n, v) in &self.headers {
            if !n.eq_ignore_ascii_case("content-length") {
                let _ = write!(out, "{n}: {v}\r\n");
            }
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// A response to this request, echoing the headers a response must carry: every Via line in order
    /// (RFC 3261 §8.2.6.2: each proxy on the way finds its own), then From, To, Call-ID and CSeq.
    pub fn response(&self, status: u16, reason: &str) -> Message {
        let vias = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Via"))
            .map(|(_, v)| ("Via".to_string(), v.clone()));
        let rest = ["From", "To", "Call-ID", "CSeq"]
            .iter()
            .filter_map(|h| self.header(h).map(|v| (h.to_string(), v.to_string())));
        let headers = vias.chain(rest).collect();
        Message {
            start: format!("SIP/2.0 {status} {reason}"),
            headers,
            body: Vec::new(),
        }
    }
}

/// The domain users are addressed in.
pub const DOMAIN: &str = "poolchaos";

/// The Request-URI of a REGISTER that names no particular registrar.
pub fn domain_uri() -> String {
    format!("sip:{DOMAIN}")
}

pub fn aor(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}

/// The transport a user speaks SIP over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A connection (messages cut by Content-Length; `CRLF CRLF` keep-alives).
    #[default]
    Tcp,
    /// Datagrams, one message each (RFC 3261 section 18), retransmitted by the client transaction's timers.
    Udp,
}

impl Transport {
    /// As a Via header names it: `TCP`, `UDP`.
    pub fn via(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }

    /// As a URI's `transport` parameter names it: `tcp`, `udp`.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// A user's Contact: an address nobody can dial (`.invalid`), so the server answers over the flow the user
/// registered on (the connection, or the datagrams' source address and port).
pub fn contact(user: &str, transport: Transport) -> String {
    format!(
        "<sip:{user}@{user}.invalid;transport={}>",
        transport.param()
    )
}

/// One datagram read as one SIP message (RFC 3261 section 18.3: without a Content-Length the body runs to the
/// datagram's end; a datagram shorter than its Content-Length says is not a message). A datagram of line ends
/// only is a keep-alive.
pub fn parse_datagram(datagram: &[u8]) -> Result<Frame, FrameError> {
    if datagram.iter().all(|b| *b == b'\r' || *b == b'\n') {
        return Ok(Frame::Pong);
    }
    let mut framer = Framer::default();
    framer.push(datagram);
    match framer.next_frame()? {
        Some(Frame::Message(mut m)) => {
            if m.header("Content-Length").is_none() {
                let head_end = find(datagram, b"\r\n\r\n").unwrap_or(datagram.len());
                m.body = datagram.get(head_end + 4..).unwrap_or_default().to_vec();
            }
            Ok(Frame::Message(m))
        }
        Some(Frame::Pong) => Ok(Frame::Pong),
        None => Err(FrameError(
            "a datagram shorter than its message (or without a header section's end)".into(),
        )),
    }
}

/// A request from `user` with the mandatory headers.
#[allow(clippy::too_many_arguments)]
pub fn request(
    method: &str,
    uri: &str,
    user: &str,
    to: &str,
    call_id: &str,
    from_tag: &str,
    cseq: u32,
    branch: &str,
    transport: Transport,
) -> Message {
    // Over UDP the answer must come back to the port the request left from (RFC 3581).
    let rport = if transport == Transport::Udp {
        ";rport"
    } else {
        ""
    };
    Message {
        start: format!("{method} {uri} SIP/2.0"),
        headers: vec![
            (
                "Via".into(),
                format!(
                    "SIP/2.0/{} {user}.invalid{rport};branch=z9hG4bK{branch}",
                    transport.via()
                ),
            ),
            ("Max-Forwards".into(), "70".into()),
            ("From".into(), format!("<{}>;tag={from_tag}", aor(user))),
            ("To".into(), format!("<{to}>")),
            ("Call-ID".into(), call_id.to_string()),
            ("CSeq".into(), format!("{cseq} {method}")),
        ],
        body: Vec::new(),
    }
}

/// A digest challenge's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub qop_auth: bool,
}

impl Challenge {
    /// Reads `WWW-Authenticate: Digest realm="…", nonce="…", …`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let params = header.trim().strip_prefix("Digest")?.trim();
        let get = |key: &str| -> Option<String> {
            params.split(',').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        Some(Challenge {
            realm: get("realm")?,
            nonce: get("nonce")?,
            opaque: get("opaque"),
            qop_auth: get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth")),
        })
    }

    /// The `Authorization` header answering this challenge for `method uri`.
    pub fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let md5 = |s: String| hex::encode(Md5::digest(s.as_bytes()));
        let ha1 = md5(format!("{user}:{}:{password}", self.realm));
        let ha2 = md5(format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            md5(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            md5(format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut h = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5",
            self.realm, self.nonce
        );
        if self.qop_auth {
            let _ = write!(h, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(h, ", opaque=\"{opaque}\"");
        }
        h
    }
}

/// The `register-action` of a REGISTER's `presence-state` header: `added` or `refreshed`.
pub fn register_action(response: &Message) -> Option<String> {
    let v = response.header("presence-state")?;
    let at = v.find("register-action=")? + "register-action=".len();
    Some(
        v[at..]
            .trim_start_matches('"')
            .split(['"', ';', ',', ' '])
            .next()?
            .to_string(),
    )
}

/// How long a REGISTER's `200` keeps the binding: the shortest `expires` of its Contacts (the user's one), else its
/// `Expires` header (RFC 3261 10.2.4). `None` when it says neither.
pub fn granted_expires(response: &Message) -> Option<Duration> {
    let contacts = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Contact") || n == "m")
        .filter_map(|(_, v)| {
            let at = v.find("expires=")? + "expires=".len();
            v[at..]
                .split([';', ',', ' ', '>'])
                .next()?
                .parse::<u64>()
                .ok()
        })
        .min();
    contacts
        .or_else(|| response.header("Expires")?.trim().parse().ok())
        .map(Duration::from_secs)
}

/// The node and routing group a REGISTER's `200` names in its `Server` header (`poolnode/0.1.0 (fe1-2; rg-3)`):
/// the product's comment, its first part the node, its second the group. `(None, None)` from any other product,
/// whose comment means something else.
pub fn server_of(response: &Message) -> (Option<String>, Option<String>) {
    let Some(v) = response
        .header("Server")
        .filter(|v| v.starts_with("poolnode/"))
    else {
        return (None, None);
    };
    let Some(comment) = v
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside)
    else {
        return (None, None);
    };
    let mut parts = comment
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    (parts.next(), parts.next())
}

/// The event package of the NOTIFY by which a pool tells a client its resiliency mode changed; its body has
/// `resiliency-mode: on|off`, `home: <pool>`, and `register-at: <pool>` when the client must register there.
pub const RESILIENCY_EVENT: &str = "vnd-poolchaos-resiliency";

/// Whether a REGISTER's 200 says the registrar serves this user in resiliency mode
/// (`X-Poolchaos-Resiliency: on`): IM works, persistent changes are refused.
pub fn resiliency(response: &Message) -> bool {
    response
        .header("X-Poolchaos-Resiliency")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"))
}

/// The user part of a `sip:user@host` in a header value.
pub fn user_of(value: &str) -> Option<&str> {
    let at = value.find("sip:")? + 4;
    let rest = &value[at..];
    let end = rest.find(['@', '>', ';'])?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_one_message_with_or_without_content_length() {
        let with = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 2\r\n\r\nhi";
        let without = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nhello";
        for (datagram, body) in [(&with[..], &b"hi"[..]), (&without[..], &b"hello"[..])] {
            match parse_datagram(datagram).unwrap() {
                Frame::Message(m) => assert_eq!(m.body, body),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(parse_datagram(b"\r\n\r\n").unwrap(), Frame::Pong);
        let short = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 20\r\n\r\nhi";
        assert!(parse_datagram(short).is_err());
    }

    #[test]
    fn a_udp_request_asks_for_its_answer_at_its_source_port() {
        let req = request(
            "OPTIONS",
            "sip:d",
            "al",
            "sip:d",
            "c",
            "t",
            1,
            "b",
            Transport::Udp,
        );
        assert_eq!(
            req.header("Via"),
            Some("SIP/2.0/UDP al.invalid;rport;branch=z9hG4bKb")
        );
        assert_eq!(
            contact("al", Transport::Udp),
            "<sip:al@al.invalid;transport=udp>"
        );
    }

    #[test]
    fn frames_pipelined_messages_and_pongs() {
        let mut f = Framer::default();
        f.push(b"\r\nSIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\nl: 2\r\n\r\nhiSIP/2.0 4");
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Pong));
        let Some(Frame::Message(m)) = f.next_frame().unwrap() else {
            panic!("a message")
        };
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.body, b"hi");
        assert_eq!(m.header("content-length"), Some("2"));
        assert_eq!(f.next_frame().unwrap(), None, "a partial message waits");
        f.push(b"80 Busy\r\nContent-Length: 0\r\n\r\n");
        let Some(Frame::Message(m)) = f.next_frame().unwrap() else {
            panic!("a message")
        };
        assert_eq!(m.status(), Some(480));
    }

    #[test]
    fn answers_a_digest_challenge_as_rfc_2617_computes_it() {
        // RFC 2617 section 3.5's example, with its values.
        let c = Challenge {
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            qop_auth: true,
        };
        let h = c.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            h.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{h}"
        );
    }

    #[test]
    fn a_response_echoes_every_via_in_order() {
        let req = Message {
            start: "MESSAGE sip:bob@poolchaos SIP/2.0".into(),
            headers: vec![
                ("Via".into(), "SIP/2.0/TCP edge;branch=z9hG4bKe".into()),
                ("Via".into(), "SIP/2.0/TCP fe;branch=z9hG4bKf".into()),
                ("CSeq".into(), "7 MESSAGE".into()),
            ],
            body: vec![],
        };
        let response = req.response(200, "OK");
        let vias: Vec<&str> = response
            .headers
            .iter()
            .filter(|(n, _)| n == "Via")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/TCP edge;branch=z9hG4bKe",
                "SIP/2.0/TCP fe;branch=z9hG4bKf"
            ]
        );
    }

    #[test]
    fn reads_register_action_and_users() {
        let m = Message {
            start: "SIP/2.0 200 OK".into(),
            headers: vec![(
                "presence-state".into(),
                "register-action=\"refreshed\"".into(),
            )],
            body: vec![],
        };
        assert_eq!(register_action(&m).as_deref(), Some("refreshed"));
        assert_eq!(
            user_of("<sip:fe1-u0001@poolchaos>;tag=1"),
            Some("fe1-u0001")
        );
    }

    fn answer(headers: &[(&str, &str)]) -> Message {
        Message {
            start: "SIP/2.0 200 OK".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_register_answer_says_how_long_the_binding_lasts() {
        let a = answer(&[
            ("Contact", "<sip:alice@10.0.0.9:5060>;expires=45"),
            ("Expires", "60"),
        ]);
        assert_eq!(granted_expires(&a), Some(Duration::from_secs(45)));
        assert_eq!(
            granted_expires(&answer(&[("Expires", "30")])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(granted_expires(&answer(&[])), None);
    }

    #[test]
    fn a_register_answer_names_its_server_and_group() {
        let a = answer(&[("Server", "poolnode/0.1.0 (fe1-2; rg-3)")]);
        assert_eq!(server_of(&a), (Some("fe1-2".into()), Some("rg-3".into())));
        let plain = answer(&[("Server", "kamailio (5.6.3 (x86_64/linux))")]);
        assert_eq!(server_of(&plain), (None, None));
        assert_eq!(server_of(&answer(&[])), (None, None));
    }
}
