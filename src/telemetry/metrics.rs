//! Metric names, label keys, buckets and help text: the API that dashboards and alert rules
//! query (CONTRACT.md, "Metrics"). Everything that records a metric goes through the helpers
//! here, so a label value outside its fixed set cannot be written by accident.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ports::ErrorKind;

/// HTTP server latency histogram (seconds).
pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
/// HTTP requests being served now.
pub const HTTP_ACTIVE: &str = "http_server_active_requests";
/// The load-shedding bound (`MAX_IN_FLIGHT`), so saturation alerts need no constant.
pub const HTTP_MAX_ACTIVE: &str = "http_server_max_active_requests";
/// Broker operation latency (seconds).
pub const MESSAGING_DURATION: &str = "messaging_client_operation_duration_seconds";
/// Messages published.
pub const MESSAGING_SENT: &str = "messaging_client_sent_messages_total";
/// Store operation latency (seconds).
pub const DB_DURATION: &str = "db_client_operation_duration_seconds";
/// Publish time to queryable (seconds), where this process stores rows.
pub const PIPELINE_E2E: &str = "pipeline_end_to_end_latency_seconds";
/// Messages published and not yet acknowledged.
pub const PIPELINE_BACKLOG: &str = "pipeline_backlog_messages";
/// Messages moved to the dead-letter table.
pub const PIPELINE_DEAD_LETTERED: &str = "pipeline_dead_lettered_messages_total";
/// Build information (value 1).
pub const BUILD_INFO: &str = "app_build_info";
/// getData cache lookups, by `result` (`hit`, `miss`, `coalesced`).
pub const CACHE_LOOKUPS: &str = "app_getdata_cache_lookups_total";
/// getData pages dropped from the cache, by `reason` (`size`, `expired`).
pub const CACHE_EVICTIONS: &str = "app_getdata_cache_evictions_total";
/// Age of the pages served from the cache (seconds): the staleness clients see.
pub const CACHE_AGE: &str = "app_getdata_cache_age_seconds";
/// Pages in the cache.
pub const CACHE_ENTRIES: &str = "app_getdata_cache_entries";
/// Weighted bytes of the pages in the cache (body plus a fixed overhead per page).
pub const CACHE_BYTES: &str = "app_getdata_cache_bytes";
/// The cache's staleness bound, `QUERY_CACHE_TTL_MS` (0: off), for dashboards and the
/// freshness SLI's documentation.
pub const CACHE_TTL: &str = "app_getdata_cache_ttl_seconds";
/// getData store queries running now.
pub const QUERY_IN_FLIGHT: &str = "app_getdata_store_queries_in_flight";
/// The bound on them (`QUERY_MAX_IN_FLIGHT`).
pub const QUERY_MAX_IN_FLIGHT: &str = "app_getdata_store_queries_max_in_flight";
/// getData requests answered 503 because the bound was reached.
pub const QUERY_REJECTED: &str = "app_getdata_store_queries_rejected_total";
/// Bytes BigQuery billed for getData queries (`totalBytesBilled`): the cost of reads.
pub const BQ_BILLED_BYTES: &str = "app_bigquery_billed_bytes_total";
/// getData queries BigQuery ran, by `cache_hit` (`true` when its own result cache answered).
pub const BQ_QUERIES: &str = "app_bigquery_queries_total";
/// Ingest requests that carried an `Idempotency-Key`, by outcome.
pub const IDEMPOTENT_REQUESTS: &str = "app_idempotent_requests_total";
/// Authentication attempts on the API routes, by `auth_method` (`api_key`, `oidc`, `none`
/// when no credential was sent) and `outcome` (`success`, `invalid`, `unavailable`).
pub const AUTH_REQUESTS: &str = "app_auth_requests_total";
/// Fetches of an OIDC issuer's discovery document and JWKS, by `reason` (`start`,
/// `periodic`, `unknown_kid`) and `outcome` (`success`, `failure`). No issuer label: the
/// issuers are few, but a label value must come from a fixed set.
pub const OIDC_JWKS_FETCHES: &str = "app_oidc_jwks_fetches_total";

/// Buckets of the HTTP, messaging and database histograms; every SLO latency threshold is one
/// of these boundaries.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Buckets of the cache age histogram: from a few milliseconds up to the longest TTL default.
pub const CACHE_AGE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of the end-to-end histogram (freshness SLO threshold: 60 s).
pub const E2E_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// `messaging_operation_name` values.
#[derive(Debug, Clone, Copy)]
pub enum MessagingOp {
    /// Publishing to the topic.
    Publish,
    /// Pulling from the subscription.
    Receive,
    /// Acknowledging (or nacking) a delivery.
    Ack,
}

