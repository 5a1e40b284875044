//! What a Front End asks the pairing before serving a user, and the SIP a client sees because of it.
//!
//! **What a client sees** (the contract the harness reads):
//! - Every REGISTER `200` of a paired pool carries `X-Poolchaos-Resiliency: on` or `off`. `on`: the user is
//!   served by its backup registrar in resiliency mode.
//! - In resiliency mode, right after the `200` of a new registration, the client gets on the same connection
//!   `NOTIFY` with `Event: vnd-poolchaos-resiliency`, `Content-Type: text/plain` and the body
//!   `resiliency-mode: on` / `home: <pool>` (one per line). When the mode ends it gets the same NOTIFY with
//!   `resiliency-mode: off`, plus `register-at: <pool>` when it must register at its home pool again.
//! - A persistent change in resiliency mode (contact list PUBLISH, even `list`: the list is unavailable; presence
//!   PUBLISH) gets `503 Service Unavailable (Resiliency Mode)` with
//!   `Warning: 399 poolchaos "resiliency mode: persistent changes unavailable"` and the same text in
//!   `ms-diagnostics`, as the Front End's own resiliency mode (Back End outage) answers: one signal for clients.
//! - Watchers of a user in resiliency mode get a PIDF whose tuple says `<basic>closed</basic>` with
//!   `<note>unknown</note>` (and an `<rs:resiliency>` marker): presence unknown.
//! - A home pool that is failed over (fenced) answers its users' REGISTER with `301 Moved Permanently` to the
//!   pair (`Contact: <sip:<pair>;transport=tcp>;q=0.7`), their other requests with `503`; a backup pool whose
//!   pair is up answers the pair's users' REGISTER with `301` to their home pool. While a decision is pending (the
//!   failover interval running, a failover or failback in progress) the answer is `503` with `Retry-After`.

use rsip::{Method, Request, Response};

use crate::frontend::store::{Publication, UserView};
use crate::sip::message::{self, header, uri_in, user_of};

/// The header on every REGISTER `200` of a paired pool: `on` or `off`.
pub const RESILIENCY_HEADER: &str = "X-Poolchaos-Resiliency";
/// The event package of the NOTIFY telling a client it entered or left resiliency mode.
pub const RESILIENCY_EVENT: &str = "vnd-poolchaos-resiliency";
/// The explicit refusal of a persistent change in resiliency mode.
pub const RESILIENCY_REFUSAL: &str = "resiliency mode: persistent changes unavailable";

/// How this pool serves one user now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a user of this pool or its pair: the Front End decides as it always did.
    Other,
    /// Homed here and this pool serves it.
    Home,
    /// Homed on our pair and we are its backup registrar: in resiliency mode, or at full service after failover.
    Backup { resiliency: bool },
    /// Belongs at `pool` now.
    Redirect { pool: String, reason: String },
    /// Not now: the reason, and when to try again.
    Unavailable {
        reason: String,
        retry_after_secs: u64,
    },
}

/// The user a request is about, for the gate: the registering user, the publisher, or the sender.
pub fn subject(request: &Request) -> Option<String> {
    let user = match request.method {
        Method::Register => header(&request.headers, "To").and_then(|t| user_of(uri_in(t))),
        Method::Publish => {
            let uri = request.uri.to_string();
            return user_of(&uri).map(str::to_owned);
        }
        Method::Message | Method::Subscribe => {
            header(&request.headers, "From").and_then(|f| user_of(uri_in(f)))
        }
        _ => None,
    };
    user.map(str::to_owned)
}

/// The answer a request gets instead of being served, if any. `address` turns a pool name into the
/// `host:port` clients reach it at.
pub fn screen(
    request: &Request,
    decision: &Decision,
    address: impl Fn(&str) -> String,
) -> Option<Response> {
    match decision {
        Decision::Other | Decision::Home | Decision::Backup { resiliency: false } => None,
        Decision::Backup { resiliency: true } => {
            (request.method == Method::Publish).then(|| resiliency_refusal(request))
        }
        Decision::Redirect { pool: to, reason } if request.method == Method::Register => {
            let mut response = message::response(request, 301, "Moved Permanently");
            message::push(
                &mut response.headers,
                "Contact",
                format!("<sip:{};transport=tcp>;q=0.7", address(to)),
            );
            diagnostics(&mut response, reason);
            Some(response)
        }
        Decision::Redirect { reason, .. } => Some(unavailable(request, reason, 5)),
        Decision::Unavailable {
            reason,
            retry_after_secs,
        } => Some(unavailable(request, reason, *retry_after_secs)),
    }
}

fn diagnostics(response: &mut Response, reason: &str) {
    message::push(
        &mut response.headers,
        "ms-diagnostics",
        format!("1000;reason=\"{}\"", reason.replace('"', "'")),
    );
}

fn unavailable(request: &Request, reason: &str, retry_after_secs: u64) -> Response {
    let mut response = message::response(
        request,
        503,
        &format!(
            "Service Unavailable ({})",
            reason.replace(['\r', '\n'], " ")
        ),
    );
    message::push(
        &mut response.headers,
        "Retry-After",
        retry_after_secs.max(1).to_string(),
    );
    diagnostics(&mut response, reason);
    response
}

/// `503 Service Unavailable (Resiliency Mode)` with the reason in `Warning` and `ms-diagnostics`, no
/// `Retry-After`: retrying does not help until the mode ends, which a NOTIFY tells.
pub fn resiliency_refusal(request: &Request) -> Response {
    let mut response = message::response(request, 503, "Service Unavailable (Resiliency Mode)");
    message::push(
        &mut response.headers,
        "Warning",
        format!("399 poolchaos \"{RESILIENCY_REFUSAL}\""),
    );
    diagnostics(&mut response, RESILIENCY_REFUSAL);
    response
}

