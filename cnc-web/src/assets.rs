//! Static assets, embedded in the binary.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::WebError;

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");

/// `GET /static/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return WebError::NotFound(format!("no asset '{file}'")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
