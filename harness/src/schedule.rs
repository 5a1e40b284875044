//! Schedules: when which fault starts and when its undo runs. Scripted (at given times) or drawn from a seed
//! out of what the scenario allows; either way a quiet period follows the last fault. The same seed gives
//! the same schedule, and every drawn value is logged before the first fault.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fault::Fault;

/// A scenario's `[schedule]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Users work this long before the first fault.
    #[serde(default = "default_warmup_ms")]
    pub warmup_ms: u64,
    /// Nothing happens for this long after the last undo, before the final reads.
    #[serde(default = "default_quiet_ms")]
    pub quiet_ms: u64,
    /// Faults at given times (from the end of the warm-up).
    #[serde(default, rename = "fault")]
    pub faults: Vec<Scripted>,
    /// Faults drawn from the seed.
    pub random: Option<RandomSpec>,
    /// Operator commands at given times (from the end of the warm-up): not faults, so no inverse.
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorAction>,
}

/// An operator command sent to a node's admin API (`POST /admin/<command>` with the run's token), as an
/// operator would run `poolnode admin <command>`: a quorum recovery, a database or pool failover.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAction {
    pub at_ms: u64,
    /// The node to send it to (a node name, or `principal-of:<pool>` / `mirror-of:<pool>`).
    pub node: String,
    pub command: String,
    /// The JSON body, written as a TOML table.
    #[serde(default)]
    pub body: Option<toml::Value>,
}

fn default_warmup_ms() -> u64 {
    4_000
}

fn default_quiet_ms() -> u64 {
    6_000
}

/// One scripted fault: `at_ms` after the warm-up, undone `for_ms` later (never, when absent).
#[derive(Debug, Clone, Deserialize)]
pub struct Scripted {
    pub at_ms: u64,
    pub for_ms: Option<u64>,
    #[serde(flatten)]
    pub fault: Fault,
}

/// What a randomized schedule may draw from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    /// How many faults, one after another.
    pub count: usize,
    /// The fault kinds allowed: `kill`, `stop`, `pause`, `isolate`, `partition` (the target against `rest`),
    /// `one_way` (the target's packets to `rest` dropped, or the other way, drawn), `bridge` (the target bridges
    /// two halves of `rest`, drawn), `ring` (majorities ring over the targets, in an order drawn), `halves` (the
    /// targets and `rest` cut into two halves drawn from the seed), `packet` (delay and loss drawn, on the target's
    /// packets to and from `rest`, or all of them without `rest`), `disk_full` and `disk_read_only` (on one of
    /// `disks`, drawn).
    pub kinds: Vec<String>,
    /// Nodes the faults may hit.
    pub targets: Vec<String>,
    /// Each fault lasts between these (ms).
    pub for_ms: [u64; 2],
    /// Pause between one undo and the next fault (ms).
    pub gap_ms: [u64; 2],
    /// For the partition shapes: the other side (nodes, pools or `site:<name>`).
    #[serde(default)]
    pub rest: Vec<String>,
    /// For the disk faults: the Back End nodes whose store disk they may hit (`be1-1`, `principal-of:be1`).
    #[serde(default)]
    pub disks: Vec<String>,
}

/// One fault of a schedule, with its times from the end of the warm-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    /// When its undo runs; `None`: it stays until the end (then undone before the final reads).
    pub undo_at_ms: Option<u64>,
    pub fault: Fault,
}

/// Why a schedule cannot be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("draw the schedule: {0}")]
pub struct ScheduleError(pub String);

impl ScheduleSpec {
    /// The schedule for `seed`: the scripted faults, then the drawn ones after them.
    pub fn plan(&self, seed: u64) -> Result<Vec<Planned>, ScheduleError> {
        let mut plan: Vec<Planned> = self
            .faults
            .iter()
            .enumerate()
            .map(|(i, s)| Planned {
                at_ms: s.at_ms,
                undo_at_ms: s.for_ms.map(|d| s.at_ms + d),
                fault: match &s.fault {
                    // Halves the scenario left unseeded are drawn from the run's seed, one draw per fault.
                    Fault::Halves { among, seed: None } => Fault::Halves {
                        among: among.clone(),
                        seed: Some(ChaCha8Rng::seed_from_u64(seed ^ i as u64).gen()),
                    },
                    // So are packet faults' random decisions.
                    Fault::Packet {
                        target,
                        peers,
                        packet,
                    } if packet.seed.is_none() => {
                        let mut packet = packet.clone();
                        packet.seed = Some(ChaCha8Rng::seed_from_u64(seed ^ i as u64).gen());
                        Fault::Packet {
                            target: target.clone(),
                            peers: peers.clone(),
                            packet,
                        }
                    }
                    other => other.clone(),
                },
            })
            .collect();
        if let Some(random) = &self.random {
            let start = plan
                .iter()
                .map(|p| p.undo_at_ms.unwrap_or(p.at_ms))
                .max()
                .unwrap_or(0);
            plan.extend(random.draw(seed, start)?);
        }
        plan.sort_by_key(|p| p.at_ms);
        Ok(plan)
    }

