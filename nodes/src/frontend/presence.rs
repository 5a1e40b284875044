//! Presence: PUBLISH (RFC 3903) stores a user's presence document; SUBSCRIBE/NOTIFY (RFC 6665, event `presence`)
//! tells watchers the current document at once and after every change.
//!
//! Each subscription has a bounded queue of full-state notices and one task that sends them as NOTIFYs in order,
//! waiting for each answer. Every NOTIFY carries the full state, so should a watcher fall 64 notices behind, the
//! ones dropped are superseded by the ones kept. Subscriptions are dialog state and not persistent: a client
//! re-subscribes after a failover, as it does in Lync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rsip::{Method, Request};
use tokio::sync::mpsc;

use super::server::FrontEnd;
use super::store::{now_unix_ms, Applied, Publication, UserView, Write};
use crate::sip::message::{self, header, param, uri_in, user_of};
use crate::sip::{Peer, Reply};

/// The event package name.
pub const EVENT: &str = "presence";
/// Full-state notices one subscription may have queued.
const NOTICES_QUEUED_MAX: usize = 64;

type Subscriptions = HashMap<String, Vec<Arc<Subscription>>>;

/// Presence subscriptions by presentity (user).
#[derive(Default)]
pub struct Presence {
    subscriptions: Arc<Mutex<Subscriptions>>,
}

/// One watcher's subscription to one presentity.
pub struct Subscription {
    dialog: Dialog,
    expires_at_unix_ms: AtomicU64,
    queue: mpsc::Sender<Notice>,
}

/// What the NOTIFYs of a subscription need: the dialog and where to send.
#[derive(Clone)]
struct Dialog {
    presentity: String,
    presentity_uri: String,
    call_id: String,
    subscriber_tag: String,
    our_tag: String,
    /// The SUBSCRIBE's From value, which becomes the NOTIFY's To.
    subscriber: String,
    /// The subscriber's Contact URI: the NOTIFY's Request-URI.
    target: String,
    peer: Peer,
}

/// One full-state NOTIFY to send.
struct Notice {
    subscription_state: String,
    content_type: String,
    body: Vec<u8>,
}

impl Presence {
    /// Number of live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every watcher of `user` its current state (standalone: the state is in this Front End's store).
    pub fn changed(&self, fe: &FrontEnd, user: &str) {
        if let Some(notify) = self.watchers_of(user) {
            let now = now_unix_ms();
            notify(&fe.store.view(user, now), now);
        }
    }

    /// What tells the current watchers of `user` a state read later (pool mode: read at the group's primary);
    /// `None` without watchers, so nothing is read for nobody.
    pub fn watchers_of(&self, user: &str) -> Option<impl Fn(&UserView, u64) + Send + 'static> {
        let watchers = self.lock().get(user).cloned().unwrap_or_default();
        if watchers.is_empty() {
            return None;
        }
        Some(move |view: &UserView, now: u64| {
            for subscription in &watchers {
                let notice = subscription.notice(view, now, None);
                // Full: the queued notices already lag; the newest state will follow them.
                let _ = subscription.queue.try_send(notice);
            }
        })
    }

    /// Ends the subscriptions that expired, each with a final NOTIFY.
    pub fn expire(&self, now_unix_ms: u64) {
        let mut ended = Vec::new();
        self.lock().retain(|_, subscriptions| {
            subscriptions.retain(|s| {
                let live = s.expires_at_unix_ms.load(Ordering::Relaxed) > now_unix_ms;
                if !live {
                    ended.push(s.clone());
                }
                live
            });
            !subscriptions.is_empty()
        });
        for subscription in ended {
            let _ = subscription.queue.try_send(Notice {
                subscription_state: "terminated;reason=timeout".into(),
                content_type: String::new(),
                body: Vec::new(),
            });
        }
    }

    fn find(
        &self,
        presentity: &str,
        call_id: &str,
        subscriber_tag: &str,
    ) -> Option<Arc<Subscription>> {
        self.lock()
            .get(presentity)?
            .iter()
            .find(|s| s.dialog.call_id == call_id && s.dialog.subscriber_tag == subscriber_tag)
            .cloned()
    }

    fn remove(
        subscriptions: &Mutex<Subscriptions>,
        presentity: &str,
        call_id: &str,
        subscriber_tag: &str,
    ) {
        let mut map = subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = map.get_mut(presentity) {
            list.retain(|s| {
                !(s.dialog.call_id == call_id && s.dialog.subscriber_tag == subscriber_tag)
            });
            if list.is_empty() {
                map.remove(presentity);
            }
        }
    }
}

