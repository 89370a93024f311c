//! The settings as the command line and the environment give them: one `clap` field per
//! variable of CONTRACT.md ("Settings"), raw text only. Parsing and checking them is
//! [`super::Settings::from_args`]'s job, so that every message names the variable.

use clap::Parser;

/// Every setting as the command line or the environment gives it: raw text (none when unset),
/// parsed and checked by [`super::Settings::from_args`]. A flag overrides its variable.
#[derive(Debug, Default, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// `local` (default: embedded broker and SQLite store) or `gcp` (Pub/Sub and BigQuery).
    #[arg(long, env = "BACKEND")]
    pub backend: Option<String>,
    /// Address both listeners bind (default 0.0.0.0).
    #[arg(long, env = "HOST")]
    pub host: Option<String>,
    /// Public API port (default 8080; 0 picks a free one).
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// `/metrics` and `/admin/faults` port (default 9464; 0 picks a free one).
    #[arg(long, env = "ADMIN_PORT")]
    pub admin_port: Option<String>,
    /// Where the embedded broker and store keep their files (default ./data).
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<String>,
    /// Google Cloud project (required with `gcp`); also qualifies trace ids in logs.
    #[arg(long, env = "GCP_PROJECT")]
    pub gcp_project: Option<String>,
    /// Pub/Sub topic id (required with `gcp`).
    #[arg(long, env = "PUBSUB_TOPIC")]
    pub pubsub_topic: Option<String>,
    /// With `gcp`: run a pull worker on this subscription that writes rows itself.
    #[arg(long, env = "PUBSUB_SUBSCRIPTION")]
    pub pubsub_subscription: Option<String>,
    /// BigQuery dataset (required with `gcp`).
    #[arg(long, env = "BQ_DATASET")]
    pub bq_dataset: Option<String>,
    /// BigQuery table (required with `gcp`).
    #[arg(long, env = "BQ_TABLE")]
    pub bq_table: Option<String>,
    /// Cost guard on every getData query job, bytes (default 10 GiB).
    #[arg(long, env = "BQ_MAXIMUM_BYTES_BILLED")]
    pub bq_maximum_bytes_billed: Option<String>,
    /// Pub/Sub emulator `host:port`: anonymous credentials and this endpoint.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// BigQuery emulator `host:port`: anonymous credentials and this endpoint.
    #[arg(long, env = "BIGQUERY_EMULATOR_HOST")]
    pub bigquery_emulator_host: Option<String>,
    /// JSON list of `{id, sha256, scopes}`; with `gcp`, this or `OIDC_ISSUERS` is required.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<String>,
    /// Comma-separated OIDC issuer URLs whose bearer JWTs are accepted beside API keys.
    #[arg(long, env = "OIDC_ISSUERS")]
    pub oidc_issuers: Option<String>,
    /// The `aud` every token must carry; required with `OIDC_ISSUERS`.
    #[arg(long, env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Comma-separated claims looked up in `OIDC_SCOPE_MAP` (default `groups`).
    #[arg(long, env = "OIDC_SCOPE_CLAIM")]
    pub oidc_scope_claim: Option<String>,
    /// `value=scope+scope,...`; required with `OIDC_ISSUERS`.
    #[arg(long, env = "OIDC_SCOPE_MAP")]
    pub oidc_scope_map: Option<String>,
    /// Sustained requests per second per client (default 50).
    #[arg(long, env = "RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<String>,
    /// Requests a client may send at once (default 100).
    #[arg(long, env = "RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<String>,
    /// Key anonymous clients by `X-Forwarded-For` (default false; only behind a proxy).
    #[arg(long, env = "TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: Option<String>,
    /// API requests served at once before new ones are shed with 503 (default 256).
    #[arg(long, env = "MAX_IN_FLIGHT")]
    pub max_in_flight: Option<String>,
    /// Deadline of each broker or store call, ms (default 5000).
    #[arg(long, env = "REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<String>,
    /// How long SIGTERM drains in-flight requests, ms (default 10000).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<String>,
    /// Embedded broker: deliveries before dead-lettering (default 5).
    #[arg(long, env = "MAX_DELIVERY_ATTEMPTS")]
    pub max_delivery_attempts: Option<String>,
    /// Export traces and metrics over OTLP/gRPC to this endpoint.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// Service name on spans and OTLP metrics (default challenge-latam-api).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// Milliseconds between OTLP metric exports (default 10000).
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL")]
    pub otel_metric_export_interval: Option<String>,
    /// `json` (default: Cloud Logging fields) or `pretty`.
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Also append the JSON lines to this file (rotated at 16 MiB, one old file kept).
    #[arg(long, env = "LOG_FILE")]
    pub log_file: Option<String>,
    /// Log filter: `target=level` directives (default info, and warn for h2, hyper, tower,
    /// tonic).
    #[arg(long, env = "RUST_LOG")]
    pub rust_log: Option<String>,
    /// How old a cached getData page may be when served, ms; 0 turns the cache off (default
    /// 30000 local, 5000 gcp).
    #[arg(long, env = "QUERY_CACHE_TTL_MS")]
    pub query_cache_ttl_ms: Option<String>,
    /// Bound on the bytes of cached getData pages (default 32 MiB).
    #[arg(long, env = "QUERY_CACHE_MAX_BYTES")]
    pub query_cache_max_bytes: Option<String>,
    /// Bound on the number of cached getData pages (default 16384).
    #[arg(long, env = "QUERY_CACHE_MAX_ENTRIES")]
    pub query_cache_max_entries: Option<String>,
    /// getData store queries at once (default 32).
    #[arg(long, env = "QUERY_MAX_IN_FLIGHT")]
    pub query_max_in_flight: Option<String>,
    /// How long a getData query waits for a slot before a 503, ms (default 250).
    #[arg(long, env = "QUERY_QUEUE_TIMEOUT_MS")]
    pub query_queue_timeout_ms: Option<String>,
    /// Drills only: fraction of API requests answered 500.
    #[arg(long, env = "FAULT_HTTP_ERROR_RATE")]
    pub fault_http_error_rate: Option<String>,
    /// Drills only: added latency of every API request, ms.
    #[arg(long, env = "FAULT_HTTP_LATENCY_MS")]
    pub fault_http_latency_ms: Option<String>,
    /// Drills only: fraction of store calls that fail.
    #[arg(long, env = "FAULT_STORE_ERROR_RATE")]
    pub fault_store_error_rate: Option<String>,
    /// Drills only: added latency of every store call, ms.
    #[arg(long, env = "FAULT_STORE_LATENCY_MS")]
    pub fault_store_latency_ms: Option<String>,
    /// Drills only: fraction of broker publishes that fail.
    #[arg(long, env = "FAULT_BROKER_ERROR_RATE")]
    pub fault_broker_error_rate: Option<String>,
    /// Drills only: added latency of every broker publish, ms.
    #[arg(long, env = "FAULT_BROKER_LATENCY_MS")]
    pub fault_broker_latency_ms: Option<String>,
    /// How long an `Idempotency-Key` is remembered, 1 s to 7 days (default 86400).
    #[arg(long, env = "IDEMPOTENCY_TTL_SECONDS")]
    pub idempotency_ttl_seconds: Option<String>,
}
