//! JSON log lines in the shape Cloud Logging reads: `severity`, `message`, `time`, and
//! `logging.googleapis.com/trace` / `spanId` so a log line links to its trace. Fields of the
//! enclosing spans (route, method, trace ids) are merged in, so every line of a request
//! carries its context.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The JSON log layer. `GCP_PROJECT`, when set, qualifies trace ids the way Cloud Logging
/// links them (`projects/P/traces/T`).
pub fn json_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let project = std::env::var("GCP_PROJECT").ok().filter(|p| !p.is_empty());
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(CloudLogging { project })
        .with_writer(std::io::stdout)
}

struct CloudLogging {
    project: Option<String>,
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );

        // Span fields first, innermost last so it wins; event fields override both.
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(formatted) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) =
                        serde_json::from_str::<Value>(formatted.as_str())
                    {
                        fields.extend(map);
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut fields));

        let message = fields.remove("message").unwrap_or_else(|| Value::from(""));
        line.insert("message".into(), message);
        if let Some(Value::String(trace_id)) = fields.remove("trace_id") {
            let trace = match &self.project {
                Some(p) => format!("projects/{p}/traces/{trace_id}"),
                None => trace_id,
            };
            line.insert("logging.googleapis.com/trace".into(), trace.into());
        }
        if let Some(span_id) = fields.remove("span_id") {
            line.insert("logging.googleapis.com/spanId".into(), span_id);
        }
        line.insert("target".into(), meta.target().into());
        line.extend(fields);
        writeln!(writer, "{}", Value::Object(line))
    }
}
