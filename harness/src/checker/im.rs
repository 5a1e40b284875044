//! IM delivery. Every acknowledged IM is delivered exactly once to its recipient, and per sender and recipient
//! in send order; every IM refused with an explicit error (`fail`) is never delivered; an indeterminate one
//! (`timeout`, or no answer by the end) may be delivered at most once and is counted apart. An acknowledged IM
//! with no delivery is a loss. IMs are matched by their id (sender, seq).

use std::collections::BTreeMap;

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{History, ImId, Op, Operation, Outcome};

/// What happened to the IMs of a history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImTally {
    pub acked: u64,
    /// Deliveries of distinct IMs (duplicates count once).
    pub delivered: u64,
    /// Acknowledged, never delivered.
    pub lost: u64,
    pub duplicated: u64,
    /// Timed out or unanswered: allowed either way, counted apart.
    pub indeterminate_delivered: u64,
    pub indeterminate_not_delivered: u64,
}

struct Send<'a> {
    op: &'a Operation,
    to: &'a str,
}

struct Delivery {
    recipient: String,
    at_us: u64,
}

/// Checks IM delivery.
#[derive(Clone, Debug)]
pub struct ImDelivery {
    /// How long after its acknowledgement an IM may still arrive: an IM acknowledged less than this before the
    /// history's end, and not delivered, is undecided rather than lost.
    pub delivery_grace_ms: u64,
}

impl Default for ImDelivery {
    fn default() -> Self {
        ImDelivery {
            delivery_grace_ms: 5_000,
        }
    }
}

impl ImDelivery {
    /// Judges the IMs and counts them.
    pub fn judge(&self, history: &History) -> (Verdict, ImTally) {
        let name = self.name();
        let operations = history.operations();
        let mut sends: BTreeMap<ImId, Send> = BTreeMap::new();
        let mut deliveries: BTreeMap<ImId, Vec<Delivery>> = BTreeMap::new();
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        let mut tally = ImTally::default();
        for op in &operations {
            match (&op.op, &op.outcome) {
                (Op::ImSend { to, seq }, _) => {
                    let id = ImId {
                        sender: op.user.clone(),
                        seq: *seq,
                    };
                    if sends.insert(id.clone(), Send { op, to }).is_some() {
                        // Two sends with one id make every match below meaningless: the workload is broken.
                        undecided.push(format!(
                            "IM ({}, {}) was sent twice with the same id",
                            id.sender, id.seq
                        ));
                    }
                }
                (Op::ImReceived { from, seq }, Outcome::Ok(_)) => {
                    deliveries
                        .entry(ImId {
                            sender: from.clone(),
                            seq: *seq,
                        })
                        .or_default()
                        .push(Delivery {
                            recipient: op.user.clone(),
                            at_us: op.complete_at_us.unwrap_or(0),
                        });
                }
                _ => {}
            }
        }
        if sends.is_empty() {
            return (Verdict::Unknown("no IM was sent".into()), tally);
        }
        let end_us = history.last_at_us();
        for (id, send) in &sends {
            let got = deliveries.get(id).map_or(&[][..], Vec::as_slice);
            let im = format!("IM ({}, {}) to {}", id.sender, id.seq, send.to);
            for d in got.iter().filter(|d| d.recipient != send.to) {
                violations.push(Violation::new(
                    name,
                    Some(&d.recipient),
                    Some(d.at_us),
                    format!("{im} delivered to {} instead", d.recipient),
                ));
            }
            if got.len() > 1 {
                tally.duplicated += 1;
                violations.push(Violation::new(
                    name,
                    Some(send.to),
                    Some(got[1].at_us),
                    format!("{im} delivered {} times", got.len()),
                ));
            }
            if !got.is_empty() {
                tally.delivered += 1;
            }
            match &send.op.outcome {
                Outcome::Ok(_) => {
                    tally.acked += 1;
                    let acked_at = send.op.complete_at_us.unwrap_or(0);
                    if got.is_empty() {
                        if end_us.saturating_sub(acked_at) >= self.delivery_grace_ms * 1000 {
                            tally.lost += 1;
                            violations.push(Violation::new(
                                name,
                                Some(&id.sender),
                                Some(acked_at),
                                format!("{im} acknowledged but never delivered"),
                            ));
                        } else {
                            undecided.push(format!(
                                "{im} acknowledged within the delivery grace before the end"
                            ));
                        }
                    }
                }
                Outcome::Fail(error) => {
                    if let Some(d) = got.first() {
                        violations.push(Violation::new(
                            name,
                            Some(&id.sender),
                            Some(d.at_us),
                            format!(
                                "{im} delivered although the sender got an error ({})",
                                error.as_deref().unwrap_or("no reason")
                            ),
                        ));
                    }
                }
                Outcome::Timeout | Outcome::Pending => {
                    if got.is_empty() {
                        tally.indeterminate_not_delivered += 1;
                    } else {
                        tally.indeterminate_delivered += 1;
                    }
                }
            }
        }
        for (id, got) in &deliveries {
            if !sends.contains_key(id) {
                violations.push(Violation::new(
                    name,
                    Some(&got[0].recipient),
                    Some(got[0].at_us),
                    format!("IM ({}, {}) delivered but never sent", id.sender, id.seq),
                ));
            }
        }
        violations.extend(self.order_violations(&sends, &deliveries));
        (Verdict::from_findings(violations, undecided), tally)
    }

