//! The fault specification: what happens to the packets of one node, in which direction, towards which peers.
//!
//! It is the JSON document that `netfault apply --spec` reads and the type the harness builds. Every field but
//! `direction` may be left out; a spec with nothing set passes packets through the queue untouched.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Which of the node's packets the fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets the node sends (the `OUTPUT` hook), filtered on their destination address.
    #[default]
    Egress,
    /// Packets the node receives (the `INPUT` hook), filtered on their source address.
    Ingress,
    /// Both of the above.
    Both,
}

impl Direction {
    /// Whether packets the node sends are affected.
    pub fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }

    /// Whether packets the node receives are affected.
    pub fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// The distribution of the delay's jitter, as netem's tables of the same names: the delay of a packet is
/// `delay_ms + jitter_ms * t` with `t` drawn from the distribution (mean 0), clamped at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// `t` uniform in `[-1, 1]` (netem's default without a table).
    #[default]
    Uniform,
    /// `t` standard normal.
    Normal,
    /// `t` from a Pareto distribution of shape 3, shifted to mean 0 and scaled like iproute2's `pareto` table.
    Pareto,
    /// `t = 0.25 * normal + 0.75 * pareto`, like iproute2's `paretonormal` table.
    Paretonormal,
}

/// The 4-state-free Gilbert-Elliott loss model of netem (`loss gemodel p r 1-h 1-k`): a good and a bad state;
/// each packet first may move the state (good → bad with `p`, bad → good with `r`), then is lost with the
/// loss probability of the state the chain was in when the packet arrived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GilbertElliott {
    /// Probability of going from the good state to the bad state, per packet.
    pub p: f64,
    /// Probability of going from the bad state back to the good state, per packet.
    pub r: f64,
    /// Loss probability in the good state (netem's `1-k`); usually 0.
    #[serde(default)]
    pub loss_good: f64,
    /// Loss probability in the bad state (netem's `1-h`); usually 1.
    #[serde(default = "one")]
    pub loss_bad: f64,
}

fn one() -> f64 {
    1.0
}

impl GilbertElliott {
    /// The long-run fraction of packets lost: the stationary probability of each state times its loss.
    pub fn mean_loss(&self) -> f64 {
        if self.p + self.r == 0.0 {
            return self.loss_good;
        }
        let bad = self.p / (self.p + self.r);
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }
}

/// How packets are lost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Each packet lost independently with this probability.
    Random(f64),
    /// Bursty loss.
    GilbertElliott(GilbertElliott),
}

impl Loss {
    /// The long-run fraction of packets lost.
    pub fn mean_loss(&self) -> f64 {
        match self {
            Loss::Random(p) => *p,
            Loss::GilbertElliott(ge) => ge.mean_loss(),
        }
    }
}

/// A protocol to restrict the fault to (`-p` of iptables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
    Icmp,
    Sctp,
}

impl Protocol {
    /// The name iptables knows it by.
    pub fn iptables_name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Icmp => "icmp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The default bound of packets held at once (netem's default `limit`).
pub const DEFAULT_LIMIT: usize = 1000;

/// A fault on the packets of one node.
///
/// ```json
/// {"direction": "egress", "peers": ["10.0.0.2"], "protocol": "udp",
///  "delay_ms": 50, "jitter_ms": 10, "distribution": "normal",
///  "loss": {"gilbert_elliott": {"p": 0.05, "r": 0.5, "loss_good": 0, "loss_bad": 1}},
///  "duplicate": 0.01, "reorder": 0.1, "corrupt": 0.001, "rate_kbit": 1000, "seed": 7}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Which packets: sent, received or both.
    #[serde(default)]
    pub direction: Direction,
    /// Peer addresses the fault is restricted to; empty means all traffic except loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Ipv4Addr>,
    /// Restrict the fault to one protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Added delay, milliseconds.
    #[serde(default)]
    pub delay_ms: f64,
    /// Jitter of the delay, milliseconds (the scale of `distribution`).
    #[serde(default)]
    pub jitter_ms: f64,
    /// Distribution of the jitter.
    #[serde(default)]
    pub distribution: Distribution,
    /// Packet loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// Probability that a packet is sent twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Probability that a packet skips the delay and so overtakes the packets held before it (netem's `reorder`
    /// with gap 1); needs `delay_ms > 0`.
    #[serde(default)]
    pub reorder: f64,
    /// Probability that one random bit after the IP header is flipped. A checksummed transport (TCP, UDP with
    /// a checksum) then drops the packet at the receiver, as with netem.
    #[serde(default)]
    pub corrupt: f64,
    /// Rate limit, kbit/s (1000 bit) of IP packets: after its delay, each packet waits until the link is free
    /// and occupies it for its length at this rate (as netem's `rate`: a token bucket one packet deep).
    /// Packets wait rather than drop; only a packet arriving when `limit` packets are held is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
    /// Most packets held at once (delayed or waiting for the rate); a packet arriving beyond it is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Seed of the random decisions: the same seed gives the same decisions for the same packet sequence.
    /// Without it, a seed is drawn from the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn probability(name: &str, p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{name} must be a probability in [0, 1], got {p}"))
    }
}

