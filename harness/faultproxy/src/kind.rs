//! Every toxic type: its attributes as the API writes them in JSON, their parsing and defaults,
//! and the protocols it acts on.
//!
//! Toxiproxy's own types keep Toxiproxy's keys and integer attributes (absent keys are 0). The
//! datagram types (UDP only) take a `probability` in [0, 1]; the SIP types (both protocols) take a
//! rule that picks messages and an action. An update merges the new attributes over the current
//! ones and parses the result, so absent keys keep their values for every type.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::Protocol;

/// Which messages a SIP toxic picks: every matcher given must hold, then the selection (`every`,
/// `first`, `probability`) chooses among the matching messages.
#[derive(Clone, Debug, PartialEq)]
pub struct SipRule {
    /// Request method (`REGISTER`): matches requests only.
    pub method: Option<String>,
    /// Response status code (`200`): matches responses only.
    pub status: Option<u16>,
    /// Method named in `CSeq`: requests of that method and the responses to them.
    pub cseq_method: Option<String>,
    /// A header (full or compact name, any case) whose value contains a text.
    pub header: Option<HeaderMatch>,
    /// Picks every k-th matching message (k, 2k, …); 1 picks each.
    pub every: u64,
    /// Picks at most this many messages in all; 0 means no limit.
    pub first: u64,
    /// Share of the otherwise picked messages really picked (a seeded draw per message).
    pub probability: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub contains: String,
}

/// What a SIP toxic does with a picked message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipAction {
    /// The message is not delivered.
    Drop,
    /// The message is delivered `delay_ms` after it arrived.
    Delay { delay_ms: u64 },
    /// The request is not delivered; the proxy answers its sender with this status.
    Respond {
        code: u16,
        reason: String,
        /// `Retry-After` in seconds; none when absent.
        retry_after_s: Option<u64>,
    },
    /// The message is kept until the toxic is removed, then delivered.
    Hold,
}

/// A toxic's type with its attributes. Field names carry units; the JSON keys stay Toxiproxy's.
#[derive(Clone, Debug, PartialEq)]
pub enum ToxicKind {
    /// Delays every chunk or datagram by `latency_ms` ± a uniform draw within `jitter_ms`.
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// Caps throughput at `rate_kbps` kilobytes (1000 bytes) per second; 0 means no cap.
    Bandwidth { rate_kbps: u64 },
    /// Holds the close (FIN) back for `delay_ms` after the sender closed.
    SlowClose { delay_ms: u64 },
    /// Drops data; closes the connection after `timeout_ms`, or never while present when 0.
    Timeout { timeout_ms: u64 },
    /// Resets the connection (RST) `timeout_ms` after the toxic started acting on it.
    ResetPeer { timeout_ms: u64 },
    /// Splits data into pieces of `average_size_bytes` ± `size_variation_bytes`, `delay_us` apart.
    Slicer {
        average_size_bytes: u64,
        size_variation_bytes: u64,
        delay_us: u64,
    },
    /// Passes `bytes` bytes, then closes the connection.
    LimitData { bytes: u64 },
    /// Drops each datagram with `probability`.
    Loss { probability: f64 },
    /// Gilbert-Elliott loss: a good and a bad state, moving good → bad with `p` and bad → good
    /// with `r` after each datagram, dropping with `loss_good` or `loss_bad` by state.
    LossBurst {
        p: f64,
        r: f64,
        loss_good: f64,
        loss_bad: f64,
    },
    /// Sends each datagram twice with `probability`.
    Duplicate { probability: f64 },
    /// Holds each datagram back by `delay_ms` with `probability`, so later ones overtake it.
    Reorder { probability: f64, delay_ms: u64 },
    /// Flips one random bit of each datagram with `probability`.
    Corrupt { probability: f64 },
    /// Acts on whole SIP messages picked by a rule.
    Sip { rule: SipRule, action: SipAction },
}

/// Every type name: Toxiproxy's, then the datagram ones, then the SIP ones.
pub const TYPE_NAMES: &[&str] = &[
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "loss",
    "loss_burst",
    "duplicate",
    "reorder",
    "corrupt",
    "sip_drop",
    "sip_delay",
    "sip_respond",
    "sip_hold",
];

/// How long `reorder` holds a datagram back when `delay` is not given.
const REORDER_DELAY_DEFAULT_MS: u64 = 10;
/// The status `sip_respond` answers with when `code` is not given.
const RESPOND_CODE_DEFAULT: u16 = 503;

fn bad(message: String) -> ApiError {
    ApiError::BadRequestBody(message)
}

