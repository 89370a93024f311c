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
//! every few milliseconds (see [`writer`]): a request thread neither blocks on stdout nor
//! wakes another thread per line.

//! # Layout
//! - [`layer`]: the `Layer`: formats one line per event from the event, its spans and the
//!   request.
//! - [`fields`]: field capture: a span's fields kept as rendered JSON, an event's written
//!   straight into the line, inner names winning over outer ones.
//! - [`json`]: JSON values and string escaping.
//! - [`time`]: the RFC 3339 timestamp.
//! - [`writer`]: the background thread that writes lines out in batches.
//! - [`rotate`]: the size-rotated log file for a shipper that tails files.
//! - [`request`]: the request's fields and the scope that makes them current.

mod fields;
mod json;
mod layer;
mod request;
mod rotate;
mod time;
mod writer;

use std::path::Path;

pub use layer::CloudLogging;
pub use request::{record_key_id, RequestFields, RequestScope};
pub use writer::LogWriterGuard;

use rotate::RotatingFile;
use writer::{LogWriter, Sinks};

/// The JSON log layer, writing to stdout (and to `log_file`, when given) through a background
/// thread. `project` (`GCP_PROJECT`), when given, qualifies trace ids the way Cloud Logging
/// links them (`projects/P/traces/T`). Keep the guard until exit: dropping it writes out what is still
/// buffered. Fails only when `log_file` cannot be opened.
pub fn json_layer(
    project: Option<&str>,
    log_file: Option<&Path>,
) -> std::io::Result<(CloudLogging, LogWriterGuard)> {
    let file = match log_file {
        Some(path) => Some(RotatingFile::open(path, LOG_FILE_MAX_BYTES)?),
        None => None,
    };
    let (writer, guard) = LogWriter::spawn(Sinks {
        out: std::io::stdout(),
        file,
    });
    Ok((CloudLogging::new(project.map(str::to_owned), writer), guard))
}

/// The log file is rotated at this size, and one rotated file is kept: at most 32 MiB of the
/// 64 MiB in-memory volume it shares with the Datadog sidecar on Cloud Run (terraform).
const LOG_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;
