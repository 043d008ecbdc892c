//! Flower-compatible endpoints: Flower 2.2's paths, parameters and JSON
//! shapes (transcribed from `flower/api/{tasks,workers,control}.py`,
//! `flower/utils/tasks.py` and Celery's `events.state.Task.as_dict`), so
//! scripts written for Flower keep working.
//!
//! `/api/tasks` follows Flower's task search (`flower/utils/search.py`):
//! `taskname` is an exact, case-insensitive match, `received_start`/
//! `received_end` keep the tasks received in the window (both ends
//! inclusive; a task never received passes, as in Flower), `offset`/`limit`
//! count the tasks that pass, and every task carries its `children`. The
//! exact name and the window are checked here, after the store (its filter
//! matches a name substring and has no received-time window), reading the
//! store in batches until the page is full.
//!
//! `/api/task/abort` does what Flower's does, `AbortableAsyncResult(id)
//! .abort()`: it stores the state `ABORTED` in the result backend
//! ([`cnc_broker::ResultBackend::mark_aborted`]), where a running
//! `AbortableTask` sees it with `is_aborted()`; it revokes nothing.
//!
//! Differences that remain, where our data model cannot match Flower's:
//!
//! * `/api/tasks` without `sort_by` lists the newest-seen first (Flower: the
//!   latest event first); `sort_by` accepts `name`, `received`, `started`
//!   and `runtime` (Flower: `state` instead of `runtime`), puts tasks
//!   without the value last in both directions (Flower: first when
//!   ascending) and breaks ties in the store's order (Flower: by id);
//!   `workername` is case-sensitive (Flower: casefolded); `search` is a
//!   plain substring (Flower parses a query language: `name:`, `state:`,
//!   `worker:`, `args:`, `kwargs:`, `result:` terms, combined); the window
//!   is read as UTC (Flower: the server's local time) and also accepts epoch
//!   seconds and ISO-8601 (Flower: only `YYYY-MM-DD HH:MM`). The name
//!   comparison lowercases where Flower casefolds (they differ for a few
//!   letters, such as `ß`).
//! * `/api/task/abort` with several apps writes to the backends that
//!   already hold a result for the task, or to every backend when none does
//!   (Flower has one app). On Redis the `ABORTED` value expires after
//!   Celery's default `result_expires` (one day), not the app's own setting.
//!   A backend that cannot store it (a custom one) answers 503 with the
//!   reason.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cnc_broker::TaskResult;
use cnc_broker::protocol::control::RegisteredTask;
use cnc_model::{Task, TaskFilter, TaskQuery, TaskSort, TaskSortField, TaskState};
use serde_json::{Map, Value, json};

use crate::actions::{self, SendRequest};
use crate::error::{WebError, WebResult};
use crate::security::Who;
use crate::state::WebState;
use crate::views::{Pairs, flag, number, param, parse_time};

/// `GET /healthcheck`: `OK`.
pub(crate) async fn healthcheck() -> &'static str {
    "OK"
}