impl Subscription {
    fn notice(&self, view: &UserView, now: u64, terminated: Option<&str>) -> Notice {
        let (content_type, body) = document(view, &self.dialog.presentity_uri);
        let subscription_state = match terminated {
            Some(reason) => format!("terminated;reason={reason}"),
            None => {
                let remaining = self
                    .expires_at_unix_ms
                    .load(Ordering::Relaxed)
                    .saturating_sub(now)
                    .div_ceil(1000);
                format!("active;expires={remaining}")
            }
        };
        Notice {
            subscription_state,
            content_type,
            body,
        }
    }
}

/// The presentity's current document: its latest publication, else a PIDF saying open when it has a binding.
fn document(view: &UserView, presentity_uri: &str) -> (String, Vec<u8>) {
    if let Some(publication) = view.presence() {
        return (publication.content_type.clone(), publication.body.clone());
    }
    let basic = if view.bindings.is_empty() {
        "closed"
    } else {
        "open"
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{presentity_uri}\">\r\n\
         <tuple id=\"registrar\"><status><basic>{basic}</basic></status></tuple>\r\n\
         </presence>\r\n"
    );
    ("application/pidf+xml".into(), body.into_bytes())
}

/// Sends a subscription's notices as NOTIFYs, one at a time, until the queue closes, a terminating notice went
/// out, or the watcher stops answering (then the subscription is dropped).
async fn deliver(
    dialog: Dialog,
    mut queue: mpsc::Receiver<Notice>,
    timeout: Duration,
    home: Weak<Mutex<Subscriptions>>,
) {
    let mut cseq: u32 = 1;
    // Bounded: ends when the queue's sender is dropped with the subscription.
    while let Some(notice) = queue.recv().await {
        let terminated = notice.subscription_state.starts_with("terminated");
        let mut headers = vec![
            (
                "From".to_owned(),
                format!("<{}>;tag={}", dialog.presentity_uri, dialog.our_tag),
            ),
            ("To".to_owned(), dialog.subscriber.clone()),
            ("Call-ID".to_owned(), dialog.call_id.clone()),
            ("CSeq".to_owned(), format!("{cseq} NOTIFY")),
            ("Max-Forwards".to_owned(), "70".to_owned()),
            (
                "Contact".to_owned(),
                format!("<sip:{}@{}>", dialog.presentity, dialog.peer.local()),
            ),
            ("Event".to_owned(), EVENT.to_owned()),
            ("Subscription-State".to_owned(), notice.subscription_state),
        ];
        if !notice.body.is_empty() {
            headers.push(("Content-Type".to_owned(), notice.content_type));
        }
        cseq += 1;
        let answered = match message::request(Method::Notify, &dialog.target, headers, notice.body)
        {
            Ok(notify) => {
                matches!(dialog.peer.request(notify, timeout).await, Ok(r) if r.status_code.code() < 300)
            }
            Err(_) => false,
        };
        if terminated {
            return;
        }
        if !answered {
            if let Some(subscriptions) = home.upgrade() {
                Presence::remove(
                    &subscriptions,
                    &dialog.presentity,
                    &dialog.call_id,
                    &dialog.subscriber_tag,
                );
            }
            return;
        }
    }
}

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
