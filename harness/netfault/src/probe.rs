//! `netfault probe` and `netfault echo`: sequenced, checksummed UDP datagrams sent to an echo responder, to
//! measure what a fault does (loss, RTT, duplicates, reordering, corruption, throughput) and that its undo
//! restored normal.
//!
//! A probe datagram is `"NFPR"`, a run id, the sequence number, padding, and an FNV-1a checksum of all that in
//! its last 8 bytes. The echo sends each datagram back unchanged. The probe ends at `count * interval +
//! timeout` at the latest, whatever is lost.

use crate::spec::{FaultSpec, Protocol};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"NFPR";
/// The smallest datagram the probe sends.
pub const MIN_SIZE: usize = 20;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn datagram(run: u32, seq: u32, size: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(size);
    d.extend_from_slice(MAGIC);
    d.extend_from_slice(&run.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend((d.len()..size - 8).map(|i| (i as u32).wrapping_mul(seq | 1) as u8));
    let sum = fnv1a(&d);
    d.extend_from_slice(&sum.to_be_bytes());
    d
}

enum Parsed {
    Valid(u32),
    Corrupted,
    Foreign,
}

fn parse(d: &[u8], run: u32) -> Parsed {
    if d.len() < MIN_SIZE {
        return Parsed::Foreign;
    }
    let (body, sum) = d.split_at(d.len() - 8);
    if fnv1a(body).to_be_bytes() != sum {
        // A corrupted datagram of another run cannot be told apart; counted as corrupted all the same.
        return Parsed::Corrupted;
    }
    if &body[0..4] != MAGIC || u32::from_be_bytes(body[4..8].try_into().unwrap()) != run {
        return Parsed::Foreign;
    }
    Parsed::Valid(u32::from_be_bytes(body[8..12].try_into().unwrap()))
}

/// What to send.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub to: Ipv4Addr,
    pub port: u16,
    pub count: u32,
    pub interval: Duration,
    /// Datagram size, bytes (at least [`MIN_SIZE`]).
    pub size: usize,
    /// How long replies are awaited after the last datagram is sent.
    pub timeout: Duration,
}

/// The result of a probe, printed as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub to: Ipv4Addr,
    pub port: u16,
    pub sent: u64,
    /// Datagrams whose reply came back (each counted once).
    pub received: u64,
    /// `1 - received / sent`.
    pub loss_rate: f64,
    /// Replies beyond the first for a datagram.
    pub duplicates: u64,
    /// Replies (first ones) that came after a reply to a later datagram.
    pub reordered: u64,
    /// Replies whose checksum did not match.
    pub corrupted: u64,
    /// Runs of consecutive datagrams without a reply.
    pub loss_runs: u64,
    /// Mean length of those runs (0 without loss).
    pub mean_loss_run: f64,
    pub max_loss_run: u64,
    pub rtt_min_us: Option<u64>,
    pub rtt_p50_us: Option<u64>,
    pub rtt_p90_us: Option<u64>,
    pub rtt_p99_us: Option<u64>,
    pub rtt_max_us: Option<u64>,
    /// Payload throughput of the replies, kbit/s, between the first and the last (0 with fewer than 2).
    pub rx_kbit: f64,
    pub duration_ms: u64,
}

