//! The registrar: REGISTER with digest authentication, several bindings per user, `Expires`, de-registration, and
//! the `presence-state` header that tells a client whether the server still knew its binding.

use rsip::{Request, Response};

use super::pool::placement::group_name;
use super::server::{FrontEnd, Home};
use super::store::{now_unix_ms, Applied, Binding, RegisterAction, Write};
use crate::sip::message::{self, header, headers_all, param, uri_in, user_of};
use crate::sip::{Peer, Transport};

/// Answers a REGISTER.
/// The `Server` header of a REGISTER's `200`: the product, and in a pool the node that answered and the user's
/// routing group (`poolnode/0.1.0 (fe1-2; rg-3)`), so a client (and the harness) knows whose user it is.
pub fn server_product(fe: &FrontEnd, user: &str) -> String {
    let product = concat!("poolnode/", env!("CARGO_PKG_VERSION"));
    match &fe.home {
        Home::Standalone => product.to_string(),
        Home::Pool(pool) => format!(
            "{product} ({}; {})",
            pool.node(),
            group_name(pool.group_of(user))
        ),
    }
}

pub async fn register(fe: &FrontEnd, request: &Request, peer: &Peer) -> Response {
    let Some(user) = header(&request.headers, "To")
        .and_then(|to| user_of(uri_in(to)))
        .map(str::to_owned)
    else {
        return message::response(request, 400, "Bad To (No User)");
    };
    if let Err(refusal) = fe.authenticate(request, peer, &user) {
        return refusal;
    }
    if !fe.config.credentials.knows(&user) {
        return message::response(request, 404, "Not Found");
    }
    let now = now_unix_ms();
    let contacts = headers_all(&request.headers, "Contact");
    let expires_header = match header(&request.headers, "Expires").map(|v| v.trim().parse::<u64>())
    {
        Some(Ok(secs)) => Some(secs),
        Some(Err(_)) => return message::response(request, 400, "Bad Expires"),
        None => None,
    };
    let call_id = header(&request.headers, "Call-ID")
        .unwrap_or_default()
        .to_owned();
    let cseq = message::cseq(&request.headers)
        .map(|(n, _)| n)
        .unwrap_or_default();

    let mut writes = Vec::new();
    if contacts.iter().any(|c| c == "*") {
        // RFC 3261 10.3 step 6: the wildcard only with Expires: 0 and alone.
        if contacts.len() != 1 || expires_header != Some(0) {
            return message::response(request, 400, "Bad Wildcard Contact");
        }
        writes.push(Write::UnbindAll { user: user.clone() });
    }
    for contact in contacts.iter().filter(|c| *c != "*") {
        let uri = uri_in(contact).to_owned();
        if !uri.contains(':') {
            return message::response(request, 400, "Bad Contact");
        }
        let asked = match param(contact, "expires").map(|v| v.parse::<u64>()) {
            Some(Ok(secs)) => secs,
            Some(Err(_)) => return message::response(request, 400, "Bad Contact Expires"),
            None => expires_header.unwrap_or(fe.config.expires_default.as_secs()),
        };
        if asked == 0 {
            writes.push(Write::Unbind {
                user: user.clone(),
                contact: uri,
            });
            continue;
        }
        if asked < fe.config.expires_min.as_secs() {
            let mut response = message::response(request, 423, "Interval Too Brief");
            message::push(
                &mut response.headers,
                "Min-Expires",
                fe.config.expires_min.as_secs().to_string(),
            );
            return response;
        }
        let secs = asked.min(fe.config.expires_max.as_secs());
        writes.push(Write::Bind {
            user: user.clone(),
            binding: Binding {
                contact: uri,
                call_id: call_id.clone(),
                cseq,
                expires_at_unix_ms: now + secs * 1000,
                front_end: fe.node_name(),
            },
        });
    }

    let (applied, view) = match fe.commit(&user, writes.clone(), now).await {
        Ok(done) => done,
        Err(refusal) => return refusal.response(request),
    };
    let mut action = None;
    let mut changed = false;
    for (applied, write) in applied.into_iter().zip(&writes) {
        match (applied, write) {
            (Applied::Bound(bound), Write::Bind { binding, .. }) => {
                fe.locations.set(&user, &binding.contact, peer);
                changed |= bound == RegisterAction::Added;
                // One REGISTER may carry several contacts: any new binding means the client must treat its
                // registration as new.
                action = Some(match (action, bound) {
                    (Some(RegisterAction::Added), _) | (_, RegisterAction::Added) => {
                        RegisterAction::Added
                    }
                    _ => RegisterAction::Refreshed,
                });
            }
            (Applied::Unbound(removed), Write::Unbind { contact, .. }) => {
                fe.locations.remove(&user, contact);
                changed |= removed > 0;
            }
            (Applied::Unbound(removed), _) => {
                fe.locations.remove_all(&user);
                changed |= removed > 0;
            }
            _ => {}
        }
    }

    let mut response = message::response(request, 200, "OK");
    message::push(&mut response.headers, "Server", server_product(fe, &user));
    for binding in view.bindings {
        let remaining_secs = binding
            .expires_at_unix_ms
            .saturating_sub(now)
            .div_ceil(1000);
        message::push(
            &mut response.headers,
            "Contact",
            format!("<{}>;expires={remaining_secs}", binding.contact),
        );
    }
    if let Some(action) = action {
        message::push(
            &mut response.headers,
            "presence-state",
            format!("register-action=\"{}\"", action.as_str()),
        );
        if peer.transport() == Transport::Tcp {
            message::push(
                &mut response.headers,
                "ms-keep-alive",
                format!(
                    "UAS; tcp=no; hop-hop=yes; end-end=no; timeout={}",
                    fe.config.keep_alive.as_secs()
                ),
            );
        }
    }
    if changed {
        fe.changed(&user);
    }
    response
}
