//! Message helpers over `rsip`: parsing with the checks RFC 3261 makes mandatory, header look-up by name, header
//! parameters, and building responses and requests.
//!
//! Header values are read as strings with small helpers here rather than through `rsip`'s typed headers: the
//! typed parsers reject forms real tools send (and re-format URIs, which breaks digest checks), and a server must
//! read what it is sent.

use bytes::Bytes;
use rand::Rng;
use rsip::{Header, Headers, Method, Request, Response, SipMessage, StatusCode};

use super::error::Rejection;

/// The headers RFC 3261 8.1.1 requires in every request, each checked before a handler sees the request.
pub const MANDATORY: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// Parses one framed message and, for a request, checks the mandatory headers and that CSeq names the request's
/// method. The rejection carries the status and reason to answer with.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, Rejection> {
    let message =
        SipMessage::try_from(bytes).map_err(|_| Rejection::new(400, "Malformed Message"))?;
    if let SipMessage::Request(request) = &message {
        for name in MANDATORY {
            if header(&request.headers, name).is_none() {
                return Err(Rejection::new(400, missing_reason(name)));
            }
        }
        let (_, cseq_method) = cseq(&request.headers).ok_or(Rejection::new(400, "Bad CSeq"))?;
        if !cseq_method.eq_ignore_ascii_case(&request.method.to_string()) {
            return Err(Rejection::new(400, "CSeq Method Mismatch"));
        }
        for name in ["From", "To"] {
            let value = header(&request.headers, name).unwrap_or_default();
            if user_of(uri_in(value)).is_none() && !uri_in(value).contains(':') {
                return Err(Rejection::new(
                    400,
                    if name == "From" { "Bad From" } else { "Bad To" },
                ));
            }
        }
    }
    Ok(message)
}

fn missing_reason(name: &str) -> &'static str {
    match name {
        "Via" => "Missing Via",
        "From" => "Missing From",
        "To" => "Missing To",
        "Call-ID" => "Missing Call-ID",
        _ => "Missing CSeq",
    }
}

/// The header's name as it goes on the wire.
pub fn name(header: &Header) -> &str {
    match header {
        Header::Accept(_) => "Accept",
        Header::AcceptEncoding(_) => "Accept-Encoding",
        Header::AcceptLanguage(_) => "Accept-Language",
        Header::AlertInfo(_) => "Alert-Info",
        Header::Allow(_) => "Allow",
        Header::AuthenticationInfo(_) => "Authentication-Info",
        Header::Authorization(_) => "Authorization",
        Header::CSeq(_) => "CSeq",
        Header::CallId(_) => "Call-ID",
        Header::CallInfo(_) => "Call-Info",
        Header::Contact(_) => "Contact",
        Header::ContentDisposition(_) => "Content-Disposition",
        Header::ContentEncoding(_) => "Content-Encoding",
        Header::ContentLanguage(_) => "Content-Language",
        Header::ContentLength(_) => "Content-Length",
        Header::ContentType(_) => "Content-Type",
        Header::Date(_) => "Date",
        Header::ErrorInfo(_) => "Error-Info",
        Header::Event(_) => "Event",
        Header::Expires(_) => "Expires",
        Header::From(_) => "From",
        Header::InReplyTo(_) => "In-Reply-To",
        Header::MaxForwards(_) => "Max-Forwards",
        Header::MimeVersion(_) => "MIME-Version",
        Header::MinExpires(_) => "Min-Expires",
        Header::Organization(_) => "Organization",
        Header::Other(name, _) => name,
        Header::Priority(_) => "Priority",
        Header::ProxyAuthenticate(_) => "Proxy-Authenticate",
        Header::ProxyAuthorization(_) => "Proxy-Authorization",
        Header::ProxyRequire(_) => "Proxy-Require",
        Header::RecordRoute(_) => "Record-Route",
        Header::ReplyTo(_) => "Reply-To",
        Header::Require(_) => "Require",
        Header::RetryAfter(_) => "Retry-After",
        Header::Route(_) => "Route",
        Header::Server(_) => "Server",
        Header::Subject(_) => "Subject",
        Header::SubscriptionState(_) => "Subscription-State",
        Header::Supported(_) => "Supported",
        Header::Timestamp(_) => "Timestamp",
        Header::To(_) => "To",
        Header::Unsupported(_) => "Unsupported",
        Header::UserAgent(_) => "User-Agent",
        Header::Via(_) => "Via",
        Header::Warning(_) => "Warning",
        Header::WwwAuthenticate(_) => "WWW-Authenticate",
    }
}

