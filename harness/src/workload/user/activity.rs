//! What a registered user does: once signed in, add its contact and watch that contact's presence; at the
//! workload's rates, publish its own presence, send IMs, place calls and add new contacts; at the end, read its
//! contact list back. A contact-list change or read is a PUBLISH of the pool's contact-list event to oneself.
//! The session decides when; this module builds and sends each request, as methods of [`Session`], what one
//! connection's session acts on.

use std::collections::HashMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use super::request::{new_request, send, Kind, Outstanding};
use super::state::{Life, UserSpec};
use super::wire::{Resend, Writer};
use crate::history::{Op, Recorder};
use crate::workload::sip::{self, Message};
use crate::workload::Settings;

/// What one connection's session acts on: the user, the connection's writing half, the requests awaiting their
/// answers, the user's life across sessions, and where operations are recorded and how they are paced. The
/// activities are its methods; the session's loop reads and writes its fields directly.
pub(super) struct Session<'a> {
    pub(super) spec: &'a UserSpec,
    pub(super) write: Writer,
    pub(super) recorder: &'a Recorder,
    /// The requests sent and not answered yet, by CSeq.
    pub(super) outstanding: HashMap<u32, Outstanding>,
    pub(super) life: &'a mut Life,
    pub(super) settings: &'a Settings,
    /// The From tag of every request of the session.
    pub(super) from_tag: String,
    /// The ACK sent for each call's `200`, by the INVITE's CSeq: sent again when the `200` comes again (UDP).
    pub(super) acks: HashMap<u32, Message>,
}

