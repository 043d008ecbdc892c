//! Lenient serde helpers for Celery's loosely typed JSON.
//!
//! Celery sends the same field with different JSON types depending on version
//! and code path (`utcoffset` is an int on old releases and a float on 5.7,
//! `stats.clock` is a string while the event `clock` is an int, a `signum` can
//! be null). These deserializers accept a number, a numeric string or null and
//! never fail on a type mismatch: a value they cannot read becomes `None`, so
//! one odd field never costs the whole event.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// `Option<f64>` from a number, a numeric string, or anything else (-> `None`).
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(number_of(&value).filter(|v| v.is_finite()))
}

/// `Option<i64>` from a number, a numeric string, or anything else (-> `None`).
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match &value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        other => number_of(other).map(|f| f as i64),
    })
}

/// `Option<u64>` from a non-negative number or numeric string.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(opt_i64(d)?.and_then(|v| u64::try_from(v).ok()))
}

/// `Option<bool>` from a bool, 0/1, or "true"/"false".
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::Bool(b) => Some(b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

/// `Option<String>` from a string; numbers are rendered as text, null and
/// containers become `None`. Used for ids and reprs that must stay text.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// `f64` that defaults to 0.0 when the value is missing or unreadable.
pub fn f64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(opt_f64(d)?.unwrap_or(0.0))
}

/// `u64` that defaults to 0 when the value is missing or unreadable.
pub fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(opt_u64(d)?.unwrap_or(0))
}

/// A load average: a list of up to three numbers.
pub fn opt_loadavg<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::Array(items) => Some(items.iter().filter_map(number_of).take(3).collect()),
        _ => None,
    })
}