/// The header's value as it came on the wire (after framing normalized it).
pub fn value(header: &Header) -> &str {
    use rsip::headers::UntypedHeader;
    match header {
        Header::Accept(h) => h.value(),
        Header::AcceptEncoding(h) => h.value(),
        Header::AcceptLanguage(h) => h.value(),
        Header::AlertInfo(h) => h.value(),
        Header::Allow(h) => h.value(),
        Header::AuthenticationInfo(h) => h.value(),
        Header::Authorization(h) => h.value(),
        Header::CSeq(h) => h.value(),
        Header::CallId(h) => h.value(),
        Header::CallInfo(h) => h.value(),
        Header::Contact(h) => h.value(),
        Header::ContentDisposition(h) => h.value(),
        Header::ContentEncoding(h) => h.value(),
        Header::ContentLanguage(h) => h.value(),
        Header::ContentLength(h) => h.value(),
        Header::ContentType(h) => h.value(),
        Header::Date(h) => h.value(),
        Header::ErrorInfo(h) => h.value(),
        Header::Event(h) => h.value(),
        Header::Expires(h) => h.value(),
        Header::From(h) => h.value(),
        Header::InReplyTo(h) => h.value(),
        Header::MaxForwards(h) => h.value(),
        Header::MimeVersion(h) => h.value(),
        Header::MinExpires(h) => h.value(),
        Header::Organization(h) => h.value(),
        Header::Other(_, value) => value,
        Header::Priority(h) => h.value(),
        Header::ProxyAuthenticate(h) => h.value(),
        Header::ProxyAuthorization(h) => h.value(),
        Header::ProxyRequire(h) => h.value(),
        Header::RecordRoute(h) => h.value(),
        Header::ReplyTo(h) => h.value(),
        Header::Require(h) => h.value(),
        Header::RetryAfter(h) => h.value(),
        Header::Route(h) => h.value(),
        Header::Server(h) => h.value(),
        Header::Subject(h) => h.value(),
        Header::SubscriptionState(h) => h.value(),
        Header::Supported(h) => h.value(),
        Header::Timestamp(h) => h.value(),
        Header::To(h) => h.value(),
        Header::Unsupported(h) => h.value(),
        Header::UserAgent(h) => h.value(),
        Header::Via(h) => h.value(),
        Header::Warning(h) => h.value(),
        Header::WwwAuthenticate(h) => h.value(),
    }
}

/// The first header called `name` (case-insensitive), as a string value.
pub fn header<'a>(headers: &'a Headers, wanted: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| name(h).eq_ignore_ascii_case(wanted))
        .map(value)
}

/// Every header called `name`, in order; comma-separated values of list headers are split.
pub fn headers_all<'a>(headers: &'a Headers, wanted: &'a str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| name(h).eq_ignore_ascii_case(wanted))
        .flat_map(|h| split_list(value(h)))
        .collect()
}