/// How far a measurement may be from what a spec predicts.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Absolute difference allowed on rates (loss, duplicates).
    pub rate: f64,
    /// Allowed difference on the median RTT, milliseconds; it must also cover the RTT without the fault.
    pub delay_ms: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rate: 0.08,
            delay_ms: 20.0,
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// Send the probe and collect the replies.
pub fn probe(opts: &ProbeOptions) -> Result<ProbeReport, String> {
    if opts.size < MIN_SIZE || opts.size > 65_000 {
        return Err(format!("size must be in {MIN_SIZE}..=65000"));
    }
    let socket =
        UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .map_err(|e| e.to_string())?;
    let target = SocketAddr::V4(SocketAddrV4::new(opts.to, opts.port));
    // Tells this probe's replies from those of an earlier probe to the same echo.
    let run = rand::random::<u32>();
    let start = Instant::now();
    let deadline = start + opts.interval * opts.count + opts.timeout;
    let sending_done = Arc::new(AtomicBool::new(false));
    let count = opts.count as usize;

    let rx_socket = socket.try_clone().map_err(|e| e.to_string())?;
    let done = sending_done.clone();
    let grace = opts.timeout.min(Duration::from_millis(300));
    let receiver = std::thread::spawn(move || {
        let mut arrivals: Vec<(u32, Instant, usize)> = Vec::new();
        let mut corrupted = 0u64;
        let mut seen = vec![false; count];
        let mut unique = 0usize;
        let mut all_since: Option<Instant> = None;
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= deadline || all_since.is_some_and(|t| now >= t + grace) {
                break;
            }
            match rx_socket.recv_from(&mut buf) {
                // The echo may answer from another of its addresses (a wildcard-bound socket answers from
                // the primary one); the port and the run id tell its replies apart.
                Ok((n, from)) if from.port() == target.port() => match parse(&buf[..n], run) {
                    Parsed::Valid(seq) if (seq as usize) < count => {
                        if !seen[seq as usize] {
                            seen[seq as usize] = true;
                            unique += 1;
                        }
                        arrivals.push((seq, Instant::now(), n));
                    }
                    Parsed::Corrupted => corrupted += 1,
                    _ => {}
                },
                _ => {}
            }
            if unique == count && all_since.is_none() && done.load(Ordering::SeqCst) {
                all_since = Some(Instant::now());
            }
        }
        (arrivals, corrupted)
    });

    let mut sent_at = Vec::with_capacity(count);
    for seq in 0..opts.count {
        let at = start + opts.interval * seq;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        sent_at.push(Instant::now());
        // A datagram the kernel refuses counts as sent and lost.
        let _ = socket.send_to(&datagram(run, seq, opts.size), target);
    }
    sending_done.store(true, Ordering::SeqCst);
    let (arrivals, corrupted) = receiver
        .join()
        .map_err(|_| "the probe's receiver panicked".to_string())?;
    Ok(report(
        opts,
        &sent_at,
        &arrivals,
        corrupted,
        start.elapsed(),
    ))
}

fn report(
    opts: &ProbeOptions,
    sent_at: &[Instant],
    arrivals: &[(u32, Instant, usize)],
    corrupted: u64,
    elapsed: Duration,
) -> ProbeReport {
    let count = sent_at.len();
    let mut got = vec![0u32; count];
    let mut rtts = Vec::new();
    let mut reordered = 0;
    let mut max_seq: Option<u32> = None;
    let mut bytes = 0usize;
    for (seq, at, n) in arrivals {
        let s = *seq as usize;
        got[s] += 1;
        bytes += n;
        if got[s] == 1 {
            rtts.push(at.saturating_duration_since(sent_at[s]).as_micros() as u64);
            if max_seq.is_some_and(|m| *seq < m) {
                reordered += 1;
            }
            max_seq = Some(max_seq.map_or(*seq, |m| m.max(*seq)));
        }
    }
    rtts.sort_unstable();
    let received = got.iter().filter(|g| **g > 0).count() as u64;
    let duplicates = got.iter().map(|g| u64::from(g.saturating_sub(1))).sum();
    let (mut loss_runs, mut max_loss_run, mut run) = (0u64, 0u64, 0u64);
    for g in &got {
        if *g == 0 {
            run += 1;
            if run == 1 {
                loss_runs += 1;
            }
            max_loss_run = max_loss_run.max(run);
        } else {
            run = 0;
        }
    }
    let lost = count as u64 - received;
    let rx_kbit = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if arrivals.len() >= 2 && last.1 > first.1 => {
            (bytes - first.2) as f64 * 8.0 / last.1.duration_since(first.1).as_secs_f64() / 1000.0
        }
        _ => 0.0,
    };
    ProbeReport {
        to: opts.to,
        port: opts.port,
        sent: count as u64,
        received,
        loss_rate: if count == 0 {
            0.0
        } else {
            lost as f64 / count as f64
        },
        duplicates,
        reordered,
        corrupted,
        loss_runs,
        mean_loss_run: if loss_runs == 0 {
            0.0
        } else {
            lost as f64 / loss_runs as f64
        },
        max_loss_run,
        rtt_min_us: rtts.first().copied(),
        rtt_p50_us: percentile(&rtts, 0.5),
        rtt_p90_us: percentile(&rtts, 0.9),
        rtt_p99_us: percentile(&rtts, 0.99),
        rtt_max_us: rtts.last().copied(),
        rx_kbit,
        duration_ms: elapsed.as_millis() as u64,
    }
}

impl ProbeReport {
    /// Parse the JSON line printed by `netfault probe`.
    pub fn from_json(line: &str) -> Result<ProbeReport, String> {
        serde_json::from_str(line.trim()).map_err(|e| format!("invalid probe report: {e}"))
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a probe report always serializes")
    }

