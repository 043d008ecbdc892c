//! The neutral message and the Redis kombu envelope codec.
//!
//! A [`Message`] is what both brokers carry: payload bytes plus Celery's
//! headers and the AMQP-style basic properties. On Redis it travels inside
//! the kombu JSON envelope ([`decode_redis_envelope`] /
//! [`encode_redis_envelope`], README section 1b); on AMQP the adapter maps
//! lapin's properties and field tables onto it, using [`AmqpField`] for the
//! header value typing rules.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::DecodeError;
use super::json::{parse_as, parse_value, to_python_json};

/// Default for [`Limits::max_message_bytes`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The content type Celery uses for every payload we decode.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The content encoding of JSON payloads.
pub const CONTENT_ENCODING_UTF8: &str = "utf-8";

/// Standard base64, accepting padded and unpadded input (kombu pads; other
/// producers may not), always writing padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Size limits applied before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest raw message (the Redis envelope, or an AMQP body) accepted, in
    /// bytes. Larger ones fail with [`DecodeError::TooLarge`] without being
    /// parsed. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

impl Limits {
    /// Fail with [`DecodeError::TooLarge`] when `size` exceeds the limit.
    pub fn check(&self, size: usize) -> Result<(), DecodeError> {
        if size > self.max_message_bytes {
            Err(DecodeError::TooLarge {
                size,
                limit: self.max_message_bytes,
            })
        } else {
            Ok(())
        }
    }
}

/// Where a message was published: `delivery_info` of the kombu envelope,
/// or the AMQP exchange and routing key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryInfo {
    /// Exchange name (`""` for tasks on the default exchange).
    pub exchange: String,
    /// Routing key (the queue name for tasks).
    pub routing_key: String,
    /// `true` on Redis messages restored from `unacked`.
    pub redelivered: Option<bool>,
    /// Any other `delivery_info` entries, preserved.
    pub extra: Map<String, Value>,
}

/// Basic properties, named as in AMQP and in the kombu envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// The task id on task messages.
    pub correlation_id: Option<String>,
    /// The publisher's oid (only the `rpc://` backend uses it).
    pub reply_to: Option<String>,
    /// 2 (persistent) for tasks and control requests, 1 for events/replies.
    pub delivery_mode: Option<u8>,
    /// Message priority (0..=255 on the wire; Celery uses 0..=9).
    pub priority: Option<u8>,
    /// Exchange and routing key.
    pub delivery_info: DeliveryInfo,
    /// Redis: the ack key (a uuid). AMQP deliveries have their own integer tag.
    pub delivery_tag: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP `expiration`).
    pub expiration: Option<String>,
    /// Other properties (`origin` on worker-republished retries, ...).
    /// `body_encoding` is consumed by the envelope codec and not kept here.
    pub extra: Map<String, Value>,
}

/// One message as both brokers carry it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The payload bytes (JSON text for everything Celery sends; base64
    /// already removed on Redis).
    pub body: Vec<u8>,
    /// `application/json` for everything we decode.
    pub content_type: String,
    /// `utf-8`.
    pub content_encoding: String,
    /// Celery's application headers (`task`, `id`, `ticket`, `hostname`, ...).
    pub headers: Map<String, Value>,
    /// Basic properties.
    pub properties: Properties,
}

impl Message {
    /// A JSON message with `body` and empty headers and properties.
    pub fn json(body: Vec<u8>) -> Self {
        Self {
            body,
            content_type: CONTENT_TYPE_JSON.to_owned(),
            content_encoding: CONTENT_ENCODING_UTF8.to_owned(),
            headers: Map::new(),
            properties: Properties::default(),
        }
    }

    /// Check that the payload is JSON in UTF-8 (see [`check_content_type`]).
    pub fn ensure_json(&self) -> Result<(), DecodeError> {
        check_content_type(&self.content_type)?;
        check_content_encoding(&self.content_encoding)
    }

