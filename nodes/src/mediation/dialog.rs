//! One side of a call's dialog as this node holds it ([`DialogSide`]): enough to send requests inside the
//! dialog (OPTIONS keep-alives, BYE, re-INVITE, ACK) over the call's leg. Also what the Mediation pool and the
//! PSTN gateway agree on: which Request-URIs are telephone numbers, and the hold-time header.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rsip::{Method, Request, Response};

use super::link::Leg;
use crate::sip::message::{self, header, param, uri_in};
use crate::sip::RequestError;

/// How long the gateway holds an answered call before it hangs up, in milliseconds (`X-Hold-Ms: 3000`).
pub const HOLD_HEADER: &str = "X-Hold-Ms";

/// Headers carried from one leg of a call to the other, besides the body and its type.
pub const CARRIED: [&str; 2] = [HOLD_HEADER, "Subject"];

/// One side of a dialog: the leg it runs over and the values our requests inside it carry.
pub struct DialogSide {
    pub leg: Leg,
    pub call_id: String,
    /// Our From/To value in this dialog, with our tag.
    pub local: String,
    /// The far side's From/To value, with its tag.
    pub remote: String,
    /// The Request-URI of our requests in the dialog (the far side's Contact).
    pub target: String,
    cseq: AtomicU32,
}

impl DialogSide {
    /// The side of a dialog we answered (`request` is the INVITE, `local_tag` the tag our 2xx carries).
    pub fn answered(leg: Leg, request: &Request, local_tag: &str) -> Self {
        let to = header(&request.headers, "To").unwrap_or_default();
        let from = header(&request.headers, "From").unwrap_or_default();
        let target = header(&request.headers, "Contact")
            .map(|c| uri_in(c).to_owned())
            .unwrap_or_else(|| uri_in(from).to_owned());
        Self {
            leg,
            call_id: header(&request.headers, "Call-ID")
                .unwrap_or_default()
                .to_owned(),
            local: format!("{to};tag={local_tag}"),
            remote: from.to_owned(),
            target,
            cseq: AtomicU32::new(1),
        }
    }

    /// The side of a dialog we started: `request` is our INVITE (its From carries our tag), `answer` its 2xx.
    pub fn started(leg: Leg, request: &Request, answer: &Response) -> Self {
        let target = header(&answer.headers, "Contact")
            .map(|c| uri_in(c).to_owned())
            .unwrap_or_else(|| request.uri.to_string());
        Self {
            leg,
            call_id: header(&request.headers, "Call-ID")
                .unwrap_or_default()
                .to_owned(),
            local: header(&request.headers, "From")
                .unwrap_or_default()
                .to_owned(),
            remote: header(&answer.headers, "To").unwrap_or_default().to_owned(),
            target,
            cseq: AtomicU32::new(message::cseq(&request.headers).map(|(n, _)| n).unwrap_or(1)),
        }
    }

    /// A request inside the dialog, with the next CSeq (ACK takes the INVITE's number, given as `ack_of`).
    pub fn request(
        &self,
        method: Method,
        extra: Vec<(String, String)>,
        body: Vec<u8>,
        ack_of: Option<u32>,
    ) -> Request {
        let cseq = ack_of.unwrap_or_else(|| self.cseq.fetch_add(1, Ordering::Relaxed) + 1);
        let mut headers = vec![
            ("Max-Forwards".to_owned(), "70".to_owned()),
            ("From".to_owned(), self.local.clone()),
            ("To".to_owned(), self.remote.clone()),
            ("Call-ID".to_owned(), self.call_id.clone()),
            ("CSeq".to_owned(), format!("{cseq} {method}")),
        ];
        headers.extend(extra);
        message::request(method, &self.target, headers.clone(), body.clone()).unwrap_or_else(|_| {
            // A Contact we cannot parse as a Request-URI: the leg is one connection, so any URI reaches it.
            message::request(method, "sip:peer.invalid", headers, body).expect("a fixed URI parses")
        })
    }

    /// Sends `method` inside the dialog and waits up to `timeout` for the final response.
    pub async fn send(&self, method: Method, timeout: Duration) -> Result<Response, RequestError> {
        let request = self.request(method, Vec::new(), Vec::new(), None);
        self.leg.request(request, timeout).await
    }

    /// Acknowledges a 2xx to the INVITE numbered `invite_cseq`.
    pub async fn ack(&self, invite_cseq: u32) -> Result<(), RequestError> {
        let ack = self.request(Method::Ack, Vec::new(), Vec::new(), Some(invite_cseq));
        self.leg.send_without_answer(ack).await
    }
}

/// The telephone number a Request-URI names: `tel:+15551234`, or a SIP URI whose user part is a number
/// (`sip:+15551234@…`, digits with an optional leading `+`; `-` and `.` separators are dropped).
pub fn number_of(uri: &str) -> Option<String> {
    let user = if let Some(rest) = uri.strip_prefix("tel:") {
        rest.split(';').next().unwrap_or(rest)
    } else {
        message::user_of(uri)?
    };
    let cleaned: String = user.chars().filter(|c| !matches!(c, '-' | '.')).collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then_some(cleaned)
}

/// The hold time a request asks for, capped at `max`; `None` when it asks none (or nonsense).
pub fn hold_of(request: &Request, max: Duration) -> Option<Duration> {
    header(&request.headers, HOLD_HEADER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms).min(max))
}

/// A response whose To carries `tag` (the tag of the dialog we answer with).
pub fn response_with_tag(request: &Request, status: u16, reason: &str, tag: &str) -> Response {
    let mut response = message::response(request, status, reason);
    let to = header(&request.headers, "To").unwrap_or_default();
    let to = if param(to, "tag").is_some() {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    response
        .headers
        .retain(|h| !message::name(h).eq_ignore_ascii_case("To"));
    message::push(&mut response.headers, "To", to);
    response
}

/// The reason phrase of a response.
pub fn reason_of(response: &Response) -> String {
    response
        .status_code
        .to_string()
        .split_once(' ')
        .map(|(_, r)| r.to_owned())
        .unwrap_or_default()
}

/// The carried headers and body of `request`, to put on the other leg.
pub fn carried(request: &Request) -> (Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = CARRIED
        .iter()
        .filter_map(|n| header(&request.headers, n).map(|v| ((*n).to_owned(), v.to_owned())))
        .collect();
    if !request.body.is_empty() {
        if let Some(t) = header(&request.headers, "Content-Type") {
            headers.push(("Content-Type".into(), t.to_owned()));
        }
    }
    (headers, request.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_tel_uris_or_numeric_user_parts() {
        assert_eq!(number_of("tel:+15551234").as_deref(), Some("+15551234"));
        assert_eq!(
            number_of("sip:+1-555-1234@gw;user=phone").as_deref(),
            Some("+15551234")
        );
        assert_eq!(number_of("sip:5551234@gw").as_deref(), Some("5551234"));
        assert_eq!(number_of("sip:alice@fe1"), None);
        assert_eq!(number_of("sip:+@gw"), None);
        assert_eq!(number_of("sip:gw"), None);
    }

    #[test]
    fn a_tel_request_uri_is_refused_by_the_shared_parser() {
        // rsip 0.4 parses sip: and sips: URIs only, so a number travels as `sip:+1555…@host;user=phone`
        // (RFC 3261 19.1.6). When the parser learns tel:, `number_of` already reads it.
        let text = "INVITE tel:+15551234 SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\
                    From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
                    Content-Length: 0\r\n\r\n";
        let rejection = message::parse(text.as_bytes()).unwrap_err();
        assert_eq!(rejection.status, 400);
    }
}
