//! JSON log lines in the shape Cloud Logging reads: `severity`, `message`, `time`, and
//! `logging.googleapis.com/trace` / `spanId` so a log line links to its trace. Fields of the
//! enclosing spans are merged in, and so are the fields of the request being served
//! ([`RequestFields`]: method, route, scheme, path, key id, trace ids), so every line of a request
//! carries its context.
//!
//! The request's fields are not a span's: with OTLP off, a request makes no span at all.
//! A span costs about 0.8 µs (allocated in the registry, entered and left on every poll,
//! closed), and a line inside one about 0.6 µs more, where moving [`RequestFields`] into a
//! thread-local around each poll costs a few nanoseconds (docs/benchmarks.md). With OTLP on,
//! the server span exists for the trace and the request's fields still come from here.
//!
//! This is its own `Layer`, not a `tracing_subscriber::fmt` formatter, because the log line of
//! every request is on the hot path (issue #3: the full stack must keep 90 % of the handlers'
//! rate). `fmt`'s JSON mode formats every span's fields into a JSON string when the span opens,
//! parses and re-serializes that string on every `record`, and parses it again for every event.
//! Here a span keeps its fields as typed values, an event writes its line once into a reused
//! buffer, and the line is appended to a shared buffer that a background thread writes out
//! every few milliseconds (see [`LogWriter`]): a request thread neither blocks on stdout nor
//! wakes another thread per line.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The JSON log layer, writing to stdout (and to `log_file`, when given) through a background
/// thread. `GCP_PROJECT`, when set, qualifies trace ids the way Cloud Logging links them
/// (`projects/P/traces/T`). Keep the guard until exit: dropping it writes out what is still
/// buffered. Fails only when `log_file` cannot be opened.
pub fn json_layer(log_file: Option<&Path>) -> std::io::Result<(CloudLogging, LogWriterGuard)> {
    let project = std::env::var("GCP_PROJECT").ok().filter(|p| !p.is_empty());
    let file = match log_file {
        Some(path) => Some(RotatingFile::open(path, LOG_FILE_MAX_BYTES)?),
        None => None,
    };
    let (writer, guard) = LogWriter::spawn(Sinks {
        out: std::io::stdout(),
        file,
    });
    Ok((CloudLogging::new(project, writer), guard))
}

/// The log file is rotated at this size, and one rotated file is kept: at most 32 MiB of the
/// 64 MiB in-memory volume it shares with the Datadog sidecar on Cloud Run (terraform).
const LOG_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Where the writer thread puts each batch of lines.
struct Sinks<W> {
    out: W,
    file: Option<RotatingFile>,
}

impl<W: std::io::Write> Sinks<W> {
    fn write(&mut self, batch: &[u8]) {
        // Nowhere to report a failed write; the next batch tries again. The file failing (its
        // volume full, say) never holds up stdout, which Cloud Logging reads.
        let _ = self.out.write_all(batch).and_then(|()| self.out.flush());
        if let Some(file) = &mut self.file {
            let _ = file.write(batch);
        }
    }
}

/// A log file for a shipper that tails files (on Cloud Run, the Datadog sidecar reads
/// `/shared-logs/logs/*.log`). When the next batch would take it past `max_bytes` it is
/// renamed to `<name>.1`, replacing the previous one, and a new file starts: the two stay under
/// 2 x `max_bytes`, and a batch holds whole lines, so no line is split across files. A tailer
/// that follows renames reads the old file to its end; `*.1` does not match `*.log`, so nothing
/// is read twice.
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = Self::append(path)?;
        Ok(Self {
            path: path.to_owned(),
            written: file.metadata()?.len(),
            file,
            max_bytes,
        })
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.written > 0 && self.written + batch.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated)?;
            self.file = Self::append(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(batch)?;
        self.written += batch.len() as u64;
        Ok(())
    }
}

/// Lines wait at most this long in memory before they are written.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 64 * 1024;
/// Past this, a logging thread waits for the writer: logs are never dropped, and a stalled
/// stdout cannot grow memory without bound.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

struct Buffer {
    bytes: Vec<u8>,
    closed: bool,
}

struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the writer early (buffer past `FLUSH_AT`, or closing).
    full: Condvar,
    /// Wakes logging threads waiting on a buffer past `MAX_BUFFERED`.
    drained: Condvar,
}

