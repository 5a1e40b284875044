//! Toxics as they act on one direction of one connection (or UDP flow): which of them apply (the
//! toxicity draw), their per-connection state (random stream, bytes passed, start time, SIP
//! counts, held messages), and the plan that turns one chunk of TCP data into writes, sleeps,
//! replies and a close. Datagrams are planned in `datagram`, SIP messages judged in `sip_rule`.
//!
//! This module does no I/O, so its decisions are unit-tested without sockets.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::kind::SipAction;
use crate::model::{Stream, Toxic, ToxicKind};
use crate::seed::toxic_rng;
use crate::sip::{Framer, Piece};
use crate::sip_rule::Verdict;

/// What one step of a plan does, executed in order by the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Write(Bytes),
    /// Wait until this instant (latency counts from the chunk's arrival, not from its turn).
    SleepUntil(Instant),
    Sleep(Duration),
    /// Close the whole connection (limit_data reached).
    Close,
    /// Send these bytes back to the sender (a SIP response on the server's behalf).
    Reply(Bytes),
}

/// How a connection ends when a toxic ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both sockets closed normally (FIN).
    Close,
    /// Both sockets reset (RST via SO_LINGER 0).
    Reset,
}

/// Identity of the direction whose toxics these are: the key of every random stream.
#[derive(Clone, Debug)]
pub struct DirectionKey {
    pub seed: u64,
    pub proxy: String,
    pub connection_ordinal: u64,
    pub stream: Stream,
}

/// One toxic's state on this direction of this connection.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) toxic: Toxic,
    pub(crate) rng: ChaCha8Rng,
    /// The toxicity draw: whether the toxic acts on this connection at all.
    pub(crate) applies: bool,
    /// When the toxic started acting here: timeout and reset_peer count from it.
    started: Instant,
    /// Bytes let through so far (limit_data).
    passed_bytes: u64,
    /// SIP messages the rule matched, and how many of them it picked.
    pub(crate) matched: u64,
    pub(crate) picked: u64,
    /// Messages a `sip_hold` keeps, in arrival order.
    pub(crate) held: Vec<Bytes>,
    /// `loss_burst`: in the bad state.
    pub(crate) bad_state: bool,
    /// Datagram `bandwidth`: when the link is free again.
    pub(crate) next_free: Option<Instant>,
}

/// The toxics of one direction of one connection, in the proxy's order.
#[derive(Debug)]
pub struct DirectionToxics {
    key: DirectionKey,
    pub(crate) active: Vec<Active>,
    /// A `sip_respond` on the other stream answers through this direction's writer.
    answers_other: bool,
    /// Cuts TCP data into SIP messages while a SIP toxic acts here or answers through here.
    framer: Option<Framer>,
    /// Bytes to deliver at once: messages of a removed `sip_hold`, the rest of a stopped framer.
    released: Vec<Bytes>,
}

fn is_sip(toxic: &Toxic) -> bool {
    matches!(toxic.kind, ToxicKind::Sip { .. })
}

impl DirectionToxics {
    pub fn new(key: DirectionKey) -> DirectionToxics {
        DirectionToxics {
            key,
            active: Vec::new(),
            answers_other: false,
            framer: None,
            released: Vec::new(),
        }
    }

