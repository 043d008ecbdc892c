//! The guard every request passes: Host check, authentication, and for
//! state-changing requests read-only mode, same-origin and CSRF checks; plus
//! the security headers on every response.
//!
//! CSRF: the token is random per process and served to pages in a `<meta>`
//! tag (scripts send it as `X-CSRF-Token`) and to scripts at
//! `GET /api/v1/csrf`. Requests authenticated with the bearer token are
//! exempt from the CSRF and origin checks: a browser never attaches a bearer
//! token by itself, so a cross-site page cannot forge one (basic auth, which
//! browsers do replay, gets no such exemption).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::WebError;
use crate::state::WebState;

/// The Content-Security-Policy of every response: scripts and styles only
/// from this origin, nothing inline.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Who made a request, for the action log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// `user` (basic auth), `bearer-token` or `anonymous`.
    pub user: String,
    /// Peer address when known.
    pub addr: Option<SocketAddr>,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{} from {a}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// Constant-time comparison (no early exit on the first differing byte).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Host part of a `Host` header or an origin's authority, lowercased,
/// without the port.
fn host_only(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h.to_owned(),
        _ => a,
    }
}

/// True when `host` (a `Host` header) names this service.
pub fn host_allowed(state: &WebState, host: &str) -> bool {
    let h = host_only(host);
    if h.is_empty() {
        return false;
    }
    let cfg = state.config();
    let bind = host_only(&cfg.host);
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !matches!(bind.as_str(), "0.0.0.0" | "::" | "") {
        names.push(bind);
    }
    for a in &cfg.allowed_hosts {
        if a.trim() == "*" {
            return true;
        }
        names.push(host_only(a));
    }
    names.contains(&h)
}

enum Auth {
    Anonymous,
    Basic(String),
    Bearer,
}

fn authenticate(state: &WebState, headers: &HeaderMap) -> Result<Auth, WebError> {
    let cfg = state.config();
    if cfg.basic_auth.is_none() && cfg.bearer_token.is_none() {
        return Ok(Auth::Anonymous);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    if let (Some(token), Some(sent)) = (&cfg.bearer_token, given.strip_prefix("Bearer ")) {
        if same_secret(sent.trim().as_bytes(), token.as_bytes()) {
            return Ok(Auth::Bearer);
        }
        return Err(WebError::Unauthorized);
    }
    if let (Some(pair), Some(b64)) = (&cfg.basic_auth, given.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| WebError::Unauthorized)?;
        if same_secret(&decoded, pair.as_bytes()) {
            let user = pair.split(':').next().unwrap_or_default().to_owned();
            return Ok(Auth::Basic(user));
        }
    }
    Err(WebError::Unauthorized)
}

/// True when the request comes from a page of this origin (or from a
/// non-browser client, which sends neither `Origin` nor `Sec-Fetch-Site`).
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(origin) = get(header::ORIGIN) {
        let authority = origin.split("://").nth(1).unwrap_or_default();
        return authority.eq_ignore_ascii_case(host.trim());
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    if let Some(referer) = get(header::REFERER) {
        let authority = referer
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default();
        return authority.eq_ignore_ascii_case(host.trim());
    }
    true
}

fn log_denied(who: &str, method: &Method, path: &str, why: &str) {
    tracing::warn!(target: crate::LOG_TARGET, who, %method, path, why, "request refused");
}

/// The middleware: see the module docs.
pub async fn guard(State(state): State<WebState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !host_allowed(&state, &host) {
        log_denied("-", &method, &path, "host not allowed");
        return with_headers(
            WebError::Forbidden(format!(
                "Host '{}' is not allowed: add it to frontend.allowed_hosts",
                host_only(&host)
            ))
            .into_response(),
        );
    }
    let auth = if path == "/healthcheck" {
        Ok(Auth::Anonymous)
    } else {
        authenticate(&state, &headers)
    };
    let auth = match auth {
        Ok(a) => a,
        Err(e) => {
            log_denied("-", &method, &path, "bad or missing credentials");
            return with_headers(e.into_response());
        }
    };
    let (user, bearer) = match &auth {
        Auth::Anonymous => ("anonymous".to_owned(), false),
        Auth::Basic(u) => (u.clone(), false),
        Auth::Bearer => ("bearer-token".to_owned(), true),
    };
    let who = Who { user, addr };
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let refuse = |why: &str, err: WebError| {
            log_denied(&who.to_string(), &method, &path, why);
            with_headers(err.into_response())
        };
        if state.config().read_only {
            return refuse(
                "read-only",
                WebError::Forbidden("read-only mode: actions are disabled".into()),
            );
        }
        if !bearer {
            if !same_origin(&headers, &host) {
                return refuse(
                    "cross-origin",
                    WebError::Forbidden("cross-origin request refused".into()),
                );
            }
            let token = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same_secret(token.as_bytes(), state.csrf_token().as_bytes()) {
                return refuse(
                    "csrf",
                    WebError::Forbidden(
                        "missing or wrong CSRF token: send the X-CSRF-Token header (GET /api/v1/csrf gives it)"
                            .into(),
                    ),
                );
            }
        }
    }
    req.extensions_mut().insert(who);
    with_headers(next.run(req).await)
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_secrets() {
        assert_eq!(host_only("LocalHost:8000"), "localhost");
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("example.com"), "example.com");
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