    /// Per sender and recipient: an acknowledged IM must be delivered before any IM the sender sent after that
    /// acknowledgement. (IMs sent concurrently have no order to keep.)
    fn order_violations(
        &self,
        sends: &BTreeMap<ImId, Send>,
        deliveries: &BTreeMap<ImId, Vec<Delivery>>,
    ) -> Vec<Violation> {
        // (sender, recipient) → first deliveries of that pair's IMs, in arrival order.
        let mut by_pair: BTreeMap<(&str, &str), Vec<(u64, &ImId)>> = BTreeMap::new();
        for (id, got) in deliveries {
            if let (Some(send), Some(first)) = (sends.get(id), got.first()) {
                by_pair
                    .entry((&id.sender, send.to))
                    .or_default()
                    .push((first.at_us, id));
            }
        }
        let mut violations = Vec::new();
        for ((sender, recipient), mut arrivals) in by_pair {
            arrivals.sort();
            // The latest invoke among IMs already delivered, and which IM it was.
            let mut latest: Option<(u64, &ImId)> = None;
            for (at_us, id) in arrivals {
                let send = &sends[id];
                if let (Outcome::Ok(_), Some((invoked, earlier))) = (&send.op.outcome, latest) {
                    if send.op.complete_at_us.unwrap_or(0) < invoked {
                        violations.push(Violation::new(
                            self.name(),
                            Some(recipient),
                            Some(at_us),
                            format!(
                                "IM ({sender}, {}) arrived after IM ({sender}, {}), which was sent after it was \
                                 acknowledged",
                                id.seq, earlier.seq
                            ),
                        ));
                    }
                }
                let invoked = send.op.start_us();
                if latest.is_none_or(|(t, _)| invoked > t) {
                    latest = Some((invoked, id));
                }
            }
        }
        violations
    }
}

impl Checker for ImDelivery {
    fn name(&self) -> &'static str {
        "im"
    }

    fn check(&self, history: &History) -> Verdict {
        self.judge(history).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{clean, got, im};

    #[test]
    fn the_clean_run_is_valid_and_counted() {
        let (v, tally) = ImDelivery::default().judge(&clean().build());
        assert_eq!(v, Verdict::Valid);
        assert_eq!((tally.acked, tally.delivered, tally.lost), (5, 5, 0));
    }

    #[test]
    fn a_lost_im_is_a_violation() {
        let h = clean().ok("carol", im("alice", 1), 20_000, 20_050).build();
        let (v, tally) = ImDelivery::default().judge(&h);
        assert_eq!(tally.lost, 1);
        assert!(
            v.violations()[0]
                .what
                .contains("IM (carol, 1) to alice acknowledged but never delivered"),
            "{v:?}"
        );
    }

    #[test]
    fn a_duplicate_im_is_a_violation() {
        let h = clean().observe("bob", got("alice", 2), 15_500).build();
        let v = ImDelivery::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0].what.contains("delivered 2 times"));
    }

    #[test]
    fn an_out_of_order_im_is_a_violation() {
        // carol → alice: 1 is acknowledged before 2 is sent, yet 2 arrives first.
        let h = clean()
            .ok("carol", im("alice", 1), 20_000, 20_050)
            .ok("carol", im("alice", 2), 20_100, 20_150)
            .observe("alice", got("carol", 2), 20_120)
            .observe("alice", got("carol", 1), 20_200)
            .build();
        let v = ImDelivery::default().check(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(v.violations()[0]
            .what
            .contains("arrived after IM (carol, 2)"));
    }

    #[test]
    fn refused_and_indeterminate_ims_are_judged_apart() {
        let h = clean()
            .fail("carol", im("alice", 1), 20_000, 20_050, "503")
            .timeout("carol", im("alice", 2), 21_000, 31_000)
            .observe("alice", got("carol", 2), 21_100)
            .timeout("carol", im("alice", 3), 32_000, 42_000)
            .build();
        let (v, tally) = ImDelivery::default().judge(&h);
        assert_eq!(v, Verdict::Valid);
        assert_eq!(
            (
                tally.indeterminate_delivered,
                tally.indeterminate_not_delivered
            ),
            (1, 1)
        );
        let h = clean()
            .fail("carol", im("alice", 1), 20_000, 20_050, "503")
            .observe("alice", got("carol", 1), 20_040)
            .build();
        assert!(ImDelivery::default().check(&h).violations()[0]
            .what
            .contains("although the sender got an error"));
    }

    #[test]
    fn no_im_or_one_acked_at_the_end_is_unknown() {
        assert!(matches!(
            ImDelivery::default().check(&History::default()),
            Verdict::Unknown(_)
        ));
        let h = clean().ok("carol", im("alice", 1), 59_000, 59_010).build();
        assert!(
            matches!(ImDelivery::default().check(&h), Verdict::Unknown(r) if r.contains("grace"))
        );
    }
}