impl MessagingOp {
    fn as_str(self) -> &'static str {
        match self {
            MessagingOp::Publish => "publish",
            MessagingOp::Receive => "receive",
            MessagingOp::Ack => "ack",
        }
    }
}

/// `db_operation_name` values.
#[derive(Debug, Clone, Copy)]
pub enum DbOp {
    /// getData.
    Query,
    /// Row writes.
    Insert,
}

impl DbOp {
    fn as_str(self) -> &'static str {
        match self {
            DbOp::Query => "query",
            DbOp::Insert => "insert",
        }
    }
}

/// Installs the Prometheus recorder with the contract's buckets and describes every metric.
/// The returned handle renders `/metrics` on the admin port. With `otlp`, every metric is also
/// exported over OTLP through that meter (same names and attributes; see `otlp_metrics`).
pub fn install(otlp: Option<opentelemetry::metrics::Meter>) -> anyhow::Result<PrometheusHandle> {
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(MESSAGING_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DB_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PIPELINE_E2E.into()), E2E_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(CACHE_AGE.into()), CACHE_AGE_BUCKETS)?
        .build_recorder();
    let handle = prometheus.handle();
    match otlp {
        // Without OTLP the Prometheus recorder alone: the hot path pays for one recorder.
        None => metrics::set_global_recorder(prometheus)?,
        Some(meter) => metrics::set_global_recorder(
            metrics_util::layers::FanoutBuilder::default()
                .add_recorder(prometheus)
                .add_recorder(super::otlp_metrics::OtelRecorder::new(meter, buckets))
                .build(),
        )
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?,
    }
    describe();
    Ok(handle)
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every `every`. The recorder keeps
/// each sample until a scrape or an upkeep drains it, and `build_recorder` (used so that
/// `/metrics` is served by our admin router) does not start the exporter's own upkeep task:
/// without this, memory grew by every sample between scrapes (about 1 MiB/s at 15k req/s),
/// and without bound when nothing scrapes (the benchmark's peak RSS went past 100 MiB).
pub fn spawn_upkeep(handle: PrometheusHandle, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// The contract's buckets of each histogram.
fn buckets(name: &str) -> Option<&'static [f64]> {
    match name {
        HTTP_DURATION | MESSAGING_DURATION | DB_DURATION => Some(LATENCY_BUCKETS),
        PIPELINE_E2E => Some(E2E_BUCKETS),
        CACHE_AGE => Some(CACHE_AGE_BUCKETS),
        _ => None,
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests."
    );
    describe_gauge!(HTTP_ACTIVE, "Number of active HTTP server requests.");
    describe_gauge!(
        HTTP_MAX_ACTIVE,
        "Requests served at once before new ones are shed with 503 (MAX_IN_FLIGHT)."
    );
    describe_histogram!(
        MESSAGING_DURATION,
        Unit::Seconds,
        "Duration of messaging operations (publish, receive, ack)."
    );
    describe_counter!(
        MESSAGING_SENT,
        "Number of messages the producer attempted to send to the broker."
    );
    describe_histogram!(
        DB_DURATION,
        Unit::Seconds,
        "Duration of database client operations (query, insert)."
    );
    describe_histogram!(
        PIPELINE_E2E,
        Unit::Seconds,
        "Time from publish to queryable, measured where this process stores rows."
    );
    describe_gauge!(
        PIPELINE_BACKLOG,
        "Messages published and not yet acknowledged by the subscription."
    );
    describe_counter!(
        PIPELINE_DEAD_LETTERED,
        "Messages moved to the dead-letter table after their maximum delivery attempts."
    );
    describe_gauge!(BUILD_INFO, "Build information; the value is always 1.");
    describe_counter!(
        CACHE_LOOKUPS,
        "getData cache lookups by result: hit, miss (this request queried the store), coalesced (it waited for an identical request's query)."
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "getData pages dropped from the cache by reason: size, expired."
    );
    describe_histogram!(
        CACHE_AGE,
        Unit::Seconds,
        "Age of the getData pages served from the cache (hits and coalesced waits)."
    );
    describe_gauge!(CACHE_ENTRIES, "getData pages in the cache.");
    describe_gauge!(
        CACHE_BYTES,
        "Weighted bytes of the getData pages in the cache (QUERY_CACHE_MAX_BYTES bounds it)."
    );
    describe_gauge!(
        CACHE_TTL,
        "How long a getData page may be served after it was computed (QUERY_CACHE_TTL_MS); 0 when off."
    );
    describe_gauge!(QUERY_IN_FLIGHT, "getData store queries running now.");
    describe_gauge!(
        QUERY_MAX_IN_FLIGHT,
        "getData store queries allowed at once (QUERY_MAX_IN_FLIGHT); past it getData answers 503."
    );
    describe_counter!(
        QUERY_REJECTED,
        "getData requests answered 503 because QUERY_MAX_IN_FLIGHT store queries were running."
    );
    describe_counter!(
        BQ_BILLED_BYTES,
        Unit::Bytes,
        "Bytes BigQuery billed for getData queries (totalBytesBilled)."
    );
    describe_counter!(
        BQ_QUERIES,
        "getData queries answered by BigQuery, by whether its result cache answered them (cache_hit)."
    );
    describe_counter!(
        AUTH_REQUESTS,
        "Authentication attempts on the API routes, by auth_method (api_key, oidc, none) and outcome (success, invalid, unavailable)."
    );
    describe_counter!(
        OIDC_JWKS_FETCHES,
        "Fetches of OIDC discovery and JWKS, by reason (start, periodic, unknown_kid) and outcome (success, failure)."
    );
    describe_counter!(
        IDEMPOTENT_REQUESTS,
        "Ingest requests with an Idempotency-Key, by outcome (new, replayed, in_flight, key_reused)."
    );
}