/// Splits a list header value at commas outside `<>` and quotes.
pub fn split_list(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut angle, mut quote, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !angle && !quote => {
                parts.push(value[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim().to_owned());
    parts.retain(|p| !p.is_empty());
    parts
}

/// CSeq as (number, method name).
pub fn cseq(headers: &Headers) -> Option<(u32, String)> {
    let value = header(headers, "CSeq")?;
    let mut parts = value.split_whitespace();
    let number = parts.next()?.parse().ok()?;
    let method = parts.next()?.to_owned();
    parts.next().is_none().then_some((number, method))
}

/// The URI of a name-addr or addr-spec header value: inside `<>` when present, else up to the first `;`.
pub fn uri_in(value: &str) -> &str {
    if let (Some(open), Some(close)) = (value.find('<'), value.find('>')) {
        if open < close {
            return &value[open + 1..close];
        }
    }
    value.split(';').next().unwrap_or_default().trim()
}

/// A header parameter (`;name=value` after the URI), unquoted; `Some("")` for a flag parameter.
pub fn param<'a>(value: &'a str, wanted: &str) -> Option<&'a str> {
    let after_uri = match value.find('>') {
        Some(close) => &value[close + 1..],
        None => value
            .split_once(';')
            .map(|(_, rest)| rest)
            .unwrap_or_default(),
    };
    after_uri.split(';').find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(wanted)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The user part of a SIP URI (`sip:alice@host` → `alice`).
pub fn user_of(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
    let (user, _) = rest.split_once('@')?;
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The host and port of a SIP URI (`sip:alice@127.0.0.1:5070;transport=tcp` → `127.0.0.1:5070`).
pub fn host_port_of(uri: &str) -> &str {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or(uri);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split([';', '?', '>']).next().unwrap_or(rest)
}

/// The branch of the top Via, which names a transaction.
pub fn top_branch(headers: &Headers) -> Option<String> {
    let via = header(headers, "Via")?;
    let first = split_list(via).into_iter().next()?;
    param(&first, "branch").map(str::to_owned)
}

/// A new random token for tags, branches and Call-IDs.
pub fn token() -> String {
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// A response to `request` (RFC 3261 8.2.6): Via, From, To, Call-ID and CSeq copied, a To tag added when
/// missing.
pub fn response(request: &Request, status: u16, reason: &str) -> Response {
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        let n = name(h);
        if n.eq_ignore_ascii_case("To") {
            let to = value(h);
            let to = if param(to, "tag").is_none() && status != 100 {
                format!("{to};tag={}", token())
            } else {
                to.to_owned()
            };
            headers.push(Header::Other("To".into(), to));
        } else if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|m| n.eq_ignore_ascii_case(m))
        {
            headers.push(Header::Other(canonical(n).into(), value(h).to_owned()));
        }
    }
    Response {
        status_code: status_code(status, reason),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

fn canonical(name: &str) -> &str {
    MANDATORY
        .iter()
        .find(|m| m.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

/// `503 Service Unavailable (<why>)` with `Retry-After` in whole seconds (at least 1): a node at one of its bounds
/// tells the client to come back later, and that nothing was done.
pub fn unavailable(request: &Request, why: &str, retry_after: std::time::Duration) -> Response {
    let mut response = response(request, 503, &format!("Service Unavailable ({why})"));
    push(
        &mut response.headers,
        "Retry-After",
        retry_after.as_secs().max(1).to_string(),
    );
    response
}

/// A status code carrying our own reason phrase.
pub fn status_code(status: u16, reason: &str) -> StatusCode {
    StatusCode::Other(status, reason.into())
}

/// A request with the given start line and headers, ready for [`Peer::request`](super::Peer::request) (which adds
/// its own Via).
pub fn request(
    method: Method,
    uri: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<Request, Rejection> {
    let uri = rsip::Uri::try_from(uri).map_err(|_| Rejection::new(400, "Bad Request-URI"))?;
    Ok(Request {
        method,
        uri,
        version: rsip::Version::V2,
        headers: headers
            .into_iter()
            .map(|(n, v)| Header::Other(n, v))
            .collect::<Vec<_>>()
            .into(),
        body,
    })
}

/// Adds a header at the end.
pub fn push(headers: &mut Headers, name: &str, value: impl Into<String>) {
    headers.push(Header::Other(name.into(), value.into()));
}

/// Serializes with a correct Content-Length, replacing any the message had.
pub fn encode(message: impl Into<SipMessage>) -> Bytes {
    let mut message: SipMessage = message.into();
    let (headers, body_len) = match &mut message {
        SipMessage::Request(r) => (&mut r.headers, r.body.len()),
        SipMessage::Response(r) => (&mut r.headers, r.body.len()),
    };
    headers.retain(|h| !name(h).eq_ignore_ascii_case("Content-Length"));
    headers.push(Header::Other("Content-Length".into(), body_len.to_string()));
    Bytes::from(message.to_string())
}

/// An error response framed from a raw header section the parser could not accept: Via, From, To, Call-ID and CSeq
/// lines are copied verbatim. `None` for a response (never answered) or a section with nothing to copy.
pub fn error_response_raw(section: &[u8], status: u16, reason: &str) -> Option<Bytes> {
    let text = String::from_utf8_lossy(section);
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    if start.starts_with("SIP/2.0") {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for line in lines {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        let n = n.trim();
        if let Some(m) = MANDATORY.iter().find(|m| m.eq_ignore_ascii_case(n)) {
            out.push_str(&format!("{m}: {}\r\n", v.trim()));
            if *m == "To" && param(v, "tag").is_none() {
                out.truncate(out.len() - 2);
                out.push_str(&format!(";tag={}\r\n", token()));
            }
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_uris_of_header_values() {
        let value = "\"Alice\" <sip:alice@example.com;transport=tcp>;tag=abc;expires=30";
        assert_eq!(uri_in(value), "sip:alice@example.com;transport=tcp");
        assert_eq!(param(value, "tag"), Some("abc"));
        assert_eq!(param(value, "expires"), Some("30"));
        assert_eq!(param(value, "transport"), None);
        assert_eq!(user_of(uri_in(value)), Some("alice"));
        assert_eq!(param("sip:bob@h;expires=0", "expires"), Some("0"));
        assert_eq!(
            host_port_of("sip:bob@127.0.0.1:5070;transport=udp"),
            "127.0.0.1:5070"
        );
    }

    #[test]
    fn list_values_split_outside_brackets() {
        assert_eq!(
            split_list("<sip:a@b;x=1,2>, <sip:c@d>"),
            vec!["<sip:a@b;x=1,2>", "<sip:c@d>"]
        );
    }

    #[test]
    fn cseq_method_must_match_the_request() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n\
                    To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
        let rejection = parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            (rejection.status, rejection.reason),
            (400, "CSeq Method Mismatch")
        );
    }
}
