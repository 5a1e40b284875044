//! Partition shapes on a running cluster: the directed cuts of [`crate::partition`] as packet filters in each
//! node's network namespace, and the proof of every direction.
//!
//! A cut `(a, b)` is a `DROP` of `a`'s addresses in `b`'s `INPUT`, in a chain of the fault's own (`PC<id>`), so
//! each fault is removed on its own and a heal never touches another fault's filters.
//!
//! The proof is a *witness* per direction: a counting rule at the end of the receiver's `INPUT` (chain `PW<id>`),
//! one per sender address, and datagrams sent from inside the sender's namespace to the receiver's address on every
//! network they share. A datagram the counter sees has passed every filter; one it never sees was dropped. So each
//! direction is judged on its own, which a TCP connect cannot do for a one-way cut (the handshake needs both ways).
//! After `apply`, every cut direction must count nothing and every other direction among the nodes named must
//! count (unless another fault's filter drops it); after `heal`, every direction must count again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::info;

use super::cluster::{Cluster, NodeHandle};
use super::docker::RuntimeError;
use super::nodes::{netns_output, netns_sh, on_networks, pid, resolve, VERIFY_TIMEOUT};
use crate::fault::Fault;
use crate::partition::Cuts;

/// The UDP port the witness datagrams go to (discard): counted in `INPUT` whether or not anyone listens.
const WITNESS_PORT: u16 = 9;
/// How long after sending a round of witness datagrams their counts are read.
const WITNESS_WAIT: Duration = Duration::from_millis(250);

/// A partition shape resolved against the run: its nodes and its cuts.
struct Resolved {
    nodes: BTreeMap<String, NodeHandle>,
    cuts: Cuts,
}

/// Every target a partition shape names.
fn targets(fault: &Fault) -> Vec<&String> {
    match fault {
        Fault::Partition { groups } => groups.iter().flatten().collect(),
        Fault::OneWay { from, to } => from.iter().chain(to).collect(),
        Fault::Bridge { groups, bridge } => groups.iter().flatten().chain([bridge]).collect(),
        Fault::Ring { nodes } => nodes.iter().collect(),
        Fault::Halves { among, .. } => among.iter().collect(),
        _ => Vec::new(),
    }
}

async fn resolve_shape(c: &Cluster, fault: &Fault) -> Result<Resolved, RuntimeError> {
    let mut expanded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for target in targets(fault) {
        let found = resolve(c, target).await?;
        expanded.insert(
            target.clone(),
            found.iter().map(|n| n.name.clone()).collect(),
        );
        for n in found {
            nodes.insert(n.name.clone(), n);
        }
    }
    let cuts = fault
        .cuts(|t| {
            expanded
                .get(t)
                .cloned()
                .ok_or_else(|| format!("target {t} not resolved"))
        })
        .ok_or_else(|| RuntimeError::Other(format!("{} is not a partition", fault.kind())))?
        .map_err(|e| RuntimeError::Other(format!("{}: {e}", fault.kind())))?;
    Ok(Resolved { nodes, cuts })
}

/// Drops every cut direction's packets, then proves each cut direction cut and each other one open.
pub(super) async fn apply(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    let shape = resolve_shape(c, fault).await?;
    let addrs = addresses(c, &shape.nodes).await?;
    let chain = format!("PC{id}");
    for (name, node) in &shape.nodes {
        let senders: Vec<&String> = shape
            .cuts
            .iter()
            .filter(|(_, to)| to == name)
            .map(|(from, _)| from)
            .collect();
        if senders.is_empty() {
            continue;
        }
        let mut script = format!("iptables -N {chain} && iptables -I INPUT -j {chain}");
        for from in senders {
            for ip in addrs[from].values() {
                script.push_str(&format!(" && iptables -A {chain} -s {ip} -j DROP"));
            }
        }
        netns_sh(pid(c, node).await?, &script).await?;
    }
    info!(
        fault = fault.kind(),
        cuts = shape.cuts.len(),
        "partition filters in place"
    );
    prove(c, &shape, &addrs, id, true).await
}

