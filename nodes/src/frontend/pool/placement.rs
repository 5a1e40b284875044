//! Placement: which routing group a user is in, and which Front Ends should hold a group's three replicas.
//!
//! Both are pure functions of names, so every Front End computes the same answer without asking anyone. A group's
//! *ring* is the pool's nodes in topology order, rotated to start at the group's index: its first three live nodes
//! are the group's desired replicas, the first of them its desired primary. Groups outnumber Front Ends two to one,
//! so a lost Front End's groups spread their load over several others.

/// A routing group's index (0-based); its name is `rg-<index + 1>`.
pub type GroupId = usize;

/// Replicas of each routing group (three in Lync), fewer when the pool is smaller.
pub fn replicas_target(pool_size: usize) -> usize {
    pool_size.min(3)
}

/// Live replicas below which a group refuses its users: 2 of 3. A pool of two Front Ends has two replicas and its
/// quorum already counts on the Back End's vote, so one live replica serves there.
pub fn replicas_min(pool_size: usize) -> usize {
    if pool_size <= 2 {
        1
    } else {
        2
    }
}

/// Routing groups of a pool of `pool_size` Front Ends.
pub fn groups_for(pool_size: usize) -> usize {
    (2 * pool_size).max(1)
}

/// The group's name in `/status` and reason phrases.
pub fn group_name(group: GroupId) -> String {
    format!("rg-{}", group + 1)
}

/// The user's routing group: FNV-1a of the user name (stable across processes and Rust versions, unlike the
/// standard hasher).
pub fn group_of(user: &str, groups: usize) -> GroupId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % groups.max(1) as u64) as GroupId
}

/// The group's ring: every node, starting at the group's index.
pub fn ring(group: GroupId, nodes: &[String]) -> Vec<String> {
    let n = nodes.len();
    (0..n).map(|k| nodes[(group + k) % n].clone()).collect()
}

/// The replicas a group should have when exactly the nodes for which `live` holds are up: the first
/// [`replicas_target`] live nodes of its ring, primary first.
pub fn desired(group: GroupId, nodes: &[String], live: impl Fn(&str) -> bool) -> Vec<String> {
    ring(group, nodes)
        .into_iter()
        .filter(|n| live(n))
        .take(replicas_target(nodes.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("fe{i}")).collect()
    }

    #[test]
    fn every_group_has_three_different_front_ends() {
        let nodes = nodes(5);
        for group in 0..groups_for(5) {
            let replicas = desired(group, &nodes, |_| true);
            assert_eq!(replicas.len(), 3);
            let mut unique = replicas.clone();
            unique.dedup();
            assert_eq!(unique.len(), 3, "{replicas:?}");
        }
        assert_eq!(desired(0, &nodes, |_| true), ["fe1", "fe2", "fe3"]);
        assert_eq!(desired(0, &nodes, |n| n != "fe1"), ["fe2", "fe3", "fe4"]);
    }

    #[test]
    fn group_of_is_stable_and_spreads_users() {
        assert_eq!(group_of("alice", 10), group_of("alice", 10));
        let mut counts = [0usize; 10];
        for i in 0..1000 {
            counts[group_of(&format!("user{i}"), 10)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
    }
}
