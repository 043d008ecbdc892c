//! # cnc-web: the celery-cnc web UI and HTTP API
//!
//! One axum [`router`] serves everything:
//!
//! * **Pages**, rendered on the server from [minijinja] templates embedded in
//!   the binary (`templates/`), with one stylesheet and one vanilla script
//!   (`static/`), no CDN and no front-end build. Each page is a layout plus a
//!   *partial*; live updates fetch the same partial again (`/partials/...`)
//!   and swap it in, so the first render and every update share one template
//!   and one escaping path.
//! * **Own JSON API** under `/api/v1/...` (documented in `/api/openapi.json`),
//!   `/api/components`, and a Server-Sent Events stream `/api/v1/events` fed
//!   by the in-process [`cnc_model::bus::EventBus`]. A client that falls
//!   behind gets a `resync` event (its page reloads its partials) instead of a
//!   silent gap; pages fall back to polling when SSE is unavailable.
//! * **Flower-compatible API** (`/api/workers`, `/api/tasks`, `/api/task/...`,
//!   `/api/worker/...`, `/api/queues/length`, `/healthcheck`): same paths,
//!   parameters and JSON shapes as Flower 2.2, so scripts keep working.
//!
//! ## Security (the UI can kill workers: it is a control plane)
//!
//! Every request goes through [`security`]: the `Host` header must name this
//! service (no DNS rebinding), credentials are checked when configured
//! (basic auth, Flower's `--basic-auth`, or a bearer token), and every POST
//! needs a CSRF token (`X-CSRF-Token` header, from the page's `<meta>`, or
//! `GET /api/v1/csrf`) and a same-origin request, and is refused in read-only
//! mode. Responses carry a Content-Security-Policy without inline scripts
//! (templates have no `<script>` bodies and no `on*` attributes). Every
//! action is logged on target `celery_cnc::frontend` with who did it.
//!
//! ## Embedding
//!
//! [`WebComponent`] is what the orchestrator runs (name `frontend`). To mount
//! the UI in your own axum app, build a [`WebState`] and nest [`router`]; set
//! [`WebState::with_base_path`] to the prefix so links and scripts resolve:
//!
//! ```no_run
//! # fn demo(ctx: cnc_model::component::Context) {
//! let state = cnc_web::WebState::new(Default::default(), Vec::new(), ctx)
//!     .with_base_path("/cnc");
//! let app: axum::Router = axum::Router::new().nest("/cnc", cnc_web::router(state));
//! # let _ = app; }
//! ```

mod actions;
mod api;
mod assets;
mod component;
pub mod error;
mod flower;
mod live;
mod openapi;
mod pages;
pub mod pyrepr;
pub mod security;
mod state;
mod views;

pub use component::WebComponent;
pub use error::{WebError, WebResult};
pub use state::WebState;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// Log target of every action and access decision.
pub const LOG_TARGET: &str = "celery_cnc::frontend";

/// The whole UI and API as one router (pages, own API, Flower API, SSE,
/// static assets), with the security layers applied.
pub fn router(state: WebState) -> Router {
    let limit = state.config().max_body_bytes;
    Router::new()
        // Pages and their partials.
        .route("/", get(pages::dashboard))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{id}", get(pages::task))
        .route("/task/{id}", get(pages::task_flower_alias))
        .route("/workers", get(pages::workers))
        .route("/workers/{name}", get(pages::worker))
        .route("/worker/{name}", get(pages::worker_flower_alias))
        .route("/send", get(pages::send))
        .route("/partials/dashboard", get(pages::dashboard_partial))
        .route("/partials/tasks", get(pages::tasks_partial))
        .route("/partials/tasks/{id}", get(pages::task_partial))
        .route("/partials/workers", get(pages::workers_partial))
        .route("/partials/workers/{name}", get(pages::worker_partial))
        .route("/static/{file}", get(assets::serve))
        // Own API.
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/components", get(api::components))
        .route("/api/v1/csrf", get(api::csrf))
        .route("/api/v1/events", get(live::events))
        .route("/api/v1/dashboard", get(api::dashboard))
        .route("/api/v1/tasks", get(api::tasks))
        .route("/api/v1/tasks/send", post(api::send_task))
        .route("/api/v1/tasks/{id}", get(api::task))
        .route("/api/v1/tasks/{id}/events", get(api::task_events))
        .route("/api/v1/tasks/{id}/relations", get(api::task_relations))
        .route("/api/v1/tasks/{id}/result", get(api::task_result))
        .route("/api/v1/tasks/{id}/revoke", post(api::revoke))
        .route("/api/v1/tasks/{id}/retry", post(api::retry))
        .route("/api/v1/task-names", get(api::task_names))
        .route("/api/v1/registered", get(api::registered))
        .route("/api/v1/workers", get(api::workers))
        .route("/api/v1/workers/{name}", get(api::worker))
        .route("/api/v1/workers/{name}/inspect", get(api::worker_inspect))
        .route("/api/v1/workers/{name}/control", post(api::worker_control))
        .route("/api/v1/stats/runtime", get(api::runtime_stats))
        .route("/api/v1/stats/throughput", get(api::throughput))
        .route("/api/v1/stats/states", get(api::state_distribution))
        .route("/api/v1/stats/names", get(api::name_distribution))
        .route("/api/v1/queues", get(api::queues))
        // Flower-compatible API.
        .route("/healthcheck", get(flower::healthcheck))
        .route("/api/workers", get(flower::workers))
        .route("/api/tasks", get(flower::tasks))
        .route("/api/task/types", get(flower::task_types))
        .route("/api/task/info/{id}", get(flower::task_info))
        .route("/api/task/result/{id}", get(flower::task_result))
        .route("/api/task/async-apply/{name}", post(flower::async_apply))
        .route("/api/task/send-task/{name}", post(flower::send_task))
        .route("/api/task/apply/{name}", post(flower::apply))
        .route("/api/task/revoke/{id}", post(flower::revoke))
        .route("/api/task/abort/{id}", post(flower::abort))
        .route("/api/task/rate-limit/{name}", post(flower::rate_limit))
        .route("/api/task/timeout/{name}", post(flower::timeout))
        .route("/api/worker/shutdown/{name}", post(flower::shutdown))
        .route(
            "/api/worker/pool/restart/{name}",
            post(flower::pool_restart),
        )
        .route("/api/worker/pool/grow/{name}", post(flower::pool_grow))
        .route("/api/worker/pool/shrink/{name}", post(flower::pool_shrink))
        .route(
            "/api/worker/pool/autoscale/{name}",
            post(flower::pool_autoscale),
        )
        .route(
            "/api/worker/queue/add-consumer/{name}",
            post(flower::add_consumer),
        )
        .route(
            "/api/worker/queue/cancel-consumer/{name}",
            post(flower::cancel_consumer),
        )
        .route("/api/queues/length", get(flower::queues_length))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}
