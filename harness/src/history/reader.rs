//! [`History`]: a run's history as the checkers read it — loaded from its files (or built from records), saved
//! back, and asked for its operations with each invoke paired with its completion ([`Operation`]), its users and
//! its last moment. Histories written before operator commands had their own record are read here too.

use std::collections::BTreeMap;
use std::path::Path;

use super::files::{read_lines, write_lines, HistoryError, FAULTS_FILE, HISTORY_FILE};
use super::record::{
    Fault, Op, OpRecord, OperatorOutcome, OperatorRecord, Phase, ProbeRecord, Record, RunInfo,
};

/// The kind prefix under which histories before [`Record::Operator`] recorded operator commands as faults.
const LEGACY_OPERATOR_KIND: &str = "operator:";

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Acknowledged, with the value of the `ok` line (a read's result).
    Ok(Op),
    Fail(Option<String>),
    Timeout,
    /// Invoked, never completed before the history ended: indeterminate like a timeout.
    Pending,
}

/// An operation with its invoke and completion paired.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub id: u64,
    pub user: String,
    /// The value of the invoke (or of the `ok` line, for an observation).
    pub op: Op,
    /// `None` for an observation, which has no invoke.
    pub invoke_at_us: Option<u64>,
    pub complete_at_us: Option<u64>,
    pub outcome: Outcome,
}

impl Operation {
    /// The operation's start: its invoke, or its only line for an observation.
    pub fn start_us(&self) -> u64 {
        self.invoke_at_us.or(self.complete_at_us).unwrap_or(0)
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// The acknowledged value (for reads, what was read).
    pub fn ok_value(&self) -> Option<&Op> {
        match &self.outcome {
            Outcome::Ok(op) => Some(op),
            _ => None,
        }
    }

    /// Timeout or never completed: it may or may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.outcome, Outcome::Timeout | Outcome::Pending)
    }
}

/// A loaded (or recorded) history: the checkers' only input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub run: RunInfo,
    /// Operation lines in time order.
    pub ops: Vec<OpRecord>,
    /// Probes in time order.
    pub probes: Vec<ProbeRecord>,
    /// Faults by id.
    pub faults: Vec<Fault>,
    /// Operator commands in the order they were sent (the last line of each id).
    pub operators: Vec<OperatorRecord>,
    /// When the run finished cleanly (the `end` record), if it did.
    pub end_at_us: Option<u64>,
}

impl History {
    /// Builds a history from records and faults, as the reader and the tests do.
    pub fn from_records(records: impl IntoIterator<Item = Record>, faults: Vec<Fault>) -> History {
        let mut history = History::default();
        for record in records {
            history.push(record);
        }
        let (legacy, faults): (Vec<Fault>, Vec<Fault>) = dedup_faults(faults)
            .into_iter()
            .partition(|f| f.kind.starts_with(LEGACY_OPERATOR_KIND));
        history.faults = faults;
        for fault in legacy {
            history.push(Record::Operator(OperatorRecord {
                id: fault.id,
                command: fault.kind[LEGACY_OPERATOR_KIND.len()..].to_owned(),
                node: fault.target,
                body: serde_json::Value::Null,
                requested_at_us: fault.requested_at_us,
                done_at_us: fault.verified_at_us,
                outcome: match fault.verified_at_us {
                    Some(_) => OperatorOutcome::Ok {
                        answer: serde_json::Value::Null,
                    },
                    None => OperatorOutcome::Pending,
                },
            }));
        }
        history.operators.sort_by_key(|o| (o.requested_at_us, o.id));
        history
    }

    pub(super) fn push(&mut self, record: Record) {
        match record {
            Record::Run(run) => self.run = run,
            Record::Op(op) => self.ops.push(op),
            Record::Probe(probe) => self.probes.push(probe),
            Record::Operator(operator) => {
                match self.operators.iter_mut().find(|o| o.id == operator.id) {
                    Some(slot) => *slot = operator,
                    None => self.operators.push(operator),
                }
            }
            Record::End { at_us } => self.end_at_us = Some(at_us),
        }
    }

    /// Loads `history.jsonl` and `faults.jsonl` from a run's directory (a missing `faults.jsonl` means none).
    pub fn load(dir: &Path) -> Result<History, HistoryError> {
        let records: Vec<Record> = read_lines(&dir.join(HISTORY_FILE))?;
        let mut previous_us = 0;
        for (index, record) in records.iter().enumerate() {
            let at_us = match record {
                Record::Op(op) => op.at_us,
                Record::Probe(probe) => probe.at_us,
                Record::Operator(operator) => operator.at_us(),
                Record::End { at_us } => *at_us,
                Record::Run(_) => continue,
            };
            // The recorder stamps under its lock, so a file out of order was not written by it: say so
            // rather than judge a history whose "before" means nothing.
            if at_us < previous_us {
                return Err(HistoryError::OutOfOrder {
                    path: dir.join(HISTORY_FILE),
                    line: index + 1,
                    previous_us,
                    at_us,
                });
            }
            previous_us = at_us;
        }
        let faults_path = dir.join(FAULTS_FILE);
        let faults = if faults_path.exists() {
            read_lines(&faults_path)?
        } else {
            Vec::new()
        };
        Ok(History::from_records(records, faults))
    }