    /// The payload parsed as JSON, after [`Message::ensure_json`].
    pub fn json_body(&self) -> Result<Value, DecodeError> {
        self.ensure_json()?;
        parse_value("body", &self.body)
    }

    /// A header as a string, when present and a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// Accept `application/json` (any case, parameters such as `; charset=utf-8`
/// allowed) and an empty content type (treated as JSON and then parsed as
/// such). Everything else, notably `application/x-python-serialize` (pickle),
/// `application/x-msgpack` and `application/x-yaml`, is
/// [`DecodeError::UnsupportedContentType`]: reported, never executed.
pub fn check_content_type(content_type: &str) -> Result<(), DecodeError> {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    if base.is_empty()
        || base.eq_ignore_ascii_case(CONTENT_TYPE_JSON)
        || base.eq_ignore_ascii_case("text/json")
    {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedContentType(content_type.to_owned()))
    }
}

/// Accept `utf-8` / `utf8` (any case) and an empty encoding; anything else is
/// [`DecodeError::UnsupportedEncoding`].
pub fn check_content_encoding(content_encoding: &str) -> Result<(), DecodeError> {
    let e = content_encoding.trim();
    if e.is_empty() || e.eq_ignore_ascii_case("utf-8") || e.eq_ignore_ascii_case("utf8") {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedEncoding(
            content_encoding.to_owned(),
        ))
    }
}

/// The kombu envelope as read: borrowed where possible, lenient in shape.
/// Duplicate keys: the last one wins, as in Python's `json` (serde's derive
/// would reject them; found by the fuzzer comparing the two decoders).
struct RawEnvelope<'a> {
    body: Option<Text<'a>>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    headers: Option<Map<String, Value>>,
    properties: Option<Map<String, Value>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEnvelope<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawEnvelope<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kombu envelope object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = RawEnvelope {
                    body: None,
                    content_type: None,
                    content_encoding: None,
                    headers: None,
                    properties: None,
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match &*key.0 {
                        "body" => out.body = map.next_value()?,
                        "content-type" => out.content_type = map.next_value()?,
                        "content-encoding" => out.content_encoding = map.next_value()?,
                        "headers" => out.headers = map.next_value()?,
                        "properties" => out.properties = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Decode one Redis value (a queue list item, a PUBLISH payload, a reply) with
/// the default [`Limits`]. See [`decode_redis_envelope_with`].
pub fn decode_redis_envelope(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_redis_envelope_with(bytes, &Limits::default())
}

/// Decode one Redis kombu envelope (README 1b): check the size, parse the
/// JSON object, base64-decode `body` when `properties.body_encoding` is
/// `base64`, and split the properties. The payload's content type is not
/// judged here (a pickle task can still be listed or purged); the body
/// decoders call [`Message::ensure_json`].
pub fn decode_redis_envelope_with(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    limits.check(bytes.len())?;
    let raw: RawEnvelope<'_> = parse_as("envelope", bytes)?;
    from_raw(raw)
}

fn from_raw(raw: RawEnvelope<'_>) -> Result<Message, DecodeError> {
    let mut props = raw.properties.unwrap_or_default();
    let body_encoding = match props.remove("body_encoding") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => return Err(DecodeError::bad("body_encoding", other.to_string())),
    };
    let body_text = raw.body.ok_or(DecodeError::MissingField("body"))?.0;
    let body = match body_encoding.as_deref() {
        Some("base64") => BASE64
            .decode(body_text.as_bytes())
            .map_err(|e| DecodeError::BadBase64(e.to_string()))?,
        None | Some("") | Some("utf-8") | Some("utf8") => body_text.into_owned().into_bytes(),
        Some(other) => return Err(DecodeError::UnsupportedEncoding(other.to_owned())),
    };
    Ok(Message {
        body,
        content_type: raw.content_type.unwrap_or_default(),
        content_encoding: raw.content_encoding.unwrap_or_default(),
        headers: raw.headers.unwrap_or_default(),
        properties: properties_from_map(props)?,
    })
}

/// A string that borrows from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// Just what the event hot path needs from an envelope; headers and the
/// rest of the properties are skipped without building maps. Duplicate keys:
/// last wins, like [`RawEnvelope`].
struct LeanEnvelope<'a> {
    body: Option<Text<'a>>,
    content_type: Option<Text<'a>>,
    content_encoding: Option<Text<'a>>,
    body_encoding: Option<Text<'a>>,
}

