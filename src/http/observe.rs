//! The outermost layer: RED metrics, one log line and (with OTLP on) a server span for every
//! request, whatever its outcome (404, 413, 429 and 503 included). `http_route` is the matched
//! template and is absent when nothing matched; the method set is bounded.
//!
//! The request's log fields travel as [`RequestFields`] in this layer's future, made current
//! around every poll, so any JSON line logged inside the request carries them. With OTLP off
//! no span is made: tracing is on (events, their filters, the same JSON lines), but a
//! per-request span would only be allocated, entered and closed for nothing to read it
//! (issue #3's middleware budget; docs/benchmarks.md). The pretty (terminal) format knows
//! nothing of [`RequestFields`]: there the request line names the request, and lines logged
//! inside it do not.
//!
//! A hand-written tower layer rather than `from_fn`: its future wraps the inner one without a
//! box, and the metric handles of every (method, route, status) are looked up once and kept,
//! so observing a request builds no metric key (docs/benchmarks.md, "Middleware cost").

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use metrics::{gauge, histogram, Gauge, Histogram, Label};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::logging::{RequestFields, RequestScope};
use crate::telemetry::metrics::{HTTP_ACTIVE, HTTP_DURATION};
use crate::telemetry::propagation;

/// `http_request_method` values: the known methods, anything else `_OTHER` (the
/// OpenTelemetry convention), so a client cannot mint label values.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// The `http_route` of a request: one of the router's templates ([`super::ROUTES`]), none
/// (nothing matched), or, should a template ever be added without being listed there, that
/// template, labelled but not cached.
#[derive(Clone)]
enum RouteLabel {
    Known(usize),
    Unmatched,
    Unlisted(Arc<str>),
}

impl RouteLabel {
    fn of(req: &Request) -> Self {
        match req.extensions().get::<MatchedPath>() {
            None => RouteLabel::Unmatched,
            Some(m) => match super::ROUTES.iter().position(|r| *r == m.as_str()) {
                Some(i) => RouteLabel::Known(i),
                None => RouteLabel::Unlisted(m.as_str().into()),
            },
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            RouteLabel::Known(i) => Some(super::ROUTES[*i]),
            RouteLabel::Unmatched => None,
            RouteLabel::Unlisted(r) => Some(r),
        }
    }

    /// The route for logs: the listed templates are `'static`.
    fn name(&self) -> Option<Cow<'static, str>> {
        match self {
            RouteLabel::Known(i) => Some(Cow::Borrowed(super::ROUTES[*i])),
            RouteLabel::Unmatched => None,
            RouteLabel::Unlisted(r) => Some(Cow::Owned(r.to_string())),
        }
    }

    /// Index in [`RedMetrics`]: the listed routes, then "unmatched".
    fn slot(&self) -> Option<usize> {
        match self {
            RouteLabel::Known(i) => Some(*i),
            RouteLabel::Unmatched => Some(super::ROUTES.len()),
            RouteLabel::Unlisted(_) => None,
        }
    }
}

/// `http_response_status_code` values, `&'static` (one string per code, made once).
fn status_label(status: u16) -> &'static str {
    static CODES: OnceLock<Vec<String>> = OnceLock::new();
    let codes = CODES.get_or_init(|| (0..1000u16).map(|c| c.to_string()).collect());
    codes
        .get(usize::from(status))
        .map(String::as_str)
        .unwrap_or("_OTHER")
}

fn labels(method: usize, route: &RouteLabel) -> Vec<Label> {
    let mut labels = Vec::with_capacity(3);
    labels.push(Label::from_static_parts(
        "http_request_method",
        METHODS[method],
    ));
    match route {
        RouteLabel::Known(i) => {
            labels.push(Label::from_static_parts("http_route", super::ROUTES[*i]))
        }
        RouteLabel::Unlisted(r) => labels.push(Label::new("http_route", r.to_string())),
        RouteLabel::Unmatched => {}
    }
    labels
}

