//! The fault catalogue: each fault is a value with a target from the topology, and each has an inverse.
//!
//! | fault | undo | what it does |
//! |---|---|---|
//! | `kill` | `restart` | SIGKILL the node's process; `restart` starts it again and waits until it is ready |
//! | `stop` | `start` | SIGTERM with a grace period (then SIGKILL); `start` as `restart` |
//! | `pause` | `resume` | freeze every process of the node (cgroup freezer) |
//! | `isolate` | `rejoin` | disconnect the node from every network; `rejoin` reconnects it under its aliases |
//! | `partition` | `heal` | drop packets between groups of nodes (iptables in each node's network namespace) |
//! | `one_way` | `heal` | drop the packets of `from`'s nodes to `to`'s nodes; the other direction still passes |
//! | `bridge` | `heal` | cut two halves from each other; the bridge node still reaches both and both reach it |
//! | `ring` | `heal` | majorities ring: each node reaches its nearest neighbours only, always a majority, never the same one |
//! | `halves` | `heal` | cut the nodes named into two halves drawn from a seed |
//! | `site_down` | `site_up` | `kill` every node of a site |
//! | `link` | `unlink` | add a toxic to a link through the fault proxy; `unlink` removes it |
//! | `packet` | `clear` | netem-like packet faults (delay, loss, duplication, reordering, corruption, rate) on a node's packets, optionally only to/from given peers and in one direction (`netfault` in the node's namespace) |
//! | `disk_full` | `disk_free` | the node's store disk fills up: writes fail with `ENOSPC` until space returns |
//! | `disk_read_only` | `disk_writable` | the node's store turns read-only (its files immutable): writes fail with `EPERM`, reads go on |
//!
//! Targets name nodes (`fe1-2`), pools (`fe1`: every node of it) or sites (`site:dc1`); the runtime resolves
//! them against the run's own containers only. The partition shapes come down to directed cuts between nodes
//! ([`crate::partition`]), each verified in every direction it cuts and every one it leaves open.

use serde::{Deserialize, Serialize};

use crate::partition;

/// A fault to apply. Its inverse is [`Fault::undo_name`]; the injector applies it at the end if still in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// SIGKILL; undone by `restart`.
    Kill { target: String },
    /// SIGTERM with `grace_s` seconds before SIGKILL; undone by `start`.
    Stop {
        target: String,
        #[serde(default = "default_grace_s")]
        grace_s: u32,
    },
    /// Freeze; undone by `resume`.
    Pause { target: String },
    /// Cut from every network; undone by `rejoin`.
    Isolate { target: String },
    /// No packet passes between any two groups; undone by `heal`. Each group lists nodes, pools or sites.
    Partition { groups: Vec<Vec<String>> },
    /// The packets of `from`'s nodes to `to`'s nodes are dropped, the other way they pass; undone by `heal`.
    OneWay { from: Vec<String>, to: Vec<String> },
    /// The two groups cut from each other; `bridge` (a node, pool or site, taken out of both) still reaches both;
    /// undone by `heal`.
    Bridge {
        groups: Vec<Vec<String>>,
        bridge: String,
    },
    /// Majorities ring over the nodes the targets name, in that order (four or more); undone by `heal`.
    Ring { nodes: Vec<String> },
    /// The nodes the targets name cut into two halves drawn from `seed`; undone by `heal`. A schedule fills in
    /// the seed from the run's when the scenario leaves it out.
    Halves {
        among: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// Every node of the site killed; undone by `site_up`.
    SiteDown { site: String },
    /// Packet faults on the target's packets (each node of it), only those to or from `peers` (nodes, pools or
    /// sites) when given; undone by `clear`. `packet` is netfault's spec (its `peers` are filled in from `peers`;
    /// its seed, when left out, from the run's).
    Packet {
        target: String,
        #[serde(default)]
        peers: Vec<String>,
        packet: netfault::FaultSpec,
    },
    /// The store disk of the target (a node with a store) fills up; undone by `disk_free`.
    DiskFull { target: String },
    /// The store disk of the target turns read-only; undone by `disk_writable`.
    DiskReadOnly { target: String },
    /// A toxic on the proxied link `from -> to`; undone by `unlink`.
    Link {
        from: String,
        to: String,
        toxic: Toxic,
    },
}

