//! The roles a pool's servers play (`frontend`, `backend`, …): the word topology and subject files share.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The role a pool's servers play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Frontend,
    /// A principal and a mirror, plus a witness node when the pool says `witness = true`.
    Backend,
    Director,
    Edge,
    Mediation,
    PstnGateway,
}

impl Role {
    /// The word used in files, node names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Backend => "backend",
            Role::Director => "director",
            Role::Edge => "edge",
            Role::Mediation => "mediation",
            Role::PstnGateway => "pstn-gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
