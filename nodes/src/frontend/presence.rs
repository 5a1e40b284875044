//! Presence: PUBLISH (RFC 3903) stores a user's presence document; SUBSCRIBE/NOTIFY (RFC 6665, event `presence`)
//! tells watchers the current document at once and after every change.
//!
//! Each subscription has a bounded queue of full-state notices and one task that sends them as NOTIFYs in order,
//! waiting for each answer. Every NOTIFY carries the full state, so should a watcher fall 64 notices behind, the
//! ones dropped are superseded by the ones kept. Subscriptions are dialog state and not persistent: a client
//! re-subscribes after a failover, as it does in Lync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rsip::Request;
use tokio::sync::mpsc;

use super::server::FrontEnd;
use super::store::{now_unix_ms, Applied, Publication, Write};
use super::watchers::{deliver, Dialog, Presence, Subscription, NOTICES_QUEUED_MAX};
use crate::sip::message::{self, header, param, uri_in, user_of};
use crate::sip::{Peer, Reply};

pub use super::watchers::EVENT;

/// Answers a SUBSCRIBE for the `presence` event.
pub async fn subscribe(fe: &FrontEnd, request: &Request, peer: &Peer) -> Reply {
    let event =
        header(&request.headers, "Event").map(|e| e.split(';').next().unwrap_or_default().trim());
    if event != Some(EVENT) {
        let mut response = message::response(request, 489, "Bad Event");
        message::push(&mut response.headers, "Allow-Events", EVENT);
        return Reply::Response(response);
    }
    let Some(watcher) = FrontEnd::sender(request) else {
        return Reply::Response(message::response(request, 400, "Bad From"));
    };
    if let Err(refusal) = fe.authenticate(request, peer, &watcher) {
        return Reply::Response(refusal);
    }
    let request_uri = request.uri.to_string();
    let Some(presentity) = user_of(&request_uri)
        .map(str::to_owned)
        .filter(|u| fe.config.credentials.knows(u))
    else {
        return Reply::Response(message::response(request, 404, "Not Found"));
    };
    let expires_secs = match header(&request.headers, "Expires").map(|v| v.trim().parse::<u64>()) {
        Some(Ok(secs)) => secs.min(fe.config.expires_max.as_secs()),
        Some(Err(_)) => return Reply::Response(message::response(request, 400, "Bad Expires")),
        None => fe.config.subscription_expires_default.as_secs(),
    };
    let call_id = header(&request.headers, "Call-ID")
        .unwrap_or_default()
        .to_owned();
    let from = header(&request.headers, "From")
        .unwrap_or_default()
        .to_owned();
    let Some(subscriber_tag) = param(&from, "tag").map(str::to_owned) else {
        return Reply::Response(message::response(request, 400, "Missing From Tag"));
    };
    let to_tag = header(&request.headers, "To")
        .and_then(|t| param(t, "tag"))
        .map(str::to_owned);
    let now = now_unix_ms();
    let mut view = match fe.view(&presentity, now).await {
        Ok(view) => view,
        Err(refusal) => return Reply::Response(refusal.response(request)),
    };
    if let Some(pairing) = fe.pairing() {
        // A presentity not at full service in this pool shows as unknown.
        pairing.shape_presence(&presentity, &mut view);
    }
    let existing = fe.presence.find(&presentity, &call_id, &subscriber_tag);
    if to_tag.is_some()
        && existing
            .as_ref()
            .is_none_or(|s| Some(&s.dialog.our_tag) != to_tag.as_ref())
    {
        return Reply::Response(message::response(
            request,
            481,
            "Subscription Does Not Exist",
        ));
    }

    let our_tag = existing
        .as_ref()
        .map(|s| s.dialog.our_tag.clone())
        .unwrap_or_else(message::token);
    let mut response = message::response(request, 200, "OK");
    response
        .headers
        .retain(|h| !message::name(h).eq_ignore_ascii_case("To"));
    let to = header(&request.headers, "To").unwrap_or_default();
    let to = if to_tag.is_some() {
        to.to_owned()
    } else {
        format!("{to};tag={our_tag}")
    };
    message::push(&mut response.headers, "To", to);
    message::push(&mut response.headers, "Expires", expires_secs.to_string());
    message::push(
        &mut response.headers,
        "Contact",
        format!("<sip:{presentity}@{}>", peer.local()),
    );

    if let Some(subscription) = existing {
        if expires_secs == 0 {
            Presence::remove(
                &fe.presence.subscriptions,
                &presentity,
                &call_id,
                &subscriber_tag,
            );
            let notice = subscription.notice(&view, now, Some("timeout"));
            let _ = subscription.queue.try_send(notice);
        } else {
            subscription
                .expires_at_unix_ms
                .store(now + expires_secs * 1000, Ordering::Relaxed);
            let notice = subscription.notice(&view, now, None);
            let _ = subscription.queue.try_send(notice);
        }
        return Reply::Response(response);
    }

    let target = header(&request.headers, "Contact")
        .map(|c| uri_in(c).to_owned())
        .unwrap_or_else(|| uri_in(&from).to_owned());
    let host = message::host_port_of(&request_uri).to_owned();
    let dialog = Dialog {
        presentity_uri: format!("sip:{presentity}@{host}"),
        presentity: presentity.clone(),
        call_id,
        subscriber_tag,
        our_tag,
        subscriber: from,
        target,
        peer: peer.clone(),
    };
    let (queue, notices) = mpsc::channel(NOTICES_QUEUED_MAX);
    let subscription = Arc::new(Subscription {
        dialog: dialog.clone(),
        expires_at_unix_ms: AtomicU64::new(now + expires_secs * 1000),
        queue,
    });
    // The first notice is queued before anyone else can see the subscription, so it goes out first.
    let first = subscription.notice(&view, now, (expires_secs == 0).then_some("timeout"));
    let _ = subscription.queue.try_send(first);
    if expires_secs > 0 {
        fe.presence
            .lock()
            .entry(presentity)
            .or_default()
            .push(subscription);
    } else {
        // A fetch (RFC 6665 4.4.3): one NOTIFY with the state, then nothing.
        drop(subscription);
    }
    let timeout = fe.config.notify_answer_timeout;
    let home = Arc::downgrade(&fe.presence.subscriptions);
    Reply::ResponseThen(response, Box::pin(deliver(dialog, notices, timeout, home)))
}