fn integer(map: &Map<String, Value>, key: &str, default: u64) -> Result<u64, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_u64().ok_or_else(|| {
            bad(format!(
                "attribute {key} must be a non-negative integer, got {value}"
            ))
        }),
    }
}

fn probability(map: &Map<String, Value>, key: &str, default: f64) -> Result<f64, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => match value.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => Err(bad(format!(
                "attribute {key} must be a number in [0, 1], got {value}"
            ))),
        },
    }
}

fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(value) => Err(bad(format!(
            "attribute {key} must be a non-empty string, got {value}"
        ))),
    }
}

fn status_code(map: &Map<String, Value>, key: &str) -> Result<Option<u16>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(code) if (100..=699).contains(&code) => Ok(Some(code as u16)),
            _ => Err(bad(format!(
                "attribute {key} must be a SIP status code (100-699), got {value}"
            ))),
        },
    }
}

fn header_match(map: &Map<String, Value>) -> Result<Option<HeaderMatch>, ApiError> {
    let shape = || bad(r#"attribute header must be {"name": "...", "contains": "..."}"#.into());
    match map.get("header") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(header)) => {
            let name = text(header, "name")
                .map_err(|_| shape())?
                .ok_or_else(shape)?;
            let contains = match header.get("contains") {
                Some(Value::String(contains)) => contains.clone(),
                _ => return Err(shape()),
            };
            Ok(Some(HeaderMatch { name, contains }))
        }
        Some(_) => Err(shape()),
    }
}

/// The standard reason phrase of the statuses a proxy is likely asked to answer with.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        500 => "Server Internal Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Fault Injected",
    }
}

impl SipRule {
    fn parse(map: &Map<String, Value>) -> Result<SipRule, ApiError> {
        Ok(SipRule {
            method: text(map, "method")?,
            status: status_code(map, "status")?,
            cseq_method: text(map, "cseq_method")?,
            header: header_match(map)?,
            every: integer(map, "every", 1)?.max(1),
            first: integer(map, "first", 0)?,
            probability: probability(map, "probability", 1.0)?,
        })
    }

    fn write(&self, map: &mut Map<String, Value>) {
        if let Some(method) = &self.method {
            map.insert("method".into(), method.clone().into());
        }
        if let Some(status) = self.status {
            map.insert("status".into(), status.into());
        }
        if let Some(cseq_method) = &self.cseq_method {
            map.insert("cseq_method".into(), cseq_method.clone().into());
        }
        if let Some(header) = &self.header {
            map.insert(
                "header".into(),
                serde_json::json!({"name": header.name, "contains": header.contains}),
            );
        }
        map.insert("every".into(), self.every.into());
        map.insert("first".into(), self.first.into());
        map.insert("probability".into(), self.probability.into());
    }
}

