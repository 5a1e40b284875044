//! Packet faults on a running cluster: `netfault` (the workspace's userspace netem) run from the host inside each
//! target node's network namespace, and the proof of its effect and of its undo by a probe stream.
//!
//! Why a userspace netem: the kernels the harness meets do not all carry the `netem` qdisc (`tc qdisc add … netem`
//! → "Specified qdisc kind is unknown"), while iptables with NFQUEUE is everywhere Docker is. The images stay
//! `FROM scratch`: the binary is the host's, entered into the namespace by `nsenter -n`, as the partitions' iptables
//! is. Its rules use `--queue-bypass`, so a harness that dies leaves traffic flowing, and its undo removes the rules
//! before it releases the packets it holds: an undo never drops traffic.
//!
//! The peer `users` is the fault proxy's container: every simulated user reaches the nodes through its tunnel, so
//! the users' packets are the ones from and to its addresses.
//!
//! The proof: a UDP echo (`netfault echo`) in a partner's namespace — a peer of the fault, else the fault proxy,
//! which shares every network (and is where the users' packets come from) — and `netfault probe` from the target's. Before the fault a short probe gives the
//! baseline; with the fault, the loss, the added round trip, duplicates, reordering and throughput must show what
//! the spec asks (loss well above zero, delay at least half the configured one, …); after the undo, none of it.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use netfault::{FaultSpec, ProbeReport};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::info;

use super::cluster::{Cluster, NodeHandle, PROXY};
use super::docker::RuntimeError;
use super::nodes::{on_networks, pid, resolve};
use crate::fault::Fault;

/// Queue numbers of packet faults: this plus the fault's id.
const QUEUE_BASE: usize = 2000;
/// UDP ports of the probes' echo start here (see [`port`]).
const ECHO_PORT_BASE: usize = 47000;
/// How long `netfault apply` may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an undone `netfault apply` may take to release what it holds and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// The most a probe may lose with no fault in force (a busy host's bridge may drop a datagram now and then).
const CLEAN_LOSS: f64 = 0.02;
/// The round trip a clean probe stays below, at the median.
const CLEAN_RTT_P50: Duration = Duration::from_millis(10);

fn queue(id: usize) -> u16 {
    (QUEUE_BASE + id) as u16
}

/// The echo port of the `i`th target node's probe of fault `id`.
fn port(id: usize, i: usize) -> u16 {
    (ECHO_PORT_BASE + (id * 64 + i) % 15_000) as u16
}

/// The `netfault` binary built beside the images' static binaries.
fn binary() -> std::path::PathBuf {
    crate::images::netfault_binary(&crate::images::workspace_root())
}

/// The peer name that means the simulated users: they reach the nodes through the fault proxy's tunnel, so their
/// packets come from the proxy container's addresses.
pub const USERS: &str = crate::topology::USERS;

struct Parts<'f> {
    nodes: Vec<NodeHandle>,
    spec: FaultSpec,
    partner: NodeHandle,
    _fault: &'f Fault,
}

async fn parts<'f>(c: &Cluster, fault: &'f Fault) -> Result<Parts<'f>, RuntimeError> {
    let Fault::Packet {
        target,
        peers,
        packet,
    } = fault
    else {
        return Err(RuntimeError::Other(format!(
            "{} is not a packet fault",
            fault.kind()
        )));
    };
    let nodes = resolve(c, target).await?;
    let mut peer_nodes = Vec::new();
    let mut users = false;
    for p in peers {
        if p == USERS {
            users = true;
            continue;
        }
        for n in resolve(c, p).await? {
            if !nodes.iter().any(|t| t.name == n.name) {
                peer_nodes.push(n);
            }
        }
    }
    if !peers.is_empty() && peer_nodes.is_empty() && !users {
        return Err(RuntimeError::Other(format!(
            "packet: the peers {peers:?} name no node other than the target's"
        )));
    }
    let mut spec = packet.clone();
    spec.peers.clear();
    for p in &peer_nodes {
        spec.peers.extend(v4_addresses(c, p).await?);
    }
    let proxy = c.node(PROXY)?.clone();
    if users {
        spec.peers.extend(v4_addresses(c, &proxy).await?);
    }
    spec.validate()
        .map_err(|e| RuntimeError::Other(format!("packet: {e}")))?;
    // The users' side is the proxy: it is also the partner when no node peer is named.
    let partner = peer_nodes.first().cloned().unwrap_or(proxy);
    Ok(Parts {
        nodes,
        spec,
        partner,
        _fault: fault,
    })
}