fn error_label(error: Option<ErrorKind>) -> &'static str {
    error.map(ErrorKind::as_str).unwrap_or("")
}

/// `messaging_system` values: the brokers this service talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingSystem {
    /// The embedded broker (`local`).
    Local,
    /// Pub/Sub (`gcp_pubsub`).
    GcpPubsub,
}

impl MessagingSystem {
    /// The label value (also the `messaging.system` span attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            MessagingSystem::Local => "local",
            MessagingSystem::GcpPubsub => "gcp_pubsub",
        }
    }
}

/// `db_system_name` values: the stores this service talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbSystem {
    /// The embedded SQLite store (`sqlite`).
    Sqlite,
    /// BigQuery (`gcp.bigquery`).
    GcpBigquery,
}

impl DbSystem {
    /// The label value (also the `db.system.name` span attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Sqlite => "sqlite",
            DbSystem::GcpBigquery => "gcp.bigquery",
        }
    }
}

/// `error_type` values: none, then each [`ErrorKind`].
const ERRORS: usize = 6;

fn error_slot(error: Option<ErrorKind>) -> usize {
    match error {
        None => 0,
        Some(ErrorKind::Timeout) => 1,
        Some(ErrorKind::Unavailable) => 2,
        Some(ErrorKind::ResourceExhausted) => 3,
        Some(ErrorKind::Invalid) => 4,
        Some(ErrorKind::Internal) => 5,
    }
}

/// One handle per label set of a fixed few, made the first time that label set is recorded (a
/// handle made earlier would put an empty series on `/metrics` for every error or outcome
/// that never happens). A kept handle records with an atomic add, where the macros build and
/// hash a key on every call (about 2,000 instructions, several times per message).
struct Slots<T, const N: usize>([OnceLock<T>; N]);

impl<T, const N: usize> Slots<T, N> {
    fn new() -> Self {
        Self([const { OnceLock::new() }; N])
    }

    fn get(&self, slot: usize, make: impl FnOnce() -> T) -> &T {
        self.0[slot].get_or_init(make)
    }
}

/// One handle per `error_type`.
type ByError<T> = Slots<T, ERRORS>;

/// The messaging metrics of one broker client, registered by the component when it is built
/// (the way Vector's components register their internal events): its system is fixed then, so
/// recording is a lookup by operation and error type, never by string.
pub struct MessagingMetrics {
    system: MessagingSystem,
    /// By [`MessagingOp`].
    duration: [ByError<Histogram>; 3],
    sent: ByError<Counter>,
}

impl MessagingMetrics {
    /// The handles of `system`'s client (made as each label set is first recorded).
    pub fn register(system: MessagingSystem) -> Self {
        Self {
            system,
            duration: [ByError::new(), ByError::new(), ByError::new()],
            sent: ByError::new(),
        }
    }

