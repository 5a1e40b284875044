//! The plan for one UDP datagram through the toxics of one direction of a flow: when each copy of
//! it goes out (none when lost), possibly changed, and the reply a SIP toxic sends back instead.
//!
//! SIP toxics judge the datagram first (one datagram is one message); the other toxics then act in
//! the proxy's order on every copy. Draws come from each toxic's seeded stream, so the same seed
//! and the same datagrams on a flow give the same losses, duplicates and corruptions.
//!
//! This module does no I/O, so its decisions are unit-tested without sockets.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::time::Instant;

use crate::kind::ToxicKind;
use crate::sip_rule::Verdict;
use crate::toxic::DirectionToxics;

/// A datagram that would wait longer than this behind a `bandwidth` cap is dropped, as a full
/// router queue drops it.
const BANDWIDTH_QUEUE_MAX: Duration = Duration::from_secs(2);

/// What to do with one datagram.
#[derive(Debug, Default)]
pub struct Planned {
    /// Each copy to send, and when; empty when the datagram is lost, dropped or held.
    pub sends: Vec<(Instant, Bytes)>,
    /// Bytes to send back to the datagram's sender instead (a SIP response).
    pub reply: Option<Bytes>,
}

fn chance(rng: &mut impl Rng, probability: f64) -> bool {
    probability > 0.0 && (probability >= 1.0 || rng.gen::<f64>() < probability)
}

impl DirectionToxics {
    /// Plans one datagram that arrived at `arrived`.
    pub fn plan_datagram(&mut self, data: Bytes, arrived: Instant) -> Planned {
        let mut at = arrived;
        if self
            .active
            .iter()
            .any(|active| active.applies && matches!(active.toxic.kind, ToxicKind::Sip { .. }))
        {
            match self.judge(&data) {
                Verdict::Pass => {}
                Verdict::Drop | Verdict::Hold => return Planned::default(),
                Verdict::Delay(delay) => at += delay,
                Verdict::Reply(reply) => {
                    return Planned {
                        sends: Vec::new(),
                        reply: Some(reply),
                    }
                }
            }
        }
        let mut copies = vec![(at, data)];
        for active in self.active.iter_mut().filter(|active| active.applies) {
            let rng = &mut active.rng;
            match active.toxic.kind {
                ToxicKind::Latency {
                    latency_ms,
                    jitter_ms,
                } => {
                    let jitter = if jitter_ms > 0 {
                        rng.gen_range(-(jitter_ms as i64)..=jitter_ms as i64)
                    } else {
                        0
                    };
                    let delay = Duration::from_millis((latency_ms as i64 + jitter).max(0) as u64);
                    for copy in &mut copies {
                        copy.0 += delay;
                    }
                }
                ToxicKind::Bandwidth { rate_kbps } if rate_kbps > 0 => {
                    let rate_bytes_per_s = rate_kbps.saturating_mul(1000) as f64;
                    let next_free = &mut active.next_free;
                    copies.retain_mut(|(at, bytes)| {
                        let start = next_free.map_or(*at, |free| free.max(*at));
                        if start.saturating_duration_since(arrived) > BANDWIDTH_QUEUE_MAX {
                            return false;
                        }
                        *at =
                            start + Duration::from_secs_f64(bytes.len() as f64 / rate_bytes_per_s);
                        *next_free = Some(*at);
                        true
                    });
                }
                ToxicKind::Loss { probability } => {
                    copies.retain(|_| !chance(rng, probability));
                }
                ToxicKind::LossBurst {
                    p,
                    r,
                    loss_good,
                    loss_bad,
                } => {
                    let loss = if active.bad_state {
                        loss_bad
                    } else {
                        loss_good
                    };
                    if chance(rng, loss) {
                        copies.clear();
                    }
                    active.bad_state = if active.bad_state {
                        !chance(rng, r)
                    } else {
                        chance(rng, p)
                    };
                }
                ToxicKind::Duplicate { probability } => {
                    let mut doubled = Vec::with_capacity(copies.len() * 2);
                    for copy in copies {
                        if chance(rng, probability) {
                            doubled.push(copy.clone());
                        }
                        doubled.push(copy);
                    }
                    copies = doubled;
                }
                ToxicKind::Reorder {
                    probability,
                    delay_ms,
                } if chance(rng, probability) => {
                    for copy in &mut copies {
                        copy.0 += Duration::from_millis(delay_ms);
                    }
                }
                ToxicKind::Corrupt { probability } => {
                    for copy in &mut copies {
                        if !copy.1.is_empty() && chance(rng, probability) {
                            let mut bytes = BytesMut::from(&copy.1[..]);
                            let bit = rng.gen_range(0..bytes.len() * 8);
                            bytes[bit / 8] ^= 1 << (bit % 8);
                            copy.1 = bytes.freeze();
                        }
                    }
                }
                _ => {}
            }
            if copies.is_empty() {
                break;
            }
        }
        Planned {
            sends: copies,
            reply: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Stream, Toxic};
    use crate::toxic::DirectionKey;

    fn direction(toxic: &str, ordinal: u64) -> DirectionToxics {
        let toxic = Toxic::parse_new(toxic.as_bytes()).unwrap();
        let mut direction = DirectionToxics::new(DirectionKey {
            seed: 3,
            proxy: "p".into(),
            connection_ordinal: ordinal,
            stream: Stream::Downstream,
        });
        direction.sync(&[toxic], Instant::now());
        direction
    }

    fn delivered(dir: &mut DirectionToxics, count: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..count)
            .map(|_| {
                dir.plan_datagram(Bytes::from_static(b"0123456789"), now)
                    .sends
                    .len()
            })
            .collect()
    }

