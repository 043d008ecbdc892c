//! Server-rendered pages and the partials live updates swap in.
//!
//! Templates get view models built here (never store rows to poke at), and
//! minijinja escapes every value (auto-escape on `.html` templates).

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use cnc_broker::protocol::control::RegisteredTask;
use cnc_model::{StatsQuery, TaskState, WorkerStatus};
use minijinja::{Environment, Value as J, context};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{WebError, WebResult};
use crate::state::WebState;
use crate::views::{Pairs, fmt_secs, fmt_time, param, task_query};

/// One entry of the main navigation. Later pages (graphs, charts, broker,
/// beat, logs, settings) add themselves here.
#[derive(Serialize)]
struct NavItem {
    key: &'static str,
    label: &'static str,
    href: &'static str,
}

const NAV: &[NavItem] = &[
    NavItem {
        key: "dashboard",
        label: "Dashboard",
        href: "/",
    },
    NavItem {
        key: "tasks",
        label: "Tasks",
        href: "/tasks",
    },
    NavItem {
        key: "workers",
        label: "Workers",
        href: "/workers",
    },
];

const PRESETS: [&str; 5] = ["5m", "10m", "30m", "1h", "24h"];

/// Percent-encode one path segment or query value.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The template environment, templates embedded at compile time.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let templates: [(&str, &str); 14] = [
        ("layout.html", include_str!("../templates/layout.html")),
        ("error.html", include_str!("../templates/error.html")),
        (
            "dashboard.html",
            include_str!("../templates/dashboard.html"),
        ),
        ("tasks.html", include_str!("../templates/tasks.html")),
        ("task.html", include_str!("../templates/task.html")),
        ("workers.html", include_str!("../templates/workers.html")),
        ("worker.html", include_str!("../templates/worker.html")),
        ("send.html", include_str!("../templates/send.html")),
        (
            "partials/dashboard.html",
            include_str!("../templates/partials/dashboard.html"),
        ),
        (
            "partials/tasks.html",
            include_str!("../templates/partials/tasks.html"),
        ),
        (
            "partials/task.html",
            include_str!("../templates/partials/task.html"),
        ),
        (
            "partials/workers.html",
            include_str!("../templates/partials/workers.html"),
        ),
        (
            "partials/worker.html",
            include_str!("../templates/partials/worker.html"),
        ),
        ("partials/empty.html", ""),
    ];
    for (name, src) in templates {
        if let Err(e) = env.add_template(name, src) {
            tracing::error!(target: crate::LOG_TARGET, template = name, error = %e, "bad template");
        }
    }
    env.add_filter("time", |v: Option<f64>| fmt_time(v));
    env.add_filter("secs", |v: Option<f64>| fmt_secs(v));
    env.add_filter("seg", |v: String| seg(&v));
    env
}

/// Render `name` with the common context plus `extra`.
fn render(s: &WebState, name: &str, page: &str, title: &str, extra: J) -> WebResult<Html<String>> {
    let tmpl = s
        .inner
        .templates
        .get_template(name)
        .map_err(|e| WebError::Internal(format!("template {name}: {e}")))?;
    let common = context! {
        base => s.base_path(),
        csrf => s.csrf_token(),
        read_only => s.config().read_only,
        polling_ms => s.config().polling_interval.as_millis() as u64,
        nav => NAV,
        page => page,
        title => title,
        signals => crate::actions::SIGNALS,
    };
    let ctx = context! { ..extra, ..common };
    tmpl.render(ctx)
        .map(Html)
        .map_err(|e| WebError::Internal(format!("rendering {name}: {e:#}")))
}

