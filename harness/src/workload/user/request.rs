//! Requests: building them (Call-ID, CSeq, Contact and Expires of a REGISTER, digest credentials), sending them,
//! and tracking each one in flight ([`Outstanding`]: its kind, its operation in the history, its deadline) until
//! the session reads its answer.

use rand::Rng;
use tokio::time::Instant;

use super::state::{Life, UserSpec};
use super::wire::{Resend, Writer};
use crate::history::{Op, Pending};
use crate::workload::sip::{self, Challenge, Message};
use crate::workload::Settings;

/// What the user is doing with each outstanding request.
pub(super) enum Kind {
    Register,
    Refresh,
    /// REGISTER `Expires: 0`: the user signs off.
    Unregister,
    Im,
    Publish,
    Subscribe,
    ContactAdd,
    ContactList,
    /// An INVITE to a telephone number, answered by the PSTN gateway through Mediation.
    Call,
}

pub(super) struct Outstanding {
    pub(super) kind: Kind,
    pub(super) pending: Pending,
    /// The operation as invoked (its value is completed from the answer).
    pub(super) pending_op: Op,
    pub(super) deadline: Instant,
    /// The request as sent, to send again with credentials after a 401.
    pub(super) request: Message,
    pub(super) authorized: bool,
    /// When the request goes again, over UDP (`None` over TCP, or once an INVITE was answered provisionally).
    pub(super) resend: Option<Resend>,
}

pub(super) fn new_request(
    spec: &UserSpec,
    method: &str,
    uri: &str,
    to: &str,
    life: &mut Life,
    from_tag: &str,
) -> Message {
    life.cseq += 1;
    let call_id = format!(
        "{}-{}-{}",
        spec.name,
        method.to_ascii_lowercase(),
        life.rng.gen::<u64>()
    );
    sip::request(
        method,
        uri,
        &spec.name,
        to,
        &call_id,
        from_tag,
        life.cseq,
        &format!("{:x}", life.rng.gen::<u64>()),
        spec.transport,
    )
}

pub(super) fn register_request(
    spec: &UserSpec,
    uri: &str,
    call_id: &str,
    from_tag: &str,
    life: &mut Life,
    settings: &Settings,
) -> Message {
    life.cseq += 1;
    let me = sip::aor(&spec.name);
    let mut req = sip::request(
        "REGISTER",
        uri,
        &spec.name,
        &me,
        call_id,
        from_tag,
        life.cseq,
        &format!("{:x}", life.rng.gen::<u64>()),
        spec.transport,
    );
    req.headers
        .push(("Contact".into(), sip::contact(&spec.name, spec.transport)));
    req.headers
        .push(("Expires".into(), settings.register_expires_s.to_string()));
    req
}

pub(super) fn with_auth(
    mut req: Message,
    challenge: &Option<Challenge>,
    spec: &UserSpec,
    life: &mut Life,
) -> Message {
    if let Some(c) = challenge {
        life.nc += 1;
        let uri = req.start.split(' ').nth(1).unwrap_or_default().to_string();
        let method = req.method().unwrap_or("REGISTER").to_string();
        let cnonce = format!("{:x}", life.rng.gen::<u32>());
        req.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Authorization"));
        req.headers.push((
            "Authorization".into(),
            c.authorization(&spec.name, &spec.password, &method, &uri, life.nc, &cnonce),
        ));
    }
    req
}

pub(super) fn set_cseq(req: &mut Message, cseq: u32) {
    let method = req.method().unwrap_or("REGISTER").to_string();
    for (n, v) in req.headers.iter_mut() {
        if n.eq_ignore_ascii_case("CSeq") {
            *v = format!("{cseq} {method}");
        }
    }
}

pub(super) async fn send(write: &mut Writer, msg: &Message) -> std::io::Result<()> {
    write.send(msg).await
}
