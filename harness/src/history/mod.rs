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
//!
//! - `record`: what one line says: [`Record`] and the values it carries ([`Op`], [`View`], [`Attachment`], …),
//!   and [`Fault`], one line of `faults.jsonl`.
//! - `files`: the files' names ([`HISTORY_FILE`], [`FAULTS_FILE`]), [`HistoryError`], and JSON lines in and out.
//! - `reader`: [`History`], the checkers' only input: loaded, saved, and its operations paired ([`Operation`]).
//! - `recorder`: [`Recorder`], which writes the history as the run happens, and [`Pending`], an invoked operation
//!   waiting for its completion.

mod files;
mod reader;
mod record;
mod recorder;

pub use files::{HistoryError, FAULTS_FILE, HISTORY_FILE};
pub use reader::{History, Operation, Outcome};
pub use record::{
    Attachment, BeRole, CallEndedBy, Fault, GroupRole, ImId, Op, OpRecord, OperatorOutcome,
    OperatorRecord, Phase, ProbeRecord, Record, RunInfo, RunNode, View,
};
pub use recorder::{Pending, Recorder};
