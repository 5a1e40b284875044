//! Pool quorum: whether a Front End pool may serve at all, from how many of its Front Ends run.
//!
//! The rule (it reproduces every row of the pool model's table): the voters are the seed Front Ends, all N when
//! N ≤ 7, the first 7 for N = 8–9, the first 9 for N = 10–12 (topology order); when the number of voters is even,
//! the Back End adds one vote; the pool serves while a strict majority of the votes is up. Starting a pool the first
//! time needs more Front Ends running ([`startup_running_min`], a literal table: it follows no clean rule). The tests
//! check the rule against the literal table of the pool model.

/// The Back End's vote, counted when the pool has an even number of voters. A pool with a Back End asks its
/// principal (`CachedVote`); a pool configured without one (in-process tests) uses [`AssumedVote`].
pub trait BackendVote: Send + Sync {
    /// Whether the Back End votes for this Front End's side of the pool now.
    fn vote(&self) -> bool;
}

/// A fixed Back End vote, for a pool configured without a Back End: `AssumedVote(true)` stands for a reachable
/// principal.
#[derive(Debug, Clone, Copy)]
pub struct AssumedVote(pub bool);

impl BackendVote for AssumedVote {
    fn vote(&self) -> bool {
        self.0
    }
}

/// Voters of a pool of `pool_size` Front Ends: its seed servers, the first ones in topology order.
pub fn voters(pool_size: usize) -> usize {
    match pool_size {
        0..=7 => pool_size,
        8..=9 => 7,
        _ => 9,
    }
}

/// The votes of a pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Votes {
    pub up: usize,
    pub total: usize,
}

impl Votes {
    /// A strict majority is up.
    pub fn has_quorum(self) -> bool {
        2 * self.up > self.total
    }
}

/// The votes when the Front Ends flagged in `running` (by topology index) run and the Back End votes `backend_vote`.
pub fn votes(running: &[bool], backend_vote: bool) -> Votes {
    let voters = voters(running.len());
    let seeds_up = running.iter().take(voters).filter(|r| **r).count();
    let backend = voters.is_multiple_of(2);
    Votes {
        up: seeds_up + usize::from(backend && backend_vote),
        total: voters + usize::from(backend),
    }
}

/// Front Ends that must run before a pool of `pool_size` starts for the first time (Lync 2013's table).
pub fn startup_running_min(pool_size: usize) -> usize {
    // N = 2 … 12; a pool of one starts alone, and beyond 12 (no Lync pool is larger) the 12 row holds.
    const TABLE: [usize; 11] = [1, 3, 3, 4, 5, 5, 6, 7, 8, 9, 10];
    match pool_size {
        0 | 1 => pool_size,
        2..=12 => TABLE[pool_size - 2],
        _ => pool_size - 2,
    }
}

/// Why a pool serves or not, as `/status` and the `503` reason phrase tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumState {
    Serving,
    /// Never started: fewer Front Ends run than the first start needs.
    NotStarted {
        running: usize,
        needed: usize,
    },
    /// Started, then lost quorum.
    BelowQuorum {
        votes: Votes,
    },
}

impl QuorumState {
    pub fn serving(&self) -> bool {
        matches!(self, QuorumState::Serving)
    }

    /// The reason a pool does not serve, `None` when it serves.
    pub fn reason(&self) -> Option<String> {
        match self {
            QuorumState::Serving => None,
            QuorumState::NotStarted { running, needed } => Some(format!(
                "pool not started: {running} front ends running, the first start needs {needed}"
            )),
            QuorumState::BelowQuorum { votes } => Some(format!(
                "pool below quorum: {} of {} votes up",
                votes.up, votes.total
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool model's table, literally: (N range, Front Ends that must run, counted among the first `seeds`).
    const TABLE: [(std::ops::RangeInclusive<usize>, usize, usize); 6] = [
        (2..=2, 1, 2),
        (3..=4, 2, 4),
        (5..=6, 3, 6),
        (7..=7, 4, 7),
        (8..=9, 4, 7),
        (10..=12, 5, 9),
    ];

    fn table_says(running: &[bool]) -> bool {
        let n = running.len();
        let (_, must_run, seeds) = TABLE.iter().find(|(r, _, _)| r.contains(&n)).unwrap();
        let seeds = (*seeds).min(n);
        running.iter().take(seeds).filter(|r| **r).count() >= *must_run
    }

    /// Claim: the rule (seed voters, Back End vote when even, strict majority) agrees with the literal table for
    /// every pool size and every set of running Front Ends, the Back End voting.
    #[test]
    fn the_rule_reproduces_the_table_for_every_running_set() {
        for n in 2..=12usize {
            for mask in 0u32..(1 << n) {
                let running: Vec<bool> = (0..n).map(|i| mask & (1 << i) != 0).collect();
                assert_eq!(
                    votes(&running, true).has_quorum(),
                    table_says(&running),
                    "N={n} running={running:?}"
                );
            }
        }
    }

    #[test]
    fn startup_counts_are_the_literal_ones() {
        let expected = [1, 3, 3, 4, 5, 5, 6, 7, 8, 9, 10];
        for (n, needed) in (2..=12).zip(expected) {
            assert_eq!(startup_running_min(n), needed, "N={n}");
        }
    }

    #[test]
    fn an_even_pool_without_the_backend_vote_needs_one_more() {
        assert!(!votes(&[true, false], false).has_quorum());
        assert!(votes(&[true, false], true).has_quorum());
        assert!(!votes(&[true, true, false, false], false).has_quorum());
    }
}
