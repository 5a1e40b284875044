//! Checkers: each reads a history and returns a verdict. A checker that cannot decide says unknown, never valid.
//!
//! - [`verdict`]: `Verdict`, `Violation` and how verdicts merge (invalid beats unknown beats valid).
//! - [`compose`]: the `Checker` trait and `Composed`, which runs a scenario's checkers and merges their verdicts.
//! - [`registration`]: registration continuity: affected users come back within the bound, others never leave.
//! - [`im`]: IM delivery: acknowledged IMs delivered exactly once and in order, refused ones never.
//! - [`durability`]: acknowledged contact and presence writes stay visible; loss measured against an RPO bound.
//! - [`split_brain`]: never two principals of a Back End pool, never two primaries of a routing group.
//! - [`quorum`]: a pool serves exactly when the literal quorum table says it should.
//! - [`resiliency`]: in resiliency mode persistent changes are refused and IM works.
//! - [`backend`]: Back End claims over the probes: a principal within a bound after the principal's loss, no
//!   promotion without a witness but by an operator, a principal cut from witness and partner stops serving, a
//!   returning mirror caught up before it reports synchronized.
//! - [`calls`]: every answered call ends at the caller (BYE) within a bound.
//! - [`bindings`]: after the faults every registrar holds exactly the registered users' bindings, all alike.

pub mod backend;
pub mod bindings;
pub mod calls;
pub mod compose;
pub mod durability;
pub mod im;
pub mod quorum;
pub mod registration;
pub mod resiliency;
pub mod split_brain;
pub mod verdict;

#[cfg(test)]
pub(crate) mod fixtures;

pub use backend::BackendClaims;
pub use bindings::BindingConvergence;
pub use calls::CallsEnd;
pub use compose::{Checker, Composed, Unsupported};
pub use durability::Durability;
pub use im::ImDelivery;
pub use quorum::Quorum;
pub use registration::{MaySignOut, RegistrationContinuity};
pub use resiliency::ResiliencyMode;
pub use split_brain::NoSplitBrain;
pub use verdict::{Verdict, Violation};
