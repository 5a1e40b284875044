//! The history: every operation, probe and fault of one run, with monotonic timestamps in µs since the run's
//! start, written as JSON lines and read back for the checkers.
//!
//! Two files per run:
//!
//! - `history.jsonl`: one [`Record`] per line, tagged by `"type"`: `run` (once, first), `op`, `probe`,
//!   `operator` (an operator command: written when sent and again when answered; the reader keeps the last line
//!   of each `id`), `end` (once, last, when the run finished cleanly).
//! - `faults.jsonl`: one [`Fault`] per line; a fault is written again each time it changes (requested, verified,
//!   undone) and the reader keeps the last line of each `id`, so a run that dies mid-fault still leaves a
//!   readable file.
//!
//! An operator command is not a fault: it has no inverse and is never "in force"; each checker gives it its own
//! meaning (a failback sends users home, a quorum recovery lets a pool start below its start-up counts).
//! Histories written before operator commands had their own record kept them in `faults.jsonl` as faults of
//! kind `operator:<command>`; the reader turns those into [`OperatorRecord`]s.
//!
//! An operation is recorded jepsen-style: an `invoke` line, then one completion line with the same `id` and
//! phase `ok`, `fail` (a definite, explicit refusal) or `timeout` (indeterminate: it may or may not have taken
//! effect). An invoke with no completion by the end of the run is indeterminate too. What a user only observes
//! (`notify_received`, `im_received`, `registration_lost`) is a single `ok` line with no invoke.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// File name of the operations and probes of a run, inside its report directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// File name of the faults of a run, inside its report directory.
pub const FAULTS_FILE: &str = "faults.jsonl";

/// Errors of writing or reading a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write the history")]
    Write(#[source] std::io::Error),
    #[error("read {path} line {line}")]
    Read {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path} line {line}")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("read {path} line {line}: time goes back from {previous_us} µs to {at_us} µs")]
    OutOfOrder {
        path: PathBuf,
        line: usize,
        previous_us: u64,
        at_us: u64,
    },
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// What was run: written once, first, so a report can name the scenario and its replay seed.
    Run(RunInfo),
    /// One step of an operation.
    Op(OpRecord),
    /// One server's view of its role, read by the harness.
    Probe(ProbeRecord),
    /// An operator command the run sent to a node's admin API, and its answer.
    Operator(OperatorRecord),
    /// The run finished cleanly at `at_us`: the checkers judge liveness up to here. A history without it ended
    /// early, and liveness checks near its end say unknown.
    End { at_us: u64 },
}

/// The scenario and its seed, and every simulated user (also those that never completed an operation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub scenario: String,
    pub seed: u64,
    #[serde(default)]
    pub users: Vec<String>,
    /// Every node of the run, with its pool and site: what a fault's target (a node, a pool, a site) hit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RunNode>,
    /// By when every user had started (users start spread over the workload's `start_spread`): from then on a
    /// user not signed in is out of service. `None` until the users started, and in histories written before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_started_by_us: Option<u64>,
}

/// One node of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunNode {
    pub name: String,
    pub pool: String,
    pub site: String,
}

impl RunInfo {
    /// The nodes a fault target names: a node's own name, every node of a pool, or every node of a site. Empty
    /// for a name the run does not know (`users`, the proxy).
    pub fn nodes_named(&self, name: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.name == name || n.pool == name || n.site == name)
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The pool of a node, if the run knows it.
    pub fn pool_of(&self, node: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.pool.as_str())
    }
}

/// The step of an operation a line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Invoke,
    Ok,
    /// A definite refusal (an error response): the operation did not take effect.
    Fail,
    /// No answer in time: the operation may or may not have taken effect.
    Timeout,
}

/// One line of an operation: `{"type":"op","id":…,"phase":…,"at_us":…,"user":…,"op":…,"value":…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Pairs an invoke with its completion; unique within a history.
    pub id: u64,
    pub phase: Phase,
    pub at_us: u64,
    pub user: String,
    #[serde(flatten)]
    pub op: Op,
    /// Why a `fail` failed (the SIP status line, or the client's reason), for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Identifies one IM across its send and its deliveries: the sender's name and the sender's sequence number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImId {
    pub sender: String,
    pub seq: u64,
}

