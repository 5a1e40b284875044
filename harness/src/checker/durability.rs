//! Durability: every acknowledged contact or presence write stays visible to later reads and is never rolled
//! back. For a pool failover, where the backup pool serves from a copy made every few seconds, the loss is
//! measured (count, span, how far back before the fault) and judged against an RPO bound.
//!
//! The RPO excuses only what a fault could take before anyone knew: a write acknowledged *before* a fault took
//! effect, by at most the bound, measured from the acknowledgement to the fault's moment of effect. A write
//! acknowledged while a fault is in force (the backup pool's own writes during a site loss), or after the last
//! fault, that is later lost is always a violation. Operator commands are not faults: they excuse nothing.
//!
//! Each piece of user data is a register: a contact-list entry (owner, contact) written by `contact_add`
//! (present) and `contact_remove` (absent) and read by the owner's `contact_list`; a user's presence written by
//! `publish` and read by any watcher's `notify_received`. A read must show the last write acknowledged before
//! it started, or a write that may have been applied after that one (indeterminate or concurrent); anything
//! else lost that acknowledged write.

use std::collections::{BTreeMap, BTreeSet};

use super::compose::Checker;
use super::verdict::{Verdict, Violation};
use crate::history::{Fault, History, Op, Outcome};

/// What durability found, for the report's counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loss {
    pub writes_acked: u64,
    /// Acknowledged writes a later read did not show.
    pub writes_lost: u64,
    /// From the first to the last acknowledgement of a lost write.
    pub loss_span_us: u64,
    /// The observed RPO: the largest time from a lost write's acknowledgement to the moment of effect of the
    /// fault after it, among lost writes acknowledged while no fault was in force.
    pub rpo_observed_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Contact { owner: String, contact: String },
    Presence { user: String },
}

impl Item {
    fn describe(&self) -> String {
        match self {
            Item::Contact { owner, contact } => format!("contact {contact} of {owner}"),
            Item::Presence { user } => format!("presence of {user}"),
        }
    }
}

#[derive(Clone, Debug)]
struct Write {
    user: String,
    value: String,
    invoke_us: u64,
    /// `None` while indeterminate.
    complete_us: Option<u64>,
    acked: bool,
    failed: bool,
    /// When a publication lapses if not refreshed (its invoke plus the expiry the pool granted): reads that may
    /// reflect a later moment are not held to it.
    lapses_us: Option<u64>,
}

#[derive(Clone, Debug)]
struct Read {
    reader: String,
    value: String,
    /// The earliest moment the read may reflect.
    from_us: u64,
    to_us: u64,
}

/// Checks durability.
#[derive(Clone, Debug)]
pub struct Durability {
    /// `None`: nothing acknowledged may be lost (RPO 0). `Some(b)`: a write acknowledged at most `b` before a
    /// fault took effect, while no fault was in force, may be lost (counted, not a violation); older ones, and
    /// ones acknowledged during or after a fault, may not.
    pub rpo_bound_ms: Option<u64>,
    /// How stale a NOTIFY may be: a NOTIFY received at `t` must reflect writes acknowledged before `t - lag`
    /// (one sent just before a PUBLISH was applied may arrive after its 200 OK).
    pub notify_lag_ms: u64,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            rpo_bound_ms: None,
            notify_lag_ms: 1_000,
        }
    }
}

const PRESENT: &str = "present";
const ABSENT: &str = "absent";