/// Starts `netfault apply` in each target node and proves the effect from each.
pub(super) async fn apply(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    let p = parts(c, fault).await?;
    // Each node probes with its own echo port, all at once.
    let quick = Plan::clean();
    let baselines: Vec<ProbeReport> = futures::future::join_all(
        p.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| probe(c, node, &p.partner, port(id, i), &quick)),
    )
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let mut children = Vec::new();
    for node in &p.nodes {
        match start(pid(c, node).await?, queue(id), &p.spec).await {
            Ok(child) => children.push(child),
            Err(e) => {
                stop_all(children).await;
                return Err(RuntimeError::Other(format!("packet on {}: {e}", node.name)));
            }
        }
    }
    c.packet_faults
        .lock()
        .expect("packet faults lock")
        .insert(id, children);
    let plan = Plan::for_spec(&p.spec);
    let reports = futures::future::join_all(
        p.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| probe(c, node, &p.partner, port(id, i), &plan)),
    )
    .await;
    for ((node, baseline), report) in p.nodes.iter().zip(&baselines).zip(reports) {
        let report = report?;
        info!(
            node = %node.name,
            loss = report.loss_rate,
            rtt_p50_us = report.rtt_p50_us.unwrap_or(0),
            duplicates = report.duplicates,
            reordered = report.reordered,
            rx_kbit = report.rx_kbit,
            "packet fault measured"
        );
        effect_shows(&p.spec, baseline, &report).map_err(|e| {
            RuntimeError::Other(format!(
                "verify the packet fault on {} (probe to {}): {e}",
                node.name, p.partner.name
            ))
        })?;
    }
    Ok(())
}

/// Ends the fault's `netfault` processes (they remove their rules, then release what they hold), clears any rules
/// left (a process of an earlier harness, a node restarted since), and proves each target clean again.
pub(super) async fn undo(c: &Cluster, fault: &Fault, id: usize) -> Result<(), RuntimeError> {
    let p = parts(c, fault).await?;
    let children = c
        .packet_faults
        .lock()
        .expect("packet faults lock")
        .remove(&id)
        .unwrap_or_default();
    stop_all(children).await;
    for node in &p.nodes {
        let args = netfault::cli::clear_args(queue(id));
        run(pid(c, node).await?, &args, Duration::from_secs(30)).await?;
    }
    let quick = Plan::clean();
    let reports = futures::future::join_all(
        p.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| probe(c, node, &p.partner, port(id, i), &quick)),
    )
    .await;
    for (node, report) in p.nodes.iter().zip(reports) {
        let report = report?;
        clean(&report).map_err(|e| {
            RuntimeError::Other(format!(
                "verify the undo of the packet fault on {}: {e}",
                node.name
            ))
        })?;
    }
    Ok(())
}

/// The IPv4 addresses of a node on the run's networks.
async fn v4_addresses(c: &Cluster, node: &NodeHandle) -> Result<Vec<Ipv4Addr>, RuntimeError> {
    Ok(on_networks(c, node)
        .await?
        .into_values()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// Starts `netfault apply` in the namespace of `pid` and waits for its `ready`.
async fn start(pid: i64, queue: u16, spec: &FaultSpec) -> Result<Child, String> {
    let mut child = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n"])
        .arg(binary())
        .args(netfault::cli::apply_args(queue, spec))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "run nsenter with {}: {e}; packet faults need root and util-linux on a Linux host",
                binary().display()
            )
        })?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    if ready == Ok(true) {
        return Ok(child);
    }
    child.start_kill().ok();
    let out = child.wait_with_output().await.ok();
    let stderr = out
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    Err(format!(
        "netfault apply did not say ready within {READY_TIMEOUT:?}: {stderr}"
    ))
}

