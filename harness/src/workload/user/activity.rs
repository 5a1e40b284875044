//! What a registered user does: once signed in, add its contact and watch that contact's presence; at the
//! workload's rates, publish its own presence, send IMs, place calls and add new contacts; at the end, read its
//! contact list back. A contact-list change or read is a PUBLISH of the pool's contact-list event to oneself.
//! The session decides when; this module builds and sends each request.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::net::tcp::OwnedWriteHalf;

use super::request::{new_request, send_tracked, Kind, Outstanding};
use super::state::{Life, UserSpec};
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
            contact_list_op(
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

/// Sends one IM to a target drawn from the user's own random stream (none without targets).
pub(super) async fn send_im(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    let Some(to) = spec.im_targets.choose(&mut life.rng).cloned() else {
        return Ok(());
    };
    life.im_seq += 1;
    let seq = life.im_seq;
    let body = format!("im {} {seq}", spec.name).into_bytes();
    let op = Op::ImSend {
        to: to.clone(),
        seq,
    };
    let mut req = new_request(
        spec,
        "MESSAGE",
        &sip::aor(&to),
        &sip::aor(&to),
        life,
        from_tag,
    );
    req.headers
        .push(("Content-Type".into(), "text/plain".into()));
    req.body = body;
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        Kind::Im,
        op,
        req,
        false,
    )
    .await
}

/// Calls a telephone number drawn from the user's own random stream; the gateway hangs up after `call_hold`.
pub(super) async fn place_call(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    let number = format!("+1555{:07}", life.rng.gen_range(0..10_000_000u32));
    let uri = format!("sip:{number}@{};user=phone", sip::DOMAIN);
    let mut req = new_request(spec, "INVITE", &uri, &uri, life, from_tag);
    req.headers.push((
        "Contact".into(),
        format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name),
    ));
    req.headers.push((
        "X-Hold-Ms".into(),
        settings.call_hold.as_millis().to_string(),
    ));
    let call_id = req.header("Call-ID").unwrap_or_default().to_string();
    let op = Op::CallSetup {
        to: number,
        call_id,
    };
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        Kind::Call,
        op,
        req,
        false,
    )
    .await
}

/// Adds a new contact to the user's list (`<user>-n<k>`, never added before), unless signed in in resiliency
/// mode.
pub(super) async fn add_contact(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    // Not in resiliency mode: persistent changes are refused there, by design.
    if life.signed_in_resiliency {
        return Ok(());
    }
    life.contacts_added += 1;
    let contact = format!("{}-n{}", spec.name, life.contacts_added);
    let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
    let op = Op::ContactAdd { contact };
    contact_list_op(
        spec,
        write,
        recorder,
        outstanding,
        life,
        settings,
        from_tag,
        Kind::ContactAdd,
        op,
        body,
    )
    .await
}

/// Reads the user's contact list back, as the run's final read.
pub(super) async fn read_contacts(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    let body = b"list\r\n".to_vec();
    contact_list_op(
        spec,
        write,
        recorder,
        outstanding,
        life,
        settings,
        from_tag,
        Kind::ContactList,
        Op::ContactList { contacts: None },
        body,
    )
    .await
}

/// Starts a contact-list operation: PUBLISH `Event: vnd-poolchaos-contacts` to oneself.
#[allow(clippy::too_many_arguments)]
async fn contact_list_op(
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
