//! What the server's messages mean for a session: an answer to one of the user's requests (ok, refused,
//! indeterminate; a digest challenge answered once; a redirect followed; a lost binding; a publication to repeat),
//! or a request of the server's own (an IM, a presence or resiliency notice, a call's start or end), answered and
//! recorded.

use std::time::Duration;

use tokio::time::Instant;

use super::activity::Session;
use super::locate::registrars_of;
use super::request::{renew, send, with_auth, Kind};
use super::state::{Life, UserSpec};
use super::wire::{Resend, Writer};
use crate::history::{Attachment, CallEndedBy, Op, Recorder};
use crate::workload::sip::{self, Challenge, Message};

/// How soon a publication whose outcome the pool did not know is sent again.
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// Where a REGISTER's `200` shows the user attached: the node dialled, and the Front End and routing group the
/// answer names.
fn attachment(answer: &Message, life: &Life) -> Attachment {
    let (server, group) = sip::server_of(answer);
    Attachment {
        entry: life
            .dialled
            .as_ref()
            .and_then(|ip| life.nodes.get(ip))
            .cloned(),
        server,
        group,
    }
}

/// What an answer to one of the user's requests meant for the session (beside [`Heard`], what a request from the
/// server meant).
pub(super) enum Answered {
    /// Signed in; the binding lasts `granted` (if the answer said).
    Registered {
        granted: Option<Duration>,
    },
    /// The registration refreshed; the binding lasts `granted` (if the answer said).
    Refreshed {
        granted: Option<Duration>,
    },
    Lost(String),
    /// The sign-off was answered (or failed): the user stops.
    SignedOff,
    /// A presence publication accepted for this long (the pool may grant less than asked, RFC 3903 section 4.1):
    /// the client publishes again before it runs out.
    Published {
        expires: Duration,
    },
    /// A publication the pool did not take (or whose outcome it does not know): published again after the
    /// `Retry-After` the pool names, or a few seconds, as a client does, so a refresh that met a fault does not
    /// leave the presence to lapse.
    PublishAgain {
        after: Duration,
    },
}

