//! Known-bad pools: realistic bugs planted on purpose, so the harness's checkers are proven to catch them.
//!
//! A defect exists only in a build with the cargo feature `defects` (the harness builds it as its own image,
//! `poolchaos/poolnode-defects`, never the default one). Such a build plants at most one defect, named by
//! `POOLNODE_DEFECT` and read once at start; an unknown name stops the node, so a typo never runs a sound pool
//! by mistake. Without the feature [`active`] is the constant `false`: the hooks fold away and the variable is
//! never read, so the production binary cannot misbehave by configuration.
//!
//! Each hook reads `if defects::active(Defect::X)` at the one place the bug lives.

/// The environment variable that names the defect to plant.
pub const DEFECT_ENV: &str = "POOLNODE_DEFECT";

/// Every defect a known-bad pool can carry, each a bug a real implementer could write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A routing group's primary acknowledges a write before its secondaries confirm it.
    AckBeforeReplicate,
    /// Failback hands the users back without fencing the backup pool: both pools serve them.
    FailbackWithoutFence,
    /// The backup service skips its last pass before a failback: changes made on the backup pool are lost.
    BackupLastPassDropped,
    /// A Front End pool counts its quorum against half its size rounded down: one of three keeps serving.
    ServesBelowQuorum,
    /// One relayed IM in 50 is dropped, yet its sender gets `200 OK`.
    ImDroppedOneIn50,
    /// When one leg of a call is lost, the call is ended but the other end is never sent its BYE.
    NoByeOnLostLeg,
    /// When a Front End of the pool dies, every other Front End signs its own users out too.
    SignOutOnPeerDeath,
    /// A Back End principal that lost both its witness and its mirror keeps serving.
    PrincipalServesWithoutQuorum,
}

impl Defect {
    /// Every defect, in the order the known-bad table lists them.
    pub const ALL: [Defect; 8] = [
        Defect::AckBeforeReplicate,
        Defect::FailbackWithoutFence,
        Defect::BackupLastPassDropped,
        Defect::ServesBelowQuorum,
        Defect::ImDroppedOneIn50,
        Defect::NoByeOnLostLeg,
        Defect::SignOutOnPeerDeath,
        Defect::PrincipalServesWithoutQuorum,
    ];

    /// The name `POOLNODE_DEFECT` takes.
    pub fn name(self) -> &'static str {
        match self {
            Defect::AckBeforeReplicate => "ack-before-replicate",
            Defect::FailbackWithoutFence => "failback-without-fence",
            Defect::BackupLastPassDropped => "backup-last-pass-dropped",
            Defect::ServesBelowQuorum => "serves-below-quorum",
            Defect::ImDroppedOneIn50 => "im-dropped-one-in-50",
            Defect::NoByeOnLostLeg => "no-bye-on-lost-leg",
            Defect::SignOutOnPeerDeath => "sign-out-on-peer-death",
            Defect::PrincipalServesWithoutQuorum => "principal-serves-without-quorum",
        }
    }

    /// The defect named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Defect> {
        Defect::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Whether `defect` is the one planted in this process.
#[cfg(feature = "defects")]
pub fn active(defect: Defect) -> bool {
    planted() == Some(defect)
}

/// Whether `defect` is the one planted in this process: never, in a build without the `defects` feature.
#[cfg(not(feature = "defects"))]
#[inline(always)]
pub const fn active(_defect: Defect) -> bool {
    false
}

/// The defect this process plants, read from `POOLNODE_DEFECT` on first use (and checked at start by
/// [`plant`]).
#[cfg(feature = "defects")]
pub fn planted() -> Option<Defect> {
    static PLANTED: std::sync::OnceLock<Option<Defect>> = std::sync::OnceLock::new();
    *PLANTED.get_or_init(|| {
        std::env::var(DEFECT_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .and_then(|n| Defect::from_name(&n))
    })
}

/// Reads `POOLNODE_DEFECT` at start: the defect to plant, or an error naming the known ones. A build without
/// the `defects` feature plants nothing and refuses the variable, so a sound image never pretends to be bad.
pub fn plant() -> Result<Option<Defect>, String> {
    let name = match std::env::var(DEFECT_ENV) {
        Ok(n) if !n.is_empty() => n,
        _ => return Ok(None),
    };
    let known = || {
        Defect::ALL
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(defect) = Defect::from_name(&name) else {
        return Err(format!(
            "{DEFECT_ENV}={name}: no such defect (known: {})",
            known()
        ));
    };
    if cfg!(feature = "defects") {
        Ok(Some(defect))
    } else {
        Err(format!(
            "{DEFECT_ENV}={name}: this build has no defects (build with `--features defects`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defect_is_found_by_its_name() {
        for d in Defect::ALL {
            assert_eq!(Defect::from_name(d.name()), Some(d));
        }
        assert_eq!(Defect::from_name("no-such-defect"), None);
    }

    #[cfg(not(feature = "defects"))]
    #[test]
    fn without_the_feature_no_defect_is_ever_active() {
        for d in Defect::ALL {
            assert!(!active(d));
        }
    }
}
