//! Field capture: a span's fields are rendered to JSON once, when recorded, and kept in the
//! span; an event's fields go straight into the line. [`Line`] merges them, the first writer
//! of a name winning.

use std::fmt;

use tracing::field::{Field, Visit};

use super::json::{push_json_chars, push_json_str, push_value, Val};

/// The log fields of one span, rendered as JSON values into one string when recorded, so a
/// span costs two allocations however many fields it has, and a log line copies bytes.
/// (`otel.*` fields steer the OpenTelemetry layer and are not logged.)
pub(super) struct SpanFields {
    /// Rendered JSON values, back to back.
    pub(super) json: String,
    /// Each field's name and the range of its value in `json`.
    pub(super) fields: Vec<(&'static str, u32, u32)>,
}

impl SpanFields {
    /// Sized for the largest span we make (the server span with OTLP on: a dozen fields,
    /// under 200 bytes of values), so recording its fields does not grow either allocation.
    pub(super) fn new() -> Self {
        Self {
            json: String::with_capacity(192),
            fields: Vec::with_capacity(12),
        }
    }

    fn set(&mut self, name: &'static str, value: Val<'_>) {
        let start = self.json.len();
        push_value(&mut self.json, value);
        let range = (start as u32, self.json.len() as u32);
        match self.fields.iter_mut().find(|(n, ..)| *n == name) {
            // Recorded again (rare): the old bytes stay unused until the span closes.
            Some(f) => (f.1, f.2) = range,
            None => self.fields.push((name, range.0, range.1)),
        }
    }
}

/// `otel.*` fields steer the OpenTelemetry layer (span name, kind, status) and are not logged;
/// they are skipped before any formatting.
fn logged(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

impl Visit for SpanFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if logged(field) {
            self.set(field.name(), Val::F64(value));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if logged(field) {
            self.set(field.name(), Val::I64(value));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if logged(field) {
            self.set(field.name(), Val::U64(value));
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if logged(field) {
            self.set(field.name(), Val::Bool(value));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if logged(field) {
            self.set(field.name(), Val::Str(value));
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if logged(field) {
            self.set(field.name(), Val::Str(&value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if logged(field) {
            self.set(field.name(), Val::Str(&format!("{value:?}")));
        }
    }
}

/// The field names a line already has, without allocating for the usual few dozen.
struct Seen {
    fixed: [&'static str; 32],
    len: usize,
    more: Vec<&'static str>,
}

impl Seen {
    fn new() -> Self {
        Self {
            fixed: [""; 32],
            len: 0,
            more: Vec::new(),
        }
    }

    /// Adds `name`; false when it was already there.
    fn insert(&mut self, name: &'static str) -> bool {
        if self.fixed[..self.len].contains(&name) || self.more.contains(&name) {
            return false;
        }
        if self.len < self.fixed.len() {
            self.fixed[self.len] = name;
            self.len += 1;
        } else {
            self.more.push(name);
        }
        true
    }
}

/// Appends one JSON line; the names already written are skipped, so an event's own fields win
/// over its spans' and an inner span's over an outer one's.
pub(super) struct Line<'a> {
    /// The line so far.
    buf: &'a mut String,
    /// The names it has.
    seen: Seen,
    /// `projects/P/traces/`, or empty.
    trace_prefix: &'a str,
}

impl<'a> Line<'a> {
    /// Continues the line in `buf` (its fixed opening already written).
    pub(super) fn new(buf: &'a mut String, trace_prefix: &'a str) -> Self {
        Self {
            buf,
            seen: Seen::new(),
            trace_prefix,
        }
    }

    fn key(&mut self, name: &'static str) -> bool {
        if !self.seen.insert(name) {
            return false;
        }
        let key = match name {
            "trace_id" => "logging.googleapis.com/trace",
            "span_id" => "logging.googleapis.com/spanId",
            other => other,
        };
        self.buf.push(',');
        push_json_str(self.buf, key);
        self.buf.push(':');
        true
    }

    pub(super) fn field(&mut self, name: &'static str, value: Val<'_>) {
        if !self.key(name) {
            return;
        }
        match value {
            Val::Str(s) if name == "trace_id" => self.trace(s),
            other => push_value(self.buf, other),
        }
    }

    /// A span's value, already JSON.
    pub(super) fn rendered(&mut self, name: &'static str, json: &str) {
        if !self.key(name) {
            return;
        }
        match json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
            Some(id) if name == "trace_id" => {
                self.buf.push('"');
                self.buf.push_str(self.trace_prefix);
                self.buf.push_str(id);
                self.buf.push('"');
            }
            _ => self.buf.push_str(json),
        }
    }

    /// `projects/P/traces/T` when GCP_PROJECT is set (how Cloud Logging links a trace), else
    /// the bare id.
    fn trace(&mut self, id: &str) {
        self.buf.push('"');
        push_json_chars(self.buf, self.trace_prefix);
        push_json_chars(self.buf, id);
        self.buf.push('"');
    }
}

/// An event's fields go straight into the line, in the event's order, borrowed where they can.
impl Visit for Line<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field.name(), Val::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field.name(), Val::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field.name(), Val::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field.name(), Val::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), Val::Str(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field.name(), Val::Str(&value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), Val::Str(&format!("{value:?}")));
    }
}