pub(super) async fn on_response(
    session: &mut Session<'_>,
    msg: Message,
) -> Result<Option<Answered>, String> {
    let (spec, recorder, settings) = (session.spec, session.recorder, session.settings);
    let (outstanding, write, life, acks) = (
        &mut session.outstanding,
        &mut session.write,
        &mut *session.life,
        &mut session.acks,
    );
    let Some(cseq) = msg.cseq() else {
        return Ok(None);
    };
    let status = msg.status().unwrap_or(0);
    if status < 200 {
        if let Some(o) = outstanding.get_mut(&cseq) {
            o.resend = o.resend.and_then(Resend::proceeding);
        }
        return Ok(None);
    }
    let Some(mut o) = outstanding.remove(&cseq) else {
        return Ok(None);
    };
    if (status == 401 || status == 407) && !o.authorized {
        let header = msg
            .header("WWW-Authenticate")
            .or_else(|| msg.header("Proxy-Authenticate"));
        if let Some(c) = header.and_then(Challenge::parse) {
            life.challenge = Some(c);
            life.cseq += 1;
            let mut again = o.request.clone();
            renew(&mut again, life.cseq, life);
            let challenge = life.challenge.clone();
            let again = with_auth(again, &challenge, spec, life);
            send(write, &again).await.map_err(|e| e.to_string())?;
            o.resend = Resend::first(write.transport, &again);
            o.request = again;
            o.authorized = true;
            o.deadline = Instant::now() + settings.request_timeout;
            outstanding.insert(life.cseq, o);
            return Ok(None);
        }
    }
    // Credentials answering another server's challenge (a nonce of another pool) may be refused outright:
    // forget the challenge and ask again without them, once.
    let sent_credentials = o.request.header("Authorization").is_some();
    if status == 403
        && !o.authorized
        && sent_credentials
        && matches!(o.kind, Kind::Register | Kind::Refresh)
    {
        life.challenge = None;
        life.cseq += 1;
        let mut again = o.request.clone();
        again
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Authorization"));
        renew(&mut again, life.cseq, life);
        send(write, &again).await.map_err(|e| e.to_string())?;
        o.resend = Resend::first(write.transport, &again);
        o.request = again;
        o.deadline = Instant::now() + settings.request_timeout;
        outstanding.insert(life.cseq, o);
        return Ok(None);
    }
    let reason = msg.start.trim_start_matches("SIP/2.0 ").to_string();
    let ok = (200..300).contains(&status);
    match o.kind {
        Kind::Register if ok => {
            let registrar = match &o.pending_op {
                Op::Register { registrar, .. } => registrar.clone(),
                _ => None,
            };
            life.signed_in_resiliency = sip::resiliency(&msg);
            o.pending
                .ok_with(Op::Register {
                    registrar,
                    resiliency: life.signed_in_resiliency,
                    attachment: attachment(&msg, life),
                })
                .map_err(|e| e.to_string())?;
            Ok(Some(Answered::Registered {
                granted: sip::granted_expires(&msg),
            }))
        }
        Kind::Refresh if ok => {
            let action = sip::register_action(&msg);
            let added = action.as_deref() == Some("added");
            o.pending
                .ok_with(Op::Refresh {
                    action,
                    resiliency: sip::resiliency(&msg),
                    attachment: attachment(&msg, life),
                })
                .map_err(|e| e.to_string())?;
            // The server lost the binding: drop everything and register again.
            Ok(Some(if added {
                Answered::Lost("refresh answered register-action=added".into())
            } else {
                Answered::Refreshed {
                    granted: sip::granted_expires(&msg),
                }
            }))
        }
        Kind::Register | Kind::Refresh if (300..400).contains(&status) => {
            // A registrar that sends us elsewhere (its pool failed over, or we are not homed there): follow
            // it as a client does, keeping the backup it names.
            let _ = o.pending.fail(reason.clone());
            if let Some(found) = registrars_of(&msg) {
                life.registrars = Some(found);
                life.use_backup = false;
            }
            Ok(Some(Answered::Lost(format!(
                "REGISTER redirected: {reason}"
            ))))
        }
        Kind::Register | Kind::Refresh => {
            if matches!(o.kind, Kind::Register) && status != 408 {
                // This registrar would not take us: the next attempt goes to the other one.
                life.use_backup = !life.use_backup;
            }
            // A 408 says the outcome is unknown (the binding may have been written): indeterminate.
            let _ = if status == 408 {
                o.pending.timeout()
            } else {
                o.pending.fail(reason.clone())
            };
            Ok(Some(Answered::Lost(format!("REGISTER refused: {reason}"))))
        }
        Kind::Unregister => {
            let _ = if ok {
                o.pending.ok()
            } else if status == 408 {
                o.pending.timeout()
            } else {
                o.pending.fail(reason.clone())
            };
            Ok(Some(Answered::SignedOff))
        }
        Kind::Call if ok => {
            // The 2xx of an INVITE is acknowledged end to end with an ACK in the same dialog.
            let mut ack = o.request.clone();
            ack.start = ack.start.replacen("INVITE", "ACK", 1);
            let cseq = o.request.cseq().unwrap_or_default();
            ack.headers.retain(|(n, _)| {
                !["To", "CSeq", "X-Hold-Ms", "Contact"]
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h))
            });
            ack.headers.push((
                "To".into(),
                msg.header("To").unwrap_or_default().to_string(),
            ));
            ack.headers.push(("CSeq".into(), format!("{cseq} ACK")));
            send(write, &ack).await.map_err(|e| e.to_string())?;
            if write.transport == crate::workload::sip::Transport::Udp {
                acks.insert(cseq, ack);
            }
            if let Op::CallSetup { call_id, .. } = &o.pending_op {
                life.calls_up.insert(call_id.clone());
            }
            o.pending.ok().map_err(|e| e.to_string())?;
            Ok(None)
        }
        Kind::ContactList if ok => {
            let contacts: Vec<String> = String::from_utf8_lossy(&msg.body)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| sip::user_of(l).unwrap_or(l).to_string())
                .collect();
            o.pending
                .ok_with(Op::ContactList {
                    contacts: Some(contacts),
                })
                .map_err(|e| e.to_string())?;
            let _ = recorder;
            Ok(None)
        }
        Kind::Publish if ok => {
            let granted = msg
                .header("Expires")
                .and_then(|v| v.trim().parse::<u64>().ok());
            let state = match &o.pending_op {
                Op::Publish { state, .. } => state.clone(),
                _ => String::new(),
            };
            o.pending
                .ok_with(Op::Publish {
                    state,
                    granted_s: granted,
                })
                .map_err(|e| e.to_string())?;
            Ok(granted.map(|secs| Answered::Published {
                expires: Duration::from_secs(secs),
            }))
        }
        // The pool's 408 means it could not learn the outcome: an IM's recipient may have got it, a write may
        // have been applied at its primary without a confirmed replica. Indeterminate, never a refusal.
        _ if status == 408 && !matches!(o.kind, Kind::Publish) => {
            o.pending.timeout().map_err(|e| e.to_string())?;
            Ok(None)
        }
        _ if ok => {
            o.pending.ok().map_err(|e| e.to_string())?;
            Ok(None)
        }
        Kind::Publish => {
            // Again after the pool's Retry-After, or soon after an unknown outcome; a refusal without one (resiliency
            // mode) waits for the pool's notice instead.
            let retry_after = msg
                .header("Retry-After")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let after = if status == 408 {
                o.pending.timeout().map_err(|e| e.to_string())?;
                Some(retry_after.unwrap_or(PUBLISH_RETRY))
            } else {
                o.pending.fail(reason).map_err(|e| e.to_string())?;
                retry_after
            };
            Ok(after.map(|after| Answered::PublishAgain { after }))
        }
        _ => {
            o.pending.fail(reason).map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// What a request from the server means for the session.
pub(super) enum Heard {
    Nothing,
    /// Resiliency mode ended here: full service again.
    FullService,
    /// Register at this pool instead.
    SentHome(String),
}

/// Answers a request from the server: an IM or a presence notice to record, anything else acknowledged.
pub(super) async fn on_request(
    spec: &UserSpec,
    msg: &Message,
    write: &mut Writer,
    recorder: &Recorder,
    calls_up: &mut std::collections::BTreeSet<String>,
) -> Result<Heard, String> {
    let mut register_at = None;
    let mut heard = Heard::Nothing;
    match msg.method() {
        // An ACK is never answered.
        Some("ACK") => return Ok(Heard::Nothing),
        Some("BYE") => {
            let call_id = msg.header("Call-ID").unwrap_or_default().to_string();
            calls_up.remove(&call_id);
            let _ = recorder.observe(
                &spec.name,
                Op::CallEnd {
                    call_id,
                    by: Some(CallEndedBy::Bye),
                },
            );
        }
        Some("INVITE") => {
            // A call from the gateway: answer at once (no media), in a dialog of our own tag.
            let mut ok = msg.response(200, "OK");
            for (n, v) in ok.headers.iter_mut() {
                if n.eq_ignore_ascii_case("To") && !v.contains(";tag=") {
                    v.push_str(&format!(";tag=in{}", msg.cseq().unwrap_or_default()));
                }
            }
            ok.headers
                .push(("Contact".into(), sip::contact(&spec.name, spec.transport)));
            return send(write, &ok)
                .await
                .map(|()| Heard::Nothing)
                .map_err(|e| format!("answer the server: {e}"));
        }
        Some("MESSAGE") => {
            let text = String::from_utf8_lossy(&msg.body);
            let mut words = text.split_whitespace();
            if let (Some("im"), Some(from), Some(seq)) = (words.next(), words.next(), words.next())
            {
                if let Ok(seq) = seq.parse() {
                    let _ = recorder.observe(
                        &spec.name,
                        Op::ImReceived {
                            from: from.to_string(),
                            seq,
                        },
                    );
                }
            }
        }
        Some("NOTIFY")
            if msg
                .header("Event")
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(sip::RESILIENCY_EVENT)) =>
        {
            // `resiliency-mode: on|off`, `home: <pool>`, and `register-at: <pool>` when the client must go there.
            let body = String::from_utf8_lossy(&msg.body);
            let field = |wanted: &str| {
                body.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    (name.trim().eq_ignore_ascii_case(wanted) && !value.trim().is_empty())
                        .then(|| value.trim().to_string())
                })
            };
            register_at = field("register-at");
            // Sent elsewhere: recorded as the loss it is (by the caller), not as a change of mode here.
            if register_at.is_none() {
                if let Some(mode) = field("resiliency-mode") {
                    let on = mode.eq_ignore_ascii_case("on");
                    let _ = recorder.observe(&spec.name, Op::ResiliencyNotice { on });
                    if !on {
                        heard = Heard::FullService;
                    }
                }
            }
        }
        Some("NOTIFY") => {
            let target = msg
                .header("From")
                .and_then(sip::user_of)
                .unwrap_or_default()
                .to_string();
            let body = String::from_utf8_lossy(&msg.body);
            // A presentity in resiliency mode shows as unknown (`<note>unknown</note>`): that is no state.
            let state = between(&body, "<note>", "</note>")
                .or_else(|| between(&body, "<basic>", "</basic>"))
                .filter(|s| *s != "unknown")
                .map(String::from);
            let _ = recorder.observe(&spec.name, Op::NotifyReceived { target, state });
        }
        _ => {}
    }
    send(write, &msg.response(200, "OK"))
        .await
        .map(|()| register_at.map_or(heard, Heard::SentHome))
        .map_err(|e| format!("answer the server: {e}"))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].trim())
}