/// Removes the fault's filters from every node it names (idempotent: a node restarted since has none), then proves
/// every direction it cut open again.
pub(super) async fn heal(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    let shape = resolve_shape(c, fault).await?;
    let chain = format!("PC{id}");
    for node in shape.nodes.values() {
        let script = format!(
            "iptables -D INPUT -j {chain} 2>/dev/null; iptables -F {chain} 2>/dev/null; \
             iptables -X {chain} 2>/dev/null; ! iptables -n -L {chain} >/dev/null 2>&1"
        );
        netns_sh(pid(c, node).await?, &script).await?;
    }
    let addrs = addresses(c, &shape.nodes).await?;
    prove(c, &shape, &addrs, id, false).await
}

/// Each node's address on each Docker network it is attached to now.
async fn addresses(
    c: &Cluster,
    nodes: &BTreeMap<String, NodeHandle>,
) -> Result<BTreeMap<String, BTreeMap<String, IpAddr>>, RuntimeError> {
    let mut out = BTreeMap::new();
    for (name, node) in nodes {
        out.insert(name.clone(), on_networks(c, node).await?);
    }
    Ok(out)
}

/// One direction the witnesses judge: `from`'s datagrams to `to`'s address `to_ip`, counted by `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Direction {
    from: String,
    from_ip: IpAddr,
    to: String,
    to_ip: IpAddr,
}

/// Every direction between two nodes of the shape on a network both are on.
fn directions(addrs: &BTreeMap<String, BTreeMap<String, IpAddr>>) -> Vec<Direction> {
    let mut out = Vec::new();
    for (from, from_nets) in addrs {
        for (to, to_nets) in addrs {
            if from == to {
                continue;
            }
            for (net, from_ip) in from_nets {
                if let Some(to_ip) = to_nets.get(net) {
                    out.push(Direction {
                        from: from.clone(),
                        from_ip: *from_ip,
                        to: to.clone(),
                        to_ip: *to_ip,
                    });
                }
            }
        }
    }
    out
}

/// Proves the shape: with `applied`, each cut direction counts nothing and each other one counts; without, each
/// direction counts. A direction another fault's filter drops is not asked to count. Removes its witnesses whatever
/// the outcome.
async fn prove(
    c: &Cluster,
    shape: &Resolved,
    addrs: &BTreeMap<String, BTreeMap<String, IpAddr>>,
    id: usize,
    applied: bool,
) -> Result<(), RuntimeError> {
    let witness = format!("PW{id}");
    let directions = directions(addrs);
    let mut pids = BTreeMap::new();
    for (name, node) in &shape.nodes {
        pids.insert(name.clone(), pid(c, node).await?);
    }
    let witnessed = directions
        .iter()
        .filter(|d| shape.cuts.contains(&(d.from.clone(), d.to.clone())))
        .count();
    if witnessed == 0 {
        return Err(RuntimeError::Other(format!(
            "prove the partition: none of its {} cuts joins two nodes on a shared network, so it cuts nothing",
            shape.cuts.len()
        )));
    }
    info!(
        directions = directions.len(),
        cut = witnessed,
        applied,
        "proving a partition by witnesses"
    );
    let result = witness_rounds(&shape.cuts, &directions, &pids, &witness, applied).await;
    let witness = witness.as_str();
    let removals = pids.values().map(|pid| async move {
        let script = format!(
            "iptables -D INPUT -j {witness} 2>/dev/null; iptables -F {witness} 2>/dev/null; \
             iptables -X {witness} 2>/dev/null; true"
        );
        netns_sh(*pid, &script).await
    });
    let removed: Result<Vec<()>, _> = join_all(removals).await.into_iter().collect();
    result.and(removed.map(|_| ()))
}