/// Which servers a signed-in user depends on, as its last REGISTER's answer showed: a fault on any of them may
/// sign the user out, a fault elsewhere must not (where a scenario says so). Every field is `None` where unknown
/// (a subject that does not say, a history written before it was recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The node the user's connection went to (a Front End, or the Edge server a remote user came in through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The Front End that answered the REGISTER (its `Server` header), which holds the user's connection to the
    /// pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The user's routing group in its pool (its `Server` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Attachment {
    /// Whether the answer said anything of where the user is attached.
    pub fn is_known(&self) -> bool {
        self != &Attachment::default()
    }

    /// The nodes named: the entry and the answering server.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.entry
            .iter()
            .chain(self.server.iter())
            .map(String::as_str)
    }
}

/// What a user did or saw; serialized as `"op": "<name>", "value": {…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Op {
    /// The initial REGISTER, or a new one after the registration was lost. On `ok`, `resiliency` says whether the
    /// registrar signed the user in in resiliency mode, and `registrar` names the pool or node that answered.
    Register {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registrar: Option<String>,
        #[serde(default)]
        resiliency: bool,
        /// On `ok`: where the user is attached (see [`Attachment`]).
        #[serde(default, flatten)]
        attachment: Attachment,
    },
    /// A REGISTER refresh of a live registration. `action` is the `register-action` of the 200 OK: `"added"`
    /// means the server had lost the binding, so the registration broke (the client registers again).
    Refresh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        #[serde(default)]
        resiliency: bool,
        /// On `ok`: where the user is attached (see [`Attachment`]).
        #[serde(default, flatten)]
        attachment: Attachment,
    },
    /// The client noticed its registration broke (connection reset, 481, `presence services unavailable`…).
    RegistrationLost {
        reason: String,
    },
    /// PUBLISH of the user's own presence. `state` should be unique per publish (e.g. `busy#17`), so that a
    /// rolled-back presence is told apart from a current one.
    Publish {
        state: String,
        /// On the acknowledgement: the expiry the pool granted, in seconds. Past it, a publication not refreshed
        /// lapses as RFC 3903 says, and is no longer expected to be seen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        granted_s: Option<u64>,
    },
    /// SUBSCRIBE to `target`'s presence.
    Subscribe {
        target: String,
    },
    /// A NOTIFY of `target`'s presence reached the user (the watcher); `state: null` means "presence unknown"
    /// (resiliency mode), which says nothing about the stored presence.
    NotifyReceived {
        target: String,
        state: Option<String>,
    },
    ContactAdd {
        contact: String,
    },
    ContactRemove {
        contact: String,
    },
    /// A read of the user's contact list; `contacts` is null at invoke and the list read on `ok`.
    ContactList {
        #[serde(default)]
        contacts: Option<Vec<String>>,
    },
    /// A MESSAGE from the user to `to`; its id is (user, `seq`).
    ImSend {
        to: String,
        seq: u64,
    },
    /// A MESSAGE reached the user (the recipient); its id is (`from`, `seq`).
    ImReceived {
        from: String,
        seq: u64,
    },
    /// An INVITE to `to` until the call is answered (`ok`) or refused.
    CallSetup {
        to: String,
        call_id: String,
    },
    /// The call ended at the caller: `by` says how. `null` in histories written before the cause was recorded.
    CallEnd {
        call_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<CallEndedBy>,
    },
    /// The pool told the user (its resiliency NOTIFY on the registered connection) that it is now served in
    /// resiliency mode (`on: true`) or at full service (`on: false`), without a new REGISTER. A notice that sends
    /// the user to another pool (`register-at`) is recorded as `registration_lost` instead.
    ResiliencyNotice {
        on: bool,
    },
}

impl Op {
    /// The name used in the `op` field.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Register { .. } => "register",
            Op::Refresh { .. } => "refresh",
            Op::RegistrationLost { .. } => "registration_lost",
            Op::Publish { .. } => "publish",
            Op::Subscribe { .. } => "subscribe",
            Op::NotifyReceived { .. } => "notify_received",
            Op::ContactAdd { .. } => "contact_add",
            Op::ContactRemove { .. } => "contact_remove",
            Op::ContactList { .. } => "contact_list",
            Op::ImSend { .. } => "im_send",
            Op::ImReceived { .. } => "im_received",
            Op::CallSetup { .. } => "call_setup",
            Op::CallEnd { .. } => "call_end",
            Op::ResiliencyNotice { .. } => "resiliency_notice",
        }
    }

    /// Whether the operation changes persistent user data (refused in resiliency mode).
    pub fn is_persistent_write(&self) -> bool {
        matches!(
            self,
            Op::Publish { .. } | Op::ContactAdd { .. } | Op::ContactRemove { .. }
        )
    }
}

