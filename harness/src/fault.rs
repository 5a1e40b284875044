//! The fault catalogue: each fault is a value with a target from the topology, and each has an inverse.
//!
//! | fault | undo | what it does |
//! |---|---|---|
//! | `kill` | `restart` | SIGKILL the node's process; `restart` starts it again and waits until it is ready |
//! | `stop` | `start` | SIGTERM with a grace period (then SIGKILL); `start` as `restart` |
//! | `pause` | `resume` | freeze every process of the node (cgroup freezer) |
//! | `isolate` | `rejoin` | disconnect the node from every network; `rejoin` reconnects it under its aliases |
//! | `partition` | `heal` | drop packets between groups of nodes (iptables in each node's network namespace) |
//! | `site_down` | `site_up` | `kill` every node of a site |
//! | `link` | `unlink` | add a toxic to a link through the fault proxy; `unlink` removes it |
//!
//! Targets name nodes (`fe1-2`), pools (`fe1`: every node of it) or sites (`site:dc1`); the runtime resolves
//! them against the run's own containers only.

use serde::{Deserialize, Serialize};

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
    /// Every node of the site killed; undone by `site_up`.
    SiteDown { site: String },
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
        }
    }
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
            Fault::SiteDown { .. } => "site_down",
            Fault::Link { .. } => "link",
        }
    }

    /// The inverse's word: `restart`, `heal`, `unlink`, …
    pub fn undo_name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "restart",
            Fault::Stop { .. } => "start",
            Fault::Pause { .. } => "resume",
            Fault::Isolate { .. } => "rejoin",
            Fault::Partition { .. } => "heal",
            Fault::SiteDown { .. } => "site_up",
            Fault::Link { .. } => "unlink",
        }
    }

    /// The target as the report shows it.
    pub fn target(&self) -> String {
        match self {
            Fault::Kill { target }
            | Fault::Stop { target, .. }
            | Fault::Pause { target }
            | Fault::Isolate { target } => target.clone(),
            Fault::Partition { groups } => groups
                .iter()
                .map(|g| g.join("+"))
                .collect::<Vec<_>>()
                .join(" | "),
            Fault::SiteDown { site } => site.clone(),
            Fault::Link { from, to, toxic } => format!("{from}->{to}:{}", toxic.kind()),
        }
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
}
