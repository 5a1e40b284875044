//! A scenario's claim in parts, each naming what judges it: a checker the scenario runs (`registration`), a
//! bound of every run (`bound:reregister.p99`) or a nightly bound (`nightly:write_unavailable.p99`), by the
//! bound's left side. The one-sentence `claim` stays for reports; the parts make every piece of it checked.
//!
//! - [`part`]: [`ClaimPart`], what a `checked_by` entry names ([`Check`]), and why a part is not checked
//!   ([`unchecked`]). The scenario loader stands on it.
//! - [`readme`]: the README's table of every scenario's claim parts ([`table`]), rendered from the loaded
//!   scenarios. It stands on the scenario loader.

pub mod part;
pub mod readme;

pub use part::{unchecked, Check, ClaimPart};
pub use readme::table;