/// `properties`, reduced to `body_encoding`. Like the full decoder (which
/// reads `properties` as a map of any values), earlier duplicates of any type
/// are overwritten; only the last value must be a string or null.
struct LeanProperties<'a>(Option<Text<'a>>);

/// One `body_encoding` value of any JSON type.
enum AnyText<'a> {
    Str(Text<'a>),
    Null,
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for AnyText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = AnyText<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(AnyText::Str(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AnyText::Str(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(AnyText::Str(Text(Cow::Owned(v))))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyText::Null)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(AnyText::Null)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AnyText::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(AnyText::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(AnyText::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(AnyText::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyText::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyText::Other)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LeanProperties<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LeanProperties<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a properties object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut enc = AnyText::Null;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if &*key.0 == "body_encoding" {
                        enc = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                match enc {
                    AnyText::Str(t) => Ok(LeanProperties(Some(t))),
                    AnyText::Null => Ok(LeanProperties(None)),
                    AnyText::Other => Err(serde::de::Error::custom(
                        "properties.body_encoding is not a string",
                    )),
                }
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LeanEnvelope<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = LeanEnvelope<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a kombu envelope object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = LeanEnvelope {
                    body: None,
                    content_type: None,
                    content_encoding: None,
                    body_encoding: None,
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match &*key.0 {
                        "body" => out.body = map.next_value()?,
                        "content-type" => out.content_type = map.next_value()?,
                        "content-encoding" => out.content_encoding = map.next_value()?,
                        "properties" => {
                            out.body_encoding = map
                                .next_value::<Option<LeanProperties<'a>>>()?
                                .and_then(|p| p.0);
                        }
                        // `headers` must still be a JSON value, as in the
                        // full decoder, but nothing is built from it.
                        "headers" => {
                            map.next_value::<Option<IgnoredMap>>()?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Accepts any JSON object (what the full decoder requires of `headers`)
/// without building it.
struct IgnoredMap;

impl<'de> Deserialize<'de> for IgnoredMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IgnoredMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IgnoredMap, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IgnoredMap)
            }
        }
        d.deserialize_map(V)
    }
}

/// The payload of a Redis envelope, checked to be JSON, without building the
/// full [`Message`] (the event stream's hot path). Same checks and errors as
/// [`decode_redis_envelope_with`] followed by [`Message::ensure_json`].
pub fn decode_redis_json_payload(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, DecodeError> {
    limits.check(bytes.len())?;
    let raw: LeanEnvelope<'_> = parse_as("envelope", bytes)?;
    check_content_type(raw.content_type.as_ref().map_or("", |t| &t.0))?;
    check_content_encoding(raw.content_encoding.as_ref().map_or("", |t| &t.0))?;
    let body = raw.body.ok_or(DecodeError::MissingField("body"))?.0;
    let encoding = raw.body_encoding.map(|t| t.0);
    match encoding.as_deref() {
        Some("base64") => BASE64
            .decode(body.as_bytes())
            .map_err(|e| DecodeError::BadBase64(e.to_string())),
        None | Some("") | Some("utf-8") | Some("utf8") => Ok(body.into_owned().into_bytes()),
        Some(other) => Err(DecodeError::UnsupportedEncoding(other.to_owned())),
    }
}

fn opt_string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn opt_u8(v: Option<Value>) -> Option<u8> {
    v.as_ref()
        .and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u8::MAX)) as u8)
}

/// Split a kombu `properties` object (without `body_encoding`) into
/// [`Properties`]. Unknown keys go to `extra`; odd types are tolerated.
pub fn properties_from_map(mut props: Map<String, Value>) -> Result<Properties, DecodeError> {
    let delivery_info = match props.remove("delivery_info") {
        Some(Value::Object(mut di)) => DeliveryInfo {
            exchange: opt_string(di.remove("exchange")).unwrap_or_default(),
            routing_key: opt_string(di.remove("routing_key")).unwrap_or_default(),
            redelivered: di.remove("redelivered").and_then(|v| v.as_bool()),
            extra: di,
        },
        Some(Value::Null) | None => DeliveryInfo::default(),
        Some(other) => return Err(DecodeError::bad("delivery_info", other.to_string())),
    };
    Ok(Properties {
        correlation_id: opt_string(props.remove("correlation_id")),
        reply_to: opt_string(props.remove("reply_to")),
        delivery_mode: opt_u8(props.remove("delivery_mode")),
        priority: opt_u8(props.remove("priority")),
        delivery_info,
        delivery_tag: opt_string(props.remove("delivery_tag")),
        expiration: opt_string(props.remove("expiration")),
        extra: props,
    })
}

const FIXED_PROPERTY_KEYS: [&str; 9] = [
    "correlation_id",
    "reply_to",
    "delivery_mode",
    "expiration",
    "delivery_info",
    "priority",
    "body_encoding",
    "delivery_tag",
    "redelivered",
];

#[derive(Serialize)]
struct OutDeliveryInfo<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    redelivered: Option<bool>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Serialize)]
struct OutProperties<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    delivery_mode: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<&'a str>,
    delivery_info: OutDeliveryInfo<'a>,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: Cow<'a, str>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Serialize)]
