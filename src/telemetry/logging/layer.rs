//! The `Layer`: keeps each span's fields and writes one line per event.

use std::cell::RefCell;

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::fields::{Line, SpanFields};
use super::json::{push_json_str, Val};
use super::request;
use super::time::push_time;
use super::writer::LogWriter;

/// Writes one Cloud Logging JSON line per event (see the module docs).
pub struct CloudLogging {
    trace_prefix: String,
    writer: LogWriter,
}

impl CloudLogging {
    pub(super) fn new(project: Option<String>, writer: LogWriter) -> Self {
        let trace_prefix = project
            .map(|p| format!("projects/{p}/traces/"))
            .unwrap_or_default();
        Self {
            trace_prefix,
            writer,
        }
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

thread_local! {
    /// The line being written, reused so a log line allocates nothing in the common case.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl CloudLogging {
    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buf: &mut String)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        buf.clear();
        buf.push_str("{\"severity\":\"");
        buf.push_str(severity(meta.level()));
        buf.push_str("\",\"time\":\"");
        push_time(buf, std::time::SystemTime::now());
        buf.push_str("\",\"target\":");
        push_json_str(buf, meta.target());
        let mut line = Line::new(buf, &self.trace_prefix);
        event.record(&mut line);
        line.field("message", Val::Str(""));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let ext = span.extensions();
                if let Some(f) = ext.get::<SpanFields>() {
                    for &(name, start, end) in &f.fields {
                        line.rendered(name, &f.json[start as usize..end as usize]);
                    }
                }
            }
        }
        // Outermost: what spans and the event say about the request wins over it.
        request::write_current(&mut line);
        buf.push_str("}\n");
    }

    fn emit(&self, line: &str) {
        self.writer.write_line(line.as_bytes());
    }
}

impl<S> Layer<S> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::new();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(fields) => values.record(fields),
            None => {
                let mut fields = SpanFields::new();
                values.record(&mut fields);
                ext.insert(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                self.format(event, &ctx, &mut buf);
                self.emit(&buf);
                // A rare huge line should not pin its memory in every thread.
                if buf.capacity() > 64 * 1024 {
                    *buf = String::with_capacity(512);
                }
            }
            // An event logged while formatting another (from a Debug impl): its own buffer.
            Err(_) => {
                let mut buf = String::new();
                self.format(event, &ctx, &mut buf);
                self.emit(&buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::logging::writer::tests::Sink;
    use crate::telemetry::logging::writer::Sinks;
    use crate::telemetry::logging::{record_key_id, RequestFields, RequestScope};

    fn capture(project: Option<&str>, f: impl FnOnce()) -> Vec<serde_json::Value> {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(Sinks {
            out: sink.clone(),
            file: None,
        });
        let layer = CloudLogging::new(project.map(str::to_owned), writer);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        drop(guard); // flushes
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_carries_cloud_logging_fields_and_its_spans_context() {
        let lines = capture(Some("proj"), || {
            let outer = tracing::info_span!(
                "HTTP request",
                otel.name = "POST /x",
                http.route = "/x",
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                shadowed = "outer",
            );
            outer.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            outer.record("span_id", "00f067aa0ba902b7");
            let _o = outer.enter();
            let inner = tracing::info_span!("inner", shadowed = "inner", n = 7u64);
            let _i = inner.enter();
            tracing::warn!(
                latency_ms = 1.5,
                ok = true,
                text = "a \"quoted\"\nline\u{1}",
                "served"
            );
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["severity"], "WARNING");
        assert_eq!(l["message"], "served");
        assert_eq!(
            l["logging.googleapis.com/trace"],
            "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(l["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        assert_eq!(l["http.route"], "/x");
        assert_eq!(l["shadowed"], "inner", "the innermost span wins");
        assert_eq!(l["n"], 7);
        assert_eq!(l["latency_ms"], 1.5);
        assert_eq!(l["ok"], true);
        assert_eq!(l["text"], "a \"quoted\"\nline\u{1}");
        assert!(l.get("otel.name").is_none(), "otel.* fields are not logged");
        assert!(l.get("trace_id").is_none());
        let time = l["time"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    }

    /// The request's fields reach every line logged while its scope is entered (under any
    /// span, beneath the span's and the event's own fields), and nothing outside it; scopes
    /// nest and restore what was current before.
    #[test]
    fn lines_inside_a_request_scope_carry_its_fields() {
        let request = |path: &str| {
            Some(RequestFields {
                method: "GET",
                route: Some(Cow::Borrowed("/r")),
                scheme: "http",
                path: path.to_owned(),
                key_id: None,
                trace: Some((
                    "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    "00f067aa0ba902b7".into(),
                )),
            })
        };
        let (mut outer, mut inner) = (request("/outer"), request("/inner"));
        let lines = capture(Some("proj"), || {
            tracing::info!("before");
            {
                let _scope = RequestScope::enter(&mut outer);
                record_key_id(&Arc::from("client-a"));
                let span = tracing::info_span!("s", url.path = "/from-span");
                span.in_scope(|| tracing::warn!("in span"));
                {
                    let _nested = RequestScope::enter(&mut inner);
                    tracing::info!(http.route = "/from-event", "nested");
                }
                tracing::info!("outer again");
            }
            tracing::info!("after");
        });
        let by = |m: &str| lines.iter().find(|l| l["message"] == m).unwrap().clone();
        for m in ["before", "after"] {
            let l = by(m);
            assert!(
                l.get("url.path").is_none() && l.get("http.route").is_none(),
                "{l}"
            );
            assert!(l.get("logging.googleapis.com/trace").is_none(), "{l}");
        }
        let l = by("in span");
        assert_eq!(
            l["url.path"], "/from-span",
            "a span's field wins over the request's"
        );
        assert_eq!(l["http.route"], "/r");
        assert_eq!(l["http.request.method"], "GET");
        assert_eq!(l["client.key_id"], "client-a");
        assert_eq!(
            l["logging.googleapis.com/trace"],
            "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(l["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
        let l = by("nested");
        assert_eq!(l["url.path"], "/inner");
        assert_eq!(l["http.route"], "/from-event", "the event's field wins");
        assert!(l.get("client.key_id").is_none(), "{l}");
        let l = by("outer again");
        assert_eq!(l["url.path"], "/outer");
        assert_eq!(l["client.key_id"], "client-a");
        // Each scope's fields are back in their slot, with what was recorded meanwhile.
        assert_eq!(outer.unwrap().key_id.as_deref(), Some("client-a"));
        assert_eq!(inner.unwrap().path, "/inner");
    }

    #[test]
    fn without_a_project_the_trace_is_the_bare_id_and_event_fields_win() {
        let lines = capture(None, || {
            let span = tracing::info_span!("s", trace_id = "abc", status = 1u64);
            let _e = span.enter();
            tracing::info!(status = 2u64, nan = f64::NAN, "m");
            tracing::error!("second");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["logging.googleapis.com/trace"], "abc");
        assert_eq!(lines[0]["status"], 2);
        assert!(lines[0]["nan"].is_null());
        assert_eq!(lines[1]["severity"], "ERROR");
        assert_eq!(lines[1]["status"], 1);
    }
}