    /// Check this report, measured by a probe run in the faulted node towards an echo, against what `spec`
    /// predicts: loss rate and duplicate rate within `tol.rate`, median RTT within `tol.delay_ms` of the
    /// delay of each affected direction. A target outside `spec.peers` (or another protocol than UDP) must be
    /// unaffected. The rate limit's queueing makes RTT unpredictable, so RTT is not checked under a rate.
    pub fn matches(&self, spec: &FaultSpec, tol: &Tolerance) -> Result<(), String> {
        if self.sent == 0 {
            return Err("the probe sent nothing".into());
        }
        let affected = (spec.peers.is_empty() || spec.peers.contains(&self.to))
            && spec.protocol.is_none_or(|p| p == Protocol::Udp);
        let legs = if affected {
            i32::from(spec.direction.egress()) + i32::from(spec.direction.ingress())
        } else {
            0
        };
        let loss = spec.loss.map_or(0.0, |l| l.mean_loss());
        let expected_loss = 1.0 - (1.0 - loss).powi(legs);
        if (self.loss_rate - expected_loss).abs() > tol.rate {
            return Err(format!(
                "loss rate {:.3} is not within {:.3} of the expected {:.3}",
                self.loss_rate, tol.rate, expected_loss
            ));
        }
        if self.received == 0 {
            return if expected_loss >= 1.0 - tol.rate {
                Ok(())
            } else {
                Err("no reply came back".into())
            };
        }
        let expected_dups = if legs == 0 {
            0.0
        } else {
            (1.0 + spec.duplicate).powi(legs) - 1.0
        };
        let dup_rate = self.duplicates as f64 / self.received as f64;
        if (dup_rate - expected_dups).abs() > tol.rate {
            return Err(format!(
                "duplicates per reply {dup_rate:.3} are not within {:.3} of the expected {expected_dups:.3}",
                tol.rate
            ));
        }
        if spec.rate_kbit.is_none() || legs == 0 {
            let added = f64::from(legs) * spec.delay_ms;
            let p50_ms = self.rtt_p50_us.unwrap_or(0) as f64 / 1000.0;
            let low = if spec.reorder < 0.5 {
                added - tol.delay_ms
            } else {
                0.0
            };
            let high = added + tol.delay_ms;
            if p50_ms < low || p50_ms > high {
                return Err(format!(
                    "median RTT {p50_ms:.1} ms is not within {:.1} ms of the added delay {added:.1} ms",
                    tol.delay_ms
                ));
            }
        }
        Ok(())
    }
}

/// Echo UDP datagrams on `port` back to their sender until `duration` has passed or `stop` is set; returns
/// how many were echoed.
pub fn echo(port: u16, duration: Duration, stop: &AtomicBool) -> Result<u64, String> {
    let socket = UdpSocket::bind(("0.0.0.0", port))
        .map_err(|e| format!("cannot bind UDP port {port}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let end = Instant::now() + duration;
    let mut buf = vec![0u8; 65_536];
    let mut echoed = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if socket.send_to(&buf[..n], from).is_ok() {
                echoed += 1;
            }
        }
    }
    Ok(echoed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Direction, Loss};

    #[test]
    fn datagrams_check_their_integrity() {
        let d = datagram(7, 3, 64);
        assert_eq!(d.len(), 64);
        assert!(matches!(parse(&d, 7), Parsed::Valid(3)));
        assert!(matches!(parse(&d, 8), Parsed::Foreign));
        let mut bad = d.clone();
        bad[30] ^= 4;
        assert!(matches!(parse(&bad, 7), Parsed::Corrupted));
    }

    #[test]
    fn loopback_probe_sees_no_fault() {
        let echo_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = echo_socket.local_addr().unwrap().port();
        drop(echo_socket);
        let server =
            std::thread::spawn(move || echo(port, Duration::from_secs(3), &AtomicBool::new(false)));
        std::thread::sleep(Duration::from_millis(100));
        let opts = ProbeOptions {
            to: Ipv4Addr::LOCALHOST,
            port,
            count: 50,
            interval: Duration::from_millis(2),
            size: 64,
            timeout: Duration::from_millis(500),
        };
        let r = probe(&opts).unwrap();
        assert_eq!(
            (r.sent, r.received, r.duplicates, r.corrupted),
            (50, 50, 0, 0),
            "{r:?}"
        );
        r.matches(&FaultSpec::default(), &Tolerance::default())
            .unwrap();
        let delayed = FaultSpec {
            delay_ms: 100.0,
            ..FaultSpec::default()
        };
        assert!(r
            .matches(&delayed, &Tolerance::default())
            .unwrap_err()
            .contains("median RTT"));
        let elsewhere = FaultSpec {
            peers: vec![Ipv4Addr::new(10, 9, 9, 9)],
            loss: Some(Loss::Random(1.0)),
            direction: Direction::Both,
            ..FaultSpec::default()
        };
        r.matches(&elsewhere, &Tolerance::default()).unwrap();
        assert_eq!(ProbeReport::from_json(&r.to_json()).unwrap(), r);
        let _ = server;
    }
}
