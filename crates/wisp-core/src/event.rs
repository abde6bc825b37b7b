//! Events: CloudEvents 1.0 as Wisp accepts them (HTTP binary and structured
//! mode) and delivers them (binary mode, as `POST /`), and the records of
//! the durable queue: deliveries, dead letters, triggers and topics.

use crate::ids::{DeliveryId, FunctionName, Namespace, TopicName, TriggerName};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SPEC_VERSION: &str = "1.0";
/// Media type of a structured-mode CloudEvent.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Media type of a batch of structured-mode CloudEvents.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Event types Wisp itself emits.
pub mod types {
    /// An async invocation (`wisp invoke --async`).
    pub const INVOKE: &str = "dev.wisp.invoke";
    /// A cron trigger fired.
    pub const CRON: &str = "dev.wisp.cron.tick";
    /// Sent to an `on_success` destination.
    pub const SUCCESS: &str = "dev.wisp.invocation.success";
    /// Sent to an `on_failure` destination.
    pub const FAILURE: &str = "dev.wisp.invocation.failure";
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    #[error("CloudEvent attribute {0:?} is missing (binary mode: send the ce-{0} header)")]
    Missing(&'static str),
    #[error("CloudEvent attribute {name:?} is invalid: {why}")]
    Invalid { name: String, why: String },
    #[error("specversion {0:?} is not supported: Wisp accepts CloudEvents 1.0")]
    SpecVersion(String),
    #[error("structured CloudEvent is not valid JSON: {0}")]
    Json(String),
}

/// One CloudEvent. `data` holds the payload bytes as they will be
/// delivered (the HTTP body in binary mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub specversion: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Extension attributes (lowercase names), as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
    #[serde(skip)]
    pub data: Bytes,
}

const KNOWN: [&str; 8] = [
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
];

/// Extension names: lowercase letters and digits, at most 20 characters
/// (CloudEvents 1.0, "Attribute Naming Convention").
fn valid_extension_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 20
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A time attribute must be RFC 3339 (`2026-11-23T10:00:00Z`).
fn valid_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .iter()
            .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
        && (t.ends_with('Z') || t.ends_with('z') || t[19..].contains(['+', '-']))
}

