//! Hand-made histories for the checker, latency and report tests: one clean FE-kill run, and a builder to add
//! the violations to it. Times are in ms for readability.

use crate::history::{
    BeRole, Fault, GroupRole, History, Op, OpRecord, OperatorOutcome, OperatorRecord, Phase,
    ProbeRecord, Record, RunInfo, RunNode, View,
};

pub(crate) struct Build {
    records: Vec<Record>,
    faults: Vec<Fault>,
    next_id: u64,
}

fn us(ms: u64) -> u64 {
    ms * 1000
}

impl Build {
    pub(crate) fn new(users: &[&str]) -> Build {
        Build {
            records: vec![Record::Run(RunInfo {
                scenario: "fe_kill".into(),
                seed: 42,
                users: users.iter().map(|u| u.to_string()).collect(),
                ..RunInfo::default()
            })],
            faults: Vec::new(),
            next_id: 0,
        }
    }

    /// The run's nodes: `(node, pool, site)`.
    pub(crate) fn nodes(mut self, nodes: &[(&str, &str, &str)]) -> Build {
        if let Some(Record::Run(run)) = self.records.first_mut() {
            run.nodes = nodes
                .iter()
                .map(|(name, pool, site)| RunNode {
                    name: (*name).into(),
                    pool: (*pool).into(),
                    site: (*site).into(),
                })
                .collect();
        }
        self
    }

    /// The users' REGISTERs asked for bindings of `s` seconds.
    pub(crate) fn register_expires(mut self, s: u64) -> Build {
        if let Some(Record::Run(run)) = self.records.first_mut() {
            run.register_expires_s = Some(s);
        }
        self
    }

    /// Every user had started by `at_ms`.
    pub(crate) fn users_started_by(mut self, at_ms: u64) -> Build {
        if let Some(Record::Run(run)) = self.records.first_mut() {
            run.users_started_by_us = Some(us(at_ms));
        }
        self
    }

