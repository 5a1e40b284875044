//! What one line of a history says: the [`Record`]s of `history.jsonl` (the run, an operation's step, a probe, an
//! operator command, the end) with the values they carry — what a user did or saw ([`Op`]), what a node said
//! about its role ([`View`]), what a signed-in user depends on ([`Attachment`]) — and the [`Fault`]s of
//! `faults.jsonl`. Each type's serialized form is the file format.

use serde::{Deserialize, Serialize};

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
    /// The `Expires` the users' REGISTERs asked for: how long a binding lives without a refresh. `None` in
    /// histories written before it was recorded (the checkers then assume the workload's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_expires_s: Option<u64>,
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
    /// The user signed off: a REGISTER with `Expires: 0` removing its binding. A user that signed off does nothing
    /// more in the run.
    Unregister {},
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
            Op::Unregister {} => "unregister",
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
    /// The users whose bindings (registrations) a registrar of `pool` holds, as a subject's bindings probe read
    /// them (see [`crate::subject::BindingsProbe`]).
    Bindings { pool: String, users: Vec<String> },
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
    /// A partition shape's directed cuts over node names: `[a, b]` drops `a`'s packets to `b`. Empty for other
    /// faults, and in histories written before shapes were recorded (their `partition` targets are read instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<[String; 2]>,
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

    /// Whether the fault cuts `a` from `b` in either direction by its recorded cuts (a partition shape); `None` when
    /// it recorded none (not a partition, or a history from before cuts were recorded).
    pub fn severs(&self, a: &str, b: &str) -> Option<bool> {
        if self.cuts.is_empty() {
            return None;
        }
        Some(
            self.cuts
                .iter()
                .any(|[x, y]| (x == a && y == b) || (x == b && y == a)),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

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