    /// Records one operation.
    pub fn op(&self, op: MessagingOp, error: Option<ErrorKind>, elapsed: Duration) {
        let system = self.system.as_str();
        self.duration[op as usize]
            .get(error_slot(error), || {
                histogram!(MESSAGING_DURATION,
                    "messaging_system" => system,
                    "messaging_operation_name" => op.as_str(),
                    "error_type" => error_label(error))
            })
            .record(elapsed.as_secs_f64());
    }

    /// Counts `n` messages sent to the broker.
    pub fn sent(&self, error: Option<ErrorKind>, n: u64) {
        let system = self.system.as_str();
        self.sent
            .get(error_slot(error), || {
                counter!(MESSAGING_SENT,
                    "messaging_system" => system,
                    "error_type" => error_label(error))
            })
            .increment(n);
    }
}

/// The database metrics of one store client, registered by the component when it is built
/// (see [`MessagingMetrics`]).
pub struct DbMetrics {
    system: DbSystem,
    /// By [`DbOp`].
    duration: [ByError<Histogram>; 2],
}

impl DbMetrics {
    /// The handles of `system`'s client (made as each label set is first recorded).
    pub fn register(system: DbSystem) -> Self {
        Self {
            system,
            duration: [ByError::new(), ByError::new()],
        }
    }

    /// Records one operation.
    pub fn op(&self, op: DbOp, error: Option<ErrorKind>, elapsed: Duration) {
        let system = self.system.as_str();
        self.duration[op as usize]
            .get(error_slot(error), || {
                histogram!(DB_DURATION,
                    "db_system_name" => system,
                    "db_operation_name" => op.as_str(),
                    "error_type" => error_label(error))
            })
            .record(elapsed.as_secs_f64());
    }
}

/// How an API request's authentication ended: the (`auth_method`, `outcome`) pairs of
/// [`AUTH_REQUESTS`].
#[derive(Debug, Clone, Copy)]
pub enum AuthAttempt {
    OidcSuccess,
    OidcUnavailable,
    OidcInvalid,
    KeySuccess,
    KeyInvalid,
    Missing,
}

impl AuthAttempt {
    const COUNT: usize = 6;

    fn labels(self) -> (&'static str, &'static str) {
        match self {
            AuthAttempt::OidcSuccess => ("oidc", "success"),
            AuthAttempt::OidcUnavailable => ("oidc", "unavailable"),
            AuthAttempt::OidcInvalid => ("oidc", "invalid"),
            AuthAttempt::KeySuccess => ("api_key", "success"),
            AuthAttempt::KeyInvalid => ("api_key", "invalid"),
            AuthAttempt::Missing => ("none", "missing"),
        }
    }
}

/// The authentication counter, one handle per [`AuthAttempt`], kept by the API's
/// authentication (see [`MessagingMetrics`]): counted on every API request.
pub struct AuthMetrics(Slots<Counter, { AuthAttempt::COUNT }>);

impl AuthMetrics {
    /// The handles (made as each attempt is first counted).
    pub fn register() -> Self {
        Self(Slots::new())
    }

    /// Counts one authentication attempt.
    pub fn count(&self, attempt: AuthAttempt) {
        self.0
            .get(attempt as usize, || {
                let (method, outcome) = attempt.labels();
                counter!(AUTH_REQUESTS, "auth_method" => method, "outcome" => outcome)
            })
            .increment(1);
    }
}

/// The pipeline's metrics without labels (backlog, dead letters, publish to queryable), kept
/// by the component that knows them: the embedded broker, the Pub/Sub pull worker, the
/// pipeline. Made on first use, so a backend that never sets one does not export it.
pub struct PipelineMetrics {
    end_to_end: OnceLock<Histogram>,
    backlog: OnceLock<Gauge>,
    dead_lettered: OnceLock<Counter>,
}

impl PipelineMetrics {
    /// The handles (made as each is first recorded); `const`, so a component that runs once
    /// per process may keep them in a static.
    pub const fn register() -> Self {
        Self {
            end_to_end: OnceLock::new(),
            backlog: OnceLock::new(),
            dead_lettered: OnceLock::new(),
        }
    }

    /// Records how long a stored row took from publish to queryable.
    pub fn end_to_end(&self, seconds: f64) {
        self.end_to_end
            .get_or_init(|| histogram!(PIPELINE_E2E))
            .record(seconds.max(0.0));
    }

    /// Sets the number of unacknowledged messages.
    pub fn backlog(&self, n: u64) {
        self.backlog
            .get_or_init(|| gauge!(PIPELINE_BACKLOG))
            .set(n as f64);
    }