impl Durability {
    fn collect(
        &self,
        history: &History,
    ) -> (BTreeMap<Item, Vec<Write>>, BTreeMap<Item, Vec<Read>>) {
        let mut writes: BTreeMap<Item, Vec<Write>> = BTreeMap::new();
        let mut contact_reads: Vec<(String, BTreeSet<String>, u64, u64)> = Vec::new();
        let mut reads: BTreeMap<Item, Vec<Read>> = BTreeMap::new();
        for op in history.operations() {
            let write = |value: &str| Write {
                user: op.user.clone(),
                value: value.to_owned(),
                invoke_us: op.start_us(),
                complete_us: if op.is_indeterminate() {
                    None
                } else {
                    op.complete_at_us
                },
                acked: op.is_ok(),
                failed: matches!(op.outcome, Outcome::Fail(_)),
                lapses_us: match &op.outcome {
                    Outcome::Ok(Op::Publish {
                        granted_s: Some(granted),
                        ..
                    }) => Some(op.start_us() + granted * 1_000_000),
                    _ => None,
                },
            };
            match (&op.op, &op.outcome) {
                (Op::ContactAdd { contact }, _) => writes
                    .entry(Item::Contact {
                        owner: op.user.clone(),
                        contact: contact.clone(),
                    })
                    .or_default()
                    .push(write(PRESENT)),
                (Op::ContactRemove { contact }, _) => writes
                    .entry(Item::Contact {
                        owner: op.user.clone(),
                        contact: contact.clone(),
                    })
                    .or_default()
                    .push(write(ABSENT)),
                (Op::Publish { state, .. }, _) => writes
                    .entry(Item::Presence {
                        user: op.user.clone(),
                    })
                    .or_default()
                    .push(write(state)),
                (
                    Op::ContactList { .. },
                    Outcome::Ok(Op::ContactList {
                        contacts: Some(list),
                    }),
                ) => contact_reads.push((
                    op.user.clone(),
                    list.iter().cloned().collect(),
                    op.start_us(),
                    op.complete_at_us.unwrap_or(0),
                )),
                (
                    Op::NotifyReceived {
                        target,
                        state: Some(state),
                    },
                    Outcome::Ok(_),
                ) => {
                    let at = op.complete_at_us.unwrap_or(0);
                    reads
                        .entry(Item::Presence {
                            user: target.clone(),
                        })
                        .or_default()
                        .push(Read {
                            reader: op.user.clone(),
                            value: state.clone(),
                            from_us: at.saturating_sub(self.notify_lag_ms * 1000),
                            to_us: at,
                        });
                }
                _ => {}
            }
        }
        // A contact-list read reads every entry its owner ever wrote.
        for (owner, list, from_us, to_us) in contact_reads {
            for item in writes.keys() {
                if let Item::Contact { owner: o, contact } = item {
                    if *o == owner {
                        let value = if list.contains(contact) {
                            PRESENT
                        } else {
                            ABSENT
                        };
                        reads.entry(item.clone()).or_default().push(Read {
                            reader: owner.clone(),
                            value: value.to_owned(),
                            from_us,
                            to_us,
                        });
                    }
                }
            }
        }
        (writes, reads)
    }

