//! Telemetry: structured logs, OpenTelemetry traces over OTLP, Prometheus metrics, and the
//! W3C trace context that carries a trace across the broker.

pub mod logging;
pub mod metrics;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, Settings};

/// A span that exists only for traces (producer, consumer, database client): made when spans
/// are exported, `Span::none()` otherwise, so with OTLP off a request pays for exactly one span
/// (the server span, whose fields its log line carries). Events inside such spans name what
/// they are about themselves (message ids), so logs lose nothing.
pub fn trace_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if propagation::exporting() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// Owns the trace pipeline and the log writer; `shutdown` flushes both.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Dropping it writes out the log lines still queued for stdout.
    log_writer: Option<logging::LogWriterGuard>,
}

impl Telemetry {
    /// Installs logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the OTLP span
    /// exporter. Without an endpoint no OpenTelemetry layer is installed at all, so tracing
    /// costs nothing beyond the log lines. Must run inside the Tokio runtime (the gRPC
    /// exporter needs it).
    pub fn init(settings: &Settings) -> anyhow::Result<Self> {
        let filter = EnvFilter::try_from_env("RUST_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,tonic=warn"));
        let (fmt, log_writer) = match settings.log_format {
            LogFormat::Json => {
                let (layer, guard) = logging::json_layer();
                (layer.boxed(), Some(guard))
            }
            LogFormat::Pretty => (
                tracing_subscriber::fmt::layer().with_target(false).boxed(),
                None,
            ),
        };

        let provider = match &settings.otlp_endpoint {
            None => None,
            Some(endpoint) => {
                use opentelemetry_otlp::WithExportConfig;
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(Duration::from_secs(5))
                    .build()?;
                let resource = opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build();
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(resource)
                        .build(),
                )
            }
        };
        propagation::install(provider.is_some());
        let otel = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("challenge-latam-api"))
                .with_error_records_to_exceptions(true)
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(otel)
            .with(fmt)
            .try_init()?;
        Ok(Self {
            provider,
            log_writer,
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. The SDK's shutdown blocks its caller, so it runs on a
    /// blocking thread with a deadline: a collector that is gone cannot hang the exit.
    pub async fn shutdown(self, deadline: Duration) {
        let Self {
            provider,
            log_writer,
        } = self;
        if let Some(provider) = provider {
            flush_spans(provider, deadline).await;
        }
        // Last: the lines above are queued too.
        drop(log_writer);
    }
}

async fn flush_spans(provider: SdkTracerProvider, deadline: Duration) {
    let task = tokio::task::spawn_blocking(move || provider.shutdown());
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "span exporter shutdown failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "span exporter shutdown panicked"),
        Err(_) => tracing::warn!("span exporter shutdown timed out; some spans are lost"),
    }
}