impl ToxicKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::Loss { .. } => "loss",
            ToxicKind::LossBurst { .. } => "loss_burst",
            ToxicKind::Duplicate { .. } => "duplicate",
            ToxicKind::Reorder { .. } => "reorder",
            ToxicKind::Corrupt { .. } => "corrupt",
            ToxicKind::Sip { action, .. } => match action {
                SipAction::Drop => "sip_drop",
                SipAction::Delay { .. } => "sip_delay",
                SipAction::Respond { .. } => "sip_respond",
                SipAction::Hold => "sip_hold",
            },
        }
    }

    /// Whether the type acts on a proxy of `protocol`: Toxiproxy's stream types on TCP only,
    /// datagram types on UDP only; latency, bandwidth and the SIP types on both.
    pub fn supports(&self, protocol: Protocol) -> bool {
        match self {
            ToxicKind::Latency { .. } | ToxicKind::Bandwidth { .. } | ToxicKind::Sip { .. } => true,
            ToxicKind::SlowClose { .. }
            | ToxicKind::Timeout { .. }
            | ToxicKind::ResetPeer { .. }
            | ToxicKind::Slicer { .. }
            | ToxicKind::LimitData { .. } => protocol == Protocol::Tcp,
            ToxicKind::Loss { .. }
            | ToxicKind::LossBurst { .. }
            | ToxicKind::Duplicate { .. }
            | ToxicKind::Reorder { .. }
            | ToxicKind::Corrupt { .. } => protocol == Protocol::Udp,
        }
    }

    /// Builds a kind from JSON attributes on top of `base` (defaults for a new toxic): keys absent
    /// from `attributes` keep their base value, unknown keys are ignored, as Toxiproxy's decoder does.
    pub fn parse(
        type_name: &str,
        attributes: Option<&Map<String, Value>>,
        base: Option<&ToxicKind>,
    ) -> Result<ToxicKind, ApiError> {
        if !TYPE_NAMES.contains(&type_name) {
            return Err(ApiError::InvalidToxicType);
        }
        let mut merged = base.map(ToxicKind::attributes).unwrap_or_default();
        if let Some(attributes) = attributes {
            for (key, value) in attributes {
                merged.insert(key.clone(), value.clone());
            }
        }
        ToxicKind::from_map(type_name, &merged)
    }

    fn from_map(type_name: &str, m: &Map<String, Value>) -> Result<ToxicKind, ApiError> {
        let kind = match type_name {
            "latency" => ToxicKind::Latency {
                latency_ms: integer(m, "latency", 0)?,
                jitter_ms: integer(m, "jitter", 0)?,
            },
            "bandwidth" => ToxicKind::Bandwidth {
                rate_kbps: integer(m, "rate", 0)?,
            },
            "slow_close" => ToxicKind::SlowClose {
                delay_ms: integer(m, "delay", 0)?,
            },
            "timeout" => ToxicKind::Timeout {
                timeout_ms: integer(m, "timeout", 0)?,
            },
            "reset_peer" => ToxicKind::ResetPeer {
                timeout_ms: integer(m, "timeout", 0)?,
            },
            "slicer" => ToxicKind::Slicer {
                average_size_bytes: integer(m, "average_size", 0)?,
                size_variation_bytes: integer(m, "size_variation", 0)?,
                delay_us: integer(m, "delay", 0)?,
            },
            "limit_data" => ToxicKind::LimitData {
                bytes: integer(m, "bytes", 0)?,
            },
            "loss" => ToxicKind::Loss {
                probability: probability(m, "probability", 0.0)?,
            },
            "loss_burst" => ToxicKind::LossBurst {
                p: probability(m, "p", 0.0)?,
                r: probability(m, "r", 1.0)?,
                loss_good: probability(m, "loss_good", 0.0)?,
                loss_bad: probability(m, "loss_bad", 1.0)?,
            },
            "duplicate" => ToxicKind::Duplicate {
                probability: probability(m, "probability", 0.0)?,
            },
            "reorder" => ToxicKind::Reorder {
                probability: probability(m, "probability", 0.0)?,
                delay_ms: integer(m, "delay", REORDER_DELAY_DEFAULT_MS)?,
            },
            "corrupt" => ToxicKind::Corrupt {
                probability: probability(m, "probability", 0.0)?,
            },
            "sip_drop" => ToxicKind::Sip {
                rule: SipRule::parse(m)?,
                action: SipAction::Drop,
            },
            "sip_delay" => ToxicKind::Sip {
                rule: SipRule::parse(m)?,
                action: SipAction::Delay {
                    delay_ms: integer(m, "delay", 0)?,
                },
            },
            "sip_hold" => ToxicKind::Sip {
                rule: SipRule::parse(m)?,
                action: SipAction::Hold,
            },
            "sip_respond" => {
                let rule = SipRule::parse(m)?;
                if rule.status.is_some() {
                    return Err(bad(
                        "sip_respond answers requests; status matches responses only".into(),
                    ));
                }
                if rule
                    .method
                    .as_ref()
                    .is_some_and(|method| method.eq_ignore_ascii_case("ACK"))
                {
                    return Err(bad(
                        "sip_respond never answers ACK (it has no response)".into()
                    ));
                }
                let code = status_code(m, "code")?.unwrap_or(RESPOND_CODE_DEFAULT);
                if code < 200 {
                    return Err(bad(format!(
                        "sip_respond needs a final status (200-699), got {code}"
                    )));
                }
                let reason = text(m, "reason")?.unwrap_or_else(|| reason_phrase(code).to_owned());
                let retry_after_s = match m.get("retry_after") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(integer(m, "retry_after", 0)?),
                };
                ToxicKind::Sip {
                    rule,
                    action: SipAction::Respond {
                        code,
                        reason,
                        retry_after_s,
                    },
                }
            }
            other => unreachable!("type {other} was checked against TYPE_NAMES"),
        };
        Ok(kind)
    }

    /// The attributes as the API shows them; parsing them back gives the same kind.
    pub fn attributes(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |key: &str, value: Value| {
            map.insert(key.to_owned(), value);
        };
        match self {
            ToxicKind::Latency {
                latency_ms,
                jitter_ms,
            } => {
                put("latency", (*latency_ms).into());
                put("jitter", (*jitter_ms).into());
            }
            ToxicKind::Bandwidth { rate_kbps } => put("rate", (*rate_kbps).into()),
            ToxicKind::SlowClose { delay_ms } => put("delay", (*delay_ms).into()),
            ToxicKind::Timeout { timeout_ms } | ToxicKind::ResetPeer { timeout_ms } => {
                put("timeout", (*timeout_ms).into())
            }
            ToxicKind::Slicer {
                average_size_bytes,
                size_variation_bytes,
                delay_us,
            } => {
                put("average_size", (*average_size_bytes).into());
                put("size_variation", (*size_variation_bytes).into());
                put("delay", (*delay_us).into());
            }
            ToxicKind::LimitData { bytes } => put("bytes", (*bytes).into()),
            ToxicKind::Loss { probability }
            | ToxicKind::Duplicate { probability }
            | ToxicKind::Corrupt { probability } => put("probability", (*probability).into()),
            ToxicKind::LossBurst {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                put("p", (*p).into());
                put("r", (*r).into());
                put("loss_good", (*loss_good).into());
                put("loss_bad", (*loss_bad).into());
            }
            ToxicKind::Reorder {
                probability,
                delay_ms,
            } => {
                put("probability", (*probability).into());
                put("delay", (*delay_ms).into());
            }
            ToxicKind::Sip { rule, action } => {
                rule.write(&mut map);
                match action {
                    SipAction::Drop | SipAction::Hold => {}
                    SipAction::Delay { delay_ms } => {
                        map.insert("delay".into(), (*delay_ms).into());
                    }
                    SipAction::Respond {
                        code,
                        reason,
                        retry_after_s,
                    } => {
                        map.insert("code".into(), (*code).into());
                        map.insert("reason".into(), reason.clone().into());
                        if let Some(retry_after_s) = retry_after_s {
                            map.insert("retry_after".into(), (*retry_after_s).into());
                        }
                    }
                }
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(type_name: &str, attributes: Value) -> Result<ToxicKind, ApiError> {
        ToxicKind::parse(type_name, attributes.as_object(), None)
    }

    #[test]
    fn every_type_round_trips_through_its_attributes() {
        for type_name in TYPE_NAMES {
            let kind = parse(type_name, serde_json::json!({"method": "INVITE"})).unwrap();
            let again = ToxicKind::parse(type_name, Some(&kind.attributes()), None).unwrap();
            assert_eq!(kind, again, "{type_name}");
            assert_eq!(kind.type_name(), *type_name);
        }
    }

    #[test]
    fn sip_respond_builds_its_defaults_and_refuses_responses_and_ack() {
        let kind = parse(
            "sip_respond",
            serde_json::json!({"method":"MESSAGE","every":3,"retry_after":5}),
        )
        .unwrap();
        let ToxicKind::Sip { rule, action } = kind else {
            panic!("a SIP kind")
        };
        assert_eq!(rule.every, 3);
        assert_eq!(
            action,
            SipAction::Respond {
                code: 503,
                reason: "Service Unavailable".into(),
                retry_after_s: Some(5)
            }
        );
        assert!(parse("sip_respond", serde_json::json!({"status":200})).is_err());
        assert!(parse("sip_respond", serde_json::json!({"method":"ACK"})).is_err());
        assert!(parse("sip_respond", serde_json::json!({"code":180})).is_err());
    }

    #[test]
    fn bad_attributes_say_which_and_why() {
        let cases = [
            ("loss", serde_json::json!({"probability": 1.5})),
            ("loss", serde_json::json!({"probability": "half"})),
            ("sip_drop", serde_json::json!({"status": 99})),
            ("sip_drop", serde_json::json!({"header": "Via"})),
            ("sip_drop", serde_json::json!({"header": {"name": "Via"}})),
            ("sip_drop", serde_json::json!({"method": 5})),
        ];
        for (type_name, attributes) in cases {
            let err = parse(type_name, attributes.clone()).unwrap_err();
            assert!(
                matches!(&err, ApiError::BadRequestBody(text) if text.contains("attribute")),
                "{type_name} {attributes}: {err}"
            );
        }
    }

    #[test]
    fn protocols_split_stream_and_datagram_types() {
        let loss = parse("loss", serde_json::json!({})).unwrap();
        let slicer = parse("slicer", serde_json::json!({})).unwrap();
        let sip = parse("sip_hold", serde_json::json!({})).unwrap();
        assert!(loss.supports(Protocol::Udp) && !loss.supports(Protocol::Tcp));
        assert!(slicer.supports(Protocol::Tcp) && !slicer.supports(Protocol::Udp));
        assert!(sip.supports(Protocol::Tcp) && sip.supports(Protocol::Udp));
    }
}
