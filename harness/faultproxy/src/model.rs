//! The API's nouns as Toxiproxy 2.x writes them in JSON: a *proxy* (name, listen, upstream, enabled,
//! toxics) and a *toxic* (name, type, stream, toxicity, attributes).
//!
//! Inputs are parsed from `serde_json::Value` by hand rather than derived, because Toxiproxy answers
//! a malformed body with its own error texts and statuses, and fills defaults (toxic name
//! `<type>_<stream>`, stream downstream, toxicity 1.0) that a derive would not express.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
pub use crate::kind::ToxicKind;

/// Which way a toxic acts: upstream is client → server, downstream is server → client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }

    fn parse(text: &str) -> Result<Stream, ApiError> {
        match text {
            "upstream" => Ok(Stream::Upstream),
            "downstream" => Ok(Stream::Downstream),
            _ => Err(ApiError::InvalidStream),
        }
    }
}

/// What a proxy carries: TCP connections (Toxiproxy's only kind) or UDP datagrams (an extension).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    fn parse(text: &str) -> Result<Protocol, ApiError> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(ApiError::BadRequestBody(format!(
                "protocol must be tcp or udp, got {other:?}"
            ))),
        }
    }
}

/// One toxic as configured on a proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct Toxic {
    pub name: String,
    pub stream: Stream,
    /// Probability in [0, 1] that the toxic acts on a given connection.
    pub toxicity: f32,
    pub kind: ToxicKind,
    /// How many messages a SIP toxic has picked, over every connection and flow, since it was set (its copies in
    /// each connection share it).
    pub picked: Picked,
}

/// A count shared by a toxic's copies; equal whatever it holds (it is a reading, not configuration).
#[derive(Clone, Debug, Default)]
pub struct Picked(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Picked {
    pub fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl PartialEq for Picked {
    fn eq(&self, _: &Picked) -> bool {
        true
    }
}

/// A toxic as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToxicView {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub stream: Stream,
    pub toxicity: f32,
    pub attributes: Map<String, Value>,
    /// SIP toxics only (an extension): how many messages it has picked since it was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picked: Option<u64>,
}

impl From<&Toxic> for ToxicView {
    fn from(toxic: &Toxic) -> ToxicView {
        ToxicView {
            name: toxic.name.clone(),
            type_name: toxic.kind.type_name().to_owned(),
            stream: toxic.stream,
            toxicity: toxic.toxicity,
            attributes: toxic.kind.attributes(),
            picked: matches!(toxic.kind, ToxicKind::Sip { .. }).then(|| toxic.picked.get()),
        }
    }
}

/// A proxy as the API shows it; `listen` is the bound address once the proxy has listened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<ToxicView>,
    /// An extension of Toxiproxy's shape; clients that do not know it ignore it.
    pub protocol: Protocol,
}

/// A proxy to create: the body of `POST /proxies`, one element of `POST /populate`, one entry of
/// the `--config` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub name: String,
    /// Where the proxy listens; port 0 picks a free port, which the API then reports.
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    /// `"tcp"` when absent, so Toxiproxy's clients create what they always did.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Toxiproxy binds all interfaces on a free port when `listen` is missing.
const LISTEN_DEFAULT: &str = "0.0.0.0:0";

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequestBody("expected a JSON object".into())),
        Err(err) => Err(ApiError::BadRequestBody(err.to_string())),
    }
}

fn string_field(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(ApiError::BadRequestBody(format!(
            "field {key} must be a string, got {other}"
        ))),
    }
}

fn bool_field(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(ApiError::BadRequestBody(format!(
            "field {key} must be a boolean, got {other}"
        ))),
    }
}

fn toxicity_field(map: &Map<String, Value>) -> Result<Option<f32>, ApiError> {
    match map.get("toxicity") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Ok(Some(p as f32)),
            _ => Err(ApiError::BadRequestBody(format!(
                "toxicity must be a number in [0, 1], got {value}"
            ))),
        },
    }
}

fn attributes_field(map: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, ApiError> {
    match map.get("attributes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(attributes)) => Ok(Some(attributes)),
        Some(other) => Err(ApiError::BadRequestBody(format!(
            "attributes must be an object, got {other}"
        ))),
    }
}

impl ProxyConfig {
    fn from_map(map: &Map<String, Value>) -> Result<ProxyConfig, ApiError> {
        let name = string_field(map, "name")?.filter(|name| !name.is_empty());
        let upstream = string_field(map, "upstream")?.filter(|up| !up.is_empty());
        let (Some(name), Some(upstream)) = (name, upstream) else {
            return Err(ApiError::MissingField);
        };
        Ok(ProxyConfig {
            name,
            listen: string_field(map, "listen")?
                .filter(|listen| !listen.is_empty())
                .unwrap_or_else(|| LISTEN_DEFAULT.to_owned()),
            upstream,
            enabled: bool_field(map, "enabled")?.unwrap_or(true),
            protocol: match string_field(map, "protocol")? {
                None => Protocol::Tcp,
                Some(text) => Protocol::parse(&text)?,
            },
        })
    }

    /// Parses the body of `POST /proxies`.
    pub fn parse(body: &[u8]) -> Result<ProxyConfig, ApiError> {
        ProxyConfig::from_map(&object(body)?)
    }

    /// Parses the body of `POST /populate` or a `--config` file: a JSON array of proxies.
    pub fn parse_list(body: &[u8]) -> Result<Vec<ProxyConfig>, ApiError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => ProxyConfig::from_map(map),
                    _ => Err(ApiError::BadRequestBody(
                        "expected an array of objects".into(),
                    )),
                })
                .collect(),
            Ok(_) => Err(ApiError::BadRequestBody("expected a JSON array".into())),
            Err(err) => Err(ApiError::BadRequestBody(err.to_string())),
        }
    }
}