impl Session<'_> {
    /// Records `op` as invoked, sends `req` and tracks it as `kind` until its answer or its deadline.
    pub(super) async fn send_tracked(
        &mut self,
        kind: Kind,
        op: Op,
        req: Message,
    ) -> Result<(), String> {
        let pending = self
            .recorder
            .invoke(&self.spec.name, op.clone())
            .map_err(|e| e.to_string())?;
        if let Err(e) = send(&mut self.write, &req).await {
            let _ = pending.fail(format!("write failed: {e}"));
            return Err("connection closed".into());
        }
        let timeout = match kind {
            // The Front End answers an IM only after the recipient did (or 408 after 10 s).
            Kind::Im => self.settings.request_timeout + Duration::from_secs(10),
            _ => self.settings.request_timeout,
        };
        self.outstanding.insert(
            req.cseq().unwrap_or_default(),
            Outstanding {
                kind,
                pending,
                pending_op: op,
                deadline: Instant::now() + timeout,
                resend: Resend::first(self.write.transport, &req),
                request: req,
                authorized: false,
            },
        );
        Ok(())
    }

    /// The keep-alive of a UDP session: an OPTIONS to the domain, outside any dialog and not tracked (its answer,
    /// like any datagram, shows the server is there).
    pub(super) fn keep_alive_request(&mut self) -> Message {
        let domain = sip::domain_uri();
        self.new_request("OPTIONS", &domain, &domain)
    }

    /// A new request of the session (next CSeq, the session's From tag).
    fn new_request(&mut self, method: &str, uri: &str, to: &str) -> Message {
        new_request(self.spec, method, uri, to, self.life, &self.from_tag)
    }

    /// Once registered: add the contact (first time only), watch its presence, publish our own.
    pub(super) async fn after_register(&mut self) -> Result<(), String> {
        if !self.settings.contacts || !self.settings.presence {
            return self.publish().await;
        }
        if let Some(contact) = self.spec.contact.clone() {
            if !self.life.contact_added || self.life.signed_in_resiliency {
                // Added once served by a pool that may change it; tried again at every sign-in in resiliency mode.
                self.life.contact_added = !self.life.signed_in_resiliency;
                let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
                let op = Op::ContactAdd {
                    contact: contact.clone(),
                };
                self.contact_list_op(Kind::ContactAdd, op, body).await?;
            }
            let mut req = self.new_request("SUBSCRIBE", &sip::aor(&contact), &sip::aor(&contact));
            req.headers.push(("Event".into(), "presence".into()));
            req.headers.push(("Expires".into(), "3600".into()));
            req.headers.push((
                "Contact".into(),
                sip::contact(&self.spec.name, self.spec.transport),
            ));
            let op = Op::Subscribe { target: contact };
            self.send_tracked(Kind::Subscribe, op, req).await?;
        }
        self.publish().await
    }

    pub(super) async fn publish(&mut self) -> Result<(), String> {
        if !self.settings.presence {
            return Ok(());
        }
        self.life.publish_seq += 1;
        let state = format!("online#{}", self.life.publish_seq);
        let me = sip::aor(&self.spec.name);
        let mut req = self.new_request("PUBLISH", &me, &me);
        req.headers.push(("Event".into(), "presence".into()));
        req.headers.push(("Expires".into(), "3600".into()));
        req.headers
            .push(("Content-Type".into(), "application/pidf+xml".into()));
        req.body = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{me}\"><tuple id=\"t1\"><status><basic>open</basic></status><note>{state}</note></tuple></presence>"
        )
        .into_bytes();
        let op = Op::Publish {
            state,
            granted_s: None,
        };
        self.send_tracked(Kind::Publish, op, req).await
    }

    /// Sends one IM to a target drawn from the user's own random stream (none without targets).
    pub(super) async fn send_im(&mut self) -> Result<(), String> {
        let Some(to) = self.spec.im_targets.choose(&mut self.life.rng).cloned() else {
            return Ok(());
        };
        self.life.im_seq += 1;
        let seq = self.life.im_seq;
        let body = format!("im {} {seq}", self.spec.name).into_bytes();
        let op = Op::ImSend {
            to: to.clone(),
            seq,
        };
        let mut req = self.new_request("MESSAGE", &sip::aor(&to), &sip::aor(&to));
        req.headers
            .push(("Content-Type".into(), "text/plain".into()));
        req.body = body;
        self.send_tracked(Kind::Im, op, req).await
    }

    /// Calls a telephone number drawn from the user's own random stream; the gateway hangs up after `call_hold`.
    pub(super) async fn place_call(&mut self) -> Result<(), String> {
        let number = format!("+1555{:07}", self.life.rng.gen_range(0..10_000_000u32));
        let uri = format!("sip:{number}@{};user=phone", sip::DOMAIN);
        let mut req = self.new_request("INVITE", &uri, &uri);
        req.headers.push((
            "Contact".into(),
            sip::contact(&self.spec.name, self.spec.transport),
        ));
        req.headers.push((
            "X-Hold-Ms".into(),
            self.settings.call_hold.as_millis().to_string(),
        ));
        let call_id = req.header("Call-ID").unwrap_or_default().to_string();
        let op = Op::CallSetup {
            to: number,
            call_id,
        };
        self.send_tracked(Kind::Call, op, req).await
    }

    /// Adds a new contact to the user's list (`<user>-n<k>`, never added before), unless signed in in resiliency
    /// mode.
    pub(super) async fn add_contact(&mut self) -> Result<(), String> {
        // Not in resiliency mode: persistent changes are refused there, by design.
        if self.life.signed_in_resiliency {
            return Ok(());
        }
        self.life.contacts_added += 1;
        let contact = format!("{}-n{}", self.spec.name, self.life.contacts_added);
        let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
        let op = Op::ContactAdd { contact };
        self.contact_list_op(Kind::ContactAdd, op, body).await
    }

    /// Reads the user's contact list back, as the run's final read.
    pub(super) async fn read_contacts(&mut self) -> Result<(), String> {
        if !self.settings.contacts {
            return Ok(());
        }
        let body = b"list\r\n".to_vec();
        let op = Op::ContactList { contacts: None };
        self.contact_list_op(Kind::ContactList, op, body).await
    }

    /// Starts a contact-list operation: PUBLISH `Event: vnd-poolchaos-contacts` to oneself.
    async fn contact_list_op(&mut self, kind: Kind, op: Op, body: Vec<u8>) -> Result<(), String> {
        let me = sip::aor(&self.spec.name);
        let mut req = self.new_request("PUBLISH", &me, &me);
        req.headers
            .push(("Event".into(), "vnd-poolchaos-contacts".into()));
        req.headers
            .push(("Content-Type".into(), "text/plain".into()));
        req.body = body;
        self.send_tracked(kind, op, req).await
    }
}
