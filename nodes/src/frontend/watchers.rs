//! [`Presence`]: the presence subscriptions a Front End holds, by presentity, each with its bounded queue of
//! full-state notices and the task that sends them as NOTIFYs in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rsip::Method;
use tokio::sync::mpsc;

use super::store::{now_unix_ms, UserStore, UserView};
use crate::sip::message;
use crate::sip::Peer;

/// The event package name.
pub const EVENT: &str = "presence";
/// Full-state notices one subscription may have queued.
pub(super) const NOTICES_QUEUED_MAX: usize = 64;

pub(super) type Subscriptions = HashMap<String, Vec<Arc<Subscription>>>;

/// Presence subscriptions by presentity (user).
#[derive(Default)]
pub struct Presence {
    pub(super) subscriptions: Arc<Mutex<Subscriptions>>,
}

/// One watcher's subscription to one presentity.
pub struct Subscription {
    pub(super) dialog: Dialog,
    pub(super) expires_at_unix_ms: AtomicU64,
    pub(super) queue: mpsc::Sender<Notice>,
}

/// What the NOTIFYs of a subscription need: the dialog and where to send.
#[derive(Clone)]
pub(super) struct Dialog {
    pub(super) presentity: String,
    pub(super) presentity_uri: String,
    pub(super) call_id: String,
    pub(super) subscriber_tag: String,
    pub(super) our_tag: String,
    /// The SUBSCRIBE's From value, which becomes the NOTIFY's To.
    pub(super) subscriber: String,
    /// The subscriber's Contact URI: the NOTIFY's Request-URI.
    pub(super) target: String,
    pub(super) peer: Peer,
}

/// One full-state NOTIFY to send.
pub(super) struct Notice {
    pub(super) subscription_state: String,
    pub(super) content_type: String,
    pub(super) body: Vec<u8>,
}

impl Presence {
    /// Number of live subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every watcher of `user` its current state (standalone: the state is in this Front End's store).
    pub fn changed(&self, store: &UserStore, user: &str) {
        if let Some(notify) = self.watchers_of(user) {
            let now = now_unix_ms();
            notify(&store.view(user, now), now);
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

    pub(super) fn find(
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

    pub(super) fn remove(
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
    pub(super) fn notice(&self, view: &UserView, now: u64, terminated: Option<&str>) -> Notice {
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
pub(super) async fn deliver(
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