/// The body of `POST /proxies/{name}`: every field optional, absent ones unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyPatch {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
}

impl ProxyPatch {
    pub fn parse(body: &[u8]) -> Result<ProxyPatch, ApiError> {
        let map = object(body)?;
        Ok(ProxyPatch {
            listen: string_field(&map, "listen")?.filter(|listen| !listen.is_empty()),
            upstream: string_field(&map, "upstream")?.filter(|up| !up.is_empty()),
            enabled: bool_field(&map, "enabled")?,
        })
    }
}

impl Toxic {
    /// Parses the body of `POST /proxies/{name}/toxics`.
    pub fn parse_new(body: &[u8]) -> Result<Toxic, ApiError> {
        let map = object(body)?;
        let type_name = string_field(&map, "type")?.ok_or(ApiError::InvalidToxicType)?;
        let stream = match string_field(&map, "stream")? {
            None => Stream::Downstream,
            Some(text) if text.is_empty() => Stream::Downstream,
            Some(text) => Stream::parse(&text)?,
        };
        let kind = ToxicKind::parse(&type_name, attributes_field(&map)?, None)?;
        let name = string_field(&map, "name")?
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("{type_name}_{}", stream.as_str()));
        Ok(Toxic {
            name,
            stream,
            toxicity: toxicity_field(&map)?.unwrap_or(1.0),
            kind,
            picked: Picked::default(),
        })
    }

    /// Applies the body of `POST /proxies/{name}/toxics/{toxic}`: toxicity and attributes change,
    /// absent attributes keep their values; name, type and stream stay.
    pub fn parse_update(&self, body: &[u8]) -> Result<Toxic, ApiError> {
        let map = object(body)?;
        let kind = ToxicKind::parse(
            self.kind.type_name(),
            attributes_field(&map)?,
            Some(&self.kind),
        )?;
        Ok(Toxic {
            name: self.name.clone(),
            stream: self.stream,
            toxicity: toxicity_field(&map)?.unwrap_or(self.toxicity),
            kind,
            picked: self.picked.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxic_defaults_follow_toxiproxy() {
        let toxic = Toxic::parse_new(br#"{"type":"latency","attributes":{"latency":5}}"#).unwrap();
        assert_eq!(toxic.name, "latency_downstream");
        assert_eq!(toxic.stream, Stream::Downstream);
        assert_eq!(toxic.toxicity, 1.0);
        assert_eq!(
            toxic.kind,
            ToxicKind::Latency {
                latency_ms: 5,
                jitter_ms: 0
            }
        );
        let view = serde_json::to_value(ToxicView::from(&toxic)).unwrap();
        assert_eq!(
            view,
            serde_json::json!({"name":"latency_downstream","type":"latency","stream":"downstream",
                "toxicity":1.0,"attributes":{"latency":5,"jitter":0}})
        );
    }

    #[test]
    fn toxic_update_keeps_absent_attributes() {
        let toxic = Toxic::parse_new(
            br#"{"type":"slicer","stream":"upstream","attributes":{"average_size":10,"delay":7}}"#,
        )
        .unwrap();
        let updated = toxic
            .parse_update(br#"{"toxicity":0.5,"attributes":{"average_size":20}}"#)
            .unwrap();
        assert_eq!(updated.toxicity, 0.5);
        assert_eq!(
            updated.kind,
            ToxicKind::Slicer {
                average_size_bytes: 20,
                size_variation_bytes: 0,
                delay_us: 7
            }
        );
    }

    #[test]
    fn bad_toxics_are_rejected_with_toxiproxy_errors() {
        assert!(matches!(
            Toxic::parse_new(br#"{"type":"nope"}"#),
            Err(ApiError::InvalidToxicType)
        ));
        assert!(matches!(
            Toxic::parse_new(br#"{"type":"latency","stream":"sideways"}"#),
            Err(ApiError::InvalidStream)
        ));
        assert!(matches!(
            Toxic::parse_new(br#"{"type":"latency","attributes":{"latency":-1}}"#),
            Err(ApiError::BadRequestBody(_))
        ));
        assert!(matches!(
            Toxic::parse_new(br#"{"type":"latency","toxicity":2}"#),
            Err(ApiError::BadRequestBody(_))
        ));
        assert!(matches!(
            Toxic::parse_new(b"not json"),
            Err(ApiError::BadRequestBody(_))
        ));
    }

    #[test]
    fn proxy_protocol_defaults_to_tcp_and_takes_udp() {
        let tcp = ProxyConfig::parse(br#"{"name":"a","upstream":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(tcp.protocol, Protocol::Tcp);
        let udp = ProxyConfig::parse(br#"{"name":"a","upstream":"127.0.0.1:1","protocol":"udp"}"#)
            .unwrap();
        assert_eq!(udp.protocol, Protocol::Udp);
        assert!(matches!(
            ProxyConfig::parse(br#"{"name":"a","upstream":"127.0.0.1:1","protocol":"UDP"}"#),
            Err(ApiError::BadRequestBody(_))
        ));
    }

    #[test]
    fn proxy_needs_name_and_upstream() {
        assert!(matches!(
            ProxyConfig::parse(br#"{"name":"a"}"#),
            Err(ApiError::MissingField)
        ));
        let config = ProxyConfig::parse(br#"{"name":"a","upstream":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(config.listen, LISTEN_DEFAULT);
        assert!(config.enabled);
    }
}