    /// Follows the proxy's new toxic list. New toxics get their random stream and draw toxicity;
    /// changed ones draw again from the same stream and restart their timers (Toxiproxy restarts a
    /// toxic on update); unchanged ones keep everything. Returns `Some(Close)` when an applied
    /// timeout toxic went away: Toxiproxy closes such a connection rather than resume it.
    pub fn sync(&mut self, toxics: &[Toxic], now: Instant) -> Option<Ending> {
        let mut ending = None;
        let mut previous = std::mem::take(&mut self.active);
        for toxic in toxics
            .iter()
            .filter(|toxic| toxic.stream == self.key.stream)
        {
            let kept = previous
                .iter()
                .position(|active| active.toxic.name == toxic.name)
                .map(|index| previous.swap_remove(index));
            let active = match kept {
                Some(active) if active.toxic == *toxic => active,
                Some(mut active) => {
                    if active.applies && matches!(active.toxic.kind, ToxicKind::Timeout { .. }) {
                        ending = Some(Ending::Close);
                    }
                    active.applies = active.rng.gen::<f32>() < toxic.toxicity;
                    active.toxic = toxic.clone();
                    active.started = now;
                    if !active.applies || !matches!(toxic.kind, ToxicKind::Sip { .. }) {
                        self.released.append(&mut active.held);
                    }
                    active
                }
                None => {
                    let mut rng = toxic_rng(
                        self.key.seed,
                        &self.key.proxy,
                        &toxic.name,
                        self.key.connection_ordinal,
                    );
                    let applies = rng.gen::<f32>() < toxic.toxicity;
                    Active {
                        toxic: toxic.clone(),
                        rng,
                        applies,
                        started: now,
                        passed_bytes: 0,
                        matched: 0,
                        picked: 0,
                        held: Vec::new(),
                        bad_state: false,
                        next_free: None,
                    }
                }
            };
            self.active.push(active);
        }
        for mut gone in previous {
            if gone.applies && matches!(gone.toxic.kind, ToxicKind::Timeout { .. }) {
                ending = Some(Ending::Close);
            }
            self.released.append(&mut gone.held);
        }
        self.answers_other = toxics.iter().any(|toxic| {
            toxic.stream != self.key.stream
                && matches!(
                    toxic.kind,
                    ToxicKind::Sip {
                        action: SipAction::Respond { .. },
                        ..
                    }
                )
        });
        let framing = self.answers_other || self.applied().any(|active| is_sip(&active.toxic));
        match (framing, self.framer.is_some()) {
            (true, false) => self.framer = Some(Framer::default()),
            (false, true) => {
                let rest = self.take_rest();
                if !rest.is_empty() {
                    self.released.push(rest);
                }
                self.framer = None;
            }
            _ => {}
        }
        ending
    }

