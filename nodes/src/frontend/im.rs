//! Instant messages: MESSAGE in pager mode (RFC 3428), relayed to every registered binding of the recipient.
//!
//! The sender's `2xx` is sent only after a recipient's client answered `2xx`, so an acknowledged IM is a
//! delivered IM. Nobody registered: `480`. Nobody answered in time: `408`. Every flow refused: the first refusal
//! is passed on; a refusal by the pool itself (a peer at one of its bounds) is `503` with `Retry-After`.

use std::time::Duration;

use rsip::{Request, Response};
use tokio::task::JoinSet;

use super::pool::Delivery;
use super::server::FrontEnd;
use super::store::now_unix_ms;
use crate::defects::{self, Defect};
use crate::sip::message::{self, header, name, value};
use crate::sip::{Peer, Reply, RequestError, Transport};

/// Headers the recipient does not get: our hop's credentials, and Content-Length (re-computed on encoding).
const NOT_RELAYED: [&str; 4] = [
    "Authorization",
    "Proxy-Authorization",
    "Content-Length",
    "Max-Forwards",
];

/// Where one copy of an IM goes: a connection on this Front End, or the pool's Front End holding it.
enum Target {
    Here(Peer),
    There { node: String, user: String },
}

/// Answers a MESSAGE, deferred until the recipient's clients answered.
pub async fn message(fe: &FrontEnd, request: Request, peer: Peer) -> Reply {
    let Some(sender) = FrontEnd::sender(&request) else {
        return Reply::Response(message::response(&request, 400, "Bad From"));
    };
    if let Err(refusal) = fe.authenticate(&request, &peer, &sender) {
        return Reply::Response(refusal);
    }
    let hops_left = match header(&request.headers, "Max-Forwards").map(|v| v.trim().parse::<u32>())
    {
        Some(Ok(0)) => return Reply::Response(message::response(&request, 483, "Too Many Hops")),
        Some(Ok(n)) => n - 1,
        Some(Err(_)) => {
            return Reply::Response(message::response(&request, 400, "Bad Max-Forwards"))
        }
        None => 69,
    };
    let request_uri = request.uri.to_string();
    let Some(recipient) = message::user_of(&request_uri).map(str::to_owned) else {
        return Reply::Response(message::response(&request, 404, "Not Found"));
    };
    let view = match fe.view(&recipient, now_unix_ms()).await {
        Ok(view) => view,
        Err(refusal) => return Reply::Response(refusal.response(&request)),
    };
    let me = fe.node_name();
    let mut targets: Vec<(String, Target)> = fe
        .locations
        .flows(&recipient, &view.bindings)
        .into_iter()
        .filter(|(contact, _)| {
            view.bindings
                .iter()
                .any(|b| &b.contact == contact && b.front_end == me)
        })
        .map(|(contact, flow)| (contact, Target::Here(flow)))
        .collect();
    // Bindings whose connection is on another Front End of the pool.
    targets.extend(view.bindings.iter().filter_map(|b| {
        let node = b.front_end.clone().filter(|n| Some(n) != me.as_ref())?;
        Some((
            b.contact.clone(),
            Target::There {
                node,
                user: recipient.clone(),
            },
        ))
    }));
    if targets.is_empty() {
        return Reply::Response(message::response(&request, 480, "Temporarily Unavailable"));
    }
    let mut relayed = Vec::with_capacity(targets.len());
    for (contact, target) in targets {
        // A proxy's relay (RFC 3261 16.6): same headers and body, new Request-URI, one hop less; our Via goes on
        // top when sent.
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|h| !NOT_RELAYED.iter().any(|n| name(h).eq_ignore_ascii_case(n)))
            .map(|h| (name(h).to_owned(), value(h).to_owned()))
            .collect();
        headers.push(("Max-Forwards".into(), hops_left.to_string()));
        match message::request(
            rsip::Method::Message,
            &contact,
            headers,
            request.body.clone(),
        ) {
            Ok(forward) => relayed.push((contact, forward, target)),
            Err(_) => continue,
        }
    }
    if relayed.is_empty() {
        return Reply::Response(message::response(&request, 480, "Temporarily Unavailable"));
    }
    if defects::active(Defect::ImDroppedOneIn50) {
        // The bug: a relay that counts its messages and, every 50th, answers before handing it on — and never does.
        static RELAYED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if RELAYED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 50 == 49 {
            return Reply::Response(message::response(&request, 200, "OK"));
        }
    }
    let timeout = fe.config.im_answer_timeout;
    let retry_after = fe.config.retry_after;
    let pool = fe.pool().cloned();
    Reply::Deferred(Box::pin(async move {
        let mut attempts = JoinSet::new();
        for (contact, forward, target) in relayed {
            let pool = pool.clone();
            attempts.spawn(async move {
                match target {
                    Target::Here(flow) => {
                        send_to(flow, &contact, forward, timeout)
                            .await
                            .map(|answer| {
                                Delivery::Answered(answer.status_code.code(), reason_of(&answer))
                            })
                    }
                    Target::There { node, user } => {
                        let encoded =
                            String::from_utf8_lossy(&message::encode(forward)).into_owned();
                        let delivered = match pool {
                            Some(pool) => {
                                pool.deliver(&node, &user, &contact, encoded, timeout).await
                            }
                            None => None,
                        };
                        match delivered {
                            Some(Delivery::Answered(408, _)) => Err(RequestError::Timeout {
                                peer: ([0, 0, 0, 0], 0).into(),
                            }),
                            Some(delivery) => Ok(delivery),
                            // The Front End holding the recipient's connection did not answer (it died, or
                            // the link broke): it may have delivered the IM first, so the outcome is
                            // unknown — the sender gets 408, never "not available" for a delivered IM.
                            None => Err(RequestError::Timeout {
                                peer: ([0, 0, 0, 0], 0).into(),
                            }),
                        }
                    }
                }
            });
        }
        let mut refusal: Option<Delivery> = None;
        let mut timed_out = false;
        // Bounded: one turn per relayed copy.
        while let Some(joined) = attempts.join_next().await {
            match joined {
                Ok(Ok(Delivery::Answered(code, reason))) if (200..300).contains(&code) => {
                    attempts.abort_all();
                    return message::response(&request, code, &reason);
                }
                Ok(Ok(Delivery::Answered(480, _))) => {}
                Ok(Ok(answer)) => {
                    refusal.get_or_insert(answer);
                }
                Ok(Err(RequestError::Timeout { .. })) => timed_out = true,
                Ok(Err(RequestError::Closed { .. })) | Err(_) => {}
            }
        }
        match refusal {
            Some(Delivery::Answered(code, reason)) => message::response(&request, code, &reason),
            Some(Delivery::Refused(why)) => message::unavailable(&request, &why, retry_after),
            None if timed_out => message::response(&request, 408, "Request Timeout"),
            None => message::response(&request, 480, "Temporarily Unavailable"),
        }
    }))
}