/// The body of the resiliency NOTIFY.
pub fn notice_body(on: bool, home: &str, register_at: Option<&str>) -> String {
    let mut body = format!(
        "resiliency-mode: {}\r\nhome: {home}\r\n",
        if on { "on" } else { "off" }
    );
    if let Some(pool) = register_at {
        body.push_str(&format!("register-at: {pool}\r\n"));
    }
    body
}

/// The unsolicited NOTIFY telling `user`'s client at `contact` about resiliency mode.
pub fn notice(user: &str, contact: &str, body: String) -> Option<Request> {
    let headers = vec![
        (
            "From".to_owned(),
            format!("<sip:{user}@poolchaos>;tag={}", message::token()),
        ),
        ("To".to_owned(), format!("<{contact}>")),
        ("Call-ID".to_owned(), message::token()),
        ("CSeq".to_owned(), "1 NOTIFY".to_owned()),
        ("Max-Forwards".to_owned(), "70".to_owned()),
        ("Event".to_owned(), RESILIENCY_EVENT.to_owned()),
        ("Subscription-State".to_owned(), "active".to_owned()),
        ("Content-Type".to_owned(), "text/plain".to_owned()),
    ];
    message::request(Method::Notify, contact, headers, body.into_bytes()).ok()
}

/// Whether watchers here see a user's presence as unknown, by how this pool serves the user now. A user of our
/// pair is at full service here only after the failover (`Backup { resiliency: false }`); in every other state —
/// resiliency mode, a failover or failback under way, or a node of this pool that has not yet seen the home pool
/// lost (its own timer runs a little behind the node the user signed in at) — whatever this pool holds for the
/// user is a resiliency-mode sign-in, not the user's presence. A user of this pool shows as unknown while the pool
/// is fenced or reloading. Only users of neither pool, and users served at full service, show their presence.
pub fn shows_unknown_presence(decision: &Decision) -> bool {
    !matches!(
        decision,
        Decision::Other | Decision::Home | Decision::Backup { resiliency: false }
    )
}

/// What watchers see of a user in resiliency mode: presence unknown.
pub fn unknown_presence(view: &mut UserView, user: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:rs=\"urn:poolchaos:resiliency\" entity=\"sip:{user}@poolchaos\">\r\n\
         <tuple id=\"resiliency\"><status><basic>closed</basic></status>\
         <note>unknown</note></tuple>\r\n<rs:resiliency>on</rs:resiliency>\r\n</presence>\r\n"
    );
    view.publications = vec![Publication {
        etag: "resiliency-unknown".into(),
        content_type: "application/pidf+xml".into(),
        body: body.into_bytes(),
        expires_at_unix_ms: u64::MAX,
    }];
    view.contacts.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Request {
        match message::parse(text.as_bytes()).unwrap() {
            rsip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    const PUBLISH: &str = "PUBLISH sip:alice@pb SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bK1\r\nFrom: <sip:alice@pb>;tag=1\r\nTo: <sip:alice@pb>\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nEvent: vnd-poolchaos-contacts\r\nContent-Length: 0\r\n\r\n";
    const REGISTER: &str = "REGISTER sip:pa SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bK1\r\nFrom: <sip:alice@pa>;tag=1\r\nTo: <sip:alice@pa>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn resiliency_mode_refuses_publish_with_the_explicit_error_and_lets_register_through() {
        let backup = Decision::Backup { resiliency: true };
        let refused = screen(&request(PUBLISH), &backup, str::to_owned).unwrap();
        let text = String::from_utf8_lossy(&message::encode(refused)).into_owned();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable (Resiliency Mode)\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Warning: 399 poolchaos \"resiliency mode: persistent changes unavailable\"\r\n"
            ),
            "{text}"
        );
        assert!(screen(&request(REGISTER), &backup, str::to_owned).is_none());
        assert_eq!(subject(&request(PUBLISH)).as_deref(), Some("alice"));
    }

    #[test]
    fn a_fenced_home_pool_redirects_a_register_to_its_pair() {
        let decision = Decision::Redirect {
            pool: "pb".into(),
            reason: "pool pa is failed over to pb".into(),
        };
        let response = screen(&request(REGISTER), &decision, |p| format!("{p}:5060")).unwrap();
        let text = String::from_utf8_lossy(&message::encode(response)).into_owned();
        assert!(
            text.starts_with("SIP/2.0 301 Moved Permanently\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Contact: <sip:pb:5060;transport=tcp>;q=0.7\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_user_not_at_full_service_here_shows_unknown_presence_whatever_this_node_decided() {
        // The node the user signed in at decided "backup, resiliency"; another node of the pool, whose timer
        // runs behind, still says "unavailable" or even "redirect home": its watchers must not see the
        // resiliency-mode sign-in's bare binding as the user's presence either.
        for decision in [
            Decision::Backup { resiliency: true },
            Decision::Unavailable {
                reason: "home pool pa unreachable for 2900 ms".into(),
                retry_after_secs: 1,
            },
            Decision::Redirect {
                pool: "pa".into(),
                reason: "home pool pa is up".into(),
            },
        ] {
            assert!(shows_unknown_presence(&decision), "{decision:?}");
        }
        for decision in [
            Decision::Other,
            Decision::Home,
            Decision::Backup { resiliency: false },
        ] {
            assert!(!shows_unknown_presence(&decision), "{decision:?}");
        }
    }
}
