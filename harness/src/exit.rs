//! Exit codes of every `poolchaos` command, in one place.

/// The run's checkers all said `valid` (or the command did what it was asked).
pub const VALID: i32 = 0;
/// At least one checker found a violation, or a declared bound was missed.
pub const INVALID: i32 = 1;
/// A checker could not decide, or the harness itself failed (Docker, images, a fault it could not verify).
pub const UNKNOWN: i32 = 2;
