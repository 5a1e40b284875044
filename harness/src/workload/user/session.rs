//! One connection's session: the REGISTER that opens it, `CRLF CRLF` keep-alives, refreshes before the binding
//! runs out, the user's timed activities while registered, its final read, and the loss that ends it — a closed
//! connection, silence past `dead_after`, a request without answer, a refresh answered
//! `register-action="added"`, or the pool sending the user home.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::Session;
use super::incoming::{on_request, on_response, Answered, Heard};
use super::request::{register_request, send, with_auth, Kind, Outstanding};
use super::state::{Life, UserSpec};
use super::wire::{Answers, Reader, Resend, Writer};
use crate::history::{Op, Recorder};
use crate::workload::sip::{Frame, Transport};
use crate::workload::{Directive, Settings};

/// Why a session ended.
pub(super) enum End {
    Lost(String),
    /// Lost to a server that went silent (keep-alives or a REGISTER unanswered): paused or cut off, it may still
    /// complete TCP handshakes in its kernel, so its address goes to the back of the list.
    Silent(String),
    /// The server told the client to register at its home pool (the resiliency NOTIFY's `register-at`):
    /// it goes there at once, as a client does, without the back-off of a loss.
    SentHome {
        pool: String,
        reason: String,
    },
    Finished,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn session(
    spec: &UserSpec,
    (mut reader, write): (Reader, Writer),
    registrar: &str,
    register_uri: &str,
    recorder: &Recorder,
    settings: &Settings,
    life: &mut Life,
    directive: &mut watch::Receiver<Directive>,
) -> End {
    let udp = write.transport == Transport::Udp;
    // Over UDP: the answers given to the server's requests, for their retransmissions.
    let mut answers = Answers::default();
    let mut registered = false;
    let mut last_rx = Instant::now();
    // Nothing heard yet on this connection: a server that answers neither the REGISTER nor a keep-alive within
    // `first_answer` is given up on sooner than a registered one (RFC 5626's pong, on a fresh flow).
    let mut heard = false;
    let reg_call_id = format!("reg-{}", spec.name);
    let from_tag = format!("t{}", life.rng.gen::<u32>());
    let mut next_refresh = Instant::now() + Duration::from_secs(3600);
    let mut next_im = Instant::now() + jitter(&mut life.rng, settings.im_interval);
    let mut next_publish = Instant::now() + jitter(&mut life.rng, settings.publish_interval);
    let mut next_contact = Instant::now() + jitter(&mut life.rng, settings.contact_interval);
    let call_every = settings.call_interval.filter(|_| spec.calls);
    let mut next_call = Instant::now() + jitter(&mut life.rng, call_every);
    let mut sign_off = spec.sign_off_at;
    let mut keepalive = tokio::time::interval(settings.keepalive_interval);
    let mut final_list_sent = false;
    let mut s = Session {
        spec,
        write,
        recorder,
        outstanding: HashMap::new(),
        life,
        settings,
        from_tag,
        acks: HashMap::new(),
    };

    let op = Op::Register {
        registrar: Some(registrar.to_string()),
        resiliency: false,
        attachment: Default::default(),
    };
    let Ok(pending) = recorder.invoke(&spec.name, op.clone()) else {
        return End::Lost("history unavailable".into());
    };
    let register = register_request(
        spec,
        register_uri,
        &reg_call_id,
        &s.from_tag,
        s.life,
        settings,
    );
    let challenge = s.life.challenge.clone();
    let register = with_auth(register, &challenge, spec, s.life);
    if send(&mut s.write, &register).await.is_err() {
        let _ = pending.fail("connection closed before REGISTER");
        return End::Lost("connection closed".into());
    }
    s.outstanding.insert(
        register.cseq().unwrap_or_default(),
        Outstanding {
            kind: Kind::Register,
            pending,
            pending_op: op,
            deadline: Instant::now() + settings.request_timeout,
            resend: Resend::first(s.write.transport, &register),
            request: register,
            authorized: false,
        },
    );

    loop {
        let directive_now = *directive.borrow();
        if directive_now == Directive::Stop {
            return End::Finished;
        }
        if directive_now == Directive::Final && registered && !final_list_sent {
            final_list_sent = true;
            if let Err(e) = s.read_contacts().await {
                return End::Lost(e);
            }
        }
        // At the end a user also waits for its calls in progress to be hung up by the gateway.
        if final_list_sent && s.outstanding.is_empty() && s.life.calls_up.is_empty() {
            return End::Finished;
        }
        let wake = [next_refresh, next_im, next_publish, next_call, next_contact]
            .into_iter()
            .chain(sign_off)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let resend_at = s
            .outstanding
            .values()
            .filter_map(|o| o.resend.map(|r| r.at))
            .min();
        tokio::select! {
            read = reader.fill() => {
                match read {
                    Ok(0) => return fail_all(&mut s.outstanding, "connection closed by the server"),
                    Ok(_) => {}
                    Err(e) => return fail_all(&mut s.outstanding, &format!("connection error: {e}")),
                };
                last_rx = Instant::now();
                heard = true;
                loop {
                    let frame = match reader.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return fail_all(&mut s.outstanding, &e.to_string()),
                    };
                    let Frame::Message(msg) = frame else { continue };
                    if msg.status().is_some() {
                        // A 2xx to an INVITE already answered came again: our ACK was lost (UDP).
                        if let Some(ack) = msg.cseq().filter(|c| !s.outstanding.contains_key(c)).and_then(|c| s.acks.get(&c)) {
                            if msg.status().is_some_and(|st| (200..300).contains(&st)) {
                                let ack = ack.clone();
                                if let Err(e) = s.write.send(&ack).await {
                                    return fail_all(&mut s.outstanding, &format!("ACK again: {e}"));
                                }
                            }
                            continue;
                        }
                        let action = on_response(&mut s, msg).await;
                        match action {
                            Ok(Some(Answered::Registered { granted })) => {
                                registered = true;
                                next_refresh = Instant::now() + refresh_after(settings, granted);
                                if let Err(e) = s.after_register().await {
                                    return End::Lost(e);
                                }
                            }
                            Ok(Some(Answered::Refreshed { granted })) => next_refresh = Instant::now() + refresh_after(settings, granted),
                            Ok(Some(Answered::Published { expires })) => {
                                next_publish = next_publish.min(Instant::now() + expires * 3 / 4);
                            }
                            Ok(Some(Answered::PublishAgain { after })) => {
                                next_publish = next_publish.min(Instant::now() + after);
                            }
                            Ok(Some(Answered::Lost(reason))) => return fail_all(&mut s.outstanding, &reason),
                            // Signed off: what is still in flight may or may not have been served.
                            Ok(Some(Answered::SignedOff)) => {
                                let _ = fail_all(&mut s.outstanding, "the user signed off");
                                return End::Finished;
                            }
                            Ok(None) => {}
                            Err(e) => return fail_all(&mut s.outstanding, &e),
                        }
                    } else {
                        // A request the server sent again because our answer was lost: the same answer again.
                        let key = (udp && msg.method() != Some("ACK")).then(|| Answers::key(&msg));
                        if let Some(answer) = key.as_deref().and_then(|k| answers.get(k)) {
                            if let Err(e) = s.write.resend_answer(answer).await {
                                return fail_all(&mut s.outstanding, &format!("answer the server again: {e}"));
                            }
                            continue;
                        }
                        s.write.take_last_answer();
                        let heard_now = on_request(spec, &msg, &mut s.write, recorder, &mut s.life.calls_up).await;
                        if let (Some(key), Some(answer)) = (key, s.write.take_last_answer()) {
                            answers.keep(key, answer);
                        }
                        match heard_now {
                            Ok(Heard::Nothing) => {}
                            // Out of resiliency mode: publish the presence the pool could not take meanwhile.
                            Ok(Heard::FullService) => next_publish = Instant::now(),
                            Ok(Heard::SentHome(pool)) => {
                                let reason = format!("sent home: register at {pool}");
                                // What is in flight may still have been served: indeterminate, as on a loss.
                                let _ = fail_all(&mut s.outstanding, &reason);
                                return End::SentHome { pool, reason };
                            }
                            Err(e) => return fail_all(&mut s.outstanding, &e),
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake), if registered && directive_now == Directive::Running => {
                let now = Instant::now();
                if sign_off.is_some_and(|at| now >= at) {
                    sign_off = None;
                    if settings.sign_off.is_some_and(|s| s.silently) {
                        // Gone without a word: the connection closes and the binding is left to expire.
                        let _ = fail_all(&mut s.outstanding, "the user left");
                        return End::Finished;
                    }
                    // No longer registered, so nothing else is sent: the user waits for the answer and stops.
                    registered = false;
                    let mut req =
                        register_request(spec, register_uri, &reg_call_id, &s.from_tag, s.life, settings);
                    for (name, value) in req.headers.iter_mut() {
                        if name.eq_ignore_ascii_case("Expires") {
                            *value = "0".into();
                        }
                    }
                    let challenge = s.life.challenge.clone();
                    let req = with_auth(req, &challenge, spec, s.life);
                    if let Err(e) = s.send_tracked(Kind::Unregister, Op::Unregister {}, req).await {
                        return End::Lost(e);
                    }
                    continue;
                }
                if now >= next_refresh {
                    next_refresh = now + Duration::from_secs(3600);
                    let req =
                        register_request(spec, register_uri, &reg_call_id, &s.from_tag, s.life, settings);
                    let challenge = s.life.challenge.clone();
                    let req = with_auth(req, &challenge, spec, s.life);
                    let op = Op::Refresh { action: None, resiliency: false, attachment: Default::default() };
                    if let Err(e) = s.send_tracked(Kind::Refresh, op, req).await {
                        return End::Lost(e);
                    }
                }
                if now >= next_im {
                    next_im = now + settings.im_interval.unwrap_or(Duration::from_secs(3600));
                    if let Err(e) = s.send_im().await {
                        return End::Lost(e);
                    }
                }
                if now >= next_call {
                    next_call = now + call_every.unwrap_or(Duration::from_secs(3600));
                    if let Err(e) = s.place_call().await {
                        return End::Lost(e);
                    }
                }
                if now >= next_contact {
                    next_contact = now + settings.contact_interval.unwrap_or(Duration::from_secs(3600));
                    if let Err(e) = s.add_contact().await {
                        return End::Lost(e);
                    }
                }
                if now >= next_publish {
                    next_publish = now + settings.publish_interval.unwrap_or(Duration::from_secs(3600));
                    if let Err(e) = s.publish().await {
                        return End::Lost(e);
                    }
                }
            }
            _ = keepalive.tick() => {
                if !heard && last_rx.elapsed() > settings.first_answer {
                    return fail_silent(&mut s.outstanding, "no answer: a new connection stayed silent");
                }
                if last_rx.elapsed() > settings.dead_after {
                    return fail_silent(&mut s.outstanding, "no answer: the server went silent");
                }
                // A connection pings with CRLF CRLF; datagrams with an OPTIONS outside any dialog, whose answer is
                // heard like any other (its CSeq is no request's the session waits for).
                let ping = if udp {
                    let req = s.keep_alive_request();
                    s.write.send(&req).await
                } else {
                    s.write.ping().await
                };
                if ping.is_err() {
                    return fail_all(&mut s.outstanding, "keep-alive: write failed");
                }
                let now = Instant::now();
                let expired: Vec<u32> = s.outstanding.iter().filter(|(_, o)| o.deadline <= now).map(|(c, _)| *c).collect();
                let mut lost = false;
                for cseq in expired {
                    if let Some(o) = s.outstanding.remove(&cseq) {
                        lost |= matches!(o.kind, Kind::Register | Kind::Refresh);
                        let _ = o.pending.timeout();
                    }
                }
                if lost {
                    return fail_silent(&mut s.outstanding, "no answer: REGISTER without answer");
                }
            }
            _ = tokio::time::sleep_until(resend_at.unwrap_or_else(Instant::now)), if resend_at.is_some() => {
                let now = Instant::now();
                let due: Vec<u32> = s.outstanding.iter().filter(|(_, o)| o.resend.is_some_and(|r| r.at <= now)).map(|(c, _)| *c).collect();
                for cseq in due {
                    let Some(o) = s.outstanding.get_mut(&cseq) else { continue };
                    o.resend = o.resend.map(Resend::next);
                    let request = o.request.clone();
                    if let Err(e) = s.write.send(&request).await {
                        return fail_all(&mut s.outstanding, &format!("retransmit: {e}"));
                    }
                }
            }
            _ = directive.changed() => {}
        }
    }
}

/// When a user refreshes its registration: at its refresh interval, but at the latest at three quarters of the
/// time the registrar granted, as a client does (a refresh due at the binding's very expiry races it, and the
/// registrar rightly answers `added`: the binding had expired).
fn refresh_after(settings: &Settings, granted: Option<Duration>) -> Duration {
    granted.map_or(settings.refresh_interval, |g| {
        settings.refresh_interval.min(g * 3 / 4)
    })
}

/// Ends a session: requests still waiting are indeterminate (they may have taken effect).
fn fail_all(outstanding: &mut HashMap<u32, Outstanding>, reason: &str) -> End {
    time_out_all(outstanding);
    End::Lost(reason.to_string())
}

/// [`fail_all`] for a server that went silent.
fn fail_silent(outstanding: &mut HashMap<u32, Outstanding>, reason: &str) -> End {
    time_out_all(outstanding);
    End::Silent(reason.to_string())
}

fn time_out_all(outstanding: &mut HashMap<u32, Outstanding>) {
    for (_, o) in outstanding.drain() {
        let _ = o.pending.timeout();
    }
}

/// A random first delay within `every`, so timers of many users do not fire together.
fn jitter(rng: &mut ChaCha8Rng, every: Option<Duration>) -> Duration {
    match every {
        Some(d) => Duration::from_millis(rng.gen_range(0..d.as_millis().max(1) as u64)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client refreshes well before the binding it was granted runs out, never at its very expiry.
    #[test]
    fn a_refresh_comes_by_three_quarters_of_the_granted_expiry() {
        let lync = Settings {
            refresh_interval: Duration::from_secs(60),
            register_expires_s: 60,
            ..Settings::default()
        };
        // Granted the 60 s asked: refreshed at 45 s, not at the expiry.
        assert_eq!(
            refresh_after(&lync, Some(Duration::from_secs(60))),
            Duration::from_secs(45)
        );
        // Granted more than the interval: the interval.
        assert_eq!(
            refresh_after(&lync, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        // The answer said nothing: the interval.
        assert_eq!(refresh_after(&lync, None), Duration::from_secs(60));
    }
}
