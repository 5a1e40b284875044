//! `netfault` on real kernel packets: two network namespaces joined by a veth pair, `echo` in one (B,
//! 10.211.0.2 and 10.211.0.3), `apply` and `probe` in the other (A, 10.211.0.1). Needs root (network
//! namespaces, iptables, NFQUEUE); without them every test fails and says so.

use netfault::{
    cli, Direction, FaultSpec, GilbertElliott, Loss, ProbeOptions, ProbeReport, Tolerance,
};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_netfault");
const A: &str = "10.211.0.1";
const B: &str = "10.211.0.2";
const B2: &str = "10.211.0.3";
const PORT: u16 = 7000;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `netfault` with `args`, run in namespace `ns`.
fn netfault_in<S: AsRef<std::ffi::OsStr>>(ns: &str, args: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, BIN]).args(args);
    c
}

/// Delete the namespaces of earlier test processes that died without dropping them (`nft<pid>...`).
fn sweep_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("nft") else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale_namespaces);
        let name = format!(
            "nft{}{}{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::SeqCst)
        );
        if let Err(e) = ip(&["netns", "add", &name]) {
            panic!(
                "these tests need root with network namespaces, iptables and NFQUEUE \
                 (run as root on Linux): cannot create a network namespace: {e}"
            );
        }
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
        ns
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        netfault_in(&self.0, args)
    }

    fn iptables_rules(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "iptables", "-S"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// A child process, killed on drop.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn close_stdin(&mut self) {
        drop(self.0.stdin.take());
    }

    /// Wait at most `limit` for the exit; stdout and stderr as text.
    fn finish(mut self, limit: Duration) -> (bool, String, String) {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = self.0.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status.success(), out, err);
            }
            assert!(
                std::time::Instant::now() < end,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two namespaces joined by a veth pair; the echo runs in B.
struct Lab {
    echo: Option<Proc>,
    a: Netns,
    b: Netns,
}

impl Lab {
    fn new() -> Lab {
        let a = Netns::new("a");
        let b = Netns::new("b");
        ip(&[
            "-n", &a.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns",
            &b.0,
        ])
        .unwrap();
        ip(&[
            "-n",
            &a.0,
            "addr",
            "add",
            &format!("{A}/24"),
            "dev",
            "veth0",
        ])
        .unwrap();
        ip(&[
            "-n",
            &b.0,
            "addr",
            "add",
            &format!("{B}/24"),
            "dev",
            "veth0",
        ])
        .unwrap();
        ip(&[
            "-n",
            &b.0,
            "addr",
            "add",
            &format!("{B2}/24"),
            "dev",
            "veth0",
        ])
        .unwrap();
        ip(&["-n", &a.0, "link", "set", "veth0", "up"]).unwrap();
        ip(&["-n", &b.0, "link", "set", "veth0", "up"]).unwrap();
        let mut lab = Lab { echo: None, a, b };
        lab.echo = Some(start_echo(&lab.b));
        // Resolves the neighbours and checks the path before any fault.
        let warm = lab.probe(B, 20, 5, 64, 1000);
        assert_eq!(
            warm.received, 20,
            "no clean path between the namespaces: {warm:?}"
        );
        lab
    }

    fn probe(
        &self,
        to: &str,
        count: u32,
        interval_ms: u64,
        size: usize,
        timeout_ms: u64,
    ) -> ProbeReport {
        probe_from(&self.a.0, to, count, interval_ms, size, timeout_ms)
    }

    fn apply(&self, queue: u16, spec: &FaultSpec) -> Proc {
        apply_in(&self.a, queue, spec)
    }
}

fn start_echo(ns: &Netns) -> Proc {
    let p = ns
        .command(&cli::echo_args(PORT, Duration::from_secs(60)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    Proc(p)
}

fn probe_from(
    ns: &str,
    to: &str,
    count: u32,
    interval_ms: u64,
    size: usize,
    timeout_ms: u64,
) -> ProbeReport {
    let opts = ProbeOptions {
        to: to.parse().unwrap(),
        port: PORT,
        count,
        interval: Duration::from_millis(interval_ms),
        size,
        timeout: Duration::from_millis(timeout_ms),
    };
    let out = netfault_in(ns, &cli::probe_args(&opts)).output().unwrap();
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = ProbeReport::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    // The measurement, shown with `--nocapture`.
    eprintln!(
        "{} -> {to}: {}",
        std::thread::current().name().unwrap_or("probe"),
        r.to_json()
    );
    r
}

/// Start `apply` and wait for its `ready`.
fn apply_in(ns: &Netns, queue: u16, spec: &FaultSpec) -> Proc {
    let mut child = ns
        .command(&cli::apply_args(queue, spec))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
    if line.trim() != "ready" {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("apply did not get ready (stdout {line:?}): {err}");
    }
    Proc(child)
}

fn stop(apply: Proc) -> String {
    apply.signal("-TERM");
    let (ok, _, err) = apply.finish(Duration::from_secs(10));
    assert!(ok, "apply did not exit 0 on SIGTERM: {err}");
    err
}

fn ms(us: Option<u64>) -> f64 {
    us.expect("an RTT") as f64 / 1000.0
}

#[test]
fn delay_raises_the_rtt_by_the_delay() {
    let lab = Lab::new();
    let base = lab.probe(B, 100, 5, 64, 1000);
    let spec = FaultSpec {
        delay_ms: 50.0,
        jitter_ms: 2.0,
        distribution: netfault::Distribution::Normal,
        seed: Some(1),
        ..Default::default()
    };
    let fault = lab.apply(1, &spec);
    let r = lab.probe(B, 100, 5, 64, 1000);
    stop(fault);
    let added = ms(r.rtt_p50_us) - ms(base.rtt_p50_us);
    assert!(
        (40.0..80.0).contains(&added),
        "p50 rose by {added} ms: {base:?} {r:?}"
    );
    assert_eq!(r.loss_rate, 0.0, "{r:?}");
    r.matches(
        &spec,
        &Tolerance {
            rate: 0.02,
            delay_ms: 25.0,
        },
    )
    .unwrap();
}

#[test]
fn random_loss_matches_its_probability() {
    let lab = Lab::new();
    let spec = FaultSpec {
        loss: Some(Loss::Random(0.2)),
        seed: Some(7),
        ..Default::default()
    };
    let fault = lab.apply(2, &spec);
    let r = lab.probe(B, 1000, 1, 64, 1000);
    let stats = stop(fault);
    assert!((0.12..0.28).contains(&r.loss_rate), "{r:?} {stats}");
    r.matches(&spec, &Tolerance::default()).unwrap();
}

#[test]
fn gilbert_elliott_loses_in_bursts() {
    let lab = Lab::new();
    let ge = GilbertElliott {
        p: 0.05,
        r: 0.3,
        loss_good: 0.0,
        loss_bad: 1.0,
    };
    let spec = FaultSpec {
        loss: Some(Loss::GilbertElliott(ge)),
        seed: Some(11),
        ..Default::default()
    };
    let fault = lab.apply(3, &spec);
    let r = lab.probe(B, 1000, 1, 64, 1000);
    stop(fault);
    assert!(r.mean_loss_run > 1.5, "{r:?}");
    assert!(r.loss_rate > 0.05 && r.loss_rate < 0.3, "{r:?}");
}

#[test]
fn duplicates_are_seen() {
    let lab = Lab::new();
    let spec = FaultSpec {
        duplicate: 0.5,
        seed: Some(5),
        ..Default::default()
    };
    let fault = lab.apply(4, &spec);
    let r = lab.probe(B, 200, 2, 64, 1000);
    stop(fault);
    assert_eq!(r.received, 200, "{r:?}");
    assert!((50..150).contains(&r.duplicates), "{r:?}");
    r.matches(
        &spec,
        &Tolerance {
            rate: 0.15,
            delay_ms: 20.0,
        },
    )
    .unwrap();
}

#[test]
fn reordered_packets_overtake() {
    let lab = Lab::new();
    let spec = FaultSpec {
        delay_ms: 30.0,
        reorder: 0.3,
        seed: Some(2),
        ..Default::default()
    };
    let fault = lab.apply(5, &spec);
    let r = lab.probe(B, 200, 2, 64, 1000);
    stop(fault);
    assert_eq!(r.received, 200, "{r:?}");
    assert!(r.reordered >= 20, "{r:?}");
}

#[test]
fn corrupted_packets_are_corrupted_or_lost() {
    let lab = Lab::new();
    let spec = FaultSpec {
        corrupt: 0.3,
        seed: Some(3),
        ..Default::default()
    };
    let fault = lab.apply(6, &spec);
    let r = lab.probe(B, 300, 2, 64, 1000);
    stop(fault);
    let hit = r.corrupted + (r.sent - r.received);
    assert!((45..135).contains(&hit), "{r:?}");
}

#[test]
fn rate_caps_the_throughput_without_loss() {
    let lab = Lab::new();
    let base = lab.probe(B, 200, 2, 1000, 1000);
    assert!(base.rx_kbit > 2500.0, "{base:?}");
    let spec = FaultSpec {
        rate_kbit: Some(1000),
        ..Default::default()
    };
    let fault = lab.apply(7, &spec);
    let r = lab.probe(B, 200, 2, 1000, 4000);
    stop(fault);
    assert_eq!(r.received, 200, "packets are delayed, not dropped: {r:?}");
    assert!((700.0..1100.0).contains(&r.rx_kbit), "{r:?}");
}

#[test]
fn peers_filter_leaves_other_addresses_alone() {
    let lab = Lab::new();
    let spec = FaultSpec {
        peers: vec![B.parse().unwrap()],
        loss: Some(Loss::Random(1.0)),
        ..Default::default()
    };
    let mut fault = lab.apply(8, &spec);
    let other = lab.probe(B2, 100, 2, 64, 500);
    let target = lab.probe(B, 100, 2, 64, 500);
    // The end of stdin stops the fault as SIGTERM does.
    fault.close_stdin();
    let (ok, _, err) = fault.finish(Duration::from_secs(10));
    assert!(ok, "{err}");
    assert!(
        !lab.a.iptables_rules().contains("NETFAULT"),
        "{}",
        lab.a.iptables_rules()
    );
    assert_eq!(other.loss_rate, 0.0, "{other:?}");
    assert_eq!(target.loss_rate, 1.0, "{target:?}");
    other.matches(&spec, &Tolerance::default()).unwrap();
    target.matches(&spec, &Tolerance::default()).unwrap();
}

#[test]
fn egress_only_leaves_ingress_alone_and_ingress_only_egress() {
    let lab = Lab::new();
    // The echo runs in the faulted namespace A; the probe in B. Requests reach A (ingress), replies are lost.
    let echo_a = start_echo(&lab.a);
    let spec = FaultSpec {
        loss: Some(Loss::Random(1.0)),
        ..Default::default()
    };
    let fault = lab.apply(9, &spec);
    let r = probe_from(&lab.b.0, A, 50, 2, 64, 300);
    stop(fault);
    echo_a.signal("-TERM");
    let (_, out, _) = echo_a.finish(Duration::from_secs(5));
    assert_eq!(r.received, 0, "{r:?}");
    assert_eq!(
        out.trim(),
        r#"{"echoed":50}"#,
        "requests to the faulted node must arrive"
    );

    // Ingress only: A's requests leave (the echo in B answers), the replies are lost on the way in.
    let spec = FaultSpec {
        direction: Direction::Ingress,
        loss: Some(Loss::Random(1.0)),
        ..Default::default()
    };
    let fault = lab.apply(10, &spec);
    let r = lab.probe(B, 50, 2, 64, 300);
    stop(fault);
    assert_eq!(r.received, 0, "{r:?}");
    let after = lab.probe(B, 50, 2, 64, 1000);
    assert_eq!(after.received, 50, "{after:?}");
}

#[test]
fn undo_releases_held_packets_and_restores_normal() {
    let lab = Lab::new();
    let spec = FaultSpec {
        delay_ms: 200.0,
        ..Default::default()
    };
    let fault = lab.apply(11, &spec);
    let a = lab.a.0.clone();
    let during = std::thread::spawn(move || probe_from(&a, B, 300, 5, 64, 2000));
    std::thread::sleep(Duration::from_millis(800));
    let stats = stop(fault);
    let r = during.join().unwrap();
    assert_eq!(
        r.received, 300,
        "no packet may be lost by the undo: {r:?} {stats}"
    );
    assert!(
        stats.contains("\"released_at_undo\":") && !stats.contains("\"released_at_undo\":0"),
        "{stats}"
    );
    assert!(
        !lab.a.iptables_rules().contains("NETFAULT"),
        "{}",
        lab.a.iptables_rules()
    );
    let after = lab.probe(B, 100, 5, 64, 1000);
    assert_eq!(after.loss_rate, 0.0, "{after:?}");
    assert!(ms(after.rtt_p50_us) < 20.0, "{after:?}");
}

#[test]
fn sigkill_leaves_traffic_flowing_and_clear_removes_the_chain() {
    let lab = Lab::new();
    let spec = FaultSpec {
        direction: Direction::Both,
        loss: Some(Loss::Random(0.5)),
        ..Default::default()
    };
    let fault = lab.apply(12, &spec);
    fault.signal("-KILL");
    let _ = fault.finish(Duration::from_secs(5));
    assert!(
        lab.a.iptables_rules().contains("NETFAULT12-OUT"),
        "the chain stays after SIGKILL"
    );
    let r = lab.probe(B, 100, 2, 64, 1000);
    assert_eq!(r.loss_rate, 0.0, "queue-bypass lets traffic through: {r:?}");
    for _ in 0..2 {
        let out = lab.a.command(&["clear", "--queue", "12"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !lab.a.iptables_rules().contains("NETFAULT"),
            "{}",
            lab.a.iptables_rules()
        );
    }
}

#[test]
fn apply_reports_errors_on_stderr_with_a_nonzero_exit() {
    let lab = Lab::new();
    let out = lab
        .a
        .command(&[
            "apply",
            "--queue",
            "13",
            "--spec",
            r#"{"loss": {"random": 2}}"#,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loss.random"),
        "{out:?}"
    );
    // The queue is taken by a first apply: a second one fails and leaves the first one's rules alone.
    let first = lab.apply(14, &FaultSpec::default());
    let out = lab
        .a
        .command(&["apply", "--queue", "14", "--spec", "{}"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind NFQUEUE 14"),
        "{out:?}"
    );
    assert!(lab.a.iptables_rules().contains("NETFAULT14-OUT"));
    stop(first);
}

#[test]
fn a_thousand_packets_a_second_under_a_100ms_delay_are_all_delivered() {
    let lab = Lab::new();
    let spec = FaultSpec {
        delay_ms: 100.0,
        ..Default::default()
    };
    let fault = lab.apply(15, &spec);
    let r = lab.probe(B, 1000, 1, 200, 1500);
    let stats = stop(fault);
    assert_eq!(r.received, 1000, "{r:?} {stats}");
    assert!((95.0..160.0).contains(&ms(r.rtt_p50_us)), "{r:?}");
}

#[test]
fn ingress_duplicates_and_delay_apply_to_received_packets() {
    let lab = Lab::new();
    let spec = FaultSpec {
        direction: Direction::Ingress,
        delay_ms: 40.0,
        duplicate: 0.5,
        seed: Some(8),
        ..Default::default()
    };
    let fault = lab.apply(16, &spec);
    let r = lab.probe(B, 200, 2, 64, 1000);
    stop(fault);
    assert_eq!(r.received, 200, "{r:?}");
    assert!((50..150).contains(&r.duplicates), "{r:?}");
    assert!((35.0..80.0).contains(&ms(r.rtt_p50_us)), "{r:?}");
}

#[test]
fn an_interface_going_down_under_held_packets_does_not_end_the_fault() {
    let lab = Lab::new();
    let spec = FaultSpec {
        delay_ms: 300.0,
        ..Default::default()
    };
    let mut fault = lab.apply(17, &spec);
    let a = lab.a.0.clone();
    let during = std::thread::spawn(move || probe_from(&a, B, 100, 5, 64, 200));
    std::thread::sleep(Duration::from_millis(300));
    ip(&["-n", &lab.a.0, "link", "set", "veth0", "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ip(&["-n", &lab.a.0, "link", "set", "veth0", "up"]).unwrap();
    let _ = during.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fault.0.try_wait().unwrap().is_none(),
        "apply ended when the interface went down"
    );
    let r = lab.probe(B, 50, 5, 64, 1500);
    stop(fault);
    assert_eq!(r.received, 50, "{r:?}");
    assert!(ms(r.rtt_p50_us) > 290.0, "{r:?}");
}