async fn witness_rounds(
    cuts: &Cuts,
    directions: &[Direction],
    pids: &BTreeMap<String, i64>,
    witness: &str,
    applied: bool,
) -> Result<(), RuntimeError> {
    // Each receiver: a witness per sender address, and the senders another fault's filter drops.
    let mut excused: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for (name, pid) in pids {
        let mut script = format!(
            "iptables -F {witness} 2>/dev/null || iptables -N {witness}; \
             iptables -C INPUT -j {witness} 2>/dev/null || iptables -A INPUT -j {witness}"
        );
        let senders: BTreeSet<IpAddr> = directions
            .iter()
            .filter(|d| &d.to == name)
            .map(|d| d.from_ip)
            .collect();
        for ip in &senders {
            script.push_str(&format!(
                "; iptables -A {witness} -s {ip} -p udp --dport {WITNESS_PORT} -j RETURN"
            ));
        }
        netns_sh(*pid, &script).await?;
        let rules = netns_output(*pid, "iptables -S").await?;
        let own = format!("-A {}", witness.replace("PW", "PC"));
        let dropped = rules
            .lines()
            .filter(|l| l.starts_with("-A PC") && !l.starts_with(&format!("{own} ")))
            .filter(|l| l.ends_with("-j DROP"))
            .filter_map(source_of);
        excused.insert(name, dropped.collect());
    }
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    let mut before = counts(pids, witness).await?;
    loop {
        let sends = pids.iter().map(|(name, pid)| async move {
            let targets: Vec<String> = directions
                .iter()
                .filter(|d| &d.from == name)
                .map(|d| d.to_ip.to_string())
                .collect();
            let script = format!(
                "for t in {}; do echo -n w >/dev/udp/$t/{WITNESS_PORT}; echo -n w >/dev/udp/$t/{WITNESS_PORT}; \
                 done 2>/dev/null; true",
                targets.join(" ")
            );
            netns_sh(*pid, &script).await
        });
        for sent in join_all(sends).await {
            sent?;
        }
        tokio::time::sleep(WITNESS_WAIT).await;
        let after = counts(pids, witness).await?;
        let wrong = judge(cuts, directions, &before, &after, &excused, applied);
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if applied { "the partition" } else { "the heal" };
            return Err(RuntimeError::Other(format!(
                "verify {what} in every direction: after {VERIFY_TIMEOUT:?} {}",
                wrong.join("; ")
            )));
        }
        before = after;
    }
}

/// Witness counts by (receiver, sender address).
type Counts = BTreeMap<(String, IpAddr), u64>;

/// Every direction the witnesses' counts between `before` and `after` contradict: with `applied`, a cut direction
/// that counted, or another that did not; without, any direction that did not. A direction from an address another
/// fault's filter drops at the receiver (`excused`) need not count.
fn judge(
    cuts: &Cuts,
    directions: &[Direction],
    before: &Counts,
    after: &Counts,
    excused: &BTreeMap<&str, BTreeSet<IpAddr>>,
    applied: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for d in directions {
        let key = (d.to.clone(), d.from_ip);
        let seen = after
            .get(&key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(&key).copied().unwrap_or(0));
        let cut = applied && cuts.contains(&(d.from.clone(), d.to.clone()));
        let excuse = excused
            .get(d.to.as_str())
            .is_some_and(|e| e.contains(&d.from_ip));
        if cut && seen > 0 {
            wrong.push(format!("{} -> {} ({}) still passes", d.from, d.to, d.to_ip));
        } else if !cut && !excuse && seen == 0 {
            wrong.push(format!("{} -> {} ({}) is cut", d.from, d.to, d.to_ip));
        }
    }
    wrong
}

/// The packets each receiver's witness counted, by (receiver, sender address).
async fn counts(pids: &BTreeMap<String, i64>, witness: &str) -> Result<Counts, RuntimeError> {
    let reads = pids.iter().map(|(name, pid)| async move {
        let text = netns_output(*pid, &format!("iptables -S {witness} -v")).await?;
        Ok::<_, RuntimeError>((name.clone(), text))
    });
    let mut out = BTreeMap::new();
    for read in join_all(reads).await {
        let (name, text) = read?;
        for line in text.lines() {
            if let (Some(ip), Some(packets)) = (source_of(line), packets_of(line)) {
                out.insert((name.clone(), ip), packets);
            }
        }
    }
    Ok(out)
}