    /// Counts messages moved to the dead-letter table.
    pub fn dead_lettered(&self, n: u64) {
        self.dead_lettered
            .get_or_init(|| counter!(PIPELINE_DEAD_LETTERED))
            .increment(n);
    }
}

/// Publishes the load-shedding bound.
pub fn max_active(n: usize) {
    gauge!(HTTP_MAX_ACTIVE).set(n as f64);
}

/// Sets `app_build_info{version, revision} 1`.
pub fn build_info() {
    let revision = option_env!("GIT_REVISION").unwrap_or("unknown");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => revision).set(1.0);
}

/// `idempotency_outcome` values of [`IDEMPOTENT_REQUESTS`].
#[derive(Debug, Clone, Copy)]
pub enum IdempotencyOutcome {
    /// Published now.
    New,
    /// Answered with an earlier request's ids; nothing published.
    Replayed,
    /// 409: a request with the key was being served.
    InFlight,
    /// 409: the key was used with another body.
    KeyReused,
}

impl IdempotencyOutcome {
    fn as_str(self) -> &'static str {
        match self {
            IdempotencyOutcome::New => "new",
            IdempotencyOutcome::Replayed => "replayed",
            IdempotencyOutcome::InFlight => "in_flight",
            IdempotencyOutcome::KeyReused => "key_reused",
        }
    }
}

/// Counts one ingest request that carried an `Idempotency-Key`.
pub fn idempotent_request(outcome: IdempotencyOutcome) {
    counter!(IDEMPOTENT_REQUESTS, "idempotency_outcome" => outcome.as_str()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component's handles write the contract's names and label sets (CONTRACT.md,
    /// "Metrics"), reuse one handle per label set, and export only what was recorded.
    #[test]
    fn registered_handles_write_the_contracts_names_and_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let ms = Duration::from_millis(3);
        metrics::with_local_recorder(&recorder, || {
            let broker = MessagingMetrics::register(MessagingSystem::GcpPubsub);
            broker.op(MessagingOp::Publish, None, ms);
            broker.op(MessagingOp::Publish, None, ms);
            broker.op(MessagingOp::Ack, Some(ErrorKind::Timeout), ms);
            broker.sent(None, 5);
            let store = DbMetrics::register(DbSystem::Sqlite);
            store.op(DbOp::Query, Some(ErrorKind::Unavailable), ms);
            let pipeline = PipelineMetrics::register();
            pipeline.backlog(7);
            pipeline.dead_lettered(2);
            pipeline.end_to_end(0.5);
            let auth = AuthMetrics::register();
            auth.count(AuthAttempt::KeySuccess);
            auth.count(AuthAttempt::KeySuccess);
            auth.count(AuthAttempt::Missing);
        });
        let text = handle.render();
        for line in [
            r#"messaging_client_operation_duration_seconds_count{messaging_system="gcp_pubsub",messaging_operation_name="publish",error_type=""} 2"#,
            r#"messaging_client_operation_duration_seconds_count{messaging_system="gcp_pubsub",messaging_operation_name="ack",error_type="timeout"} 1"#,
            r#"messaging_client_sent_messages_total{messaging_system="gcp_pubsub",error_type=""} 5"#,
            r#"db_client_operation_duration_seconds_count{db_system_name="sqlite",db_operation_name="query",error_type="unavailable"} 1"#,
            "pipeline_backlog_messages 7",
            "pipeline_dead_lettered_messages_total 2",
            "pipeline_end_to_end_latency_seconds_count 1",
            r#"app_auth_requests_total{auth_method="api_key",outcome="success"} 2"#,
            r#"app_auth_requests_total{auth_method="none",outcome="missing"} 1"#,
        ] {
            assert!(text.contains(line), "{line}\nnot in\n{text}");
        }
        assert_eq!(
            text.matches("_duration_seconds_count{").count(),
            3,
            "a series per label set recorded, and no other:\n{text}"
        );
        assert_eq!(
            text.matches("app_auth_requests_total{").count(),
            2,
            "an auth series per attempt counted, and no other:\n{text}"
        );
    }

    #[test]
    fn system_label_values_are_the_contracts() {
        assert_eq!(MessagingSystem::Local.as_str(), "local");
        assert_eq!(MessagingSystem::GcpPubsub.as_str(), "gcp_pubsub");
        assert_eq!(DbSystem::Sqlite.as_str(), "sqlite");
        assert_eq!(DbSystem::GcpBigquery.as_str(), "gcp.bigquery");
    }
}
