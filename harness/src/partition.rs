//! Partition shapes as directed cuts between nodes: which node's packets to which other node are dropped.
//!
//! A *cut* `(from, to)` drops `from`'s packets to `to`; the other direction is untouched unless cut too. Every
//! shape of the fault catalogue comes down to a set of cuts over node names:
//!
//! | shape | cuts |
//! |---|---|
//! | `partition` (groups) | both ways between any two nodes of different groups |
//! | `one_way` | `from` → `to` only: `to`'s packets to `from` are delivered |
//! | `bridge` | both ways between the two halves; the bridge nodes reach both halves and are reached by them |
//! | `ring` (majorities ring) | nodes in a ring, each reaching itself and its nearest neighbours on both sides: every node sees a majority, no two the same majority |
//! | `halves` | `partition` into two halves drawn from a seed |
//!
//! The shapes are pure functions of node names (pools, sites and role targets are expanded by the caller), so
//! the runtime that applies them, the history that records them and the checkers that read them agree.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A set of directed cuts: `(from, to)` means packets from `from` to `to` are dropped.
pub type Cuts = BTreeSet<(String, String)>;

/// The groups with every node in one group only: a node named again in a later group (a pool that holds it, as
/// `target | fe1+fe2` does for `fe2-3 | fe1+fe2`) stays in the first group that names it, so "the rest" means
/// everyone else. A group left empty is an error.
pub fn disjoint(groups: Vec<Vec<String>>) -> Result<Vec<Vec<String>>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let kept: Vec<String> = group
            .into_iter()
            .filter(|n| seen.insert(n.clone()))
            .collect();
        if kept.is_empty() {
            return Err(format!(
                "group {} holds no node that an earlier group does not",
                i + 1
            ));
        }
        out.push(kept);
    }
    Ok(out)
}

/// Both directions cut between any two nodes of different groups (groups made [`disjoint`] first).
pub fn groups(groups: Vec<Vec<String>>) -> Result<Cuts, String> {
    if groups.len() < 2 {
        return Err("give at least two groups of nodes".into());
    }
    let groups = disjoint(groups)?;
    let mut cuts = Cuts::new();
    for (i, a) in groups.iter().enumerate() {
        for (j, b) in groups.iter().enumerate() {
            if i != j {
                for x in a {
                    for y in b {
                        cuts.insert((x.clone(), y.clone()));
                    }
                }
            }
        }
    }
    Ok(cuts)
}

/// `from`'s packets to `to` dropped; `to`'s packets to `from` delivered. The sides must not share a node.
pub fn one_way(from: Vec<String>, to: Vec<String>) -> Result<Cuts, String> {
    let sides = disjoint(vec![from, to])
        .map_err(|_| "one_way: `to` holds no node that `from` does not".to_string())?;
    if sides[0].is_empty() {
        return Err("one_way: `from` names no node".into());
    }
    Ok(sides[0]
        .iter()
        .flat_map(|a| sides[1].iter().map(move |b| (a.clone(), b.clone())))
        .collect())
}

/// The two halves cut from each other both ways; the bridge nodes, taken out of both halves, stay connected to
/// everyone.
pub fn bridge(halves: Vec<Vec<String>>, bridge: Vec<String>) -> Result<Cuts, String> {
    if halves.len() != 2 {
        return Err(format!(
            "bridge: give exactly two groups, not {}",
            halves.len()
        ));
    }
    if bridge.is_empty() {
        return Err("bridge: the bridge names no node".into());
    }
    let mut all = vec![bridge];
    all.extend(halves);
    let mut sides = disjoint(all).map_err(|e| format!("bridge: {e} (or the bridge)"))?;
    sides.remove(0);
    groups(sides)
}

/// Majorities ring over `nodes` in the given order: each node reaches itself and its `k` nearest neighbours on
/// each side, where `2k ≥ ⌊n/2⌋`, so each sees a majority; every other pair is cut both ways. Needs four nodes or
/// more (with three, each node's majority is everyone).
pub fn ring(nodes: Vec<String>) -> Result<Cuts, String> {
    let nodes = dedup(nodes);
    let n = nodes.len();
    if n < 4 {
        return Err(format!(
            "ring: needs at least four nodes, the targets name {n}"
        ));
    }
    let k = (n / 2).div_ceil(2);
    let mut cuts = Cuts::new();
    for i in 0..n {
        for j in 0..n {
            let d = i.abs_diff(j);
            let distance = d.min(n - d);
            if distance > k {
                cuts.insert((nodes[i].clone(), nodes[j].clone()));
            }
        }
    }
    Ok(cuts)
}