impl CloudEvent {
    /// A new event with the required attributes.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            specversion: SPEC_VERSION.into(),
            time: None,
            subject: None,
            datacontenttype: None,
            dataschema: None,
            extensions: BTreeMap::new(),
            data: Bytes::new(),
        }
    }

    /// Checks the required attributes and the forms of the optional ones.
    pub fn validate(&self) -> Result<(), EventError> {
        if self.specversion != SPEC_VERSION {
            return Err(EventError::SpecVersion(self.specversion.clone()));
        }
        for (name, v) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            if v.is_empty() {
                return Err(EventError::Missing(name));
            }
        }
        if let Some(t) = &self.time
            && !valid_time(t)
        {
            return Err(EventError::Invalid {
                name: "time".into(),
                why: format!("{t:?} is not an RFC 3339 timestamp like 2026-11-23T10:00:00Z"),
            });
        }
        for k in self.extensions.keys() {
            if !valid_extension_name(k) || KNOWN.contains(&k.as_str()) {
                return Err(EventError::Invalid {
                    name: k.clone(),
                    why: "extension names are 1-20 lowercase letters and digits".into(),
                });
            }
        }
        Ok(())
    }

    /// Reads a binary-mode event: attributes in `ce-*` headers, the body is
    /// the data.
    pub fn from_binary(headers: &http::HeaderMap, body: Bytes) -> Result<Self, EventError> {
        let get = |name: &'static str| -> Result<Option<String>, EventError> {
            match headers.get(format!("ce-{name}")) {
                None => Ok(None),
                Some(v) => {
                    v.to_str()
                        .map(|s| Some(s.to_string()))
                        .map_err(|_| EventError::Invalid {
                            name: name.into(),
                            why: "the header is not visible ASCII".into(),
                        })
                }
            }
        };
        let required = |name: &'static str| get(name)?.ok_or(EventError::Missing(name));
        let specversion = required("specversion")?;
        let mut ev = CloudEvent {
            id: required("id")?,
            source: required("source")?,
            ty: required("type")?,
            specversion,
            time: get("time")?,
            subject: get("subject")?,
            datacontenttype: headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            dataschema: get("dataschema")?,
            extensions: BTreeMap::new(),
            data: body,
        };
        for (k, v) in headers {
            if let Some(name) = k.as_str().strip_prefix("ce-")
                && !KNOWN.contains(&name)
            {
                let v = v.to_str().map_err(|_| EventError::Invalid {
                    name: name.into(),
                    why: "the header is not visible ASCII".into(),
                })?;
                ev.extensions.insert(name.to_string(), v.to_string());
            }
        }
        ev.validate()?;
        Ok(ev)
    }

    /// Reads a structured-mode event: one JSON object holding the
    /// attributes and `data` (JSON) or `data_base64` (bytes).
    pub fn from_structured(body: &[u8]) -> Result<Self, EventError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
        Self::from_json(v)
    }

    /// Reads a batch: a JSON array of structured-mode events.
    pub fn from_batch(body: &[u8]) -> Result<Vec<Self>, EventError> {
        let v: Vec<serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
        v.into_iter().map(Self::from_json).collect()
    }

    fn from_json(v: serde_json::Value) -> Result<Self, EventError> {
        let serde_json::Value::Object(map) = v else {
            return Err(EventError::Json("expected a JSON object".into()));
        };
        let mut ev = CloudEvent::new("", "", "");
        ev.specversion = String::new();
        let mut data = None;
        for (k, v) in map {
            let as_string = |v: serde_json::Value| -> Result<String, EventError> {
                match v {
                    serde_json::Value::String(s) => Ok(s),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    serde_json::Value::Bool(b) => Ok(b.to_string()),
                    other => Err(EventError::Invalid {
                        name: k.clone(),
                        why: format!("expected a string, got {other}"),
                    }),
                }
            };
            match k.as_str() {
                "data" => data = Some(v),
                "data_base64" => {
                    let s = as_string(v)?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s.as_bytes())
                        .map_err(|e| EventError::Invalid {
                            name: "data_base64".into(),
                            why: e.to_string(),
                        })?;
                    ev.data = bytes.into();
                }
                "id" => ev.id = as_string(v)?,
                "source" => ev.source = as_string(v)?,
                "type" => ev.ty = as_string(v)?,
                "specversion" => ev.specversion = as_string(v)?,
                "time" => ev.time = Some(as_string(v)?),
                "subject" => ev.subject = Some(as_string(v)?),
                "datacontenttype" => ev.datacontenttype = Some(as_string(v)?),
                "dataschema" => ev.dataschema = Some(as_string(v)?),
                _ => {
                    let s = as_string(v)?;
                    ev.extensions.insert(k, s);
                }
            }
        }
        if ev.specversion.is_empty() {
            return Err(EventError::Missing("specversion"));
        }
        if let Some(d) = data {
            ev.data = match d {
                // A JSON string with a non-JSON content type is the text itself.
                serde_json::Value::String(s)
                    if ev
                        .datacontenttype
                        .as_deref()
                        .is_some_and(|c| !c.contains("json")) =>
                {
                    Bytes::from(s.into_bytes())
                }
                other => {
                    if ev.datacontenttype.is_none() {
                        ev.datacontenttype = Some("application/json".into());
                    }
                    Bytes::from(other.to_string().into_bytes())
                }
            };
        }
        ev.validate()?;
        Ok(ev)
    }

    /// The headers of binary mode, `content-type` included when known.
    pub fn binary_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            ("ce-specversion".to_string(), self.specversion.clone()),
            ("ce-id".to_string(), self.id.clone()),
            ("ce-source".to_string(), self.source.clone()),
            ("ce-type".to_string(), self.ty.clone()),
        ];
        for (name, v) in [
            ("ce-time", &self.time),
            ("ce-subject", &self.subject),
            ("ce-dataschema", &self.dataschema),
            ("content-type", &self.datacontenttype),
        ] {
            if let Some(v) = v {
                h.push((name.to_string(), v.clone()));
            }
        }
        for (k, v) in &self.extensions {
            h.push((format!("ce-{k}"), v.clone()));
        }
        h
    }

    /// The attributes as JSON, without the data (how the queue stores them).
    pub fn attributes_json(&self) -> String {
        // Serializing a struct of strings and a string map cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_attributes_json(s: &str, data: Bytes) -> Result<Self, EventError> {
        let mut ev: CloudEvent =
            serde_json::from_str(s).map_err(|e| EventError::Json(e.to_string()))?;
        ev.data = data;
        Ok(ev)
    }
}

/// RFC 3339 UTC timestamp with milliseconds for `ms` since the epoch.
pub use crate::time::rfc3339_ms;

/// Where a queued delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `wisp invoke --async` / `POST /v1/functions/{name}/invoke?async=true`.
    Async,
    /// A cron trigger.
    Cron,
    /// A topic subscription.
    Topic,
    /// An on-success / on-failure destination.
    Destination,
    /// A storage trigger (object store).
    Storage,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Async => "async",
            Origin::Cron => "cron",
            Origin::Topic => "topic",
            Origin::Destination => "destination",
            Origin::Storage => "storage",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Origin::Async,
            Origin::Cron,
            Origin::Topic,
            Origin::Destination,
            Origin::Storage,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One function's copy of an event in the durable queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub namespace: Namespace,
    pub function: FunctionName,
    pub origin: Origin,
    /// The trigger or topic it came through, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub event: CloudEvent,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was accepted (ms since epoch).
    pub created_ms: i64,
    /// Not to be run before this time (ms since epoch).
    pub available_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Delivery {
    /// A new delivery of `event` to `function`, to run now.
    pub fn new(
        namespace: Namespace,
        function: FunctionName,
        origin: Origin,
        via: Option<String>,
        event: CloudEvent,
    ) -> Self {
        let now = crate::time::now_ms();
        Self {
            id: DeliveryId::generate(),
            namespace,
            function,
            origin,
            via,
            event,
            attempts: 0,
            created_ms: now,
            available_ms: now,
            last_error: None,
        }
    }

    /// Bytes it holds in memory, for the queue's size bound.
    pub fn size(&self) -> usize {
        self.event.data.len() + self.event.id.len() + self.event.source.len() + 256
    }
}

