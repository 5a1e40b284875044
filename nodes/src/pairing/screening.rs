//! How this Front End serves a user now, as its pairing says: the decision, the SIP answer it implies for a
//! request, the registration answer, and how a user not at full service here shows.

use super::gate::{self, Decision, RESILIENCY_HEADER};
use super::node::{Fence, Pairing, NOTICE_TIMEOUT};
use super::record::Transition;
use crate::cluster::SIP_PORT;
use crate::frontend::store::UserView;
use crate::sip::message::{self, header, uri_in, user_of};
use crate::sip::Peer;
use rsip::{Request, Response};
use std::time::{Duration, Instant};

impl Pairing {
    /// How this pool serves `user` now.
    pub fn decide(&self, user: &str) -> Decision {
        match self.homes.get(user) {
            Some(home) => self.decide_for_home(home),
            None => Decision::Other,
        }
    }

    /// How this pool serves the users homed on pool `home` now (the answer is the same for each of them).
    pub(super) fn decide_for_home(&self, home: &str) -> Decision {
        let inner = self.lock();
        let now = Instant::now();
        if home == self.pool {
            let pair = self.pair.as_deref().unwrap_or_default();
            return match inner.fence {
                Fence::Fenced => Decision::Redirect {
                    pool: pair.to_owned(),
                    reason: format!("pool {} is failed over to {pair}", self.pool),
                },
                Fence::Unknown => Decision::Unavailable {
                    reason: format!("waiting for pair pool {pair} to say whether it holds this pool failed over"),
                    retry_after_secs: 1,
                },
                Fence::Open if !inner.restored => Decision::Unavailable {
                    reason: "reloading users from the Back End".into(),
                    retry_after_secs: 1,
                },
                Fence::Open => Decision::Home,
            };
        }
        if Some(home) != self.pair.as_deref() {
            return Decision::Other;
        }
        if !inner.record_loaded {
            return Decision::Unavailable {
                reason: "reading the pairing record from the Back End".into(),
                retry_after_secs: 1,
            };
        }
        match inner.record.transition {
            Some(Transition::FailingOver) => {
                return Decision::Unavailable {
                    reason: format!("pool {home} is failing over to {}", self.pool),
                    retry_after_secs: 1,
                }
            }
            Some(Transition::FailingBack) => {
                return Decision::Unavailable {
                    reason: format!("pool {home} is failing back from {}", self.pool),
                    retry_after_secs: 1,
                }
            }
            None => {}
        }
        if inner.record.pair_failed_over {
            return Decision::Backup { resiliency: false };
        }
        if inner.resiliency {
            return Decision::Backup { resiliency: true };
        }
        if inner.watch.up(now) {
            return Decision::Redirect {
                pool: home.to_owned(),
                reason: format!("home pool {home} is up"),
            };
        }
        let missed = inner.watch.missed(now);
        let left = self.failover_interval().saturating_sub(missed);
        Decision::Unavailable {
            reason: format!(
                "home pool {home} unreachable for {} ms; the backup registrar accepts its users after {} ms",
                missed.as_millis(),
                self.failover_interval().as_millis()
            ),
            retry_after_secs: left.as_secs().max(1),
        }
    }

    /// The answer `request` gets instead of being served, if any.
    pub fn screen(&self, request: &Request) -> Option<Response> {
        let user = gate::subject(request)?;
        let decision = self.decide(&user);
        // A client is sent to the pool by its name, as clients reach it: the route this server takes to that
        // pool (through the fault proxy when a link says so) is no address for a client.
        gate::screen(request, &decision, |p| format!("{p}:{SIP_PORT}"))
    }

    /// Adds the resiliency header to a REGISTER's `200`, and tells a client newly registered in resiliency mode
    /// with a NOTIFY on its connection.
    pub fn registered(&self, request: &Request, peer: &Peer, mut response: Response) -> Response {
        if response.status_code.code() != 200 || self.pair.is_none() {
            return response;
        }
        let Some(user) = header(&request.headers, "To")
            .and_then(|t| user_of(uri_in(t)))
            .map(str::to_owned)
        else {
            return response;
        };
        let resiliency = self.decide(&user) == Decision::Backup { resiliency: true };
        // The Front End may have said `on` already (its Back End's outage): either source puts the user in
        // resiliency mode, and the client reads one header.
        let said_on =
            header(&response.headers, RESILIENCY_HEADER).is_some_and(|v| v.trim() == "on");
        response
            .headers
            .retain(|h| !message::name(h).eq_ignore_ascii_case(RESILIENCY_HEADER));
        message::push(
            &mut response.headers,
            RESILIENCY_HEADER,
            if resiliency || said_on { "on" } else { "off" },
        );
        let added =
            header(&response.headers, "presence-state").is_some_and(|v| v.contains("added"));
        let contact = header(&request.headers, "Contact")
            .filter(|c| *c != "*")
            .map(|c| uri_in(c).to_owned());
        if let (true, true, Some(contact)) = (resiliency, added, contact) {
            let home = self.homes.get(&user).cloned().unwrap_or_default();
            let (peer, body) = (peer.clone(), gate::notice_body(true, &home, None));
            tokio::spawn(async move {
                // After the 200, which the transport writes when this handler returns.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(notify) = gate::notice(&user, &contact, body) {
                    let _ = peer.request(notify, NOTICE_TIMEOUT).await;
                }
            });
        }
        response
    }

    /// A user in resiliency mode here has no persistent state to read: presence unknown, no contacts. (Every
    /// read of a user's state goes through this: a failback or failover copies what it gives.)
    pub fn shape_view(&self, user: &str, view: &mut UserView) {
        if self.pair.is_some() && matches!(self.decide(user), Decision::Backup { resiliency: true })
        {
            gate::unknown_presence(view, user);
        }
    }

    /// What watchers here are told of `user`: presence unknown unless this pool serves the user at full service
    /// (see [`gate::shows_unknown_presence`]). Only for presence notices, never for a read that is copied.
    pub fn shape_presence(&self, user: &str, view: &mut UserView) {
        if self.pair.is_some() && gate::shows_unknown_presence(&self.decide(user)) {
            gate::unknown_presence(view, user);
        }
    }
}
