//! One error type for every handler: client errors are shown as they are,
//! internal ones as a generic message with the real error logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cnc_broker::{BrokerError, ErrorKind};
use cnc_model::{StoreError, StoreErrorKind};

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The request is malformed (bad filter, bad JSON, bad number).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that id or name.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed (read-only mode, CSRF, origin, host).
    #[error("{0}")]
    Forbidden(String),
    /// Credentials missing or wrong.
    #[error("authentication required")]
    Unauthorized,
    /// The body is too large.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// A worker refused a command (the reason comes from the worker).
    #[error("{0}")]
    Refused(String),
    /// A needed service (result backend, broker) is not configured or not reachable.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error("store error")]
    Store(#[source] StoreError),
    /// The broker failed.
    #[error("broker error")]
    Broker(#[source] BrokerError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            StoreErrorKind::InvalidInput => Self::BadRequest(e.to_string()),
            StoreErrorKind::Unsupported => {
                Self::Unavailable(format!("not supported by this store: {e}"))
            }
            _ => Self::Store(e),
        }
    }
}

impl From<BrokerError> for WebError {
    fn from(e: BrokerError) -> Self {
        match e.kind() {
            ErrorKind::InvalidInput => Self::BadRequest(e.to_string()),
            _ => Self::Broker(e),
        }
    }
}

impl WebError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) | Self::Refused(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Broker(_) => StatusCode::BAD_GATEWAY,
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message safe to show: the real one for client errors, a generic
    /// one (with the real one logged) for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            Self::Store(e) => {
                tracing::error!(target: "celery_cnc::frontend", error = %chain(e), "store failure");
                "the store failed to answer; see the service log".to_owned()
            }
            Self::Broker(e) => {
                tracing::warn!(target: "celery_cnc::frontend", error = %chain(e), "broker failure");
                format!("broker error: {e}")
            }
            Self::Internal(m) => {
                tracing::error!(target: "celery_cnc::frontend", error = %m, "internal error");
                "internal error; see the service log".to_owned()
            }
            other => other.to_string(),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.public_message() });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"celery-cnc\""),
            );
        }
        resp
    }
}

/// Result of handlers.
pub type WebResult<T> = Result<T, WebError>;