/// Appends whole lines to a buffer that one thread writes out in batches. A line costs a
/// short critical section and a copy; `write(2)` runs once per batch, off the request threads,
/// and no line wakes another thread (the writer polls every `FLUSH_EVERY`).
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// Stops the writer thread after it has written everything (on drop).
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogWriter {
    fn spawn<W: std::io::Write + Send + 'static>(mut sinks: Sinks<W>) -> (Self, LogWriterGuard) {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer {
                bytes: Vec::with_capacity(FLUSH_AT),
                closed: false,
            }),
            full: Condvar::new(),
            drained: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(FLUSH_AT);
                loop {
                    let closed = {
                        let mut b = lock(&theirs.buffer);
                        if !b.closed && b.bytes.len() < FLUSH_AT {
                            b = theirs
                                .full
                                .wait_timeout(b, FLUSH_EVERY)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        std::mem::swap(&mut b.bytes, &mut batch);
                        b.closed
                    };
                    theirs.drained.notify_all();
                    if !batch.is_empty() {
                        sinks.write(&batch);
                        batch.clear();
                        if batch.capacity() > 4 * FLUSH_AT {
                            batch = Vec::with_capacity(FLUSH_AT);
                        }
                    }
                    if closed && lock(&theirs.buffer).bytes.is_empty() {
                        return;
                    }
                }
            })
            .expect("spawn the log writer thread");
        let guard = LogWriterGuard {
            shared: shared.clone(),
            thread: Some(thread),
        };
        (Self(shared), guard)
    }

    fn write_line(&self, line: &[u8]) {
        let mut b = lock(&self.0.buffer);
        while b.bytes.len() >= MAX_BUFFERED && !b.closed {
            b = self.0.drained.wait(b).unwrap_or_else(|e| e.into_inner());
        }
        let before = b.bytes.len();
        b.bytes.extend_from_slice(line);
        // Wake the writer once, on crossing the mark: every notify is a futex syscall, and
        // lines keep arriving until the writer gets the lock.
        if before < FLUSH_AT && b.bytes.len() >= FLUSH_AT {
            self.0.full.notify_one();
        }
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        lock(&self.shared.buffer).closed = true;
        self.shared.full.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A panic while holding the lock leaves only bytes behind; keep logging.
fn lock(m: &Mutex<Buffer>) -> std::sync::MutexGuard<'_, Buffer> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one Cloud Logging JSON line per event (see the module docs).
pub struct CloudLogging {
    trace_prefix: String,
    writer: LogWriter,
}

impl CloudLogging {
    fn new(project: Option<String>, writer: LogWriter) -> Self {
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

/// The log fields of one span, rendered as JSON values into one string when recorded, so a
/// span costs two allocations however many fields it has, and a log line copies bytes.
/// (`otel.*` fields steer the OpenTelemetry layer and are not logged.)
struct SpanFields {
    /// Rendered JSON values, back to back.
    json: String,
    /// Each field's name and the range of its value in `json`.
    fields: Vec<(&'static str, u32, u32)>,
}

impl SpanFields {
    /// Sized for the largest span we make (the server span with OTLP on: a dozen fields,
    /// under 200 bytes of values), so recording its fields does not grow either allocation.
    fn new() -> Self {
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

/// A field value borrowed for writing.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// A JSON value.
fn push_value(buf: &mut String, value: Val<'_>) {
    match value {
        Val::Str(s) => push_json_str(buf, s),
        Val::I64(n) => buf.push_str(itoa::Buffer::new().format(n)),
        Val::U64(n) => buf.push_str(itoa::Buffer::new().format(n)),
        // JSON has no NaN or infinity.
        Val::F64(x) if x.is_finite() => buf.push_str(ryu::Buffer::new().format_finite(x)),
        Val::F64(_) => buf.push_str("null"),
        Val::Bool(b) => buf.push_str(if b { "true" } else { "false" }),
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
struct Line<'a> {
    buf: &'a mut String,
    seen: Seen,
    trace_prefix: &'a str,
}

impl Line<'_> {
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

    fn field(&mut self, name: &'static str, value: Val<'_>) {
        if !self.key(name) {
            return;
        }
        match value {
            Val::Str(s) if name == "trace_id" => self.trace(s),
            other => push_value(self.buf, other),
        }
    }

    /// A span's value, already JSON.
    fn rendered(&mut self, name: &'static str, json: &str) {
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

/// A JSON string literal, escaped as RFC 8259 requires.
fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    push_json_chars(buf, s);
    buf.push('"');
}

/// The inside of a JSON string literal.
fn push_json_chars(buf: &mut String, s: &str) {
    // Almost nothing logged needs escaping: one pass to find out, then a copy.
    if !needs_escape(s.as_bytes()) {
        buf.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if !escaped(b) {
            continue;
        }
        buf.push_str(&s[start..i]);
        match b {
            b'"' => buf.push_str("\\\""),
            b'\\' => buf.push_str("\\\\"),
            b'\n' => buf.push_str("\\n"),
            b'\r' => buf.push_str("\\r"),
            b'\t' => buf.push_str("\\t"),
            _ => {
                let _ = write!(buf, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    buf.push_str(&s[start..]);
}

/// The bytes a JSON string must escape: control characters, `"` and `\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` is [`escaped`], eight bytes per step (SWAR): a word has a byte
/// below `n` when `(x - n*0x01..) & !x & 0x80..` is non-zero (exact as a yes/no answer for
/// `n <= 0x80`), and a byte equal to `c` when `x ^ c*0x01..` has a zero byte. About a dozen
/// instructions per eight bytes, where the byte loop, which the compiler did not vectorize,
/// cost about four per byte: a thousand a log line (callgrind, docs/benchmarks.md).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |x: u64, c: u8| below(x ^ (ONES * u64::from(c)), 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes(word.try_into().expect("chunks of eight"));
        if below(x, 0x20) | has(x, b'"') | has(x, b'\\') != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| escaped(b))
}

/// RFC 3339 UTC with microseconds (`2026-11-28T05:10:43.119496Z`). The date is computed once
/// a day per thread; the rest is arithmetic (chrono's formatting was a fifth of a line's cost).
fn push_time(buf: &mut String, now: std::time::SystemTime) {
    thread_local! {
        static DAY: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    let (day, in_day) = (secs / 86_400, secs % 86_400);
    DAY.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != day {
            let date = chrono::DateTime::<chrono::Utc>::from_timestamp((day * 86_400) as i64, 0)
                .unwrap_or_default();
            *d = (day, date.format("%Y-%m-%dT").to_string());
        }
        buf.push_str(&d.1);
    });
    let two = |buf: &mut String, n: u64| {
        buf.push(char::from(b'0' + (n / 10) as u8));
        buf.push(char::from(b'0' + (n % 10) as u8));
    };
    two(buf, in_day / 3600);
    buf.push(':');
    two(buf, in_day / 60 % 60);
    buf.push(':');
    two(buf, in_day % 60);
    buf.push('.');
    let digits = itoa::Buffer::new().format(micros).len();
    for _ in digits..6 {
        buf.push('0');
    }
    buf.push_str(itoa::Buffer::new().format(micros));
    buf.push('Z');
}

/// The fields every log line of one request carries. The request's future owns them and
/// moves them into a thread-local while it runs ([`RequestScope`]), so an event anywhere
/// inside the request (an error from a handler) gets them without a span.
#[derive(Debug)]
pub struct RequestFields {
    /// `http.request.method`.
    pub method: &'static str,
    /// `http.route`: the matched template; none when nothing matched.
    pub route: Option<Cow<'static, str>>,
    /// `url.scheme`.
    pub scheme: &'static str,
    /// `url.path`.
    pub path: String,
    /// `client.key_id`, once authentication has identified the caller.
    pub key_id: Option<Arc<str>>,
    /// Trace and span ids (hex): the server span's with OTLP on, else the caller's
    /// `traceparent`.
    pub trace: Option<(String, String)>,
}

impl RequestFields {
    fn write(&self, line: &mut Line<'_>) {
        line.field("http.request.method", Val::Str(self.method));
        if let Some(route) = &self.route {
            line.field("http.route", Val::Str(route));
        }
        line.field("url.scheme", Val::Str(self.scheme));
        line.field("url.path", Val::Str(&self.path));
        if let Some(key) = &self.key_id {
            line.field("client.key_id", Val::Str(key));
        }
        if let Some((trace, span)) = &self.trace {
            line.field("trace_id", Val::Str(trace));
            line.field("span_id", Val::Str(span));
        }
    }
}

thread_local! {
    /// The fields of the request this thread is running, if any.
    static REQUEST: RefCell<Option<RequestFields>> = const { RefCell::new(None) };
}

/// While alive, `slot`'s fields are the current request's on this thread; on drop (also on a
/// panic) they go back into `slot` and whatever was current before is current again.
pub struct RequestScope<'a> {
    slot: &'a mut Option<RequestFields>,
    prev: Option<RequestFields>,
}

impl<'a> RequestScope<'a> {
    /// Makes `slot`'s fields current (`slot` is empty until the scope ends).
    pub fn enter(slot: &'a mut Option<RequestFields>) -> Self {
        let prev = REQUEST.with(|r| r.replace(slot.take()));
        Self { slot, prev }
    }
}

impl Drop for RequestScope<'_> {
    fn drop(&mut self) {
        *self.slot = REQUEST.with(|r| r.replace(self.prev.take()));
    }
}

/// Records the caller's key id on the current request (authentication calls it).
pub fn record_key_id(id: &Arc<str>) {
    REQUEST.with(|r| {
        if let Ok(mut current) = r.try_borrow_mut() {
            if let Some(fields) = current.as_mut() {
                fields.key_id = Some(id.clone());
            }
        }
    });
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
        let mut line = Line {
            buf,
            seen: Seen::new(),
            trace_prefix: &self.trace_prefix,
        };
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
        REQUEST.with(|r| {
            if let Ok(current) = r.try_borrow() {
                if let Some(fields) = current.as_ref() {
                    fields.write(&mut line);
                }
            }
        });
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
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Captures what the layer writes, through the same background writer.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The word-at-a-time check agrees with the byte predicate for every byte value at every
    /// position of a word and of the tail, next to ordinary and multi-byte UTF-8 bytes.
    #[test]
    fn needs_escape_agrees_with_the_byte_predicate() {
        for fill in [b'a', b'~', 0x7f, 0xc3, 0xff, b' '] {
            for len in 0..=19 {
                for pos in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![fill; len];
                        bytes[pos] = b;
                        let want = bytes.iter().any(|&b| escaped(b));
                        assert_eq!(
                            needs_escape(&bytes),
                            want,
                            "byte {b:#04x} at {pos} of {len}"
                        );
                    }
                }
                assert!(!needs_escape(&vec![fill; len]) || escaped(fill));
            }
        }
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

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

    /// Every line reaches stdout and the file; the file rotates at its size, keeps one
    /// predecessor, and never splits a line.
    #[test]
    fn the_log_file_gets_every_line_and_rotates_at_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let sink = Sink::default();
        let (writer, guard) = LogWriter::spawn(Sinks {
            out: sink.clone(),
            file: Some(RotatingFile::open(&path, 1000).unwrap()),
        });
        let lines: Vec<String> = (0..300).map(|i| format!("{{\"n\":{i:03}}}\n")).collect();
        for (i, line) in lines.iter().enumerate() {
            writer.write_line(line.as_bytes());
            if i % 13 == 0 {
                // Let batches form at different points.
                std::thread::sleep(FLUSH_EVERY + Duration::from_millis(5));
            }
        }
        drop(guard);
        let all = lines.concat();
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            all
        );
        let current = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(dir.path().join("logs/app.log.1")).unwrap();
        for file in [&current, &previous] {
            assert!(file.len() <= 1000, "{} bytes", file.len());
            assert!(file.ends_with('\n') && !file.is_empty());
        }
        // The two files are the newest lines, in order, starting at a line boundary.
        let kept = previous + &current;
        assert!(all.ends_with(&kept), "not a suffix of the lines written");
        assert!(kept.starts_with("{\"n\":"));
        assert!(kept.len() > 1000, "rotation kept only {} bytes", kept.len());
        // Reopening continues the file rather than truncating it.
        let mut again = RotatingFile::open(&path, 1000).unwrap();
        again.write(b"{}\n").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with(&current));
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