/// Two halves of `nodes` drawn from `seed` (sizes ⌊n/2⌋ and ⌈n/2⌉), cut from each other both ways. The same
/// nodes and seed always draw the same halves, whatever order the nodes are named in.
pub fn halves(nodes: Vec<String>, seed: u64) -> Result<(Vec<Vec<String>>, Cuts), String> {
    let mut nodes: Vec<String> = dedup(nodes);
    if nodes.len() < 2 {
        return Err(format!(
            "halves: needs at least two nodes, the targets name {}",
            nodes.len()
        ));
    }
    nodes.sort();
    nodes.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let second = nodes.split_off(nodes.len() / 2);
    let (mut a, mut b) = (nodes, second);
    a.sort();
    b.sort();
    let drawn = vec![a, b];
    let cuts = groups(drawn.clone())?;
    Ok((drawn, cuts))
}

/// Whether `a` and `b` are cut in either direction (a TCP peer link needs both).
pub fn severs(cuts: &Cuts, a: &str, b: &str) -> bool {
    cuts.iter()
        .any(|(x, y)| (x == a && y == b) || (x == b && y == a))
}

/// Every node a cut names.
pub fn nodes(cuts: &Cuts) -> BTreeSet<&str> {
    cuts.iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect()
}

fn dedup(nodes: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    nodes
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn a_node_named_again_in_a_later_group_stays_in_the_first() {
        let out = disjoint(vec![names(&["fe2-3"]), names(&["fe1-1", "fe2-1", "fe2-3"])]).unwrap();
        assert_eq!(out, vec![names(&["fe2-3"]), names(&["fe1-1", "fe2-1"])]);
    }

    #[test]
    fn a_group_left_empty_is_an_error() {
        let e = disjoint(vec![names(&["fe1-1", "fe1-2"]), names(&["fe1-2"])]).unwrap_err();
        assert!(e.contains("group 2"), "{e}");
    }

    #[test]
    fn groups_cut_both_ways_between_groups_and_never_inside_one() {
        let cuts = groups(vec![names(&["a", "b"]), names(&["c"])]).unwrap();
        let want: Cuts = [
            pair("a", "c"),
            pair("b", "c"),
            pair("c", "a"),
            pair("c", "b"),
        ]
        .into();
        assert_eq!(cuts, want);
        assert!(groups(vec![names(&["a"])]).is_err());
    }

    #[test]
    fn one_way_cuts_one_direction_only() {
        let cuts = one_way(names(&["p"]), names(&["s1", "s2"])).unwrap();
        assert_eq!(cuts, [pair("p", "s1"), pair("p", "s2")].into());
        assert!(!cuts.contains(&pair("s1", "p")));
        assert!(severs(&cuts, "s1", "p"));
        assert!(!severs(&cuts, "s1", "s2"));
        assert!(one_way(names(&["p"]), names(&["p"])).is_err());
    }

    #[test]
    fn a_bridge_reaches_both_halves_that_do_not_reach_each_other() {
        let cuts = bridge(
            vec![names(&["a1", "a2", "w"]), names(&["b1", "w"])],
            names(&["w"]),
        )
        .unwrap();
        assert!(severs(&cuts, "a1", "b1") && severs(&cuts, "a2", "b1"));
        assert!(!nodes(&cuts).contains("w"), "{cuts:?}");
        assert!(!severs(&cuts, "a1", "a2"));
        assert!(bridge(vec![names(&["w"]), names(&["b1"])], names(&["w"])).is_err());
        assert!(bridge(vec![names(&["a"])], names(&["w"])).is_err());
    }

    #[test]
    fn in_a_majorities_ring_every_node_sees_a_majority_and_no_two_the_same() {
        for n in 4..=9 {
            let nodes: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let cuts = ring(nodes.clone()).unwrap();
            assert!(!cuts.is_empty(), "n={n}: a ring cuts something");
            let mut seen_sets = BTreeSet::new();
            for a in &nodes {
                let sees: BTreeSet<&String> =
                    nodes.iter().filter(|b| !severs(&cuts, a, b)).collect();
                assert!(sees.len() > n / 2, "n={n}: {a} sees {sees:?}, no majority");
                assert!(
                    seen_sets.insert(sees),
                    "n={n}: two nodes see the same majority"
                );
            }
            // Cuts are symmetric.
            assert!(cuts
                .iter()
                .all(|(a, b)| cuts.contains(&(b.clone(), a.clone()))));
        }
        assert!(ring(names(&["a", "b", "c"])).is_err());
    }

    #[test]
    fn halves_are_drawn_from_the_seed_whatever_the_order_named() {
        let nodes = names(&["a", "b", "c", "d", "e"]);
        let (h1, c1) = halves(nodes.clone(), 7).unwrap();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let (h2, c2) = halves(reversed, 7).unwrap();
        assert_eq!((h1.clone(), c1), (h2, c2));
        assert_eq!(h1[0].len() + h1[1].len(), 5);
        assert_eq!(h1[0].len(), 2);
        let draws: BTreeSet<_> = (0..20)
            .map(|s| halves(nodes.clone(), s).unwrap().0)
            .collect();
        assert!(draws.len() > 3, "different seeds draw different halves");
        assert!(halves(names(&["a"]), 1).is_err());
    }
}
