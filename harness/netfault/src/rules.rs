//! The iptables rules that steer a node's packets into the NFQUEUE, as shell scripts.
//!
//! Each queue `n` owns two chains, `NETFAULT<n>-OUT` (jumped to from `OUTPUT`) and `NETFAULT<n>-IN` (from
//! `INPUT`), in the `filter` table of the current network namespace. Every `NFQUEUE` target has
//! `--queue-bypass`: with no process bound to the queue, packets pass as if the rule were not there. Packets
//! carrying [`DUPLICATE_MARK`] (the copies the fault itself sends) return from the chain untouched.

use crate::spec::FaultSpec;
use std::process::Command;

/// The firewall mark of duplicate copies, which the chains let through.
pub const DUPLICATE_MARK: u32 = 0x6e66_0001;

/// The name of the chain of queue `queue` for one hook.
pub fn chain_name(queue: u16, egress: bool) -> String {
    format!("NETFAULT{queue}-{}", if egress { "OUT" } else { "IN" })
}

/// The script that installs the rules of `spec` for queue `queue`. It stops at the first failing command
/// (`set -e`); run [`remove_script`] after a failure.
pub fn install_script(queue: u16, spec: &FaultSpec) -> String {
    let mut s = String::from("set -e\n");
    for egress in [true, false] {
        if (egress && !spec.direction.egress()) || (!egress && !spec.direction.ingress()) {
            continue;
        }
        let chain = chain_name(queue, egress);
        let (hook, iface, addr) = if egress {
            ("OUTPUT", "-o", "-d")
        } else {
            ("INPUT", "-i", "-s")
        };
        s += &format!("iptables -w -t filter -N {chain}\n");
        s += &format!(
            "iptables -w -t filter -A {chain} -m mark --mark {DUPLICATE_MARK:#x} -j RETURN\n"
        );
        let proto = spec
            .protocol
            .map(|p| format!(" -p {}", p.iptables_name()))
            .unwrap_or_default();
        let target = format!("-j NFQUEUE --queue-num {queue} --queue-bypass");
        if spec.peers.is_empty() {
            s += &format!("iptables -w -t filter -A {chain} ! {iface} lo{proto} {target}\n");
        } else {
            for peer in &spec.peers {
                s += &format!("iptables -w -t filter -A {chain} ! {iface} lo {addr} {peer}/32{proto} {target}\n");
            }
        }
        s += &format!("iptables -w -t filter -I {hook} 1 -j {chain}\n");
    }
    s
}

/// The script that removes the rules of queue `queue`, whatever is left of them: the jumps are removed first
/// (so packets flow directly at once), then the chains. Idempotent: it succeeds when nothing is there.
pub fn remove_script(queue: u16) -> String {
    let mut s = String::new();
    for (hook, egress) in [("OUTPUT", true), ("INPUT", false)] {
        let chain = chain_name(queue, egress);
        s += &format!("while iptables -w -t filter -D {hook} -j {chain} 2>/dev/null; do :; done\n");
    }
    for egress in [true, false] {
        let chain = chain_name(queue, egress);
        s += &format!("iptables -w -t filter -F {chain} 2>/dev/null || true\n");
        s += &format!("iptables -w -t filter -X {chain} 2>/dev/null || true\n");
    }
    s += "exit 0\n";
    s
}

/// Run a script with `sh` in the current network namespace; its stderr becomes the error.
pub fn run_script(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| format!("cannot run sh for iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether any chain of queue `queue` exists in the current network namespace.
pub fn chains_present(queue: u16) -> Result<bool, String> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "filter", "-S"])
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables -S failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let names = [chain_name(queue, true), chain_name(queue, false)];
    Ok(text
        .lines()
        .any(|l| l.split_whitespace().any(|w| names.iter().any(|n| n == w))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Direction;

    #[test]
    fn egress_rules_filter_on_destination_and_skip_loopback_and_duplicates() {
        let spec = FaultSpec {
            peers: vec!["10.1.0.2".parse().unwrap(), "10.1.0.3".parse().unwrap()],
            protocol: Some(crate::spec::Protocol::Udp),
            ..FaultSpec::default()
        };
        let s = install_script(7, &spec);
        assert!(s.contains("-A NETFAULT7-OUT -m mark --mark 0x6e660001 -j RETURN"));
        assert!(s.contains("-A NETFAULT7-OUT ! -o lo -d 10.1.0.2/32 -p udp -j NFQUEUE --queue-num 7 --queue-bypass"));
        assert!(s.contains("-d 10.1.0.3/32"));
        assert!(s.contains("-I OUTPUT 1 -j NETFAULT7-OUT"));
        assert!(!s.contains("INPUT"));
    }

    #[test]
    fn both_directions_use_two_chains() {
        let spec = FaultSpec {
            direction: Direction::Both,
            ..FaultSpec::default()
        };
        let s = install_script(3, &spec);
        assert!(s.contains("-A NETFAULT3-IN ! -i lo -j NFQUEUE --queue-num 3 --queue-bypass"));
        assert!(s.contains("-I INPUT 1 -j NETFAULT3-IN"));
        assert!(s.contains("-I OUTPUT 1 -j NETFAULT3-OUT"));
        let r = remove_script(3);
        assert!(r.find("-D OUTPUT").unwrap() < r.find("-X NETFAULT3-OUT").unwrap());
    }
}