/// How a call ended at the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndedBy {
    /// A BYE from the pool reached the caller.
    Bye,
    /// The caller's own connection or registration was lost first: the call is over for the caller, but no BYE
    /// reached it.
    CallerLost,
}

/// One line of a probe: `{"type":"probe","at_us":…,"node":…,"view":{…}}`, or `"view": null` with an `error`
/// when the node could not be asked (a node that cannot be asked accepts no writes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub at_us: u64,
    /// The node asked (or the pool name, for a pool-wide probe).
    pub node: String,
    pub view: Option<View>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The probe round (numbered from 0): a round asks every node at once and the next round starts after every
    /// answer, so whatever a node said in round `r + 1` it said after anything any node said in round `r`. A node
    /// is recorded only when its views change (and in the periodic snapshots): until its next record it said the
    /// same in every round. `None` in histories written before rounds were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
}

/// What a node said about its role, tagged by `"kind"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum View {
    /// The node's role in the Back End pair of `pool`, at `epoch`.
    BeRole {
        pool: String,
        role: BeRole,
        epoch: u64,
        accepting_writes: bool,
        /// A principal: its mirror receives every commit synchronously; a mirror: its principal said so. `None`
        /// for a witness, and in histories written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        synchronized: Option<bool>,
        /// The log position (last applied commit) of a principal or mirror; `None` for a witness, and in
        /// histories written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_lsn: Option<u64>,
    },
    /// The node's replica of routing group `group` of Front End pool `pool`, at `epoch`.
    GroupRole {
        pool: String,
        group: String,
        role: GroupRole,
        epoch: u64,
        accepting_writes: bool,
    },
    /// Whether Front End pool `pool` serves, with its FEs in topology order (`fes`) and those running.
    PoolServing {
        pool: String,
        serving: bool,
        fes: Vec<String>,
        fes_running: Vec<String>,
    },
    /// A Front End of paired pool `pool` on pairing: the pools whose users it serves at full service now, as
    /// their registrar (`serves_users_of`: its own pool, and its pair's while it holds the pair failed over),
    /// whether it is fenced (its pair holds its users), whether it holds its pair failed over, and whether it
    /// serves the pair's users in resiliency mode (the backup registrar: persistent changes refused).
    Pairing {
        pool: String,
        serves_users_of: Vec<String>,
        fenced: bool,
        pair_failed_over: bool,
        resiliency: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeRole {
    Principal,
    Mirror,
    Witness,
    /// Not part of the pair right now (stopped serving, resynchronizing).
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    Primary,
    Secondary,
    None,
}

/// One line of `faults.jsonl`: a fault and when it was requested, verified to have taken effect, and undone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Unique within a run; later lines with the same id replace earlier ones.
    pub id: u64,
    /// The fault's name (`kill`, `pause`, `isolate`, `partition`, `pool_failover`, …).
    pub kind: String,
    /// What it hit (a node, a pool, a site, `site-a|site-b`…).
    pub target: String,
    pub requested_at_us: u64,
    /// When the harness proved the fault took effect; `null` while (or if never) proven.
    pub verified_at_us: Option<u64>,
    /// When its inverse was verified done; `null` if it stayed in force to the end.
    pub undone_at_us: Option<u64>,
    /// When its inverse was asked for (from then on the fault may already be over); `null` if never, or in
    /// histories written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_requested_at_us: Option<u64>,
}

impl Fault {
    /// When the fault is known to be in force: verified, else requested.
    pub fn effective_at_us(&self) -> u64 {
        self.verified_at_us.unwrap_or(self.requested_at_us)
    }

    /// The end of the fault's window: its undo plus `aftermath_ms` (what it may still cause), or never if it was
    /// never undone.
    pub fn window_end_us(&self, aftermath_ms: u64) -> u64 {
        self.undone_at_us
            .map_or(u64::MAX, |u| u.saturating_add(aftermath_ms * 1000))
    }

    /// Whether `at_us` falls in the fault's window, from its request to [`Fault::window_end_us`].
    pub fn window_holds(&self, at_us: u64, aftermath_ms: u64) -> bool {
        self.requested_at_us <= at_us && at_us <= self.window_end_us(aftermath_ms)
    }
}