    /// When the schedule's last event happens (ms after the warm-up).
    pub fn end_ms(plan: &[Planned]) -> u64 {
        plan.iter()
            .map(|p| p.undo_at_ms.unwrap_or(p.at_ms))
            .max()
            .unwrap_or(0)
    }
}

impl RandomSpec {
    fn draw(&self, seed: u64, start_ms: u64) -> Result<Vec<Planned>, ScheduleError> {
        if self.kinds.is_empty() || self.targets.is_empty() {
            return Err(ScheduleError(
                "random: give at least one kind and one target".into(),
            ));
        }
        let range = |[lo, hi]: [u64; 2], what: &str| {
            if lo > hi {
                Err(ScheduleError(format!(
                    "random.{what}: [{lo}, {hi}] is empty"
                )))
            } else {
                Ok(lo..=hi)
            }
        };
        let (for_ms, gap_ms) = (range(self.for_ms, "for_ms")?, range(self.gap_ms, "gap_ms")?);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut at = start_ms;
        let mut out = Vec::new();
        for _ in 0..self.count {
            at += rng.gen_range(gap_ms.clone());
            let kind = self.kinds.choose(&mut rng).expect("not empty").clone();
            let target = self.targets.choose(&mut rng).expect("not empty").clone();
            let length = rng.gen_range(for_ms.clone());
            let fault = match kind.as_str() {
                "kill" => Fault::Kill { target },
                "stop" => Fault::Stop { target, grace_s: 2 },
                "pause" => Fault::Pause { target },
                "isolate" => Fault::Isolate { target },
                "partition" if !self.rest.is_empty() => Fault::Partition {
                    groups: vec![vec![target], self.rest.clone()],
                },
                "one_way" if !self.rest.is_empty() => {
                    let (from, to) = if rng.gen_bool(0.5) {
                        (vec![target], self.rest.clone())
                    } else {
                        (self.rest.clone(), vec![target])
                    };
                    Fault::OneWay { from, to }
                }
                "bridge" if self.rest.len() >= 2 => {
                    let mut rest = self.rest.clone();
                    rest.shuffle(&mut rng);
                    let other = rest.split_off(rest.len() / 2);
                    Fault::Bridge {
                        groups: vec![rest, other],
                        bridge: target,
                    }
                }
                "ring" => {
                    let mut nodes = self.targets.clone();
                    nodes.shuffle(&mut rng);
                    Fault::Ring { nodes }
                }
                "packet" => {
                    // A slow, lossy network around the target: 20–100 ms each way, 1–10 % loss.
                    let delay_ms = rng.gen_range(20..=100) as f64;
                    let spec = netfault::FaultSpec {
                        direction: netfault::Direction::Both,
                        delay_ms,
                        jitter_ms: delay_ms / 10.0,
                        loss: Some(netfault::Loss::Random(rng.gen_range(1..=10) as f64 / 100.0)),
                        seed: Some(rng.gen()),
                        ..netfault::FaultSpec::default()
                    };
                    Fault::Packet {
                        target,
                        peers: self.rest.clone(),
                        packet: spec,
                    }
                }
                "halves" => Fault::Halves {
                    among: self.targets.iter().chain(&self.rest).cloned().collect(),
                    seed: Some(rng.gen()),
                },
                "disk_full" | "disk_read_only" if !self.disks.is_empty() => {
                    let target = self.disks.choose(&mut rng).expect("not empty").clone();
                    if kind == "disk_full" {
                        Fault::DiskFull { target }
                    } else {
                        Fault::DiskReadOnly { target }
                    }
                }
                other => {
                    return Err(ScheduleError(format!(
                        "random.kinds: `{other}` cannot be drawn (kill, stop, pause, isolate, ring, halves, packet; \
                         partition and one_way with `rest`; bridge with two or more in `rest`; disk_full and \
                         disk_read_only with `disks`)"
                    )))
                }
            };
            out.push(Planned {
                at_ms: at,
                undo_at_ms: Some(at + length),
                fault,
            });
            at += length;
        }
        Ok(out)
    }
}