/// A delivery that exhausted its attempts (or its age), kept for
/// inspection and replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub failed_ms: i64,
}

/// What a cron trigger does with ticks missed while the node was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Fire once, for the latest missed tick.
    #[default]
    Once,
    /// Do not fire for missed ticks.
    Skip,
}

/// What a trigger listens to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerKind {
    /// A six-field cron schedule (seconds first) in an IANA time zone.
    Cron {
        schedule: String,
        #[serde(default = "utc")]
        timezone: String,
        #[serde(default)]
        missed: Missed,
    },
    /// Every event published to a topic.
    Topic { topic: TopicName },
    /// Objects created (written, copied, completed multipart uploads)
    /// and/or deleted in a bucket, filtered by key prefix and suffix.
    Object {
        bucket: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        suffix: String,
        #[serde(default = "object_events")]
        events: Vec<ObjectEvent>,
    },
    /// Keys set (set, increment, compare-and-swap) and/or deleted in a
    /// key-value bucket, filtered by key prefix.
    Kv {
        bucket: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
        #[serde(default = "kv_events")]
        events: Vec<KvEvent>,
    },
}

fn kv_events() -> Vec<KvEvent> {
    vec![KvEvent::Set, KvEvent::Deleted]
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvEvent {
    Set,
    Deleted,
}

impl KvEvent {
    /// The CloudEvent type Wisp sends.
    pub fn ce_type(self) -> &'static str {
        match self {
            KvEvent::Set => "dev.wisp.kv.set",
            KvEvent::Deleted => "dev.wisp.kv.deleted",
        }
    }
}

fn object_events() -> Vec<ObjectEvent> {
    vec![ObjectEvent::Created, ObjectEvent::Deleted]
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectEvent {
    Created,
    Deleted,
}

impl ObjectEvent {
    /// The CloudEvent type Wisp sends.
    pub fn ce_type(self) -> &'static str {
        match self {
            ObjectEvent::Created => "dev.wisp.object.created",
            ObjectEvent::Deleted => "dev.wisp.object.deleted",
        }
    }
}

fn utc() -> String {
    "UTC".into()
}

/// A trigger: a source of events bound to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub namespace: Namespace,
    pub name: TriggerName,
    pub function: FunctionName,
    #[serde(flatten)]
    pub kind: TriggerKind,
    pub created_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mode_round_trip() {
        let mut ev = CloudEvent::new("e1", "/shop", "com.shop.order.created");
        ev.time = Some("2026-11-23T10:00:00Z".into());
        ev.subject = Some("order/7".into());
        ev.datacontenttype = Some("application/json".into());
        ev.extensions.insert("traceparent".into(), "00-ab".into());
        ev.data = Bytes::from_static(br#"{"id":7}"#);
        let mut headers = http::HeaderMap::new();
        for (k, v) in ev.binary_headers() {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let back = CloudEvent::from_binary(&headers, ev.data.clone()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn missing_attributes_are_named() {
        let mut headers = http::HeaderMap::new();
        headers.insert("ce-specversion", "1.0".parse().unwrap());
        headers.insert("ce-id", "1".parse().unwrap());
        headers.insert("ce-source", "/x".parse().unwrap());
        let e = CloudEvent::from_binary(&headers, Bytes::new()).unwrap_err();
        assert_eq!(e, EventError::Missing("type"));
        assert!(e.to_string().contains("ce-type"));
        headers.insert("ce-type", "t".parse().unwrap());
        headers.insert("ce-specversion", "0.3".parse().unwrap());
        assert!(matches!(
            CloudEvent::from_binary(&headers, Bytes::new()),
            Err(EventError::SpecVersion(_))
        ));
    }

    #[test]
    fn structured_mode_json_and_base64() {
        let ev = CloudEvent::from_structured(
            br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"x":1},"comexampleext":"v"}"#,
        )
        .unwrap();
        assert_eq!(&ev.data[..], br#"{"x":1}"#);
        assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ev.extensions["comexampleext"], "v");
        let ev = CloudEvent::from_structured(
            br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","data_base64":"aGk="}"#,
        )
        .unwrap();
        assert_eq!(&ev.data[..], b"hi");
        assert!(matches!(
            CloudEvent::from_structured(b"{not json"),
            Err(EventError::Json(_))
        ));
        let e = CloudEvent::from_structured(
            br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","time":"yesterday"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("time"), "{e}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert!(valid_time(&rfc3339_ms(1_795_000_000_123)));
        assert!(valid_time("2026-11-23T10:00:00+01:00"));
        assert!(!valid_time("2026-11-23"));
    }
}
