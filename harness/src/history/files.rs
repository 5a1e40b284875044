//! The two files of a history on disk — their names, the errors of reading and writing them — and JSON lines in
//! and out: one value per line, blank lines skipped, each error naming its file and line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

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

pub(super) fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Vec<T>, HistoryError> {
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

pub(super) fn write_lines<T: Serialize>(path: &Path, items: &[T]) -> Result<(), HistoryError> {
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