    /// Judges durability and measures the loss.
    pub fn judge(&self, history: &History) -> (Verdict, Loss) {
        let name = self.name();
        let (writes, reads) = self.collect(history);
        let mut loss = Loss {
            writes_acked: writes.values().flatten().filter(|w| w.acked).count() as u64,
            ..Loss::default()
        };
        if loss.writes_acked == 0 {
            return (
                Verdict::Unknown("no contact or presence write was acknowledged".into()),
                loss,
            );
        }
        let mut violations = Vec::new();
        let mut undecided = Vec::new();
        // Every lost acknowledged write once: (item, index of the write).
        let mut lost: BTreeMap<(Item, usize), (u64, &Read)> = BTreeMap::new();
        for (item, item_reads) in &reads {
            let Some(item_writes) = writes.get(item) else {
                continue;
            };
            for read in item_reads {
                // The last write acknowledged before the read could have started.
                let Some((last_index, last)) = item_writes
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.acked && w.complete_us.is_some_and(|c| c < read.from_us))
                    .max_by_key(|(_, w)| w.complete_us)
                else {
                    continue;
                };
                if last.lapses_us.is_some_and(|lapses| read.to_us >= lapses) {
                    // It expired as granted before the read could have been taken: nothing to hold it to.
                    continue;
                }
                let allowed = item_writes.iter().any(|w| {
                    w.value == read.value
                        && (std::ptr::eq(w, last)
                            || (!w.failed
                                && w.invoke_us < read.to_us
                                && w.complete_us.is_none_or(|c| c > last.invoke_us)))
                });
                if !allowed {
                    lost.entry((item.clone(), last_index))
                        .or_insert((read.to_us, read));
                }
            }
        }
        let mut lost_acks = Vec::new();
        for ((item, index), (read_at, read)) in &lost {
            let write = &item_writes_of(&writes, item)[*index];
            let acked_at = write.complete_us.unwrap_or(0);
            lost_acks.push(acked_at);
            let rolled_back = item_writes_of(&writes, item)
                .iter()
                .any(|w| w.value == read.value);
            let how = if rolled_back {
                "rolled back to an older value"
            } else {
                "not visible"
            };
            let exposure = exposure(&history.faults, acked_at);
            if let Exposure::Before { gap_us, .. } = exposure {
                loss.rpo_observed_us = loss.rpo_observed_us.max(gap_us);
            }
            let within_rpo = match (self.rpo_bound_ms, &exposure) {
                (Some(bound_ms), Exposure::Before { gap_us, .. }) => *gap_us <= bound_ms * 1000,
                _ => false,
            };
            if !within_rpo {
                let when = match exposure {
                    Exposure::Before { gap_us, fault } => format!(
                        "{} ms before fault {} took effect",
                        gap_us.div_ceil(1000),
                        fault
                    ),
                    Exposure::During { fault } => format!("while fault {fault} was in force"),
                    Exposure::After => "after the last fault".to_owned(),
                };
                violations.push(Violation::new(
                    name,
                    Some(&write.user),
                    Some(*read_at),
                    format!(
                        "{} written {:?} (acknowledged at {} ms, {when}) {how}: {} read {:?}",
                        item.describe(),
                        write.value,
                        acked_at / 1000,
                        read.reader,
                        read.value
                    ),
                ));
            }
        }
        loss.writes_lost = lost.len() as u64;
        if let (Some(first), Some(last)) = (lost_acks.iter().min(), lost_acks.iter().max()) {
            loss.loss_span_us = last - first;
        }
        // Durability across a fault, or across an operator's failover or failback, needs a read after it:
        // without one, "nothing lost" was not observed.
        let last_fault_us = history.faults.iter().map(Fault::effective_at_us).max();
        let last_operator_us = history.operators.iter().map(|o| o.at_us()).max();
        if let Some(last_us) = last_fault_us.max(last_operator_us) {
            let read_after = reads.values().flatten().any(|r| r.from_us >= last_us);
            if !read_after {
                undecided.push(
                    "no contact list or presence was read after the last fault or operator command"
                        .into(),
                );
            }
        } else if reads.is_empty() {
            undecided.push("no contact list or presence was read".into());
        }
        (Verdict::from_findings(violations, undecided), loss)
    }
}

fn item_writes_of<'a>(writes: &'a BTreeMap<Item, Vec<Write>>, item: &Item) -> &'a [Write] {
    writes.get(item).map_or(&[], Vec::as_slice)
}

/// Where a write's acknowledgement stands against the faults.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Exposure {
    /// No fault was in force; fault `fault` took effect `gap_us` later (the first to do so).
    Before { gap_us: u64, fault: u64 },
    /// Fault `fault` was in force: it had taken effect and was not undone yet.
    During { fault: u64 },
    /// No fault was in force and none took effect later.
    After,
}

/// A fault is in force from its moment of effect (its proof, else its request) until its undo.
fn exposure(faults: &[Fault], acked_us: u64) -> Exposure {
    if let Some(fault) = faults.iter().find(|f| {
        f.effective_at_us() <= acked_us && f.undone_at_us.is_none_or(|undone| acked_us < undone)
    }) {
        return Exposure::During { fault: fault.id };
    }
    faults
        .iter()
        .filter(|f| f.effective_at_us() > acked_us)
        .min_by_key(|f| f.effective_at_us())
        .map_or(Exposure::After, |f| Exposure::Before {
            gap_us: f.effective_at_us() - acked_us,
            fault: f.id,
        })
}

