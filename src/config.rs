//! Typed settings, read from the environment once at start and checked there: a bad value
//! stops the process with a message that names the variable, instead of failing on the first
//! request that needs it.
//!
//! Names follow CONTRACT.md ("Settings"); a command-line flag of the same name in kebab case
//! (`--admin-port 9465`) overrides the environment. [`Args`] declares them for `clap`, which
//! reads flags and variables together and writes `--help`; [`Settings::from_args`] parses and
//! checks the raw text, so an empty value means unset and every message names the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

mod args;
pub use args::Args;

/// Which backends run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a durable broker and an SQLite store under `DATA_DIR`.
    Local,
    /// Pub/Sub and BigQuery (or their emulators).
    Gcp,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with Cloud Logging's fields (the default).
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Fault injection for drills: off (all zero) by default, refused on `BACKEND=gcp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..=1) of API requests answered 500 before reaching the handler.
    pub http_error_rate: f64,
    /// Added latency for every API request, milliseconds.
    pub http_latency_ms: u64,
    /// Fraction of store writes and queries that fail.
    pub store_error_rate: f64,
    /// Added latency for every store call, milliseconds.
    pub store_latency_ms: u64,
    /// Fraction of broker publishes that fail.
    pub broker_error_rate: f64,
    /// Added latency for every broker publish, milliseconds.
    pub broker_latency_ms: u64,
}

impl Faults {
    /// True when any fault is switched on.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }

    /// Rejects rates outside 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("http_error_rate", self.http_error_rate),
            ("store_error_rate", self.store_error_rate),
            ("broker_error_rate", self.broker_error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }
}

/// Every setting of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `BACKEND`: `local` (default) or `gcp`.
    pub backend: Backend,
    /// `HOST`: address both listeners bind (default 0.0.0.0).
    pub host: IpAddr,
    /// `PORT`: the public API port (8080; 0 picks a free one).
    pub port: u16,
    /// `ADMIN_PORT`: `/metrics` and `/admin/faults` (9464; 0 picks a free one). Never exposed
    /// by Cloud Run's ingress.
    pub admin_port: u16,
    /// `DATA_DIR`: where the embedded broker and store keep their files.
    pub data_dir: PathBuf,
    /// `GCP_PROJECT`.
    pub gcp_project: Option<String>,
    /// `PUBSUB_TOPIC`: the topic id (not the full path).
    pub pubsub_topic: Option<String>,
    /// `PUBSUB_SUBSCRIPTION`: when set on `gcp`, run a pull worker that writes rows
    /// itself (emulators, or deployments without a native BigQuery subscription).
    pub pubsub_subscription: Option<String>,
    /// `BQ_DATASET`.
    pub bq_dataset: Option<String>,
    /// `BQ_TABLE`.
    pub bq_table: Option<String>,
    /// `BQ_MAXIMUM_BYTES_BILLED`: cost guard for every getData query job.
    pub bq_maximum_bytes_billed: u64,
    /// `PUBSUB_EMULATOR_HOST` (`host:port`): anonymous credentials and this endpoint.
    pub pubsub_emulator_host: Option<String>,
    /// `BIGQUERY_EMULATOR_HOST` (`host:port`): anonymous credentials and this endpoint.
    pub bigquery_emulator_host: Option<String>,
    /// `API_KEYS_FILE`: JSON list of `{id, sha256, scopes}`; required on `gcp`.
    pub api_keys_file: Option<PathBuf>,
    /// `OIDC_ISSUERS`: issuer URLs (comma-separated) whose bearer JWTs are accepted beside
    /// API keys; empty when OIDC is off.
    pub oidc_issuers: Vec<String>,
    /// `OIDC_AUDIENCE`: the `aud` every token must carry; required with `OIDC_ISSUERS`.
    pub oidc_audience: Option<String>,
    /// `OIDC_SCOPE_CLAIM`: the claims (comma-separated) whose values are looked up in
    /// `OIDC_SCOPE_MAP` (default `groups`).
    pub oidc_scope_claims: Vec<String>,
    /// `OIDC_SCOPE_MAP`: `value=scope+scope,...`; a claim value not listed grants nothing.
    pub oidc_scope_map: Vec<(String, Vec<String>)>,
    /// `RATE_LIMIT_PER_SECOND`: sustained requests per second per client.
    pub rate_limit_per_second: f64,
    /// `RATE_LIMIT_BURST`: requests a client may send at once.
    pub rate_limit_burst: u32,
    /// `TRUST_FORWARDED_FOR`: key the rate limit by `X-Forwarded-For` (only behind a proxy
    /// that sets it, such as Cloud Run's front end or a load balancer).
    pub trust_forwarded_for: bool,
    /// `MAX_IN_FLIGHT`: requests served at once before new ones are shed with 503.
    pub max_in_flight: usize,
    /// `REQUEST_TIMEOUT_MS`: deadline for one dependency call; past it the answer is 504.
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long SIGTERM waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// `MAX_DELIVERY_ATTEMPTS`: deliveries before a message is dead-lettered (embedded broker).
    pub max_delivery_attempts: u32,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: export spans over OTLP/gRPC when set.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (ms): how often metrics are exported over OTLP (10 s by
    /// default: Datadog's own interval).
    pub metric_export_interval: Duration,
    /// `RUST_LOG`: the log filter as given (`telemetry` applies its default when unset).
    pub rust_log: Option<String>,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `LOG_FILE`: also append the JSON lines to this file (rotated, see
    /// `telemetry::logging`), for a log shipper that tails files: on Cloud Run the Datadog
    /// sidecar reads the shared volume, not the app's stdout.
    pub log_file: Option<PathBuf>,
    /// `QUERY_CACHE_TTL_MS`: how long a getData page may be served after it was computed;
    /// 0 turns the cache off. Defaults per backend (see `default_cache_ttl`).
    pub query_cache_ttl: Duration,
    /// `QUERY_CACHE_MAX_BYTES`: bound on the bytes of cached getData pages.
    pub query_cache_max_bytes: u64,
    /// `QUERY_CACHE_MAX_ENTRIES`: bound on the number of cached getData pages.
    pub query_cache_max_entries: u64,
    /// `QUERY_MAX_IN_FLIGHT`: getData store queries at once.
    pub query_max_in_flight: usize,
    /// `QUERY_QUEUE_TIMEOUT_MS`: how long a getData query waits for one of those slots before
    /// getData answers 503.
    pub query_queue_timeout: Duration,
    /// `FAULT_*`: initial fault injection (drills only).
    pub faults: Faults,
    /// `IDEMPOTENCY_TTL_SECONDS`: how long an `Idempotency-Key` is remembered (1 s to 7 days;
    /// default 24 h).
    pub idempotency_ttl: Duration,
}

/// Longest `IDEMPOTENCY_TTL_SECONDS`: retries come within minutes, and a week bounds the keys
/// kept.
const MAX_IDEMPOTENCY_TTL_SECONDS: u64 = 7 * 24 * 60 * 60;
/// The getData cache's byte bound when `QUERY_CACHE_MAX_BYTES` is not set: 32 MiB, a
/// sixteenth of the app container's 512 MiB on Cloud Run (terraform `app_memory`).
///
/// The cache pays only when the distinct pages polled within one TTL fit in it; past that,
/// every miss evicts a page that will be asked for again. Measured (docs/benchmarks.md,
/// 2026-12-07): random reads of 10,000 customers' pages (about 2.5 KiB each) hit 58 % of the
/// time at 16 MiB, each miss evicting, and 99.9 % at 32 MiB, at 3 times the rate; the
/// service's peak RSS went from 73 to 83 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The getData cache's staleness bound when `QUERY_CACHE_TTL_MS` is not set.
///
/// - `local`: 30 s. Every commit of the embedded pipeline makes the pages it affects stale
///   at once, so reads are read-your-writes whatever the TTL; it only bounds how long a
///   default window's page may keep a row that has just aged out of the 7 days, and how long
///   an unused page holds memory.
/// - `gcp`: 5 s. The BigQuery subscription writes behind the service's back, so the TTL is
///   the whole staleness bound: 5 s is a twelfth of the freshness objective (60 s) and caps
///   BigQuery at one job per distinct page per instance every 5 s, however hard clients poll.
pub fn default_cache_ttl(backend: Backend) -> Duration {
    match backend {
        Backend::Local => Duration::from_secs(30),
        Backend::Gcp => Duration::from_secs(5),
    }
}

/// Splits a comma-separated list, dropping empty items.
fn list(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `OIDC_SCOPE_MAP`: `value=scope+scope,value=scope`, scopes from `ingest`, `read`.
/// The value is matched exactly against a claim value (an Okta group, a `scp` entry, an
/// email); written `<issuer>#value` it matches only tokens of that issuer. A value may not be
/// listed twice.
pub fn parse_scope_map(raw: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (value, scopes) = entry
            .rsplit_once('=')
            .ok_or_else(|| format!("{entry:?} is not value=scope+scope"))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{entry:?} has an empty claim value"));
        }
        if out.iter().any(|(v, _)| v == value) {
            return Err(format!("{value:?} is listed twice"));
        }
        let scopes: Vec<String> = scopes.split('+').map(|s| s.trim().to_owned()).collect();
        if let Some(s) = scopes
            .iter()
            .find(|s| !matches!(s.as_str(), "ingest" | "read"))
        {
            return Err(format!("{value:?}: {s:?} is not one of ingest, read"));
        }
        out.push((value.to_owned(), scopes));
    }
    Ok(out)
}

