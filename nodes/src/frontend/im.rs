//! Instant messages: MESSAGE in pager mode (RFC 3428), relayed to every registered binding of the recipient.
//!
//! The sender's `2xx` is sent only after a recipient's client answered `2xx`, so an acknowledged IM is a
//! delivered IM. Nobody registered: `480`. Nobody answered in time: `408`. Every flow refused: the first refusal
//! is passed on.

use rsip::{Request, Response};
use tokio::task::JoinSet;

use super::server::FrontEnd;
use super::store::now_unix_ms;
use crate::sip::message::{self, header, name, value};
use crate::sip::{Peer, Reply, RequestError, Transport};

/// Headers the recipient does not get: our hop's credentials, and Content-Length (re-computed on encoding).
const NOT_RELAYED: [&str; 4] = [
    "Authorization",
    "Proxy-Authorization",
    "Content-Length",
    "Max-Forwards",
];

/// Answers a MESSAGE, deferred until the recipient's clients answered.
pub fn message(fe: &FrontEnd, request: Request, peer: Peer) -> Reply {
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
    let live = fe.store.bindings(&recipient, now_unix_ms());
    let targets = fe.locations.flows(&recipient, &live);
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
    let timeout = fe.config.im_answer_timeout;
    Reply::Deferred(Box::pin(async move {
        let mut attempts = JoinSet::new();
        for (contact, forward, flow) in relayed {
            attempts.spawn(async move {
                // The flow the binding registered over while it is open (RFC 5626 style, as Lync does); else
                // the contact's address: UDP from our socket, TCP over a connection we open.
                let target = match flow.transport() {
                    Transport::Tcp if flow.is_open() => flow,
                    Transport::Tcp => flow.toward(&contact).await.ok_or(RequestError::Closed {
                        peer: flow.remote(),
                    })?,
                    Transport::Udp => flow.toward(&contact).await.unwrap_or(flow),
                };
                target.request(forward, timeout).await
            });
        }
        let mut refusal: Option<Response> = None;
        let mut timed_out = false;
        // Bounded: one turn per relayed copy.
        while let Some(joined) = attempts.join_next().await {
            match joined {
                Ok(Ok(answer)) if (200..300).contains(&answer.status_code.code()) => {
                    attempts.abort_all();
                    let code = answer.status_code.code();
                    let reason = answer.status_code.to_string();
                    let reason = reason
                        .split_once(' ')
                        .map(|(_, r)| r.to_owned())
                        .unwrap_or_default();
                    return message::response(&request, code, &reason);
                }
                Ok(Ok(answer)) => {
                    refusal.get_or_insert(answer);
                }
                Ok(Err(RequestError::Timeout { .. })) => timed_out = true,
                Ok(Err(RequestError::Closed { .. })) | Err(_) => {}
            }
        }
        match refusal {
            Some(answer) => {
                let code = answer.status_code.code();
                let reason = answer.status_code.to_string();
                let reason = reason
                    .split_once(' ')
                    .map(|(_, r)| r.to_owned())
                    .unwrap_or_default();
                message::response(&request, code, &reason)
            }
            None if timed_out => message::response(&request, 408, "Request Timeout"),
            None => message::response(&request, 480, "Temporarily Unavailable"),
        }
    }))
}