    /// Takes the bytes to deliver at once after a `sync`, in their original order.
    pub fn take_released(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.released)
    }

    /// Takes the bytes of an incomplete SIP message (the sender closed, or framing stopped).
    pub fn take_rest(&mut self) -> Bytes {
        self.framer
            .as_mut()
            .map(Framer::take_rest)
            .unwrap_or_default()
    }

    fn applied(&self) -> impl Iterator<Item = &Active> {
        self.active.iter().filter(|active| active.applies)
    }

    /// No toxic acts here and none answers through here: the link may take its plain path.
    pub fn is_idle(&self) -> bool {
        self.applied().next().is_none() && !self.answers_other
    }

    /// Names of the toxics that act here, for logs and tests.
    pub fn applied_names(&self) -> Vec<String> {
        self.applied().map(|a| a.toxic.name.clone()).collect()
    }

    /// A timeout toxic acts: data is dropped and the close is held back.
    pub fn is_blackholed(&self) -> bool {
        self.applied()
            .any(|active| matches!(active.toxic.kind, ToxicKind::Timeout { .. }))
    }

    /// The earliest instant at which a timer toxic ends the connection, and how.
    pub fn deadline(&self) -> Option<(Instant, Ending)> {
        self.applied()
            .filter_map(|active| match active.toxic.kind {
                ToxicKind::Timeout { timeout_ms } if timeout_ms > 0 => Some((
                    active.started + Duration::from_millis(timeout_ms),
                    Ending::Close,
                )),
                ToxicKind::ResetPeer { timeout_ms } => Some((
                    active.started + Duration::from_millis(timeout_ms),
                    Ending::Reset,
                )),
                _ => None,
            })
            .min_by_key(|(at, _)| *at)
    }

    /// How long to hold the close back after the sender closed (slow_close; they add up).
    pub fn close_delay(&self) -> Duration {
        self.applied()
            .map(|active| match active.toxic.kind {
                ToxicKind::SlowClose { delay_ms } => Duration::from_millis(delay_ms),
                _ => Duration::ZERO,
            })
            .sum()
    }

    /// Turns one chunk that arrived at `arrived` into actions, applying the toxics in order.
    /// Latencies add up (Toxiproxy's chain would overlap them; adding is what a reader expects).
    /// With SIP framing, only whole messages come out, each judged by the SIP toxics first.
    pub fn plan(&mut self, data: Bytes, arrived: Instant) -> Vec<Action> {
        let mut latency = Duration::ZERO;
        let mut actions = match self.framer.as_mut() {
            None => vec![Action::Write(data)],
            Some(framer) => {
                let pieces = framer.push(&data);
                self.judge_pieces(pieces, arrived)
            }
        };
        for active in self.active.iter_mut().filter(|active| active.applies) {
            match active.toxic.kind {
                ToxicKind::Latency {
                    latency_ms,
                    jitter_ms,
                } => {
                    let jitter = if jitter_ms > 0 {
                        active.rng.gen_range(-(jitter_ms as i64)..=jitter_ms as i64)
                    } else {
                        0
                    };
                    let delay_ms = (latency_ms as i64 + jitter).max(0) as u64;
                    latency += Duration::from_millis(delay_ms);
                }
                ToxicKind::Bandwidth { rate_kbps } if rate_kbps > 0 => {
                    // Pieces of at most 100 ms worth keep the pace smooth, as Toxiproxy does.
                    let rate_bytes_per_s = rate_kbps.saturating_mul(1000);
                    let piece_max = (rate_bytes_per_s / 10).max(1) as usize;
                    actions = split_writes(
                        actions,
                        |_| piece_max,
                        |len| {
                            Some(Duration::from_secs_f64(
                                len as f64 / rate_bytes_per_s as f64,
                            ))
                        },
                    );
                }
                ToxicKind::Slicer {
                    average_size_bytes,
                    size_variation_bytes,
                    delay_us,
                } if average_size_bytes > 0 => {
                    let rng = &mut active.rng;
                    let variation = size_variation_bytes.min(average_size_bytes - 1) as i64;
                    let delay = Duration::from_micros(delay_us);
                    actions = split_writes(
                        actions,
                        |_| {
                            let offset = if variation > 0 {
                                rng.gen_range(-variation..=variation)
                            } else {
                                0
                            };
                            (average_size_bytes as i64 + offset).max(1) as usize
                        },
                        |_| (!delay.is_zero()).then_some(delay),
                    );
                }
                ToxicKind::LimitData { bytes } => {
                    let mut limited = Vec::with_capacity(actions.len() + 1);
                    for action in actions {
                        match action {
                            Action::Write(mut data) => {
                                let budget = bytes.saturating_sub(active.passed_bytes);
                                if (data.len() as u64) > budget {
                                    data.truncate(budget as usize);
                                }
                                active.passed_bytes += data.len() as u64;
                                if !data.is_empty() {
                                    limited.push(Action::Write(data));
                                }
                                if active.passed_bytes >= bytes {
                                    limited.push(Action::Close);
                                    break;
                                }
                            }
                            Action::Close => {
                                limited.push(Action::Close);
                                break;
                            }
                            other => limited.push(other),
                        }
                    }
                    actions = limited;
                }
                _ => {}
            }
        }
        if !latency.is_zero() && !actions.is_empty() {
            actions.insert(0, Action::SleepUntil(arrived + latency));
        }
        actions
    }

    fn judge_pieces(&mut self, pieces: Vec<Piece>, arrived: Instant) -> Vec<Action> {
        let mut actions = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Raw(bytes) => actions.push(Action::Write(bytes)),
                Piece::Message(message) => match self.judge(&message) {
                    Verdict::Pass => actions.push(Action::Write(message)),
                    Verdict::Drop | Verdict::Hold => {}
                    Verdict::Delay(delay) => {
                        actions.push(Action::SleepUntil(arrived + delay));
                        actions.push(Action::Write(message));
                    }
                    Verdict::Reply(reply) => actions.push(Action::Reply(reply)),
                },
            }
        }
        actions
    }
}

