//! W3C trace context in and out: from HTTP headers into the server span, from the producer
//! span into message attributes, and from attributes into the consumer span, so one trace
//! shows request -> publish -> store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::ports::Attributes;

/// The attribute Google's client libraries use for trace context on Pub/Sub messages.
pub const GOOGCLIENT_TRACEPARENT: &str = "googclient_traceparent";
/// The plain W3C name, for consumers that know only that.
pub const TRACEPARENT: &str = "traceparent";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the W3C propagator as the global one, and records whether an OpenTelemetry layer
/// is installed (`exporting`).
pub fn install(exporting: bool) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(exporting, Ordering::Relaxed);
}

/// Whether spans go to an OpenTelemetry layer. Without one, OpenTelemetry contexts are never
/// read, so the hot path skips building them (span names, remote parents).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The remote parent carried by `traceparent`/`tracestate`, if any.
pub fn from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the span's context into message attributes under both names.
pub fn inject(span: &tracing::Span, attributes: &mut Attributes) {
    if !exporting() {
        // No trace to continue: the producer span does not exist.
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapInjector(&mut carrier));
    if let Some(tp) = carrier.remove(TRACEPARENT) {
        attributes.insert(GOOGCLIENT_TRACEPARENT.to_owned(), tp.clone());
        attributes.insert(TRACEPARENT.to_owned(), tp);
    }
    if let Some(ts) = carrier.remove("tracestate").filter(|s| !s.is_empty()) {
        attributes.insert("tracestate".to_owned(), ts);
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct AttributeExtractor<'a>(&'a Attributes);

impl Extractor for AttributeExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACEPARENT {
            // Prefer Google's name: it is what Pub/Sub's own instrumentation writes.
            return self
                .0
                .get(GOOGCLIENT_TRACEPARENT)
                .or_else(|| self.0.get(TRACEPARENT))
                .map(String::as_str);
        }
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The producer's context from message attributes.
pub fn from_attributes(attributes: &Attributes) -> Context {
    TraceContextPropagator::new().extract(&AttributeExtractor(attributes))
}

/// The trace and span ids of `span`, hex encoded, when it has a valid context.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The trace and parent span ids of a well-formed `traceparent` header, without any
/// OpenTelemetry machinery (used for log correlation when export is off).
pub fn parse_traceparent(headers: &http::HeaderMap) -> Option<(String, String)> {
    let v = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && hex(trace, 32)
        && hex(span, 16)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then(|| (trace.to_ascii_lowercase(), span.to_ascii_lowercase()))
}