/// The schedule as the log line before the first fault shows it.
pub fn describe(seed: u64, plan: &[Planned]) -> String {
    let mut s = format!("seed={seed} faults={}", plan.len());
    for p in plan {
        let undo = p
            .undo_at_ms
            .map(|u| format!("{u}ms"))
            .unwrap_or_else(|| "end".into());
        s.push_str(&format!(
            "\n  at {}ms {} {} until {undo}",
            p.at_ms,
            p.fault.kind(),
            p.fault.target()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScheduleSpec {
        toml::from_str(
            r#"
            warmup_ms = 1000
            [[fault]]
            at_ms = 0
            for_ms = 2000
            kind = "kill"
            target = "fe1-1"
            [random]
            count = 4
            kinds = ["kill", "pause", "isolate", "partition"]
            targets = ["fe1-1", "fe1-2", "fe1-3"]
            rest = ["fe1"]
            for_ms = [1000, 5000]
            gap_ms = [500, 2000]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let s = spec();
        assert_eq!(s.plan(42).unwrap(), s.plan(42).unwrap());
        assert_ne!(s.plan(42).unwrap(), s.plan(43).unwrap());
        insta::assert_snapshot!(describe(42, &s.plan(42).unwrap()));
    }

    #[test]
    fn drawn_faults_follow_the_scripted_ones_without_overlap() {
        let plan = spec().plan(7).unwrap();
        assert_eq!(plan.len(), 5);
        for pair in plan.windows(2) {
            assert!(pair[1].at_ms >= pair[0].undo_at_ms.unwrap(), "{pair:?}");
        }
    }

    #[test]
    fn every_partition_shape_can_be_drawn_and_unseeded_halves_take_the_runs_seed() {
        let mut s = spec();
        s.random.as_mut().unwrap().kinds = ["one_way", "bridge", "ring", "halves", "packet"]
            .map(String::from)
            .to_vec();
        s.random.as_mut().unwrap().rest = vec!["site:dc1".into(), "site:dc2".into()];
        s.random.as_mut().unwrap().count = 40;
        let kinds: std::collections::BTreeSet<&str> = s
            .plan(3)
            .unwrap()
            .iter()
            .map(|p| p.fault.kind())
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            kinds,
            ["bridge", "halves", "kill", "one_way", "packet", "ring"].into()
        );
        let scripted: ScheduleSpec = toml::from_str(
            r#"
            [[fault]]
            at_ms = 0
            kind = "halves"
            among = ["fe1", "fe2"]
            "#,
        )
        .unwrap();
        let seed_of = |run: u64| match &scripted.plan(run).unwrap()[0].fault {
            Fault::Halves { seed, .. } => seed.unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(seed_of(5), seed_of(5));
        assert_ne!(seed_of(5), seed_of(6));
    }

    #[test]
    fn disk_faults_are_drawn_on_the_disks_named_and_only_there() {
        let mut s = spec();
        let r = s.random.as_mut().unwrap();
        r.kinds = ["disk_full", "disk_read_only"].map(String::from).to_vec();
        r.count = 20;
        assert!(s.plan(1).unwrap_err().0.contains("disks"), "no disks named");
        let r = s.random.as_mut().unwrap();
        r.disks = vec!["principal-of:be1".into(), "be2-1".into()];
        let plan = s.plan(1).unwrap();
        let drawn: std::collections::BTreeSet<(&str, String)> = plan
            .iter()
            .filter(|p| p.fault.kind().starts_with("disk"))
            .map(|p| (p.fault.kind(), p.fault.target()))
            .collect();
        assert_eq!(
            drawn,
            [
                ("disk_full", "be2-1".to_string()),
                ("disk_full", "principal-of:be1".to_string()),
                ("disk_read_only", "be2-1".to_string()),
                ("disk_read_only", "principal-of:be1".to_string()),
            ]
            .into()
        );
    }

    #[test]
    fn a_kind_that_cannot_be_drawn_is_an_error() {
        let mut s = spec();
        s.random.as_mut().unwrap().kinds = vec!["meteor".into()];
        assert!(s.plan(1).unwrap_err().0.contains("meteor"));
    }
}
