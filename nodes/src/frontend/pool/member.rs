//! Who is who in a pool: a [`Member`] (one Front End process) and a routing group's [`GroupConfig`] (its members
//! at one epoch, the primary first).

use serde::{Deserialize, Serialize};

use super::placement::GroupId;

/// One Front End process: a node name and the incarnation (random per start) that tells a restart apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub incarnation: u64,
}

/// Who holds a routing group at one epoch: `members[0]` is the primary, the others secondaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub group: GroupId,
    pub epoch: u64,
    pub members: Vec<Member>,
}

impl GroupConfig {
    pub fn primary(&self) -> &Member {
        &self.members[0]
    }

    /// Members whose promises make a majority.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn has(&self, member: &Member) -> bool {
        self.members.contains(member)
    }
}
