//! Telemetry: structured logs, OpenTelemetry traces over OTLP, Prometheus metrics, and the
//! W3C trace context that carries a trace across the broker.

pub mod logging;
pub mod metrics;
pub mod otlp_metrics;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, Settings};

/// A span that exists only for traces (producer, consumer, database client): made when spans
/// are exported, `Span::none()` otherwise, so with OTLP off a request makes no span at all (the
/// server span is made the same way in `http::observe`; the request's log fields do not need
/// it). Events inside such spans name what they are about themselves (message ids), so logs
/// lose nothing.
pub fn trace_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if propagation::exporting() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// Owns the trace and metric pipelines and the log writer; `shutdown` flushes them.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
    /// Dropping it writes out the log lines still queued for stdout.
    log_writer: Option<logging::LogWriterGuard>,
}

/// What is logged when `RUST_LOG` is unset or invalid.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,tonic=warn";

/// The level filter from `RUST_LOG` (default [`DEFAULT_FILTER`]): a `Targets` filter when it holds only `target=level`
/// directives (the default does), else an `EnvFilter`. `Targets` decides once per callsite;
/// `EnvFilter` also takes a read lock on one shared map on every span enter, exit and close,
/// which both worker threads contend for several times per request. Span and field
/// directives (`[span{field=value}]=debug`) still work, through `EnvFilter`.
fn filter_of(spec: Option<String>) -> (Option<Targets>, Option<EnvFilter>) {
    let spec = spec.unwrap_or_else(|| DEFAULT_FILTER.into());
    // `Targets` would take `[span]` as a target name and silently ignore the directive.
    if !spec.contains(['[', '{']) {
        if let Ok(targets) = spec.parse::<Targets>() {
            return (Some(targets), None);
        }
    }
    match EnvFilter::try_new(&spec) {
        Ok(env) => (None, Some(env)),
        Err(_) => (DEFAULT_FILTER.parse().ok(), None),
    }
}

impl Telemetry {
    /// Installs logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the OTLP span and
    /// metric exporters (metrics every `OTEL_METRIC_EXPORT_INTERVAL` ms, 10 s by default:
    /// Datadog's own interval). Every setting comes from `settings`; the SDK itself still reads
    /// `OTEL_RESOURCE_ATTRIBUTES`. Without an endpoint no OpenTelemetry layer is installed at all, so tracing
    /// costs nothing beyond the log lines. Must run inside the Tokio runtime (the gRPC
    /// exporter needs it).
    pub fn init(settings: &Settings) -> anyhow::Result<Self> {
        let (targets, env_filter) = filter_of(settings.rust_log.clone());
        let (fmt, log_writer) = match settings.log_format {
            LogFormat::Json => {
                let project = settings.gcp_project.as_deref();
                let (layer, guard) = logging::json_layer(project, settings.log_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("LOG_FILE: cannot open it: {e}"))?;
                (layer.boxed(), Some(guard))
            }
            LogFormat::Pretty => (
                tracing_subscriber::fmt::layer().with_target(false).boxed(),
                None,
            ),
        };

        let (provider, meters) = match &settings.otlp_endpoint {
            None => (None, None),
            Some(endpoint) => {
                use opentelemetry_otlp::WithExportConfig;
                // Service name and version, plus what OTEL_RESOURCE_ATTRIBUTES adds (Terraform
                // sets deployment.environment.name there; Datadog makes it the env tag).
                let resource = opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .with_attribute(opentelemetry::KeyValue::new(
                        "service.version",
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build();
                let spans = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(Duration::from_secs(5))
                    .build()?;
                // Delta temporality: each point is the change since the last export, which is
                // what the Datadog agent expects of OTLP counters and histograms.
                let metrics = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(Duration::from_secs(5))
                    .with_temporality(opentelemetry_sdk::metrics::Temporality::Delta)
                    .build()?;
                let reader =
                    PeriodicReader::builder(metrics).with_interval(settings.metric_export_interval);
                (
                    Some(
                        SdkTracerProvider::builder()
                            .with_batch_exporter(spans)
                            .with_resource(resource.clone())
                            .build(),
                    ),
                    Some(
                        SdkMeterProvider::builder()
                            .with_reader(reader.build())
                            .with_resource(resource)
                            .build(),
                    ),
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
            .with(targets)
            .with(env_filter)
            .with(otel)
            .with(fmt)
            .try_init()?;
        Ok(Self {
            provider,
            meters,
            log_writer,
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// The meter that also receives every metric, when metrics are exported over OTLP
    /// (for `metrics::install`).
    pub fn meter(&self) -> Option<opentelemetry::metrics::Meter> {
        use opentelemetry::metrics::MeterProvider as _;
        self.meters.as_ref().map(|m| m.meter("challenge-latam-api"))
    }

    /// Flushes and stops the exporter. The SDK's shutdown blocks its caller, so it runs on a
    /// blocking thread with a deadline: a collector that is gone cannot hang the exit.
    pub async fn shutdown(self, deadline: Duration) {
        let Self {
            provider,
            meters,
            log_writer,
        } = self;
        if let Some(provider) = provider {
            flush_spans(provider, deadline).await;
        }
        if let Some(meters) = meters {
            // The last interval's points, on a blocking thread with a deadline like the spans.
            let task = tokio::task::spawn_blocking(move || meters.shutdown());
            match tokio::time::timeout(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metric exporter shutdown failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "metric exporter shutdown panicked"),
                Err(_) => tracing::warn!("metric exporter shutdown timed out"),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn target_level_directives_use_the_lock_free_filter_and_others_keep_working() {
        let (t, e) = filter_of(None);
        let t = t.expect("the default is target=level only");
        assert!(e.is_none());
        assert!(t.would_enable("challenge_latam_api::http::observe", &Level::INFO));
        assert!(!t.would_enable("challenge_latam_api::http::observe", &Level::DEBUG));
        assert!(!t.would_enable("hyper::proto", &Level::INFO));
        assert!(t.would_enable("hyper::proto", &Level::WARN));

        let (t, e) = filter_of(Some("warn,challenge_latam_api=debug".into()));
        let t = t.expect("target=level only");
        assert!(e.is_none());
        assert!(t.would_enable("challenge_latam_api::pipeline", &Level::DEBUG));
        assert!(!t.would_enable("tokio", &Level::INFO));

        // A span directive is EnvFilter syntax only.
        let (t, e) = filter_of(Some("info,[HTTP request]=debug".into()));
        assert!(t.is_none() && e.is_some());

        // Nonsense falls back to the default rather than logging nothing.
        let (t, e) = filter_of(Some("=[[".into()));
        assert!(e.is_none());
        assert!(t
            .expect("the default")
            .would_enable("challenge_latam_api", &Level::INFO));
    }
}