/// A setting that could not be used; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("setting {name}: {problem}")]
pub struct SettingsError {
    /// The environment variable.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Settings {
    /// Reads the command line and the process environment (`--help` lists the settings). A
    /// malformed command line ends the process here, with clap's message and exit code 2.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_args(Args::parse())
    }

    /// Parses and checks the raw settings: a value that is empty or only spaces counts as
    /// unset, and an error names the variable.
    pub fn from_args(args: Args) -> Result<Self, SettingsError> {
        let Args {
            backend,
            host,
            port,
            admin_port,
            data_dir,
            gcp_project,
            pubsub_topic,
            pubsub_subscription,
            bq_dataset,
            bq_table,
            bq_maximum_bytes_billed,
            pubsub_emulator_host,
            bigquery_emulator_host,
            api_keys_file,
            oidc_issuers,
            oidc_audience,
            oidc_scope_claim,
            oidc_scope_map,
            rate_limit_per_second,
            rate_limit_burst,
            trust_forwarded_for,
            max_in_flight,
            request_timeout_ms,
            shutdown_timeout_ms,
            max_delivery_attempts,
            otel_exporter_otlp_endpoint,
            otel_service_name,
            otel_metric_export_interval,
            log_format,
            log_file,
            rust_log,
            query_cache_ttl_ms,
            query_cache_max_bytes,
            query_cache_max_entries,
            query_max_in_flight,
            query_queue_timeout_ms,
            fault_http_error_rate,
            fault_http_latency_ms,
            fault_store_error_rate,
            fault_store_latency_ms,
            fault_broker_error_rate,
            fault_broker_latency_ms,
            idempotency_ttl_seconds,
        } = args;
        fn value(raw: &Option<String>) -> Option<&str> {
            raw.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        let text = |raw: &Option<String>| value(raw).map(str::to_owned);
        fn parse<T: FromStr>(
            raw: &Option<String>,
            name: &'static str,
            default: T,
        ) -> Result<T, SettingsError>
        where
            T::Err: std::fmt::Display,
        {
            match value(raw) {
                None => Ok(default),
                Some(raw) => raw.parse().map_err(|e: T::Err| SettingsError {
                    name,
                    problem: format!("{raw:?} is not valid: {e}"),
                }),
            }
        }
        let bad = |name: &'static str, problem: String| SettingsError { name, problem };

        let backend = match value(&backend).unwrap_or("local") {
            "local" => Backend::Local,
            "gcp" => Backend::Gcp,
            other => {
                return Err(bad(
                    "BACKEND",
                    format!("{other:?} is not one of local, gcp"),
                ))
            }
        };
        let log_format = match value(&log_format).unwrap_or("json") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("{other:?} is not one of json, pretty"),
                ))
            }
        };
        let ms = |raw: &Option<String>,
                  name: &'static str,
                  default: u64|
         -> Result<Duration, SettingsError> {
            let v: u64 = parse(raw, name, default)?;
            if v == 0 {
                return Err(bad(name, "must be greater than 0".into()));
            }
            Ok(Duration::from_millis(v))
        };
        let faults = Faults {
            http_error_rate: parse(&fault_http_error_rate, "FAULT_HTTP_ERROR_RATE", 0.0)?,
            http_latency_ms: parse(&fault_http_latency_ms, "FAULT_HTTP_LATENCY_MS", 0)?,
            store_error_rate: parse(&fault_store_error_rate, "FAULT_STORE_ERROR_RATE", 0.0)?,
            store_latency_ms: parse(&fault_store_latency_ms, "FAULT_STORE_LATENCY_MS", 0)?,
            broker_error_rate: parse(&fault_broker_error_rate, "FAULT_BROKER_ERROR_RATE", 0.0)?,
            broker_latency_ms: parse(&fault_broker_latency_ms, "FAULT_BROKER_LATENCY_MS", 0)?,
        };
        faults.validate().map_err(|p| bad("FAULT_*", p))?;

        let s = Settings {
            backend,
            host: parse(&host, "HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: parse(&port, "PORT", 8080)?,
            admin_port: parse(&admin_port, "ADMIN_PORT", 9464)?,
            data_dir: PathBuf::from(value(&data_dir).unwrap_or("./data")),
            gcp_project: text(&gcp_project),
            pubsub_topic: text(&pubsub_topic),
            pubsub_subscription: text(&pubsub_subscription),
            bq_dataset: text(&bq_dataset),
            bq_table: text(&bq_table),
            bq_maximum_bytes_billed: parse(
                &bq_maximum_bytes_billed,
                "BQ_MAXIMUM_BYTES_BILLED",
                10 * 1024 * 1024 * 1024,
            )?,
            pubsub_emulator_host: text(&pubsub_emulator_host),
            bigquery_emulator_host: text(&bigquery_emulator_host),
            api_keys_file: value(&api_keys_file).map(PathBuf::from),
            oidc_issuers: list(value(&oidc_issuers)),
            oidc_audience: text(&oidc_audience),
            oidc_scope_claims: match value(&oidc_scope_claim) {
                Some(v) => list(Some(v)),
                None => vec!["groups".to_owned()],
            },
            oidc_scope_map: parse_scope_map(value(&oidc_scope_map).unwrap_or(""))
                .map_err(|p| bad("OIDC_SCOPE_MAP", p))?,
            rate_limit_per_second: parse(&rate_limit_per_second, "RATE_LIMIT_PER_SECOND", 50.0)?,
            rate_limit_burst: parse(&rate_limit_burst, "RATE_LIMIT_BURST", 100)?,
            trust_forwarded_for: parse(&trust_forwarded_for, "TRUST_FORWARDED_FOR", false)?,
            max_in_flight: parse(&max_in_flight, "MAX_IN_FLIGHT", 256)?,
            request_timeout: ms(&request_timeout_ms, "REQUEST_TIMEOUT_MS", 5_000)?,
            shutdown_timeout: ms(&shutdown_timeout_ms, "SHUTDOWN_TIMEOUT_MS", 10_000)?,
            max_delivery_attempts: parse(&max_delivery_attempts, "MAX_DELIVERY_ATTEMPTS", 5)?,
            otlp_endpoint: text(&otel_exporter_otlp_endpoint),
            service_name: value(&otel_service_name)
                .unwrap_or("challenge-latam-api")
                .to_owned(),
            metric_export_interval: ms(
                &otel_metric_export_interval,
                "OTEL_METRIC_EXPORT_INTERVAL",
                10_000,
            )?,
            // As given: `telemetry` decides what an empty or malformed filter means.
            rust_log,
            log_format,
            log_file: value(&log_file).map(PathBuf::from),
            query_cache_ttl: Duration::from_millis(parse(
                &query_cache_ttl_ms,
                "QUERY_CACHE_TTL_MS",
                default_cache_ttl(backend).as_millis() as u64,
            )?),
            query_cache_max_bytes: parse(
                &query_cache_max_bytes,
                "QUERY_CACHE_MAX_BYTES",
                DEFAULT_CACHE_MAX_BYTES,
            )?,
            query_cache_max_entries: parse(
                &query_cache_max_entries,
                "QUERY_CACHE_MAX_ENTRIES",
                16_384,
            )?,
            query_max_in_flight: parse(&query_max_in_flight, "QUERY_MAX_IN_FLIGHT", 32)?,
            query_queue_timeout: ms(&query_queue_timeout_ms, "QUERY_QUEUE_TIMEOUT_MS", 250)?,
            faults,
            idempotency_ttl: Duration::from_secs(parse(
                &idempotency_ttl_seconds,
                "IDEMPOTENCY_TTL_SECONDS",
                24 * 60 * 60,
            )?),
        };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), SettingsError> {
        let bad = |name: &'static str, problem: &str| {
            Err(SettingsError {
                name,
                problem: problem.to_owned(),
            })
        };
        for issuer in &self.oidc_issuers {
            let local =
                issuer.starts_with("http://127.0.0.1") || issuer.starts_with("http://localhost");
            if !(issuer.starts_with("https://") || local) || issuer.ends_with('/') {
                return bad(
                    "OIDC_ISSUERS",
                    "each issuer must be an https:// URL (http:// only for 127.0.0.1 or localhost) without a trailing slash, exactly as tokens carry it in `iss`",
                );
            }
        }
        if !self.oidc_issuers.is_empty() {
            if self.oidc_audience.is_none() {
                return bad("OIDC_AUDIENCE", "is required with OIDC_ISSUERS");
            }
            if self.oidc_scope_claims.is_empty() {
                return bad("OIDC_SCOPE_CLAIM", "must name at least one claim");
            }
            if self.oidc_scope_map.is_empty() {
                return bad(
                    "OIDC_SCOPE_MAP",
                    "is required with OIDC_ISSUERS: without it no token grants anything",
                );
            }
        }
        if !(self.rate_limit_per_second.is_finite() && self.rate_limit_per_second > 0.0) {
            return bad("RATE_LIMIT_PER_SECOND", "must be a number greater than 0");
        }
        if self.rate_limit_burst == 0 {
            return bad("RATE_LIMIT_BURST", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("MAX_IN_FLIGHT", "must be at least 1");
        }
        if self.query_cache_max_bytes < 64 * 1024 {
            return bad("QUERY_CACHE_MAX_BYTES", "must be at least 65536");
        }
        if self.query_cache_max_entries == 0 {
            return bad("QUERY_CACHE_MAX_ENTRIES", "must be at least 1");
        }
        if self.query_max_in_flight == 0 {
            return bad("QUERY_MAX_IN_FLIGHT", "must be at least 1");
        }
        if self.max_delivery_attempts == 0 {
            return bad("MAX_DELIVERY_ATTEMPTS", "must be at least 1");
        }
        if !(1..=MAX_IDEMPOTENCY_TTL_SECONDS).contains(&self.idempotency_ttl.as_secs()) {
            return bad(
                "IDEMPOTENCY_TTL_SECONDS",
                "must be between 1 and 604800 (7 days)",
            );
        }
        if self.log_file.is_some() && self.log_format != LogFormat::Json {
            return bad(
                "LOG_FILE",
                "needs LOG_FORMAT=json (the file is for a log shipper)",
            );
        }
        if self.port != 0 && self.port == self.admin_port {
            return bad("ADMIN_PORT", "must differ from PORT");
        }
        if self.backend == Backend::Gcp {
            for (name, v) in [
                ("GCP_PROJECT", &self.gcp_project),
                ("PUBSUB_TOPIC", &self.pubsub_topic),
                ("BQ_DATASET", &self.bq_dataset),
                ("BQ_TABLE", &self.bq_table),
            ] {
                if v.is_none() {
                    return bad(name, "is required when BACKEND=gcp");
                }
            }
            if self.api_keys_file.is_none() && self.oidc_issuers.is_empty() {
                return bad(
                    "API_KEYS_FILE",
                    "or OIDC_ISSUERS is required when BACKEND=gcp: the service never runs open on GCP",
                );
            }
            if self.faults.any() {
                return bad("FAULT_*", "fault injection is refused when BACKEND=gcp");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings from `(VARIABLE, value)` pairs given as flags (`--variable=value`), with the
    /// environment ignored so that the machine's variables cannot change a test.
    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Args::command().mut_args(|a| a.env(None));
        let flags = pairs
            .iter()
            .map(|(k, v)| format!("--{}={v}", k.to_lowercase().replace('_', "-")));
        let matches = command
            .try_get_matches_from(std::iter::once("test".to_owned()).chain(flags))
            .unwrap();
        Settings::from_args(Args::from_arg_matches(&matches).unwrap())
    }

    /// Each flag is its variable's name in kebab case (CONTRACT.md), so the two cannot drift.
    #[test]
    fn every_flag_is_its_variable_in_kebab_case() {
        use clap::CommandFactory;
        let command = Args::command();
        let mut n = 0;
        for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                if matches!(arg.get_long(), Some("help" | "version")) {
                    continue;
                }
                panic!("{:?} has no variable", arg.get_long());
            };
            assert_eq!(env.to_str().unwrap(), long.to_uppercase().replace('-', "_"));
            n += 1;
        }
        assert_eq!(n, 43, "settings declared");
    }

    #[test]
    fn defaults_run_the_embedded_backend_on_8080_and_9464() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.backend, Backend::Local);
        assert_eq!((s.port, s.admin_port), (8080, 9464));
        assert_eq!(s.max_delivery_attempts, 5);
        assert_eq!(s.idempotency_ttl, Duration::from_secs(24 * 60 * 60));
        assert_eq!(s.query_cache_ttl, Duration::from_secs(30));
        assert_eq!(s.metric_export_interval, Duration::from_secs(10));
        assert_eq!(s.rust_log, None);
        // A value of only spaces is unset, as an empty one is.
        let blank = settings(&[("PORT", "  "), ("BACKEND", "")]).unwrap();
        assert_eq!((blank.port, blank.backend), (8080, Backend::Local));
    }

    #[test]
    fn the_cache_ttl_defaults_per_backend_and_zero_turns_it_off() {
        let gcp = [
            ("BACKEND", "gcp"),
            ("GCP_PROJECT", "p"),
            ("PUBSUB_TOPIC", "t"),
            ("BQ_DATASET", "d"),
            ("BQ_TABLE", "t"),
            ("API_KEYS_FILE", "/keys.json"),
        ];
        assert_eq!(
            settings(&gcp).unwrap().query_cache_ttl,
            Duration::from_secs(5)
        );
        let off = settings(&[("QUERY_CACHE_TTL_MS", "0")]).unwrap();
        assert!(off.query_cache_ttl.is_zero());
    }

    #[test]
    fn a_bad_setting_names_the_variable() {
        let e = settings(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.name, "PORT");
        let e = settings(&[("BACKEND", "aws")]).unwrap_err();
        assert_eq!(e.name, "BACKEND");
        let e = settings(&[("FAULT_HTTP_ERROR_RATE", "2")]).unwrap_err();
        assert_eq!(e.name, "FAULT_*");
        let e = settings(&[("IDEMPOTENCY_TTL_SECONDS", "0")]).unwrap_err();
        assert_eq!(e.name, "IDEMPOTENCY_TTL_SECONDS");
        let e = settings(&[("IDEMPOTENCY_TTL_SECONDS", "604801")]).unwrap_err();
        assert_eq!(e.name, "IDEMPOTENCY_TTL_SECONDS");
        let e = settings(&[("QUERY_MAX_IN_FLIGHT", "0")]).unwrap_err();
        assert_eq!(e.name, "QUERY_MAX_IN_FLIGHT");
        let e = settings(&[("QUERY_CACHE_TTL_MS", "-1")]).unwrap_err();
        assert_eq!(e.name, "QUERY_CACHE_TTL_MS");
        let e = settings(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]).unwrap_err();
        assert_eq!(e.name, "OTEL_METRIC_EXPORT_INTERVAL");
        assert_eq!(
            e.to_string(),
            "setting OTEL_METRIC_EXPORT_INTERVAL: \"soon\" is not valid: invalid digit found in string"
        );
        let e = settings(&[("LOG_FILE", "/tmp/a.log"), ("LOG_FORMAT", "pretty")]).unwrap_err();
        assert_eq!(e.name, "LOG_FILE");
        let s = settings(&[("LOG_FILE", "/tmp/a.log")]).unwrap();
        assert_eq!(
            s.log_file.as_deref(),
            Some(std::path::Path::new("/tmp/a.log"))
        );
    }

    #[test]
    fn gcp_refuses_to_start_without_keys_or_with_faults() {
        let base = [
            ("BACKEND", "gcp"),
            ("GCP_PROJECT", "p"),
            ("PUBSUB_TOPIC", "t"),
            ("BQ_DATASET", "d"),
            ("BQ_TABLE", "t"),
        ];
        assert_eq!(settings(&base).unwrap_err().name, "API_KEYS_FILE");
        let mut with_keys = base.to_vec();
        with_keys.push(("API_KEYS_FILE", "/keys.json"));
        assert!(settings(&with_keys).is_ok());
        with_keys.push(("FAULT_HTTP_ERROR_RATE", "0.5"));
        assert_eq!(settings(&with_keys).unwrap_err().name, "FAULT_*");
    }

    #[test]
    fn gcp_starts_with_issuers_and_no_keys_file() {
        let with_oidc = [
            ("BACKEND", "gcp"),
            ("GCP_PROJECT", "p"),
            ("PUBSUB_TOPIC", "t"),
            ("BQ_DATASET", "d"),
            ("BQ_TABLE", "t"),
            ("OIDC_ISSUERS", "https://accounts.google.com"),
            ("OIDC_AUDIENCE", "https://api.example"),
            ("OIDC_SCOPE_CLAIM", "email"),
            (
                "OIDC_SCOPE_MAP",
                "https://accounts.google.com#ci@p.iam.gserviceaccount.com=ingest+read",
            ),
        ];
        let s = settings(&with_oidc).unwrap();
        assert_eq!(s.oidc_scope_claims, vec!["email".to_owned()]);
        assert_eq!(
            s.oidc_scope_map,
            vec![(
                "https://accounts.google.com#ci@p.iam.gserviceaccount.com".to_owned(),
                vec!["ingest".to_owned(), "read".to_owned()]
            )]
        );
    }

    #[test]
    fn oidc_settings_are_checked_and_the_message_names_the_variable() {
        let issuer = ("OIDC_ISSUERS", "https://example.okta.com/oauth2/default");
        let audience = ("OIDC_AUDIENCE", "api://challenge");
        let map = ("OIDC_SCOPE_MAP", "group-a=ingest+read,group-b=read");
        assert_eq!(settings(&[issuer, map]).unwrap_err().name, "OIDC_AUDIENCE");
        assert_eq!(
            settings(&[issuer, audience]).unwrap_err().name,
            "OIDC_SCOPE_MAP"
        );
        assert!(settings(&[issuer, audience, map]).is_ok());
        for bad_issuer in ["http://example.com", "https://example.com/", "example.com"] {
            let err = settings(&[("OIDC_ISSUERS", bad_issuer), audience, map]).unwrap_err();
            assert_eq!(err.name, "OIDC_ISSUERS", "{bad_issuer}");
        }
        for bad_map in ["group-a", "group-a=write", "=read", "a=read,a=ingest"] {
            let err = settings(&[issuer, audience, ("OIDC_SCOPE_MAP", bad_map)]).unwrap_err();
            assert_eq!(err.name, "OIDC_SCOPE_MAP", "{bad_map}");
        }
    }
}