/// The RED metric handles of one method and route.
struct RouteMetrics {
    active: OnceLock<Gauge>,
    /// By status code: the few the route answers, so a short list.
    duration: RwLock<Vec<(u16, Histogram)>>,
}

/// The RED metric handles of the layer, registered when it is built: one [`RouteMetrics`] per
/// listed route (then "unmatched") and method, each handle made on first use and kept (made
/// earlier, every unused label set would be an empty series on `/metrics`). The label sets are
/// bounded (methods x routes x status codes the service answers), so this stays small.
struct RedMetrics {
    routes: Vec<[RouteMetrics; METHODS.len()]>,
}

impl RedMetrics {
    fn register() -> Self {
        let route = || {
            std::array::from_fn(|_| RouteMetrics {
                active: OnceLock::new(),
                duration: RwLock::new(Vec::new()),
            })
        };
        Self {
            routes: (0..=super::ROUTES.len()).map(|_| route()).collect(),
        }
    }

    fn of(&self, method: usize, route: &RouteLabel) -> Option<&RouteMetrics> {
        route.slot().map(|slot| &self.routes[slot][method])
    }

    fn active(&self, method: usize, route: &RouteLabel) -> Gauge {
        let make = || gauge!(HTTP_ACTIVE, labels(method, route));
        match self.of(method, route) {
            Some(m) => m.active.get_or_init(make).clone(),
            None => make(),
        }
    }

    fn duration(&self, method: usize, route: &RouteLabel, status: u16) -> Histogram {
        let make = || {
            let mut l = labels(method, route);
            l.push(Label::from_static_parts(
                "http_response_status_code",
                status_label(status),
            ));
            histogram!(HTTP_DURATION, l)
        };
        let Some(m) = self.of(method, route) else {
            return make();
        };
        let find = |by_status: &[(u16, Histogram)]| {
            by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, h)| h.clone())
        };
        if let Some(h) = find(&m.duration.read().expect("metric handles poisoned")) {
            return h;
        }
        let mut by_status = m.duration.write().expect("metric handles poisoned");
        if let Some(h) = find(&by_status) {
            return h;
        }
        let h = make();
        by_status.push((status, h.clone()));
        h
    }
}

/// See the module docs. Build it after the metrics recorder is installed: the handles it
/// keeps belong to the recorder of that moment.
#[derive(Clone)]
pub struct ObserveLayer(Arc<RedMetrics>);

impl ObserveLayer {
    /// A layer with its metrics registered (each handle is made on first use).
    pub fn new() -> Self {
        Self(Arc::new(RedMetrics::register()))
    }
}