    fn line(&mut self, id: u64, phase: Phase, at_ms: u64, user: &str, op: Op, error: Option<&str>) {
        self.records.push(Record::Op(OpRecord {
            id,
            phase,
            at_us: us(at_ms),
            user: user.into(),
            op,
            error: error.map(str::to_owned),
        }));
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// An operation acknowledged with the invoke's value.
    pub(crate) fn ok(self, user: &str, op: Op, invoke_ms: u64, ok_ms: u64) -> Build {
        let result = op.clone();
        self.ok_with(user, op, result, invoke_ms, ok_ms)
    }

    /// An operation acknowledged with a result.
    pub(crate) fn ok_with(
        mut self,
        user: &str,
        op: Op,
        result: Op,
        invoke_ms: u64,
        ok_ms: u64,
    ) -> Build {
        let id = self.id();
        self.line(id, Phase::Invoke, invoke_ms, user, op, None);
        self.line(id, Phase::Ok, ok_ms, user, result, None);
        self
    }

    pub(crate) fn fail(
        mut self,
        user: &str,
        op: Op,
        invoke_ms: u64,
        at_ms: u64,
        error: &str,
    ) -> Build {
        let id = self.id();
        self.line(id, Phase::Invoke, invoke_ms, user, op.clone(), None);
        self.line(id, Phase::Fail, at_ms, user, op, Some(error));
        self
    }

    pub(crate) fn timeout(mut self, user: &str, op: Op, invoke_ms: u64, at_ms: u64) -> Build {
        let id = self.id();
        self.line(id, Phase::Invoke, invoke_ms, user, op.clone(), None);
        self.line(id, Phase::Timeout, at_ms, user, op, None);
        self
    }

    pub(crate) fn observe(mut self, user: &str, op: Op, at_ms: u64) -> Build {
        let id = self.id();
        self.line(id, Phase::Ok, at_ms, user, op, None);
        self
    }

    /// A probe answered at `at_ms`, in the round of the probes' steady pace (one every 250 ms).
    pub(crate) fn probe(self, node: &str, view: View, at_ms: u64) -> Build {
        self.probe_in(node, view, at_ms, at_ms / 250)
    }

    /// A probe answered at `at_ms` in probe round `round`.
    pub(crate) fn probe_in(mut self, node: &str, view: View, at_ms: u64, round: u64) -> Build {
        self.records.push(Record::Probe(ProbeRecord {
            at_us: us(at_ms),
            node: node.into(),
            view: Some(view),
            error: None,
            round: Some(round),
        }));
        self
    }

    /// A probe of `node` that got no answer, at `at_ms` in probe round `round`.
    pub(crate) fn unreachable_in(mut self, node: &str, at_ms: u64, round: u64) -> Build {
        self.records.push(Record::Probe(ProbeRecord {
            at_us: us(at_ms),
            node: node.into(),
            view: None,
            error: Some("no answer within 1 s".into()),
            round: Some(round),
        }));
        self
    }

    /// A bindings probe of `node` that got no answer, at `at_ms` in round `round`.
    pub(crate) fn bindings_unanswered_in(mut self, node: &str, at_ms: u64, round: u64) -> Build {
        self.records.push(Record::Probe(ProbeRecord {
            at_us: us(at_ms),
            node: node.into(),
            view: None,
            error: Some(format!(
                "{}no answer within 5 s",
                super::bindings::PROBE_ERROR
            )),
            round: Some(round),
        }));
        self
    }

    /// A probe of `node` that got no answer at `at_ms`, in the round of the probes' steady pace.
    pub(crate) fn unreachable(self, node: &str, at_ms: u64) -> Build {
        self.unreachable_in(node, at_ms, at_ms / 250)
    }

    pub(crate) fn fault(
        mut self,
        kind: &str,
        target: &str,
        at_ms: u64,
        verified_ms: Option<u64>,
        undone_ms: Option<u64>,
    ) -> Build {
        let id = self.faults.len() as u64;
        self.faults.push(Fault {
            id,
            kind: kind.into(),
            target: target.into(),
            cuts: Vec::new(),
            requested_at_us: us(at_ms),
            verified_at_us: verified_ms.map(us),
            undone_at_us: undone_ms.map(us),
            undo_requested_at_us: undone_ms.map(us),
        });
        self
    }

    /// The last fault's directed cuts (`[a, b]`: `a`'s packets to `b` dropped), as the runner records a partition
    /// shape's.
    pub(crate) fn cutting(mut self, cuts: &[[&str; 2]]) -> Build {
        let fault = self.faults.last_mut().expect("a fault before its cuts");
        fault.cuts = cuts
            .iter()
            .map(|[a, b]| [a.to_string(), b.to_string()])
            .collect();
        self
    }

    /// An operator command sent to `node` at `at_ms` and answered 200 at `done_ms` (never, when absent).
    pub(crate) fn operator(
        mut self,
        command: &str,
        node: &str,
        at_ms: u64,
        done_ms: Option<u64>,
    ) -> Build {
        let id = self
            .records
            .iter()
            .filter(|r| matches!(r, Record::Operator(_)))
            .count() as u64;
        self.records.push(Record::Operator(OperatorRecord {
            id,
            command: command.into(),
            node: node.into(),
            body: serde_json::Value::Null,
            requested_at_us: us(at_ms),
            done_at_us: done_ms.map(us),
            outcome: match done_ms {
                Some(_) => OperatorOutcome::Ok {
                    answer: serde_json::Value::Null,
                },
                None => OperatorOutcome::Pending,
            },
        }));
        self
    }

    pub(crate) fn end(mut self, at_ms: u64) -> Build {
        self.records.push(Record::End { at_us: us(at_ms) });
        self
    }

    /// The history, lines sorted by time (stable, so a hand-made same-stamp order is kept).
    pub(crate) fn build(self) -> History {
        let at = |r: &Record| match r {
            Record::Run(_) => 0,
            Record::Op(o) => o.at_us,
            Record::Probe(p) => p.at_us,
            Record::Operator(o) => o.at_us(),
            Record::End { at_us } => *at_us,
        };
        let mut records = self.records;
        records.sort_by_key(at);
        History::from_records(records, self.faults)
    }
}

pub(crate) fn register(resiliency: bool) -> Op {
    Op::Register {
        registrar: Some("fe-a".into()),
        resiliency,
        attachment: Default::default(),
    }
}

/// A REGISTER answered by `server`, which named the user's routing group `group`, the connection in through
/// `entry` (the server itself when `None`).
pub(crate) fn register_at(server: &str, group: &str, entry: Option<&str>) -> Op {
    Op::Register {
        registrar: Some("fe-a".into()),
        resiliency: false,
        attachment: crate::history::Attachment {
            entry: Some(entry.unwrap_or(server).into()),
            server: Some(server.into()),
            group: Some(group.into()),
        },
    }
}

pub(crate) fn im(to: &str, seq: u64) -> Op {
    Op::ImSend { to: to.into(), seq }
}

pub(crate) fn got(from: &str, seq: u64) -> Op {
    Op::ImReceived {
        from: from.into(),
        seq,
    }
}

pub(crate) fn add(contact: &str) -> Op {
    Op::ContactAdd {
        contact: contact.into(),
    }
}

pub(crate) fn list(contacts: &[&str]) -> Op {
    Op::ContactList {
        contacts: Some(contacts.iter().map(|c| c.to_string()).collect()),
    }
}

pub(crate) fn list_invoke() -> Op {
    Op::ContactList { contacts: None }
}

pub(crate) fn be(pool: &str, role: BeRole, epoch: u64) -> View {
    View::BeRole {
        pool: pool.into(),
        role,
        epoch,
        accepting_writes: role == BeRole::Principal,
        synchronized: None,
        last_lsn: None,
    }
}

/// A Back End node's view with its log position and whether the pair is synchronized.
pub(crate) fn be_at(
    pool: &str,
    role: BeRole,
    epoch: u64,
    accepting_writes: bool,
    synchronized: bool,
    last_lsn: u64,
) -> View {
    View::BeRole {
        pool: pool.into(),
        role,
        epoch,
        accepting_writes,
        synchronized: Some(synchronized),
        last_lsn: Some(last_lsn),
    }
}

pub(crate) fn group(group: &str, role: GroupRole, epoch: u64) -> View {
    View::GroupRole {
        pool: "fe-a".into(),
        group: group.into(),
        role,
        epoch,
        accepting_writes: role == GroupRole::Primary,
    }
}

/// What a Front End of paired pool `pool` says about pairing: it serves the users of `serves` at full service.
pub(crate) fn pairing(pool: &str, serves: &[&str]) -> View {
    View::Pairing {
        pool: pool.into(),
        serves_users_of: serves.iter().map(|p| p.to_string()).collect(),
        fenced: false,
        pair_failed_over: serves.iter().any(|p| *p != pool),
        resiliency: false,
    }
}

pub(crate) fn serving(serving: bool, running: &[&str]) -> View {
    View::PoolServing {
        pool: "fe-a".into(),
        serving,
        fes: vec!["fe-a1".into(), "fe-a2".into(), "fe-a3".into()],
        fes_running: running.iter().map(|r| r.to_string()).collect(),
    }
}

/// A clean run: fe-a1 is killed at 10 s (proven at 10.2 s) and restarted at 30 s; alice, homed on fe-a1, is
/// signed out at 10.3 s and registers again at 12.5 s; bob and carol see nothing. IMs, contacts, presence,
/// probes and a call all behave.
pub(crate) fn clean() -> Build {
    let all = ["fe-a1", "fe-a2", "fe-a3"];
    let two = ["fe-a2", "fe-a3"];
    let mut b = Build::new(&["alice", "bob", "carol"])
        .ok("alice", register(false), 100, 150)
        .ok("bob", register(false), 110, 170)
        .ok("carol", register(false), 120, 160)
        .ok("bob", add("alice"), 5_000, 5_040)
        .ok(
            "carol",
            Op::Publish {
                state: "busy#1".into(),
                granted_s: None,
            },
            6_000,
            6_030,
        )
        .ok(
            "alice",
            Op::Subscribe {
                target: "carol".into(),
            },
            6_100,
            6_150,
        )
        .observe(
            "alice",
            Op::NotifyReceived {
                target: "carol".into(),
                state: Some("busy#1".into()),
            },
            6_200,
        )
        .fault("kill", "fe-a1", 10_000, Some(10_200), Some(30_000))
        .observe(
            "alice",
            Op::RegistrationLost {
                reason: "connection reset".into(),
            },
            10_300,
        )
        .fail(
            "alice",
            register(false),
            10_400,
            10_900,
            "503 Service Unavailable",
        )
        .ok("alice", register(false), 12_000, 12_500)
        .ok(
            "alice",
            Op::Subscribe {
                target: "carol".into(),
            },
            12_600,
            12_700,
        )
        .observe(
            "alice",
            Op::NotifyReceived {
                target: "carol".into(),
                state: Some("busy#1".into()),
            },
            12_800,
        )
        .ok(
            "bob",
            Op::Refresh {
                action: Some("refreshed".into()),
                resiliency: false,
                attachment: Default::default(),
            },
            20_000,
            20_050,
        )
        .ok(
            "bob",
            Op::CallSetup {
                to: "carol".into(),
                call_id: "c1".into(),
            },
            45_000,
            45_300,
        )
        .ok(
            "bob",
            Op::CallEnd {
                call_id: "c1".into(),
                by: Some(crate::history::CallEndedBy::Bye),
            },
            50_000,
            50_020,
        )
        .ok_with("bob", list_invoke(), list(&["alice"]), 40_000, 40_030)
        .observe(
            "bob",
            Op::NotifyReceived {
                target: "carol".into(),
                state: Some("busy#1".into()),
            },
            41_000,
        );
    // IMs alice → bob 1..=3 before, during and after the fault; bob → carol 1..=2.
    for (seq, at) in [(1, 2_000), (2, 15_000), (3, 35_000)] {
        b = b
            .ok("alice", im("bob", seq), at, at + 40)
            .observe("bob", got("alice", seq), at + 30);
    }
    for (seq, at) in [(1, 3_000), (2, 36_000)] {
        b = b
            .ok("bob", im("carol", seq), at, at + 50)
            .observe("carol", got("bob", seq), at + 35);
    }
    for at in [0, 20_000, 40_000, 55_000] {
        b = b
            .probe("be-a1", be("be-a", BeRole::Principal, 1), at)
            .probe("be-a2", be("be-a", BeRole::Mirror, 1), at + 1)
            .probe(
                "fe-a2",
                if at < 10_000 {
                    group("rg-1", GroupRole::Secondary, 1)
                } else {
                    group("rg-1", GroupRole::Primary, 2)
                },
                at + 2,
            );
    }
    // bob sees alice's presence again once she is back.
    b = b.observe(
        "bob",
        Op::NotifyReceived {
            target: "alice".into(),
            state: Some("online".into()),
        },
        13_100,
    );
    b.probe("fe-a1", group("rg-1", GroupRole::Primary, 1), 5)
        .probe("fe-a1", group("rg-1", GroupRole::Primary, 1), 9_000)
        .probe("fe-a2", group("rg-1", GroupRole::Secondary, 1), 9_001)
        .probe("fe-a", serving(true, &all), 0)
        .probe("fe-a", serving(true, &two), 10_500)
        .probe("fe-a", serving(true, &two), 20_000)
        .probe("fe-a", serving(true, &all), 31_000)
        .probe("fe-a", serving(true, &all), 40_000)
        .end(60_000)
}
