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

/// Makes `req` a new transaction (RFC 3261 section 8.1.3.5: a request sent again with credentials is a new
/// request): CSeq `cseq`, and a new branch in its Via, so a server's transaction layer does not take it for a
/// retransmission of the one it answered (over UDP it would send that answer again).
pub(super) fn renew(req: &mut Message, cseq: u32, life: &mut Life) {
    let method = req.method().unwrap_or("REGISTER").to_string();
    let branch = format!("z9hG4bK{:x}", life.rng.gen::<u64>());
    let mut via_done = false;
    for (n, v) in req.headers.iter_mut() {
        if n.eq_ignore_ascii_case("CSeq") {
            *v = format!("{cseq} {method}");
        } else if n.eq_ignore_ascii_case("Via") && !via_done {
            via_done = true;
            let params: Vec<String> = v
                .split(';')
                .map(|p| {
                    if p.trim_start().starts_with("branch=") {
                        format!("branch={branch}")
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            *v = params.join(";");
        }
    }
}

pub(super) async fn send(write: &mut Writer, msg: &Message) -> std::io::Result<()> {
    write.send(msg).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn a_request_sent_again_with_credentials_is_a_new_transaction() {
        let mut life = Life::new(1, Arc::new(HashMap::new()));
        let first = sip::request(
            "REGISTER",
            "sip:d",
            "al",
            "sip:al@d",
            "c",
            "t",
            1,
            "b1",
            sip::Transport::Udp,
        );
        let mut again = first.clone();
        renew(&mut again, 2, &mut life);
        assert_eq!(again.header("CSeq"), Some("2 REGISTER"));
        let (old, new) = (first.header("Via").unwrap(), again.header("Via").unwrap());
        assert_ne!(old, new, "a new branch");
        assert!(
            new.starts_with("SIP/2.0/UDP al.invalid;rport;branch=z9hG4bK"),
            "{new}"
        );
    }
}
