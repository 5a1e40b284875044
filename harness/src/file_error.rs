//! Where a mistake in a file is: [`FileError`] names the file, the line and the field, for topology, scenario
//! and subject files alike.

use std::path::{Path, PathBuf};

/// A mistake in a topology (or scenario) file: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read {file}:{line}: {field}: {expected}")]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based line of the offending value (or of its table when the field is missing).
    pub line: usize,
    /// The field, as a path (`pool[2].pair`).
    pub field: String,
    pub expected: String,
}

/// Turns a serde/TOML error into a [`FileError`] with the line of the span and the field toml names.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> FileError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    let message = e.message().to_string();
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("(syntax)")
        .to_string();
    FileError {
        file: path.to_path_buf(),
        line,
        field,
        expected: message,
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}