    /// The operations with invokes and completions paired, in order of their first line.
    pub fn operations(&self) -> Vec<Operation> {
        let mut operations: Vec<Operation> = Vec::new();
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        for record in &self.ops {
            if let Some(&index) = open.get(&record.id) {
                let operation = &mut operations[index];
                operation.complete_at_us = Some(record.at_us);
                operation.outcome = match record.phase {
                    Phase::Ok => Outcome::Ok(record.op.clone()),
                    Phase::Fail => Outcome::Fail(record.error.clone()),
                    Phase::Timeout | Phase::Invoke => Outcome::Timeout,
                };
                open.remove(&record.id);
                continue;
            }
            let mut operation = Operation {
                id: record.id,
                user: record.user.clone(),
                op: record.op.clone(),
                invoke_at_us: None,
                complete_at_us: Some(record.at_us),
                outcome: Outcome::Pending,
            };
            match record.phase {
                Phase::Invoke => {
                    operation.invoke_at_us = Some(record.at_us);
                    operation.complete_at_us = None;
                    open.insert(record.id, operations.len());
                }
                Phase::Ok => operation.outcome = Outcome::Ok(record.op.clone()),
                Phase::Fail => operation.outcome = Outcome::Fail(record.error.clone()),
                Phase::Timeout => operation.outcome = Outcome::Timeout,
            }
            operations.push(operation);
        }
        operations
    }

    /// The last moment the history knows about: its `end` record, else its last line or fault change.
    pub fn last_at_us(&self) -> u64 {
        if let Some(end) = self.end_at_us {
            return end;
        }
        let ops = self.ops.iter().map(|o| o.at_us);
        let probes = self.probes.iter().map(|p| p.at_us);
        let faults = self.faults.iter().flat_map(|f| {
            [Some(f.requested_at_us), f.verified_at_us, f.undone_at_us]
                .into_iter()
                .flatten()
        });
        let operators = self.operators.iter().flat_map(|o| {
            [Some(o.requested_at_us), o.done_at_us]
                .into_iter()
                .flatten()
        });
        ops.chain(probes)
            .chain(faults)
            .chain(operators)
            .max()
            .unwrap_or(0)
    }

    /// Every user named by the run or by an operation, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.run.users.clone();
        users.extend(self.ops.iter().map(|o| o.user.clone()));
        users.sort();
        users.dedup();
        users
    }

    /// Whether nothing at all was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.probes.is_empty()
            && self.faults.is_empty()
            && self.operators.is_empty()
    }

    /// Writes the history to `dir` as `history.jsonl` and `faults.jsonl`.
    pub fn save(&self, dir: &Path) -> Result<(), HistoryError> {
        // Ops, probes and operator commands back into one time-ordered stream (stable: on a tie, ops first,
        // then probes, then operator commands, each in its own order).
        let mut stamped: Vec<(u64, Record)> = Vec::new();
        stamped.extend(self.ops.iter().map(|o| (o.at_us, Record::Op(o.clone()))));
        stamped.extend(
            self.probes
                .iter()
                .map(|p| (p.at_us, Record::Probe(p.clone()))),
        );
        stamped.extend(
            self.operators
                .iter()
                .map(|o| (o.at_us(), Record::Operator(o.clone()))),
        );
        stamped.sort_by_key(|(at_us, _)| *at_us);
        let mut records = vec![Record::Run(self.run.clone())];
        records.extend(stamped.into_iter().map(|(_, record)| record));
        if let Some(at_us) = self.end_at_us {
            records.push(Record::End { at_us });
        }
        write_lines(&dir.join(HISTORY_FILE), &records)?;
        write_lines(&dir.join(FAULTS_FILE), &self.faults)
    }
}

fn dedup_faults(faults: Vec<Fault>) -> Vec<Fault> {
    let mut by_id: BTreeMap<u64, Fault> = BTreeMap::new();
    for fault in faults {
        by_id.insert(fault.id, fault);
    }
    by_id.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_history_reads_its_operator_faults_as_operator_commands() {
        let old = |id, kind: &str, verified| Fault {
            id,
            kind: kind.into(),
            target: "fe2-1".into(),
            cuts: Vec::new(),
            requested_at_us: 10_000,
            verified_at_us: verified,
            undone_at_us: None,
            undo_requested_at_us: None,
        };
        let history = History::from_records(
            [],
            vec![
                old(0, "site_down", Some(11_000)),
                old(1, "operator:pool-failover", Some(12_000)),
                old(2, "operator:pool-failback", None),
            ],
        );
        assert_eq!(history.faults.len(), 1);
        assert_eq!(history.faults[0].kind, "site_down");
        let commands: Vec<(&str, Option<u64>, bool)> = history
            .operators
            .iter()
            .map(|o| (o.command.as_str(), o.done_at_us, o.is_ok()))
            .collect();
        assert_eq!(
            commands,
            [
                ("pool-failover", Some(12_000), true),
                ("pool-failback", None, false)
            ]
        );
    }
}