/// Answers a PUBLISH for the `presence` event.
pub async fn publish(fe: &FrontEnd, request: &Request, peer: &Peer) -> Reply {
    Reply::Response(publish_response(fe, request, peer).await)
}

async fn publish_response(fe: &FrontEnd, request: &Request, peer: &Peer) -> rsip::Response {
    let event =
        header(&request.headers, "Event").map(|e| e.split(';').next().unwrap_or_default().trim());
    if event != Some(EVENT) {
        let mut response = message::response(request, 489, "Bad Event");
        message::push(
            &mut response.headers,
            "Allow-Events",
            "presence, vnd-poolchaos-contacts",
        );
        return response;
    }
    let request_uri = request.uri.to_string();
    let Some(user) = user_of(&request_uri).map(str::to_owned) else {
        return message::response(request, 404, "Not Found");
    };
    if let Err(refusal) = fe.authenticate(request, peer, &user) {
        return refusal;
    }
    if FrontEnd::sender(request).as_deref() != Some(user.as_str()) {
        return message::response(request, 403, "Forbidden (Publish Only Your Own Presence)");
    }
    let expires_secs = match header(&request.headers, "Expires").map(|v| v.trim().parse::<u64>()) {
        Some(Ok(secs)) => secs.min(fe.config.expires_max.as_secs()),
        Some(Err(_)) => return message::response(request, 400, "Bad Expires"),
        None => fe.config.publication_expires_default.as_secs(),
    };
    let now = now_unix_ms();
    let content_type = header(&request.headers, "Content-Type")
        .unwrap_or("application/pidf+xml")
        .to_owned();
    let if_match = header(&request.headers, "SIP-If-Match").map(|t| t.trim().to_owned());
    let etag = message::token();
    let (write, notify) = match if_match {
        None if request.body.is_empty() => return message::response(request, 400, "Missing Body"),
        None if expires_secs == 0 => return message::response(request, 400, "Bad Expires"),
        None => (
            Write::Publish {
                user: user.clone(),
                publication: Publication {
                    etag: etag.clone(),
                    content_type,
                    body: request.body.clone(),
                    expires_at_unix_ms: now + expires_secs * 1000,
                },
                replaces: None,
            },
            true,
        ),
        Some(old) => {
            let view = match fe.view(&user, now).await {
                Ok(view) => view,
                Err(refusal) => return refusal.response(request),
            };
            let Some(known) = view.publication(&old).cloned() else {
                return message::response(request, 412, "Conditional Request Failed");
            };
            if expires_secs == 0 {
                (
                    Write::Unpublish {
                        user: user.clone(),
                        etag: old,
                    },
                    true,
                )
            } else {
                let modified = !request.body.is_empty();
                let (content_type, body) = if modified {
                    (content_type, request.body.clone())
                } else {
                    (known.content_type, known.body)
                };
                (
                    Write::Publish {
                        user: user.clone(),
                        publication: Publication {
                            etag: etag.clone(),
                            content_type,
                            body,
                            expires_at_unix_ms: now + expires_secs * 1000,
                        },
                        replaces: Some(old),
                    },
                    modified,
                )
            }
        }
    };
    let applied = match fe.commit(&user, vec![write], now).await {
        Ok((applied, _)) => applied,
        Err(refusal) => return refusal.response(request),
    };
    let mut response = message::response(request, 200, "OK");
    if applied.first() == Some(&Applied::Published) {
        message::push(&mut response.headers, "SIP-ETag", etag);
    }
    message::push(&mut response.headers, "Expires", expires_secs.to_string());
    if notify {
        fe.changed(&user);
    }
    response
}