/// Replaces every write by pieces of `piece_len(..)` bytes, each followed by `pause_after(len)`.
fn split_writes(
    actions: Vec<Action>,
    mut piece_len: impl FnMut(usize) -> usize,
    pause_after: impl Fn(usize) -> Option<Duration>,
) -> Vec<Action> {
    let mut out = Vec::with_capacity(actions.len());
    for action in actions {
        let Action::Write(mut data) = action else {
            out.push(action);
            continue;
        };
        while !data.is_empty() {
            let len = piece_len(data.len()).min(data.len());
            out.push(Action::Write(data.split_to(len)));
            if let Some(pause) = pause_after(len) {
                out.push(Action::Sleep(pause));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Toxic;

    fn key(ordinal: u64) -> DirectionKey {
        DirectionKey {
            seed: 1,
            proxy: "p".into(),
            connection_ordinal: ordinal,
            stream: Stream::Downstream,
        }
    }

    fn toxic(body: &str) -> Toxic {
        Toxic::parse_new(body.as_bytes()).unwrap()
    }

    fn writes(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(d) => Some(d.len()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn toxicity_zero_never_applies_and_one_always_does() {
        let never = toxic(r#"{"type":"latency","name":"n","toxicity":0}"#);
        let always = toxic(r#"{"type":"latency","name":"a","toxicity":1}"#);
        for ordinal in 0..200 {
            let mut dir = DirectionToxics::new(key(ordinal));
            dir.sync(&[never.clone(), always.clone()], Instant::now());
            assert_eq!(dir.applied_names(), vec!["a".to_owned()]);
        }
    }

    #[test]
    fn toxicity_draws_replay_per_connection_ordinal() {
        let half =
            toxic(r#"{"type":"latency","toxicity":0.5,"attributes":{"latency":100,"jitter":50}}"#);
        let pattern = |ordinal| {
            let mut dir = DirectionToxics::new(key(ordinal));
            dir.sync(std::slice::from_ref(&half), Instant::now());
            let arrived = Instant::now();
            let delay = match dir.plan(Bytes::from_static(b"x"), arrived).first() {
                Some(Action::SleepUntil(at)) => Some(*at - arrived),
                _ => None,
            };
            (dir.is_idle(), delay)
        };
        let first: Vec<_> = (0..64).map(pattern).collect();
        let again: Vec<_> = (0..64).map(pattern).collect();
        assert_eq!(first, again);
        let applied = first.iter().filter(|(idle, _)| !idle).count();
        assert!((10..54).contains(&applied), "p=0.5 over 64 gave {applied}");
    }

    #[test]
    fn slicer_splits_into_pieces_around_the_average() {
        let slicer = toxic(
            r#"{"type":"slicer","attributes":{"average_size":10,"size_variation":3,"delay":0}}"#,
        );
        let mut dir = DirectionToxics::new(key(0));
        dir.sync(&[slicer], Instant::now());
        let actions = dir.plan(Bytes::from(vec![0u8; 1000]), Instant::now());
        let sizes = writes(&actions);
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(sizes[..sizes.len() - 1]
            .iter()
            .all(|s| (7..=13).contains(s)));
    }

    #[test]
    fn limit_data_truncates_then_closes() {
        let limit = toxic(r#"{"type":"limit_data","attributes":{"bytes":15}}"#);
        let mut dir = DirectionToxics::new(key(0));
        dir.sync(&[limit], Instant::now());
        let first = dir.plan(Bytes::from(vec![0u8; 10]), Instant::now());
        assert_eq!(writes(&first), vec![10]);
        assert!(!first.contains(&Action::Close));
        let second = dir.plan(Bytes::from(vec![0u8; 10]), Instant::now());
        assert_eq!(writes(&second), vec![5]);
        assert_eq!(second.last(), Some(&Action::Close));
    }

    #[test]
    fn bandwidth_paces_pieces() {
        let bandwidth = toxic(r#"{"type":"bandwidth","attributes":{"rate":10}}"#);
        let mut dir = DirectionToxics::new(key(0));
        dir.sync(&[bandwidth], Instant::now());
        let actions = dir.plan(Bytes::from(vec![0u8; 5000]), Instant::now());
        assert_eq!(writes(&actions), vec![1000; 5]);
        let paused: Duration = actions
            .iter()
            .filter_map(|a| match a {
                Action::Sleep(d) => Some(*d),
                _ => None,
            })
            .sum();
        assert_eq!(paused, Duration::from_millis(500));
    }

    #[test]
    fn removing_an_applied_timeout_closes_the_connection() {
        let timeout = toxic(r#"{"type":"timeout","attributes":{"timeout":0}}"#);
        let mut dir = DirectionToxics::new(key(0));
        assert_eq!(
            dir.sync(std::slice::from_ref(&timeout), Instant::now()),
            None
        );
        assert!(dir.is_blackholed());
        assert_eq!(dir.sync(&[], Instant::now()), Some(Ending::Close));
        assert!(dir.is_idle());
    }
}
