//! Resiliency mode as a client sees it, whatever put its user there (the Back End unavailable past
//! `be_outage_grace_ms`, or a sign-in at the backup registrar): one header, one NOTIFY event, one refusal. Every
//! source of resiliency mode uses these, so a client reads one signal.
//!
//! - REGISTER `200` carries `X-Poolchaos-Resiliency: on` or `off`;
//! - a change is told on the client's registered connection by a NOTIFY with `Event: vnd-poolchaos-resiliency`,
//!   `Content-Type: text/plain` and the body `resiliency-mode: on` (or `off`), then `home: <pool>`, one per line;
//! - a persistent change (contact list `add`/`remove`, presence PUBLISH) gets
//!   `503 Service Unavailable (Resiliency Mode)` with
//!   `Warning: 399 poolchaos "resiliency mode: persistent changes unavailable"` and the same text in
//!   `ms-diagnostics`, without `Retry-After` (retrying does not help until a NOTIFY says the mode ended).
//!
//! The backup registrar's resiliency mode (`pairing::gate`) sends the same signals.

use std::time::Duration;

use rsip::{Request, Response};

use crate::sip::message;
use crate::sip::Peer;

/// The REGISTER `200` header that says whether the user is in resiliency mode.
pub const HEADER: &str = "X-Poolchaos-Resiliency";
/// The event package of the NOTIFY that tells a client its mode changed.
pub const EVENT: &str = "vnd-poolchaos-resiliency";
/// Body type of that NOTIFY.
pub const CONTENT_TYPE: &str = "text/plain";
/// The `Warning` of a refused persistent change (RFC 3261 20.43: code 399, agent, text).
pub const WARNING: &str = "399 poolchaos \"resiliency mode: persistent changes unavailable\"";
/// The reason in `ms-diagnostics`.
pub const REASON: &str = "resiliency mode: persistent changes unavailable";

/// `on` or `off`.
pub fn word(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The NOTIFY body: `resiliency-mode: on` or `off`, and the user's home pool.
pub fn body(on: bool, home: &str) -> String {
    format!("resiliency-mode: {}\r\nhome: {home}\r\n", word(on))
}

/// The refusal of a persistent change in resiliency mode.
pub fn refusal(request: &Request) -> Response {
    let mut response = message::response(request, 503, "Service Unavailable (Resiliency Mode)");
    message::push(&mut response.headers, "Warning", WARNING);
    message::push(
        &mut response.headers,
        "ms-diagnostics",
        format!("1000;reason=\"{REASON}\""),
    );
    response
}

/// The NOTIFY telling `user` of pool `home`, bound at `contact`, its mode; `None` when the contact is not a URI.
pub fn notify(user: &str, home: &str, contact: &str, on: bool) -> Option<Request> {
    let headers = vec![
        ("Max-Forwards".to_owned(), "70".to_owned()),
        (
            "From".to_owned(),
            format!("<sip:{user}@poolchaos>;tag={}", message::token()),
        ),
        ("To".to_owned(), format!("<{contact}>")),
        (
            "Call-ID".to_owned(),
            format!("{}@resiliency", message::token()),
        ),
        ("CSeq".to_owned(), "1 NOTIFY".to_owned()),
        ("Event".to_owned(), EVENT.to_owned()),
        // Unsolicited (no SUBSCRIBE): RFC 6665 still asks for a state; the client never has to refresh it.
        ("Subscription-State".to_owned(), "active".to_owned()),
        ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
    ];
    message::request(
        rsip::Method::Notify,
        contact,
        headers,
        body(on, home).into_bytes(),
    )
    .ok()
}

/// Sends the mode to every `(user, contact, flow)` given, each on its own task, waiting at most `timeout` for an
/// answer (a client that does not answer learns the mode from its next REGISTER's header).
pub fn tell(flows: Vec<(String, String, Peer)>, home: &str, on: bool, timeout: Duration) {
    for (user, contact, flow) in flows {
        let Some(request) = notify(&user, home, &contact, on) else {
            continue;
        };
        tokio::spawn(async move {
            if let Err(error) = flow.request(request, timeout).await {
                tracing::debug!(%user, %error, "resiliency NOTIFY not answered");
            }
        });
    }
}
