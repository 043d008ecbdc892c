//! The components that live in other crates: the web UI (`cnc-web`,
//! feature `web`) and the exporters (`cnc-metrics`, feature `metrics`).
//! A section that is `None` builds nothing; a section that is set while
//! its feature is compiled out is reported at start, never silently
//! ignored.

use cnc_broker::AppConnection;
use cnc_model::component::Component;
use cnc_model::config::CeleryCncConfig;

#[cfg(not(all(feature = "web", feature = "metrics")))]
const TARGET: &str = "celery_cnc::orchestrator";

/// Prometheus and OpenTelemetry, as configured.
pub(crate) fn exporters(
    config: &CeleryCncConfig,
    apps: &[AppConnection],
) -> Vec<Box<dyn Component>> {
    #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
    let mut out: Vec<Box<dyn Component>> = Vec::new();
    #[cfg(feature = "metrics")]
    {
        let prom = config
            .prometheus
            .as_ref()
            .map(|p| cnc_metrics::PrometheusComponent::new(p.clone(), apps.to_vec()));
        let otel = config
            .open_telemetry
            .as_ref()
            .map(|o| cnc_metrics::OtelComponent::new(o.clone()));
        // OTLP drops show on the scrape page: the endpoint being down is
        // exactly when they matter.
        if let (Some(p), Some(o)) = (&prom, &otel) {
            p.exporter().attach_otel(o.exporter().stats());
        }
        if let Some(p) = prom {
            out.push(Box::new(p));
        }
        if let Some(o) = otel {
            out.push(Box::new(o));
        }
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = apps;
        if config.prometheus.is_some() || config.open_telemetry.is_some() {
            tracing::error!(
                target: TARGET,
                "prometheus/open_telemetry are configured but this build has no `metrics` feature; they are off"
            );
        }
    }
    out
}

/// The web UI, as configured.
pub(crate) fn frontend(
    config: &CeleryCncConfig,
    apps: &[AppConnection],
) -> Vec<Box<dyn Component>> {
    #[cfg(feature = "web")]
    {
        config
            .frontend
            .as_ref()
            .map(|f| {
                Box::new(cnc_web::WebComponent::new(f.clone(), apps.to_vec())) as Box<dyn Component>
            })
            .into_iter()
            .collect()
    }
    #[cfg(not(feature = "web"))]
    {
        let _ = apps;
        if config.frontend.is_some() {
            tracing::warn!(
                target: TARGET,
                "the frontend is configured but this build has no `web` feature; it is off"
            );
        }
        Vec::new()
    }
}
