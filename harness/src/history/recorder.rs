//! [`Recorder`]: writes a history as the run happens, from many tasks at once — stamping each line under one lock
//! so lines are in time order, appending to memory and to the files — and [`Pending`], an invoked operation
//! waiting for its completion.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::files::{HistoryError, FAULTS_FILE, HISTORY_FILE};
use super::reader::History;
use super::record::{
    Fault, Op, OpRecord, OperatorOutcome, OperatorRecord, Phase, ProbeRecord, Record, RunInfo, View,
};

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
    /// `cuts` are a partition shape's directed cuts between nodes (empty for other faults).
    pub fn fault_requested(
        &self,
        kind: &str,
        target: &str,
        cuts: Vec<[String; 2]>,
    ) -> Result<u64, HistoryError> {
        let id = self.inner.next_fault_id.fetch_add(1, Ordering::Relaxed);
        let requested_at_us = self.now_us();
        self.write_fault(Fault {
            id,
            kind: kind.to_owned(),
            target: target.to_owned(),
            cuts,
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
    use crate::history::{BeRole, Operation};

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
        let fault = recorder
            .fault_requested("kill", "fe-a1", Vec::new())
            .unwrap();
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
        let fault = recorder
            .fault_requested("site_down", "dc1", Vec::new())
            .unwrap();
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
}
