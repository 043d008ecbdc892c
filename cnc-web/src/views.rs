//! Request parsing shared by pages and the API, and small formatting
//! helpers for view models.

use cnc_broker::protocol::task::parse_iso;
use cnc_model::{TaskFilter, TaskQuery, TaskSort, TaskSortField, TaskState, TimeRange};

use crate::error::{WebError, WebResult};

/// Query pairs as sent (`?state=A&state=B`).
pub(crate) type Pairs = Vec<(String, String)>;

/// The last non-empty value of `key`.
pub(crate) fn param<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == key && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// A boolean parameter the way Flower reads them (`1`, `true`, `yes`, `on`).
pub(crate) fn flag(pairs: &Pairs, key: &str) -> WebResult<bool> {
    match param(pairs, key) {
        None => Ok(false),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
            "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
            _ => Err(WebError::BadRequest(format!(
                "{key} must be true or false, not '{v}'"
            ))),
        },
    }
}

/// A number parameter.
pub(crate) fn number<T: std::str::FromStr>(pairs: &Pairs, key: &str) -> WebResult<Option<T>> {
    match param(pairs, key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| WebError::BadRequest(format!("{key} must be a number, not '{v}'"))),
    }
}

/// A time: epoch seconds, ISO-8601, or `YYYY-MM-DD HH:MM[:SS]` /
/// `YYYY-MM-DDTHH:MM` (UTC).
pub(crate) fn parse_time(key: &str, v: &str) -> WebResult<f64> {
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Ok(f);
        }
    }
    if let Some(t) = parse_iso(v) {
        return Ok(t.timestamp_micros() as f64 / 1e6);
    }
    let norm = v.replace(' ', "T");
    for fmt in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(&norm, fmt) {
            return Ok(n.and_utc().timestamp() as f64);
        }
    }
    Err(WebError::BadRequest(format!(
        "{key} '{v}' is not a time (epoch seconds, ISO-8601 or YYYY-MM-DD HH:MM)"
    )))
}

/// A duration like `5m`, `1h`, `24h`, `30s`, `2d` or plain seconds.
pub(crate) fn parse_duration(key: &str, v: &str) -> WebResult<f64> {
    let v = v.trim();
    let (num, unit) = match v.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(WebError::BadRequest(format!(
                "{key} '{v}' is not like 5m, 1h, 24h"
            )));
        }
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n * mult),
        _ => Err(WebError::BadRequest(format!(
            "{key} '{v}' is not like 5m, 1h, 24h"
        ))),
    }
}

/// Parse the task-list parameters of the own API and the task page.
pub(crate) fn task_query(pairs: &Pairs, default_limit: u32) -> WebResult<TaskQuery> {
    let mut filter = TaskFilter::default();
    for (k, v) in pairs {
        if k == "state" {
            for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let st: TaskState = s.parse().map_err(|e: cnc_model::model::UnknownState| {
                    WebError::BadRequest(e.to_string())
                })?;
                if !filter.states.contains(&st) {
                    filter.states.push(st);
                }
            }
        }
    }
    let text = |k: &str| -> WebResult<Option<String>> {
        match param(pairs, k) {
            Some(v) if v.len() > 1024 => Err(WebError::BadRequest(format!("{k} is too long"))),
            other => Ok(other.map(str::to_owned)),
        }
    };
    filter.worker = text("worker")?;
    filter.name = text("name")?;
    filter.search = text("search")?;
    filter.root_id = text("root_id")?;
    filter.group_id = text("group_id")?;
    filter.parent_id = text("parent_id")?;
    let mut from = param(pairs, "from")
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = param(pairs, "to")
        .map(|v| parse_time("to", v))
        .transpose()?;
    if let Some(last) = param(pairs, "last") {
        from = Some(cnc_model::now() - parse_duration("last", last)?);
    }
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(WebError::BadRequest("from must be before to".into()));
    }
    if from.is_some() || to.is_some() {
        filter.time = Some(TimeRange { from, to });
    }
    let sort = match param(pairs, "sort") {
        None => TaskSort::default(),
        Some(s) => {
            let (descending, field) = match s.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, s),
            };
            let field = match field {
                "seen" => TaskSortField::Seen,
                "created" => TaskSortField::Created,
                "received" => TaskSortField::Received,
                "started" => TaskSortField::Started,
                "runtime" => TaskSortField::Runtime,
                "name" => TaskSortField::Name,
                other => {
                    return Err(WebError::BadRequest(format!(
                        "cannot sort by '{other}' (seen, created, received, started, runtime, name; prefix - for descending)"
                    )));
                }
            };
            TaskSort { field, descending }
        }
    };
    let limit: u32 = number(pairs, "limit")?.unwrap_or(default_limit);
    if limit == 0 || limit > TaskQuery::MAX_LIMIT {
        return Err(WebError::BadRequest(format!(
            "limit must be between 1 and {}",
            TaskQuery::MAX_LIMIT
        )));
    }
    let offset: u64 = number(pairs, "offset")?.unwrap_or(0);
    let cursor = param(pairs, "cursor").map(str::to_owned);
    if cursor.is_some() && (offset > 0 || sort != TaskSort::default()) {
        return Err(WebError::BadRequest(
            "cursor works only with the default sort and without offset".into(),
        ));
    }
    Ok(TaskQuery {
        filter,
        sort,
        limit,
        offset,
        cursor,
    })
}

/// `2026-11-22 08:44:12.123` (UTC) or empty.
pub(crate) fn fmt_time(t: Option<f64>) -> String {
    let Some(t) = t.filter(|t| t.is_finite()) else {
        return String::new();
    };
    let secs = t.floor() as i64;
    let nanos = ((t - t.floor()) * 1e9) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// `1.234 s`, `12 ms` or empty.
pub(crate) fn fmt_secs(s: Option<f64>) -> String {
    match s.filter(|s| s.is_finite()) {
        None => String::new(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) if s < 120.0 => format!("{s:.3} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

/// Pretty JSON when `text` is JSON, else `None` (a Python repr).
pub(crate) fn as_json(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if !(v.is_object() || v.is_array()) {
        return None;
    }
    serde_json::to_string_pretty(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Pairs {
        q.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn parses_filters() {
        let q = task_query(
            &pairs(&[
                ("state", "success,FAILURE"),
                ("name", "add"),
                ("sort", "-runtime"),
                ("limit", "5"),
            ]),
            100,
        )
        .ok();
        let q = q.as_ref();
        assert_eq!(q.map(|q| q.filter.states.len()), Some(2));
        assert_eq!(q.and_then(|q| q.filter.name.as_deref()), Some("add"));
        assert_eq!(q.map(|q| q.limit), Some(5));
        assert!(task_query(&pairs(&[("state", "NOPE")]), 100).is_err());
        assert!(task_query(&pairs(&[("limit", "x")]), 100).is_err());
        assert!(task_query(&pairs(&[("from", "yesterday")]), 100).is_err());
        assert!(task_query(&pairs(&[("from", "10"), ("to", "5")]), 100).is_err());
        assert!(task_query(&pairs(&[("sort", "bogus")]), 100).is_err());
        assert_eq!(
            parse_time("t", "2024-01-02 03:04").ok(),
            Some(1_704_164_640.0)
        );
        assert_eq!(parse_duration("d", "5m").ok(), Some(300.0));
        assert_eq!(parse_duration("d", "24h").ok(), Some(86_400.0));
        assert!(parse_duration("d", "-1h").is_err());
    }
}