fn opt_f(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn opt_s(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// Celery's `Task.as_dict()` as Flower serves it (worker as its hostname).
pub(crate) fn task_dict(t: &Task, children: Vec<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("uuid".into(), Value::String(t.id.clone()));
    m.insert("name".into(), opt_s(&t.name));
    m.insert("state".into(), Value::String(t.state.as_str().to_owned()));
    m.insert("received".into(), opt_f(t.received_at));
    m.insert("sent".into(), opt_f(t.sent_at));
    m.insert("started".into(), opt_f(t.started_at));
    m.insert("rejected".into(), opt_f(t.rejected_at));
    m.insert("succeeded".into(), opt_f(t.succeeded_at));
    m.insert("failed".into(), opt_f(t.failed_at));
    m.insert("retried".into(), opt_f(t.retried_at));
    m.insert("revoked".into(), opt_f(t.revoked_at));
    m.insert("args".into(), opt_s(&t.args));
    m.insert("kwargs".into(), opt_s(&t.kwargs));
    m.insert("eta".into(), opt_s(&t.eta));
    m.insert("expires".into(), opt_s(&t.expires));
    m.insert("retries".into(), Value::from(t.retries));
    m.insert("worker".into(), opt_s(&t.worker));
    m.insert("result".into(), opt_s(&t.result));
    m.insert("exception".into(), opt_s(&t.exception));
    m.insert("timestamp".into(), opt_f(Some(t.updated_at)));
    m.insert("runtime".into(), opt_f(t.runtime));
    m.insert("traceback".into(), opt_s(&t.traceback));
    m.insert("exchange".into(), opt_s(&t.exchange));
    m.insert("routing_key".into(), opt_s(&t.routing_key));
    m.insert("clock".into(), Value::from(t.clock));
    m.insert("client".into(), opt_s(&t.client));
    m.insert("root".into(), opt_s(&t.root_id));
    m.insert("root_id".into(), opt_s(&t.root_id));
    m.insert("parent".into(), opt_s(&t.parent_id));
    m.insert("parent_id".into(), opt_s(&t.parent_id));
    m.insert(
        "children".into(),
        Value::Array(children.into_iter().map(Value::String).collect()),
    );
    m
}

fn json_text(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// What `/api/tasks` checks after the store, where Flower's task search
/// (`TaskSearchEngine.search`) differs from [`TaskFilter`]: the task name
/// is an exact match, case-insensitive (Flower compares casefolded names;
/// the store matches a case-insensitive substring, so it still narrows the
/// scan), and the window is on the received time, inclusive at both ends,
/// with tasks never received let through (`_task_in_time_range`).
#[derive(Debug, Default)]
struct FlowerFilter {
    /// Lowercased.
    name: Option<String>,
    received_start: Option<f64>,
    received_end: Option<f64>,
}

impl FlowerFilter {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.received_start.is_none() && self.received_end.is_none()
    }

    fn matches(&self, t: &Task) -> bool {
        if let Some(n) = &self.name
            && t.name.as_ref().is_none_or(|have| have.to_lowercase() != *n)
        {
            return false;
        }
        match t.received_at {
            Some(r) => {
                self.received_start.is_none_or(|s| r >= s)
                    && self.received_end.is_none_or(|e| r <= e)
            }
            None => true,
        }
    }
}

/// Smallest batch read from the store while post-filtering.
const SCAN_BATCH: u32 = 500;

/// The page `q` asks for, with `post` applied: `offset` and `limit` count
/// the tasks that pass it, as in Flower. Without a post-filter this is one
/// store call; with one, the store is read in batches (by cursor under the
/// default sort, by offset otherwise) until the page is full or the tasks
/// run out.
async fn flower_page(s: &WebState, q: TaskQuery, post: &FlowerFilter) -> WebResult<Vec<Task>> {
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    let store = &s.ctx().store;
    if post.is_empty() {
        return Ok(store.tasks(&q).await?.tasks);
    }
    let want = q.limit as usize;
    let mut skip = q.offset;
    let batch = q
        .offset
        .saturating_add(u64::from(q.limit))
        .clamp(u64::from(SCAN_BATCH), u64::from(TaskQuery::MAX_LIMIT));
    let batch = u32::try_from(batch).unwrap_or(TaskQuery::MAX_LIMIT);
    let keyset = q.sort == TaskSort::default();
    let mut sq = TaskQuery {
        limit: batch,
        offset: 0,
        cursor: None,
        ..q
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    loop {
        let page = store.tasks(&sq).await?;
        let n = page.tasks.len();
        for t in page.tasks {
            // Offset paging over a store that grows meanwhile can repeat a row.
            if !seen.insert(t.id.clone()) || !post.matches(&t) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            out.push(t);
            if out.len() == want {
                return Ok(out);
            }
        }
        if n < batch as usize {
            return Ok(out);
        }
        if keyset {
            match page.next_cursor {
                Some(c) => sq.cursor = Some(c),
                None => return Ok(out),
            }
        } else {
            sq.offset += n as u64;
        }
    }
}

/// How many `relations` lookups run at once.
const RELATION_LOOKUPS: usize = 8;

/// The children of each task in `tasks` (Celery's `Task.children`: the
/// tasks whose parent is it), oldest first: one `relations` lookup per
/// distinct workflow root, not one per task.
async fn children_of(
    s: &WebState,
    tasks: &[Task],
) -> WebResult<std::collections::HashMap<String, Vec<String>>> {
    use futures::StreamExt;
    // Owned roots and store handles: a stream of futures borrowing from
    // the closure's argument is not `Send` for every lifetime axum needs.
    let roots: std::collections::BTreeSet<String> = tasks
        .iter()
        .map(|t| t.root_id.clone().unwrap_or_else(|| t.id.clone()))
        .collect();
    let ids: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let store = s.ctx().store.clone();
    let found: Vec<_> = futures::stream::iter(roots)
        .map(move |root| {
            let store = store.clone();
            async move { store.relations(&root).await }
        })
        .buffered(RELATION_LOOKUPS)
        .collect()
        .await;
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    for relations in found {
        for r in relations? {
            let Some(parent) = r.parent_id else { continue };
            if parent == r.task_id || !ids.contains(parent.as_str()) {
                continue;
            }
            let kids = out.entry(parent).or_default();
            // A task can be in two roots' workflows when its ids disagree.
            if !kids.contains(&r.task_id) {
                kids.push(r.task_id);
            }
        }
    }
    Ok(out)
}

/// `GET /api/tasks`: `{task_id: task}` in the requested order.
pub(crate) async fn tasks(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Response> {
    let all = |k: &str| param(&pairs, k).filter(|v| *v != "All").map(str::to_owned);
    let mut filter = TaskFilter {
        worker: all("workername"),
        // A substring in the store: the exact match is in `post`.
        name: all("taskname"),
        search: all("search"),
        ..TaskFilter::default()
    };
    if let Some(st) = all("state") {
        let st: TaskState = st
            .parse()
            .map_err(|e: cnc_model::model::UnknownState| WebError::BadRequest(e.to_string()))?;
        filter.states.push(st);
    }
    let post = FlowerFilter {
        name: filter.name.as_deref().map(str::to_lowercase),
        received_start: param(&pairs, "received_start")
            .map(|v| parse_time("received_start", v))
            .transpose()?,
        received_end: param(&pairs, "received_end")
            .map(|v| parse_time("received_end", v))
            .transpose()?,
    };
    let sort = match param(&pairs, "sort_by") {
        None => TaskSort::default(),
        Some(s) => {
            let (descending, key) = match s.strip_prefix('-') {
                Some(k) => (true, k),
                None => (false, s),
            };
            let field = match key {
                "name" => TaskSortField::Name,
                "received" => TaskSortField::Received,
                "started" => TaskSortField::Started,
                "runtime" => TaskSortField::Runtime,
                other => {
                    return Err(WebError::BadRequest(format!(
                        "cannot sort by '{other}' (name, received, started, runtime)"
                    )));
                }
            };
            TaskSort { field, descending }
        }
    };
    let limit: Option<u32> = number(&pairs, "limit")?;
    let offset: i64 = number(&pairs, "offset")?.unwrap_or(0);
    let q = TaskQuery {
        filter,
        sort,
        limit: limit
            .unwrap_or(TaskQuery::MAX_LIMIT)
            .min(TaskQuery::MAX_LIMIT),
        offset: offset.max(0) as u64,
        cursor: None,
    };
    let page = flower_page(&s, q, &post).await?;
    let mut children = children_of(&s, &page).await?;
    // Ordered like Flower's OrderedDict (serde_json's map would sort ids).
    let mut out = String::from("{");
    for (i, t) in page.iter().enumerate() {
        let mut d = task_dict(t, children.remove(&t.id).unwrap_or_default());
        if t.worker.is_none() {
            d.remove("worker");
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&serde_json::to_string(&t.id).unwrap_or_default());
        out.push_str(": ");
        out.push_str(&serde_json::to_string(&d).unwrap_or_default());
    }
    out.push('}');
    Ok(json_text(out))
}

/// `GET /api/task/types`: `{"task-types": [...]}`.
pub(crate) async fn task_types(State(s): State<WebState>) -> WebResult<Json> {
    let mut names: Vec<String> = s
        .ctx()
        .store
        .task_names()
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    Ok(axum::Json(json!({ "task-types": names })))
}

type Json = axum::Json<Value>;

/// `GET /api/task/info/{id}`.
pub(crate) async fn task_info(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> WebResult<Json> {
    actions::check_id(&id)?;
    let t = s
        .ctx()
        .store
        .task(&id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown task '{id}'")))?;
    let children = children_of(&s, std::slice::from_ref(&t))
        .await?
        .remove(&t.id)
        .unwrap_or_default();
    Ok(axum::Json(Value::Object(task_dict(&t, children))))
}

/// Python's repr of a stored result value, the way Flower's `safe_result`
/// shows exceptions; JSON values stay JSON.
fn safe_result(r: &TaskResult) -> Value {
    if let Some(exc_type) = r.result.get("exc_type").and_then(Value::as_str) {
        let msg = match r.result.get("exc_message") {
            Some(Value::Array(a)) => a
                .iter()
                .map(cnc_broker::protocol::repr::py_repr)
                .collect::<Vec<_>>()
                .join(", "),
            Some(v) => cnc_broker::protocol::repr::py_repr(v),
            None => String::new(),
        };
        return Value::String(format!("{exc_type}({msg})"));
    }
    r.result.clone()
}

fn result_response(id: &str, r: Option<&TaskResult>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("task-id".into(), Value::String(id.to_owned()));
    match r {
        None => {
            m.insert("state".into(), Value::String("PENDING".into()));
            m.insert("result".into(), Value::Null);
        }
        Some(r) => {
            m.insert("state".into(), Value::String(r.status.clone()));
            m.insert("result".into(), safe_result(r));
            if r.status == "FAILURE" {
                m.insert("traceback".into(), opt_s(&r.traceback));
            }
        }
    }
    m
}

async fn backend_result(s: &WebState, id: &str) -> WebResult<Option<TaskResult>> {
    let mut any = false;
    for app in s.apps() {
        if let Some(b) = &app.backend {
            any = true;
            if let Some(r) = b.get(id).await? {
                return Ok(Some(r));
            }
        }
    }
    if !any {
        return Err(WebError::Unavailable("No result backend configured".into()));
    }
    Ok(None)
}

async fn wait_result(s: &WebState, id: &str, timeout: Duration) -> WebResult<Option<TaskResult>> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = backend_result(s, id).await?;
        let ready = r
            .as_ref()
            .is_some_and(|r| matches!(r.status.as_str(), "SUCCESS" | "FAILURE" | "REVOKED"));
        if ready || Instant::now() >= deadline {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/task/result/{id}?timeout=`.
pub(crate) async fn task_result(
    State(s): State<WebState>,
    Path(id): Path<String>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json> {
    actions::check_id(&id)?;
    let timeout: Option<f64> = number(&pairs, "timeout")?;
    let r = match timeout {
        Some(t) if t.is_finite() && t > 0.0 => {
            wait_result(&s, &id, Duration::from_secs_f64(t.min(60.0))).await?
        }
        Some(t) if !t.is_finite() || t < 0.0 => {
            return Err(WebError::BadRequest("timeout must be seconds >= 0".into()));
        }
        _ => backend_result(&s, &id).await?,
    };
    Ok(axum::Json(Value::Object(result_response(&id, r.as_ref()))))
}

/// Query parameters plus form-encoded body parameters, as Tornado's
/// `get_argument` sees them.
fn arguments(query: Pairs, headers: &HeaderMap, body: &Bytes) -> WebResult<Pairs> {
    let mut pairs = query;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form && !body.is_empty() {
        let more: Pairs = serde_urlencoded_pairs(body)?;
        pairs.extend(more);
    }
    Ok(pairs)
}

fn serde_urlencoded_pairs(body: &Bytes) -> WebResult<Pairs> {
    axum::extract::Query::<Pairs>::try_from_uri(
        &format!("/?{}", String::from_utf8_lossy(body))
            .parse()
            .map_err(|_| WebError::BadRequest("malformed form body".into()))?,
    )
    .map(|q| q.0)
    .map_err(|e| WebError::BadRequest(e.body_text()))
}

/// Split a Flower apply body into our send request: `args`, `kwargs`, and
/// `apply_async` options we understand (others are ignored, as Celery does).
fn send_request(name: &str, body: &Bytes) -> WebResult<SendRequest> {
    let opts: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(WebError::BadRequest("invalid options".into())),
        }
    };
    let args = opts.get("args").cloned();
    if args.as_ref().is_some_and(|a| !a.is_array() && !a.is_null()) {
        return Err(WebError::BadRequest("args must be an array".into()));
    }
    let kwargs = opts.get("kwargs").cloned();
    if kwargs
        .as_ref()
        .is_some_and(|k| !k.is_object() && !k.is_null())
    {
        return Err(WebError::BadRequest("kwargs must be an object".into()));
    }
    let text = |k: &str| opts.get(k).and_then(Value::as_str).map(str::to_owned);
    let countdown = match opts.get("countdown") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<f64>()
                .map_err(|_| WebError::BadRequest("Invalid option".into()))?,
        ),
        Some(_) => return Err(WebError::BadRequest("Invalid option".into())),
    };
    let eta = match text("eta") {
        None => None,
        Some(e) => {
            let t =
                parse_time("eta", &e).map_err(|_| WebError::BadRequest("Invalid option".into()))?;
            chrono::DateTime::from_timestamp_micros((t * 1e6) as i64)
                .map(cnc_broker::protocol::task::iso_utc)
        }
    };
    let expires = match opts.get("expires") {
        Some(Value::String(e)) if e.trim().parse::<f64>().is_err() => {
            let t = parse_time("expires", e)
                .map_err(|_| WebError::BadRequest("Invalid option".into()))?;
            chrono::DateTime::from_timestamp_micros((t * 1e6) as i64)
                .map(|d| Value::String(cnc_broker::protocol::task::iso_utc(d)))
        }
        other => other.cloned(),
    };
    let priority = match opts.get("priority") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| WebError::BadRequest("Invalid option".into()))?,
        ),
    };
    Ok(SendRequest {
        name: name.to_owned(),
        args,
        kwargs,
        queue: text("queue"),
        countdown,
        eta,
        expires,
        priority,
        app: None,
        task_id: text("task_id"),
    })
}

/// Flower refuses `apply`/`async-apply` of a task its app does not know:
/// ours knows what workers registered and what was seen.
async fn known_task(s: &WebState, name: &str) -> WebResult<()> {
    if let Ok(inspected) = s.inspect(None, false).await {
        for info in inspected.values() {
            if let Some(Value::Array(reg)) = info.get("registered")
                && reg
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|e| RegisteredTask::parse(e).name == name)
            {
                return Ok(());
            }
        }
    }
    if s.ctx()
        .store
        .task_names()
        .await?
        .iter()
        .any(|n| n.name == name)
    {
        return Ok(());
    }
    Err(WebError::NotFound(format!("Unknown task '{name}'")))
}

fn has_backend(s: &WebState) -> bool {
    s.apps().iter().any(|a| a.backend.is_some())
}

/// `POST /api/task/async-apply/{name}`: `{"task-id", "state"}`.
pub(crate) async fn async_apply(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    body: Bytes,
) -> WebResult<Json> {
    known_task(&s, &name).await?;
    let req = send_request(&name, &body)?;
    let (id, _) = actions::send_task(&s, &who, req).await?;
    let mut m = Map::new();
    m.insert("task-id".into(), Value::String(id.clone()));
    if has_backend(&s) {
        let state = backend_result(&s, &id)
            .await?
            .map_or("PENDING".to_owned(), |r| r.status);
        m.insert("state".into(), Value::String(state));
    }
    Ok(axum::Json(Value::Object(m)))
}

/// `POST /api/task/send-task/{name}`: like async-apply, for any name.
pub(crate) async fn send_task(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    body: Bytes,
) -> WebResult<Json> {
    let req = send_request(&name, &body)?;
    let (id, _) = actions::send_task(&s, &who, req).await?;
    let mut m = Map::new();
    m.insert("task-id".into(), Value::String(id.clone()));
    if has_backend(&s) {
        let state = backend_result(&s, &id)
            .await?
            .map_or("PENDING".to_owned(), |r| r.status);
        m.insert("state".into(), Value::String(state));
    }
    Ok(axum::Json(Value::Object(m)))
}

/// `POST /api/task/apply/{name}`: send and wait for the result (at most
/// 5 minutes).
pub(crate) async fn apply(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    body: Bytes,
) -> WebResult<Json> {
    known_task(&s, &name).await?;
    if !has_backend(&s) {
        return Err(WebError::Unavailable("No result backend configured".into()));
    }
    let req = send_request(&name, &body)?;
    let (id, _) = actions::send_task(&s, &who, req).await?;
    let r = wait_result(&s, &id, Duration::from_secs(300)).await?;
    Ok(axum::Json(Value::Object(result_response(&id, r.as_ref()))))
}

/// `POST /api/task/revoke/{id}?terminate=&signal=`.
pub(crate) async fn revoke(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Json> {
    let pairs = arguments(q, &headers, &body)?;
    let terminate = flag(&pairs, "terminate")?;
    let signal = param(&pairs, "signal").unwrap_or("SIGTERM");
    actions::revoke(&s, &who, &id, terminate, Some(signal)).await?;
    Ok(axum::Json(json!({ "message": format!("Revoked '{id}'") })))
}

/// `POST /api/task/abort/{id}`: Flower's `AbortableAsyncResult(id).abort()`,
/// the state `ABORTED` stored in the result backend for a running
/// `AbortableTask` to see (see [`actions::abort`]); no revoke is sent.
/// 503 without a result backend, as in Flower.
pub(crate) async fn abort(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> WebResult<Json> {
    actions::abort(&s, &who, &id).await?;
    Ok(axum::Json(json!({ "message": format!("Aborted '{id}'") })))
}

/// Flower's failure answer: 403 with a text message.
fn failed(msg: String) -> Response {
    (StatusCode::FORBIDDEN, msg).into_response()
}

async fn control_flower(
    s: &WebState,
    who: &Who,
    worker: &str,
    cmd: actions::Control,
    ok: impl FnOnce(String) -> String,
    fail: impl FnOnce(String) -> String,
) -> WebResult<Response> {
    match actions::control(s, who, worker, cmd).await {
        Ok(out) => Ok(axum::Json(json!({ "message": ok(out.message) })).into_response()),
        Err(WebError::Refused(reason)) => Ok(failed(fail(reason))),
        Err(WebError::Unavailable(_)) => Ok(failed(fail("Unknown reason".into()))),
        Err(e) => Err(e),
    }
}

/// `POST /api/worker/shutdown/{name}`.
pub(crate) async fn shutdown(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
) -> WebResult<Json> {
    actions::control(&s, &who, &name, actions::Control::Shutdown).await?;
    Ok(axum::Json(json!({ "message": "Shutting down!" })))
}

/// `POST /api/worker/pool/restart/{name}`.
pub(crate) async fn pool_restart(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
) -> WebResult<Response> {
    let n = name.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::PoolRestart,
        |_| format!("Restarting '{n}' worker's pool"),
        |r| format!("Failed to restart the '{name}' pool: {r}"),
    )
    .await
}

macro_rules! flower_args {
    ($q:ident, $headers:ident, $body:ident) => {
        arguments($q, &$headers, &$body)?
    };
}

/// `POST /api/worker/pool/grow/{name}?n=`.
pub(crate) async fn pool_grow(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let n: u32 = number(&pairs, "n")?.unwrap_or(1);
    let w = name.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::PoolGrow { n },
        |_| format!("Growing '{w}' worker's pool by {n}"),
        |r| format!("Failed to grow '{name}' worker's pool: {r}"),
    )
    .await
}

/// `POST /api/worker/pool/shrink/{name}?n=`.
pub(crate) async fn pool_shrink(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let n: u32 = number(&pairs, "n")?.unwrap_or(1);
    let w = name.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::PoolShrink { n },
        |_| format!("Shrinking '{w}' worker's pool by {n}"),
        |r| format!("Failed to shrink '{name}' worker's pool: {r}"),
    )
    .await
}

/// `POST /api/worker/pool/autoscale/{name}?min=&max=`.
pub(crate) async fn pool_autoscale(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let min: u32 = number(&pairs, "min")?
        .ok_or_else(|| WebError::BadRequest("Missing argument min".into()))?;
    let max: u32 = number(&pairs, "max")?
        .ok_or_else(|| WebError::BadRequest("Missing argument max".into()))?;
    let w = name.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::Autoscale { min, max },
        |_| format!("Autoscaling '{w}' worker (min={min}, max={max})"),
        |r| format!("Failed to autoscale '{name}' worker: {r}"),
    )
    .await
}

/// `POST /api/worker/queue/add-consumer/{name}?queue=`.
pub(crate) async fn add_consumer(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let queue = param(&pairs, "queue")
        .ok_or_else(|| WebError::BadRequest("Missing argument queue".into()))?
        .to_owned();
    let qn = queue.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::AddConsumer { queue },
        |m| m,
        |r| format!("Failed to add '{qn}' consumer to '{name}' worker: {r}"),
    )
    .await
}

/// `POST /api/worker/queue/cancel-consumer/{name}?queue=`.
pub(crate) async fn cancel_consumer(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let queue = param(&pairs, "queue")
        .ok_or_else(|| WebError::BadRequest("Missing argument queue".into()))?
        .to_owned();
    let qn = queue.clone();
    control_flower(
        &s,
        &who,
        &name,
        actions::Control::CancelConsumer { queue },
        |m| m,
        |r| format!("Failed to cancel '{qn}' consumer from '{name}' worker: {r}"),
    )
    .await
}

/// `POST /api/task/rate-limit/{name}` with `workername`, `ratelimit`.
pub(crate) async fn rate_limit(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(task): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let worker = param(&pairs, "workername")
        .ok_or_else(|| WebError::BadRequest("Missing argument workername".into()))?
        .to_owned();
    let rate = param(&pairs, "ratelimit")
        .ok_or_else(|| WebError::BadRequest("Missing argument ratelimit".into()))?
        .to_owned();
    control_flower(
        &s,
        &who,
        &worker,
        actions::Control::RateLimit { task, rate },
        |m| m,
        |r| format!("Failed to set rate limit: '{r}'"),
    )
    .await
}

/// `POST /api/task/timeout/{name}` with `workername`, `hard`, `soft`.
pub(crate) async fn timeout(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(task): Path<String>,
    Query(q): Query<Pairs>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<Response> {
    let pairs = flower_args!(q, headers, body);
    let worker = param(&pairs, "workername")
        .ok_or_else(|| WebError::BadRequest("Missing argument workername".into()))?
        .to_owned();
    let hard: Option<f64> = number(&pairs, "hard")?;
    let soft: Option<f64> = number(&pairs, "soft")?;
    control_flower(
        &s,
        &who,
        &worker,
        actions::Control::TimeLimit { task, hard, soft },
        |m| m,
        |r| format!("Failed to set timeouts: '{r}'"),
    )
    .await
}

/// `GET /api/workers?refresh&status&workername`.
pub(crate) async fn workers(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json> {
    let refresh = flag(&pairs, "refresh")?;
    let status = flag(&pairs, "status")?;
    let workername = param(&pairs, "workername").map(str::to_owned);
    if status {
        let now = cnc_model::now();
        let mut m = Map::new();
        for w in s.ctx().store.workers().await? {
            let alive = w.status_at(now) == cnc_model::WorkerStatus::Online;
            m.insert(w.hostname, Value::Bool(alive));
        }
        return Ok(axum::Json(Value::Object(m)));
    }
    if let Some(w) = &workername {
        actions::known_worker(&s, w).await?;
    }
    let data = match s.inspect(workername.as_deref(), refresh).await {
        Ok(d) => d,
        Err(e) if refresh => {
            return Err(WebError::Unavailable(format!(
                "Failed to update workers: {e}"
            )));
        }
        Err(_) => Default::default(),
    };
    let mut out = Map::new();
    for (host, mut info) in data {
        // Flower keeps only truthy replies (an empty `active` list is left out).
        info.retain(|_, v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(s) => !s.is_empty(),
            Value::Number(_) | Value::Bool(true) => true,
        });
        if let Some(Value::Array(reg)) = info.get_mut("registered") {
            for e in reg.iter_mut() {
                if let Value::String(s) = e {
                    *s = flower_registered(s);
                }
            }
        }
        if let Some(b) = info
            .get_mut("stats")
            .and_then(|st| st.get_mut("broker"))
            .and_then(Value::as_object_mut)
        {
            b.remove("alternates");
        }
        out.insert(host, Value::Object(info));
    }
    Ok(axum::Json(Value::Object(out)))
}

/// A `registered` entry as Flower shows it: Celery's default task info
/// items (`exchange`, `routing_key`, `rate_limit`, in that order, when set).
fn flower_registered(entry: &str) -> String {
    let r = RegisteredTask::parse(entry);
    let attrs: Vec<String> = ["exchange", "routing_key", "rate_limit"]
        .iter()
        .filter_map(|k| r.attribute(k).map(|v| format!("{k}={v}")))
        .collect();
    if attrs.is_empty() {
        r.name
    } else {
        format!("{} [{}]", r.name, attrs.join(" "))
    }
}

/// `GET /api/queues/length`: `{"active_queues": [{"name", "messages"}]}`.
pub(crate) async fn queues_length(State(s): State<WebState>) -> WebResult<Json> {
    let app = s.app(None)?;
    let mut names = std::collections::BTreeSet::new();
    if let Ok(data) = s.inspect(None, false).await {
        for info in data.values() {
            if let Some(Value::Array(qs)) = info.get("active_queues") {
                for q in qs {
                    if let Some(n) = q.get("name").and_then(Value::as_str) {
                        names.insert(n.to_owned());
                    }
                }
            }
        }
    }
    if names.is_empty() {
        names.insert(app.default_queue.clone());
    }
    let mut out = Vec::new();
    for q in names {
        let d = app.broker.queue_depth(&q).await?;
        out.push(json!({ "name": q, "messages": d.messages }));
    }
    Ok(axum::Json(json!({ "active_queues": out })))
}