struct OutEnvelope<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'a str,
    #[serde(rename = "content-type")]
    content_type: &'a str,
    headers: &'a Map<String, Value>,
    properties: OutProperties<'a>,
}

fn filtered(extra: &Map<String, Value>, fixed: &[&str]) -> Map<String, Value> {
    extra
        .iter()
        .filter(|(k, _)| !fixed.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Encode `msg` as a Redis kombu envelope, the bytes to `LPUSH` or `PUBLISH`.
///
/// The body is base64-encoded with `body_encoding: "base64"`; a fresh uuid4
/// `delivery_tag` is written when the message has none (workers use it as the
/// ack key, so never reuse one); `delivery_mode` defaults to 2 and `priority`
/// to 0; an empty content type/encoding becomes JSON/UTF-8. The output uses
/// Python's separators, like kombu.
pub fn encode_redis_envelope(msg: &Message) -> Vec<u8> {
    let p = &msg.properties;
    let env = OutEnvelope {
        body: BASE64.encode(&msg.body),
        content_encoding: non_empty_or(&msg.content_encoding, CONTENT_ENCODING_UTF8),
        content_type: non_empty_or(&msg.content_type, CONTENT_TYPE_JSON),
        headers: &msg.headers,
        properties: OutProperties {
            correlation_id: p.correlation_id.as_deref(),
            reply_to: p.reply_to.as_deref(),
            delivery_mode: p.delivery_mode.unwrap_or(2),
            expiration: p.expiration.as_deref(),
            delivery_info: OutDeliveryInfo {
                exchange: &p.delivery_info.exchange,
                routing_key: &p.delivery_info.routing_key,
                redelivered: p.delivery_info.redelivered,
                extra: filtered(
                    &p.delivery_info.extra,
                    &["exchange", "routing_key", "redelivered"],
                ),
            },
            priority: p.priority.unwrap_or(0),
            body_encoding: "base64",
            delivery_tag: match &p.delivery_tag {
                Some(t) => Cow::Borrowed(t.as_str()),
                None => Cow::Owned(new_uuid()),
            },
            extra: filtered(&p.extra, &FIXED_PROPERTY_KEYS),
        },
    };
    to_python_json(&env)
}

fn non_empty_or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

/// A fresh lowercase hyphenated uuid4 string.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One value of the Redis `unacked` hash: `[envelope, exchange, routing_key]`
/// (README 6a, `fixtures/redis/unacked-hash-value.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct UnackedEntry {
    /// The message as it was delivered.
    pub message: Message,
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key (the queue to restore it to).
    pub routing_key: String,
}

/// Decode one `unacked` hash value.
pub fn decode_unacked_value(bytes: &[u8], limits: &Limits) -> Result<UnackedEntry, DecodeError> {
    limits.check(bytes.len())?;
    let (raw, exchange, routing_key): (RawEnvelope<'_>, Option<String>, Option<String>) =
        parse_as("unacked value", bytes)?;
    Ok(UnackedEntry {
        message: from_raw(raw)?,
        exchange: exchange.unwrap_or_default(),
        routing_key: routing_key.unwrap_or_default(),
    })
}

/// An AMQP 0-9-1 field-table value, typed as Celery (py-amqp) types it.
///
/// The rules, checked against every `header_types` entry in
/// `fixtures/amqp/*.json`: JSON `null` is void (`V`), a bool is `t`, a string
/// is a long string (`S`), an integer in `i32` range is `I`, any other integer
/// is `l` (i64), a float is `d`, an array is `A` and an object a table (`F`).
/// So `retries`, `group_index` and `clock` go out as `I`, the pidbox
/// `expires` header as `d`, `timelimit` as `A[V, V]` or `A[I, I]`. Workers
/// read any integer width, so reading accepts all of them.
#[derive(Debug, Clone, PartialEq)]
pub enum AmqpField {
    /// `V`.
    Void,
    /// `t`.
    Bool(bool),
    /// `I`: 32-bit signed.
    Int(i32),
    /// `l`: 64-bit signed.
    Long(i64),
    /// `d`: double.
    Double(f64),
    /// `S`: long string.
    LongString(String),
    /// `A`.
    Array(Vec<AmqpField>),
    /// `F`: a nested table, in order.
    Table(Vec<(String, AmqpField)>),
}

impl AmqpField {
    /// Type a JSON value by the rules above. Integers beyond `i64` (only
    /// possible for large unsigned values) become doubles.
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::Null => Self::Void,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    match i32::try_from(i) {
                        Ok(small) => Self::Int(small),
                        Err(_) => Self::Long(i),
                    }
                } else {
                    Self::Double(n.as_f64().unwrap_or(0.0))
                }
            }
            Value::String(s) => Self::LongString(s.clone()),
            Value::Array(items) => Self::Array(items.iter().map(Self::from_json).collect()),
            Value::Object(map) => Self::Table(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The JSON value (non-finite doubles become `null`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Void => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => Value::from(*i),
            Self::Long(i) => Value::from(*i),
            Self::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
            Self::LongString(s) => Value::String(s.clone()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            Self::Table(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The AMQP type letter (`S`, `I`, `l`, `d`, `t`, `V`, `A`, `F`), as in the
    /// fixtures' `header_types`.
    pub fn type_letter(&self) -> char {
        match self {
            Self::Void => 'V',
            Self::Bool(_) => 't',
            Self::Int(_) => 'I',
            Self::Long(_) => 'l',
            Self::Double(_) => 'd',
            Self::LongString(_) => 'S',
            Self::Array(_) => 'A',
            Self::Table(_) => 'F',
        }
    }
}

/// Type every header for an AMQP field table, in order.
pub fn amqp_headers(headers: &Map<String, Value>) -> Vec<(String, AmqpField)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), AmqpField::from_json(v)))
        .collect()
}

/// Rebuild the JSON headers from AMQP field-table entries.
pub fn headers_from_amqp<I>(fields: I) -> Map<String, Value>
where
    I: IntoIterator<Item = (String, AmqpField)>,
{
    fields.into_iter().map(|(k, v)| (k, v.to_json())).collect()
}