/// Sends `request` to a binding's client: over the flow it registered over while that is open (RFC 5626 style, as
/// Lync does), else to the contact's address (UDP from our socket, TCP over a connection we open).
pub(crate) async fn send_to(
    flow: Peer,
    contact: &str,
    request: Request,
    timeout: std::time::Duration,
) -> Result<Response, RequestError> {
    let target = match flow.transport() {
        Transport::Tcp if flow.is_open() => flow,
        Transport::Tcp => flow.toward(contact).await.ok_or(RequestError::Closed {
            peer: flow.remote(),
        })?,
        Transport::Udp => flow.toward(contact).await.unwrap_or(flow),
    };
    target.request(request, timeout).await
}

/// The reason phrase of a response.
pub(crate) fn reason_of(response: &Response) -> String {
    response
        .status_code
        .to_string()
        .split_once(' ')
        .map(|(_, r)| r.to_owned())
        .unwrap_or_default()
}

impl FrontEnd {
    /// Relays an encoded request to the client of `user` bound at `contact` over its connection to this Front End:
    /// the client's final status and reason (`480` when there is no such connection, `408` without an answer).
    pub(crate) async fn deliver_local(
        &self,
        user: &str,
        contact: &str,
        encoded: &str,
        timeout: Duration,
    ) -> (u16, String) {
        let unavailable = (480, "Temporarily Unavailable".to_owned());
        let Some((_, flow)) = self
            .locations
            .flows_of(user)
            .into_iter()
            .find(|(c, _)| c == contact)
        else {
            return unavailable;
        };
        let Ok(rsip::SipMessage::Request(request)) = message::parse(encoded.as_bytes()) else {
            return (400, "Bad Relayed Request".to_owned());
        };
        match send_to(flow, contact, request, timeout).await {
            Ok(answer) => {
                let code = answer.status_code.code();
                (code, reason_of(&answer))
            }
            Err(crate::sip::RequestError::Timeout { .. }) => (408, "Request Timeout".to_owned()),
            Err(_) => unavailable,
        }
    }
}