    #[test]
    fn loss_drops_its_share_and_replays_per_flow() {
        let toxic = r#"{"type":"loss","attributes":{"probability":0.3}}"#;
        let first = delivered(&mut direction(toxic, 0), 2000);
        let lost = first.iter().filter(|n| **n == 0).count();
        assert!((500..700).contains(&lost), "lost {lost} of 2000");
        assert_eq!(first, delivered(&mut direction(toxic, 0), 2000));
        assert_ne!(first, delivered(&mut direction(toxic, 1), 2000));
    }

    #[test]
    fn loss_burst_loses_in_runs() {
        let toxic = r#"{"type":"loss_burst","attributes":{"p":0.05,"r":0.25}}"#;
        let pattern = delivered(&mut direction(toxic, 0), 4000);
        let lost = pattern.iter().filter(|n| **n == 0).count();
        // Stationary share in the bad state: p / (p + r) = 1/6; mean run 1/r = 4.
        assert!((400..1000).contains(&lost), "lost {lost}");
        let runs = pattern
            .windows(2)
            .filter(|w| w[0] == 1 && w[1] == 0)
            .count();
        assert!(
            lost as f64 / runs as f64 > 2.5,
            "{lost} lost in {runs} runs"
        );
    }

    #[test]
    fn duplicate_corrupt_and_reorder_change_copies() {
        let mut dup = direction(r#"{"type":"duplicate","attributes":{"probability":1}}"#, 0);
        assert_eq!(delivered(&mut dup, 3), [2, 2, 2]);
        let mut corrupt = direction(r#"{"type":"corrupt","attributes":{"probability":1}}"#, 0);
        let sent = Bytes::from_static(b"0123456789");
        let got = corrupt.plan_datagram(sent.clone(), Instant::now()).sends;
        let flipped: u32 = got[0]
            .1
            .iter()
            .zip(sent.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1);
        let mut reorder = direction(
            r#"{"type":"reorder","attributes":{"probability":1,"delay":50}}"#,
            0,
        );
        let now = Instant::now();
        let planned = reorder.plan_datagram(sent, now).sends;
        assert_eq!(planned[0].0, now + Duration::from_millis(50));
    }

    #[test]
    fn bandwidth_spaces_datagrams_by_their_size() {
        let mut dir = direction(r#"{"type":"bandwidth","attributes":{"rate":10}}"#, 0);
        let now = Instant::now();
        let times: Vec<_> = (0..3)
            .map(|_| dir.plan_datagram(Bytes::from(vec![0u8; 1000]), now).sends[0].0 - now)
            .collect();
        assert_eq!(times, [100, 200, 300].map(Duration::from_millis).to_vec());
    }
}