impl Default for ObserveLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            handles: self.0.clone(),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    handles: Arc<RedMetrics>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_index(req.method());
        let route = RouteLabel::of(&req);
        let active = self.handles.active(method, &route);
        active.increment(1.0);

        let mut fields = Some(RequestFields {
            method: METHODS[method],
            route: route.name(),
            scheme: "http",
            path: req.uri().path().to_owned(),
            key_id: None,
            trace: None,
        });
        // With OTLP on, the server span continues the caller's trace and the logs carry its
        // ids; with it off there is no span, and the logs carry the caller's `traceparent`.
        let span = propagation::exporting().then(|| {
            let span = tracing::info_span!(
                "HTTP request",
                otel.name = tracing::field::Empty,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = METHODS[method],
                http.route = route.as_str(),
                url.path = req.uri().path(),
                url.scheme = "http",
                http.response.status_code = tracing::field::Empty,
                client.key_id = tracing::field::Empty,
            );
            match route.as_str() {
                Some(r) => span.record("otel.name", format!("{} {r}", METHODS[method])),
                None => span.record("otel.name", METHODS[method]),
            };
            let _ = span.set_parent(propagation::from_headers(req.headers()));
            span
        });
        if let Some(f) = fields.as_mut() {
            f.trace = match &span {
                Some(span) => propagation::ids(span),
                None => propagation::parse_traceparent(req.headers()),
            };
        }

        // The inner layers decide admission synchronously in `call` (authentication records
        // the key id), so the call runs inside the request too.
        let future = {
            let _request = RequestScope::enter(&mut fields);
            match &span {
                Some(span) => span.in_scope(|| self.inner.call(req)),
                None => self.inner.call(req),
            }
        };
        ObserveFuture {
            future,
            fields,
            span,
            started,
            method,
            route,
            active: Some(active),
            handles: self.handles.clone(),
        }
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        future: F,
        // The request's log fields (current while `future` runs) and, with OTLP on, its span.
        fields: Option<RequestFields>,
        span: Option<Span>,
        started: Instant,
        method: usize,
        route: RouteLabel,
        // Decremented when the request ends, however it ends (a dropped connection too).
        active: Option<Gauge>,
        handles: Arc<RedMetrics>,
    }

    impl<F> PinnedDrop for ObserveFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(active) = this.project().active.take() {
                active.decrement(1.0);
            }
        }
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = {
            let _request = RequestScope::enter(this.fields);
            let _span = this.span.as_ref().map(Span::enter);
            this.future.as_mut().poll(cx)
        };
        let response = match ready!(polled) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let elapsed = this.started.elapsed();
        this.handles
            .duration(*this.method, this.route, status.as_u16())
            .record(elapsed.as_secs_f64());
        // Without a span the line names the request itself rather than relying on the scope,
        // so the pretty (terminal) format, which knows nothing of [`RequestFields`], shows it.
        let served = |f: &RequestFields| {
            tracing::info!(
                http.request.method = f.method,
                http.route = f.route.as_deref(),
                url.scheme = f.scheme,
                url.path = f.path.as_str(),
                client.key_id = f.key_id.as_deref(),
                trace_id = f.trace.as_ref().map(|t| t.0.as_str()),
                span_id = f.trace.as_ref().map(|t| t.1.as_str()),
                http.response.status_code = status.as_u16(),
                // Whole microseconds: `33.3835`, not `33.383500000000005`.
                latency_ms = elapsed.as_micros() as f64 / 1e3,
                "request served"
            )
        };
        match this.span.as_ref() {
            Some(span) => {
                span.record("http.response.status_code", status.as_u16());
                if let Some(key) = this.fields.as_ref().and_then(|f| f.key_id.as_ref()) {
                    span.record("client.key_id", key.as_ref());
                }
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                // The span has the request's attributes already; an event repeating them would
                // repeat them in the exported trace too. The log line gets them, and the
                // span's ids, from the request's fields.
                let _request = RequestScope::enter(this.fields);
                span.in_scope(|| {
                    tracing::info!(
                        http.response.status_code = status.as_u16(),
                        latency_ms = elapsed.as_micros() as f64 / 1e3,
                        "request served"
                    )
                });
            }
            // Always there: the scope puts them back when the inner poll returns or unwinds.
            None => served(this.fields.as_ref().expect("the scope restores the fields")),
        }
        if let Some(active) = this.active.take() {
            active.decrement(1.0);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use tower::service_fn;
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};

    use super::*;

    /// Counts what reaches the subscriber.
    #[derive(Clone, Default)]
    struct Count(Arc<(AtomicUsize, AtomicUsize)>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: LayerContext<'_, S>,
        ) {
            self.0 .0.fetch_add(1, Ordering::Relaxed);
        }
        fn on_event(&self, _: &tracing::Event<'_>, _: LayerContext<'_, S>) {
            self.0 .1.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Without an exporter (nothing in these tests installs one) a request makes no span and
    /// logs exactly one line: "costs nothing" (issue #3).
    #[tokio::test]
    async fn without_otlp_a_request_makes_no_span_and_one_line() {
        assert!(!propagation::exporting());
        let count = Count::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(count.clone()));
        let mut service = ObserveLayer::new().layer(service_fn(|_req: Request| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        let response = service
            .call(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), 200);
        assert_eq!(count.0 .0.load(Ordering::Relaxed), 0, "spans made");
        assert_eq!(count.0 .1.load(Ordering::Relaxed), 1, "lines logged");
    }
}