/// The source address of a rule as `iptables -S` prints it (`-s 172.18.0.3/32`).
fn source_of(rule: &str) -> Option<IpAddr> {
    let mut words = rule.split_whitespace();
    words.find(|w| *w == "-s")?;
    words.next()?.split('/').next()?.parse().ok()
}

/// The packet count of a rule as `iptables -S -v` prints it (`-c <packets> <bytes>`).
fn packets_of(rule: &str) -> Option<u64> {
    let mut words = rule.split_whitespace();
    words.find(|w| *w == "-c")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_witness_rule_reads_as_its_sender_and_count() {
        let line = "-A PW3 -s 172.18.0.3/32 -p udp -m udp --dport 9 -c 5 300 -j RETURN";
        assert_eq!(source_of(line), Some("172.18.0.3".parse().unwrap()));
        assert_eq!(packets_of(line), Some(5));
        assert_eq!(source_of("-A INPUT -j PW3"), None);
    }

    fn direction(from: &str, from_ip: &str, to: &str, to_ip: &str) -> Direction {
        Direction {
            from: from.into(),
            from_ip: from_ip.parse().unwrap(),
            to: to.into(),
            to_ip: to_ip.parse().unwrap(),
        }
    }

    /// The proof fails when a cut direction still passes, when a direction that must stay open is cut (the
    /// other way of a one-way cut), and when a heal left anything cut; another fault's drop excuses a direction.
    #[test]
    fn the_witnesses_catch_a_cut_that_leaks_and_an_open_way_that_is_cut() {
        let ab = direction("a", "10.0.0.1", "b", "10.0.0.2");
        let ba = direction("b", "10.0.0.2", "a", "10.0.0.1");
        let directions = vec![ab.clone(), ba.clone()];
        let cuts: Cuts = [("a".to_string(), "b".to_string())].into();
        let key = |d: &Direction| (d.to.clone(), d.from_ip);
        let before = Counts::new();
        let counted =
            |ways: &[&Direction]| -> Counts { ways.iter().map(|d| (key(d), 2)).collect() };
        let none = BTreeMap::new();
        // One-way a -> b cut, b -> a open: right.
        assert!(judge(&cuts, &directions, &before, &counted(&[&ba]), &none, true).is_empty());
        // The cut leaks.
        let leak = judge(
            &cuts,
            &directions,
            &before,
            &counted(&[&ab, &ba]),
            &none,
            true,
        );
        assert_eq!(leak, ["a -> b (10.0.0.2) still passes"]);
        // The way back is cut too: not one-way.
        let both = judge(&cuts, &directions, &before, &counted(&[]), &none, true);
        assert_eq!(both, ["b -> a (10.0.0.1) is cut"]);
        // After the heal a -> b must count again.
        let healed = judge(&cuts, &directions, &before, &counted(&[&ba]), &none, false);
        assert_eq!(healed, ["a -> b (10.0.0.2) is cut"]);
        // Unless another fault's filter at b drops a.
        let excused: BTreeMap<&str, BTreeSet<IpAddr>> = [("b", [ab.from_ip].into())].into();
        assert!(judge(
            &cuts,
            &directions,
            &before,
            &counted(&[&ba]),
            &excused,
            false
        )
        .is_empty());
    }

    #[test]
    fn directions_run_between_nodes_on_a_shared_network_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let addrs: BTreeMap<String, BTreeMap<String, IpAddr>> = [
            ("a".to_string(), [("n1".to_string(), ip("10.0.0.1"))].into()),
            (
                "b".to_string(),
                [
                    ("n1".to_string(), ip("10.0.0.2")),
                    ("n2".to_string(), ip("10.1.0.2")),
                ]
                .into(),
            ),
            ("c".to_string(), [("n2".to_string(), ip("10.1.0.3"))].into()),
        ]
        .into();
        let d = directions(&addrs);
        let pairs: BTreeSet<(&str, &str)> =
            d.iter().map(|d| (d.from.as_str(), d.to.as_str())).collect();
        assert_eq!(
            pairs,
            [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")].into()
        );
    }
}
