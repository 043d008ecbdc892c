//! A connected Celery app: what the service, the web UI and the exporters
//! use to reach one app's broker and result backend.

use std::sync::Arc;

use cnc_model::config::CeleryApp;

use crate::{Broker, BrokerOptions, BrokerResult, ControlClient, ResultBackend, StreamStats};

/// One configured app, connected. Apps that share a broker URL share the
/// same [`Broker`] (and the same event listener and [`StreamStats`]).
#[derive(Debug, Clone)]
pub struct AppConnection {
    /// The app's name from the config.
    pub name: String,
    /// The broker URL with any password redacted.
    pub broker_url: String,
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// Remote control over the broker.
    pub control: ControlClient,
    /// The result backend, when configured.
    pub backend: Option<Arc<dyn ResultBackend>>,
    /// Queue for tasks sent without one (`celery` unless configured).
    pub default_queue: String,
    /// Counters of the broker's event listener (shared by apps on the same
    /// broker).
    pub stream_stats: Arc<StreamStats>,
}

impl AppConnection {
    /// Connect `app`'s broker and backend. Use [`AppConnection::with_broker`]
    /// to share a broker between apps.
    pub async fn connect(app: &CeleryApp) -> BrokerResult<Self> {
        let broker = crate::connect(
            &app.broker_url,
            BrokerOptions {
                key_prefix: app.key_prefix.clone().unwrap_or_default(),
                connection_name: Some(format!("celery-cnc {}", app.name)),
            },
        )
        .await?;
        Self::with_broker(app, broker, StreamStats::new()).await
    }

    /// Use an already connected broker (and its listener's stats); connect
    /// only the backend.
    pub async fn with_broker(
        app: &CeleryApp,
        broker: Arc<dyn Broker>,
        stream_stats: Arc<StreamStats>,
    ) -> BrokerResult<Self> {
        let backend = match &app.result_backend {
            Some(url) => Some(crate::connect_backend(url).await?),
            None => None,
        };
        Ok(Self {
            name: app.name.clone(),
            broker_url: crate::url::redact(&app.broker_url),
            control: ControlClient::new(broker.clone()),
            broker,
            backend,
            default_queue: app
                .default_queue
                .clone()
                .unwrap_or_else(|| "celery".to_owned()),
            stream_stats,
        })
    }
}
