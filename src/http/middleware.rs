//! The middleware of the API stack (see `http` for the order): observation, load shedding,
//! fault injection, rate limiting, and the problem answers for unmatched routes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Response as HttpResponse};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{gauge, histogram, Label};
use tokio::sync::Semaphore;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::auth::ClientKey;
use super::error::ApiError;
use crate::adapters::faults::FaultSwitch;
use crate::telemetry::metrics::{HTTP_ACTIVE, HTTP_DURATION};
use crate::telemetry::propagation;

/// The `http_request_method` label: the known methods, anything else `_OTHER` (the
/// OpenTelemetry convention), so a client cannot mint label values.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The routes of the router, so the labels and span names of a request are `&'static` and
/// observing it allocates nothing for them (the middleware runs on every request; see
/// docs/benchmarks.md). A template outside this list (none today) is still labelled, owned.
const ROUTES: &[&str] = &[
    super::INGEST,
    super::GET_DATA,
    "/healthz",
    "/readyz",
    "/openapi.json",
];

fn static_route(template: &str) -> Option<&'static str> {
    ROUTES.iter().copied().find(|r| *r == template)
}

/// `http_response_status_code` values, `&'static` (one string per code, made once).
fn status_label(status: u16) -> &'static str {
    static CODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let codes = CODES.get_or_init(|| (0..1000u16).map(|c| c.to_string()).collect());
    codes
        .get(usize::from(status))
        .map(String::as_str)
        .unwrap_or("_OTHER")
}

fn label(key: &'static str, value: &Option<Cow<'static, str>>) -> Option<Label> {
    value.as_ref().map(|v| match v {
        Cow::Borrowed(s) => Label::from_static_parts(key, s),
        Cow::Owned(s) => Label::new(key, s.clone()),
    })
}

struct ActiveGuard(metrics::Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Server span, RED metrics and one log line for every request, whatever its outcome.
/// `http_route` is the matched template and is absent when nothing matched.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route: Option<Cow<'static, str>> =
        req.extensions()
            .get::<MatchedPath>()
            .map(|m| match static_route(m.as_str()) {
                Some(r) => Cow::Borrowed(r),
                None => Cow::Owned(m.as_str().to_owned()),
            });
    // The label values are `&'static` for the known routes and codes: the keys below
    // allocate only their vectors.
    let mut labels = Vec::with_capacity(3);
    labels.push(Label::from_static_parts("http_request_method", method));
    labels.extend(label("http_route", &route));

    let active = gauge!(HTTP_ACTIVE, labels.clone());
    active.increment(1.0);
    let _active = ActiveGuard(active);

    let span = tracing::info_span!(
        "HTTP request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route.as_deref(),
        url.path = req.uri().path(),
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
        client.key_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // With OTLP on, the span continues the caller's trace and logs carry its own ids; with it
    // off (no OpenTelemetry layer at all) nothing reads OpenTelemetry contexts or the span
    // name, so neither is built, and logs carry the caller's `traceparent` ids.
    let ids = if propagation::exporting() {
        match &route {
            Some(r) => span.record("otel.name", format!("{method} {r}")),
            None => span.record("otel.name", method),
        };
        let _ = span.set_parent(propagation::from_headers(req.headers()));
        propagation::ids(&span)
    } else {
        propagation::parse_traceparent(req.headers())
    };
    if let Some((trace_id, span_id)) = ids {
        span.record("trace_id", trace_id.as_str());
        span.record("span_id", span_id.as_str());
    }

    let response = next.run(req).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed();
    labels.push(Label::from_static_parts(
        "http_response_status_code",
        status_label(status.as_u16()),
    ));
    histogram!(HTTP_DURATION, labels).record(elapsed.as_secs_f64());
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(
            http.response.status_code = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request served"
        )
    });
    response
}

/// At most `MAX_IN_FLIGHT` API requests at once; past that, 503 with `Retry-After` at once,
/// instead of queueing until every request is slow.
pub async fn shed(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

/// Drill faults: added latency and injected 500s on API routes (no-op unless switched on).
pub async fn faults(State(switch): State<Arc<FaultSwitch>>, req: Request, next: Next) -> Response {
    let f = switch.get();
    if f.http_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.http_latency_ms)).await;
    }
    if f.http_error_rate > 0.0 && rand::random::<f64>() < f.http_error_rate {
        return ApiError::InjectedFault.into_response();
    }
    next.run(req).await
}

/// 404 as problem+json.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// 405 as problem+json.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Keys the rate limiter by the [`ClientKey`] that authentication recorded.
#[derive(Clone)]
pub struct ClientKeyExtractor;

impl KeyExtractor for ClientKeyExtractor {
    type Key = ClientKey;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Self::Key, GovernorError> {
        req.extensions()
            .get::<ClientKey>()
            .cloned()
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

type Config = GovernorConfig<ClientKeyExtractor, governor::middleware::StateInformationMiddleware>;

/// The per-client rate limit (a GCRA bucket per key id, or per address when auth is off).
#[derive(Clone)]
pub struct RateLimit {
    config: Arc<Config>,
}

impl RateLimit {
    /// `per_second` sustained, bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        let config = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(burst)
            .key_extractor(ClientKeyExtractor)
            .use_headers()
            .finish()
            .expect("period and burst are checked in config");
        Self {
            config: Arc::new(config),
        }
    }

    /// The tower layer; 429s become problem+json with a `Retry-After` of at least 1 s.
    pub fn layer(
        &self,
    ) -> GovernorLayer<ClientKeyExtractor, governor::middleware::StateInformationMiddleware, Body>
    {
        GovernorLayer::new(self.config.clone()).error_handler(|e| -> HttpResponse<Body> {
            match e {
                GovernorError::TooManyRequests { wait_time, headers } => {
                    let wait = wait_time.max(1);
                    let mut response = ApiError::RateLimited(wait).into_response();
                    if let Some(h) = headers {
                        for (k, v) in h.iter() {
                            if k != axum::http::header::RETRY_AFTER
                                && k.as_str() != "x-ratelimit-after"
                            {
                                response.headers_mut().insert(k.clone(), v.clone());
                            }
                        }
                    }
                    response
                        .headers_mut()
                        .insert("x-ratelimit-after", HeaderValue::from(wait));
                    response
                }
                other => ApiError::Internal(format!("rate limiter: {other}")).into_response(),
            }
        })
    }

    /// Forgets idle clients every `every`, so memory stays bounded however many keys or
    /// addresses have called.
    pub fn spawn_eviction(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                evict(&config);
            }
        })
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.config.limiter().len()
    }
}

/// Drops every client whose bucket is full again (idle long enough that forgetting it changes
/// nothing) and gives the memory back.
fn evict(config: &Config) {
    config.limiter().retain_recent();
    config.limiter().shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_clients_are_forgotten_so_memory_stays_bounded() {
        let limit = RateLimit::new(1000.0, 1);
        for i in 0..10_000 {
            let key = ClientKey(format!("client-{i}").into());
            assert!(limit.config.limiter().check_key(&key).is_ok());
        }
        assert_eq!(limit.tracked(), 10_000);
        // One token at 1000/s refills in 1 ms; after that every bucket is full again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        evict(&limit.config);
        assert_eq!(limit.tracked(), 0);
    }
}