/// Closes each process's stdin (its signal to end), waits for it to exit, and kills it past [`EXIT_TIMEOUT`].
async fn stop_all(children: Vec<Child>) {
    for mut child in children {
        drop(child.stdin.take());
        if tokio::time::timeout(EXIT_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            child.start_kill().ok();
            child.wait().await.ok();
        }
    }
}

/// Runs `netfault <args>` in the namespace of `pid` and returns its stdout.
async fn run(pid: i64, args: &[String], limit: Duration) -> Result<String, RuntimeError> {
    let out = tokio::time::timeout(
        limit,
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n"])
            .arg(binary())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| RuntimeError::Other(format!("netfault {} ran over {limit:?}", args[0])))?
    .map_err(|e| RuntimeError::Other(format!("run nsenter with {}: {e}", binary().display())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RuntimeError::Other(format!(
            "netfault {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// How a probe stream is sent.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    count: u32,
    interval: Duration,
    size: usize,
    timeout: Duration,
}

impl Plan {
    /// A short stream for a baseline or a clean check.
    fn clean() -> Plan {
        Plan {
            count: 100,
            interval: Duration::from_millis(2),
            size: 64,
            timeout: Duration::from_millis(1000),
        }
    }

    /// A stream long enough that the spec's effect cannot hide in chance: about 40 expected losses, duplicates
    /// or reorderings at the least likely of them; fast and large datagrams for a rate.
    fn for_spec(spec: &FaultSpec) -> Plan {
        let legs = legs(spec) as f64;
        let rarest = [drop_rate(spec), spec.duplicate, spec.reorder]
            .into_iter()
            .filter(|p| *p > 0.0)
            .fold(1.0_f64, f64::min);
        let count = ((40.0 / rarest).ceil() as u32).clamp(200, 3000);
        let delay = Duration::from_secs_f64((spec.delay_ms + 4.0 * spec.jitter_ms) * legs / 1000.0);
        if spec.rate_kbit.is_some() {
            return Plan {
                count: 400,
                interval: Duration::from_millis(1),
                size: 1000,
                timeout: Duration::from_secs(3) + delay,
            };
        }
        Plan {
            count,
            interval: Duration::from_millis(2),
            size: 64,
            timeout: Duration::from_secs(1) + delay,
        }
    }
}

/// How many ways of the probe's round trip the fault acts on (0, 1 or 2).
fn legs(spec: &FaultSpec) -> i32 {
    i32::from(spec.direction.egress()) + i32::from(spec.direction.ingress())
}

/// The share of a leg's packets the spec drops: loss, and corruption (a corrupted datagram fails its checksum).
fn drop_rate(spec: &FaultSpec) -> f64 {
    let loss = spec.loss.map_or(0.0, |l| l.mean_loss());
    1.0 - (1.0 - loss) * (1.0 - spec.corrupt)
}

/// Probes from `from`'s namespace to an echo in `partner`'s (on a network both are on).
async fn probe(
    c: &Cluster,
    from: &NodeHandle,
    partner: &NodeHandle,
    port: u16,
    plan: &Plan,
) -> Result<ProbeReport, RuntimeError> {
    let length = plan.interval * plan.count + plan.timeout;
    let echo_args = netfault::cli::echo_args(port, length + Duration::from_secs(5));
    let from_nets = on_networks(c, from).await?;
    let to = on_networks(c, partner)
        .await?
        .into_iter()
        .find_map(|(net, ip)| match ip {
            IpAddr::V4(v4) if from_nets.contains_key(&net) => Some(v4),
            _ => None,
        })
        .ok_or_else(|| {
            RuntimeError::Other(format!(
                "probe {} from {}: they share no network",
                partner.name, from.name
            ))
        })?;
    let mut echo = Command::new("nsenter");
    echo.args(["-t", &pid(c, partner).await?.to_string(), "-n"])
        .arg(binary())
        .args(&echo_args);
    let mut echo = echo
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::Other(format!("start the probe's echo: {e}")))?;
    // The echo binds at once; a datagram sent before is lost and would count as the fault's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let args = netfault::cli::probe_args(&netfault::ProbeOptions {
        to,
        port,
        count: plan.count,
        interval: plan.interval,
        size: plan.size,
        timeout: plan.timeout,
    });
    let result = run(pid(c, from).await?, &args, length + Duration::from_secs(30)).await;
    echo.start_kill().ok();
    echo.wait().await.ok();
    let text = result?;
    ProbeReport::from_json(text.lines().last().unwrap_or_default())
        .map_err(|e| RuntimeError::Other(format!("read the probe's report `{text}`: {e}")))
}

/// Whether the probe shows every effect the spec asks for, against the baseline taken before it. Each check is
/// one that no effect at all would fail: loss at least a third of the expected share, the round trip up by at least
/// half the delay, at least one duplicate or reordering, throughput under the rate.
fn effect_shows(
    spec: &FaultSpec,
    baseline: &ProbeReport,
    report: &ProbeReport,
) -> Result<(), String> {
    let legs = legs(spec);
    if legs == 0 {
        return Err("the spec acts on no direction".into());
    }
    let mut checked = 0;
    let per_leg = drop_rate(spec);
    if per_leg > 0.0 {
        checked += 1;
        let expected = 1.0 - (1.0 - per_leg).powi(legs);
        let (lo, hi) = if expected >= 1.0 {
            (0.95, 1.0)
        } else {
            (expected / 3.0, (expected + 0.1).min(1.0))
        };
        if !(lo..=hi).contains(&report.loss_rate) {
            return Err(format!(
                "loss {:.3} where {expected:.3} was asked (accepted {lo:.3}..={hi:.3})",
                report.loss_rate
            ));
        }
    }
    if spec.delay_ms > 0.0 && per_leg < 1.0 {
        checked += 1;
        let added_ms = (report.rtt_p50_us.unwrap_or(0) as f64
            - baseline.rtt_p50_us.unwrap_or(0) as f64)
            / 1000.0;
        let want = spec.delay_ms * legs as f64;
        let most = want + 4.0 * spec.jitter_ms * legs as f64 + 50.0;
        if added_ms < want / 2.0 || added_ms > most {
            return Err(format!(
                "round trip up by {added_ms:.1} ms at the median where {want:.1} ms was asked"
            ));
        }
    }
    if spec.duplicate > 0.0 {
        checked += 1;
        if report.duplicates == 0 {
            return Err(format!(
                "no duplicate in {} replies where {} was asked",
                report.received, spec.duplicate
            ));
        }
    }
    if spec.reorder > 0.0 {
        checked += 1;
        if report.reordered == 0 {
            return Err(format!(
                "nothing reordered in {} replies where {} was asked",
                report.received, spec.reorder
            ));
        }
    }
    if let Some(rate) = spec.rate_kbit {
        checked += 1;
        let offered = 1000.0 * 8.0; // 1000-byte datagrams every millisecond, kbit/s
        if rate as f64 * 2.0 > offered {
            return Err(format!(
                "a rate of {rate} kbit/s is above what the probe can prove (it offers {offered} kbit/s)"
            ));
        }
        if report.rx_kbit > rate as f64 * 1.3 {
            return Err(format!(
                "{:.0} kbit/s came through where the rate is {rate} kbit/s",
                report.rx_kbit
            ));
        }
    }
    if checked == 0 {
        return Err("the spec asks for no effect a probe can see (no loss, delay, duplicate, reorder, corrupt or rate)".into());
    }
    Ok(())
}

/// Whether a probe shows no fault: (almost) nothing lost, no duplicate, a short round trip.
fn clean(report: &ProbeReport) -> Result<(), String> {
    let p50 = Duration::from_micros(report.rtt_p50_us.unwrap_or(u64::MAX));
    if report.loss_rate > CLEAN_LOSS || report.duplicates > 0 || p50 > CLEAN_RTT_P50 {
        return Err(format!(
            "the probe still shows a fault: loss {:.3}, {} duplicates, round trip p50 {p50:?}",
            report.loss_rate, report.duplicates
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(loss: f64, p50_ms: u64, duplicates: u64, reordered: u64) -> ProbeReport {
        ProbeReport {
            to: Ipv4Addr::LOCALHOST,
            port: 1,
            sent: 1000,
            received: ((1.0 - loss) * 1000.0) as u64,
            loss_rate: loss,
            duplicates,
            reordered,
            corrupted: 0,
            loss_runs: 0,
            mean_loss_run: 0.0,
            max_loss_run: 0,
            rtt_min_us: Some(p50_ms * 1000),
            rtt_p50_us: Some(p50_ms * 1000),
            rtt_p90_us: Some(p50_ms * 1000),
            rtt_p99_us: Some(p50_ms * 1000),
            rtt_max_us: Some(p50_ms * 1000),
            rx_kbit: 50.0,
            duration_ms: 2000,
        }
    }

    fn spec(json: &str) -> FaultSpec {
        FaultSpec::from_json(json).unwrap()
    }

    /// A fault that did not take effect fails the proof: no loss where loss was asked, no added delay, no
    /// duplicate; what the fault asks for passes.
    #[test]
    fn a_fault_without_its_effect_is_not_proven() {
        let base = report(0.0, 0, 0, 0);
        let lossy = spec(r#"{"direction":"egress","loss":{"random":0.05}}"#);
        assert!(effect_shows(&lossy, &base, &report(0.05, 0, 0, 0)).is_ok());
        assert!(effect_shows(&lossy, &base, &report(0.0, 0, 0, 0)).is_err());
        assert!(effect_shows(&lossy, &base, &report(0.5, 0, 0, 0)).is_err());
        let slow = spec(r#"{"direction":"egress","delay_ms":100}"#);
        assert!(effect_shows(&slow, &base, &report(0.0, 101, 0, 0)).is_ok());
        assert!(effect_shows(&slow, &base, &report(0.0, 1, 0, 0)).is_err());
        let both = spec(r#"{"direction":"both","delay_ms":50}"#);
        assert!(effect_shows(&both, &base, &report(0.0, 100, 0, 0)).is_ok());
        let dup = spec(r#"{"direction":"egress","duplicate":0.2}"#);
        assert!(effect_shows(&dup, &base, &report(0.0, 0, 30, 0)).is_ok());
        assert!(effect_shows(&dup, &base, &report(0.0, 0, 0, 0)).is_err());
        let nothing = spec(r#"{"direction":"egress"}"#);
        assert!(effect_shows(&nothing, &base, &base).is_err());
    }

    #[test]
    fn a_clean_probe_is_one_with_nothing_lost_nor_slow() {
        assert!(clean(&report(0.0, 1, 0, 0)).is_ok());
        assert!(clean(&report(0.1, 1, 0, 0)).is_err());
        assert!(clean(&report(0.0, 100, 0, 0)).is_err());
        assert!(clean(&report(0.0, 1, 2, 0)).is_err());
    }

    #[test]
    fn a_rare_effect_gets_a_long_enough_probe() {
        let rare = spec(r#"{"direction":"egress","loss":{"random":0.02}}"#);
        assert_eq!(Plan::for_spec(&rare).count, 2000);
        let common = spec(r#"{"direction":"egress","loss":{"random":0.5}}"#);
        assert_eq!(Plan::for_spec(&common).count, 200);
    }
}
