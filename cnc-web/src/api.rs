//! The own JSON API (`/api/v1/...`, `/api/components`).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use cnc_broker::protocol::control::RegisteredTask;
use cnc_model::{StatsQuery, ThroughputQuery, TimeRange, Worker};
use serde::Serialize;
use serde_json::{Value, json};

use crate::actions::{self, Control, SendRequest};
use crate::error::{WebError, WebResult};
use crate::security::Who;
use crate::state::WebState;
use crate::views::{Pairs, flag, number, param, parse_time, task_query};

/// `GET /api/v1/csrf`: the token POSTs must send as `X-CSRF-Token`.
pub(crate) async fn csrf(State(s): State<WebState>) -> Json<Value> {
    Json(json!({ "csrf_token": s.csrf_token(), "header": "X-CSRF-Token" }))
}

/// `GET /api/components`: every component's status.
pub(crate) async fn components(State(s): State<WebState>) -> Json<Value> {
    Json(json!(s.ctx().status.all()))
}

/// `GET /api/v1/tasks`.
pub(crate) async fn tasks(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<cnc_model::TaskPage>> {
    let q = task_query(&pairs, 100)?;
    Ok(Json(s.ctx().store.tasks(&q).await?))
}

/// `GET /api/v1/tasks/{id}`.
pub(crate) async fn task(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> WebResult<Json<cnc_model::Task>> {
    actions::check_id(&id)?;
    s.ctx()
        .store
        .task(&id)
        .await?
        .map(Json)
        .ok_or_else(|| WebError::NotFound(format!("Unknown task '{id}'")))
}

/// `GET /api/v1/tasks/{id}/events`.
pub(crate) async fn task_events(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> WebResult<Json<Vec<cnc_model::StoredEvent>>> {
    actions::check_id(&id)?;
    let events = s.ctx().store.task_events(&id).await?;
    if events.is_empty() && s.ctx().store.task(&id).await?.is_none() {
        return Err(WebError::NotFound(format!("Unknown task '{id}'")));
    }
    Ok(Json(events))
}

/// `GET /api/v1/tasks/{id}/relations`: the whole workflow of the task.
pub(crate) async fn task_relations(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> WebResult<Json<Vec<cnc_model::TaskRelation>>> {
    actions::check_id(&id)?;
    let task = s
        .ctx()
        .store
        .task(&id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown task '{id}'")))?;
    let root = task.root_id.clone().unwrap_or_else(|| task.id.clone());
    Ok(Json(s.ctx().store.relations(&root).await?))
}

/// `GET /api/v1/tasks/{id}/result`: the stored result from the backend.
pub(crate) async fn task_result(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> WebResult<Json<Value>> {
    actions::check_id(&id)?;
    for app in s.apps() {
        if let Some(b) = &app.backend
            && let Some(r) = b.get(&id).await?
        {
            return Ok(Json(json!({
                "task_id": r.task_id, "status": r.status, "result": r.result,
                "traceback": r.traceback, "date_done": r.date_done, "app": app.name,
            })));
        }
    }
    if s.apps().iter().all(|a| a.backend.is_none()) {
        return Err(WebError::Unavailable(
            "no result backend is configured".into(),
        ));
    }
    Err(WebError::NotFound(format!("no stored result for '{id}'")))
}

/// `POST /api/v1/tasks/send`.
pub(crate) async fn send_task(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    body: Result<Json<SendRequest>, axum::extract::rejection::JsonRejection>,
) -> WebResult<Json<Value>> {
    let Json(req) = body.map_err(json_error)?;
    let (id, queue) = actions::send_task(&s, &who, req).await?;
    Ok(Json(json!({ "task_id": id, "queue": queue })))
}

/// A JSON body error as a readable 4xx.
pub(crate) fn json_error(e: axum::extract::rejection::JsonRejection) -> WebError {
    use axum::extract::rejection::JsonRejection as R;
    match e {
        R::BytesRejection(b) if b.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            WebError::TooLarge(0)
        }
        other => WebError::BadRequest(other.body_text()),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    #[serde(default)]
    terminate: bool,
    #[serde(default)]
    signal: Option<String>,
}

/// `POST /api/v1/tasks/{id}/revoke` `{terminate, signal}`.
pub(crate) async fn revoke(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
    body: Option<Json<RevokeBody>>,
) -> WebResult<Json<Value>> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    actions::revoke(&s, &who, &id, b.terminate, b.signal.as_deref()).await?;
    let verb = if b.terminate { "Terminated" } else { "Revoked" };
    Ok(Json(
        json!({ "task_id": id, "message": format!("{verb} '{id}'") }),
    ))
}

/// `POST /api/v1/tasks/{id}/retry`: a new task with the same arguments.
pub(crate) async fn retry(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> WebResult<Json<Value>> {
    let new_id = actions::retry(&s, &who, &id).await?;
    Ok(Json(json!({ "task_id": new_id, "retry_of": id })))
}

/// `GET /api/v1/task-names`: names seen, with counts.
pub(crate) async fn task_names(State(s): State<WebState>) -> WebResult<Json<Value>> {
    Ok(Json(json!(s.ctx().store.task_names().await?)))
}

/// One task registered on some worker, with its own queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Registered {
    pub name: String,
    pub queue: Option<String>,
    pub workers: Vec<String>,
}

/// Every task registered on any worker (from inspect), with its queue.
pub(crate) async fn registered_tasks(s: &WebState, refresh: bool) -> WebResult<Vec<Registered>> {
    let inspected = s.inspect(None, refresh).await?;
    let mut out: std::collections::BTreeMap<String, Registered> = Default::default();
    for (host, info) in &inspected {
        if let Some(Value::Array(reg)) = info.get("registered") {
            for e in reg.iter().filter_map(Value::as_str) {
                let r = RegisteredTask::parse(e);
                let entry = out.entry(r.name.clone()).or_insert_with(|| Registered {
                    name: r.name.clone(),
                    queue: None,
                    workers: Vec::new(),
                });
                if entry.queue.is_none() {
                    entry.queue = r
                        .attribute("queue")
                        .filter(|q| *q != "None")
                        .map(str::to_owned);
                }
                entry.workers.push(host.clone());
            }
        }
    }
    let mut list: Vec<Registered> = out.into_values().collect();
    for r in &mut list {
        if r.queue.is_none() {
            r.queue = actions::own_queue(s, &r.name).await;
        }
    }
    Ok(list)
}

/// `GET /api/v1/registered?refresh=1`.
pub(crate) async fn registered(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<Value>> {
    let refresh = flag(&pairs, "refresh")?;
    let default_queue = s.apps().first().map(|a| a.default_queue.clone());
    Ok(Json(json!({
        "tasks": registered_tasks(&s, refresh).await?,
        "default_queue": default_queue,
    })))
}

/// A worker with its status at the time of the request.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    #[serde(flatten)]
    pub worker: Worker,
    pub online: bool,
}

/// `GET /api/v1/workers`.
pub(crate) async fn workers(State(s): State<WebState>) -> WebResult<Json<Vec<WorkerView>>> {
    let now = cnc_model::now();
    let list = s.ctx().store.workers().await?;
    Ok(Json(
        list.into_iter()
            .map(|w| WorkerView {
                online: w.status_at(now) == cnc_model::WorkerStatus::Online,
                worker: w,
            })
            .collect(),
    ))
}

/// `GET /api/v1/workers/{name}`: the worker, its status history.
pub(crate) async fn worker(
    State(s): State<WebState>,
    Path(name): Path<String>,
) -> WebResult<Json<Value>> {
    let w = s
        .ctx()
        .store
        .worker(&name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown worker '{name}'")))?;
    let history = s.ctx().store.worker_history(&name, 50).await?;
    let online = w.status_at(cnc_model::now()) == cnc_model::WorkerStatus::Online;
    Ok(Json(
        json!({ "worker": w, "online": online, "history": history }),
    ))
}

/// `GET /api/v1/workers/{name}/inspect?refresh=1`: live inspect replies.
pub(crate) async fn worker_inspect(
    State(s): State<WebState>,
    Path(name): Path<String>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<Value>> {
    actions::known_worker(&s, &name).await?;
    let refresh = flag(&pairs, "refresh")?;
    let mut data = s.inspect(Some(&name), refresh).await?;
    data.remove(&name)
        .map(|m| Json(Value::Object(m)))
        .ok_or_else(|| WebError::Unavailable(format!("'{name}' did not answer (is it online?)")))
}

/// `POST /api/v1/workers/{name}/control` `{"action": "pool_grow", "n": 1}`.
pub(crate) async fn worker_control(
    State(s): State<WebState>,
    Extension(who): Extension<Who>,
    Path(name): Path<String>,
    body: Result<Json<Control>, axum::extract::rejection::JsonRejection>,
) -> WebResult<Json<Value>> {
    let Json(cmd) = body.map_err(json_error)?;
    let out = actions::control(&s, &who, &name, cmd).await?;
    Ok(Json(json!(out)))
}

fn stats_scope(pairs: &Pairs) -> WebResult<StatsQuery> {
    let from = param(pairs, "from")
        .map(|v| parse_time("from", v))
        .transpose()?;
    let to = param(pairs, "to")
        .map(|v| parse_time("to", v))
        .transpose()?;
    Ok(StatsQuery {
        name: param(pairs, "name").map(str::to_owned),
        worker: param(pairs, "worker").map(str::to_owned),
        time: (from.is_some() || to.is_some()).then_some(TimeRange { from, to }),
    })
}

/// `GET /api/v1/stats/runtime?name&worker&from&to`.
pub(crate) async fn runtime_stats(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<cnc_model::RuntimeStats>> {
    Ok(Json(
        s.ctx().store.runtime_stats(&stats_scope(&pairs)?).await?,
    ))
}

/// `GET /api/v1/stats/throughput?from&to&bucket&name&worker`.
pub(crate) async fn throughput(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<Value>> {
    let now = cnc_model::now();
    let bucket: u64 = number(&pairs, "bucket")?.unwrap_or(60);
    if bucket == 0 || bucket % 60 != 0 {
        return Err(WebError::BadRequest(
            "bucket must be a positive multiple of 60 seconds".into(),
        ));
    }
    let to = param(&pairs, "to")
        .map(|v| parse_time("to", v))
        .transpose()?
        .unwrap_or(now);
    let from = param(&pairs, "from")
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - 3600.0);
    if from >= to {
        return Err(WebError::BadRequest("from must be before to".into()));
    }
    if (to - from) / bucket as f64 > 10_000.0 {
        return Err(WebError::BadRequest(
            "too many buckets (at most 10,000): widen the bucket".into(),
        ));
    }
    let mut scope = stats_scope(&pairs)?;
    scope.time = None;
    let q = ThroughputQuery {
        scope,
        from,
        to,
        bucket_seconds: bucket,
    };
    Ok(Json(json!(s.ctx().store.throughput(&q).await?)))
}

/// `GET /api/v1/stats/states`.
pub(crate) async fn state_distribution(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<Value>> {
    Ok(Json(json!(
        s.ctx()
            .store
            .state_distribution(&stats_scope(&pairs)?)
            .await?
    )))
}

/// `GET /api/v1/stats/names`.
pub(crate) async fn name_distribution(
    State(s): State<WebState>,
    Query(pairs): Query<Pairs>,
) -> WebResult<Json<Value>> {
    Ok(Json(json!(
        s.ctx()
            .store
            .name_distribution(&stats_scope(&pairs)?)
            .await?
    )))
}

/// The dashboard's numbers.
#[derive(Debug, Serialize)]
pub(crate) struct Dashboard {
    pub workers_online: usize,
    pub workers_offline: usize,
    pub states: Vec<cnc_model::StateCount>,
    pub total: u64,
    /// Tasks finished per second over the last full minute and the current one.
    pub throughput_per_sec: f64,
    pub finished_recent: u64,
    pub failed_recent: u64,
    pub latest: Vec<cnc_model::Task>,
    pub workers: Vec<WorkerView>,
}

pub(crate) async fn dashboard_data(s: &WebState) -> WebResult<Dashboard> {
    let now = cnc_model::now();
    let store = &s.ctx().store;
    let minute = (now / 60.0).floor() * 60.0;
    let q = ThroughputQuery {
        scope: StatsQuery::default(),
        from: minute - 60.0,
        to: minute + 60.0,
        bucket_seconds: 60,
    };
    let all = StatsQuery::default();
    let newest = cnc_model::TaskQuery::newest(Default::default(), 15);
    let (workers, states, buckets, latest) = futures::try_join!(
        store.workers(),
        store.state_distribution(&all),
        store.throughput(&q),
        store.tasks(&newest),
    )?;
    let workers: Vec<WorkerView> = workers
        .into_iter()
        .map(|w| WorkerView {
            online: w.status_at(now) == cnc_model::WorkerStatus::Online,
            worker: w,
        })
        .collect();
    let online = workers.iter().filter(|w| w.online).count();
    // The last full minute plus the current one so far, per second of that
    // window: reacts within seconds and does not drop to 0 at each minute.
    let finished: u64 = buckets.iter().map(|b| b.finished()).sum();
    let failed: u64 = buckets.iter().map(|b| b.failed).sum();
    let window = 60.0 + (now - minute).clamp(0.0, 60.0);
    Ok(Dashboard {
        workers_online: online,
        workers_offline: workers.len() - online,
        total: states.iter().map(|c| c.count).sum(),
        states,
        throughput_per_sec: finished as f64 / window,
        finished_recent: finished,
        failed_recent: failed,
        latest: latest.tasks,
        workers,
    })
}

/// `GET /api/v1/dashboard`.
pub(crate) async fn dashboard(State(s): State<WebState>) -> WebResult<Json<Dashboard>> {
    Ok(Json(dashboard_data(&s).await?))
}

/// `GET /api/v1/queues`: depth of every known queue.
pub(crate) async fn queues(State(s): State<WebState>) -> WebResult<Json<Value>> {
    let mut out = Vec::new();
    for app in s.brokers() {
        let names = cnc_broker::control::discover_queues(app.broker.clone()).await?;
        for q in names {
            let d = app.broker.queue_depth(&q).await?;
            out.push(json!({
                "app": app.name, "name": d.queue, "messages": d.messages,
                "by_priority": d.by_priority, "consumers": d.consumers,
            }));
        }
    }
    Ok(Json(Value::Array(out)))
}