impl Checker for Durability {
    fn name(&self) -> &'static str {
        "durability"
    }

    fn check(&self, history: &History) -> Verdict {
        self.judge(history).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::{add, clean, list, list_invoke, Build};

    #[test]
    fn the_clean_run_is_valid() {
        let (v, loss) = Durability::default().judge(&clean().build());
        assert_eq!(v, Verdict::Valid);
        assert_eq!((loss.writes_acked, loss.writes_lost), (2, 0));
    }

    #[test]
    fn a_rolled_back_contact_is_a_violation() {
        let h = clean()
            .ok_with("bob", list_invoke(), list(&[]), 52_000, 52_030)
            .build();
        let (v, loss) = Durability::default().judge(&h);
        assert_eq!(loss.writes_lost, 1);
        assert!(
            v.violations()[0].what.contains("contact alice of bob"),
            "{v:?}"
        );
    }

    /// carol publishes away#2 at 42 s, granted 10 s, and never refreshes it; alice reads `open` at `read_ms`.
    fn lapsing(read_ms: u64) -> History {
        let publish = Op::Publish {
            state: "away#2".into(),
            granted_s: None,
        };
        let granted = Op::Publish {
            state: "away#2".into(),
            granted_s: Some(10),
        };
        clean()
            .ok_with("carol", publish, granted, 42_000, 42_020)
            .observe(
                "alice",
                Op::NotifyReceived {
                    target: "carol".into(),
                    state: Some("open".into()),
                },
                read_ms,
            )
            .build()
    }

    #[test]
    fn a_publication_read_after_it_lapsed_as_granted_is_not_lost() {
        let v = Durability::default().check(&lapsing(60_000));
        assert!(v.violations().is_empty(), "{v:?}");
    }

    #[test]
    fn a_publication_missing_before_its_expiry_is_lost() {
        let v = Durability::default().check(&lapsing(50_000));
        assert!(
            v.violations()[0].what.contains("away#2")
                && v.violations()[0].what.contains("not visible"),
            "{v:?}"
        );
    }

    #[test]
    fn a_rolled_back_presence_is_a_violation() {
        let h = clean()
            .ok(
                "carol",
                Op::Publish {
                    state: "away#2".into(),
                    granted_s: None,
                },
                42_000,
                42_020,
            )
            .observe(
                "alice",
                Op::NotifyReceived {
                    target: "carol".into(),
                    state: Some("busy#1".into()),
                },
                50_000,
            )
            .build();
        let v = Durability::default().check(&h);
        assert!(
            v.violations()[0]
                .what
                .contains("rolled back to an older value"),
            "{v:?}"
        );
    }

    #[test]
    fn a_loss_within_the_rpo_bound_is_measured_not_a_violation() {
        // Pool failover at 100 s; the backup copy missed the contact acknowledged at 95 s.
        let h = Build::new(&["dave"])
            .ok("dave", add("erin"), 10_000, 10_050)
            .ok("dave", add("frank"), 95_000, 95_050)
            .fault("pool_failover", "fe-a", 100_000, Some(101_000), None)
            .ok_with("dave", list_invoke(), list(&["erin"]), 120_000, 120_100)
            .end(130_000)
            .build();
        let within = Durability {
            rpo_bound_ms: Some(30_000),
            ..Default::default()
        };
        let (v, loss) = within.judge(&h);
        assert_eq!(v, Verdict::Valid);
        assert_eq!(loss.writes_lost, 1);
        assert_eq!(loss.rpo_observed_us, 5_950_000);
        let strict = Durability {
            rpo_bound_ms: Some(1_000),
            ..Default::default()
        };
        assert_eq!(strict.check(&h).violations().len(), 1);
    }

    /// dave's contact frank acknowledged at `acked_ms` and missing from the list read at 60 s; erin (10 s)
    /// survives. `more` adds the faults and operator commands.
    fn frank_lost(acked_ms: u64, more: impl FnOnce(Build) -> Build) -> History {
        more(Build::new(&["dave"]))
            .ok("dave", add("erin"), 1_000, 1_050)
            .ok("dave", add("frank"), acked_ms - 50, acked_ms)
            .ok_with("dave", list_invoke(), list(&["erin"]), 60_000, 60_100)
            .end(70_000)
            .build()
    }

    fn rpo_5s() -> Durability {
        Durability {
            rpo_bound_ms: Some(5_000),
            ..Default::default()
        }
    }

    /// A site down from 10 s (proven at 10.5 s) to 30 s: the backup pool acknowledged frank at 20 s, and the
    /// failback lost it. No RPO excuses a write acknowledged while the fault was in force.
    #[test]
    fn a_write_acknowledged_during_a_fault_and_lost_after_it_is_a_violation() {
        let h = frank_lost(20_000, |b| {
            b.fault("site_down", "dc1", 10_000, Some(10_500), Some(30_000))
        });
        let (v, loss) = rpo_5s().judge(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(
            v.violations()[0]
                .what
                .contains("while fault 0 was in force"),
            "{v:?}"
        );
        assert_eq!(loss.writes_lost, 1);
        assert_eq!(loss.rpo_observed_us, 0, "no write was lost before a fault");
    }

    /// Acknowledged 0.5 s before the fault took effect, lost: within a 5 s RPO, and the observed RPO says
    /// 500 ms — also when an operator's failover earlier in the run (which is no fault) is recorded.
    #[test]
    fn a_write_acknowledged_half_a_second_before_a_fault_is_within_a_5_s_rpo() {
        let h = frank_lost(19_500, |b| {
            b.fault("operator:pool-failover", "fe2-1", 5_000, Some(5_200), None)
                .fault("site_down", "dc1", 19_000, Some(20_000), Some(30_000))
        });
        let (v, loss) = rpo_5s().judge(&h);
        assert_eq!(v, Verdict::Valid);
        assert_eq!(loss.writes_lost, 1);
        assert_eq!(loss.rpo_observed_us, 500_000);
    }

    /// Acknowledged 6 s before the fault took effect, lost: over a 5 s RPO, and measured as such.
    #[test]
    fn a_write_acknowledged_6_s_before_a_fault_is_over_a_5_s_rpo() {
        let h = frank_lost(14_000, |b| {
            b.fault("operator:store-failover", "fe2-1", 5_000, Some(5_200), None)
                .fault("site_down", "dc1", 19_000, Some(20_000), Some(30_000))
        });
        let (v, loss) = rpo_5s().judge(&h);
        assert_eq!(v.violations().len(), 1, "{v:?}");
        assert!(
            v.violations()[0]
                .what
                .contains("6000 ms before fault 1 took effect"),
            "{v:?}"
        );
        assert_eq!(loss.rpo_observed_us, 6_000_000);
    }

    /// An operator command is not a fault: a write lost 0.5 s before a failback, with no fault at all, is a
    /// violation, whether the history records the command as its own record or (written before that record
    /// existed) as an `operator:<command>` fault.
    #[test]
    fn an_operator_command_is_no_fault_for_the_rpo() {
        let own = frank_lost(19_500, |b| {
            b.operator("pool-failback", "fe2-1", 20_000, Some(20_400))
        });
        let legacy = frank_lost(19_500, |b| {
            b.fault(
                "operator:pool-failback",
                "fe2-1",
                20_000,
                Some(20_400),
                None,
            )
        });
        for h in [own, legacy] {
            let (v, loss) = rpo_5s().judge(&h);
            assert_eq!(v.violations().len(), 1, "{v:?}");
            assert!(
                v.violations()[0].what.contains("after the last fault"),
                "{v:?}"
            );
            assert_eq!(loss.rpo_observed_us, 0);
        }
    }

    #[test]
    fn no_read_after_the_last_operator_command_is_unknown() {
        let h = Build::new(&["dave"])
            .ok("dave", add("erin"), 1_000, 1_050)
            .ok_with("dave", list_invoke(), list(&["erin"]), 2_000, 2_100)
            .operator("pool-failback", "fe2-1", 3_000, Some(3_500))
            .end(10_000)
            .build();
        assert!(
            matches!(Durability::default().check(&h), Verdict::Unknown(r) if r.contains("operator command")),
        );
    }

    #[test]
    fn a_write_concurrent_with_the_read_may_or_may_not_show() {
        let h = clean()
            .timeout(
                "bob",
                Op::ContactRemove {
                    contact: "alice".into(),
                },
                51_000,
                53_000,
            )
            .ok_with("bob", list_invoke(), list(&[]), 52_000, 52_030)
            .build();
        assert_eq!(Durability::default().check(&h), Verdict::Valid);
    }

    #[test]
    fn no_read_after_the_fault_is_unknown() {
        let h = Build::new(&["dave"])
            .ok("dave", add("erin"), 1_000, 1_050)
            .fault("kill", "fe-a1", 2_000, Some(2_100), Some(3_000))
            .end(10_000)
            .build();
        assert!(
            matches!(Durability::default().check(&h), Verdict::Unknown(r) if r.contains("after the last fault"))
        );
        assert!(matches!(
            Durability::default().check(&History::default()),
            Verdict::Unknown(_)
        ));
    }
}