fn default_grace_s() -> u32 {
    5
}

/// A Toxiproxy toxic, as its API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Toxic {
    Latency {
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    Bandwidth {
        rate_kbps: u64,
        #[serde(default)]
        stream: Stream,
    },
    /// `timeout_ms = 0` is a blackhole: data is dropped and the connection held until the toxic goes.
    Timeout {
        timeout_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    ResetPeer {
        #[serde(default)]
        timeout_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    Slicer {
        average_size: u64,
        #[serde(default)]
        size_variation: u64,
        #[serde(default)]
        delay_us: u64,
        #[serde(default)]
        stream: Stream,
    },
    LimitData {
        bytes: u64,
        #[serde(default)]
        stream: Stream,
    },
    SlowClose {
        delay_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    /// The proxy stops listening and cuts every connection (Toxiproxy's `enabled: false`).
    Down,
    /// UDP links: each datagram dropped with `probability`.
    Loss {
        probability: f64,
        #[serde(default)]
        stream: Stream,
    },
    /// UDP links: bursty loss (Gilbert-Elliott): good → bad with `p`, bad → good with `r` after each datagram,
    /// dropped with `loss_good` / `loss_bad` by state.
    LossBurst {
        p: f64,
        r: f64,
        #[serde(default)]
        loss_good: f64,
        #[serde(default = "one")]
        loss_bad: f64,
        #[serde(default)]
        stream: Stream,
    },
    /// UDP links: each datagram sent twice with `probability`.
    Duplicate {
        probability: f64,
        #[serde(default)]
        stream: Stream,
    },
    /// UDP links: each datagram held back `delay_ms` with `probability`, so later ones overtake it.
    Reorder {
        probability: f64,
        #[serde(default = "default_reorder_ms")]
        delay_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    /// UDP links: one bit of each datagram flipped with `probability`.
    Corrupt {
        probability: f64,
        #[serde(default)]
        stream: Stream,
    },
    /// SIP messages the rule picks are not delivered.
    SipDrop {
        rule: SipRule,
        #[serde(default)]
        stream: Stream,
    },
    /// SIP messages the rule picks are delivered `delay_ms` late.
    SipDelay {
        rule: SipRule,
        delay_ms: u64,
        #[serde(default)]
        stream: Stream,
    },
    /// SIP requests the rule picks are answered by the proxy with `code` (and `Retry-After` when given), never
    /// delivered.
    SipRespond {
        rule: SipRule,
        #[serde(default = "default_respond_code")]
        code: u16,
        #[serde(default)]
        retry_after_s: Option<u64>,
        #[serde(default)]
        stream: Stream,
    },
    /// SIP messages the rule picks are held until the toxic is removed, then delivered.
    SipHold {
        rule: SipRule,
        #[serde(default)]
        stream: Stream,
    },
}

fn one() -> f64 {
    1.0
}

fn default_reorder_ms() -> u64 {
    10
}

fn default_respond_code() -> u16 {
    503
}

/// Which SIP messages a SIP toxic picks: every matcher given must hold, then `every` k-th, at most `first` in all,
/// a seeded share `probability` of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipRule {
    /// Requests of this method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Responses with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Requests of this method and the responses to them (by `CSeq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cseq_method: Option<String>,
    /// A header whose value contains a text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

/// A header (full or compact name, any case) whose value contains `contains`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub contains: String,
}

/// Which direction of a link a toxic acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to server.
    Upstream,
    /// Server to client.
    #[default]
    Downstream,
}

impl Toxic {
    /// The Toxiproxy type name and its attributes, as the API wants them; `None` for `Down`.
    pub fn api_body(&self, name: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        let (kind, stream, attributes) = match *self {
            Toxic::Latency {
                latency_ms,
                jitter_ms,
                stream,
            } => (
                "latency",
                stream,
                json!({"latency": latency_ms, "jitter": jitter_ms}),
            ),
            Toxic::Bandwidth { rate_kbps, stream } => {
                ("bandwidth", stream, json!({"rate": rate_kbps}))
            }
            Toxic::Timeout { timeout_ms, stream } => {
                ("timeout", stream, json!({"timeout": timeout_ms}))
            }
            Toxic::ResetPeer { timeout_ms, stream } => {
                ("reset_peer", stream, json!({"timeout": timeout_ms}))
            }
            Toxic::Slicer {
                average_size,
                size_variation,
                delay_us,
                stream,
            } => (
                "slicer",
                stream,
                json!({"average_size": average_size, "size_variation": size_variation, "delay": delay_us}),
            ),
            Toxic::LimitData { bytes, stream } => ("limit_data", stream, json!({"bytes": bytes})),
            Toxic::SlowClose { delay_ms, stream } => {
                ("slow_close", stream, json!({"delay": delay_ms}))
            }
            Toxic::Down => return None,
            Toxic::Loss {
                probability,
                stream,
            } => ("loss", stream, json!({"probability": probability})),
            Toxic::LossBurst {
                p,
                r,
                loss_good,
                loss_bad,
                stream,
            } => (
                "loss_burst",
                stream,
                json!({"p": p, "r": r, "loss_good": loss_good, "loss_bad": loss_bad}),
            ),
            Toxic::Duplicate {
                probability,
                stream,
            } => ("duplicate", stream, json!({"probability": probability})),
            Toxic::Reorder {
                probability,
                delay_ms,
                stream,
            } => (
                "reorder",
                stream,
                json!({"probability": probability, "delay": delay_ms}),
            ),
            Toxic::Corrupt {
                probability,
                stream,
            } => ("corrupt", stream, json!({"probability": probability})),
            Toxic::SipDrop { ref rule, stream } => ("sip_drop", stream, rule_json(rule)),
            Toxic::SipDelay {
                ref rule,
                delay_ms,
                stream,
            } => {
                let mut a = rule_json(rule);
                a["delay"] = json!(delay_ms);
                ("sip_delay", stream, a)
            }
            Toxic::SipRespond {
                ref rule,
                code,
                retry_after_s,
                stream,
            } => {
                let mut a = rule_json(rule);
                a["code"] = json!(code);
                if let Some(s) = retry_after_s {
                    a["retry_after"] = json!(s);
                }
                ("sip_respond", stream, a)
            }
            Toxic::SipHold { ref rule, stream } => ("sip_hold", stream, rule_json(rule)),
        };
        let stream = match stream {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        };
        Some(
            json!({"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}),
        )
    }

    /// The word for this toxic in logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::Timeout { .. } => "timeout",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Slicer { .. } => "slicer",
            Toxic::LimitData { .. } => "limit_data",
            Toxic::SlowClose { .. } => "slow_close",
            Toxic::Down => "down",
            Toxic::Loss { .. } => "loss",
            Toxic::LossBurst { .. } => "loss_burst",
            Toxic::Duplicate { .. } => "duplicate",
            Toxic::Reorder { .. } => "reorder",
            Toxic::Corrupt { .. } => "corrupt",
            Toxic::SipDrop { .. } => "sip_drop",
            Toxic::SipDelay { .. } => "sip_delay",
            Toxic::SipRespond { .. } => "sip_respond",
            Toxic::SipHold { .. } => "sip_hold",
        }
    }
}

/// A SIP rule as the proxy's attributes.
fn rule_json(rule: &SipRule) -> serde_json::Value {
    serde_json::to_value(rule).expect("a rule is plain data")
}

impl Fault {
    /// The fault's word: `kill`, `partition`, `link`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Stop { .. } => "stop",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "isolate",
            Fault::Partition { .. } => "partition",
            Fault::OneWay { .. } => "one_way",
            Fault::Bridge { .. } => "bridge",
            Fault::Ring { .. } => "ring",
            Fault::Halves { .. } => "halves",
            Fault::SiteDown { .. } => "site_down",
            Fault::Link { .. } => "link",
            Fault::Packet { .. } => "packet",
            Fault::DiskFull { .. } => "disk_full",
            Fault::DiskReadOnly { .. } => "disk_read_only",
        }
    }

    /// The inverse's word: `restart`, `heal`, `unlink`, …
    pub fn undo_name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "restart",
            Fault::Stop { .. } => "start",
            Fault::Pause { .. } => "resume",
            Fault::Isolate { .. } => "rejoin",
            Fault::Partition { .. }
            | Fault::OneWay { .. }
            | Fault::Bridge { .. }
            | Fault::Ring { .. }
            | Fault::Halves { .. } => "heal",
            Fault::SiteDown { .. } => "site_up",
            Fault::Link { .. } => "unlink",
            Fault::Packet { .. } => "clear",
            Fault::DiskFull { .. } => "disk_free",
            Fault::DiskReadOnly { .. } => "disk_writable",
        }
    }

    /// The target as the report shows it.
    pub fn target(&self) -> String {
        match self {
            Fault::Kill { target }
            | Fault::Stop { target, .. }
            | Fault::Pause { target }
            | Fault::Isolate { target }
            | Fault::DiskFull { target }
            | Fault::DiskReadOnly { target } => target.clone(),
            // As a link's: both ends (`from->to:kind`), so the checkers see every node it hit.
            Fault::Packet { target, peers, .. } if !peers.is_empty() => {
                format!("{target}->{}:packet", peers.join("+"))
            }
            Fault::Packet { target, .. } => target.clone(),
            Fault::Partition { groups } => groups
                .iter()
                .map(|g| g.join("+"))
                .collect::<Vec<_>>()
                .join(" | "),
            Fault::OneWay { from, to } => format!("{} => {}", from.join("+"), to.join("+")),
            Fault::Bridge { groups, bridge } => format!(
                "{} via {bridge}",
                groups
                    .iter()
                    .map(|g| g.join("+"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            Fault::Ring { nodes } => format!("ring {}", nodes.join("+")),
            Fault::Halves { among, seed } => {
                format!("halves of {} seed {}", among.join("+"), seed.unwrap_or(0))
            }
            Fault::SiteDown { site } => site.clone(),
            Fault::Link { from, to, toxic } => format!("{from}->{to}:{}", toxic.kind()),
        }
    }
}

impl Fault {
    /// For a partition shape, the directed cuts it makes between nodes, each target expanded to node names by
    /// `expand` (a node, a pool, a site); `None` for every other fault.
    pub fn cuts(
        &self,
        expand: impl Fn(&str) -> Result<Vec<String>, String>,
    ) -> Option<Result<partition::Cuts, String>> {
        let all = |targets: &[String]| -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            for t in targets {
                out.extend(expand(t)?);
            }
            Ok(out)
        };
        let each = |groups: &[Vec<String>]| -> Result<Vec<Vec<String>>, String> {
            groups.iter().map(|g| all(g)).collect()
        };
        let cuts = match self {
            Fault::Partition { groups } => each(groups)
                .and_then(|g| partition::groups(g).map_err(|e| format!("partition: {e}"))),
            Fault::OneWay { from, to } => {
                all(from).and_then(|f| all(to).and_then(|t| partition::one_way(f, t)))
            }
            Fault::Bridge { groups, bridge } => {
                each(groups).and_then(|g| expand(bridge).and_then(|b| partition::bridge(g, b)))
            }
            Fault::Ring { nodes } => all(nodes).and_then(partition::ring),
            Fault::Halves { among, seed } => {
                all(among).and_then(|n| partition::halves(n, seed.unwrap_or(0)).map(|(_, c)| c))
            }
            _ => return None,
        };
        Some(cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_reads_from_toml_and_names_its_undo() {
        let text = r#"
            [[fault]]
            kind = "kill"
            target = "fe1-1"
            [[fault]]
            kind = "partition"
            groups = [["site:dc1"], ["site:dc2"]]
            [[fault]]
            kind = "link"
            from = "fe1"
            to = "be1"
            toxic = { type = "latency", latency_ms = 200, jitter_ms = 20 }
        "#;
        #[derive(Deserialize)]
        struct F {
            fault: Vec<Fault>,
        }
        let f: F = toml::from_str(text).unwrap();
        let undo: Vec<_> = f.fault.iter().map(Fault::undo_name).collect();
        assert_eq!(undo, ["restart", "heal", "unlink"]);
        assert_eq!(f.fault[2].target(), "fe1->be1:latency");
    }

    #[test]
    fn every_partition_shape_reads_from_toml_and_comes_down_to_cuts() {
        let text = r#"
            [[fault]]
            kind = "one_way"
            from = ["fe1-1"]
            to = ["fe1"]
            [[fault]]
            kind = "bridge"
            groups = [["site:dc1"], ["site:dc2"]]
            bridge = "w1"
            [[fault]]
            kind = "ring"
            nodes = ["fe1"]
            [[fault]]
            kind = "halves"
            among = ["fe1"]
            seed = 4
        "#;
        #[derive(Deserialize)]
        struct F {
            fault: Vec<Fault>,
        }
        let f: F = toml::from_str(text).unwrap();
        let expand = |t: &str| -> Result<Vec<String>, String> {
            Ok(match t {
                "fe1" => vec![
                    "fe1-1".into(),
                    "fe1-2".into(),
                    "fe1-3".into(),
                    "fe1-4".into(),
                ],
                "site:dc1" => vec!["a".into(), "w1".into()],
                "site:dc2" => vec!["b".into()],
                other => vec![other.to_string()],
            })
        };
        let cuts: Vec<usize> = f
            .fault
            .iter()
            .map(|x| x.cuts(expand).unwrap().unwrap().len())
            .collect();
        // one-way: fe1-1 to three; bridge: a <-> b; ring of four: two pairs both ways; halves 2+2: 8.
        assert_eq!(cuts, [3, 2, 4, 8]);
        assert!(f.fault.iter().all(|x| x.undo_name() == "heal"));
        assert_eq!(f.fault[0].target(), "fe1-1 => fe1");
        assert!(Fault::Kill { target: "x".into() }.cuts(expand).is_none());
    }

    #[test]
    fn toxics_speak_the_toxiproxy_api() {
        let body = Toxic::Timeout {
            timeout_ms: 0,
            stream: Stream::Upstream,
        }
        .api_body("blackhole")
        .unwrap();
        assert_eq!(body["type"], "timeout");
        assert_eq!(body["stream"], "upstream");
        assert_eq!(body["attributes"]["timeout"], 0);
        assert!(Toxic::Down.api_body("x").is_none());
    }

    #[test]
    fn sip_and_datagram_toxics_speak_the_proxys_extension() {
        let text = r#"
            [[fault]]
            kind = "link"
            from = "users"
            to = "fe1"
            toxic = { type = "sip_drop", rule = { status = 200, cseq_method = "REGISTER", every = 2 } }
            [[fault]]
            kind = "link"
            from = "fe1"
            to = "med1"
            toxic = { type = "sip_respond", stream = "upstream", rule = { method = "MESSAGE", every = 3 }, retry_after_s = 30 }
            [[fault]]
            kind = "link"
            from = "kam"
            to = "kam"
            toxic = { type = "loss_burst", p = 0.05, r = 0.25 }
        "#;
        #[derive(Deserialize)]
        struct F {
            fault: Vec<Fault>,
        }
        let f: F = toml::from_str(text).unwrap();
        let body = |i: usize| match &f.fault[i] {
            Fault::Link { toxic, .. } => toxic.api_body("t").unwrap(),
            other => panic!("{other:?}"),
        };
        let drop = body(0);
        assert_eq!(drop["type"], "sip_drop");
        assert_eq!(drop["stream"], "downstream");
        assert_eq!(drop["attributes"]["status"], 200);
        assert_eq!(drop["attributes"]["cseq_method"], "REGISTER");
        assert_eq!(drop["attributes"]["every"], 2);
        assert!(drop["attributes"].get("first").is_none());
        let respond = body(1);
        assert_eq!(respond["attributes"]["code"], 503);
        assert_eq!(respond["attributes"]["retry_after"], 30);
        assert_eq!(respond["stream"], "upstream");
        let burst = body(2);
        assert_eq!(burst["type"], "loss_burst");
        assert_eq!(burst["attributes"]["loss_bad"], 1.0);
    }
}