/// A page error: the error page with the right status.
pub(crate) struct PageError(WebError, WebState);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = self.0.public_message();
        let title = status.canonical_reason().unwrap_or("Error");
        match render(
            &self.1,
            "error.html",
            "error",
            title,
            context! { status => status.as_u16(), message => message },
        ) {
            Ok(html) => (status, html).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

type PageResult = Result<Response, PageError>;

fn page(s: &WebState, r: WebResult<Html<String>>) -> PageResult {
    r.map(IntoResponse::into_response)
        .map_err(|e| PageError(e, s.clone()))
}

/// Fallback: 404 page (JSON under `/api/`).
pub(crate) async fn not_found(State(s): State<WebState>, uri: Uri) -> Response {
    let e = WebError::NotFound(format!("no page at {}", uri.path()));
    if uri.path().starts_with("/api/") {
        return e.into_response();
    }
    PageError(e, s).into_response()
}

async fn dashboard_ctx(s: &WebState) -> WebResult<J> {
    let d = crate::api::dashboard_data(s).await?;
    Ok(context! { d => J::from_serialize(&d) })
}

/// `GET /`.
pub(crate) async fn dashboard(State(s): State<WebState>) -> PageResult {
    let r = match dashboard_ctx(&s).await {
        Ok(c) => render(&s, "dashboard.html", "dashboard", "Dashboard", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

/// `GET /partials/dashboard`.
pub(crate) async fn dashboard_partial(State(s): State<WebState>) -> PageResult {
    let r = match dashboard_ctx(&s).await {
        Ok(c) => render(&s, "partials/dashboard.html", "dashboard", "", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

fn datetime_local(t: Option<f64>) -> String {
    let f = fmt_time(t);
    if f.is_empty() {
        f
    } else {
        f[..19].replace(' ', "T")
    }
}

fn qs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}={}", seg(k), seg(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The task table for a query; errors are shown in the partial (4xx).
async fn tasks_ctx(s: &WebState, pairs: &Pairs) -> WebResult<J> {
    let q = task_query(pairs, 50)?;
    let page = s.ctx().store.tasks(&q).await?;
    let base_pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "cursor" && k != "offset")
        .cloned()
        .collect();
    let next_qs = if let Some(c) = &page.next_cursor {
        let mut p = base_pairs.clone();
        p.push(("cursor".into(), c.clone()));
        Some(qs(&p))
    } else if q.cursor.is_none() && page.tasks.len() as u32 == q.limit {
        let mut p = base_pairs.clone();
        p.push(("offset".into(), (q.offset + u64::from(q.limit)).to_string()));
        Some(qs(&p))
    } else {
        None
    };
    Ok(context! {
        tasks => J::from_serialize(&page.tasks),
        next_qs => next_qs,
        first_qs => qs(&base_pairs),
        paged => q.cursor.is_some() || q.offset > 0,
    })
}

fn bad_request(e: &WebError) -> bool {
    matches!(e, WebError::BadRequest(_))
}

/// `GET /tasks`.
pub(crate) async fn tasks(State(s): State<WebState>, Query(pairs): Query<Pairs>) -> PageResult {
    let (results, error, status) = match tasks_ctx(&s, &pairs).await {
        Ok(c) => (c, None, StatusCode::OK),
        Err(e) if bad_request(&e) => (
            context! { tasks => Vec::<J>::new() },
            Some(e.to_string()),
            StatusCode::BAD_REQUEST,
        ),
        Err(e) => return Err(PageError(e, s)),
    };
    let names: Vec<String> = match s.ctx().store.task_names().await {
        Ok(n) => n.into_iter().take(500).map(|n| n.name).collect(),
        Err(e) => return Err(PageError(e.into(), s)),
    };
    let workers: Vec<String> = match s.ctx().store.workers().await {
        Ok(w) => w.into_iter().map(|w| w.hostname).collect(),
        Err(e) => return Err(PageError(e.into(), s)),
    };
    let states: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "state")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|x| x.trim().to_ascii_uppercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let time = |k: &str| {
        param(&pairs, k)
            .and_then(|v| crate::views::parse_time(k, v).ok())
            .map(|t| datetime_local(Some(t)))
            .unwrap_or_default()
    };
    let f = context! {
        search => param(&pairs, "search").unwrap_or(""),
        name => param(&pairs, "name").unwrap_or(""),
        worker => param(&pairs, "worker").unwrap_or(""),
        root_id => param(&pairs, "root_id").unwrap_or(""),
        group_id => param(&pairs, "group_id").unwrap_or(""),
        parent_id => param(&pairs, "parent_id").unwrap_or(""),
        states => states,
        last => param(&pairs, "last").unwrap_or(""),
        from => time("from"),
        to => time("to"),
        sort => param(&pairs, "sort").unwrap_or("-seen"),
        limit => param(&pairs, "limit").and_then(|l| l.parse::<u32>().ok()).unwrap_or(50),
    };
    let sorts = [
        ("-seen", "Newest first"),
        ("seen", "Oldest first"),
        ("-received", "Received, newest"),
        ("-started", "Started, newest"),
        ("-runtime", "Longest runtime"),
        ("runtime", "Shortest runtime"),
        ("name", "Name"),
    ]
    .map(|(value, label)| json!({ "value": value, "label": label }));
    let extra = context! {
        ..results,
        ..context! {
            error => error,
            f => f,
            names => names,
            workers => workers,
            all_states => TaskState::ALL.map(|s| s.as_str()),
            presets => PRESETS,
            sorts => J::from_serialize(&sorts),
        }
    };
    let r = render(&s, "tasks.html", "tasks", "Tasks", extra);
    page(&s, r).map(|mut resp| {
        *resp.status_mut() = status;
        resp
    })
}

/// `GET /partials/tasks`.
pub(crate) async fn tasks_partial(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> PageResult {
    match tasks_ctx(&s, &pairs).await {
        Ok(c) => page(&s, render(&s, "partials/tasks.html", "tasks", "", c)),
        Err(e) if bad_request(&e) => {
            let msg = e.to_string();
            let r = render(
                &s,
                "partials/tasks.html",
                "tasks",
                "",
                context! { error => msg, tasks => Vec::<J>::new() },
            );
            page(&s, r).map(|mut resp| {
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                resp
            })
        }
        Err(e) => Err(PageError(e, s)),
    }
}

#[derive(Serialize)]
struct FlowStep {
    label: &'static str,
    at: Option<f64>,
    note: String,
}

async fn task_ctx(s: &WebState, id: &str) -> WebResult<(J, String)> {
    crate::actions::check_id(id)?;
    let store = &s.ctx().store;
    let t = store
        .task(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown task '{id}'")))?;
    let events = store.task_events(id).await?;
    let root = t.root_id.clone().unwrap_or_else(|| t.id.clone());
    let relations = store.relations(&root).await?;
    let children: Vec<_> = relations
        .iter()
        .filter(|r| r.parent_id.as_deref() == Some(id) && r.task_id != id)
        .take(200)
        .collect();
    let finished_label = match t.state {
        TaskState::Failure => "Failed",
        TaskState::Revoked => "Revoked",
        TaskState::Rejected => "Rejected",
        _ => "Succeeded",
    };
    let flow = vec![
        FlowStep {
            label: "Sent",
            at: t.sent_at,
            note: t.client.clone().unwrap_or_default(),
        },
        FlowStep {
            label: "Received",
            at: t.received_at,
            note: t.worker.clone().unwrap_or_default(),
        },
        FlowStep {
            label: "Started",
            at: t.started_at,
            note: String::new(),
        },
        FlowStep {
            label: finished_label,
            at: t.finished_at(),
            note: match (t.started_at, t.finished_at()) {
                (Some(a), Some(b)) if b >= a => format!("after {}", fmt_secs(Some(b - a))),
                _ => String::new(),
            },
        },
    ];
    let mut overview: Vec<(String, String, Option<String>)> = vec![
        ("Name".into(), t.name.clone().unwrap_or_default(), None),
        ("State".into(), t.state.to_string(), None),
        (
            "Worker".into(),
            t.worker.clone().unwrap_or_default(),
            t.worker.as_ref().map(|w| format!("/workers/{}", seg(w))),
        ),
        (
            "Queue".into(),
            t.queue
                .clone()
                .or(t.routing_key.clone())
                .unwrap_or_default(),
            None,
        ),
        (
            "Exchange".into(),
            t.exchange.clone().unwrap_or_default(),
            None,
        ),
        ("Client".into(), t.client.clone().unwrap_or_default(), None),
        ("Retries".into(), t.retries.to_string(), None),
        ("ETA".into(), t.eta.clone().unwrap_or_default(), None),
        (
            "Expires".into(),
            t.expires.clone().unwrap_or_default(),
            None,
        ),
        ("First seen".into(), fmt_time(Some(t.created_at)), None),
        ("Updated".into(), fmt_time(Some(t.updated_at)), None),
    ];
    if t.terminated == Some(true) {
        overview.push((
            "Terminated".into(),
            format!("signal {}", t.signum.unwrap_or_default()),
            None,
        ));
    }
    if t.expired == Some(true) {
        overview.push(("Expired".into(), "yes".into(), None));
    }
    overview.retain(|r| !r.1.is_empty());
    let mut backend = None;
    for app in s.apps() {
        if let Some(b) = &app.backend
            && let Ok(Some(r)) = b.get(id).await
        {
            backend = serde_json::to_string_pretty(&r.raw).ok();
            break;
        }
    }
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({ "kind": e.kind, "timestamp": e.timestamp, "hostname": e.hostname, "fields": e.fields.to_string() }))
        .collect();
    let title = t.name.clone().unwrap_or_else(|| t.id.clone());
    let c = context! {
        t => J::from_serialize(&t),
        flow => J::from_serialize(&flow),
        children => J::from_serialize(&children),
        overview => J::from_serialize(&overview),
        result_json => t.result.as_deref().and_then(crate::views::as_json),
        args_json => t.args.as_deref().and_then(crate::views::as_json),
        kwargs_json => t.kwargs.as_deref().and_then(crate::views::as_json),
        backend => backend,
        events => J::from_serialize(&events),
    };
    Ok((c, title))
}

/// `GET /tasks/{id}`.
pub(crate) async fn task(State(s): State<WebState>, Path(id): Path<String>) -> PageResult {
    let r = match task_ctx(&s, &id).await {
        Ok((c, title)) => render(&s, "task.html", "tasks", &title, c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

/// `GET /task/{id}` (Flower's path): redirect.
pub(crate) async fn task_flower_alias(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> Redirect {
    Redirect::permanent(&format!("{}/tasks/{}", s.base_path(), seg(&id)))
}

/// `GET /partials/tasks/{id}`.
pub(crate) async fn task_partial(State(s): State<WebState>, Path(id): Path<String>) -> PageResult {
    let r = match task_ctx(&s, &id).await {
        Ok((c, _)) => render(&s, "partials/task.html", "tasks", "", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

fn pool_of(info: Option<&Value>) -> String {
    // The live process count (it follows pool_grow/shrink), else the limit.
    let stats = info.and_then(|i| i.get("stats"));
    match stats
        .and_then(|s| s.pointer("/pool/processes"))
        .and_then(Value::as_array)
    {
        Some(p) => p.len().to_string(),
        None => stats
            .and_then(|s| s.pointer("/pool/max-concurrency"))
            .and_then(Value::as_u64)
            .map(|n| n.to_string())
            .unwrap_or_default(),
    }
}

fn queues_of(info: Option<&Value>) -> String {
    info.and_then(|i| i.get("active_queues"))
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .filter_map(|q| q.get("name").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn load_of(l: &Option<Vec<f64>>) -> String {
    l.as_ref()
        .map(|l| {
            l.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

async fn workers_ctx(s: &WebState) -> WebResult<J> {
    let now = cnc_model::now();
    let store = &s.ctx().store;
    let mut rows = Vec::new();
    let list = store.workers().await?;
    // Pool size and queues come from inspect: ask (cached) when a live
    // worker has never been inspected.
    let live_inspect = if list
        .iter()
        .any(|w| w.info.is_none() && w.status_at(now) == WorkerStatus::Online)
    {
        s.inspect(None, false).await.ok()
    } else {
        None
    };
    for mut w in list {
        if w.info.is_none()
            && let Some(m) = live_inspect.as_ref().and_then(|d| d.get(&w.hostname))
        {
            w.info = Some(Value::Object(m.clone()));
        }
        let failed = store
            .state_distribution(&StatsQuery {
                worker: Some(w.hostname.clone()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .find(|c| c.state == TaskState::Failure)
            .map_or(0, |c| c.count);
        rows.push(json!({
            "hostname": w.hostname,
            "online": w.status_at(now) == WorkerStatus::Online,
            "pool": pool_of(w.info.as_ref()),
            "active": w.active,
            "processed": w.processed,
            "failed": failed,
            "load": load_of(&w.loadavg),
            "queues": queues_of(w.info.as_ref()),
            "last_heartbeat": w.last_heartbeat,
        }));
    }
    Ok(context! { workers => J::from_serialize(&rows) })
}

/// `GET /workers`.
pub(crate) async fn workers(State(s): State<WebState>) -> PageResult {
    let r = match workers_ctx(&s).await {
        Ok(c) => render(&s, "workers.html", "workers", "Workers", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

/// `GET /partials/workers`.
pub(crate) async fn workers_partial(State(s): State<WebState>) -> PageResult {
    let r = match workers_ctx(&s).await {
        Ok(c) => render(&s, "partials/workers.html", "workers", "", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

fn request_rows(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|r| {
                    let r = r.get("request").unwrap_or(r);
                    json!({
                        "id": r.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": r.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "args": r.get("args").map(Value::to_string).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn worker_ctx(s: &WebState, name: &str, refresh: bool) -> WebResult<J> {
    let w = s
        .ctx()
        .store
        .worker(name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown worker '{name}'")))?;
    let online = w.status_at(cnc_model::now()) == WorkerStatus::Online;
    let (info, inspect_error) = match s.inspect(Some(name), refresh).await {
        Ok(mut d) => match d.remove(name) {
            Some(m) => (Some(Value::Object(m)), None),
            None => (
                w.info.clone(),
                Some(format!(
                    "'{name}' did not answer inspect in time; showing stored data"
                )),
            ),
        },
        Err(e) => (w.info.clone(), Some(e.public_message())),
    };
    let get = |k: &str| info.as_ref().and_then(|i| i.get(k));
    let registered: Vec<String> = get("registered")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|e| RegisteredTask::parse(e).name)
                .collect()
        })
        .unwrap_or_default();
    let registered_full: Vec<String> = get("registered")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let pretty = |v: Option<&Value>| {
        v.and_then(|v| serde_json::to_string_pretty(v).ok())
            .unwrap_or_else(|| "null".into())
    };
    let sections = vec![
        json!({ "title": "Running tasks", "tasks": request_rows(get("active")) }),
        json!({ "title": "Reserved tasks", "tasks": request_rows(get("reserved")) }),
        json!({ "title": "Scheduled tasks", "tasks": request_rows(get("scheduled")) }),
        json!({ "title": "Registered tasks", "list": registered_full }),
        json!({ "title": "Active queues", "json": pretty(get("active_queues")) }),
        json!({ "title": "Stats", "json": pretty(get("stats")) }),
        json!({ "title": "Configuration", "json": pretty(get("conf")) }),
    ];
    Ok(context! {
        w => J::from_serialize(&w),
        online => online,
        pool => pool_of(info.as_ref()),
        load => load_of(&w.loadavg),
        registered => registered,
        sections => J::from_serialize(&sections),
        inspect_error => inspect_error,
    })
}

/// `GET /workers/{name}`.
pub(crate) async fn worker(State(s): State<WebState>, Path(name): Path<String>) -> PageResult {
    let r = match worker_ctx(&s, &name, false).await {
        Ok(c) => render(&s, "worker.html", "workers", &name, c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

/// `GET /worker/{name}` (Flower's path): redirect.
pub(crate) async fn worker_flower_alias(
    State(s): State<WebState>,
    Path(name): Path<String>,
) -> Redirect {
    Redirect::permanent(&format!("{}/workers/{}", s.base_path(), seg(&name)))
}

/// `GET /partials/workers/{name}`.
pub(crate) async fn worker_partial(
    State(s): State<WebState>,
    Path(name): Path<String>,
    Query(pairs): Query<Pairs>,
) -> PageResult {
    let refresh = match crate::views::flag(&pairs, "refresh") {
        Ok(r) => r,
        Err(e) => return Err(PageError(e, s)),
    };
    let r = match worker_ctx(&s, &name, refresh).await {
        Ok(c) => render(&s, "partials/worker.html", "workers", "", c),
        Err(e) => Err(e),
    };
    page(&s, r)
}

/// `GET /send`.
pub(crate) async fn send(State(s): State<WebState>) -> PageResult {
    let (registered, error) = match crate::api::registered_tasks(&s, false).await {
        Ok(r) => (r, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "Could not list registered tasks: {}",
                e.public_message()
            )),
        ),
    };
    let mut registered = registered;
    // Names seen in events but not registered on a live worker still help.
    if let Ok(seen) = s.ctx().store.task_names().await {
        for n in seen.into_iter().take(500) {
            if !registered.iter().any(|r| r.name == n.name) {
                registered.push(crate::api::Registered {
                    name: n.name,
                    queue: None,
                    workers: Vec::new(),
                });
            }
        }
    }
    let default_queue = s
        .apps()
        .first()
        .map(|a| a.default_queue.clone())
        .unwrap_or_else(|| "celery".into());
    let apps: Vec<String> = s.apps().iter().map(|a| a.name.clone()).collect();
    let r = render(
        &s,
        "send.html",
        "send",
        "Send task",
        context! {
            registered => J::from_serialize(&registered),
            default_queue => default_queue,
            apps => apps,
            error => error,
        },
    );
    page(&s, r)
}