impl FaultSpec {
    /// Parse a spec from JSON and validate it.
    pub fn from_json(text: &str) -> Result<FaultSpec, String> {
        let spec: FaultSpec =
            serde_json::from_str(text).map_err(|e| format!("invalid fault spec: {e}"))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a fault spec always serializes")
    }

    /// Most packets held at once.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }

    /// Check that every number is in range and the fields fit together.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.delay_ms.is_finite() && self.delay_ms >= 0.0) {
            return Err(format!("delay_ms must be >= 0, got {}", self.delay_ms));
        }
        if !(self.jitter_ms.is_finite() && self.jitter_ms >= 0.0) {
            return Err(format!("jitter_ms must be >= 0, got {}", self.jitter_ms));
        }
        if self.delay_ms > 60_000.0 || self.jitter_ms > 60_000.0 {
            return Err("delay_ms and jitter_ms must be at most 60000".into());
        }
        probability("duplicate", self.duplicate)?;
        probability("reorder", self.reorder)?;
        probability("corrupt", self.corrupt)?;
        match self.loss {
            Some(Loss::Random(p)) => probability("loss.random", p)?,
            Some(Loss::GilbertElliott(ge)) => {
                probability("loss.gilbert_elliott.p", ge.p)?;
                probability("loss.gilbert_elliott.r", ge.r)?;
                probability("loss.gilbert_elliott.loss_good", ge.loss_good)?;
                probability("loss.gilbert_elliott.loss_bad", ge.loss_bad)?;
            }
            None => {}
        }
        if self.reorder > 0.0 && self.delay_ms <= 0.0 {
            return Err(
                "reorder needs a delay: a packet is reordered by skipping the delay of the others"
                    .into(),
            );
        }
        if self.rate_kbit == Some(0) {
            return Err("rate_kbit must be > 0".into());
        }
        if self.limit == Some(0) {
            return Err("limit must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let spec = FaultSpec::from_json(
            r#"{"direction": "egress", "peers": ["10.0.0.2"], "protocol": "udp",
                "delay_ms": 50, "jitter_ms": 10, "distribution": "normal",
                "loss": {"gilbert_elliott": {"p": 0.05, "r": 0.5, "loss_good": 0, "loss_bad": 1}},
                "duplicate": 0.01, "reorder": 0.1, "corrupt": 0.001, "rate_kbit": 1000, "seed": 7}"#,
        )
        .unwrap();
        assert_eq!(spec.peers, vec![Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(spec.distribution, Distribution::Normal);
        let back = FaultSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        let random = FaultSpec::from_json(r#"{"loss": {"random": 0.2}}"#).unwrap();
        assert_eq!(random.loss, Some(Loss::Random(0.2)));
    }

    #[test]
    fn rejects_out_of_range_and_unknown_fields() {
        assert!(FaultSpec::from_json(r#"{"duplicate": 1.5}"#)
            .unwrap_err()
            .contains("duplicate"));
        assert!(FaultSpec::from_json(r#"{"reorder": 0.5}"#)
            .unwrap_err()
            .contains("needs a delay"));
        assert!(FaultSpec::from_json(r#"{"delay": 5}"#)
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn gilbert_elliott_mean_loss_is_the_stationary_bad_share() {
        let ge = GilbertElliott {
            p: 0.1,
            r: 0.4,
            loss_good: 0.0,
            loss_bad: 1.0,
        };
        assert!((ge.mean_loss() - 0.2).abs() < 1e-12);
    }
}
