//! The `frontend` component: binds in `build`, serves in `run`.

use std::net::SocketAddr;

use async_trait::async_trait;
use cnc_broker::AppConnection;
use cnc_model::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, Context, Link,
};
use cnc_model::config::FrontendConfig;
use serde_json::json;
use tokio::net::TcpListener;

use crate::state::WebState;

/// The web UI as a supervised component (name `frontend`).
pub struct WebComponent {
    config: FrontendConfig,
    apps: Vec<AppConnection>,
    listener: Option<TcpListener>,
    state: Option<WebState>,
    local_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for WebComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebComponent")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl WebComponent {
    /// A component serving `config` for the connected `apps`.
    pub fn new(config: FrontendConfig, apps: Vec<AppConnection>) -> Self {
        Self {
            config,
            apps,
            listener: None,
            state: None,
            local_addr: None,
        }
    }

    /// The bound address, once `build` ran (the real port when `port` is 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The URL of the UI, once bound.
    pub fn url(&self) -> Option<String> {
        self.local_addr.map(|a| match a {
            SocketAddr::V6(v6) => format!("http://[{}]:{}/", v6.ip(), v6.port()),
            SocketAddr::V4(v4) => format!("http://{v4}/"),
        })
    }

    /// The router state, once built (to mount the same UI elsewhere).
    pub fn state(&self) -> Option<&WebState> {
        self.state.as_ref()
    }
}

#[async_trait]
impl Component for WebComponent {
    fn name(&self) -> &str {
        "frontend"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        let host = self.config.host.trim();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = format!("{host}:{}", self.config.port);
        let bind = if host.contains(':') {
            format!("[{host}]:{}", self.config.port)
        } else {
            addr.clone()
        };
        let listener = TcpListener::bind(&bind).await.map_err(|e| {
            ComponentError::new(format!("binding the web UI to {bind}")).with_source(e)
        })?;
        self.local_addr = listener.local_addr().ok();
        self.listener = Some(listener);
        self.state = Some(WebState::new(
            self.config.clone(),
            self.apps.clone(),
            ctx.clone(),
        ));
        tracing::info!(target: crate::LOG_TARGET, url = self.url().as_deref().unwrap_or("-"), "web UI bound");
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let (Some(listener), Some(state)) = (self.listener.take(), self.state.clone()) else {
            return Err(ComponentError::fatal("frontend: run called before build"));
        };
        let app = crate::router(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|e| ComponentError::new("web UI server failed").with_source(e))
    }

    async fn stop(&mut self) -> ComponentResult<()> {
        self.listener = None;
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        let c = &self.config;
        ComponentInfo {
            config: json!({
                "host": c.host,
                "port": c.port,
                "allowed_hosts": c.allowed_hosts,
                "basic_auth": c.basic_auth.as_ref().map(|b| format!("{}:***", b.split(':').next().unwrap_or_default())),
                "bearer_token": c.bearer_token.as_ref().map(|_| "***"),
                "read_only": c.read_only,
                "polling_interval_ms": c.polling_interval.as_millis() as u64,
                "max_body_bytes": c.max_body_bytes,
            }),
            links: self
                .url()
                .map(|url| {
                    vec![Link {
                        label: "Web UI".into(),
                        url,
                    }]
                })
                .unwrap_or_default(),
        }
    }
}