/// One line of an operator command: `{"type":"operator","id":…,"command":…,"node":…,"body":…,
/// "requested_at_us":…,"done_at_us":…,"outcome":{"status":"ok","answer":…}}`. Written when the command is sent
/// (`done_at_us: null`, status `pending`) and again when its answer came.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// Unique among the run's operator commands (a space apart from the faults' ids).
    pub id: u64,
    /// The admin command (`pool-failover`, `pool-failback`, `quorum-recovery`, `db-failover`, …).
    pub command: String,
    /// The node it was sent to, as resolved when it was sent.
    pub node: String,
    /// The JSON body sent with it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub body: serde_json::Value,
    pub requested_at_us: u64,
    /// When its answer came; `null` while (or if never) answered.
    pub done_at_us: Option<u64>,
    pub outcome: OperatorOutcome,
}

impl OperatorRecord {
    /// The stamp of its line: when it was answered, else when it was sent.
    pub fn at_us(&self) -> u64 {
        self.done_at_us.unwrap_or(self.requested_at_us)
    }

    /// Whether the node answered that the command was done.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, OperatorOutcome::Ok { .. })
    }
}

/// How an operator command ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OperatorOutcome {
    /// Sent, not answered (yet).
    Pending,
    /// The node answered 200, with this JSON.
    Ok {
        #[serde(default)]
        answer: serde_json::Value,
    },
    /// The node refused it, or could not be reached.
    Failed { error: String },
}

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

    fn push(&mut self, record: Record) {
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

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Read {
            path: path.to_owned(),
            line: index + 1,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.to_owned(),
            line: index + 1,
            source,
        })?;
        out.push(value);
    }
    Ok(out)
}

fn write_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<(), HistoryError> {
    let file = File::create(path).map_err(|source| HistoryError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut out = BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| HistoryError::Write(e.into()))?;
        out.write_all(b"\n").map_err(HistoryError::Write)?;
    }
    out.flush().map_err(HistoryError::Write)
}

/// Records a history from many tokio tasks at once: cheap to clone, appends to memory and, when opened with
/// [`Recorder::to_dir`], to `history.jsonl` / `faults.jsonl` as it goes (so a crashed run leaves its history).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    next_op_id: AtomicU64,
    next_fault_id: AtomicU64,
    next_operator_id: AtomicU64,
    state: Mutex<State>,
}

struct State {
    history: History,
    /// The last stamp handed out: stamps are taken under the lock, so lines are in time order.
    last_at_us: u64,
    history_file: Option<BufWriter<File>>,
    faults_file: Option<BufWriter<File>>,
}

impl Recorder {
    /// A recorder that keeps the history in memory only; time starts now.
    pub fn in_memory(run: RunInfo) -> Recorder {
        Recorder::new(run, None, None)
    }

    /// A recorder that also appends to `dir/history.jsonl` and `dir/faults.jsonl` (created or truncated).
    pub fn to_dir(run: RunInfo, dir: &Path) -> Result<Recorder, HistoryError> {
        let open = |name: &str| {
            let path = dir.join(name);
            File::create(&path)
                .map(BufWriter::new)
                .map_err(|source| HistoryError::Open { path, source })
        };
        let recorder = Recorder::new(run, Some(open(HISTORY_FILE)?), Some(open(FAULTS_FILE)?));
        let run = recorder.lock().history.run.clone();
        recorder.append(|_| Record::Run(run))?;
        Ok(recorder)
    }

