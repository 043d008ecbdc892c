//! OTLP transports: gRPC (tonic, the generated collector clients) and
//! HTTP with protobuf bodies (hyper; `POST <endpoint>/v1/traces` and
//! `/v1/metrics`, as `OTEL_EXPORTER_OTLP_ENDPOINT` is interpreted).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cnc_model::config::{OpenTelemetryConfig, OtlpProtocol};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

use crate::error::{MetricsError, MetricsResult};

/// How long one export may take.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected (lazily) OTLP transport.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    Grpc {
        traces: TraceServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
        headers: MetadataMap,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        traces: Uri,
        metrics: Uri,
        headers: Vec<(header::HeaderName, header::HeaderValue)>,
    },
}

fn check_scheme(endpoint: &str) -> MetricsResult<()> {
    if endpoint.starts_with("https://") {
        return Err(MetricsError::config(format!(
            "OTLP endpoint {endpoint}: https is not supported by this build (no TLS); use a local collector over http"
        )));
    }
    if !endpoint.starts_with("http://") {
        return Err(MetricsError::config(format!(
            "OTLP endpoint {endpoint:?} must start with http://"
        )));
    }
    Ok(())
}

impl Transport {
    /// Validate the config and prepare the client; connects lazily, so a
    /// dead endpoint is not an error here.
    pub(crate) fn new(cfg: &OpenTelemetryConfig) -> MetricsResult<Self> {
        let endpoint = cfg.endpoint.trim_end_matches('/').to_owned();
        check_scheme(&endpoint)?;
        match cfg.protocol {
            OtlpProtocol::Grpc => {
                let ep = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| {
                        MetricsError::config(format!("OTLP endpoint {endpoint:?}")).with_source(e)
                    })?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(EXPORT_TIMEOUT);
                let channel = ep.connect_lazy();
                Ok(Self::Grpc {
                    traces: TraceServiceClient::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                    headers: grpc_headers(&cfg.headers)?,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                // Accept a signal URL too (`…/v1/traces`): use its base.
                let endpoint = endpoint
                    .strip_suffix("/v1/traces")
                    .or_else(|| endpoint.strip_suffix("/v1/metrics"))
                    .unwrap_or(&endpoint)
                    .to_owned();
                let parse = |path: &str| -> MetricsResult<Uri> {
                    format!("{endpoint}{path}").parse::<Uri>().map_err(|e| {
                        MetricsError::config(format!("OTLP endpoint {endpoint:?}")).with_source(e)
                    })
                };
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(Duration::from_secs(5)));
                let client = Client::builder(TokioExecutor::new()).build(connector);
                Ok(Self::Http {
                    client,
                    traces: parse("/v1/traces")?,
                    metrics: parse("/v1/metrics")?,
                    headers: http_headers(&cfg.headers)?,
                })
            }
        }
    }

    /// Send spans.
    pub(crate) async fn export_traces(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> MetricsResult<()> {
        match self {
            Self::Grpc {
                traces, headers, ..
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                r.set_timeout(EXPORT_TIMEOUT);
                traces
                    .export(r)
                    .await
                    .map(|_| ())
                    .map_err(|e| MetricsError::export("OTLP/gRPC trace export").with_source(e))
            }
            Self::Http {
                client,
                traces,
                headers,
                ..
            } => post(client, traces, headers, req.encode_to_vec()).await,
        }
    }

    /// Send metrics.
    pub(crate) async fn export_metrics(
        &mut self,
        req: ExportMetricsServiceRequest,
    ) -> MetricsResult<()> {
        match self {
            Self::Grpc {
                metrics, headers, ..
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                r.set_timeout(EXPORT_TIMEOUT);
                metrics
                    .export(r)
                    .await
                    .map(|_| ())
                    .map_err(|e| MetricsError::export("OTLP/gRPC metrics export").with_source(e))
            }
            Self::Http {
                client,
                metrics,
                headers,
                ..
            } => post(client, metrics, headers, req.encode_to_vec()).await,
        }
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &Uri,
    headers: &[(header::HeaderName, header::HeaderValue)],
    body: Vec<u8>,
) -> MetricsResult<()> {
    let mut b = Request::post(uri.clone()).header(header::CONTENT_TYPE, "application/x-protobuf");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    let req = b.body(Full::new(Bytes::from(body))).map_err(|e| {
        MetricsError::export(format!("building the request to {uri}")).with_source(e)
    })?;
    let send = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| MetricsError::export(format!("OTLP/HTTP POST {uri}")).with_source(e))?;
        let status = resp.status();
        // Read the body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(MetricsError::export(format!(
                "OTLP/HTTP POST {uri}: status {status}"
            )))
        }
    };
    match tokio::time::timeout(EXPORT_TIMEOUT, send).await {
        Ok(r) => r,
        Err(_) => Err(MetricsError::timeout(format!(
            "OTLP/HTTP POST {uri} timed out"
        ))),
    }
}

fn grpc_headers(h: &BTreeMap<String, String>) -> MetricsResult<MetadataMap> {
    let mut m = MetadataMap::new();
    for (k, v) in h {
        let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| MetricsError::config(format!("OTLP header name {k:?}")).with_source(e))?;
        let value = AsciiMetadataValue::try_from(v.as_str()).map_err(|e| {
            MetricsError::config(format!("OTLP header {k}: bad value")).with_source(e)
        })?;
        m.insert(key, value);
    }
    Ok(m)
}

fn http_headers(
    h: &BTreeMap<String, String>,
) -> MetricsResult<Vec<(header::HeaderName, header::HeaderValue)>> {
    h.iter()
        .map(|(k, v)| {
            let key = header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                MetricsError::config(format!("OTLP header name {k:?}")).with_source(e)
            })?;
            let value = header::HeaderValue::from_str(v).map_err(|e| {
                MetricsError::config(format!("OTLP header {k}: bad value")).with_source(e)
            })?;
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_signal_paths() {
        for endpoint in ["http://c:4318", "http://c:4318/", "http://c:4318/v1/traces"] {
            let c = OpenTelemetryConfig {
                endpoint: endpoint.into(),
                protocol: OtlpProtocol::HttpProtobuf,
                ..OpenTelemetryConfig::default()
            };
            match Transport::new(&c) {
                Ok(Transport::Http {
                    traces, metrics, ..
                }) => {
                    assert_eq!(traces.to_string(), "http://c:4318/v1/traces");
                    assert_eq!(metrics.to_string(), "http://c:4318/v1/metrics");
                }
                other => panic!("{endpoint}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_config() {
        let mut c = OpenTelemetryConfig {
            endpoint: "https://otel.example:4317".into(),
            ..OpenTelemetryConfig::default()
        };
        assert!(Transport::new(&c).is_err());
        c.endpoint = "ftp://x".into();
        assert!(Transport::new(&c).is_err());
        c.endpoint = "http://127.0.0.1:4318".into();
        c.protocol = OtlpProtocol::HttpProtobuf;
        c.headers.insert("bad header".into(), "x".into());
        assert!(Transport::new(&c).is_err());
    }
}
