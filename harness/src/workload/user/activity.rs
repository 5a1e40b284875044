//! What a registered user does: add its contact and watch that contact's presence once signed in, publish its
//! own presence, and change or read its contact list (a PUBLISH of the pool's contact-list event to itself).

use std::collections::HashMap;

use tokio::net::tcp::OwnedWriteHalf;

use super::life::{Life, UserSpec};
use super::request::{new_request, send_tracked, Kind, Outstanding};
use crate::history::{Op, Recorder};
use crate::workload::sip;
use crate::workload::Settings;

/// Once registered: add the contact (first time only), watch its presence, publish our own.
pub(super) async fn after_register(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    if let Some(contact) = spec.contact.clone() {
        if !life.contact_added || life.signed_in_resiliency {
            // Added once served by a pool that may change it; tried again at every sign-in in resiliency mode.
            life.contact_added = !life.signed_in_resiliency;
            let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
            start(
                spec,
                write,
                recorder,
                outstanding,
                life,
                settings,
                from_tag,
                Kind::ContactAdd,
                Op::ContactAdd {
                    contact: contact.clone(),
                },
                body,
            )
            .await?;
        }
        let mut req = new_request(
            spec,
            "SUBSCRIBE",
            &sip::aor(&contact),
            &sip::aor(&contact),
            life,
            from_tag,
        );
        req.headers.push(("Event".into(), "presence".into()));
        req.headers.push(("Expires".into(), "3600".into()));
        req.headers.push((
            "Contact".into(),
            format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name),
        ));
        let op = Op::Subscribe { target: contact };
        send_tracked(
            spec,
            write,
            recorder,
            outstanding,
            settings,
            Kind::Subscribe,
            op,
            req,
            false,
        )
        .await?;
    }
    publish(spec, write, recorder, outstanding, life, settings, from_tag).await
}

pub(super) async fn publish(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    life.publish_seq += 1;
    let state = format!("online#{}", life.publish_seq);
    let me = sip::aor(&spec.name);
    let mut req = new_request(spec, "PUBLISH", &me, &me, life, from_tag);
    req.headers.push(("Event".into(), "presence".into()));
    req.headers.push(("Expires".into(), "3600".into()));
    req.headers
        .push(("Content-Type".into(), "application/pidf+xml".into()));
    req.body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{me}\"><tuple id=\"t1\"><status><basic>open</basic></status><note>{state}</note></tuple></presence>"
    )
    .into_bytes();
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        Kind::Publish,
        Op::Publish {
            state,
            granted_s: None,
        },
        req,
        false,
    )
    .await
}

/// Starts a contact-list operation: PUBLISH `Event: vnd-poolchaos-contacts` to oneself.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
    kind: Kind,
    op: Op,
    body: Vec<u8>,
) -> Result<(), String> {
    let me = sip::aor(&spec.name);
    let mut req = new_request(spec, "PUBLISH", &me, &me, life, from_tag);
    req.headers
        .push(("Event".into(), "vnd-poolchaos-contacts".into()));
    req.headers
        .push(("Content-Type".into(), "text/plain".into()));
    req.body = body;
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        kind,
        op,
        req,
        false,
    )
    .await
}