    fn new(
        run: RunInfo,
        history_file: Option<BufWriter<File>>,
        faults_file: Option<BufWriter<File>>,
    ) -> Recorder {
        Recorder {
            inner: Arc::new(Inner {
                start: Instant::now(),
                next_op_id: AtomicU64::new(0),
                next_fault_id: AtomicU64::new(0),
                next_operator_id: AtomicU64::new(0),
                state: Mutex::new(State {
                    history: History {
                        run,
                        ..History::default()
                    },
                    last_at_us: 0,
                    history_file,
                    faults_file,
                }),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A task that panicked mid-append left at worst one partial line in memory; keep recording the rest.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// µs since the run started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records the run's description again with `change` made to it (a later `run` line replaces an earlier one);
    /// `change` gets the stamp.
    pub fn amend_run(&self, change: impl FnOnce(&mut RunInfo, u64)) -> Result<(), HistoryError> {
        let mut run = self.lock().history.run.clone();
        self.append(|at_us| {
            change(&mut run, at_us);
            Record::Run(run)
        })
        .map(|_| ())
    }

    /// Stamps and appends one record; `make` gets the stamp.
    fn append(&self, make: impl FnOnce(u64) -> Record) -> Result<u64, HistoryError> {
        let mut state = self.lock();
        let at_us = self.now_us().max(state.last_at_us);
        state.last_at_us = at_us;
        let record = make(at_us);
        if let Some(file) = state.history_file.as_mut() {
            serde_json::to_writer(&mut *file, &record)
                .map_err(|e| HistoryError::Write(e.into()))?;
            file.write_all(b"\n").map_err(HistoryError::Write)?;
        }
        state.history.push(record);
        Ok(at_us)
    }

    /// Records the invoke of `op` by `user`; complete it with the returned [`Pending`]. A `Pending` dropped
    /// without completing leaves the operation indeterminate, as a crash would.
    pub fn invoke(&self, user: &str, op: Op) -> Result<Pending, HistoryError> {
        let id = self.inner.next_op_id.fetch_add(1, Ordering::Relaxed);
        self.append(|at_us| {
            Record::Op(OpRecord {
                id,
                phase: Phase::Invoke,
                at_us,
                user: user.to_owned(),
                op: op.clone(),
                error: None,
            })
        })?;
        Ok(Pending {
            recorder: self.clone(),
            id,
            user: user.to_owned(),
            op,
        })
    }

    /// Records something `user` observed (`notify_received`, `im_received`, `registration_lost`).
    pub fn observe(&self, user: &str, op: Op) -> Result<u64, HistoryError> {
        let id = self.inner.next_op_id.fetch_add(1, Ordering::Relaxed);
        self.append(|at_us| {
            Record::Op(OpRecord {
                id,
                phase: Phase::Ok,
                at_us,
                user: user.to_owned(),
                op,
                error: None,
            })
        })
    }

    /// Records what `node` said about its role (`None` with `error` when it could not be asked).
    pub fn probe(
        &self,
        node: &str,
        view: Option<View>,
        error: Option<String>,
        round: u64,
    ) -> Result<u64, HistoryError> {
        self.append(|at_us| {
            Record::Probe(ProbeRecord {
                at_us,
                node: node.to_owned(),
                view,
                error,
                round: Some(round),
            })
        })
    }

    /// Records that a fault was requested; returns its id for [`Recorder::fault_verified`] and
    /// [`Recorder::fault_undone`].
    pub fn fault_requested(&self, kind: &str, target: &str) -> Result<u64, HistoryError> {
        let id = self.inner.next_fault_id.fetch_add(1, Ordering::Relaxed);
        let requested_at_us = self.now_us();
        self.write_fault(Fault {
            id,
            kind: kind.to_owned(),
            target: target.to_owned(),
            requested_at_us,
            verified_at_us: None,
            undone_at_us: None,
            undo_requested_at_us: None,
        })?;
        Ok(id)
    }

    /// Records that fault `id` was proven in effect.
    pub fn fault_verified(&self, id: u64) -> Result<(), HistoryError> {
        let at_us = self.now_us();
        self.update_fault(id, |f| {
            assert!(f.verified_at_us.is_none(), "fault {id} verified twice");
            f.verified_at_us = Some(at_us);
        })
    }

    /// Records that fault `id`'s inverse was asked for (before it is proven done).
    pub fn fault_undo_requested(&self, id: u64) -> Result<(), HistoryError> {
        let at_us = self.now_us();
        self.update_fault(id, |f| {
            f.undo_requested_at_us.get_or_insert(at_us);
        })
    }

    /// Records that fault `id`'s inverse was proven done.
    pub fn fault_undone(&self, id: u64) -> Result<(), HistoryError> {
        let at_us = self.now_us();
        self.update_fault(id, |f| {
            assert!(f.undone_at_us.is_none(), "fault {id} undone twice");
            f.undone_at_us = Some(at_us);
        })
    }

    fn update_fault(&self, id: u64, change: impl FnOnce(&mut Fault)) -> Result<(), HistoryError> {
        let mut fault = {
            let state = self.lock();
            state
                .history
                .faults
                .iter()
                .find(|f| f.id == id)
                .cloned()
                .unwrap_or_else(|| panic!("fault {id} was never requested"))
        };
        change(&mut fault);
        self.write_fault(fault)
    }

    fn write_fault(&self, fault: Fault) -> Result<(), HistoryError> {
        let mut state = self.lock();
        if let Some(file) = state.faults_file.as_mut() {
            serde_json::to_writer(&mut *file, &fault).map_err(|e| HistoryError::Write(e.into()))?;
            file.write_all(b"\n").map_err(HistoryError::Write)?;
            // Faults are few and matter most when a run dies: flush each one.
            file.flush().map_err(HistoryError::Write)?;
        }
        match state.history.faults.iter_mut().find(|f| f.id == fault.id) {
            Some(slot) => *slot = fault,
            None => state.history.faults.push(fault),
        }
        Ok(())
    }

    /// Records that an operator command was sent to `node`; returns its id for [`Recorder::operator_done`].
    pub fn operator_requested(
        &self,
        command: &str,
        node: &str,
        body: serde_json::Value,
    ) -> Result<u64, HistoryError> {
        let id = self.inner.next_operator_id.fetch_add(1, Ordering::Relaxed);
        self.append(|at_us| {
            Record::Operator(OperatorRecord {
                id,
                command: command.to_owned(),
                node: node.to_owned(),
                body,
                requested_at_us: at_us,
                done_at_us: None,
                outcome: OperatorOutcome::Pending,
            })
        })?;
        // Operator commands are few and matter most when a run dies: flush each one.
        self.flush()?;
        Ok(id)
    }

    /// Records the answer to operator command `id`: the node's JSON, or why it failed.
    pub fn operator_done(
        &self,
        id: u64,
        answer: Result<serde_json::Value, String>,
    ) -> Result<(), HistoryError> {
        let mut operator = {
            let state = self.lock();
            state
                .history
                .operators
                .iter()
                .find(|o| o.id == id)
                .cloned()
                .unwrap_or_else(|| panic!("operator command {id} was never requested"))
        };
        assert!(
            operator.done_at_us.is_none(),
            "operator command {id} answered twice"
        );
        operator.outcome = match answer {
            Ok(answer) => OperatorOutcome::Ok { answer },
            Err(error) => OperatorOutcome::Failed { error },
        };
        self.append(|at_us| {
            operator.done_at_us = Some(at_us);
            Record::Operator(operator)
        })?;
        self.flush()
    }

    /// Records the clean end of the run, flushes the files and returns the history.
    pub fn finish(&self) -> Result<History, HistoryError> {
        self.append(|at_us| Record::End { at_us })?;
        self.flush()?;
        Ok(self.snapshot())
    }

    /// Flushes the files (a no-op in memory).
    pub fn flush(&self) -> Result<(), HistoryError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        for file in [state.history_file.as_mut(), state.faults_file.as_mut()]
            .into_iter()
            .flatten()
        {
            file.flush().map_err(HistoryError::Write)?;
        }
        Ok(())
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History {
        self.lock().history.clone()
    }
}

/// An invoked operation waiting for its completion.
#[must_use = "complete the operation with ok, fail or timeout, or it stays indeterminate"]
pub struct Pending {
    recorder: Recorder,
    id: u64,
    user: String,
    op: Op,
}

impl Pending {
    fn complete(self, phase: Phase, op: Op, error: Option<String>) -> Result<u64, HistoryError> {
        let Pending {
            recorder, id, user, ..
        } = self;
        recorder.append(|at_us| {
            Record::Op(OpRecord {
                id,
                phase,
                at_us,
                user,
                op,
                error,
            })
        })
    }

    /// Acknowledged, with the invoke's value.
    pub fn ok(self) -> Result<u64, HistoryError> {
        let op = self.op.clone();
        self.complete(Phase::Ok, op, None)
    }

    /// Acknowledged with a result (a read's value, a register's `resiliency`).
    pub fn ok_with(self, op: Op) -> Result<u64, HistoryError> {
        self.complete(Phase::Ok, op, None)
    }

    /// Refused with an explicit error.
    pub fn fail(self, error: impl Into<String>) -> Result<u64, HistoryError> {
        let op = self.op.clone();
        self.complete(Phase::Fail, op, Some(error.into()))
    }

    /// No answer in time: indeterminate.
    pub fn timeout(self) -> Result<u64, HistoryError> {
        let op = self.op.clone();
        self.complete(Phase::Timeout, op, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_history_reads_back_the_same() {
        let dir = std::env::temp_dir().join(format!("poolchaos-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = RunInfo {
            scenario: "fe_kill".into(),
            seed: 7,
            users: vec!["alice".into(), "bob".into()],
            ..RunInfo::default()
        };
        let recorder = Recorder::to_dir(run, &dir).unwrap();
        let send = recorder
            .invoke(
                "alice",
                Op::ImSend {
                    to: "bob".into(),
                    seq: 1,
                },
            )
            .unwrap();
        recorder
            .observe(
                "bob",
                Op::ImReceived {
                    from: "alice".into(),
                    seq: 1,
                },
            )
            .unwrap();
        send.ok().unwrap();
        let fault = recorder.fault_requested("kill", "fe-a1").unwrap();
        recorder.fault_verified(fault).unwrap();
        recorder
            .probe(
                "be-a1",
                Some(View::BeRole {
                    pool: "be-a".into(),
                    role: BeRole::Principal,
                    epoch: 1,
                    accepting_writes: true,
                    synchronized: Some(true),
                    last_lsn: Some(12),
                }),
                None,
                0,
            )
            .unwrap();
        recorder.fault_undone(fault).unwrap();
        let recorded = recorder.finish().unwrap();
        let loaded = History::load(&dir).unwrap();
        assert_eq!(recorded, loaded);
        let ops = loaded.operations();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].is_ok() && ops[0].invoke_at_us.is_some());
        assert!(
            ops[1].invoke_at_us.is_none(),
            "an observation has no invoke"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_operator_command_is_its_own_record_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("poolchaos-operator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let recorder = Recorder::to_dir(RunInfo::default(), &dir).unwrap();
        let fault = recorder.fault_requested("site_down", "dc1").unwrap();
        recorder.fault_verified(fault).unwrap();
        let failback = recorder
            .operator_requested("pool-failback", "fe2-1", serde_json::json!({"pool": "fe1"}))
            .unwrap();
        recorder
            .operator_done(failback, Ok(serde_json::json!({"done": true})))
            .unwrap();
        let refused = recorder
            .operator_requested("quorum-recovery", "fe1-1", serde_json::Value::Null)
            .unwrap();
        recorder
            .operator_done(refused, Err("status 409".into()))
            .unwrap();
        let recorded = recorder.finish().unwrap();
        assert_eq!(recorded.faults.len(), 1, "an operator command is no fault");
        assert_eq!(recorded.operators.len(), 2);
        assert!(recorded.operators[0].is_ok() && recorded.operators[0].done_at_us.is_some());
        assert_eq!(
            recorded.operators[1].outcome,
            OperatorOutcome::Failed {
                error: "status 409".into()
            }
        );
        assert_eq!(History::load(&dir).unwrap(), recorded);
        // Saved and loaded again: the same history.
        recorded.save(&dir).unwrap();
        assert_eq!(History::load(&dir).unwrap(), recorded);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_old_history_reads_its_operator_faults_as_operator_commands() {
        let old = |id, kind: &str, verified| Fault {
            id,
            kind: kind.into(),
            target: "fe2-1".into(),
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

    #[tokio::test]
    async fn many_tasks_record_in_time_order() {
        let recorder = Recorder::in_memory(RunInfo::default());
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    for seq in 0..50 {
                        let user = format!("u{task}");
                        let p = recorder
                            .invoke(
                                &user,
                                Op::ImSend {
                                    to: "x".into(),
                                    seq,
                                },
                            )
                            .unwrap();
                        tokio::task::yield_now().await;
                        p.ok().unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let history = recorder.snapshot();
        assert_eq!(history.ops.len(), 8 * 50 * 2);
        assert!(history.ops.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert!(history.operations().iter().all(Operation::is_ok));
    }

    #[test]
    fn record_lines_have_the_documented_shape() {
        let line = serde_json::to_string(&Record::Op(OpRecord {
            id: 3,
            phase: Phase::Fail,
            at_us: 1500,
            user: "alice".into(),
            op: Op::ContactAdd {
                contact: "carol".into(),
            },
            error: Some("403 resiliency mode".into()),
        }))
        .unwrap();
        assert_eq!(
            line,
            r#"{"type":"op","id":3,"phase":"fail","at_us":1500,"user":"alice","op":"contact_add","value":{"contact":"carol"},"error":"403 resiliency mode"}"#
        );
        let back: Record = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Record::Op(OpRecord { id: 3, .. })));
    }
}
